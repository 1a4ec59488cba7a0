//! The `flannel` lab: two nodes joined by a flannel-style VXLAN overlay.
//!
//! Owns: roles `node1`, `node2` and the pods `busybox` (10.222.1.3), `busybox2` (10.222.1.4) on
//! node1, `nginx` (10.222.2.3), `redis` (10.222.2.4) on node2. Underlay: veth `eth0` in node1
//! (172.30.0.1/24) <-> `eth0` in node2 (172.30.0.2/24). Each node N has bridge `cni0`
//! 10.222.N.1/24 MTU 1450; each pod has `eth0` (MTU 1450, default via 10.222.N.1) paired with a
//! CNI-style host veth `veth<8 hex>` enslaved to cni0. Each node's `flannel.1` is a vxlan (id 1,
//! dstport 8472, nolearning, MTU 1450, 10.222.N.0/32) with what flanneld would program for the
//! other node M: route `10.222.M.0/24 via 10.222.M.0 dev flannel.1 onlink`, a permanent
//! neighbour for 10.222.M.0 with M's flannel.1 MAC, and an fdb entry sending that MAC to M's
//! underlay IP. ip_forward=1 in both nodes.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::Result;

use super::{shell, Lab};

/// MTU of cni0, flannel.1 and the pods' eth0 (1500 minus the VXLAN overhead).
const MTU: u32 = 1450;

/// (pod, node number, last octet).
const PODS: [(&str, u8, u8); 4] = [
    ("busybox", 1, 3),
    ("busybox2", 1, 4),
    ("nginx", 2, 3),
    ("redis", 2, 4),
];

fn node(n: u8) -> String {
    format!("node{n}")
}

pub(super) fn build(lab: &mut Lab) -> Result<()> {
    for n in [1, 2] {
        lab.add_ns(&node(n))?;
    }
    for (pod, _, _) in PODS {
        lab.add_ns(pod)?;
    }

    // Underlay.
    lab.veth(("node1", "eth0"), ("node2", "eth0"), None)?;
    for n in [1u8, 2] {
        let role = node(n);
        lab.add_addr(&role, "eth0", &format!("172.30.0.{n}/24"))?;
        lab.sysctl(&role, "net.ipv4.ip_forward", "1")?;
        lab.note(format!("{role}: net.ipv4.ip_forward=1"));
    }

    // cni0 and flannel.1 on each node.
    for n in [1u8, 2] {
        let role = node(n);
        lab.ip_cmd(&role, &format!("link add cni0 mtu {MTU} type bridge"))?;
        lab.iface(&role, "cni0", &format!("bridge, mtu {MTU}"), false);
        lab.add_addr(&role, "cni0", &format!("10.222.{n}.1/24"))?;
        lab.ip_cmd(&role, "link set dev cni0 up")?;
        lab.set_main_addr(&role, IpAddr::V4(Ipv4Addr::new(10, 222, n, 1)));

        let vxlan = format!("vxlan id 1 local 172.30.0.{n} dev eth0 dstport 8472 nolearning");
        lab.ip_cmd(&role, &format!("link add flannel.1 mtu {MTU} type {vxlan}"))?;
        lab.iface(&role, "flannel.1", &format!("{vxlan}, mtu {MTU}"), false);
        lab.add_addr(&role, "flannel.1", &format!("10.222.{n}.0/32"))?;
        lab.ip_cmd(&role, "link set dev flannel.1 up")?;
    }

    // What flanneld programs for the other node.
    let macs = [
        lab.mac("node1", "flannel.1")?,
        lab.mac("node2", "flannel.1")?,
    ];
    for (n, m) in [(1u8, 2u8), (2, 1)] {
        let role = node(n);
        let mac = &macs[usize::from(m - 1)];
        let route = format!("10.222.{m}.0/24 via 10.222.{m}.0 dev flannel.1 onlink");
        lab.ip_cmd(&role, &format!("route add {route}"))?;
        lab.note(format!("{role}: {route}"));
        let neigh = format!("10.222.{m}.0 lladdr {mac} dev flannel.1 nud permanent");
        lab.ip_cmd(&role, &format!("neigh add {neigh}"))?;
        lab.note(format!("{role}: neigh {neigh}"));
        let fdb = format!("{mac} dev flannel.1 dst 172.30.0.{m}");
        let ns = lab.netns(&role)?.to_owned();
        let mut argv = vec!["bridge", "-n", ns.as_str(), "fdb", "append"];
        argv.extend(fdb.split_whitespace());
        shell::run(&argv)?;
        lab.note(format!("{role}: fdb {fdb}"));
    }

    // Pods.
    for (pod, n, last) in PODS {
        let role = node(n);
        let host_if = lab.host_veth_name(pod);
        lab.veth((pod, "eth0"), (&role, &host_if), Some(MTU))?;
        lab.ip_cmd(&role, &format!("link set dev {host_if} master cni0"))?;
        lab.iface_note(&role, &host_if, ", port of cni0");
        lab.add_addr(pod, "eth0", &format!("10.222.{n}.{last}/24"))?;
        lab.ip_cmd(pod, &format!("route add default via 10.222.{n}.1"))?;
        lab.note(format!("{pod}: default via 10.222.{n}.1 dev eth0"));
        lab.set_main_addr(pod, IpAddr::V4(Ipv4Addr::new(10, 222, n, last)));
    }
    Ok(())
}
