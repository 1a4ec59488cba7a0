//! Living with other tc users: a foreign TCX program on the same hook keeps its effect with
//! vethtrace attached (and vethtrace explains what it did), and the clsact fallback detaches on
//! exit, sweeps its own stale filters after a kill -9, and touches nothing else.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use vethtrace::{
    lab::{Lab, LabKind},
    netns,
};
use vethtrace_tests::rawbpf;

fn vethtrace(args: &[&str]) -> Command {
    let mut c = Command::new(vethtrace_tests::binary());
    c.args(args);
    c
}

/// `vt_foreign` on b's eth0 ingress, dropping ICMP: attached while the returned fds live.
fn foreign_program(lab: &Lab) -> Vec<std::os::fd::OwnedFd> {
    netns::run_in(&netns::named(lab.netns("b").expect("b")), || {
        let ifindex = nix::net::if_::if_nametoindex("eth0")?;
        let prog = rawbpf::drop_ipv4_icmp("vt_foreign")?;
        let link = rawbpf::link(&prog, ifindex, rawbpf::ATTACH_TCX_INGRESS)?;
        Ok(vec![link, prog])
    })
    .expect("foreign program attached")
}

#[test]
fn a_foreign_tc_program_keeps_its_effect_and_vethtrace_names_the_drop() {
    if !vethtrace_tests::privileged(
        "a_foreign_tc_program_keeps_its_effect_and_vethtrace_names_the_drop",
    ) {
        return;
    }
    let lab = Lab::create(LabKind::Pair).expect("lab");
    let b_addr = lab.addr("b").expect("b");
    let _foreign = foreign_program(&lab);
    // Without vethtrace: ICMP is dropped by the foreign program.
    assert!(!lab.ping("a", b_addr, 1).expect("ping"));
    // With vethtrace: the same result, and the drop is attributed to the tc hook in b.
    let out = vethtrace(&["ping", &b_addr.to_string(), "--json", "-c", "1", "-W", "1"])
        .args(["--from", lab.netns("a").expect("a")])
        .args([
            "--netns",
            lab.netns("a").expect("a"),
            "--netns",
            lab.netns("b").expect("b"),
        ])
        .output()
        .expect("ping runs");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let result = lines
        .iter()
        .find(|l| l["type"] == "result")
        .expect("result");
    assert_eq!(result["status"], "dropped", "{result}");
    assert_eq!(result["drop"]["reason"], "TC_INGRESS", "{result}");
    assert_eq!(result["drop"]["netns"], lab.netns("b").expect("b"));
    // The foreign program is still attached, alone, after vethtrace left.
    let left = vethtrace_tests::programs_in(&lab);
    assert_eq!(left, ["eth0 tcx ingress vt_foreign"], "{left:?}");
    assert!(
        !lab.ping("a", b_addr, 1).expect("ping"),
        "its effect outlives vethtrace too"
    );
}

fn wait_for(path: &std::path::Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(start.elapsed() < Duration::from_secs(30), "never ready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn clsact_mode_traces_detaches_and_sweeps_its_own_stale_filters() {
    if !vethtrace_tests::privileged("clsact_mode_traces_detaches_and_sweeps_its_own_stale_filters")
    {
        return;
    }
    let lab = Lab::create(LabKind::Pair).expect("lab");
    let (a, b) = (lab.netns("a").expect("a"), lab.netns("b").expect("b"));
    let ready = std::env::temp_dir().join(format!("vethtrace-clsact-{}", lab.prefix()));
    let trace = |extra: &[&str]| {
        let _ = std::fs::remove_file(&ready);
        vethtrace(&[
            "trace",
            "--attach-mode",
            "clsact",
            "--netns",
            a,
            "--netns",
            b,
            "--json",
        ])
        .arg("--ready-file")
        .arg(&ready)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("trace starts")
    };
    // 1. Traces like TCX does, and leaves nothing behind on a clean exit.
    let child = trace(&["-c", "2", "--duration", "20", "icmp"]);
    wait_for(&ready);
    assert!(lab.ping("a", lab.addr("b").expect("b"), 1).expect("ping"));
    let out = child.wait_with_output().expect("trace ends");
    let text = String::from_utf8_lossy(&out.stdout);
    let summary: Value = serde_json::from_str(text.lines().last().expect("summary")).expect("json");
    assert_eq!(
        (summary["packets"].as_u64(), summary["events"].as_u64()),
        (Some(2), Some(4))
    );
    assert!(
        summary["attach"]
            .as_str()
            .is_some_and(|s| s.contains("clsact")),
        "{summary}"
    );
    assert!(
        vethtrace_tests::programs_in(&lab).is_empty(),
        "{:?}",
        vethtrace_tests::programs_in(&lab)
    );
    // 2. kill -9 leaves netlink filters (they are not fds) ...
    let mut child = trace(&["icmp"]);
    wait_for(&ready);
    child.kill().expect("kill -9");
    let _ = child.wait();
    let stale = vethtrace_tests::programs_in(&lab);
    assert_eq!(stale.len(), 4, "{stale:?}");
    assert!(
        stale.iter().all(|p| p.contains("vethtrace_tc")),
        "{stale:?}"
    );
    // ... which the next run sweeps before attaching, and removes on its own exit.
    let child = trace(&["--duration", "1", "icmp"]);
    let out = child.wait_with_output().expect("trace ends");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        vethtrace_tests::programs_in(&lab).is_empty(),
        "{:?}",
        vethtrace_tests::programs_in(&lab)
    );
    let _ = std::fs::remove_file(&ready);
}
