//! Human-readable output: one line per packet, one per hop with the time since the packet's
//! first hop, drops marked, and the findings that explain them.

use std::io::{self, Write};

use vethtrace_common::Flow;

use crate::{
    correlate::PacketPath,
    decode::{proto_name, Dir, Observation, What},
    diagnose::Finding,
};

/// `ICMP echo request 192.168.88.11 > 192.168.88.12 id 7 seq 1` and the like.
pub fn describe_flow(f: &Flow) -> String {
    let proto = proto_name(f);
    let (Some(src), Some(dst)) = (f.src_ip(), f.dst_ip()) else {
        return format!("{proto} ethertype {:#06x}", f.ethertype);
    };
    match proto {
        "ARP" => match f.arp_op {
            1 => format!("ARP who-has {dst} tell {src}"),
            2 => format!("ARP reply {src} is-at …, to {dst}"),
            op => format!("ARP op {op} {src} > {dst}"),
        },
        "ICMP" | "ICMP6" => {
            let what = icmp_name(f);
            if matches!((f.l4, f.icmp_type), (1, 0 | 8) | (58, 128 | 129)) {
                format!(
                    "{proto} {what} {src} > {dst} id {} seq {}",
                    f.icmp_id, f.icmp_seq
                )
            } else {
                format!("{proto} {what} {src} > {dst}")
            }
        }
        "TCP" => format!(
            "TCP {src}:{} > {dst}:{} [{}] seq {}",
            f.sport,
            f.dport,
            tcp_flags(f.tcp_flags),
            f.tcp_seq
        ),
        "UDP" => format!("UDP {src}:{} > {dst}:{}", f.sport, f.dport),
        _ => format!("{proto} {src} > {dst} proto {}", f.l4),
    }
}

fn icmp_name(f: &Flow) -> String {
    match (f.l4, f.icmp_type, f.icmp_code) {
        (1, 8, _) | (58, 128, _) => "echo request".into(),
        (1, 0, _) | (58, 129, _) => "echo reply".into(),
        (1, 3, 4) => "unreachable, fragmentation needed".into(),
        (1, 3, c) => format!("unreachable code {c}"),
        (1, 11, _) | (58, 3, _) => "time exceeded".into(),
        (58, 1, _) => "unreachable".into(),
        (58, 2, _) => "packet too big".into(),
        (58, 135, _) => "neighbor solicitation".into(),
        (58, 136, _) => "neighbor advertisement".into(),
        (_, t, c) => format!("type {t} code {c}"),
    }
}

fn tcp_flags(bits: u8) -> String {
    let names = [
        (0x02, 'S'),
        (0x10, '.'),
        (0x01, 'F'),
        (0x04, 'R'),
        (0x08, 'P'),
        (0x20, 'U'),
    ];
    names
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, c)| *c)
        .collect()
}

/// Where a hop happened: `node br-veth01 ingress`.
pub fn hop_place(h: &Observation) -> String {
    let ifname = h.ifname.as_deref().unwrap_or("-");
    match &h.what {
        What::Hook(dir) => format!("{} {ifname} {dir}", h.netns),
        What::Drop { .. } | What::Freed { .. } | What::Netfilter(_) => {
            format!("{}, on {ifname}", h.netns)
        }
    }
}

/// Microseconds since `t0`, `+12µs`.
pub fn since(t0: u64, ts: u64) -> String {
    format!("+{}µs", ts.saturating_sub(t0) / 1000)
}

/// Whether to colour drops: only on a terminal, and never when NO_COLOR is set.
pub fn use_color(stdout_is_tty: bool) -> bool {
    stdout_is_tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

const RED: &str = "\x1b[31m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// One packet: a header line, then its hops.
pub fn packet(out: &mut impl Write, p: &PacketPath, indent: &str) -> io::Result<()> {
    packet_styled(out, p, indent, false)
}

/// [`packet`], with drops in red and benign frees dimmed when `color` is on.
///
/// Hop lines are written piece by piece (no `String` per place or time): a trace renders every
/// packet it sees, and issue 6 asks ≥ 1 M lines/s. The text is what [`hop_place`] and
/// [`since`] make; the tests compare the two.
pub fn packet_styled(
    out: &mut impl Write,
    p: &PacketPath,
    indent: &str,
    color: bool,
) -> io::Result<()> {
    let (red, dim, reset) = if color {
        (RED, DIM, RESET)
    } else {
        ("", "", "")
    };
    let flow = p.flow();
    writeln!(out, "{indent}{}", describe_flow(&flow))?;
    let t0 = p.first_ts();
    let width = p
        .hops
        .iter()
        .filter(|h| !h.is_netfilter())
        .map(place_chars)
        .max()
        .unwrap_or(0);
    for h in &p.hops {
        let dt = h.ts_ns.saturating_sub(t0) / 1000;
        match &h.what {
            What::Hook(_) => {
                // `{place:<width$}  {since:>8}{encap}`
                out.write_all(indent.as_bytes())?;
                out.write_all(b"  ")?;
                write_place(out, h)?;
                pad(out, width.saturating_sub(place_chars(h)))?;
                out.write_all(b"  ")?;
                // `+{dt}µs` is 3 characters and the digits.
                pad(out, 8usize.saturating_sub(3 + decimal_digits(dt)))?;
                write!(out, "+{dt}µs")?;
                if h.inner().is_some() {
                    out.write_all(b"  (vxlan)")?;
                }
                out.write_all(b"\n")?;
            }
            What::Drop { reason, location } => {
                write!(out, "{indent}  {red}✗ dropped in ")?;
                write_place(out, h)?;
                writeln!(out, ": {reason} at {location}{reset}  +{dt}µs")?;
            }
            What::Freed {
                reason,
                location,
                why,
            } => {
                write!(out, "{indent}  {dim}· freed in ")?;
                write_place(out, h)?;
                writeln!(out, ": {reason} at {location} ({why}){reset}  +{dt}µs")?;
            }
            What::Netfilter(_) => {
                let style = if h.what.is_nf_drop() { red } else { dim };
                writeln!(
                    out,
                    "{indent}  {style}· {}{reset}  {}",
                    netfilter_line(h).unwrap_or_default(),
                    since(t0, h.ts_ns)
                )?
            }
        }
    }
    Ok(())
}

/// [`hop_place`], written without building it.
fn write_place(out: &mut impl Write, h: &Observation) -> io::Result<()> {
    let ifname = h.ifname.as_deref().unwrap_or("-");
    out.write_all(h.netns.as_bytes())?;
    match &h.what {
        What::Hook(dir) => {
            out.write_all(b" ")?;
            out.write_all(ifname.as_bytes())?;
            out.write_all(b" ")?;
            out.write_all(dir_name(*dir).as_bytes())
        }
        What::Drop { .. } | What::Freed { .. } | What::Netfilter(_) => {
            out.write_all(b", on ")?;
            out.write_all(ifname.as_bytes())
        }
    }
}

/// The characters in [`hop_place`]'s text, counted without building it.
fn place_chars(h: &Observation) -> usize {
    let ifname = h.ifname.as_deref().unwrap_or("-");
    let names = h.netns.chars().count() + ifname.chars().count();
    match &h.what {
        What::Hook(dir) => names + 2 + dir_name(*dir).len(),
        What::Drop { .. } | What::Freed { .. } | What::Netfilter(_) => names + 5,
    }
}

fn dir_name(d: Dir) -> &'static str {
    match d {
        Dir::Ingress => "ingress",
        Dir::Egress => "egress",
    }
}

fn decimal_digits(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 10 {
        v /= 10;
        n += 1;
    }
    n
}

fn pad(out: &mut impl Write, n: usize) -> io::Result<()> {
    const SPACES: [u8; 64] = [b' '; 64];
    let mut left = n;
    while left > 0 {
        let k = left.min(SPACES.len());
        out.write_all(&SPACES[..k])?;
        left -= k;
    }
    Ok(())
}

/// `netfilter in node: filter FORWARD (ip FORWARD hook) → DROP` for a netfilter verdict.
pub fn netfilter_line(h: &Observation) -> Option<String> {
    let What::Netfilter(nf) = &h.what else {
        return None;
    };
    Some(format!(
        "netfilter in {}: {} → {}",
        h.netns,
        nf.chain_text(),
        nf.verdict
    ))
}

/// Findings under a packet: what happened, why, and what to change.
pub fn findings(out: &mut impl Write, f: &[Finding], indent: &str) -> io::Result<()> {
    for x in f {
        writeln!(out, "{indent}→ {}", x.message)?;
        if !x.evidence.is_empty() {
            writeln!(out, "{indent}  evidence: {}", x.evidence)?;
        }
        if !x.fix.is_empty() {
            writeln!(out, "{indent}  fix: {}", x.fix)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> Flow {
        let mut f = Flow {
            ethertype: 0x0800,
            l4: 1,
            icmp_type: 8,
            icmp_id: 7,
            icmp_seq: 1,
            ..Default::default()
        };
        f.src[..4].copy_from_slice(&[192, 168, 88, 11]);
        f.dst[..4].copy_from_slice(&[192, 168, 88, 12]);
        f
    }

    fn hop(ts: u64, ns: &str, ifname: &str, what: What) -> Observation {
        Observation {
            ts_ns: ts,
            netns: ns.into(),
            ifindex: 0,
            ifname: Some(ifname.into()),
            what,
            len: 84,
            mark: 0,
            outer: flow(),
            extras: Default::default(),
        }
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(!use_color(false));
        // NO_COLOR is read from the environment; only check the terminal half here.
        if std::env::var_os("NO_COLOR").is_none() {
            assert!(use_color(true));
        }
    }

    #[test]
    fn describes_common_packets() {
        assert_eq!(
            describe_flow(&flow()),
            "ICMP echo request 192.168.88.11 > 192.168.88.12 id 7 seq 1"
        );
        let mut t = flow();
        t.l4 = 6;
        t.sport = 40000;
        t.dport = 80;
        t.tcp_flags = 0x02;
        t.tcp_seq = 5;
        assert_eq!(
            describe_flow(&t),
            "TCP 192.168.88.11:40000 > 192.168.88.12:80 [S] seq 5"
        );
    }

    #[test]
    fn renders_hops_with_times_and_the_drop() {
        let p = PacketPath {
            key: crate::correlate::PacketKey::of(&flow()),
            hops: vec![
                hop(1_000, "ns01", "veth01", What::Hook(Dir::Egress)),
                hop(7_000, "node", "br-veth01", What::Hook(Dir::Ingress)),
                hop(
                    9_000,
                    "node",
                    "br-veth01",
                    What::Drop {
                        reason: "NETFILTER_DROP".into(),
                        location: "nf_hook_slow+0x9c".into(),
                    },
                ),
            ],
        };
        let mut out = Vec::new();
        packet(&mut out, &p, "").expect("write");
        let s = String::from_utf8(out).expect("utf8");
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(
            lines[0],
            "ICMP echo request 192.168.88.11 > 192.168.88.12 id 7 seq 1"
        );
        assert_eq!(lines[1], "  ns01 veth01 egress          +0µs");
        assert_eq!(lines[2], "  node br-veth01 ingress      +6µs");
        assert_eq!(
            lines[3],
            "  ✗ dropped in node, on br-veth01: NETFILTER_DROP at nf_hook_slow+0x9c  +8µs"
        );
    }

    fn verdict(v: &str) -> What {
        What::netfilter("ip", "FORWARD", "filter", "FORWARD", v)
    }

    #[test]
    fn renders_the_netfilter_verdict_before_the_drop() {
        let p = PacketPath {
            key: crate::correlate::PacketKey::of(&flow()),
            hops: vec![
                hop(1_000, "ns01", "veth01", What::Hook(Dir::Egress)),
                hop(7_000, "node", "br-veth01", What::Hook(Dir::Ingress)),
                hop(8_000, "node", "br-veth02", verdict("DROP")),
                hop(
                    9_000,
                    "node",
                    "br-veth02",
                    What::Drop {
                        reason: "NETFILTER_DROP".into(),
                        location: "nf_hook_slow+0x9c".into(),
                    },
                ),
            ],
        };
        let mut out = Vec::new();
        packet(&mut out, &p, "").expect("write");
        let s = String::from_utf8(out).expect("utf8");
        let lines: Vec<&str> = s.lines().collect();
        // Hop lines keep their alignment: a netfilter line does not set the width.
        assert_eq!(lines[2], "  node br-veth01 ingress      +6µs");
        assert_eq!(
            lines[3],
            "  · netfilter in node: filter FORWARD (ip FORWARD hook) → DROP  +7µs"
        );
        assert!(lines[4].starts_with("  ✗ dropped in node, on br-veth02: NETFILTER_DROP"));
        // A drop verdict is red on a terminal, an accept dimmed.
        let mut out = Vec::new();
        packet_styled(&mut out, &p, "", true).expect("write");
        assert!(String::from_utf8(out)
            .expect("utf8")
            .contains("\x1b[31m· netfilter in node"));
        let accept = hop(8_000, "node", "br-veth02", verdict("ACCEPT"));
        assert_eq!(
            netfilter_line(&accept).as_deref(),
            Some("netfilter in node: filter FORWARD (ip FORWARD hook) → ACCEPT")
        );
        assert_eq!(hop_place(&accept), "node, on br-veth02");
        assert!(netfilter_line(&p.hops[0]).is_none());
    }

    /// The `format!`-based rendering the writer replaced: output must stay byte-identical.
    fn reference(p: &PacketPath, indent: &str, color: bool) -> String {
        use std::fmt::Write as _;
        let (red, dim, reset) = if color {
            (RED, DIM, RESET)
        } else {
            ("", "", "")
        };
        let mut out = String::new();
        let _ = writeln!(out, "{indent}{}", describe_flow(&p.flow()));
        let t0 = p.first_ts();
        let width = p
            .hops
            .iter()
            .filter(|h| !h.is_netfilter())
            .map(|h| hop_place(h).chars().count())
            .max()
            .unwrap_or(0);
        for h in &p.hops {
            let place = hop_place(h);
            let encap = if h.inner().is_some() { "  (vxlan)" } else { "" };
            let _ = match &h.what {
                What::Hook(_) => writeln!(
                    out,
                    "{indent}  {place:<width$}  {:>8}{encap}",
                    since(t0, h.ts_ns)
                ),
                What::Drop { reason, location } => writeln!(
                    out,
                    "{indent}  {red}✗ dropped in {place}: {reason} at {location}{reset}  {}",
                    since(t0, h.ts_ns)
                ),
                What::Freed {
                    reason,
                    location,
                    why,
                } => writeln!(
                    out,
                    "{indent}  {dim}· freed in {place}: {reason} at {location} ({why}){reset}  {}",
                    since(t0, h.ts_ns)
                ),
                What::Netfilter(_) => {
                    let style = if h.what.is_nf_drop() { red } else { dim };
                    writeln!(
                        out,
                        "{indent}  {style}· {}{reset}  {}",
                        netfilter_line(h).unwrap_or_default(),
                        since(t0, h.ts_ns)
                    )
                }
            };
        }
        out
    }

    #[test]
    fn hop_lines_are_byte_identical_to_the_format_rendering() {
        let mut seed = 0x853c_49e6_748f_ea9bu64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let long = "x".repeat(90);
        let names = [
            "ns01",
            "node",
            "ünïcødé-ñs",
            "",
            "veth-with-a-long-name",
            &long,
            "é",
        ];
        let gaps = [0, 999, 1_000, 99_999_000, 100_000_000, 12_345_678_901_234];
        for case in 0..2_000 {
            let mut t = next() % 1_000_000_000;
            let hops = (0..1 + next() % 6)
                .map(|_| {
                    t += gaps[(next() % gaps.len() as u64) as usize];
                    let pick = |n: u64| names[(n % names.len() as u64) as usize];
                    let what = match next() % 6 {
                        0 | 1 => What::Hook(Dir::Egress),
                        2 => What::Hook(Dir::Ingress),
                        3 => What::Drop {
                            reason: "NETFILTER_DROP".into(),
                            location: "nf_hook_slow+0x9c".into(),
                        },
                        4 => What::Freed {
                            reason: "NO_SOCKET".into(),
                            location: "ping_rcv+0x1".into(),
                            why: crate::decode::Benign::RawSocketCopy,
                        },
                        _ => verdict(if next() % 2 == 0 { "DROP" } else { "ACCEPT" }),
                    };
                    let mut o = hop(t, pick(next()), pick(next()), what);
                    if next() % 5 == 0 {
                        o.ifname = None;
                    }
                    if next() % 4 == 0 {
                        o.set_inner(Some(flow()));
                    }
                    o
                })
                .collect();
            let p = PacketPath {
                key: crate::correlate::PacketKey::of(&flow()),
                hops,
            };
            for (indent, color) in [("", false), ("    ", true)] {
                let mut out = Vec::new();
                packet_styled(&mut out, &p, indent, color).expect("write");
                assert_eq!(
                    String::from_utf8(out).expect("utf8"),
                    reference(&p, indent, color),
                    "case {case}"
                );
            }
        }
    }
}
