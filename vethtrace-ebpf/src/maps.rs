//! Every map and global the programs share with user space. Names are the ones in
//! `vethtrace_common::names`; sizes are set again by the loader at load time.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use vethtrace_common::{counter, Config, EventSnap, HookKey};

use crate::netfilter::NfStash;

/// Events for user space. The loader resizes it (`--ring-size`); this is the default.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

/// Per-CPU counters, indexed by `vethtrace_common::counter`.
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Where each program builds its event (and snapshot) before writing it to the ring: a
/// 360-byte record does not fit next to the parser on the 512-byte BPF stack.
#[map(name = "SCRATCH")]
pub static SCRATCH: PerCpuArray<EventSnap> = PerCpuArray::with_max_entries(3, 0);
/// SCRATCH slot of the tc programs.
pub const SCRATCH_TC: u32 = 0;
/// SCRATCH slot of the drop program.
pub const SCRATCH_DROP: u32 = 1;
/// SCRATCH slot of the device tracepoints (a drop traced while one runs, from an interrupt,
/// must not overwrite its event).
pub const SCRATCH_DEV: u32 = 2;

/// The netfilter programs' per-CPU stack of nft_do_chain calls in progress: fentry parses
/// and pushes the packet's record, fexit pops it and adds the verdict.
#[map(name = "NF_STASH")]
pub static NF_STASH: PerCpuArray<NfStash> = PerCpuArray::with_max_entries(1, 0);

/// Netns cookies of the traced namespaces (with `config_flag::NETNS_FILTER`); values unused.
#[map(name = "NETNS")]
pub static NETNS: HashMap<u64, u8> = HashMap::with_max_entries(16384, 0);

/// The interfaces the device tracepoints record (they fire for every device of the machine):
/// user space inserts one key per hooked (namespace, interface), its value the directions
/// recorded (`vethtrace_common::hook_dir` bits).
#[map(name = "HOOKS")]
pub static HOOKS: HashMap<HookKey, u8> = HashMap::with_max_entries(65536, 0);

/// Load-time configuration (filter, kernel offsets), written by the loader into .rodata.
#[unsafe(no_mangle)]
pub static CONFIG: Config = Config {
    flags: 0,
    filter_len: 0,
    filter: [vethtrace_common::FilterInsn {
        op: 0,
        field: 0,
        family: 0,
        _pad: 0,
        value: 0,
        addr: [0; 2],
        mask: [0; 2],
    }; vethtrace_common::MAX_FILTER_INSNS],
    offsets: vethtrace_common::KernelOffsets {
        skb_len: 0,
        skb_dev: 0,
        skb_head: 0,
        skb_data: 0,
        skb_mark: 0,
        skb_network_header: 0,
        dev_ifindex: 0,
        dev_nd_net: 0,
        net_cookie: 0,
        skb_protocol: 0,
        valid: 0,
        skb_mac_header: 0,
        skb_data_len: 0,
        _pad: 0,
    },
    nf: vethtrace_common::NfOffsets {
        pkt_skb: 0,
        pkt_state: 0,
        state_hook: 0,
        state_pf: 0,
        state_in: 0,
        state_out: 0,
        state_net: 0,
        chain_table: 0,
        chain_name: 0,
        table_name: 0,
        valid: 0,
        _pad: 0,
    },
};

/// Reads a field of [`CONFIG`] so that the compiler cannot fold it to the initial value above
/// (the loader rewrites .rodata before the program loads).
#[inline(always)]
pub fn config<T: Copy + 'static>(f: impl FnOnce(&'static Config) -> &'static T) -> T {
    // SAFETY: the reference points into a static; a volatile read of a Copy value is sound.
    unsafe { core::ptr::read_volatile(f(&CONFIG)) }
}

#[inline(always)]
pub fn bump(index: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot of this CPU; programs do not migrate while running.
        unsafe { *p += 1 };
    }
}
