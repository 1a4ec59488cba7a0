//! Figure 6's judged measurement: the highest event rate vethtrace's ring and reader keep up
//! with, losing nothing, found by raising the offered rate until events are lost.
//!
//! Traffic cannot find that point on a 2-core machine: the sender, sharing the CPUs with the
//! tracer, runs out first. So one thread feeds vethtrace's real tc ingress program (loaded as
//! the tracer loads it: every packet matches, 4 MiB ring) synthetic UDP frames through
//! BPF_PROG_TEST_RUN at a paced rate, pinned to one CPU, while another thread, pinned to the
//! other CPU, drains the real ring with the real reader and decodes every record every 10 ms
//! (`Tracer::collect`'s work). Each trial feeds for 1 s.
//!
//! The search: a coarse ladder up to the first rate that loses events; then bisection between
//! the highest lossless and the lowest lossy rate above it until they are within [`CLOSE`];
//! then the lossless one is run once more and published only if it is lossless again (a rate
//! that loses events once is out, and the bisection goes on below it: one lucky second is not
//! "lossless"). Every trial feeds for 1 s and there are at most [`MAX_TRIALS`], so the whole
//! search is bounded.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{anyhow, Result};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use etherparse::PacketBuilder;
use vethtrace::{
    btf::DropReasons,
    decode::{Decoder, Names},
    events::{EventReader, DRAIN_INTERVAL},
    kallsyms::Kallsyms,
    loader::{self, LoadOptions, Loaded},
};
use vethtrace_common::{names, Event};

use crate::report::Unit;

/// Events per second offered by the feeder on the coarse ladder, in order.
const LADDER: [f64; 8] = [0.25e6, 0.5e6, 0.75e6, 1e6, 1.5e6, 2e6, 3e6, 4e6];
/// Bisection stops when the first lossy rate is within this factor of the last lossless one.
pub const CLOSE: f64 = 1.05;
/// At most this many trials in all (the ladder's 8, then bisection and repeats: 1.5 → 2 M
/// needs 3 bisections to get within 5 %, and one repeat).
const MAX_TRIALS: usize = 18;
/// Runs per BPF_PROG_TEST_RUN call of the feeder.
const BATCH: u32 = 500;
/// How long each trial feeds.
const FEEDING: Duration = Duration::from_secs(1);
/// The feeder fell short when it fed less than this share of its target.
const SATURATED: f64 = 0.9;

/// One trial at one offered rate.
pub struct Trial {
    pub target: f64,
    /// Runs per second the feeder achieved.
    pub achieved: f64,
    /// Events per second the program emitted into the ring.
    pub emitted: f64,
    pub lost: u64,
    pub phase: Phase,
}

impl Trial {
    fn short(&self) -> bool {
        self.achieved < SATURATED * self.target
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Ladder,
    Bisect,
    Confirm,
}

/// Why the search stopped rising.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum End {
    /// Events were lost at this rate (the lowest lossy rate tried).
    Loss(f64),
    /// The feeder could not offer more (no loss up to there).
    FeederCeiling,
    /// The ladder's top rate was lossless.
    LadderTop,
}

pub struct Search {
    pub trials: Vec<Trial>,
    pub end: End,
    /// The published rate: the two lossless trials (first and confirmation) at the highest
    /// rate that was lossless twice, as events/s emitted; empty when none was.
    pub best: Vec<f64>,
    /// The offered rate of `best`.
    pub best_rate: Option<f64>,
    /// (feeder CPU, reader CPU), when pinned.
    pub cpus: Option<(usize, usize)>,
}

/// The program, its ring and the reader's decoding context.
struct Rig {
    loaded: Loaded,
    reader: EventReader,
    frame: Vec<u8>,
    names: Names,
    reasons: DropReasons,
    kallsyms: Kallsyms,
    cpus: Option<(usize, usize)>,
}

impl Rig {
    fn new() -> Result<Rig> {
        let mut loaded = loader::load(&LoadOptions::default())?;
        let reader = EventReader::new(&mut loaded.ebpf)?;
        let mut frame = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([192, 168, 88, 11], [192, 168, 88, 12], 64)
            .udp(40000, 5201)
            .write(&mut frame, &[0; 64])?;
        Ok(Rig {
            loaded,
            reader,
            frame,
            names: Names::default(),
            reasons: DropReasons::default(),
            kallsyms: Kallsyms::default(),
            cpus: crate::cpus::two(),
        })
    }

    /// Feeds `target` runs per second for [`FEEDING`] while draining and decoding.
    fn trial(&mut self, target: f64, phase: Phase) -> Result<Trial> {
        let Rig {
            loaded,
            reader,
            frame,
            names: netns_names,
            reasons,
            kallsyms,
            cpus,
        } = self;
        let prog: &SchedClassifier = loaded
            .ebpf
            .program(names::TC_INGRESS_PROG)
            .ok_or_else(|| anyhow!("no program {}", names::TC_INGRESS_PROG))?
            .try_into()?;
        let decoder = Decoder {
            names: netns_names,
            reasons,
            kallsyms,
        };
        reader.drain(|_| {});
        let before = reader.counters()?;
        let done = AtomicBool::new(false);
        let (runs, secs) = std::thread::scope(|s| -> Result<(u64, f64)> {
            let drainer = s.spawn(|| -> Result<()> {
                if let Some((_, cpu)) = *cpus {
                    crate::cpus::pin_this_thread(cpu)?;
                }
                while !done.load(Ordering::Acquire) {
                    reader.drain(|rec| {
                        let _ = Event::with_decoded(rec, |ev| {
                            std::hint::black_box(decoder.decode_record(ev, rec))
                        });
                    });
                    std::thread::sleep(DRAIN_INTERVAL);
                }
                Ok(())
            });
            let feeder = s.spawn(|| -> Result<(u64, f64)> {
                // Whatever happens, the drainer stops when the feeder does.
                let _stop = StopOnDrop(&done);
                if let Some((cpu, _)) = *cpus {
                    crate::cpus::pin_this_thread(cpu)?;
                }
                let start = Instant::now();
                let mut runs = 0u64;
                while start.elapsed() < FEEDING {
                    prog.test_run(TestRunOptions {
                        data_in: Some(frame),
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
            let fed = feeder
                .join()
                .map_err(|_| anyhow!("the BPF_PROG_TEST_RUN feeder panicked"))?;
            drainer
                .join()
                .map_err(|_| anyhow!("the ring drainer panicked"))??;
            fed
        })?;
        reader.drain(|_| {});
        let after = reader.counters()?;
        Ok(Trial {
            target,
            achieved: runs as f64 / secs,
            emitted: after.emitted.saturating_sub(before.emitted) as f64 / secs,
            lost: after.lost.saturating_sub(before.lost),
            phase,
        })
    }
}

/// Sets the flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Runs the whole search, at most [`MAX_TRIALS`] one-second trials.
pub fn search() -> Result<Search> {
    let mut rig = Rig::new()?;
    let mut trials: Vec<Trial> = Vec::new();

    // The coarse ladder, up to the first lossy rate (or the feeder's own ceiling).
    let mut feeder_short = false;
    for target in LADDER {
        let t = rig.trial(target, Phase::Ladder)?;
        let (lossy, short) = (t.lost > 0, t.short());
        trials.push(t);
        if lossy {
            break;
        }
        if short {
            feeder_short = true;
            break;
        }
    }

    // Bisect between the highest lossless rate and the lowest lossy one above it until they
    // are close, then repeat the lossless one; a repeat that loses events rules that rate
    // out, and the search goes on below it.
    let mut best = Vec::new();
    let mut best_rate = None;
    while trials.len() < MAX_TRIALS {
        let Some(lo) = highest_lossless(&trials) else {
            break;
        };
        match lowest_lossy_above(&trials, lo) {
            Some(hi) if hi / lo > CLOSE => {
                let t = rig.trial((lo + hi) / 2.0, Phase::Bisect)?;
                trials.push(t);
            }
            _ => {
                let t = rig.trial(lo, Phase::Confirm)?;
                let (ok, again) = (t.lost == 0, t.emitted);
                trials.push(t);
                if ok {
                    let first = trials
                        .iter()
                        .find(|t| t.target == lo && t.phase != Phase::Confirm)
                        .map_or(again, |t| t.emitted);
                    best = vec![first, again];
                    best_rate = Some(lo);
                    break;
                }
            }
        }
    }
    let end = match best_rate.and_then(|b| lowest_lossy_above(&trials, b)) {
        Some(hi) => End::Loss(hi),
        None if feeder_short => End::FeederCeiling,
        None => End::LadderTop,
    };
    Ok(Search {
        trials,
        end,
        best,
        best_rate,
        cpus: rig.cpus,
    })
}

/// The lowest target above `rate` at which some trial lost events.
fn lowest_lossy_above(trials: &[Trial], rate: f64) -> Option<f64> {
    trials
        .iter()
        .filter(|t| t.lost > 0 && t.target > rate)
        .map(|t| t.target)
        .reduce(f64::min)
}

/// The highest target that was lossless and never lossy: a rate that lost events in any
/// trial is out.
fn highest_lossless(trials: &[Trial]) -> Option<f64> {
    trials
        .iter()
        .filter(|t| t.lost == 0)
        .map(|t| t.target)
        .filter(|&r| !trials.iter().any(|t| t.target == r && t.lost > 0))
        .reduce(f64::max)
}

/// "1.50 M → fed 1.50 M, 1.50 M events/s emitted, 0 lost" for each trial.
pub fn log(trials: &[Trial]) -> String {
    trials
        .iter()
        .map(|t| {
            format!(
                "{}{} → fed {}, {} events/s emitted, {} lost",
                match t.phase {
                    Phase::Ladder => "",
                    Phase::Bisect => "bisect ",
                    Phase::Confirm => "again ",
                },
                Unit::Rate("").format(t.target).trim(),
                Unit::Rate("").format(t.achieved).trim(),
                Unit::Rate("").format(t.emitted).trim(),
                t.lost
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}
