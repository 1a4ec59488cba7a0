//! Veth peers, lower devices and vxlan underlays across namespaces. Each link carries its
//! peer's ifindex (IFLA_LINK) and, when the peer is elsewhere, an nsid (IFLA_LINK_NETNSID) that
//! only the link's own namespace can translate; `nsid` built that translation per namespace.
//! Ifindexes are per namespace (every pod's eth0 may be ifindex 2), so a peer is always looked
//! up as (namespace, ifindex), never by ifindex alone.
//!
//! Owns: turning those raw references into [`PeerRef`]s (pure, unit-tested).

use std::collections::HashMap;

use super::model::{Namespace, PeerRef};

/// What one link refers to, as dumped.
#[derive(Debug, Clone, Default)]
pub struct LinkRefs {
    pub ifindex: u32,
    pub link_ifindex: Option<u32>,
    pub link_netnsid: Option<i32>,
    pub vxlan_link: Option<u32>,
    /// IFLA_LINK is a peer (veth, netkit).
    pub peer: bool,
    /// IFLA_LINK is a lower device (vlan, macvlan, ipvlan).
    pub lower: bool,
}

/// The raw references of one namespace and its nsid table.
#[derive(Debug, Clone, Default)]
pub struct NsRefs {
    pub inode: u64,
    pub links: Vec<LinkRefs>,
    /// nsid (as assigned in this namespace) → (inode, display name) of the namespace it names.
    pub nsids: HashMap<i32, (u64, String)>,
}

/// Fills `peer`, `lower` and vxlan `underlay` of every interface in `spaces`.
pub fn resolve_peers(spaces: &mut [Namespace], refs: &[NsRefs]) {
    let mut updates: Vec<(usize, u32, Update)> = Vec::new();
    for r in refs {
        let Some(si) = spaces.iter().position(|n| n.inode == r.inode) else {
            continue;
        };
        for l in &r.links {
            let target = |ifindex: u32| reference(spaces, si, r, l.link_netnsid, ifindex);
            if let Some(idx) = l.link_ifindex {
                if l.peer {
                    updates.push((si, l.ifindex, Update::Peer(target(idx))));
                } else if l.lower {
                    updates.push((si, l.ifindex, Update::Lower(target(idx))));
                }
            }
            if let (Some(u), Some(_)) = (l.vxlan_link, l.link_netnsid) {
                updates.push((si, l.ifindex, Update::Underlay(target(u).name)));
            }
        }
    }
    for (si, ifindex, u) in updates {
        let Some(i) = spaces[si]
            .interfaces
            .iter_mut()
            .find(|i| i.ifindex == ifindex)
        else {
            continue;
        };
        match u {
            Update::Peer(p) => i.peer = Some(p),
            Update::Lower(p) => i.lower = Some(p),
            Update::Underlay(name) => {
                if let Some(v) = i.vxlan.as_mut() {
                    v.underlay = name;
                }
            }
        }
    }
}

enum Update {
    Peer(PeerRef),
    Lower(PeerRef),
    Underlay(Option<String>),
}

/// The interface `ifindex` in the namespace that `nsid` names from namespace `si`.
fn reference(
    spaces: &[Namespace],
    si: usize,
    r: &NsRefs,
    nsid: Option<i32>,
    ifindex: u32,
) -> PeerRef {
    let (inode, netns) = match nsid {
        None => (Some(spaces[si].inode), spaces[si].name.clone()),
        Some(id) => match r.nsids.get(&id) {
            Some((inode, name)) => (Some(*inode), name.clone()),
            None => (None, format!("nsid:{id}")),
        },
    };
    let iface = inode
        .and_then(|ino| spaces.iter().find(|n| n.inode == ino))
        .and_then(|ns| ns.interface(ifindex));
    PeerRef {
        netns,
        inode,
        ifindex,
        name: iface.map(|i| i.name.clone()),
        master: iface.and_then(|i| i.master.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::model::Interface;

    fn ns(name: &str, inode: u64, ifaces: &[(u32, &str, Option<&str>)]) -> Namespace {
        Namespace {
            name: name.into(),
            inode,
            interfaces: ifaces
                .iter()
                .map(|(i, n, m)| Interface {
                    ifindex: *i,
                    name: (*n).into(),
                    kind: "veth".into(),
                    master: m.map(Into::into),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn veth(ifindex: u32, peer: u32, nsid: Option<i32>) -> LinkRefs {
        LinkRefs {
            ifindex,
            link_ifindex: Some(peer),
            link_netnsid: nsid,
            peer: true,
            ..Default::default()
        }
    }

    #[test]
    fn colliding_ifindexes_resolve_through_each_namespaces_own_nsids() {
        // node has h1 (ifindex 5) and h2 (ifindex 6); pods a and b both have eth0 = ifindex 2.
        // In node, a is nsid 0 and b nsid 1; in both pods, node is nsid 0.
        let mut spaces = vec![
            ns(
                "node",
                100,
                &[(5, "h1", Some("br0")), (6, "h2", Some("br0"))],
            ),
            ns("a", 200, &[(2, "eth0", None)]),
            ns("b", 300, &[(2, "eth0", None)]),
        ];
        let node_ids: HashMap<i32, (u64, String)> =
            [(0, (200, "a".to_string())), (1, (300, "b".to_string()))].into();
        let pod_ids: HashMap<i32, (u64, String)> = [(0, (100, "node".to_string()))].into();
        let refs = vec![
            NsRefs {
                inode: 100,
                links: vec![veth(5, 2, Some(0)), veth(6, 2, Some(1))],
                nsids: node_ids,
            },
            NsRefs {
                inode: 200,
                links: vec![veth(2, 5, Some(0))],
                nsids: pod_ids.clone(),
            },
            NsRefs {
                inode: 300,
                links: vec![veth(2, 6, Some(0))],
                nsids: pod_ids,
            },
        ];
        resolve_peers(&mut spaces, &refs);
        let p = |s: usize, i: usize| spaces[s].interfaces[i].peer.clone().expect("peer");
        assert_eq!((p(0, 0).netns.as_str(), p(0, 0).inode), ("a", Some(200)));
        assert_eq!((p(0, 1).netns.as_str(), p(0, 1).inode), ("b", Some(300)));
        assert_eq!(p(1, 0).name.as_deref(), Some("h1"));
        assert_eq!(p(2, 0).name.as_deref(), Some("h2"));
        assert_eq!(p(2, 0).master.as_deref(), Some("br0"));
    }

    #[test]
    fn same_namespace_peer_and_unknown_nsid() {
        let mut spaces = vec![ns(
            "x",
            1,
            &[(2, "v0", None), (3, "v1", None), (4, "v2", None)],
        )];
        let refs = vec![NsRefs {
            inode: 1,
            links: vec![veth(2, 3, None), veth(3, 2, None), veth(4, 9, Some(7))],
            nsids: HashMap::new(),
        }];
        resolve_peers(&mut spaces, &refs);
        let p = |i: usize| spaces[0].interfaces[i].peer.clone().expect("peer");
        assert_eq!(
            (p(0).netns.as_str(), p(0).name.as_deref()),
            ("x", Some("v1"))
        );
        assert_eq!(p(1).name.as_deref(), Some("v0"));
        assert_eq!(
            (p(2).netns.as_str(), p(2).inode, p(2).name),
            ("nsid:7", None, None)
        );
    }
}
