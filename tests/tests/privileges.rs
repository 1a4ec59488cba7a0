//! The privileges preflight as a black box: `vethtrace trace`, `ping` and `topo` run with
//! capabilities dropped (setpriv, from util-linux: the bounding and inheritable sets, so root's
//! exec gets neither) must exit 2 at once, with one line on stderr naming exactly the missing
//! capabilities, and nothing attached in the lab they were pointed at. With exactly the
//! capabilities the preflight asks for, each command works: the list is complete.
//!
//! CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON (the kernel's bpf_capable() and
//! perfmon_capable()), so those two are only missing, and only named, when CAP_SYS_ADMIN is
//! dropped with them.

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use vethtrace::lab::{Lab, LabKind};

/// The tests of this file run one at a time: the two that start a real trace load and verify
/// eBPF programs for a second or more of CPU, which would otherwise be timed as the preflight's
/// on a 2-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

/// Holds [`SERIAL`] (a test that failed while holding it does not stop the others).
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The preflight's promise: an answer within this long of starting the process.
const WITHIN: Duration = Duration::from_millis(100);
/// Tries per case. A preflight that is slow is slow every time; a loaded machine can delay any
/// one process start (the debug binary is ~90 MB), so the best of a few is what is held to
/// [`WITHIN`].
const TRIES: usize = 3;

/// `setpriv` with `caps` (setpriv's names: `net_admin`, …) removed from the bounding and
/// inheritable sets, then the vethtrace binary with `args`.
fn without(caps: &[&str], args: &[&str]) -> Command {
    let list = caps
        .iter()
        .map(|c| format!("-{c}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--inh-caps={list}"))
        .arg(format!("--bounding-set={list}"))
        .arg("--")
        .arg(vethtrace_tests::binary())
        .args(args)
        .stdin(Stdio::null());
    cmd
}

/// `setpriv` keeping only `caps` (and clearing the inheritable set), then vethtrace `args`.
fn only(caps: &[&str], args: &[&str]) -> Command {
    let keep: String = caps.iter().map(|c| format!(",+{c}")).collect();
    let mut cmd = Command::new("setpriv");
    cmd.arg("--inh-caps=-all")
        .arg(format!("--bounding-set=-all{keep}"))
        .arg("--")
        .arg(vethtrace_tests::binary())
        .args(args)
        .stdin(Stdio::null());
    cmd
}

/// Runs `cmd`; its output and the wall time from spawn to exit.
fn timed(mut cmd: Command) -> (Output, Duration) {
    let start = Instant::now();
    let out = cmd.output().expect("setpriv runs");
    (out, start.elapsed())
}

/// The `CAP_…` names in `text`, sorted.
fn named(text: &str) -> Vec<String> {
    let mut caps: Vec<String> = text
        .split(|c: char| !(c.is_ascii_uppercase() || c == '_'))
        .filter(|w| w.starts_with("CAP_") && w.len() > 4)
        .map(str::to_string)
        .collect();
    caps.sort();
    caps.dedup();
    caps
}

struct Case {
    /// The vethtrace subcommand, for messages.
    what: &'static str,
    args: Vec<String>,
    /// Capabilities dropped (setpriv's names).
    drop: &'static [&'static str],
    /// Capabilities the one stderr line must name, no more and no fewer.
    named: &'static [&'static str],
}

#[test]
fn each_missing_capability_is_named_at_once_and_nothing_is_attached() {
    if !vethtrace_tests::privileged(
        "each_missing_capability_is_named_at_once_and_nothing_is_attached",
    ) {
        return;
    }
    let _serial = serial();
    let lab = Lab::create(LabKind::Pair).expect("lab");
    let (a, b) = (lab.netns("a").expect("a"), lab.netns("b").expect("b"));
    let b_addr = lab.addr("b").expect("b").to_string();
    let scope = ["--netns", a, "--netns", b];
    let trace: Vec<String> = ["trace", "--duration", "5"]
        .iter()
        .chain(&scope)
        .chain(&["icmp"])
        .map(|s| s.to_string())
        .collect();
    let ping: Vec<String> = ["ping", &b_addr, "--from", a, "-c", "1", "-W", "1"]
        .iter()
        .chain(&scope)
        .map(|s| s.to_string())
        .collect();
    let topo: Vec<String> = ["topo", "--programs"]
        .iter()
        .chain(&scope)
        .map(|s| s.to_string())
        .collect();
    let mut cases = Vec::new();
    for (what, args) in [("trace", &trace), ("ping", &ping)] {
        for (drop, named) in [
            (&["net_admin"][..], &["CAP_NET_ADMIN"][..]),
            (&["sys_admin"], &["CAP_SYS_ADMIN"]),
            (&["sys_admin", "bpf"], &["CAP_BPF", "CAP_SYS_ADMIN"]),
            (&["sys_admin", "perfmon"], &["CAP_PERFMON", "CAP_SYS_ADMIN"]),
        ] {
            cases.push(Case {
                what,
                args: args.clone(),
                drop,
                named,
            });
        }
    }
    // Sending probes takes a raw ICMP socket.
    cases.push(Case {
        what: "ping",
        args: ping.clone(),
        drop: &["net_raw"],
        named: &["CAP_NET_RAW"],
    });
    for (drop, named) in [
        (&["sys_admin"][..], &["CAP_SYS_ADMIN"][..]),
        (&["net_admin"], &["CAP_NET_ADMIN"]),
    ] {
        cases.push(Case {
            what: "topo",
            args: topo.clone(),
            drop,
            named,
        });
    }

    let mut report = Vec::new();
    for case in &cases {
        let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        let mut best = Duration::MAX;
        for _ in 0..TRIES {
            let (out, took) = timed(without(case.drop, &args));
            let stderr = String::from_utf8_lossy(&out.stderr);
            let label = format!("{} without {:?}", case.what, case.drop);
            assert_eq!(out.status.code(), Some(2), "{label}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{label}: one line: {stderr:?}");
            assert!(stderr.ends_with('\n') && stderr.starts_with("vethtrace: "));
            assert_eq!(named(&stderr), case.named, "{label}: {stderr}");
            // From the preflight, which says how to fix it, not from a failed call later on.
            assert!(
                stderr.contains("run as root (sudo vethtrace …) or grant the capabilities"),
                "{label}: {stderr}"
            );
            assert!(out.stdout.is_empty(), "{label}: nothing on stdout");
            assert_eq!(
                vethtrace_tests::programs_in(&lab),
                Vec::<String>::new(),
                "{label}: nothing attached"
            );
            best = best.min(took);
            if best < WITHIN {
                break;
            }
        }
        report.push(format!(
            "{} -{}: {best:.1?}",
            case.what,
            case.drop.join(",-")
        ));
        assert!(
            best < WITHIN,
            "{} without {:?}: answered after {best:?} at best",
            case.what,
            case.drop
        );
    }
    eprintln!(
        "preflight answers (best of up to {TRIES}): {}",
        report.join("; ")
    );

    // Not root and no capabilities at all: everything is named, still on one line.
    let out = vethtrace_tests::as_nobody(&trace.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert_eq!(
        named(&stderr),
        ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON", "CAP_SYS_ADMIN"]
    );

    // The topology needs only what its preflight names.
    let (out, _) = timed(only(
        &["sys_admin", "net_admin"],
        &topo.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(b));
}

/// A trace killed on drop, should the test fail while it runs.
struct Running(Option<std::process::Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits for `ready` to appear while `child` runs.
fn wait_ready(child: &mut std::process::Child, ready: &Path) {
    let start = Instant::now();
    while !ready.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("trace exited before attaching ({status}): {err}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "trace never got ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn trace_works_with_exactly_the_capabilities_the_preflight_names() {
    if !vethtrace_tests::privileged("trace_works_with_exactly_the_capabilities_the_preflight_names")
    {
        return;
    }
    let _serial = serial();
    let lab = Lab::create(LabKind::Pair).expect("lab");
    let (a, b) = (lab.netns("a").expect("a"), lab.netns("b").expect("b"));
    let ready = std::env::temp_dir().join(format!("vethtrace-caps-{}", lab.prefix()));
    let _ = std::fs::remove_file(&ready);
    // CAP_SYS_ADMIN and CAP_NET_ADMIN only: the preflight's list with CAP_SYS_ADMIN standing in
    // for CAP_BPF and CAP_PERFMON.
    let ready_arg = ready.display().to_string();
    let child = only(
        &["sys_admin", "net_admin"],
        &[
            "trace",
            "--json",
            "-c",
            "2",
            "--duration",
            "20",
            "--netns",
            a,
            "--netns",
            b,
            "--ready-file",
            &ready_arg,
            "icmp",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("trace starts");
    let mut child = Running(Some(child));
    wait_ready(child.0.as_mut().expect("child"), &ready);
    // Attached, so the "nothing attached" of the other test is a real check on this lab.
    assert_eq!(vethtrace_tests::programs_in(&lab).len(), 4);
    assert!(lab.ping("a", lab.addr("b").expect("b"), 1).expect("ping"));
    let out = child
        .0
        .take()
        .expect("child")
        .wait_with_output()
        .expect("trace ends");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value =
        serde_json::from_str(text.lines().last().expect("summary")).expect("json");
    assert_eq!(
        (summary["packets"].as_u64(), summary["events"].as_u64()),
        (Some(2), Some(4)),
        "{summary}"
    );
    assert!(vethtrace_tests::programs_in(&lab).is_empty());
    let _ = std::fs::remove_file(&ready);
}

#[test]
fn ping_works_with_exactly_the_capabilities_the_preflight_names() {
    if !vethtrace_tests::privileged("ping_works_with_exactly_the_capabilities_the_preflight_names")
    {
        return;
    }
    let _serial = serial();
    let lab = Lab::create(LabKind::Pair).expect("lab");
    let (a, b) = (lab.netns("a").expect("a"), lab.netns("b").expect("b"));
    let b_addr = lab.addr("b").expect("b").to_string();
    let (out, _) = timed(only(
        &["sys_admin", "net_admin", "net_raw"],
        &[
            "ping", &b_addr, "--from", a, "--netns", a, "--netns", b, "-c", "1", "-W", "2",
            "--json",
        ],
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.contains(r#""status":"replied""#)),
        "{text}"
    );
    assert!(vethtrace_tests::programs_in(&lab).is_empty());
}
