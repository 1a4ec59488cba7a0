//! Forwarding-database entries of one namespace from an AF_BRIDGE RTM_GETNEIGH dump: what
//! `bridge fdb` and `brctl showmacs` print — learned and local MACs per bridge port, and the
//! remote VTEPs of vxlan devices.
//!
//! Owns: the translation from neighbour messages to [`FdbEntry`] (pure, unit-tested).

use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};

use super::{links::format_mac, model::FdbEntry};

/// USER_HZ: the unit of NDA_CACHEINFO's times.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// One FDB entry with ifindexes still to be named: (entry, port ifindex, master ifindex).
pub fn fdb_of(msg: &NeighbourMessage) -> Option<(FdbEntry, u32, Option<u32>)> {
    let mut e = FdbEntry {
        ifindex: msg.header.ifindex,
        local: msg.header.state == NeighbourState::Permanent,
        is_self: msg.header.flags.contains(NeighbourFlags::Own),
        ..Default::default()
    };
    let mut master = None;
    let mut mac = None;
    for a in &msg.attributes {
        match a {
            NeighbourAttribute::LinkLayerAddress(l) => mac = format_mac(l),
            NeighbourAttribute::Controller(m) => master = Some(*m),
            NeighbourAttribute::Vlan(v) => e.vlan = Some(*v),
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => {
                e.dst = Some(ip.to_string())
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => {
                e.dst = Some(ip.to_string())
            }
            // With family AF_BRIDGE the crate cannot tell a vxlan remote's address family.
            NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => e.dst = raw_ip(b),
            NeighbourAttribute::CacheInfo(c) if !e.local => {
                e.age_secs = Some(f64::from(c.updated) / CLOCK_TICKS_PER_SEC);
            }
            _ => {}
        }
    }
    e.mac = mac?;
    Some((e, msg.header.ifindex, master))
}

/// A 4- or 16-byte address as text.
fn raw_ip(b: &[u8]) -> Option<String> {
    if let Ok(v4) = <[u8; 4]>::try_from(b) {
        return Some(std::net::Ipv4Addr::from(v4).to_string());
    }
    <[u8; 16]>::try_from(b)
        .ok()
        .map(|v6| std::net::Ipv6Addr::from(v6).to_string())
}

/// Names the ports and masters; entries on unknown ports are kept with an empty name.
pub fn assemble(
    raw: Vec<(FdbEntry, u32, Option<u32>)>,
    name_of: impl Fn(u32) -> Option<String>,
) -> Vec<FdbEntry> {
    raw.into_iter()
        .map(|(mut e, port, master)| {
            e.port = name_of(port).unwrap_or_default();
            e.master = master.and_then(&name_of);
            e
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::{neighbour::NeighbourCacheInfo, AddressFamily};

    use super::*;

    #[test]
    fn learned_local_and_vxlan_entries() {
        let mut learned = NeighbourMessage::default();
        learned.header.family = AddressFamily::Bridge;
        learned.header.ifindex = 5;
        learned.header.state = NeighbourState::Reachable;
        learned.header.flags = NeighbourFlags::Controller;
        // confirmed, used, updated (250 ticks), refcnt
        let raw: Vec<u8> = [0u32, 0, 250, 1]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        let ci = NeighbourCacheInfo::parse(&raw).expect("cache info");
        learned.attributes = vec![
            NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 1]),
            NeighbourAttribute::Controller(4),
            NeighbourAttribute::CacheInfo(ci),
        ];
        let mut remote = NeighbourMessage::default();
        remote.header.ifindex = 6;
        remote.header.state = NeighbourState::Permanent;
        remote.header.flags = NeighbourFlags::Own;
        remote.attributes = vec![
            NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 2]),
            NeighbourAttribute::Destination(NeighbourAddress::Other(vec![172, 30, 0, 2])),
        ];
        let raw: Vec<_> = [&learned, &remote]
            .iter()
            .filter_map(|m| fdb_of(m))
            .collect();
        let names = |i: u32| match i {
            4 => Some("br01".to_string()),
            5 => Some("br-veth01".to_string()),
            6 => Some("flannel.1".to_string()),
            _ => None,
        };
        let e = assemble(raw, names);
        assert_eq!(e[0].mac, "02:00:00:00:00:01");
        assert_eq!(
            (e[0].port.as_str(), e[0].master.as_deref()),
            ("br-veth01", Some("br01"))
        );
        assert_eq!(e[0].age_secs, Some(2.5));
        assert!(!e[0].local);
        assert_eq!(e[1].dst.as_deref(), Some("172.30.0.2"));
        assert!(e[1].is_self && e[1].local);
        assert_eq!(e[1].master, None);
    }
}
