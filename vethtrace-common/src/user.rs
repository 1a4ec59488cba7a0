//! User-side helpers for the wire types: `aya::Pod` so they can be written into globals, and
//! checked decoding of ring-buffer records.

use crate::{hook, kind, Config, Event, FilterInsn, Flow, KernelOffsets, SNAP_LEN, WIRE_VERSION};

// SAFETY: all four are #[repr(C)], Copy, made only of integers and integer arrays with explicit
// padding (asserted in lib.rs), so every bit pattern is a valid value.
unsafe impl aya::Pod for Event {}
// SAFETY: as above.
unsafe impl aya::Pod for Config {}
// SAFETY: as above.
unsafe impl aya::Pod for FilterInsn {}
// SAFETY: as above.
unsafe impl aya::Pod for KernelOffsets {}

/// Why a ring-buffer record could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than an [`Event`].
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
                "event record of {len} bytes is shorter than the {} expected",
                core::mem::size_of::<Event>()
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
    /// Decodes one ring-buffer record, checking length, version, kind and hook.
    pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
        if bytes.len() < core::mem::size_of::<Event>() {
            return Err(DecodeError::Truncated { len: bytes.len() });
        }
        // SAFETY: the length was checked above, Event is Pod (any bit pattern is valid), and
        // read_unaligned does not require the ring buffer's alignment.
        let ev: Event = unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) };
        if ev.version != WIRE_VERSION {
            return Err(DecodeError::Version(ev.version));
        }
        match ev.kind {
            kind::PACKET | kind::DROP => {}
            k => return Err(DecodeError::UnknownKind(k)),
        }
        match ev.hook {
            hook::TC_INGRESS | hook::TC_EGRESS | hook::KFREE_SKB => {}
            h => return Err(DecodeError::UnknownHook(h)),
        }
        Ok(ev)
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

    #[test]
    fn config_is_plain_bytes() {
        // The config is written into a .rodata global byte for byte: it must stay Pod-sized.
        assert_eq!(core::mem::size_of::<Config>() % 8, 0);
        let c = Config::default();
        assert_eq!(c.filter_len, 0);
    }
}
