//! The binary as a black box: the demo's real output, exit codes, and one-line errors.

use std::process::{Command, Output};

fn vethtrace(args: &[&str]) -> Output {
    Command::new(vethtrace_tests::binary())
        .args(args)
        .output()
        .expect("vethtrace runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn lab_namespaces_of(pid: u32) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns");
    text(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("vt-{pid}-")))
        .map(str::to_string)
        .collect()
}

#[test]
fn demo_shows_the_path_and_the_drop_then_cleans_up() {
    if !vethtrace_tests::privileged("demo_shows_the_path_and_the_drop_then_cleans_up") {
        return;
    }
    let child = Command::new(vethtrace_tests::binary())
        .arg("demo")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("demo starts");
    let pid = child.id();
    let out = child.wait_with_output().expect("demo ends");
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
    let pos = |prefix: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{stdout}"))
    };
    // Part 1: the probe's request and reply paths, by role name, and the reply.
    let p1 = pos("1. vethtrace ping 192.168.88.12 --from ns01");
    assert!(
        lines[p1 + 2].starts_with("seq 1  replied in "),
        "{}",
        lines[p1 + 2]
    );
    assert!(lines[p1 + 3].starts_with(
        "request  ns01 veth01 → node br-veth01 ⇒ bridge br01 ⇒ node br-veth02 → ns02 veth02"
    ));
    assert!(lines[p1 + 4].starts_with(
        "reply    ns02 veth02 → node br-veth02 ⇒ bridge br01 ⇒ node br-veth01 → ns01 veth01"
    ));
    // Part 2: stopped in the node after the bridge port, with the kernel's reason and the fix.
    let p2 = pos("2. the node now does what Docker does");
    let seq = p2
        + lines[p2..]
            .iter()
            .position(|l| l.starts_with("seq 1"))
            .expect("seq line");
    assert_eq!(
        lines[seq],
        "seq 1  dropped: NETFILTER_DROP in node after node br-veth01 ingress"
    );
    assert!(lines[seq + 1]
        .starts_with("request  ns01 veth01 → node br-veth01 ✗ NETFILTER_DROP in node"));
    assert!(
        lines[seq + 2].starts_with("→ br_netfilter in node"),
        "{}",
        lines[seq + 2]
    );
    assert!(stdout.contains("iptables -I FORWARD -i br01 -o br01 -j ACCEPT"));
    assert!(stdout.contains("1 transmitted, 0 received, 100% loss"));
    assert!(
        lab_namespaces_of(pid).is_empty(),
        "the demo left namespaces behind"
    );
}

#[test]
fn unknown_lab_lists_the_labs() {
    if !vethtrace_tests::privileged("unknown_lab_lists_the_labs") {
        return;
    }
    let out = vethtrace(&["lab", "up", "nosuch"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    for lab in ["bridge", "flannel", "routed", "pair"] {
        assert!(err.contains(lab), "{err}");
    }
}

#[test]
fn without_privileges_one_line_and_exit_2() {
    if !vethtrace_tests::privileged("without_privileges_one_line_and_exit_2") {
        return;
    }
    let out = vethtrace_tests::as_nobody(&["demo"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("root"), "{err}");
    assert!(text(&out.stdout).is_empty());
}

#[test]
fn usage_errors_exit_2() {
    let out = vethtrace(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let out = vethtrace(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("demo"));
}
