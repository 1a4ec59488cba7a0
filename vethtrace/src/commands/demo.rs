//! `vethtrace demo`: the main job in one command. Builds the bridge lab (namespaces only),
//! runs `vethtrace ping` through it, then switches on the classic Docker failure (iptables
//! FORWARD policy DROP with br_netfilter) and pings again, showing where and why the probe
//! died and what to change. Removes everything it made on every exit path.

use std::{collections::HashMap, io::Write, process::ExitCode};

use anyhow::Result;

use crate::{
    attach::AttachMode,
    commands::ping::{self, PingArgs},
    lab::{Fault, Lab, LabKind},
};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How to hook the interfaces: tc programs (TCX links or clsact filters) on each, or two
    /// device tracepoints for all of them.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub attach_mode: AttachMode,
}

pub fn run(args: &DemoArgs, out: &mut impl Write) -> Result<ExitCode> {
    crate::privileges::require_root("vethtrace demo")?;
    crate::privileges::require_probing()?;
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
    // Show the lab's roles (ns01) rather than its unique namespace names (vt-4242-0-ns01).
    let names: HashMap<String, String> = lab
        .roles()
        .into_iter()
        .map(|(role, ns)| (ns.to_string(), role.to_string()))
        .collect();
    let probe = PingArgs {
        dest: lab.addr("ns02")?.to_string(),
        from: Some(lab.netns("ns01")?.to_string()),
        count: 1,
        interval: 1.0,
        timeout: 1.0,
        size: 56,
        json: false,
        netns: lab.roles().iter().map(|(_, ns)| ns.to_string()).collect(),
        attach_mode: args.attach_mode,
    };

    writeln!(out, "\n1. vethtrace ping {} --from ns01 -c 1", probe.dest)?;
    if ping::run_with_names(&probe, &names, out)? != ExitCode::SUCCESS {
        anyhow::bail!(
            "the healthy bridge lab did not answer a ping: the lab could not be built correctly on this machine"
        );
    }
    crate::interrupt::check()?;

    writeln!(
        out,
        "\n2. the node now does what Docker does: bridge-nf-call-iptables=1 and iptables -P FORWARD DROP\n   vethtrace ping {} --from ns01 -c 1",
        probe.dest
    )?;
    lab.enable(Fault::ForwardDrop)?;
    ping::run_with_names(&probe, &names, out)?;
    crate::interrupt::check()?;

    writeln!(
        out,
        "\ncleaning up: everything is detached; removing the lab namespaces"
    )?;
    drop(lab);
    Ok(ExitCode::SUCCESS)
}
