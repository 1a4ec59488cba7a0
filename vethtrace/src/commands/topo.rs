//! `vethtrace topo [--netns NS] [--json | --dot] [--programs]`: every network namespace with its
//! interfaces, veth peers across namespaces, bridge membership and vxlan underlays, as a tree,
//! JSON or Graphviz.
//!
//! Owns: the arguments and the choice of renderer. Discovery is `topology::discover`; the
//! renderers are `topology::render`.

use std::{io::Write, process::ExitCode};

use anyhow::{Context, Result};

use crate::topology::{self, render, DiscoverOptions};

/// Arguments of `vethtrace topo`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TopoArgs {
    /// Only this network namespace (ip-netns, pod or container name, pid, inode); repeatable.
    #[arg(long = "netns", value_name = "NS")]
    pub netns: Vec<String>,
    /// Print JSON: {"namespaces":[{"name","inode","pids","owner","interfaces":[…]}]}.
    #[arg(long, conflicts_with = "dot")]
    pub json: bool,
    /// Print a Graphviz graph (pipe into `dot -Tsvg`).
    #[arg(long)]
    pub dot: bool,
    /// Also list the tc, TCX and XDP programs attached to each interface.
    #[arg(long)]
    pub programs: bool,
}

/// Runs `vethtrace topo`.
pub fn run(args: &TopoArgs, out: &mut impl Write) -> Result<ExitCode> {
    let topo = topology::discover(&DiscoverOptions {
        netns: args.netns.clone(),
        with_peers: false,
        programs: args.programs,
    })?;
    write(args, &topo, out)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes an already discovered topology the way `args` asks.
pub fn write(args: &TopoArgs, topo: &topology::Topology, out: &mut impl Write) -> Result<()> {
    if args.json {
        serde_json::to_writer(&mut *out, topo).context("write JSON")?;
        writeln!(out)?;
    } else if args.dot {
        render::dot::render(topo, out)?;
    } else {
        render::text::render(topo, out)?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::model::tests::sample;

    fn written(args: &TopoArgs) -> String {
        let mut v = Vec::new();
        write(args, &sample(), &mut v).expect("write");
        String::from_utf8(v).expect("utf8")
    }

    #[test]
    fn json_holds_the_contract_fields() {
        let s = written(&TopoArgs {
            json: true,
            ..Default::default()
        });
        let v: serde_json::Value = serde_json::from_str(&s).expect("json");
        let ns = &v["namespaces"][0];
        for k in ["name", "inode", "pids", "owner", "interfaces"] {
            assert!(ns.get(k).is_some(), "namespace lacks {k}");
        }
        let i = &ns["interfaces"][4];
        for k in [
            "ifindex", "name", "kind", "state", "mtu", "mac", "addrs", "master", "peer",
        ] {
            assert!(i.get(k).is_some(), "interface lacks {k}");
        }
        assert_eq!(i["peer"]["netns"], "busybox");
        for k in ["netns", "inode", "ifindex", "name", "master"] {
            assert!(i["peer"].get(k).is_some(), "peer lacks {k}");
        }
        assert!(v["namespaces"][1]["interfaces"][0]["peer"].is_null());
        assert_eq!(ns["interfaces"][3]["vxlan"]["vni"], 1);
    }

    #[test]
    fn dot_and_text_are_chosen_by_flag() {
        assert!(written(&TopoArgs {
            dot: true,
            ..Default::default()
        })
        .starts_with("graph topology {"));
        assert!(written(&TopoArgs::default()).starts_with("host (netns"));
    }

    #[test]
    fn json_and_dot_conflict() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            a: TopoArgs,
        }
        assert!(Cli::try_parse_from(["t", "--json", "--dot"]).is_err());
        let c = Cli::try_parse_from(["t", "--netns", "a", "--netns", "b", "--programs"])
            .expect("parse");
        assert_eq!(c.a.netns, vec!["a", "b"]);
        assert!(c.a.programs);
    }
}
