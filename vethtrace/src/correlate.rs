//! Correlation: observations of the same packet at different hooks are grouped by the packet's
//! fingerprint (addresses, protocol, IP id, ICMP id/seq or TCP seq; the inner packet's for
//! VXLAN frames), never by skb pointer, and ordered by time into a path of hops.

use std::collections::HashMap;

use vethtrace_common::Flow;

use crate::decode::Observation;

/// Observations of one key further apart than this are different packets (a retransmission).
pub const SAME_PACKET_WINDOW_NS: u64 = 1_000_000_000;

/// What identifies one packet along its path. TTL and the outer headers of a tunnel change
/// from hop to hop; none of these fields do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PacketKey {
    pub ethertype: u16,
    pub l4: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub ip_id: u32,
    /// ICMP (type, id, seq), TCP (ports, seq), UDP (ports), ARP (op).
    pub detail: [u32; 3],
}

impl PacketKey {
    pub fn of(f: &Flow) -> Self {
        let ports = ((f.sport as u32) << 16) | f.dport as u32;
        let detail = match (f.ethertype, f.l4) {
            (0x0806, _) => [f.arp_op as u32, 0, 0],
            (_, 1 | 58) => [
                ((f.icmp_type as u32) << 8) | f.icmp_code as u32,
                f.icmp_id as u32,
                f.icmp_seq as u32,
            ],
            (_, 6) => [ports, f.tcp_seq, f.tcp_flags as u32],
            (_, 17) => [ports, 0, 0],
            _ => [0, 0, 0],
        };
        PacketKey {
            ethertype: f.ethertype,
            l4: f.l4,
            src: f.src,
            dst: f.dst,
            ip_id: if f.ethertype == 0x0800 { f.ip_id } else { 0 },
            detail,
        }
    }
}

/// One packet and every place it was seen, in time order (a drop, if any, among them).
#[derive(Debug, Clone)]
pub struct PacketPath {
    pub key: PacketKey,
    pub hops: Vec<Observation>,
}

impl PacketPath {
    pub fn first_ts(&self) -> u64 {
        self.hops.first().map_or(0, |h| h.ts_ns)
    }

    /// The packet as first seen (its inner packet when encapsulated).
    pub fn flow(&self) -> Flow {
        self.hops.first().map(|h| *h.flow()).unwrap_or_default()
    }

    pub fn drop(&self) -> Option<&Observation> {
        self.hops.iter().find(|h| h.is_drop())
    }
}

/// Groups observations into packet paths, ordered by each packet's first hop.
pub fn correlate(mut obs: Vec<Observation>) -> Vec<PacketPath> {
    obs.sort_by_key(|o| o.ts_ns);
    let mut paths: Vec<PacketPath> = Vec::new();
    let mut open: HashMap<PacketKey, usize> = HashMap::new();
    for o in obs {
        let key = PacketKey::of(o.flow());
        let idx = match open.get(&key) {
            Some(&i)
                if paths[i]
                    .hops
                    .last()
                    .is_some_and(|h| o.ts_ns.saturating_sub(h.ts_ns) <= SAME_PACKET_WINDOW_NS) =>
            {
                i
            }
            _ => {
                paths.push(PacketPath {
                    key,
                    hops: Vec::new(),
                });
                open.insert(key, paths.len() - 1);
                paths.len() - 1
            }
        };
        paths[idx].hops.push(o);
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Dir, What};

    fn obs(ts: u64, ns: &str, ifname: &str, what: What, flow: Flow) -> Observation {
        Observation {
            ts_ns: ts,
            netns_cookie: 0,
            netns: ns.into(),
            ifindex: 0,
            ifname: Some(ifname.into()),
            what,
            len: 84,
            mark: 0,
            outer: flow,
            inner: None,
            truncated: false,
            snapshot: Vec::new(),
            snapshot_l3: false,
        }
    }

    fn icmp(seq: u16, ttl: u8, ty: u8) -> Flow {
        let mut f = Flow {
            ethertype: 0x0800,
            l4: 1,
            ttl,
            icmp_type: ty,
            icmp_id: 7,
            icmp_seq: seq,
            ip_id: 1000 + seq as u32,
            ..Default::default()
        };
        f.src[..4].copy_from_slice(&[10, 0, 0, 1]);
        f.dst[..4].copy_from_slice(&[10, 0, 0, 2]);
        f
    }

    #[test]
    fn groups_hops_by_fingerprint_in_time_order_even_when_ttl_changes() {
        let e = What::Hook(Dir::Egress);
        let i = What::Hook(Dir::Ingress);
        let v = vec![
            obs(30, "b", "eth0", i.clone(), icmp(1, 63, 8)),
            obs(10, "a", "eth0", e.clone(), icmp(1, 64, 8)),
            obs(15, "a", "eth0", e.clone(), icmp(2, 64, 8)),
            obs(20, "node", "veth1", i.clone(), icmp(1, 64, 8)),
        ];
        let p = correlate(v);
        assert_eq!(p.len(), 2);
        let names: Vec<_> = p[0].hops.iter().map(|h| h.netns.as_str()).collect();
        assert_eq!(names, ["a", "node", "b"]);
        assert_eq!(p[1].hops.len(), 1);
        assert_eq!(p[1].flow().icmp_seq, 2);
    }

    #[test]
    fn request_and_reply_are_different_packets() {
        let e = What::Hook(Dir::Egress);
        let p = correlate(vec![
            obs(1, "a", "eth0", e.clone(), icmp(1, 64, 8)),
            obs(2, "b", "eth0", e, icmp(1, 64, 0)),
        ]);
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn a_drop_joins_its_packet() {
        let e = What::Hook(Dir::Egress);
        let d = What::Drop {
            reason: "NETFILTER_DROP".into(),
            location: "nf_hook_slow+0x1".into(),
        };
        let p = correlate(vec![
            obs(1, "a", "eth0", e, icmp(1, 64, 8)),
            obs(5, "node", "br-veth01", d, icmp(1, 64, 8)),
        ]);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].drop().map(|h| h.netns.as_str()), Some("node"));
    }

    #[test]
    fn the_same_key_much_later_is_a_new_packet() {
        let e = What::Hook(Dir::Egress);
        let p = correlate(vec![
            obs(1, "a", "eth0", e.clone(), icmp(1, 64, 8)),
            obs(
                1 + 2 * SAME_PACKET_WINDOW_NS,
                "a",
                "eth0",
                e,
                icmp(1, 64, 8),
            ),
        ]);
        assert_eq!(p.len(), 2);
    }
}
