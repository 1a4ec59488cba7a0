//! Writing events: the ring buffer without per-event wakeups (user space drains it on a short
//! timer), and a per-CPU counter bumped for every event that found the ring full.

use aya_ebpf::bindings::BPF_RB_NO_WAKEUP;
use vethtrace_common::{counter, Event, EventSnap};

use crate::maps::{bump, EVENTS};

#[inline(always)]
pub fn emit(ev: &Event) {
    match EVENTS.output::<Event>(ev, BPF_RB_NO_WAKEUP as u64) {
        Ok(()) => bump(counter::EMITTED),
        Err(_) => bump(counter::LOST),
    }
}

/// Writes the event with its packet snapshot.
#[inline(always)]
pub fn emit_snap(ev: &EventSnap) {
    match EVENTS.output::<EventSnap>(ev, BPF_RB_NO_WAKEUP as u64) {
        Ok(()) => bump(counter::EMITTED),
        Err(_) => bump(counter::LOST),
    }
}
