//! Figures 1 and 2: iperf3 across the bridge lab (ns01 → br01 in node → ns02), in three modes:
//! untraced; traced on every hook with a filter matching the flow; attached with a filter
//! matching nothing. One round runs each mode once (the order alternates between rounds, so
//! neither mode always goes first), and each figure is a ratio within one round.
//!
//! "Traced" is what `vethtrace trace` does in the kernel (every interface of the three lab
//! namespaces, drops on, namespace filter) with the ring drained and every event decoded every
//! 10 ms in this process (`Tracer::collect`'s work); correlating and printing are measured
//! separately (figure 5).

use anyhow::{bail, Result};
use vethtrace::{events::DRAIN_INTERVAL, lab::Lab};

use crate::{
    report::{Budget, Sample, Section, Unit},
    session::Session,
    traffic::{self, Load, Outcome},
};

const ROUNDS: usize = 5;
/// Seconds per iperf3 run (`-t`).
const SECS: u32 = 2;
/// A filter no packet of the lab matches.
pub const MATCH_NOTHING: &str = "udp port 9";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Untraced,
    Traced,
    FilteredOut,
}

struct Trial {
    out: Outcome,
    events: u64,
    lost: u64,
    hooks: usize,
}

fn trial(lab: &Lab, load: Load, mode: Mode, filter: &str) -> Result<Trial> {
    let filter = match mode {
        Mode::Untraced => {
            let out = traffic::iperf3(lab, "ns01", "ns02", load, SECS, DRAIN_INTERVAL, || {})?;
            return Ok(Trial {
                out,
                events: 0,
                lost: 0,
                hooks: 0,
            });
        }
        Mode::Traced => filter,
        Mode::FilteredOut => MATCH_NOTHING,
    };
    let mut s = Session::start(lab, filter, None)?;
    let out = traffic::iperf3(lab, "ns01", "ns02", load, SECS, DRAIN_INTERVAL, || {
        s.drain();
    })?;
    s.drain();
    let c = s.counters()?;
    match mode {
        Mode::Traced if c.emitted == 0 => bail!("the traced run (`{filter}`) emitted no event"),
        Mode::FilteredOut if c.filtered == 0 => {
            bail!("the filtered-out run evaluated no filter: nothing was hooked")
        }
        _ => {}
    }
    Ok(Trial {
        out,
        events: c.emitted,
        lost: c.lost,
        hooks: s.hooks(),
    })
}

/// Runs ROUNDS rounds of the three modes; returns the trials per mode.
fn rounds(lab: &Lab, load: Load, filter: &str) -> Result<[Vec<Trial>; 3]> {
    let mut by_mode: [Vec<Trial>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        let mut order = [Mode::Untraced, Mode::Traced, Mode::FilteredOut];
        if round % 2 == 1 {
            order.reverse();
        }
        for mode in order {
            by_mode[mode as usize].push(trial(lab, load, mode, filter)?);
        }
    }
    Ok(by_mode)
}

fn ratios(a: &[Trial], b: &[Trial], metric: impl Fn(&Outcome) -> f64) -> Sample {
    Sample::new(
        a.iter()
            .zip(b)
            .map(|(x, y)| metric(&x.out) / metric(&y.out))
            .collect(),
    )
}

fn sample(t: &[Trial], metric: impl Fn(&Outcome) -> f64) -> Sample {
    Sample::new(t.iter().map(|x| metric(&x.out)).collect())
}

fn event_notes(sec: &mut Section, traced: &[Trial], filtered: &[Trial], secs_each: f64) {
    let events: u64 = traced.iter().map(|t| t.events).sum();
    let lost: u64 = traced.iter().chain(filtered).map(|t| t.lost).sum();
    let hooks = traced.first().map_or(0, |t| t.hooks);
    sec.note(format!(
        "traced: {hooks} hooks (every interface of the 3 lab namespaces), {:.0} events/s on average, {lost} lost; the filtered-out runs emitted {} events",
        events as f64 / (traced.len() as f64 * secs_each),
        filtered.iter().map(|t| t.events).sum::<u64>()
    ));
}

/// Figure 1: one TCP stream.
pub fn tcp(lab: &Lab, sec: &mut Section) -> Result<()> {
    let filter = format!("tcp port {}", traffic::PORT);
    let [un, tr, fo] = rounds(lab, Load::Tcp, &filter)?;
    let bps = |o: &Outcome| o.bits_per_sec;
    sec.figure(
        format!("traced / untraced (`{filter}`)"),
        Unit::Ratio,
        Budget::AtLeast(0.98),
        ratios(&tr, &un, bps),
    );
    sec.figure(
        format!("filtered out / untraced (`{MATCH_NOTHING}`)"),
        Unit::Ratio,
        Budget::AtLeast(0.99),
        ratios(&fo, &un, bps),
    );
    sec.figure(
        "untraced throughput",
        Unit::Bits,
        Budget::Info,
        sample(&un, bps),
    );
    sec.figure(
        "traced throughput",
        Unit::Bits,
        Budget::Info,
        sample(&tr, bps),
    );
    sec.figure(
        "filtered-out throughput",
        Unit::Bits,
        Budget::Info,
        sample(&fo, bps),
    );
    event_notes(sec, &tr, &fo, f64::from(SECS));
    sec.note(format!(
        "{ROUNDS} rounds of (untraced, traced, filtered out), order alternating; iperf3 -t {SECS}, receiver's throughput"
    ));
    Ok(())
}

/// Figure 2: UDP, 64-byte datagrams, as fast as the sender can.
pub fn udp(lab: &Lab, sec: &mut Section) -> Result<()> {
    let filter = format!("udp port {}", traffic::PORT);
    let load = Load::Udp64 { bits_per_sec: 0 };
    let [un, tr, fo] = rounds(lab, load, &filter)?;
    let pps = |o: &Outcome| o.sent_pps();
    sec.figure(
        format!("traced / untraced (`{filter}`)"),
        Unit::Ratio,
        Budget::AtLeast(0.90),
        ratios(&tr, &un, pps),
    );
    sec.figure(
        format!("filtered out / untraced (`{MATCH_NOTHING}`)"),
        Unit::Ratio,
        Budget::AtLeast(0.97),
        ratios(&fo, &un, pps),
    );
    sec.figure(
        "untraced",
        Unit::Rate("pps"),
        Budget::Info,
        sample(&un, pps),
    );
    sec.figure("traced", Unit::Rate("pps"), Budget::Info, sample(&tr, pps));
    sec.figure(
        "filtered out",
        Unit::Rate("pps"),
        Budget::Info,
        sample(&fo, pps),
    );
    let rx = |o: &Outcome| o.received_pps();
    sec.note(format!(
        "packets/s are the sender's: every datagram sent crossed all 4 hooks of the path (the receiving iperf3 took {} / {} / {} pps untraced / traced / filtered out; the rest overflowed its socket buffer: freed with a drop reason, which the drop program sees)",
        Unit::Rate("").format(sample(&un, rx).median()).trim(),
        Unit::Rate("").format(sample(&tr, rx).median()).trim(),
        Unit::Rate("").format(sample(&fo, rx).median()).trim(),
    ));
    event_notes(sec, &tr, &fo, f64::from(SECS));
    sec.note(format!(
        "{ROUNDS} rounds of (untraced, traced, filtered out), order alternating; iperf3 -u -l 64 -b 0 -t {SECS}"
    ));
    Ok(())
}
