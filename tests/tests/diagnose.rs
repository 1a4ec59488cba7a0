//! Integration tests of `vethtrace::netconf` and `vethtrace::diagnose` against real labs:
//! reading a lab namespace's configuration (sysctls, iptables with counters, neighbours) after
//! a fault, attributing a drop to the chain policy whose counter grew, and diagnosing the lab's
//! faults from the discovered topology and hops shaped like the ones the tracer reports.
//!
//! The lab rule: only lab namespaces are touched (each test's lab has a unique prefix and is
//! deleted on drop); the root namespace is only read, and a test checks that its iptables
//! ruleset and sysctls are the same afterwards. The tests need root (not the eBPF object);
//! without it they print why and pass, or fail when `CI` or `VETHTRACE_REQUIRE_PRIVILEGED` is
//! set. Pings are bounded (`-c 1 -W 1`).

use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
};

use vethtrace::{
    correlate::{PacketKey, PacketPath},
    decode::{Dir, Observation, What},
    diagnose::{self, Context, Finding, Probe},
    lab::{Fault, Lab, LabKind},
    netconf::{self, NetConfig},
    topology::{self, DiscoverOptions, Topology},
};
use vethtrace_common::Flow;

fn create(kind: LabKind) -> Lab {
    Lab::create(kind).unwrap_or_else(|e| panic!("creating lab {kind}: {e:#}"))
}

fn enable(lab: &mut Lab, fault: Fault) {
    lab.enable(fault.clone())
        .unwrap_or_else(|e| panic!("enabling {fault}: {e:#}"));
}

fn ns_path(lab: &Lab, role: &str) -> PathBuf {
    vethtrace::netns::named(lab.netns(role).unwrap_or_else(|e| panic!("{e:#}")))
}

fn read(lab: &Lab, role: &str) -> NetConfig {
    netconf::read(&ns_path(lab, role)).unwrap_or_else(|e| panic!("reading {role}: {e:#}"))
}

fn addr(lab: &Lab, role: &str) -> IpAddr {
    lab.addr(role).unwrap_or_else(|e| panic!("{e:#}"))
}

fn ping_once(lab: &Lab, from: &str, to: IpAddr) -> bool {
    lab.ping(from, to, 1)
        .unwrap_or_else(|e| panic!("ping {from} -> {to}: {e:#}"))
}

/// The root namespace's ruleset as `iptables-save` prints it, without the `# Generated/
/// Completed on <time>` comment lines (which carry the time) — everything else must be
/// byte-identical. Counters are left out (`-c` not given): traffic moves them.
fn root_ruleset() -> String {
    let out = Command::new("iptables-save")
        .env("LC_ALL", "C")
        .output()
        .unwrap_or_else(|e| panic!("running iptables-save: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn root_sysctls() -> Vec<String> {
    [
        "/proc/sys/net/ipv4/ip_forward",
        "/proc/sys/net/ipv4/conf/all/rp_filter",
        "/proc/sys/net/bridge/bridge-nf-call-iptables",
    ]
    .iter()
    .map(|p| std::fs::read_to_string(p).unwrap_or_else(|e| format!("{p}: {e}")))
    .collect()
}

/// The lab's namespaces as `vethtrace topo` sees them.
fn discover(lab: &Lab) -> Topology {
    let netns = lab.roles().iter().map(|(_, n)| n.to_string()).collect();
    topology::discover(&DiscoverOptions {
        netns,
        with_peers: false,
        programs: false,
    })
    .unwrap_or_else(|e| panic!("discovering the lab: {e:#}"))
}

fn flow(src: IpAddr, dst: IpAddr) -> Flow {
    let mut f = Flow {
        ethertype: 0x0800,
        l4: 1,
        icmp_type: 8,
        icmp_id: 4242,
        icmp_seq: 1,
        ..Default::default()
    };
    if let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst) {
        f.src[..4].copy_from_slice(&s.octets());
        f.dst[..4].copy_from_slice(&d.octets());
    }
    f
}

/// A request path with hops (role, ifname, "egress" | "ingress" | "drop:REASON") named as the
/// tracer names them (namespace display names are the lab's ip-netns names).
fn request(lab: &Lab, f: Flow, hops: &[(&str, &str, &str)]) -> PacketPath {
    let hops = hops
        .iter()
        .enumerate()
        .map(|(n, (role, ifname, what))| Observation {
            ts_ns: 1_000 * n as u64,
            netns: lab.netns(role).unwrap_or_else(|e| panic!("{e:#}")).into(),
            ifindex: 0,
            ifname: Some(ifname.to_string().into()),
            what: match *what {
                "egress" => What::Hook(Dir::Egress),
                "ingress" => What::Hook(Dir::Ingress),
                other => What::Drop {
                    reason: other.trim_start_matches("drop:").into(),
                    location: "nft_do_chain+0x637".into(),
                },
            },
            len: 84,
            mark: 0,
            outer: f,
            extras: Default::default(),
        })
        .collect();
    PacketPath {
        key: PacketKey::of(&f),
        hops,
    }
}

fn configs(lab: &Lab) -> HashMap<String, NetConfig> {
    lab.roles()
        .iter()
        .map(|(role, ns)| (ns.to_string(), read(lab, role)))
        .collect()
}

fn codes(f: &[Finding]) -> Vec<&str> {
    f.iter().map(|f| f.code).collect()
}

#[test]
fn netconf_sees_forward_drop_and_its_counter_and_leaves_the_root_namespace_alone() {
    if !vethtrace_tests::root(
        "netconf_sees_forward_drop_and_its_counter_and_leaves_the_root_namespace_alone",
    ) {
        return;
    }
    let root_rules = root_ruleset();
    let root_sys = root_sysctls();
    // Reading the root namespace is read-only too.
    let root_cfg = netconf::read(Path::new("/proc/self/ns/net")).expect("read own namespace");

    let mut lab = create(LabKind::Bridge);
    enable(&mut lab, Fault::ForwardDrop);
    let before = read(&lab, "node");
    let fwd = before.chain("filter", "FORWARD").expect("FORWARD chain");
    assert_eq!(fwd.policy.as_deref(), Some("DROP"), "{before:#?}");
    assert_eq!(before.bridge_nf_call_iptables, Some(true));
    assert_eq!(before.ip_forward, Some(false));
    assert!(
        before.rp_filter.iter().any(|(k, _)| k == "all"),
        "{before:#?}"
    );
    assert!(
        before.rp_filter.iter().any(|(k, _)| k == "br01"),
        "{before:#?}"
    );

    assert!(!ping_once(&lab, "ns01", addr(&lab, "ns02")));
    let after = read(&lab, "node");
    let deltas = netconf::counter_deltas(&before, &after);
    let first = deltas.first().expect("a counter grew");
    assert_eq!(
        (
            first.table.as_str(),
            first.chain.as_str(),
            first.rule.as_deref()
        ),
        ("filter", "FORWARD", None),
        "{deltas:#?}"
    );
    assert_eq!(first.verdict, "DROP");
    assert!(first.packets >= 1);
    assert!(first.drops());

    // ARP is bridged without netfilter: the pod learned its neighbour.
    let ns01 = read(&lab, "ns01");
    assert!(
        ns01.neighbours
            .iter()
            .any(|n| n.ip == addr(&lab, "ns02").to_string() && n.dev == "veth01"),
        "{:#?}",
        ns01.neighbours
    );
    // A pod without rules has no iptables tables to show, and that is not an error.
    assert!(ns01.chains.is_empty(), "{:#?}", ns01.chains);

    drop(lab);
    assert_eq!(
        root_ruleset(),
        root_rules,
        "root namespace iptables changed"
    );
    assert_eq!(root_sysctls(), root_sys, "root namespace sysctls changed");
    let again = netconf::read(Path::new("/proc/self/ns/net")).expect("read own namespace");
    assert_eq!(again.ip_forward, root_cfg.ip_forward);
    assert_eq!(
        again.bridge_nf_call_iptables,
        root_cfg.bridge_nf_call_iptables
    );
}

#[test]
fn diagnoses_forward_drop_in_the_bridge_lab() {
    if !vethtrace_tests::root("diagnoses_forward_drop_in_the_bridge_lab") {
        return;
    }
    let mut lab = create(LabKind::Bridge);
    enable(&mut lab, Fault::ForwardDrop);
    let topo = discover(&lab);
    let node = lab.netns("node").expect("node").to_string();
    let (src, dst) = (addr(&lab, "ns01"), addr(&lab, "ns02"));
    let before = configs(&lab);
    assert!(!ping_once(&lab, "ns01", dst));
    let after = configs(&lab);
    let req = request(
        &lab,
        flow(src, dst),
        &[
            ("ns01", "veth01", "egress"),
            ("node", "br-veth01", "ingress"),
            ("node", "br-veth02", "drop:NETFILTER_DROP"),
        ],
    );
    let ns01 = lab.netns("ns01").expect("ns01").to_string();
    let p = Probe {
        src,
        dst,
        from_netns: &ns01,
        size: 56,
        request: Some(&req),
        reply: None,
        replied: false,
        icmp_errors: Vec::new(),
    };
    let cx = Context {
        topo: &topo,
        before: &before,
        after: &after,
    };
    let f = diagnose::diagnose(&p, &cx);
    assert_eq!(f.first().map(|f| f.code), Some("forward-drop"), "{f:#?}");
    assert!(
        f[0].fix.contains(&format!(
            "`ip netns exec {node} iptables -I FORWARD -i br01 -o br01 -j ACCEPT`"
        )),
        "{}",
        f[0].fix
    );
    assert!(
        f[0].evidence.contains("filter FORWARD policy DROP"),
        "{}",
        f[0].evidence
    );
    let a = diagnose::netfilter_attribution(&p, &cx).expect("attributed");
    assert_eq!(
        (
            a.hook.as_str(),
            a.table.as_str(),
            a.chain.as_str(),
            a.rule.as_deref(),
            a.verdict.as_str()
        ),
        ("FORWARD", "filter", "FORWARD", None, "policy DROP")
    );
}

#[test]
fn diagnoses_missing_masquerade_and_stops_once_the_rule_is_there() {
    if !vethtrace_tests::root("diagnoses_missing_masquerade_and_stops_once_the_rule_is_there") {
        return;
    }
    let mut lab = create(LabKind::Bridge);
    enable(&mut lab, Fault::Uplink { masquerade: false });
    let topo = discover(&lab);
    let node = lab.netns("node").expect("node").to_string();
    let ns01 = lab.netns("ns01").expect("ns01").to_string();
    let (src, dst) = (addr(&lab, "ns01"), addr(&lab, "wan"));
    let hops = [
        ("ns01", "veth01", "egress"),
        ("node", "br-veth01", "ingress"),
        ("node", "br01", "ingress"),
        ("node", "eth1", "egress"),
        ("wan", "eth0", "ingress"),
    ];
    let req = request(&lab, flow(src, dst), &hops);
    let probe = |req| Probe {
        src,
        dst,
        from_netns: &ns01,
        size: 56,
        request: Some(req),
        reply: None,
        replied: false,
        icmp_errors: Vec::new(),
    };
    assert!(!ping_once(&lab, "ns01", dst));
    let cfgs = configs(&lab);
    let cx = Context {
        topo: &topo,
        before: &cfgs,
        after: &cfgs,
    };
    let f = diagnose::diagnose(&probe(&req), &cx);
    assert_eq!(
        f.first().map(|f| f.code),
        Some("missing-masquerade"),
        "{f:#?}"
    );
    assert_eq!(
        f[0].fix,
        format!(
            "`ip netns exec {node} iptables -t nat -A POSTROUTING -s 192.168.88.0/24 ! -o br01 -j MASQUERADE`"
        )
    );
    let wan = lab.netns("wan").expect("wan");
    assert!(
        f[0].evidence
            .contains(&format!("{wan} has no route back to {src}")),
        "{}",
        f[0].evidence
    );
    assert!(codes(&f).contains(&"no-route"), "{f:#?}");

    // With the rule, the uplink hop would carry the node's address; even a stale hop with the
    // pod's address is no longer blamed on a missing rule.
    enable(&mut lab, Fault::Uplink { masquerade: true });
    assert!(ping_once(&lab, "ns01", dst));
    let cfgs = configs(&lab);
    let cx = Context {
        topo: &topo,
        before: &cfgs,
        after: &cfgs,
    };
    let f = diagnose::diagnose(&probe(&req), &cx);
    assert!(!codes(&f).contains(&"missing-masquerade"), "{f:#?}");
}

#[test]
fn diagnoses_down_links_from_the_discovered_topology() {
    if !vethtrace_tests::root("diagnoses_down_links_from_the_discovered_topology") {
        return;
    }
    let mut lab = create(LabKind::Bridge);
    let ns01 = lab.netns("ns01").expect("ns01").to_string();
    let ns02 = lab.netns("ns02").expect("ns02").to_string();
    let (src, dst) = (addr(&lab, "ns01"), addr(&lab, "ns02"));
    enable(
        &mut lab,
        Fault::LinkDown {
            role: "ns02".into(),
            ifname: "veth02".into(),
        },
    );
    assert!(!ping_once(&lab, "ns01", dst));
    let topo = discover(&lab);
    let cfgs = configs(&lab);
    let cx = Context {
        topo: &topo,
        before: &cfgs,
        after: &cfgs,
    };
    let req = request(
        &lab,
        flow(src, dst),
        &[
            ("ns01", "veth01", "egress"),
            ("node", "br-veth01", "ingress"),
            ("node", "br-veth01", "drop:NO_TX_TARGET"),
        ],
    );
    let p = Probe {
        src,
        dst,
        from_netns: &ns01,
        size: 56,
        request: Some(&req),
        reply: None,
        replied: false,
        icmp_errors: Vec::new(),
    };
    let f = diagnose::diagnose(&p, &cx);
    assert_eq!(f.first().map(|f| f.code), Some("peer-down"), "{f:#?}");
    assert_eq!(f[0].fix, format!("`ip -n {ns02} link set veth02 up`"));

    // The sender's own link down: its routes are gone and nothing leaves.
    let mut lab = create(LabKind::Bridge);
    let ns01 = lab.netns("ns01").expect("ns01").to_string();
    let (src, dst) = (addr(&lab, "ns01"), addr(&lab, "ns02"));
    enable(
        &mut lab,
        Fault::LinkDown {
            role: "ns01".into(),
            ifname: "veth01".into(),
        },
    );
    assert!(!ping_once(&lab, "ns01", dst));
    let topo = discover(&lab);
    let cfgs = configs(&lab);
    let cx = Context {
        topo: &topo,
        before: &cfgs,
        after: &cfgs,
    };
    let p = Probe {
        src,
        dst,
        from_netns: &ns01,
        size: 56,
        request: None,
        reply: None,
        replied: false,
        icmp_errors: Vec::new(),
    };
    let f = diagnose::diagnose(&p, &cx);
    assert_eq!(f.first().map(|f| f.code), Some("link-down"), "{f:#?}");
    assert_eq!(f[0].fix, format!("`ip -n {ns01} link set veth01 up`"));
}

#[test]
fn expected_paths_follow_the_discovered_labs() {
    if !vethtrace_tests::root("expected_paths_follow_the_discovered_labs") {
        return;
    }
    use vethtrace::diagnose::path::{walk_from_sender, End};
    let lab = create(LabKind::Flannel);
    let topo = discover(&lab);
    let name = |role: &str| lab.netns(role).expect("role").to_string();
    let w = walk_from_sender(&topo, &name("busybox"), addr(&lab, "nginx"));
    let steps: Vec<String> = w.steps.iter().map(|e| e.step.to_string()).collect();
    assert_eq!(w.end, End::Local, "{steps:#?}");
    let (n1, n2) = (name("node1"), name("node2"));
    for want in [
        format!("{} eth0 egress", name("busybox")),
        format!("{n1} cni0 ingress"),
        format!("{n1} flannel.1 egress"),
        format!("{n1} eth0 egress"),
        format!("{n2} eth0 ingress"),
        format!("{n2} flannel.1 ingress"),
        format!("{n2} cni0 egress"),
        format!("{} eth0 ingress", name("nginx")),
    ] {
        assert!(steps.contains(&want), "{want} missing from {steps:#?}");
    }

    let lab = create(LabKind::Routed);
    let topo = discover(&lab);
    let name = |role: &str| lab.netns(role).expect("role").to_string();
    let w = walk_from_sender(&topo, &name("pod1"), addr(&lab, "pod2"));
    let steps: Vec<String> = w.steps.iter().map(|e| e.step.to_string()).collect();
    assert_eq!(w.end, End::Local, "{steps:#?}");
    assert_eq!(steps.len(), 5, "{steps:#?}");
    assert_eq!(steps[3], format!("{} eth0 ingress", name("pod2")));
}
