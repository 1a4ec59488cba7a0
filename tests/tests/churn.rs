//! Churn: 50 pod-like namespaces, each with a veth into the lab's node, created and deleted
//! while `vethtrace trace --netns '<labprefix>*'` hot-attaches to them. The trace must print no
//! error, keep running, count the traffic between two stable pods exactly, leak no descriptor
//! or thread, and leave nothing attached once stopped with SIGINT.
//!
//! The lab rule: every namespace here is the lab's or a pod named `<labprefix>cN`, each removed
//! by a Drop guard on every exit path; nothing touches the root namespace.

use std::{
    collections::{BTreeMap, VecDeque},
    io::{Read, Write},
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};
use serde_json::Value;
use vethtrace::lab::{Lab, LabKind};

/// Pods are created in waves of this many (a deployment scaling up), and each wave is deleted
/// when the second after it is up (scaling down), so creations, deletions and the attaches and
/// detaches they set off interleave.
const WAVE: usize = 5;
/// Waves: 50 pods created and deleted during the trace.
const WAVES: usize = 10;
const PODS: usize = WAVES * WAVE;
/// Time between waves, so most pods are attached before they go (a pod deleted before it was
/// attached tests less).
const GAP: Duration = Duration::from_millis(200);
/// Pods left alive when the trace stops, to check that its exit detaches from them too.
const SURVIVORS: usize = 2;
/// Echo requests sent from ns01 to ns02 (0.1 s apart) while the pods churn.
const PINGS: u32 = 25;
/// Descriptors the trace holds per hot-attached pod: the rtnetlink socket watching the pod's
/// links, and a TCX link in each direction on the pod's eth0 and on its veth's node end.
const FDS_PER_POD: usize = 5;

/// `ip [-n NETNS] [-force] -batch -` with one command per line: a wave of pods costs two
/// processes instead of one per pod and step.
fn ip_batch(netns: Option<&str>, force: bool, lines: &[String]) -> std::process::Output {
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    if force {
        cmd.arg("-force");
    }
    let mut child = cmd
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ip");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(lines.join("\n").as_bytes())
        .expect("write the batch");
    drop(stdin);
    child.wait_with_output().expect("ip ends")
}

/// Pods: each its own namespace `<labprefix>cN` with `eth0`, paired with `vcN` (up) in the
/// lab's node. (The pods' eth0 stay down: bringing each up would cost a process per pod, and
/// a link's state makes no difference to attaching.) Whatever is still alive is deleted on
/// drop, panics included.
struct Pods {
    node: String,
    prefix: String,
    /// (netns, node end) of every pod alive.
    live: Vec<(String, String)>,
}

impl Pods {
    fn new(lab: &Lab) -> Pods {
        Pods {
            node: lab.netns("node").expect("node").to_string(),
            prefix: lab.prefix().to_string(),
            live: Vec::new(),
        }
    }

    /// Creates pods `first..first + WAVE`; returns their namespaces.
    fn wave(&mut self, first: usize) -> Vec<String> {
        let pods: Vec<(String, String)> = (first..first + WAVE)
            .map(|n| (format!("{}c{n}", self.prefix), format!("vc{n}")))
            .collect();
        // Tracked before they exist, so a failed step still cleans up.
        self.live.extend(pods.iter().cloned());
        let add: Vec<String> = pods
            .iter()
            .map(|(ns, _)| format!("netns add {ns}"))
            .collect();
        let out = ip_batch(None, false, &add);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let veths: Vec<String> = pods
            .iter()
            .map(|(ns, host)| format!("link add {host} up type veth peer name eth0 netns {ns}"))
            .collect();
        let out = ip_batch(Some(&self.node), false, &veths);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        pods.into_iter().map(|(ns, _)| ns).collect()
    }

    /// Deletes the pods `names` (their veths go with their namespaces).
    fn delete(&mut self, names: &[String]) {
        let del: Vec<String> = names.iter().map(|ns| format!("netns del {ns}")).collect();
        let out = ip_batch(None, false, &del);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.live.retain(|(ns, _)| !names.contains(ns));
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        if !self.live.is_empty() {
            let del: Vec<String> = self
                .live
                .iter()
                .map(|(ns, _)| format!("netns del {ns}"))
                .collect();
            let _ = ip_batch(None, true, &del);
        }
    }
}

/// The trace under test; killed on drop if the test failed before stopping it. Its stdout and
/// stderr are read as they come (a full pipe would stall its loop, hot attach included).
struct Trace {
    child: Option<Child>,
    ready: PathBuf,
    stdout: Option<std::thread::JoinHandle<Vec<u8>>>,
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
}

/// Reads a pipe to its end on a thread of its own.
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = pipe.read_to_end(&mut all);
        all
    })
}

impl Trace {
    fn start(pattern: &str, filter: &str, ready: PathBuf) -> Trace {
        let _ = std::fs::remove_file(&ready);
        let mut child = Command::new(vethtrace_tests::binary())
            .args(["trace", "--json", "--netns", pattern])
            .arg("--ready-file")
            .arg(&ready)
            .arg(filter)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("trace starts");
        let stdout = child.stdout.take().map(drain);
        let stderr = child.stderr.take().map(drain);
        let mut t = Trace {
            child: Some(child),
            ready,
            stdout,
            stderr,
        };
        let start = Instant::now();
        while !t.ready.exists() {
            assert!(t.running(), "trace exited before attaching");
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "trace never got ready"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        t
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("child").id()
    }

    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Open descriptors and threads, the least of a few samples: a sample can catch a
    /// descriptor or thread that lives only during one scan or attach (reading /proc, a worker
    /// thread entering a namespace).
    fn resources(&self) -> (usize, usize) {
        let pid = self.pid();
        let mut best = (usize::MAX, usize::MAX);
        for _ in 0..8 {
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .expect("read the trace's fds")
                .count();
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
            let threads: usize = status
                .lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("Threads: in status");
            best = (best.0.min(fds), best.1.min(threads));
            std::thread::sleep(Duration::from_millis(25));
        }
        best
    }

    /// SIGINT, then everything it printed.
    fn interrupt(mut self) -> Output {
        let mut child = self.child.take().expect("child");
        nix::sys::signal::kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).expect("SIGINT");
        let status = child.wait().expect("trace ends");
        let text = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
            h.map(|h| h.join().expect("pipe reader"))
                .unwrap_or_default()
        };
        Output {
            status,
            stdout: text(self.stdout.take()),
            stderr: text(self.stderr.take()),
        }
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

/// `ping -c PINGS` from ns01 to ns02, in the background; returns (transmitted, received).
fn ping_in_background(lab: &Lab) -> std::thread::JoinHandle<(u32, u32)> {
    let ns01 = lab.netns("ns01").expect("ns01").to_string();
    let dst = lab.addr("ns02").expect("ns02").to_string();
    std::thread::spawn(move || {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns01, "ping", "-n", "-q", "-i", "0.1"])
            .args(["-W", "1", "-c", &PINGS.to_string(), &dst])
            .stdin(Stdio::null())
            .output()
            .expect("ping runs");
        let text = String::from_utf8_lossy(&out.stdout);
        // "25 packets transmitted, 25 received, 0% packet loss, time 2403ms"
        let line = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_else(|| panic!("no ping summary in {text:?}"));
        let mut n = line
            .split(',')
            .map(|part| part.split_whitespace().next().and_then(|w| w.parse().ok()));
        (
            n.next().flatten().expect("transmitted"),
            n.next().flatten().expect("received"),
        )
    })
}

/// `netns ifname dir` of each hop of each packet in NDJSON lines, by packet number.
fn paths(lines: &[Value]) -> BTreeMap<u64, Vec<String>> {
    let mut out: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for l in lines.iter().filter(|l| l["type"] == "packet") {
        let hop = format!(
            "{} {} {}",
            l["netns"].as_str().unwrap_or("?"),
            l["ifname"].as_str().unwrap_or("?"),
            l["dir"].as_str().unwrap_or("?")
        );
        out.entry(l["packet"].as_u64().unwrap_or(0))
            .or_default()
            .push(hop);
    }
    out
}

#[test]
fn fifty_namespaces_come_and_go_during_a_trace_without_error_or_leak() {
    if !vethtrace_tests::privileged(
        "fifty_namespaces_come_and_go_during_a_trace_without_error_or_leak",
    ) {
        return;
    }
    let lab = Lab::create(LabKind::Bridge).expect("lab");
    let ns = |role: &str| lab.netns(role).expect("role").to_string();
    let (node, ns01, ns02) = (ns("node"), ns("ns01"), ns("ns02"));
    let trace = Trace::start(
        &format!("{}*", lab.prefix()),
        &format!("icmp and host {}", lab.addr("ns01").expect("ns01")),
        std::env::temp_dir().join(format!("vethtrace-churn-{}", lab.prefix())),
    );
    // The ready file is written just before the event loop starts (its runtime and signal
    // handlers open descriptors of their own): sample once that is done.
    std::thread::sleep(Duration::from_millis(300));
    let (fds_before, threads_before) = trace.resources();

    let pinger = ping_in_background(&lab);
    let started = Instant::now();
    let mut pods = Pods::new(&lab);
    let mut waves: VecDeque<Vec<String>> = VecDeque::new();
    for w in 0..WAVES {
        waves.push_back(pods.wave(w * WAVE));
        if waves.len() > 2 {
            pods.delete(&waves.pop_front().expect("oldest wave"));
        }
        std::thread::sleep(GAP);
    }
    let last = waves.pop_back().expect("last wave");
    for wave in waves.drain(..) {
        pods.delete(&wave);
    }
    pods.delete(&last[..WAVE - SURVIVORS]);
    let churn = started.elapsed();
    let (sent, received) = pinger.join().expect("pinger");
    assert_eq!(
        (sent, received),
        (PINGS, PINGS),
        "the lab itself lost pings"
    );
    // Hot attach promises a second; deletions are seen at the next mount-table tick.
    std::thread::sleep(Duration::from_millis(1200));
    let mut trace = trace;
    assert!(trace.running(), "the trace died during the churn");
    let (fds_after, threads_after) = trace.resources();
    eprintln!(
        "churn of {PODS} pods in {churn:.1?}; trace fds {fds_before} -> {fds_after} \
         ({SURVIVORS} pods left), threads {threads_before} -> {threads_after}"
    );
    // The surviving pods are traced: hot attach still works after the churn.
    let survivors: Vec<(String, String)> = pods.live.clone();
    assert_eq!(survivors.len(), SURVIVORS);
    let expect_attached = |ifname: &str| {
        vec![
            format!("{ifname} tcx ingress vethtrace_tc_in"),
            format!("{ifname} tcx egress vethtrace_tc_eg"),
        ]
    };
    for (name, host_if) in &survivors {
        assert_eq!(
            vethtrace_tests::programs_in_netns(std::slice::from_ref(name)),
            expect_attached("eth0"),
            "pod {name}"
        );
        let host_end: Vec<String> = vethtrace_tests::programs_in(&lab)
            .into_iter()
            .filter(|p| p.starts_with(&format!("{host_if} ")))
            .collect();
        assert_eq!(host_end, expect_attached(host_if), "node end of {name}");
    }

    let out = trace.interrupt();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr, "", "no error line during the churn");
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON"))
        .collect();
    let summary = lines.last().expect("summary");
    assert_eq!(summary["type"], "summary", "{summary}");
    // Each echo request crosses ns01 veth01, node br-veth01, node br-veth02 and ns02 veth02
    // (one event at each), each reply the same way back; nothing else matches the filter.
    let request = [
        format!("{ns01} veth01 egress"),
        format!("{node} br-veth01 ingress"),
        format!("{node} br-veth02 egress"),
        format!("{ns02} veth02 ingress"),
    ];
    let reply = [
        format!("{ns02} veth02 egress"),
        format!("{node} br-veth02 ingress"),
        format!("{node} br-veth01 egress"),
        format!("{ns01} veth01 ingress"),
    ];
    let paths = paths(&lines);
    let count = |want: &[String]| paths.values().filter(|p| p.as_slice() == want).count();
    let pings = PINGS as usize;
    assert_eq!(
        (paths.len(), count(&request), count(&reply)),
        (2 * pings, pings, pings),
        "{paths:#?}"
    );
    let packets = u64::from(PINGS) * 2;
    assert_eq!(
        (
            summary["packets"].as_u64(),
            summary["events"].as_u64(),
            summary["lost"].as_u64(),
            summary["drops"].as_u64(),
        ),
        (Some(packets), Some(packets * 4), Some(0), Some(0)),
        "{summary}"
    );

    // Nothing left in the lab or in the pods that outlived the trace.
    assert_eq!(vethtrace_tests::programs_in(&lab), Vec::<String>::new());
    let names: Vec<String> = survivors.into_iter().map(|(ns, _)| ns).collect();
    assert_eq!(
        vethtrace_tests::programs_in_netns(&names),
        Vec::<String>::new()
    );
    // No descriptor left behind by the pods that came and went: only the surviving pods'
    // ones are added (a TCX link fd stays open after its device is gone until it is closed).
    // SLACK covers a descriptor a scan or an attach holds for a moment, should every sample
    // catch one; a leak of even one descriptor per pod would be 48.
    const SLACK: usize = 2;
    let expected = fds_before + FDS_PER_POD * SURVIVORS;
    assert!(
        (expected..=expected + SLACK).contains(&fds_after),
        "descriptors: {fds_before} before the churn, {fds_after} after it with {SURVIVORS} pods \
         left (each holds {FDS_PER_POD}): expected {expected}"
    );
    assert_eq!(threads_after, threads_before, "threads");
}
