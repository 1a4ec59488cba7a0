//! One packet's path as a single line of places, grouped the way people think about container
//! networks (what `vethtrace ping` prints under each packet):
//!
//! ```text
//! busybox eth0 → node1 vethf0808a3e ⇒ bridge cni0 ⇒ node1 vethd5962a6c → busybox2 eth0
//! ```
//!
//! Owns: turning time-ordered hops plus the [`Topology`] into [`Segment`]s ([`segments`]) and
//! those into one plain-text line ([`summarize`], [`line()`]). Does not own: correlating events
//! into packets (`crate::correlate`), the hop-by-hop listing (`super::text`), colour.
//!
//! # Places
//!
//! Only tc hook hops are places. A place is `<netns> <ifname>`; consecutive hooks on the same
//! device (ingress then egress of a bridge device, say) are one place. Benign frees are
//! ignored. The first real drop ends the line with ` ✗ <reason> in <netns>`; hops after it (a
//! clone, another flood copy) are not drawn, since the line is about where *this* packet died.
//!
//! # Connectors
//!
//! | text                        | [`Via`]              | when                                       |
//! |-----------------------------|----------------------|--------------------------------------------|
//! | `A → B`                     | `Veth`               | B is the veth peer of A (either end's `peer` says so) |
//! | `A ⇒ bridge br0 ⇒ B`        | `Bridge("br0")`      | A and B are ports of bridge br0 in one namespace (switched; the bridge device is no place) |
//! | `A ⇒ B`                     | `Bridge("br0")`      | one of A, B is br0 itself and the other its port: the path starts or ends at the bridge's own address |
//! | `A (routed) → B`            | `Routed`             | A and B are two known devices of one namespace and neither is a bridge hop: the namespace's IP stack (or a tc redirect) forwarded it |
//! | `A ⇒ br0 (routed) → B`      | `Routed{from_bridge}`| A is a port of br0, the packet went up through br0's own device, then out of B |
//! | `A (routed) → br0 ⇒ B`      | `Routed{to_bridge}`  | the stack sent it out of br0's own device, which switched it to its port B |
//! | `A ⇒ br0 (routed) → br1 ⇒ B`| `Routed{from, to}`   | both of the above, e.g. routed between two bridges (or hairpinned back out of br0) |
//! | `A ═vxlan 10.0.0.1→10.0.0.2═▶ B` | `Vxlan`         | A is a vxlan device sending, B the remote vxlan device receiving; the encapsulated hops between them on underlay devices are the one leg |
//! | `A ⇒ macvlan ⇒ B`           | `Upper("macvlan")`   | one of A, B is an upper device of the other — a vlan, macvlan, ipvlan (or tap variant) on its lower device, in any namespace, or a bond/team master and its port — named by its kind: handed up by the lower device's receive path, or sent down through it; also two macvlans (ipvlans) of one parent whose own hop was not seen |
//! | `A → B`                     | `Other`              | anything we cannot name: unknown namespaces or devices, unrelated namespaces |
//!
//! So `(routed)` always sits right after the device where the IP stack took the packet in,
//! `⇒` always means "a bridge switched it" (or "it passed between a device and one stacked on
//! it"), `→` "it crossed to the next device", and `═▶` "it travelled encapsulated". For example a flannel (vxlan) pod-to-pod request across nodes:
//!
//! ```text
//! busybox eth0 → node1 vethAAAA ⇒ cni0 (routed) → node1 flannel.1 ═vxlan 172.30.0.1→172.30.0.2═▶ node2 flannel.1 (routed) → cni0 ⇒ node2 vethBBBB → nginx eth0
//! ```
//!
//! and a routed CNI without a bridge (GKE, Calico): `pod1 eth0 → node vethA (routed) → node
//! vethB → pod2 eth0`.
//!
//! A VXLAN leg whose far end was not seen (dropped on the underlay, or no hook on the remote
//! vxlan device) ends at the last underlay place that carried it: `node1 flannel.1 ═vxlan
//! 172.30.0.1→172.30.0.2═▶ node2 eth0 ✗ NETFILTER_DROP in node2`. Every place is drawn: when
//! a rule does not fit (a bridge hop between two namespaces, a device missing from the
//! topology), the hop stays a place joined by `→`.

use serde::Serialize;
use vethtrace_common::Flow;

use crate::{
    decode::{Dir, Observation, What},
    topology::model::{Interface, Namespace, PeerRef, Topology, Vxlan},
};

/// One stop on the line, and how the packet got there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Segment {
    pub netns: String,
    /// The device; for a [`Via::Dropped`] segment the device the drop named (may be empty).
    pub ifname: String,
    /// How we got here from the previous segment.
    pub via: Via,
    /// Nanoseconds since the packet's first hop, at the first hook on this place.
    pub t_ns: u64,
}

/// How a packet went from one segment to the next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// The first place.
    Start,
    /// Crossed a veth pair.
    Veth,
    /// Switched by this bridge, port to port (or to / from the bridge's own device).
    Bridge(String),
    /// Forwarded by the namespace's IP stack; `from_bridge` is the bridge whose own device
    /// took it up from a port, `to_bridge` the one whose device sent it down to a port.
    Routed {
        from_bridge: Option<String>,
        to_bridge: Option<String>,
    },
    /// One VXLAN leg, from the sending vxlan device's namespace to the receiving one's.
    Vxlan {
        from_node: String,
        to_node: String,
        /// `172.30.0.1 → 172.30.0.2 udp/8472 vni 1`, with the parts that are known
        /// (`?` for an unknown endpoint; empty when nothing is).
        underlay: String,
    },
    /// Between a device and an upper device stacked on it (vlan, macvlan, ipvlan, bond or
    /// team master), either way; the upper device's kind. Not routing: no IP stack decided.
    Upper(String),
    /// Dropped here (the last segment): the kernel's drop reason.
    Dropped { reason: String },
    /// Some other step we cannot name.
    Other,
}

/// One packet's hops as a single line of places joined by connectors, e.g.
/// `busybox eth0 → node1 vethf0808a3e ⇒ bridge cni0 ⇒ node1 vethd5962a6c → busybox2 eth0`.
pub fn summarize(hops: &[Observation], topo: &Topology) -> String {
    line(&segments(hops, topo))
}

/// The one-line text of segments from [`segments`].
pub fn line(segs: &[Segment]) -> String {
    let mut s = String::new();
    let mut prev: Option<&Segment> = None;
    for seg in segs {
        match &seg.via {
            Via::Start => {}
            Via::Veth | Via::Other => s.push_str(" → "),
            Via::Bridge(b) => {
                let is_bridge = |x: &Segment| x.ifname == *b;
                let own_device =
                    is_bridge(seg) || prev.is_some_and(|p| p.netns == seg.netns && is_bridge(p));
                if own_device {
                    s.push_str(" ⇒ ");
                } else {
                    s.push_str(&format!(" ⇒ bridge {b} ⇒ "));
                }
            }
            Via::Routed {
                from_bridge,
                to_bridge,
            } => {
                if let Some(b) = from_bridge {
                    s.push_str(&format!(" ⇒ {b}"));
                }
                s.push_str(" (routed) → ");
                if let Some(b) = to_bridge {
                    s.push_str(&format!("{b} ⇒ "));
                }
            }
            Via::Upper(kind) => s.push_str(&format!(" ⇒ {kind} ⇒ ")),
            Via::Vxlan { underlay, .. } => match short_endpoints(underlay) {
                Some(e) => s.push_str(&format!(" ═vxlan {e}═▶ ")),
                None => s.push_str(" ═vxlan═▶ "),
            },
            Via::Dropped { reason } => {
                s.push_str(&format!(" ✗ {reason} in {}", seg.netns));
                break;
            }
        }
        s.push_str(&seg.netns);
        s.push(' ');
        s.push_str(&seg.ifname);
        prev = Some(seg);
    }
    s.trim_start().to_string()
}

/// The same as segments, for JSON and tests. A drop, when there is one, is the last segment
/// (with [`Via::Dropped`]).
pub fn segments(hops: &[Observation], topo: &Topology) -> Vec<Segment> {
    let t0 = hops.first().map_or(0, |h| h.ts_ns);
    let (places, drop) = places(hops, topo, t0);
    let mut out = Vec::new();
    let mut via = Via::Start;
    let mut i = 0;
    while let Some(p) = places.get(i) {
        out.push(Segment {
            netns: p.netns.to_string(),
            ifname: p.ifname.clone(),
            via,
            t_ns: p.t_ns,
        });
        let Some((next, v)) = step(topo, &places, i) else {
            break;
        };
        i = next;
        via = v;
    }
    if let Some(d) = drop {
        if let What::Drop { reason, .. } = &d.what {
            out.push(Segment {
                netns: d.netns.to_string(),
                ifname: d.ifname.as_deref().unwrap_or_default().to_string(),
                via: Via::Dropped {
                    reason: reason.to_string(),
                },
                t_ns: d.ts_ns.saturating_sub(t0),
            });
        }
    }
    out
}

/// Consecutive hooks on one device, with what the topology knows about it.
struct Place<'a> {
    netns: &'a str,
    ifname: String,
    t_ns: u64,
    first_dir: Dir,
    last_dir: Dir,
    /// The outer (underlay) flow of the first encapsulated hook here.
    encap: Option<&'a Flow>,
    ns: Option<&'a Namespace>,
    iface: Option<&'a Interface>,
}

impl Place<'_> {
    fn kind(&self) -> Option<&str> {
        self.iface.map(|i| i.kind.as_str())
    }

    fn vxlan(&self) -> Option<&Vxlan> {
        self.iface.and_then(|i| i.vxlan.as_ref())
    }

    fn is_bridge(&self) -> bool {
        self.kind() == Some("bridge")
    }

    fn master(&self) -> Option<&str> {
        self.iface.and_then(|i| i.master.as_deref())
    }

    /// Enslaved to the bridge device `bridge` is on.
    fn is_port_of(&self, bridge: &Place) -> bool {
        bridge.is_bridge()
            && self.netns == bridge.netns
            && self.master() == Some(bridge.ifname.as_str())
    }

    /// Whether a peer reference names this place.
    fn is_named_by(&self, topo: &Topology, r: &PeerRef) -> bool {
        let ns_matches = r.netns == self.netns || self.ns.is_some_and(|n| n.name == r.netns);
        (ns_matches && r.name.as_deref() == Some(self.ifname.as_str()))
            || topo.resolve(r).is_some_and(|(ns, i)| {
                i.name == self.ifname
                    && (ns.name == self.netns || self.ns.is_some_and(|n| n.inode == ns.inode))
            })
    }
}

/// The name a hook hop is drawn with: its interface name, or `if<ifindex>`.
fn ifname_of(h: &Observation) -> String {
    h.ifname
        .as_deref()
        .map_or_else(|| format!("if{}", h.ifindex), str::to_string)
}

/// Groups hook hops into places, up to the first drop (returned separately).
fn places<'a>(
    hops: &'a [Observation],
    topo: &'a Topology,
    t0: u64,
) -> (Vec<Place<'a>>, Option<&'a Observation>) {
    let mut out: Vec<Place<'a>> = Vec::new();
    for h in hops {
        let dir = match &h.what {
            What::Hook(d) => *d,
            What::Drop { .. } => return (out, Some(h)),
            What::Freed { .. } | What::Netfilter(_) => continue,
        };
        let ifname = ifname_of(h);
        let encap = h.inner().is_some().then_some(&h.outer);
        if let Some(last) = out
            .last_mut()
            .filter(|p| p.netns == h.netns && p.ifname == ifname)
        {
            last.last_dir = dir;
            last.encap = last.encap.or(encap);
            continue;
        }
        let ns = topo.find_netns(&h.netns);
        let iface = ns.and_then(|n| {
            n.interface_named(&ifname).or_else(|| {
                // A name we made up from the ifindex: the ifindex is all we have.
                (h.ifname.is_none() || ifname == format!("if{}", h.ifindex))
                    .then(|| n.interface(h.ifindex))
                    .flatten()
            })
        });
        out.push(Place {
            netns: &h.netns,
            ifname,
            t_ns: h.ts_ns.saturating_sub(t0),
            first_dir: dir,
            last_dir: dir,
            encap,
            ns,
            iface,
        });
    }
    (out, None)
}

/// From place `i`: the index of the next place drawn and how the packet got there, or `None`
/// at the last place.
fn step(topo: &Topology, p: &[Place], i: usize) -> Option<(usize, Via)> {
    let b = p.get(i + 1)?;
    if let Some(leg) = vxlan_leg(p, i) {
        return Some(leg);
    }
    if let Some(r) = through_bridge_device(topo, p, i) {
        return Some(r);
    }
    Some((i + 1, connector(topo, &p[i], b)))
}

/// A vxlan device sending at `i`, the encapsulated hops after it, and the remote vxlan device
/// receiving (or, when that was not seen, the last place that carried it encapsulated).
fn vxlan_leg(p: &[Place], i: usize) -> Option<(usize, Via)> {
    let a = &p[i];
    let next = p.get(i + 1)?;
    if a.encap.is_some() || a.last_dir != Dir::Egress {
        return None;
    }
    let vtep = match a.kind() {
        Some(k) => k == "vxlan",
        None => next.encap.is_some(),
    };
    if !vtep {
        return None;
    }
    let mut j = i + 1;
    while p.get(j).is_some_and(|x| x.encap.is_some()) {
        j += 1;
    }
    let carried = j > i + 1;
    let end = match p.get(j) {
        Some(b)
            if b.first_dir == Dir::Ingress
                && match b.kind() {
                    Some(k) => k == "vxlan",
                    None => carried,
                } =>
        {
            j
        }
        _ if carried => j - 1,
        _ => return None,
    };
    let b = &p[end];
    let encap = p[i + 1..=end].iter().find_map(|x| x.encap);
    Some((
        end,
        Via::Vxlan {
            from_node: a.netns.to_string(),
            to_node: b.netns.to_string(),
            underlay: underlay(a, b, encap),
        },
    ))
}

/// `172.30.0.1 → 172.30.0.2 udp/8472 vni 1`: endpoints and port from the encapsulated frame
/// when one was seen, else from the vxlan devices' settings; the VNI from the topology.
fn underlay(a: &Place, b: &Place, encap: Option<&Flow>) -> String {
    let (a_vx, b_vx) = (a.vxlan(), b.vxlan());
    let src = encap
        .and_then(Flow::src_ip)
        .map(|ip| ip.to_string())
        .or_else(|| a_vx.and_then(|v| v.local.clone()));
    let dst = encap
        .and_then(Flow::dst_ip)
        .map(|ip| ip.to_string())
        .or_else(|| b_vx.and_then(|v| v.local.clone()));
    let port = encap
        .filter(|f| f.l4 == 17 && f.dport != 0)
        .map(|f| f.dport)
        .or_else(|| a_vx.or(b_vx).map(|v| v.port).filter(|&p| p != 0));
    let vni = a_vx.or(b_vx).map(|v| v.vni);
    let mut parts = Vec::new();
    if src.is_some() || dst.is_some() {
        let q = |x: Option<String>| x.unwrap_or_else(|| "?".into());
        parts.push(format!("{} → {}", q(src), q(dst)));
    }
    if let Some(port) = port {
        parts.push(format!("udp/{port}"));
    }
    if let Some(vni) = vni {
        parts.push(format!("vni {vni}"));
    }
    parts.join(" ")
}

/// `172.30.0.1→172.30.0.2` from an underlay description, when both endpoints are known.
fn short_endpoints(underlay: &str) -> Option<String> {
    let mut t = underlay.split(' ');
    let (src, arrow, dst) = (t.next()?, t.next()?, t.next()?);
    (arrow == "→" && src != "?" && dst != "?").then(|| format!("{src}→{dst}"))
}

/// A bridge's own device between `i` and the next place, in one namespace: the packet went up
/// through it from a port (`from_bridge`), or down through it to a port (`to_bridge`), or both.
fn through_bridge_device(topo: &Topology, p: &[Place], i: usize) -> Option<(usize, Via)> {
    let a = &p[i];
    let x = p.get(i + 1)?;
    // A device stacked on the bridge (a VLAN, a macvlan) is handed frames by it, not routed.
    if !x.is_bridge() || x.netns != a.netns || stacked_on(topo, a, x) {
        return None;
    }
    if a.is_port_of(x) {
        let y = p.get(i + 2).filter(|y| y.netns == a.netns)?;
        if stacked_on(topo, y, x) {
            return None;
        }
        if p.get(i + 3).is_some_and(|b| b.is_port_of(y)) {
            // Up through x, routed, down through y to its port.
            return Some((
                i + 3,
                Via::Routed {
                    from_bridge: Some(x.ifname.clone()),
                    to_bridge: Some(y.ifname.clone()),
                },
            ));
        }
        return Some((
            i + 2,
            Via::Routed {
                from_bridge: Some(x.ifname.clone()),
                to_bridge: y.is_port_of(x).then(|| x.ifname.clone()),
            },
        ));
    }
    let b = p.get(i + 2)?;
    b.is_port_of(x).then(|| {
        (
            i + 2,
            Via::Routed {
                from_bridge: None,
                to_bridge: Some(x.ifname.clone()),
            },
        )
    })
}

/// How the packet got from `a` to the very next place `b`.
fn connector(topo: &Topology, a: &Place, b: &Place) -> Via {
    let peer = |x: &Place, y: &Place| {
        x.iface
            .and_then(|i| i.peer.as_ref())
            .is_some_and(|r| y.is_named_by(topo, r))
    };
    if peer(a, b) || peer(b, a) {
        return Via::Veth;
    }
    for (upper, other) in [(b, a), (a, b)] {
        if stacked_on(topo, upper, other) {
            return Via::Upper(upper.kind().unwrap_or("upper").to_string());
        }
    }
    // Two macvlans (ipvlans) of one parent whose own hop was not seen: handed across by it.
    let (la, lb) = (
        a.iface.and_then(|i| i.lower.as_ref()),
        b.iface.and_then(|i| i.lower.as_ref()),
    );
    let sibling_kind = |x: &Place| x.iface.is_some_and(Interface::is_macvlan_like);
    // (Two VLANs of one parent are different networks: between them is routing.)
    if let (Some(la), Some(lb), true) = (la, lb, sibling_kind(a) && sibling_kind(b)) {
        let same = match (topo.resolve(la), topo.resolve(lb)) {
            (Some((na, ia)), Some((nb, ib))) => na.inode == nb.inode && ia.ifindex == ib.ifindex,
            _ => la.netns == lb.netns && la.name.is_some() && la.name == lb.name,
        };
        if same {
            return Via::Upper(b.kind().unwrap_or("upper").to_string());
        }
    }
    if a.netns != b.netns {
        return Via::Other;
    }
    for (master, port) in [(b, a), (a, b)] {
        let kind = master.kind().filter(|k| matches!(*k, "bond" | "team"));
        if let Some(kind) = kind.filter(|_| port.master() == Some(master.ifname.as_str())) {
            return Via::Upper(kind.to_string());
        }
    }
    if let Some(br) = common_bridge(a, b) {
        return Via::Bridge(br.to_string());
    }
    if a.is_port_of(b) {
        return Via::Bridge(b.ifname.clone());
    }
    if b.is_port_of(a) {
        return Via::Bridge(a.ifname.clone());
    }
    if a.iface.is_some() && b.iface.is_some() {
        return Via::Routed {
            from_bridge: None,
            to_bridge: None,
        };
    }
    Via::Other
}

/// Whether `upper` is a VLAN, macvlan or ipvlan on `lower` (which may be in another namespace:
/// a macvlan moved into a pod).
fn stacked_on(topo: &Topology, upper: &Place, lower: &Place) -> bool {
    upper
        .iface
        .and_then(|i| i.lower.as_ref())
        .is_some_and(|r| lower.is_named_by(topo, r))
}

/// The bridge both places are ports of (the master must be a bridge, not a bond or a VRF,
/// when the topology knows it).
fn common_bridge<'p>(a: &'p Place, b: &Place) -> Option<&'p str> {
    let m = a.master()?;
    let is_bridge =
        a.ns.and_then(|n| n.interface_named(m))
            .is_none_or(|i| i.kind == "bridge");
    (b.master() == Some(m) && a.ifname != b.ifname && is_bridge).then_some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- building topologies -------------------------------------------------------------

    fn iface(ifindex: u32, name: &str, kind: &str) -> Interface {
        Interface {
            ifindex,
            name: name.into(),
            kind: kind.into(),
            state: "up".into(),
            admin_up: true,
            mtu: 1500,
            ..Default::default()
        }
    }

    fn veth(ifindex: u32, name: &str, peer_ns: &str, peer: &str) -> Interface {
        let mut i = iface(ifindex, name, "veth");
        i.peer = Some(PeerRef {
            netns: peer_ns.into(),
            inode: None,
            ifindex: 0,
            name: Some(peer.into()),
            master: None,
        });
        i
    }

    fn port(ifindex: u32, name: &str, bridge: &str, peer_ns: &str, peer: &str) -> Interface {
        let mut i = veth(ifindex, name, peer_ns, peer);
        i.master = Some(bridge.into());
        i
    }

    fn vxlan(ifindex: u32, name: &str, local: &str) -> Interface {
        let mut i = iface(ifindex, name, "vxlan");
        i.vxlan = Some(Vxlan {
            vni: 1,
            local: Some(local.into()),
            port: 8472,
            underlay: Some("eth0".into()),
            ..Default::default()
        });
        i
    }

    fn ns(name: &str, inode: u64, interfaces: Vec<Interface>) -> Namespace {
        Namespace {
            name: name.into(),
            inode,
            interfaces,
            ..Default::default()
        }
    }

    /// `ip netns` a ⇄ b joined by one veth pair.
    fn pair_lab() -> Topology {
        Topology {
            namespaces: vec![
                ns("a", 1, vec![veth(2, "eth0", "b", "eth0")]),
                ns("b", 2, vec![veth(2, "eth0", "a", "eth0")]),
            ],
        }
    }

    /// ns01 and ns02 on bridge br01 in `node`.
    fn bridge_lab() -> Topology {
        Topology {
            namespaces: vec![
                ns(
                    "node",
                    1,
                    vec![
                        iface(3, "br01", "bridge"),
                        port(4, "br-veth01", "br01", "ns01", "veth01"),
                        port(5, "br-veth02", "br01", "ns02", "veth02"),
                    ],
                ),
                ns("ns01", 2, vec![veth(2, "veth01", "node", "br-veth01")]),
                ns("ns02", 3, vec![veth(2, "veth02", "node", "br-veth02")]),
            ],
        }
    }

    /// Two flannel nodes, each with cni0, flannel.1 and eth0, and one pod each.
    fn flannel() -> Topology {
        let node = |name: &str, inode: u64, ip: &str, vport: &str, pod: &str| {
            let mut eth0 = iface(2, "eth0", "physical");
            eth0.addrs = vec![format!("{ip}/24")];
            ns(
                name,
                inode,
                vec![
                    eth0,
                    iface(3, "cni0", "bridge"),
                    vxlan(4, "flannel.1", ip),
                    port(5, vport, "cni0", pod, "eth0"),
                ],
            )
        };
        Topology {
            namespaces: vec![
                node("node1", 1, "172.30.0.1", "vethAAAA", "busybox"),
                node("node2", 2, "172.30.0.2", "vethBBBB", "nginx"),
                ns("busybox", 3, vec![veth(2, "eth0", "node1", "vethAAAA")]),
                ns("nginx", 4, vec![veth(2, "eth0", "node2", "vethBBBB")]),
            ],
        }
    }

    /// A routed CNI (GKE, Calico): host-side veths with no bridge.
    fn routed() -> Topology {
        Topology {
            namespaces: vec![
                ns(
                    "node",
                    1,
                    vec![
                        iface(2, "eth0", "physical"),
                        veth(5, "vethA", "pod1", "eth0"),
                        veth(6, "vethB", "pod2", "eth0"),
                    ],
                ),
                ns("pod1", 2, vec![veth(2, "eth0", "node", "vethA")]),
                ns("pod2", 3, vec![veth(2, "eth0", "node", "vethB")]),
            ],
        }
    }

    // ---- building hops -------------------------------------------------------------------

    fn ip4(f: &mut Flow, src: [u8; 4], dst: [u8; 4]) {
        f.ethertype = 0x0800;
        f.src[..4].copy_from_slice(&src);
        f.dst[..4].copy_from_slice(&dst);
    }

    fn icmp() -> Flow {
        let mut f = Flow {
            l4: 1,
            icmp_type: 8,
            icmp_id: 7,
            icmp_seq: 1,
            ..Default::default()
        };
        ip4(&mut f, [10, 244, 0, 2], [10, 244, 1, 3]);
        f
    }

    fn obs(ts_us: u64, netns: &str, ifname: &str, what: What) -> Observation {
        Observation {
            ts_ns: ts_us * 1000,
            netns: netns.into(),
            ifindex: 0,
            ifname: Some(ifname.into()),
            what,
            len: 84,
            mark: 0,
            outer: icmp(),
            extras: Default::default(),
        }
    }

    fn eg(ts_us: u64, netns: &str, ifname: &str) -> Observation {
        obs(ts_us, netns, ifname, What::Hook(Dir::Egress))
    }

    fn ing(ts_us: u64, netns: &str, ifname: &str) -> Observation {
        obs(ts_us, netns, ifname, What::Hook(Dir::Ingress))
    }

    fn drop(ts_us: u64, netns: &str, ifname: &str, reason: &str) -> Observation {
        obs(
            ts_us,
            netns,
            ifname,
            What::Drop {
                reason: reason.into(),
                location: "nf_hook_slow+0x9c".into(),
            },
        )
    }

    /// The hop as the underlay carries it: VXLAN in UDP 172.30.0.1 → 172.30.0.2:8472.
    fn encapsulated(mut o: Observation) -> Observation {
        let mut outer = Flow {
            l4: 17,
            sport: 40123,
            dport: 8472,
            ..Default::default()
        };
        ip4(&mut outer, [172, 30, 0, 1], [172, 30, 0, 2]);
        o.set_inner(Some(o.outer));
        o.outer = outer;
        o
    }

    fn seg(netns: &str, ifname: &str, via: Via, t_us: u64) -> Segment {
        Segment {
            netns: netns.into(),
            ifname: ifname.into(),
            via,
            t_ns: t_us * 1000,
        }
    }

    fn routed_via(from: Option<&str>, to: Option<&str>) -> Via {
        Via::Routed {
            from_bridge: from.map(Into::into),
            to_bridge: to.map(Into::into),
        }
    }

    fn flannel_hops() -> Vec<Observation> {
        vec![
            eg(10, "busybox", "eth0"),
            ing(12, "node1", "vethAAAA"),
            ing(15, "node1", "cni0"),
            eg(30, "node1", "flannel.1"),
            encapsulated(eg(33, "node1", "eth0")),
            encapsulated(ing(250, "node2", "eth0")),
            ing(260, "node2", "flannel.1"),
            eg(270, "node2", "cni0"),
            eg(272, "node2", "vethBBBB"),
            ing(275, "nginx", "eth0"),
        ]
    }

    // ---- the cases -----------------------------------------------------------------------

    #[test]
    fn pair_lab_is_one_veth_crossing() {
        let hops = [eg(1, "a", "eth0"), ing(4, "b", "eth0")];
        let t = pair_lab();
        assert_eq!(summarize(&hops, &t), "a eth0 → b eth0");
        assert_eq!(
            segments(&hops, &t),
            vec![
                seg("a", "eth0", Via::Start, 0),
                seg("b", "eth0", Via::Veth, 3)
            ]
        );
    }

    #[test]
    fn bridge_lab_request_is_switched_by_the_bridge() {
        let hops = [
            eg(1, "ns01", "veth01"),
            ing(2, "node", "br-veth01"),
            eg(5, "node", "br-veth02"),
            ing(6, "ns02", "veth02"),
        ];
        let t = bridge_lab();
        assert_eq!(
            summarize(&hops, &t),
            "ns01 veth01 → node br-veth01 ⇒ bridge br01 ⇒ node br-veth02 → ns02 veth02"
        );
        assert_eq!(
            segments(&hops, &t),
            vec![
                seg("ns01", "veth01", Via::Start, 0),
                seg("node", "br-veth01", Via::Veth, 1),
                seg("node", "br-veth02", Via::Bridge("br01".into()), 4),
                seg("ns02", "veth02", Via::Veth, 5),
            ]
        );
    }

    #[test]
    fn a_drop_after_the_bridge_port_ends_the_line() {
        let hops = [
            eg(1, "ns01", "veth01"),
            ing(2, "node", "br-veth01"),
            drop(3, "node", "br-veth01", "NETFILTER_DROP"),
        ];
        let t = bridge_lab();
        assert_eq!(
            summarize(&hops, &t),
            "ns01 veth01 → node br-veth01 ✗ NETFILTER_DROP in node"
        );
        let s = segments(&hops, &t);
        assert_eq!(
            s.last(),
            Some(&seg(
                "node",
                "br-veth01",
                Via::Dropped {
                    reason: "NETFILTER_DROP".into()
                },
                2
            ))
        );
    }

    /// b's address is on mv0, a macvlan on its eth0; c's on mv1, a macvlan on the node's
    /// eth1 moved into c (the macvlan CNI); the node's bond0 has eth2 as a port.
    /// A device of `kind` stacked on `lower` of namespace `lower_ns`.
    fn stacked(ifindex: u32, name: &str, kind: &str, lower_ns: &str, lower: &str) -> Interface {
        let mut i = iface(ifindex, name, kind);
        i.lower = Some(PeerRef {
            netns: lower_ns.into(),
            inode: None,
            ifindex: 0,
            name: Some(lower.into()),
            master: None,
        });
        i
    }

    fn upper_lab() -> Topology {
        let mut eth2 = iface(5, "eth2", "physical");
        eth2.master = Some("bond0".into());
        Topology {
            namespaces: vec![
                ns("a", 1, vec![veth(2, "eth0", "b", "eth0")]),
                ns(
                    "b",
                    2,
                    vec![
                        veth(2, "eth0", "a", "eth0"),
                        stacked(3, "mv0", "macvlan", "b", "eth0"),
                    ],
                ),
                ns(
                    "node",
                    3,
                    vec![
                        iface(2, "eth1", "physical"),
                        iface(4, "bond0", "bond"),
                        eth2,
                    ],
                ),
                ns("c", 4, vec![stacked(2, "mv1", "macvlan", "node", "eth1")]),
            ],
        }
    }

    #[test]
    fn upper_devices_are_joined_to_their_lower_device_not_routed() {
        let t = upper_lab();
        let request = [eg(1, "a", "eth0"), ing(3, "b", "eth0"), ing(4, "b", "mv0")];
        assert_eq!(summarize(&request, &t), "a eth0 → b eth0 ⇒ macvlan ⇒ b mv0");
        assert_eq!(segments(&request, &t)[2].via, Via::Upper("macvlan".into()));
        let reply = [eg(1, "b", "mv0"), eg(2, "b", "eth0"), ing(4, "a", "eth0")];
        assert_eq!(summarize(&reply, &t), "b mv0 ⇒ macvlan ⇒ b eth0 → a eth0");
        // The lower device in another namespace.
        let hops = [ing(1, "node", "eth1"), ing(2, "c", "mv1")];
        assert_eq!(summarize(&hops, &t), "node eth1 ⇒ macvlan ⇒ c mv1");
        // Two macvlans of one parent, the parent not traced.
        let mut siblings = upper_lab();
        let mut mv2 = siblings.namespaces[3].interfaces[0].clone();
        mv2.name = "mv2".into();
        siblings.namespaces[0].interfaces.push(mv2);
        let hops = [eg(1, "c", "mv1"), ing(2, "a", "mv2")];
        assert_eq!(summarize(&hops, &siblings), "c mv1 ⇒ macvlan ⇒ a mv2");
        // Two VLANs of one parent are different networks: routed between.
        let mut vlans = upper_lab();
        for (ifindex, name) in [(6, "eth1.10"), (7, "eth1.20")] {
            let mut v = iface(ifindex, name, "vlan");
            v.lower = siblings.namespaces[3].interfaces[0].lower.clone();
            vlans.namespaces[2].interfaces.push(v);
        }
        let hops = [ing(1, "node", "eth1.10"), eg(2, "node", "eth1.20")];
        assert_eq!(
            summarize(&hops, &vlans),
            "node eth1.10 (routed) → node eth1.20"
        );
        // A bond master and its port.
        let hops = [ing(1, "node", "eth2"), ing(2, "node", "bond0")];
        assert_eq!(summarize(&hops, &t), "node eth2 ⇒ bond ⇒ node bond0");
        // Stacked on a bridge: handed frames by the bridge device, both ways.
        let mut bt = bridge_lab();
        let on_br01 = |ifindex, name: &str, kind| stacked(ifindex, name, kind, "node", "br01");
        bt.namespaces[0]
            .interfaces
            .push(on_br01(6, "mv0", "macvlan"));
        bt.namespaces[0]
            .interfaces
            .push(on_br01(7, "br01.100", "vlan"));
        let hops = [
            eg(1, "ns01", "veth01"),
            ing(2, "node", "br-veth01"),
            ing(3, "node", "br01"),
            ing(4, "node", "mv0"),
        ];
        assert_eq!(
            summarize(&hops, &bt),
            "ns01 veth01 → node br-veth01 ⇒ node br01 ⇒ macvlan ⇒ node mv0"
        );
        let hops = [
            eg(1, "node", "br01.100"),
            eg(2, "node", "br01"),
            eg(3, "node", "br-veth01"),
            ing(4, "ns01", "veth01"),
        ];
        assert_eq!(
            summarize(&hops, &bt),
            "node br01.100 ⇒ vlan ⇒ node br01 ⇒ node br-veth01 → ns01 veth01"
        );
        // Two devices of one namespace that are not stacked are still routed between.
        let hops = [ing(1, "node", "eth1"), eg(2, "node", "bond0")];
        assert_eq!(summarize(&hops, &t), "node eth1 (routed) → node bond0");
    }

    #[test]
    fn hops_after_the_drop_are_not_drawn() {
        let hops = [
            eg(1, "ns01", "veth01"),
            drop(2, "ns01", "veth01", "NO_ROUTE"),
            ing(3, "node", "br-veth01"),
        ];
        assert_eq!(
            summarize(&hops, &bridge_lab()),
            "ns01 veth01 ✗ NO_ROUTE in ns01"
        );
    }

    #[test]
    fn flannel_across_nodes_is_one_vxlan_leg() {
        let hops = flannel_hops();
        let t = flannel();
        assert_eq!(
            summarize(&hops, &t),
            "busybox eth0 → node1 vethAAAA ⇒ cni0 (routed) → node1 flannel.1 \
             ═vxlan 172.30.0.1→172.30.0.2═▶ node2 flannel.1 (routed) → cni0 ⇒ node2 vethBBBB \
             → nginx eth0"
        );
        assert_eq!(
            segments(&hops, &t),
            vec![
                seg("busybox", "eth0", Via::Start, 0),
                seg("node1", "vethAAAA", Via::Veth, 2),
                seg("node1", "flannel.1", routed_via(Some("cni0"), None), 20),
                seg(
                    "node2",
                    "flannel.1",
                    Via::Vxlan {
                        from_node: "node1".into(),
                        to_node: "node2".into(),
                        underlay: "172.30.0.1 → 172.30.0.2 udp/8472 vni 1".into(),
                    },
                    250
                ),
                seg("node2", "vethBBBB", routed_via(None, Some("cni0")), 262),
                seg("nginx", "eth0", Via::Veth, 265),
            ]
        );
    }

    #[test]
    fn a_drop_on_the_underlay_ends_the_vxlan_leg_where_it_was_last_seen() {
        let mut hops = flannel_hops();
        hops.truncate(6);
        hops.push(drop(251, "node2", "eth0", "NETFILTER_DROP"));
        assert_eq!(
            summarize(&hops, &flannel()),
            "busybox eth0 → node1 vethAAAA ⇒ cni0 (routed) → node1 flannel.1 \
             ═vxlan 172.30.0.1→172.30.0.2═▶ node2 eth0 ✗ NETFILTER_DROP in node2"
        );
    }

    #[test]
    fn without_underlay_hooks_the_vxlan_leg_is_described_from_the_topology() {
        let mut hops = flannel_hops();
        hops.retain(|h| h.inner().is_none());
        let s = segments(&hops, &flannel());
        assert_eq!(
            s[3].via,
            Via::Vxlan {
                from_node: "node1".into(),
                to_node: "node2".into(),
                underlay: "172.30.0.1 → 172.30.0.2 udp/8472 vni 1".into(),
            }
        );
        // And with no topology at all, a vxlan leg still shows when the hops say so.
        let hops = flannel_hops();
        let line = summarize(&hops, &Topology::default());
        assert!(
            line.contains("node1 flannel.1 ═vxlan 172.30.0.1→172.30.0.2═▶ node2 flannel.1"),
            "{line}"
        );
        let s = segments(&hops, &Topology::default());
        assert!(
            matches!(&s[4].via, Via::Vxlan { underlay, .. } if underlay == "172.30.0.1 → 172.30.0.2 udp/8472")
        );
    }

    #[test]
    fn routed_cni_without_a_bridge() {
        let hops = [
            eg(1, "pod1", "eth0"),
            ing(2, "node", "vethA"),
            eg(9, "node", "vethB"),
            ing(10, "pod2", "eth0"),
        ];
        let t = routed();
        assert_eq!(
            summarize(&hops, &t),
            "pod1 eth0 → node vethA (routed) → node vethB → pod2 eth0"
        );
        assert_eq!(segments(&hops, &t)[2].via, routed_via(None, None));
    }

    #[test]
    fn unknown_names_are_joined_plainly_and_never_lost() {
        let mut nameless = eg(3, "netns:77", "x");
        nameless.ifname = None;
        nameless.ifindex = 9;
        let hops = [
            eg(1, "ghost", "eth0"),
            ing(2, "node", "vethZ"),
            nameless,
            ing(4, "node", "vethY"),
        ];
        let want = "ghost eth0 → node vethZ → netns:77 if9 → node vethY";
        assert_eq!(summarize(&hops, &Topology::default()), want);
        // A topology that knows other namespaces changes nothing.
        assert_eq!(summarize(&hops, &bridge_lab()), want);
        // Known namespace, unknown devices: not claimed as routed.
        let hops = [ing(1, "node", "mystery0"), eg(2, "node", "br-veth02")];
        let s = segments(&hops, &bridge_lab());
        assert_eq!(s[1].via, Via::Other);
    }

    #[test]
    fn ingress_and_egress_on_one_device_are_one_place() {
        let hops = [
            ing(1, "node", "br-veth01"),
            eg(2, "node", "br-veth01"),
            ing(3, "ns01", "veth01"),
        ];
        assert_eq!(
            summarize(&hops, &bridge_lab()),
            "node br-veth01 → ns01 veth01"
        );
    }

    #[test]
    fn benign_frees_are_ignored() {
        let freed = obs(
            5,
            "b",
            "eth0",
            What::Freed {
                reason: "NO_SOCKET".into(),
                location: "ping_rcv+0xb3".into(),
                why: crate::decode::Benign::RawSocketCopy,
            },
        );
        let hops = [eg(1, "a", "eth0"), ing(4, "b", "eth0"), freed];
        assert_eq!(summarize(&hops, &pair_lab()), "a eth0 → b eth0");
    }

    #[test]
    fn starting_or_ending_at_the_bridge_device_keeps_it_as_a_place() {
        let t = flannel();
        // The node pings a pod from cni0's address.
        let hops = [
            eg(1, "node1", "cni0"),
            eg(2, "node1", "vethAAAA"),
            ing(3, "busybox", "eth0"),
        ];
        assert_eq!(
            summarize(&hops, &t),
            "node1 cni0 ⇒ node1 vethAAAA → busybox eth0"
        );
        // The pod pings cni0's address; then the stack drops it.
        let hops = [
            eg(1, "busybox", "eth0"),
            ing(2, "node1", "vethAAAA"),
            ing(3, "node1", "cni0"),
            drop(4, "node1", "cni0", "NETFILTER_DROP"),
        ];
        assert_eq!(
            summarize(&hops, &t),
            "busybox eth0 → node1 vethAAAA ⇒ node1 cni0 ✗ NETFILTER_DROP in node1"
        );
    }

    #[test]
    fn routed_back_out_of_the_same_bridge_names_it_twice() {
        let hops = [
            ing(1, "node", "br-veth01"),
            ing(2, "node", "br01"),
            eg(3, "node", "br01"),
            eg(4, "node", "br-veth02"),
        ];
        assert_eq!(
            summarize(&hops, &bridge_lab()),
            "node br-veth01 ⇒ br01 (routed) → br01 ⇒ node br-veth02"
        );
    }

    #[test]
    fn routed_between_two_bridges() {
        let mut t = bridge_lab();
        t.namespaces[0].interfaces.push(iface(6, "br02", "bridge"));
        if let Some(p) = t.namespaces[0].interfaces.get_mut(2) {
            p.master = Some("br02".into());
        }
        let hops = [
            ing(1, "node", "br-veth01"),
            ing(2, "node", "br01"),
            eg(3, "node", "br02"),
            eg(4, "node", "br-veth02"),
        ];
        assert_eq!(
            summarize(&hops, &t),
            "node br-veth01 ⇒ br01 (routed) → br02 ⇒ node br-veth02"
        );
    }

    #[test]
    fn a_bond_master_is_not_a_bridge() {
        let mut t = routed();
        t.namespaces[0].interfaces.push(iface(9, "bond0", "bond"));
        for i in &mut t.namespaces[0].interfaces {
            if i.name.starts_with("veth") {
                i.master = Some("bond0".into());
            }
        }
        let hops = [ing(1, "node", "vethA"), eg(2, "node", "vethB")];
        assert_eq!(segments(&hops, &t)[1].via, routed_via(None, None));
    }

    #[test]
    fn a_bridge_hop_in_another_namespace_stays_a_place() {
        // No hook on the node side of nginx's veth: cni0 egress, then nginx eth0.
        let hops = [
            ing(1, "node2", "flannel.1"),
            eg(2, "node2", "cni0"),
            ing(3, "nginx", "eth0"),
        ];
        assert_eq!(
            summarize(&hops, &flannel()),
            "node2 flannel.1 (routed) → node2 cni0 → nginx eth0"
        );
    }

    #[test]
    fn peers_resolve_by_inode_when_the_display_name_differs() {
        let mut t = pair_lab();
        if let Some(p) = t.namespaces[0].interfaces[0].peer.as_mut() {
            p.netns = "nsid:3".into();
            p.inode = Some(2);
            p.ifindex = 2;
        }
        t.namespaces[1].interfaces[0].peer = None;
        let hops = [eg(1, "a", "eth0"), ing(2, "b", "eth0")];
        assert_eq!(segments(&hops, &t)[1].via, Via::Veth);
    }

    #[test]
    fn nothing_in_nothing_out() {
        assert_eq!(summarize(&[], &Topology::default()), "");
        assert!(segments(&[], &Topology::default()).is_empty());
        let only_drop = [drop(1, "node", "eth0", "NO_ROUTE")];
        assert_eq!(
            summarize(&only_drop, &Topology::default()),
            "✗ NO_ROUTE in node"
        );
    }

    #[test]
    fn without_a_topology_only_the_vxlan_leg_is_grouped() {
        // No bridge is known, so cni0 stays a place; the underlay eth0s are the vxlan leg.
        let hops = flannel_hops();
        let s = segments(&hops, &Topology::default());
        let names: Vec<String> = s
            .iter()
            .map(|x| format!("{} {}", x.netns, x.ifname))
            .collect();
        assert_eq!(
            names,
            [
                "busybox eth0",
                "node1 vethAAAA",
                "node1 cni0",
                "node1 flannel.1",
                "node2 flannel.1",
                "node2 cni0",
                "node2 vethBBBB",
                "nginx eth0",
            ]
        );
    }
}
