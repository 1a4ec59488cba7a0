//! Routing rules: `ip-forward-off` (a namespace that should route the packet does not forward),
//! `rp-filter` (reverse-path filtering drops it), `no-route` (no route to the destination, or
//! back to the source) and `neighbour-failed` (ARP/NDP for the next hop went unanswered).

use std::net::IpAddr;

use crate::{
    decode::{Dir, Observation, What},
    topology::Namespace,
};

use super::{net, path, Context, Finding, Leg, Probe};

/// The namespace and the L3 device a packet arrived on and stayed at: the bridge for a frame
/// that entered one of its ports and went up the stack; `None` when it was bridged through,
/// left again, or the namespace is unknown.
fn arrived<'a>(
    leg: &Leg<'a>,
    cx: &Context<'a>,
) -> Option<(&'a Observation, &'a Namespace, String)> {
    let h = leg.arrival()?;
    if leg.drop.is_some_and(|d| d.netns != h.netns) {
        return None;
    }
    let ns = cx.topo.namespaces.iter().find(|n| n.name == h.netns)?;
    let i = ns.interface_named(h.ifname.as_deref()?)?;
    let dev = match net::bridge_of(ns, i) {
        Some(b) if path::bridged(ns, &b.name, leg.dst) => return None,
        Some(b) => b.name.clone(),
        None => i.name.clone(),
    };
    Some((h, ns, dev))
}

/// `ip-forward-off`: the packet arrived in a namespace that should route it on, and
/// net.ipv4.ip_forward is 0 there.
pub(super) fn ip_forward_off(leg: &Leg, cx: &Context) -> Option<Finding> {
    let (_, ns, in_dev) = arrived(leg, cx)?;
    if net::is_local(ns, leg.dst) || !leg.dst.is_ipv4() {
        return None;
    }
    let cfg = cx.config(&ns.name)?;
    if cfg.ip_forward != Some(false) {
        return None;
    }
    let out = net::route_lookup(ns, leg.dst);
    let onward = out
        .and_then(|r| net::route_dev(ns, r))
        .map(|d| format!(" on to {}", d.name))
        .unwrap_or_default();
    let mut evidence = leg.evidence();
    evidence.push(format!("{}: net.ipv4.ip_forward = 0", ns.name));
    if let Some(r) = out {
        evidence.push(format!(
            "{}: route {} for {}",
            ns.name,
            net::show_route(r),
            leg.dst
        ));
    }
    let exec = net::exec_in(cx.topo, &ns.name);
    Some(Finding {
        code: "ip-forward-off",
        message: format!(
            "{} received the {} on {in_dev} but does not route it{onward} towards {} because net.ipv4.ip_forward is 0 there",
            ns.name, leg.what, leg.dst
        ),
        evidence: evidence.join("; "),
        fix: format!("`{exec}sysctl -w net.ipv4.ip_forward=1`"),
    })
}

/// `rp-filter`: dropped with IP_RPFILTER, or arrived on a device with rp_filter on while the
/// route back to the source leaves by another device (strict) or does not exist (loose).
pub(super) fn rp_filter(leg: &Leg, cx: &Context) -> Option<Finding> {
    let by_reason = leg.drop_reason() == Some("IP_RPFILTER");
    let (ns, in_dev) = match arrived(leg, cx) {
        Some((_, ns, dev)) => (ns, dev),
        None if by_reason => {
            let d = leg.drop?;
            let ns = cx.topo.namespaces.iter().find(|n| n.name == d.netns)?;
            (ns, d.ifname.as_deref().unwrap_or("-").to_string())
        }
        None => return None,
    };
    let mode = cx
        .config(&ns.name)
        .and_then(|c| c.effective_rp_filter(&in_dev));
    let back = net::route_lookup(ns, leg.src);
    let back_dev = back
        .and_then(|r| net::route_dev(ns, r))
        .map(|d| d.name.clone());
    let fails = match (mode, &back_dev) {
        (Some(1), Some(d)) => d != &in_dev,
        (Some(1 | 2), None) => true,
        _ => false,
    };
    if !by_reason && !fails {
        return None;
    }
    let because = match &back_dev {
        Some(d) if d != &in_dev => {
            format!("the route back to {} leaves by {d}, not {in_dev}", leg.src)
        }
        Some(_) => format!("the route back to {} fails the check", leg.src),
        None => format!("{} has no route back to {}", ns.name, leg.src),
    };
    let mode_text = mode
        .map(|m| format!(" (rp_filter={m})"))
        .unwrap_or_default();
    let mut evidence = leg.evidence();
    if let Some(cfg) = cx.config(&ns.name) {
        let all = cfg.rp_filter_of("all").unwrap_or(0);
        let own = cfg.rp_filter_of(&in_dev).unwrap_or(0);
        evidence.push(format!(
            "{}: net.ipv4.conf.all.rp_filter = {all}, net.ipv4.conf.{in_dev}.rp_filter = {own}",
            ns.name
        ));
    }
    match back {
        Some(r) => evidence.push(format!(
            "{}: route back to {}: {}",
            ns.name,
            leg.src,
            net::show_route(r)
        )),
        None => evidence.push(format!("{}: no route back to {}", ns.name, leg.src)),
    }
    let exec = net::exec_in(cx.topo, &ns.name);
    let all_too = cx
        .config(&ns.name)
        .and_then(|c| c.rp_filter_of("all"))
        .is_some_and(|a| a == 1);
    let loosen = if all_too {
        format!("net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.{in_dev}.rp_filter=2")
    } else {
        format!("net.ipv4.conf.{in_dev}.rp_filter=2")
    };
    let route_back = suggest_route(cx, ns, leg.src, Some(&in_dev));
    let fix = match (mode, &back_dev) {
        (Some(2), None) => format!("add a route back to {}: `{route_back}`", leg.src),
        _ => format!(
            "use loose mode: `{exec}sysctl -w {loosen}`, or route {} back through {in_dev}: `{route_back}`",
            leg.src
        ),
    };
    Some(Finding {
        code: "rp-filter",
        message: format!(
            "reverse-path filtering{mode_text} in {} drops the {} from {} arriving on {in_dev} because {because}",
            ns.name, leg.what, leg.src
        ),
        evidence: evidence.join("; "),
        fix,
    })
}

/// A `ip route add` command for `target` in `ns`: the subnet some interface of the topology
/// has around `target` (else the address alone), via the far end of a veth of `ns` whose
/// namespace can reach it (or through `dev` when given).
fn suggest_route(cx: &Context, ns: &Namespace, target: IpAddr, dev: Option<&str>) -> String {
    let subnet = cx
        .topo
        .namespaces
        .iter()
        .flat_map(|n| n.interfaces.iter())
        .filter(|i| i.name != "lo")
        .flat_map(|i| net::addrs(i).collect::<Vec<_>>())
        .filter(|c| {
            c.contains(target) && c.len > 0 && c.len < if target.is_ipv4() { 32 } else { 128 }
        })
        .map(|c| c.network())
        .max_by_key(|c| c.len)
        .unwrap_or_else(|| net::Cidr::host(target));
    let ip = net::ip_in(cx.topo, &ns.name);
    let via = ns
        .interfaces
        .iter()
        .filter(|i| dev.is_none_or(|d| d == i.name) && !net::unusable(i))
        .find_map(|i| {
            let (pns, pi) = net::peer(cx.topo, i)?;
            let reaches = net::is_local(pns, target) || net::route_lookup(pns, target).is_some();
            let gw = net::addrs(pi).find(|c| c.addr.is_ipv4() == target.is_ipv4())?;
            reaches.then(|| format!("via {} dev {}", gw.addr, i.name))
        });
    match (via, dev) {
        (Some(v), _) => format!("{ip} route add {subnet} {v}"),
        (None, Some(d)) => format!("{ip} route add {subnet} via <gateway> dev {d}"),
        (None, None) => format!("{ip} route add {subnet} via <gateway>"),
    }
}

/// `no-route`: the namespace where the packet stopped has no route to its destination (or
/// the kernel said so), or the destination has no route back to the sender.
pub(super) fn no_route(p: &Probe, leg: &Leg, cx: &Context) -> Option<Finding> {
    let errors: Vec<String> = p
        .icmp_errors
        .iter()
        .filter(|e| e.is_unreachable())
        .map(|e| e.describe())
        .collect();
    let by_reason = matches!(leg.drop_reason(), Some("IP_INNOROUTES" | "IP_OUTNOROUTES"));
    // The request arrived but no reply was seen: the way back.
    if leg.delivered(cx.topo) && leg.what == "echo request" {
        let h = leg.arrival()?;
        let ns = cx.topo.namespaces.iter().find(|n| n.name == h.netns)?;
        if net::route_lookup(ns, leg.src).is_some() || net::is_local(ns, leg.src) {
            return None;
        }
        let mut evidence = leg.evidence();
        evidence.push(format!(
            "{}: no route matches {} (routes: {})",
            ns.name,
            leg.src,
            routes_text(ns)
        ));
        return Some(Finding {
            code: "no-route",
            message: format!(
                "the echo request reached {} but {} has no route back to {}, so it cannot send the reply",
                ns.name, ns.name, leg.src
            ),
            evidence: evidence.join("; "),
            fix: format!("`{}`", suggest_route(cx, ns, leg.src, None)),
        });
    }
    // Where the packet stopped: a packet last seen leaving a namespace is not stuck there.
    let left = leg
        .last_hook()
        .is_some_and(|h| matches!(h.what, What::Hook(Dir::Egress)));
    let ns_name = leg.stop_ns();
    let ns = cx.topo.namespaces.iter().find(|n| n.name == ns_name)?;
    let missing = !left
        && leg.drop.is_none()
        && !net::is_local(ns, leg.dst)
        && net::route_lookup(ns, leg.dst).is_none()
        && (arrived(leg, cx).is_some() || leg.hooks.is_empty());
    if !by_reason && !missing {
        return None;
    }
    let mut evidence = leg.evidence();
    evidence.push(format!(
        "{ns_name}: no route matches {} (routes: {})",
        leg.dst,
        routes_text(ns)
    ));
    evidence.extend(errors);
    if leg.hooks.is_empty() && leg.drop.is_none() {
        evidence.push(format!(
            "the sender in {ns_name} got no hop out (Network is unreachable)"
        ));
    }
    Some(Finding {
        code: "no-route",
        message: format!("{ns_name} has no route to {}{}", leg.dst, leg.after_last()),
        evidence: evidence.join("; "),
        fix: format!("`{}`", suggest_route(cx, ns, leg.dst, None)),
    })
}

fn routes_text(ns: &Namespace) -> String {
    let all: Vec<String> = ns.routes.iter().map(net::show_route).collect();
    if all.is_empty() {
        "none".into()
    } else {
        all.join(", ")
    }
}

/// `neighbour-failed`: the namespace where the packet stopped has a FAILED or INCOMPLETE
/// neighbour entry for the next hop (or the kernel dropped it for that reason).
pub(super) fn neighbour_failed(leg: &Leg, cx: &Context) -> Option<Finding> {
    let ns_name = match leg.arrival() {
        Some(h) => h.netns.as_str(),
        None if leg.hooks.is_empty() => leg.from.as_str(),
        None => leg.drop.map(|d| d.netns.as_str())?,
    };
    if let Some(d) = leg.drop {
        if d.netns != ns_name {
            return None;
        }
    }
    let ns = cx.topo.namespaces.iter().find(|n| n.name == ns_name)?;
    if net::is_local(ns, leg.dst) || (leg.arrival().is_some() && arrived(leg, cx).is_none()) {
        return None;
    }
    let r = net::route_lookup(ns, leg.dst)?;
    let nh = net::next_hop(r, leg.dst);
    let dev = net::route_dev(ns, r).map(|d| d.name.clone());
    let entry = cx.config(ns_name).and_then(|c| {
        c.neighbours.iter().find(|n| {
            n.ip == nh.to_string()
                && dev.as_deref().is_none_or(|d| d == n.dev)
                && matches!(n.state.as_str(), "FAILED" | "INCOMPLETE")
        })
    });
    let by_reason = leg.drop_reason().is_some_and(|r| r.starts_with("NEIGH_"));
    if entry.is_none() && !by_reason {
        return None;
    }
    let on = dev.as_deref().unwrap_or("-");
    let proto = if nh.is_ipv4() {
        "ARP"
    } else {
        "neighbour solicitation"
    };
    let state = entry
        .map(|e| format!(" (neighbour entry {})", e.state))
        .unwrap_or_default();
    let mut evidence = leg.evidence();
    if let Some(e) = entry {
        evidence.push(format!("{ns_name}: `{} dev {} {}`", e.ip, e.dev, e.state));
    }
    evidence.push(format!(
        "{ns_name}: route {} makes {nh} the next hop",
        net::show_route(r)
    ));
    let owner = net::owner_of_ip(cx.topo, nh);
    let fix = match owner {
        Some((ons, oi)) => {
            evidence.push(format!("{nh} is {} {}", ons.name, oi.name));
            format!(
                "make sure {} {} ({nh}) is up and reachable from {on}: `{} link show {}`, then `{} neigh show {nh}`",
                ons.name,
                oi.name,
                net::ip_in(cx.topo, &ons.name),
                oi.name,
                net::ip_in(cx.topo, ns_name)
            )
        }
        None => format!(
            "make sure {nh} exists and answers on {on}'s link: `{} neigh show {nh}`, `{} route get {}`",
            net::ip_in(cx.topo, ns_name),
            net::ip_in(cx.topo, ns_name),
            leg.dst
        ),
    };
    Some(Finding {
        code: "neighbour-failed",
        message: format!(
            "{ns_name} got no {proto} answer from {nh} on {on}{state}, so it could not send the {} on",
            leg.what
        ),
        evidence: evidence.join("; "),
        fix,
    })
}

#[cfg(test)]
mod tests {
    use crate::{
        diagnose::{
            diagnose,
            fixture::{self, config, cx, flow, path, probe, Configs},
            IcmpError,
        },
        netconf::Neighbour,
    };

    #[test]
    fn ip_forward_off_where_the_packet_should_be_routed() {
        let t = fixture::bridge();
        let cfgs = Configs::from([("node".to_string(), config("", false))]);
        let req = path(
            flow("192.168.88.11", "10.99.0.2", false),
            &[
                ("ns01", "veth01", "egress"),
                ("node", "br-veth01", "ingress"),
                ("node", "br01", "ingress"),
            ],
        );
        let p = probe("192.168.88.11", "10.99.0.2", "ns01", Some(&req), None);
        let f = diagnose(&p, &cx(&t, &cfgs, &cfgs));
        assert_eq!(f[0].code, "ip-forward-off", "{f:#?}");
        assert_eq!(
            f[0].message,
            "node received the echo request on br01 but does not route it on to eth1 towards 10.99.0.2 because net.ipv4.ip_forward is 0 there"
        );
        assert_eq!(
            f[0].fix,
            "`ip netns exec node sysctl -w net.ipv4.ip_forward=1`"
        );
        // Not for bridged traffic, and not when forwarding is on.
        let on = Configs::from([("node".to_string(), config("", true))]);
        assert!(diagnose(&p, &cx(&t, &on, &on))
            .iter()
            .all(|f| f.code != "ip-forward-off"));
        let bridged = path(
            flow("192.168.88.11", "192.168.88.12", false),
            &[
                ("ns01", "veth01", "egress"),
                ("node", "br-veth01", "ingress"),
            ],
        );
        let p = probe(
            "192.168.88.11",
            "192.168.88.12",
            "ns01",
            Some(&bridged),
            None,
        );
        assert!(diagnose(&p, &cx(&t, &cfgs, &cfgs))
            .iter()
            .all(|f| f.code != "ip-forward-off"));
    }

    #[test]
    fn rp_filter_strict_with_the_route_back_elsewhere() {
        let mut t = fixture::bridge();
        // wan sends to a pod; node's route back to wan's address leaves by br01 (odd, but
        // that is what strict rp_filter catches).
        let node = &mut t.namespaces[0];
        node.routes.insert(
            0,
            crate::topology::Route {
                dst: "10.99.0.2/32".into(),
                gateway: None,
                dev: Some("br01".into()),
                oif: None,
            },
        );
        let mut c = config("", true);
        c.rp_filter = vec![("all".into(), 1), ("default".into(), 1), ("eth1".into(), 0)];
        let cfgs = Configs::from([("node".to_string(), c)]);
        let req = path(
            flow("10.99.0.2", "192.168.88.11", false),
            &[("wan", "eth0", "egress"), ("node", "eth1", "ingress")],
        );
        let p = probe("10.99.0.2", "192.168.88.11", "wan", Some(&req), None);
        let f = diagnose(&p, &cx(&t, &cfgs, &cfgs));
        assert_eq!(f[0].code, "rp-filter", "{f:#?}");
        assert_eq!(
            f[0].message,
            "reverse-path filtering (rp_filter=1) in node drops the echo request from 10.99.0.2 arriving on eth1 because the route back to 10.99.0.2 leaves by br01, not eth1"
        );
        assert!(f[0]
            .fix
            .contains("`ip netns exec node sysctl -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.eth1.rp_filter=2`"));
        assert!(f[0]
            .evidence
            .contains("net.ipv4.conf.all.rp_filter = 1, net.ipv4.conf.eth1.rp_filter = 0"));
    }

    #[test]
    fn rp_filter_from_the_drop_reason_alone() {
        let t = fixture::bridge();
        let none = Configs::new();
        let req = path(
            flow("10.99.0.2", "192.168.88.11", false),
            &[
                ("wan", "eth0", "egress"),
                ("node", "eth1", "ingress"),
                ("node", "eth1", "drop:IP_RPFILTER"),
            ],
        );
        let p = probe("10.99.0.2", "192.168.88.11", "wan", Some(&req), None);
        let f = diagnose(&p, &cx(&t, &none, &none));
        assert_eq!(f[0].code, "rp-filter", "{f:#?}");
        assert!(f[0].evidence.contains("reason IP_RPFILTER"));
    }

    #[test]
    fn no_route_at_the_sender_and_no_route_back() {
        let mut t = fixture::bridge();
        let none = Configs::new();
        // wan cannot reach the pods at all: nothing leaves it.
        let p = probe("10.99.0.2", "192.168.88.11", "wan", None, None);
        let f = diagnose(&p, &cx(&t, &none, &none));
        assert_eq!(f[0].code, "no-route", "{f:#?}");
        assert_eq!(f[0].message, "wan has no route to 192.168.88.11");
        assert_eq!(f.len(), 1, "no second finding repeating it: {f:#?}");
        assert_eq!(
            f[0].fix,
            "`ip -n wan route add 192.168.88.0/24 via 10.99.0.1 dev eth0`"
        );
        assert!(f[0].evidence.contains("Network is unreachable"));
        // The request reaches wan, which cannot answer.
        let req = path(
            flow("192.168.88.11", "10.99.0.2", false),
            &[
                ("ns01", "veth01", "egress"),
                ("node", "br-veth01", "ingress"),
                ("node", "br01", "ingress"),
                ("node", "eth1", "egress"),
                ("wan", "eth0", "ingress"),
            ],
        );
        let mut masq = config("*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -s 192.168.88.0/24 ! -o br01 -j MASQUERADE\n", true);
        masq.rp_filter.clear();
        let cfgs = Configs::from([("node".to_string(), masq)]);
        let p = probe("192.168.88.11", "10.99.0.2", "ns01", Some(&req), None);
        let f = diagnose(&p, &cx(&t, &cfgs, &cfgs));
        assert_eq!(f[0].code, "no-route", "{f:#?}");
        assert_eq!(
            f[0].message,
            "the echo request reached wan but wan has no route back to 192.168.88.11, so it cannot send the reply"
        );
        // A drop with a no-route reason in the node.
        t.namespaces[0].routes.retain(|r| r.dst != "default");
        t.namespaces[0].default_route = None;
        let req = path(
            flow("192.168.88.11", "8.8.8.8", false),
            &[
                ("ns01", "veth01", "egress"),
                ("node", "br-veth01", "ingress"),
                ("node", "br01", "ingress"),
                ("node", "br01", "drop:IP_INNOROUTES"),
            ],
        );
        let mut p = probe("192.168.88.11", "8.8.8.8", "ns01", Some(&req), None);
        p.icmp_errors.push(IcmpError {
            from: "192.168.88.1".parse().expect("literal"),
            icmp_type: 3,
            code: 0,
            mtu: None,
        });
        let f = diagnose(&p, &cx(&t, &none, &none));
        assert_eq!(f[0].code, "no-route", "{f:#?}");
        assert_eq!(
            f[0].message,
            "node has no route to 8.8.8.8 after node br01 ingress"
        );
        assert!(f[0]
            .evidence
            .contains("ICMP network unreachable from 192.168.88.1"));
    }

    #[test]
    fn neighbour_failed_names_the_next_hop_and_its_owner() {
        let t = fixture::bridge();
        let mut c = config("", false);
        c.neighbours.push(Neighbour {
            ip: "192.168.88.12".into(),
            dev: "veth01".into(),
            state: "FAILED".into(),
        });
        let cfgs = Configs::from([("ns01".to_string(), c)]);
        let p = probe("192.168.88.11", "192.168.88.12", "ns01", None, None);
        let f = diagnose(&p, &cx(&t, &cfgs, &cfgs));
        let n = f
            .iter()
            .find(|f| f.code == "neighbour-failed")
            .expect("neighbour-failed");
        assert_eq!(
            n.message,
            "ns01 got no ARP answer from 192.168.88.12 on veth01 (neighbour entry FAILED), so it could not send the echo request on"
        );
        assert!(n.evidence.contains("192.168.88.12 is ns02 veth02"));
        assert!(n.fix.contains("`ip -n ns02 link show veth02`"));
        // A reachable entry says nothing.
        let mut ok = config("", false);
        ok.neighbours.push(Neighbour {
            ip: "192.168.88.12".into(),
            dev: "veth01".into(),
            state: "REACHABLE".into(),
        });
        let cfgs = Configs::from([("ns01".to_string(), ok)]);
        assert!(diagnose(&p, &cx(&t, &cfgs, &cfgs))
            .iter()
            .all(|f| f.code != "neighbour-failed"));
    }
}
