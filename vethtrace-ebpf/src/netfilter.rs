//! fentry/fexit nft_do_chain: the verdict of every nftables base chain a matching packet
//! crosses (iptables-nft's `filter FORWARD` is one), with its family, hook, table and chain.
//!
//! `unsigned int nft_do_chain(struct nft_pktinfo *pkt, void *priv)`: `priv` is the base
//! chain's `struct nft_chain *`, the return value the verdict. Structures are walked with
//! bpf_probe_read_kernel at offsets from the running kernel's BTF (`Config::nf`).
//!
//! Two programs, because since Linux 6.8 nft_do_chain frees a dropped packet itself
//! (`NF_DROP_REASON`) and returns `NF_STOLEN` with an errno: by fexit time the skb is gone.
//! The fentry program parses the packet while it is alive, exactly as drops are
//! (`skb::parse_skb`), behind the same filter and namespace filter, and stashes the record
//! in a per-CPU stack (calls nest: a softirq's chain inside a process's OUTPUT chain, a
//! chain reached from an nft `fwd`/`dup`); the fexit program pops it, and emits it with the
//! verdict and the table and chain names. The record's time is the fentry's, when the chain
//! started on the packet, so it precedes the drop it explains on every kernel.
//!
//! Only drops are recorded unless `NETFILTER_ALL` is set: a packet crosses several base
//! chains per namespace and nearly all of them accept, so recording accepts would multiply
//! the event volume for little (the tc hops already show where the packet went on).

use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_ktime_get_ns, generated},
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};
use vethtrace_common::{
    config_flag, flag, hook, kind, nf, KernelOffsets, NetfilterEvent, NfOffsets, NF_NAME_LEN,
};

use crate::{
    emit::{emit, reset},
    filter,
    maps::{config, NETNS, NF_STASH},
    skb::{field, net_cookie, net_device, parse_skb, Probe},
};

/// How many nft_do_chain calls may nest on one CPU and still be recorded.
pub const NF_DEPTH: usize = 4;

/// One nft_do_chain call in progress.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NfSlot {
    /// The call's `pkt` argument: what the fexit matches its fentry by.
    pub pkt: u64,
    /// Non-zero when the packet passed the filters and `rec` is filled in.
    pub valid: u32,
    pub _pad: u32,
    pub rec: NetfilterEvent,
}

/// The per-CPU stack of calls in progress (the `NF_STASH` map's value).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NfStash {
    /// Slots in use.
    pub depth: u32,
    pub _pad: u32,
    pub slots: [NfSlot; NF_DEPTH],
}

#[fentry(function = "nft_do_chain")]
pub fn vethtrace_nft_do_chain_entry(ctx: FEntryContext) -> i32 {
    let flags = config(|c| &c.flags);
    if flags & config_flag::NETFILTER == 0 {
        return 0;
    }
    let o: KernelOffsets = config(|c| &c.offsets);
    let n: NfOffsets = config(|c| &c.nf);
    if o.valid == 0 || n.valid == 0 {
        return 0;
    }
    let pkt: *const u8 = ctx.arg(0);
    enter(pkt, flags, &o, &n);
    0
}

#[fexit(function = "nft_do_chain")]
pub fn vethtrace_nft_do_chain(ctx: FExitContext) -> i32 {
    let flags = config(|c| &c.flags);
    let n: NfOffsets = config(|c| &c.nf);
    if flags & config_flag::NETFILTER == 0 || n.valid == 0 {
        return 0;
    }
    let pkt: *const u8 = ctx.arg(0);
    let chain: *const u8 = ctx.arg(1);
    // The return value follows the two arguments in the fexit context.
    let verdict: u64 = ctx.arg(2);
    exit(pkt, chain, verdict as u32, flags, &n);
    0
}

/// fentry: pushes a slot for this call and, when the packet is one to trace, fills it in.
#[inline(always)]
pub fn enter(pkt: *const u8, flags: u32, o: &KernelOffsets, n: &NfOffsets) {
    let Some(stash) = NF_STASH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's value of a map only these two programs use; a nested call on this
    // CPU runs after this program returns (tracing programs do not nest into themselves).
    let stash = unsafe { &mut *stash };
    let mut d = stash.depth as usize;
    if d >= NF_DEPTH {
        // Full: slots left by fexits that never ran (skipped while our fexit program was
        // busy on this CPU). Start over rather than stop recording on this CPU.
        d = 0;
    }
    stash.depth = d as u32 + 1;
    // Verifier: the index must be provably below NF_DEPTH.
    let Some(slot) = stash.slots.get_mut(d) else {
        return;
    };
    slot.pkt = pkt as u64;
    slot.valid = 0;
    let skb: u64 = field(pkt, n.pkt_skb);
    let state: u64 = field(pkt, n.pkt_state);
    if skb == 0 || state == 0 {
        return;
    }
    let (skb, state) = (skb as *const u8, state as *const u8);
    // The device: the skb's, else the hook's input or output device (skb->dev can still be
    // unset at OUTPUT). The namespace is the hook's own (`state->net`), the one the chain
    // belongs to even when no device is known.
    let dev = net_device::<Probe>(field(skb, o.skb_dev), o)
        .or_else(|| net_device::<Probe>(field(state, n.state_in), o))
        .or_else(|| net_device::<Probe>(field(state, n.state_out), o));
    let cookie = match net_cookie::<Probe>(field(state, n.state_net), o) {
        0 => dev.map_or(0, |(_, c)| c),
        c => c,
    };
    if flags & config_flag::NETNS_FILTER != 0 {
        // SAFETY: the value is only tested for presence.
        if unsafe { NETNS.get(cookie) }.is_none() {
            return;
        }
    }
    let rec = &mut slot.rec;
    reset(&mut rec.event, kind::NETFILTER, hook::NFT_DO_CHAIN);
    let _ = parse_skb::<Probe>(skb as u64, o, &mut rec.event);
    let ev = &mut rec.event;
    if !filter::accepts(&ev.outer, &ev.inner, ev.flags & flag::ENCAP != 0) {
        return;
    }
    ev.netns_cookie = cookie;
    match dev {
        Some((ifindex, _)) => ev.ifindex = ifindex,
        None => ev.flags |= flag::NO_DEVICE,
    }
    // SAFETY: no preconditions.
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    rec.family = field(state, n.state_pf);
    rec.hook = field(state, n.state_hook);
    rec._pad = [0; 2];
    slot.valid = 1;
}

/// fexit: pops this call's slot and records the verdict when it is one to keep.
#[inline(always)]
pub fn exit(pkt: *const u8, chain: *const u8, verdict: u32, flags: u32, n: &NfOffsets) {
    let Some(stash) = NF_STASH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: as in `enter`.
    let stash = unsafe { &mut *stash };
    let depth = stash.depth as usize;
    // This call's slot is the top one, or a lower one when a nested call's fexit was skipped
    // (the slots above it are then stale and dropped). A call whose fentry did not run has
    // none, and leaves the stack alone.
    let mut found = NF_DEPTH;
    for i in (0..NF_DEPTH).rev() {
        if i < depth && stash.slots[i].pkt == pkt as u64 {
            found = i;
            break;
        }
    }
    let Some(slot) = stash.slots.get_mut(found) else {
        return;
    };
    stash.depth = found as u32;
    if slot.valid == 0 {
        return;
    }
    slot.valid = 0;
    if flags & config_flag::NETFILTER_ALL == 0 && !nf::dropped(verdict) {
        return;
    }
    let rec = &mut slot.rec;
    rec.verdict = verdict;
    rec.table = [0; NF_NAME_LEN];
    rec.chain = [0; NF_NAME_LEN];
    let table: u64 = field(chain, n.chain_table);
    if table != 0 {
        read_name(field(table as *const u8, n.table_name), &mut rec.table);
    }
    read_name(field(chain, n.chain_name), &mut rec.chain);
    emit(rec);
}

/// Copies a kernel C string into `dst`, NUL-terminated and cut to fit; leaves `dst` zeroed
/// when the pointer is null or unreadable.
#[inline(always)]
fn read_name(src: u64, dst: &mut [u8; NF_NAME_LEN]) {
    if src == 0 {
        return;
    }
    // SAFETY: the destination is NF_NAME_LEN bytes of map value; the helper stops at the
    // size given, NUL-terminates, and fails instead of faulting on a bad source.
    unsafe {
        generated::bpf_probe_read_kernel_str(
            dst.as_mut_ptr().cast::<c_void>(),
            NF_NAME_LEN as u32,
            src as *const c_void,
        );
    }
}
