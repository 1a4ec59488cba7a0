//! Writing events: the ring buffer without per-event wakeups (user space drains it on a short
//! timer), and a per-CPU counter bumped for every event that found the ring full.

use aya_ebpf::bindings::BPF_RB_NO_WAKEUP;
use vethtrace_common::{config_flag, counter, flag, Event, EventSnap};

use crate::maps::{bump, config, EVENTS};

/// Writes one record: an `Event`, an `EventSnap` (event and packet snapshot) or a
/// `NetfilterEvent`; each starts with the `Event` that says which it is.
#[inline(always)]
pub fn emit<T>(record: &T) {
    match EVENTS.output::<T>(record, BPF_RB_NO_WAKEUP as u64) {
        Ok(()) => bump(counter::EMITTED),
        Err(_) => bump(counter::LOST),
    }
}

/// Resets an event in place with 8-byte stores. `*ev = Event { ..Default::default() }` compiles
/// to a call to the BPF `memset`, which writes one byte per instruction (~170 instructions per
/// packet, the largest single cost the benchmark found).
#[inline(always)]
pub fn reset(ev: &mut Event, kind: u8, hook: u8) {
    let words = (ev as *mut Event).cast::<u64>();
    // Event is 8-byte aligned and a multiple of 8 bytes long (asserted in vethtrace-common);
    // the loop bound is a constant, so the verifier sees fixed offsets into the map value.
    for i in 0..core::mem::size_of::<Event>() / 8 {
        // SAFETY: i * 8 < size_of::<Event>(), inside `ev`; any bit pattern is a valid Event.
        unsafe { words.add(i).write_volatile(0) };
    }
    ev.version = vethtrace_common::WIRE_VERSION;
    ev.kind = kind;
    ev.hook = hook;
}

/// Writes the slot's event, followed by the `copied` bytes of its buffer when snapshots are
/// on (`l3`: they start at the network header, not at Ethernet).
#[inline(always)]
pub fn emit_copied(slot: &mut EventSnap, copied: u32, l3: bool) {
    if config(|c| &c.flags) & config_flag::SNAP == 0 || copied == 0 {
        emit(&slot.event);
        return;
    }
    if l3 {
        slot.event.flags |= flag::SNAP_L3;
    }
    slot.event.snap_len = copied;
    emit(slot);
}
