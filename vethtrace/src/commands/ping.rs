//! `vethtrace ping DEST --from NS`: sends ICMP echo probes from inside a namespace, follows each
//! one hop by hop across the traced namespaces (request and reply), and ends every probe as
//! replied, dropped (where and why) or lost (last hop seen), with findings that say what to
//! change. Read-only: it never changes the user's network configuration.

use std::{
    collections::HashMap,
    io::Write,
    net::{IpAddr, ToSocketAddrs},
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::{
    attach::AttachMode,
    bail_usage,
    correlate::{PacketKey, PacketPath},
    decode::{Observation, What},
    diagnose::{self, Finding},
    filter::Filter,
    loader::LoadOptions,
    netconf::{self, NetConfig},
    probe::{Answer, NoRoute, Pinger},
    render,
    topology::{self, DiscoverOptions, Namespace, Topology},
    tracer::{Target, Tracer, TracerOptions},
};

#[derive(Debug, clap::Args)]
pub struct PingArgs {
    /// Destination: an IPv4 or IPv6 address, or a name to resolve.
    pub dest: String,
    /// Send from this namespace: ip-netns name, container name or id, pod (ns/name), pid:N, or
    /// a namespace path (/proc/PID/ns/net). Default: the current namespace.
    #[arg(long, value_name = "NS")]
    pub from: Option<String>,
    /// Number of probes.
    #[arg(short = 'c', long, default_value_t = 3, value_name = "N")]
    pub count: u32,
    /// Seconds between probes.
    #[arg(
        short = 'i',
        long,
        default_value_t = 1.0,
        value_name = "SECONDS",
        allow_negative_numbers = true
    )]
    pub interval: f64,
    /// Seconds to wait for each reply.
    #[arg(
        short = 'W',
        long,
        default_value_t = 1.0,
        value_name = "SECONDS",
        allow_negative_numbers = true
    )]
    pub timeout: f64,
    /// ICMP payload bytes.
    #[arg(short = 's', long, default_value_t = 56, value_name = "SIZE")]
    pub size: usize,
    /// NDJSON output: hops, one result per probe, a summary (see README).
    #[arg(long)]
    pub json: bool,
    /// Trace only these namespaces (repeatable); default: every namespace.
    #[arg(long = "netns", value_name = "NS")]
    pub netns: Vec<String>,
    /// How to hook the interfaces: tc programs (TCX links or clsact filters) on each, or two
    /// device tracepoints for all of them.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub attach_mode: AttachMode,
}

/// Configuration (iptables counters, sysctls) is read before and after each probe from at most
/// this many namespaces; beyond it, netfilter attribution falls back to the drop reason alone.
const MAX_CONFIG_NAMESPACES: usize = 16;
/// Events of a probe are complete once the ring stayed quiet this long after its answer.
const QUIET: Duration = Duration::from_millis(40);

struct Plan {
    dst: IpAddr,
    interval: Duration,
    timeout: Duration,
}

fn validate(args: &PingArgs) -> Result<Plan> {
    if args.count == 0 {
        bail_usage!("-c 0: give at least 1 probe");
    }
    if !(args.interval.is_finite() && args.interval >= 0.0) {
        bail_usage!(
            "-i {}: the interval must be 0 or more seconds",
            args.interval
        );
    }
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        bail_usage!(
            "-W {}: the timeout must be more than 0 seconds",
            args.timeout
        );
    }
    if args.size > 65_000 {
        bail_usage!("-s {}: at most 65000 bytes of payload", args.size);
    }
    let dst = match args.dest.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => match (args.dest.as_str(), 0).to_socket_addrs() {
            Ok(mut addrs) => match addrs.next() {
                Some(a) => a.ip(),
                None => bail_usage!("{}: the name resolves to no address", args.dest),
            },
            Err(e) => bail_usage!(
                "{}: not an IP address, and resolving it failed: {e}",
                args.dest
            ),
        },
    };
    Ok(Plan {
        dst,
        interval: Duration::from_secs_f64(args.interval),
        timeout: Duration::from_secs_f64(args.timeout),
    })
}

/// The namespace `--from` names (or the current one).
fn source_namespace<'t>(topo: &'t Topology, from: Option<&str>) -> Result<&'t Namespace> {
    let inode_of = |p: &Path| crate::netns::inode(p);
    match from {
        None => {
            let ino = inode_of(&crate::netns::current())?;
            topo.by_inode(ino)
                .context("the current network namespace was not found in the topology")
        }
        Some(f) if f.starts_with('/') => {
            let ino = inode_of(Path::new(f)).map_err(|e| {
                crate::error::UsageError(format!("--from {f}: not a network namespace ({e:#})"))
            })?;
            match topo.by_inode(ino) {
                Some(ns) => Ok(ns),
                None => bail_usage!("--from {f}: not a network namespace file"),
            }
        }
        Some(f) => match topo.find_netns(f) {
            Some(ns) => Ok(ns),
            None => bail_usage!(
                "--from {f}: no such namespace, container or pod; known: {}",
                topology::known_names(topo)
            ),
        },
    }
}

pub fn run(args: &PingArgs, out: &mut impl Write) -> Result<ExitCode> {
    run_with_names(args, &HashMap::new(), out)
}

/// [`run`], showing namespaces under other names (`names`: display name → shown name).
pub fn run_with_names(
    args: &PingArgs,
    names: &HashMap<String, String>,
    out: &mut impl Write,
) -> Result<ExitCode> {
    let plan = validate(args)?;
    crate::privileges::require_probing()?;
    let mut wanted = args.netns.clone();
    if let (false, Some(f)) = (wanted.is_empty(), &args.from) {
        if !f.starts_with('/') {
            wanted.push(f.clone());
        }
    }
    let mut topo = topology::discover(&DiscoverOptions {
        netns: wanted,
        ..Default::default()
    })?;
    let from_path = PathBuf::from(&source_namespace(&topo, args.from.as_deref())?.path);
    topo.rename(names);
    let from = topo
        .namespaces
        .iter()
        .find(|ns| Path::new(&ns.path) == from_path)
        .context("the source namespace vanished")?
        .clone();
    let id = (std::process::id() as u16) ^ 0x5654; // "VT"
    let pinger = Pinger::open(Path::new(&from.path), plan.dst, id)?;

    let src = match &pinger {
        Ok(p) => p.src,
        Err(_) => unspecified(plan.dst),
    };
    let filter = probe_filter(id, src);
    let mut tracer = Tracer::start(&TracerOptions {
        load: LoadOptions {
            filter: filter.insns,
            drops: true,
            netns_filter: true,
            snapshots: false,
            ring_bytes: None,
            device_tracepoints: false,
            tc_ingress: false,
        },
        targets: topo
            .namespaces
            .iter()
            .map(|ns| Target {
                path: PathBuf::from(&ns.path),
                name: ns.name.clone(),
            })
            .collect(),
        selection: Default::default(),
        mode: args.attach_mode,
    })?;
    tracer.add_names(&topo);

    let mut ui = Ui::new(out, args.json);
    ui.header(
        &plan,
        &args.dest,
        &from,
        src,
        id,
        &tracer.capabilities(),
        args.size,
    )?;

    let config_targets: Vec<&Namespace> = if topo.namespaces.len() <= MAX_CONFIG_NAMESPACES {
        topo.namespaces.iter().collect()
    } else {
        Vec::new()
    };
    let mut stats = Stats::default();
    let mut latency = crate::latency::Latency::default();
    crate::interrupt::install();
    for i in 0..args.count {
        let seq = (i + 1) as u16;
        if i > 0 {
            std::thread::sleep(plan.interval);
        }
        if crate::interrupt::check().is_err() {
            break;
        }
        let before = read_configs(&config_targets);
        let (answer, obs) = match &pinger {
            Ok(p) => {
                let sent = Instant::now();
                let answer = if p.send(seq, args.size)? {
                    p.wait(seq, sent, sent + plan.timeout)?
                } else {
                    // Larger than the first device's MTU: it never left (the mtu finding says why).
                    None
                };
                let obs = tracer.collect_until_quiet(QUIET, Duration::from_millis(500));
                (answer, obs)
            }
            Err(NoRoute::Unreachable(_)) => (None, Vec::new()),
        };
        let after = read_configs(&config_targets);
        let outcome = Outcome::of(seq, id, &obs, answer);
        let probe = diagnose::Probe {
            src,
            dst: plan.dst,
            from_netns: &from.name,
            size: args.size,
            request: outcome.request.as_ref(),
            reply: outcome.reply.as_ref(),
            replied: outcome.rtt.is_some(),
            icmp_errors: outcome.icmp_errors.clone(),
        };
        let findings = diagnose::diagnose(
            &probe,
            &diagnose::Context {
                topo: &topo,
                before: &before,
                after: &after,
            },
        );
        let netfilter = diagnose::netfilter_attribution(
            &probe,
            &diagnose::Context {
                topo: &topo,
                before: &before,
                after: &after,
            },
        );
        stats.add(&outcome);
        for p in [&outcome.request, &outcome.reply].into_iter().flatten() {
            latency.add(&p.hops);
        }
        ui.probe(&outcome, &topo, &findings, netfilter)?;
    }
    // JSON: the latency lines come before the closing summary line.
    if args.json && args.count > 1 && !latency.is_empty() {
        ui.latency(&latency.rows())?;
    }
    ui.summary(&stats, &args.dest)?;
    if !args.json && args.count > 1 && !latency.is_empty() {
        ui.latency(&latency.rows())?;
    }
    Ok(if stats.received == stats.transmitted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn unspecified(dst: IpAddr) -> IpAddr {
    if dst.is_ipv4() {
        IpAddr::from([0u8; 4])
    } else {
        IpAddr::from([0u8; 16])
    }
}

/// Our probes (by ICMP id, request and reply) and ICMP errors sent back to our address.
fn probe_filter(id: u16, src: IpAddr) -> Filter {
    let mut words = vec![
        "icmp".to_string(),
        "id".into(),
        id.to_string(),
        "or".into(),
        "(".into(),
        "(".into(),
        "icmp".into(),
        "or".into(),
        "icmp6".into(),
        ")".into(),
        "and".into(),
        "dst".into(),
        "host".into(),
        src.to_string(),
        ")".into(),
    ];
    if src.is_unspecified() {
        words.truncate(3);
    }
    // The words are built here, not typed by a user: a failure is a bug, shown as one line.
    Filter::new(&words).unwrap_or_else(|_| Filter::icmp_id(id))
}

fn read_configs(targets: &[&Namespace]) -> HashMap<String, NetConfig> {
    targets
        .iter()
        .filter_map(|ns| {
            netconf::read(Path::new(&ns.path))
                .ok()
                .map(|c| (ns.name.clone(), c))
        })
        .collect()
}

/// How one probe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Replied,
    Dropped,
    Lost,
}

/// Everything seen for one probe.
struct Outcome {
    seq: u16,
    status: Status,
    rtt: Option<Duration>,
    request: Option<PacketPath>,
    reply: Option<PacketPath>,
    icmp_errors: Vec<diagnose::IcmpError>,
}

impl Outcome {
    fn of(seq: u16, id: u16, obs: &[Observation], answer: Option<Answer>) -> Outcome {
        let leg = |types: [u8; 2]| -> Option<PacketPath> {
            let mut hops: Vec<Observation> = obs
                .iter()
                .filter(|o| {
                    let f = o.flow();
                    matches!(f.l4, 1 | 58)
                        && types.contains(&f.icmp_type)
                        && f.icmp_id == id
                        && f.icmp_seq == seq
                })
                .cloned()
                .collect();
            hops.sort_by_key(|h| h.ts_ns);
            let first = hops.first()?;
            Some(PacketPath {
                key: PacketKey::of(first.flow()),
                hops,
            })
        };
        let request = leg([8, 128]);
        let reply = leg([0, 129]);
        let (rtt, icmp_errors) = match answer {
            Some(Answer::Reply(rtt)) => (Some(rtt), Vec::new()),
            Some(Answer::Error(e)) => (
                None,
                vec![diagnose::IcmpError {
                    from: e.from,
                    icmp_type: e.icmp_type,
                    code: e.code,
                    mtu: e.mtu.and_then(|m| u16::try_from(m).ok()),
                }],
            ),
            None => (None, Vec::new()),
        };
        let dropped = [&request, &reply]
            .iter()
            .any(|l| l.as_ref().is_some_and(|p| p.drop().is_some()));
        let status = match (rtt, dropped) {
            (Some(_), _) => Status::Replied,
            (None, true) => Status::Dropped,
            (None, false) => Status::Lost,
        };
        Outcome {
            seq,
            status,
            rtt,
            request,
            reply,
            icmp_errors,
        }
    }

    /// The drop that ended the probe and the hook hop just before it.
    fn drop(&self) -> Option<(&Observation, Option<&Observation>)> {
        [&self.request, &self.reply]
            .into_iter()
            .flatten()
            .find_map(|p| {
                let i = p.hops.iter().position(Observation::is_drop)?;
                let before = p.hops[..i].iter().rev().find(|h| h.is_hook());
                Some((&p.hops[i], before))
            })
    }
}

#[derive(Default)]
struct Stats {
    transmitted: u32,
    received: u32,
    rtts: Vec<Duration>,
}

impl Stats {
    fn add(&mut self, o: &Outcome) {
        self.transmitted += 1;
        if let Some(r) = o.rtt {
            self.received += 1;
            self.rtts.push(r);
        }
    }

    fn rtt_us(&self) -> Option<(f64, f64, f64)> {
        let us = |d: &Duration| d.as_secs_f64() * 1e6;
        let min = self.rtts.iter().map(us).reduce(f64::min)?;
        let max = self.rtts.iter().map(us).reduce(f64::max)?;
        let avg = self.rtts.iter().map(us).sum::<f64>() / self.rtts.len() as f64;
        Some((min, avg, max))
    }
}

/// Text or NDJSON, one method per thing shown.
struct Ui<'a, W: Write> {
    out: &'a mut W,
    json: bool,
}

#[derive(Serialize)]
struct JsonHop<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    seq: u16,
    leg: &'static str,
    netns: &'a str,
    ifname: Option<&'a str>,
    ifindex: u32,
    dir: String,
    t_us: f64,
    dt_us: f64,
}

#[derive(Serialize)]
struct JsonPlace<'a> {
    netns: &'a str,
    ifname: Option<&'a str>,
    dir: String,
}

#[derive(Serialize)]
struct JsonDrop<'a> {
    reason: &'a str,
    netns: &'a str,
    after: Option<JsonPlace<'a>>,
    netfilter: Option<diagnose::Attribution>,
}

#[derive(Serialize)]
struct JsonResult<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    seq: u16,
    status: Status,
    rtt_us: Option<f64>,
    drop: Option<JsonDrop<'a>>,
    findings: &'a [Finding],
}

#[derive(Serialize)]
struct JsonRtt {
    min: f64,
    avg: f64,
    max: f64,
}

#[derive(Serialize)]
struct JsonSummary {
    #[serde(rename = "type")]
    kind: &'static str,
    transmitted: u32,
    received: u32,
    lost: u32,
    rtt_us: Option<JsonRtt>,
}

fn dir_of(h: &Observation) -> String {
    match &h.what {
        What::Hook(d) => d.to_string(),
        _ => "drop".into(),
    }
}

impl<'a, W: Write> Ui<'a, W> {
    fn new(out: &'a mut W, json: bool) -> Self {
        Ui { out, json }
    }

    #[allow(clippy::too_many_arguments)]
    fn header(
        &mut self,
        plan: &Plan,
        dest: &str,
        from: &Namespace,
        src: IpAddr,
        id: u16,
        capabilities: &str,
        size: usize,
    ) -> Result<()> {
        if self.json {
            return Ok(());
        }
        let shown = if dest == plan.dst.to_string() {
            dest.to_string()
        } else {
            format!("{dest} ({})", plan.dst)
        };
        let src = if src.is_unspecified() {
            "no route".to_string()
        } else {
            src.to_string()
        };
        writeln!(
            self.out,
            "PING {shown} from {} ({src}) {size} bytes, icmp id {id}; tracing {capabilities}",
            from.name
        )?;
        Ok(())
    }

    fn probe(
        &mut self,
        o: &Outcome,
        topo: &Topology,
        findings: &[Finding],
        netfilter: Option<diagnose::Attribution>,
    ) -> Result<()> {
        let drop = o.drop();
        if self.json {
            let t0 = o
                .request
                .as_ref()
                .map(PacketPath::first_ts)
                .or_else(|| o.reply.as_ref().map(PacketPath::first_ts))
                .unwrap_or(0);
            for (leg, path) in [("request", &o.request), ("reply", &o.reply)] {
                let Some(p) = path else { continue };
                let mut prev = None;
                for h in p.hops.iter().filter(|h| h.is_hook()) {
                    let hop = JsonHop {
                        kind: "hop",
                        seq: o.seq,
                        leg,
                        netns: &h.netns,
                        ifname: h.ifname.as_deref(),
                        ifindex: h.ifindex,
                        dir: dir_of(h),
                        t_us: h.ts_ns.saturating_sub(t0) as f64 / 1000.0,
                        dt_us: prev.map_or(0.0, |p: u64| h.ts_ns.saturating_sub(p) as f64 / 1000.0),
                    };
                    prev = Some(h.ts_ns);
                    serde_json::to_writer(&mut *self.out, &hop)?;
                    self.out.write_all(b"\n")?;
                }
            }
            let result = JsonResult {
                kind: "result",
                seq: o.seq,
                status: o.status,
                rtt_us: o.rtt.map(|r| r.as_secs_f64() * 1e6),
                drop: drop.map(|(d, before)| JsonDrop {
                    reason: match &d.what {
                        What::Drop { reason, .. } => reason,
                        _ => "",
                    },
                    netns: &d.netns,
                    after: before.map(|b| JsonPlace {
                        netns: &b.netns,
                        ifname: b.ifname.as_deref(),
                        dir: dir_of(b),
                    }),
                    netfilter,
                }),
                findings,
            };
            serde_json::to_writer(&mut *self.out, &result)?;
            self.out.write_all(b"\n")?;
            return Ok(());
        }
        let status = match (o.status, drop) {
            (Status::Replied, _) => format!(
                "replied in {:.3} ms",
                o.rtt.unwrap_or_default().as_secs_f64() * 1e3
            ),
            (Status::Dropped, Some((d, before))) => {
                let reason = match &d.what {
                    What::Drop { reason, .. } => reason.as_str(),
                    _ => "",
                };
                let after = before
                    .map(|b| format!(" after {}", render::text::hop_place(b)))
                    .unwrap_or_default();
                format!("dropped: {reason} in {}{after}", d.netns)
            }
            (Status::Dropped, None) => "dropped".into(),
            (Status::Lost, _) => {
                let last = [&o.reply, &o.request]
                    .into_iter()
                    .flatten()
                    .find_map(|p| p.hops.iter().rev().find(|h| h.is_hook()));
                match last {
                    Some(h) => format!("lost: last seen at {}", render::text::hop_place(h)),
                    None => "lost: never seen on any traced interface".into(),
                }
            }
        };
        writeln!(self.out, "seq {}  {status}", o.seq)?;
        for (leg, path) in [("request", &o.request), ("reply  ", &o.reply)] {
            let Some(p) = path else { continue };
            let hooks = p.hops.iter().filter(|h| h.is_hook());
            let span = match (hooks.clone().next(), p.hops.last()) {
                (Some(a), Some(b)) => render::text::since(a.ts_ns, b.ts_ns),
                _ => String::new(),
            };
            writeln!(
                self.out,
                "  {leg}  {}   {span}",
                render::path::summarize(&p.hops, topo)
            )?;
        }
        for e in &o.icmp_errors {
            writeln!(
                self.out,
                "  icmp error from {}: type {} code {}{}",
                e.from,
                e.icmp_type,
                e.code,
                e.mtu.map(|m| format!(", mtu {m}")).unwrap_or_default()
            )?;
        }
        render::text::findings(self.out, findings, "  ")?;
        self.out.flush()?;
        Ok(())
    }

    /// Per hop transition across all probes (with -c N > 1).
    fn latency(&mut self, rows: &[crate::latency::Row]) -> Result<()> {
        if self.json {
            crate::latency::json(self.out, rows)?;
        } else {
            writeln!(self.out)?;
            crate::latency::text(self.out, rows)?;
        }
        Ok(())
    }

    fn summary(&mut self, s: &Stats, dest: &str) -> Result<()> {
        let lost = s.transmitted - s.received;
        let rtt = s.rtt_us();
        if self.json {
            serde_json::to_writer(
                &mut *self.out,
                &JsonSummary {
                    kind: "summary",
                    transmitted: s.transmitted,
                    received: s.received,
                    lost,
                    rtt_us: rtt.map(|(min, avg, max)| JsonRtt { min, avg, max }),
                },
            )?;
            self.out.write_all(b"\n")?;
            return Ok(());
        }
        writeln!(self.out, "\n--- {dest} vethtrace ping statistics ---")?;
        let pct = (lost * 100).checked_div(s.transmitted).unwrap_or(0);
        write!(
            self.out,
            "{} transmitted, {} received, {pct}% loss",
            s.transmitted, s.received
        )?;
        match rtt {
            Some((min, avg, max)) => writeln!(
                self.out,
                ", rtt min/avg/max = {:.3}/{:.3}/{:.3} ms",
                min / 1e3,
                avg / 1e3,
                max / 1e3
            )?,
            None => writeln!(self.out)?,
        }
        Ok(())
    }
}
