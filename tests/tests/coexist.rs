//! Living with other tc users: a foreign TCX program on the same hook keeps its effect with
//! vethtrace attached (and vethtrace explains what it did) — one dropping ICMP, one closing a
//! UDP port, whichever of the two was attached first — and the clsact fallback detaches on
//! exit, sweeps its own stale filters after a kill -9, and touches nothing else.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::OwnedFd,
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

/// The one-port test: the foreign program drops UDP to DROPPED; OPEN is let through.
const DROPPED: u16 = 7001;
const OPEN: u16 = 7002;
/// Datagrams sent to each port per round.
const DATAGRAMS: usize = 5;

/// `vt_drop_udp` on b's eth0 TCX ingress, dropping UDP to [`DROPPED`]: attached while the
/// returned fds live, appended after whatever is on the hook already (no ordering flags).
fn foreign_port_program(lab: &Lab) -> Vec<OwnedFd> {
    netns::run_in(&netns::named(lab.netns("b").expect("b")), || {
        let ifindex = nix::net::if_::if_nametoindex("eth0")?;
        let prog = rawbpf::drop_udp_dport("vt_drop_udp", DROPPED)?;
        let link = rawbpf::link(&prog, ifindex, rawbpf::ATTACH_TCX_INGRESS)?;
        Ok(vec![link, prog])
    })
    .expect("foreign program attached")
}

/// Two UDP senders in a (one per phase of the test, told apart by source port) and a receiver
/// on each port in b (a socket stays in the namespace it was created in, whichever thread
/// uses it).
struct Udp {
    dst: IpAddr,
    tx: [UdpSocket; 2],
    dropped: UdpSocket,
    open: UdpSocket,
}

impl Udp {
    fn new(lab: &Lab) -> Udp {
        let dst = lab.addr("b").expect("b");
        let (dropped, open) = netns::run_in(&netns::named(lab.netns("b").expect("b")), || {
            Ok((
                UdpSocket::bind(SocketAddr::new(dst, DROPPED))?,
                UdpSocket::bind(SocketAddr::new(dst, OPEN))?,
            ))
        })
        .expect("receivers in b");
        let tx = netns::run_in(&netns::named(lab.netns("a").expect("a")), || {
            Ok([UdpSocket::bind("0.0.0.0:0")?, UdpSocket::bind("0.0.0.0:0")?])
        })
        .expect("senders in a");
        // Delivery between two namespaces on one host takes microseconds (the first round
        // also an ARP exchange): a receiver that got nothing for this long gets nothing more.
        for s in [&dropped, &open] {
            s.set_read_timeout(Some(Duration::from_millis(150)))
                .expect("timeout");
        }
        Udp {
            dst,
            tx,
            dropped,
            open,
        }
    }

    /// The source port of sender `i`.
    fn sport(&self, i: usize) -> u16 {
        self.tx[i].local_addr().expect("bound").port()
    }

    /// Sends [`DATAGRAMS`] to each port from sender `i`; returns how many arrived at
    /// (DROPPED, OPEN).
    fn round(&self, i: usize) -> (usize, usize) {
        for n in 0..DATAGRAMS {
            for port in [DROPPED, OPEN] {
                self.tx[i]
                    .send_to(&[n as u8; 32], SocketAddr::new(self.dst, port))
                    .expect("send");
            }
        }
        let received = |s: &UdpSocket| {
            let mut buf = [0u8; 64];
            std::iter::from_fn(|| s.recv(&mut buf).ok()).count()
        };
        (received(&self.dropped), received(&self.open))
    }
}

/// Each packet of a `--json` trace as its UDP (source, destination) ports and its hops,
/// `netns ifname dir` or `drop netns reason`.
type Paths = Vec<((u64, u64), Vec<String>)>;

fn udp_paths(stdout: &[u8]) -> Paths {
    let mut by_packet: std::collections::BTreeMap<u64, ((u64, u64), Vec<String>)> =
        Default::default();
    for l in String::from_utf8_lossy(stdout).lines() {
        let v: Value = serde_json::from_str(l).expect("json");
        let Some(packet) = v["packet"].as_u64() else {
            continue;
        };
        let s = |k: &str| v[k].as_str().unwrap_or("?").to_string();
        let hop = match v["type"].as_str() {
            Some("packet") => format!("{} {} {}", s("netns"), s("ifname"), s("dir")),
            _ => format!("{} {} {}", s("type"), s("netns"), s("reason")),
        };
        let entry = by_packet.entry(packet).or_default();
        if let (Some(sport), Some(dport)) = (v["sport"].as_u64(), v["dport"].as_u64()) {
            entry.0 = (sport, dport);
        }
        entry.1.push(hop);
    }
    by_packet.into_values().collect()
}

/// Stops a `--json` trace with SIGINT, as a user would; its stdout. It must exit 0 with
/// nothing on stderr.
fn interrupt(child: std::process::Child) -> Vec<u8> {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let out = child.wait_with_output().expect("trace ends");
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).as_ref()
        ),
        (Some(0), "")
    );
    out.stdout
}

/// The tc programs on b's eth0 ingress, in the order they run.
fn b_ingress(lab: &Lab) -> Vec<String> {
    vethtrace_tests::programs_in_netns(&[lab.netns("b").expect("b").to_string()])
        .into_iter()
        .filter_map(|p| p.strip_prefix("eth0 tcx ingress ").map(str::to_string))
        .collect()
}

#[test]
fn a_foreign_program_dropping_one_port_keeps_its_effect_and_vethtrace_sees_up_to_it() {
    if !vethtrace_tests::privileged(
        "a_foreign_program_dropping_one_port_keeps_its_effect_and_vethtrace_sees_up_to_it",
    ) {
        return;
    }
    let lab = Lab::create(LabKind::Pair).expect("lab");
    let (a, b) = (lab.netns("a").expect("a"), lab.netns("b").expect("b"));
    let udp = Udp::new(&lab);
    let mut foreign = foreign_port_program(&lab);
    let port_closed = (0, DATAGRAMS);
    // Without vethtrace: the port is closed, the other open.
    assert_eq!(udp.round(0), port_closed, "without vethtrace");

    let ready = std::env::temp_dir().join(format!("vethtrace-port-{}", lab.prefix()));
    let _ = std::fs::remove_file(&ready);
    let child = vethtrace(&["trace", "--json", "--netns", a, "--netns", b])
        .arg("--ready-file")
        .arg(&ready)
        .arg(format!("udp and host {}", udp.dst))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("trace starts");
    wait_for(&ready);

    // 1. The foreign program was there first. vethtrace appends its TCX programs after every
    //    one present (aya's default LinkOrder: after all), so the foreign one runs first on b's
    //    ingress: what it drops never reaches vethtrace's ingress program there; it is seen
    //    leaving a, then freed by the kernel in b with reason TC_INGRESS.
    assert_eq!(b_ingress(&lab), ["vt_drop_udp", "vethtrace_tc_in"]);
    assert_eq!(udp.round(0), port_closed, "with vethtrace after it");
    // 2. Attached again while vethtrace runs, the foreign program is appended after it:
    //    vethtrace now also sees the doomed datagrams arrive on b's eth0, before the drop.
    foreign.clear();
    foreign = foreign_port_program(&lab);
    assert_eq!(b_ingress(&lab), ["vethtrace_tc_in", "vt_drop_udp"]);
    assert_eq!(udp.round(1), port_closed, "with vethtrace before it");

    let paths = udp_paths(&interrupt(child));
    let sent = format!("{a} eth0 egress");
    let arrived = format!("{b} eth0 ingress");
    let dropped = format!("drop {b} TC_INGRESS");
    let count = |phase: usize, port: u16, want: &[&String]| {
        let ports = (u64::from(udp.sport(phase)), u64::from(port));
        paths
            .iter()
            .filter(|(p, hops)| *p == ports && hops.iter().eq(want.iter().copied()))
            .count()
    };
    assert_eq!(
        (
            paths.len(),
            count(0, DROPPED, &[&sent, &dropped]),
            count(0, OPEN, &[&sent, &arrived]),
            count(1, DROPPED, &[&sent, &arrived, &dropped]),
            count(1, OPEN, &[&sent, &arrived]),
        ),
        (4 * DATAGRAMS, DATAGRAMS, DATAGRAMS, DATAGRAMS, DATAGRAMS),
        "{paths:#?}"
    );

    // vethtrace left; the foreign program stays, alone, with its effect.
    assert_eq!(
        vethtrace_tests::programs_in(&lab),
        ["eth0 tcx ingress vt_drop_udp"]
    );
    assert_eq!(udp.round(0), port_closed, "after vethtrace");
    // The control: without the foreign program the port is open, so the zeros above were its
    // doing.
    drop(foreign);
    assert_eq!(
        udp.round(0),
        (DATAGRAMS, DATAGRAMS),
        "without the foreign program"
    );
    let _ = std::fs::remove_file(&ready);
}

/// The same foreign program with `--attach-mode tracepoints`: nothing of vethtrace is on the
/// hook, the traffic is the same, and net:netif_receive_skb fires before tc ingress, so every
/// datagram is seen arriving on b's eth0 — the doomed ones then freed with reason TC_INGRESS.
#[test]
fn with_the_device_tracepoints_a_foreign_port_drop_keeps_its_effect_and_arrivals_are_seen() {
    if !vethtrace_tests::privileged(
        "with_the_device_tracepoints_a_foreign_port_drop_keeps_its_effect_and_arrivals_are_seen",
    ) {
        return;
    }
    let lab = Lab::create(LabKind::Pair).expect("lab");
    let (a, b) = (lab.netns("a").expect("a"), lab.netns("b").expect("b"));
    let udp = Udp::new(&lab);
    let foreign = foreign_port_program(&lab);
    let port_closed = (0, DATAGRAMS);
    assert_eq!(udp.round(0), port_closed, "without vethtrace");

    let ready = std::env::temp_dir().join(format!("vethtrace-port-tp-{}", lab.prefix()));
    let _ = std::fs::remove_file(&ready);
    let child = vethtrace(&["trace", "--json", "--attach-mode", "tracepoints"])
        .args(["--netns", a, "--netns", b])
        .arg("--ready-file")
        .arg(&ready)
        .arg(format!("udp and host {}", udp.dst))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("trace starts");
    wait_for(&ready);
    // Only the foreign program is on the hook.
    assert_eq!(b_ingress(&lab), ["vt_drop_udp"]);
    assert_eq!(udp.round(0), port_closed, "with vethtrace");

    let paths = udp_paths(&interrupt(child));
    let sent = format!("{a} eth0 egress");
    let arrived = format!("{b} eth0 ingress");
    let dropped = format!("drop {b} TC_INGRESS");
    let count = |port: u16, want: &[&String]| {
        let ports = (u64::from(udp.sport(0)), u64::from(port));
        paths
            .iter()
            .filter(|(p, hops)| *p == ports && hops.iter().eq(want.iter().copied()))
            .count()
    };
    assert_eq!(
        (
            paths.len(),
            count(DROPPED, &[&sent, &arrived, &dropped]),
            count(OPEN, &[&sent, &arrived]),
        ),
        (2 * DATAGRAMS, DATAGRAMS, DATAGRAMS),
        "{paths:#?}"
    );
    assert_eq!(udp.round(0), port_closed, "after vethtrace");
    drop(foreign);
    assert_eq!(
        udp.round(0),
        (DATAGRAMS, DATAGRAMS),
        "without the foreign program"
    );
    let _ = std::fs::remove_file(&ready);
}
