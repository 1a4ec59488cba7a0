//! Figures 1 and 2: iperf3 across the bridge lab (ns01 → br01 in node → ns02), in four modes:
//! untraced; traced on every hook with a filter matching the flow; attached with a filter
//! matching nothing; and an empty tc program (`emptyprog`) on the same hooks as the traced
//! mode, the floor of the first two on this machine. One round runs each mode once (the order
//! reversed every other round, so no mode always goes first), and each figure is a ratio
//! within one round.
//!
//! "Traced" is what `vethtrace trace` does in the kernel (every interface of the three lab
//! namespaces, drops on, namespace filter) with the ring drained and every event decoded every
//! 10 ms in this process (`Tracer::collect`'s work); correlating and printing are measured
//! separately (figure 5).

use anyhow::{bail, Result};
use vethtrace::{events::DRAIN_INTERVAL, lab::Lab};

use crate::{
    emptyprog::EmptyProgram,
    report::{Budget, Sample, Section, Unit},
    session::Session,
    traffic::{self, Load, Outcome},
};

/// Rounds of the four modes: 6 keeps the alternating order balanced and, at about 3.2 s a
/// trial, adds under 30 s a figure to the 5 rounds of three modes it replaced.
const ROUNDS: usize = 6;
/// Seconds per iperf3 run (`-t`).
const SECS: u32 = 2;
/// A filter no packet of the lab matches.
pub const MATCH_NOTHING: &str = "udp port 9";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Untraced,
    Traced,
    FilteredOut,
    /// The empty tc program on the traced mode's hooks: the floor of the two ratios.
    Empty,
}

const MODES: [Mode; 4] = [Mode::Untraced, Mode::Traced, Mode::FilteredOut, Mode::Empty];

struct Trial {
    out: Outcome,
    events: u64,
    lost: u64,
    hooks: usize,
}

impl Trial {
    fn quiet(out: Outcome, hooks: usize) -> Trial {
        Trial {
            out,
            events: 0,
            lost: 0,
            hooks,
        }
    }
}

fn trial(lab: &Lab, load: Load, mode: Mode, filter: &str, empty: &EmptyProgram) -> Result<Trial> {
    let run = |tick: &mut dyn FnMut()| {
        traffic::iperf3(lab, "ns01", "ns02", load, SECS, DRAIN_INTERVAL, tick)
    };
    let filter = match mode {
        Mode::Untraced => return Ok(Trial::quiet(run(&mut || {})?, 0)),
        Mode::Empty => {
            // Attached for this trial only, as a session is started for each traced trial.
            let links = empty.attach_like_trace(lab)?;
            let out = run(&mut || {})?;
            return Ok(Trial::quiet(out, links.hooks()));
        }
        Mode::Traced => filter,
        Mode::FilteredOut => MATCH_NOTHING,
    };
    let mut s = Session::start(lab, filter, None)?;
    let out = run(&mut || {
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

/// Runs ROUNDS rounds of the four modes (the order reversed every other round); returns the
/// trials per mode, indexed by `Mode as usize`.
fn rounds(lab: &Lab, load: Load, filter: &str) -> Result<[Vec<Trial>; 4]> {
    let empty = EmptyProgram::load("empty")?;
    let mut by_mode: [Vec<Trial>; 4] = Default::default();
    for round in 0..ROUNDS {
        let mut order = MODES;
        if round % 2 == 1 {
            order.reverse();
        }
        for mode in order {
            by_mode[mode as usize].push(trial(lab, load, mode, filter, &empty)?);
        }
    }
    let hooks = |m: Mode| by_mode[m as usize].first().map_or(0, |t| t.hooks);
    if hooks(Mode::Empty) != hooks(Mode::Traced) {
        bail!(
            "the empty program went on {} hooks, the traced mode on {}: not the same hooks",
            hooks(Mode::Empty),
            hooks(Mode::Traced)
        );
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

/// The floor row: the empty program's trials over the untraced ones, with its note.
fn floor(sec: &mut Section, un: &[Trial], empty: &[Trial], metric: impl Fn(&Outcome) -> f64) {
    let hooks = empty.first().map_or(0, |t| t.hooks);
    let ratio = ratios(empty, un, metric);
    let median = ratio.median();
    sec.figure(
        format!("empty program on the same {hooks} hooks / untraced"),
        Unit::Ratio,
        Budget::Info,
        ratio,
    );
    sec.note(format!(
        "the empty program (`return TC_ACT_UNSPEC`: next, TCX, on the traced mode's {hooks} hooks) is this machine's floor for the two ratios above ({median:.3}): what any tc program on those hooks costs here, the program call with this kernel's return-thunk mitigations; no ratio has it subtracted (the traced and filtered-out modes also run the drop program on every freed skb, which the floor does not)"
    ));
}

fn rounds_note(sec: &mut Section, iperf: &str) {
    sec.note(format!(
        "{ROUNDS} rounds of (untraced, traced, filtered out, empty program), order reversed every other round; {iperf}, {}",
        traffic::pinning()
    ));
}

/// Figure 1: one TCP stream.
pub fn tcp(lab: &Lab, sec: &mut Section) -> Result<()> {
    let filter = format!("tcp port {}", traffic::PORT);
    let [un, tr, fo, em] = rounds(lab, Load::Tcp, &filter)?;
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
    floor(sec, &un, &em, bps);
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
    sec.figure(
        "empty-program throughput",
        Unit::Bits,
        Budget::Info,
        sample(&em, bps),
    );
    event_notes(sec, &tr, &fo, f64::from(SECS));
    rounds_note(sec, &format!("iperf3 -t {SECS}, receiver's throughput"));
    Ok(())
}

/// Figure 2: UDP, 64-byte datagrams, as fast as the sender can.
pub fn udp(lab: &Lab, sec: &mut Section) -> Result<()> {
    let filter = format!("udp port {}", traffic::PORT);
    let load = Load::Udp64 { bits_per_sec: 0 };
    let [un, tr, fo, em] = rounds(lab, load, &filter)?;
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
    floor(sec, &un, &em, pps);
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
    sec.figure(
        "empty program",
        Unit::Rate("pps"),
        Budget::Info,
        sample(&em, pps),
    );
    let rx = |t: &[Trial]| {
        let s = sample(t, |o: &Outcome| o.received_pps()).median();
        Unit::Rate("").format(s).trim().to_string()
    };
    sec.note(format!(
        "packets/s are the sender's: every datagram sent crossed all 4 hooks of the path (the receiving iperf3 took {} / {} / {} / {} pps untraced / traced / filtered out / empty program; the rest overflowed its socket buffer: freed with a drop reason, which the drop program sees)",
        rx(&un),
        rx(&tr),
        rx(&fo),
        rx(&em),
    ));
    event_notes(sec, &tr, &fo, f64::from(SECS));
    rounds_note(sec, &format!("iperf3 -u -l 64 -b 0 -t {SECS}"));
    Ok(())
}
