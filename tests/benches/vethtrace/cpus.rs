//! Which CPUs the bench may use, and pinning a thread to one: on a 2-core VM, where a pair
//! of busy threads lands decides a trial as much as the code under test does.

use anyhow::{Context, Result};
use nix::{
    sched::{sched_getaffinity, sched_setaffinity, CpuSet},
    unistd::Pid,
};

/// The first two CPUs this process may run on, or None with fewer than two.
pub fn two() -> Option<(usize, usize)> {
    let set = sched_getaffinity(Pid::from_raw(0)).ok()?;
    let mut allowed = (0..CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false));
    Some((allowed.next()?, allowed.next()?))
}

/// Pins the calling thread (only it) to `cpu`.
pub fn pin_this_thread(cpu: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu).with_context(|| format!("CPU {cpu}"))?;
    // Pid 0 is the calling thread for sched_setaffinity(2).
    sched_setaffinity(Pid::from_raw(0), &set).with_context(|| format!("pin a thread to CPU {cpu}"))
}
