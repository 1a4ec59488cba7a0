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
    /// or `host`); repeatable. Default: every namespace.
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
    /// How to attach the tc programs.
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
    let topo = topology::discover(&DiscoverOptions {
        netns: args.netns.clone(),
        ..Default::default()
    })?;
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
        },
        targets,
        selection: Selection {
            ifnames: args.iface.clone(),
        },
        mode: args.attach_mode,
    })?;
    tracer.add_names(&topo);
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
    rt.block_on(trace_loop(&mut tracer, &plan, &mut sink))?;

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
    plan: &Plan,
    sink: &mut Sink<'_, W, P>,
) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigint = signal(SignalKind::interrupt()).context("handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("handle SIGTERM")?;
    let mut tick = tokio::time::interval(crate::events::DRAIN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = plan.duration.map(|d| Instant::now() + d);
    let mut corr = Correlator::default();
    let done = |sink: &Sink<'_, W, P>| plan.count.is_some_and(|n| sink.packets >= n);
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = tick.tick() => {
                for o in tracer.collect() {
                    corr.push(o);
                }
                for p in corr.flush_idle(monotonic_now_ns(), IDLE.as_nanos() as u64) {
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
    for o in tracer.collect() {
        corr.push(o);
    }
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
