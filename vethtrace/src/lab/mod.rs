//! Labs: small container-network look-alikes for the demo (`vethtrace lab up`), the tests and the
//! benchmarks, built entirely inside network namespaces this module creates.
//!
//! Owns [`LabKind`], [`Fault`], [`Lab`] (a guard that deletes every namespace it made when
//! dropped, including during panic unwinding), [`down_all`] and [`list_persistent`]. Each
//! topology lives in its own file (`bridge`, `flannel`, `routed`, `pair`); `shell` runs the tools.
//!
//! The lab rule: every interface is created directly inside a lab namespace (one of them plays
//! the node), nothing is linked to the root namespace, and sysctls and iptables are only ever
//! changed through `ip netns exec <lab namespace> …`. Traffic only flows between lab namespaces.
//! To keep traces quiet (no router solicitations, DAD or MLD reports), each lab namespace gets
//! `net.ipv6.conf.{all,default}.disable_ipv6=1`; this is done inside the lab namespaces only.
//! Each also allows ICMP datagram ("ping") sockets for every group (`net.ipv4.ping_group_range`),
//! so `ping` uses one and an echo reply is consumed by it, instead of being copied to a raw
//! socket and then freed by `ping_rcv` with NO_SOCKET (noise that would look like a drop).
//!
//! Namespace names are `<prefix><role>`: `vt-<pid>-<counter>-` for throwaway labs
//! ([`Lab::create`]; namespaces left by dead processes are swept on the next create) and
//! `vtlab-<kind>-` for the ones `vethtrace lab up` leaves behind ([`Lab::create_persistent`],
//! removed by [`down_all`]).

mod bridge;
mod flannel;
mod pair;
mod routed;
mod shell;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;
use std::process::Output;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::error::UsageError;

/// Prefix of the namespaces `vethtrace lab up` leaves in place.
const PERSISTENT_PREFIX: &str = "vtlab-";
/// Prefix of throwaway lab namespaces (`vt-<pid>-<counter>-<role>`).
const THROWAWAY_PREFIX: &str = "vt-";
/// How long [`Lab::create`] waits for the veths it made to report carrier.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(3);

/// Per-process counter that makes throwaway prefixes unique within one process.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The topologies a [`Lab`] can build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LabKind {
    /// A Linux bridge `br01` in a node with two pods on it, like docker0.
    Bridge,
    /// Two nodes, each with a `cni0` bridge and two pods, joined by a flannel-style vxlan.
    Flannel,
    /// GKE-style routed pods: no bridge, /32 routes and proxy ARP on the host veths.
    Routed,
    /// Two namespaces joined by one veth pair.
    Pair,
}

impl LabKind {
    /// Every lab, in the order they are listed to users.
    pub const ALL: [LabKind; 4] = [
        LabKind::Bridge,
        LabKind::Flannel,
        LabKind::Routed,
        LabKind::Pair,
    ];

    /// The lab's name as typed on the command line.
    pub fn name(self) -> &'static str {
        match self {
            LabKind::Bridge => "bridge",
            LabKind::Flannel => "flannel",
            LabKind::Routed => "routed",
            LabKind::Pair => "pair",
        }
    }

    /// One line saying what the lab builds.
    pub fn about(self) -> &'static str {
        match self {
            LabKind::Bridge => "a node with bridge br01 and two pods ns01, ns02 (like docker0)",
            LabKind::Flannel => {
                "two nodes with cni0 bridges and four pods, joined by flannel.1 vxlan (like flannel)"
            }
            LabKind::Routed => "a node with two routed pods, /32 routes and proxy ARP (like GKE)",
            LabKind::Pair => "two namespaces a, b joined by one veth pair",
        }
    }

    /// Comma-separated names of all labs.
    fn names() -> String {
        LabKind::ALL
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for LabKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LabKind {
    type Err = UsageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LabKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UsageError(format!("no lab named {s}; labs: {}", LabKind::names())))
    }
}

/// Something to break in a lab after it is up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Fault {
    /// bridge lab: in the node ns, net.bridge.bridge-nf-call-iptables=1 and `iptables -P FORWARD DROP` (what Docker does)
    ForwardDrop,
    /// bridge lab: uplink veth node `eth1` <-> `wan` namespace `eth0`, node ip_forward=1; masquerade=true adds `iptables -t nat -A POSTROUTING -s 192.168.88.0/24 ! -o br01 -j MASQUERADE` in the node
    Uplink { masquerade: bool },
    /// set a link down inside a role's namespace
    LinkDown { role: String, ifname: String },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::ForwardDrop => f.write_str("forward-drop"),
            Fault::Uplink { masquerade: false } => f.write_str("uplink"),
            Fault::Uplink { masquerade: true } => f.write_str("uplink-masquerade"),
            Fault::LinkDown { role, ifname } => write!(f, "link-down:{role}:{ifname}"),
        }
    }
}

impl FromStr for Fault {
    type Err = UsageError;

    /// Parses what [`Display`](fmt::Display) prints: `forward-drop`, `uplink`,
    /// `uplink-masquerade`, `link-down:ROLE:IFNAME`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "forward-drop" => return Ok(Fault::ForwardDrop),
            "uplink" => return Ok(Fault::Uplink { masquerade: false }),
            "uplink-masquerade" => return Ok(Fault::Uplink { masquerade: true }),
            _ => {}
        }
        if let Some(rest) = s.strip_prefix("link-down:") {
            if let Some((role, ifname)) = rest.split_once(':') {
                if !role.is_empty() && !ifname.is_empty() && !ifname.contains(':') {
                    return Ok(Fault::LinkDown {
                        role: role.to_owned(),
                        ifname: ifname.to_owned(),
                    });
                }
            }
        }
        Err(UsageError(format!(
            "no fault named {s}; faults: forward-drop, uplink, uplink-masquerade, link-down:ROLE:IFNAME"
        )))
    }
}

/// One interface the lab made, for [`Lab::describe`] and for waiting on carrier.
#[derive(Debug, Clone)]
struct Iface {
    role: String,
    name: String,
    /// "veth, peer ns01/veth01", "bridge", "vxlan id 1 …".
    what: String,
    /// "192.168.88.1/24" and the like, empty when none.
    addrs: Vec<String>,
    is_veth: bool,
}

/// A lab: the network namespaces it created (deleted again when it is dropped, unless
/// [`Lab::keep`] was called) and what it put in them.
#[derive(Debug)]
pub struct Lab {
    kind: LabKind,
    prefix: String,
    /// (role, netns name), in creation order.
    namespaces: Vec<(String, String)>,
    /// (role, main address).
    addrs: Vec<(String, IpAddr)>,
    ifaces: Vec<Iface>,
    /// Routes, neighbours, fdb entries, sysctls: one human line each, for `describe`.
    notes: Vec<String>,
    faults: Vec<Fault>,
    keep: bool,
}

impl Lab {
    /// Builds a throwaway lab with the unique prefix `vt-<pid>-<counter>-`, first deleting
    /// `vt-<pid>-*` namespaces whose process is gone. If building fails half-way, everything
    /// made so far is removed before the error is returned.
    pub fn create(kind: LabKind) -> Result<Lab> {
        sweep_stale();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Lab::build(
            kind,
            format!("{THROWAWAY_PREFIX}{}-{n}-", std::process::id()),
        )
    }

    /// Builds the lab `vethtrace lab up` leaves in place, with prefix `vtlab-<kind>-`; fails if
    /// that lab is already up. Call [`Lab::keep`] to leave it behind; [`down_all`] removes it.
    pub fn create_persistent(kind: LabKind) -> Result<Lab> {
        let prefix = format!("{PERSISTENT_PREFIX}{kind}-");
        let existing: Vec<String> = shell::list_netns()
            .context("could not list network namespaces")?
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect();
        if !existing.is_empty() {
            crate::bail_usage!(
                "lab {kind} is already up (namespaces {}); remove it with `vethtrace lab down` first",
                existing.join(", ")
            );
        }
        Lab::build(kind, prefix)
    }

    fn build(kind: LabKind, prefix: String) -> Result<Lab> {
        let mut lab = Lab {
            kind,
            prefix,
            namespaces: Vec::new(),
            addrs: Vec::new(),
            ifaces: Vec::new(),
            notes: Vec::new(),
            faults: Vec::new(),
            keep: false,
        };
        let built = match kind {
            LabKind::Bridge => bridge::build(&mut lab),
            LabKind::Flannel => flannel::build(&mut lab),
            LabKind::Routed => routed::build(&mut lab),
            LabKind::Pair => pair::build(&mut lab),
        };
        // On error `lab` is dropped here, which deletes the namespaces made so far.
        built.with_context(|| format!("could not build lab {kind} ({}*)", lab.prefix))?;
        lab.settle();
        Ok(lab)
    }

    /// Which topology this is.
    pub fn kind(&self) -> LabKind {
        self.kind
    }

    /// The prefix of every namespace name, e.g. "vt-4242-0-" or "vtlab-bridge-".
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full `ip netns` name of a role, e.g. "vt-4242-0-ns01".
    pub fn netns(&self, role: &str) -> Result<&str> {
        self.namespaces
            .iter()
            .find(|(r, _)| r == role)
            .map(|(_, ns)| ns.as_str())
            .ok_or_else(|| {
                let roles = self
                    .namespaces
                    .iter()
                    .map(|(r, _)| r.as_str())
                    .collect::<Vec<_>>();
                anyhow!(
                    "lab {} has no role {role}; roles: {}",
                    self.kind,
                    roles.join(", ")
                )
            })
    }

    /// (role, netns name) of every namespace, in creation order.
    pub fn roles(&self) -> Vec<(&str, &str)> {
        self.namespaces
            .iter()
            .map(|(r, n)| (r.as_str(), n.as_str()))
            .collect()
    }

    /// The main address of a role: a pod's IP, wan's IP, a node's bridge IP.
    pub fn addr(&self, role: &str) -> Result<IpAddr> {
        self.netns(role)?;
        self.addrs
            .iter()
            .find(|(r, _)| r == role)
            .map(|(_, a)| *a)
            .ok_or_else(|| anyhow!("role {role} of lab {} has no address", self.kind))
    }

    /// Runs `argv` inside a role's namespace (`ip netns exec`); fails, quoting stderr, unless
    /// it exits 0.
    pub fn exec(&self, role: &str, argv: &[&str]) -> Result<Output> {
        let ns = self.netns(role)?;
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(argv);
        shell::run(&full)
    }

    /// `ping -c count -i 0.2 -W 1 dst` inside a role's namespace; true if every probe was
    /// answered. No route to the destination counts as false; an error means ping could not run.
    pub fn ping(&self, from_role: &str, dst: IpAddr, count: u32) -> Result<bool> {
        let ns = self.netns(from_role)?;
        let count = count.max(1).to_string();
        let dst = dst.to_string();
        let argv = [
            "ip", "netns", "exec", ns, "ping", "-n", "-q", "-c", &count, "-i", "0.2", "-W", "1",
            &dst,
        ];
        let out = shell::spawn(&argv)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if let Some((sent, received)) = ping_summary(&stdout) {
            return Ok(sent > 0 && received == sent);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("nreachable") {
            return Ok(false);
        }
        Err(anyhow!(
            "`{}` failed: {}",
            shell::show(&argv),
            shell::reason(&out)
        ))
    }

    /// Breaks something in the lab. Enabling a fault that is already on does nothing.
    pub fn enable(&mut self, fault: Fault) -> Result<()> {
        if self.faults.contains(&fault) {
            return Ok(());
        }
        let done = match &fault {
            Fault::ForwardDrop => {
                self.require_kind(LabKind::Bridge, &fault)?;
                bridge::forward_drop(self)
            }
            Fault::Uplink { masquerade } => {
                self.require_kind(LabKind::Bridge, &fault)?;
                bridge::uplink(self, *masquerade)
            }
            Fault::LinkDown { role, ifname } => self
                .ip(role, &["link", "set", "dev", ifname, "down"])
                .map(|()| self.note(format!("{role}: {ifname} set down"))),
        };
        done.with_context(|| format!("could not enable fault {fault} in lab {}", self.kind))?;
        self.faults.push(fault);
        Ok(())
    }

    /// Faults enabled so far, in order.
    pub fn faults(&self) -> &[Fault] {
        &self.faults
    }

    /// What the lab created (namespaces, interfaces, addresses, routes) and how to enter it.
    pub fn describe(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(s, "lab {}: {}", self.kind, self.kind.about());
        let width = self
            .namespaces
            .iter()
            .map(|(r, _)| r.len())
            .max()
            .unwrap_or(0);
        let ns_width = self
            .namespaces
            .iter()
            .map(|(_, n)| n.len())
            .max()
            .unwrap_or(0);
        let _ = writeln!(s, "namespaces (prefix {}):", self.prefix);
        for (role, ns) in &self.namespaces {
            let addr = self
                .addr(role)
                .map(|a| format!("  {a}"))
                .unwrap_or_default();
            let _ = writeln!(s, "  {role:<width$}  {ns:<ns_width$}{addr}");
        }
        let _ = writeln!(s, "interfaces:");
        let if_width = self.ifaces.iter().map(|i| i.name.len()).max().unwrap_or(0);
        for i in &self.ifaces {
            let addrs = if i.addrs.is_empty() {
                String::new()
            } else {
                format!("  {}", i.addrs.join(" "))
            };
            let _ = writeln!(
                s,
                "  {:<width$}  {:<if_width$}  {}{addrs}",
                i.role, i.name, i.what
            );
        }
        if !self.notes.is_empty() {
            let _ = writeln!(s, "routes and settings:");
            for n in &self.notes {
                let _ = writeln!(s, "  {n}");
            }
        }
        if !self.faults.is_empty() {
            let faults = self.faults.iter().map(Fault::to_string).collect::<Vec<_>>();
            let _ = writeln!(s, "faults: {}", faults.join(", "));
        }
        let _ = writeln!(s, "enter a namespace:");
        for (role, ns) in &self.namespaces {
            let _ = writeln!(s, "  {role:<width$}  ip netns exec {ns} bash");
        }
        s
    }

    /// Leaves the lab in place: its namespaces are not deleted when it goes away.
    pub fn keep(mut self) {
        self.keep = true;
    }

    // ---- helpers for the lab files ----

    fn require_kind(&self, kind: LabKind, fault: &Fault) -> Result<()> {
        if self.kind == kind {
            Ok(())
        } else {
            bail!(
                "fault {fault} only applies to the {kind} lab, not to {}",
                self.kind
            )
        }
    }

    /// Creates the namespace for `role` (recorded first, so Drop removes it even if the rest
    /// fails), brings `lo` up and turns IPv6 off inside it.
    fn add_ns(&mut self, role: &str) -> Result<()> {
        let ns = format!("{}{role}", self.prefix);
        shell::run(&["ip", "netns", "add", &ns])?;
        self.namespaces.push((role.to_owned(), ns));
        self.sysctl(role, "net.ipv6.conf.all.disable_ipv6", "1")?;
        self.sysctl(role, "net.ipv6.conf.default.disable_ipv6", "1")?;
        self.sysctl(role, "net.ipv4.ping_group_range", "0 2147483647")?;
        self.ip_cmd(role, "link set dev lo up")
    }

    /// `ip -n <ns of role> args…`.
    fn ip(&self, role: &str, args: &[&str]) -> Result<()> {
        let ns = self.netns(role)?;
        let mut argv = vec!["ip", "-n", ns];
        argv.extend_from_slice(args);
        shell::run(&argv).map(drop)
    }

    /// `ip -n <ns of role> <cmd>`, with `cmd` split on whitespace (for fixed command lines
    /// whose words never contain spaces, e.g. `route add 10.222.2.0/24 via 10.222.2.0 …`).
    fn ip_cmd(&self, role: &str, cmd: &str) -> Result<()> {
        self.ip(role, &cmd.split_whitespace().collect::<Vec<_>>())
    }

    /// `ip -n <ns> -o link show dev <ifname>` → the interface's MAC address.
    fn mac(&self, role: &str, ifname: &str) -> Result<String> {
        let ns = self.netns(role)?;
        let argv = ["ip", "-n", ns, "-o", "link", "show", "dev", ifname];
        let out = shell::run(&argv)?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut words = text.split_whitespace();
        while let Some(w) = words.next() {
            if w == "link/ether" {
                if let Some(mac) = words.next() {
                    return Ok(mac.to_owned());
                }
            }
        }
        bail!("`{}` printed no link/ether address", shell::show(&argv))
    }

    /// `sysctl -qw key=value` inside the role's namespace.
    fn sysctl(&self, role: &str, key: &str, value: &str) -> Result<()> {
        let kv = format!("{key}={value}");
        self.exec(role, &["sysctl", "-qw", &kv]).map(drop)
    }

    /// A veth pair created inside `a`'s namespace with its peer placed directly in `b`'s.
    /// Both ends are brought up; nothing touches the root namespace.
    fn veth(&mut self, a: (&str, &str), b: (&str, &str), mtu: Option<u32>) -> Result<()> {
        let (a_role, a_if) = a;
        let (b_role, b_if) = b;
        let b_ns = self.netns(b_role)?.to_owned();
        let mtu = mtu.map(|m| m.to_string());
        let mut args = vec!["link", "add", a_if];
        if let Some(m) = &mtu {
            args.extend(["mtu", m.as_str()]);
        }
        args.extend(["type", "veth", "peer", "name", b_if]);
        if let Some(m) = &mtu {
            args.extend(["mtu", m.as_str()]);
        }
        args.extend(["netns", b_ns.as_str()]);
        self.ip(a_role, &args)?;
        let mtu_note = mtu.map(|m| format!(", mtu {m}")).unwrap_or_default();
        self.iface(
            a_role,
            a_if,
            &format!("veth, peer {b_role}/{b_if}{mtu_note}"),
            true,
        );
        self.iface(
            b_role,
            b_if,
            &format!("veth, peer {a_role}/{a_if}{mtu_note}"),
            true,
        );
        self.ip(a_role, &["link", "set", "dev", a_if, "up"])?;
        self.ip(b_role, &["link", "set", "dev", b_if, "up"])
    }

    /// `ip addr add cidr dev ifname` in the role's namespace, recorded for `describe`.
    fn add_addr(&mut self, role: &str, ifname: &str, cidr: &str) -> Result<()> {
        self.ip(role, &["addr", "add", cidr, "dev", ifname])?;
        if let Some(i) = self
            .ifaces
            .iter_mut()
            .find(|i| i.role == role && i.name == ifname)
        {
            i.addrs.push(cidr.to_owned());
        }
        Ok(())
    }

    /// Records an interface for `describe` (and, for veths, for the carrier wait).
    fn iface(&mut self, role: &str, name: &str, what: &str, is_veth: bool) {
        self.ifaces.push(Iface {
            role: role.to_owned(),
            name: name.to_owned(),
            what: what.to_owned(),
            addrs: Vec::new(),
            is_veth,
        });
    }

    /// Appends `text` to the description of an interface already recorded.
    fn iface_note(&mut self, role: &str, name: &str, text: &str) {
        if let Some(i) = self
            .ifaces
            .iter_mut()
            .find(|i| i.role == role && i.name == name)
        {
            i.what.push_str(text);
        }
    }

    /// Records the role's main address.
    fn set_main_addr(&mut self, role: &str, addr: IpAddr) {
        self.addrs.retain(|(r, _)| r != role);
        self.addrs.push((role.to_owned(), addr));
    }

    /// Records a route/neighbour/setting line for `describe`.
    fn note(&mut self, line: String) {
        self.notes.push(line);
    }

    /// Waits (bounded) until every veth reports operstate UP, i.e. the kernel's link watcher
    /// has activated its queue, so the first packets of a test are not dropped. Gives up
    /// quietly after [`SETTLE_TIMEOUT`]: a ping will then tell what is wrong.
    fn settle(&self) {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        for (role, ns) in &self.namespaces {
            let wanted: Vec<&str> = self
                .ifaces
                .iter()
                .filter(|i| i.is_veth && &i.role == role)
                .map(|i| i.name.as_str())
                .collect();
            if wanted.is_empty() {
                continue;
            }
            loop {
                let up = shell::run(&["ip", "-n", ns, "-o", "link", "show", "up"])
                    .map(|out| operstate_up(&String::from_utf8_lossy(&out.stdout)))
                    .unwrap_or_default();
                if wanted.iter().all(|w| up.iter().any(|u| u == w)) || Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Lab {
    /// Deletes every namespace the lab created, newest first, ignoring errors (unless
    /// [`Lab::keep`] was called). Runs during panic unwinding too.
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for (_, ns) in self.namespaces.iter().rev() {
            let _ = shell::del_netns(ns);
        }
        self.namespaces.clear();
    }
}

/// Deletes every `vtlab-*` namespace (what `vethtrace lab up` left) and returns their names.
/// Tries them all; fails afterwards, naming the ones that could not be deleted.
pub fn down_all() -> Result<Vec<String>> {
    let names = shell::list_netns().context("could not list network namespaces")?;
    let mut deleted = Vec::new();
    let mut failed = Vec::new();
    for name in names
        .into_iter()
        .filter(|n| n.starts_with(PERSISTENT_PREFIX))
        .rev()
    {
        match shell::del_netns(&name) {
            Ok(()) => deleted.push(name),
            Err(e) => failed.push(format!("{e:#}")),
        }
    }
    if !failed.is_empty() {
        bail!(
            "could not delete every lab namespace: {}",
            failed.join("; ")
        );
    }
    deleted.sort();
    Ok(deleted)
}

/// Names of the `vtlab-*` namespaces currently present (empty if they cannot be listed).
pub fn list_persistent() -> Vec<String> {
    let mut names: Vec<String> = shell::list_netns()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.starts_with(PERSISTENT_PREFIX))
        .collect();
    names.sort();
    names
}

/// Deletes throwaway namespaces (`vt-<pid>-<counter>-<role>`) whose process no longer exists.
/// Errors are ignored: another process may be sweeping the same names.
fn sweep_stale() {
    let me = std::process::id();
    for name in shell::list_netns().unwrap_or_default() {
        if let Some(pid) = throwaway_pid(&name) {
            if pid != me && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = shell::del_netns(&name);
            }
        }
    }
}

/// The pid in a throwaway namespace name `vt-<pid>-<counter>-<role>`, None for anything else.
fn throwaway_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(THROWAWAY_PREFIX)?;
    let mut parts = rest.splitn(3, '-');
    let pid = parts.next()?;
    let counter = parts.next()?;
    let role = parts.next()?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(counter) || role.is_empty() {
        return None;
    }
    pid.parse().ok()
}

/// (transmitted, received) from ping's summary line "3 packets transmitted, 3 received, …".
fn ping_summary(stdout: &str) -> Option<(u32, u32)> {
    let line = stdout.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = line.split(',').map(|part| {
        part.split_whitespace()
            .next()
            .and_then(|n| n.parse::<u32>().ok())
    });
    let sent = nums.next()??;
    let received = nums.next()??;
    Some((sent, received))
}

/// Names of interfaces whose operstate is UP in `ip -o link show` output.
fn operstate_up(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let name = words.nth(1)?.trim_end_matches(':');
            let name = name.split('@').next()?;
            let state = line
                .split_whitespace()
                .skip_while(|w| *w != "state")
                .nth(1)?;
            (state == "UP").then(|| name.to_owned())
        })
        .collect()
}

/// A CNI-style host veth name: `veth` + 8 lowercase hex digits, derived (FNV-1a) from the lab
/// prefix, the pod name and a salt, so it is stable within a run and differs between runs.
fn cni_veth_name(prefix: &str, pod: &str, salt: u32) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in prefix
        .bytes()
        .chain([b'/'])
        .chain(pod.bytes())
        .chain(salt.to_le_bytes())
    {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("veth{h:08x}")
}

impl Lab {
    /// A CNI-style host veth name for `pod`, unique among the interfaces of this lab.
    fn host_veth_name(&self, pod: &str) -> String {
        let mut salt = 0;
        loop {
            let name = cni_veth_name(&self.prefix, pod, salt);
            if !self.ifaces.iter().any(|i| i.name == name) {
                return name;
            }
            salt += 1;
        }
    }
}
