//! The latency view for performance investigations: for every hop transition seen (e.g.
//! `busybox eth0 egress → node1 vethf0808a3e ingress`), how many packets made it and how long
//! it took — p50, p90, p99, max — with a small log-scale histogram per row. Pure: packets in,
//! rows out, rendered as a terminal table or NDJSON.

use std::{
    collections::HashMap,
    io::{self, Write},
};

use serde::Serialize;

use crate::{decode::Observation, render::text::hop_place};

/// Histogram buckets: < 1µs, < 2µs, < 4µs, … < 64µs, ≥ 64µs.
pub const BUCKETS: usize = 8;

/// Per-transition samples, in first-seen order.
#[derive(Default)]
pub struct Latency {
    rows: Vec<(String, String, Vec<u64>)>,
    index: HashMap<(String, String), usize>,
}

/// One transition's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub from: String,
    pub to: String,
    pub count: usize,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// Counts per bucket: < 1µs, < 2µs, < 4µs, … ≥ 64µs.
    pub histogram: [u64; BUCKETS],
}

impl Latency {
    /// Adds every consecutive pair of tc hops of one packet (drops and frees are not hops).
    pub fn add(&mut self, hops: &[Observation]) {
        let hooks: Vec<&Observation> = hops.iter().filter(|h| h.is_hook()).collect();
        for w in hooks.windows(2) {
            let key = (hop_place(w[0]), hop_place(w[1]));
            let dt = w[1].ts_ns.saturating_sub(w[0].ts_ns);
            let i = match self.index.get(&key) {
                Some(&i) => i,
                None => {
                    self.rows.push((key.0.clone(), key.1.clone(), Vec::new()));
                    self.index.insert(key, self.rows.len() - 1);
                    self.rows.len() - 1
                }
            };
            self.rows[i].2.push(dt);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn rows(&self) -> Vec<Row> {
        self.rows
            .iter()
            .map(|(from, to, samples)| {
                let mut s = samples.clone();
                s.sort_unstable();
                let q = |p: f64| {
                    // Nearest rank.
                    let rank = ((p * s.len() as f64).ceil() as usize).clamp(1, s.len());
                    s[rank - 1] as f64 / 1000.0
                };
                let mut histogram = [0u64; BUCKETS];
                for &ns in &s {
                    histogram[bucket(ns)] += 1;
                }
                Row {
                    from: from.clone(),
                    to: to.clone(),
                    count: s.len(),
                    p50_us: q(0.50),
                    p90_us: q(0.90),
                    p99_us: q(0.99),
                    max_us: s.last().map_or(0.0, |&m| m as f64 / 1000.0),
                    histogram,
                }
            })
            .collect()
    }
}

fn bucket(ns: u64) -> usize {
    let us = ns / 1000;
    if us == 0 {
        0
    } else {
        ((64 - us.leading_zeros()) as usize).min(BUCKETS - 1)
    }
}

/// `▁▃█…`: each bucket's count relative to the fullest one.
pub fn sparkline(h: &[u64; BUCKETS]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = h.iter().copied().max().unwrap_or(0);
    h.iter()
        .map(|&c| {
            if c == 0 {
                ' '
            } else {
                BARS[((c * 7).div_ceil(max.max(1))) as usize]
            }
        })
        .collect()
}

/// The terminal table.
pub fn text(out: &mut impl Write, rows: &[Row]) -> io::Result<()> {
    if rows.is_empty() {
        return writeln!(out, "no hop transitions seen");
    }
    let width = rows
        .iter()
        .map(|r| r.from.chars().count() + r.to.chars().count() + 3)
        .max()
        .unwrap_or(0);
    writeln!(
        out,
        "{:<width$}  {:>6}  {:>8}  {:>8}  {:>8}  {:>8}  <1µs … ≥64µs",
        "hop transition", "count", "p50 µs", "p90 µs", "p99 µs", "max µs"
    )?;
    for r in rows {
        let t = format!("{} → {}", r.from, r.to);
        writeln!(
            out,
            "{t:<width$}  {:>6}  {:>8.1}  {:>8.1}  {:>8.1}  {:>8.1}  {}",
            r.count,
            r.p50_us,
            r.p90_us,
            r.p99_us,
            r.max_us,
            sparkline(&r.histogram)
        )?;
    }
    Ok(())
}

#[derive(Serialize)]
struct JsonRow<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    row: &'a Row,
}

/// One `{"type":"latency",…}` line per transition.
pub fn json(out: &mut impl Write, rows: &[Row]) -> io::Result<()> {
    for row in rows {
        serde_json::to_writer(
            &mut *out,
            &JsonRow {
                kind: "latency",
                row,
            },
        )?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Dir, What};
    use vethtrace_common::Flow;

    fn hop(ts: u64, ns: &str, ifname: &str, dir: Dir) -> Observation {
        Observation {
            ts_ns: ts,
            netns: ns.into(),
            ifindex: 0,
            ifname: Some(ifname.into()),
            what: What::Hook(dir),
            len: 0,
            mark: 0,
            outer: Flow::default(),
            extras: Default::default(),
        }
    }

    #[test]
    fn percentiles_per_transition_and_histogram() {
        let mut l = Latency::default();
        for i in 0..100u64 {
            // a → b takes 1..=100 µs; b → c always 500 ns.
            let t0 = i * 1_000_000;
            l.add(&[
                hop(t0, "a", "eth0", Dir::Egress),
                hop(t0 + (i + 1) * 1000, "node", "veth1", Dir::Ingress),
                hop(t0 + (i + 1) * 1000 + 500, "node", "veth2", Dir::Egress),
            ]);
        }
        let rows = l.rows();
        assert_eq!(rows.len(), 2);
        let r = &rows[0];
        assert_eq!(
            (r.from.as_str(), r.to.as_str()),
            ("a eth0 egress", "node veth1 ingress")
        );
        assert_eq!(r.count, 100);
        assert_eq!(
            (r.p50_us, r.p90_us, r.p99_us, r.max_us),
            (50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(r.histogram.iter().sum::<u64>(), 100);
        assert_eq!(r.histogram[1], 1, "1µs");
        assert_eq!(r.histogram[7], 37, "64..100µs");
        let r = &rows[1];
        assert_eq!((r.p50_us, r.max_us), (0.5, 0.5));
        assert_eq!(r.histogram[0], 100);
    }

    #[test]
    fn renders_a_table_and_json_lines() {
        let mut l = Latency::default();
        l.add(&[
            hop(0, "a", "eth0", Dir::Egress),
            hop(3_000, "b", "eth0", Dir::Ingress),
        ]);
        let rows = l.rows();
        let mut out = Vec::new();
        text(&mut out, &rows).expect("write");
        let s = String::from_utf8(out).expect("utf8");
        assert!(s
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("a eth0 egress → b eth0 ingress")));
        assert!(s.contains("3.0"));
        let mut out = Vec::new();
        json(&mut out, &rows).expect("write");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["type"], "latency");
        assert_eq!(v["from"], "a eth0 egress");
        assert_eq!(v["count"], 1);
        assert_eq!(v["p99_us"], 3.0);
        assert_eq!(v["histogram"][2], 1);
    }

    #[test]
    fn sparkline_scales_to_the_fullest_bucket() {
        assert_eq!(sparkline(&[0, 1, 0, 0, 0, 0, 0, 7]), " ▂     █");
    }
}
