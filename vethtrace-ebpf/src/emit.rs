//! Writing events: the ring buffer without per-event wakeups (user space drains it on a short
//! timer), and a per-CPU counter bumped for every event that found the ring full.

use aya_ebpf::bindings::BPF_RB_NO_WAKEUP;
use vethtrace_common::counter;

use crate::maps::{bump, EVENTS};

/// Writes one record: an `Event`, an `EventSnap` (event and packet snapshot) or a
/// `NetfilterEvent`; each starts with the `Event` that says which it is.
#[inline(always)]
pub fn emit<T>(record: &T) {
    match EVENTS.output::<T>(record, BPF_RB_NO_WAKEUP as u64) {
        Ok(()) => bump(counter::EMITTED),
        Err(_) => bump(counter::LOST),
    }
}
