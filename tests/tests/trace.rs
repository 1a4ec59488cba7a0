//! `vethtrace trace` as a black box on the labs: NDJSON hop sequences, drops, pcapng, bad input,
//! and kill -9 leaving nothing attached.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use vethtrace::lab::{Fault, Lab, LabKind};

struct Trace {
    child: Option<Child>,
    ready: PathBuf,
}

impl Trace {
    /// Starts `vethtrace trace` on every namespace of `lab` and waits until it is attached.
    fn start(lab: &Lab, args: &[&str]) -> Trace {
        let ready = std::env::temp_dir().join(format!(
            "vethtrace-ready-{}-{}",
            std::process::id(),
            lab.prefix()
        ));
        let _ = std::fs::remove_file(&ready);
        let mut cmd = Command::new(vethtrace_tests::binary());
        cmd.arg("trace");
        for (_, ns) in lab.roles() {
            cmd.args(["--netns", ns]);
        }
        cmd.arg("--ready-file").arg(&ready).args(args);
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("trace starts");
        let mut t = Trace {
            child: Some(child),
            ready,
        };
        t.wait_ready();
        t
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        while !self.ready.exists() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let out = self
                    .child
                    .take()
                    .expect("child")
                    .wait_with_output()
                    .expect("output");
                panic!(
                    "trace exited before attaching ({status}): {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "trace never got ready"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("child").id()
    }

    /// Waits for the trace to end by itself (count or duration).
    fn finish(mut self) -> Output {
        self.child
            .take()
            .expect("child")
            .wait_with_output()
            .expect("trace ends")
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.ready);
    }
}

fn ndjson(out: &Output) -> Vec<Value> {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// `netns ifname dir` (or `drop netns reason`) of every line of packet `id` (netfilter
/// verdicts, where the kernel has the layer, are asserted in netfilter.rs).
fn hops(lines: &[Value], id: u64) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l["packet"] == id && l["type"] != "netfilter")
        .map(|l| match l["type"].as_str() {
            Some("packet") => format!(
                "{} {} {}",
                l["netns"].as_str().unwrap_or("?"),
                l["ifname"].as_str().unwrap_or("?"),
                l["dir"].as_str().unwrap_or("?")
            ),
            _ => format!(
                "drop {} {}",
                l["netns"].as_str().unwrap_or("?"),
                l["reason"].as_str().unwrap_or("?")
            ),
        })
        .collect()
}

fn packet_with_icmp_type(lines: &[Value], t: u64) -> u64 {
    let ids: Vec<u64> = lines
        .iter()
        .filter(|l| l["hop"] == 1 && l["icmp"]["type"] == t)
        .filter_map(|l| l["packet"].as_u64())
        .collect();
    assert_eq!(ids.len(), 1, "one packet of ICMP type {t}: {lines:#?}");
    ids[0]
}

/// `vethtrace trace --json -c 2 EXTRA icmp` on the bridge lab during one ping ns01 → ns02: its
/// NDJSON lines, once the echo request's hops are checked.
fn bridge_lab_ping(lab: &Lab, extra: &[&str]) -> Vec<Value> {
    let ns = |r: &str| lab.netns(r).expect("role").to_string();
    let mut args = extra.to_vec();
    args.extend(["--json", "-c", "2", "--duration", "20", "icmp"]);
    let trace = Trace::start(lab, &args);
    assert!(lab
        .ping("ns01", lab.addr("ns02").expect("addr"), 1)
        .expect("ping"));
    let lines = ndjson(&trace.finish());
    let req = packet_with_icmp_type(&lines, 8);
    assert_eq!(
        hops(&lines, req),
        [
            format!("{} veth01 egress", ns("ns01")),
            format!("{} br-veth01 ingress", ns("node")),
            format!("{} br-veth02 egress", ns("node")),
            format!("{} veth02 ingress", ns("ns02")),
        ]
    );
    lines
}

#[test]
fn bridge_lab_json_hops_in_both_directions() {
    if !vethtrace_tests::privileged("bridge_lab_json_hops_in_both_directions") {
        return;
    }
    let lab = Lab::create(LabKind::Bridge).expect("lab");
    let lines = bridge_lab_ping(&lab, &[]);
    let req = packet_with_icmp_type(&lines, 8);
    let rep = packet_with_icmp_type(&lines, 0);
    assert_eq!(hops(&lines, rep).len(), 4);
    let first = lines.iter().find(|l| l["packet"] == req).expect("hop");
    assert_eq!(first["src"], "192.168.88.11");
    assert_eq!(first["dst"], "192.168.88.12");
    assert_eq!(first["proto"], "ICMP");
    assert_eq!(first["t_us"], 0.0);
    let summary = lines.last().expect("summary");
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["packets"], 2);
    assert_eq!(summary["events"], 8);
    assert_eq!(summary["lost"], 0);
}

#[test]
fn forward_drop_is_a_drop_line_after_the_ingress_hop() {
    if !vethtrace_tests::privileged("forward_drop_is_a_drop_line_after_the_ingress_hop") {
        return;
    }
    let mut lab = Lab::create(LabKind::Bridge).expect("lab");
    lab.enable(Fault::ForwardDrop).expect("fault");
    let ns = |r: &str| lab.netns(r).expect("role").to_string();
    let trace = Trace::start(&lab, &["--json", "-c", "1", "--duration", "20", "icmp"]);
    assert!(!lab
        .ping("ns01", lab.addr("ns02").expect("addr"), 1)
        .expect("ping"));
    let lines = ndjson(&trace.finish());
    assert_eq!(
        hops(&lines, 1),
        [
            format!("{} veth01 egress", ns("ns01")),
            format!("{} br-veth01 ingress", ns("node")),
            format!("drop {} NETFILTER_DROP", ns("node")),
        ]
    );
    let drop = lines
        .iter()
        .find(|l| l["type"] == "drop")
        .expect("drop line");
    assert_eq!(drop["benign"], false);
    assert!(drop["location"].as_str().is_some_and(|l| !l.is_empty()));
}

#[test]
fn pcapng_has_one_interface_per_namespace_and_device() {
    if !vethtrace_tests::privileged("pcapng_has_one_interface_per_namespace_and_device") {
        return;
    }
    let lab = Lab::create(LabKind::Pair).expect("lab");
    let file = std::env::temp_dir().join(format!("vethtrace-{}.pcapng", lab.prefix()));
    let f = file.to_string_lossy().into_owned();
    let trace = Trace::start(&lab, &["-c", "2", "--duration", "20", "-w", &f, "icmp"]);
    assert!(lab
        .ping("a", lab.addr("b").expect("addr"), 1)
        .expect("ping"));
    let out = trace.finish();
    assert_eq!(out.status.code(), Some(0));
    let tshark = Command::new("tshark")
        .args([
            "-r",
            &f,
            "-T",
            "fields",
            "-e",
            "frame.interface_name",
            "-e",
            "ip.src",
            "-e",
            "icmp.type",
        ])
        .output()
        .expect("tshark runs (installed by cargo xtask setup)");
    let _ = std::fs::remove_file(&file);
    let text = String::from_utf8_lossy(&tshark.stdout).into_owned();
    let rows: Vec<&str> = text.lines().collect();
    let (a, b) = (lab.netns("a").expect("a"), lab.netns("b").expect("b"));
    assert_eq!(
        rows,
        [
            format!("{a}/eth0\t10.0.0.1\t8"),
            format!("{b}/eth0\t10.0.0.1\t8"),
            format!("{b}/eth0\t10.0.0.2\t0"),
            format!("{a}/eth0\t10.0.0.2\t0"),
        ]
    );
}

#[test]
fn kill_9_leaves_no_program_attached() {
    if !vethtrace_tests::privileged("kill_9_leaves_no_program_attached") {
        return;
    }
    let lab = Lab::create(LabKind::Bridge).expect("lab");
    let trace = Trace::start(&lab, &["icmp"]);
    let attached = vethtrace_tests::programs_in(&lab);
    assert!(
        attached.iter().any(|p| p.contains("vethtrace_tc")),
        "{attached:?}"
    );
    // SIGKILL: no destructor runs. TCX links and the tracepoint link are file descriptors, so
    // the kernel detaches them when the process dies.
    kill_9_leaves_nothing(trace, &lab);
}

#[test]
fn tracepoints_mode_gives_the_same_json_hops() {
    if !vethtrace_tests::privileged("tracepoints_mode_gives_the_same_json_hops") {
        return;
    }
    let lab = Lab::create(LabKind::Bridge).expect("lab");
    let lines = bridge_lab_ping(&lab, &["--attach-mode", "tracepoints"]);
    let req = packet_with_icmp_type(&lines, 8);
    let first = lines.iter().find(|l| l["packet"] == req).expect("hop");
    assert_eq!(first["len"], 98);
    assert_eq!(first["src"], "192.168.88.11");
    let summary = lines.last().expect("summary");
    assert_eq!(summary["events"], 8);
    assert_eq!(summary["lost"], 0);
    let attach = summary["attach"].as_str().expect("attach");
    assert!(
        attach.starts_with("10 hooks on 5 interfaces in 3 namespaces (device tracepoints"),
        "{attach}"
    );
    // Nothing is attached to the lab's interfaces in this mode.
    assert_eq!(vethtrace_tests::programs_in(&lab), Vec::<String>::new());
}

/// The BPF program ids the process holds (its fds' `prog_id` in /proc/PID/fdinfo: programs,
/// and the links that keep them attached).
fn program_ids(pid: u32) -> Vec<u32> {
    let mut ids = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("fdinfo") {
        let text = std::fs::read_to_string(fd.expect("entry").path()).unwrap_or_default();
        ids.extend(text.lines().filter_map(|l| {
            l.strip_prefix("prog_id:")
                .and_then(|v| v.trim().parse::<u32>().ok())
        }));
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[test]
fn kill_9_in_tracepoints_mode_unloads_every_program() {
    if !vethtrace_tests::privileged("kill_9_in_tracepoints_mode_unloads_every_program") {
        return;
    }
    let lab = Lab::create(LabKind::Bridge).expect("lab");
    let trace = Trace::start(&lab, &["--attach-mode", "tracepoints", "icmp"]);
    let ids = program_ids(trace.pid());
    let names: Vec<String> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| ids.contains(&p.id()))
        .filter_map(|p| p.name_as_str().map(str::to_string))
        .collect();
    // Both device tracepoints (names cut at 15 bytes by the kernel) and the drop program.
    for want in ["vethtrace_dev_i", "vethtrace_dev_e", "vethtrace_kfree"] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    let pid = trace.pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::SIGKILL,
    )
    .expect("kill");
    drop(trace);
    let start = Instant::now();
    loop {
        let left: Vec<u32> = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .map(|p| p.id())
            .filter(|id| ids.contains(id))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "programs still loaded after kill -9: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// With the device tracepoints, an upper device's ingress is hooked with the tc ingress
/// program (netif_receive_skb does not fire for it): the summary says so, the hops are the
/// ones TCX gives, and kill -9 leaves nothing attached to it, as with the tc modes.
#[test]
fn an_upper_devices_tc_ingress_is_said_and_goes_with_kill_9() {
    if !vethtrace_tests::privileged("an_upper_devices_tc_ingress_is_said_and_goes_with_kill_9") {
        return;
    }
    let lab = Lab::create(LabKind::Pair).expect("lab");
    vethtrace_tests::labtrace::macvlan_on_pair(&lab);
    let (a, b) = (lab.netns("a").expect("a"), lab.netns("b").expect("b"));
    let trace = Trace::start(
        &lab,
        &[
            "--attach-mode",
            "tracepoints",
            "--json",
            "-c",
            "2",
            "--duration",
            "20",
            "icmp",
        ],
    );
    assert!(lab
        .ping("a", lab.addr("b").expect("addr"), 1)
        .expect("ping"));
    let lines = ndjson(&trace.finish());
    assert_eq!(
        hops(&lines, packet_with_icmp_type(&lines, 8)),
        [
            format!("{a} eth0 egress"),
            format!("{b} eth0 ingress"),
            format!("{b} mv0 ingress"),
        ]
    );
    assert_eq!(
        hops(&lines, packet_with_icmp_type(&lines, 0)),
        [
            format!("{b} mv0 egress"),
            format!("{b} eth0 egress"),
            format!("{a} eth0 ingress"),
        ]
    );
    let summary = lines.last().expect("summary");
    assert_eq!(summary["events"], 6);
    let attach = summary["attach"].as_str().expect("attach");
    assert!(
        attach.starts_with(&format!(
            "6 hooks on 3 interfaces in 2 namespaces (device tracepoints \
             netif_receive_skb/net_dev_queue; TCX ingress on 1 upper device: {b} mv0), "
        )),
        "{attach}"
    );

    let trace = Trace::start(&lab, &["--attach-mode", "tracepoints", "icmp"]);
    assert_eq!(
        vethtrace_tests::programs_in(&lab),
        ["mv0 tcx ingress vethtrace_tc_in"]
    );
    kill_9_leaves_nothing(trace, &lab);
}

fn run(args: &[&str]) -> Output {
    Command::new(vethtrace_tests::binary())
        .args(args)
        .output()
        .expect("vethtrace runs")
}

fn one_line_error(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(out.stdout.is_empty());
    err
}

#[test]
fn bad_filter_points_at_the_token() {
    let err = one_line_error(&run(&["trace", "icmp", "and", "frobnicate"]));
    assert!(err.contains("position 9"), "{err}");
    assert!(err.contains("frobnicate"), "{err}");
    assert!(err.contains("expected"), "{err}");
}

#[test]
fn bad_flags_are_one_line() {
    one_line_error(&run(&["trace", "--duration", "-1"]));
    one_line_error(&run(&["trace", "-c", "0"]));
    one_line_error(&run(&["trace", "--ring-kib", "3"]));
}

#[test]
fn unknown_namespace_and_interface_name_what_exists() {
    if !vethtrace_tests::privileged("unknown_namespace_and_interface_name_what_exists") {
        return;
    }
    let lab = Lab::create(LabKind::Pair).expect("lab");
    let err = one_line_error(&run(&["trace", "--netns", "no-such-namespace-here"]));
    assert!(err.contains("no-such-namespace-here"), "{err}");
    assert!(err.contains("host"), "lists known names: {err}");
    let a = lab.netns("a").expect("a");
    let err = one_line_error(&run(&["trace", "--netns", a, "--iface", "nosuch0"]));
    assert!(err.contains("nosuch0") && err.contains("eth0"), "{err}");
    assert!(Path::new("/run/netns").join(a).exists());
}

#[test]
fn latency_view_per_hop_transition() {
    if !vethtrace_tests::privileged("latency_view_per_hop_transition") {
        return;
    }
    let lab = Lab::create(LabKind::Pair).expect("lab");
    let (a, b) = (lab.netns("a").expect("a"), lab.netns("b").expect("b"));
    let trace = Trace::start(
        &lab,
        &["--latency", "--json", "-c", "6", "--duration", "20", "icmp"],
    );
    assert!(lab
        .ping("a", lab.addr("b").expect("addr"), 3)
        .expect("ping"));
    let lines = ndjson(&trace.finish());
    let rows: Vec<&Value> = lines.iter().filter(|l| l["type"] == "latency").collect();
    assert_eq!(rows.len(), 2, "{lines:#?}");
    assert_eq!(rows[0]["from"], format!("{a} eth0 egress"));
    assert_eq!(rows[0]["to"], format!("{b} eth0 ingress"));
    assert_eq!(rows[1]["from"], format!("{b} eth0 egress"));
    for r in &rows {
        assert_eq!(r["count"], 3);
        let (p50, max) = (
            r["p50_us"].as_f64().expect("p50"),
            r["max_us"].as_f64().expect("max"),
        );
        assert!(p50 > 0.0 && p50 <= max, "{r}");
        let hist: u64 = r["histogram"]
            .as_array()
            .expect("histogram")
            .iter()
            .filter_map(Value::as_u64)
            .sum();
        assert_eq!(hist, 3);
    }
    assert!(
        lines.iter().all(|l| l["type"] != "packet"),
        "--latency prints no packets"
    );
    assert_eq!(lines.last().expect("summary")["type"], "summary");
}

/// Removes a namespace the test made itself, on every exit path.
struct ExtraNetns(String);

impl Drop for ExtraNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("ip runs");
    assert!(st.success(), "ip {args:?}");
}

#[test]
fn a_pod_namespace_and_veth_created_during_the_trace_are_traced() {
    if !vethtrace_tests::privileged("a_pod_namespace_and_veth_created_during_the_trace_are_traced")
    {
        return;
    }
    hot_attach(&[]);
}

#[test]
fn hot_attach_with_the_device_tracepoints() {
    if !vethtrace_tests::privileged("hot_attach_with_the_device_tracepoints") {
        return;
    }
    hot_attach(&["--attach-mode", "tracepoints"]);
}

/// A pod namespace and its veth created while `vethtrace trace ARGS` runs are traced.
fn hot_attach(args: &[&str]) {
    let lab = Lab::create(LabKind::Pair).expect("lab");
    let b = lab.netns("b").expect("b").to_string();
    let pattern = format!("{}*", lab.prefix());
    let ready = std::env::temp_dir().join(format!("vethtrace-hot-{}", lab.prefix()));
    let _ = std::fs::remove_file(&ready);
    let child = Command::new(vethtrace_tests::binary())
        .args([
            "trace",
            "--json",
            "-c",
            "2",
            "--duration",
            "20",
            "--netns",
            &pattern,
        ])
        .args(args)
        .arg("--ready-file")
        .arg(&ready)
        .arg("icmp")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("trace starts");
    let mut trace = Trace {
        child: Some(child),
        ready,
    };
    trace.wait_ready();
    // A new "pod": its namespace matches the pattern, and its veth's host end is a new link
    // in a namespace already traced.
    let pod = ExtraNetns(format!("{}pod3", lab.prefix()));
    ip(&["netns", "add", &pod.0]);
    ip(&[
        "-n", &b, "link", "add", "name", "vpod3", "type", "veth", "peer", "name", "eth0", "netns",
        &pod.0,
    ]);
    ip(&["-n", &b, "addr", "add", "10.0.3.1/24", "dev", "vpod3"]);
    ip(&["-n", &b, "link", "set", "vpod3", "up"]);
    ip(&["-n", &pod.0, "addr", "add", "10.0.3.2/24", "dev", "eth0"]);
    ip(&["-n", &pod.0, "link", "set", "eth0", "up"]);
    ip(&["-n", &pod.0, "link", "set", "lo", "up"]);
    // As in the labs: ping uses an ICMP socket, so its reply is not also freed as NO_SOCKET.
    ip(&[
        "netns",
        "exec",
        &pod.0,
        "sysctl",
        "-qw",
        "net.ipv4.ping_group_range=0 2147483647",
    ]);
    // Picked up within 1 s.
    std::thread::sleep(Duration::from_secs(1));
    let ok = Command::new("ip")
        .args([
            "netns", "exec", &pod.0, "ping", "-c", "1", "-W", "1", "10.0.3.1",
        ])
        .stdout(Stdio::null())
        .status()
        .expect("ping");
    assert!(ok.success());
    let lines = ndjson(&trace.finish());
    let req = packet_with_icmp_type(&lines, 8);
    assert_eq!(
        hops(&lines, req),
        [
            format!("{} eth0 egress", pod.0),
            format!("{b} vpod3 ingress")
        ]
    );
    let rep = packet_with_icmp_type(&lines, 0);
    assert_eq!(
        hops(&lines, rep),
        [
            format!("{b} vpod3 egress"),
            format!("{} eth0 ingress", pod.0)
        ]
    );
}

/// SIGKILLs the trace (no destructor runs) and waits up to 5 s for the lab to carry no program:
/// TCX links and tracepoint links are file descriptors the kernel lets go with the process.
fn kill_9_leaves_nothing(trace: Trace, lab: &Lab) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(trace.pid() as i32),
        nix::sys::signal::SIGKILL,
    )
    .expect("kill");
    drop(trace);
    let start = Instant::now();
    loop {
        let left = vethtrace_tests::programs_in(lab);
        if left.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still attached: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
