//! Netfilter rules: `forward-drop` (br_netfilter sends bridged frames through an iptables
//! FORWARD chain that drops them, as Docker leaves a host), `netfilter-drop` (any other
//! NETFILTER_DROP, with the chain and rule whose counter grew), `missing-masquerade` (pod
//! addresses leaving a node's uplink unrewritten), and [`netfilter_attribution`] for the JSON.
//!
//! Attribution of a NETFILTER_DROP prefers what the netfilter layer saw (fentry/fexit nft_do_chain:
//! the base chain's family, hook, table, chain and `DROP` verdict, in the drop's namespace,
//! just before the drop), refined by the ruleset's counters when they moved in that table at
//! that hook (which rule, or the policy); without the layer, the counters alone; without
//! either, the path's inferred hook and a DROP policy; else nothing.

use std::net::IpAddr;

use serde::Serialize;

use crate::{
    decode::{Dir, NfVerdict, Observation, What},
    netconf::{counter_deltas, Chain, Delta, NetConfig, Rule},
};

use super::{net, path, Context, Finding, Leg, Probe};

/// Which netfilter chain (and rule) dropped a packet, as far as the netfilter layer and the
/// counters tell. Three depths: a rule or a chain policy whose counter grew (`rule` set, or
/// `verdict` `policy DROP`); the chain only (`rule` null, `verdict` `DROP`: the netfilter
/// layer's verdict, or a chain inferred from the path); or nothing (no attribution, the
/// kernel's drop reason stands alone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attribution {
    /// The netfilter hook: `PREROUTING`, `INPUT`, `FORWARD`, `OUTPUT`, `POSTROUTING`.
    pub hook: String,
    pub table: String,
    pub chain: String,
    /// The `-A …` line of the rule, when one rule's counter grew.
    pub rule: Option<String>,
    /// The rule's target (`DROP`, `REJECT`), `policy DROP`, or `DROP` when only the chain is
    /// known.
    pub verdict: String,
}

impl Attribution {
    /// `filter FORWARD policy DROP`, `filter FORWARD rule \`-A FORWARD -j DROP\``, or
    /// `filter FORWARD (which rule is not known)`.
    pub fn describe(&self) -> String {
        match (&self.rule, self.verdict.as_str()) {
            (Some(r), _) => format!("{} {} rule `{r}`", self.table, self.chain),
            (None, "policy DROP") => format!("{} {} policy DROP", self.table, self.chain),
            (None, _) => format!("{} {} (which rule is not known)", self.table, self.chain),
        }
    }
}

const BUILTIN: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/// The hook a chain runs at: its own name for a built-in chain, else that of a chain that
/// jumps to it.
fn hook_of_chain(cfg: &NetConfig, table: &str, chain: &str) -> Option<String> {
    let mut name = chain.to_string();
    for _ in 0..8 {
        if BUILTIN.contains(&name.as_str()) {
            return Some(name);
        }
        name = cfg
            .chains
            .iter()
            .filter(|c| c.table == table)
            .find(|c| c.rules.iter().any(|r| r.target.as_deref() == Some(&name)))?
            .name
            .clone();
    }
    None
}

/// Whether the packet was bridged by `ns` (entered a bridge port, stays on the segment): the
/// bridge and the port it came in on.
fn bridged_in(leg: &Leg, cx: &Context, ns: &str) -> Option<(String, String)> {
    let n = cx.topo.namespaces.iter().find(|n| n.name == ns)?;
    leg.hooks
        .iter()
        .filter(|h| h.netns == ns && matches!(h.what, What::Hook(Dir::Ingress)))
        .find_map(|h| {
            let i = n.interface_named(h.ifname.as_deref()?)?;
            let b = net::bridge_of(n, i)?;
            path::bridged(n, &b.name, leg.dst).then(|| (b.name.clone(), i.name.clone()))
        })
}

/// The hook a drop in `ns` most likely happened at, from the path alone.
fn inferred_hook(leg: &Leg, cx: &Context, ns: &str) -> &'static str {
    if bridged_in(leg, cx, ns).is_some() {
        return "FORWARD";
    }
    let local = cx
        .topo
        .namespaces
        .iter()
        .find(|n| n.name == ns)
        .is_some_and(|n| net::is_local(n, leg.dst));
    if local {
        return "INPUT";
    }
    let arrived = leg
        .hooks
        .iter()
        .any(|h| h.netns == ns && matches!(h.what, What::Hook(Dir::Ingress)));
    if !arrived && ns == leg.from {
        "OUTPUT"
    } else {
        "FORWARD"
    }
}

/// The leg's NETFILTER_DROP: its namespace.
fn netfilter_drop_ns<'a>(leg: &'a Leg) -> Option<&'a str> {
    (leg.drop_reason()? == "NETFILTER_DROP").then(|| leg.drop.map(|d| d.netns.as_str()))?
}

/// The netfilter layer's verdict behind the leg's NETFILTER_DROP: the last `DROP` verdict
/// in the drop's namespace at or before the drop.
fn layer_verdict<'a>(leg: &Leg<'a>) -> Option<&'a Observation> {
    let drop = leg.drop?;
    leg.path?
        .hops
        .iter()
        .take_while(|h| h.ts_ns <= drop.ts_ns)
        .filter(|h| h.netns == drop.netns)
        .filter(|h| h.what.is_nf_drop())
        .last()
}

/// What the attribution rests on.
struct Basis<'a> {
    /// The counter that grew, when one did.
    delta: Option<Delta>,
    /// The netfilter layer's verdict, when the layer saw it.
    verdict: Option<&'a Observation>,
}

/// Attribution from the netfilter layer's verdict: its hook, table and chain, refined by a
/// dropping counter that moved in the same table at the same hook (the rule, or the policy,
/// possibly in a chain the base chain jumped to).
fn attribute_from_layer<'a>(
    leg: &Leg<'a>,
    cx: &Context,
    ns: &str,
) -> Option<(Attribution, Basis<'a>)> {
    let v = layer_verdict(leg)?;
    let What::Netfilter(nf) = &v.what else {
        return None;
    };
    let NfVerdict {
        hook, table, chain, ..
    } = &**nf;
    let cfg = cx.config(ns);
    let delta = match (cfg, cx.before.get(ns), cx.after.get(ns)) {
        (Some(cfg), Some(b), Some(a)) => counter_deltas(b, a).into_iter().find(|d| {
            d.drops()
                && d.table == *table
                && (d.chain == *chain
                    || hook_of_chain(cfg, &d.table, &d.chain).as_deref() == Some(hook.as_str()))
        }),
        _ => None,
    };
    let a = match &delta {
        Some(d) => Attribution {
            hook: hook.to_string(),
            table: d.table.clone(),
            chain: d.chain.clone(),
            rule: d.rule.clone(),
            verdict: match d.rule {
                Some(_) => d.verdict.clone(),
                None => format!("policy {}", d.verdict),
            },
        },
        None => Attribution {
            hook: hook.to_string(),
            table: table.to_string(),
            chain: chain.to_string(),
            rule: None,
            verdict: "DROP".into(),
        },
    };
    Some((
        a,
        Basis {
            delta,
            verdict: Some(v),
        },
    ))
}

/// Attribution of the leg's NETFILTER_DROP and what it rests on.
fn attribute<'a>(leg: &Leg<'a>, cx: &Context) -> Option<(Attribution, Basis<'a>)> {
    let ns = netfilter_drop_ns(leg)?;
    if let Some(a) = attribute_from_layer(leg, cx, ns) {
        return Some(a);
    }
    attribute_from_counters(leg, cx, ns).map(|(a, delta)| {
        (
            a,
            Basis {
                delta,
                verdict: None,
            },
        )
    })
}

/// Attribution from the counters alone (no netfilter layer), and the delta behind it.
fn attribute_from_counters(
    leg: &Leg,
    cx: &Context,
    ns: &str,
) -> Option<(Attribution, Option<Delta>)> {
    let after = cx.after.get(ns);
    let cfg = cx.config(ns)?;
    let deltas = match (cx.before.get(ns), after) {
        (Some(b), Some(a)) => counter_deltas(b, a),
        _ => Vec::new(),
    };
    let inferred = inferred_hook(leg, cx, ns);
    if let Some(d) = deltas.iter().find(|d| d.drops()) {
        let a = Attribution {
            hook: hook_of_chain(cfg, &d.table, &d.chain).unwrap_or_else(|| inferred.into()),
            table: d.table.clone(),
            chain: d.chain.clone(),
            rule: d.rule.clone(),
            verdict: match d.rule {
                Some(_) => d.verdict.clone(),
                None => format!("policy {}", d.verdict),
            },
        };
        return Some((a, Some(d.clone())));
    }
    // Chain only: the deepest chain at the inferred hook whose counters moved, else the
    // filter chain of that hook when its policy is DROP.
    let moved = deltas
        .iter()
        .rev()
        .find(|d| hook_of_chain(cfg, &d.table, &d.chain).as_deref() == Some(inferred))
        .map(|d| (d.table.clone(), d.chain.clone()));
    let chain = moved.or_else(|| {
        cfg.chain("filter", inferred)
            .filter(|c| c.policy.as_deref() == Some("DROP"))
            .map(|c| (c.table.clone(), c.name.clone()))
    })?;
    Some((
        Attribution {
            hook: inferred.into(),
            table: chain.0,
            chain: chain.1,
            rule: None,
            verdict: "DROP".into(),
        },
        None,
    ))
}

/// Which table, chain and rule dropped the probe (request or reply), when it was dropped by
/// netfilter and the configuration snapshots say; for `"netfilter"` in the JSON output.
pub fn netfilter_attribution(p: &Probe, cx: &Context) -> Option<Attribution> {
    [Leg::request(p), Leg::reply(p, cx.topo)]
        .iter()
        .find_map(|leg| attribute(leg, cx).map(|(a, _)| a))
}

/// The attribution as evidence: the verdict the netfilter layer saw, the counter that grew,
/// or the chain's line.
fn attribution_evidence(
    ns: &str,
    a: &Attribution,
    basis: &Basis,
    cfg: Option<&NetConfig>,
) -> Vec<String> {
    let mut e = Vec::new();
    if let Some(What::Netfilter(nf)) = basis.verdict.map(|v| &v.what) {
        e.push(format!(
            "{ns}: nft_do_chain returned {} for {}",
            nf.verdict,
            nf.chain_text()
        ));
    }
    match (&basis.delta, cfg) {
        (Some(d), _) => e.push(format!(
            "{ns}: counter of {} grew between the snapshots",
            d.describe()
        )),
        (None, Some(cfg)) if basis.verdict.is_none() => {
            let line = cfg
                .chain(&a.table, &a.chain)
                .map(|c| format!(" (`{}`)", c.header()))
                .unwrap_or_default();
            e.push(format!(
                "{ns}: netfilter hook {} goes through {} {}{line}; no dropping counter grew",
                a.hook, a.table, a.chain
            ));
        }
        _ => {}
    }
    e
}

/// `forward-drop`: a bridged frame dropped by iptables FORWARD because br_netfilter is on.
pub(super) fn forward_drop(leg: &Leg, cx: &Context) -> Option<Finding> {
    let ns = netfilter_drop_ns(leg)?;
    let (bridge, port) = bridged_in(leg, cx, ns)?;
    let cfg = cx.config(ns)?;
    if cfg.bridge_nf_call_iptables != Some(true) {
        return None;
    }
    let forward = cfg.chain("filter", "FORWARD");
    let policy_drop = forward.is_some_and(|c| c.policy.as_deref() == Some("DROP"));
    let attribution = attribute(leg, cx);
    let rule_drop = attribution
        .as_ref()
        .is_some_and(|(a, b)| b.delta.is_some() && a.rule.is_some() && a.hook == "FORWARD");
    if !policy_drop && !rule_drop {
        return None;
    }
    let by = match &attribution {
        Some((a, b)) if b.delta.is_some() && a.rule.is_some() => {
            format!("the {} dropped it", a.describe())
        }
        _ => "the chain's policy DROP dropped it".to_string(),
    };
    let mut evidence = leg.evidence();
    evidence.push(format!("{ns}: net.bridge.bridge-nf-call-iptables = 1"));
    if let Some(c) = forward {
        evidence.push(format!("{ns}: iptables filter `{}`", c.header()));
    }
    if let Some((a, b)) = &attribution {
        evidence.extend(attribution_evidence(ns, a, b, Some(cfg)));
    }
    let exec = net::exec_in(cx.topo, ns);
    Some(Finding {
        code: "forward-drop",
        message: format!(
            "br_netfilter in {ns} sent the frame bridged from {port} through {bridge} into the iptables FORWARD chain, and {by}"
        ),
        evidence: evidence.join("; "),
        fix: format!(
            "accept traffic within the bridge: `{exec}iptables -I FORWARD -i {bridge} -o {bridge} -j ACCEPT`, or stop passing bridged frames to iptables: `{exec}sysctl -w net.bridge.bridge-nf-call-iptables=0`"
        ),
    })
}

/// `netfilter-drop`: any other NETFILTER_DROP, naming the chain and rule when the counters
/// tell.
pub(super) fn netfilter_drop(leg: &Leg, cx: &Context) -> Option<Finding> {
    let ns = netfilter_drop_ns(leg)?;
    let exec = net::exec_in(cx.topo, ns);
    let attribution = attribute(leg, cx);
    let mut evidence = leg.evidence();
    let (where_, fix) = match &attribution {
        Some((a, b)) if !is_iptables_chain(a, b, cx.config(ns)) => {
            evidence.extend(attribution_evidence(ns, a, b, cx.config(ns)));
            (
                format!(" in nftables table {} chain {}", a.table, a.chain),
                format!(
                    "let this traffic through before the rule of table {} chain {} that drops it, or change that rule: `{exec}nft -a list ruleset` shows the chain's rules and their handles",
                    a.table, a.chain
                ),
            )
        }
        Some((a, b)) => {
            evidence.extend(attribution_evidence(ns, a, b, cx.config(ns)));
            let table = if a.table == "filter" {
                String::new()
            } else {
                format!("-t {} ", a.table)
            };
            (
                format!(" in {}", a.describe()),
                format!(
                    "let this traffic through before it reaches the dropping rule: `{exec}iptables {table}-I {} -s {} -d {} -j ACCEPT`, or change the rule that drops it (`{exec}iptables-save -c`)",
                    a.chain, leg.src, leg.dst
                ),
            )
        }
        None => (
            String::new(),
            format!(
                "find the dropping rule: `{exec}iptables-save -c` and `{exec}nft list ruleset`"
            ),
        ),
    };
    Some(Finding {
        code: "netfilter-drop",
        message: format!(
            "netfilter in {ns} dropped the {}{where_}{}",
            leg.what,
            leg.after_last()
        ),
        evidence: evidence.join("; "),
        fix,
    })
}

/// Whether the attributed chain is one iptables shows (and can change): always for an
/// attribution from the counters; for the netfilter layer's, when the ruleset snapshot has
/// it, or, without a snapshot, when it is a built-in chain of an iptables table.
fn is_iptables_chain(a: &Attribution, b: &Basis, cfg: Option<&NetConfig>) -> bool {
    const TABLES: [&str; 5] = ["filter", "nat", "mangle", "raw", "security"];
    if b.verdict.is_none() || b.delta.is_some() {
        return true;
    }
    match cfg {
        Some(cfg) => cfg.chain(&a.table, &a.chain).is_some(),
        None => TABLES.contains(&a.table.as_str()) && BUILTIN.contains(&a.chain.as_str()),
    }
}

/// `missing-masquerade`: the request left a node's uplink still carrying a pod address and no
/// MASQUERADE/SNAT rule rewrites it, so the far side cannot answer.
pub(super) fn missing_masquerade(p: &Probe, cx: &Context) -> Option<Finding> {
    if p.replied {
        return None;
    }
    let leg = Leg::request(p);
    leg.hooks.iter().find_map(|h| {
        if !matches!(h.what, What::Hook(Dir::Egress)) || h.inner().is_some() || h.netns == p.from_netns
        {
            return None;
        }
        let ns = cx.topo.namespaces.iter().find(|n| n.name == h.netns)?;
        let uplink = ns.interface_named(h.ifname.as_deref()?)?;
        if matches!(uplink.kind.as_str(), "bridge" | "vxlan" | "loopback") || uplink.master.is_some()
        {
            return None;
        }
        let is_default_dev = ns
            .default_route
            .as_ref()
            .is_some_and(|r| net::route_dev(ns, r).is_some_and(|d| d.name == uplink.name));
        let to_pod = net::peer(cx.topo, uplink).is_some_and(|(pns, pi)| {
            pns.default_route
                .as_ref()
                .is_some_and(|r| net::route_dev(pns, r).is_some_and(|d| d.name == pi.name))
        });
        if !is_default_dev && to_pod {
            return None;
        }
        let src = h.outer.src_ip()?;
        let dst = h.outer.dst_ip()?;
        // The pod subnet: a bridge's, else that of a pod whose veth ends in this namespace.
        let (subnet, bridge) = ns
            .interfaces
            .iter()
            .filter(|b| b.kind == "bridge")
            .find_map(|b| {
                net::addrs(b)
                    .find(|c| c.contains(src))
                    .map(|c| (c.network(), Some(b.name.clone())))
            })
            .or_else(|| {
                ns.interfaces.iter().find_map(|v| {
                    let (_, pi) = net::peer(cx.topo, v)?;
                    net::addrs(pi)
                        .find(|c| c.addr == src)
                        .map(|c| (c.network(), None))
                })
            })?;
        if subnet.contains(dst) {
            return None;
        }
        let cfg = cx.config(&ns.name)?;
        if masquerades(cfg, src, dst, &uplink.name) {
            return None;
        }
        let mut evidence = leg.evidence();
        evidence.push(format!(
            "{} {} egress: source {src} (in {subnet}) > {dst}",
            ns.name, uplink.name
        ));
        let post = cfg.chain("nat", "POSTROUTING");
        evidence.push(match post {
            Some(c) => format!(
                "{}: nat POSTROUTING (`{}`, {} rules) has no MASQUERADE or SNAT rule for {src} out of {}",
                ns.name,
                c.header(),
                c.rules.len(),
                uplink.name
            ),
            None => format!("{}: iptables-save shows no nat POSTROUTING chain", ns.name),
        });
        if let Some((pns, _)) = net::peer(cx.topo, uplink) {
            if net::route_lookup(pns, src).is_none() {
                evidence.push(format!("{} has no route back to {src}", pns.name));
            }
        }
        let out = match &bridge {
            Some(b) => format!("! -o {b}"),
            None => format!("-o {}", uplink.name),
        };
        let exec = net::exec_in(cx.topo, &ns.name);
        Some(Finding {
            code: "missing-masquerade",
            message: format!(
                "the {} left {} through uplink {} still carrying the pod address {src} ({subnet}), and no MASQUERADE or SNAT rule in {}'s nat POSTROUTING rewrites it, so the reply cannot find its way back",
                leg.what, ns.name, uplink.name, ns.name
            ),
            evidence: evidence.join("; "),
            fix: format!("`{exec}iptables -t nat -A POSTROUTING -s {subnet} {out} -j MASQUERADE`"),
        })
    })
}

/// Whether a MASQUERADE or SNAT rule in a chain reachable from nat POSTROUTING would rewrite
/// a packet from `src` to `dst` leaving by `out`.
fn masquerades(cfg: &NetConfig, src: IpAddr, dst: IpAddr, out: &str) -> bool {
    let nat: Vec<&Chain> = cfg.chains.iter().filter(|c| c.table == "nat").collect();
    let mut todo = vec!["POSTROUTING".to_string()];
    let mut done: Vec<String> = Vec::new();
    while let Some(name) = todo.pop() {
        if done.contains(&name) {
            continue;
        }
        done.push(name.clone());
        let Some(chain) = nat.iter().find(|c| c.name == name) else {
            continue;
        };
        for r in &chain.rules {
            if !rule_matches(r, src, dst, out) {
                continue;
            }
            match r.target.as_deref() {
                Some("MASQUERADE" | "SNAT") => return true,
                Some(t) if nat.iter().any(|c| c.name == t) => todo.push(t.to_string()),
                _ => {}
            }
        }
    }
    false
}

/// Whether a rule's `-s`, `-d` and `-o` conditions (possibly negated with `!`) admit the
/// packet; other matches are assumed to.
fn rule_matches(r: &Rule, src: IpAddr, dst: IpAddr, out: &str) -> bool {
    let words: Vec<&str> = r.spec.split_whitespace().collect();
    let mut negate = false;
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        if w == "!" {
            negate = true;
            i += 1;
            continue;
        }
        let value = words.get(i + 1).copied().unwrap_or("");
        let hit = match w {
            "-s" | "--source" => Some(in_any(value, src)),
            "-d" | "--destination" => Some(in_any(value, dst)),
            "-o" | "--out-interface" => Some(iface_matches(value, out)),
            _ => None,
        };
        if let Some(hit) = hit {
            if hit == negate {
                return false;
            }
            i += 1;
        }
        negate = false;
        i += 1;
    }
    true
}

fn in_any(list: &str, ip: IpAddr) -> bool {
    list.split(',')
        .filter_map(net::Cidr::parse)
        .any(|c| c.contains(ip))
}

/// iptables interface matching: `eth+` is a prefix.
fn iface_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('+') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::{
        diagnose,
        fixture::{self, config, cx, flow, ip, path, probe, Configs},
    };

    const FORWARD_DROP_BEFORE: &str =
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";
    const FORWARD_DROP_AFTER: &str =
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [1:84]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";

    fn node_configs(before: &str, after: &str, br_nf: bool) -> (Configs, Configs) {
        let mut b = config(before, false);
        let mut a = config(after, false);
        b.bridge_nf_call_iptables = Some(br_nf);
        a.bridge_nf_call_iptables = Some(br_nf);
        (
            Configs::from([("node".to_string(), b)]),
            Configs::from([("node".to_string(), a)]),
        )
    }

    fn dropped_in_forward() -> crate::correlate::PacketPath {
        path(
            flow("192.168.88.11", "192.168.88.12", false),
            &[
                ("ns01", "veth01", "egress"),
                ("node", "br-veth01", "ingress"),
                ("node", "br-veth02", "drop:NETFILTER_DROP"),
            ],
        )
    }

    #[test]
    fn forward_drop_names_the_bridge_the_policy_and_the_fix() {
        let t = fixture::bridge();
        let (before, after) = node_configs(FORWARD_DROP_BEFORE, FORWARD_DROP_AFTER, true);
        let req = dropped_in_forward();
        let p = probe("192.168.88.11", "192.168.88.12", "ns01", Some(&req), None);
        let f = diagnose(&p, &cx(&t, &before, &after));
        assert_eq!(f[0].code, "forward-drop", "{f:#?}");
        assert_eq!(
            f[0].message,
            "br_netfilter in node sent the frame bridged from br-veth01 through br01 into the iptables FORWARD chain, and the chain's policy DROP dropped it"
        );
        assert!(f[0]
            .fix
            .contains("`ip netns exec node iptables -I FORWARD -i br01 -o br01 -j ACCEPT`"));
        assert!(f[0]
            .fix
            .contains("`ip netns exec node sysctl -w net.bridge.bridge-nf-call-iptables=0`"));
        assert!(f[0]
            .evidence
            .contains("node: net.bridge.bridge-nf-call-iptables = 1"));
        assert!(f[0].evidence.contains(
            "node: counter of filter FORWARD policy DROP (+1 packet) grew between the snapshots"
        ));
        assert!(f[0].evidence.contains("reason NETFILTER_DROP"));
        let a = netfilter_attribution(&p, &cx(&t, &before, &after)).expect("attributed");
        assert_eq!(
            a,
            Attribution {
                hook: "FORWARD".into(),
                table: "filter".into(),
                chain: "FORWARD".into(),
                rule: None,
                verdict: "policy DROP".into()
            }
        );
    }

    #[test]
    fn without_br_netfilter_it_is_a_plain_netfilter_drop() {
        let t = fixture::bridge();
        let (before, after) = node_configs(FORWARD_DROP_BEFORE, FORWARD_DROP_AFTER, false);
        let req = dropped_in_forward();
        let p = probe("192.168.88.11", "192.168.88.12", "ns01", Some(&req), None);
        let f = diagnose(&p, &cx(&t, &before, &after));
        assert_eq!(f[0].code, "netfilter-drop", "{f:#?}");
        assert_eq!(
            f[0].message,
            "netfilter in node dropped the echo request in filter FORWARD policy DROP after node br-veth01 ingress"
        );
        assert!(f[0].fix.contains(
            "`ip netns exec node iptables -I FORWARD -s 192.168.88.11 -d 192.168.88.12 -j ACCEPT`"
        ));
    }

    #[test]
    fn a_drop_rule_in_a_user_chain_is_attributed_to_its_hook() {
        let t = fixture::bridge();
        let before = "*filter\n:FORWARD ACCEPT [0:0]\n:DOCKER-USER - [0:0]\n[0:0] -A FORWARD -j DOCKER-USER\n[0:0] -A DOCKER-USER -p icmp -j DROP\nCOMMIT\n";
        let after = "*filter\n:FORWARD ACCEPT [0:0]\n:DOCKER-USER - [0:0]\n[1:84] -A FORWARD -j DOCKER-USER\n[1:84] -A DOCKER-USER -p icmp -j DROP\nCOMMIT\n";
        let (b, a) = node_configs(before, after, true);
        let req = dropped_in_forward();
        let p = probe("192.168.88.11", "192.168.88.12", "ns01", Some(&req), None);
        let c = cx(&t, &b, &a);
        let at = netfilter_attribution(&p, &c).expect("attributed");
        assert_eq!(at.hook, "FORWARD");
        assert_eq!(at.chain, "DOCKER-USER");
        assert_eq!(at.rule.as_deref(), Some("-A DOCKER-USER -p icmp -j DROP"));
        assert_eq!(at.verdict, "DROP");
        let f = diagnose(&p, &c);
        assert_eq!(f[0].code, "forward-drop");
        assert!(f[0].message.ends_with(
            "and the filter DOCKER-USER rule `-A DOCKER-USER -p icmp -j DROP` dropped it"
        ));
    }

    #[test]
    fn attribution_falls_back_to_the_chain_then_to_nothing() {
        let t = fixture::bridge();
        // Counters did not move (e.g. the drop came from an nft table iptables does not show),
        // but the FORWARD policy is DROP: chain only.
        let (b, a) = node_configs(FORWARD_DROP_BEFORE, FORWARD_DROP_BEFORE, true);
        let req = dropped_in_forward();
        let p = probe("192.168.88.11", "192.168.88.12", "ns01", Some(&req), None);
        let at = netfilter_attribution(&p, &cx(&t, &b, &a)).expect("chain only");
        assert_eq!((at.chain.as_str(), at.rule.as_deref()), ("FORWARD", None));
        assert_eq!(at.verdict, "DROP");
        assert_eq!(at.describe(), "filter FORWARD (which rule is not known)");
        // Nothing known about the namespace: the kernel's reason alone.
        let none = Configs::new();
        assert!(netfilter_attribution(&p, &cx(&t, &none, &none)).is_none());
        let f = diagnose(&p, &cx(&t, &none, &none));
        assert_eq!(f[0].code, "netfilter-drop");
        assert!(f[0].fix.contains("ip netns exec node nft list ruleset"));
    }

    #[test]
    fn input_and_output_hooks_are_inferred_from_the_path() {
        let t = fixture::bridge();
        let after = "*filter\n:INPUT DROP [0:0]\n:OUTPUT DROP [0:0]\nCOMMIT\n";
        let (b, a) = node_configs(after, after, false);
        let c = cx(&t, &b, &a);
        let to_node = path(
            flow("192.168.88.11", "192.168.88.1", false),
            &[
                ("ns01", "veth01", "egress"),
                ("node", "br-veth01", "ingress"),
                ("node", "br01", "ingress"),
                ("node", "br01", "drop:NETFILTER_DROP"),
            ],
        );
        let p = probe(
            "192.168.88.11",
            "192.168.88.1",
            "ns01",
            Some(&to_node),
            None,
        );
        assert_eq!(
            netfilter_attribution(&p, &c).map(|a| a.hook).as_deref(),
            Some("INPUT")
        );
        let from_node = path(
            flow("192.168.88.1", "192.168.88.11", false),
            &[("node", "br01", "drop:NETFILTER_DROP")],
        );
        let p = probe(
            "192.168.88.1",
            "192.168.88.11",
            "node",
            Some(&from_node),
            None,
        );
        assert_eq!(
            netfilter_attribution(&p, &c).map(|a| a.hook).as_deref(),
            Some("OUTPUT")
        );
    }

    /// `dropped_in_forward` with the netfilter layer's verdict (`ns`, family ip, hook,
    /// table, chain, verdict) just before the drop.
    fn with_verdict(
        ns: &str,
        hook: &str,
        table: &str,
        chain: &str,
        verdict: &str,
    ) -> crate::correlate::PacketPath {
        let mut p = dropped_in_forward();
        let mut v = p.hops[2].clone();
        v.netns = ns.into();
        v.ts_ns -= 1;
        v.what = What::netfilter("ip", hook, table, chain, verdict);
        p.hops.insert(2, v);
        p
    }

    #[test]
    fn the_layers_verdict_is_refined_by_the_counters_that_moved() {
        let t = fixture::bridge();
        let (before, after) = node_configs(FORWARD_DROP_BEFORE, FORWARD_DROP_AFTER, true);
        let req = with_verdict("node", "FORWARD", "filter", "FORWARD", "DROP");
        let p = probe("192.168.88.11", "192.168.88.12", "ns01", Some(&req), None);
        let c = cx(&t, &before, &after);
        let a = netfilter_attribution(&p, &c).expect("attributed");
        assert_eq!(
            a,
            Attribution {
                hook: "FORWARD".into(),
                table: "filter".into(),
                chain: "FORWARD".into(),
                rule: None,
                verdict: "policy DROP".into()
            }
        );
        let f = diagnose(&p, &c);
        assert_eq!(f[0].code, "forward-drop", "{f:#?}");
        assert!(f[0].evidence.contains(
            "node: nft_do_chain returned DROP for filter FORWARD (ip FORWARD hook); node: counter of filter FORWARD policy DROP (+1 packet) grew"
        ), "{}", f[0].evidence);
        // A rule in a chain the base chain jumped to: the rule's chain, at the layer's hook.
        let before = "*filter\n:FORWARD ACCEPT [0:0]\n:DOCKER-USER - [0:0]\n[0:0] -A FORWARD -j DOCKER-USER\n[0:0] -A DOCKER-USER -p icmp -j DROP\nCOMMIT\n";
        let after = "*filter\n:FORWARD ACCEPT [0:0]\n:DOCKER-USER - [0:0]\n[1:84] -A FORWARD -j DOCKER-USER\n[1:84] -A DOCKER-USER -p icmp -j DROP\nCOMMIT\n";
        let (b, a) = node_configs(before, after, true);
        let at = netfilter_attribution(&p, &cx(&t, &b, &a)).expect("attributed");
        assert_eq!(
            (
                at.hook.as_str(),
                at.chain.as_str(),
                at.rule.as_deref(),
                at.verdict.as_str()
            ),
            (
                "FORWARD",
                "DOCKER-USER",
                Some("-A DOCKER-USER -p icmp -j DROP"),
                "DROP"
            )
        );
    }

    #[test]
    fn the_layers_verdict_alone_attributes_without_any_counters() {
        let t = fixture::bridge();
        // No configuration read at all (too many namespaces, or iptables missing).
        let none = Configs::new();
        let req = with_verdict("node", "FORWARD", "filter", "FORWARD", "DROP");
        let p = probe("192.168.88.11", "192.168.88.12", "ns01", Some(&req), None);
        let a = netfilter_attribution(&p, &cx(&t, &none, &none)).expect("from the layer");
        assert_eq!(
            a,
            Attribution {
                hook: "FORWARD".into(),
                table: "filter".into(),
                chain: "FORWARD".into(),
                rule: None,
                verdict: "DROP".into()
            }
        );
        let f = diagnose(&p, &cx(&t, &none, &none));
        assert_eq!(f[0].code, "netfilter-drop");
        assert!(
            f[0].message.contains("in filter FORWARD"),
            "{}",
            f[0].message
        );
        assert!(f[0]
            .evidence
            .contains("node: nft_do_chain returned DROP for filter FORWARD (ip FORWARD hook)"));
        // An nftables table iptables does not show: its own names, counters that did not move
        // in it ignored.
        let (b, a) = node_configs(FORWARD_DROP_BEFORE, FORWARD_DROP_BEFORE, true);
        let req = with_verdict("node", "FORWARD", "fw", "forward", "DROP");
        let p = probe("192.168.88.11", "192.168.88.12", "ns01", Some(&req), None);
        let at = netfilter_attribution(&p, &cx(&t, &b, &a)).expect("from the layer");
        assert_eq!(
            (at.table.as_str(), at.chain.as_str(), at.verdict.as_str()),
            ("fw", "forward", "DROP")
        );
        // Its finding names the nftables chain and says how to see it, not an iptables command.
        let (b, a) = node_configs(FORWARD_DROP_BEFORE, FORWARD_DROP_BEFORE, false);
        let f = diagnose(&p, &cx(&t, &b, &a));
        assert_eq!(f[0].code, "netfilter-drop", "{f:#?}");
        assert_eq!(
            f[0].message,
            "netfilter in node dropped the echo request in nftables table fw chain forward after node br-veth01 ingress"
        );
        assert!(f[0]
            .fix
            .contains("`ip netns exec node nft -a list ruleset`"));
        assert!(!f[0].fix.contains("iptables"));
    }

    #[test]
    fn verdicts_elsewhere_or_not_dropping_are_not_the_layers_attribution() {
        let t = fixture::bridge();
        let none = Configs::new();
        for req in [
            with_verdict("ns01", "OUTPUT", "filter", "OUTPUT", "DROP"),
            with_verdict("node", "FORWARD", "filter", "FORWARD", "ACCEPT"),
        ] {
            let p = probe("192.168.88.11", "192.168.88.12", "ns01", Some(&req), None);
            assert!(netfilter_attribution(&p, &cx(&t, &none, &none)).is_none());
        }
        // After the drop: another packet's business.
        let mut req = with_verdict("node", "FORWARD", "filter", "FORWARD", "DROP");
        req.hops[2].ts_ns += 10_000;
        req.hops.sort_by_key(|h| h.ts_ns);
        let p = probe("192.168.88.11", "192.168.88.12", "ns01", Some(&req), None);
        assert!(netfilter_attribution(&p, &cx(&t, &none, &none)).is_none());
    }

    fn to_wan(src_on_uplink: &str) -> crate::correlate::PacketPath {
        let mut p = path(
            flow("192.168.88.11", "10.99.0.2", false),
            &[
                ("ns01", "veth01", "egress"),
                ("node", "br-veth01", "ingress"),
                ("node", "br01", "ingress"),
                ("node", "eth1", "egress"),
                ("wan", "eth0", "ingress"),
            ],
        );
        for h in &mut p.hops[3..] {
            h.outer = flow(src_on_uplink, "10.99.0.2", false);
        }
        p
    }

    #[test]
    fn missing_masquerade_when_pod_addresses_leave_the_uplink() {
        let t = fixture::bridge();
        let nat = "*nat\n:POSTROUTING ACCEPT [3:252]\nCOMMIT\n";
        let (b, a) = node_configs(nat, nat, false);
        let req = to_wan("192.168.88.11");
        let p = probe("192.168.88.11", "10.99.0.2", "ns01", Some(&req), None);
        let f = diagnose(&p, &cx(&t, &b, &a));
        assert_eq!(f[0].code, "missing-masquerade", "{f:#?}");
        assert_eq!(
            f[0].message,
            "the echo request left node through uplink eth1 still carrying the pod address 192.168.88.11 (192.168.88.0/24), and no MASQUERADE or SNAT rule in node's nat POSTROUTING rewrites it, so the reply cannot find its way back"
        );
        assert_eq!(
            f[0].fix,
            "`ip netns exec node iptables -t nat -A POSTROUTING -s 192.168.88.0/24 ! -o br01 -j MASQUERADE`"
        );
        assert!(f[0]
            .evidence
            .contains("wan has no route back to 192.168.88.11"));
    }

    #[test]
    fn no_masquerade_finding_when_a_rule_covers_it_or_it_was_answered() {
        let t = fixture::bridge();
        let nat = "*nat\n:POSTROUTING ACCEPT [0:0]\n:KUBE-POSTROUTING - [0:0]\n[0:0] -A POSTROUTING -j KUBE-POSTROUTING\n[0:0] -A KUBE-POSTROUTING -s 192.168.88.0/24 ! -o br01 -j MASQUERADE\nCOMMIT\n";
        let (b, a) = node_configs(nat, nat, false);
        let req = to_wan("192.168.88.11");
        let p = probe("192.168.88.11", "10.99.0.2", "ns01", Some(&req), None);
        let f = diagnose(&p, &cx(&t, &b, &a));
        assert!(f.iter().all(|f| f.code != "missing-masquerade"), "{f:#?}");
        // Masqueraded on the way out: the uplink hop carries the node's address.
        let nat = "*nat\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n";
        let (b, a) = node_configs(nat, nat, false);
        let req = to_wan("10.99.0.1");
        let p = probe("192.168.88.11", "10.99.0.2", "ns01", Some(&req), None);
        assert!(diagnose(&p, &cx(&t, &b, &a))
            .iter()
            .all(|f| f.code != "missing-masquerade"));
    }

    #[test]
    fn rule_conditions_and_interface_wildcards() {
        let r = |spec: &str| Rule {
            spec: spec.into(),
            target: crate::netconf::target_of(spec),
            ..Default::default()
        };
        let (s, d) = (ip("192.168.88.11"), ip("10.99.0.2"));
        assert!(rule_matches(
            &r("-A P -s 192.168.88.0/24 ! -o br01 -j MASQUERADE"),
            s,
            d,
            "eth1"
        ));
        assert!(!rule_matches(
            &r("-A P -s 192.168.88.0/24 ! -o br01 -j MASQUERADE"),
            s,
            d,
            "br01"
        ));
        assert!(!rule_matches(
            &r("-A P -s 10.0.0.0/8 -j MASQUERADE"),
            s,
            d,
            "eth1"
        ));
        assert!(rule_matches(
            &r("-A P -o eth+ -j SNAT --to-source 1.2.3.4"),
            s,
            d,
            "eth1"
        ));
        assert!(!rule_matches(
            &r("-A P ! -d 10.99.0.0/16 -j MASQUERADE"),
            s,
            d,
            "eth1"
        ));
        assert!(rule_matches(
            &r("-A P -s 1.1.1.1/32,192.168.88.11 -j MASQUERADE"),
            s,
            d,
            "eth1"
        ));
    }
}
