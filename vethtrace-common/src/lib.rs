//! The wire contract between vethtrace's eBPF programs and user space.
//!
//! Owns: the event record the programs write into the ring buffer, the load-time configuration
//! (filter program, kernel structure offsets), stable hook/event/field ids, and map/program names.
//! Does not own: parsing, decoding into rich types or rendering (those live in `vethtrace`).
//!
//! Rules (kunai, aya's integration-common): every wire struct is `#[repr(C)]`, `Copy`, made of
//! fixed-width integers and byte arrays with explicit padding, and a `const` block below asserts its
//! size and the offsets user space relies on. Ids are stable numbers; retired ids are never reused.
#![cfg_attr(not(test), no_std)]

#[cfg(feature = "user")]
mod user;
#[cfg(feature = "user")]
pub use user::*;

/// Bumped whenever the layout of [`Event`], [`NetfilterEvent`] or [`Config`] changes.
pub const WIRE_VERSION: u8 = 3;

/// The kfunc call the tc programs make to turn their context into the kernel's `struct
/// sk_buff *` (`bpf_cast_to_kern_ctx`, Linux ≥ 6.2), whose fields the verifier then lets them
/// load directly instead of through bpf_probe_read_kernel. aya 0.14 cannot relocate kfunc calls,
/// so the object carries the call as one placeholder instruction and user space patches it
/// before loading: the BTF id of the kfunc goes into its immediate, or, on a kernel without the
/// kfunc, the instruction becomes `r0 = 0` and the programs fall back to probe reads.
pub mod kfunc {
    /// `call` with src_reg = BPF_PSEUDO_KFUNC_CALL (2) and this immediate.
    pub const PLACEHOLDER: [u8; 8] = [0x85, 0x20, 0x00, 0x00, 0xc7, 0xc7, 0x7e, 0x7e];
    /// The kfunc it stands for.
    pub const NAME: &str = "bpf_cast_to_kern_ctx";
    /// What it becomes when the kernel lacks the kfunc: `r0 = 0` (BPF_ALU64 | BPF_MOV | BPF_K).
    pub const FALLBACK: [u8; 8] = [0xb7, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00];
}

/// Names of the maps, globals and programs in the eBPF object.
pub mod names {
    pub const EVENTS_MAP: &str = "EVENTS";
    pub const COUNTERS_MAP: &str = "COUNTERS";
    pub const NETNS_MAP: &str = "NETNS";
    /// The (namespace, interface) pairs the device tracepoints record: a key is a [`HookKey`],
    /// its value a mask of [`hook_dir`](crate::hook_dir) bits.
    pub const HOOKS_MAP: &str = "HOOKS";
    pub const CONFIG_GLOBAL: &str = "CONFIG";
    pub const TC_INGRESS_PROG: &str = "vethtrace_tc_ingress";
    pub const TC_EGRESS_PROG: &str = "vethtrace_tc_egress";
    pub const KFREE_SKB_PROG: &str = "vethtrace_kfree_skb";
    /// tp_btf net:netif_receive_skb: a device's ingress, on every device of the machine at once.
    pub const DEV_INGRESS_PROG: &str = "vethtrace_dev_ingress";
    /// tp_btf net:net_dev_queue: a device's egress, on every device of the machine at once.
    pub const DEV_EGRESS_PROG: &str = "vethtrace_dev_egress";
    /// fentry nft_do_chain: parses and stashes the packet while its skb is alive.
    pub const NFT_DO_CHAIN_ENTRY_PROG: &str = "vethtrace_nft_do_chain_entry";
    /// fexit nft_do_chain: records the verdict of the stashed packet.
    pub const NFT_DO_CHAIN_PROG: &str = "vethtrace_nft_do_chain";
}

/// What an [`Event`] records.
pub mod kind {
    /// A packet seen by a tc hook.
    pub const PACKET: u8 = 1;
    /// A packet freed by the kernel with a drop reason (skb:kfree_skb).
    pub const DROP: u8 = 2;
    /// A verdict of a netfilter base chain; the record is a [`NetfilterEvent`](crate::NetfilterEvent).
    pub const NETFILTER: u8 = 3;
}

/// Where an [`Event`] was observed.
///
/// A veth's egress on one end is its peer's ingress on the other: user space pairs them through
/// the topology model, the kernel side only says which hook of which device fired.
pub mod hook {
    /// A device's ingress: its tc ingress hook, or (device tracepoints) net:netif_receive_skb,
    /// which fires just before tc ingress for the same packets.
    pub const TC_INGRESS: u8 = 1;
    /// A device's egress: its tc egress hook, or (device tracepoints) net:net_dev_queue, which
    /// fires just after tc egress, as the packet is handed to the device's queue.
    pub const TC_EGRESS: u8 = 2;
    pub const KFREE_SKB: u8 = 3;
    /// fentry/fexit of `nft_do_chain` (every nftables base chain, iptables-nft included).
    pub const NFT_DO_CHAIN: u8 = 4;
}

/// Bits of [`Event::flags`].
pub mod flag {
    /// `inner` holds the encapsulated packet (VXLAN).
    pub const ENCAP: u8 = 1 << 0;
    /// Parsing stopped early because the frame ended inside a header.
    pub const TRUNCATED: u8 = 1 << 1;
    /// The device had no ifindex we could read (drops after the device was detached).
    pub const NO_DEVICE: u8 = 1 << 2;
    /// The snapshot after the record starts at the network header (drops), not at Ethernet.
    pub const SNAP_L3: u8 = 1 << 3;
}

/// Indices into the per-CPU `COUNTERS` array.
pub mod counter {
    /// Events written to the ring buffer.
    pub const EMITTED: u32 = 0;
    /// Events that matched but found the ring buffer full.
    pub const LOST: u32 = 1;
    /// Packets that the filter rejected.
    pub const FILTERED: u32 = 2;
    /// Drop events that matched.
    pub const DROPS: u32 = 3;
    pub const COUNT: u32 = 4;
}

/// L3/L4 summary of one layer of a packet (the outer packet, or the inner one of a VXLAN frame).
///
/// Addresses are in network byte order; IPv4 addresses use the first 4 bytes. Every other integer
/// is in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// 0x0800 IPv4, 0x86dd IPv6, 0x0806 ARP, or the unparsed ethertype.
    pub ethertype: u16,
    /// IPPROTO_* of the transport header (after IPv6 extension headers).
    pub l4: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    pub sport: u16,
    pub dport: u16,
    /// IPv4 identification, or IPv6 flow label.
    pub ip_id: u32,
    pub tcp_seq: u32,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub tcp_flags: u8,
    /// ARP operation (1 request, 2 reply).
    pub arp_op: u8,
    pub icmp_id: u16,
    pub icmp_seq: u16,
    /// Outermost 802.1Q/802.1ad VLAN id, 0 when untagged.
    pub vlan: u16,
    /// IPv4 total length or IPv6 payload length + 40.
    pub ip_len: u16,
}

/// One record in the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// The cookie (`net->net_cookie`) of the namespace of the device the packet was on. Read
    /// from `skb->dev`, not with bpf_get_netns_cookie(), which answers for the sending socket's
    /// namespace (veth keeps `skb->sk` across namespaces) or init_net.
    pub netns_cookie: u64,
    /// For drops: kernel address of the function that freed the skb (resolve with kallsyms).
    pub location: u64,
    pub version: u8,
    /// One of [`kind`].
    pub kind: u8,
    /// One of [`hook`].
    pub hook: u8,
    /// Bits of [`flag`].
    pub flags: u8,
    pub ifindex: u32,
    /// `skb->len`.
    pub len: u32,
    /// `skb->mark`.
    pub mark: u32,
    /// For drops: the value of `enum skb_drop_reason` (name it through the kernel's BTF).
    pub drop_reason: u32,
    /// Valid bytes of the packet snapshot that follows the record as an [`EventSnap`]
    /// (`config_flag::SNAP`); 0 when the record is a bare `Event`.
    pub snap_len: u32,
    pub outer: Flow,
    pub inner: Flow,
}

/// Bytes of each packet copied after the record when snapshots are on (`-w FILE.pcapng`):
/// enough for Ethernet + VLANs + IPv6 with options + TCP, or a VXLAN frame's inner headers.
pub const SNAP_LEN: usize = 192;

/// An [`Event`] followed by the first bytes of its packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventSnap {
    pub event: Event,
    pub snap: [u8; SNAP_LEN],
}

/// Bytes kept of a netfilter table or chain name (NUL-padded; longer names are cut to
/// `NF_NAME_LEN - 1` bytes). Docker's and Kubernetes' chain names fit.
pub const NF_NAME_LEN: usize = 32;

/// A netfilter verdict: the [`Event`] of the packet (kind [`kind::NETFILTER`], hook
/// [`hook::NFT_DO_CHAIN`]) followed by where and what netfilter decided.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetfilterEvent {
    pub event: Event,
    /// `NFPROTO_*` of the hook (`state->pf`): see [`nf::proto`].
    pub family: u8,
    /// The hook number within the family (`state->hook`), e.g. `NF_INET_FORWARD`.
    pub hook: u8,
    pub _pad: [u8; 2],
    /// The chain's return value: `NF_DROP`, `NF_ACCEPT`, … in the low byte ([`nf::VERDICT_MASK`]),
    /// an errno in the high 16 bits; see [`nf::dropped`].
    pub verdict: u32,
    /// `chain->table->name`, NUL-padded.
    pub table: [u8; NF_NAME_LEN],
    /// `chain->name` of the base chain, NUL-padded.
    pub chain: [u8; NF_NAME_LEN],
}

impl Default for NetfilterEvent {
    fn default() -> Self {
        Self {
            event: Event::default(),
            family: 0,
            hook: 0,
            _pad: [0; 2],
            verdict: 0,
            table: [0; NF_NAME_LEN],
            chain: [0; NF_NAME_LEN],
        }
    }
}

/// Netfilter's numbers (include/uapi/linux/netfilter.h): stable kernel ABI.
pub mod nf {
    /// The verdict is the low byte of a hook's return value.
    pub const VERDICT_MASK: u32 = 0xff;
    /// The errno some verdicts carry sits above this many bits (`NF_VERDICT_QBITS`).
    pub const ERRNO_SHIFT: u32 = 16;

    pub const DROP: u32 = 0;
    pub const ACCEPT: u32 = 1;
    pub const STOLEN: u32 = 2;
    pub const QUEUE: u32 = 3;
    pub const REPEAT: u32 = 4;
    pub const STOP: u32 = 5;

    /// Whether a chain's return value means the packet was dropped: `NF_DROP` (with or without
    /// an errno), or, since Linux 6.8, `NF_STOLEN` with an errno, which is what nftables
    /// returns after freeing a dropped packet itself (`NF_DROP_REASON`, for a rule's `drop` or
    /// a `policy drop`). A plain `NF_STOLEN` (a rule that took the packet over) is not a drop.
    pub const fn dropped(verdict: u32) -> bool {
        let base = verdict & VERDICT_MASK;
        base == DROP || (base == STOLEN && verdict >> ERRNO_SHIFT != 0)
    }

    /// `NFPROTO_*`.
    pub mod proto {
        pub const INET: u8 = 1;
        pub const IPV4: u8 = 2;
        pub const ARP: u8 = 3;
        pub const NETDEV: u8 = 5;
        pub const BRIDGE: u8 = 7;
        pub const IPV6: u8 = 10;
    }
}

/// Maximum number of instructions in a compiled filter.
pub const MAX_FILTER_INSNS: usize = 32;
/// Depth of the filter evaluator's boolean stack.
pub const MAX_FILTER_STACK: usize = 32;

/// Opcodes of [`FilterInsn`]. A filter is a postfix program over a stack of booleans; an empty
/// program matches everything.
pub mod op {
    /// Push the result of testing `field` against the instruction's operand.
    pub const TEST: u8 = 1;
    pub const AND: u8 = 2;
    pub const OR: u8 = 3;
    pub const NOT: u8 = 4;
}

/// Fields a [`op::TEST`] can look at.
pub mod field {
    /// Source or destination address, masked (`host`, `net`).
    pub const HOST: u8 = 1;
    pub const SRC_HOST: u8 = 2;
    pub const DST_HOST: u8 = 3;
    /// IPPROTO_* (`icmp`, `tcp`, `udp`, `icmp6`).
    pub const L4: u8 = 4;
    /// Ethertype (`arp`, `ip`, `ip6`).
    pub const ETHERTYPE: u8 = 5;
    pub const PORT: u8 = 6;
    pub const SRC_PORT: u8 = 7;
    pub const DST_PORT: u8 = 8;
    /// The packet is VXLAN-encapsulated (`vxlan`).
    pub const ENCAP: u8 = 9;
    /// ICMP/ICMPv6 echo identifier (`icmp id N`, used by `vethtrace ping`).
    pub const ICMP_ID: u8 = 10;
}

/// One instruction of a compiled filter.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterInsn {
    /// One of [`op`].
    pub op: u8,
    /// One of [`field`] (for [`op::TEST`]).
    pub field: u8,
    /// For address fields: 4 or 6.
    pub family: u8,
    pub _pad: u8,
    /// For numeric fields: the value to compare with.
    pub value: u32,
    /// For address fields: `addr & mask == packet address & mask`, as two native-endian words.
    pub addr: [u64; 2],
    pub mask: [u64; 2],
}

/// A key of the `HOOKS` map: one interface of one namespace the device tracepoints record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HookKey {
    /// `net->net_cookie` of the interface's namespace.
    pub netns_cookie: u64,
    pub ifindex: u32,
    pub _pad: u32,
}

/// Bits of a `HOOKS` value: which directions of the interface the device tracepoints record.
///
/// Why not always both: netif_receive_skb fires once per received packet, for the device it
/// arrived on. A device the receive path hands the frame on to (a macvlan, a VLAN sub-device,
/// a bond master: `another_round`) gets no tracepoint, though tc ingress runs there; user
/// space hooks such a device's ingress with the tc program and registers only its egress here,
/// so each direction is recorded once (a broadcast a macvlan re-queues with netif_rx does fire
/// the tracepoint for it, and would otherwise be recorded twice).
pub mod hook_dir {
    /// net:netif_receive_skb records the interface (its ingress).
    pub const INGRESS: u8 = 1 << 0;
    /// net:net_dev_queue records the interface (its egress).
    pub const EGRESS: u8 = 1 << 1;
    /// Both directions: every interface but the ones whose ingress the tc program hooks.
    pub const BOTH: u8 = INGRESS | EGRESS;
}

/// Load-time configuration, written into the `CONFIG` global before the programs load.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Bits of [`config_flag`].
    pub flags: u32,
    /// Number of valid instructions in `filter`.
    pub filter_len: u32,
    pub filter: [FilterInsn; MAX_FILTER_INSNS],
    /// Offsets into kernel structures, read from the running kernel's BTF, used to walk
    /// `struct sk_buff` to the device and its namespace (no CO-RE in aya-ebpf's Rust programs).
    pub offsets: KernelOffsets,
    /// Offsets into the netfilter structures the `nft_do_chain` program reads.
    pub nf: NfOffsets,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            flags: 0,
            filter_len: 0,
            filter: [FilterInsn::default(); MAX_FILTER_INSNS],
            offsets: KernelOffsets::default(),
            nf: NfOffsets::default(),
        }
    }
}

/// Bits of [`Config::flags`].
pub mod config_flag {
    /// Record drops (skb:kfree_skb).
    pub const DROPS: u32 = 1 << 0;
    /// Record drops only in the namespaces whose netns cookie is a key of the `NETNS` map
    /// (the ones being traced), so concurrent traces never see each other's drops.
    pub const NETNS_FILTER: u32 = 1 << 1;
    /// Copy the first `SNAP_LEN` bytes of each packet after its record (`EventSnap`).
    pub const SNAP: u32 = 1 << 2;
    /// Record the drops of nftables base chains (fentry/fexit nft_do_chain; see
    /// [`nf::dropped`](crate::nf::dropped)), with the same filter and namespace filter as drops.
    pub const NETFILTER: u32 = 1 << 3;
    /// With [`NETFILTER`]: record every verdict (accept, queue, …), not only drops. Off by
    /// default: every packet crosses several base chains, and accepts are what they mostly say.
    pub const NETFILTER_ALL: u32 = 1 << 4;
}

/// Byte offsets of the kernel fields the drop program reads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub skb_len: u32,
    pub skb_dev: u32,
    pub skb_head: u32,
    pub skb_data: u32,
    pub skb_mark: u32,
    pub skb_network_header: u32,
    pub dev_ifindex: u32,
    pub dev_nd_net: u32,
    pub net_cookie: u32,
    pub skb_protocol: u32,
    /// Non-zero when every offset above was found.
    pub valid: u32,
    /// `skb->mac_header` (the device tracepoints parse from the link-layer header).
    pub skb_mac_header: u32,
    /// `skb->data_len`: the bytes in paged fragments. Only the linear part (`len - data_len`
    /// bytes from `data`) may be copied from `head`; past it lie tailroom and
    /// `skb_shared_info`, not packet bytes.
    pub skb_data_len: u32,
    pub _pad: u32,
}

/// Byte offsets of the netfilter fields the `nft_do_chain` program reads:
/// `nft_do_chain(const struct nft_pktinfo *pkt, void *priv)`, `priv` being the base chain's
/// `struct nft_chain *`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NfOffsets {
    /// `struct nft_pktinfo`: `skb`, `state`.
    pub pkt_skb: u32,
    pub pkt_state: u32,
    /// `struct nf_hook_state`: `hook`, `pf` (u8 each), `in`, `out`, `net` (pointers).
    pub state_hook: u32,
    pub state_pf: u32,
    pub state_in: u32,
    pub state_out: u32,
    pub state_net: u32,
    /// `struct nft_chain`: `table`, `name`; `struct nft_table`: `name`.
    pub chain_table: u32,
    pub chain_name: u32,
    pub table_name: u32,
    /// Non-zero when every offset above was found.
    pub valid: u32,
    pub _pad: u32,
}

// The layout user space decodes; a change here is a wire-version bump.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<Flow>() == 60);
    assert!(offset_of!(Flow, ethertype) == 32);
    assert!(offset_of!(Flow, ip_id) == 40);
    assert!(offset_of!(Flow, icmp_id) == 52);
    assert!(size_of::<Event>() == 168);
    assert!(offset_of!(Event, version) == 24);
    assert!(offset_of!(Event, ifindex) == 28);
    assert!(offset_of!(Event, outer) == 48);
    assert!(offset_of!(Event, inner) == 108);
    assert!(size_of::<EventSnap>() == 168 + SNAP_LEN);
    assert!(SNAP_LEN.is_multiple_of(8));
    assert!(size_of::<FilterInsn>() == 40);
    assert!(size_of::<KernelOffsets>() == 56);
    assert!(size_of::<HookKey>() == 16);
    assert!(size_of::<NfOffsets>() == 48);
    assert!(size_of::<Config>() == 8 + 40 * MAX_FILTER_INSNS + 56 + 48);
    assert!(offset_of!(Config, nf) == 8 + 40 * MAX_FILTER_INSNS + 56);
    assert!(offset_of!(NetfilterEvent, family) == 168);
    assert!(offset_of!(NetfilterEvent, hook) == 169);
    assert!(offset_of!(NetfilterEvent, verdict) == 172);
    assert!(offset_of!(NetfilterEvent, table) == 176);
    assert!(offset_of!(NetfilterEvent, chain) == 176 + NF_NAME_LEN);
    assert!(size_of::<NetfilterEvent>() == 176 + 2 * NF_NAME_LEN);
    assert!(size_of::<NetfilterEvent>().is_multiple_of(8));
};
