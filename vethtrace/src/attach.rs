//! The attach registry: one owner for every tc attachment in every namespace.
//!
//! Attaching happens on a worker thread that enters each namespace in turn (ifindexes and names
//! are per namespace). TCX links are tried first; clsact (netlink) is the fallback or can be
//! forced. Dropping [`Attachments`] detaches everything in reverse order: TCX links by closing
//! their fds, clsact filters from inside their namespace (a netlink detach from anywhere else
//! would address the wrong ifindex). In clsact mode, filters named like ours left by a killed
//! vethtrace are swept before attaching; nothing else's qdiscs or filters are ever touched (the
//! clsact qdisc is created only when absent, and left in place).
//!
//! One worker thread attaches everything, in turn, on purpose: a TCX link create or release
//! waits for two RCU grace periods (`tcx_entry_sync`, `bpf_mprog_commit`) while holding the
//! global RTNL, so attaches from several threads only queue on the RTNL. Measured on the
//! 2-core, HZ=250 VM with 400 hooks: about 14 ms a hook from one thread and the same total
//! from four threads at once (bench figure 7), against well under 1 ms a hook with clsact.

use std::collections::HashMap;

use anyhow::{anyhow, Context, Result};
use aya::{
    programs::{
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions},
        LinkOrder, SchedClassifier, TcAttachType,
    },
    Ebpf,
};
use vethtrace_common::names;

use crate::netns::{self, NetnsPath};

/// How tc programs are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AttachMode {
    /// TCX links, falling back to clsact when the kernel has no TCX.
    #[default]
    Auto,
    /// TCX links only (Linux ≥ 6.6).
    Tcx,
    /// clsact qdisc + bpf filter via netlink.
    Clsact,
}

/// The mechanism actually used for one attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Tcx,
    Clsact,
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mechanism::Tcx => "TCX",
            Mechanism::Clsact => "clsact",
        })
    }
}

/// vethtrace's own priority for clsact filters, so it never collides with a CNI's.
pub const CLSACT_PRIORITY: u16 = 0xbeef;

/// One namespace as seen while attaching: its identity and the interfaces we attached to.
#[derive(Debug, Clone)]
pub struct AttachedNetns {
    pub path: NetnsPath,
    pub inode: u64,
    pub cookie: u64,
    /// (ifindex, name) of every interface hooked in both directions.
    pub interfaces: Vec<(u32, String)>,
}

/// Which interfaces of a namespace to hook.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only these interface names (all but `lo` when empty).
    pub ifnames: Vec<String>,
}

struct Owned {
    netns: NetnsPath,
    /// The namespace's inode and the interface's ifindex, to release the link when either
    /// is gone (hot attach).
    inode: u64,
    ifindex: u32,
    link: SchedClassifierLink,
    mechanism: Mechanism,
}

impl Owned {
    /// Lets go of a link whose interface is gone (deleted, or with its namespace). A TCX link's
    /// fd is closed: the kernel detached it with the device but the fd stays open until then.
    /// A clsact filter went with the device; it is forgotten rather than dropped, since its
    /// netlink detach would address the ifindex in whatever namespace this thread is in.
    fn release(self) {
        match self.mechanism {
            Mechanism::Tcx => drop(self.link),
            Mechanism::Clsact => std::mem::forget(self.link),
        }
    }
}

/// Everything attached. Detaches on drop, in reverse order.
pub struct Attachments {
    links: Vec<Owned>,
    pub namespaces: Vec<AttachedNetns>,
}

impl Attachments {
    /// Number of (interface, direction) hooks.
    pub fn hooks(&self) -> usize {
        self.links.len()
    }

    /// Takes over everything `other` attached (hot attach adds to the session's registry).
    pub fn absorb(&mut self, mut other: Attachments) {
        self.links.append(&mut other.links);
        self.namespaces.append(&mut other.namespaces);
    }

    /// Lets go of everything attached in the namespace `inode`, which is gone, and returns the
    /// cookies it had. Without this, every TCX link in a deleted namespace keeps its fd open
    /// for the rest of the trace (four per pod under churn).
    pub fn release_netns(&mut self, inode: u64) -> Vec<u64> {
        let (gone, kept): (Vec<Owned>, Vec<Owned>) =
            self.links.drain(..).partition(|o| o.inode == inode);
        self.links = kept;
        gone.into_iter().for_each(Owned::release);
        let cookies = self
            .namespaces
            .iter()
            .filter(|n| n.inode == inode)
            .map(|n| n.cookie)
            .collect();
        self.namespaces.retain(|n| n.inode != inode);
        cookies
    }

    /// Lets go of the links on interface `ifindex` of namespace `inode`, which is gone.
    pub fn release_link(&mut self, inode: u64, ifindex: u32) {
        let (gone, kept): (Vec<Owned>, Vec<Owned>) = self
            .links
            .drain(..)
            .partition(|o| o.inode == inode && o.ifindex == ifindex);
        self.links = kept;
        gone.into_iter().for_each(Owned::release);
        for ns in self.namespaces.iter_mut().filter(|n| n.inode == inode) {
            ns.interfaces.retain(|(i, _)| *i != ifindex);
        }
    }

    /// The mechanisms in use, for the capability line.
    pub fn mechanisms(&self) -> Vec<Mechanism> {
        let mut m: Vec<Mechanism> = self.links.iter().map(|o| o.mechanism).collect();
        m.sort_by_key(|m| *m as u8);
        m.dedup();
        m
    }
}

impl Drop for Attachments {
    fn drop(&mut self) {
        let mut by_ns: HashMap<NetnsPath, Vec<SchedClassifierLink>> = HashMap::new();
        while let Some(o) = self.links.pop() {
            match o.mechanism {
                // Closing the link fd detaches, from any namespace.
                Mechanism::Tcx => drop(o.link),
                Mechanism::Clsact => by_ns.entry(o.netns).or_default().push(o.link),
            }
        }
        for (path, links) in by_ns {
            let result = netns::run_in(&path, move || {
                drop(links);
                Ok(())
            });
            // A namespace that is gone took its filters with it. (The links were moved into
            // the closure; if entering failed they were dropped on the worker thread before
            // it entered anything, which cannot address another namespace's interfaces since
            // the netlink detach errors out on a missing ifindex/handle pair.)
            let _ = result;
        }
    }
}

/// Attaches both tc programs to the selected interfaces of every namespace in `targets`.
/// A namespace that vanished meanwhile is skipped; any other failure detaches what was done
/// and returns the error.
pub fn attach_all(
    ebpf: &mut Ebpf,
    targets: &[NetnsPath],
    selection: &Selection,
    mode: AttachMode,
) -> Result<Attachments> {
    let mut progs: HashMap<&str, &mut SchedClassifier> = HashMap::new();
    for (name, prog) in ebpf.programs_mut() {
        if name == names::TC_INGRESS_PROG || name == names::TC_EGRESS_PROG {
            progs.insert(name, prog.try_into()?);
        }
    }
    let ingress = progs
        .remove(names::TC_INGRESS_PROG)
        .ok_or_else(|| anyhow!("the eBPF object has no {}", names::TC_INGRESS_PROG))?;
    let egress = progs
        .remove(names::TC_EGRESS_PROG)
        .ok_or_else(|| anyhow!("the eBPF object has no {}", names::TC_EGRESS_PROG))?;

    let mut out = Attachments {
        links: Vec::new(),
        namespaces: Vec::new(),
    };
    let results = netns::run_in_each(targets, |path| {
        let mut links = Vec::new();
        let r = attach_here(ingress, egress, path, selection, mode, &mut links);
        // Links are returned even on error so the registry detaches them.
        Ok((r, links))
    });
    let mut first_err = None;
    for r in results {
        match r {
            Ok((Ok(ns), links)) => {
                out.links.extend(links);
                out.namespaces.push(ns);
            }
            Ok((Err(e), links)) => {
                out.links.extend(links);
                first_err.get_or_insert(e);
            }
            // The namespace vanished meanwhile: skipped. Anything else (privileges) is an error.
            Err(e) => {
                if !netns::vanished(&e) {
                    first_err.get_or_insert(e);
                }
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

fn attach_here(
    ingress: &mut SchedClassifier,
    egress: &mut SchedClassifier,
    path: &std::path::Path,
    selection: &Selection,
    mode: AttachMode,
    links: &mut Vec<Owned>,
) -> Result<AttachedNetns> {
    let mut ns = AttachedNetns {
        path: path.to_path_buf(),
        inode: netns::inode(path)?,
        cookie: netns::cookie_of_current()?,
        interfaces: Vec::new(),
    };
    let all = nix::net::if_::if_nameindex().context("list interfaces")?;
    for iface in all.iter() {
        let name = iface.name().to_string_lossy().into_owned();
        let wanted = if selection.ifnames.is_empty() {
            name != "lo"
        } else {
            selection.ifnames.contains(&name)
        };
        if !wanted {
            continue;
        }
        for (prog, dir) in [
            (&mut *ingress, TcAttachType::Ingress),
            (&mut *egress, TcAttachType::Egress),
        ] {
            let (link, mechanism) = attach_one(prog, &name, dir, mode)
                .with_context(|| format!("attach to {name} in {}", path.display()))?;
            links.push(Owned {
                netns: path.to_path_buf(),
                inode: ns.inode,
                ifindex: iface.index(),
                link,
                mechanism,
            });
        }
        ns.interfaces.push((iface.index(), name));
    }
    Ok(ns)
}

fn attach_one(
    prog: &mut SchedClassifier,
    ifname: &str,
    dir: TcAttachType,
    mode: AttachMode,
) -> Result<(SchedClassifierLink, Mechanism)> {
    if mode != AttachMode::Clsact {
        match prog.attach_with_options(ifname, dir, TcAttachOptions::TcxOrder(LinkOrder::default()))
        {
            Ok(id) => return Ok((prog.take_link(id)?, Mechanism::Tcx)),
            Err(e) if mode == AttachMode::Tcx => {
                return Err(e)
                    .context("TCX attach failed (needs Linux ≥ 6.6; try --attach-mode clsact)")
            }
            Err(_) => {}
        }
    }
    // clsact: sweep filters a previous vethtrace left behind on this hook (killed before it
    // could detach: netlink filters, unlike TCX links, outlive their process). Only filters
    // carrying our program's name go; anything else on the hook is not ours and stays.
    // (The filter carries the program's full name; the kernel's program name is cut at 15.)
    let name = match dir {
        TcAttachType::Egress => names::TC_EGRESS_PROG,
        _ => names::TC_INGRESS_PROG,
    };
    match tc::qdisc_detach_program(ifname, dir, name) {
        Ok(()) => {}
        Err(tc::TcError::IoError(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
        // No clsact qdisc yet: nothing to sweep.
        Err(tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EINVAL) => {}
        Err(e) => return Err(e).context("sweep stale vethtrace filters"),
    }
    // Create the qdisc only if absent (EEXIST means someone, maybe a CNI, has one).
    if let Err(e) = tc::qdisc_add_clsact(ifname) {
        let exists =
            matches!(&e, tc::TcError::NetlinkError(io) if io.raw_os_error() == Some(libc::EEXIST));
        if !exists {
            return Err(e).context("add clsact qdisc");
        }
    }
    let id = prog.attach_with_options(
        ifname,
        dir,
        TcAttachOptions::Netlink(NlOptions {
            priority: CLSACT_PRIORITY,
            ..NlOptions::default()
        }),
    )?;
    Ok((prog.take_link(id)?, Mechanism::Clsact))
}
