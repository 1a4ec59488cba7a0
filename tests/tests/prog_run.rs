//! Program tier: BPF_PROG_TEST_RUN of the tc program on crafted frames (built with etherparse),
//! asserting the return code (always "pass on"), the emitted event's fields and the counters.
//! Runs in the test's own network namespace context but attaches nothing anywhere.

use std::net::Ipv4Addr;

use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, IpHeaders, IpNumber, Ipv4Header,
    Ipv6Extensions, Ipv6FlowLabel, Ipv6Header, Ipv6RawExtHeader, PacketBuilder, VlanId,
};
use vethtrace::{
    events::Counters,
    kfunc::Patched,
    loader::{DeviceReads, Loaded},
    netns,
};
use vethtrace_common::{flag, hook, kind, Event};
use vethtrace_tests::tc_ingress::{TcIngress, PASS_ON};

const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
const A: [u8; 4] = [10, 222, 1, 3];
const B: [u8; 4] = [10, 222, 2, 3];

struct Harness(TcIngress);

impl Harness {
    fn new(filter: &[&str]) -> Harness {
        Self::with(filter, false)
    }

    fn with(filter: &[&str], snapshots: bool) -> Harness {
        Self::reading(filter, snapshots, DeviceReads::Best)
    }

    fn reading(filter: &[&str], snapshots: bool, device_reads: DeviceReads) -> Harness {
        Harness(TcIngress::load(filter, snapshots, device_reads).expect("programs load"))
    }

    fn loaded(&self) -> &Loaded {
        &self.0.loaded
    }

    /// Runs the ingress program on `frame`; returns the events it emitted.
    fn run(&mut self, frame: &[u8]) -> Vec<Event> {
        self.records(frame)
            .iter()
            .map(|r| Event::decode(r).expect("decodes"))
            .collect()
    }

    /// Runs the ingress program on `frame`; returns the raw ring-buffer records.
    fn records(&mut self, frame: &[u8]) -> Vec<Vec<u8>> {
        let (ret, records) = self.0.run(frame).expect("BPF_PROG_TEST_RUN");
        assert_eq!(ret, PASS_ON, "the tracer must pass every packet on");
        records
    }

    fn one(&mut self, frame: &[u8]) -> Event {
        let evs = self.run(frame);
        assert_eq!(evs.len(), 1, "one event per packet");
        let ev = evs[0];
        assert_eq!((ev.kind, ev.hook), (kind::PACKET, hook::TC_INGRESS));
        assert_eq!(ev.len as usize, frame.len());
        // BPF_PROG_TEST_RUN puts the skb on the loopback device of the caller's namespace.
        assert_eq!(
            ev.netns_cookie,
            netns::cookie_of_current().expect("own netns cookie"),
            "the device's namespace"
        );
        ev
    }

    fn counters(&self) -> Counters {
        self.0.counters().expect("counters")
    }
}

fn harness(test: &str, filter: &[&str]) -> Option<Harness> {
    vethtrace_tests::privileged(test).then(|| Harness::new(filter))
}

fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut x = [0; 16];
    x[..4].copy_from_slice(&a);
    x
}

fn icmp_echo(vlan: Option<(u16, Option<u16>)>) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(SRC_MAC, DST_MAC);
    let mut v = Vec::new();
    match vlan {
        None => eth
            .ipv4(A, B, 64)
            .icmpv4_echo_request(7, 3)
            .write(&mut v, &[0; 56]),
        Some((outer, None)) => eth
            .single_vlan(VlanId::try_new(outer).expect("vlan id"))
            .ipv4(A, B, 64)
            .icmpv4_echo_request(7, 3)
            .write(&mut v, &[0; 56]),
        Some((outer, Some(inner))) => eth
            .double_vlan(
                VlanId::try_new(outer).expect("vlan id"),
                VlanId::try_new(inner).expect("vlan id"),
            )
            .ipv4(A, B, 64)
            .icmpv4_echo_request(7, 3)
            .write(&mut v, &[0; 56]),
    }
    .expect("frame");
    v
}

#[test]
fn ipv4_icmp_echo() {
    let Some(mut h) = harness("ipv4_icmp_echo", &[]) else {
        return;
    };
    let ev = h.one(&icmp_echo(None));
    let f = ev.outer;
    assert_eq!((f.ethertype, f.l4, f.ttl), (0x0800, 1, 64));
    assert_eq!((f.src, f.dst), (v4(A), v4(B)));
    assert_eq!(
        (f.icmp_type, f.icmp_code, f.icmp_id, f.icmp_seq),
        (8, 0, 7, 3)
    );
    assert_eq!(f.ip_len, 84);
    assert_eq!(ev.flags, 0);
    assert_eq!(h.counters().emitted, 1);
}

#[test]
fn the_device_is_read_through_the_kfunc_or_else_probe_reads() {
    if !vethtrace_tests::privileged("the_device_is_read_through_the_kfunc_or_else_probe_reads") {
        return;
    }
    // Linux 6.18 has bpf_cast_to_kern_ctx: the placeholder became the kfunc call.
    let mut h = Harness::new(&[]);
    assert!(
        matches!(h.loaded().device_reads, Patched::Kfunc(id) if id > 0),
        "{:?}",
        h.loaded().device_reads
    );
    let direct = h.one(&icmp_echo(None));
    // An older kernel's path: the same namespace and fields through bpf_probe_read_kernel.
    let mut p = Harness::reading(&[], false, DeviceReads::ProbeReads);
    assert_eq!(p.loaded().device_reads, Patched::Fallback);
    let probed = p.one(&icmp_echo(None));
    assert_eq!(probed.netns_cookie, direct.netns_cookie);
    // A kernel that knows the kfunc but refuses the call (here: BTF id 1 is no function) gets
    // the programs again with probe reads instead of failing.
    let mut refused = Harness::reading(&[], false, DeviceReads::KfuncId(1));
    assert_eq!(refused.loaded().device_reads, Patched::Fallback);
    assert_eq!(
        refused.one(&icmp_echo(None)).netns_cookie,
        direct.netns_cookie
    );
    assert_eq!(
        (probed.ifindex, probed.outer.src, probed.outer.icmp_seq),
        (direct.ifindex, direct.outer.src, direct.outer.icmp_seq)
    );
}

#[test]
fn ipv4_with_options_follows_ihl() {
    let Some(mut h) = harness("ipv4_with_options_follows_ihl", &[]) else {
        return;
    };
    let mut ip = Ipv4Header::new(0, 64, IpNumber::UDP, A, B).expect("ipv4 header");
    // Eight bytes of options: IHL 7, so the transport header starts at 28, not 20.
    ip.options = [1u8, 1, 1, 1, 1, 1, 1, 0].into();
    let mut v = Vec::new();
    PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ip(IpHeaders::Ipv4(ip, Default::default()))
        .udp(5353, 53)
        .write(&mut v, &[0; 12])
        .expect("frame");
    assert_eq!(v[14] & 0x0f, 7, "IHL 7 on the wire");
    let f = h.one(&v).outer;
    assert_eq!((f.l4, f.sport, f.dport), (17, 5353, 53));
}

#[test]
fn ipv6_extension_headers_and_icmpv6() {
    let Some(mut h) = harness("ipv6_extension_headers_and_icmpv6", &[]) else {
        return;
    };
    let src = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let dst = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let ip6 = Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::try_new(0x12345).expect("flow label"),
        payload_length: 0,
        next_header: IpNumber::IPV6_HEADER_HOP_BY_HOP,
        hop_limit: 63,
        source: src,
        destination: dst,
    };
    let exts = Ipv6Extensions {
        hop_by_hop_options: Some(
            Ipv6RawExtHeader::new_raw(IpNumber::IPV6_DESTINATION_OPTIONS, &[0; 14])
                .expect("hop-by-hop"),
        ),
        destination_options: Some(
            Ipv6RawExtHeader::new_raw(IpNumber::IPV6_ICMP, &[0; 6]).expect("dest opts"),
        ),
        ..Default::default()
    };
    let mut v = Vec::new();
    PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ip(IpHeaders::Ipv6(ip6, exts))
        .icmpv6_echo_request(9, 4)
        .write(&mut v, &[0; 8])
        .expect("frame");
    let f = h.one(&v).outer;
    assert_eq!((f.ethertype, f.l4, f.ttl), (0x86dd, 58, 63));
    assert_eq!((f.src, f.dst), (src, dst));
    assert_eq!(f.ip_id, 0x12345, "flow label");
    assert_eq!((f.icmp_type, f.icmp_id, f.icmp_seq), (128, 9, 4));
}

#[test]
fn tcp_ports_flags_and_seq() {
    let Some(mut h) = harness("tcp_ports_flags_and_seq", &[]) else {
        return;
    };
    let mut v = Vec::new();
    PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv4(A, B, 64)
        .tcp(40000, 80, 0xdead_beef, 64240)
        .syn()
        .write(&mut v, &[])
        .expect("frame");
    let f = h.one(&v).outer;
    assert_eq!(
        (f.l4, f.sport, f.dport, f.tcp_seq),
        (6, 40000, 80, 0xdead_beef)
    );
    assert_eq!(f.tcp_flags & 0x02, 0x02, "SYN");
}

#[test]
fn vlan_and_vlan_in_vlan() {
    let Some(mut h) = harness("vlan_and_vlan_in_vlan", &[]) else {
        return;
    };
    let f = h.one(&icmp_echo(Some((100, None)))).outer;
    assert_eq!((f.vlan, f.ethertype, f.icmp_id), (100, 0x0800, 7));
    let f = h.one(&icmp_echo(Some((200, Some(300))))).outer;
    assert_eq!(
        (f.vlan, f.ethertype, f.icmp_seq),
        (200, 0x0800, 3),
        "outer tag, inner IPv4"
    );
}

#[test]
fn arp_request() {
    let Some(mut h) = harness("arp_request", &[]) else {
        return;
    };
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &SRC_MAC,
        &A,
        &[0; 6],
        &B,
    )
    .expect("arp");
    let mut v = Vec::new();
    PacketBuilder::ethernet2(SRC_MAC, [0xff; 6])
        .arp(arp)
        .write(&mut v)
        .expect("frame");
    let f = h.one(&v).outer;
    assert_eq!((f.ethertype, f.arp_op), (0x0806, 1));
    assert_eq!((f.src, f.dst), (v4(A), v4(B)));
}

fn vxlan(dport: u16) -> Vec<u8> {
    let inner = icmp_echo(None);
    let mut payload = vec![0x08, 0, 0, 0, 0, 0, 1, 0]; // I flag, VNI 1
    payload.extend_from_slice(&inner);
    let mut v = Vec::new();
    PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv4([172, 30, 0, 1], [172, 30, 0, 2], 64)
        .udp(41000, dport)
        .write(&mut v, &payload)
        .expect("frame");
    v
}

#[test]
fn vxlan_keeps_the_inner_packet_on_both_ports() {
    let Some(mut h) = harness("vxlan_keeps_the_inner_packet_on_both_ports", &[]) else {
        return;
    };
    for port in [8472, 4789] {
        let ev = h.one(&vxlan(port));
        assert_eq!(ev.flags & flag::ENCAP, flag::ENCAP);
        assert_eq!((ev.outer.l4, ev.outer.dport), (17, port));
        assert_eq!(ev.outer.src, v4([172, 30, 0, 1]));
        let i = ev.inner;
        assert_eq!((i.src, i.dst), (v4(A), v4(B)));
        assert_eq!((i.icmp_type, i.icmp_id, i.icmp_seq), (8, 7, 3));
    }
}

#[test]
fn truncated_frames_keep_what_was_parsed() {
    let Some(mut h) = harness("truncated_frames_keep_what_was_parsed", &[]) else {
        return;
    };
    // BPF_PROG_TEST_RUN itself refuses an IPv4 frame shorter than its IP header, so the
    // cuts start there: inside the ICMP header, inside the UDP header.
    let full = icmp_echo(None);
    let ev = h.one(&full[..14 + 20 + 4]);
    assert_eq!(ev.flags & flag::TRUNCATED, flag::TRUNCATED);
    assert_eq!((ev.outer.l4, ev.outer.src), (1, v4(A)));
    assert_eq!(ev.outer.icmp_type, 0, "ICMP header not complete");
    let vx = vxlan(8472);
    let ev = h.one(&vx[..14 + 20 + 2]);
    assert_eq!(ev.flags & flag::TRUNCATED, flag::TRUNCATED);
    assert_eq!((ev.outer.l4, ev.outer.sport, ev.outer.dport), (17, 0, 0));
    // Every length from the outer IP header on, through the VXLAN header and the inner
    // Ethernet, IP and ICMP headers: never a misparse, always one event.
    for len in 14 + 20..vx.len() {
        let ev = h.one(&vx[..len]);
        if len < vx.len() - 56 {
            assert_eq!(ev.flags & flag::TRUNCATED, flag::TRUNCATED, "length {len}");
        }
    }
}

#[test]
fn the_filter_runs_before_the_ring_buffer() {
    let Some(mut h) = harness(
        "the_filter_runs_before_the_ring_buffer",
        &["host", "10.222.2.3", "and", "icmp"],
    ) else {
        return;
    };
    assert_eq!(h.run(&icmp_echo(None)).len(), 1);
    let mut other = Vec::new();
    PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv4(A, Ipv4Addr::new(10, 9, 9, 9).octets(), 64)
        .icmpv4_echo_request(7, 3)
        .write(&mut other, &[])
        .expect("frame");
    assert!(h.run(&other).is_empty());
    // VXLAN: the outer packet does not match, the inner one does.
    assert_eq!(h.run(&vxlan(8472)).len(), 1);
    let c = h.counters();
    assert_eq!((c.emitted, c.filtered, c.lost), (2, 1, 0));
}

#[test]
fn snapshots_carry_the_first_bytes_of_the_frame() {
    if !vethtrace_tests::privileged("snapshots_carry_the_first_bytes_of_the_frame") {
        return;
    }
    let mut h = Harness::with(&[], true);
    // Longer than the snapshot: exactly SNAP_LEN bytes come back.
    let mut long = Vec::new();
    PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv4(A, B, 64)
        .udp(1000, 2000)
        .write(&mut long, &(0..=255u8).collect::<Vec<_>>())
        .expect("frame");
    assert!(long.len() > vethtrace_common::SNAP_LEN);
    let recs = h.records(&long);
    assert_eq!(recs.len(), 1);
    let ev = Event::decode(&recs[0]).expect("decodes");
    assert_eq!(ev.snap_len as usize, vethtrace_common::SNAP_LEN);
    assert_eq!(ev.snapshot(&recs[0]), &long[..vethtrace_common::SNAP_LEN]);
    // Shorter: the whole frame.
    let short = icmp_echo(None);
    let recs = h.records(&short[..60]);
    let ev = Event::decode(&recs[0]).expect("decodes");
    assert_eq!(ev.snapshot(&recs[0]), &short[..60]);
}
