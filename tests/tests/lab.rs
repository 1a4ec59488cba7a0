//! Integration tests of `vethtrace::lab` with real network namespaces: every lab comes up and
//! its ping works, the faults break (and mend) what they should without touching the root
//! namespace, and no namespace outlives its `Lab`, not even across a panic.
//!
//! The namespace tests need root; without it they print why and pass, or fail when `CI` or
//! `VETHTRACE_REQUIRE_PRIVILEGED` is set. They do not need the eBPF object. Every lab has a
//! unique prefix, so the tests run in parallel without colliding, and pings are bounded
//! (`-c 3 -W 1`).

use std::net::{IpAddr, Ipv4Addr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::Command;
use std::str::FromStr;

use vethtrace::lab::{down_all, list_persistent, Fault, Lab, LabKind};

fn run(argv: &[&str]) -> String {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .env("LC_ALL", "C")
        .output()
        .unwrap_or_else(|e| panic!("running {argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn del_netns(name: &str) {
    let _ = Command::new("ip").args(["netns", "del", name]).output();
}

fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    run(&["ip", "netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// Deletes every namespace whose name starts with `prefix`, never panicking (used from Drop).
fn del_netns_with_prefix(prefix: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    for name in text.lines().filter_map(|l| l.split_whitespace().next()) {
        if name.starts_with(prefix) {
            del_netns(name);
        }
    }
}

fn create(kind: LabKind) -> Lab {
    Lab::create(kind).unwrap_or_else(|e| panic!("creating lab {kind}: {e:#}"))
}

fn ping(lab: &Lab, from: &str, to: &str) -> bool {
    let dst = lab.addr(to).unwrap_or_else(|e| panic!("{e:#}"));
    lab.ping(from, dst, 3)
        .unwrap_or_else(|e| panic!("ping {from} -> {to}: {e:#}"))
}

fn root_iptables_forward() -> String {
    run(&["iptables", "-S", "FORWARD"])
}

fn root_file(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("unreadable: {e}"))
}

// ---- no privileges needed ----

#[test]
fn unknown_lab_name_lists_the_labs() {
    let err = LabKind::from_str("nope").err().map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("no lab named nope; labs: bridge, flannel, routed, pair")
    );
}

#[test]
fn lab_names_round_trip() {
    for kind in LabKind::ALL {
        assert_eq!(LabKind::from_str(&kind.to_string()).ok(), Some(kind));
        assert!(!kind.about().is_empty());
    }
}

#[test]
fn fault_names_round_trip() {
    let faults = [
        Fault::ForwardDrop,
        Fault::Uplink { masquerade: false },
        Fault::Uplink { masquerade: true },
        Fault::LinkDown {
            role: "ns01".into(),
            ifname: "veth01".into(),
        },
    ];
    for f in faults {
        assert_eq!(Fault::from_str(&f.to_string()).ok(), Some(f));
    }
    let err = Fault::from_str("link-down:x")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.starts_with("no fault named link-down:x; faults: forward-drop"),
        "{err}"
    );
}

// ---- real namespaces, root only ----

#[test]
fn bridge_lab_pings() {
    if !vethtrace_tests::root("bridge_lab_pings") {
        return;
    }
    let lab = create(LabKind::Bridge);
    let roles: Vec<&str> = lab.roles().into_iter().map(|(r, _)| r).collect();
    assert_eq!(roles, ["node", "ns01", "ns02"]);
    assert_eq!(
        lab.netns("ns01").ok(),
        Some(format!("{}ns01", lab.prefix()).as_str())
    );
    assert_eq!(
        lab.addr("node").ok(),
        Some(IpAddr::V4(Ipv4Addr::new(192, 168, 88, 1)))
    );
    assert!(
        ping(&lab, "ns01", "ns02"),
        "ns01 -> ns02\n{}",
        lab.describe()
    );
    assert!(
        ping(&lab, "ns02", "node"),
        "ns02 -> node\n{}",
        lab.describe()
    );
    let text = lab.describe();
    for want in [
        "br01",
        "br-veth01",
        "veth02",
        "192.168.88.12/24",
        "ip netns exec",
        lab.prefix(),
    ] {
        assert!(text.contains(want), "describe lacks {want}:\n{text}");
    }
    let links = lab
        .exec("node", &["ip", "-o", "link", "show", "master", "br01"])
        .expect("ip link");
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        links.contains("br-veth01") && links.contains("br-veth02"),
        "{links}"
    );
}

#[test]
fn flannel_lab_pings() {
    if !vethtrace_tests::root("flannel_lab_pings") {
        return;
    }
    let lab = create(LabKind::Flannel);
    assert_eq!(
        lab.addr("nginx").ok(),
        Some(IpAddr::V4(Ipv4Addr::new(10, 222, 2, 3)))
    );
    assert!(
        ping(&lab, "busybox", "nginx"),
        "busybox -> nginx\n{}",
        lab.describe()
    );
    assert!(
        ping(&lab, "busybox", "busybox2"),
        "busybox -> busybox2\n{}",
        lab.describe()
    );
    assert!(
        ping(&lab, "redis", "busybox2"),
        "redis -> busybox2\n{}",
        lab.describe()
    );
    let link = lab
        .exec("node1", &["ip", "-d", "-o", "link", "show", "flannel.1"])
        .expect("ip link");
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(
        link.contains("mtu 1450") && link.contains("dstport 8472"),
        "{link}"
    );
    let host = lab
        .exec("node2", &["ip", "-o", "link", "show", "master", "cni0"])
        .expect("ip link");
    let host = String::from_utf8_lossy(&host.stdout);
    let vethnames: Vec<&str> = host
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|n| n.trim_end_matches(':').split('@').next().unwrap_or(n))
        .collect();
    assert_eq!(vethnames.len(), 2, "{host}");
    assert!(
        vethnames
            .iter()
            .all(|n| n.len() == 12 && n.starts_with("veth")),
        "{host}"
    );
}

#[test]
fn routed_lab_pings() {
    if !vethtrace_tests::root("routed_lab_pings") {
        return;
    }
    let lab = create(LabKind::Routed);
    assert!(
        ping(&lab, "pod1", "pod2"),
        "pod1 -> pod2\n{}",
        lab.describe()
    );
    let out = lab
        .exec("node", &["ip", "-o", "link", "show", "type", "bridge"])
        .expect("ip link");
    assert!(out.stdout.is_empty(), "routed lab has a bridge");
}

#[test]
fn pair_lab_pings_and_link_down_breaks_it() {
    if !vethtrace_tests::root("pair_lab_pings_and_link_down_breaks_it") {
        return;
    }
    let mut lab = create(LabKind::Pair);
    assert!(ping(&lab, "a", "b"), "a -> b\n{}", lab.describe());
    lab.enable(Fault::LinkDown {
        role: "b".into(),
        ifname: "eth0".into(),
    })
    .expect("link down");
    assert!(!ping(&lab, "a", "b"), "a -> b still works with b/eth0 down");
    let err = lab
        .enable(Fault::LinkDown {
            role: "c".into(),
            ifname: "eth0".into(),
        })
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(err.contains("no role c; roles: a, b"), "{err}");
    let err = lab
        .enable(Fault::ForwardDrop)
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(err.contains("only applies to the bridge lab"), "{err}");
}

#[test]
fn forward_drop_blocks_the_bridge_and_leaves_the_root_namespace_alone() {
    if !vethtrace_tests::root("forward_drop_blocks_the_bridge_and_leaves_the_root_namespace_alone")
    {
        return;
    }
    let root_before = (
        root_iptables_forward(),
        root_file("/proc/sys/net/bridge/bridge-nf-call-iptables"),
        root_file("/proc/sys/net/ipv4/ip_forward"),
    );
    let mut lab = create(LabKind::Bridge);
    assert!(ping(&lab, "ns01", "ns02"), "ns01 -> ns02 before the fault");
    lab.enable(Fault::ForwardDrop).expect("forward drop");
    assert!(
        !ping(&lab, "ns01", "ns02"),
        "ns01 -> ns02 works despite FORWARD DROP"
    );
    let inside = lab
        .exec("node", &["iptables", "-S", "FORWARD"])
        .expect("iptables in node");
    assert!(String::from_utf8_lossy(&inside.stdout).contains("-P FORWARD DROP"));
    let root_after = (
        root_iptables_forward(),
        root_file("/proc/sys/net/bridge/bridge-nf-call-iptables"),
        root_file("/proc/sys/net/ipv4/ip_forward"),
    );
    assert_eq!(root_before, root_after, "the root namespace changed");
}

#[test]
fn uplink_without_masquerade_has_no_way_back() {
    if !vethtrace_tests::root("uplink_without_masquerade_has_no_way_back") {
        return;
    }
    let mut lab = create(LabKind::Bridge);
    assert!(lab.addr("wan").is_err(), "wan exists before the fault");
    lab.enable(Fault::Uplink { masquerade: false })
        .expect("uplink");
    assert_eq!(
        lab.addr("wan").ok(),
        Some(IpAddr::V4(Ipv4Addr::new(10, 99, 0, 2)))
    );
    assert!(
        ping(&lab, "node", "wan"),
        "node -> wan over the uplink itself"
    );
    assert!(
        !ping(&lab, "ns01", "wan"),
        "ns01 -> wan works without masquerade"
    );
    // Turning masquerade on afterwards adds the rule to the existing uplink.
    lab.enable(Fault::Uplink { masquerade: true })
        .expect("masquerade");
    assert!(
        ping(&lab, "ns01", "wan"),
        "ns01 -> wan fails after adding masquerade"
    );
    assert_eq!(lab.roles().len(), 4);
}

#[test]
fn uplink_with_masquerade_works() {
    if !vethtrace_tests::root("uplink_with_masquerade_works") {
        return;
    }
    let mut lab = create(LabKind::Bridge);
    lab.enable(Fault::Uplink { masquerade: true })
        .expect("uplink");
    assert!(
        ping(&lab, "ns01", "wan"),
        "ns01 -> wan with masquerade\n{}",
        lab.describe()
    );
    assert!(lab.describe().contains("MASQUERADE"));
}

#[test]
fn dropped_lab_leaves_no_namespace() {
    if !vethtrace_tests::root("dropped_lab_leaves_no_namespace") {
        return;
    }
    for kind in LabKind::ALL {
        let lab = create(kind);
        let prefix = lab.prefix().to_owned();
        assert_eq!(
            namespaces_with_prefix(&prefix).len(),
            lab.roles().len(),
            "{kind}"
        );
        drop(lab);
        assert_eq!(
            namespaces_with_prefix(&prefix),
            Vec::<String>::new(),
            "{kind}"
        );
    }
}

#[test]
fn panicking_test_leaves_no_namespace() {
    if !vethtrace_tests::root("panicking_test_leaves_no_namespace") {
        return;
    }
    let mut prefix = String::new();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let lab = create(LabKind::Bridge);
        prefix = lab.prefix().to_owned();
        assert!(!namespaces_with_prefix(&prefix).is_empty());
        panic!("deliberate panic with lab {prefix} alive");
    }));
    assert!(result.is_err());
    assert!(!prefix.is_empty());
    assert_eq!(namespaces_with_prefix(&prefix), Vec::<String>::new());
}

/// Removes `vtlab-pair-*` namespaces even if the persistent test fails half-way.
struct PersistentPairCleanup;

impl Drop for PersistentPairCleanup {
    fn drop(&mut self) {
        del_netns_with_prefix("vtlab-pair-");
    }
}

#[test]
fn persistent_lab_is_kept_refused_twice_and_taken_down() {
    if !vethtrace_tests::root("persistent_lab_is_kept_refused_twice_and_taken_down") {
        return;
    }
    if !list_persistent().is_empty() {
        // Someone's `vethtrace lab up` is in place; down_all would remove it.
        eprintln!("skipping persistent lab test: vtlab-* namespaces already exist");
        return;
    }
    let _cleanup = PersistentPairCleanup;
    let lab = Lab::create_persistent(LabKind::Pair).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(lab.prefix(), "vtlab-pair-");
    assert!(ping(&lab, "a", "b"));
    lab.keep();
    assert_eq!(list_persistent(), ["vtlab-pair-a", "vtlab-pair-b"]);
    let err = Lab::create_persistent(LabKind::Pair)
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(
        err.starts_with("lab pair is already up (namespaces vtlab-pair-a, vtlab-pair-b)"),
        "{err}"
    );
    assert_eq!(
        list_persistent(),
        ["vtlab-pair-a", "vtlab-pair-b"],
        "refusal removed the lab"
    );
    assert_eq!(
        down_all().expect("down_all"),
        ["vtlab-pair-a", "vtlab-pair-b"]
    );
    assert!(list_persistent().is_empty());
}
