//! The command line: every subcommand and flag, with help text that matches what ships.

use clap::{Parser, Subcommand};

use crate::commands;

/// Where did my packet go? Hop-by-hop packet paths through veths, bridges and vxlan, across
/// every network namespace, with names instead of ifindexes.
#[derive(Debug, Parser)]
#[command(name = "vethtrace", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the bridge lab, trace a ping through it, then break it (iptables FORWARD policy
    /// DROP with br_netfilter) and show where and why the packet died. Cleans up after itself.
    Demo(commands::demo::DemoArgs),
    /// Send ICMP echo probes from a namespace and follow each one hop by hop, request and reply;
    /// say where and why a probe died and what to change. Exit 0 all replied, 1 any lost.
    Ping(commands::ping::PingArgs),
    /// Trace matching packets hop by hop across every namespace (tcpdump-like, with names).
    Trace(commands::trace::TraceArgs),
    /// Show every namespace, its interfaces, veth peers, bridges and vxlan devices.
    Topo(commands::topo::TopoArgs),
    /// Which interface is the other end of this veth, and who owns it.
    Peer(commands::peer::PeerArgs),
    /// Build or remove a namespaced lab topology to learn the tool on.
    #[command(subcommand)]
    Lab(commands::lab::LabCommand),
}
