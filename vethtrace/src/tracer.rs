//! A tracing session: the one owner of the loaded programs, every attachment and the event
//! reader. Dropping it detaches everything (attachments first, then the programs and maps).

use anyhow::Result;
use vethtrace_common::Event;

use crate::{
    attach::{self, AttachMode, Attachments, Mechanism, Selection},
    correlate::Correlator,
    decode::{Decoder, Names, Observation},
    events::{Counters, EventReader},
    kallsyms::Kallsyms,
    loader::{self, DropLayer, LoadOptions, Loaded, NetfilterLayer},
    netns::NetnsPath,
};

/// A namespace to trace and the name to show for it.
#[derive(Debug, Clone)]
pub struct Target {
    pub path: NetnsPath,
    pub name: String,
}

#[derive(Debug, Clone, Default)]
pub struct TracerOptions {
    pub load: LoadOptions,
    pub targets: Vec<Target>,
    pub selection: Selection,
    pub mode: AttachMode,
}

pub struct Tracer {
    // Field order is drop order: detach before unloading.
    attachments: Attachments,
    mode: AttachMode,
    /// Why `auto` used tc hooks although the trace started with many: the kernel refused the
    /// device tracepoints (shown in the capability line).
    fallback: Option<String>,
    netns_filter: bool,
    reader: EventReader,
    loaded: Loaded,
    names: Names,
    kallsyms: Kallsyms,
    decode_errors: u64,
}

impl Tracer {
    /// Checks privileges, loads the programs and attaches them in every target namespace.
    ///
    /// `auto` becomes the device tracepoints when the targets hold more than
    /// [`attach::AUTO_TCX_MAX_HOOKS`] hooks (falling back to tc hooks if the kernel refuses
    /// them), and stays tc hooks otherwise; hot attach later uses the same mechanism.
    pub fn start(opts: &TracerOptions) -> Result<Tracer> {
        crate::privileges::require_tracing()?;
        let paths: Vec<NetnsPath> = opts.targets.iter().map(|t| t.path.clone()).collect();
        // `auto` decides from the survey; the device tracepoints then register that same
        // survey instead of listing every namespace's interfaces again.
        let survey = match opts.mode {
            AttachMode::Auto | AttachMode::Tracepoints => {
                Some(attach::survey(&paths, &opts.selection)?)
            }
            _ => None,
        };
        let mut mode = match &survey {
            Some(s) => attach::resolve(opts.mode, s),
            None => opts.mode,
        };
        let mut load = opts.load.clone();
        load.device_tracepoints = mode == AttachMode::Tracepoints;
        // Upper devices' ingress is hooked with the tc ingress program (see `upper`).
        load.tc_ingress =
            load.device_tracepoints && survey.iter().flatten().any(|ns| !ns.upper.is_empty());
        let mut fallback = None;
        let mut loaded = match loader::load(&load) {
            // Only a refusal of the tracepoints themselves is worth another try with tc hooks
            // (auto) or a hint (forced); any other load error is the error.
            Err(e) if load.device_tracepoints && loader::device_tracepoints_refused(&e) => {
                if opts.mode != AttachMode::Auto {
                    return Err(e.context(
                        "the device tracepoints cannot be used on this kernel: use --attach-mode tcx or clsact",
                    ));
                }
                fallback = Some(format!("{e:#}"));
                mode = AttachMode::Auto;
                load.device_tracepoints = false;
                loader::load(&load)?
            }
            r => r?,
        };
        let attachments = match survey {
            Some(survey) if mode == AttachMode::Tracepoints => {
                attach::register(&mut loaded.ebpf, survey)?
            }
            _ => attach::attach_all(&mut loaded.ebpf, &paths, &opts.selection, mode)?,
        };
        if opts.load.netns_filter {
            for ns in &attachments.namespaces {
                loader::register_netns(&mut loaded.ebpf, ns.cookie)?;
            }
        }
        let reader = EventReader::new(&mut loaded.ebpf)?;
        let mut names = Names::default();
        for ns in &attachments.namespaces {
            let name = opts
                .targets
                .iter()
                .find(|t| t.path == ns.path)
                .map_or_else(|| ns.path.display().to_string(), |t| t.name.clone());
            names.add_netns(ns.cookie, name);
            for (ifindex, ifname) in &ns.interfaces {
                names.add_interface(ns.cookie, *ifindex, ifname.clone());
            }
        }
        let kallsyms = if loaded.drop_layer == DropLayer::KfreeSkb {
            Kallsyms::load()
        } else {
            Kallsyms::default()
        };
        Ok(Tracer {
            attachments,
            mode,
            fallback,
            netns_filter: opts.load.netns_filter,
            reader,
            loaded,
            names,
            kallsyms,
            decode_errors: 0,
        })
    }

    /// One line saying what is attached and how: `12 hooks on 6 interfaces in 3 namespaces
    /// (TCX), drops via tp_btf skb:kfree_skb, netfilter verdicts via fentry/fexit nft_do_chain` (or
    /// `netfilter layer unavailable (why)`).
    pub fn capabilities(&self) -> String {
        let ifaces: usize = self
            .attachments
            .namespaces
            .iter()
            .map(|n| n.interfaces.len())
            .sum();
        let mech: Vec<String> = self
            .attachments
            .mechanisms()
            .iter()
            .map(|m| m.to_string())
            .collect();
        let mut mech = if mech.is_empty() {
            "none".to_string()
        } else if self.mode == AttachMode::Tracepoints {
            self.tracepoints_mechanism()
        } else {
            mech.join("+")
        };
        if let Some(why) = &self.fallback {
            mech.push_str(&format!("; device tracepoints unavailable: {why}"));
        }
        format!(
            "{} hooks on {} interfaces in {} namespaces ({mech}), {}, {}",
            self.attachments.hooks(),
            ifaces,
            self.attachments.namespace_count(),
            self.loaded.drop_layer,
            self.loaded.netfilter_layer
        )
    }

    /// The device tracepoints, and how the upper devices' ingress is hooked: `device
    /// tracepoints netif_receive_skb/net_dev_queue; TCX ingress on 1 upper device: b mv0`.
    fn tracepoints_mechanism(&self) -> String {
        let mut s = Mechanism::Tracepoints.to_string();
        let (tc, devices) = self.attachments.upper_ingress();
        if !devices.is_empty() {
            let tc: Vec<String> = tc.iter().map(|m| m.to_string()).collect();
            let devices: Vec<String> = devices
                .iter()
                .map(|(cookie, _, name)| format!("{} {name}", self.names.netns(*cookie)))
                .collect();
            s.push_str("; ");
            s.push_str(&crate::upper::describe(&tc.join("+"), &devices));
        }
        s
    }

    pub fn attachments(&self) -> &Attachments {
        &self.attachments
    }

    pub fn drop_layer(&self) -> &DropLayer {
        &self.loaded.drop_layer
    }

    pub fn netfilter_layer(&self) -> &NetfilterLayer {
        &self.loaded.netfilter_layer
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Hot attach: hooks the selected interfaces of one more namespace (or, with
    /// `selection.ifnames`, just those interfaces of a namespace already traced), registers it
    /// for drops and names it. Returns the (ifindex, name) pairs hooked.
    pub fn attach_more(
        &mut self,
        path: &std::path::Path,
        name: &str,
        selection: &Selection,
    ) -> Result<Vec<(u32, String)>> {
        let more = attach::attach_all(
            &mut self.loaded.ebpf,
            &[path.to_path_buf()],
            selection,
            self.mode,
        )?;
        let mut hooked = Vec::new();
        for ns in &more.namespaces {
            if self.netns_filter {
                loader::register_netns(&mut self.loaded.ebpf, ns.cookie)?;
            }
            self.names.add_netns(ns.cookie, name);
            for (ifindex, ifname) in &ns.interfaces {
                self.names
                    .add_interface(ns.cookie, *ifindex, ifname.clone());
                hooked.push((*ifindex, ifname.clone()));
            }
        }
        self.attachments.absorb(more);
        Ok(hooked)
    }

    /// A traced namespace is gone: its links are released and its cookie no longer counts
    /// for drops (the NETNS map is bounded; cookies are never reused).
    pub fn forget_netns(&mut self, inode: u64) {
        let (cookies, keys) = self.attachments.release_netns(inode);
        attach::unregister(&mut self.loaded.ebpf, &keys);
        if self.netns_filter {
            for cookie in cookies {
                loader::unregister_netns(&mut self.loaded.ebpf, cookie);
            }
        }
    }

    /// A traced interface is gone: its links are released.
    pub fn forget_interface(&mut self, inode: u64, ifindex: u32) {
        let keys = self.attachments.release_link(inode, ifindex);
        attach::unregister(&mut self.loaded.ebpf, &keys);
    }

    /// A traced interface was renamed.
    pub fn rename_interface(&mut self, path: &std::path::Path, ifindex: u32, ifname: &str) {
        if let Some(ns) = self.attachments.namespaces.iter().find(|n| n.path == path) {
            self.names.add_interface(ns.cookie, ifindex, ifname);
        }
    }

    /// Names every namespace and interface of `topo` (peers outside the traced set included),
    /// so drops and hops show the user's names.
    pub fn add_names(&mut self, topo: &crate::topology::Topology) {
        for ns in &topo.namespaces {
            let Some(cookie) = ns.cookie else { continue };
            self.names.add_netns(cookie, ns.name.clone());
            for i in &ns.interfaces {
                self.names.add_interface(cookie, i.ifindex, i.name.clone());
            }
        }
    }

    /// Everything in the ring buffer now, decoded. Records that fail to decode are counted.
    pub fn collect(&mut self) -> Vec<Observation> {
        let mut out = Vec::new();
        self.drain_decoded(|decoder, ev, bytes| out.push(decoder.decode_record(ev, bytes)));
        out
    }

    /// Everything in the ring buffer now, decoded straight into `corr` (a live trace: no list
    /// of observations on the way). Returns how many records decoded.
    pub fn collect_into(&mut self, corr: &mut Correlator) -> usize {
        self.drain_decoded(|decoder, ev, bytes| corr.push_record(decoder, ev, bytes))
    }

    /// Hands each record of the ring that decodes to `f`, read in place; counts the others.
    fn drain_decoded(&mut self, mut f: impl FnMut(&Decoder<'_>, &Event, &[u8])) -> usize {
        let decoder = Decoder {
            names: &self.names,
            reasons: &self.loaded.drop_reasons,
            kallsyms: &self.kallsyms,
        };
        let (mut decoded, mut errors) = (0, 0);
        self.reader.drain(
            |bytes| match Event::with_decoded(bytes, |ev| f(&decoder, ev, bytes)) {
                Ok(()) => decoded += 1,
                Err(_) => errors += 1,
            },
        );
        self.decode_errors += errors;
        decoded
    }

    /// Waits until no new event arrived for `quiet`, at most `max`, collecting all of them.
    pub fn collect_until_quiet(
        &mut self,
        quiet: std::time::Duration,
        max: std::time::Duration,
    ) -> Vec<Observation> {
        let start = std::time::Instant::now();
        let mut last = start;
        let mut all = Vec::new();
        loop {
            let got = self.collect();
            if !got.is_empty() {
                last = std::time::Instant::now();
                all.extend(got);
            }
            if last.elapsed() >= quiet || start.elapsed() >= max {
                return all;
            }
            std::thread::sleep(crate::events::DRAIN_INTERVAL);
        }
    }

    pub fn counters(&self) -> Result<Counters> {
        self.reader.counters()
    }

    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }
}
