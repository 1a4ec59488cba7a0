//! The `routed` lab: GKE-style routed pods, no bridge.
//!
//! Owns: roles `node`, `pod1` (10.188.2.2), `pod2` (10.188.2.3). Each pod has `eth0` with its
//! IP/24 and a default route via 10.188.2.1; each host end is a CNI-style `veth<8 hex>` in the
//! node carrying 10.188.2.1/32 with proxy_arp=1, and the node routes each pod with a /32
//! (`10.188.2.2/32 dev veth…`). ip_forward=1 in the node; proxy_delay=0 on the host veths
//! (as Calico sets it) so proxied ARP replies are not held back up to 0.8 s. Pod-to-pod traffic
//! is routed by the node: the pods ARP for each other and the host veth answers (proxy ARP).

use std::net::{IpAddr, Ipv4Addr};

use anyhow::Result;

use super::Lab;

/// (pod, last octet).
const PODS: [(&str, u8); 2] = [("pod1", 2), ("pod2", 3)];

pub(super) fn build(lab: &mut Lab) -> Result<()> {
    lab.add_ns("node")?;
    for (pod, _) in PODS {
        lab.add_ns(pod)?;
    }
    lab.sysctl("node", "net.ipv4.ip_forward", "1")?;
    lab.note("node: net.ipv4.ip_forward=1".to_owned());
    lab.set_main_addr("node", IpAddr::V4(Ipv4Addr::new(10, 188, 2, 1)));

    for (pod, last) in PODS {
        let host_if = lab.host_veth_name(pod);
        lab.veth((pod, "eth0"), ("node", &host_if), None)?;
        lab.add_addr("node", &host_if, "10.188.2.1/32")?;
        lab.sysctl("node", &format!("net.ipv4.conf.{host_if}.proxy_arp"), "1")?;
        // Answer proxied ARP at once instead of after up to 0.8 s, as Calico does.
        lab.sysctl(
            "node",
            &format!("net.ipv4.neigh.{host_if}.proxy_delay"),
            "0",
        )?;
        lab.iface_note("node", &host_if, ", proxy_arp=1, proxy_delay=0");
        let route = format!("10.188.2.{last}/32 dev {host_if}");
        lab.ip_cmd("node", &format!("route add {route}"))?;
        lab.note(format!("node: {route}"));

        lab.add_addr(pod, "eth0", &format!("10.188.2.{last}/24"))?;
        lab.ip_cmd(pod, "route add default via 10.188.2.1")?;
        lab.note(format!("{pod}: default via 10.188.2.1 dev eth0"));
        lab.set_main_addr(pod, IpAddr::V4(Ipv4Addr::new(10, 188, 2, last)));
    }
    Ok(())
}
