//! Small pure queries over the topology that the rules share: CIDR arithmetic, the route a
//! namespace would pick for an address (longest prefix, then the default route), which
//! namespace owns an address, whether a device can carry packets, and how to run a command in
//! a namespace (`ip -n NS …`, `ip netns exec NS …`, `nsenter …`) in the user's own names.

use std::net::IpAddr;

use crate::topology::{Interface, Namespace, Route, Topology};

/// An address with a prefix length, e.g. `192.168.88.1/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`, `x::y/n`, `default` (0.0.0.0/0) or a bare address (host prefix).
    pub fn parse(s: &str) -> Option<Cidr> {
        if s == "default" {
            return Some(Cidr {
                addr: IpAddr::from([0, 0, 0, 0]),
                len: 0,
            });
        }
        let (a, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u8>().ok()?)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = len.unwrap_or(max);
        (len <= max).then_some(Cidr { addr, len })
    }

    /// Whether `ip` falls inside this prefix (same family only).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }

    /// The network this address is in, e.g. 192.168.88.1/24 → 192.168.88.0/24.
    pub fn network(&self) -> Cidr {
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                IpAddr::from((u32::from(a) & mask).to_be_bytes())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                IpAddr::from((u128::from(a) & mask).to_be_bytes())
            }
        };
        Cidr {
            addr,
            len: self.len,
        }
    }

    /// A prefix covering just this address (/32 or /128).
    pub fn host(ip: IpAddr) -> Cidr {
        Cidr {
            addr: ip,
            len: if ip.is_ipv4() { 32 } else { 128 },
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The interface's addresses that matter for routing (IPv6 link-local left out).
pub fn addrs(i: &Interface) -> impl Iterator<Item = Cidr> + '_ {
    i.addrs
        .iter()
        .filter_map(|a| Cidr::parse(a))
        .filter(|c| !matches!(c.addr, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80))
}

/// Whether the namespace has `ip` as one of its own addresses (loopback's 127/8 counts).
pub fn is_local(ns: &Namespace, ip: IpAddr) -> bool {
    ip.is_loopback() || ns.interfaces.iter().any(|i| addrs(i).any(|c| c.addr == ip))
}

/// The route `ns` picks for `ip`: the longest matching prefix of its main table, else its
/// default route. Routes through a device that is gone from the table are not considered.
pub fn route_lookup(ns: &Namespace, ip: IpAddr) -> Option<&Route> {
    ns.routes
        .iter()
        .chain(ns.default_route.iter())
        .filter_map(|r| Some((Cidr::parse(&r.dst)?, r)))
        .filter(|(c, r)| {
            // `default` parses as 0.0.0.0/0: an IPv6 default route has an IPv6 gateway.
            let v6_default = r.dst == "default"
                && r.gateway
                    .as_deref()
                    .and_then(|g| g.parse::<IpAddr>().ok())
                    .is_some_and(|g| g.is_ipv6());
            if r.dst == "default" {
                v6_default == ip.is_ipv6()
            } else {
                c.contains(ip)
            }
        })
        .max_by_key(|(c, _)| c.len)
        .map(|(_, r)| r)
}

/// The device a route leaves by.
pub fn route_dev<'a>(ns: &'a Namespace, r: &Route) -> Option<&'a Interface> {
    r.dev
        .as_deref()
        .and_then(|d| ns.interface_named(d))
        .or_else(|| r.oif.and_then(|o| ns.interface(o)))
}

/// The next-hop address for `ip` through route `r`: its gateway, else `ip` itself.
pub fn next_hop(r: &Route, ip: IpAddr) -> IpAddr {
    r.gateway
        .as_deref()
        .and_then(|g| g.parse().ok())
        .unwrap_or(ip)
}

/// A route in the words of `ip route`: `default via 192.168.88.1 dev veth01`.
pub fn show_route(r: &Route) -> String {
    let mut s = r.dst.clone();
    if let Some(g) = &r.gateway {
        s.push_str(&format!(" via {g}"));
    }
    if let Some(d) = &r.dev {
        s.push_str(&format!(" dev {d}"));
    }
    s
}

/// The namespace and interface that carry `ip` as an address.
pub fn owner_of_ip(topo: &Topology, ip: IpAddr) -> Option<(&Namespace, &Interface)> {
    topo.namespaces.iter().find_map(|ns| {
        ns.interfaces
            .iter()
            .find(|i| i.name != "lo" && addrs(i).any(|c| c.addr == ip))
            .map(|i| (ns, i))
    })
}

/// The interface `ifname` of the namespace with display name `ns`.
pub fn iface<'a>(
    topo: &'a Topology,
    ns: &str,
    ifname: &str,
) -> Option<(&'a Namespace, &'a Interface)> {
    let n = topo.namespaces.iter().find(|n| n.name == ns)?;
    Some((n, n.interface_named(ifname)?))
}

/// The bridge `i` is a port of, when its master is a bridge of the same namespace.
pub fn bridge_of<'a>(ns: &'a Namespace, i: &Interface) -> Option<&'a Interface> {
    let m = ns.interface_named(i.master.as_deref()?)?;
    (m.kind == "bridge").then_some(m)
}

/// The veth (or netkit) peer of `i`, when its namespace was read.
pub fn peer<'a>(topo: &'a Topology, i: &Interface) -> Option<(&'a Namespace, &'a Interface)> {
    topo.resolve(i.peer.as_ref()?)
}

/// Whether a device cannot carry packets: administratively down, or down for lack of carrier
/// (NO-CARRIER, LOWERLAYERDOWN). `unknown` (bridges without ports, loopback, tunnels) is fine.
pub fn unusable(i: &Interface) -> bool {
    !i.admin_up || matches!(i.state.as_str(), "down" | "lowerlayerdown" | "notpresent")
}

/// How the device is down, in `ip link`'s words.
pub fn down_words(i: &Interface) -> String {
    if !i.admin_up {
        "administratively down".into()
    } else if i.state == "lowerlayerdown" {
        "up but LOWERLAYERDOWN".into()
    } else {
        format!("up but has no carrier (state {})", i.state.to_uppercase())
    }
}

/// The prefix that runs a command inside namespace `ns` (display name): nothing for `host`,
/// `ip netns exec NAME ` for ip-netns names, `nsenter -t PID -n ` for process namespaces.
pub fn exec_in(topo: &Topology, ns: &str) -> String {
    match topo.namespaces.iter().find(|n| n.name == ns) {
        Some(n) if n.name == "host" => String::new(),
        Some(n) => match (&n.netns_name, n.pids.first()) {
            (Some(name), _) => format!("ip netns exec {name} "),
            (None, Some(pid)) => format!("nsenter -t {pid} -n "),
            (None, None) => format!("nsenter --net={} ", n.path),
        },
        None if ns == "host" => String::new(),
        None => format!("ip netns exec {ns} "),
    }
}

/// `ip` for namespace `ns`: `ip -n NAME` for ip-netns names, else `ip` behind [`exec_in`].
pub fn ip_in(topo: &Topology, ns: &str) -> String {
    let netns_name = match topo.namespaces.iter().find(|n| n.name == ns) {
        Some(n) => n.netns_name.clone(),
        None if ns == "host" => None,
        None => Some(ns.to_string()),
    };
    match netns_name {
        Some(name) if ns != "host" => format!("ip -n {name}"),
        _ => format!("{}ip", exec_in(topo, ns)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::fixture;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("literal")
    }

    #[test]
    fn cidr_parse_contains_network() {
        let c = Cidr::parse("192.168.88.1/24").expect("valid");
        assert!(c.contains(ip("192.168.88.200")));
        assert!(!c.contains(ip("192.168.89.1")));
        assert!(!c.contains(ip("::1")));
        assert_eq!(c.network().to_string(), "192.168.88.0/24");
        assert_eq!(Cidr::parse("10.0.0.1").map(|c| c.len), Some(32));
        assert!(Cidr::parse("default")
            .expect("valid")
            .contains(ip("8.8.8.8")));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        let v6 = Cidr::parse("fd00::1/64").expect("valid");
        assert!(v6.contains(ip("fd00::99")));
        assert_eq!(v6.network().to_string(), "fd00::/64");
    }

    #[test]
    fn route_lookup_takes_the_longest_prefix_then_the_default() {
        let t = fixture::bridge();
        let node = &t.namespaces[0];
        let r = route_lookup(node, ip("192.168.88.12")).expect("connected");
        assert_eq!(r.dev.as_deref(), Some("br01"));
        let r = route_lookup(node, ip("10.99.0.2")).expect("connected");
        assert_eq!(r.dev.as_deref(), Some("eth1"));
        let r = route_lookup(node, ip("8.8.8.8")).expect("default");
        assert_eq!(show_route(r), "default via 10.99.0.2 dev eth1");
        assert_eq!(next_hop(r, ip("8.8.8.8")), ip("10.99.0.2"));
        let wan = t.namespaces.iter().find(|n| n.name == "wan").expect("wan");
        assert!(route_lookup(wan, ip("192.168.88.11")).is_none());
        assert!(is_local(node, ip("192.168.88.1")));
        assert!(!is_local(node, ip("192.168.88.11")));
    }

    #[test]
    fn commands_use_the_namespace_names_users_type() {
        let t = fixture::bridge();
        assert_eq!(exec_in(&t, "node"), "ip netns exec node ");
        assert_eq!(ip_in(&t, "node"), "ip -n node");
        assert_eq!(exec_in(&t, "host"), "");
        assert_eq!(ip_in(&t, "host"), "ip");
        assert_eq!(ip_in(&t, "other"), "ip -n other");
        let mut t2 = t.clone();
        t2.namespaces[1].netns_name = None;
        t2.namespaces[1].pids = vec![4242];
        assert_eq!(ip_in(&t2, "ns01"), "nsenter -t 4242 -n ip");
    }

    #[test]
    fn owners_bridges_peers_and_states() {
        let t = fixture::bridge();
        let (ns, i) = owner_of_ip(&t, ip("192.168.88.12")).expect("ns02 owns it");
        assert_eq!((ns.name.as_str(), i.name.as_str()), ("ns02", "veth02"));
        let (node, port) = iface(&t, "node", "br-veth01").expect("exists");
        assert_eq!(bridge_of(node, port).map(|b| b.name.as_str()), Some("br01"));
        let (pns, p) = peer(&t, port).expect("peer resolves");
        assert_eq!((pns.name.as_str(), p.name.as_str()), ("ns01", "veth01"));
        let mut down = p.clone();
        assert!(!unusable(&down));
        down.state = "lowerlayerdown".into();
        assert!(unusable(&down));
        assert_eq!(down_words(&down), "up but LOWERLAYERDOWN");
        down.admin_up = false;
        assert_eq!(down_words(&down), "administratively down");
    }
}
