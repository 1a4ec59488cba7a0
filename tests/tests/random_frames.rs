//! Program tier, randomized: thousands of frames through BPF_PROG_TEST_RUN of the tc program,
//! each event compared field by field with reference parses of the same bytes. Never a
//! misparse.
//!
//! Frames, from a seeded PRNG (the seed is printed; `VETHTRACE_FRAMES_SEED=N` replays or changes
//! it, `VETHTRACE_FRAMES=N` sets how many of each kind):
//! - valid: Ethernet with 0–3 VLAN tags (802.1Q/802.1ad), then IPv4 (options, fragments), IPv6
//!   (hop-by-hop, destination options, routing, fragment and authentication headers), ARP or
//!   another ethertype; TCP (options), UDP, ICMP, ICMPv6 or another protocol; VXLAN (UDP 4789
//!   and 8472, with and without the I flag) around a valid inner frame; random addresses, ports,
//!   ids and payloads. Built with etherparse.
//! - truncated: valid frames cut at random lengths, and every length of some.
//! - garbage: valid frames with random bytes overwritten, and random bytes after an Ethernet
//!   header (and VLAN tags) of a random or interesting ethertype.
//!
//! Two references, written apart from the kernel code:
//! - [`etherparse_ref`]: etherparse's parse of a whole valid frame, turned into the fields the
//!   event documents (`vethtrace_common::Flow`). It is asked only about valid frames.
//! - [`walk`]: a reference walk of any bytes by the event's contract, where each header's
//!   fields are recorded once the bytes the contract reads for it are there, and TRUNCATED is
//!   set when the frame ends inside one: Ethernet's 14 bytes, each 4-byte VLAN tag (when the
//!   frame ends inside one, the flow's ethertype is the tag's TPID), IPv4's 20 fixed bytes
//!   (then the transport header at IHL × 4; IHL < 5 ends parsing there), IPv6's 40 fixed
//!   bytes, the first 2 bytes of a hop-by-hop, routing, destination options or authentication
//!   header and 4 of a fragment header (when the frame ends inside one, `l4` is that header's
//!   type), TCP up to its flags (14 bytes), UDP's ports (4), ICMP's first 8 bytes, ARP's first
//!   8 bytes then its Ethernet/IPv4 sender and target addresses, and VXLAN's 8-byte header
//!   (after the 8-byte UDP header; its I flag makes the packet VXLAN). Later IPv4 and IPv6
//!   fragments carry no transport header.
//!
//! The kernel's event must equal [`walk`] on every frame and [`etherparse_ref`] on every valid
//! one, and a truncated frame's event may only hold fields the whole frame's event holds.
//! Runs in the test's own network namespace context but attaches nothing anywhere.

use std::fmt::Write as _;

use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, ArpPacketSlice, EtherType, Ethernet2HeaderSlice,
    Icmpv4Slice, Icmpv6Slice, IpAuthHeader, IpFragOffset, IpHeaders, IpNumber, Ipv4Extensions,
    Ipv4Header, Ipv4HeaderSlice, Ipv6ExtensionSlice, Ipv6Extensions, Ipv6ExtensionsSlice,
    Ipv6FlowLabel, Ipv6FragmentHeader, Ipv6Header, Ipv6HeaderSlice, Ipv6RawExtHeader,
    Ipv6RoutingExtensions, PacketBuilder, SingleVlanHeaderSlice, TcpHeader, TcpHeaderSlice,
    UdpHeaderSlice,
};
use vethtrace::loader::DeviceReads;
use vethtrace_common::{flag, hook, kind, Event, Flow, WIRE_VERSION};
use vethtrace_tests::tc_ingress::{TcIngress, PASS_ON};

const DEFAULT_SEED: u64 = 0x5eed_f4a3_e5ca_1ab1;
/// Frames of each kind (valid, cut, garbage) by default: about 2 s.
const DEFAULT_FRAMES: usize = 3000;
const VXLAN_PORTS: [u16; 2] = [4789, 8472];

#[test]
fn random_frames_parse_like_the_references() {
    if !vethtrace_tests::privileged("random_frames_parse_like_the_references") {
        return;
    }
    let seed = env_number("VETHTRACE_FRAMES_SEED").unwrap_or(DEFAULT_SEED);
    let n = env_number("VETHTRACE_FRAMES").map_or(DEFAULT_FRAMES, |n| n as usize);
    eprintln!(
        "random_frames: seed {seed:#x}, {n} frames of each kind \
         (VETHTRACE_FRAMES_SEED / VETHTRACE_FRAMES change them)"
    );
    let mut rng = Rng::new(seed);
    let mut h = Harness::new();
    let mut report = Report::default();

    // Valid frames: both references, and the events are the whole frame's.
    let mut valid = Vec::new();
    for i in 0..n {
        let frame = valid_frame(&mut rng, true);
        let ev = h
            .run(&frame)
            .expect("BPF_PROG_TEST_RUN takes every valid frame");
        let reference = etherparse_ref(&frame);
        let walked = walk(&frame);
        report.check("valid/etherparse", seed, i, &frame, &ev, &reference);
        report.check("valid/walk", seed, i, &frame, &ev, &walked);
        report.agree("valid/references", seed, i, &frame, &reference, &walked);
        // Kept for cutting at every length: a dozen VXLAN frames and a dozen others.
        let encap = ev.flags & flag::ENCAP != 0;
        if valid
            .iter()
            .filter(|(_, e): &&(_, Event)| (e.flags & flag::ENCAP != 0) == encap)
            .count()
            < 12
        {
            valid.push((frame, ev));
        }
    }

    // Cut frames: the walk, and nothing the whole frame's event does not hold (the whole frame
    // is checked too).
    let mut refused = Refused::default();
    for i in 0..n {
        let frame = valid_frame(&mut rng, true);
        if frame.len() <= 14 {
            continue;
        }
        let whole = h
            .run(&frame)
            .expect("BPF_PROG_TEST_RUN takes every valid frame");
        report.check("valid/walk", seed, i, &frame, &whole, &walk(&frame));
        let whole = kernel(&whole);
        let len = 14 + rng.below(frame.len() - 14);
        let cut = &frame[..len];
        let Some(ev) = refused.run(&mut h, cut) else {
            continue;
        };
        report.check("cut", seed, i, cut, &ev, &walk(cut));
        report.subset("cut/subset", seed, i, cut, &ev, &whole);
    }
    // Every length of a few whole frames, including the ones BPF_PROG_TEST_RUN refuses.
    for (i, (frame, whole)) in valid.iter().enumerate() {
        for len in 0..frame.len() {
            let cut = &frame[..len];
            if let Some(ev) = refused.run(&mut h, cut) {
                report.check("every-length", seed, i, cut, &ev, &walk(cut));
                report.subset("every-length/subset", seed, i, cut, &ev, &kernel(whole));
            }
        }
    }

    // Garbage: the walk.
    for i in 0..n {
        let frame = if rng.below(2) == 0 {
            let mut f = valid_frame(&mut rng, true);
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(f.len());
                f[at] = rng.byte();
            }
            f
        } else {
            garbage_frame(&mut rng)
        };
        if let Some(ev) = refused.run(&mut h, &frame) {
            report.check("garbage", seed, i, &frame, &ev, &walk(&frame));
        }
    }

    let counters = h.0.counters().expect("counters");
    eprintln!(
        "random_frames: {} events compared, {} frames refused by BPF_PROG_TEST_RUN (shorter \
         than their L3 header), counters {counters:?}",
        report.compared, refused.count
    );
    assert_eq!(counters.lost, 0, "ring buffer overflowed");
    assert!(
        report.compared >= 4 * n,
        "{} events compared",
        report.compared
    );
    report.finish();
}

/// The event's flows and flags, as a reference expects them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Parsed {
    outer: Flow,
    inner: Flow,
    /// [`flag::ENCAP`] and [`flag::TRUNCATED`].
    flags: u8,
}

fn kernel(ev: &Event) -> Parsed {
    Parsed {
        outer: ev.outer,
        inner: ev.inner,
        flags: ev.flags,
    }
}

// ---- The kernel side. ----

struct Harness(TcIngress);

impl Harness {
    fn new() -> Harness {
        Harness(TcIngress::load(&[], false, DeviceReads::Best).expect("programs load"))
    }

    /// Runs the ingress program on `frame`: its one event, or the error of BPF_PROG_TEST_RUN
    /// when the kernel refused the frame before the program ran.
    fn run(&mut self, frame: &[u8]) -> Result<Event, String> {
        let (ret, records) = self.0.run(frame).map_err(|e| format!("{e:#}"))?;
        assert_eq!(ret, PASS_ON, "the tracer must pass every packet on");
        assert_eq!(records.len(), 1, "one event per packet: {}", hex(frame));
        let ev = Event::decode(&records[0]).expect("the record decodes");
        assert_eq!(
            (ev.version, ev.kind, ev.hook),
            (WIRE_VERSION, kind::PACKET, hook::TC_INGRESS)
        );
        assert_eq!(ev.len as usize, frame.len(), "skb->len");
        assert_eq!(
            (ev.mark, ev.drop_reason, ev.location, ev.snap_len),
            (0, 0, 0, 0)
        );
        assert_ne!(ev.netns_cookie, 0, "the device's namespace is known");
        assert_ne!(ev.ts_ns, 0);
        Ok(ev)
    }
}

/// Frames BPF_PROG_TEST_RUN refuses before running the program: it needs a whole Ethernet
/// header, and a whole IPv4 or IPv6 header when the ethertype says so. Any other refusal fails.
#[derive(Default)]
struct Refused {
    count: usize,
}

impl Refused {
    fn run(&mut self, h: &mut Harness, frame: &[u8]) -> Option<Event> {
        match h.run(frame) {
            Ok(ev) => Some(ev),
            Err(e) => {
                let ethertype = frame.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]]));
                let expected = frame.len() < 14
                    || (ethertype == Some(0x0800) && frame.len() < 14 + 20)
                    || (ethertype == Some(0x86dd) && frame.len() < 14 + 40);
                assert!(
                    expected,
                    "BPF_PROG_TEST_RUN refused a {}-byte frame: {e}: {}",
                    frame.len(),
                    hex(frame)
                );
                self.count += 1;
                None
            }
        }
    }
}

// ---- Comparing. ----

struct Report {
    compared: usize,
    failures: Vec<String>,
    /// Events of each kind in [`KINDS`]: the generator must reach every one.
    seen: Vec<(&'static str, usize)>,
}

/// Kinds of events the frames must produce, each many times.
const KINDS: [&str; 12] = [
    "vlan",
    "arp",
    "ipv4",
    "ipv6",
    "tcp",
    "udp",
    "icmp",
    "icmp6",
    "vxlan",
    "truncated",
    "truncated vxlan",
    "ipv6 extension header",
];

fn is(kind: &str, p: &Parsed) -> bool {
    let f = &p.outer;
    match kind {
        "vlan" => f.vlan != 0,
        "arp" => f.ethertype == 0x0806 && f.arp_op != 0,
        "ipv4" => f.ethertype == 0x0800 && f.ttl != 0,
        "ipv6" => f.ethertype == 0x86dd && f.ip_len != 0,
        "tcp" => f.l4 == 6 && f.sport | f.dport != 0,
        "udp" => f.l4 == 17 && f.sport | f.dport != 0,
        "icmp" => f.ethertype == 0x0800 && f.l4 == 1 && f.icmp_type | f.icmp_code != 0,
        "icmp6" => f.ethertype == 0x86dd && f.l4 == 58 && f.icmp_type != 0,
        "vxlan" => p.flags & flag::ENCAP != 0 && p.inner.ethertype != 0,
        "truncated" => p.flags & flag::TRUNCATED != 0,
        "truncated vxlan" => p.flags == flag::ENCAP | flag::TRUNCATED,
        "ipv6 extension header" => f.ethertype == 0x86dd && matches!(f.l4, 0 | 43 | 44 | 51 | 60),
        _ => unreachable!("{kind}"),
    }
}

impl Default for Report {
    fn default() -> Report {
        Report {
            compared: 0,
            failures: Vec::new(),
            seen: KINDS.iter().map(|k| (*k, 0)).collect(),
        }
    }
}

impl Report {
    fn check(&mut self, what: &str, seed: u64, i: usize, frame: &[u8], ev: &Event, want: &Parsed) {
        self.compared += 1;
        let got = kernel(ev);
        for (kind, seen) in self.seen.iter_mut() {
            *seen += usize::from(is(kind, &got));
        }
        if got == *want {
            return;
        }
        self.fail(
            what,
            seed,
            i,
            frame,
            diff("kernel", &got, "reference", want),
        );
    }

    fn agree(&mut self, what: &str, seed: u64, i: usize, frame: &[u8], a: &Parsed, b: &Parsed) {
        if a != b {
            self.fail(what, seed, i, frame, diff("etherparse", a, "walk", b));
        }
    }

    /// A cut frame's event holds nothing the whole frame's does not, except what the contract
    /// says a frame ending inside a VLAN tag or an IPv6 extension header records.
    fn subset(
        &mut self,
        what: &str,
        seed: u64,
        i: usize,
        frame: &[u8],
        ev: &Event,
        whole: &Parsed,
    ) {
        let got = kernel(ev);
        let mut bad = Vec::new();
        for (layer, g, w) in [
            ("outer", &got.outer, &whole.outer),
            ("inner", &got.inner, &whole.inner),
        ] {
            let unset = fields(&Flow::default());
            for ((name, gv), ((_, wv), (_, zero))) in
                fields(g).into_iter().zip(fields(w).into_iter().zip(unset))
            {
                let zero = gv == zero;
                let vlan_tpid = name == "ethertype" && matches!(g.ethertype, 0x8100 | 0x88a8);
                let ext_type = name == "l4" && matches!(g.l4, 0 | 43 | 44 | 51 | 60);
                if gv != wv && !zero && !vlan_tpid && !ext_type {
                    bad.push(format!("{layer}.{name}: cut {gv}, whole {wv}"));
                }
            }
        }
        if got.flags & flag::ENCAP != 0 && whole.flags & flag::ENCAP == 0 {
            bad.push("ENCAP only on the cut frame".into());
        }
        if !bad.is_empty() {
            self.fail(what, seed, i, frame, bad.join("; "));
        }
    }

    fn fail(&mut self, what: &str, seed: u64, i: usize, frame: &[u8], why: String) {
        self.failures.push(format!(
            "{what} #{i} (seed {seed:#x}), {} bytes: {why}\n  frame {}",
            frame.len(),
            hex(frame)
        ));
    }

    fn finish(self) {
        eprintln!("random_frames: events seen {:?}", self.seen);
        for (kind, seen) in &self.seen {
            assert!(
                *seen >= 20,
                "only {seen} {kind} events: the generator misses them"
            );
        }
        assert!(
            self.failures.is_empty(),
            "{} misparses; the first ones:\n{}",
            self.failures.len(),
            self.failures
                .iter()
                .take(12)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

// ---- Reference 1: etherparse, on valid frames. ----

/// etherparse's reading of a whole valid frame, turned into the fields the event documents:
/// etherparse's header slices decode every field; only the event's contract decides which
/// headers are followed (two VLAN tags at most, transport headers only in first fragments, the
/// VXLAN inner frame without a second VXLAN look).
fn etherparse_ref(frame: &[u8]) -> Parsed {
    let mut p = Parsed::default();
    if let Some(vx) = ep_layer(frame, &mut p.outer, true) {
        match frame.get(vx..vx + 8) {
            None => p.flags |= flag::TRUNCATED,
            Some(h) if h[0] & 0x08 == 0 => {}
            Some(_) => {
                p.flags |= flag::ENCAP;
                let _ = ep_layer(&frame[vx + 8..], &mut p.inner, false);
            }
        }
    }
    p
}

/// One Ethernet frame; returns the offset of a VXLAN header when `vxlan` and the packet is UDP
/// to a VXLAN port.
fn ep_layer(b: &[u8], f: &mut Flow, vxlan: bool) -> Option<usize> {
    let eth = Ethernet2HeaderSlice::from_slice(b).expect("valid frame: Ethernet");
    let mut ethertype = eth.ether_type().0;
    let mut at = eth.slice().len();
    for tag in 0..2 {
        if ethertype != 0x8100 && ethertype != 0x88a8 {
            break;
        }
        let vlan = SingleVlanHeaderSlice::from_slice(&b[at..]).expect("valid frame: VLAN tag");
        if tag == 0 {
            f.vlan = vlan.vlan_identifier().value();
        }
        ethertype = vlan.ether_type().0;
        at += vlan.slice().len();
    }
    f.ethertype = ethertype;
    let (l4_at, l4) = match ethertype {
        0x0800 => {
            let ip = Ipv4HeaderSlice::from_slice(&b[at..]).expect("valid frame: IPv4");
            f.ip_len = ip.total_len();
            f.ip_id = u32::from(ip.identification());
            f.ttl = ip.ttl();
            f.l4 = ip.protocol().0;
            f.src[..4].copy_from_slice(&ip.source());
            f.dst[..4].copy_from_slice(&ip.destination());
            if ip.fragments_offset().value() != 0 {
                return None;
            }
            (at + ip.slice().len(), f.l4)
        }
        0x86dd => {
            let ip = Ipv6HeaderSlice::from_slice(&b[at..]).expect("valid frame: IPv6");
            f.ip_id = ip.flow_label().value();
            f.ip_len = ip.payload_length().saturating_add(40);
            f.ttl = ip.hop_limit();
            f.src = ip.source();
            f.dst = ip.destination();
            let rest = &b[at + 40..];
            let (exts, next, _) =
                Ipv6ExtensionsSlice::from_slice(ip.next_header(), rest).expect("valid frame: exts");
            for ext in exts.clone() {
                if let Ipv6ExtensionSlice::Fragment(frag) = ext {
                    if frag.fragment_offset().value() != 0 {
                        f.l4 = frag.next_header().0;
                        return None;
                    }
                }
            }
            f.l4 = next.0;
            (at + 40 + exts.slice().len(), f.l4)
        }
        0x0806 => {
            let arp = ArpPacketSlice::from_slice(&b[at..]).expect("valid frame: ARP");
            f.arp_op = arp.operation().0 as u8;
            if arp.hw_addr_size() == 6 && arp.proto_addr_size() == 4 {
                f.src[..4].copy_from_slice(arp.sender_protocol_addr());
                f.dst[..4].copy_from_slice(arp.target_protocol_addr());
            }
            return None;
        }
        _ => return None,
    };
    let t = &b[l4_at..];
    match l4 {
        6 => {
            let tcp = TcpHeaderSlice::from_slice(t).expect("valid frame: TCP");
            f.sport = tcp.source_port();
            f.dport = tcp.destination_port();
            f.tcp_seq = tcp.sequence_number();
            f.tcp_flags = tcp.slice()[13];
        }
        17 => {
            let udp = UdpHeaderSlice::from_slice(t).expect("valid frame: UDP");
            f.sport = udp.source_port();
            f.dport = udp.destination_port();
            if vxlan && VXLAN_PORTS.contains(&f.dport) {
                return Some(l4_at + udp.slice().len());
            }
        }
        1 => {
            let icmp = Icmpv4Slice::from_slice(t).expect("valid frame: ICMP");
            icmp_fields(f, icmp.type_u8(), icmp.code_u8(), icmp.bytes5to8());
        }
        58 => {
            let icmp = Icmpv6Slice::from_slice(t).expect("valid frame: ICMPv6");
            icmp_fields(f, icmp.type_u8(), icmp.code_u8(), icmp.bytes5to8());
        }
        _ => {}
    }
    None
}

/// The event's ICMP fields: type, code, and id and sequence from bytes 4–8 of every type.
fn icmp_fields(f: &mut Flow, icmp_type: u8, code: u8, rest: [u8; 4]) {
    f.icmp_type = icmp_type;
    f.icmp_code = code;
    f.icmp_id = u16::from_be_bytes([rest[0], rest[1]]);
    f.icmp_seq = u16::from_be_bytes([rest[2], rest[3]]);
}

/// `name value` of every field of a flow, in declaration order.
fn fields(f: &Flow) -> Vec<(&'static str, String)> {
    vec![
        ("src", format!("{:?}", f.src)),
        ("dst", format!("{:?}", f.dst)),
        ("ethertype", format!("{:#06x}", f.ethertype)),
        ("l4", f.l4.to_string()),
        ("ttl", f.ttl.to_string()),
        ("sport", f.sport.to_string()),
        ("dport", f.dport.to_string()),
        ("ip_id", f.ip_id.to_string()),
        ("tcp_seq", f.tcp_seq.to_string()),
        ("icmp_type", f.icmp_type.to_string()),
        ("icmp_code", f.icmp_code.to_string()),
        ("tcp_flags", f.tcp_flags.to_string()),
        ("arp_op", f.arp_op.to_string()),
        ("icmp_id", f.icmp_id.to_string()),
        ("icmp_seq", f.icmp_seq.to_string()),
        ("vlan", f.vlan.to_string()),
        ("ip_len", f.ip_len.to_string()),
    ]
}

/// The fields where two readings differ, as `layer.field: a X, b Y`.
fn diff(a_name: &str, a: &Parsed, b_name: &str, b: &Parsed) -> String {
    let mut out = Vec::new();
    if a.flags != b.flags {
        out.push(format!(
            "flags: {a_name} {:#04x}, {b_name} {:#04x}",
            a.flags, b.flags
        ));
    }
    for (layer, x, y) in [("outer", &a.outer, &b.outer), ("inner", &a.inner, &b.inner)] {
        for ((name, xv), (_, yv)) in fields(x).into_iter().zip(fields(y)) {
            if xv != yv {
                out.push(format!("{layer}.{name}: {a_name} {xv}, {b_name} {yv}"));
            }
        }
    }
    out.join("; ")
}

/// Lower-case hex of a frame, for replaying a failure.
fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for byte in b {
        let _ = write!(s, "{byte:02x}");
    }
    s
}

// ---- Reference 2: the contract's walk, on any bytes. ----

/// The event the contract describes for any bytes (see the module documentation).
fn walk(b: &[u8]) -> Parsed {
    let mut p = Parsed::default();
    match walk_layer(b, 0, &mut p.outer) {
        End::Done => {}
        End::Short => p.flags |= flag::TRUNCATED,
        End::Vxlan(at) => match get::<8>(b, at).map(|h| h[0]) {
            None => p.flags |= flag::TRUNCATED,
            Some(f) if f & 0x08 == 0 => {}
            Some(_) => {
                p.flags |= flag::ENCAP;
                // The inner frame's own VXLAN is not looked into.
                if walk_layer(b, at + 8, &mut p.inner) == End::Short {
                    p.flags |= flag::TRUNCATED;
                }
            }
        },
    }
    p
}

#[derive(Debug, PartialEq, Eq)]
enum End {
    Done,
    /// The frame ended inside a header.
    Short,
    /// UDP to a VXLAN port: the VXLAN header is at this offset.
    Vxlan(usize),
}

fn get<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// One Ethernet frame at `at`.
fn walk_layer(b: &[u8], at: usize, f: &mut Flow) -> End {
    let Some(eth) = get::<14>(b, at) else {
        return End::Short;
    };
    let mut ethertype = be16(&eth[12..]);
    let mut at = at + 14;
    for tag in 0..2 {
        if ethertype != 0x8100 && ethertype != 0x88a8 {
            break;
        }
        let Some(t) = get::<4>(b, at) else {
            f.ethertype = ethertype;
            return End::Short;
        };
        if tag == 0 {
            f.vlan = be16(&t) & 0x0fff;
        }
        ethertype = be16(&t[2..]);
        at += 4;
    }
    f.ethertype = ethertype;
    match ethertype {
        0x0800 => walk_ipv4(b, at, f),
        0x86dd => walk_ipv6(b, at, f),
        0x0806 => walk_arp(b, at, f),
        _ => End::Done,
    }
}

fn walk_arp(b: &[u8], at: usize, f: &mut Flow) -> End {
    // htype(2) ptype(2) hlen(1) plen(1) op(2) sha spa tha tpa
    let Some(h) = get::<8>(b, at) else {
        return End::Short;
    };
    f.arp_op = h[7];
    if (h[4], h[5]) != (6, 4) {
        return End::Done;
    }
    let Some(spa) = get::<4>(b, at + 8 + 6) else {
        return End::Short;
    };
    f.src[..4].copy_from_slice(&spa);
    let Some(tpa) = get::<4>(b, at + 8 + 6 + 4 + 6) else {
        return End::Short;
    };
    f.dst[..4].copy_from_slice(&tpa);
    End::Done
}

fn walk_ipv4(b: &[u8], at: usize, f: &mut Flow) -> End {
    let Some(h) = get::<20>(b, at) else {
        return End::Short;
    };
    let header_len = usize::from(h[0] & 0x0f) * 4;
    if header_len < 20 {
        return End::Done;
    }
    f.ip_len = be16(&h[2..]);
    f.ip_id = be16(&h[4..]).into();
    f.ttl = h[8];
    f.l4 = h[9];
    f.src[..4].copy_from_slice(&h[12..16]);
    f.dst[..4].copy_from_slice(&h[16..20]);
    if be16(&h[6..]) & 0x1fff != 0 {
        return End::Done;
    }
    walk_l4(b, at + header_len, f)
}

fn walk_ipv6(b: &[u8], at: usize, f: &mut Flow) -> End {
    let Some(h) = get::<40>(b, at) else {
        return End::Short;
    };
    f.ip_id = u32::from_be_bytes([0, h[1] & 0x0f, h[2], h[3]]);
    f.ip_len = be16(&h[4..]).saturating_add(40);
    f.ttl = h[7];
    f.src.copy_from_slice(&h[8..24]);
    f.dst.copy_from_slice(&h[24..40]);
    let mut next = h[6];
    let mut at = at + 40;
    // At most six extension headers are followed.
    for _ in 0..6 {
        let (need, len): (usize, fn(&[u8]) -> usize) = match next {
            0 | 43 | 60 => (2, |e| (usize::from(e[1]) + 1) * 8),
            44 => (4, |_| 8),
            51 => (2, |e| (usize::from(e[1]) + 2) * 4),
            _ => break,
        };
        let Some(e) = b.get(at..at + need) else {
            f.l4 = next;
            return End::Short;
        };
        let this = next;
        next = e[0];
        at += len(e);
        if this == 44 && be16(&e[2..]) & 0xfff8 != 0 {
            f.l4 = next;
            return End::Done;
        }
    }
    f.l4 = next;
    walk_l4(b, at, f)
}

fn walk_l4(b: &[u8], at: usize, f: &mut Flow) -> End {
    match f.l4 {
        6 => {
            let Some(t) = get::<14>(b, at) else {
                return End::Short;
            };
            f.sport = be16(&t[0..]);
            f.dport = be16(&t[2..]);
            f.tcp_seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
            f.tcp_flags = t[13];
        }
        17 => {
            let Some(u) = get::<4>(b, at) else {
                return End::Short;
            };
            f.sport = be16(&u[0..]);
            f.dport = be16(&u[2..]);
            if VXLAN_PORTS.contains(&f.dport) {
                return End::Vxlan(at + 8);
            }
        }
        1 | 58 => {
            let Some(i) = get::<8>(b, at) else {
                return End::Short;
            };
            (f.icmp_type, f.icmp_code) = (i[0], i[1]);
            (f.icmp_id, f.icmp_seq) = (be16(&i[4..]), be16(&i[6..]));
        }
        _ => {}
    }
    End::Done
}

// ---- Frames. ----

/// splitmix64: small, seedable, good enough to pick frames.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn u16(&mut self) -> u16 {
        self.next() as u16
    }

    fn u32(&mut self) -> u32 {
        self.next() as u32
    }

    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        std::array::from_fn(|_| self.byte())
    }

    /// Up to `max` random bytes.
    fn vec(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        self.fill(n)
    }

    fn fill(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// Ethernet, 0–3 VLAN tags, then the ethertype; returns the bytes so far.
fn link(rng: &mut Rng, ethertype: u16) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&rng.bytes::<12>());
    let tags = match rng.below(8) {
        0..=3 => 0,
        4 | 5 => 1,
        6 => 2,
        _ => 3,
    };
    for _ in 0..tags {
        v.extend_from_slice(&rng.pick(&[0x8100u16, 0x88a8]).to_be_bytes());
        // A VLAN id of 0 (priority tag) now and then.
        let vid = if rng.chance(8) { 0 } else { rng.u16() & 0x0fff };
        let tci = (u16::from(rng.byte() & 0x0f) << 12) | vid;
        v.extend_from_slice(&tci.to_be_bytes());
    }
    v.extend_from_slice(&ethertype.to_be_bytes());
    v
}

/// A valid frame; with `vxlan`, UDP to a VXLAN port may carry a valid inner frame.
fn valid_frame(rng: &mut Rng, vxlan: bool) -> Vec<u8> {
    match rng.below(16) {
        0..=6 => ip_frame(rng, true, vxlan),
        7..=12 => ip_frame(rng, false, vxlan),
        13 | 14 => arp_frame(rng),
        _ => {
            let ethertype = rng.pick(&[0x88cc, 0x8847, 0x88e1, 0x0842, 0x9000]);
            let mut v = link(rng, ethertype);
            v.extend(rng.vec(64));
            v
        }
    }
}

fn arp_frame(rng: &mut Rng) -> Vec<u8> {
    let op = match rng.below(4) {
        0 | 1 => ArpOperation::REQUEST,
        2 => ArpOperation::REPLY,
        _ => ArpOperation(rng.u16()),
    };
    // Ethernet/IPv4 mostly; other address sizes carry only the operation.
    let (hlen, plen) = if rng.chance(5) {
        (rng.pick(&[6usize, 8, 20]), rng.pick(&[4usize, 16]))
    } else {
        (6, 4)
    };
    let sha: Vec<u8> = (0..hlen).map(|_| rng.byte()).collect();
    let spa: Vec<u8> = (0..plen).map(|_| rng.byte()).collect();
    let tha: Vec<u8> = (0..hlen).map(|_| rng.byte()).collect();
    let tpa: Vec<u8> = (0..plen).map(|_| rng.byte()).collect();
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        op,
        &sha,
        &spa,
        &tha,
        &tpa,
    )
    .expect("arp");
    let mut v = link(rng, 0x0806);
    v.extend_from_slice(&arp.to_bytes());
    // Ethernet padding to 60 bytes now and then.
    if rng.chance(2) && v.len() < 60 {
        v.resize(60, 0);
    }
    v
}

fn ip_frame(rng: &mut Rng, v4: bool, vxlan: bool) -> Vec<u8> {
    // The transport protocol, then the IP header that carries it.
    let proto = match rng.below(10) {
        0..=2 => IpNumber::TCP,
        3..=5 => IpNumber::UDP,
        6..=8 if v4 => IpNumber::ICMP,
        6..=8 => IpNumber::IPV6_ICMP,
        _ => IpNumber(rng.pick(&[47, 132, 41, 4, 89, 103])),
    };
    let ip = if v4 { ipv4(rng) } else { ipv6(rng) };
    let mut v = link(rng, if v4 { 0x0800 } else { 0x86dd });
    let builder = PacketBuilder::ip(ip);
    let payload = rng.vec(48);
    let written = match proto {
        IpNumber::TCP => {
            let mut t = TcpHeader::new(rng.u16(), rng.u16(), rng.u32(), rng.u16());
            t.acknowledgment_number = rng.u32();
            let flags = rng.byte();
            (t.fin, t.syn, t.rst, t.psh) = (
                flags & 1 != 0,
                flags & 2 != 0,
                flags & 4 != 0,
                flags & 8 != 0,
            );
            (t.ack, t.urg, t.ece, t.cwr) = (
                flags & 16 != 0,
                flags & 32 != 0,
                flags & 64 != 0,
                flags & 128 != 0,
            );
            let options = rng.vec(40);
            t.set_options_raw(&options[..options.len() / 4 * 4])
                .expect("tcp options");
            builder.tcp_header(t).write(&mut v, &payload)
        }
        IpNumber::UDP => {
            let to_vxlan = vxlan && rng.chance(3);
            let dport = if to_vxlan || rng.chance(8) {
                rng.pick(&VXLAN_PORTS)
            } else {
                rng.u16()
            };
            // A VXLAN port as the source port is not VXLAN.
            let sport = if rng.chance(8) {
                rng.pick(&VXLAN_PORTS)
            } else {
                rng.u16()
            };
            let payload = if VXLAN_PORTS.contains(&dport) {
                // The I flag, almost always; a frame without it is plain UDP.
                let flags = if rng.chance(10) {
                    rng.byte() & !0x08
                } else {
                    0x08 | (rng.byte() & 0xf7)
                };
                let mut p = vec![flags, rng.byte(), rng.byte(), rng.byte()];
                p.extend_from_slice(&rng.bytes::<4>());
                p.extend(valid_frame(rng, false));
                p
            } else {
                payload
            };
            builder.udp(sport, dport).write(&mut v, &payload)
        }
        IpNumber::ICMP => {
            let (ty, code) = icmp_type(rng, &[0, 8], &[3, 4, 5, 11, 12]);
            builder
                .icmpv4_raw(ty, code, rng.bytes::<4>())
                .write(&mut v, &payload)
        }
        IpNumber::IPV6_ICMP => {
            let (ty, code) = icmp_type(rng, &[128, 129], &[1, 2, 3, 4, 133, 134, 135, 136]);
            builder
                .icmpv6_raw(ty, code, rng.bytes::<4>())
                .write(&mut v, &payload)
        }
        other => builder.write(&mut v, other, &payload),
    };
    written.expect("frame");
    v
}

fn icmp_type(rng: &mut Rng, echo: &[u8], others: &[u8]) -> (u8, u8) {
    if rng.chance(2) {
        (rng.pick(echo), 0)
    } else {
        (rng.pick(others), rng.byte() % 16)
    }
}

fn ipv4(rng: &mut Rng) -> IpHeaders {
    let mut h = Ipv4Header::new(0, rng.byte(), IpNumber::UDP, rng.bytes(), rng.bytes())
        .expect("ipv4 header");
    h.identification = rng.u16();
    h.dont_fragment = rng.chance(2);
    match rng.below(8) {
        // A first fragment (offset 0, more to come) carries the transport header.
        0 => h.more_fragments = true,
        1 => {
            h.more_fragments = rng.chance(2);
            h.fragment_offset = IpFragOffset::try_new(1 + rng.u16() % 0x1fff).expect("offset");
        }
        _ => {}
    }
    let options = rng.vec(40);
    h.options = options[..options.len() / 4 * 4]
        .try_into()
        .expect("options");
    IpHeaders::Ipv4(h, Ipv4Extensions::default())
}

fn ipv6(rng: &mut Rng) -> IpHeaders {
    let h = Ipv6Header {
        traffic_class: rng.byte(),
        flow_label: Ipv6FlowLabel::try_new(rng.u32() & 0xf_ffff).expect("flow label"),
        payload_length: 0,
        next_header: IpNumber::UDP,
        hop_limit: rng.byte(),
        source: rng.bytes(),
        destination: rng.bytes(),
    };
    let raw = |rng: &mut Rng| {
        let len = 6 + 8 * rng.below(3);
        Ipv6RawExtHeader::new_raw(IpNumber::UDP, &rng.fill(len)).expect("extension header")
    };
    let mut e = Ipv6Extensions::default();
    if rng.chance(4) {
        e.hop_by_hop_options = Some(raw(rng));
    }
    if rng.chance(4) {
        e.destination_options = Some(raw(rng));
    }
    if rng.chance(5) {
        e.routing = Some(Ipv6RoutingExtensions {
            routing: raw(rng),
            final_destination_options: rng.chance(2).then(|| raw(rng)),
        });
    }
    let fragment = match rng.below(8) {
        0 => Some((0, true)),
        1 => Some((1 + rng.u16() % 0x1fff, rng.chance(2))),
        2 => Some((0, false)),
        _ => None,
    };
    if let Some((offset, more)) = fragment {
        e.fragment = Some(Ipv6FragmentHeader::new(
            IpNumber::UDP,
            IpFragOffset::try_new(offset).expect("offset"),
            more,
            rng.u32(),
        ));
    }
    if rng.chance(6) {
        let icv = vec![0u8; 4 * rng.below(4)];
        e.auth = Some(IpAuthHeader::new(IpNumber::UDP, rng.u32(), rng.u32(), &icv).expect("ah"));
    }
    IpHeaders::Ipv6(h, e)
}

/// Random bytes after an Ethernet header, maybe tagged, of an interesting or random
/// ethertype.
fn garbage_frame(rng: &mut Rng) -> Vec<u8> {
    let ethertype = if rng.chance(4) {
        rng.u16()
    } else {
        rng.pick(&[0x0800, 0x86dd, 0x0806, 0x8100, 0x88a8])
    };
    let mut v = link(rng, ethertype);
    let len = match rng.below(4) {
        0 => rng.below(16),
        1 => rng.below(64),
        _ => rng.below(200),
    };
    v.extend((0..len).map(|_| rng.byte()));
    v
}

fn env_number(name: &str) -> Option<u64> {
    let s = std::env::var(name).ok()?;
    let parsed = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={s:?}: expected a number (decimal or 0x…)")))
}
