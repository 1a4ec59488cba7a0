//! NDJSON output (`--json`): one object per line, field names held by the tests and documented
//! in the README. Every hop of a packet is one `packet` object (or a `drop` object where the
//! kernel freed it, a `netfilter` object for a chain's verdict on it); a final `summary` object
//! carries the counters.

use std::{
    io::{self, Write},
    net::IpAddr,
};

use serde::Serialize;
use vethtrace_common::Flow;

use crate::{
    correlate::PacketPath,
    decode::{proto_name, Dir, Observation, What},
    events::Counters,
};

// Hop lines are written field by field rather than through a derived `Serialize`: a trace
// renders every hop it sees (issue 6 asks ≥ 1 M lines/s), and building the addresses as
// Strings and going through serde's flattened maps cost more than the line itself. The bytes
// are exactly what serde_json wrote for the former `Hop` struct; the tests compare the two.

/// Writes every hop of one packet, one line each, in one `write_all` (through a line-buffered
/// stdout: one system call per packet rather than per line).
pub fn packet(out: &mut impl Write, id: u64, p: &PacketPath) -> io::Result<()> {
    let t0 = p.first_ts();
    let mut buf = Vec::with_capacity(p.hops.len() * 320);
    for (i, o) in p.hops.iter().enumerate() {
        hop(&mut buf, id, i + 1, t0, o)?;
    }
    out.write_all(&buf)
}

/// One hop's line: `{"type":"packet","packet":…,"hop":…,…}` and a newline. Field order and
/// values are held by the README and the tests (`packet`, `drop` and `netfilter` lines).
fn hop(b: &mut Vec<u8>, packet: u64, n: usize, t0: u64, o: &Observation) -> io::Result<()> {
    let (kind, dir, dropped) = match &o.what {
        What::Hook(d) => ("packet", Some(d), None),
        What::Drop { reason, location } => ("drop", None, Some((reason, location, false))),
        What::Freed {
            reason, location, ..
        } => ("drop", None, Some((reason, location, true))),
        What::Netfilter(_) => ("netfilter", None, None),
    };
    b.extend_from_slice(b"{\"type\":\"");
    b.extend_from_slice(kind.as_bytes());
    b.extend_from_slice(b"\",\"packet\":");
    uint(b, packet);
    b.extend_from_slice(b",\"hop\":");
    uint(b, n as u64);
    b.extend_from_slice(b",\"ts_ns\":");
    uint(b, o.ts_ns);
    b.extend_from_slice(b",\"t_us\":");
    micros(b, o.ts_ns.saturating_sub(t0))?;
    b.extend_from_slice(b",\"netns\":");
    string(b, &o.netns)?;
    b.extend_from_slice(b",\"ifname\":");
    match &o.ifname {
        Some(s) => string(b, s)?,
        None => b.extend_from_slice(b"null"),
    }
    b.extend_from_slice(b",\"ifindex\":");
    uint(b, o.ifindex.into());
    b.extend_from_slice(b",\"dir\":");
    b.extend_from_slice(match dir {
        Some(Dir::Ingress) => b"\"ingress\"",
        Some(Dir::Egress) => b"\"egress\"",
        None => b"null",
    });
    b.extend_from_slice(b",\"len\":");
    uint(b, o.len.into());
    b.push(b',');
    layer_fields(b, &o.outer);
    b.extend_from_slice(b",\"inner\":");
    match o.inner() {
        Some(f) => {
            b.push(b'{');
            layer_fields(b, f);
            b.push(b'}');
        }
        None => b.extend_from_slice(b"null"),
    }
    match dropped {
        Some((reason, location, benign)) => {
            b.extend_from_slice(b",\"reason\":");
            string(b, reason)?;
            b.extend_from_slice(b",\"location\":");
            string(b, location)?;
            b.extend_from_slice(if benign {
                b",\"benign\":true"
            } else {
                b",\"benign\":false"
            });
        }
        None => b.extend_from_slice(b",\"reason\":null,\"location\":null,\"benign\":null"),
    }
    if let What::Netfilter(nf) = &o.what {
        for (name, value) in nf.fields() {
            b.extend_from_slice(b",\"");
            b.extend_from_slice(name.as_bytes());
            b.extend_from_slice(b"\":");
            string(b, value)?;
        }
    }
    b.extend_from_slice(b"}\n");
    Ok(())
}

/// L3/L4 fields of one layer: `"proto":…,"src":…,"dst":…,"sport":…,"dport":…,"icmp":…`.
fn layer_fields(b: &mut Vec<u8>, f: &Flow) {
    let proto = proto_name(f);
    b.extend_from_slice(b"\"proto\":\"");
    b.extend_from_slice(proto.as_bytes());
    b.extend_from_slice(b"\",\"src\":");
    ip(b, f.src_ip());
    b.extend_from_slice(b",\"dst\":");
    ip(b, f.dst_ip());
    if matches!(proto, "TCP" | "UDP") {
        b.extend_from_slice(b",\"sport\":");
        uint(b, f.sport.into());
        b.extend_from_slice(b",\"dport\":");
        uint(b, f.dport.into());
    } else {
        b.extend_from_slice(b",\"sport\":null,\"dport\":null");
    }
    if matches!(proto, "ICMP" | "ICMP6") {
        b.extend_from_slice(b",\"icmp\":{\"type\":");
        uint(b, f.icmp_type.into());
        b.extend_from_slice(b",\"code\":");
        uint(b, f.icmp_code.into());
        b.extend_from_slice(b",\"id\":");
        uint(b, f.icmp_id.into());
        b.extend_from_slice(b",\"seq\":");
        uint(b, f.icmp_seq.into());
        b.push(b'}');
    } else {
        b.extend_from_slice(b",\"icmp\":null");
    }
}

/// An address as a JSON string (`null` when the layer has none).
fn ip(b: &mut Vec<u8>, a: Option<IpAddr>) {
    match a {
        Some(IpAddr::V4(a)) => {
            b.push(b'"');
            for (i, octet) in a.octets().into_iter().enumerate() {
                if i > 0 {
                    b.push(b'.');
                }
                uint(b, octet.into());
            }
            b.push(b'"');
        }
        // Only hex digits, colons and dots: nothing to escape. Writing to a Vec cannot fail.
        Some(IpAddr::V6(a)) => {
            let _ = write!(b, "\"{a}\"");
        }
        None => b.extend_from_slice(b"null"),
    }
}

/// A decimal integer, as serde_json writes it.
fn uint(b: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    b.extend_from_slice(&digits[at..]);
}

/// Below this many nanoseconds, `ns / 1000.0` is written as its exact decimal (see [`micros`]).
const EXACT_MICROS_BELOW_NS: u64 = 1_000_000_000_000_000;

/// `ns as f64 / 1000.0` as serde_json writes it (the shortest decimal that reads back as the
/// same f64). Below [`EXACT_MICROS_BELOW_NS`] (11.5 days) that decimal is `ns / 1000` itself
/// with its trailing zeros trimmed: the f64 nearest to it is the value, and no other decimal
/// of at most three fraction digits lies within half an ulp (< 0.0005 there); serde_json
/// writes such values without an exponent, with at least one fraction digit.
fn micros(b: &mut Vec<u8>, ns: u64) -> io::Result<()> {
    if ns >= EXACT_MICROS_BELOW_NS {
        return serde_json::to_writer(b, &(ns as f64 / 1000.0)).map_err(io::Error::from);
    }
    uint(b, ns / 1000);
    b.push(b'.');
    let frac = ns % 1000;
    if frac == 0 {
        b.push(b'0');
        return Ok(());
    }
    let digits = [
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ];
    let keep = if frac.is_multiple_of(100) {
        1
    } else if frac.is_multiple_of(10) {
        2
    } else {
        3
    };
    b.extend_from_slice(&digits[..keep]);
    Ok(())
}

/// A JSON string: copied as is when nothing in it needs escaping (names and reasons almost
/// never do), else escaped by serde_json.
fn string(b: &mut Vec<u8>, s: &str) -> io::Result<()> {
    if s.bytes().all(|c| c >= 0x20 && c != b'"' && c != b'\\') {
        b.push(b'"');
        b.extend_from_slice(s.as_bytes());
        b.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(b, s).map_err(io::Error::from)
    }
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
            netns: "busybox".into(),
            ifindex: 2,
            ifname: Some("eth0".into()),
            what,
            len: 98,
            mark: 0,
            outer: f,
            extras: Default::default(),
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
                    What::netfilter("ip", "FORWARD", "filter", "FORWARD", "DROP"),
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

    /// The serde-derived line the writer replaced: every hop line must stay byte-identical.
    mod reference {
        use super::super::*;
        use crate::decode::Dir;

        #[derive(Serialize)]
        struct Icmp {
            #[serde(rename = "type")]
            kind: u8,
            code: u8,
            id: u16,
            seq: u16,
        }

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
            packet: u64,
            hop: usize,
            ts_ns: u64,
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
            benign: Option<bool>,
            #[serde(flatten, skip_serializing_if = "Option::is_none")]
            netfilter: Option<Netfilter<'a>>,
        }

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
                        Dir::Ingress => "ingress",
                        Dir::Egress => "egress",
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
                What::Netfilter(nf) => {
                    netfilter = Some(Netfilter {
                        family: &nf.family,
                        hook: &nf.hook,
                        table: &nf.table,
                        chain: &nf.chain,
                        verdict: &nf.verdict,
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
                inner: o.inner().map(layer),
                reason,
                location,
                benign,
                netfilter,
            }
        }

        pub fn packet(id: u64, p: &PacketPath) -> Vec<u8> {
            let mut out = Vec::new();
            let t0 = p.first_ts();
            for (i, o) in p.hops.iter().enumerate() {
                serde_json::to_writer(&mut out, &hop(id, i + 1, t0, o)).expect("serialize");
                out.push(b'\n');
            }
            out
        }
    }

    /// A small deterministic generator (xorshift), so the cases are the same on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
            xs[(self.next() % xs.len() as u64) as usize]
        }
    }

    fn random_flow(r: &mut Rng) -> Flow {
        let mut f = Flow {
            ethertype: r.pick(&[0x0800, 0x86dd, 0x0806, 0x88cc]),
            l4: r.pick(&[1, 6, 17, 58, 47]),
            ttl: r.next() as u8,
            sport: r.next() as u16,
            dport: r.next() as u16,
            ip_id: r.next() as u32,
            icmp_type: r.pick(&[0, 8, 3, 128, 129]),
            icmp_code: r.next() as u8,
            icmp_id: r.next() as u16,
            icmp_seq: r.next() as u16,
            tcp_seq: r.next() as u32,
            tcp_flags: r.next() as u8,
            arp_op: r.pick(&[1, 2, 3]),
            ..Default::default()
        };
        for b in f.src.iter_mut().chain(f.dst.iter_mut()) {
            // Zero runs exercise IPv6's `::` compression.
            *b = if r.next().is_multiple_of(3) {
                0
            } else {
                r.next() as u8
            };
        }
        f
    }

    #[test]
    fn hop_lines_are_byte_identical_to_the_serde_rendering() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        let names = [
            "busybox",
            "node",
            "q\"uote",
            "back\\slash",
            "tab\there",
            "ünï",
            "\u{1}x",
            "",
        ];
        let texts = [
            "NETFILTER_DROP",
            "nf_hook_slow+0x9c",
            "ip",
            "FORWARD",
            "a\"b",
            "\n",
        ];
        let gaps = [
            0,
            1,
            7,
            10,
            100,
            999,
            1_000,
            1_500,
            6_500,
            123_456_789,
            EXACT_MICROS_BELOW_NS - 1,
            EXACT_MICROS_BELOW_NS,
            u64::MAX / 2,
        ];
        for case in 0..3_000u64 {
            let mut t = r.next() % 1_000_000_000_000;
            let hops = (0..1 + r.next() % 5)
                .map(|_| {
                    t = t.saturating_add(if r.next().is_multiple_of(4) {
                        r.pick(&gaps)
                    } else {
                        r.next() % 5_000_000
                    });
                    let what = match r.next() % 5 {
                        0 => What::Hook(Dir::Ingress),
                        1 => What::Hook(Dir::Egress),
                        2 => What::Drop {
                            reason: r.pick(&texts).into(),
                            location: r.pick(&texts).into(),
                        },
                        3 => What::Freed {
                            reason: r.pick(&texts).into(),
                            location: r.pick(&texts).into(),
                            why: crate::decode::Benign::RawSocketCopy,
                        },
                        _ => What::netfilter(
                            r.pick(&texts),
                            r.pick(&texts),
                            r.pick(&texts),
                            r.pick(&texts),
                            r.pick(&texts),
                        ),
                    };
                    let mut o = obs(t, what);
                    o.netns = r.pick(&names).into();
                    o.ifname = (!r.next().is_multiple_of(4)).then(|| r.pick(&names).into());
                    o.ifindex = r.next() as u32;
                    o.len = r.next() as u32;
                    o.outer = random_flow(&mut r);
                    let inner = (r.next().is_multiple_of(3)).then(|| random_flow(&mut r));
                    o.set_inner(inner);
                    o
                })
                .collect();
            let p = PacketPath {
                key: PacketKey::of(&Flow::default()),
                hops,
            };
            let id = r.pick(&[1, case, u64::MAX]);
            let mut out = Vec::new();
            packet(&mut out, id, &p).expect("write");
            let want = reference::packet(id, &p);
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&want),
                "case {case}"
            );
        }
    }

    #[test]
    fn micros_match_serde_json_floats() {
        let mut r = Rng(12345);
        let mut cases: Vec<u64> = (0..200_000)
            .map(|_| r.next() % EXACT_MICROS_BELOW_NS)
            .collect();
        cases.extend((0..200_000).map(|_| r.next() % 10_000_000));
        cases.extend([
            0,
            1,
            10,
            100,
            999,
            1_000,
            1_001,
            1_010,
            1_100,
            EXACT_MICROS_BELOW_NS - 1,
        ]);
        cases.extend([EXACT_MICROS_BELOW_NS, u64::MAX, 1 << 53, (1 << 53) + 1]);
        for ns in cases {
            let mut got = Vec::new();
            micros(&mut got, ns).expect("write");
            let want = serde_json::to_vec(&(ns as f64 / 1000.0)).expect("float");
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want),
                "{ns} ns"
            );
        }
    }
}
