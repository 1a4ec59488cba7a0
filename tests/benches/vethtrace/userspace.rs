//! Figure 5: user space on one core, from pre-built event bytes (no kernel involved).
//!
//! - decode: `Event::with_decoded` + `Decoder::decode_record` per record;
//! - decode + correlate: each record decoded into a `Correlator` (`Correlator::push_record`, as
//!   `vethtrace trace` drains the ring), flushing idle packets every 10 ms of event time as
//!   `vethtrace trace` does (events are 1 µs apart: a 1 M events/s trace);
//! - rendered lines: correlated packets written by `render::text::packet` and
//!   `render::json::packet` into a Vec.
//!
//! The four measurements are interleaved within each round.

use std::{hint::black_box, io::Write, time::Instant};

use anyhow::{anyhow, Result};
use vethtrace::{
    btf::DropReasons,
    correlate::{self, Correlator, PacketPath},
    decode::{Decoder, Names, Observation},
    kallsyms::Kallsyms,
    render,
};
use vethtrace_common::{hook, kind, Event, Flow, WIRE_VERSION};

use crate::report::{Budget, Sample, Section, Unit};

/// Rounds of each measurement: this machine's noise moves one round by ±15%, so the median is
/// taken over more rounds than the minimum of five.
const ROUNDS: usize = 9;
/// Packets of four hops each (ns01 veth01 egress, node br-veth01 ingress, node br-veth02
/// egress, ns02 veth02 ingress), like one datagram across the bridge lab.
const PACKETS: usize = 125_000;
const HOPS: [(u64, u32, u8); 4] = [
    (1, 2, hook::TC_EGRESS),
    (2, 3, hook::TC_INGRESS),
    (2, 4, hook::TC_EGRESS),
    (3, 2, hook::TC_INGRESS),
];
const EVENT_SPACING_NS: u64 = 1_000;
/// `vethtrace trace`'s drain tick and idle time (commands/trace.rs).
const TICK_NS: u64 = 10_000_000;
const IDLE_NS: u64 = 50_000_000;
/// Packets rendered per trial.
const RENDERED: usize = 25_000;

fn names() -> Names {
    let mut n = Names::default();
    for (cookie, name) in [(1, "ns01"), (2, "node"), (3, "ns02")] {
        n.add_netns(cookie, name);
    }
    for (cookie, ifindex, name) in [
        (1, 2, "veth01"),
        (2, 3, "br-veth01"),
        (2, 4, "br-veth02"),
        (3, 2, "veth02"),
    ] {
        n.add_interface(cookie, ifindex, name);
    }
    n
}

/// The ring-buffer records of PACKETS UDP datagrams, back to back.
fn records() -> Vec<u8> {
    let size = std::mem::size_of::<Event>();
    let mut out = Vec::with_capacity(PACKETS * HOPS.len() * size);
    let mut ts = 1_000_000_000;
    for p in 0..PACKETS {
        let mut flow = Flow {
            ethertype: 0x0800,
            l4: 17,
            ttl: 64,
            sport: 40000,
            dport: 5201,
            ip_id: p as u32,
            ip_len: 92,
            ..Default::default()
        };
        flow.src[..4].copy_from_slice(&[192, 168, 88, 11]);
        flow.dst[..4].copy_from_slice(&[192, 168, 88, 12]);
        for (cookie, ifindex, hook) in HOPS {
            let ev = Event {
                ts_ns: ts,
                netns_cookie: cookie,
                version: WIRE_VERSION,
                kind: kind::PACKET,
                hook,
                ifindex,
                len: 106,
                outer: flow,
                ..Default::default()
            };
            out.extend_from_slice(ev.as_bytes());
            ts += EVENT_SPACING_NS;
        }
    }
    out
}

struct Ctx {
    names: Names,
    reasons: DropReasons,
    kallsyms: Kallsyms,
}

impl Ctx {
    fn decoder(&self) -> Decoder<'_> {
        Decoder {
            names: &self.names,
            reasons: &self.reasons,
            kallsyms: &self.kallsyms,
        }
    }
}

/// One record decoded into an observation, read in place as the tracer reads the ring
/// (`Event::with_decoded`); `None` when it does not decode.
#[inline]
fn decode_one(d: &Decoder<'_>, rec: &[u8]) -> Option<Observation> {
    Event::with_decoded(rec, |ev| d.decode_record(ev, rec)).ok()
}

fn undecodable() -> anyhow::Error {
    anyhow!("a pre-built record does not decode")
}

/// Events decoded per second.
fn decode_rate(ctx: &Ctx, recs: &[u8]) -> Result<f64> {
    let d = ctx.decoder();
    let size = std::mem::size_of::<Event>();
    let start = Instant::now();
    let mut n = 0u64;
    for rec in recs.chunks_exact(size) {
        let Some(o) = decode_one(&d, rec) else {
            return Err(undecodable());
        };
        black_box(o);
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Events decoded and correlated per second by `c` (one correlator for every round, as a live
/// trace keeps one: its queue, index and lists keep their room); checks every packet came out
/// whole.
fn correlate_rate(ctx: &Ctx, recs: &[u8], c: &mut Correlator) -> Result<f64> {
    let d = ctx.decoder();
    let size = std::mem::size_of::<Event>();
    let start = Instant::now();
    let mut flushed = Vec::new();
    let mut next_tick = 0;
    let (mut n, mut packets) = (0u64, 0usize);
    for rec in recs.chunks_exact(size) {
        // As `vethtrace trace` drains the ring (Tracer::collect_into).
        let ts = Event::with_decoded(rec, |ev| {
            c.push_record(&d, ev, rec);
            ev.ts_ns
        })
        .map_err(|_| undecodable())?;
        n += 1;
        if ts >= next_tick {
            // As `vethtrace trace` does: one list for every tick's packets, drained.
            c.flush_idle_into(ts, IDLE_NS, &mut flushed);
            packets += black_box(&mut flushed).drain(..).count();
            next_tick = ts + TICK_NS;
        }
    }
    packets += black_box(c.flush_all()).len();
    let rate = n as f64 / start.elapsed().as_secs_f64();
    anyhow::ensure!(
        packets == PACKETS,
        "correlation made {packets} packets of {PACKETS}"
    );
    Ok(rate)
}

/// Lines rendered per second.
fn render_rate(paths: &[PacketPath], json: bool) -> Result<f64> {
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut lines = 0usize;
    let start = Instant::now();
    for (i, p) in paths.iter().enumerate() {
        if json {
            render::json::packet(&mut buf, i as u64 + 1, p)?;
        } else {
            render::text::packet(&mut buf, p, "")?;
        }
        if buf.len() > (1 << 20) - 4096 {
            lines += buf.iter().filter(|&&b| b == b'\n').count();
            buf.clear();
        }
    }
    buf.flush()?;
    lines += buf.iter().filter(|&&b| b == b'\n').count();
    Ok(lines as f64 / start.elapsed().as_secs_f64())
}

pub fn run(sec: &mut Section) -> Result<()> {
    let ctx = Ctx {
        names: names(),
        reasons: DropReasons::default(),
        kallsyms: Kallsyms::default(),
    };
    let recs = records();
    // Ring-buffer records are 8-byte aligned, and the tracer reads them in place: so must this.
    anyhow::ensure!(
        recs.as_ptr().cast::<Event>().is_aligned(),
        "the pre-built records are not aligned as the ring's are"
    );
    let size = std::mem::size_of::<Event>();
    let d = ctx.decoder();
    let obs: Vec<Observation> = recs
        .chunks_exact(size)
        .take(RENDERED * HOPS.len())
        .map(|r| decode_one(&d, r).ok_or_else(undecodable))
        .collect::<Result<_>>()?;
    let paths = correlate::correlate(obs);
    anyhow::ensure!(paths.len() == RENDERED, "{} packets to render", paths.len());

    let (mut dec, mut cor, mut text, mut json) = (vec![], vec![], vec![], vec![]);
    // One unmeasured pass of each warms the allocator (the correlator's first packets fault
    // its memory in) and the caches.
    decode_rate(&ctx, &recs)?;
    let mut corr = Correlator::default();
    correlate_rate(&ctx, &recs, &mut corr)?;
    for _ in 0..ROUNDS {
        dec.push(decode_rate(&ctx, &recs)?);
        cor.push(correlate_rate(&ctx, &recs, &mut corr)?);
        text.push(render_rate(&paths, false)?);
        json.push(render_rate(&paths, true)?);
    }
    sec.figure(
        "decode (Event::with_decoded + Decoder)",
        Unit::Rate("events/s"),
        Budget::AtLeast(10e6),
        Sample::new(dec),
    );
    sec.figure(
        "decode + correlate (Correlator::push_record)",
        Unit::Rate("events/s"),
        Budget::AtLeast(10e6),
        Sample::new(cor),
    );
    sec.figure(
        "rendered text lines (render::text::packet)",
        Unit::Rate("lines/s"),
        Budget::AtLeast(1e6),
        Sample::new(text),
    );
    sec.figure(
        "rendered NDJSON lines (render::json::packet)",
        Unit::Rate("lines/s"),
        Budget::AtLeast(1e6),
        Sample::new(json),
    );
    sec.note(format!(
        "one thread; {} pre-built {size}-byte records ({PACKETS} UDP datagrams × 4 hops, 1 µs apart), {ROUNDS} rounds; one correlator for all rounds (a live trace keeps one), flushing packets idle for 50 ms every 10 ms of event time into one drained list; {RENDERED} packets rendered per round (5 text lines or 4 NDJSON lines each)",
        PACKETS * HOPS.len()
    ));
    Ok(())
}
