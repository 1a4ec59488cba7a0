//! `vethtrace trace`: a passive, tcpdump-like trace of every matching packet, hop by hop and
//! by name, across every network namespace (or the ones selected).

use std::{
    io::{IsTerminal, Write},
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::{
    attach::{AttachMode, Selection},
    bail_usage,
    correlate::{Correlator, PacketPath},
    error::UsageError,
    filter::Filter,
    loader::LoadOptions,
    render,
    topology::{self, DiscoverOptions, Topology},
    tracer::{Target, Tracer, TracerOptions},
};

/// A packet is complete when no hop was added to it for this long.
const IDLE: Duration = Duration::from_millis(50);

#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// Filter in tcpdump's language, e.g. `icmp and host 10.222.1.4`, `tcp port 80`,
    /// `net 10.222.0.0/16 and not arp`. Empty: every packet.
    #[arg(value_name = "FILTER")]
    pub filter: Vec<String>,
    /// Trace only this namespace (ip-netns name, container or pod name, pid:N, netns:INODE,
    /// or `host`), or every namespace whose name matches a pattern with `*` (`'cni-*'`, also
    /// the ones created during the trace); repeatable. Default: every namespace, including new
    /// ones.
    #[arg(long = "netns", value_name = "NS")]
    pub netns: Vec<String>,
    /// Hook only interfaces with this name; repeatable. Default: all but loopback.
    #[arg(long = "iface", value_name = "IF")]
    pub iface: Vec<String>,
    /// Stop after this many packets.
    #[arg(short = 'c', long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub duration: Option<f64>,
    /// NDJSON output: one object per hop, then a summary (see README).
    #[arg(long)]
    pub json: bool,
    /// Instead of each packet, print per hop transition: count, p50, p90, p99, max and a
    /// histogram, when the trace ends.
    #[arg(long)]
    pub latency: bool,
    /// Also write every hop to a pcapng file (one interface per namespace and device).
    #[arg(short = 'w', value_name = "FILE")]
    pub write: Option<PathBuf>,
    /// Create this file once every program is attached (for scripts and tests).
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<PathBuf>,
    /// How to hook the interfaces: tc programs (TCX links or clsact filters) on each, or two
    /// device tracepoints for all of them (with the tc ingress program on upper devices:
    /// macvlan, vlan, ipvlan, bond, team).
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub attach_mode: AttachMode,
    /// Ring buffer size in KiB (a power of two, at least 4).
    #[arg(long, value_name = "KIB", default_value_t = 4096)]
    pub ring_kib: u32,
}

/// What was asked for, validated.
struct Plan {
    filter: Filter,
    duration: Option<Duration>,
    count: Option<u64>,
    ring_bytes: u32,
}

fn validate(args: &TraceArgs) -> Result<Plan> {
    let filter = Filter::new(&args.filter).map_err(|e| UsageError(e.to_string()))?;
    let duration = match args.duration {
        None => None,
        Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => bail_usage!("--duration {s}: give a positive number of seconds"),
    };
    if args.count == Some(0) {
        bail_usage!("--count 0: give at least 1 packet");
    }
    if !args.ring_kib.is_power_of_two() || args.ring_kib < 4 {
        bail_usage!(
            "--ring-kib {}: give a power of two of at least 4",
            args.ring_kib
        );
    }
    Ok(Plan {
        filter,
        duration,
        count: args.count,
        ring_bytes: args.ring_kib.saturating_mul(1024),
    })
}

pub fn run(args: &TraceArgs, out: &mut impl Write) -> Result<ExitCode> {
    let plan = validate(args)?;
    crate::privileges::require_tracing()?;
    let patterns: Vec<&str> = args
        .netns
        .iter()
        .map(String::as_str)
        .filter(|n| n.contains('*'))
        .collect();
    let topo = if patterns.is_empty() {
        topology::discover(&DiscoverOptions {
            netns: args.netns.clone(),
            ..Default::default()
        })?
    } else {
        select_by_pattern(
            topology::discover(&DiscoverOptions::default())?,
            &args.netns,
        )?
    };
    check_interfaces(&topo, &args.iface)?;
    let targets: Vec<Target> = topo
        .namespaces
        .iter()
        .map(|ns| Target {
            path: PathBuf::from(&ns.path),
            name: ns.name.clone(),
        })
        .collect();
    let mut tracer = Tracer::start(&TracerOptions {
        load: LoadOptions {
            filter: plan.filter.insns.clone(),
            drops: true,
            netns_filter: true,
            snapshots: args.write.is_some(),
            ring_bytes: Some(plan.ring_bytes),
            device_tracepoints: false,
            tc_ingress: false,
        },
        targets,
        selection: Selection {
            ifnames: args.iface.clone(),
        },
        mode: args.attach_mode,
    })?;
    tracer.add_names(&topo);
    // New namespaces are picked up when tracing all of them or names matching a pattern; new
    // links in every traced namespace.
    let discover_new = args.netns.is_empty() || !patterns.is_empty();
    let mut hot = Hot::new(&tracer, discover_new, &args.netns, &args.iface)?;
    let mut pcap = match &args.write {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("create {}", path.display()))?;
            Some(render::pcapng::PcapngWriter::new(
                std::io::BufWriter::new(file),
                render::pcapng::monotonic_to_unix_offset_ns(),
            )?)
        }
        None => None,
    };
    crate::allocator::release_startup_memory();
    if let Some(f) = &args.ready_file {
        std::fs::write(f, b"").with_context(|| format!("create --ready-file {}", f.display()))?;
    }
    let capabilities = tracer.capabilities();
    if !args.json {
        eprintln!(
            "vethtrace: tracing `{}`: {capabilities}",
            if plan.filter.text.is_empty() {
                "all packets"
            } else {
                &plan.filter.text
            }
        );
    }

    let color = !args.json && render::text::use_color(std::io::stdout().is_terminal());
    let mut sink = Sink {
        out,
        json: args.json,
        color,
        pcap: pcap.as_mut(),
        packets: 0,
        latency: args.latency.then(crate::latency::Latency::default),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the event loop")?;
    rt.block_on(trace_loop(&mut tracer, &mut hot, &plan, &mut sink))?;

    let c = tracer.counters()?;
    let packets = sink.packets;
    if let Some(l) = &sink.latency {
        let rows = l.rows();
        if args.json {
            crate::latency::json(sink.out, &rows)?;
        } else {
            crate::latency::text(sink.out, &rows)?;
        }
    }
    if args.json {
        render::json::summary(sink.out, packets, &c, &capabilities)?;
    } else {
        eprintln!(
            "vethtrace: {packets} packets, {} events, {} lost",
            c.emitted, c.lost
        );
    }
    sink.out.flush()?;
    if let Some(p) = pcap {
        p.into_inner()?.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

struct Sink<'a, W: Write, P: Write> {
    out: &'a mut W,
    json: bool,
    color: bool,
    pcap: Option<&'a mut render::pcapng::PcapngWriter<P>>,
    packets: u64,
    /// With --latency: transitions are accumulated instead of packets printed.
    latency: Option<crate::latency::Latency>,
}

impl<W: Write, P: Write> Sink<'_, W, P> {
    fn packet(&mut self, p: &PacketPath) -> Result<()> {
        self.packets += 1;
        if let Some(l) = self.latency.as_mut() {
            l.add(&p.hops);
        } else if self.json {
            render::json::packet(self.out, self.packets, p)?;
        } else {
            render::text::packet_styled(self.out, p, "", self.color)?;
            render::text::findings(self.out, &crate::diagnose::explain(p), "")?;
        }
        if let Some(pcap) = self.pcap.as_deref_mut() {
            let n = p.hops.len();
            for (i, h) in p.hops.iter().enumerate() {
                let comment = format!(
                    "packet {} hop {}/{n}: {}",
                    self.packets,
                    i + 1,
                    render::text::hop_place(h)
                );
                pcap.write(h, &comment)?;
            }
        }
        self.out.flush()?;
        Ok(())
    }
}

async fn trace_loop<W: Write, P: Write>(
    tracer: &mut Tracer,
    hot: &mut Hot,
    plan: &Plan,
    sink: &mut Sink<'_, W, P>,
) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigint = signal(SignalKind::interrupt()).context("handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("handle SIGTERM")?;
    // The drain period adapts: DRAIN_INTERVAL while events flow or packets are pending, backing
    // off to IDLE_DRAIN_INTERVAL when nothing happens (20 wakeups a second instead of 100; a
    // 4 MiB ring still holds ~85 ms of the highest lossless rate measured).
    let mut period = crate::events::DRAIN_INTERVAL;
    let deadline = plan.duration.map(|d| Instant::now() + d);
    let mut corr = Correlator::default();
    // The packets each tick flushes, in one list kept across ticks.
    let mut flushed = Vec::new();
    let done = |sink: &Sink<'_, W, P>| plan.count.is_some_and(|n| sink.packets >= n);
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = tokio::time::sleep(period) => {
                hot.poll(tracer);
                let got = tracer.collect_into(&mut corr);
                period = if got == 0 && corr.pending() == 0 {
                    (period * 2).min(crate::events::IDLE_DRAIN_INTERVAL)
                } else {
                    crate::events::DRAIN_INTERVAL
                };
                corr.flush_idle_into(monotonic_now_ns(), IDLE.as_nanos() as u64, &mut flushed);
                for p in flushed.drain(..) {
                    sink.packet(&p)?;
                    if done(sink) {
                        return Ok(());
                    }
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
            }
        }
    }
    // Whatever is still in flight when the trace ends.
    tracer.collect_into(&mut corr);
    for p in corr.flush_all() {
        if done(sink) {
            break;
        }
        sink.packet(&p)?;
    }
    Ok(())
}

/// CLOCK_MONOTONIC now, the clock of `bpf_ktime_get_ns`.
pub fn monotonic_now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Every `--iface` must exist in at least one selected namespace.
fn check_interfaces(topo: &Topology, ifaces: &[String]) -> Result<()> {
    for name in ifaces {
        let found = topo
            .namespaces
            .iter()
            .any(|ns| ns.interfaces.iter().any(|i| &i.name == name));
        if !found {
            let mut known: Vec<&str> = topo
                .namespaces
                .iter()
                .flat_map(|ns| ns.interfaces.iter().map(|i| i.name.as_str()))
                .filter(|n| *n != "lo")
                .collect();
            known.sort_unstable();
            known.dedup();
            known.truncate(30);
            bail_usage!(
                "--iface {name}: no such interface in the {} traced namespaces; known: {}",
                topo.namespaces.len(),
                known.join(", ")
            );
        }
    }
    Ok(())
}

/// Keeps only the namespaces `wanted` names: exact names (any form `find_netns` accepts) or
/// patterns with `*`, matched against display and ip-netns names.
fn select_by_pattern(mut topo: Topology, wanted: &[String]) -> Result<Topology> {
    for w in wanted.iter().filter(|w| !w.contains('*')) {
        if topo.find_netns(w).is_none() {
            bail_usage!(
                "--netns {w}: no such namespace; known: {}",
                topology::known_names(&topo)
            );
        }
    }
    let keep: Vec<u64> = topo
        .namespaces
        .iter()
        .filter(|ns| wanted.iter().any(|w| selects(w, &topo, ns)))
        .map(|ns| ns.inode)
        .collect();
    topo.namespaces.retain(|ns| keep.contains(&ns.inode));
    Ok(topo)
}

fn selects(w: &str, topo: &Topology, ns: &topology::Namespace) -> bool {
    if w.contains('*') {
        glob(w, &ns.name) || ns.netns_name.as_deref().is_some_and(|n| glob(w, n))
    } else {
        topo.find_netns(w).is_some_and(|f| f.inode == ns.inode)
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = match parts.split_first() {
        Some(x) => x,
        None => return name.is_empty(),
    };
    let Some(mut tail) = name.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return tail.is_empty();
    };
    for part in middle {
        match tail.find(part) {
            Some(i) => tail = &tail[i + part.len()..],
            None => return false,
        }
    }
    tail.len() >= last.len() && tail.ends_with(last)
}

/// Hot attach: new interfaces in traced namespaces and, when asked, new namespaces, hooked
/// within a tick of being noticed. What vanishes meanwhile is skipped silently.
struct Hot {
    watcher: crate::watch::Watcher,
    /// inode → (path, display name) of every traced namespace.
    traced: std::collections::HashMap<u64, (PathBuf, String)>,
    /// (namespace inode, ifindex) of every hooked interface: a rename is not a new link.
    hooked: std::collections::HashSet<(u64, u32)>,
    /// --netns values, when new namespaces must match one of them.
    wanted: Vec<String>,
    ifaces: Vec<String>,
}

impl Hot {
    fn new(
        tracer: &Tracer,
        discover_new: bool,
        wanted: &[String],
        ifaces: &[String],
    ) -> Result<Hot> {
        let spaces: Vec<(PathBuf, u64, Vec<u32>)> = tracer
            .attachments()
            .namespaces
            .iter()
            .map(|ns| {
                (
                    ns.path.clone(),
                    ns.inode,
                    ns.interfaces.iter().map(|(i, _)| *i).collect(),
                )
            })
            .collect();
        let traced = tracer
            .attachments()
            .namespaces
            .iter()
            .map(|ns| {
                let name = tracer.names().netns(ns.cookie);
                (ns.inode, (ns.path.clone(), name))
            })
            .collect();
        let hooked = spaces
            .iter()
            .flat_map(|(_, inode, ifs)| ifs.iter().map(move |i| (*inode, *i)))
            .collect();
        Ok(Hot {
            watcher: crate::watch::Watcher::new(&spaces, discover_new)?,
            traced,
            hooked,
            wanted: wanted.to_vec(),
            ifaces: ifaces.to_vec(),
        })
    }

    fn wants_iface(&self, name: &str) -> bool {
        if self.ifaces.is_empty() {
            name != "lo"
        } else {
            self.ifaces.iter().any(|i| i == name)
        }
    }

    fn poll(&mut self, tracer: &mut Tracer) {
        use crate::watch::Change;
        for change in self.watcher.poll() {
            let result = match change {
                Change::NewNetns { path, inode } => self.new_netns(tracer, &path, inode),
                Change::NewLink {
                    netns_inode,
                    ifindex,
                    name,
                } => self.new_link(tracer, netns_inode, ifindex, &name),
                // Its links are released (their fds would stay open otherwise), and what we
                // knew by its inode forgotten: the number goes to the next new namespace.
                Change::GoneNetns { inode } => {
                    self.traced.remove(&inode);
                    self.hooked.retain(|(ns, _)| *ns != inode);
                    tracer.forget_netns(inode);
                    Ok(())
                }
                Change::GoneLink {
                    netns_inode,
                    ifindex,
                } => {
                    self.hooked.remove(&(netns_inode, ifindex));
                    tracer.forget_interface(netns_inode, ifindex);
                    Ok(())
                }
            };
            if let Err(e) = result {
                if !crate::netns::vanished(&e) && !is_gone_device(&e) {
                    eprintln!("vethtrace: hot attach: {}", crate::error::one_line(&e));
                }
            }
        }
    }

    fn new_netns(&mut self, tracer: &mut Tracer, path: &std::path::Path, inode: u64) -> Result<()> {
        if self.traced.contains_key(&inode) {
            return Ok(());
        }
        // An ip-netns name comes from the path for free; anything else (a container's
        // namespace found through its process) is named by a topology read, only when needed.
        let ipnetns = ["/run/netns", "/var/run/netns"]
            .iter()
            .find_map(|dir| path.strip_prefix(dir).ok())
            .and_then(|p| p.to_str())
            .map(str::to_string);
        let name = match ipnetns {
            Some(n) => n,
            None => {
                let topo = topology::discover(&DiscoverOptions {
                    netns: vec![format!("netns:{inode}")],
                    ..Default::default()
                })?;
                match topo.namespaces.iter().find(|n| n.inode == inode) {
                    Some(ns) => ns.name.clone(),
                    None => return Ok(()),
                }
            }
        };
        let wanted = self.wanted.is_empty()
            || self.wanted.iter().any(|w| {
                if w.contains('*') {
                    glob(w, &name)
                } else {
                    *w == name
                }
            });
        if !wanted {
            return Ok(());
        }
        let selection = Selection {
            ifnames: self.ifaces.clone(),
        };
        let hooked = tracer.attach_more(path, &name, &selection)?;
        self.hooked.extend(hooked.iter().map(|(i, _)| (inode, *i)));
        self.traced
            .insert(inode, (path.to_path_buf(), name.clone()));
        // Links that appeared between our attach and the subscription. A namespace that
        // vanished meanwhile would never be reported gone: let go of it. One that still exists
        // but cannot be watched (out of descriptors…) stays attached, detached at exit as usual.
        let links = match self.watcher.watch(path, inode) {
            Ok(links) => links,
            Err(e) => {
                if crate::netns::vanished(&e) {
                    self.traced.remove(&inode);
                    self.hooked.retain(|(ns, _)| *ns != inode);
                    tracer.forget_netns(inode);
                }
                return Err(e);
            }
        };
        let missing: Vec<String> = links
            .into_iter()
            .filter(|(i, n)| self.wants_iface(n) && !self.hooked.contains(&(inode, *i)))
            .map(|(_, n)| n)
            .collect();
        if !missing.is_empty() {
            let more = tracer.attach_more(path, &name, &Selection { ifnames: missing })?;
            self.hooked.extend(more.iter().map(|(i, _)| (inode, *i)));
        }
        Ok(())
    }

    fn new_link(
        &mut self,
        tracer: &mut Tracer,
        inode: u64,
        ifindex: u32,
        ifname: &str,
    ) -> Result<()> {
        let Some((path, name)) = self.traced.get(&inode).cloned() else {
            return Ok(());
        };
        if self.hooked.contains(&(inode, ifindex)) {
            // Renamed: hooked already, only its name changed.
            tracer.rename_interface(&path, ifindex, ifname);
            return Ok(());
        }
        if !self.wants_iface(ifname) {
            return Ok(());
        }
        let more = tracer.attach_more(
            &path,
            &name,
            &Selection {
                ifnames: vec![ifname.to_string()],
            },
        )?;
        self.hooked.extend(more.iter().map(|(i, _)| (inode, *i)));
        Ok(())
    }
}

/// An interface that vanished between being noticed and being hooked.
fn is_gone_device(e: &anyhow::Error) -> bool {
    format!("{e:#}").contains("No such device")
        || e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::raw_os_error)
                .is_some_and(|n| n == libc::ENODEV)
        })
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_matches_stars_anywhere() {
        assert!(glob("cni-*", "cni-1234"));
        assert!(glob("*", ""));
        assert!(glob("vt-1-*-pod", "vt-1-0-pod"));
        assert!(glob("*pod*", "my-pod-1"));
        assert!(!glob("cni-*", "docker-1"));
        assert!(!glob("a*b", "ab-c"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
    }
}
