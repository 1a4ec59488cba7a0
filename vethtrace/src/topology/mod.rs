//! The container-network topology: every network namespace with its owner, interfaces, veth
//! peers, bridges, vxlan devices, FDB and routes — what `vethtrace topo` and `vethtrace peer`
//! print and what the tracer uses to put names on eBPF events (which carry a netns cookie and
//! an ifindex).
//!
//! [`discover`] lists namespaces (`enumerate`), names them (`owner`, `naming`), enters each once
//! on one worker thread (`crate::netns::run_in_each`) and reads it over a synchronous rtnetlink
//! socket (`read`, `netlink`, `links`, `routes`, `fdb`, `nsid`, `programs`, `ethtool`), then resolves veth
//! peers across namespaces (`peers`). The result is plain data ([`model`]); `render` turns it
//! into text, Graphviz and peer lines.
//!
//! Does not own: entering namespaces (`crate::netns`), the privilege check
//! (`crate::privileges`), the CLI wiring (`crate::commands`).

pub mod enumerate;
pub mod ethtool;
pub mod fdb;
pub mod kinds;
pub mod links;
pub mod model;
pub mod naming;
pub mod netlink;
pub mod nsid;
pub mod owner;
pub mod peers;
pub mod programs;
pub mod read;
pub mod render;
pub mod routes;

use std::{
    collections::{BTreeSet, HashMap},
    fs::File,
    os::{
        fd::{AsRawFd, RawFd},
        unix::fs::MetadataExt,
    },
    path::PathBuf,
};

use anyhow::Result;

pub use model::{
    AttachedProgram, FdbEntry, Interface, Namespace, NsKey, Owner, PeerRef, Route, Topology, Vxlan,
};

use enumerate::Found;
use peers::{LinkRefs, NsRefs};
use read::{NsRead, ReadContext, Vanished};

/// What to discover.
#[derive(Debug, Clone, Default)]
pub struct DiscoverOptions {
    /// Only these namespaces (any name [`Topology::find_netns`] accepts); all when empty.
    /// Namespaces their veths lead to are still read, to name the peers, but not returned.
    pub netns: Vec<String>,
    /// Also return the namespaces the selected ones' veths lead to (they are read anyway, to
    /// name the peers); `peer` wants them, to describe the far end.
    pub with_peers: bool,
    /// Also list the tc, TCX and XDP programs attached to each interface.
    pub programs: bool,
}

/// How many namespace names an "unknown namespace" error lists.
const NAMES_IN_ERROR: usize = 20;

/// Discovers the topology. A namespace that vanishes while being read is skipped.
pub fn discover(opts: &DiscoverOptions) -> Result<Topology> {
    crate::privileges::require_topology()?;
    let found = enumerate::enumerate();
    let skeleton = skeleton(&found);
    let selected = select(&skeleton, &opts.netns)?;

    // Descriptors of every namespace, for the nsid queries; checked against the identity seen
    // while listing, so a reused pid cannot stand in for a namespace that is gone.
    let files: Vec<Option<File>> = found.iter().map(open_checked).collect();
    let fds: Vec<Option<RawFd>> = files
        .iter()
        .map(|f| f.as_ref().map(AsRawFd::as_raw_fd))
        .collect();
    let names = opts.programs.then(programs::program_names);
    let mut order: Vec<usize> = (0..found.len()).collect();
    let mut ctx = ReadContext {
        fds: &fds,
        order: &mut order,
        programs: names.as_ref(),
    };

    let mut reads = read_many(&found, &selected, &mut ctx)?;
    // Namespaces the selected ones' links lead to, so peers get names.
    let extra: Vec<usize> = reads
        .values()
        .flat_map(|r| r.nsids.values().copied())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|i| !reads.contains_key(i))
        .collect();
    if !extra.is_empty() {
        let mut more = read_many(&found, &extra, &mut ctx)?;
        reads.extend(more.drain());
    }
    drop(files);

    let mut spaces = Vec::new();
    let mut refs = Vec::new();
    for (idx, ns) in skeleton.iter().enumerate() {
        let Some(r) = reads.remove(&idx) else {
            continue;
        };
        refs.push(refs_of(ns.inode, &r, &skeleton));
        spaces.push(fill(ns.clone(), r));
    }
    peers::resolve_peers(&mut spaces, &refs);
    if !opts.with_peers {
        let keep: BTreeSet<u64> = selected.iter().map(|&i| skeleton[i].inode).collect();
        spaces.retain(|n| keep.contains(&n.inode));
    }
    Ok(Topology { namespaces: spaces })
}

/// Namespaces with names and owners but nothing read yet, in the order of `found`.
fn skeleton(found: &[Found]) -> Vec<Namespace> {
    let owners: Vec<Option<Owner>> = found.iter().map(|f| owner::owner_of(&f.pids)).collect();
    let mut names: Vec<(String, u64)> = found
        .iter()
        .zip(&owners)
        .map(|(f, o)| {
            let name =
                naming::display_name(f.is_host, f.netns_name.as_deref(), o.as_ref(), f.inode);
            (name, f.inode)
        })
        .collect();
    naming::dedupe(&mut names);
    found
        .iter()
        .zip(owners)
        .zip(names)
        .map(|((f, owner), (name, _))| Namespace {
            name,
            inode: f.inode,
            dev: f.dev,
            path: f.path().display().to_string(),
            netns_name: f.netns_name.clone(),
            pids: f.pids.clone(),
            owner,
            ..Default::default()
        })
        .collect()
}

/// Indexes of the namespaces `wanted` names (all when empty); an unknown name is a usage error
/// that lists the names that exist.
fn select(skeleton: &[Namespace], wanted: &[String]) -> Result<Vec<usize>> {
    if wanted.is_empty() {
        return Ok((0..skeleton.len()).collect());
    }
    let topo = Topology {
        namespaces: skeleton.to_vec(),
    };
    let mut out = Vec::new();
    for w in wanted {
        let Some(ns) = topo.find_netns(w) else {
            crate::bail_usage!("no network namespace named {w}; {}", known_names(&topo));
        };
        if let Some(i) = skeleton.iter().position(|n| n.inode == ns.inode) {
            if !out.contains(&i) {
                out.push(i);
            }
        }
    }
    Ok(out)
}

/// `known: host, ns01, … (N more)` for error messages.
pub fn known_names(topo: &Topology) -> String {
    let names = topo.names();
    let shown: Vec<&str> = names.iter().take(NAMES_IN_ERROR).copied().collect();
    let more = names.len().saturating_sub(NAMES_IN_ERROR);
    if more > 0 {
        format!("known: {} (and {more} more)", shown.join(", "))
    } else {
        format!("known: {}", shown.join(", "))
    }
}

fn open_checked(f: &Found) -> Option<File> {
    let file = File::open(f.path()).ok()?;
    let m = file.metadata().ok()?;
    (m.dev() == f.dev && m.ino() == f.inode).then_some(file)
}

/// Reads the namespaces at `which` (indexes into `found`), skipping those that vanished.
fn read_many(
    found: &[Found],
    which: &[usize],
    ctx: &mut ReadContext<'_>,
) -> Result<HashMap<usize, NsRead>> {
    let paths: Vec<PathBuf> = which.iter().map(|&i| found[i].path()).collect();
    let by_path: HashMap<&PathBuf, usize> = paths.iter().zip(which.iter().copied()).collect();
    let results = crate::netns::run_in_each(&paths, |p| {
        let idx = by_path.get(&p.to_path_buf()).copied().ok_or(Vanished)?;
        read::read_current(found[idx].inode, ctx).map(|r| (idx, r))
    });
    let mut out = HashMap::new();
    for r in results {
        match r {
            Ok((idx, read)) => {
                out.insert(idx, read);
            }
            Err(e) if vanished(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Whether an error means the namespace went away (its mount or process is gone).
fn vanished(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Vanished>()) || crate::netns::vanished(e)
}

fn refs_of(inode: u64, r: &NsRead, skeleton: &[Namespace]) -> NsRefs {
    NsRefs {
        inode,
        links: r
            .links
            .iter()
            .map(|l| LinkRefs {
                ifindex: l.iface.ifindex,
                link_ifindex: l.link_ifindex,
                link_netnsid: l.link_netnsid,
                vxlan_link: l.vxlan_link,
                peer: l.has_peer(),
                lower: l.has_lower(),
            })
            .collect(),
        nsids: r
            .nsids
            .iter()
            .filter_map(|(&id, &i)| skeleton.get(i).map(|n| (id, (n.inode, n.name.clone()))))
            .collect(),
    }
}

fn fill(mut ns: Namespace, r: NsRead) -> Namespace {
    ns.cookie = r.cookie;
    ns.interfaces = r.links.into_iter().map(|l| l.iface).collect();
    ns.interfaces.sort_by_key(|i| i.ifindex);
    ns.routes = r.routes;
    ns.default_route = r.default_route;
    ns.fdb = r.fdb;
    ns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_namespace_lists_the_known_ones() {
        let t = model::tests::sample();
        let err = select(&t.namespaces, &["redis".to_string()]).expect_err("unknown");
        assert!(err.downcast_ref::<crate::error::UsageError>().is_some());
        assert_eq!(
            err.to_string(),
            "no network namespace named redis; known: host, busybox, nginx"
        );
        assert_eq!(
            select(&t.namespaces, &["nginx".into(), "host".into()]).ok(),
            Some(vec![2, 0])
        );
        assert_eq!(select(&t.namespaces, &[]).ok(), Some(vec![0, 1, 2]));
    }

    #[test]
    fn many_names_are_cut_short() {
        let t = Topology {
            namespaces: (0..25)
                .map(|i| Namespace {
                    name: format!("n{i}"),
                    ..Default::default()
                })
                .collect(),
        };
        assert!(known_names(&t).ends_with("n19 (and 5 more)"));
    }
}
