//! The tc ingress program loaded alone (nothing attached) with its ring, run on frames with
//! BPF_PROG_TEST_RUN: what the program-tier tests (`prog_run`, `random_frames`) share.

use anyhow::{anyhow, Context, Result};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use vethtrace::{
    events::{Counters, EventReader},
    filter::Filter,
    loader::{self, DeviceReads, LoadOptions, Loaded},
};
use vethtrace_common::names;

/// TC_ACT_UNSPEC as the kernel reports it: the tracer never decides a packet's fate.
pub const PASS_ON: u32 = -1i32 as u32;

pub struct TcIngress {
    pub loaded: Loaded,
    pub reader: EventReader,
}

impl TcIngress {
    /// Loads the programs with `filter` (tcpdump words), snapshots on or off, and the device
    /// read the way `device_reads` says.
    pub fn load(filter: &[&str], snapshots: bool, device_reads: DeviceReads) -> Result<TcIngress> {
        let words: Vec<String> = filter.iter().map(|s| s.to_string()).collect();
        let filter = Filter::new(&words).map_err(|e| anyhow!("filter {words:?}: {e}"))?;
        let mut loaded = loader::load_with(
            &LoadOptions {
                filter: filter.insns,
                drops: false,
                netns_filter: false,
                snapshots,
                ring_bytes: None,
                device_tracepoints: false,
                tc_ingress: false,
            },
            device_reads,
        )?;
        let reader = EventReader::new(&mut loaded.ebpf)?;
        Ok(TcIngress { loaded, reader })
    }

    /// Runs the ingress program once on `frame`: its return value and the ring-buffer records
    /// it wrote. Fails when BPF_PROG_TEST_RUN refuses the frame before the program runs.
    pub fn run(&mut self, frame: &[u8]) -> Result<(u32, Vec<Vec<u8>>)> {
        let prog: &SchedClassifier = self
            .loaded
            .ebpf
            .program(names::TC_INGRESS_PROG)
            .context("no ingress program")?
            .try_into()?;
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ..Default::default()
            })
            .context("BPF_PROG_TEST_RUN")?;
        let mut records = Vec::new();
        self.reader.drain(|b| records.push(b.to_vec()));
        Ok((r.return_value, records))
    }

    pub fn counters(&self) -> Result<Counters> {
        self.reader.counters()
    }
}
