//! Ring-buffer records on arbitrary bytes: what user space reads from the kernel, through the
//! same path as the tracer's drain (`Event::with_decoded`, then `Decoder::decode_record_into`),
//! checked against the copying one (`Event::decode`, then `Decoder::decode_record`).
//!
//! Never a panic, and for every input:
//! - a record shorter than an `Event` is `Truncated` with its length, one of another wire
//!   version is `Version`, whatever else it holds; errors print;
//! - a decoded record is the input's first bytes (round trip), of the current version, and a
//!   netfilter record decodes whole (`NetfilterEvent::decode`) only when it is long enough;
//! - the snapshot is within the record and no longer than `snap_len` and `SNAP_LEN`;
//! - the observation carries the event's values, and the inner flow exactly when `ENCAP` is set.
//!
//! Public entry points used: `vethtrace_common::{Event::decode, Event::with_decoded,
//! Event::snapshot, Event::as_bytes, NetfilterEvent::decode, DecodeError}` and
//! `vethtrace::decode::{Decoder, Names}::{decode_record, decode_record_into}` (with
//! `btf::DropReasons` and `kallsyms::Kallsyms` for the names).
#![no_main]

use std::{mem::size_of, sync::LazyLock};

use libfuzzer_sys::fuzz_target;
use vethtrace::{
    btf::DropReasons,
    decode::{Decoder, Names},
    kallsyms::Kallsyms,
};
use vethtrace_common::{flag, kind, DecodeError, Event, NetfilterEvent, SNAP_LEN, WIRE_VERSION};

/// Offset of `Event::version` (asserted in vethtrace-common).
const VERSION_AT: usize = 24;

/// Names for the decoder, built once: a namespace, an interface, two drop reasons, two symbols.
struct Context {
    names: Names,
    reasons: DropReasons,
    kallsyms: Kallsyms,
}

static CONTEXT: LazyLock<Context> = LazyLock::new(|| {
    let mut names = Names::default();
    names.add_netns(1, "ns01");
    names.add_interface(1, 2, "veth01");
    Context {
        names,
        reasons: DropReasons::from_pairs([(2, "NOT_SPECIFIED"), (3, "NO_SOCKET")]),
        kallsyms: Kallsyms::parse("ffffffff81000000 T ping_rcv\nffffffff81001000 t nf_hook_slow\n"),
    }
});

fuzz_target!(|data: &[u8]| {
    let decoder = Decoder {
        names: &CONTEXT.names,
        reasons: &CONTEXT.reasons,
        kallsyms: &CONTEXT.kallsyms,
    };

    let nf = NetfilterEvent::decode(data);
    // The tracer's in-place read (an aligned record) answers exactly as the copying one (a
    // record one byte off): the input copied to both places.
    let mut words = vec![0u64; data.len() / 8 + 2];
    // SAFETY: the u64 buffer's bytes, all initialised, borrowed while `words` lives.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8) };
    bytes[..data.len()].copy_from_slice(data);
    let in_place = Event::with_decoded(&bytes[..data.len()], |e| *e);
    bytes.copy_within(..data.len(), 1);
    let copied = Event::with_decoded(&bytes[1..=data.len()], |e| *e);
    assert_eq!(in_place, copied);
    let ev = match Event::decode(data) {
        Ok(ev) => ev,
        Err(e) => {
            let _ = e.to_string();
            if data.len() < size_of::<Event>() {
                assert_eq!(e, DecodeError::Truncated { len: data.len() });
            } else if data[VERSION_AT] != WIRE_VERSION {
                assert_eq!(e, DecodeError::Version(data[VERSION_AT]));
            }
            assert!(
                nf.is_err(),
                "a netfilter record whose header does not decode"
            );
            return;
        }
    };
    assert!(data.len() >= size_of::<Event>());
    assert_eq!(ev.version, WIRE_VERSION);
    assert_eq!(ev.as_bytes(), &data[..size_of::<Event>()], "round trip");
    match nf {
        Ok(nf) => {
            assert_eq!(ev.kind, kind::NETFILTER);
            assert!(data.len() >= size_of::<NetfilterEvent>());
            assert_eq!(nf.event, ev);
            assert!(nf.table_name().len() < nf.table.len() + 1);
            assert!(nf.chain_name().len() < nf.chain.len() + 1);
        }
        Err(e) => {
            let _ = e.to_string();
            assert_ne!(
                ev.kind,
                kind::NETFILTER,
                "header decoded, record did not: {e}"
            );
        }
    }

    let snap = ev.snapshot(data);
    assert!(snap.len() <= SNAP_LEN && snap.len() <= ev.snap_len as usize);
    assert_eq!(
        snap,
        &data[size_of::<Event>()..size_of::<Event>() + snap.len()]
    );

    let o = decoder.decode_record(&ev, data);
    // Decoded straight into the correlator's room, the same observation.
    let mut slot = std::mem::MaybeUninit::uninit();
    assert_eq!(*decoder.decode_record_into(&ev, data, &mut slot), o);
    // SAFETY: decode_record_into initialised the slot (it returned a reference into it).
    unsafe { slot.assume_init_drop() };
    assert_eq!((o.ts_ns, o.ifindex), (ev.ts_ns, ev.ifindex));
    assert_eq!(o.netns, CONTEXT.names.netns(ev.netns_cookie));
    if ev.kind != kind::NETFILTER {
        assert_eq!((o.len, o.mark, o.outer), (ev.len, ev.mark, ev.outer));
        let inner = (ev.flags & flag::ENCAP != 0).then_some(ev.inner);
        assert_eq!(o.inner(), inner.as_ref());
        assert_eq!(o.truncated(), ev.flags & flag::TRUNCATED != 0);
        assert_eq!(o.snapshot(), snap);
    }
    let _ = (o.flow(), o.is_drop(), o.is_hook(), o.is_netfilter());
});
