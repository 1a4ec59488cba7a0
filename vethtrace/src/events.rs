//! Reading what the programs wrote: the ring buffer (drained on a short timer, since the
//! programs submit without wakeups) and the per-CPU counters.

use anyhow::{Context, Result};
use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    Ebpf,
};
use vethtrace_common::{counter, names};

/// How often the ring is drained: frequent enough that a trace feels live, rare enough to cost
/// nothing when idle.
pub const DRAIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);
/// The longest a live trace waits between drains when nothing is happening.
pub const IDLE_DRAIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// Totals of the per-CPU counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub emitted: u64,
    pub lost: u64,
    pub filtered: u64,
    pub drops: u64,
}

pub struct EventReader {
    ring: RingBuf<MapData>,
    counters: PerCpuArray<MapData, u64>,
}

impl EventReader {
    /// Takes the ring and counter maps out of the loaded object.
    pub fn new(ebpf: &mut Ebpf) -> Result<Self> {
        let ring = ebpf
            .take_map(names::EVENTS_MAP)
            .context("the eBPF object has no EVENTS ring buffer")?;
        let counters = ebpf
            .take_map(names::COUNTERS_MAP)
            .context("the eBPF object has no COUNTERS map")?;
        Ok(Self {
            ring: RingBuf::try_from(ring)?,
            counters: PerCpuArray::try_from(counters)?,
        })
    }

    /// Hands every record currently in the ring to `f`; returns how many there were.
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) -> usize {
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            f(&item);
            n += 1;
        }
        n
    }

    pub fn counters(&self) -> Result<Counters> {
        let sum = |i: u32| -> Result<u64> { Ok(self.counters.get(&i, 0)?.iter().copied().sum()) };
        Ok(Counters {
            emitted: sum(counter::EMITTED)?,
            lost: sum(counter::LOST)?,
            filtered: sum(counter::FILTERED)?,
            drops: sum(counter::DROPS)?,
        })
    }
}
