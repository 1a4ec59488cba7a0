//! Figure 6: the highest event rate the tracer keeps up with, losing nothing.
//!
//! A `vethtrace::tracer::Tracer` like `vethtrace trace --netns …` starts it (every packet, drops
//! on, namespace filter, 4 MiB ring) on the bridge lab and drains it with `collect()` every
//! 10 ms; UDP 64-byte floods from ns01 to ns02 offer more and more packets per second (1 s each,
//! 4 events per datagram plus a drop event for each one the receiving socket overflows) until
//! the tracer reports `lost > 0`, or until the sender cannot offer more.
//!
//! When the sender runs out first, a second measurement takes the network stack out: a thread
//! feeds the tc program synthetic frames through BPF_PROG_TEST_RUN at paced rates while this
//! thread drains and decodes every 10 ms, giving the rate the ring and reader sustain.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use etherparse::PacketBuilder;
use vethtrace::{
    attach::{AttachMode, Selection},
    btf::DropReasons,
    decode::{Decoder, Names},
    events::{EventReader, DRAIN_INTERVAL},
    kallsyms::Kallsyms,
    lab::Lab,
    loader::{self, LoadOptions},
    netns,
    tracer::{Target, Tracer, TracerOptions},
};
use vethtrace_common::{names, Event};

use crate::{
    report::{Budget, Sample, Section, Unit},
    traffic::{self, Load},
};

/// Offered datagrams per second, in order; 0 is "as fast as the sender can".
const STEPS: [u64; 8] = [
    25_000, 50_000, 100_000, 150_000, 200_000, 300_000, 400_000, 0,
];
/// The sender is saturated when it sends less than this share of what was asked.
const SATURATED: f64 = 0.9;
const GOAL: f64 = 1e6;

struct Step {
    offered: u64,
    sent_pps: f64,
    events_per_sec: f64,
    lost: u64,
}

pub fn run(lab: &Lab, sec: &mut Section) -> Result<()> {
    let targets = lab
        .roles()
        .iter()
        .map(|(role, ns)| Target {
            path: netns::named(ns),
            name: role.to_string(),
        })
        .collect();
    let mut tracer = Tracer::start(&TracerOptions {
        load: LoadOptions {
            filter: Vec::new(),
            drops: true,
            netns_filter: true,
            snapshots: false,
            ring_bytes: None,
        },
        targets,
        selection: Selection::default(),
        mode: AttachMode::Auto,
    })?;
    let mut steps = Vec::new();
    for offered in STEPS {
        let load = if offered == 0 {
            Load::Udp64 { bits_per_sec: 0 }
        } else {
            Load::udp_pps(offered)
        };
        tracer.collect();
        let c0 = tracer.counters()?;
        let out = traffic::iperf3(lab, "ns01", "ns02", load, 1, DRAIN_INTERVAL, || {
            tracer.collect();
        })?;
        tracer.collect();
        let c1 = tracer.counters()?;
        let step = Step {
            offered,
            sent_pps: out.sent_pps(),
            events_per_sec: c1.emitted.saturating_sub(c0.emitted) as f64 / out.seconds,
            lost: c1.lost.saturating_sub(c0.lost),
        };
        let stop = step.lost > 0 || offered == 0;
        let saturated = offered > 0 && step.sent_pps < SATURATED * offered as f64;
        steps.push(step);
        if stop {
            break;
        }
        if saturated {
            // Once more as fast as the sender can, then stop.
            continue_unlimited(lab, &mut tracer, &mut steps)?;
            break;
        }
    }
    drop(tracer);

    let lossless = steps
        .iter()
        .filter(|s| s.lost == 0)
        .map(|s| s.events_per_sec)
        .fold(0.0, f64::max);
    let first_loss = steps.iter().find(|s| s.lost > 0);
    sec.figure(
        "highest lossless event rate, UDP flood across the bridge lab",
        Unit::Rate("events/s"),
        Budget::AtLeast(GOAL),
        Sample::new(vec![lossless]),
    );
    let log: Vec<String> = steps
        .iter()
        .map(|s| {
            format!(
                "{} → {} pps, {} events/s, {} lost",
                if s.offered == 0 {
                    "unlimited".to_string()
                } else {
                    format!("{} kpps", s.offered / 1000)
                },
                Unit::Rate("").format(s.sent_pps).trim(),
                Unit::Rate("").format(s.events_per_sec).trim(),
                s.lost
            )
        })
        .collect();
    sec.note(format!("offered → sent, traced: {}", log.join("; ")));
    match first_loss {
        Some(s) => sec.note(format!(
            "first loss at {} events/s",
            Unit::Rate("").format(s.events_per_sec).trim()
        )),
        None => sec.note(
            "no event was lost: the 2-core machine's sender, not the tracer, set the ceiling (both share the CPUs)",
        ),
    }
    if first_loss.is_none() {
        pipeline(sec)?;
    }
    Ok(())
}

fn continue_unlimited(lab: &Lab, tracer: &mut Tracer, steps: &mut Vec<Step>) -> Result<()> {
    if steps.iter().any(|s| s.offered == 0) {
        return Ok(());
    }
    tracer.collect();
    let c0 = tracer.counters()?;
    let out = traffic::iperf3(
        lab,
        "ns01",
        "ns02",
        Load::Udp64 { bits_per_sec: 0 },
        1,
        DRAIN_INTERVAL,
        || {
            tracer.collect();
        },
    )?;
    tracer.collect();
    let c1 = tracer.counters()?;
    steps.push(Step {
        offered: 0,
        sent_pps: out.sent_pps(),
        events_per_sec: c1.emitted.saturating_sub(c0.emitted) as f64 / out.seconds,
        lost: c1.lost.saturating_sub(c0.lost),
    });
    Ok(())
}

/// Events per second offered by the BPF_PROG_TEST_RUN feeder, in order.
const PIPE_RATES: [f64; 8] = [0.25e6, 0.5e6, 0.75e6, 1e6, 1.5e6, 2e6, 3e6, 4e6];
/// Runs per BPF_PROG_TEST_RUN call of the feeder.
const BATCH: u32 = 500;

struct PipeStep {
    target: f64,
    achieved: f64,
    drained: f64,
    lost: u64,
}

/// The ring + reader without a network stack: paced BPF_PROG_TEST_RUN on one thread, the
/// 10 ms drain with decoding on this one.
fn pipeline(sec: &mut Section) -> Result<()> {
    let mut loaded = loader::load(&LoadOptions::default())?;
    let mut reader = EventReader::new(&mut loaded.ebpf)?;
    let prog: &SchedClassifier = loaded
        .ebpf
        .program(names::TC_INGRESS_PROG)
        .ok_or_else(|| anyhow!("no program {}", names::TC_INGRESS_PROG))?
        .try_into()?;
    let mut frame = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([192, 168, 88, 11], [192, 168, 88, 12], 64)
        .udp(40000, 5201)
        .write(&mut frame, &[0; 64])?;
    let names = Names::default();
    let reasons = DropReasons::default();
    let kallsyms = Kallsyms::default();
    let decoder = Decoder {
        names: &names,
        reasons: &reasons,
        kallsyms: &kallsyms,
    };
    let mut steps = Vec::new();
    for target in PIPE_RATES {
        reader.drain(|_| {});
        let before = reader.counters()?;
        let feeding = Duration::from_secs(1);
        let (runs, secs) = std::thread::scope(|s| -> Result<(u64, f64)> {
            let feeder = s.spawn(|| -> Result<(u64, f64)> {
                let start = Instant::now();
                let mut runs = 0u64;
                while start.elapsed() < feeding {
                    prog.test_run(TestRunOptions {
                        data_in: Some(&frame),
                        repeat: BATCH,
                        ..Default::default()
                    })?;
                    runs += u64::from(BATCH);
                    let due = Duration::from_secs_f64(runs as f64 / target);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
                Ok((runs, start.elapsed().as_secs_f64()))
            });
            while !feeder.is_finished() {
                reader.drain(|rec| {
                    if let Ok(ev) = Event::decode(rec) {
                        std::hint::black_box(decoder.decode_record(&ev, rec));
                    }
                });
                std::thread::sleep(DRAIN_INTERVAL);
            }
            feeder
                .join()
                .map_err(|_| anyhow!("the BPF_PROG_TEST_RUN feeder panicked"))?
        })?;
        reader.drain(|_| {});
        let after = reader.counters()?;
        let step = PipeStep {
            target,
            achieved: runs as f64 / secs,
            drained: after.emitted.saturating_sub(before.emitted) as f64 / secs,
            lost: after.lost.saturating_sub(before.lost),
        };
        let stop = step.lost > 0 || step.achieved < SATURATED * target;
        steps.push(step);
        if stop {
            break;
        }
    }
    let best = steps
        .iter()
        .filter(|s| s.lost == 0)
        .map(|s| s.drained)
        .fold(0.0, f64::max);
    sec.figure(
        "highest lossless rate of ring + reader alone (BPF_PROG_TEST_RUN feeder)",
        Unit::Rate("events/s"),
        Budget::Info,
        Sample::new(vec![best]),
    );
    let log: Vec<String> = steps
        .iter()
        .map(|s| {
            format!(
                "{} → fed {}, {} events/s emitted, {} lost",
                Unit::Rate("").format(s.target).trim(),
                Unit::Rate("").format(s.achieved).trim(),
                Unit::Rate("").format(s.drained).trim(),
                s.lost
            )
        })
        .collect();
    sec.note(format!(
        "ring + reader alone (4 MiB ring, drained and decoded every 10 ms, feeder on the other CPU): {}",
        log.join("; ")
    ));
    Ok(())
}
