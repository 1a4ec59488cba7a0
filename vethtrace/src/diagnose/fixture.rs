//! Hand-built topologies, hops and configurations for the diagnosis unit tests: the bridge lab
//! with its uplink (node, ns01, ns02, wan) and the flannel lab (node1, node2, busybox, nginx),
//! with the names and addresses the real labs use.

use std::{collections::HashMap, net::IpAddr};

use vethtrace_common::Flow;

use crate::{
    correlate::{PacketKey, PacketPath},
    decode::{Dir, Observation, What},
    netconf::{parse_iptables_save, NetConfig},
    topology::{Interface, Namespace, PeerRef, Route, Topology, Vxlan},
};

use super::{Context, Probe};

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

fn iface(ifindex: u32, name: &str, kind: &str, addrs: &[&str]) -> Interface {
    Interface {
        ifindex,
        name: name.into(),
        kind: kind.into(),
        state: if kind == "loopback" { "unknown" } else { "up" }.into(),
        admin_up: true,
        mtu: 1500,
        addrs: addrs.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    }
}

fn peer(netns: &str, inode: u64, ifindex: u32, name: &str) -> Option<PeerRef> {
    Some(PeerRef {
        netns: netns.into(),
        inode: Some(inode),
        ifindex,
        name: Some(name.into()),
        master: None,
    })
}

fn route(dst: &str, gateway: Option<&str>, dev: &str) -> Route {
    Route {
        dst: dst.into(),
        gateway: gateway.map(str::to_string),
        dev: Some(dev.into()),
        oif: None,
    }
}

fn ns(name: &str, inode: u64, interfaces: Vec<Interface>, routes: Vec<Route>) -> Namespace {
    let default_route = routes.iter().find(|r| r.dst == "default").cloned();
    Namespace {
        name: name.into(),
        inode,
        dev: 4,
        cookie: Some(inode),
        path: format!("/run/netns/{name}"),
        netns_name: Some(name.into()),
        interfaces,
        default_route,
        routes,
        ..Default::default()
    }
}

/// The bridge lab with its uplink: node (br01 192.168.88.1/24, ports br-veth01/br-veth02,
/// eth1 10.99.0.1/24 to wan, default via 10.99.0.2), pods ns01 .11 and ns02 .12, and wan
/// (10.99.0.2/24, no route back to the pods).
pub fn bridge() -> Topology {
    let mut p1 = iface(3, "br-veth01", "veth", &[]);
    p1.master = Some("br01".into());
    p1.peer = peer("ns01", 101, 2, "veth01");
    let mut p2 = iface(4, "br-veth02", "veth", &[]);
    p2.master = Some("br01".into());
    p2.peer = peer("ns02", 102, 2, "veth02");
    let mut eth1 = iface(5, "eth1", "veth", &["10.99.0.1/24"]);
    eth1.peer = peer("wan", 103, 2, "eth0");
    let node = ns(
        "node",
        100,
        vec![
            iface(1, "lo", "loopback", &["127.0.0.1/8"]),
            iface(2, "br01", "bridge", &["192.168.88.1/24"]),
            p1,
            p2,
            eth1,
        ],
        vec![
            route("192.168.88.0/24", None, "br01"),
            route("10.99.0.0/24", None, "eth1"),
            route("default", Some("10.99.0.2"), "eth1"),
        ],
    );
    let pod = |name: &str, inode: u64, ifname: &str, addr: &str, host_if: u32, host: &str| {
        let mut e = iface(2, ifname, "veth", &[addr]);
        e.peer = peer("node", 100, host_if, host);
        ns(
            name,
            inode,
            vec![iface(1, "lo", "loopback", &["127.0.0.1/8"]), e],
            vec![
                route("192.168.88.0/24", None, ifname),
                route("default", Some("192.168.88.1"), ifname),
            ],
        )
    };
    let mut weth = iface(2, "eth0", "veth", &["10.99.0.2/24"]);
    weth.peer = peer("node", 100, 5, "eth1");
    Topology {
        namespaces: vec![
            node,
            pod("ns01", 101, "veth01", "192.168.88.11/24", 3, "br-veth01"),
            pod("ns02", 102, "veth02", "192.168.88.12/24", 4, "br-veth02"),
            ns(
                "wan",
                103,
                vec![iface(1, "lo", "loopback", &["127.0.0.1/8"]), weth],
                vec![route("10.99.0.0/24", None, "eth0")],
            ),
        ],
    }
}

/// The flannel lab: node1/node2 with cni0 (MTU 1450) and flannel.1 (vxlan, MTU 1450) over an
/// eth0 veth underlay; busybox (10.222.1.3) on node1, nginx (10.222.2.3) on node2.
pub fn flannel() -> Topology {
    let node = |n: u32, inode: u64, other_inode: u64, pod: (&str, u64)| {
        let mut cni0 = iface(2, "cni0", "bridge", &[&format!("10.222.{n}.1/24")]);
        cni0.mtu = 1450;
        let mut port = iface(3, &format!("veth0000000{n}"), "veth", &[]);
        port.master = Some("cni0".into());
        port.mtu = 1450;
        port.peer = peer(pod.0, pod.1, 2, "eth0");
        let mut vx = iface(4, "flannel.1", "vxlan", &[&format!("10.222.{n}.0/32")]);
        vx.mtu = 1450;
        vx.state = "unknown".into();
        vx.vxlan = Some(Vxlan {
            vni: 1,
            local: Some(format!("172.30.0.{n}")),
            port: 8472,
            underlay: Some("eth0".into()),
            underlay_ifindex: Some(5),
            ..Default::default()
        });
        let mut eth0 = iface(5, "eth0", "veth", &[&format!("172.30.0.{n}/24")]);
        let m = 3 - n;
        eth0.peer = peer(&format!("node{m}"), other_inode, 5, "eth0");
        let name = format!("node{n}");
        ns(
            &name,
            inode,
            vec![
                iface(1, "lo", "loopback", &["127.0.0.1/8"]),
                cni0,
                port,
                vx,
                eth0,
            ],
            vec![
                route(&format!("10.222.{n}.0/24"), None, "cni0"),
                route(
                    &format!("10.222.{m}.0/24"),
                    Some(&format!("10.222.{m}.0")),
                    "flannel.1",
                ),
                route("172.30.0.0/24", None, "eth0"),
            ],
        )
    };
    let pod = |name: &str, inode: u64, n: u32, node_inode: u64| {
        let mut e = iface(2, "eth0", "veth", &[&format!("10.222.{n}.3/24")]);
        e.mtu = 1450;
        e.peer = peer(
            &format!("node{n}"),
            node_inode,
            3,
            &format!("veth0000000{n}"),
        );
        ns(
            name,
            inode,
            vec![iface(1, "lo", "loopback", &["127.0.0.1/8"]), e],
            vec![
                route(&format!("10.222.{n}.0/24"), None, "eth0"),
                route("default", Some(&format!("10.222.{n}.1")), "eth0"),
            ],
        )
    };
    Topology {
        namespaces: vec![
            node(1, 200, 201, ("busybox", 210)),
            node(2, 201, 200, ("nginx", 211)),
            pod("busybox", 210, 1, 200),
            pod("nginx", 211, 2, 201),
        ],
    }
}

/// A macvlan container: node (eth0 10.77.0.1/24) and pod, whose mv1 (10.77.0.2/24) is a
/// macvlan (or `kind`) in `mode` on node's eth0, moved into pod.
pub fn macvlan(kind: &str, mode: &str) -> Topology {
    let mut mv1 = iface(3, "mv1", kind, &["10.77.0.2/24"]);
    mv1.lower = peer("node", 1, 2, "eth0");
    mv1.mode = Some(mode.into());
    Topology {
        namespaces: vec![
            ns(
                "node",
                1,
                vec![
                    iface(1, "lo", "loopback", &["127.0.0.1/8"]),
                    iface(2, "eth0", "veth", &["10.77.0.1/24"]),
                ],
                vec![route("10.77.0.0/24", None, "eth0")],
            ),
            ns(
                "pod",
                2,
                vec![iface(1, "lo", "loopback", &["127.0.0.1/8"]), mv1],
                vec![route("10.77.0.0/24", None, "mv1")],
            ),
        ],
    }
}

/// An ICMP echo request (or reply) flow between two IPv4 addresses.
pub fn flow(src: &str, dst: &str, reply: bool) -> Flow {
    let mut f = Flow {
        ethertype: 0x0800,
        l4: 1,
        icmp_type: if reply { 0 } else { 8 },
        icmp_id: 7,
        icmp_seq: 1,
        ..Default::default()
    };
    for (out, s) in [(&mut f.src, src), (&mut f.dst, dst)] {
        if let IpAddr::V4(v4) = ip(s) {
            out[..4].copy_from_slice(&v4.octets());
        }
    }
    f
}

/// Builds a packet's hops: `("ns", "if", "egress" | "ingress" | "drop:REASON")`.
pub fn path(f: Flow, hops: &[(&str, &str, &str)]) -> PacketPath {
    let hops = hops
        .iter()
        .enumerate()
        .map(|(n, (netns, ifname, what))| {
            let what = match *what {
                "egress" => What::Hook(Dir::Egress),
                "ingress" => What::Hook(Dir::Ingress),
                other => What::Drop {
                    reason: other.trim_start_matches("drop:").into(),
                    location: "somewhere+0x1".into(),
                },
            };
            Observation {
                ts_ns: 1000 * n as u64,
                netns: netns.to_string().into(),
                ifindex: 0,
                ifname: Some(ifname.to_string().into()),
                what,
                len: 84,
                mark: 0,
                outer: f,
                extras: Default::default(),
            }
        })
        .collect();
    PacketPath {
        key: PacketKey::of(&f),
        hops,
    }
}

/// A probe of 56 bytes from `from` with the given legs, not (yet) marked replied.
pub fn probe<'a>(
    src: &str,
    dst: &str,
    from: &'a str,
    request: Option<&'a PacketPath>,
    reply: Option<&'a PacketPath>,
) -> Probe<'a> {
    Probe {
        src: ip(src),
        dst: ip(dst),
        from_netns: from,
        size: 56,
        request,
        reply,
        replied: false,
        icmp_errors: Vec::new(),
    }
}

/// Configurations by namespace name.
pub type Configs = HashMap<String, NetConfig>;

/// A configuration with this `iptables-save -c` text and ip_forward.
pub fn config(iptables: &str, ip_forward: bool) -> NetConfig {
    NetConfig {
        ip_forward: Some(ip_forward),
        rp_filter: vec![("all".into(), 0), ("default".into(), 0)],
        bridge_nf_call_iptables: None,
        chains: parse_iptables_save(iptables),
        neighbours: Vec::new(),
    }
}

pub fn cx<'a>(topo: &'a Topology, before: &'a Configs, after: &'a Configs) -> Context<'a> {
    Context {
        topo,
        before,
        after,
    }
}
