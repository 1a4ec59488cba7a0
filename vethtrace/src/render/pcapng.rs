//! pcapng output (`vethtrace trace -w FILE.pcapng`): decoded observations that carry a packet
//! snapshot become Enhanced Packet Blocks that Wireshark and tshark open directly.
//!
//! Owns the file layout, not what goes in the comments (the caller builds "hop 2/4: …") and not
//! the file itself (it writes to any `impl Write`; give it a `BufWriter`, since blocks are written
//! field by field).
//!
//! Layout:
//! - one Section Header Block, `shb_userappl` = "vethtrace <version>";
//! - one Interface Description Block per (namespace, interface, link type), written lazily just
//!   before its first packet: `if_name` "<netns>/<ifname>" ("<netns>/-" for drops without a
//!   device), `if_description` "netns <netns>, ifindex <n>", `if_tsresol` 9 (nanoseconds),
//!   snaplen 192. Ethernet snapshots (tc hooks) use LINKTYPE_ETHERNET (1); drop snapshots start
//!   at the network header and use LINKTYPE_RAW (101, IPv4 or IPv6 told apart by the version
//!   nibble), so the same interface can have two IDBs;
//! - one Enhanced Packet Block per observation: Unix time in ns, captured length = snapshot
//!   length, original length = the skb length, `epb_flags` inbound (1) / outbound (2) / 0 for
//!   drops, and `opt_comment` = the caller's comment plus " — dropped: REASON at LOCATION" (or
//!   " — freed: …") for kfree_skb events.
//!
//! Built on `pcap-file` 2.0.0, the newest stable release (3.0 is still a release candidate).
//! Its API expresses everything needed here. One quirk it has: it writes an EPB timestamp as the
//! raw nanosecond count of its `Duration` whatever `if_tsresol` says, and reads it back the same
//! way; `if_tsresol` = 9 is what makes those raw counts correct for other readers.

use std::{
    borrow::Cow,
    collections::HashMap,
    io::{self, Write},
    time::Duration,
};

use pcap_file::{
    pcapng::{
        blocks::{
            enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption},
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
            section_header::{SectionHeaderBlock, SectionHeaderOption},
        },
        PcapNgWriter,
    },
    DataLink, Endianness, PcapError,
};

use crate::decode::{Dir, Observation, What};

/// Largest snapshot the kernel side takes, and the snaplen of every interface.
pub const SNAPLEN: u32 = 192;

/// `epb_flags` direction bits (pcapng spec, bits 0-1).
const EPB_INBOUND: u32 = 1;
const EPB_OUTBOUND: u32 = 2;

/// An option's length is a u16 that `pcap-file` truncates silently; keep strings below it.
const MAX_OPTION_BYTES: usize = 0xfff0;

/// Which IDB an observation belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct InterfaceKey {
    netns: String,
    ifname: Option<String>,
    /// The snapshot starts at the IP header (LINKTYPE_RAW), not at Ethernet.
    l3: bool,
}

/// Writes observations to a pcapng stream. See the module doc for the layout.
pub struct PcapngWriter<W: Write> {
    out: PcapNgWriter<W>,
    monotonic_to_unix_ns: i128,
    /// Interface id (index of its IDB in the section) per key.
    interfaces: HashMap<InterfaceKey, u32>,
}

impl<W: Write> PcapngWriter<W> {
    /// Writes the section header.
    ///
    /// `monotonic_to_unix_ns`: add to an event's CLOCK_MONOTONIC timestamp to get Unix time in
    /// ns (see [`monotonic_to_unix_offset_ns`]).
    pub fn new(w: W, monotonic_to_unix_ns: i128) -> io::Result<Self> {
        let section = SectionHeaderBlock {
            endianness: Endianness::native(),
            options: vec![SectionHeaderOption::UserApplication(Cow::Owned(format!(
                "vethtrace {}",
                env!("CARGO_PKG_VERSION")
            )))],
            ..Default::default()
        };
        let out = PcapNgWriter::with_section_header(w, section).map_err(io_error)?;
        Ok(Self {
            out,
            monotonic_to_unix_ns,
            interfaces: HashMap::new(),
        })
    }

    /// Writes one observation that has a snapshot; `comment` is e.g. "hop 2/4: node br-veth01
    /// ingress" (the caller builds it). Observations with an empty snapshot are skipped
    /// (`Ok(false)`).
    pub fn write(&mut self, obs: &Observation, comment: &str) -> io::Result<bool> {
        if obs.snapshot().is_empty() {
            return Ok(false);
        }
        let interface_id = self.interface(obs)?;
        // Never more than the interface's snaplen; the kernel side already caps at 192.
        let data = &obs.snapshot()[..obs.snapshot().len().min(SNAPLEN as usize)];
        // Original length must not be below the captured length. At a drop, skb->len may no
        // longer count the IP header (the transport layer pulled it) while the snapshot starts
        // at it, so the skb length can be the smaller one.
        let captured = u32::try_from(data.len()).unwrap_or(SNAPLEN);
        let packet = EnhancedPacketBlock {
            interface_id,
            timestamp: Duration::from_nanos(self.unix_ns(obs.ts_ns)),
            original_len: obs.len.max(captured),
            data: Cow::Borrowed(data),
            options: vec![
                EnhancedPacketOption::Comment(Cow::Owned(packet_comment(obs, comment))),
                EnhancedPacketOption::Flags(epb_flags(&obs.what)),
            ],
        };
        self.out.write_pcapng_block(packet).map_err(io_error)?;
        Ok(true)
    }

    /// How many Interface Description Blocks have been written.
    pub fn interfaces(&self) -> usize {
        self.interfaces.len()
    }

    /// Flushes and returns the underlying writer.
    pub fn into_inner(self) -> io::Result<W> {
        let mut w = self.out.into_inner();
        w.flush()?;
        Ok(w)
    }

    /// The interface id for the observation, writing its IDB on first use.
    fn interface(&mut self, obs: &Observation) -> io::Result<u32> {
        let key = InterfaceKey {
            netns: obs.netns.to_string(),
            ifname: obs.ifname.as_deref().map(str::to_string),
            l3: obs.snapshot_l3(),
        };
        if let Some(&id) = self.interfaces.get(&key) {
            return Ok(id);
        }
        let id = u32::try_from(self.interfaces.len())
            .map_err(|_| io::Error::other("pcapng: too many interfaces"))?;
        let name = format!("{}/{}", obs.netns, obs.ifname.as_deref().unwrap_or("-"));
        let description = format!("netns {}, ifindex {}", obs.netns, obs.ifindex);
        let idb = InterfaceDescriptionBlock {
            linktype: if obs.snapshot_l3() {
                DataLink::RAW
            } else {
                DataLink::ETHERNET
            },
            snaplen: SNAPLEN,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Owned(fit_option(name))),
                InterfaceDescriptionOption::IfDescription(Cow::Owned(fit_option(description))),
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        };
        self.out.write_pcapng_block(idb).map_err(io_error)?;
        self.interfaces.insert(key, id);
        Ok(id)
    }

    /// Unix time in ns for a CLOCK_MONOTONIC timestamp, clamped to what an EPB can hold.
    fn unix_ns(&self, monotonic_ns: u64) -> u64 {
        let unix = i128::from(monotonic_ns) + self.monotonic_to_unix_ns;
        u64::try_from(unix.max(0)).unwrap_or(u64::MAX)
    }
}

/// `epb_flags` for an observation: the direction at a tc hook, nothing for a free.
fn epb_flags(what: &What) -> u32 {
    match what {
        What::Hook(Dir::Ingress) => EPB_INBOUND,
        What::Hook(Dir::Egress) => EPB_OUTBOUND,
        What::Drop { .. } | What::Freed { .. } | What::Netfilter(_) => 0,
    }
}

/// The caller's comment, followed by what happened to the packet for drops and frees.
fn packet_comment(obs: &Observation, comment: &str) -> String {
    let fate = match &obs.what {
        // A netfilter verdict has no snapshot, so it is never written.
        What::Hook(_) | What::Netfilter(_) => None,
        What::Drop { reason, location } => Some(format!("dropped: {reason} at {location}")),
        What::Freed {
            reason,
            location,
            why,
        } => Some(format!("freed: {reason} at {location} ({why})")),
    };
    let text = match (comment.is_empty(), fate) {
        (_, None) => comment.to_string(),
        (true, Some(fate)) => fate,
        (false, Some(fate)) => format!("{comment} — {fate}"),
    };
    fit_option(text)
}

/// Cuts a string option to [`MAX_OPTION_BYTES`] at a character boundary.
fn fit_option(mut s: String) -> String {
    if s.len() > MAX_OPTION_BYTES {
        let mut end = MAX_OPTION_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

fn io_error(e: PcapError) -> io::Error {
    match e {
        PcapError::IoError(e) => e,
        other => io::Error::other(other),
    }
}

/// CLOCK_REALTIME now minus CLOCK_MONOTONIC now, in ns: add it to an event's (monotonic)
/// timestamp to get Unix time. The realtime clock is read on both sides of the monotonic read
/// and averaged, so the offset is not skewed by the time between reads. Returns 0 if a clock
/// cannot be read (not possible for these two clocks on Linux).
pub fn monotonic_to_unix_offset_ns() -> i128 {
    let (Some(before), Some(mono), Some(after)) = (
        clock_ns(libc::CLOCK_REALTIME),
        clock_ns(libc::CLOCK_MONOTONIC),
        clock_ns(libc::CLOCK_REALTIME),
    ) else {
        return 0;
    };
    (before + after) / 2 - mono
}

fn clock_ns(clock: libc::clockid_t) -> Option<i128> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    (rc == 0).then(|| i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec))
}

#[cfg(test)]
mod tests {
    use std::{path::PathBuf, process::Command};

    use pcap_file::pcapng::{Block, PcapNgReader};
    use vethtrace_common::Flow;

    use super::*;

    const OFFSET: i128 = 1_700_000_000_000_000_000;

    fn checksum(bytes: &[u8]) -> u16 {
        let mut sum: u32 = bytes
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// IPv4 + ICMP echo request with 32 bytes of payload.
    fn ipv4_icmp(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut icmp = vec![8, 0, 0, 0, 0, 7, 0, 1];
        icmp.extend((0u8..32).collect::<Vec<_>>());
        let c = checksum(&icmp).to_be_bytes();
        icmp[2..4].copy_from_slice(&c);
        let total = (20 + icmp.len()) as u16;
        let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 1, 0, 0];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend(src);
        ip.extend(dst);
        let c = checksum(&ip).to_be_bytes();
        ip[10..12].copy_from_slice(&c);
        ip.extend(icmp);
        ip
    }

    /// IPv6 + UDP to port 4789 with 8 bytes of payload (checksum left 0: tshark only warns).
    fn ipv6_udp(src_last: u8, dst_last: u8) -> Vec<u8> {
        let mut ip = vec![0x60, 0, 0, 0, 0, 16, 17, 64];
        let mut src = [0u8; 16];
        src[..2].copy_from_slice(&[0xfd, 0x00]);
        src[15] = src_last;
        let mut dst = src;
        dst[15] = dst_last;
        ip.extend(src);
        ip.extend(dst);
        ip.extend([0x30, 0x39, 0x12, 0xb5, 0, 16, 0, 0]);
        ip.extend([0xaa; 8]);
        ip
    }

    fn ethernet(l3: &[u8], ethertype: u16) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 0x12, 0x02, 0, 0, 0, 0, 0x11];
        f.extend(ethertype.to_be_bytes());
        f.extend(l3);
        f
    }

    fn obs(netns: &str, ifname: Option<&str>, ifindex: u32, what: What, ts_ns: u64) -> Observation {
        let l3 = ipv4_icmp([192, 168, 88, 11], [192, 168, 88, 12]);
        let drop = !matches!(what, What::Hook(_));
        let snapshot = if drop { l3 } else { ethernet(&l3, 0x0800) };
        Observation {
            ts_ns,
            netns: netns.into(),
            ifindex,
            ifname: ifname.map(Into::into),
            what,
            len: snapshot.len() as u32 + 100,
            mark: 0,
            outer: Flow::default(),
            extras: crate::decode::Extras::new(None, false, snapshot, drop),
        }
    }

    fn drop_what() -> What {
        What::Drop {
            reason: "NETFILTER_DROP".into(),
            location: "nf_hook_slow+0x8c".into(),
        }
    }

    /// Four observations of one ping, two of them on the same interface, one drop without a
    /// device and one empty snapshot; returns the file and the number of IDBs.
    fn sample() -> (Vec<u8>, usize) {
        let mut w = PcapngWriter::new(Vec::new(), OFFSET).expect("header");
        let a = obs("ns1", Some("veth0"), 2, What::Hook(Dir::Egress), 1_000);
        let b = obs(
            "node",
            Some("br-veth01"),
            7,
            What::Hook(Dir::Ingress),
            2_500,
        );
        let c = obs("node", Some("br-veth01"), 7, What::Hook(Dir::Egress), 3_000);
        let d = obs("node", None, 0, drop_what(), 4_000);
        let mut empty = obs("ns2", Some("eth0"), 3, What::Hook(Dir::Ingress), 5_000);
        empty.set_snapshot(Vec::new(), false);
        assert!(w.write(&a, "hop 1/4: ns1 veth0 egress").expect("a"));
        assert!(w.write(&b, "hop 2/4: node br-veth01 ingress").expect("b"));
        assert!(w.write(&c, "hop 3/4: node br-veth01 egress").expect("c"));
        assert!(w.write(&d, "hop 4/4: node").expect("d"));
        assert!(!w.write(&empty, "never").expect("empty"));
        let n = w.interfaces();
        (w.into_inner().expect("flush"), n)
    }

    #[test]
    fn reads_back_with_pcap_file() {
        let (file, n) = sample();
        assert_eq!(n, 3);
        let mut r = PcapNgReader::new(&file[..]).expect("section header");
        assert_eq!(
            r.section().options,
            vec![SectionHeaderOption::UserApplication(Cow::Owned(format!(
                "vethtrace {}",
                env!("CARGO_PKG_VERSION")
            )))]
        );
        let mut idbs = Vec::new();
        let mut epbs = Vec::new();
        while let Some(block) = r.next_block() {
            match block.expect("block").into_owned() {
                Block::InterfaceDescription(i) => idbs.push(i),
                Block::EnhancedPacket(p) => epbs.push(p),
                other => panic!("unexpected block {other:?}"),
            }
        }
        assert_eq!(idbs.len(), 3);
        assert_eq!(epbs.len(), 4);

        let names: Vec<_> = idbs
            .iter()
            .map(|i| {
                assert_eq!(i.snaplen, SNAPLEN);
                assert!(i
                    .options
                    .contains(&InterfaceDescriptionOption::IfTsResol(9)));
                let name = i.options.iter().find_map(|o| match o {
                    InterfaceDescriptionOption::IfName(n) => Some(n.to_string()),
                    _ => None,
                });
                let desc = i.options.iter().find_map(|o| match o {
                    InterfaceDescriptionOption::IfDescription(d) => Some(d.to_string()),
                    _ => None,
                });
                (
                    name.expect("if_name"),
                    desc.expect("if_description"),
                    i.linktype,
                )
            })
            .collect();
        assert_eq!(
            names,
            vec![
                (
                    "ns1/veth0".into(),
                    "netns ns1, ifindex 2".into(),
                    DataLink::ETHERNET
                ),
                (
                    "node/br-veth01".into(),
                    "netns node, ifindex 7".into(),
                    DataLink::ETHERNET
                ),
                (
                    "node/-".into(),
                    "netns node, ifindex 0".into(),
                    DataLink::RAW
                ),
            ]
        );

        let got: Vec<_> = epbs
            .iter()
            .map(|p| {
                let comment = p.options.iter().find_map(|o| match o {
                    EnhancedPacketOption::Comment(c) => Some(c.to_string()),
                    _ => None,
                });
                let flags = p.options.iter().find_map(|o| match o {
                    EnhancedPacketOption::Flags(f) => Some(*f),
                    _ => None,
                });
                (
                    p.interface_id,
                    p.timestamp.as_nanos(),
                    p.data.len(),
                    p.original_len,
                    flags.expect("epb_flags"),
                    comment.expect("opt_comment"),
                )
            })
            .collect();
        let base = OFFSET as u128;
        assert_eq!(
            got,
            vec![
                (
                    0,
                    base + 1_000,
                    74,
                    174,
                    2,
                    "hop 1/4: ns1 veth0 egress".into()
                ),
                (
                    1,
                    base + 2_500,
                    74,
                    174,
                    1,
                    "hop 2/4: node br-veth01 ingress".into()
                ),
                (
                    1,
                    base + 3_000,
                    74,
                    174,
                    2,
                    "hop 3/4: node br-veth01 egress".into()
                ),
                (
                    2,
                    base + 4_000,
                    60,
                    160,
                    0,
                    "hop 4/4: node — dropped: NETFILTER_DROP at nf_hook_slow+0x8c".into()
                ),
            ]
        );
        assert_eq!(
            &epbs[3].data[..],
            &ipv4_icmp([192, 168, 88, 11], [192, 168, 88, 12])[..]
        );
    }

    #[test]
    fn same_name_in_another_namespace_or_link_type_is_another_interface() {
        let mut w = PcapngWriter::new(Vec::new(), 0).expect("header");
        for o in [
            obs("a", Some("eth0"), 2, What::Hook(Dir::Ingress), 1),
            obs("b", Some("eth0"), 2, What::Hook(Dir::Ingress), 2),
            obs("a", Some("eth0"), 2, drop_what(), 3),
            obs("a", Some("eth0"), 2, What::Hook(Dir::Egress), 4),
        ] {
            assert!(w.write(&o, "").expect("write"));
        }
        assert_eq!(w.interfaces(), 3);
    }

    #[test]
    fn comments_for_frees_and_empty_caller_comments() {
        let mut o = obs("node", None, 0, drop_what(), 1);
        assert_eq!(
            packet_comment(&o, ""),
            "dropped: NETFILTER_DROP at nf_hook_slow+0x8c"
        );
        o.what = What::Freed {
            reason: "NO_SOCKET".into(),
            location: "ping_rcv+0x50".into(),
            why: crate::decode::Benign::RawSocketCopy,
        };
        assert_eq!(
            packet_comment(&o, "hop 3/3: ns2"),
            "hop 3/3: ns2 — freed: NO_SOCKET at ping_rcv+0x50 (no ICMP datagram socket wanted it; raw sockets (ping as root) got a copy)"
        );
        assert_eq!(epb_flags(&o.what), 0);
        assert_eq!(fit_option("é".repeat(40_000)).len(), MAX_OPTION_BYTES);
    }

    #[test]
    fn original_length_never_below_captured_and_time_clamped() {
        let mut o = obs("node", None, 0, drop_what(), 10);
        o.len = 20; // skb->len after the IP header was pulled
        let mut w = PcapngWriter::new(Vec::new(), -1_000).expect("header");
        w.write(&o, "").expect("write");
        let file = w.into_inner().expect("flush");
        let mut r = PcapNgReader::new(&file[..]).expect("section header");
        let mut seen = false;
        while let Some(block) = r.next_block() {
            if let Block::EnhancedPacket(p) = block.expect("block") {
                assert_eq!(p.original_len, 60);
                assert_eq!(p.timestamp, Duration::ZERO);
                seen = true;
            }
        }
        assert!(seen);
    }

    #[test]
    fn offset_is_realtime_minus_monotonic() {
        let offset = monotonic_to_unix_offset_ns();
        let real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos() as i128;
        let mono = clock_ns(libc::CLOCK_MONOTONIC).expect("monotonic");
        assert!((mono + offset - real).abs() < 1_000_000_000, "{offset}");
    }

    /// A temp file removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, bytes: &[u8]) -> Self {
            let path = std::env::temp_dir().join(format!(
                "vethtrace-pcapng-{}-{name}.pcapng",
                std::process::id()
            ));
            std::fs::write(&path, bytes).expect("write temp file");
            Self(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// tshark's field output for the file, one line per packet; `None` when tshark is missing.
    fn tshark(file: &TempFile, fields: &[&str]) -> Option<Vec<String>> {
        let mut cmd = Command::new("tshark");
        cmd.arg("-r").arg(&file.0).args(["-T", "fields"]);
        for f in fields {
            cmd.args(["-e", f]);
        }
        let out = match cmd.output() {
            Ok(out) => out,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                println!("note: tshark not on PATH, skipping the tshark check");
                return None;
            }
            Err(e) => panic!("running tshark: {e}"),
        };
        assert!(
            out.status.success(),
            "tshark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(
            String::from_utf8(out.stdout)
                .expect("utf8")
                .lines()
                .map(str::to_string)
                .collect(),
        )
    }

    #[test]
    fn tshark_reads_interfaces_comments_addresses_and_lengths() {
        let (bytes, _) = sample();
        let file = TempFile::new("sample", &bytes);
        // `frame.comment` is the packet comment field from Wireshark 4.0 on (`pkt_comment` before).
        let Some(lines) = tshark(
            &file,
            &[
                "frame.interface_name",
                "frame.comment",
                "ip.src",
                "frame.len",
                "frame.packet_flags_direction",
                "frame.time_epoch",
            ],
        ) else {
            return;
        };
        assert_eq!(
            lines,
            vec![
                "ns1/veth0\thop 1/4: ns1 veth0 egress\t192.168.88.11\t174\t0x00000002\t1700000000.000001000",
                "node/br-veth01\thop 2/4: node br-veth01 ingress\t192.168.88.11\t174\t0x00000001\t1700000000.000002500",
                "node/br-veth01\thop 3/4: node br-veth01 egress\t192.168.88.11\t174\t0x00000002\t1700000000.000003000",
                "node/-\thop 4/4: node — dropped: NETFILTER_DROP at nf_hook_slow+0x8c\t192.168.88.11\t160\t0x00000000\t1700000000.000004000",
            ]
        );
    }

    #[test]
    fn tshark_reads_l3_drop_snapshots_as_raw_ip() {
        let mut w = PcapngWriter::new(Vec::new(), OFFSET).expect("header");
        let mut v4 = obs("ns2", Some("eth0"), 3, drop_what(), 1);
        v4.set_snapshot(ipv4_icmp([10, 0, 0, 1], [10, 0, 0, 2]), true);
        let mut v6 = obs("ns2", Some("eth0"), 3, drop_what(), 2);
        v6.set_snapshot(ipv6_udp(1, 2), true);
        v6.len = v6.snapshot().len() as u32;
        w.write(&v4, "").expect("v4");
        w.write(&v6, "").expect("v6");
        assert_eq!(w.interfaces(), 1);
        let file = TempFile::new("raw", &w.into_inner().expect("flush"));
        let Some(lines) = tshark(
            &file,
            &[
                "frame.interface_name",
                "ip.src",
                "ipv6.src",
                "icmp.type",
                "udp.dstport",
                "frame.cap_len",
            ],
        ) else {
            return;
        };
        assert_eq!(
            lines,
            vec![
                "ns2/eth0\t10.0.0.1\t\t8\t\t60",
                "ns2/eth0\t\tfd00::1\t\t4789\t56"
            ]
        );
    }
}
