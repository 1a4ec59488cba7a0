//! The topology as plain data: namespaces, their interfaces, veth peers, bridges, vxlan devices,
//! FDB entries and routes, plus the lookups the tracer and the commands need (by netns cookie,
//! by namespace inode, by interface name or ifindex).
//!
//! Owns: the shape of `vethtrace topo --json` (field names are a contract held by the tests) and
//! pure queries over it. Does not own: reading the system (see `discover`) or rendering.

use serde::{Deserialize, Serialize};

/// Every network namespace found, host first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    pub namespaces: Vec<Namespace>,
}

/// One network namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Namespace {
    /// Display name: `host`, the ip-netns name, the pod or container name, `pid:<pid>(<comm>)`
    /// or `netns:<inode>`, in that order of preference; unique within a topology.
    pub name: String,
    /// Inode of the namespace file (what `ip netns identify` and `lsns` show).
    pub inode: u64,
    /// Device of the nsfs mount; with `inode` the namespace's identity.
    pub dev: u64,
    /// What `bpf_get_netns_cookie` returns for packets in this namespace; eBPF events carry it.
    pub cookie: Option<u64>,
    /// A path the namespace can be entered through.
    pub path: String,
    /// The name under /run/netns, when it has one.
    pub netns_name: Option<String>,
    /// Processes whose network namespace this is, ascending.
    pub pids: Vec<u32>,
    /// Who the namespace belongs to, best effort.
    pub owner: Option<Owner>,
    pub interfaces: Vec<Interface>,
    /// IPv4 default route of the main table (IPv6 when there is no IPv4 one).
    pub default_route: Option<Route>,
    /// Main-table routes, IPv4 then IPv6.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Bridge and vxlan forwarding entries (what `bridge fdb` / `brctl showmacs` print).
    #[serde(default)]
    pub fdb: Vec<FdbEntry>,
}

/// Who holds a namespace: a representative process and, when it runs in a container, which one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Owner {
    /// The lowest pid in the namespace.
    pub pid: u32,
    pub comm: String,
    /// `docker`, `containerd`, `cri-o`, `podman`, … as guessed from the cgroup path.
    pub runtime: Option<String>,
    pub container_id: Option<String>,
    pub container_name: Option<String>,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
}

/// One network device, as seen inside its namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    pub ifindex: u32,
    pub name: String,
    /// `veth`, `bridge`, `vxlan`, `loopback`, `dummy`, `physical`, … (the rtnetlink kind).
    pub kind: String,
    /// Operational state, lowercase: `up`, `down`, `unknown`, `lowerlayerdown`, …
    pub state: String,
    /// Administratively up (IFF_UP).
    #[serde(default)]
    pub admin_up: bool,
    pub mtu: u32,
    pub mac: Option<String>,
    /// Addresses in CIDR notation, IPv4 first.
    pub addrs: Vec<String>,
    /// The bridge (or bond, vrf) this device is enslaved to.
    pub master: Option<String>,
    /// The other end of a veth (or netkit) pair.
    pub peer: Option<PeerRef>,
    /// The lower device of a vlan, macvlan or ipvlan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower: Option<PeerRef>,
    /// A macvlan's or ipvlan's mode (`bridge`, `vepa`, `private`, `passthru`, `source`; `l2`,
    /// `l3`, `l3s`): which of them can reach each other, and what a fix must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan: Option<Vxlan>,
    /// XDP program attached, from IFLA_XDP (always read, it comes with the link dump).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdp: Option<AttachedProgram>,
    /// tc, TCX and XDP programs, filled only when programs were asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub programs: Vec<AttachedProgram>,
}

/// A reference to an interface in some namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRef {
    /// Display name of the namespace, or `nsid:<n>` when it could not be identified.
    pub netns: String,
    pub inode: Option<u64>,
    pub ifindex: u32,
    pub name: Option<String>,
    pub master: Option<String>,
}

/// A vxlan device's tunnel parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vxlan {
    pub vni: u32,
    pub local: Option<String>,
    /// Remote or multicast group, when one is configured.
    pub group: Option<String>,
    /// UDP destination port.
    pub port: u16,
    /// Underlay device name (IFLA_VXLAN_LINK).
    pub underlay: Option<String>,
    pub underlay_ifindex: Option<u32>,
    pub learning: Option<bool>,
}

/// A route of the main table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// `default` or a CIDR.
    pub dst: String,
    pub gateway: Option<String>,
    pub dev: Option<String>,
    pub oif: Option<u32>,
}

/// One forwarding-database entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FdbEntry {
    pub mac: String,
    /// The port (or vxlan device) the entry points at.
    pub port: String,
    pub ifindex: u32,
    /// The bridge, for entries in a bridge's table.
    pub master: Option<String>,
    pub vlan: Option<u16>,
    /// Permanent entry for the bridge's own address ("is local?" in brctl).
    pub local: bool,
    /// Entry of the device's own table (NTF_SELF), e.g. a vxlan remote.
    pub is_self: bool,
    /// Remote VTEP of a vxlan entry.
    pub dst: Option<String>,
    /// Seconds since last update, in centisecond resolution ("ageing timer").
    pub age_secs: Option<f64>,
}

/// A BPF program attached to an interface.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedProgram {
    pub id: u32,
    pub name: String,
    /// `tcx ingress`, `tcx egress`, `tc ingress`, `tc egress`, `xdp drv`, `xdp skb`, `xdp hw`.
    pub mode: String,
    /// Extra detail: tc priority and handle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// How a namespace is identified in a lookup: by inode (`lsns`) or by netns cookie (eBPF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NsKey {
    Inode(u64),
    Cookie(u64),
}

impl Topology {
    /// Renames namespaces (`old display name → new`), everywhere a name appears: the
    /// namespaces themselves and the peer references pointing at them. Used by the demo to show
    /// a lab's roles (`ns01`) instead of its unique namespace names.
    pub fn rename(&mut self, names: &std::collections::HashMap<String, String>) {
        for ns in &mut self.namespaces {
            if let Some(n) = names.get(&ns.name) {
                ns.name = n.clone();
            }
            for i in &mut ns.interfaces {
                for r in [i.peer.as_mut(), i.lower.as_mut()].into_iter().flatten() {
                    if let Some(n) = names.get(&r.netns) {
                        r.netns = n.clone();
                    }
                }
            }
        }
    }

    /// The namespace a netns cookie belongs to.
    pub fn by_cookie(&self, cookie: u64) -> Option<&Namespace> {
        self.namespaces.iter().find(|n| n.cookie == Some(cookie))
    }

    /// The namespace with this inode.
    pub fn by_inode(&self, inode: u64) -> Option<&Namespace> {
        self.namespaces.iter().find(|n| n.inode == inode)
    }

    /// The namespace a key names.
    pub fn namespace(&self, key: NsKey) -> Option<&Namespace> {
        match key {
            NsKey::Inode(i) => self.by_inode(i),
            NsKey::Cookie(c) => self.by_cookie(c),
        }
    }

    /// The interface with `ifindex` in the namespace `key` names.
    pub fn interface(&self, key: NsKey, ifindex: u32) -> Option<&Interface> {
        self.namespace(key)?.interface(ifindex)
    }

    /// The namespace a user-given name refers to: its display name, ip-netns name, pod or
    /// container name, container id (or a prefix of at least 6 characters), inode, a pid in it,
    /// or `pid:<pid>` / `netns:<inode>`. Exact display names win over everything else.
    pub fn find_netns(&self, name: &str) -> Option<&Namespace> {
        if let Some(ns) = self.namespaces.iter().find(|n| n.name == name) {
            return Some(ns);
        }
        let number = |s: &str| s.parse::<u64>().ok();
        let by_pid = |pid: u64| {
            self.namespaces
                .iter()
                .find(|n| n.pids.iter().any(|&p| u64::from(p) == pid))
        };
        if let Some(rest) = name.strip_prefix("netns:") {
            return number(rest).and_then(|i| self.by_inode(i));
        }
        if let Some(rest) = name.strip_prefix("pid:") {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            return number(&digits).and_then(by_pid);
        }
        if let Some(n) = number(name) {
            return self.by_inode(n).or_else(|| by_pid(n));
        }
        self.namespaces.iter().find(|n| {
            n.netns_name.as_deref() == Some(name)
                || n.owner.as_ref().is_some_and(|o| o.matches(name))
        })
    }

    /// Interfaces named `name` (or whose ifindex is `name`, when it is a number), in the
    /// namespace `netns` names or in every namespace.
    pub fn find_interface(&self, name: &str, netns: Option<&str>) -> Vec<(&Namespace, &Interface)> {
        let spaces: Vec<&Namespace> = match netns {
            Some(n) => self.find_netns(n).into_iter().collect(),
            None => self.namespaces.iter().collect(),
        };
        let by_index = name.parse::<u32>().ok();
        let mut found: Vec<(&Namespace, &Interface)> = spaces
            .iter()
            .flat_map(|ns| ns.interfaces.iter().map(move |i| (*ns, i)))
            .filter(|(_, i)| i.name == name)
            .collect();
        if found.is_empty() {
            if let (Some(idx), Some(_)) = (by_index, netns) {
                found = spaces
                    .iter()
                    .filter_map(|ns| ns.interface(idx).map(|i| (*ns, i)))
                    .collect();
            }
        }
        found
    }

    /// The interface a peer reference points at, when its namespace was read.
    pub fn resolve(&self, r: &PeerRef) -> Option<(&Namespace, &Interface)> {
        let ns = self.by_inode(r.inode?)?;
        Some((ns, ns.interface(r.ifindex)?))
    }

    /// Display names of all namespaces, in order.
    pub fn names(&self) -> Vec<&str> {
        self.namespaces.iter().map(|n| n.name.as_str()).collect()
    }
}

impl Interface {
    /// A macvlan or ipvlan (or their tap variants): stacked on a parent device by address, so
    /// several can share one parent as siblings, and none of them ever reaches the parent's own
    /// traffic (the kernel hands them what arrives on the parent, and sends theirs through it).
    pub fn is_macvlan_like(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "macvlan" | "macvtap" | "ipvlan" | "ipvtap"
        )
    }
}

impl Namespace {
    /// The interface with this ifindex.
    pub fn interface(&self, ifindex: u32) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.ifindex == ifindex)
    }

    /// The interface with this name.
    pub fn interface_named(&self, name: &str) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.name == name)
    }

    /// The ports of a bridge (interfaces whose master it is), in ifindex order.
    pub fn bridge_ports(&self, bridge: &str) -> Vec<&Interface> {
        self.interfaces
            .iter()
            .filter(|i| i.master.as_deref() == Some(bridge))
            .collect()
    }

    /// FDB entries of a bridge's table.
    pub fn bridge_fdb(&self, bridge: &str) -> Vec<&FdbEntry> {
        self.fdb
            .iter()
            .filter(|e| e.master.as_deref() == Some(bridge))
            .collect()
    }

    /// A one-phrase description of who owns the namespace, e.g. `pid 4242 sleep` or
    /// `pod default/nginx, pid 4242 pause`.
    pub fn owner_summary(&self) -> Option<String> {
        let o = self.owner.as_ref()?;
        let mut parts = Vec::new();
        if let Some(pod) = &o.pod_name {
            match &o.pod_namespace {
                Some(pns) => parts.push(format!("pod {pns}/{pod}")),
                None => parts.push(format!("pod {pod}")),
            }
        } else if let Some(c) = &o.container_name {
            parts.push(format!("container {c}"));
        } else if let Some(id) = &o.container_id {
            parts.push(format!("container {}", short_id(id)));
        }
        parts.push(format!("pid {} {}", o.pid, o.comm));
        Some(parts.join(", "))
    }
}

impl Owner {
    /// Whether a user-given name refers to this owner (pod or container name, container id).
    pub fn matches(&self, name: &str) -> bool {
        let pod_full = match (&self.pod_namespace, &self.pod_name) {
            (Some(ns), Some(p)) => Some(format!("{ns}/{p}")),
            _ => None,
        };
        self.pod_name.as_deref() == Some(name)
            || pod_full.as_deref() == Some(name)
            || self.container_name.as_deref() == Some(name)
            || self
                .container_id
                .as_deref()
                .is_some_and(|id| name.len() >= 6 && id.starts_with(name))
    }
}

/// The first 12 characters of a container id, as docker prints it.
pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn iface(ifindex: u32, name: &str, kind: &str) -> Interface {
        Interface {
            ifindex,
            name: name.into(),
            kind: kind.into(),
            state: "up".into(),
            admin_up: true,
            mtu: 1500,
            ..Default::default()
        }
    }

    /// A hand-built topology: host with a bridge cni0 and two veth ports, two pods whose eth0
    /// both have ifindex 3 (as in real clusters), and a vxlan device.
    pub(crate) fn sample() -> Topology {
        let mut br = iface(4, "cni0", "bridge");
        br.addrs = vec!["10.222.1.1/24".into()];
        br.mac = Some("aa:bb:cc:00:00:01".into());
        let mut v8 = iface(8, "vethf0808a3e", "veth");
        v8.master = Some("cni0".into());
        v8.peer = Some(PeerRef {
            netns: "busybox".into(),
            inode: Some(4026532300),
            ifindex: 3,
            name: Some("eth0".into()),
            master: None,
        });
        let mut v9 = iface(9, "veth12345678", "veth");
        v9.master = Some("cni0".into());
        v9.peer = Some(PeerRef {
            netns: "nginx".into(),
            inode: Some(4026532400),
            ifindex: 3,
            name: Some("eth0".into()),
            master: None,
        });
        let mut vx = iface(5, "flannel.1", "vxlan");
        vx.mtu = 1450;
        vx.vxlan = Some(Vxlan {
            vni: 1,
            local: Some("172.30.0.1".into()),
            group: None,
            port: 8472,
            underlay: Some("eth0".into()),
            underlay_ifindex: Some(2),
            learning: Some(false),
        });
        let mut eth0 = iface(2, "eth0", "physical");
        eth0.addrs = vec!["172.30.0.1/24".into()];
        let host = Namespace {
            name: "host".into(),
            inode: 4026531840,
            dev: 4,
            cookie: Some(1),
            path: "/proc/1/ns/net".into(),
            netns_name: None,
            pids: vec![1, 200],
            owner: Some(Owner {
                pid: 1,
                comm: "systemd".into(),
                ..Default::default()
            }),
            interfaces: vec![iface(1, "lo", "loopback"), eth0, br, vx, v8, v9],
            default_route: Some(Route {
                dst: "default".into(),
                gateway: Some("172.30.0.254".into()),
                dev: Some("eth0".into()),
                oif: Some(2),
            }),
            routes: vec![],
            fdb: vec![FdbEntry {
                mac: "aa:bb:cc:00:00:08".into(),
                port: "vethf0808a3e".into(),
                ifindex: 8,
                master: Some("cni0".into()),
                vlan: None,
                local: false,
                is_self: false,
                dst: None,
                age_secs: Some(1.5),
            }],
        };
        let pod = |name: &str, inode: u64, cookie: u64, pid: u32, host_if: u32, host_name: &str| {
            let mut e = iface(3, "eth0", "veth");
            e.addrs = vec![format!("10.222.1.{}/24", host_if)];
            e.peer = Some(PeerRef {
                netns: "host".into(),
                inode: Some(4026531840),
                ifindex: host_if,
                name: Some(host_name.into()),
                master: Some("cni0".into()),
            });
            Namespace {
                name: name.into(),
                inode,
                dev: 4,
                cookie: Some(cookie),
                path: format!("/run/netns/{name}"),
                netns_name: Some(name.into()),
                pids: vec![pid],
                owner: Some(Owner {
                    pid,
                    comm: "sleep".into(),
                    ..Default::default()
                }),
                interfaces: vec![iface(1, "lo", "loopback"), e],
                default_route: None,
                routes: vec![],
                fdb: vec![],
            }
        };
        Topology {
            namespaces: vec![
                host,
                pod("busybox", 4026532300, 7, 4242, 8, "vethf0808a3e"),
                pod("nginx", 4026532400, 9, 4343, 9, "veth12345678"),
            ],
        }
    }

    #[test]
    fn cookie_and_inode_lookups_pick_the_right_eth0() {
        let t = sample();
        assert_eq!(t.by_cookie(7).map(|n| n.name.as_str()), Some("busybox"));
        assert_eq!(t.by_cookie(99), None);
        let i = t
            .interface(NsKey::Cookie(9), 3)
            .map(|i| i.addrs[0].as_str());
        assert_eq!(i, Some("10.222.1.9/24"));
        let i = t
            .interface(NsKey::Inode(4026532300), 3)
            .map(|i| i.addrs[0].as_str());
        assert_eq!(i, Some("10.222.1.8/24"));
        assert!(t.interface(NsKey::Inode(1), 3).is_none());
    }

    #[test]
    fn find_interface_by_name_everywhere_and_in_one_namespace() {
        let t = sample();
        assert_eq!(t.find_interface("eth0", None).len(), 3);
        let one = t.find_interface("eth0", Some("nginx"));
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].0.name, "nginx");
        assert_eq!(
            t.find_interface("8", Some("host"))[0].1.name,
            "vethf0808a3e"
        );
        assert!(t.find_interface("nope", None).is_empty());
    }

    #[test]
    fn find_netns_by_every_kind_of_name() {
        let t = sample();
        assert_eq!(t.find_netns("busybox").map(|n| n.inode), Some(4026532300));
        assert_eq!(
            t.find_netns("4026532400").map(|n| n.name.as_str()),
            Some("nginx")
        );
        assert_eq!(
            t.find_netns("netns:4026531840").map(|n| n.name.as_str()),
            Some("host")
        );
        assert_eq!(
            t.find_netns("4242").map(|n| n.name.as_str()),
            Some("busybox")
        );
        assert_eq!(
            t.find_netns("pid:4343(sleep)").map(|n| n.name.as_str()),
            Some("nginx")
        );
        assert!(t.find_netns("redis").is_none());
    }

    #[test]
    fn resolve_follows_a_peer_reference() {
        let t = sample();
        let host = &t.namespaces[0];
        let peer = host.interface(8).and_then(|i| i.peer.as_ref());
        let (ns, i) = peer.and_then(|p| t.resolve(p)).expect("peer resolves");
        assert_eq!((ns.name.as_str(), i.name.as_str()), ("busybox", "eth0"));
        assert_eq!(host.bridge_ports("cni0").len(), 2);
        assert_eq!(host.bridge_fdb("cni0").len(), 1);
    }

    #[test]
    fn owner_summary_prefers_pod_then_container() {
        let mut ns = sample().namespaces[1].clone();
        assert_eq!(ns.owner_summary().as_deref(), Some("pid 4242 sleep"));
        if let Some(o) = ns.owner.as_mut() {
            o.container_id = Some("0123456789abcdef0123".into());
        }
        assert_eq!(
            ns.owner_summary().as_deref(),
            Some("container 0123456789ab, pid 4242 sleep")
        );
        if let Some(o) = ns.owner.as_mut() {
            o.pod_name = Some("web".into());
            o.pod_namespace = Some("default".into());
        }
        assert_eq!(
            ns.owner_summary().as_deref(),
            Some("pod default/web, pid 4242 sleep")
        );
    }
}
