//! Read-only network configuration of one namespace, for diagnosis: the sysctls that decide
//! whether a packet is forwarded or filtered (ip_forward, rp_filter, bridge-nf-call-iptables),
//! the iptables ruleset with its counters (`iptables-save -c`), and the neighbour table.
//!
//! Owns: [`NetConfig`] and its parts, reading them ([`read`]: from a thread inside the namespace,
//! see [`crate::netns::run_in`]), parsing `iptables-save` output ([`parse_iptables_save`]) and
//! comparing two snapshots' counters ([`counter_deltas`]). Parsing and comparing are pure.
//!
//! Never changes anything: it only reads /proc/sys, runs `iptables-save` (which only reads) and
//! dumps the neighbour table. A missing tool, file or table leaves that field empty or `None`.

use std::{
    io::Read,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Result;
use netlink_packet_route::{
    link::LinkMessage,
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    AddressFamily, RouteNetlinkMessage,
};

use crate::topology::{links, netlink::Rtnl};

/// How long `iptables-save` may take before it is killed (a wedged nft backend must not hang
/// a diagnosis).
pub const IPTABLES_SAVE_TIMEOUT: Duration = Duration::from_secs(3);

/// What one namespace's configuration says about forwarding and filtering.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct NetConfig {
    /// net.ipv4.ip_forward.
    pub ip_forward: Option<bool>,
    /// net.ipv4.conf.*.rp_filter: ("all", n), ("default", n), then one per interface.
    pub rp_filter: Vec<(String, u8)>,
    /// net.bridge.bridge-nf-call-iptables, when br_netfilter is loaded.
    pub bridge_nf_call_iptables: Option<bool>,
    /// Every chain of every table `iptables-save` prints, in its order.
    pub chains: Vec<Chain>,
    /// The IPv4 and IPv6 neighbour (ARP/NDP) table.
    pub neighbours: Vec<Neighbour>,
}

/// One iptables chain and its rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Chain {
    /// `filter`, `nat`, `mangle`, `raw`, `security`.
    pub table: String,
    pub name: String,
    /// `ACCEPT`/`DROP` for built-in chains, `None` for user chains.
    pub policy: Option<String>,
    /// Packets that reached the end of the chain and got its policy.
    pub policy_packets: u64,
    pub policy_bytes: u64,
    pub rules: Vec<Rule>,
}

/// One rule, as `iptables-save` prints it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Rule {
    /// The `-A CHAIN …` line, without counters.
    pub spec: String,
    /// The `-j` (or `-g`) target: `ACCEPT`, `DROP`, `MASQUERADE`, a user chain, …
    pub target: Option<String>,
    pub packets: u64,
    pub bytes: u64,
}

/// One neighbour-table entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Neighbour {
    pub ip: String,
    pub dev: String,
    /// `REACHABLE`, `STALE`, `DELAY`, `PROBE`, `FAILED`, `INCOMPLETE`, `NOARP`, `PERMANENT`, `NONE`.
    pub state: String,
}

/// A chain policy or rule whose packet counter grew between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Delta {
    pub table: String,
    pub chain: String,
    /// The rule's `-A …` line; `None` when the chain's policy counter grew.
    pub rule: Option<String>,
    /// The rule's target, or the policy (`DROP`, `ACCEPT`) when `rule` is `None`.
    pub verdict: String,
    /// Growth of the packet counter.
    pub packets: u64,
    pub bytes: u64,
}

impl Chain {
    /// A built-in chain (it has a policy).
    pub fn is_builtin(&self) -> bool {
        self.policy.is_some()
    }

    /// The chain's line as `iptables-save -c` prints it, e.g. `:FORWARD DROP [3:252]`.
    pub fn header(&self) -> String {
        format!(
            ":{} {} [{}:{}]",
            self.name,
            self.policy.as_deref().unwrap_or("-"),
            self.policy_packets,
            self.policy_bytes
        )
    }
}

impl Delta {
    /// Whether this counter counts packets thrown away (DROP/REJECT target or DROP policy).
    pub fn drops(&self) -> bool {
        is_dropping(&self.verdict)
    }

    /// One phrase: `filter FORWARD policy DROP (+1 packet)` or
    /// `filter FORWARD rule \`-A FORWARD -j DROP\` (+2 packets)`.
    pub fn describe(&self) -> String {
        let n = self.packets;
        let plural = if n == 1 { "" } else { "s" };
        match &self.rule {
            None => format!(
                "{} {} policy {} (+{n} packet{plural})",
                self.table, self.chain, self.verdict
            ),
            Some(r) => format!(
                "{} {} rule `{r}` (+{n} packet{plural})",
                self.table, self.chain
            ),
        }
    }
}

impl NetConfig {
    /// The chain `name` of `table`.
    pub fn chain(&self, table: &str, name: &str) -> Option<&Chain> {
        self.chains
            .iter()
            .find(|c| c.table == table && c.name == name)
    }

    /// The rp_filter value of a conf entry (`all`, `default` or an interface).
    pub fn rp_filter_of(&self, key: &str) -> Option<u8> {
        self.rp_filter
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
    }

    /// The mode the kernel applies on `ifname`: the larger of `all` and the interface's own.
    pub fn effective_rp_filter(&self, ifname: &str) -> Option<u8> {
        match (self.rp_filter_of("all"), self.rp_filter_of(ifname)) {
            (None, None) => None,
            (a, i) => Some(a.unwrap_or(0).max(i.unwrap_or(0))),
        }
    }
}

/// Whether a target or policy throws the packet away.
pub fn is_dropping(verdict: &str) -> bool {
    matches!(verdict, "DROP" | "REJECT")
}

/// Reads the configuration of the namespace at `path`. Fails only when the namespace cannot
/// be entered; a missing sysctl, tool or table leaves its field empty.
pub fn read(path: &Path) -> Result<NetConfig> {
    crate::netns::run_in(path, || Ok(read_current()))
}

/// Reads the configuration of the calling thread's namespace.
pub fn read_current() -> NetConfig {
    NetConfig {
        ip_forward: sysctl_bool("/proc/sys/net/ipv4/ip_forward"),
        rp_filter: read_rp_filter(),
        bridge_nf_call_iptables: sysctl_bool("/proc/sys/net/bridge/bridge-nf-call-iptables"),
        chains: iptables_save()
            .map(|t| parse_iptables_save(&t))
            .unwrap_or_default(),
        neighbours: read_neighbours().unwrap_or_default(),
    }
}

fn sysctl_u8(path: &str) -> Option<u8> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn sysctl_bool(path: &str) -> Option<bool> {
    sysctl_u8(path).map(|v| v != 0)
}

/// `all`, `default`, then the interfaces in name order.
fn read_rp_filter() -> Vec<(String, u8)> {
    let base = Path::new("/proc/sys/net/ipv4/conf");
    let mut names: Vec<String> = std::fs::read_dir(base)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort_by_key(|n| (n != "all", n != "default", n.clone()));
    names
        .into_iter()
        .filter_map(|n| {
            let v = sysctl_u8(&base.join(&n).join("rp_filter").to_string_lossy())?;
            Some((n, v))
        })
        .collect()
}

/// The output of `iptables-save -c` run in the calling thread's namespace (a child spawned from
/// this thread inherits it), or `None` when the tool is missing, fails or takes too long.
fn iptables_save() -> Option<String> {
    let mut child = Command::new("iptables-save")
        .arg("-c")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdout = child.stdout.take()?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let deadline = Instant::now() + IPTABLES_SAVE_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                // Our own child: kill it by its handle, then reap it.
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let text = reader.join().ok()?.ok()?;
    status.filter(|s| s.success()).map(|_| text)
}

/// Parses `iptables-save` output, with (`-c`) or without counters. Lines it does not
/// understand are skipped.
pub fn parse_iptables_save(text: &str) -> Vec<Chain> {
    let mut chains: Vec<Chain> = Vec::new();
    let mut table = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line == "COMMIT" {
            continue;
        }
        if let Some(t) = line.strip_prefix('*') {
            table = t.trim().to_string();
            continue;
        }
        if let Some(rest) = line.strip_prefix(':') {
            let mut words = rest.split_whitespace();
            let Some(name) = words.next() else { continue };
            let policy = words.next().filter(|p| *p != "-").map(str::to_string);
            let (policy_packets, policy_bytes) = words.next().and_then(counters).unwrap_or((0, 0));
            chains.push(Chain {
                table: table.clone(),
                name: name.to_string(),
                policy,
                policy_packets,
                policy_bytes,
                rules: Vec::new(),
            });
            continue;
        }
        // `[p:b] -A CHAIN …` (with -c) or `-A CHAIN …`.
        let (count, spec) = match line.split_once(' ') {
            Some((first, rest)) if first.starts_with('[') => match counters(first) {
                Some(c) => (c, rest.trim()),
                None => continue,
            },
            _ => ((0, 0), line),
        };
        let mut words = spec.split_whitespace();
        if words.next() != Some("-A") {
            continue;
        }
        let Some(chain) = words.next() else { continue };
        let rule = Rule {
            spec: spec.to_string(),
            target: target_of(spec),
            packets: count.0,
            bytes: count.1,
        };
        match chains
            .iter_mut()
            .rev()
            .find(|c| c.table == table && c.name == chain)
        {
            Some(c) => c.rules.push(rule),
            None => chains.push(Chain {
                table: table.clone(),
                name: chain.to_string(),
                rules: vec![rule],
                ..Default::default()
            }),
        }
    }
    chains
}

/// `[12:1008]` → (12, 1008).
fn counters(s: &str) -> Option<(u64, u64)> {
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    let (p, b) = inner.split_once(':')?;
    Some((p.parse().ok()?, b.parse().ok()?))
}

/// The word after `-j` or `-g` (`--jump`, `--goto`).
pub fn target_of(spec: &str) -> Option<String> {
    let mut words = spec.split_whitespace();
    while let Some(w) = words.next() {
        if matches!(w, "-j" | "--jump" | "-g" | "--goto") {
            return words.next().map(str::to_string);
        }
    }
    None
}

/// Chain policies and rules whose packet counters grew from `before` to `after`: those that
/// drop (DROP/REJECT targets, DROP policies) first, then the others, each group in ruleset
/// order. A rule is matched by table, chain and text (the n-th copy of a line to the n-th);
/// a rule that only exists in `after` counts from zero.
pub fn counter_deltas(before: &NetConfig, after: &NetConfig) -> Vec<Delta> {
    let mut out = Vec::new();
    for c in &after.chains {
        let old = before.chain(&c.table, &c.name);
        if let Some(policy) = &c.policy {
            let (p0, b0) = old.map_or((0, 0), |o| (o.policy_packets, o.policy_bytes));
            if c.policy_packets > p0 {
                out.push(Delta {
                    table: c.table.clone(),
                    chain: c.name.clone(),
                    rule: None,
                    verdict: policy.clone(),
                    packets: c.policy_packets - p0,
                    bytes: c.policy_bytes.saturating_sub(b0),
                });
            }
        }
        for (i, r) in c.rules.iter().enumerate() {
            let nth = c.rules[..i].iter().filter(|x| x.spec == r.spec).count();
            let prev = old.and_then(|o| o.rules.iter().filter(|x| x.spec == r.spec).nth(nth));
            let (p0, b0) = prev.map_or((0, 0), |x| (x.packets, x.bytes));
            if r.packets > p0 {
                out.push(Delta {
                    table: c.table.clone(),
                    chain: c.name.clone(),
                    rule: Some(r.spec.clone()),
                    verdict: r.target.clone().unwrap_or_default(),
                    packets: r.packets - p0,
                    bytes: r.bytes.saturating_sub(b0),
                });
            }
        }
    }
    // Stable: ruleset order within each group.
    out.sort_by_key(|d| !d.drops());
    out
}

/// The IPv4 and IPv6 neighbour tables of the calling thread's namespace.
fn read_neighbours() -> Result<Vec<Neighbour>> {
    let mut rtnl = Rtnl::open()?;
    let names: Vec<(u32, String)> = rtnl
        .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))?
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => {
                let raw = links::link_of(l);
                Some((raw.iface.ifindex, raw.iface.name))
            }
            _ => None,
        })
        .collect();
    let name_of = |i: u32| {
        names
            .iter()
            .find(|(x, _)| *x == i)
            .map_or_else(|| format!("if{i}"), |(_, n)| n.clone())
    };
    let mut out = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut req = NeighbourMessage::default();
        req.header.family = family;
        // One family failing (IPv6 disabled) leaves the other.
        let Ok(msgs) = rtnl.dump(RouteNetlinkMessage::GetNeighbour(req)) else {
            continue;
        };
        out.extend(msgs.iter().filter_map(|m| match m {
            RouteNetlinkMessage::NewNeighbour(n) => neighbour_of(n, &name_of),
            _ => None,
        }));
    }
    Ok(out)
}

/// One neighbour entry, the device named through `name_of`; `None` without an IP address.
pub fn neighbour_of(msg: &NeighbourMessage, name_of: &dyn Fn(u32) -> String) -> Option<Neighbour> {
    let ip = msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(ip.to_string()),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => Some(ip.to_string()),
        _ => None,
    })?;
    Some(Neighbour {
        ip,
        dev: name_of(msg.header.ifindex),
        state: state_name(msg.header.state),
    })
}

fn state_name(s: NeighbourState) -> String {
    match s {
        NeighbourState::Incomplete => "INCOMPLETE".into(),
        NeighbourState::Reachable => "REACHABLE".into(),
        NeighbourState::Stale => "STALE".into(),
        NeighbourState::Delay => "DELAY".into(),
        NeighbourState::Probe => "PROBE".into(),
        NeighbourState::Failed => "FAILED".into(),
        NeighbourState::Noarp => "NOARP".into(),
        NeighbourState::Permanent => "PERMANENT".into(),
        NeighbourState::None => "NONE".into(),
        other => format!("0x{:x}", u16::from(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKERISH: &str = "\
# Generated by iptables-save v1.8.9 (nf_tables) on Tue Dec  1 23:50:37 2026
*filter
:INPUT ACCEPT [10:840]
:FORWARD DROP [1:84]
:OUTPUT ACCEPT [0:0]
:DOCKER-USER - [0:0]
[3:252] -A FORWARD -j DOCKER-USER
[0:0] -A FORWARD -p tcp -m tcp --dport 99 -j REJECT --reject-with icmp-port-unreachable
[3:252] -A DOCKER-USER -j RETURN
COMMIT
# Completed on Tue Dec  1 23:50:37 2026
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [2:168]
[0:0] -A POSTROUTING -s 192.168.88.0/24 ! -o br01 -j MASQUERADE
COMMIT
";

    #[test]
    fn parses_tables_chains_policies_rules_and_counters() {
        let c = parse_iptables_save(DOCKERISH);
        assert_eq!(c.len(), 6);
        let fwd = &c[1];
        assert_eq!(
            (fwd.table.as_str(), fwd.name.as_str()),
            ("filter", "FORWARD")
        );
        assert_eq!(fwd.policy.as_deref(), Some("DROP"));
        assert_eq!((fwd.policy_packets, fwd.policy_bytes), (1, 84));
        assert_eq!(fwd.rules.len(), 2);
        assert_eq!(fwd.rules[0].spec, "-A FORWARD -j DOCKER-USER");
        assert_eq!(fwd.rules[0].target.as_deref(), Some("DOCKER-USER"));
        assert_eq!((fwd.rules[0].packets, fwd.rules[0].bytes), (3, 252));
        assert_eq!(fwd.rules[1].target.as_deref(), Some("REJECT"));
        let user = &c[3];
        assert_eq!(user.name, "DOCKER-USER");
        assert!(user.policy.is_none() && !user.is_builtin());
        assert_eq!(user.rules.len(), 1);
        let post = &c[5];
        assert_eq!(
            (post.table.as_str(), post.name.as_str()),
            ("nat", "POSTROUTING")
        );
        assert_eq!(post.rules[0].target.as_deref(), Some("MASQUERADE"));
        assert_eq!(fwd.header(), ":FORWARD DROP [1:84]");
    }

    #[test]
    fn parses_output_without_counters_and_skips_garbage() {
        let text = "*filter\n:FORWARD ACCEPT\n-A FORWARD -i br01 -o br01 -j ACCEPT\nnonsense\n[x:y] -A FORWARD -j DROP\n-A MISSING -g OTHER\nCOMMIT\n";
        let c = parse_iptables_save(text);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].rules.len(), 1);
        assert_eq!(c[0].rules[0].packets, 0);
        assert_eq!(c[0].policy.as_deref(), Some("ACCEPT"));
        // A rule for a chain never declared still lands somewhere sensible.
        assert_eq!(c[1].name, "MISSING");
        assert_eq!(c[1].rules[0].target.as_deref(), Some("OTHER"));
        assert!(parse_iptables_save("").is_empty());
    }

    fn cfg(text: &str) -> NetConfig {
        NetConfig {
            chains: parse_iptables_save(text),
            ..Default::default()
        }
    }

    #[test]
    fn deltas_put_drops_first_and_match_rules_by_text() {
        let before = cfg(DOCKERISH);
        let after = cfg(&DOCKERISH
            .replace(":FORWARD DROP [1:84]", ":FORWARD DROP [3:252]")
            .replace(
                "[3:252] -A FORWARD -j DOCKER-USER",
                "[5:420] -A FORWARD -j DOCKER-USER",
            )
            .replace(
                "[3:252] -A DOCKER-USER -j RETURN",
                "[5:420] -A DOCKER-USER -j RETURN",
            ));
        let d = counter_deltas(&before, &after);
        assert_eq!(d.len(), 3);
        assert_eq!(d[0].rule, None);
        assert_eq!(
            (d[0].chain.as_str(), d[0].verdict.as_str()),
            ("FORWARD", "DROP")
        );
        assert_eq!((d[0].packets, d[0].bytes), (2, 168));
        assert!(d[0].drops());
        assert_eq!(d[0].describe(), "filter FORWARD policy DROP (+2 packets)");
        assert_eq!(d[1].rule.as_deref(), Some("-A FORWARD -j DOCKER-USER"));
        assert!(!d[1].drops());
        assert_eq!(d[2].chain, "DOCKER-USER");
        assert!(counter_deltas(&after, &after).is_empty());
    }

    #[test]
    fn a_new_rule_counts_from_zero_and_duplicates_pair_up_in_order() {
        let before = cfg("*filter\n:INPUT ACCEPT [0:0]\n[1:10] -A INPUT -j DROP\n");
        let after = cfg("*filter\n:INPUT ACCEPT [0:0]\n[1:10] -A INPUT -j DROP\n[4:40] -A INPUT -j DROP\n[2:20] -A INPUT -p icmp -j REJECT\n");
        let d = counter_deltas(&before, &after);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].packets, 4);
        assert_eq!(d[0].rule.as_deref(), Some("-A INPUT -j DROP"));
        assert_eq!(d[1].verdict, "REJECT");
        assert_eq!(
            d[1].describe(),
            "filter INPUT rule `-A INPUT -p icmp -j REJECT` (+2 packets)"
        );
    }

    #[test]
    fn effective_rp_filter_is_the_larger_of_all_and_the_interface() {
        let c = NetConfig {
            rp_filter: vec![("all".into(), 1), ("default".into(), 0), ("eth0".into(), 2)],
            ..Default::default()
        };
        assert_eq!(c.effective_rp_filter("eth0"), Some(2));
        assert_eq!(c.effective_rp_filter("br01"), Some(1));
        assert_eq!(NetConfig::default().effective_rp_filter("eth0"), None);
    }

    #[test]
    fn neighbour_entries_name_their_device_and_state() {
        let mut m = NeighbourMessage::default();
        m.header.ifindex = 2;
        m.header.state = NeighbourState::Failed;
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                "192.168.88.12".parse().expect("literal"),
            )));
        let name_of = |i: u32| {
            if i == 2 {
                "veth01".to_string()
            } else {
                format!("if{i}")
            }
        };
        let n = neighbour_of(&m, &name_of).expect("has an address");
        assert_eq!(
            n,
            Neighbour {
                ip: "192.168.88.12".into(),
                dev: "veth01".into(),
                state: "FAILED".into()
            }
        );
        m.attributes.clear();
        assert!(neighbour_of(&m, &name_of).is_none());
    }
}
