//! `vethtrace demo`: the main job in one command. Builds the bridge lab (namespaces only),
//! traces one ping through it, then switches on the classic Docker failure (iptables FORWARD
//! policy DROP with br_netfilter) and shows where and why the next ping died. Removes
//! everything it made on every exit path.

use std::{io::Write, process::ExitCode, time::Duration};

use anyhow::{Context, Result};

use crate::{
    attach::AttachMode,
    correlate::{correlate, PacketPath},
    diagnose,
    filter::Filter,
    lab::{Fault, Lab, LabKind},
    loader::LoadOptions,
    netns, render,
    tracer::{Target, Tracer, TracerOptions},
};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How to attach the tc programs.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub attach_mode: AttachMode,
}

/// How long the ring must stay quiet before a probe's events are considered complete.
const QUIET: Duration = Duration::from_millis(300);
const MAX_WAIT: Duration = Duration::from_secs(3);

pub fn run(args: &DemoArgs, out: &mut impl Write) -> Result<ExitCode> {
    crate::privileges::require_root("vethtrace demo")?;
    crate::privileges::require_tracing()?;
    crate::interrupt::install();
    writeln!(
        out,
        "vethtrace demo: building the bridge lab in fresh network namespaces (nothing in this host's own network changes)"
    )?;
    let mut lab = Lab::create(LabKind::Bridge)?;
    writeln!(
        out,
        "  node: bridge br01 192.168.88.1/24 with ports br-veth01, br-veth02\n  ns01: veth01 192.168.88.11 ⇄ node br-veth01\n  ns02: veth02 192.168.88.12 ⇄ node br-veth02"
    )?;
    let targets = lab
        .roles()
        .into_iter()
        .map(|(role, ns)| Target {
            path: netns::named(ns),
            name: role.to_string(),
        })
        .collect();
    let filter = Filter::new(&["icmp".to_string()])?;
    let mut tracer = Tracer::start(&TracerOptions {
        load: LoadOptions {
            filter: filter.insns,
            drops: true,
            netns_filter: true,
            snapshots: false,
            ring_bytes: None,
        },
        targets,
        selection: Default::default(),
        mode: args.attach_mode,
    })?;
    writeln!(
        out,
        "  tracing `{}`: {}",
        filter.text,
        tracer.capabilities()
    )?;
    crate::interrupt::check()?;

    let dst = lab.addr("ns02")?;
    writeln!(out, "\n1. ping -c 1 {dst} from ns01")?;
    let replied = lab.ping("ns01", dst, 1)?;
    let paths = trace_probe(&mut tracer)?;
    show(out, &paths)?;
    if !replied {
        anyhow::bail!("the healthy bridge lab did not answer a ping: the lab could not be built correctly on this machine");
    }
    writeln!(out, "   ✓ replied")?;
    crate::interrupt::check()?;

    writeln!(
        out,
        "\n2. now the node does what Docker does: bridge-nf-call-iptables=1 and iptables -P FORWARD DROP\n   ping -c 1 {dst} from ns01"
    )?;
    lab.enable(Fault::ForwardDrop)?;
    let replied = lab.ping("ns01", dst, 1)?;
    let paths = trace_probe(&mut tracer)?;
    show(out, &paths)?;
    if replied {
        writeln!(
            out,
            "   ✓ replied (unexpected: the FORWARD policy did not apply)"
        )?;
    } else if paths.iter().all(|p| p.drop().is_none()) {
        writeln!(
            out,
            "   ✗ no reply, and no drop was seen ({})",
            tracer.drop_layer()
        )?;
    }

    let c = tracer.counters()?;
    writeln!(
        out,
        "\ncleaning up: detaching {} hooks and removing the lab namespaces ({} events, {} lost)",
        tracer.attachments().hooks(),
        c.emitted,
        c.lost
    )?;
    drop(tracer);
    drop(lab);
    Ok(ExitCode::SUCCESS)
}

fn trace_probe(tracer: &mut Tracer) -> Result<Vec<PacketPath>> {
    crate::interrupt::check()?;
    let obs = tracer.collect_until_quiet(QUIET, MAX_WAIT);
    Ok(correlate(obs))
}

fn show(out: &mut impl Write, paths: &[PacketPath]) -> Result<()> {
    if paths.is_empty() {
        writeln!(out, "   (no packets seen)")?;
    }
    for p in paths {
        render::text::packet(out, p, "   ").context("write output")?;
        render::text::findings(out, &diagnose::explain(p), "   ")?;
    }
    Ok(())
}
