//! The attach registry: one owner for every hook in every namespace.
//!
//! Attaching happens on a worker thread that enters each namespace in turn (ifindexes and names
//! are per namespace). Three mechanisms:
//! - TCX links (tried first by `--attach-mode auto` and `tcx`), detached by closing their fds;
//! - clsact qdisc + bpf filter over netlink (the fallback, or forced), detached from inside
//!   their namespace (a netlink detach from anywhere else would address the wrong ifindex);
//!   filters named like ours left by a killed vethtrace are swept before attaching, and nothing
//!   else's qdiscs or filters are ever touched (the clsact qdisc is created only when absent,
//!   and left in place);
//! - device tracepoints: the two tp_btf programs the loader attached once for the whole machine
//!   (net:netif_receive_skb, net:net_dev_queue) record the interfaces whose (netns cookie,
//!   ifindex) key is in the `HOOKS` map, so "attaching" one is a map insert; they go with the
//!   programs' fds when the trace ends, kill -9 included. An upper device (macvlan, VLAN, bond
//!   master…, see `upper`) gets no netif_receive_skb of its own: its ingress is hooked with
//!   the tc ingress program (TCX, else clsact) and its key records only its egress.
//!
//! One worker thread attaches everything, in turn, on purpose: a TCX link create or release
//! waits for two RCU grace periods (`tcx_entry_sync`, `bpf_mprog_commit`) while holding the
//! global RTNL, so attaches from several threads only queue on the RTNL. Measured on the
//! 2-core, HZ=250 VM with 400 hooks: about 12 ms a hook from one thread and the same total
//! from four threads at once (bench figure 7), against well under 1 ms a hook with clsact.
//! That is why `auto` uses the device tracepoints for a trace that starts with more than
//! [`AUTO_TCX_MAX_HOOKS`] hooks.

use std::collections::HashMap;

use anyhow::{anyhow, Context, Result};
use aya::{
    maps::HashMap as BpfHashMap,
    programs::{
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions},
        LinkOrder, SchedClassifier, TcAttachType,
    },
    Ebpf,
};
use vethtrace_common::{names, HookKey};

use crate::{
    netns::{self, NetnsPath},
    upper,
};

/// How the programs are hooked to the interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AttachMode {
    /// TCX links (clsact when the kernel has no TCX); device tracepoints when the trace starts
    /// with more than 32 hooks (a TCX link takes RCU grace periods to attach and detach).
    #[default]
    Auto,
    /// TCX links only (Linux ≥ 6.6).
    Tcx,
    /// clsact qdisc + bpf filter via netlink.
    Clsact,
    /// tp_btf net:netif_receive_skb and net:net_dev_queue for every interface at once (upper
    /// devices' ingress: the tc ingress program).
    Tracepoints,
}

/// The most hooks `auto` attaches with TCX when a trace starts (about 0.4 s at the 12 ms a hook
/// measured here); a trace with more uses the device tracepoints, whose attach time does not
/// grow with the number of hooks.
pub const AUTO_TCX_MAX_HOOKS: usize = 32;

/// The mechanism actually used for one attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Tcx,
    Clsact,
    Tracepoints,
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mechanism::Tcx => "TCX",
            Mechanism::Clsact => "clsact",
            Mechanism::Tracepoints => "device tracepoints netif_receive_skb/net_dev_queue",
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
    /// Device tracepoints: the ifindexes among `interfaces` whose ingress is (in a survey:
    /// needs to be) hooked with the tc ingress program, upper devices that
    /// net:netif_receive_skb does not fire for. Empty with tc hooks.
    pub upper: Vec<u32>,
}

/// Which interfaces of a namespace to hook.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only these interface names (all but `lo` when empty).
    pub ifnames: Vec<String>,
}

impl Selection {
    /// Whether the interface named `name` is to be hooked.
    fn wants(&self, name: &str) -> bool {
        if self.ifnames.is_empty() {
            name != "lo"
        } else {
            self.ifnames.iter().any(|n| n == name)
        }
    }
}

/// One hooked (interface, direction).
enum Hook {
    /// A tc program attached with TCX or clsact.
    Tc(SchedClassifierLink, Mechanism),
    /// The interface's key in the `HOOKS` map (device tracepoints; one key serves both
    /// directions, held by the ingress entry, or only egress for an upper device, whose
    /// ingress is a `Tc` hook).
    Key(Option<HookKey>),
}

struct Owned {
    netns: NetnsPath,
    /// The namespace's inode and the interface's ifindex, to release the link when either
    /// is gone (hot attach).
    inode: u64,
    ifindex: u32,
    hook: Hook,
}

impl Owned {
    fn mechanism(&self) -> Mechanism {
        match self.hook {
            Hook::Tc(_, m) => m,
            Hook::Key(_) => Mechanism::Tracepoints,
        }
    }

    /// Lets go of a hook whose interface is gone (deleted, or with its namespace), returning
    /// the `HOOKS` key to delete, if any. A TCX link's fd is closed: the kernel detached it
    /// with the device but the fd stays open until then. A clsact filter went with the device;
    /// it is forgotten rather than dropped, since its netlink detach would address the ifindex
    /// in whatever namespace this thread is in.
    fn release(self) -> Option<HookKey> {
        match self.hook {
            Hook::Tc(link, Mechanism::Clsact) => {
                std::mem::forget(link);
                None
            }
            Hook::Tc(link, _) => {
                drop(link);
                None
            }
            Hook::Key(key) => key,
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

    /// How many namespaces have hooks (hot attach may add a second entry for one namespace).
    pub fn namespace_count(&self) -> usize {
        let mut inodes: Vec<u64> = self.namespaces.iter().map(|n| n.inode).collect();
        inodes.sort_unstable();
        inodes.dedup();
        inodes.len()
    }

    /// Takes over everything `other` attached (hot attach adds to the session's registry).
    pub fn absorb(&mut self, mut other: Attachments) {
        self.links.append(&mut other.links);
        self.namespaces.append(&mut other.namespaces);
    }

    /// Lets go of everything attached in the namespace `inode`, which is gone, and returns the
    /// cookies it had and the `HOOKS` keys to delete. Without this, every TCX link in a deleted
    /// namespace keeps its fd open for the rest of the trace (four per pod under churn).
    pub fn release_netns(&mut self, inode: u64) -> (Vec<u64>, Vec<HookKey>) {
        let (gone, kept): (Vec<Owned>, Vec<Owned>) =
            self.links.drain(..).partition(|o| o.inode == inode);
        self.links = kept;
        let keys = gone.into_iter().filter_map(Owned::release).collect();
        let cookies = self
            .namespaces
            .iter()
            .filter(|n| n.inode == inode)
            .map(|n| n.cookie)
            .collect();
        self.namespaces.retain(|n| n.inode != inode);
        (cookies, keys)
    }

    /// Lets go of the hooks on interface `ifindex` of namespace `inode`, which is gone, and
    /// returns the `HOOKS` keys to delete.
    pub fn release_link(&mut self, inode: u64, ifindex: u32) -> Vec<HookKey> {
        let (gone, kept): (Vec<Owned>, Vec<Owned>) = self
            .links
            .drain(..)
            .partition(|o| o.inode == inode && o.ifindex == ifindex);
        self.links = kept;
        for ns in self.namespaces.iter_mut().filter(|n| n.inode == inode) {
            ns.interfaces.retain(|(i, _)| *i != ifindex);
            ns.upper.retain(|i| *i != ifindex);
        }
        gone.into_iter().filter_map(Owned::release).collect()
    }

    /// The mechanisms in use, for the capability line.
    pub fn mechanisms(&self) -> Vec<Mechanism> {
        let mut m: Vec<Mechanism> = self.links.iter().map(Owned::mechanism).collect();
        m.sort_by_key(|m| *m as u8);
        m.dedup();
        m
    }

    /// The mechanisms of the tc hooks on upper devices' ingress (device tracepoints), and
    /// (namespace cookie, ifindex, name) of each of those devices.
    pub fn upper_ingress(&self) -> (Vec<Mechanism>, Vec<(u64, u32, String)>) {
        let mut devices = Vec::new();
        for ns in &self.namespaces {
            for (ifindex, name) in &ns.interfaces {
                if ns.upper.contains(ifindex) {
                    devices.push((ns.cookie, *ifindex, name.clone()));
                }
            }
        }
        let mut m: Vec<Mechanism> = self
            .links
            .iter()
            .filter(|o| matches!(o.hook, Hook::Tc(..)))
            .filter(|o| {
                self.namespaces
                    .iter()
                    .any(|n| n.inode == o.inode && n.upper.contains(&o.ifindex))
            })
            .map(Owned::mechanism)
            .collect();
        m.sort_by_key(|m| *m as u8);
        m.dedup();
        (m, devices)
    }
}

impl Drop for Attachments {
    fn drop(&mut self) {
        let mut by_ns: HashMap<NetnsPath, Vec<SchedClassifierLink>> = HashMap::new();
        while let Some(o) = self.links.pop() {
            match o.hook {
                // Closing the link fd detaches, from any namespace.
                Hook::Tc(link, Mechanism::Clsact) => by_ns.entry(o.netns).or_default().push(link),
                Hook::Tc(link, _) => drop(link),
                // The keys go with the HOOKS map when the programs are unloaded.
                Hook::Key(_) => {}
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

/// Hooks the selected interfaces of every namespace in `targets`: both tc programs (`auto`:
/// TCX, clsact when the kernel has no TCX), or, in `Tracepoints` mode, their keys in the
/// `HOOKS` map (the loader must have attached the device tracepoints) and the tc ingress
/// program on the upper devices among them (see [`register`]). A namespace that
/// vanished meanwhile is skipped; any other failure detaches what was done and returns the
/// error.
pub fn attach_all(
    ebpf: &mut Ebpf,
    targets: &[NetnsPath],
    selection: &Selection,
    mode: AttachMode,
) -> Result<Attachments> {
    if mode == AttachMode::Tracepoints {
        return register(ebpf, survey(targets, selection)?);
    }
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
        upper: Vec::new(),
    };
    for (ifindex, name) in selected_here(selection)? {
        for (prog, dir) in [
            (&mut *ingress, TcAttachType::Ingress),
            (&mut *egress, TcAttachType::Egress),
        ] {
            let (link, mechanism) = attach_one(prog, &name, dir, mode)
                .with_context(|| format!("attach to {name} in {}", path.display()))?;
            links.push(Owned {
                netns: path.to_path_buf(),
                inode: ns.inode,
                ifindex,
                hook: Hook::Tc(link, mechanism),
            });
        }
        ns.interfaces.push((ifindex, name));
    }
    Ok(ns)
}

/// (ifindex, name) of the interfaces of the current namespace that `selection` wants.
fn selected_here(selection: &Selection) -> Result<Vec<(u32, String)>> {
    let all = nix::net::if_::if_nameindex().context("list interfaces")?;
    Ok(all
        .iter()
        .map(|i| (i.index(), i.name().to_string_lossy().into_owned()))
        .filter(|(_, name)| selection.wants(name))
        .collect())
}

/// The selected interfaces of every namespace in `targets` (namespaces that vanished are
/// skipped) and which of them are upper devices: what attaching would hook, without attaching
/// anything.
pub fn survey(targets: &[NetnsPath], selection: &Selection) -> Result<Vec<AttachedNetns>> {
    let mut out = Vec::new();
    for r in netns::run_in_each(targets, |path| {
        // One link dump gives the names and kinds (what if_nameindex lists, from the same
        // kind of dump).
        let links = crate::topology::kinds::read_current()?;
        let interfaces: Vec<(u32, String)> = links
            .iter()
            .filter(|l| selection.wants(&l.name))
            .map(|l| (l.ifindex, l.name.clone()))
            .collect();
        // `read_current` sorts by ifindex: a namespace may hold thousands of links.
        let kind_of = |i: u32| {
            links
                .binary_search_by_key(&i, |l| l.ifindex)
                .ok()
                .and_then(|at| links[at].kind.clone())
        };
        Ok(AttachedNetns {
            path: path.to_path_buf(),
            inode: netns::inode(path)?,
            cookie: netns::cookie_of_current()?,
            upper: upper::needing_tc_ingress(&interfaces, kind_of),
            interfaces,
        })
    }) {
        match r {
            Ok(ns) => out.push(ns),
            Err(e) if netns::vanished(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The number of (interface, direction) hooks in a survey.
pub fn hook_count(survey: &[AttachedNetns]) -> usize {
    survey.iter().map(|n| 2 * n.interfaces.len()).sum()
}

/// What `mode` means for a trace that starts with the hooks of `survey`: `auto` becomes the
/// device tracepoints past [`AUTO_TCX_MAX_HOOKS`]; any other mode stays as asked.
pub fn resolve(mode: AttachMode, survey: &[AttachedNetns]) -> AttachMode {
    if mode == AttachMode::Auto && hook_count(survey) > AUTO_TCX_MAX_HOOKS {
        AttachMode::Tracepoints
    } else {
        mode
    }
}

/// Device tracepoints: inserts one `HOOKS` key per interface of a [`survey`] (the loader
/// must have attached the device tracepoints), and hooks the ingress of its upper devices with
/// the tc ingress program (TCX, else clsact; loaded now if the loader did not). A namespace
/// that vanished meanwhile is skipped; on any other failure nothing stays attached or
/// registered.
pub fn register(ebpf: &mut Ebpf, mut namespaces: Vec<AttachedNetns>) -> Result<Attachments> {
    // tc first: if it fails, no key is in the map yet (`out` detaches what was attached).
    let mut out = Attachments {
        links: Vec::new(),
        namespaces: Vec::new(),
    };
    if namespaces.iter().any(|n| !n.upper.is_empty()) {
        let ingress = tc_ingress_loaded(ebpf)?;
        let mut gone = Vec::new();
        for ns in namespaces.iter().filter(|n| !n.upper.is_empty()) {
            let r = netns::run_in(&ns.path, || {
                let mut links = Vec::new();
                let r = attach_upper_ingress(ingress, ns, &mut links);
                // Links are returned even on error so that `out` detaches them.
                Ok((r, links))
            });
            match r {
                Ok((r, links)) => {
                    out.links.extend(links);
                    r?;
                }
                Err(e) if netns::vanished(&e) => gone.push(ns.inode),
                Err(e) => return Err(e),
            }
        }
        namespaces.retain(|n| !gone.contains(&n.inode));
    }
    let mut map: BpfHashMap<_, HookKey, u8> = BpfHashMap::try_from(
        ebpf.map_mut(names::HOOKS_MAP)
            .context("the eBPF object has no HOOKS map: rebuild it")?,
    )?;
    let mut keys: Vec<Owned> = Vec::new();
    for ns in &namespaces {
        for (ifindex, name) in &ns.interfaces {
            let key = HookKey {
                netns_cookie: ns.cookie,
                ifindex: *ifindex,
                _pad: 0,
            };
            let tc_ingress = ns.upper.contains(ifindex);
            if let Err(e) = map.insert(key, upper::hook_dirs(tc_ingress), 0) {
                // Keys inserted by this call go too: nothing would ever forget them.
                for o in &keys {
                    if let Hook::Key(Some(k)) = o.hook {
                        let _ = map.remove(&k);
                    }
                }
                return Err(e).with_context(|| format!("hook {name} in {}", ns.path.display()));
            }
            // One entry per direction: the key, and the second direction's placeholder unless
            // a tc hook holds the ingress.
            let hooks = if tc_ingress {
                vec![Hook::Key(Some(key))]
            } else {
                vec![Hook::Key(Some(key)), Hook::Key(None)]
            };
            for hook in hooks {
                keys.push(Owned {
                    netns: ns.path.clone(),
                    inode: ns.inode,
                    ifindex: *ifindex,
                    hook,
                });
            }
        }
    }
    out.links.extend(keys);
    out.namespaces = namespaces;
    Ok(out)
}

/// The tc ingress program, loaded if the loader left it out (a trace with the device
/// tracepoints loads it only once it has an upper device to hook).
fn tc_ingress_loaded(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier> {
    let prog: &mut SchedClassifier = ebpf
        .program_mut(names::TC_INGRESS_PROG)
        .ok_or_else(|| anyhow!("the eBPF object has no {}", names::TC_INGRESS_PROG))?
        .try_into()?;
    if prog.fd().is_err() {
        prog.load()
            .with_context(|| format!("the kernel rejected {}", names::TC_INGRESS_PROG))?;
    }
    Ok(prog)
}

/// Hooks the ingress of the upper devices of `ns`, the namespace this thread is in.
fn attach_upper_ingress(
    ingress: &mut SchedClassifier,
    ns: &AttachedNetns,
    links: &mut Vec<Owned>,
) -> Result<()> {
    for (ifindex, name) in ns.interfaces.iter().filter(|(i, _)| ns.upper.contains(i)) {
        let (link, mechanism) = attach_one(ingress, name, TcAttachType::Ingress, AttachMode::Auto)
            .with_context(|| format!("attach to {name} in {}", ns.path.display()))?;
        links.push(Owned {
            netns: ns.path.clone(),
            inode: ns.inode,
            ifindex: *ifindex,
            hook: Hook::Tc(link, mechanism),
        });
    }
    Ok(())
}

/// Deletes device-tracepoint keys of interfaces that are gone.
pub fn unregister(ebpf: &mut Ebpf, keys: &[HookKey]) {
    if keys.is_empty() {
        return;
    }
    if let Some(Ok(mut map)) = ebpf
        .map_mut(names::HOOKS_MAP)
        .map(BpfHashMap::<_, HookKey, u8>::try_from)
    {
        for k in keys {
            let _ = map.remove(k);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn survey(interfaces_per_ns: &[usize]) -> Vec<AttachedNetns> {
        interfaces_per_ns
            .iter()
            .enumerate()
            .map(|(k, &n)| AttachedNetns {
                path: format!("/run/netns/ns{k}").into(),
                inode: k as u64,
                cookie: k as u64 + 100,
                interfaces: (0..n).map(|i| (i as u32 + 2, format!("eth{i}"))).collect(),
                upper: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn a_namespace_hot_attach_added_to_is_counted_once() {
        let mut namespaces = survey(&[2, 1]);
        // Hot attach of one more interface in the first namespace adds a second entry.
        let mut again = survey(&[1]);
        again[0].interfaces[0].0 = 9;
        namespaces.extend(again);
        let a = Attachments {
            links: Vec::new(),
            namespaces,
        };
        assert_eq!(a.namespace_count(), 2);
    }

    #[test]
    fn auto_switches_to_tracepoints_past_the_tcx_limit() {
        // 16 interfaces = 32 hooks: still TCX; one more interface tips it.
        let at_limit = survey(&[6, 10]);
        assert_eq!(hook_count(&at_limit), AUTO_TCX_MAX_HOOKS);
        assert_eq!(resolve(AttachMode::Auto, &at_limit), AttachMode::Auto);
        let past = survey(&[6, 10, 1]);
        assert_eq!(resolve(AttachMode::Auto, &past), AttachMode::Tracepoints);
        // Explicit modes are never changed.
        for m in [AttachMode::Tcx, AttachMode::Clsact, AttachMode::Tracepoints] {
            assert_eq!(resolve(m, &past), m);
            assert_eq!(resolve(m, &survey(&[1])), m);
        }
        assert_eq!(resolve(AttachMode::Auto, &[]), AttachMode::Auto);
    }
}
