//! Unit tests of the lab internals (name parsing, output parsing, clean-up of half-built and
//! stale labs). The public behaviour (every lab pings, faults, Drop during panics, persistent
//! labs) is tested through the public API in `tests/tests/lab.rs`. Tests that build
//! namespaces need root; without it they are skipped with a message, or fail when `CI` or
//! `VETHTRACE_REQUIRE_PRIVILEGED` is set.

use std::str::FromStr;

use super::*;

/// Whether this process is root; when it is not, fails the test if CI asks for privileged
/// tests and otherwise prints why it skips.
fn privileged(test: &str) -> bool {
    let euid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        })
        .and_then(|u| u.parse::<u32>().ok());
    if euid == Some(0) {
        return true;
    }
    let required = ["CI", "VETHTRACE_REQUIRE_PRIVILEGED"]
        .into_iter()
        .find(|v| std::env::var_os(v).is_some());
    if let Some(var) = required {
        panic!("{test} needs root to create network namespaces (euid {euid:?}) and {var} is set");
    }
    eprintln!("skipping {test}: needs root to create network namespaces (euid {euid:?})");
    false
}

fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    shell::list_netns()
        .expect("ip netns list")
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

fn create(kind: LabKind) -> Lab {
    Lab::create(kind).unwrap_or_else(|e| panic!("creating lab {kind}: {e:#}"))
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
fn cni_veth_names_look_like_cni_and_are_stable() {
    let a = cni_veth_name("vt-1-0-", "busybox", 0);
    assert_eq!(a, cni_veth_name("vt-1-0-", "busybox", 0));
    assert_ne!(a, cni_veth_name("vt-1-0-", "nginx", 0));
    assert_ne!(a, cni_veth_name("vt-1-1-", "busybox", 0));
    assert_eq!(a.len(), 12);
    assert!(a.starts_with("veth"));
    assert!(
        a[4..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{a}"
    );
}

#[test]
fn throwaway_names_parse() {
    assert_eq!(throwaway_pid("vt-4242-0-ns01"), Some(4242));
    assert_eq!(throwaway_pid("vt-4242-17-node-x"), Some(4242));
    assert_eq!(throwaway_pid("vtlab-bridge-node"), None);
    assert_eq!(throwaway_pid("vt-abc-0-ns01"), None);
    assert_eq!(throwaway_pid("vt-42-0-"), None);
    assert_eq!(throwaway_pid("vt-42"), None);
}

#[test]
fn ping_summary_parses() {
    let out = "--- 10.0.0.2 ping statistics ---\n3 packets transmitted, 2 received, 33.3333% packet loss, time 405ms\n";
    assert_eq!(ping_summary(out), Some((3, 2)));
    let out = "3 packets transmitted, 0 received, +3 errors, 100% packet loss, time 0ms\n";
    assert_eq!(ping_summary(out), Some((3, 0)));
    assert_eq!(ping_summary("nothing"), None);
}

#[test]
fn operstate_parses() {
    let text = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT\n\
                5: veth01@if4: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT\n\
                6: eth0@if7: <NO-CARRIER,BROADCAST,MULTICAST,UP> mtu 1500 qdisc noqueue state LOWERLAYERDOWN\n";
    assert_eq!(operstate_up(text), vec!["veth01".to_owned()]);
}

// ---- real namespaces, root only ----

#[test]
fn failed_build_removes_what_it_made() {
    if !privileged("failed_build_removes_what_it_made") {
        return;
    }
    // Occupy the name of the lab's second namespace so building fails half-way.
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let prefix = format!("vt-{}-{n}-", std::process::id());
    let squatter = format!("{prefix}b");
    shell::run(&["ip", "netns", "add", &squatter]).expect("squatter");
    let err = Lab::build(LabKind::Pair, prefix.clone())
        .err()
        .map(|e| format!("{e:#}"));
    let left = namespaces_with_prefix(&prefix);
    let _ = shell::del_netns(&squatter);
    let err = err.unwrap_or_default();
    assert!(err.starts_with("could not build lab pair"), "{err}");
    assert!(
        err.contains(&format!("`ip netns add {squatter}` failed")),
        "{err}"
    );
    assert!(!err.contains('\n'), "{err}");
    assert_eq!(left, vec![squatter], "the half-built lab was not removed");
}

#[test]
fn stale_namespaces_of_dead_processes_are_swept() {
    if !privileged("stale_namespaces_of_dead_processes_are_swept") {
        return;
    }
    // A pid that does not exist: above the kernel's pid_max.
    let pid_max: u32 = root_file("/proc/sys/kernel/pid_max")
        .trim()
        .parse()
        .unwrap_or(4_194_304);
    let stale = format!("vt-{}-0-node", pid_max + 1);
    // Tests running in parallel sweep too and may remove the file `ip netns add` is still
    // binding; try again then.
    let added = (0..5).any(|_| shell::run(&["ip", "netns", "add", &stale]).is_ok());
    assert!(added, "could not add the stale namespace {stale}");
    let lab = create(LabKind::Pair);
    let left = namespaces_with_prefix(&stale);
    let _ = shell::del_netns(&stale);
    drop(lab);
    assert_eq!(left, Vec::<String>::new(), "stale namespace was not swept");
}
