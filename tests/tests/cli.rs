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
    // Part 1: the request's four hops in order, then the reply's.
    let req = pos("ICMP echo request 192.168.88.11 > 192.168.88.12");
    assert!(lines[req + 1].starts_with("ns01 veth01 egress"));
    assert!(lines[req + 2].starts_with("node br-veth01 ingress"));
    assert!(lines[req + 3].starts_with("node br-veth02 egress"));
    assert!(lines[req + 4].starts_with("ns02 veth02 ingress"));
    let rep = pos("ICMP echo reply 192.168.88.12 > 192.168.88.11");
    assert!(lines[rep + 1].starts_with("ns02 veth02 egress"));
    assert!(lines[rep + 4].starts_with("ns01 veth01 ingress"));
    assert!(stdout.contains("✓ replied"));
    // Part 2: stopped in the node after the bridge port, with the kernel's reason.
    let part2 = pos("2. ");
    let req2 = part2
        + lines[part2..]
            .iter()
            .position(|l| l.starts_with("ICMP echo request"))
            .expect("request");
    assert!(lines[req2 + 1].starts_with("ns01 veth01 egress"));
    assert!(lines[req2 + 2].starts_with("node br-veth01 ingress"));
    assert!(
        lines[req2 + 3].starts_with("✗ dropped in node"),
        "{}",
        lines[req2 + 3]
    );
    assert!(lines[req2 + 3].contains("NETFILTER_DROP"));
    assert!(lines[req2 + 4].starts_with("→ netfilter"));
    assert!(stdout.contains("0 lost"));
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
    // setpriv (util-linux) drops to nobody with no capabilities.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(vethtrace_tests::binary())
        .arg("demo")
        .output()
        .expect("setpriv runs");
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
