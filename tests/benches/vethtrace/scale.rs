//! Figure 7: a host with 100 pods. [`Fleet`] builds 100 namespaces, each with one veth whose
//! peer sits in a shared node namespace (100 + 100 veths, links left down so nothing moves on
//! them), then this measures attaching to all 101 namespaces (400 hooks) the way a trace does
//! by default (`auto`, which for 400 hooks means the device tracepoints: survey, then one
//! HOOKS key per interface), the same with TCX links and with clsact filters for comparison,
//! `topology::discover` of them, and the release `vethtrace trace` on them: start-up time,
//! RSS and CPU use while idle (and start-up with `--attach-mode tcx`).
//!
//! TCX attach time is the kernel's: each link create (and release) waits for two RCU grace
//! periods while holding the global RTNL. The figures show it: the cost per hook, and the same
//! 400 hooks attached by [`THREADS`] threads at once (one loaded object and a share of the
//! namespaces each), which takes no less time than one thread does.
//!
//! Lab rule: every namespace is created by this file under the throwaway prefix
//! `vt-<pid>-<n>-` (so `Lab::create` of a later run sweeps them if this process dies without
//! unwinding), every link is made inside them, and [`Fleet`]'s Drop deletes them all.

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use vethtrace::{
    attach::{self, AttachMode, Selection},
    loader::{self, LoadOptions},
    netns,
    topology::{self, DiscoverOptions},
};

use crate::{
    report::{Budget, Sample, Section, Unit},
    traffic::ChildGuard,
};

const PODS: usize = 100;
const ROUNDS: usize = 5;
/// clsact attaches are only context for the TCX figure.
const CLSACT_ROUNDS: usize = 3;
/// Threads attaching at once in the concurrency check.
const THREADS: usize = 4;
/// Idle CPU is sampled over this many one-second windows.
const IDLE_WINDOWS: usize = 5;

/// Fleet prefixes count from here, far from `Lab::create`'s per-process counter.
static COUNTER: AtomicU32 = AtomicU32::new(1_000_000);

/// 100 pod namespaces and a node namespace, deleted on drop.
pub struct Fleet {
    /// Node first, then the pods; recorded before they are created, so Drop removes whatever
    /// part of them exists.
    pub names: Vec<String>,
}

impl Fleet {
    pub fn create(pods: usize) -> Result<Fleet> {
        let prefix = format!(
            "vt-{}-{}-",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let node = format!("{prefix}node");
        let mut names = vec![node.clone()];
        names.extend((0..pods).map(|i| format!("{prefix}p{i:03}")));
        let fleet = Fleet { names };
        let add: Vec<String> = fleet
            .names
            .iter()
            .map(|n| format!("netns add {n}"))
            .collect();
        ip_batch(None, &add)?;
        // Created in the node with the peer placed directly in its pod: nothing in the root
        // namespace, nothing brought up.
        let veths: Vec<String> = fleet.names[1..]
            .iter()
            .enumerate()
            .map(|(i, pod)| format!("link add h{i:03} type veth peer name eth0 netns {pod}"))
            .collect();
        ip_batch(Some(&node), &veths)?;
        Ok(fleet)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let del: Vec<String> = self
            .names
            .iter()
            .rev()
            .map(|n| format!("netns del {n}"))
            .collect();
        let _ = ip_batch(None, &del);
    }
}

/// `ip [-n NS] -force -batch -` with `lines` on stdin.
fn ip_batch(ns: Option<&str>, lines: &[String]) -> Result<()> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    cmd.args(["-force", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("run ip -batch")?;
    {
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("ip -batch has no stdin"))?;
        stdin.write_all(lines.join("\n").as_bytes())?;
        stdin.write_all(b"\n")?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "ip -batch ({}…) failed: {}",
            lines.first().map_or("", String::as_str),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub fn run(sec: &mut Section, cli: Result<&Path, &str>) -> Result<()> {
    let built = Instant::now();
    let fleet = Fleet::create(PODS)?;
    let build_time = built.elapsed();
    let paths: Vec<_> = fleet.names.iter().map(|n| netns::named(n)).collect();

    // The default: what `Tracer::start` does for `auto` (survey, resolve, attach).
    let mut tp_loaded = loader::load(&LoadOptions {
        device_tracepoints: true,
        ..LoadOptions::default()
    })?;
    let mut default_s = Vec::new();
    let mut default_mode = AttachMode::Auto;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let survey = attach::survey(&paths, &Selection::default())?;
        default_mode = attach::resolve(AttachMode::Auto, &survey);
        let a = match default_mode {
            AttachMode::Tracepoints => attach::register(&mut tp_loaded.ebpf, survey)?,
            m => attach::attach_all(&mut tp_loaded.ebpf, &paths, &Selection::default(), m)?,
        };
        default_s.push(t.elapsed().as_secs_f64());
        if a.hooks() != PODS * 4 {
            bail!(
                "auto attach made {} hooks, expected {}",
                a.hooks(),
                PODS * 4
            );
        }
    }
    drop(tp_loaded);

    let mut loaded = loader::load(&LoadOptions::default())?;
    let (mut attach_s, mut detach_s) = (Vec::new(), Vec::new());
    let mut hooks = 0;
    let mut mechanisms = String::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let a = attach::attach_all(
            &mut loaded.ebpf,
            &paths,
            &Selection::default(),
            AttachMode::Auto,
        )?;
        attach_s.push(t.elapsed().as_secs_f64());
        hooks = a.hooks();
        mechanisms = a
            .mechanisms()
            .iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
            .join("+");
        let t = Instant::now();
        drop(a);
        detach_s.push(t.elapsed().as_secs_f64());
    }
    // The same hooks attached from THREADS threads at once: each needs its own loaded object
    // (attach_all borrows it mutably), and takes every THREADS-th namespace.
    let mut extra = Vec::new();
    for _ in 1..THREADS {
        extra.push(loader::load(&LoadOptions::default())?);
    }
    let mut concurrent_s = Vec::new();
    for _ in 0..CLSACT_ROUNDS {
        let t = Instant::now();
        let made = std::thread::scope(|s| {
            let handles: Vec<_> = std::iter::once(&mut loaded)
                .chain(extra.iter_mut())
                .enumerate()
                .map(|(k, l)| {
                    let mine: Vec<_> = paths.iter().skip(k).step_by(THREADS).cloned().collect();
                    s.spawn(move || {
                        attach::attach_all(
                            &mut l.ebpf,
                            &mine,
                            &Selection::default(),
                            AttachMode::Auto,
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| anyhow!("an attaching thread panicked"))?
                })
                .collect::<Result<Vec<_>>>()
        })?;
        concurrent_s.push(t.elapsed().as_secs_f64());
        let n: usize = made.iter().map(|a| a.hooks()).sum();
        if n != PODS * 4 {
            bail!("{THREADS} threads made {n} hooks, expected {}", PODS * 4);
        }
        drop(made);
    }
    drop(extra);
    // The same through clsact (netlink qdisc + filter per hook), for comparison.
    let mut clsact_s = Vec::new();
    for _ in 0..CLSACT_ROUNDS {
        let t = Instant::now();
        let a = attach::attach_all(
            &mut loaded.ebpf,
            &paths,
            &Selection::default(),
            AttachMode::Clsact,
        )?;
        clsact_s.push(t.elapsed().as_secs_f64());
        drop(a);
    }
    drop(loaded);
    if hooks != PODS * 4 {
        bail!("attach_all made {hooks} hooks, expected {}", PODS * 4);
    }
    let per_hook = Sample::new(attach_s.iter().map(|s| s / hooks as f64).collect());
    sec.figure(
        format!(
            "attach {} namespaces, {hooks} hooks, default mode (auto → {})",
            paths.len(),
            match default_mode {
                AttachMode::Tracepoints => "device tracepoints",
                _ => "TCX",
            }
        ),
        Unit::Secs,
        Budget::AtMost(1.0),
        Sample::new(default_s),
    );
    sec.figure(
        format!("attach_all with {mechanisms} links"),
        Unit::Secs,
        Budget::Info,
        Sample::new(attach_s),
    );
    sec.figure(
        format!("attach_all per hook ({mechanisms} links)"),
        Unit::Secs,
        Budget::Info,
        per_hook,
    );
    sec.figure(
        format!("attach_all from {THREADS} threads at once"),
        Unit::Secs,
        Budget::Info,
        Sample::new(concurrent_s),
    );
    sec.figure(
        format!("detach all {mechanisms} links (drop Attachments)"),
        Unit::Secs,
        Budget::Info,
        Sample::new(detach_s),
    );
    sec.figure(
        "attach_all with --attach-mode clsact",
        Unit::Secs,
        Budget::Info,
        Sample::new(clsact_s),
    );

    let mut discover_s = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let topo = topology::discover(&DiscoverOptions {
            netns: fleet.names.clone(),
            ..Default::default()
        })?;
        discover_s.push(t.elapsed().as_secs_f64());
        if topo.namespaces.len() != fleet.names.len() {
            bail!(
                "discover returned {} namespaces of {}",
                topo.namespaces.len(),
                fleet.names.len()
            );
        }
    }
    sec.figure(
        format!("topology::discover of the {} namespaces", fleet.names.len()),
        Unit::Secs,
        Budget::AtMost(1.0),
        Sample::new(discover_s),
    );

    match cli {
        Ok(bin) => {
            cli_figures(sec, bin, &fleet)?;
            let tcx = cli_start(bin, &fleet, &["--attach-mode", "tcx"])?;
            sec.figure(
                format!(
                    "vethtrace trace --attach-mode tcx --netns ×{}: start to ready",
                    fleet.names.len()
                ),
                Unit::Secs,
                Budget::Info,
                Sample::new(vec![tcx.startup]),
            );
            drop(tcx);
        }
        Err(why) => {
            for (f, u, b) in [
                (
                    "RSS of vethtrace trace with 400 hooks",
                    Unit::MiB,
                    Budget::AtMost(30.0),
                ),
                ("idle CPU of that trace", Unit::Percent, Budget::Below(0.5)),
            ] {
                sec.not_measured(f, u, b, why);
            }
        }
    }
    sec.note(format!(
        "the default (`auto`) hooks a trace that starts with more than {} hooks through the device \
         tracepoints (tp_btf net:netif_receive_skb and net:net_dev_queue, attached once, plus one HOOKS \
         map key per interface): its time is the namespace survey and the map inserts, whatever the \
         number of hooks; TCX and clsact rows are the per-interface mechanisms, for comparison",
        attach::AUTO_TCX_MAX_HOOKS
    ));
    sec.note(
        "TCX: tcx_link_attach and tcx_link_release hold the global RTNL across two synchronize_rcu() \
         (tcx_entry_sync, bpf_mprog_commit), so hooks attach one grace-period pair at a time whatever \
         the number of threads; clsact filters need no grace period",
    );
    sec.note(format!(
        "{PODS} pod namespaces + 1 node namespace, one veth pair each (built in {:.1} s with two `ip -batch` runs, links down); {ROUNDS} rounds each",
        build_time.as_secs_f64()
    ));
    drop(fleet);
    Ok(())
}

/// A release `vethtrace trace --netns …` on every fleet namespace, ready; stopped with SIGTERM
/// when dropped.
struct Started {
    trace: ChildGuard,
    pid: u32,
    /// Seconds from spawn to the ready file.
    startup: f64,
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(c) = self.trace.0.as_mut() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::SIGTERM,
            );
            let until = Instant::now() + Duration::from_secs(10);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn cli_start(bin: &Path, fleet: &Fleet, extra: &[&str]) -> Result<Started> {
    let ready = std::env::temp_dir().join(format!("vethtrace-bench-{}-ready", std::process::id()));
    let _ = std::fs::remove_file(&ready);
    let mut cmd = Command::new(bin);
    cmd.arg("trace").args(extra);
    for n in &fleet.names {
        cmd.args(["--netns", n]);
    }
    cmd.arg("--ready-file")
        .arg(&ready)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut trace = ChildGuard(Some(cmd.spawn().context("start vethtrace trace")?));
    let pid = trace.id().ok_or_else(|| anyhow!("no pid"))?;
    wait_ready(&mut trace, &ready, Duration::from_secs(60))?;
    let startup = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&ready);
    Ok(Started {
        trace,
        pid,
        startup,
    })
}

/// The release `vethtrace trace --netns …` on every fleet namespace: start-up time, RSS, and
/// CPU used while nothing moves.
fn cli_figures(sec: &mut Section, bin: &Path, fleet: &Fleet) -> Result<()> {
    let started = cli_start(bin, fleet, &[])?;
    let (pid, startup) = (started.pid, started.startup);
    std::thread::sleep(Duration::from_secs(1));

    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> Result<f64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| anyhow!("/proc/{pid}/status has no {key}"))
    };
    let rss = kib("VmRSS:")? / 1024.0;
    let hwm = kib("VmHWM:")? / 1024.0;
    let parts = rss_parts(pid, bin);

    let ticks0 = cpu_ticks(pid)?;
    let switches0 = wakeups(pid)?;
    let t0 = Instant::now();
    let mut windows = Vec::new();
    for _ in 0..IDLE_WINDOWS {
        let (a, ta) = (cpu_ns(pid)?, Instant::now());
        std::thread::sleep(Duration::from_secs(1));
        let (b, tb) = (cpu_ns(pid)?, Instant::now());
        windows.push(100.0 * b.saturating_sub(a) as f64 / (tb - ta).as_nanos() as f64);
    }
    let ticks = cpu_ticks(pid)?.saturating_sub(ticks0);
    let idle_secs = t0.elapsed().as_secs_f64();
    let stat_pct = 100.0 * ticks as f64 / clk_tck() / idle_secs;
    let wakeups_per_sec = wakeups(pid)?.saturating_sub(switches0) as f64 / idle_secs;

    drop(started);

    sec.figure(
        format!(
            "vethtrace trace --netns ×{} (default mode): start to ready",
            fleet.names.len()
        ),
        Unit::Secs,
        Budget::Info,
        Sample::new(vec![startup]),
    );
    sec.figure(
        "RSS of vethtrace trace with 400 hooks",
        Unit::MiB,
        Budget::AtMost(30.0),
        Sample::new(vec![rss]),
    );
    sec.figure(
        "idle CPU of that trace (per 1 s window)",
        Unit::Percent,
        Budget::Below(0.5),
        Sample::new(windows),
    );
    sec.note(format!(
        "release binary {}; RSS read from /proc/PID/status 1 s after ready (peak VmHWM {hwm:.1} MiB; by mapping: {parts})",
        shown(bin),
    ));
    sec.note(format!(
        "idle CPU from the threads' schedstat run time; {stat_pct:.2} % by /proc/PID/stat utime+stime over the same {IDLE_WINDOWS} s; {wakeups_per_sec:.0} wakeups/s (voluntary context switches)"
    ));
    Ok(())
}

/// `bin` relative to the repository root when it lies inside it.
fn shown(bin: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent();
    root.and_then(|r| bin.strip_prefix(r).ok())
        .unwrap_or(bin)
        .display()
        .to_string()
}

/// Waits until `ready` exists; an early exit of the trace is an error quoting its stderr.
pub fn wait_ready(trace: &mut ChildGuard, ready: &Path, limit: Duration) -> Result<()> {
    let start = Instant::now();
    while !ready.exists() {
        let child = trace
            .0
            .as_mut()
            .ok_or_else(|| anyhow!("no trace process"))?;
        if let Some(status) = child.try_wait()? {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            bail!(
                "vethtrace trace exited before attaching ({status}): {}",
                err.trim()
            );
        }
        if start.elapsed() > limit {
            bail!("vethtrace trace was not ready after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Voluntary context switches of every thread of a process: how often it slept and woke.
fn wakeups(pid: u32) -> Result<u64> {
    let mut total = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = t?.path().join("status");
        if let Ok(s) = std::fs::read_to_string(path) {
            total += s
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(total)
}

/// Where the resident memory is, from /proc/PID/smaps: "heap 29.5 MiB, BPF maps mapped
/// 8.0 MiB, the binary 4.1 MiB, other 2.6 MiB".
fn rss_parts(pid: u32, bin: &Path) -> String {
    let Ok(smaps) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return "smaps unreadable".into();
    };
    let bin = bin.to_string_lossy();
    let (mut heap, mut maps, mut binary, mut other) = (0u64, 0u64, 0u64, 0u64);
    let mut current = "";
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // A mapping header: "start-end perms offset dev inode [name]".
            current = line.split_whitespace().nth(5).unwrap_or("");
        } else if let Some(v) = line.strip_prefix("Rss:") {
            let kib: u64 = v
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            match current {
                "[heap]" => heap += kib,
                c if c.starts_with("anon_inode:bpf") => maps += kib,
                c if c == bin => binary += kib,
                _ => other += kib,
            }
        }
    }
    let mib = |k: u64| k as f64 / 1024.0;
    format!(
        "heap {:.1} MiB, BPF maps mapped {:.1} MiB, the binary {:.1} MiB, other {:.1} MiB",
        mib(heap),
        mib(maps),
        mib(binary),
        mib(other)
    )
}

/// utime + stime of a process, in clock ticks (/proc/PID/stat fields 14 and 15).
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("unreadable /proc/{pid}/stat"))?;
    let f: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| -> Result<u64> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("/proc/{pid}/stat has no field {}", i + 3))
    };
    Ok(field(11)? + field(12)?)
}

/// Nanoseconds every thread of a process has run (sum of /proc/PID/task/*/schedstat), which
/// unlike clock ticks resolves a mostly idle process.
fn cpu_ns(pid: u32) -> Result<u64> {
    let mut total = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = t?.path().join("schedstat");
        // A thread may exit between listing and reading.
        if let Ok(s) = std::fs::read_to_string(path) {
            total += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(total)
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}
