//! Device rules: `link-down` / `peer-down` (a device on the expected path, or the veth peer of
//! one, is down), `mtu` (the probe does not fit a device on the path, or a router said so),
//! `ip-on-bridge-port` (an address left on a device after it was enslaved to a bridge) and
//! `macvlan-parent` (a macvlan or ipvlan and its own parent device talking to each other).

use std::collections::BTreeSet;

use crate::{
    decode::{Dir, What},
    topology::{Interface, Namespace},
};

use super::{
    net,
    path::{self, End, Step},
    Context, Finding, Leg, Probe,
};

/// VXLAN's overhead on the underlay: outer Ethernet, IPv4, UDP and VXLAN headers.
const VXLAN_OVERHEAD: u32 = 50;

/// `link-down` or `peer-down`: the first device on the expected path from where the packet
/// was last seen (or from the sender) that cannot carry it; or, when the namespace where it
/// stopped has no route because the device was taken down (the kernel drops its routes), that
/// device.
pub(super) fn link_down(leg: &Leg, cx: &Context) -> Option<Finding> {
    let topo = cx.topo;
    let walk = match leg.last_hook() {
        Some(h) => path::walk_from_hop(topo, h, leg.dst),
        None => path::walk_from_sender(topo, &leg.from, leg.dst),
    };
    let mut prev: Option<(String, String)> = leg
        .last_hook()
        .and_then(|h| Some((h.netns.to_string(), h.ifname.as_deref()?.to_string())));
    let mut trail = Vec::new();
    for e in &walk.steps {
        let Step::Hook { netns, ifname, .. } = &e.step else {
            break;
        };
        trail.push(format!("{} ({})", e.step, e.why));
        let Some((ns, d)) = net::iface(topo, netns, ifname) else {
            break;
        };
        if net::unusable(d) {
            return Some(down_finding(leg, cx, ns, d, prev.as_ref(), &trail));
        }
        prev = Some((netns.clone(), ifname.clone()));
    }
    // No route: a down device whose subnet holds the destination (its routes are gone).
    let End::NoRoute { netns } = &walk.end else {
        return None;
    };
    let ns = topo.namespaces.iter().find(|n| n.name == *netns)?;
    let candidates: Vec<&Interface> = ns
        .interfaces
        .iter()
        .filter(|i| i.kind != "loopback" && net::unusable(i))
        .collect();
    let d = candidates
        .iter()
        .find(|i| net::addrs(i).any(|c| c.contains(leg.dst)))
        .or_else(|| {
            let usable = ns
                .interfaces
                .iter()
                .filter(|i| i.kind != "loopback" && !net::unusable(i))
                .count();
            (usable == 0 && candidates.len() == 1).then(|| &candidates[0])
        })?;
    trail.push(format!("{netns} has no route to {}", leg.dst));
    Some(down_finding(leg, cx, ns, d, None, &trail))
}

/// The finding for a device `d` in `ns` that cannot carry the packet; `prev` is the device the
/// packet was at (or would be at) just before.
fn down_finding(
    leg: &Leg,
    cx: &Context,
    ns: &Namespace,
    d: &Interface,
    prev: Option<&(String, String)>,
    trail: &[String],
) -> Finding {
    let topo = cx.topo;
    let mut evidence = leg.evidence();
    evidence.push(format!(
        "{} {}: {} (state {})",
        ns.name,
        d.name,
        if d.admin_up { "admin up" } else { "admin down" },
        d.state.to_uppercase()
    ));
    // Reached over a veth whose other end is `d`: the peer of the previous device.
    let via_peer = prev.and_then(|(pns, pif)| {
        let (_, p) = net::iface(topo, pns, pif)?;
        let (qns, q) = net::peer(topo, p)?;
        (qns.name == ns.name && q.name == d.name).then(|| (pns.clone(), pif.clone()))
    });
    // `d` is up but has no carrier because its own veth peer is down.
    let its_peer = net::peer(topo, d).filter(|(_, p)| !p.admin_up && d.admin_up);
    let towards = format!("towards {}", leg.dst);
    let (code, target_ns, target, message) = match (its_peer, via_peer) {
        (Some((pns, p)), _) => {
            evidence.push(format!(
                "{} {}: admin down (veth peer of {} {})",
                pns.name, p.name, ns.name, d.name
            ));
            (
                "peer-down",
                pns.name.clone(),
                p.name.clone(),
                format!(
                    "{} in {}, the veth peer of {} in {}, is administratively down, so {} has no carrier and the {} cannot get through it {towards}",
                    p.name, pns.name, d.name, ns.name, d.name, leg.what
                ),
            )
        }
        (None, Some((pns, pif))) => (
            "peer-down",
            ns.name.clone(),
            d.name.clone(),
            format!(
                "{} in {}, the veth peer of {} in {}, is {}, so the {} sent through {} goes nowhere",
                d.name,
                ns.name,
                pif,
                pns,
                net::down_words(d),
                leg.what,
                pif
            ),
        ),
        (None, None) => (
            "link-down",
            ns.name.clone(),
            d.name.clone(),
            format!(
                "{} in {} is {}, so the {} cannot go through it {towards}",
                d.name,
                ns.name,
                net::down_words(d),
                leg.what
            ),
        ),
    };
    if !trail.is_empty() {
        evidence.push(format!("expected path: {}", trail.join(" → ")));
    }
    let ip = net::ip_in(topo, &target_ns);
    Finding {
        code,
        message,
        evidence: evidence.join("; "),
        fix: format!("`{ip} link set {target} up`"),
    }
}

/// `mtu`: the probe is larger than the MTU of a device on its path (or of a vxlan device's
/// underlay once encapsulated), or an ICMP "fragmentation needed" / "packet too big" came
/// back, or the kernel dropped it as too big. Reported only when the probe failed or a router
/// complained: a large probe that was answered got fragmented and arrived.
pub(super) fn mtu(p: &Probe, leg: Option<&Leg>, cx: &Context) -> Option<Finding> {
    let topo = cx.topo;
    let headers = if p.dst.is_ipv4() { 28 } else { 48 };
    let len = u32::try_from(p.size + headers).unwrap_or(u32::MAX);
    // Devices the packet is (or would be) transmitted on — an MTU only limits what a device
    // sends, not what it receives: the expected path's egress hops from the sender, then every
    // egress hook seen.
    let mut devices: Vec<(String, String)> = path::walk_from_sender(topo, p.from_netns, p.dst)
        .steps
        .into_iter()
        .filter_map(|e| match e.step {
            Step::Hook {
                netns,
                ifname,
                dir: Dir::Egress,
            } => Some((netns, ifname)),
            Step::Hook { .. } | Step::Local { .. } => None,
        })
        .collect();
    for leg in [Leg::request(p), Leg::reply(p, topo)] {
        for h in &leg.hooks {
            if let (Some(i), What::Hook(Dir::Egress)) = (&h.ifname, &h.what) {
                devices.push((h.netns.to_string(), i.to_string()));
            }
        }
    }
    let mut seen = BTreeSet::new();
    devices.retain(|d| seen.insert(d.clone()));
    let too_small = devices.iter().find_map(|(ns, ifname)| {
        let (n, i) = net::iface(topo, ns, ifname)?;
        if i.mtu > 0 && len > i.mtu {
            return Some((n.name.clone(), i.name.clone(), i.mtu, 0));
        }
        let underlay = i.vxlan.as_ref()?.underlay.as_deref()?;
        let u = n.interface_named(underlay)?;
        (u.mtu > 0 && len + VXLAN_OVERHEAD > u.mtu)
            .then(|| (n.name.clone(), u.name.clone(), u.mtu, VXLAN_OVERHEAD))
    });
    let frag = p.icmp_errors.iter().find(|e| e.is_frag_needed());
    let too_big_drop = leg.and_then(|l| l.drop).filter(|d| {
        matches!(&d.what, What::Drop { reason, .. } if reason == "PKT_TOO_BIG" || reason == "FRAG_REASM_TIMEOUT")
    });
    let report = frag.is_some() || too_big_drop.is_some() || (!p.replied && too_small.is_some());
    if !report {
        return None;
    }
    let mut evidence = Vec::new();
    if let Some(leg) = leg {
        evidence.extend(leg.evidence());
    }
    if let Some(e) = frag {
        evidence.push(e.describe());
    }
    let path_mtu = too_small
        .as_ref()
        .map(|(_, _, m, o)| m - o)
        .or_else(|| frag.and_then(|e| e.mtu).map(u32::from))?;
    let message = match &too_small {
        Some((ns, dev, m, 0)) => {
            evidence.push(format!("{ns} {dev}: mtu {m}"));
            format!(
                "the {len}-byte probe (-s {} plus {headers} bytes of headers) is larger than the {m}-byte MTU of {dev} in {ns}",
                p.size
            )
        }
        Some((ns, dev, m, o)) => {
            evidence.push(format!("{ns} {dev}: mtu {m}, vxlan adds {o} bytes"));
            format!(
                "the {len}-byte probe (-s {} plus {headers} bytes of headers) grows to {} bytes once VXLAN-encapsulated, more than the {m}-byte MTU of {dev} in {ns}",
                p.size,
                len + o
            )
        }
        None => {
            let from = frag.map(|e| e.from.to_string()).unwrap_or_default();
            format!(
                "{from} reported that the {len}-byte probe needs fragmenting to fit a path MTU of {path_mtu}"
            )
        }
    };
    let max = path_mtu.saturating_sub(headers as u32);
    // Lowering the sender's MTU to the path's is the lasting fix when it is larger.
    let sender_dev = topo
        .namespaces
        .iter()
        .find(|n| n.name == p.from_netns)
        .and_then(|n| {
            let r = net::route_lookup(n, p.dst)?;
            net::route_dev(n, r).filter(|d| d.mtu > path_mtu)
        });
    let fix = match sender_dev {
        Some(d) => format!(
            "send at most {max} bytes of payload (`-s {max}`), or lower the sender's MTU to the path's: `{} link set {} mtu {path_mtu}`",
            net::ip_in(topo, p.from_netns),
            d.name
        ),
        None => format!("send at most {max} bytes of payload (`-s {max}`)"),
    };
    Some(Finding {
        code: "mtu",
        message,
        evidence: evidence.join("; "),
        fix,
    })
}

/// `macvlan-parent`: the failing leg's sender reaches the destination through a macvlan's or
/// ipvlan's own parent device (the host pinging its macvlan container), or the other way round
/// (the container pinging the host's address on the parent). Neither ever reaches the other:
/// the packet, and the ARP before it, leave on the parent's link. The classic macvlan trap; the
/// neighbour entry then looks like a dead peer, which is why this rule comes first.
pub(super) fn macvlan_parent(leg: &Leg, cx: &Context) -> Option<Finding> {
    let topo = cx.topo;
    // A drop with a reason of its own is explained by that reason.
    if leg.drop.is_some() && !leg.drop_reason().is_some_and(|r| r.starts_with("NEIGH_")) {
        return None;
    }
    let from = topo.namespaces.iter().find(|n| n.name == leg.from)?;
    if net::is_local(from, leg.dst) {
        return None;
    }
    let route = net::route_lookup(from, leg.dst)?;
    // Through a router the frames come back in from the wire, which a macvlan does receive.
    if route.gateway.is_some() {
        return None;
    }
    let dev = net::route_dev(from, route)?;
    let (owner_ns, owner) = net::owner_of_ip(topo, leg.dst)?;
    // (the stacked device, its namespace, the parent, its namespace)
    let (upper_ns, upper, parent_ns, parent) = if is_parent_of(topo, (from, dev), owner) {
        (owner_ns, owner, from, dev)
    } else if is_parent_of(topo, (owner_ns, owner), dev) {
        (from, dev, owner_ns, owner)
    } else {
        return None;
    };
    let upper_addr = if std::ptr::eq(upper, owner) {
        leg.dst
    } else {
        leg.src
    };
    let host_len = if upper_addr.is_ipv4() { 32 } else { 128 };
    let ip = net::ip_in(topo, &parent_ns.name);
    let sibling = parent_ns
        .interfaces
        .iter()
        .find(|i| is_parent_of(topo, (parent_ns, parent), i));
    let route_add = |name: &str| format!("{ip} route add {upper_addr}/{host_len} dev {name}");
    let kind = &upper.kind;
    let mode = upper.mode.as_deref();
    let fix = match (sibling, kind.starts_with("ip"), mode) {
        // The parent's namespace has its sibling, but sends by the parent: only the route is
        // missing. From the stacked device's side a sibling is the remedy already in place, so
        // whatever failed, it was not this.
        (Some(s), _, _) if parent_ns.name == from.name => {
            format!("route {upper_addr} through {}, which {} already has on {}: `{}`", s.name, parent_ns.name, parent.name, route_add(&s.name))
        }
        (Some(_), _, _) => return None,
        (None, false, Some("passthru")) => format!(
            "a passthru macvlan takes {} for itself, so {} cannot have a macvlan of its own there: reach {} through another device (a veth pair), or make it a bridge-mode macvlan",
            parent.name, parent_ns.name, upper.name
        ),
        // Siblings reach each other only when both are in bridge mode.
        (None, false, m) => {
            let to_bridge = match m {
                Some("bridge") => String::new(),
                _ => format!(
                    "{} link set {} type {kind} mode bridge && ",
                    net::ip_in(topo, &upper_ns.name),
                    upper.name
                ),
            };
            format!(
                "give {} a bridge-mode macvlan of its own on {} and route {upper_addr} through it: `{to_bridge}{ip} link add mvl-host link {} type macvlan mode bridge && {ip} link set mvl-host up && {}`",
                parent_ns.name, parent.name, parent.name, route_add("mvl-host")
            )
        }
        // An ipvlan's mode belongs to its parent, so the sibling takes the same one; it needs
        // an address of its own for the replies to come to it.
        (None, true, m) => {
            let m = m.unwrap_or("l2");
            format!(
                "give {} an ipvlan of its own on {} (mode {m}, the parent's) with a free address of that subnet, and route {upper_addr} through it from that address: `{ip} link add ipvl-host link {} type ipvlan mode {m} && {ip} addr add <free address>/{host_len} dev ipvl-host && {ip} link set ipvl-host up && {} src <free address>`",
                parent_ns.name, parent.name, parent.name, route_add("ipvl-host")
            )
        }
    };
    let mut evidence = leg.evidence();
    evidence.push(format!(
        "{}: route {} sends {} out of {}",
        from.name,
        net::show_route(route),
        leg.dst,
        dev.name
    ));
    let mode_text = mode.map(|m| format!(" (mode {m})")).unwrap_or_default();
    evidence.push(format!(
        "{} is {} {}; {} {} is {} {kind}{mode_text} on {} {}",
        leg.dst,
        owner_ns.name,
        owner.name,
        upper_ns.name,
        upper.name,
        article(kind),
        parent_ns.name,
        parent.name
    ));
    Some(Finding {
        code: "macvlan-parent",
        message: format!(
            "{} {} is {} {kind} on {} {}, its parent device, and a {kind} never receives what its parent sends nor sends to it: the {} from {} leaves on {}'s link instead",
            upper_ns.name,
            upper.name,
            article(kind),
            parent_ns.name,
            parent.name,
            leg.what,
            from.name,
            dev.name
        ),
        evidence: evidence.join("; "),
        fix,
    })
}

/// `a macvlan`, `an ipvlan`.
fn article(kind: &str) -> &'static str {
    if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// Whether `upper` is a macvlan or ipvlan (or tap variant) whose parent is `parent` of
/// namespace `ns` (the parent may be in another namespace than `upper`: a macvlan moved into a
/// container).
fn is_parent_of(
    topo: &crate::topology::Topology,
    (ns, parent): (&Namespace, &Interface),
    upper: &Interface,
) -> bool {
    if !upper.is_macvlan_like() {
        return false;
    }
    let Some(lower) = upper.lower.as_ref() else {
        return false;
    };
    match topo.resolve(lower) {
        Some((n, i)) => n.inode == ns.inode && i.ifindex == parent.ifindex,
        None => lower.netns == ns.name && lower.name.as_deref() == Some(parent.name.as_str()),
    }
}

/// `ip-on-bridge-port`: a device enslaved to a bridge still has an IP address, in a namespace
/// the probe went through (or should have): the address stops working once the device is a
/// port; it belongs on the bridge.
pub(super) fn ip_on_bridge_port(p: &Probe, leg: Option<&Leg>, cx: &Context) -> Vec<Finding> {
    let topo = cx.topo;
    let mut spaces: Vec<String> = vec![p.from_netns.to_string()];
    for l in [Leg::request(p), Leg::reply(p, topo)] {
        spaces.extend(l.hooks.iter().map(|h| h.netns.to_string()));
        spaces.extend(l.drop.map(|d| d.netns.to_string()));
    }
    spaces.extend(
        path::walk_from_sender(topo, p.from_netns, p.dst)
            .steps
            .iter()
            .map(|e| e.step.netns().to_string()),
    );
    let mut seen = BTreeSet::new();
    spaces.retain(|s| seen.insert(s.clone()));
    let mut out = Vec::new();
    for ns in spaces
        .iter()
        .filter_map(|s| topo.namespaces.iter().find(|n| &n.name == s))
    {
        for port in &ns.interfaces {
            let Some(bridge) = net::bridge_of(ns, port) else {
                continue;
            };
            let Some(addr) = net::addrs(port).next() else {
                continue;
            };
            let ip = net::ip_in(topo, &ns.name);
            let mut evidence = Vec::new();
            if let Some(l) = leg {
                evidence.extend(l.evidence());
            }
            evidence.push(format!(
                "{} {}: master {}, inet {}",
                ns.name,
                port.name,
                bridge.name,
                port.addrs.join(" ")
            ));
            out.push(Finding {
                code: "ip-on-bridge-port",
                message: format!(
                    "{} in {} is a port of bridge {} but still has the address {addr}, which stops working once a device is enslaved",
                    port.name, ns.name, bridge.name
                ),
                evidence: evidence.join("; "),
                fix: format!(
                    "move the address to the bridge: `{ip} addr del {addr} dev {} && {ip} addr add {addr} dev {}`",
                    port.name, bridge.name
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::{
        diagnose::{
            diagnose,
            fixture::{self, cx, flow, path, probe, Configs},
            Finding, IcmpError,
        },
        topology::Topology,
    };

    fn set(t: &mut crate::topology::Topology, ns: &str, ifname: &str, admin_up: bool, state: &str) {
        let i = t
            .namespaces
            .iter_mut()
            .find(|n| n.name == ns)
            .and_then(|n| n.interfaces.iter_mut().find(|i| i.name == ifname))
            .expect("interface exists");
        i.admin_up = admin_up;
        i.state = state.into();
    }

    #[test]
    fn peer_down_when_the_far_end_of_the_next_port_is_down() {
        let mut t = fixture::bridge();
        set(&mut t, "ns02", "veth02", false, "down");
        set(&mut t, "node", "br-veth02", true, "lowerlayerdown");
        let none = Configs::new();
        let req = path(
            flow("192.168.88.11", "192.168.88.12", false),
            &[
                ("ns01", "veth01", "egress"),
                ("node", "br-veth01", "ingress"),
                ("node", "br-veth01", "drop:NO_TX_TARGET"),
            ],
        );
        let p = probe("192.168.88.11", "192.168.88.12", "ns01", Some(&req), None);
        let f = diagnose(&p, &cx(&t, &none, &none));
        assert_eq!(f[0].code, "peer-down", "{f:#?}");
        assert_eq!(
            f[0].message,
            "veth02 in ns02, the veth peer of br-veth02 in node, is administratively down, so br-veth02 has no carrier and the echo request cannot get through it towards 192.168.88.12"
        );
        assert_eq!(f[0].fix, "`ip -n ns02 link set veth02 up`");
        assert!(f[0]
            .evidence
            .contains("expected path: node br-veth02 egress"));
    }

    #[test]
    fn peer_down_when_the_last_hop_left_by_a_veth_whose_peer_is_down() {
        let mut t = fixture::bridge();
        set(&mut t, "wan", "eth0", false, "down");
        let none = Configs::new();
        let req = path(
            flow("192.168.88.11", "10.99.0.2", false),
            &[
                ("ns01", "veth01", "egress"),
                ("node", "br-veth01", "ingress"),
                ("node", "br01", "ingress"),
                ("node", "eth1", "egress"),
            ],
        );
        let p = probe("192.168.88.11", "10.99.0.2", "ns01", Some(&req), None);
        let f = diagnose(&p, &cx(&t, &none, &none));
        assert_eq!(f[0].code, "peer-down", "{f:#?}");
        assert_eq!(
            f[0].message,
            "eth0 in wan, the veth peer of eth1 in node, is administratively down, so the echo request sent through eth1 goes nowhere"
        );
        assert_eq!(f[0].fix, "`ip -n wan link set eth0 up`");
    }

    #[test]
    fn link_down_at_the_sender_whose_routes_went_with_the_link() {
        let mut t = fixture::bridge();
        set(&mut t, "ns01", "veth01", false, "down");
        // The kernel removes the routes of a device set down.
        t.namespaces[1].routes.clear();
        t.namespaces[1].default_route = None;
        let none = Configs::new();
        let p = probe("192.168.88.11", "192.168.88.12", "ns01", None, None);
        let f = diagnose(&p, &cx(&t, &none, &none));
        assert_eq!(f[0].code, "link-down", "{f:#?}");
        assert_eq!(
            f[0].message,
            "veth01 in ns01 is administratively down, so the echo request cannot go through it towards 192.168.88.12"
        );
        assert_eq!(f[0].fix, "`ip -n ns01 link set veth01 up`");
        assert!(f.iter().all(|f| f.code != "no-route"), "{f:#?}");
    }

    #[test]
    fn link_down_on_the_next_bridge_port() {
        let mut t = fixture::bridge();
        set(&mut t, "node", "br-veth02", false, "down");
        let none = Configs::new();
        let req = path(
            flow("192.168.88.11", "192.168.88.12", false),
            &[
                ("ns01", "veth01", "egress"),
                ("node", "br-veth01", "ingress"),
            ],
        );
        let p = probe("192.168.88.11", "192.168.88.12", "ns01", Some(&req), None);
        let f = diagnose(&p, &cx(&t, &none, &none));
        assert_eq!(f[0].code, "link-down", "{f:#?}");
        assert_eq!(f[0].fix, "`ip -n node link set br-veth02 up`");
        // Nothing down, nothing said about links.
        let t = fixture::bridge();
        assert!(diagnose(&p, &cx(&t, &none, &none))
            .iter()
            .all(|f| !matches!(f.code, "link-down" | "peer-down")));
    }

    #[test]
    fn mtu_of_flannel_and_frag_needed() {
        let t = fixture::flannel();
        let none = Configs::new();
        let req = path(
            flow("10.222.1.3", "10.222.2.3", false),
            &[("busybox", "eth0", "egress")],
        );
        let mut p = probe("10.222.1.3", "10.222.2.3", "busybox", Some(&req), None);
        p.size = 1472;
        let f = diagnose(&p, &cx(&t, &none, &none));
        let m = f.iter().find(|f| f.code == "mtu").expect("mtu finding");
        assert_eq!(
            m.message,
            "the 1500-byte probe (-s 1472 plus 28 bytes of headers) is larger than the 1450-byte MTU of eth0 in busybox"
        );
        assert_eq!(m.fix, "send at most 1422 bytes of payload (`-s 1422`)");
        // A fitting probe that was answered: nothing.
        p.size = 56;
        p.replied = true;
        assert!(diagnose(&p, &cx(&t, &none, &none)).is_empty());
        // A router's complaint is reported even for a small-looking probe.
        let mut big = fixture::flannel();
        for n in &mut big.namespaces {
            for i in &mut n.interfaces {
                if i.kind == "veth" && i.name == "eth0" && !n.name.starts_with("node") {
                    i.mtu = 1500;
                }
                if i.kind == "bridge" || i.name.starts_with("veth0") {
                    i.mtu = 1500;
                }
            }
        }
        let mut p = probe("10.222.1.3", "10.222.2.3", "busybox", Some(&req), None);
        p.size = 1472;
        p.icmp_errors.push(IcmpError {
            from: "10.222.1.1".parse().expect("literal"),
            icmp_type: 3,
            code: 4,
            mtu: Some(1450),
        });
        let f = diagnose(&p, &cx(&big, &none, &none));
        let m = f.iter().find(|f| f.code == "mtu").expect("mtu finding");
        assert_eq!(
            m.message,
            "the 1500-byte probe (-s 1472 plus 28 bytes of headers) is larger than the 1450-byte MTU of flannel.1 in node1"
        );
        assert!(m
            .evidence
            .contains("ICMP fragmentation needed (mtu 1450) from 10.222.1.1"));
        assert_eq!(
            m.fix,
            "send at most 1422 bytes of payload (`-s 1422`), or lower the sender's MTU to the path's: `ip -n busybox link set eth0 mtu 1450`"
        );
    }

    #[test]
    fn ip_on_a_bridge_port_is_reported_even_when_answered() {
        let mut t = fixture::bridge();
        if let Some(i) = t.namespaces[0]
            .interfaces
            .iter_mut()
            .find(|i| i.name == "br-veth01")
        {
            i.addrs = vec!["192.168.88.5/24".into(), "fe80::1/64".into()];
        }
        let none = Configs::new();
        let req = path(
            flow("192.168.88.11", "192.168.88.12", false),
            &[("ns01", "veth01", "egress")],
        );
        let rep = path(
            flow("192.168.88.12", "192.168.88.11", true),
            &[("ns01", "veth01", "ingress")],
        );
        let mut p = probe(
            "192.168.88.11",
            "192.168.88.12",
            "ns01",
            Some(&req),
            Some(&rep),
        );
        p.replied = true;
        let f = diagnose(&p, &cx(&t, &none, &none));
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].code, "ip-on-bridge-port");
        assert_eq!(
            f[0].message,
            "br-veth01 in node is a port of bridge br01 but still has the address 192.168.88.5/24, which stops working once a device is enslaved"
        );
        assert_eq!(
            f[0].fix,
            "move the address to the bridge: `ip -n node addr del 192.168.88.5/24 dev br-veth01 && ip -n node addr add 192.168.88.5/24 dev br01`"
        );
    }

    #[test]
    fn a_macvlan_and_its_parent_cannot_reach_each_other() {
        let topo = fixture::macvlan("macvlan", "bridge");
        let configs = Configs::new();
        let context = cx(&topo, &configs, &configs);
        let fix = "give node a bridge-mode macvlan of its own on eth0 and route 10.77.0.2 through it: `ip -n node link add mvl-host link eth0 type macvlan mode bridge && ip -n node link set mvl-host up && ip -n node route add 10.77.0.2/32 dev mvl-host`";
        // The host pinging its container, and the container pinging the host: never sent.
        for (src, dst, from, out) in [
            ("10.77.0.1", "10.77.0.2", "node", "eth0"),
            ("10.77.0.2", "10.77.0.1", "pod", "mv1"),
        ] {
            let f = diagnose(&probe(src, dst, from, None, None), &context);
            assert_eq!(f[0].code, "macvlan-parent", "{f:#?}");
            assert_eq!(
                f[0].message,
                format!("pod mv1 is a macvlan on node eth0, its parent device, and a macvlan never receives what its parent sends nor sends to it: the echo request from {from} leaves on {out}'s link instead")
            );
            assert_eq!(f[0].fix, fix);
            assert!(
                f[0].evidence
                    .contains("pod mv1 is a macvlan (mode bridge) on node eth0"),
                "{}",
                f[0].evidence
            );
            // Not a dead neighbour, and no expected path through a hop it cannot take.
            assert!(
                f.iter()
                    .all(|f| f.code != "neighbour-failed" && f.code != "expected-path"),
                "{f:#?}"
            );
        }
        // An address elsewhere on that link is no such case.
        let f = diagnose(
            &probe("10.77.0.1", "10.77.0.9", "node", None, None),
            &context,
        );
        assert!(f.iter().all(|f| f.code != "macvlan-parent"), "{f:#?}");
    }

    /// The first macvlan-parent finding of a probe `src` → `dst` from `from` in `topo`.
    fn stacked(topo: &Topology, src: &str, dst: &str, from: &str) -> Option<Finding> {
        let configs = Configs::new();
        let f = diagnose(
            &probe(src, dst, from, None, None),
            &cx(topo, &configs, &configs),
        );
        f.into_iter().find(|f| f.code == "macvlan-parent")
    }

    #[test]
    fn the_macvlan_parent_fix_follows_the_mode() {
        // Siblings reach each other only in bridge mode: a VEPA or private macvlan changes first.
        for mode in ["vepa", "private"] {
            let f = stacked(
                &fixture::macvlan("macvlan", mode),
                "10.77.0.1",
                "10.77.0.2",
                "node",
            );
            let fix = f.expect("macvlan-parent").fix;
            assert!(
                fix.contains("`ip -n pod link set mv1 type macvlan mode bridge && ip -n node link add mvl-host"),
                "{fix}"
            );
        }
        let f = stacked(
            &fixture::macvlan("macvlan", "passthru"),
            "10.77.0.1",
            "10.77.0.2",
            "node",
        );
        assert!(f
            .expect("macvlan-parent")
            .fix
            .starts_with("a passthru macvlan takes eth0 for itself"),);
        // An ipvlan's sibling takes the parent's mode and an address of its own.
        let f = stacked(
            &fixture::macvlan("ipvlan", "l3"),
            "10.77.0.1",
            "10.77.0.2",
            "node",
        );
        let f = f.expect("macvlan-parent");
        assert!(
            f.message.starts_with("pod mv1 is an ipvlan on node eth0"),
            "{}",
            f.message
        );
        assert!(
            f.fix.contains(
                "type ipvlan mode l3 && ip -n node addr add <free address>/32 dev ipvl-host"
            ),
            "{}",
            f.fix
        );
        // IPv6: a /128 route.
        let mut v6 = fixture::macvlan("macvlan", "bridge");
        v6.namespaces[0].interfaces[1].addrs = vec!["fd00::1/64".into()];
        v6.namespaces[0].routes[0].dst = "fd00::/64".into();
        v6.namespaces[1].interfaces[1].addrs = vec!["fd00::2/64".into()];
        let f = stacked(&v6, "fd00::1", "fd00::2", "node").expect("macvlan-parent");
        assert!(
            f.fix.ends_with("route add fd00::2/128 dev mvl-host`"),
            "{}",
            f.fix
        );
    }

    #[test]
    fn macvlan_parent_stays_out_of_what_it_does_not_explain() {
        // Through a router the frames come back from the wire: the macvlan receives them.
        let mut routed = fixture::macvlan("macvlan", "bridge");
        routed.namespaces[0].routes[0].gateway = Some("10.77.0.254".into());
        assert_eq!(stacked(&routed, "10.77.0.1", "10.77.0.2", "node"), None);
        // node has its sibling but still sends by eth0: only the route is missing.
        let mut half = fixture::macvlan("macvlan", "bridge");
        let mut sibling = half.namespaces[1].interfaces[1].clone();
        sibling.name = "mvl-host".into();
        sibling.ifindex = 4;
        sibling.addrs.clear();
        half.namespaces[0].interfaces.push(sibling);
        let f = stacked(&half, "10.77.0.1", "10.77.0.2", "node").expect("macvlan-parent");
        assert_eq!(
            f.fix,
            "route 10.77.0.2 through mvl-host, which node already has on eth0: `ip -n node route add 10.77.0.2/32 dev mvl-host`"
        );
        // From the container, the sibling is the remedy in place: whatever failed, not this.
        assert_eq!(stacked(&half, "10.77.0.2", "10.77.0.1", "pod"), None);
        // A drop with a reason of its own is explained by that reason.
        let topo = fixture::macvlan("macvlan", "bridge");
        let req = path(
            flow("10.77.0.1", "10.77.0.2", false),
            &[("node", "eth0", "drop:NETFILTER_DROP")],
        );
        let configs = Configs::new();
        let f = diagnose(
            &probe("10.77.0.1", "10.77.0.2", "node", Some(&req), None),
            &cx(&topo, &configs, &configs),
        );
        assert!(f.iter().all(|f| f.code != "macvlan-parent"), "{f:#?}");
    }
}
