//! skb:kfree_skb (tp_btf): packets the kernel freed with a drop reason.
//!
//! aya-ebpf has no CO-RE field access for Rust programs, so `struct sk_buff` is walked at
//! offsets user space read from the running kernel's BTF (`Config::offsets`), with plain loads
//! the verifier checks against BTF (the argument is a typed pointer); the packet bytes are
//! probe-read once, into the buffer that is also the snapshot. Normal consumption goes to
//! skb:consume_skb, not here.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, generated},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use vethtrace_common::{config_flag, counter, flag, hook, kind, KernelOffsets, SNAP_LEN};

use crate::{
    emit::{emit, reset},
    filter,
    maps::{bump, config, NETNS, SCRATCH, SCRATCH_DROP},
    parse,
    skb::{locate, skb_device, Copied, Direct},
};

#[btf_tracepoint(function = "kfree_skb")]
pub fn vethtrace_kfree_skb(ctx: BtfTracePointContext) -> i32 {
    let flags = config(|c| &c.flags);
    let o: KernelOffsets = config(|c| &c.offsets);
    if flags & config_flag::DROPS == 0 || o.valid == 0 {
        return 0;
    }
    // TP_PROTO(struct sk_buff *skb, void *location, enum skb_drop_reason reason, struct sock *rx_sk)
    // A tp_btf argument is typed from BTF: its fields are read with plain loads (Direct).
    let skb: u64 = ctx.arg(0);
    let location: u64 = ctx.arg(1);
    let reason: u32 = ctx.arg(2);
    trace_drop(skb, location, reason, flags, &o);
    0
}

#[inline(always)]
fn trace_drop(skb: u64, location: u64, reason: u32, flags: u32, o: &KernelOffsets) {
    // Namespace first: drops elsewhere (another trace's lab, the host) cost one lookup.
    let dev = skb_device::<Direct>(skb, o);
    if flags & config_flag::NETNS_FILTER != 0 {
        let cookie = dev.map_or(0, |(_, c)| c);
        // SAFETY: the value is only tested for presence.
        if unsafe { NETNS.get(cookie) }.is_none() {
            return;
        }
    }
    let Some(slot) = SCRATCH.get_ptr_mut(SCRATCH_DROP) else {
        return;
    };
    // SAFETY: this CPU's drop slot (the tc programs use another one, so a drop traced while a
    // tc program runs on the same CPU cannot overwrite its event).
    let slot = unsafe { &mut *slot };
    let ev = &mut slot.event;
    reset(ev, kind::DROP, hook::KFREE_SKB);
    ev.location = location;
    ev.drop_reason = reason;
    // One probe read copies the headers (and the snapshot, when asked for) into the slot's
    // buffer; the parser then reads from it with no helper call per header.
    let mut copied = 0;
    if let Some((l3, ethertype)) = locate::<Direct>(skb, o, ev) {
        // Verifier: the size must be provably in 1..=SNAP_LEN.
        let n = (l3.len as u64).min(SNAP_LEN as u64) as u32;
        if n > 0 && n <= SNAP_LEN as u32 {
            // SAFETY: the destination is SNAP_LEN bytes of map value and n is within
            // 1..=SNAP_LEN; a bad source address makes the helper fail, not fault.
            let rc = unsafe {
                generated::bpf_probe_read_kernel(slot.snap.as_mut_ptr().cast(), n, l3.base.cast())
            };
            if rc == 0 {
                copied = n;
            }
        }
        let bytes = Copied {
            buf: &slot.snap,
            len: copied as usize,
        };
        let ev = &mut slot.event;
        ev.flags |= parse::parse_packet(&bytes, 0, ethertype, &mut ev.outer, &mut ev.inner);
    }
    let ev = &mut slot.event;
    if !filter::accepts(&ev.outer, &ev.inner, ev.flags & flag::ENCAP != 0) {
        bump(counter::FILTERED);
        return;
    }
    match dev {
        Some((ifindex, cookie)) => {
            ev.ifindex = ifindex;
            ev.netns_cookie = cookie;
        }
        None => ev.flags |= flag::NO_DEVICE,
    }
    // SAFETY: no preconditions.
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    bump(counter::DROPS);
    if flags & config_flag::SNAP == 0 || copied == 0 {
        emit(ev);
        return;
    }
    ev.flags |= flag::SNAP_L3;
    ev.snap_len = copied;
    emit(slot);
}
