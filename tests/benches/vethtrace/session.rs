//! A tracing session on a lab, built from the library's public parts the way
//! `vethtrace::tracer::Tracer` builds one (load with drops and the namespace filter, attach on
//! every interface of every lab namespace, register the namespaces, take the ring), but keeping
//! the program descriptors reachable so their run-time statistics can be read.
//!
//! Field order is drop order: attachments first, then the reader, then the programs.

use anyhow::{anyhow, Result};
use vethtrace::{
    attach::{self, AttachMode, Attachments, Selection},
    decode::{Decoder, Names},
    events::{Counters, EventReader},
    filter::Filter,
    kallsyms::Kallsyms,
    lab::Lab,
    loader::{self, LoadOptions, Loaded},
    netns,
};
use vethtrace_common::{names, Event};

/// The programs whose run time is measured (each only where loaded: the tc programs in the
/// tc modes, the device tracepoints in theirs).
pub const PROGRAMS: [&str; 5] = [
    names::TC_INGRESS_PROG,
    names::TC_EGRESS_PROG,
    names::DEV_INGRESS_PROG,
    names::DEV_EGRESS_PROG,
    names::KFREE_SKB_PROG,
];

pub struct Session {
    attachments: Attachments,
    reader: EventReader,
    loaded: Loaded,
    names: Names,
    kallsyms: Kallsyms,
}

impl Session {
    /// Loads with `filter` (tcpdump syntax) and attaches to every lab namespace with tc hooks
    /// (TCX).
    pub fn start(lab: &Lab, filter: &str, ring_bytes: Option<u32>) -> Result<Session> {
        Session::start_with(lab, filter, ring_bytes, AttachMode::Auto)
    }

    /// [`Session::start`] with the attach mode `mode` (`Auto` here means tc hooks, as
    /// `attach_all` takes it).
    pub fn start_with(
        lab: &Lab,
        filter: &str,
        ring_bytes: Option<u32>,
        mode: AttachMode,
    ) -> Result<Session> {
        let words: Vec<String> = filter.split_whitespace().map(str::to_owned).collect();
        let filter = Filter::new(&words).map_err(|e| anyhow!("filter `{filter}`: {e}"))?;
        let mut loaded = loader::load(&LoadOptions {
            filter: filter.insns,
            drops: true,
            netns_filter: true,
            snapshots: false,
            ring_bytes,
            device_tracepoints: mode == AttachMode::Tracepoints,
            tc_ingress: false,
        })?;
        let roles = lab.roles();
        let paths: Vec<_> = roles.iter().map(|(_, ns)| netns::named(ns)).collect();
        let attachments =
            attach::attach_all(&mut loaded.ebpf, &paths, &Selection::default(), mode)?;
        let mut names = Names::default();
        for ns in &attachments.namespaces {
            loader::register_netns(&mut loaded.ebpf, ns.cookie)?;
            let role = roles
                .iter()
                .find(|(_, n)| netns::named(n) == ns.path)
                .map_or("?", |(r, _)| *r);
            names.add_netns(ns.cookie, role);
            for (ifindex, ifname) in &ns.interfaces {
                names.add_interface(ns.cookie, *ifindex, ifname.clone());
            }
        }
        let reader = EventReader::new(&mut loaded.ebpf)?;
        Ok(Session {
            attachments,
            reader,
            loaded,
            names,
            kallsyms: Kallsyms::default(),
        })
    }

    /// (interface, direction) hooks attached.
    pub fn hooks(&self) -> usize {
        self.attachments.hooks()
    }

    /// Drains the ring, decoding every record as `Tracer::collect` does; returns how many.
    pub fn drain(&mut self) -> u64 {
        let decoder = Decoder {
            names: &self.names,
            reasons: &self.loaded.drop_reasons,
            kallsyms: &self.kallsyms,
        };
        let mut n = 0;
        self.reader.drain(|bytes| {
            let _ = Event::with_decoded(bytes, |ev| {
                std::hint::black_box(decoder.decode_record(ev, bytes))
            });
            n += 1;
        });
        n
    }

    pub fn counters(&self) -> Result<Counters> {
        self.reader.counters()
    }

    /// (accumulated run time in ns, run count) of each of [`PROGRAMS`] that is loaded; only
    /// counted while BPF_ENABLE_STATS is held.
    pub fn run_stats(&self) -> Result<Vec<(&'static str, u64, u64)>> {
        let mut out = Vec::new();
        for name in PROGRAMS {
            let Some(prog) = self.loaded.ebpf.program(name) else {
                continue;
            };
            // The drop program is absent when the kernel offers no tp_btf kfree_skb.
            let Ok(info) = prog.info() else { continue };
            out.push((name, info.run_time().as_nanos() as u64, info.run_count()));
        }
        Ok(out)
    }
}

/// ns per run of each program between two [`Session::run_stats`] readings (None: no runs).
pub fn ns_per_run(
    before: &[(&'static str, u64, u64)],
    after: &[(&'static str, u64, u64)],
) -> Vec<(&'static str, Option<f64>, u64)> {
    after
        .iter()
        .map(|&(name, t1, c1)| {
            let (t0, c0) = before
                .iter()
                .find(|(n, _, _)| *n == name)
                .map_or((0, 0), |&(_, t, c)| (t, c));
            let runs = c1.saturating_sub(c0);
            let ns = (runs > 0).then(|| t1.saturating_sub(t0) as f64 / runs as f64);
            (name, ns, runs)
        })
        .collect()
}
