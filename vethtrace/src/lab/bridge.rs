//! The `bridge` lab (like docker0) and its faults.
//!
//! Owns: roles `node`, `ns01`, `ns02` (and `wan`, only once [`Fault::Uplink`] is enabled).
//! node has bridge `br01` 192.168.88.1/24; ns01 `veth01` 192.168.88.11/24 paired with node's
//! `br-veth01`, ns02 `veth02` 192.168.88.12/24 with `br-veth02`, both host ends enslaved to br01;
//! pods route by default via 192.168.88.1.
//!
//! Faults: [`forward_drop`] (bridge-nf-call-iptables=1 and `iptables -P FORWARD DROP` in the
//! node, what Docker does) and [`uplink`] (node `eth1` 10.99.0.1/24 <-> wan `eth0` 10.99.0.2/24,
//! node ip_forward=1, wan has no route back to 192.168.88.0/24, so pods reach wan only with the
//! optional MASQUERADE rule). All of it inside the lab's namespaces.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::Result;

use super::{Fault, Lab};

/// The pod subnet on br01.
const POD_SUBNET: &str = "192.168.88.0/24";

pub(super) fn build(lab: &mut Lab) -> Result<()> {
    for role in ["node", "ns01", "ns02"] {
        lab.add_ns(role)?;
    }

    lab.ip_cmd("node", "link add br01 type bridge")?;
    lab.iface("node", "br01", "bridge", false);
    lab.add_addr("node", "br01", "192.168.88.1/24")?;
    lab.ip_cmd("node", "link set dev br01 up")?;
    lab.set_main_addr("node", IpAddr::V4(Ipv4Addr::new(192, 168, 88, 1)));

    let pods = [
        ("ns01", "veth01", "br-veth01", 11),
        ("ns02", "veth02", "br-veth02", 12),
    ];
    for (pod, ifname, host_if, last) in pods {
        lab.veth((pod, ifname), ("node", host_if), None)?;
        lab.ip_cmd("node", &format!("link set dev {host_if} master br01"))?;
        lab.iface_note("node", host_if, ", port of br01");
        lab.add_addr(pod, ifname, &format!("192.168.88.{last}/24"))?;
        lab.ip_cmd(pod, "route add default via 192.168.88.1")?;
        lab.note(format!("{pod}: default via 192.168.88.1 dev {ifname}"));
        lab.set_main_addr(pod, IpAddr::V4(Ipv4Addr::new(192, 168, 88, last)));
    }
    Ok(())
}

/// bridge-nf-call-iptables=1 and FORWARD policy DROP in the node, as Docker leaves a host.
pub(super) fn forward_drop(lab: &mut Lab) -> Result<()> {
    lab.sysctl("node", "net.bridge.bridge-nf-call-iptables", "1")?;
    lab.exec("node", &["iptables", "-P", "FORWARD", "DROP"])?;
    lab.note("node: net.bridge.bridge-nf-call-iptables=1".to_owned());
    lab.note("node: iptables -P FORWARD DROP".to_owned());
    Ok(())
}

/// Adds the `wan` namespace behind an uplink from the node (once), and the MASQUERADE rule
/// when asked (once).
pub(super) fn uplink(lab: &mut Lab, masquerade: bool) -> Result<()> {
    let have_uplink = lab.faults.iter().any(|f| matches!(f, Fault::Uplink { .. }));
    if !have_uplink {
        lab.add_ns("wan")?;
        lab.veth(("node", "eth1"), ("wan", "eth0"), None)?;
        lab.add_addr("node", "eth1", "10.99.0.1/24")?;
        lab.add_addr("wan", "eth0", "10.99.0.2/24")?;
        lab.set_main_addr("wan", IpAddr::V4(Ipv4Addr::new(10, 99, 0, 2)));
        lab.sysctl("node", "net.ipv4.ip_forward", "1")?;
        lab.note("node: net.ipv4.ip_forward=1".to_owned());
        lab.note(format!("wan: no route back to {POD_SUBNET}"));
        lab.settle();
    }
    let have_masquerade = lab.faults.contains(&Fault::Uplink { masquerade: true });
    if masquerade && !have_masquerade {
        let rule =
            format!("iptables -t nat -A POSTROUTING -s {POD_SUBNET} ! -o br01 -j MASQUERADE");
        lab.exec("node", &rule.split_whitespace().collect::<Vec<_>>())?;
        lab.note(format!("node: {rule}"));
    }
    Ok(())
}
