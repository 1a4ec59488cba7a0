//! Figures 3 and 4: what one program run costs.
//!
//! 3 (live): UDP 64-byte floods across the bridge lab while BPF_ENABLE_STATS(BPF_STATS_RUN_TIME)
//! is held (an fd: statistics stop when it closes; the global sysctl is never written), reading
//! `run_time_ns` / `run_cnt` of each of our programs through BPF_OBJ_GET_INFO_BY_FD before and
//! after. Emitting (filter matching the flow) and filtered-out trials alternate. Then the
//! wakeup trap: the same emitting flood at a fixed rate with the reader caught up (draining
//! every 100 µs) against not draining at all until the flood is over (a 64 MiB ring holds it
//! all); a program that asked for a wakeup per event would be far slower when caught up.
//!
//! 4 (BPF_PROG_TEST_RUN): the ingress program on fixed frames, `repeat` runs per call; the
//! kernel reports the mean ns per run. Written as a baseline line for later comparison.

use std::{collections::BTreeMap, os::fd::OwnedFd, path::Path, time::Duration};

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    programs::{SchedClassifier, TestRun, TestRunOptions},
    sys::{enable_stats, Stats},
};
use etherparse::PacketBuilder;
use vethtrace::{
    attach::AttachMode,
    events::{EventReader, DRAIN_INTERVAL},
    filter::Filter,
    lab::Lab,
    loader::{self, LoadOptions, Loaded},
};
use vethtrace_common::names;
use vethtrace_tests::rawbpf;

use crate::{
    emptyprog::{Direction, EmptyProgram},
    report::{Budget, Sample, Section, Unit},
    session::{ns_per_run, Session},
    throughput::MATCH_NOTHING,
    traffic::{self, Load},
};

const ROUNDS: usize = 5;
/// ns/run budgets of issue 6.
const EMITTING_NS: f64 = 60.0;
const FILTERED_NS: f64 = 25.0;
/// The wakeup-trap flood: fixed rate so both modes carry the same packets, and small enough
/// that a second of it (4 events per datagram) fits the ring without being drained.
const TRAP_PPS: u64 = 50_000;
const TRAP_RING: u32 = 64 << 20;

/// Figure 3, live traffic.
pub fn live(lab: &Lab, sec: &mut Section) -> Result<()> {
    let emit_filter = format!("udp port {}", traffic::PORT);
    // Statistics are on while this fd is open (dropped at the end of this function).
    let stats = enable_stats(Stats::RunTime)
        .context("bpf(BPF_ENABLE_STATS, BPF_STATS_RUN_TIME) (needs CAP_SYS_ADMIN, Linux ≥ 5.8)")?;

    // The floor: an empty program on ns02's veth02 ingress, measured the same way in every
    // trial (statistics and the program call cost the same for any program on this kernel).
    let floor_prog = EmptyProgram::load("floor")?;
    let floor_link = floor_prog.attach(lab, "ns02", "veth02", Direction::Ingress)?;
    let mut floor = Vec::new();
    // (program, emitting?) → ns/run per trial.
    let mut per: BTreeMap<(&'static str, bool), Vec<f64>> = BTreeMap::new();
    let mut runs: BTreeMap<(&'static str, bool), u64> = BTreeMap::new();
    for round in 0..ROUNDS {
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        // tc hooks (TCX), then the device tracepoints, each emitting and filtered out.
        let trials = [AttachMode::Auto, AttachMode::Tracepoints]
            .into_iter()
            .flat_map(|m| order.map(|e| (m, e)));
        for (mode, emitting) in trials {
            let filter = if emitting {
                emit_filter.as_str()
            } else {
                MATCH_NOTHING
            };
            let mut s = Session::start_with(lab, filter, None, mode)?;
            let before = s.run_stats()?;
            let floor_before = floor_prog.stats()?;
            traffic::iperf3(
                lab,
                "ns01",
                "ns02",
                Load::Udp64 { bits_per_sec: 0 },
                1,
                DRAIN_INTERVAL,
                || {
                    s.drain();
                },
            )?;
            let after = s.run_stats()?;
            let floor_after = floor_prog.stats()?;
            if let Some(ns) = ns_per_run(&[floor_before], &[floor_after])[0].1 {
                floor.push(ns);
            }
            s.drain();
            for (prog, ns, n) in ns_per_run(&before, &after) {
                if let Some(ns) = ns {
                    per.entry((prog, emitting)).or_default().push(ns);
                }
                *runs.entry((prog, emitting)).or_default() += n;
            }
        }
    }
    for prog in crate::session::PROGRAMS {
        for emitting in [true, false] {
            let (label, budget) = if emitting {
                ("emitting", EMITTING_NS)
            } else {
                ("filtered out", FILTERED_NS)
            };
            let figure = format!("{prog}, {label}");
            match per.remove(&(prog, emitting)) {
                Some(v) => sec.figure(figure, Unit::Ns, Budget::AtMost(budget), Sample::new(v)),
                None => sec.not_measured(
                    figure,
                    Unit::Ns,
                    Budget::AtMost(budget),
                    "the program did not run (or is not loaded on this kernel)",
                ),
            }
        }
    }
    let floor = Sample::new(floor);
    let floor_median = floor.median();
    sec.figure(
        "an empty TCX program on ns02 veth02 ingress, same floods",
        Unit::Ns,
        Budget::Info,
        floor,
    );
    sec.note(format!(
        "the empty program is this machine's floor for the figures above ({floor_median:.0} ns: the program call and BPF_ENABLE_STATS' own clock reads, with this kernel's return-thunk mitigations); vethtrace's own cost is a figure minus it"
    ));
    drop(floor_link);
    drop(floor_prog);
    let count = |p: &str, e: bool| runs.get(&(p, e)).copied().unwrap_or(0);
    sec.note(format!(
        "{ROUNDS} × (tc hooks, device tracepoints) × (emitting `{emit_filter}`, filtered out `{MATCH_NOTHING}`), iperf3 -u -l 64 -b 0 -t 1 ns01 → ns02; program runs counted: tc ingress {} / {}, tc egress {} / {}, dev ingress {} / {}, dev egress {} / {}, kfree_skb {} / {} (emitting / filtered out)",
        count(names::TC_INGRESS_PROG, true),
        count(names::TC_INGRESS_PROG, false),
        count(names::TC_EGRESS_PROG, true),
        count(names::TC_EGRESS_PROG, false),
        count(names::DEV_INGRESS_PROG, true),
        count(names::DEV_INGRESS_PROG, false),
        count(names::DEV_EGRESS_PROG, true),
        count(names::DEV_EGRESS_PROG, false),
        count(names::KFREE_SKB_PROG, true),
        count(names::KFREE_SKB_PROG, false),
    ));
    sec.note("the device tracepoints run for every packet of every device on the machine (lab or not, traced or not); a packet of an interface not traced stops at the HOOKS lookup, a traced one is probe-read and parsed, so their figures include the lab's own traffic only as far as the machine was otherwise idle");
    sec.note("vethtrace_kfree_skb runs on every skb freed with a drop reason on the whole machine; frees outside the traced namespaces stop at the namespace lookup, so its figures mix both (the emitting ones here are the receiving socket's overflow drops)");

    wakeup_trap(lab, sec)?;
    drop(stats);
    Ok(())
}

/// ns/run of both tc programs together between two readings.
fn tc_ns(before: &[(&'static str, u64, u64)], after: &[(&'static str, u64, u64)]) -> Option<f64> {
    let (mut t, mut n) = (0u64, 0u64);
    for (b, a) in before.iter().zip(after) {
        if a.0 == names::TC_INGRESS_PROG || a.0 == names::TC_EGRESS_PROG {
            t += a.1.saturating_sub(b.1);
            n += a.2.saturating_sub(b.2);
        }
    }
    (n > 0).then(|| t as f64 / n as f64)
}

fn wakeup_trap(lab: &Lab, sec: &mut Section) -> Result<()> {
    let filter = format!("udp port {}", traffic::PORT);
    let mut caught_up = Vec::new();
    let mut behind = Vec::new();
    let mut lost_behind = 0;
    for round in 0..ROUNDS {
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for drain in order {
            let mut s = Session::start(lab, &filter, Some(TRAP_RING))?;
            s.drain();
            let before = s.run_stats()?;
            let load = Load::udp_pps(TRAP_PPS);
            if drain {
                traffic::iperf3(
                    lab,
                    "ns01",
                    "ns02",
                    load,
                    1,
                    Duration::from_micros(100),
                    || {
                        s.drain();
                    },
                )?;
            } else {
                traffic::iperf3(lab, "ns01", "ns02", load, 1, DRAIN_INTERVAL, || {})?;
            }
            let after = s.run_stats()?;
            s.drain();
            if !drain {
                lost_behind += s.counters()?.lost;
            }
            let ns = tc_ns(&before, &after).ok_or_else(|| anyhow!("the tc programs never ran"))?;
            if drain {
                caught_up.push(ns);
            } else {
                behind.push(ns);
            }
        }
    }
    let ratios = caught_up.iter().zip(&behind).map(|(a, b)| a / b).collect();
    sec.figure(
        "wakeup trap: tc ns/run reader caught up / not draining",
        Unit::Ratio,
        Budget::AtMost(1.2),
        Sample::new(ratios),
    );
    sec.figure(
        "tc ns/run, reader caught up",
        Unit::Ns,
        Budget::Info,
        Sample::new(caught_up),
    );
    sec.figure(
        "tc ns/run, reader not draining",
        Unit::Ns,
        Budget::Info,
        Sample::new(behind),
    );
    sec.note(format!(
        "wakeup trap: {ROUNDS} × (drain every 100 µs, no drain until the end), UDP 64 B at {} kpps for 1 s, 64 MiB ring; events lost while not draining: {lost_behind}{}",
        TRAP_PPS / 1000,
        if lost_behind > 0 {
            " (the ring overflowed: failed reserves are cheaper, so that side is flattered)"
        } else {
            ""
        }
    ));
    Ok(())
}

/// The tc ingress program loaded alone (nothing attached), with its ring.
struct Bare {
    loaded: Loaded,
    reader: EventReader,
}

/// TC_ACT_UNSPEC as BPF_PROG_TEST_RUN reports it: the tracer passes every packet on.
const PASS_ON: u32 = -1i32 as u32;
/// Runs per BPF_PROG_TEST_RUN call: enough to time, few enough that the ring never fills.
const REPEAT: u32 = 20_000;

impl Bare {
    fn load(filter: &str) -> Result<Bare> {
        let words: Vec<String> = filter.split_whitespace().map(str::to_owned).collect();
        let filter = Filter::new(&words).map_err(|e| anyhow!("filter `{filter}`: {e}"))?;
        let mut loaded = loader::load(&LoadOptions {
            filter: filter.insns,
            drops: false,
            netns_filter: false,
            snapshots: false,
            ring_bytes: Some(16 << 20),
            device_tracepoints: false,
            tc_ingress: false,
        })?;
        let reader = EventReader::new(&mut loaded.ebpf)?;
        Ok(Bare { loaded, reader })
    }

    fn program(&self) -> Result<&SchedClassifier> {
        Ok(self
            .loaded
            .ebpf
            .program(names::TC_INGRESS_PROG)
            .ok_or_else(|| anyhow!("no program {}", names::TC_INGRESS_PROG))?
            .try_into()?)
    }

    /// Mean ns per run over REPEAT runs on `frame`.
    fn ns_per_run(&mut self, frame: &[u8]) -> Result<f64> {
        let r = self
            .program()?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: REPEAT,
                ..Default::default()
            })
            .context("BPF_PROG_TEST_RUN")?;
        if r.return_value != PASS_ON {
            bail!(
                "the program returned {} instead of passing the packet on",
                r.return_value
            );
        }
        self.reader.drain(|_| {});
        Ok(r.duration.as_nanos() as f64)
    }
}

const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
const A: [u8; 4] = [10, 222, 1, 3];
const B: [u8; 4] = [10, 222, 2, 3];

fn icmp_frame() -> Result<Vec<u8>> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv4(A, B, 64)
        .icmpv4_echo_request(7, 3)
        .write(&mut v, &[0; 56])?;
    Ok(v)
}

fn tcp_frame() -> Result<Vec<u8>> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv4(A, B, 64)
        .tcp(40000, 5201, 0xdead_beef, 64240)
        .ack(1)
        .psh()
        .write(&mut v, &[0; 64])?;
    Ok(v)
}

fn vxlan_frame() -> Result<Vec<u8>> {
    let mut payload = vec![0x08, 0, 0, 0, 0, 0, 1, 0]; // I flag, VNI 1
    payload.extend_from_slice(&icmp_frame()?);
    let mut v = Vec::new();
    PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv4([172, 30, 0, 1], [172, 30, 0, 2], 64)
        .udp(41000, 8472)
        .write(&mut v, &payload)?;
    Ok(v)
}

/// Mean ns per run of a program loaded with `rawbpf` over REPEAT runs on `frame`.
fn raw_ns_per_run(prog: &OwnedFd, frame: &[u8]) -> Result<f64> {
    let (_, ns) =
        rawbpf::test_run(prog, frame, REPEAT).context("BPF_PROG_TEST_RUN (empty program)")?;
    Ok(f64::from(ns))
}

/// The baseline line's prefix in BENCHMARKS.md.
const BASELINE: &str = "baseline prog-test-run ns/run:";

/// Figure 4.
pub fn test_run(sec: &mut Section, previous_md: Option<&str>) -> Result<()> {
    let frames = [
        ("icmp4", "IPv4 ICMP echo", icmp_frame()?),
        ("tcp4", "IPv4 TCP data", tcp_frame()?),
        ("vxlan", "VXLAN, IPv4 ICMP inside", vxlan_frame()?),
    ];
    let mut emit = Bare::load("")?;
    let mut filtered = Bare::load(MATCH_NOTHING)?;
    let empty = EmptyProgram::load("empty")?;
    let mut per: BTreeMap<(usize, bool), Vec<f64>> = BTreeMap::new();
    let mut floor = Vec::new();
    for round in 0..ROUNDS {
        floor.push(raw_ns_per_run(empty.fd(), &frames[0].2)?);
        for (i, (_, _, frame)) in frames.iter().enumerate() {
            let order = if (round + i) % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for e in order {
                let bare = if e { &mut emit } else { &mut filtered };
                per.entry((i, e)).or_default().push(bare.ns_per_run(frame)?);
            }
        }
    }
    let mut baseline = Vec::new();
    for (i, (key, what, frame)) in frames.iter().enumerate() {
        for e in [true, false] {
            let v = Sample::new(per.remove(&(i, e)).unwrap_or_default());
            let label = if e { "emit" } else { "filtered" };
            baseline.push(format!("{key}-{label}={:.1}", v.median()));
            sec.figure(
                format!(
                    "{what} ({} B), {}",
                    frame.len(),
                    if e { "emitting" } else { "filtered out" }
                ),
                Unit::Ns,
                Budget::Baseline,
                v,
            );
        }
    }
    let floor = Sample::new(floor);
    let floor_median = floor.median();
    sec.figure(
        format!(
            "an empty tc program (`return TC_ACT_UNSPEC`), {} B",
            frames[0].2.len()
        ),
        Unit::Ns,
        Budget::Info,
        floor,
    );
    sec.note(format!(
        "the empty program is the floor of this measurement on this machine ({floor_median:.0} ns: the test-run loop and the program call, with this kernel's return-thunk mitigations); vethtrace's own cost is the figure above minus it"
    ));
    let line = format!("{BASELINE} {}", baseline.join(" "));
    sec.note(format!(
        "{ROUNDS} rounds × BPF_PROG_TEST_RUN repeat {REPEAT} per frame and mode (mean per run, as the kernel reports it); the program runs on a synthetic skb in the bench's own context, nothing attached"
    ));
    if let Some(prev) = previous_md.and_then(previous_baseline) {
        sec.note(format!(
            "against the previous BENCHMARKS.md baseline: {}",
            compare(&prev, &line)
        ));
    }
    sec.verbatim.push(format!("`{line}`"));
    Ok(())
}

/// The baseline line in a previous BENCHMARKS.md.
fn previous_baseline(md: &str) -> Option<String> {
    md.lines().find_map(|l| {
        l.find(BASELINE)
            .map(|i| l[i..].trim_end_matches('`').to_string())
    })
}

/// "icmp4-emit ×1.02, …" (new / old) for keys in both lines.
fn compare(old: &str, new: &str) -> String {
    let parse = |l: &str| -> BTreeMap<String, f64> {
        l.split_whitespace()
            .filter_map(|w| w.split_once('='))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect()
    };
    let (o, n) = (parse(old), parse(new));
    let parts: Vec<String> = n
        .iter()
        .filter_map(|(k, v)| Some(format!("{k} ×{:.2}", v / o.get(k)?)))
        .collect();
    if parts.is_empty() {
        "no common keys".into()
    } else {
        parts.join(", ")
    }
}

/// Whether BENCHMARKS.md exists at `root` (read for the previous baseline).
pub fn read_previous(root: &Path) -> Option<String> {
    std::fs::read_to_string(root.join("BENCHMARKS.md")).ok()
}
