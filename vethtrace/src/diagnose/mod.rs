//! Diagnosis: turns what was seen into findings, each with a code, one sentence, the evidence
//! and the fix, in the user's own names. Pure and evidence-based: a finding cites the hops, the
//! drop reason and the configuration lines that support it.
//!
//! Owns: [`Finding`]; [`explain`] (by drop reason alone, for `vethtrace trace`); [`diagnose`]
//! (for `vethtrace ping`: what was seen plus the topology and each namespace's configuration
//! read before and after the probe, see [`crate::netconf`]); [`netfilter_attribution`].
//! The rules live in one file per family: `netfilter` (forward-drop, netfilter-drop,
//! missing-masquerade), `routing` (ip-forward-off, rp-filter, no-route, neighbour-failed),
//! `links` (link-down, peer-down, mtu, ip-on-bridge-port, macvlan-parent) and `path`
//! (expected-path).
//! Does not own: reading anything, rendering findings.

mod links;
mod net;
mod netfilter;
pub mod path;
mod routing;

#[cfg(test)]
mod fixture;

use std::{collections::HashMap, net::IpAddr};

use crate::{
    correlate::PacketPath,
    decode::{Dir, Observation, What},
    netconf::NetConfig,
    render::text::hop_place,
    topology::Topology,
};

pub use netfilter::{netfilter_attribution, Attribution};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub code: &'static str,
    pub message: String,
    pub evidence: String,
    pub fix: String,
}

/// Explains where and why a packet died, when it did.
pub fn explain(p: &PacketPath) -> Vec<Finding> {
    let Some(drop) = p.drop() else {
        return Vec::new();
    };
    let What::Drop { reason, location } = &drop.what else {
        return Vec::new();
    };
    let before = p
        .hops
        .iter()
        .take_while(|h| !h.is_drop())
        .filter(|h| h.is_hook())
        .last()
        .map(hop_place);
    let after = before
        .as_deref()
        .map(|b| format!(" after {b}"))
        .unwrap_or_default();
    let ns = &drop.netns;
    let evidence = format!("skb:kfree_skb reason {reason} at {location} in {ns}{after}");
    let f = match reason.as_str() {
        "NETFILTER_DROP" => Finding {
            code: "netfilter-drop",
            message: format!(
                "netfilter (iptables/nftables) in {ns} dropped the packet{after}; with br_netfilter on, bridged frames also traverse the iptables FORWARD chain"
            ),
            evidence,
            fix: format!(
                "look at the ruleset and chain policies in {ns}: `ip netns exec {ns} iptables -S FORWARD` (Docker sets policy DROP); accept the bridge's traffic, e.g. `iptables -I FORWARD -i <bridge> -o <bridge> -j ACCEPT`"
            ),
        },
        "NO_SOCKET" => Finding {
            code: "no-socket",
            message: format!("the packet reached {ns} but nothing listens there"),
            evidence,
            fix: "check the destination port and that the service is listening".into(),
        },
        "IP_NOPROTO" | "IP_INNOROUTES" | "IP_OUTNOROUTES" => Finding {
            code: "no-route",
            message: format!("{ns} has no route for the packet{after}"),
            evidence,
            fix: format!("check `ip -n {ns} route`"),
        },
        "IP_RPFILTER" => Finding {
            code: "rp-filter",
            message: format!("reverse-path filtering in {ns} dropped the packet{after}"),
            evidence,
            fix: format!("check `ip netns exec {ns} sysctl net.ipv4.conf.all.rp_filter` and the route back to the source"),
        },
        other => Finding {
            code: "kernel-drop",
            message: format!("the kernel dropped the packet in {ns}{after}: {other}"),
            evidence,
            fix: String::new(),
        },
    };
    vec![f]
}

/// One `vethtrace ping` probe and everything seen of it.
#[derive(Debug, Clone)]
pub struct Probe<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Display name of the namespace the probe was sent from.
    pub from_netns: &'a str,
    /// ICMP payload bytes (`-s`).
    pub size: usize,
    /// The echo request's hops, in time order; may end with a drop.
    pub request: Option<&'a PacketPath>,
    pub reply: Option<&'a PacketPath>,
    pub replied: bool,
    /// ICMP errors the sender received for this probe.
    pub icmp_errors: Vec<IcmpError>,
}

/// An ICMP error about a probe (destination unreachable, fragmentation needed, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpError {
    pub from: IpAddr,
    pub icmp_type: u8,
    pub code: u8,
    /// The next-hop MTU of a "fragmentation needed" / "packet too big".
    pub mtu: Option<u16>,
}

impl IcmpError {
    /// Fragmentation needed (ICMP 3/4) or packet too big (ICMPv6 2).
    pub fn is_frag_needed(&self) -> bool {
        if self.from.is_ipv4() {
            self.icmp_type == 3 && self.code == 4
        } else {
            self.icmp_type == 2
        }
    }

    /// Net or host unreachable (ICMP 3/0, 3/1, 3/6, 3/7; ICMPv6 1/0, 1/3).
    pub fn is_unreachable(&self) -> bool {
        if self.from.is_ipv4() {
            self.icmp_type == 3 && matches!(self.code, 0 | 1 | 6 | 7)
        } else {
            self.icmp_type == 1 && matches!(self.code, 0 | 3)
        }
    }

    pub fn describe(&self) -> String {
        let what = match (self.from.is_ipv4(), self.icmp_type, self.code) {
            (true, 3, 0) => "network unreachable".to_string(),
            (true, 3, 1) => "host unreachable".to_string(),
            (true, 3, 3) => "port unreachable".to_string(),
            (true, 3, 4) => "fragmentation needed".to_string(),
            (true, 3, 13) => "administratively prohibited".to_string(),
            (true, 11, _) => "time exceeded".to_string(),
            (false, 1, _) => "destination unreachable".to_string(),
            (false, 2, _) => "packet too big".to_string(),
            (_, t, c) => format!("type {t} code {c}"),
        };
        match self.mtu {
            Some(m) if self.is_frag_needed() => format!("ICMP {what} (mtu {m}) from {}", self.from),
            _ => format!("ICMP {what} from {}", self.from),
        }
    }
}

/// What diagnosis may look at besides the probe.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub topo: &'a Topology,
    /// Each namespace's configuration, keyed by display name, read just before the probe…
    pub before: &'a HashMap<String, NetConfig>,
    /// …and just after.
    pub after: &'a HashMap<String, NetConfig>,
}

impl Context<'_> {
    /// A namespace's configuration: the one read after the probe, else the one before.
    fn config(&self, netns: &str) -> Option<&NetConfig> {
        self.after.get(netns).or_else(|| self.before.get(netns))
    }
}

/// One direction of a probe: the packet's hooks and drop, where it started, where it goes.
#[derive(Debug, Clone)]
struct Leg<'a> {
    path: Option<&'a PacketPath>,
    /// Hooks (not drops or frees), in time order.
    hooks: Vec<&'a Observation>,
    drop: Option<&'a Observation>,
    /// The namespace the packet was sent from.
    from: String,
    src: IpAddr,
    dst: IpAddr,
    /// `echo request` or `echo reply`.
    what: &'static str,
}

impl<'a> Leg<'a> {
    fn of(
        path: Option<&'a PacketPath>,
        from: String,
        src: IpAddr,
        dst: IpAddr,
        what: &'static str,
    ) -> Self {
        let hops = path.map(|p| p.hops.as_slice()).unwrap_or_default();
        Leg {
            path,
            hooks: hops.iter().filter(|h| h.is_hook()).collect(),
            drop: hops.iter().find(|h| h.is_drop()),
            from,
            src,
            dst,
            what,
        }
    }

    fn request(p: &Probe<'a>) -> Self {
        Leg::of(
            p.request,
            p.from_netns.to_string(),
            p.src,
            p.dst,
            "echo request",
        )
    }

    /// The reply leg, starting where the destination lives.
    fn reply(p: &Probe<'a>, topo: &Topology) -> Self {
        let from = p
            .reply
            .and_then(|r| r.hops.first())
            .map(|h| h.netns.to_string())
            .or_else(|| net::owner_of_ip(topo, p.dst).map(|(n, _)| n.name.clone()))
            .unwrap_or_default();
        Leg::of(p.reply, from, p.dst, p.src, "echo reply")
    }

    /// The leg that failed: the reply when one was seen, else the request; `None` when the
    /// probe was answered.
    fn failing(p: &Probe<'a>, topo: &Topology) -> Option<Self> {
        if p.replied {
            return None;
        }
        match p.reply {
            Some(r) if !r.hops.is_empty() => Some(Leg::reply(p, topo)),
            _ => Some(Leg::request(p)),
        }
    }

    fn last_hook(&self) -> Option<&'a Observation> {
        self.hooks.last().copied()
    }

    /// The namespace the packet was last in: where it was dropped, else where it was last
    /// seen (for an egress on a veth, still the sending side), else the sender.
    fn stop_ns(&self) -> &str {
        self.drop
            .or(self.last_hook())
            .map_or(self.from.as_str(), |h| h.netns.as_str())
    }

    /// The last hook when it is an ingress: the packet arrived in a namespace and never left.
    fn arrival(&self) -> Option<&'a Observation> {
        self.last_hook()
            .filter(|h| matches!(h.what, What::Hook(Dir::Ingress)))
    }

    /// Whether the packet reached the namespace that owns its destination.
    fn delivered(&self, topo: &Topology) -> bool {
        self.drop.is_none()
            && self.arrival().is_some_and(|h| {
                topo.namespaces
                    .iter()
                    .find(|n| n.name == h.netns)
                    .is_some_and(|n| net::is_local(n, self.dst))
            })
    }

    fn drop_reason(&self) -> Option<&'a str> {
        match &self.drop?.what {
            What::Drop { reason, .. } => Some(reason.as_str()),
            _ => None,
        }
    }

    /// `ns01 veth01 egress → node br-veth01 ingress`, or `no hop seen`.
    fn hops_text(&self) -> String {
        if self.hooks.is_empty() {
            return format!("{}: no hop seen", self.what);
        }
        let hops: Vec<String> = self.hooks.iter().map(|h| hop_place(h)).collect();
        format!("{} hops: {}", self.what, hops.join(" → "))
    }

    /// `skb:kfree_skb reason NETFILTER_DROP at nft_do_chain+0x637 in node on br-veth02`.
    fn drop_text(&self) -> Option<String> {
        let d = self.drop?;
        let What::Drop { reason, location } = &d.what else {
            return None;
        };
        let on = d
            .ifname
            .as_deref()
            .map(|i| format!(" on {i}"))
            .unwrap_or_default();
        Some(format!(
            "skb:kfree_skb reason {reason} at {location} in {}{on}",
            d.netns
        ))
    }

    /// The hops and the drop, as the start of a finding's evidence.
    fn evidence(&self) -> Vec<String> {
        let mut e = vec![self.hops_text()];
        e.extend(self.drop_text());
        e
    }

    /// ` after node br-veth01 ingress` for messages, or nothing.
    fn after_last(&self) -> String {
        self.last_hook()
            .map(|h| format!(" after {}", hop_place(h)))
            .unwrap_or_default()
    }
}

/// Diagnoses one probe: findings, most specific first; empty when it was answered and
/// nothing looks wrong.
pub fn diagnose(p: &Probe, cx: &Context) -> Vec<Finding> {
    let leg = Leg::failing(p, cx.topo);
    let mut out: Vec<Finding> = Vec::new();
    if let Some(leg) = &leg {
        out.extend(netfilter::forward_drop(leg, cx));
        out.extend(routing::rp_filter(leg, cx));
        out.extend(routing::ip_forward_off(leg, cx));
        out.extend(netfilter::missing_masquerade(p, cx));
        out.extend(links::link_down(leg, cx));
        // Its unanswered ARP is the macvlan's, not a dead neighbour's.
        match links::macvlan_parent(leg, cx) {
            Some(f) => out.push(f),
            None => out.extend(routing::neighbour_failed(leg, cx)),
        }
    }
    out.extend(links::mtu(p, leg.as_ref(), cx));
    if let Some(leg) = &leg {
        let explained = |out: &[Finding]| {
            out.iter()
                .any(|f| matches!(f.code, "link-down" | "peer-down" | "ip-forward-off"))
        };
        if !explained(&out) {
            out.extend(routing::no_route(p, leg, cx));
        }
        if leg.drop.is_some() && out.is_empty() {
            out.extend(netfilter::netfilter_drop(leg, cx));
        }
        if leg.drop.is_some() && out.is_empty() {
            out.extend(leg.path.map(explain).unwrap_or_default());
        }
    }
    out.extend(links::ip_on_bridge_port(p, leg.as_ref(), cx));
    if let Some(leg) = &leg {
        // The expected path knows nothing of a macvlan's parent: it would name a hop the
        // packet can never take.
        let stacked = out.iter().any(|f| f.code == "macvlan-parent");
        if leg.drop.is_none() && !stacked {
            out.extend(path::expected_path(p, leg, cx));
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|f| seen.insert((f.code, f.message.clone())));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        correlate::{PacketKey, PacketPath},
        decode::{Dir, Observation},
    };
    use vethtrace_common::Flow;

    fn hop(ns: &str, ifname: &str, what: What) -> Observation {
        Observation {
            ts_ns: 0,
            netns: ns.into(),
            ifindex: 0,
            ifname: Some(ifname.into()),
            what,
            len: 0,
            mark: 0,
            outer: Flow::default(),
            extras: Default::default(),
        }
    }

    #[test]
    fn netfilter_drop_names_the_namespace_and_the_hop_before() {
        let p = PacketPath {
            key: PacketKey::of(&Flow::default()),
            hops: vec![
                hop("ns01", "veth01", What::Hook(Dir::Egress)),
                hop("node", "br-veth01", What::Hook(Dir::Ingress)),
                hop(
                    "node",
                    "br-veth01",
                    What::Drop {
                        reason: "NETFILTER_DROP".into(),
                        location: "nf_hook_slow+0x9c".into(),
                    },
                ),
            ],
        };
        let f = explain(&p);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].code, "netfilter-drop");
        assert!(f[0]
            .message
            .contains("in node dropped the packet after node br-veth01 ingress"));
        assert!(f[0].fix.contains("ip netns exec node iptables -S FORWARD"));
    }

    #[test]
    fn no_drop_no_finding() {
        let p = PacketPath {
            key: PacketKey::of(&Flow::default()),
            hops: vec![hop("ns01", "veth01", What::Hook(Dir::Egress))],
        };
        assert!(explain(&p).is_empty());
    }
}
