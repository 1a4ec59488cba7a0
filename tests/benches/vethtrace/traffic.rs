//! Bounded iperf3 runs between two namespaces of a lab: `iperf3 -s -1` in one role, a client
//! with `-t SECS` in another. Both processes are killed and reaped on every exit path
//! ([`ChildGuard`]), and the whole run has a wall-clock limit.
//!
//! With two CPUs or more, the client and the server are pinned to two different ones
//! (iperf3's own `-A`, so no other tool is needed), so that every trial places the pair the
//! same way: on a 2-core VM an unpinned pair sometimes shares a CPU and sometimes does not.

use std::{
    io::Read,
    net::IpAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use vethtrace::{lab::Lab, netns};

/// iperf3's port (the traced mode's filter names it).
pub const PORT: u16 = 5201;
/// How long a run may take beyond its `-t`, before it is killed and reported as an error.
const SLACK: Duration = Duration::from_secs(15);

/// Kills and reaps a child process when dropped.
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    pub fn id(&self) -> Option<u32> {
        self.0.as_ref().map(Child::id)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What to send.
#[derive(Debug, Clone, Copy)]
pub enum Load {
    /// One TCP stream.
    Tcp,
    /// UDP with 64-byte payloads at this many bits per second (0: as fast as possible).
    Udp64 { bits_per_sec: u64 },
}

impl Load {
    /// UDP at `pps` 64-byte datagrams per second (iperf3 counts payload bits).
    pub fn udp_pps(pps: u64) -> Load {
        Load::Udp64 {
            bits_per_sec: pps * 64 * 8,
        }
    }
}

/// What iperf3 reported.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    /// Length of the test as the sender measured it.
    pub seconds: f64,
    /// Receiver's throughput (TCP).
    pub bits_per_sec: f64,
    /// Datagrams sent (UDP): each crossed every hook of the path.
    pub sent: u64,
    /// Datagrams received by the server (UDP).
    pub received: u64,
}

impl Outcome {
    pub fn sent_pps(&self) -> f64 {
        self.sent as f64 / self.seconds
    }

    pub fn received_pps(&self) -> f64 {
        self.received as f64 / self.seconds
    }
}

/// Runs iperf3 from `client` to `server`'s address for `secs` seconds, calling `tick` every
/// `interval` while the client runs (to drain a ring buffer, say).
pub fn iperf3(
    lab: &Lab,
    client: &str,
    server: &str,
    load: Load,
    secs: u32,
    interval: Duration,
    mut tick: impl FnMut(),
) -> Result<Outcome> {
    let dst: IpAddr = lab.addr(server)?;
    let server_ns = lab.netns(server)?.to_string();
    let client_ns = lab.netns(client)?.to_string();
    let port = PORT.to_string();

    let cpus = crate::cpus::two();
    let mut srv_args = vec![
        "netns", "exec", &server_ns, "iperf3", "-s", "-1", "-p", &port,
    ];
    let srv_cpu = cpus.map(|(_, s)| s.to_string());
    if let Some(cpu) = &srv_cpu {
        srv_args.extend(["-A", cpu]);
    }
    let mut srv = ChildGuard(Some(
        Command::new("ip")
            .args(&srv_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start iperf3 -s (is iperf3 installed? `cargo xtask setup`)")?,
    ));
    wait_listening(&server_ns, PORT, &mut srv)?;

    let mut args: Vec<String> = [
        "netns",
        "exec",
        &client_ns,
        "iperf3",
        "-c",
        &dst.to_string(),
        "-p",
        &port,
        "-t",
        &secs.to_string(),
        "-i",
        "0",
        "-J",
        "--connect-timeout",
        "3000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some((cpu, _)) = cpus {
        args.extend(["-A".to_string(), cpu.to_string()]);
    }
    if let Load::Udp64 { bits_per_sec } = load {
        args.extend(["-u", "-l", "64", "-b"].map(String::from));
        args.push(bits_per_sec.to_string());
    }
    let mut cli = ChildGuard(Some(
        Command::new("ip")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("start the iperf3 client")?,
    ));
    let mut stdout = cli
        .0
        .as_mut()
        .and_then(|c| c.stdout.take())
        .ok_or_else(|| anyhow!("iperf3 client has no stdout"))?;
    // The report is written at the end; read it on a thread so a full pipe never blocks iperf3.
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });

    let deadline = Instant::now() + Duration::from_secs(u64::from(secs)) + SLACK;
    loop {
        let child = cli.0.as_mut().ok_or_else(|| anyhow!("no client"))?;
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            bail!("iperf3 did not finish within {secs} s + {SLACK:?}: killed");
        }
        tick();
        std::thread::sleep(interval);
    }
    let json = reader
        .join()
        .map_err(|_| anyhow!("iperf3 output reader panicked"))?;
    // The one-off server exits after its test; give it a moment, then the guard kills it.
    let until = Instant::now() + Duration::from_secs(3);
    while let Some(s) = srv.0.as_mut() {
        if s.try_wait()?.is_some() || Instant::now() > until {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    parse(&json, load)
}

/// How the iperf3 pair is placed, for a note.
pub fn pinning() -> String {
    match crate::cpus::two() {
        Some((c, s)) => format!("iperf3 client pinned to CPU {c}, server to CPU {s} (-A)"),
        None => "iperf3 unpinned (fewer than 2 CPUs)".into(),
    }
}

/// Waits (at most 5 s) until something listens on TCP `port` inside `ns`, read from
/// /proc/thread-self/net/tcp{,6} on a thread that entered the namespace.
fn wait_listening(ns: &str, port: u16, srv: &mut ChildGuard) -> Result<()> {
    let needle = format!(":{port:04X}");
    let path = netns::named(ns);
    let start = Instant::now();
    loop {
        let listening = netns::run_in(&path, || {
            let mut text = String::new();
            for f in ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"] {
                text.push_str(&std::fs::read_to_string(f).unwrap_or_default());
            }
            Ok(text.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.len() > 3 && w[1].ends_with(&needle) && w[3] == "0A"
            }))
        })?;
        if listening {
            return Ok(());
        }
        if let Some(s) = srv.0.as_mut() {
            if let Some(status) = s.try_wait()? {
                bail!("iperf3 -s in {ns} exited ({status}) before listening");
            }
        }
        if start.elapsed() > Duration::from_secs(5) {
            bail!("iperf3 -s in {ns} is not listening on port {port} after 5 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn parse(json: &str, load: Load) -> Result<Outcome> {
    let v: Value = serde_json::from_str(json)
        .with_context(|| format!("iperf3 -J printed no JSON: {}", json.trim()))?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        bail!("iperf3: {e}");
    }
    let end = &v["end"];
    let num = |x: &Value, what: &str| -> Result<f64> {
        x.as_f64()
            .ok_or_else(|| anyhow!("iperf3's report has no {what}"))
    };
    let mut out = Outcome {
        seconds: num(&end["sum_sent"]["seconds"], "end.sum_sent.seconds")?,
        ..Outcome::default()
    };
    match load {
        Load::Tcp => {
            out.bits_per_sec = num(
                &end["sum_received"]["bits_per_second"],
                "end.sum_received.bits_per_second",
            )?;
        }
        Load::Udp64 { .. } => {
            out.sent = num(&end["sum_sent"]["packets"], "end.sum_sent.packets")? as u64;
            let got = num(&end["sum_received"]["packets"], "end.sum_received.packets")? as u64;
            let lost = num(
                &end["sum_received"]["lost_packets"],
                "end.sum_received.lost_packets",
            )? as u64;
            out.received = got.saturating_sub(lost);
        }
    }
    if out.seconds <= 0.0 {
        bail!("iperf3 reported a test of {} s", out.seconds);
    }
    Ok(out)
}
