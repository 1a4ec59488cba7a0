//! Correlation: observations of the same packet at different hooks are grouped by the packet's
//! fingerprint (addresses, protocol, IP id, ICMP id/seq or TCP seq; the inner packet's for
//! VXLAN frames), never by skb pointer, and ordered by time into a path of hops.

mod index;

use std::{
    collections::VecDeque,
    hash::{Hash, Hasher},
    mem::MaybeUninit,
};

use vethtrace_common::{flag, Event, Flow};

use crate::decode::{Decoder, Observation};
use index::Index;

/// Observations of one key further apart than this are different packets (a retransmission).
pub const SAME_PACKET_WINDOW_NS: u64 = 1_000_000_000;

/// The most hops reserved up front for a new packet (a path through a cluster has 10–20).
const MAX_HOPS_HINT: usize = 16;

/// Hops reserved for a new packet before the first flush says how many packets have: those of
/// a ping across a bridge (container, host veth, bridge port, container).
const FIRST_HOPS_HINT: usize = 4;

/// What identifies one packet along its path. TTL and the outer headers of a tunnel change
/// from hop to hop; none of these fields do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketKey {
    pub ethertype: u16,
    pub l4: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub ip_id: u32,
    /// ICMP (type, id, seq), TCP (ports, seq), UDP (ports), ARP (op).
    pub detail: [u32; 3],
}

/// Every field, as seven 64-bit words: a fast hasher then costs a few multiplies per key
/// instead of one call per byte array (the correlator hashes each event's key).
impl Hash for PacketKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let word = |b: &[u8; 16], i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_ne_bytes(w)
        };
        state.write_u64(word(&self.src, 0));
        state.write_u64(word(&self.src, 8));
        state.write_u64(word(&self.dst, 0));
        state.write_u64(word(&self.dst, 8));
        state.write_u64(
            ((self.ethertype as u64) << 48) | ((self.l4 as u64) << 32) | self.ip_id as u64,
        );
        state.write_u64(((self.detail[0] as u64) << 32) | self.detail[1] as u64);
        state.write_u64(self.detail[2] as u64);
    }
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
///
/// Open packets sit in a queue in order of their first hop, each numbered (`base` is the
/// number of the front slot), and the index maps a key to its newest packet's number. A
/// flush takes idle packets out and leaves holes that are popped once they reach the front,
/// or compacted away when they outnumber the open packets, so a flush costs one pass over
/// the open packets' last-hop times and nothing per packet that stays. Index entries of
/// flushed packets are left behind (a lookup into a table of megabytes is a cache miss) and
/// recognised by their hole; they are swept when they outnumber the open packets.
#[derive(Default)]
pub struct Correlator {
    /// Open packets (`None`: flushed), in order of their first hop.
    slots: VecDeque<Option<Open>>,
    /// Each slot's last hop time (`u64::MAX` for a hole), apart so a flush scans 8 bytes a
    /// packet.
    last_ts: VecDeque<u64>,
    /// The number of `slots[0]`.
    base: u64,
    /// Slots that are not holes.
    live: usize,
    index: Index,
    /// The packet the last observation joined, by key and slot: a packet's hops usually
    /// arrive back to back (one CPU walks it through veth, bridge and veth), and this spares
    /// them the index lookup. Always the key's newest packet; forgotten on every flush.
    last: Option<(PacketKey, usize)>,
    /// Hops reserved for a new packet: as many as the packets of the last flush had on
    /// average (rounded up; [`FIRST_HOPS_HINT`] until then, as 0). Growing a packet's hops hop
    /// by hop copied each observation again and again; reserving a fixed number wastes memory
    /// on traces of one interface.
    hops_hint: usize,
    /// Packets the last flush returned: the next one reserves as many.
    flushed_hint: usize,
    /// The next new packet's hops, allocated and prefetched one packet ahead: memory freed by
    /// a flush tens of milliseconds ago is out of the CPU's caches, and writing a new packet's
    /// first hop into it stalled on that miss (the prefetch measured about 5% more events a
    /// second through decode + correlate).
    spare: Vec<Observation>,
}

struct Open {
    path: PacketPath,
    /// Another open packet had this key when this one started (events more than
    /// [`SAME_PACKET_WINDOW_NS`] apart): flushing this one hands the key back to it.
    shadows: bool,
}

impl Correlator {
    /// Adds one observation to its packet (a new one when the key is new, or was last seen
    /// longer than [`SAME_PACKET_WINDOW_NS`] ago). Hops stay in time order even when events
    /// from several CPUs arrive slightly out of order.
    #[inline]
    pub fn push(&mut self, o: Observation) {
        let (key, ts) = (PacketKey::of(o.flow()), o.ts_ns);
        self.push_with(key, ts, |slot| slot.write(o));
    }

    /// Decodes a ring-buffer record (its header `ev` as [`Event::with_decoded`] read it) and
    /// adds it as [`Correlator::push`] would: its packet is found from the raw header, and the
    /// observation is decoded straight into that packet's hops instead of being built on the
    /// way and moved in (128 bytes an event: see `cargo xtask bench`, figure 5).
    #[inline]
    pub fn push_record(&mut self, decoder: &Decoder<'_>, ev: &Event, record: &[u8]) {
        // The flow `Observation::flow` answers once decoded: the inner one when encapsulated.
        let flow = if ev.flags & flag::ENCAP != 0 {
            &ev.inner
        } else {
            &ev.outer
        };
        self.push_with(PacketKey::of(flow), ev.ts_ns, |slot| {
            decoder.decode_record_into(ev, record, slot)
        });
    }

    /// [`Correlator::push`] of the observation `make` builds, whose key and time are given.
    #[inline]
    fn push_with(
        &mut self,
        key: PacketKey,
        ts: u64,
        make: impl FnOnce(&mut MaybeUninit<Observation>) -> &mut Observation,
    ) {
        if let Some((k, i)) = self.last {
            if k == key && ts.abs_diff(self.last_ts[i]) <= SAME_PACKET_WINDOW_NS {
                if let Some(open) = self.slots[i].as_mut() {
                    self.last_ts[i] = self.last_ts[i].max(ts);
                    add_hop(&mut open.path.hops, ts, make);
                    return;
                }
            }
        }
        self.push_by_index(key, ts, make);
    }

    /// [`Correlator::push`] of a hop that is not the last packet's: looked up in the index.
    /// Kept out of line so that `push`, inlined into the caller's drain loop, is only the fast
    /// path (measured: about 15% more events a second through decode + correlate).
    #[inline(never)]
    fn push_by_index(
        &mut self,
        key: PacketKey,
        ts: u64,
        make: impl FnOnce(&mut MaybeUninit<Observation>) -> &mut Observation,
    ) {
        let n = self.base + self.slots.len() as u64;
        let h = self.index.hash(&key);
        let (base, slots, last_ts) = (self.base, &self.slots, &self.last_ts);
        let shadows = match self
            .index
            .get_or_set(&key, h, n, |m| open_key(base, slots, last_ts, m))
            .and_then(|m| live_slot(self.base, &self.last_ts, m))
        {
            Some(i) => {
                if ts.abs_diff(self.last_ts[i]) <= SAME_PACKET_WINDOW_NS {
                    if let Some(open) = self.slots[i].as_mut() {
                        self.last_ts[i] = self.last_ts[i].max(ts);
                        add_hop(&mut open.path.hops, ts, make);
                        self.last = Some((key, i));
                        return;
                    }
                }
                // The key's open packet is too old: this one starts a new packet and takes
                // the key over.
                let (base, slots, last_ts) = (self.base, &self.slots, &self.last_ts);
                self.index
                    .set(&key, h, n, |m| open_key(base, slots, last_ts, m));
                true
            }
            // New (the index now names it), or left behind by a flushed packet.
            None => false,
        };
        let hint = match self.hops_hint {
            0 => FIRST_HOPS_HINT,
            n => n,
        };
        // This packet takes the room prepared for it, and the next one's is prepared now.
        let mut hops = std::mem::take(&mut self.spare);
        if hops.capacity() < hint {
            hops = Vec::with_capacity(hint);
        }
        self.spare = Vec::with_capacity(hint);
        prefetch(&self.spare);
        // The hop first, the slot after: if decoding panicked, the slots would be as they
        // were (an index entry naming the slot number not made yet reads as a flushed one).
        push_in_place(&mut hops, make);
        self.last_ts.push_back(ts);
        self.slots.push_back(Some(Open {
            path: PacketPath { key, hops },
            shadows,
        }));
        self.live += 1;
        self.last = Some((key, self.slots.len() - 1));
    }

    /// Packets whose last hop is more than `idle_ns` older than `now_ns`, oldest first.
    pub fn flush_idle(&mut self, now_ns: u64, idle_ns: u64) -> Vec<PacketPath> {
        let mut done = Vec::new();
        self.flush_idle_into(now_ns, idle_ns, &mut done);
        done
    }

    /// [`Correlator::flush_idle`], appended to `done`: a live trace passes the same, drained,
    /// list at every tick. A list made for each flush (tens of thousands of packets at a
    /// million events a second) was mapped and unmapped by the allocator every time, its
    /// pages faulted in again and again (`cargo xtask bench`, figure 5).
    pub fn flush_idle_into(&mut self, now_ns: u64, idle_ns: u64, done: &mut Vec<PacketPath>) {
        self.last = None;
        let start = done.len();
        let mut shadowed = Vec::new();
        for i in 0..self.last_ts.len() {
            let last = self.last_ts[i];
            if last == u64::MAX || now_ns.saturating_sub(last) <= idle_ns {
                continue;
            }
            let n = self.base + i as u64;
            // Whether the index still names this packet, asked while it is open.
            let newest = match &self.slots[i] {
                Some(open) if open.shadows => {
                    let (base, slots, last_ts) = (self.base, &self.slots, &self.last_ts);
                    let key = &open.path.key;
                    let h = self.index.hash(key);
                    self.index
                        .get(key, h, |m| open_key(base, slots, last_ts, m))
                        == Some(n)
                }
                _ => false,
            };
            let Some(open) = self.slots[i].take() else {
                continue;
            };
            self.last_ts[i] = u64::MAX;
            self.live -= 1;
            if newest {
                shadowed.push(open.path.key);
            }
            if done.len() == start {
                // As many as last time, allocated only when a packet leaves.
                done.reserve(self.flushed_hint.max(1));
            }
            done.push(open.path);
        }
        let flushed = &done[start..];
        if flushed.is_empty() {
            return;
        }
        self.flushed_hint = flushed.len();
        let hops: usize = flushed.iter().map(|p| p.hops.len()).sum();
        self.hops_hint = hops.div_ceil(flushed.len()).min(MAX_HOPS_HINT);
        // A key whose newest packet left goes back to its newest open packet, if any.
        for key in shadowed {
            let newest = self
                .slots
                .iter()
                .rposition(|s| s.as_ref().is_some_and(|o| o.path.key == key));
            if let Some(i) = newest {
                let (base, slots, last_ts) = (self.base, &self.slots, &self.last_ts);
                let h = self.index.hash(&key);
                self.index.set(&key, h, base + i as u64, |m| {
                    open_key(base, slots, last_ts, m)
                });
            }
        }
        while self.slots.front().is_some_and(Option::is_none) {
            self.slots.pop_front();
            self.last_ts.pop_front();
            self.base += 1;
        }
        if self.slots.len() - self.live > self.live.max(64) {
            self.compact();
        } else if self.index.len() > 2 * self.live + 1024 {
            self.sweep_index();
        }
    }

    /// Every packet still open, oldest first.
    pub fn flush_all(&mut self) -> Vec<PacketPath> {
        self.last = None;
        self.index.clear();
        self.last_ts.clear();
        self.base += self.slots.len() as u64;
        self.live = 0;
        // Drained, not taken: the queue keeps its room for the packets after.
        let mut all: Vec<PacketPath> = self.slots.drain(..).flatten().map(|o| o.path).collect();
        all.sort_by_key(PacketPath::first_ts);
        all
    }

    pub fn pending(&self) -> usize {
        self.live
    }

    /// Forgets the index entries of flushed packets.
    fn sweep_index(&mut self) {
        let (base, last_ts) = (self.base, &self.last_ts);
        self.index.retain(|n| live_slot(base, last_ts, n).is_some());
    }

    /// Drops the holes, renumbering the open packets from `base` and the index with them.
    fn compact(&mut self) {
        self.last = None;
        // Numbers are reused below: entries of flushed packets must not point at new ones.
        self.sweep_index();
        let old_base = self.base;
        let mut w = 0usize;
        for r in 0..self.slots.len() {
            let Some(open) = self.slots[r].take() else {
                continue;
            };
            let key = &open.path.key;
            let h = self.index.hash(key);
            self.index
                .renumber(key, h, old_base + r as u64, old_base + w as u64);
            self.last_ts[w] = self.last_ts[r];
            self.slots[w] = Some(open);
            w += 1;
        }
        self.slots.truncate(w);
        self.last_ts.truncate(w);
    }
}

/// The key of packet number `n` while it is open.
fn open_key<'a>(
    base: u64,
    slots: &'a VecDeque<Option<Open>>,
    last_ts: &VecDeque<u64>,
    n: u64,
) -> Option<&'a PacketKey> {
    let i = live_slot(base, last_ts, n)?;
    slots[i].as_ref().map(|o| &o.path.key)
}

/// The slot of packet number `n` while it is open (`None` once it was flushed).
fn live_slot(base: u64, last_ts: &VecDeque<u64>, n: u64) -> Option<usize> {
    let i = usize::try_from(n.checked_sub(base)?).ok()?;
    (*last_ts.get(i)? != u64::MAX).then_some(i)
}

/// Asks the CPU to bring `hops`' whole buffer into its cache (a hint: no effect on results,
/// and none on CPUs without the instruction).
#[inline]
fn prefetch(hops: &Vec<Observation>) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = hops.as_ptr().cast::<i8>();
        let bytes = hops.capacity() * std::mem::size_of::<Observation>();
        for offset in (0..bytes).step_by(64) {
            // SAFETY: a prefetch never faults, and the address is within the allocation.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = hops;
}

/// Puts the hop `make` writes, seen at `ts`, in time order: at the end unless it arrived late
/// from another CPU.
#[inline]
fn add_hop(
    hops: &mut Vec<Observation>,
    ts: u64,
    make: impl FnOnce(&mut MaybeUninit<Observation>) -> &mut Observation,
) {
    let at = if hops.last().is_none_or(|h| h.ts_ns <= ts) {
        hops.len()
    } else {
        hops.partition_point(|h| h.ts_ns <= ts)
    };
    push_in_place(hops, make);
    if at + 1 < hops.len() {
        hops[at..].rotate_right(1);
    }
}

/// Appends the observation `make` writes into the room made for it at the end of `hops`
/// (instead of `make` returning it: the compiler then builds it on the stack and copies it,
/// measured as a tenth of decode + correlate).
#[inline]
fn push_in_place(
    hops: &mut Vec<Observation>,
    make: impl FnOnce(&mut MaybeUninit<Observation>) -> &mut Observation,
) {
    hops.reserve(1);
    let len = hops.len();
    let slot = &mut hops.spare_capacity_mut()[0];
    let at = slot.as_ptr();
    let written: *const Observation = make(slot);
    // The reference `make` returns is its proof of having initialised `slot`; one to
    // anything else would be a bug in this module.
    assert!(std::ptr::eq(written, at), "a hop written elsewhere");
    // SAFETY: the slot after the last hop, reserved above, is initialised (checked above).
    unsafe { hops.set_len(len + 1) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Dir, What};

    fn obs(ts: u64, ns: &str, ifname: &str, what: What, flow: Flow) -> Observation {
        Observation {
            ts_ns: ts,
            netns: ns.into(),
            ifindex: 0,
            ifname: Some(ifname.into()),
            what,
            len: 84,
            mark: 0,
            outer: flow,
            extras: Default::default(),
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
    fn flushing_into_a_list_appends_to_what_it_holds() {
        let e = What::Hook(Dir::Egress);
        let mut c = Correlator::default();
        let mut done = Vec::new();
        c.push(obs(100, "a", "eth0", e.clone(), icmp(1, 64, 8)));
        c.flush_idle_into(1_000, 500, &mut done);
        c.push(obs(2_000, "a", "eth0", e.clone(), icmp(2, 64, 8)));
        c.push(obs(2_100, "b", "eth0", e.clone(), icmp(2, 63, 8)));
        c.push(obs(2_200, "a", "eth0", e, icmp(3, 64, 8)));
        // Nothing idle: the list is left as it was.
        c.flush_idle_into(2_300, 500, &mut done);
        assert_eq!(done.len(), 1);
        c.flush_idle_into(3_000, 500, &mut done);
        let seqs: Vec<_> = done.iter().map(|p| p.flow().icmp_seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(done[1].hops.len(), 2);
        // The hints follow the packets this flush made, not the list's earlier ones.
        assert_eq!((c.flushed_hint, c.hops_hint), (2, 2));
        assert_eq!(c.pending(), 0);
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

    /// The correlator this one replaced (a `Vec` of open packets, the index rebuilt on every
    /// flush): the streaming one must make the same packets in the same order.
    #[derive(Default)]
    struct Reference {
        open: Vec<PacketPath>,
        index: std::collections::HashMap<PacketKey, usize>,
    }

    impl Reference {
        fn push(&mut self, o: Observation) {
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

        fn flush_idle(&mut self, now_ns: u64, idle_ns: u64) -> Vec<PacketPath> {
            let is_idle = |p: &PacketPath| {
                p.hops
                    .last()
                    .is_some_and(|h| now_ns.saturating_sub(h.ts_ns) > idle_ns)
            };
            let (done, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.open)
                .into_iter()
                .partition(|p| is_idle(p));
            self.open = keep;
            self.index = self
                .open
                .iter()
                .enumerate()
                .map(|(i, p)| (p.key, i))
                .collect();
            done
        }

        fn flush_all(&mut self) -> Vec<PacketPath> {
            self.index.clear();
            let mut all = std::mem::take(&mut self.open);
            all.sort_by_key(PacketPath::first_ts);
            all
        }
    }

    /// Packets as their hops, to compare two runs: every field of every hop, so that a hop
    /// must come back exactly as it was pushed.
    fn shape(paths: impl IntoIterator<Item = PacketPath>) -> Vec<Vec<Observation>> {
        paths.into_iter().map(|p| p.hops).collect()
    }

    /// An observation of packet `seq` with every kind of field: interned and counted names,
    /// no device, drops, frees and verdicts,
    /// TTL, VLAN and other non-key fields that differ between hops of one packet, VXLAN
    /// frames, snapshots.
    fn varied(next: &mut impl FnMut() -> u64, ts: u64, n: u64, seq: u16) -> Observation {
        let interned = |s: &str| crate::name::Name::interned(s);
        let mut flow = icmp(seq, 60 + (next() % 5) as u8, 8);
        if next().is_multiple_of(8) {
            flow.vlan = (next() % 3) as u16;
        }
        if next().is_multiple_of(16) {
            flow.ip_len = (next() % 100) as u16;
        }
        let what = match next() % 24 {
            0 => What::Drop {
                reason: interned("NETFILTER_DROP"),
                location: format!("nf_hook_slow+0x{n:x}").into(),
            },
            1 => What::Freed {
                reason: interned("NOT_SPECIFIED"),
                location: interned("skb_release"),
                why: crate::decode::Benign::RawSocketCopy,
            },
            2 => What::netfilter(
                interned("ip"),
                interned("FORWARD"),
                interned("filter"),
                format!("c{n}"),
                interned("ACCEPT"),
            ),
            3..=12 => What::Hook(Dir::Egress),
            _ => What::Hook(Dir::Ingress),
        };
        let mut o = obs(ts, "unused", "eth0", what, flow);
        o.netns = match next() % 6 {
            0 => format!("n{n}").into(),
            k => interned(&format!("ns{k}")),
        };
        o.ifname = match next() % 10 {
            0 => None,
            1 => Some(format!("if{n}").into()),
            k => Some(interned(&format!("veth{k}"))),
        };
        o.ifindex = (next() % 4) as u32;
        o.len = (next() % 2000) as u32;
        o.mark = (next() % 3) as u32;
        o.set_truncated(next().is_multiple_of(20));
        if next().is_multiple_of(10) {
            // A VXLAN frame: the packet inside, the underlay's headers outside.
            o.set_inner(Some(flow));
            o.outer = icmp(0, 64, 0);
            o.outer.l4 = 17;
            o.outer.dport = 4789;
        }
        if next().is_multiple_of(10) {
            let snapshot = vec![n as u8; 1 + (next() % 64) as usize];
            o.set_snapshot(snapshot, next().is_multiple_of(2));
        }
        o
    }

    #[test]
    fn streaming_matches_the_reference_with_late_events_reused_keys_and_many_flushes() {
        matches_the_reference(None);
    }

    #[test]
    fn keys_whose_hashes_collide_stay_apart() {
        // Four hashes for up to 3,000 keys: nearly every new packet's hash is held by an open
        // packet of another key.
        matches_the_reference(Some(|k: &PacketKey| u64::from(k.detail[2] % 4)));
        // One hash for all.
        matches_the_reference(Some(|_: &PacketKey| 7));
    }

    /// A xorshift generator: the same cases on every run.
    fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    /// Random streams through the correlator and the reference, compared after every flush.
    fn matches_the_reference(hash_fn: Option<fn(&PacketKey) -> u64>) {
        let mut next = xorshift(0x2545_f491_4f6c_dd1du64);
        for round in 0..40 {
            let (mut c, mut r) = (Correlator::default(), Reference::default());
            c.index.hash_fn = hash_fn;
            let mut now = 0u64;
            // Few keys, so packets share keys; some events late by up to 3 s, so a key is
            // sometimes open twice; flush windows short and long.
            let keys = 1 + next() % [40, 3_000, 3_000][round % 3];
            let idle = [500, 50_000, 2_000_000_000][round % 3];
            for n in 0..3_000u64 {
                now += next() % 200_000_000;
                let late = if next().is_multiple_of(10) {
                    next() % 3_000_000_000
                } else {
                    0
                };
                let ts = now.saturating_sub(late);
                let seq = (next() % keys) as u16;
                let o = varied(&mut next, ts, n, seq);
                c.push(o.clone());
                r.push(o);
                // In some rounds one key seen on time at every step stays open while the
                // packets behind it leave (holes compacted, index entries swept).
                if round % 3 == 1 {
                    let o = obs(
                        now,
                        "hot",
                        "eth0",
                        What::Hook(Dir::Ingress),
                        icmp(u16::MAX, 64, 8),
                    );
                    c.push(o.clone());
                    r.push(o);
                }
                if next().is_multiple_of(7) {
                    let at = now.saturating_sub(next() % 1_000_000_000);
                    let (a, b) = (c.flush_idle(at, idle), r.flush_idle(at, idle));
                    assert_eq!(shape(a), shape(b), "round {round}, event {n}");
                    assert_eq!(c.pending(), r.open.len(), "round {round}, event {n}");
                }
            }
            assert_eq!(shape(c.flush_all()), shape(r.flush_all()), "round {round}");
            assert_eq!(c.pending(), 0);
        }
    }

    /// A ring-buffer record of packet `seq` with every kind, hook and flag: drops, netfilter
    /// verdicts, VXLAN frames, snapshots, devices named or not.
    fn varied_record(next: &mut impl FnMut() -> u64, ts: u64, seq: u16) -> Vec<u8> {
        use vethtrace_common::{hook as h, kind as k, EventSnap, NetfilterEvent, WIRE_VERSION};
        let flow = icmp(seq, 60 + (next() % 5) as u8, 8);
        let (kind, hook) = match next() % 12 {
            0 => (k::DROP, h::KFREE_SKB),
            1 => (k::NETFILTER, h::NFT_DO_CHAIN),
            2..=6 => (k::PACKET, h::TC_EGRESS),
            _ => (k::PACKET, h::TC_INGRESS),
        };
        let mut ev = Event {
            ts_ns: ts,
            netns_cookie: next() % 3,
            location: next() % 2,
            version: WIRE_VERSION,
            kind,
            hook,
            ifindex: (next() % 3) as u32,
            len: (next() % 2000) as u32,
            mark: (next() % 3) as u32,
            drop_reason: (next() % 3) as u32,
            outer: flow,
            ..Default::default()
        };
        if next().is_multiple_of(10) {
            ev.flags |= flag::ENCAP;
            ev.inner = flow;
            ev.outer = icmp(0, 64, 0);
            ev.outer.l4 = 17;
            ev.outer.dport = 4789;
        }
        for f in [flag::TRUNCATED, flag::NO_DEVICE] {
            if next().is_multiple_of(20) {
                ev.flags |= f;
            }
        }
        if kind == k::NETFILTER {
            let mut nf = NetfilterEvent {
                event: ev,
                family: 2,
                hook: 2,
                verdict: (next() % 2) as u32,
                ..Default::default()
            };
            nf.table[..6].copy_from_slice(b"filter");
            return nf.as_bytes().to_vec();
        }
        if !next().is_multiple_of(10) {
            return ev.as_bytes().to_vec();
        }
        ev.snap_len = 1 + (next() % 64) as u32;
        if next().is_multiple_of(2) {
            ev.flags |= flag::SNAP_L3;
        }
        let mut rec = ev.as_bytes().to_vec();
        rec.extend(std::iter::repeat_n(
            seq as u8,
            std::mem::size_of::<EventSnap>() - rec.len(),
        ));
        rec
    }

    #[test]
    fn records_decoded_into_their_packets_make_what_decoded_observations_make() {
        use crate::{btf::DropReasons, decode::Names, kallsyms::Kallsyms};
        let mut names = Names::default();
        names.add_netns(1, "ns1");
        names.add_interface(1, 1, "eth0");
        names.add_interface(2, 2, "veth2");
        let (reasons, kallsyms) = (DropReasons::default(), Kallsyms::default());
        let d = Decoder {
            names: &names,
            reasons: &reasons,
            kallsyms: &kallsyms,
        };
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15u64);
        for round in 0..10 {
            let (mut c, mut r) = (Correlator::default(), Reference::default());
            let mut now = 0u64;
            let idle = [500, 50_000_000][round % 2];
            for n in 0..3_000u64 {
                now += next() % 20_000_000;
                let late = if next().is_multiple_of(10) {
                    next() % 30_000_000
                } else {
                    0
                };
                let seq = (next() % 50) as u16;
                let rec = varied_record(&mut next, now.saturating_sub(late), seq);
                // The record where the ring would have it (8-byte aligned: read in place), or
                // one byte off (copied).
                let mut buf = vec![0u64; rec.len() / 8 + 2];
                // SAFETY: the u64 buffer's bytes, all initialised, borrowed while `buf` lives.
                let bytes = unsafe {
                    std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), buf.len() * 8)
                };
                let off = (next() % 2) as usize;
                let at = &mut bytes[off..off + rec.len()];
                at.copy_from_slice(&rec);
                let at = &*at;
                Event::with_decoded(at, |ev| c.push_record(&d, ev, at)).expect("decodes");
                let ev = Event::decode(&rec).expect("decodes");
                r.push(d.decode_record(&ev, &rec));
                if next().is_multiple_of(7) {
                    let (a, b) = (c.flush_idle(now, idle), r.flush_idle(now, idle));
                    assert_eq!(shape(a), shape(b), "round {round}, record {n}");
                }
            }
            assert_eq!(shape(c.flush_all()), shape(r.flush_all()), "round {round}");
        }
    }

    #[test]
    fn a_packet_open_for_long_keeps_its_place_while_the_ones_behind_it_leave() {
        // One key seen every 100 ms never goes idle (an IPv6 UDP flow's key has no IP id);
        // the packets behind it leave, and their holes are compacted away.
        let (mut c, mut r) = (Correlator::default(), Reference::default());
        let mut now = 0;
        for n in 0..5_000u64 {
            now += 100_000_000;
            for o in [
                obs(now, "hot", "eth0", What::Hook(Dir::Egress), icmp(0, 64, 8)),
                obs(
                    now + 1,
                    "cold",
                    "eth0",
                    What::Hook(Dir::Egress),
                    icmp(1 + n as u16, 64, 8),
                ),
            ] {
                c.push(o.clone());
                r.push(o);
            }
            if n % 3 == 0 {
                let (a, b) = (
                    c.flush_idle(now, 250_000_000),
                    r.flush_idle(now, 250_000_000),
                );
                assert_eq!(shape(a), shape(b), "event {n}");
                assert_eq!(c.pending(), r.open.len());
            }
            assert!(
                c.slots.len() <= 2 * c.live.max(64) + 8,
                "holes are compacted"
            );
        }
        let (a, b) = (shape(c.flush_all()), shape(r.flush_all()));
        assert_eq!(a, b);
        assert_eq!(a[0].len(), 5_000, "the hot packet collected every hop");
    }
}
