//! The path a packet should take, computed from the topology alone: routes (longest prefix,
//! then the default), bridge ports (the port whose veth peer's namespace owns the address),
//! veth peers and vxlan underlays. Used to say where a lost packet should have gone next
//! (`expected-path`) and to find the down device on its way (`link-down`, `peer-down`).
//!
//! Owns: [`Step`], [`walk_from_hop`], [`walk_from_sender`], [`first_divergence`] and the
//! `expected-path` rule. Pure.

use std::{collections::HashSet, fmt, net::IpAddr};

use crate::{
    decode::{Dir, Observation, What},
    topology::{Namespace, Topology},
};

use super::{net, Context, Finding, Leg, Probe};

/// Longest expected path computed (a loop guard as much as a limit).
const MAX_STEPS: usize = 16;

/// A place on a packet's path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Step {
    /// At a tc hook: a device, in a namespace, in a direction.
    Hook {
        netns: String,
        ifname: String,
        dir: Dir,
    },
    /// Handed to the namespace's own stack: the packet arrived.
    Local { netns: String },
}

impl Step {
    /// The hook an observation was made at; `None` for drops and frees.
    pub fn of(o: &Observation) -> Option<Step> {
        match o.what {
            What::Hook(dir) => Some(Step::Hook {
                netns: o.netns.to_string(),
                ifname: o.ifname.as_deref().unwrap_or("-").to_string(),
                dir,
            }),
            _ => None,
        }
    }

    pub fn netns(&self) -> &str {
        match self {
            Step::Hook { netns, .. } | Step::Local { netns } => netns,
        }
    }
}

impl fmt::Display for Step {
    /// `node br-veth01 ingress` (as the trace prints hops), or `ns02's own stack`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Hook { netns, ifname, dir } => write!(f, "{netns} {ifname} {dir}"),
            Step::Local { netns } => write!(f, "{netns}'s own stack"),
        }
    }
}

/// One expected step and the reason the topology gives for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub step: Step,
    /// e.g. "route default via 192.168.88.1 dev veth01", "veth peer of br-veth02".
    pub why: String,
}

/// Why an expected path stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Delivered to the destination's stack.
    Local,
    /// The namespace has no route for the destination.
    NoRoute { netns: String },
    /// The topology cannot tell (a physical device, an unknown namespace, no port owns the
    /// address).
    Unknown,
    /// Went on too long (a loop in the topology).
    Limit,
}

/// A computed path: the steps after the starting point, and why it stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    pub steps: Vec<Expected>,
    pub end: End,
}

/// Where the walker stands.
#[derive(Debug, Clone)]
struct At {
    step: Step,
    /// The frame is VXLAN-encapsulated (between a vxlan device and the far end's).
    encap: bool,
    /// The next-hop address chosen by the last route (for picking a bridge port).
    via: Option<IpAddr>,
}

/// The expected path of a packet to `dst` after it was seen at `hop`.
pub fn walk_from_hop(topo: &Topology, hop: &Observation, dst: IpAddr) -> Walk {
    match Step::of(hop) {
        Some(step) => walk(
            topo,
            At {
                step,
                encap: hop.inner().is_some(),
                via: None,
            },
            dst,
        ),
        None => Walk {
            steps: Vec::new(),
            end: End::Unknown,
        },
    }
}

/// The expected path of a packet to `dst` sent from namespace `netns`.
pub fn walk_from_sender(topo: &Topology, netns: &str, dst: IpAddr) -> Walk {
    let Some(ns) = topo.namespaces.iter().find(|n| n.name == netns) else {
        return Walk {
            steps: Vec::new(),
            end: End::Unknown,
        };
    };
    match route(ns, dst) {
        Ok((at, why)) => {
            let mut w = walk(topo, at.clone(), dst);
            w.steps.insert(0, Expected { step: at.step, why });
            w
        }
        Err(end) => Walk {
            steps: Vec::new(),
            end,
        },
    }
}

fn walk(topo: &Topology, mut at: At, dst: IpAddr) -> Walk {
    let mut steps = Vec::new();
    let mut seen = HashSet::new();
    seen.insert(at.step.clone());
    loop {
        if steps.len() >= MAX_STEPS {
            return Walk {
                steps,
                end: End::Limit,
            };
        }
        match next(topo, &at, dst) {
            Ok((n, why)) => {
                if !seen.insert(n.step.clone()) {
                    return Walk {
                        steps,
                        end: End::Limit,
                    };
                }
                steps.push(Expected {
                    step: n.step.clone(),
                    why,
                });
                at = n;
            }
            Err(end) => return Walk { steps, end },
        }
    }
}

/// The step after `at` on the way to `dst`, with the reason.
fn next(topo: &Topology, at: &At, dst: IpAddr) -> Result<(At, String), End> {
    let (netns, ifname, dir) = match &at.step {
        Step::Local { .. } => return Err(End::Local),
        Step::Hook { netns, ifname, dir } => (netns, ifname, *dir),
    };
    let (ns, i) = net::iface(topo, netns, ifname).ok_or(End::Unknown)?;
    let hook = |ifname: &str, dir: Dir| Step::Hook {
        netns: ns.name.clone(),
        ifname: ifname.to_string(),
        dir,
    };
    match dir {
        Dir::Egress => match i.kind.as_str() {
            "veth" | "netkit" => {
                let (pns, p) = net::peer(topo, i).ok_or(End::Unknown)?;
                let step = Step::Hook {
                    netns: pns.name.clone(),
                    ifname: p.name.clone(),
                    dir: Dir::Ingress,
                };
                let why = format!("veth peer of {} in {}", i.name, ns.name);
                Ok((At { step, ..at.clone() }, why))
            }
            "bridge" => {
                let target = at
                    .via
                    .or_else(|| net::route_lookup(ns, dst).map(|r| net::next_hop(r, dst)))
                    .unwrap_or(dst);
                let (port, why) = port_towards(topo, ns, &i.name, target, None)?;
                let step = hook(&port, Dir::Egress);
                Ok((At { step, ..at.clone() }, why))
            }
            "vxlan" => {
                let underlay = i
                    .vxlan
                    .as_ref()
                    .and_then(|v| v.underlay.clone())
                    .ok_or(End::Unknown)?;
                let why = format!("{}'s underlay device, VXLAN-encapsulated", i.name);
                let step = hook(&underlay, Dir::Egress);
                Ok((
                    At {
                        step,
                        encap: true,
                        via: None,
                    },
                    why,
                ))
            }
            _ => Err(End::Unknown),
        },
        Dir::Ingress => {
            if at.encap {
                let vx = ns
                    .interfaces
                    .iter()
                    .filter(|v| v.kind == "vxlan")
                    .max_by_key(|v| {
                        v.vxlan
                            .as_ref()
                            .is_some_and(|x| x.underlay.as_deref() == Some(&i.name))
                    })
                    .ok_or(End::Unknown)?;
                let why = format!("decapsulated by {} in {}", vx.name, ns.name);
                let step = hook(&vx.name, Dir::Ingress);
                return Ok((
                    At {
                        step,
                        encap: false,
                        via: None,
                    },
                    why,
                ));
            }
            if let Some(b) = net::bridge_of(ns, i) {
                // The frame is addressed to the sender's next hop: bridged when that is
                // another host on the segment, up the stack when it is this namespace.
                let target = at.via.unwrap_or(dst);
                if bridged(ns, &b.name, target) {
                    let (port, why) = port_towards(topo, ns, &b.name, target, Some(&i.name))?;
                    let step = hook(&port, Dir::Egress);
                    return Ok((At { step, ..at.clone() }, why));
                }
                let why = format!(
                    "{target} is not another host on {}'s segment, so {} hands the frame to {}'s stack",
                    b.name, b.name, ns.name
                );
                let step = hook(&b.name, Dir::Ingress);
                return Ok((At { step, ..at.clone() }, why));
            }
            route(ns, dst).map(|(mut a, why)| {
                a.encap = false;
                (a, why)
            })
        }
    }
}

/// Whether a frame for `dst` that entered bridge `bridge` stays on its segment (`dst` is in
/// the bridge's subnet and is not the namespace's own address).
pub fn bridged(ns: &Namespace, bridge: &str, dst: IpAddr) -> bool {
    !net::is_local(ns, dst)
        && ns
            .interface_named(bridge)
            .is_some_and(|b| net::addrs(b).any(|c| c.contains(dst)))
}

/// Routing in `ns`: local delivery, or out of the route's device.
fn route(ns: &Namespace, dst: IpAddr) -> Result<(At, String), End> {
    if net::is_local(ns, dst) {
        let step = Step::Local {
            netns: ns.name.clone(),
        };
        let why = format!("{dst} is an address of {}", ns.name);
        return Ok((
            At {
                step,
                encap: false,
                via: None,
            },
            why,
        ));
    }
    let r = net::route_lookup(ns, dst).ok_or_else(|| End::NoRoute {
        netns: ns.name.clone(),
    })?;
    let dev = net::route_dev(ns, r).ok_or(End::Unknown)?;
    let step = Step::Hook {
        netns: ns.name.clone(),
        ifname: dev.name.clone(),
        dir: Dir::Egress,
    };
    let why = format!("route {} in {}", net::show_route(r), ns.name);
    Ok((
        At {
            step,
            encap: false,
            via: Some(net::next_hop(r, dst)),
        },
        why,
    ))
}

/// The port of `bridge` that leads to `target`: the one whose veth peer's namespace has that
/// address (or whose peer itself has it). `except` is the port the frame came in on.
fn port_towards(
    topo: &Topology,
    ns: &Namespace,
    bridge: &str,
    target: IpAddr,
    except: Option<&str>,
) -> Result<(String, String), End> {
    let ports = ns
        .bridge_ports(bridge)
        .into_iter()
        .filter(|p| Some(p.name.as_str()) != except);
    let mut fallback = None;
    for p in ports {
        let Some((pns, pi)) = net::peer(topo, p) else {
            continue;
        };
        if net::addrs(pi).any(|c| c.addr == target) {
            let why = format!(
                "{} is the {bridge} port whose veth peer {} {} has {target}",
                p.name, pns.name, pi.name
            );
            return Ok((p.name.clone(), why));
        }
        if fallback.is_none() && net::is_local(pns, target) {
            let why = format!(
                "{} is the {bridge} port leading to {}, which has {target}",
                p.name, pns.name
            );
            fallback = Some((p.name.clone(), why));
        }
    }
    fallback.ok_or(End::Unknown)
}

/// Where an observed path first leaves the expected one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// The last hop that was where it should be (`None`: nothing seen in the sender).
    pub last_seen: Option<Step>,
    /// What should have come next, when the topology can tell.
    pub expected: Option<Expected>,
    /// What was seen instead (`None`: nothing more was seen).
    pub then_seen: Option<Step>,
    /// Why nothing is expected, when `expected` is `None`.
    pub end: Option<End>,
}

/// Compares the hooks a packet was seen at (time order) with the path the topology expects
/// for a packet from `from_netns` to `dst`, and returns the first place they differ. A seen
/// hop matches when it is one of the next two expected steps (a hook may be missing, e.g. a
/// bridge device's ingress when the trace did not hook it).
pub fn first_divergence(
    topo: &Topology,
    hooks: &[&Observation],
    from_netns: &str,
    dst: IpAddr,
) -> Divergence {
    let matches = |w: &Walk, s: &Step| w.steps.iter().take(2).any(|e| &e.step == s);
    let Some(first) = hooks.first() else {
        let w = walk_from_sender(topo, from_netns, dst);
        return Divergence {
            last_seen: None,
            expected: w.steps.first().cloned(),
            then_seen: None,
            end: w.steps.is_empty().then_some(w.end),
        };
    };
    if first.netns == from_netns {
        let w = walk_from_sender(topo, from_netns, dst);
        if let Some(s) = Step::of(first) {
            if !w.steps.is_empty() && !matches(&w, &s) {
                return Divergence {
                    last_seen: None,
                    expected: w.steps.first().cloned(),
                    then_seen: Some(s),
                    end: None,
                };
            }
        }
    }
    for pair in hooks.windows(2) {
        let w = walk_from_hop(topo, pair[0], dst);
        let Some(seen) = Step::of(pair[1]) else {
            continue;
        };
        if w.steps.is_empty() || matches(&w, &seen) {
            continue;
        }
        return Divergence {
            last_seen: Step::of(pair[0]),
            expected: w.steps.first().cloned(),
            then_seen: Some(seen),
            end: None,
        };
    }
    let last = hooks.last().copied().unwrap_or(first);
    let w = walk_from_hop(topo, last, dst);
    Divergence {
        last_seen: Step::of(last),
        expected: w.steps.first().cloned(),
        then_seen: None,
        end: w.steps.is_empty().then_some(w.end),
    }
}

/// The next few expected steps after `d`'s expected one, for evidence.
fn trail(topo: &Topology, from: &Expected, rest: &Walk) -> String {
    let mut parts = vec![format!("{} ({})", from.step, from.why)];
    parts.extend(
        rest.steps
            .iter()
            .skip(1)
            .take(3)
            .map(|e| format!("{} ({})", e.step, e.why)),
    );
    let _ = topo;
    parts.join(" → ")
}

/// How to look at an expected step.
fn look_at(topo: &Topology, s: &Step) -> String {
    match s {
        Step::Hook { netns, ifname, .. } => format!(
            "look at {ifname} in {netns}: `{} -s link show {ifname}`",
            net::ip_in(topo, netns)
        ),
        Step::Local { netns } => format!(
            "check that {netns} answers pings: `{}sysctl net.ipv4.icmp_echo_ignore_all`",
            net::exec_in(topo, netns)
        ),
    }
}

/// `expected-path`: for a packet lost without a drop, where it was last seen and where the
/// topology says it should have been next (the first divergence).
pub(super) fn expected_path(p: &Probe, leg: &Leg, cx: &Context) -> Option<Finding> {
    let topo = cx.topo;
    let mut d = first_divergence(topo, &leg.hooks, &leg.from, leg.dst);
    // Next stop the destination's own stack: the packet arrived.
    if d.then_seen.is_none()
        && d.expected
            .as_ref()
            .is_some_and(|e| matches!(e.step, Step::Local { .. }))
    {
        d.expected = None;
        d.end = Some(End::Local);
    }
    let mut evidence = leg.evidence();
    let what = leg.what;
    let last = d.last_seen.as_ref().map(|s| s.to_string());
    let (message, fix) = match (&d.expected, &d.then_seen, &last) {
        (Some(e), Some(z), Some(x)) => {
            evidence.push(format!("expected after {x}: {} ({})", e.step, e.why));
            (
                format!("the {what} left the expected path after {x}: expected next: {}, but it was next seen at {z}", e.step),
                look_at(topo, &e.step),
            )
        }
        (Some(e), Some(z), None) => {
            evidence.push(format!("expected first hop: {} ({})", e.step, e.why));
            (
                format!("the {what} left {} the wrong way: expected first hop: {}, but it was first seen at {z}", leg.from, e.step),
                look_at(topo, &e.step),
            )
        }
        (Some(e), None, Some(x)) => {
            let rest = match leg.last_hook() {
                Some(h) => walk_from_hop(topo, h, leg.dst),
                None => walk_from_sender(topo, &leg.from, leg.dst),
            };
            evidence.push(format!("expected path: {}", trail(topo, e, &rest)));
            (
                format!("the {what} was last seen at {x}; expected next: {}", e.step),
                look_at(topo, &e.step),
            )
        }
        (Some(e), None, None) => {
            let rest = walk_from_sender(topo, &leg.from, leg.dst);
            evidence.push(format!("expected path: {}", trail(topo, e, &rest)));
            (
                format!("the {what} was never seen leaving {}; expected first hop: {}", leg.from, e.step),
                look_at(topo, &e.step),
            )
        }
        (None, _, Some(x)) => match &d.end {
            Some(End::Local) if leg.what == "echo request" => {
                let at = d.last_seen.as_ref().map_or(leg.from.as_str(), |s| s.netns());
                let back = walk_from_sender(topo, at, p.src);
                match back.steps.first() {
                    Some(r) => {
                        evidence.push(format!("echo reply expected at {} ({})", r.step, r.why));
                        (
                            format!("the echo request was last seen at {x}, delivered to {at}; expected next: the echo reply at {}", r.step),
                            look_at(topo, &Step::Local { netns: at.to_string() }),
                        )
                    }
                    // No route back: the no-route finding says so.
                    None => return None,
                }
            }
            Some(End::NoRoute { netns }) => (
                format!("the {what} was last seen at {x}; expected next: nothing, {netns} has no route to {}", leg.dst),
                format!("`{} route get {}`", net::ip_in(topo, netns), leg.dst),
            ),
            Some(End::Local) => return None,
            _ => (
                format!("the {what} was last seen at {x}; the topology does not tell where it should have gone next"),
                "trace the devices after it: `vethtrace trace` with a filter for this probe".to_string(),
            ),
        },
        // Nothing seen and nothing expected: the sender has no route, which `no-route` says.
        (None, _, None) => return None,
    };
    Some(Finding {
        code: "expected-path",
        message,
        evidence: evidence.join("; "),
        fix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::fixture::{self, flow, ip, path};

    fn names(w: &Walk) -> Vec<String> {
        w.steps.iter().map(|e| e.step.to_string()).collect()
    }

    #[test]
    fn pod_to_pod_across_the_bridge() {
        let t = fixture::bridge();
        let w = walk_from_sender(&t, "ns01", ip("192.168.88.12"));
        assert_eq!(
            names(&w),
            [
                "ns01 veth01 egress",
                "node br-veth01 ingress",
                "node br-veth02 egress",
                "ns02 veth02 ingress",
                "ns02's own stack"
            ]
        );
        assert_eq!(w.end, End::Local);
        assert_eq!(
            w.steps[2].why,
            "br-veth02 is the br01 port whose veth peer ns02 veth02 has 192.168.88.12"
        );
    }

    #[test]
    fn pod_to_wan_is_routed_by_the_node() {
        let t = fixture::bridge();
        let w = walk_from_sender(&t, "ns01", ip("10.99.0.2"));
        assert_eq!(
            names(&w),
            [
                "ns01 veth01 egress",
                "node br-veth01 ingress",
                "node br01 ingress",
                "node eth1 egress",
                "wan eth0 ingress",
                "wan's own stack"
            ]
        );
        // And back: wan has no route to the pods.
        let back = walk_from_sender(&t, "wan", ip("192.168.88.11"));
        assert!(back.steps.is_empty());
        assert_eq!(
            back.end,
            End::NoRoute {
                netns: "wan".into()
            }
        );
        // The node answering a pod goes out through the bridge and the right port.
        let w = walk_from_sender(&t, "node", ip("192.168.88.11"));
        assert_eq!(
            names(&w)[..3],
            [
                "node br01 egress",
                "node br-veth01 egress",
                "ns01 veth01 ingress"
            ]
        );
    }

    #[test]
    fn flannel_goes_through_the_vxlan_and_its_underlay() {
        let t = fixture::flannel();
        let w = walk_from_sender(&t, "busybox", ip("10.222.2.3"));
        assert_eq!(
            names(&w),
            [
                "busybox eth0 egress",
                "node1 veth00000001 ingress",
                "node1 cni0 ingress",
                "node1 flannel.1 egress",
                "node1 eth0 egress",
                "node2 eth0 ingress",
                "node2 flannel.1 ingress",
                "node2 cni0 egress",
                "node2 veth00000002 egress",
                "nginx eth0 ingress",
                "nginx's own stack"
            ]
        );
    }

    #[test]
    fn divergence_at_the_end_of_a_lost_path() {
        let t = fixture::bridge();
        let p = path(
            flow("192.168.88.11", "192.168.88.12", false),
            &[
                ("ns01", "veth01", "egress"),
                ("node", "br-veth01", "ingress"),
            ],
        );
        let hooks: Vec<&Observation> = p.hops.iter().collect();
        let d = first_divergence(&t, &hooks, "ns01", ip("192.168.88.12"));
        assert_eq!(
            d.last_seen.map(|s| s.to_string()).as_deref(),
            Some("node br-veth01 ingress")
        );
        assert_eq!(
            d.expected.map(|e| e.step.to_string()).as_deref(),
            Some("node br-veth02 egress")
        );
        assert!(d.then_seen.is_none());
    }

    #[test]
    fn divergence_in_the_middle_and_a_skipped_bridge_hook() {
        let t = fixture::bridge();
        // br01 ingress not hooked: eth1 egress still matches.
        let p = path(
            flow("192.168.88.11", "10.99.0.2", false),
            &[
                ("ns01", "veth01", "egress"),
                ("node", "br-veth01", "ingress"),
                ("node", "eth1", "egress"),
            ],
        );
        let hooks: Vec<&Observation> = p.hops.iter().collect();
        let d = first_divergence(&t, &hooks, "ns01", ip("10.99.0.2"));
        assert_eq!(
            d.last_seen.map(|s| s.to_string()).as_deref(),
            Some("node eth1 egress")
        );
        assert_eq!(
            d.expected.map(|e| e.step.to_string()).as_deref(),
            Some("wan eth0 ingress")
        );
        // A packet for ns02 that shows up on the wrong port.
        let p = path(
            flow("192.168.88.11", "192.168.88.12", false),
            &[
                ("ns01", "veth01", "egress"),
                ("node", "br-veth01", "ingress"),
                ("node", "eth1", "egress"),
            ],
        );
        let hooks: Vec<&Observation> = p.hops.iter().collect();
        let d = first_divergence(&t, &hooks, "ns01", ip("192.168.88.12"));
        assert_eq!(
            d.then_seen.map(|s| s.to_string()).as_deref(),
            Some("node eth1 egress")
        );
        assert_eq!(
            d.expected.map(|e| e.step.to_string()).as_deref(),
            Some("node br-veth02 egress")
        );
    }

    #[test]
    fn nothing_seen_expects_the_senders_first_hop() {
        let t = fixture::bridge();
        let d = first_divergence(&t, &[], "ns01", ip("192.168.88.12"));
        assert!(d.last_seen.is_none());
        assert_eq!(
            d.expected.map(|e| e.step.to_string()).as_deref(),
            Some("ns01 veth01 egress")
        );
        let d = first_divergence(&t, &[], "wan", ip("192.168.88.12"));
        assert_eq!(
            d.end,
            Some(End::NoRoute {
                netns: "wan".into()
            })
        );
    }
}

#[cfg(test)]
mod finding_tests {
    use crate::diagnose::{
        diagnose,
        fixture::{self, cx, flow, path, probe, Configs},
    };

    #[test]
    fn lost_without_a_drop_says_where_it_should_have_gone() {
        let t = fixture::bridge();
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
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].code, "expected-path");
        assert_eq!(
            f[0].message,
            "the echo request was last seen at node br-veth01 ingress; expected next: node br-veth02 egress"
        );
        assert!(f[0].evidence.contains(
            "expected path: node br-veth02 egress (br-veth02 is the br01 port whose veth peer ns02 veth02 has 192.168.88.12) → ns02 veth02 ingress (veth peer of br-veth02 in node)"
        ));
        assert_eq!(
            f[0].fix,
            "look at br-veth02 in node: `ip -n node -s link show br-veth02`"
        );
    }

    #[test]
    fn delivered_but_unanswered_expects_the_reply() {
        let t = fixture::bridge();
        let none = Configs::new();
        let req = path(
            flow("192.168.88.11", "192.168.88.12", false),
            &[
                ("ns01", "veth01", "egress"),
                ("node", "br-veth01", "ingress"),
                ("node", "br-veth02", "egress"),
                ("ns02", "veth02", "ingress"),
            ],
        );
        let p = probe("192.168.88.11", "192.168.88.12", "ns01", Some(&req), None);
        let f = diagnose(&p, &cx(&t, &none, &none));
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(
            f[0].message,
            "the echo request was last seen at ns02 veth02 ingress, delivered to ns02; expected next: the echo reply at ns02 veth02 egress"
        );
        assert_eq!(
            f[0].fix,
            "check that ns02 answers pings: `ip netns exec ns02 sysctl net.ipv4.icmp_echo_ignore_all`"
        );
    }

    #[test]
    fn a_lost_reply_is_followed_from_the_destination() {
        let t = fixture::bridge();
        let none = Configs::new();
        let req = path(
            flow("192.168.88.11", "192.168.88.12", false),
            &[("ns01", "veth01", "egress"), ("ns02", "veth02", "ingress")],
        );
        let rep = path(
            flow("192.168.88.12", "192.168.88.11", true),
            &[
                ("ns02", "veth02", "egress"),
                ("node", "br-veth02", "ingress"),
            ],
        );
        let p = probe(
            "192.168.88.11",
            "192.168.88.12",
            "ns01",
            Some(&req),
            Some(&rep),
        );
        let f = diagnose(&p, &cx(&t, &none, &none));
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(
            f[0].message,
            "the echo reply was last seen at node br-veth02 ingress; expected next: node br-veth01 egress"
        );
    }

    #[test]
    fn answered_and_nothing_odd_means_no_findings() {
        let t = fixture::bridge();
        let none = Configs::new();
        let req = path(
            flow("192.168.88.11", "192.168.88.12", false),
            &[("ns01", "veth01", "egress"), ("ns02", "veth02", "ingress")],
        );
        let rep = path(
            flow("192.168.88.12", "192.168.88.11", true),
            &[("ns02", "veth02", "egress"), ("ns01", "veth01", "ingress")],
        );
        let mut p = probe(
            "192.168.88.11",
            "192.168.88.12",
            "ns01",
            Some(&req),
            Some(&rep),
        );
        p.replied = true;
        assert!(diagnose(&p, &cx(&t, &none, &none)).is_empty());
    }
}
