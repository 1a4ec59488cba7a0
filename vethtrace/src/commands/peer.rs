//! `vethtrace peer IFACE [--netns NS] [--json]`: the other end of a veth, from either end, by
//! name or (with --netns) ifindex, e.g.
//! `host vethf0808a3e (ifindex 8, bridge cni0) ⇄ busybox eth0 (ifindex 3) — netns busybox, pid 4242 sleep`.
//!
//! Owns: the arguments, picking the one interface meant (or saying why not), and output.

use std::{io::Write, process::ExitCode};

use anyhow::{Context, Result};

use crate::{
    bail_usage,
    topology::{self, render::peer as render, DiscoverOptions, Interface, Namespace, Topology},
};

/// Arguments of `vethtrace peer`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PeerArgs {
    /// Interface name, or ifindex together with --netns.
    #[arg(value_name = "IFACE")]
    pub iface: String,
    /// The network namespace the interface is in (needed when the name is in several).
    #[arg(long, value_name = "NS")]
    pub netns: Option<String>,
    /// Print JSON: {"interface":{netns,inode,ifindex,name,master},"peer":{…}}.
    #[arg(long)]
    pub json: bool,
}

/// Runs `vethtrace peer`.
pub fn run(args: &PeerArgs, out: &mut impl Write) -> Result<ExitCode> {
    let topo = topology::discover(&DiscoverOptions {
        netns: args.netns.iter().cloned().collect(),
        with_peers: true,
        programs: false,
    })?;
    write(args, &topo, out)?;
    Ok(ExitCode::SUCCESS)
}

/// Looks the interface up in `topo` and writes its pair.
pub fn write(args: &PeerArgs, topo: &Topology, out: &mut impl Write) -> Result<()> {
    let (ns, i) = pick(args, topo)?;
    let Some(p) = &i.peer else {
        // A macvlan, ipvlan or VLAN has a parent instead: the question people ask next.
        let parent = i
            .lower
            .as_ref()
            .map(|l| {
                let resolved = topo.resolve(l);
                let name = resolved
                    .map(|(_, p)| p.name.clone())
                    .or_else(|| l.name.clone())
                    .unwrap_or_else(|| format!("ifindex {}", l.ifindex));
                // Where the parent is a veth, its peer is where the frames go next.
                let next = match resolved {
                    Some((_, p)) if p.peer.is_some() => {
                        format!(" (`vethtrace peer {name} --netns {}`)", l.netns)
                    }
                    _ => String::new(),
                };
                format!(
                    "; it is stacked on {} {name}, its parent device{next}",
                    l.netns
                )
            })
            .unwrap_or_default();
        bail_usage!(
            "{} in netns {} is not a veth (kind {}): it has no peer{parent}",
            i.name,
            ns.name,
            i.kind
        );
    };
    if args.json {
        serde_json::to_writer(&mut *out, &render::PeerJson::new(ns, i, p)).context("write JSON")?;
        writeln!(out)?;
    } else {
        writeln!(out, "{}", render::line(topo, ns, i, p))?;
    }
    out.flush()?;
    Ok(())
}

/// The one interface the arguments mean.
fn pick<'t>(args: &PeerArgs, topo: &'t Topology) -> Result<(&'t Namespace, &'t Interface)> {
    let name = args.iface.as_str();
    if let Some(n) = &args.netns {
        if topo.find_netns(n).is_none() {
            bail_usage!(
                "no network namespace named {n}; {}",
                topology::known_names(topo)
            );
        }
    }
    let found = topo.find_interface(name, args.netns.as_deref());
    match (found.as_slice(), &args.netns) {
        ([one], _) => Ok(*one),
        ([], Some(n)) => {
            let have: Vec<&str> = topo
                .find_netns(n)
                .map(|ns| ns.interfaces.iter().map(|i| i.name.as_str()).collect())
                .unwrap_or_default();
            bail_usage!(
                "no interface named {name} in netns {n} (it has: {})",
                have.join(", ")
            )
        }
        ([], None) if name.parse::<u32>().is_ok() => {
            bail_usage!("ifindex {name} is per namespace: say which with --netns NS")
        }
        ([], None) => bail_usage!(
            "no interface named {name} in any of {} namespaces",
            topo.namespaces.len()
        ),
        (many, _) => {
            let list: Vec<String> = many
                .iter()
                .map(|(ns, i)| format!("--netns {} (ifindex {})", ns.name, i.ifindex))
                .collect();
            bail_usage!(
                "{name} is in {} namespaces; pick one: {}",
                many.len(),
                list.join(", ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{error::UsageError, topology::model::tests::sample};

    fn out(args: &PeerArgs) -> Result<String> {
        let mut v = Vec::new();
        write(args, &sample(), &mut v)?;
        Ok(String::from_utf8(v)?)
    }

    fn args(iface: &str, netns: Option<&str>) -> PeerArgs {
        PeerArgs {
            iface: iface.into(),
            netns: netns.map(Into::into),
            json: false,
        }
    }

    fn usage_message(r: Result<String>) -> String {
        let e = r.expect_err("should fail");
        assert!(
            e.downcast_ref::<UsageError>().is_some(),
            "not a usage error: {e}"
        );
        e.to_string()
    }

    #[test]
    fn by_name_from_either_end_and_by_ifindex() {
        let host_end = out(&args("vethf0808a3e", None)).expect("peer");
        assert!(
            host_end.starts_with("host vethf0808a3e (ifindex 8, bridge cni0) ⇄ busybox eth0"),
            "{host_end}"
        );
        let pod_end = out(&args("eth0", Some("busybox"))).expect("peer");
        assert!(
            pod_end.starts_with("busybox eth0 (ifindex 3) ⇄ host vethf0808a3e"),
            "{pod_end}"
        );
        let by_index = out(&args("3", Some("nginx"))).expect("peer");
        assert!(
            by_index.contains("⇄ host veth12345678 (ifindex 9, bridge cni0)"),
            "{by_index}"
        );
    }

    #[test]
    fn ambiguous_unknown_and_non_veth() {
        let m = usage_message(out(&args("eth0", None)));
        assert!(
            m.starts_with("eth0 is in 3 namespaces; pick one: --netns host (ifindex 2)"),
            "{m}"
        );
        assert!(m.contains("--netns busybox (ifindex 3)"), "{m}");
        assert_eq!(
            usage_message(out(&args("nope", None))),
            "no interface named nope in any of 3 namespaces"
        );
        let m = usage_message(out(&args("eth0", Some("redis"))));
        assert_eq!(
            m,
            "no network namespace named redis; known: host, busybox, nginx"
        );
        let m = usage_message(out(&args("cni0", None)));
        assert_eq!(
            m,
            "cni0 in netns host is not a veth (kind bridge): it has no peer"
        );
        let mut topo = sample();
        let host = &mut topo.namespaces[0];
        let mut mv = host.interfaces[1].clone();
        mv.name = "mv0".into();
        mv.kind = "macvlan".into();
        mv.peer = None;
        mv.lower = Some(crate::topology::PeerRef {
            netns: "host".into(),
            inode: Some(host.inode),
            ifindex: 2,
            name: Some("eth0".into()),
            master: None,
        });
        host.interfaces.push(mv);
        let mut v = Vec::new();
        let m = usage_message(write(&args("mv0", None), &topo, &mut v).map(|_| String::new()));
        assert_eq!(
            m,
            "mv0 in netns host is not a veth (kind macvlan): it has no peer; it is stacked on host eth0, its parent device"
        );
        // On a veth, the parent's peer is the next question.
        let mv = topo.namespaces[0].interfaces.last_mut().expect("mv0");
        if let Some(l) = mv.lower.as_mut() {
            l.ifindex = 8;
            l.name = Some("vethf0808a3e".into());
        }
        let m = usage_message(write(&args("mv0", None), &topo, &mut v).map(|_| String::new()));
        assert_eq!(
            m,
            "mv0 in netns host is not a veth (kind macvlan): it has no peer; it is stacked on host vethf0808a3e, its parent device (`vethtrace peer vethf0808a3e --netns host`)"
        );
        let m = usage_message(out(&args("wlan0", Some("busybox"))));
        assert_eq!(
            m,
            "no interface named wlan0 in netns busybox (it has: lo, eth0)"
        );
        assert!(usage_message(out(&args("3", None))).contains("--netns"));
    }

    #[test]
    fn json_output() {
        let mut a = args("eth0", Some("busybox"));
        a.json = true;
        let s = out(&a).expect("json");
        let v: serde_json::Value = serde_json::from_str(&s).expect("parse");
        assert_eq!(v["interface"]["netns"], "busybox");
        assert_eq!(v["peer"]["name"], "vethf0808a3e");
        assert_eq!(v["peer"]["master"], "cni0");
    }
}
