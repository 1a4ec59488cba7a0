//! Diagnosis: turns what was seen into findings, each with a code, one sentence, the evidence
//! and the fix, in the user's own names. Pure and evidence-based: a finding cites the hops and
//! the drop reason that support it. (First cut: explanations by drop reason; the configuration-
//! reading checks come with `vethtrace ping`.)

use crate::{correlate::PacketPath, decode::What, render::text::hop_place};

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
            netns_cookie: 0,
            netns: ns.into(),
            ifindex: 0,
            ifname: Some(ifname.into()),
            what,
            len: 0,
            mark: 0,
            outer: Flow::default(),
            inner: None,
            truncated: false,
            snapshot: Vec::new(),
            snapshot_l3: false,
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
