//! NDJSON output (`--json`): one object per line, field names held by the tests and documented
//! in the README. Every hop of a packet is one `packet` object (or a `drop` object where the
//! kernel freed it, a `netfilter` object for a chain's verdict on it); a final `summary` object
//! carries the counters.

use std::io::{self, Write};

use serde::Serialize;
use vethtrace_common::Flow;

use crate::{
    correlate::PacketPath,
    decode::{proto_name, Observation, What},
    events::Counters,
};

#[derive(Serialize)]
struct Icmp {
    #[serde(rename = "type")]
    kind: u8,
    code: u8,
    id: u16,
    seq: u16,
}

/// L3/L4 fields of one layer.
#[derive(Serialize)]
struct Layer {
    proto: &'static str,
    src: Option<String>,
    dst: Option<String>,
    sport: Option<u16>,
    dport: Option<u16>,
    icmp: Option<Icmp>,
}

fn layer(f: &Flow) -> Layer {
    let proto = proto_name(f);
    let ports = matches!(proto, "TCP" | "UDP");
    Layer {
        proto,
        src: f.src_ip().map(|a| a.to_string()),
        dst: f.dst_ip().map(|a| a.to_string()),
        sport: ports.then_some(f.sport),
        dport: ports.then_some(f.dport),
        icmp: matches!(proto, "ICMP" | "ICMP6").then_some(Icmp {
            kind: f.icmp_type,
            code: f.icmp_code,
            id: f.icmp_id,
            seq: f.icmp_seq,
        }),
    }
}

#[derive(Serialize)]
struct Hop<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    /// Sequence number of the packet in this trace (1-based).
    packet: u64,
    /// Position of this hop in the packet's path (1-based).
    hop: usize,
    ts_ns: u64,
    /// Microseconds since the packet's first hop.
    t_us: f64,
    netns: &'a str,
    ifname: Option<&'a str>,
    ifindex: u32,
    dir: Option<&'static str>,
    len: u32,
    #[serde(flatten)]
    outer: Layer,
    inner: Option<Layer>,
    reason: Option<&'a str>,
    location: Option<&'a str>,
    /// For drops: true when the free does not mean the packet was lost (see `decode`).
    benign: Option<bool>,
    /// For netfilter verdicts (absent from other lines): family, hook, table, chain, verdict.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    netfilter: Option<Netfilter<'a>>,
}

/// The fields a `netfilter` line adds.
#[derive(Serialize)]
struct Netfilter<'a> {
    family: &'a str,
    hook: &'a str,
    table: &'a str,
    chain: &'a str,
    verdict: &'a str,
}

fn hop<'a>(packet: u64, n: usize, t0: u64, o: &'a Observation) -> Hop<'a> {
    let mut netfilter = None;
    let (kind, dir, reason, location, benign) = match &o.what {
        What::Hook(d) => (
            "packet",
            Some(match d {
                crate::decode::Dir::Ingress => "ingress",
                crate::decode::Dir::Egress => "egress",
            }),
            None,
            None,
            None,
        ),
        What::Drop { reason, location } => (
            "drop",
            None,
            Some(reason.as_str()),
            Some(location.as_str()),
            Some(false),
        ),
        What::Freed {
            reason, location, ..
        } => (
            "drop",
            None,
            Some(reason.as_str()),
            Some(location.as_str()),
            Some(true),
        ),
        What::Netfilter {
            family,
            hook,
            table,
            chain,
            verdict,
        } => {
            netfilter = Some(Netfilter {
                family,
                hook,
                table,
                chain,
                verdict,
            });
            ("netfilter", None, None, None, None)
        }
    };
    Hop {
        kind,
        packet,
        hop: n,
        ts_ns: o.ts_ns,
        t_us: o.ts_ns.saturating_sub(t0) as f64 / 1000.0,
        netns: &o.netns,
        ifname: o.ifname.as_deref(),
        ifindex: o.ifindex,
        dir,
        len: o.len,
        outer: layer(&o.outer),
        inner: o.inner.as_ref().map(layer),
        reason,
        location,
        benign,
        netfilter,
    }
}

/// Writes every hop of one packet, one line each.
pub fn packet(out: &mut impl Write, id: u64, p: &PacketPath) -> io::Result<()> {
    let t0 = p.first_ts();
    for (i, o) in p.hops.iter().enumerate() {
        serde_json::to_writer(&mut *out, &hop(id, i + 1, t0, o))?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

#[derive(Serialize)]
struct Summary<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    packets: u64,
    events: u64,
    lost: u64,
    filtered: u64,
    drops: u64,
    attach: &'a str,
}

/// The closing line: `{"type":"summary","packets","events","lost",…}`.
pub fn summary(out: &mut impl Write, packets: u64, c: &Counters, attach: &str) -> io::Result<()> {
    serde_json::to_writer(
        &mut *out,
        &Summary {
            kind: "summary",
            packets,
            events: c.emitted,
            lost: c.lost,
            filtered: c.filtered,
            drops: c.drops,
            attach,
        },
    )?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{correlate::PacketKey, decode::Dir};

    fn obs(ts: u64, what: What) -> Observation {
        let mut f = Flow {
            ethertype: 0x0800,
            l4: 1,
            icmp_type: 8,
            icmp_id: 7,
            icmp_seq: 1,
            ..Default::default()
        };
        f.src[..4].copy_from_slice(&[10, 222, 1, 3]);
        f.dst[..4].copy_from_slice(&[10, 222, 1, 4]);
        Observation {
            ts_ns: ts,
            netns_cookie: 1,
            netns: "busybox".into(),
            ifindex: 2,
            ifname: Some("eth0".into()),
            what,
            len: 98,
            mark: 0,
            outer: f,
            inner: None,
            truncated: false,
            snapshot: Vec::new(),
            snapshot_l3: false,
        }
    }

    #[test]
    fn hops_and_drops_have_the_documented_fields() {
        let p = PacketPath {
            key: PacketKey::of(&Flow::default()),
            hops: vec![
                obs(1_000, What::Hook(Dir::Egress)),
                obs(
                    7_500,
                    What::Drop {
                        reason: "NETFILTER_DROP".into(),
                        location: "nft_do_chain+0x637".into(),
                    },
                ),
            ],
        };
        let mut out = Vec::new();
        packet(&mut out, 3, &p).expect("write");
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .expect("utf8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        let h = &lines[0];
        assert_eq!(h["type"], "packet");
        assert_eq!(h["packet"], 3);
        assert_eq!(h["hop"], 1);
        assert_eq!(h["netns"], "busybox");
        assert_eq!(h["ifname"], "eth0");
        assert_eq!(h["ifindex"], 2);
        assert_eq!(h["dir"], "egress");
        assert_eq!(h["proto"], "ICMP");
        assert_eq!(h["src"], "10.222.1.3");
        assert_eq!(h["dst"], "10.222.1.4");
        assert_eq!(h["sport"], serde_json::Value::Null);
        assert_eq!(h["icmp"]["type"], 8);
        assert_eq!(h["icmp"]["id"], 7);
        assert_eq!(h["inner"], serde_json::Value::Null);
        let d = &lines[1];
        assert_eq!(d["type"], "drop");
        assert_eq!(d["reason"], "NETFILTER_DROP");
        assert_eq!(d["location"], "nft_do_chain+0x637");
        assert_eq!(d["benign"], false);
        assert_eq!(d["t_us"], 6.5);
    }

    #[test]
    fn a_netfilter_verdict_is_its_own_line_and_adds_nothing_to_the_others() {
        let p = PacketPath {
            key: PacketKey::of(&Flow::default()),
            hops: vec![
                obs(1_000, What::Hook(Dir::Egress)),
                obs(
                    6_000,
                    What::Netfilter {
                        family: "ip".into(),
                        hook: "FORWARD".into(),
                        table: "filter".into(),
                        chain: "FORWARD".into(),
                        verdict: "DROP".into(),
                    },
                ),
            ],
        };
        let mut out = Vec::new();
        packet(&mut out, 1, &p).expect("write");
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .expect("utf8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert!(lines[0].get("verdict").is_none() && lines[0].get("table").is_none());
        let n = &lines[1];
        assert_eq!(n["type"], "netfilter");
        assert_eq!(
            (n["packet"].as_u64(), n["hop"].as_u64()),
            (Some(1), Some(2))
        );
        assert_eq!(n["netns"], "busybox");
        assert_eq!(n["ifname"], "eth0");
        assert_eq!(n["family"], "ip");
        assert_eq!(n["hook"], "FORWARD");
        assert_eq!(n["table"], "filter");
        assert_eq!(n["chain"], "FORWARD");
        assert_eq!(n["verdict"], "DROP");
        assert_eq!(n["proto"], "ICMP");
        assert_eq!(n["dir"], serde_json::Value::Null);
        assert_eq!(n["reason"], serde_json::Value::Null);
    }

    #[test]
    fn summary_line() {
        let mut out = Vec::new();
        let c = Counters {
            emitted: 10,
            lost: 1,
            filtered: 5,
            drops: 2,
        };
        summary(&mut out, 4, &c, "TCX").expect("write");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["type"], "summary");
        assert_eq!(
            (
                v["packets"].as_u64(),
                v["events"].as_u64(),
                v["lost"].as_u64()
            ),
            (Some(4), Some(10), Some(1))
        );
    }
}
