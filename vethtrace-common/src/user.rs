//! User-side helpers for the wire types: `aya::Pod` so they can be written into globals, and
//! checked decoding of ring-buffer records.

use crate::{
    hook, kind, Config, Event, FilterInsn, Flow, HookKey, KernelOffsets, NetfilterEvent, NfOffsets,
    NF_NAME_LEN, SNAP_LEN, WIRE_VERSION,
};

// SAFETY: all seven are #[repr(C)], Copy, made only of integers and integer arrays with explicit
// padding (asserted in lib.rs), so every bit pattern is a valid value.
unsafe impl aya::Pod for Event {}
// SAFETY: as above.
unsafe impl aya::Pod for Config {}
// SAFETY: as above.
unsafe impl aya::Pod for FilterInsn {}
// SAFETY: as above.
unsafe impl aya::Pod for KernelOffsets {}
// SAFETY: as above.
unsafe impl aya::Pod for NfOffsets {}
// SAFETY: as above.
unsafe impl aya::Pod for HookKey {}
// SAFETY: as above.
unsafe impl aya::Pod for NetfilterEvent {}

/// Why a ring-buffer record could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than an [`Event`], or than the record its kind says it is ([`NetfilterEvent`]).
    Truncated { len: usize },
    /// Written by programs of another wire version.
    Version(u8),
    /// An event kind this build does not know.
    UnknownKind(u8),
    /// A hook id this build does not know.
    UnknownHook(u8),
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::Truncated { len } => write!(
                f,
                "event record of {len} bytes is shorter than its kind's record ({} bytes for an event, {} for a netfilter verdict)",
                core::mem::size_of::<Event>(),
                core::mem::size_of::<NetfilterEvent>()
            ),
            DecodeError::Version(v) => write!(
                f,
                "event wire version {v}, expected {WIRE_VERSION}: rebuild with `cargo xtask build-ebpf`"
            ),
            DecodeError::UnknownKind(k) => write!(f, "unknown event kind {k}"),
            DecodeError::UnknownHook(h) => write!(f, "unknown hook id {h}"),
        }
    }
}

impl Event {
    /// Decodes the [`Event`] at the start of one ring-buffer record, checking length (of the
    /// whole record its kind needs), version, kind and hook.
    pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
        Event::with_decoded(bytes, |ev| *ev)
    }

    /// [`Event::decode`] without copying the record: `f` reads the header in place when the
    /// record is aligned as an `Event` (ring-buffer records are 8-byte aligned), and a copy
    /// otherwise. Decoding runs per event, and the 168-byte copy was a tenth of what decoding
    /// and correlating an event cost (`cargo xtask bench`, figure 5).
    #[inline]
    pub fn with_decoded<R>(bytes: &[u8], f: impl FnOnce(&Event) -> R) -> Result<R, DecodeError> {
        if bytes.len() < core::mem::size_of::<Event>() {
            return Err(DecodeError::Truncated { len: bytes.len() });
        }
        let ptr = bytes.as_ptr().cast::<Event>();
        if ptr.is_aligned() {
            // SAFETY: the length was checked above, the pointer is aligned, Event is Pod (any
            // bit pattern is valid), and the reference lives no longer than `bytes`.
            let ev = unsafe { &*ptr };
            ev.check(bytes.len())?;
            Ok(f(ev))
        } else {
            // SAFETY: the length was checked above, Event is Pod, and read_unaligned does not
            // require alignment.
            let ev: Event = unsafe { core::ptr::read_unaligned(ptr) };
            ev.check(bytes.len())?;
            Ok(f(&ev))
        }
    }

    /// The checks of [`Event::decode`] on a record of `len` bytes.
    #[inline]
    fn check(&self, len: usize) -> Result<(), DecodeError> {
        if self.version != WIRE_VERSION {
            return Err(DecodeError::Version(self.version));
        }
        match self.kind {
            kind::PACKET | kind::DROP => {}
            kind::NETFILTER if len >= core::mem::size_of::<NetfilterEvent>() => {}
            kind::NETFILTER => return Err(DecodeError::Truncated { len }),
            k => return Err(DecodeError::UnknownKind(k)),
        }
        match self.hook {
            hook::TC_INGRESS | hook::TC_EGRESS | hook::KFREE_SKB | hook::NFT_DO_CHAIN => Ok(()),
            h => Err(DecodeError::UnknownHook(h)),
        }
    }

    /// The packet snapshot that follows the record, if any (`snap_len` bytes, bounded by what
    /// the record actually carries).
    pub fn snapshot<'a>(&self, record: &'a [u8]) -> &'a [u8] {
        let start = core::mem::size_of::<Event>();
        let len = (self.snap_len as usize).min(SNAP_LEN);
        record.get(start..start + len).unwrap_or(&[])
    }

    /// The record's bytes, as the eBPF side writes them (used by tests and benchmarks).
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: Event is repr(C) without implicit padding (asserted in lib.rs), so all of its
        // size_of bytes are initialised.
        unsafe {
            core::slice::from_raw_parts(
                (self as *const Event).cast::<u8>(),
                core::mem::size_of::<Event>(),
            )
        }
    }
}

impl NetfilterEvent {
    /// Decodes a netfilter verdict record, with [`Event::decode`]'s checks; a record of
    /// another kind is [`DecodeError::UnknownKind`].
    pub fn decode(bytes: &[u8]) -> Result<NetfilterEvent, DecodeError> {
        let ev = Event::decode(bytes)?;
        if ev.kind != kind::NETFILTER {
            return Err(DecodeError::UnknownKind(ev.kind));
        }
        // SAFETY: Event::decode checked that a NETFILTER record holds a whole NetfilterEvent,
        // which is Pod; read_unaligned does not require the ring buffer's alignment.
        Ok(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<NetfilterEvent>()) })
    }

    /// The table's name (up to the first NUL, and the first invalid UTF-8 byte).
    pub fn table_name(&self) -> &str {
        c_name(&self.table)
    }

    /// The base chain's name.
    pub fn chain_name(&self) -> &str {
        c_name(&self.chain)
    }

    /// The verdict without its errno bits: `nf::DROP`, `nf::ACCEPT`, …
    pub fn base_verdict(&self) -> u32 {
        self.verdict & crate::nf::VERDICT_MASK
    }

    /// Whether the chain dropped the packet (see [`crate::nf::dropped`]).
    pub fn dropped(&self) -> bool {
        crate::nf::dropped(self.verdict)
    }

    /// Writes a NUL-padded name (tests; the kernel side reads them with
    /// bpf_probe_read_kernel_str).
    pub fn set_names(&mut self, table: &str, chain: &str) {
        fill(&mut self.table, table);
        fill(&mut self.chain, chain);
    }

    /// The record's bytes, as the eBPF side writes them.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: NetfilterEvent is repr(C) without implicit padding (asserted in lib.rs).
        unsafe {
            core::slice::from_raw_parts(
                (self as *const NetfilterEvent).cast::<u8>(),
                core::mem::size_of::<NetfilterEvent>(),
            )
        }
    }
}

fn c_name(b: &[u8; NF_NAME_LEN]) -> &str {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    match core::str::from_utf8(&b[..end]) {
        Ok(s) => s,
        Err(e) => core::str::from_utf8(&b[..e.valid_up_to()]).unwrap_or_default(),
    }
}

fn fill(dst: &mut [u8; NF_NAME_LEN], name: &str) {
    *dst = [0; NF_NAME_LEN];
    let n = name.len().min(NF_NAME_LEN - 1);
    dst[..n].copy_from_slice(&name.as_bytes()[..n]);
}

impl Flow {
    /// Source address as an IP address, when this layer is IPv4/IPv6 (or ARP's sender).
    pub fn src_ip(&self) -> Option<core::net::IpAddr> {
        self.ip(&self.src)
    }

    /// Destination address as an IP address, when this layer is IPv4/IPv6 (or ARP's target).
    pub fn dst_ip(&self) -> Option<core::net::IpAddr> {
        self.ip(&self.dst)
    }

    fn ip(&self, a: &[u8; 16]) -> Option<core::net::IpAddr> {
        match self.ethertype {
            0x0800 | 0x0806 => Some(core::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]).into()),
            0x86dd => Some(core::net::Ipv6Addr::from(*a).into()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        let mut ev = Event {
            ts_ns: 123_456_789,
            netns_cookie: 4097,
            location: 0xffff_ffff_8100_0000,
            version: WIRE_VERSION,
            kind: kind::DROP,
            hook: hook::KFREE_SKB,
            flags: crate::flag::ENCAP,
            ifindex: 7,
            len: 98,
            mark: 0x10,
            drop_reason: 12,
            snap_len: 0,
            outer: Flow::default(),
            inner: Flow::default(),
        };
        ev.outer.ethertype = 0x0800;
        ev.outer.src[..4].copy_from_slice(&[10, 0, 0, 1]);
        ev.outer.dst[..4].copy_from_slice(&[10, 0, 0, 2]);
        ev.outer.l4 = 17;
        ev.outer.dport = 8472;
        ev.inner.ethertype = 0x0800;
        ev.inner.l4 = 1;
        ev.inner.icmp_id = 7;
        ev.inner.icmp_seq = 3;
        ev
    }

    #[test]
    fn event_round_trips_through_bytes() {
        let ev = sample();
        let back = Event::decode(ev.as_bytes()).expect("decodes");
        assert_eq!(back, ev);
        assert_eq!(
            back.outer.src_ip(),
            Some(core::net::Ipv4Addr::new(10, 0, 0, 1).into())
        );
        assert_eq!(back.inner.icmp_seq, 3);
    }

    #[test]
    fn with_decoded_reads_aligned_records_in_place_and_misaligned_ones_copied() {
        let ev = sample();
        let aligned = ev.as_bytes();
        let in_place = Event::with_decoded(aligned, |e| {
            (e as *const Event).cast::<u8>() == aligned.as_ptr() && *e == ev
        });
        assert_eq!(in_place, Ok(true));
        // The same bytes one byte off an 8-byte boundary.
        let mut buf = vec![0u64; aligned.len() / 8 + 2];
        // SAFETY: a u64 buffer viewed as bytes; every byte is initialised.
        let bytes = unsafe {
            core::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), buf.len() * 8)
        };
        let misaligned = &mut bytes[1..1 + aligned.len()];
        misaligned.copy_from_slice(aligned);
        assert_eq!(Event::with_decoded(misaligned, |e| *e), Ok(ev));
        assert_eq!(
            Event::with_decoded(&misaligned[..10], |e| *e),
            Err(DecodeError::Truncated { len: 10 })
        );
        misaligned[core::mem::offset_of!(Event, version)] = WIRE_VERSION + 1;
        assert_eq!(
            Event::with_decoded(misaligned, |e| *e),
            Err(DecodeError::Version(WIRE_VERSION + 1))
        );
    }

    #[test]
    fn packet_event_round_trips() {
        let mut ev = sample();
        ev.kind = kind::PACKET;
        ev.hook = hook::TC_EGRESS;
        ev.outer.ethertype = 0x86dd;
        ev.outer.src = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let back = Event::decode(ev.as_bytes()).expect("decodes");
        assert_eq!(back, ev);
        assert_eq!(back.outer.src_ip(), Some("fd00::1".parse().unwrap()));
    }

    #[test]
    fn rejects_truncated_records_at_every_length() {
        let ev = sample();
        let bytes = ev.as_bytes();
        for len in 0..bytes.len() {
            assert_eq!(
                Event::decode(&bytes[..len]),
                Err(DecodeError::Truncated { len })
            );
        }
    }

    #[test]
    fn rejects_unknown_ids_and_versions() {
        let mut ev = sample();
        ev.kind = 9;
        assert_eq!(
            Event::decode(ev.as_bytes()),
            Err(DecodeError::UnknownKind(9))
        );
        let mut ev = sample();
        ev.hook = 0;
        assert_eq!(
            Event::decode(ev.as_bytes()),
            Err(DecodeError::UnknownHook(0))
        );
        let mut ev = sample();
        ev.version = WIRE_VERSION + 1;
        assert_eq!(
            Event::decode(ev.as_bytes()),
            Err(DecodeError::Version(WIRE_VERSION + 1))
        );
    }

    #[test]
    fn snapshot_follows_the_record_and_is_bounded() {
        let mut ev = sample();
        ev.snap_len = 4;
        let mut rec = ev.as_bytes().to_vec();
        rec.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
        let back = Event::decode(&rec).expect("decodes");
        assert_eq!(back.snapshot(&rec), &[1, 2, 3, 4]);
        // A length larger than the record carries yields nothing rather than a panic.
        ev.snap_len = 100;
        let rec = ev.as_bytes().to_vec();
        assert_eq!(
            Event::decode(&rec).expect("decodes").snapshot(&rec),
            &[] as &[u8]
        );
    }

    fn netfilter_sample() -> NetfilterEvent {
        let mut ev = sample();
        ev.kind = kind::NETFILTER;
        ev.hook = hook::NFT_DO_CHAIN;
        ev.flags = 0;
        ev.location = 0;
        ev.drop_reason = 0;
        let mut nf = NetfilterEvent {
            event: ev,
            family: crate::nf::proto::IPV4,
            hook: 2,
            verdict: crate::nf::DROP | (1 << 16),
            ..Default::default()
        };
        nf.set_names("filter", "FORWARD");
        nf
    }

    #[test]
    fn netfilter_event_round_trips() {
        let nf = netfilter_sample();
        let bytes = nf.as_bytes();
        assert_eq!(bytes.len(), 240);
        // The header decodes on its own, as for every record.
        assert_eq!(Event::decode(bytes), Ok(nf.event));
        let back = NetfilterEvent::decode(bytes).expect("decodes");
        assert_eq!(back, nf);
        assert_eq!(back.table_name(), "filter");
        assert_eq!(back.chain_name(), "FORWARD");
        assert_eq!(back.base_verdict(), crate::nf::DROP);
        assert_eq!(back.hook, 2);
    }

    #[test]
    fn drops_are_nf_drop_or_stolen_with_an_errno() {
        use crate::nf;
        // Linux >= 6.8: nft_do_chain frees the packet and returns NF_STOLEN | EPERM << 16.
        assert!(nf::dropped(nf::STOLEN | (1 << nf::ERRNO_SHIFT)));
        assert!(nf::dropped(nf::DROP));
        assert!(nf::dropped(nf::DROP | (1 << nf::ERRNO_SHIFT)));
        assert!(!nf::dropped(nf::STOLEN));
        assert!(!nf::dropped(nf::ACCEPT));
        // A queue number in the high bits is not an errno.
        assert!(!nf::dropped(nf::QUEUE | (3 << nf::ERRNO_SHIFT)));
        let mut ev = netfilter_sample();
        ev.verdict = nf::STOLEN | (1 << nf::ERRNO_SHIFT);
        assert!(ev.dropped());
    }

    #[test]
    fn netfilter_names_are_cut_and_nul_padded() {
        let mut nf = netfilter_sample();
        let long = "KUBE-SVC-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        nf.set_names("t", long);
        assert_eq!(nf.chain_name(), &long[..NF_NAME_LEN - 1]);
        assert_eq!(nf.table[1..], [0; NF_NAME_LEN - 1]);
        // A name filling the whole array without a NUL is still read (a kernel string cut by
        // a shorter NF_NAME_LEN on the other side).
        nf.chain = [b'A'; NF_NAME_LEN];
        assert_eq!(nf.chain_name().len(), NF_NAME_LEN);
    }

    #[test]
    fn netfilter_records_are_checked_for_truncation_and_kind() {
        let nf = netfilter_sample();
        let bytes = nf.as_bytes();
        // Every length short of the whole record fails, including those holding a whole Event.
        for len in 0..bytes.len() {
            assert_eq!(
                Event::decode(&bytes[..len]),
                Err(DecodeError::Truncated { len })
            );
            assert_eq!(
                NetfilterEvent::decode(&bytes[..len]),
                Err(DecodeError::Truncated { len })
            );
        }
        // A drop record is not a netfilter verdict.
        assert_eq!(
            NetfilterEvent::decode(sample().as_bytes()),
            Err(DecodeError::UnknownKind(kind::DROP))
        );
        let mut bad = netfilter_sample();
        bad.event.hook = 99;
        assert_eq!(
            NetfilterEvent::decode(bad.as_bytes()),
            Err(DecodeError::UnknownHook(99))
        );
        let mut old = netfilter_sample();
        old.event.version = 1;
        assert_eq!(
            NetfilterEvent::decode(old.as_bytes()),
            Err(DecodeError::Version(1))
        );
    }

    #[test]
    fn config_is_plain_bytes() {
        // The config is written into a .rodata global byte for byte: it must stay Pod-sized.
        assert_eq!(core::mem::size_of::<Config>() % 8, 0);
        let c = Config::default();
        assert_eq!(c.filter_len, 0);
        assert_eq!(c.nf.valid, 0);
    }
}
