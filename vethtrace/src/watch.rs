//! Hot attach: while `vethtrace trace` runs, notices links that appear, are renamed or vanish in
//! the traced namespaces and — when every namespace is traced — namespaces that appear or
//! vanish, so the tracer attaches to a new pod's veth within a second. The tracer's single-thread
//! loop calls [`Watcher::poll`] every tick and does the attaching itself.
//!
//! How:
//! - Links: one rtnetlink socket per watched namespace, subscribed to RTNLGRP_LINK. It is opened
//!   on a thread that entered the namespace (a netlink socket stays bound to the namespace it
//!   was created in) and then read, non-blocking, from the tracer's thread when epoll says it
//!   is ready (epoll, not `poll(2)`: see `Epoll`). It subscribes before dumping the links,
//!   so nothing created in between is missed. If it overflows (ENOBUFS) the namespace is
//!   dumped again and diffed.
//! - Namespaces, three ways, cheapest first:
//!   1. the mount table: `/proc/self/mountinfo` raises POLLPRI on every mount and unmount, so
//!      `ip netns add`/`del` and the bind mounts of docker, containerd/CNI and podman are seen at
//!      once; the nsfs mounts are then read from mountinfo. (Not inotify on `/run/netns`:
//!      `ip netns add` creates an empty file and then bind-mounts the namespace on it, and the
//!      mount raises no inotify event.)
//!   2. processes, every [`PROC_EVERY`]: namespaces only visible as `/proc/PID/ns/net` (a process
//!      that unshared its own). Reading a process's namespace costs several microseconds, so
//!      only new processes are read, then again at their next scan (in case they unshare just
//!      after starting), and every known process once every [`RECHECK_SCANS`] scans.
//!   3. a full [`enumerate`] at the first poll and every [`FULL_EVERY`]: the ground truth, which
//!      also forgets namespaces gone without being watched (inode numbers are reused).
//!
//!   Both periodic scans are spaced further when slow, to stay under [`PROC_BUDGET`] and
//!   [`FULL_BUDGET`] of a CPU: on a host with many thousands of processes a namespace only a
//!   process holds can take longer than a second to be noticed.
//! - A watched namespace is gone when its path no longer resolves to its inode and no other
//!   path does. Checked on mount changes (bind-mount paths), by the process scan (`/proc/PID`
//!   paths) and at each full scan (all). Our socket holds a reference on the namespace, so it is
//!   dropped at once: a deleted namespace and its veths outlive their last user by at most
//!   [`PROC_EVERY`] (or a mount-table tick).
//!
//! Owns: the sockets, the mount-table watch, the scans and the bookkeeping that turns link
//! events, dumps and scans into [`Change`]s (pure, unit-tested). Does not attach or detach
//! anything, and keeps no thread of its own: everything happens inside [`Watcher::poll`] and
//! [`Watcher::watch`].

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs::File,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use netlink_packet_core::{NetlinkBuffer, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{link::LinkMessage, AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};

use crate::{
    netns,
    topology::{
        enumerate::{enumerate, identity, nsfs_mounts},
        links::link_of,
        netlink::Rtnl,
        read::Vanished,
    },
};

/// How often (of poll time) processes are scanned for namespaces of their own.
pub const PROC_EVERY: Duration = Duration::from_millis(500);
/// How often every namespace is enumerated and every watched one checked.
pub const FULL_EVERY: Duration = Duration::from_secs(10);
/// A known process's namespace is read again once every this many process scans.
pub const RECHECK_SCANS: u32 = 10;
/// A new process's namespace is read at this many scans in a row (it may unshare just after
/// it starts).
const YOUNG_SCANS: u32 = 2;
/// The least time between two checks set off by mount-table changes (starting a container
/// mounts many things at once).
const TRIGGER_GAP: Duration = Duration::from_millis(50);
/// The share of one CPU the process scan may take: its interval grows when it is slow.
pub const PROC_BUDGET: f64 = 0.0025;
/// The share of one CPU the full scan may take.
pub const FULL_BUDGET: f64 = 0.001;
/// The loopback device, never reported.
const LOOPBACK: &str = "lo";
/// Receive buffer: a link notification is a few hundred bytes to a few kilobytes; a longer
/// datagram is detected (MSG_TRUNC) and answered with a fresh dump.
const RECV_BUF: usize = 64 * 1024;
/// Reads per socket per poll, so a flood of events cannot stall the tracer's loop.
const MAX_READS: usize = 256;

/// Something the tracer should act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A namespace not seen before (only reported when watching for new namespaces).
    NewNetns { path: PathBuf, inode: u64 },
    /// A namespace we watched is gone (its file no longer resolves to the same identity).
    GoneNetns { inode: u64 },
    /// A link appeared (RTM_NEWLINK for an ifindex not seen before in that namespace), or was
    /// renamed. A link that came and went quickly can be followed by its `GoneLink` in the same
    /// batch, so attaching to it may fail with ENODEV: treat that as gone.
    NewLink {
        netns_inode: u64,
        ifindex: u32,
        name: String,
    },
    /// A link was deleted (or moved to another namespace).
    GoneLink { netns_inode: u64, ifindex: u32 },
}

/// What one rtnetlink link message says, reduced to what the watcher needs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LinkEvent {
    New { ifindex: u32, name: String },
    Gone { ifindex: u32 },
}

/// The links known in one namespace: ifindex → name. The name is empty until learnt, for links
/// the caller attached to before watching started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Known(HashMap<u32, String>);

impl Known {
    fn attached(ifindexes: &[u32]) -> Self {
        Self(ifindexes.iter().map(|&i| (i, String::new())).collect())
    }

    /// Applies one event; returns the change to report, if any.
    fn apply(&mut self, netns_inode: u64, ev: LinkEvent) -> Option<Change> {
        match ev {
            LinkEvent::New { ifindex, name } if name == LOOPBACK => {
                // Never reported; its name is learnt only if the caller attached to it.
                if let Some(n) = self.0.get_mut(&ifindex) {
                    *n = name;
                }
                None
            }
            LinkEvent::New { ifindex, name } => {
                let old = self.0.insert(ifindex, name.clone());
                match old {
                    // First sight, or a rename.
                    None => Some(Change::NewLink {
                        netns_inode,
                        ifindex,
                        name,
                    }),
                    Some(old) if !old.is_empty() && old != name => Some(Change::NewLink {
                        netns_inode,
                        ifindex,
                        name,
                    }),
                    // Attached before, name now learnt; or a state change.
                    Some(_) => None,
                }
            }
            LinkEvent::Gone { ifindex } => self.0.remove(&ifindex).map(|_| Change::GoneLink {
                netns_inode,
                ifindex,
            }),
        }
    }

    /// Brings the set in line with a full dump `(ifindex, name)` of the namespace (loopback
    /// included or not): new and renamed links, then those gone, by ifindex.
    fn resync(&mut self, netns_inode: u64, dump: &[(u32, String)]) -> Vec<Change> {
        let mut out: Vec<Change> = dump
            .iter()
            .filter_map(|(ifindex, name)| {
                self.apply(
                    netns_inode,
                    LinkEvent::New {
                        ifindex: *ifindex,
                        name: name.clone(),
                    },
                )
            })
            .collect();
        let present: HashSet<u32> = dump.iter().map(|(i, _)| *i).collect();
        let mut gone: Vec<u32> = self
            .0
            .keys()
            .copied()
            .filter(|i| !present.contains(i))
            .collect();
        gone.sort_unstable();
        for ifindex in gone {
            out.extend(self.apply(netns_inode, LinkEvent::Gone { ifindex }));
        }
        out
    }

    /// Known links with their names, loopback excepted, by ifindex.
    fn links(&self) -> Vec<(u32, String)> {
        let mut v: Vec<(u32, String)> = self
            .0
            .iter()
            .filter(|(_, n)| n.as_str() != LOOPBACK)
            .map(|(i, n)| (*i, n.clone()))
            .collect();
        v.sort_unstable();
        v
    }
}

/// The link event in one rtnetlink message, if it is one. Only AF_UNSPEC messages describe the
/// device itself: the bridge sends AF_BRIDGE RTM_NEWLINK/RTM_DELLINK to the same group when a
/// port joins or leaves it, which is no creation or deletion.
fn event_of(msg: &RouteNetlinkMessage) -> Option<LinkEvent> {
    let device = |m: &LinkMessage| m.header.interface_family == AddressFamily::Unspec;
    match msg {
        RouteNetlinkMessage::NewLink(m) if device(m) => {
            let raw = link_of(m);
            Some(LinkEvent::New {
                ifindex: raw.iface.ifindex,
                name: raw.iface.name,
            })
        }
        RouteNetlinkMessage::DelLink(m) if device(m) => Some(LinkEvent::Gone {
            ifindex: m.header.index,
        }),
        _ => None,
    }
}

/// The link events in one datagram read from a subscribed socket. Frames this version of
/// netlink-packet-route cannot parse, and anything else, are skipped.
fn events_in(datagram: &[u8]) -> Vec<LinkEvent> {
    let mut out = Vec::new();
    let mut offset = 0;
    while let Some(rest) = datagram.get(offset..) {
        let Ok(frame) = NetlinkBuffer::new_checked(rest) else {
            break;
        };
        let len = frame.length() as usize;
        if let Some(ev) = rest
            .get(..len)
            .and_then(|f| NetlinkMessage::<RouteNetlinkMessage>::deserialize(f).ok())
            .and_then(|m| match m.payload {
                NetlinkPayload::InnerMessage(inner) => event_of(&inner),
                _ => None,
            })
        {
            out.push(ev);
        }
        offset += (len + 3) & !3;
    }
    out
}

/// The namespaces in a scan that are neither watched nor already reported, as `NewNetns`.
/// `reported` maps inode → the path it was reported with; an inode found again at another path
/// is the same namespace while that path still `resolves` to it, else a new namespace that got
/// the number of a gone one (the kernel hands out the lowest free one). A `complete` scan also
/// forgets what is no longer present.
fn new_namespaces(
    reported: &mut HashMap<u64, PathBuf>,
    watched: &HashSet<u64>,
    found: &[(PathBuf, u64)],
    complete: bool,
    resolves: impl Fn(&Path, u64) -> bool,
) -> Vec<Change> {
    if complete {
        let present: HashSet<u64> = found.iter().map(|(_, i)| *i).collect();
        reported.retain(|i, _| present.contains(i) || watched.contains(i));
    }
    let mut out = Vec::new();
    for (path, inode) in found {
        if watched.contains(inode) {
            continue;
        }
        if let Some(p) = reported.get(inode) {
            if p == path || resolves(p, *inode) {
                continue;
            }
        }
        reported.insert(*inode, path.clone());
        out.push(Change::NewNetns {
            path: path.clone(),
            inode: *inode,
        });
    }
    out
}

/// The pid in a `/proc/PID/ns/net` path.
fn pid_of(path: &Path) -> Option<u32> {
    let rest = path.strip_prefix("/proc").ok()?;
    let mut parts = rest.components();
    let pid = parts.next()?.as_os_str().to_str()?.parse().ok()?;
    (parts.as_path() == Path::new("ns/net")).then_some(pid)
}

/// The inode in a namespace link's target, `net:[4026531840]`.
fn parse_ns_link(target: &str) -> Option<u64> {
    target
        .strip_prefix("net:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The network namespace inode of a process (readlink is cheaper than stat here: it does not
/// open the namespace).
fn netns_of_pid(pid: u32) -> Option<u64> {
    let target = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    parse_ns_link(target.to_str()?)
}

/// Numeric entries of /proc.
fn list_pids() -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect()
}

/// The namespaces of processes, remembered per pid so a scan reads only a few of them.
#[derive(Debug, Default)]
struct Procs {
    /// pid → (namespace inode, scans since first read).
    seen: BTreeMap<u32, (u64, u32)>,
    scans: u32,
}

impl Procs {
    /// Whether a process first read `age` scans ago is read again at scan `round`: while
    /// young, then once every [`RECHECK_SCANS`] scans (spread over pids).
    fn due(pid: u32, age: u32, round: u32) -> bool {
        age < YOUNG_SCANS || pid.wrapping_add(round).is_multiple_of(RECHECK_SCANS)
    }

    /// Updates from a listing of /proc, reading namespaces with `read` (None: the process is
    /// gone or unreadable, a zombie; remembered as inode 0 so it is not read every scan).
    fn update(&mut self, pids: &[u32], mut read: impl FnMut(u32) -> Option<u64>) {
        let listed: HashSet<u32> = pids.iter().copied().collect();
        self.seen.retain(|pid, _| listed.contains(pid));
        let round = self.scans;
        for &pid in pids {
            let entry = self.seen.entry(pid).or_insert((0, 0));
            let (inode, age) = entry;
            if *age == 0 || Self::due(pid, *age, round) {
                *inode = read(pid).unwrap_or(0);
            }
            *age = age.saturating_add(1);
        }
        self.scans = self.scans.wrapping_add(1);
    }

    /// Takes the namespaces of processes an [`enumerate`] read anyway: known pids get the fresh
    /// inode, new ones count as read once (and are read once more while young).
    fn learn(&mut self, pids: impl IntoIterator<Item = (u32, u64)>) {
        for (pid, inode) in pids {
            let (known, age) = self.seen.entry(pid).or_insert((0, 0));
            *known = inode;
            *age = (*age).max(1);
        }
    }

    /// Each namespace seen, once, with the path of its lowest pid.
    fn namespaces(&self) -> Vec<(PathBuf, u64)> {
        let mut seen = HashSet::new();
        self.seen
            .iter()
            .filter(|(_, (inode, _))| *inode != 0 && seen.insert(*inode))
            .map(|(pid, (inode, _))| (PathBuf::from(format!("/proc/{pid}/ns/net")), *inode))
            .collect()
    }
}

/// Network namespaces bind-mounted anywhere, as `(path, inode)`, from a mountinfo text alone:
/// the root of an nsfs mount is `net:[INODE]`, so nothing needs to be stat'ed.
fn mounted_namespaces(mountinfo: &str) -> Vec<(PathBuf, u64)> {
    mountinfo
        .lines()
        // A cheap test first: most mounts are no namespaces.
        .filter(|line| line.contains(" nsfs "))
        .filter_map(|line| {
            // enumerate's parser decides what is a namespace mount and unescapes its path.
            let path = nsfs_mounts(line).pop()?;
            let inode = parse_ns_link(line.split(' ').nth(3)?)?;
            Some((path, inode))
        })
        .collect()
}

/// The interval after a scan that took `cost`: `min`, or more to stay within `budget` (a share
/// of one CPU).
fn spaced(min: Duration, cost: Duration, budget: f64) -> Duration {
    min.max(cost.div_f64(budget))
}

/// Whether an error means the namespace is gone: its file vanished (ENOENT, ESRCH), is no
/// longer a namespace (EINVAL from setns on the empty file a removed mount leaves), or now
/// holds another one ([`Vanished`]).
fn vanished(e: &anyhow::Error) -> bool {
    const GONE: [i32; 3] = [libc::ENOENT, libc::ESRCH, libc::EINVAL];
    e.chain().any(|c| {
        c.is::<Vanished>()
            || c.downcast_ref::<io::Error>()
                .and_then(io::Error::raw_os_error)
                .is_some_and(|n| GONE.contains(&n))
            || c.downcast_ref::<nix::errno::Errno>()
                .is_some_and(|n| GONE.contains(&(*n as i32)))
    })
}

/// A subscribed socket and the links present, opened by a thread inside the namespace.
struct Opened {
    socket: Socket,
    links: Vec<(u32, String)>,
}

/// Fails with [`Vanished`] unless the calling thread is in the namespace `inode`.
fn check_current(inode: u64) -> Result<()> {
    if netns::inode(Path::new("/proc/thread-self/ns/net")).ok() != Some(inode) {
        return Err(Vanished.into());
    }
    Ok(())
}

/// Every link of the calling thread's namespace, as `(ifindex, name)`.
fn dump_here() -> Result<Vec<(u32, String)>> {
    let mut rtnl = Rtnl::open()?;
    let msgs = rtnl
        .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
        .context("dump links (RTM_GETLINK)")?;
    Ok(msgs
        .iter()
        .filter_map(event_of)
        .filter_map(|e| match e {
            LinkEvent::New { ifindex, name } => Some((ifindex, name)),
            LinkEvent::Gone { .. } => None,
        })
        .collect())
}

/// Subscribes to link events in the calling thread's namespace (which must be `inode`), then
/// dumps its links: subscribing first leaves no gap.
fn open_here(inode: u64) -> Result<Opened> {
    check_current(inode)?;
    let mut socket = Socket::new(NETLINK_ROUTE).context("open rtnetlink socket")?;
    socket.bind_auto().context("bind rtnetlink socket")?;
    socket
        .add_membership(libc::RTNLGRP_LINK)
        .context("subscribe to link events (RTNLGRP_LINK)")?;
    let links = dump_here()?;
    socket
        .set_non_blocking(true)
        .context("make the rtnetlink socket non-blocking")?;
    Ok(Opened { socket, links })
}

/// One watched namespace.
struct Watched {
    path: PathBuf,
    inode: u64,
    socket: Socket,
    known: Known,
}

/// What reading one socket found.
#[derive(Default)]
struct Drained {
    changes: Vec<Change>,
    /// Events were lost (ENOBUFS): dump again.
    overflowed: bool,
    /// The socket failed: stop watching.
    dead: bool,
}

impl Watched {
    /// Reads every queued datagram (up to [`MAX_READS`]).
    fn drain(&mut self, buf: &mut [u8]) -> Drained {
        let mut out = Drained::default();
        for _ in 0..MAX_READS {
            match self.socket.recv(&mut &mut buf[..], libc::MSG_TRUNC) {
                Ok(n) => {
                    // With MSG_TRUNC, `n` is the datagram's length even when it did not fit:
                    // what was cut off is lost, so dump again.
                    if n > buf.len() {
                        out.overflowed = true;
                    }
                    let data = buf.get(..n.min(buf.len())).unwrap_or_default();
                    for ev in events_in(data) {
                        out.changes.extend(self.known.apply(self.inode, ev));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => out.overflowed = true,
                Err(_) => {
                    out.dead = true;
                    break;
                }
            }
        }
        out
    }

    /// Dumps the namespace again and diffs it against what is known.
    fn resync(&mut self) -> Result<Vec<Change>> {
        let inode = self.inode;
        let dump = netns::run_in(&self.path, || {
            check_current(inode)?;
            dump_here()
        })?;
        Ok(self.known.resync(inode, &dump))
    }
}

/// The epoll token of the mount table (namespace inodes are far below it).
const MOUNTS_TOKEN: u64 = u64::MAX;
/// Ready descriptors taken per poll; any others are taken at the next.
const MAX_EVENTS: usize = 64;
const EPOLLIN: u32 = libc::EPOLLIN as u32;
const EPOLLPRI: u32 = libc::EPOLLPRI as u32;
const EPOLLHUP: u32 = libc::EPOLLHUP as u32;

/// An epoll instance with every socket and the mount table registered once, so that an idle
/// poll is one `epoll_wait` that looks at the ready list only. (One `poll(2)` over all sockets
/// looks at every socket each tick: measured here at 30 µs a tick with 20 namespaces once the
/// caches are cold, growing with each namespace.)
struct Epoll(OwnedFd);

impl Epoll {
    fn new() -> Result<Self> {
        // SAFETY: plain epoll_create1(2); the descriptor is checked and then owned.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error()).context("epoll_create1");
        }
        // SAFETY: `fd` is a fresh, valid descriptor nothing else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Registers `fd` (level-triggered) for `events`, reported with `token`.
    fn add(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: both descriptors are open; `ev` is valid for reads for the call.
        let rc = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Unregisters `fd` (closing it would too; this keeps the set exact meanwhile).
    fn delete(&self, fd: RawFd) {
        // SAFETY: a null event is allowed for EPOLL_CTL_DEL; a failure leaves nothing to undo.
        unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            );
        }
    }

    /// Fills `events` with the ready descriptors without waiting; returns how many.
    fn ready(&self, events: &mut [libc::epoll_event]) -> usize {
        let max = libc::c_int::try_from(events.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `events` is valid for writes of `max` entries; timeout 0 never blocks.
        let n = unsafe { libc::epoll_wait(self.0.as_raw_fd(), events.as_mut_ptr(), max, 0) };
        // An error (EINTR) is as good as nothing ready: the next tick asks again.
        usize::try_from(n).unwrap_or(0)
    }
}

/// Watches links in the traced namespaces and, optionally, for new namespaces.
pub struct Watcher {
    watched: Vec<Watched>,
    /// Every socket (token: the namespace's inode) and the mount table ([`MOUNTS_TOKEN`]).
    epoll: Epoll,
    events: Vec<libc::epoll_event>,
    /// `/proc/self/mountinfo`, held open while registered with epoll for EPOLLPRI (the mount
    /// table changed).
    _mounts: Option<File>,
    /// A mount change not yet followed by a check.
    mounts_changed: bool,
    last_mount_check: Option<Instant>,
    procs: Procs,
    proc_every: Duration,
    last_proc_scan: Option<Instant>,
    full_every: Duration,
    last_full: Option<Instant>,
    /// When discovering: inode → path of the namespaces reported (or given, or watched).
    reported: Option<HashMap<u64, PathBuf>>,
    /// Changes found outside `poll` (at start), handed out by the next `poll`.
    pending: Vec<Change>,
    buf: Vec<u8>,
}

impl Watcher {
    /// `namespaces`: (path, inode) of the traced namespaces, each with the ifindexes already
    /// attached. `discover_new`: also report namespaces that appear later — including any that
    /// appeared since the caller's own discovery: the first poll reports every namespace
    /// [`enumerate`] lists that is not given here.
    ///
    /// Links created since the caller attached, and attached links since deleted, come out of
    /// the first [`poll`](Self::poll), as do `GoneNetns` for namespaces that already vanished.
    /// Fails only when a namespace cannot be entered for another reason (privileges).
    pub fn new(namespaces: &[(PathBuf, u64, Vec<u32>)], discover_new: bool) -> Result<Watcher> {
        let now = Instant::now();
        let epoll = Epoll::new()?;
        // Without it the periodic scans still notice everything, only later.
        let mounts = File::open("/proc/self/mountinfo")
            .ok()
            .filter(|m| epoll.add(m.as_raw_fd(), EPOLLPRI, MOUNTS_TOKEN).is_ok());
        let mut w = Watcher {
            watched: Vec::new(),
            epoll,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS],
            _mounts: mounts,
            mounts_changed: false,
            last_mount_check: None,
            procs: Procs::default(),
            proc_every: PROC_EVERY,
            last_proc_scan: None,
            full_every: FULL_EVERY,
            // Discovering starts with a full scan; otherwise the first full check is due later.
            last_full: (!discover_new).then_some(now),
            reported: discover_new
                .then(|| namespaces.iter().map(|(p, i, _)| (*i, p.clone())).collect()),
            pending: Vec::new(),
            buf: vec![0; RECV_BUF],
        };
        let mut unique: Vec<&(PathBuf, u64, Vec<u32>)> = Vec::new();
        for ns in namespaces {
            if !unique.iter().any(|u| u.1 == ns.1) {
                unique.push(ns);
            }
        }
        let paths: Vec<PathBuf> = unique.iter().map(|(p, _, _)| p.clone()).collect();
        let inodes: HashMap<&Path, u64> =
            unique.iter().map(|(p, i, _)| (p.as_path(), *i)).collect();
        let opened = netns::run_in_each(&paths, |p| {
            let inode = inodes.get(p).copied().ok_or(Vanished)?;
            open_here(inode)
        });
        if opened.len() != unique.len() {
            anyhow::bail!("the thread opening link watches panicked");
        }
        for ((path, inode, attached), r) in unique.into_iter().zip(opened) {
            match r {
                Ok(o) => {
                    w.epoll
                        .add(o.socket.as_raw_fd(), EPOLLIN, *inode)
                        .context("register a link watch with epoll")?;
                    let mut known = Known::attached(attached);
                    w.pending.extend(known.resync(*inode, &o.links));
                    w.watched.push(Watched {
                        path: path.clone(),
                        inode: *inode,
                        socket: o.socket,
                        known,
                    });
                }
                Err(e) if vanished(&e) => {
                    if let Some(r) = &mut w.reported {
                        r.remove(inode);
                    }
                    w.pending.push(Change::GoneNetns { inode: *inode });
                }
                Err(e) => return Err(e.context(format!("watch links in {}", path.display()))),
            }
        }
        Ok(w)
    }

    /// Starts watching links in one more namespace (after the caller attached to it), returning
    /// the links present right now, loopback excepted (so nothing created between discovery and
    /// the subscription is missed). Watching a namespace already watched returns its known links.
    /// Fails when the namespace cannot be entered or is no longer `inode`; the caller treats that
    /// as gone.
    pub fn watch(&mut self, path: &Path, inode: u64) -> Result<Vec<(u32, String)>> {
        if let Some(w) = self.watched.iter().find(|w| w.inode == inode) {
            return Ok(w.known.links());
        }
        let o = netns::run_in(path, || open_here(inode))
            .with_context(|| format!("watch links in {}", path.display()))?;
        self.epoll
            .add(o.socket.as_raw_fd(), EPOLLIN, inode)
            .context("register a link watch with epoll")?;
        let mut known = Known::default();
        // Every link is new to an empty set: the changes are the return value.
        known.resync(inode, &o.links);
        let links = known.links();
        self.watched.push(Watched {
            path: path.to_path_buf(),
            inode,
            socket: o.socket,
            known,
        });
        if let Some(r) = &mut self.reported {
            r.insert(inode, path.to_path_buf());
        }
        Ok(links)
    }

    /// Everything that changed since the last call. Never blocks; cheap when nothing changed
    /// (one `epoll_wait`, and a scan now and then). Vanished links and namespaces are reported,
    /// never errors.
    pub fn poll(&mut self) -> Vec<Change> {
        let mut out = std::mem::take(&mut self.pending);
        self.read_sockets(&mut out);
        let now = Instant::now();
        let since = |last: Option<Instant>| last.map_or(Duration::MAX, |l| now.duration_since(l));
        if since(self.last_full) >= self.full_every {
            self.full_scan(now, &mut out);
            // A full scan covers the others.
            self.mounts_changed = false;
            self.last_proc_scan = Some(now);
            return out;
        }
        if self.mounts_changed && since(self.last_mount_check) >= TRIGGER_GAP {
            self.mount_check(now, &mut out);
        }
        if since(self.last_proc_scan) >= self.proc_every {
            self.proc_scan(now, &mut out);
        }
        out
    }

    /// The number of namespaces watched.
    pub fn watched(&self) -> usize {
        self.watched.len()
    }

    /// Asks epoll which sockets (and whether the mount table) changed, reads those sockets,
    /// and drops the namespaces whose socket failed.
    fn read_sockets(&mut self, out: &mut Vec<Change>) {
        let ready = self.epoll.ready(&mut self.events);
        let mut gone = Vec::new();
        for ev in self.events.iter().take(ready) {
            // Copied out: the struct is packed on some architectures.
            let (token, flags) = (ev.u64, ev.events);
            if token == MOUNTS_TOKEN {
                self.mounts_changed = true;
                continue;
            }
            let Some(i) = self.watched.iter().position(|w| w.inode == token) else {
                continue;
            };
            let Some(w) = self.watched.get_mut(i) else {
                continue;
            };
            if flags & EPOLLHUP != 0 {
                gone.push(i);
                continue;
            }
            let d = w.drain(&mut self.buf);
            out.extend(d.changes);
            if d.dead {
                gone.push(i);
            } else if d.overflowed {
                match w.resync() {
                    Ok(changes) => out.extend(changes),
                    Err(_) => gone.push(i),
                }
            }
        }
        self.drop_watched(gone, out);
    }

    /// Every namespace enumerated: all watched ones checked, new ones reported, gone ones
    /// forgotten. Without discovery, only the watched ones are checked (and enumerated only
    /// when one moved or vanished).
    fn full_scan(&mut self, now: Instant, out: &mut Vec<Change>) {
        let started = Instant::now();
        let lost = self.lost(|_| true);
        let found = self.reported.is_some().then(|| {
            let all = enumerate();
            self.procs.learn(
                all.iter()
                    .flat_map(|f| f.pids.iter().map(move |pid| (*pid, f.inode))),
            );
            all.into_iter()
                .map(|f| (f.path(), f.inode))
                .collect::<Vec<_>>()
        });
        self.settle(lost, found.as_deref(), out);
        if let Some(found) = found {
            self.report(&found, true, out);
        }
        self.last_full = Some(now);
        self.full_every = spaced(FULL_EVERY, started.elapsed(), FULL_BUDGET);
    }

    /// After a mount-table change: watched namespaces not known by a process are checked
    /// against the nsfs mounts (a stat only for paths that are no mount point, like
    /// `/proc/self/ns/net`), and new bind-mounted ones reported.
    fn mount_check(&mut self, now: Instant, out: &mut Vec<Change>) {
        self.mounts_changed = false;
        self.last_mount_check = Some(now);
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let found = mounted_namespaces(&text);
        let mounted: HashMap<&Path, u64> = found.iter().map(|(p, i)| (p.as_path(), *i)).collect();
        let lost: Vec<usize> = self
            .watched
            .iter()
            .enumerate()
            .filter(|(_, w)| {
                pid_of(&w.path).is_none()
                    && match mounted.get(w.path.as_path()) {
                        Some(inode) => *inode != w.inode,
                        None => !resolves(&w.path, w.inode),
                    }
            })
            .map(|(i, _)| i)
            .collect();
        self.settle(lost, None, out);
        if self.reported.is_some() {
            self.report(&found, false, out);
        }
    }

    /// Every [`PROC_EVERY`]: watched namespaces known by a process are checked and, when
    /// discovering, processes are scanned for namespaces of their own.
    fn proc_scan(&mut self, now: Instant, out: &mut Vec<Change>) {
        let started = Instant::now();
        self.last_proc_scan = Some(now);
        let lost = self.lost(|p| pid_of(p).is_some());
        self.settle(lost, None, out);
        if self.reported.is_some() {
            self.procs.update(&list_pids(), netns_of_pid);
            let found = self.procs.namespaces();
            self.report(&found, false, out);
        }
        self.proc_every = spaced(PROC_EVERY, started.elapsed(), PROC_BUDGET);
    }

    /// Indexes of the watched namespaces, among those whose path passes `which`, whose path no
    /// longer resolves to their inode.
    fn lost(&self, which: impl Fn(&Path) -> bool) -> Vec<usize> {
        self.watched
            .iter()
            .enumerate()
            .filter(|(_, w)| which(&w.path) && !resolves(&w.path, w.inode))
            .map(|(i, _)| i)
            .collect()
    }

    /// Moves each lost namespace to another path of it, from `found` (enumerated now when not
    /// given), or drops it as gone.
    fn settle(
        &mut self,
        lost: Vec<usize>,
        found: Option<&[(PathBuf, u64)]>,
        out: &mut Vec<Change>,
    ) {
        if lost.is_empty() {
            return;
        }
        let fresh;
        let found = match found {
            Some(f) => f,
            None => {
                fresh = all_namespaces();
                &fresh
            }
        };
        let mut gone = Vec::new();
        for i in lost {
            let Some(w) = self.watched.get_mut(i) else {
                continue;
            };
            match found.iter().find(|(_, inode)| *inode == w.inode) {
                Some((path, _)) => w.path = path.clone(),
                None => gone.push(i),
            }
        }
        self.drop_watched(gone, out);
    }

    /// Reports the namespaces in a scan that are new.
    fn report(&mut self, found: &[(PathBuf, u64)], complete: bool, out: &mut Vec<Change>) {
        let watched: HashSet<u64> = self.watched.iter().map(|w| w.inode).collect();
        if let Some(r) = &mut self.reported {
            out.extend(new_namespaces(r, &watched, found, complete, resolves));
        }
    }

    /// Stops watching the namespaces at `indexes` and reports them gone; their inode numbers
    /// may now be handed to new namespaces.
    fn drop_watched(&mut self, mut indexes: Vec<usize>, out: &mut Vec<Change>) {
        if indexes.is_empty() {
            return;
        }
        indexes.sort_unstable();
        indexes.dedup();
        for i in indexes.into_iter().rev() {
            let w = self.watched.remove(i);
            self.epoll.delete(w.socket.as_raw_fd());
            if let Some(r) = &mut self.reported {
                r.remove(&w.inode);
            }
            out.push(Change::GoneNetns { inode: w.inode });
        }
    }
}

/// Whether `path` is the namespace `inode`.
fn resolves(path: &Path, inode: u64) -> bool {
    identity(path).is_some_and(|(_, i)| i == inode)
}

/// Every namespace, as `(path, inode)`, bind mounts preferred.
fn all_namespaces() -> Vec<(PathBuf, u64)> {
    enumerate()
        .into_iter()
        .map(|f| (f.path(), f.inode))
        .collect()
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::NetlinkHeader;
    use netlink_packet_route::link::{LinkAttribute, LinkFlags};

    use super::*;

    fn new(ifindex: u32, name: &str) -> LinkEvent {
        LinkEvent::New {
            ifindex,
            name: name.into(),
        }
    }

    fn new_link(ifindex: u32, name: &str) -> Change {
        Change::NewLink {
            netns_inode: 7,
            ifindex,
            name: name.into(),
        }
    }

    fn gone_link(ifindex: u32) -> Change {
        Change::GoneLink {
            netns_inode: 7,
            ifindex,
        }
    }

    #[test]
    fn new_links_renames_and_deletions() {
        let mut k = Known::attached(&[2]);
        assert_eq!(k.apply(7, new(2, "eth0")), None, "attached: name learnt");
        assert_eq!(k.apply(7, new(2, "eth0")), None, "state change");
        assert_eq!(k.apply(7, new(5, "vA")), Some(new_link(5, "vA")));
        assert_eq!(k.apply(7, new(5, "vA")), None);
        assert_eq!(k.apply(7, new(5, "vX")), Some(new_link(5, "vX")), "rename");
        assert_eq!(k.apply(7, new(1, "lo")), None, "loopback ignored");
        assert_eq!(
            k.apply(7, LinkEvent::Gone { ifindex: 5 }),
            Some(gone_link(5))
        );
        assert_eq!(k.apply(7, LinkEvent::Gone { ifindex: 5 }), None, "once");
        assert_eq!(
            k.apply(7, LinkEvent::Gone { ifindex: 9 }),
            None,
            "never known"
        );
        assert_eq!(k.links(), vec![(2, "eth0".to_string())]);
    }

    #[test]
    fn a_dump_reports_what_changed_since_attaching() {
        // Attached to 1 (lo, by mistake), 2 and 3; now 3 is gone, 4 appeared and 2 is known.
        let mut k = Known::attached(&[1, 2, 3]);
        let dump = vec![
            (1, "lo".to_string()),
            (2, "eth0".to_string()),
            (4, "veth1".to_string()),
        ];
        assert_eq!(k.resync(7, &dump), vec![new_link(4, "veth1"), gone_link(3)]);
        assert_eq!(k.resync(7, &dump), vec![], "nothing changed");
        let later = vec![(1, "lo".to_string()), (2, "wan0".to_string())];
        assert_eq!(k.resync(7, &later), vec![new_link(2, "wan0"), gone_link(4)]);
        assert_eq!(k.links(), vec![(2, "wan0".to_string())]);
    }

    fn frame(msg: RouteNetlinkMessage) -> Vec<u8> {
        let mut m = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
        m.finalize();
        let mut b = vec![0; m.buffer_len()];
        m.serialize(&mut b);
        // Frames in a datagram start 4-aligned.
        b.resize((b.len() + 3) & !3, 0);
        b
    }

    fn link(index: u32, name: &str, family: AddressFamily) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.interface_family = family;
        m.header.flags = LinkFlags::Up;
        m.attributes = vec![LinkAttribute::IfName(name.into())];
        m
    }

    #[test]
    fn datagrams_are_split_and_bridge_port_messages_ignored() {
        let mut d = frame(RouteNetlinkMessage::NewLink(link(
            4,
            "vA",
            AddressFamily::Unspec,
        )));
        d.extend(frame(RouteNetlinkMessage::DelLink(link(
            5,
            "vB",
            AddressFamily::Bridge,
        ))));
        d.extend(frame(RouteNetlinkMessage::DelLink(link(
            6,
            "vC",
            AddressFamily::Unspec,
        ))));
        assert_eq!(
            events_in(&d),
            vec![new(4, "vA"), LinkEvent::Gone { ifindex: 6 }]
        );
        // A truncated tail is dropped, not misread.
        let cut = d.len() - 8;
        assert_eq!(events_in(&d[..cut]), vec![new(4, "vA")]);
        assert_eq!(events_in(&[]), vec![]);
        assert_eq!(events_in(&[0xff; 3]), vec![]);
    }

    #[test]
    fn namespaces_are_reported_once_and_forgotten_when_gone() {
        let p = |s: &str| PathBuf::from(s);
        let gone = |_: &Path, _: u64| false;
        let mut reported: HashMap<u64, PathBuf> = [(10, p("/run/netns/a"))].into();
        let mut watched: HashSet<u64> = [10, 11].into();
        let scan = vec![
            (p("/run/netns/a"), 10),
            (p("/run/netns/b"), 11),
            (p("/proc/9/ns/net"), 12),
        ];
        let new12 = |path: &str| Change::NewNetns {
            path: p(path),
            inode: 12,
        };
        assert_eq!(
            new_namespaces(&mut reported, &watched, &scan, true, gone),
            vec![new12("/proc/9/ns/net")]
        );
        assert_eq!(
            new_namespaces(&mut reported, &watched, &scan, true, gone),
            vec![]
        );
        // Seen again through another path that still resolves: the same namespace.
        let other = vec![(p("/proc/9/ns/net"), 12), (p("/run/netns/c"), 12)];
        let still = |path: &Path, i: u64| path == Path::new("/proc/9/ns/net") && i == 12;
        assert_eq!(
            new_namespaces(&mut reported, &watched, &other, false, still),
            vec![]
        );
        // A partial scan forgets nothing.
        let partial = vec![(p("/run/netns/a"), 10)];
        assert_eq!(
            new_namespaces(&mut reported, &watched, &partial, false, gone),
            vec![]
        );
        assert_eq!(
            new_namespaces(&mut reported, &watched, &scan, true, gone),
            vec![]
        );
        // The process exits and its inode number goes to a new namespace at another path.
        let reused = vec![(p("/run/netns/a"), 10), (p("/run/netns/c"), 12)];
        assert_eq!(
            new_namespaces(&mut reported, &watched, &reused, false, gone),
            vec![new12("/run/netns/c")]
        );
        // A complete scan forgets what is gone unless watched.
        watched.remove(&11);
        let without = vec![(p("/run/netns/a"), 10)];
        assert_eq!(
            new_namespaces(&mut reported, &watched, &without, true, gone),
            vec![]
        );
        assert_eq!(reported.keys().copied().collect::<Vec<_>>(), vec![10]);
        let back = vec![(p("/run/netns/c"), 12)];
        assert_eq!(
            new_namespaces(&mut reported, &watched, &back, true, gone),
            vec![new12("/run/netns/c")]
        );
    }

    #[test]
    fn processes_are_read_when_new_young_or_due() {
        let mut procs = Procs::default();
        let mut reads = Vec::new();
        let scan = |procs: &mut Procs, pids: &[u32], reads: &mut Vec<u32>| {
            reads.clear();
            procs.update(pids, |pid| {
                reads.push(pid);
                // 7 is a zombie; 20 unshared (its own namespace), others are in 1.
                match pid {
                    7 => None,
                    20 => Some(99),
                    _ => Some(1),
                }
            });
            reads.sort_unstable();
        };
        let all: Vec<u32> = (1..=12).collect();
        scan(&mut procs, &all, &mut reads);
        assert_eq!(reads, all, "every process is new");
        assert_eq!(
            procs.namespaces(),
            vec![(PathBuf::from("/proc/1/ns/net"), 1)]
        );
        scan(&mut procs, &all, &mut reads);
        assert_eq!(reads, all, "young: read once more");
        // From then on, one in RECHECK_SCANS per scan, and every new pid.
        let mut total = 0;
        for round in 0..RECHECK_SCANS {
            let mut pids = all.clone();
            if round >= 3 {
                pids.push(20);
            }
            scan(&mut procs, &pids, &mut reads);
            if round == 3 {
                assert!(reads.contains(&20));
            }
            total += reads.iter().filter(|&&p| p != 20).count();
        }
        assert_eq!(
            total,
            all.len(),
            "each known process once per RECHECK_SCANS scans"
        );
        assert_eq!(
            procs.namespaces(),
            vec![
                (PathBuf::from("/proc/1/ns/net"), 1),
                (PathBuf::from("/proc/20/ns/net"), 99)
            ]
        );
        // Exited processes are forgotten.
        scan(&mut procs, &[1], &mut reads);
        assert_eq!(
            procs.namespaces(),
            vec![(PathBuf::from("/proc/1/ns/net"), 1)]
        );
        // An enumeration's reads are taken: a new pid is then read only once more.
        procs.learn([(30, 5), (1, 1)]);
        scan(&mut procs, &[1, 30], &mut reads);
        assert!(reads.contains(&30));
        let before: Vec<u32> = (0..RECHECK_SCANS)
            .flat_map(|_| {
                scan(&mut procs, &[1, 30], &mut reads);
                reads.clone()
            })
            .filter(|&p| p == 30)
            .collect();
        assert_eq!(before, vec![30], "then once per RECHECK_SCANS scans");
    }

    #[test]
    fn namespace_mounts_come_with_their_inode() {
        let text = "\
25 1 0:23 / /sys rw,nosuid shared:7 - sysfs sysfs rw
612 28 0:4 net:[4026532712] /run/netns/busybox rw shared:270 - nsfs nsfs rw
613 28 0:4 net:[4026532800] /run/netns/cni-1234\\040x rw - nsfs nsfs rw
614 28 0:4 mnt:[4026532900] /run/mntns/a rw - nsfs nsfs rw
615 30 0:4 net:[4026532712] /var/run/docker/netns/abc rw shared:1 master:2 - nsfs nsfs rw
";
        assert_eq!(
            mounted_namespaces(text),
            vec![
                (PathBuf::from("/run/netns/busybox"), 4026532712),
                (PathBuf::from("/run/netns/cni-1234 x"), 4026532800),
                (PathBuf::from("/var/run/docker/netns/abc"), 4026532712),
            ]
        );
        assert_eq!(mounted_namespaces(""), vec![]);
    }

    #[test]
    fn proc_paths_and_links_parse() {
        assert_eq!(pid_of(Path::new("/proc/42/ns/net")), Some(42));
        assert_eq!(pid_of(Path::new("/proc/self/ns/net")), None);
        assert_eq!(pid_of(Path::new("/proc/42/ns/mnt")), None);
        assert_eq!(pid_of(Path::new("/run/netns/a")), None);
        assert_eq!(parse_ns_link("net:[4026531840]"), Some(4026531840));
        assert_eq!(parse_ns_link("mnt:[4026531840]"), None);
        assert_eq!(parse_ns_link("net:[x]"), None);
    }

    #[test]
    fn slow_scans_are_spaced_out() {
        let ms = Duration::from_millis;
        assert_eq!(spaced(ms(500), ms(0), 0.0025), ms(500));
        assert_eq!(
            spaced(ms(500), Duration::from_micros(1200), 0.0025),
            ms(500)
        );
        assert_eq!(spaced(ms(500), ms(2), 0.0025), ms(800));
        assert_eq!(spaced(ms(10_000), ms(20), 0.001), ms(20_000));
    }

    #[test]
    fn the_watcher_can_move_to_another_thread() {
        fn send<T: Send>() {}
        send::<Watcher>();
    }

    #[test]
    fn vanished_namespaces_are_told_from_other_failures() {
        let enoent =
            anyhow::Error::from(io::Error::from_raw_os_error(libc::ENOENT)).context("open");
        assert!(vanished(&enoent));
        assert!(vanished(&anyhow::Error::from(Vanished)));
        assert!(vanished(
            &anyhow::Error::from(nix::errno::Errno::EINVAL).context("setns")
        ));
        assert!(!vanished(&anyhow::Error::from(nix::errno::Errno::EPERM)));
    }
}
