//! Figure 6: the highest event rate the tracer keeps up with, losing nothing (issue 6: raise
//! the offered rate until lost > 0; publish the last lossless one).
//!
//! The judged figure is `feeder`'s: vethtrace's tc program fed by BPF_PROG_TEST_RUN on one
//! CPU, the real ring and reader on the other, raised until events are lost and refined to
//! within 5 % of the loss point. On this 2-core machine, traffic cannot get there: the sender
//! shares the CPUs with the tracer and runs out first.
//!
//! The traffic run stays as context: a `vethtrace::tracer::Tracer` like `vethtrace trace
//! --netns …` starts it (every packet, drops on, namespace filter, 4 MiB ring) on the bridge
//! lab and drains it with `collect()` every 10 ms; UDP 64-byte floods from ns01 to ns02 offer
//! more and more packets per second (1 s each, 4 events per datagram plus a drop event for
//! each one the receiving socket overflows) until the tracer reports `lost > 0`, or until the
//! sender cannot offer more.

use anyhow::Result;
use vethtrace::{
    attach::{AttachMode, Selection},
    events::DRAIN_INTERVAL,
    lab::Lab,
    loader::LoadOptions,
    netns,
    tracer::{Target, Tracer, TracerOptions},
};

use crate::{
    feeder::{self, End},
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
    judged(sec)?;
    traffic_context(lab, sec)
}

/// The judged figure: the feeder's search.
fn judged(sec: &mut Section) -> Result<()> {
    let search = feeder::search()?;
    let label = match search.cpus {
        Some(_) => "highest lossless event rate: vethtrace tc program fed by BPF_PROG_TEST_RUN, ring + reader on the other CPU",
        None => "highest lossless event rate: vethtrace tc program fed by BPF_PROG_TEST_RUN, ring + reader on another thread",
    };
    if search.best.is_empty() {
        sec.not_measured(
            label,
            Unit::Rate("events/s"),
            Budget::AtLeast(GOAL),
            "no offered rate was lossless twice",
        );
    } else {
        sec.figure(
            label,
            Unit::Rate("events/s"),
            Budget::AtLeast(GOAL),
            Sample::new(search.best.clone()),
        );
    }
    let placement = match search.cpus {
        Some((f, r)) => format!("feeder pinned to CPU {f}, reader to CPU {r}"),
        None => "feeder and reader unpinned (fewer than 2 CPUs)".into(),
    };
    sec.note(format!(
        "how: vethtrace_tc_ingress (every packet matches) run on a 106-byte UDP frame by BPF_PROG_TEST_RUN in batches of 500, paced to the offered rate, for 1 s a trial; the real 4 MiB ring drained and every record decoded every 10 ms; {placement}; the figure is the events/s emitted in the two lossless 1-s trials (the first and a repeat) at the highest rate that never lost an event"
    ));
    let end = match search.end {
        End::Loss(r) => format!(
            "events were lost at {} offered{} (bisected between the last lossless and the first lossy rate until within {:.0} %)",
            Unit::Rate("events/s").format(r),
            search.best_rate.map_or(String::new(), |b| format!(
                ", {:.1} % above the published figure's offered {}",
                (r / b - 1.0) * 100.0,
                Unit::Rate("events/s").format(b)
            )),
            (feeder::CLOSE - 1.0) * 100.0
        ),
        End::FeederCeiling => "no event was lost: the feeder could not offer more, so the figure is a lower bound".into(),
        End::LadderTop => "no event was lost up to the ladder's top rate, so the figure is a lower bound".into(),
    };
    sec.note(end);
    sec.note(format!("trials, in order: {}", feeder::log(&search.trials)));
    Ok(())
}

/// The context row: UDP floods across the bridge lab, traced.
fn traffic_context(lab: &Lab, sec: &mut Section) -> Result<()> {
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
            device_tracepoints: false,
            tc_ingress: false,
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
        "highest lossless event rate, traced UDP flood across the bridge lab",
        Unit::Rate("events/s"),
        Budget::Info,
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
    sec.note(format!(
        "traffic (context): offered → sent, traced: {}",
        log.join("; ")
    ));
    match first_loss {
        Some(s) => sec.note(format!(
            "traffic: first loss at {} events/s, with the sender, the stack and the reader sharing 2 CPUs",
            Unit::Rate("").format(s.events_per_sec).trim()
        )),
        None => sec.note(
            "traffic: no event was lost there: the 2-core machine's sender, not the tracer, set the ceiling (both share the CPUs)",
        ),
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
