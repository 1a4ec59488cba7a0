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
    let mut c = Correlator::default();
    for o in obs {
        c.push(o);
    }
    c.flush_all()
}

/// Streaming correlation for live traces: observations go in as the ring is drained, packets
/// come out once no hop was added to them for a while.
#[derive(Default)]
pub struct Correlator {
    /// Packets still collecting hops, in order of their first hop.
    open: Vec<PacketPath>,
    index: HashMap<PacketKey, usize>,
}

impl Correlator {
    /// Adds one observation to its packet (a new one when the key is new, or was last seen
    /// longer than [`SAME_PACKET_WINDOW_NS`] ago). Hops stay in time order even when events
    /// from several CPUs arrive slightly out of order.
    pub fn push(&mut self, o: Observation) {
        let key = PacketKey::of(o.flow());
        let reuse = self.index.get(&key).copied().filter(|&i| {
            self.open[i]
                .hops
                .last()
                .is_some_and(|h| o.ts_ns.abs_diff(h.ts_ns) <= SAME_PACKET_WINDOW_NS)
        });
        match reuse {
            Some(i) => {
                let hops = &mut self.open[i].hops;
                let at = hops.partition_point(|h| h.ts_ns <= o.ts_ns);
                hops.insert(at, o);
            }
            None => {
                self.open.push(PacketPath { key, hops: vec![o] });
                self.index.insert(key, self.open.len() - 1);
            }
        }
    }

    /// Packets whose last hop is more than `idle_ns` older than `now_ns`, oldest first.
    pub fn flush_idle(&mut self, now_ns: u64, idle_ns: u64) -> Vec<PacketPath> {
        let is_idle = |p: &PacketPath| {
            p.hops
                .last()
                .is_some_and(|h| now_ns.saturating_sub(h.ts_ns) > idle_ns)
        };
        if !self.open.iter().any(is_idle) {
            return Vec::new();
        }
        let (done, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.open)
            .into_iter()
            .partition(|p| is_idle(p));
        self.open = keep;
        self.reindex();
        done
    }

    /// Every packet still open, oldest first.
    pub fn flush_all(&mut self) -> Vec<PacketPath> {
        self.index.clear();
        let mut all = std::mem::take(&mut self.open);
        all.sort_by_key(PacketPath::first_ts);
        all
    }

    pub fn pending(&self) -> usize {
        self.open.len()
    }

    fn reindex(&mut self) {
        self.index = self
            .open
            .iter()
            .enumerate()
            .map(|(i, p)| (p.key, i))
            .collect();
    }
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
    fn streaming_flushes_only_idle_packets_with_hops_in_time_order() {
        let e = What::Hook(Dir::Egress);
        let i = What::Hook(Dir::Ingress);
        let mut c = Correlator::default();
        c.push(obs(100, "a", "eth0", e.clone(), icmp(1, 64, 8)));
        // Arrives late from another CPU, but happened earlier than the next one.
        c.push(obs(300, "b", "eth0", i.clone(), icmp(1, 63, 8)));
        c.push(obs(200, "node", "veth1", i.clone(), icmp(1, 64, 8)));
        c.push(obs(1_000, "a", "eth0", e, icmp(2, 64, 8)));
        let done = c.flush_idle(1_100, 500);
        assert_eq!(done.len(), 1);
        let names: Vec<_> = done[0].hops.iter().map(|h| h.netns.as_str()).collect();
        assert_eq!(names, ["a", "node", "b"]);
        assert_eq!(c.pending(), 1);
        // The open packet still collects hops after the flush.
        c.push(obs(1_050, "b", "eth0", i, icmp(2, 63, 8)));
        let rest = c.flush_all();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].hops.len(), 2);
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
