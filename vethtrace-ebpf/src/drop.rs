//! skb:kfree_skb (tp_btf): packets the kernel freed with a drop reason.
//!
//! aya-ebpf has no CO-RE field access for Rust programs, so `struct sk_buff` is walked at
//! offsets user space read from the running kernel's BTF (`Config::offsets`), with plain loads
//! the verifier checks against BTF (the argument is a typed pointer); the packet bytes are
//! probe-read once, into the buffer that is also the snapshot. Normal consumption goes to
//! skb:consume_skb, not here.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};
use vethtrace_common::{config_flag, counter, flag, hook, kind, KernelOffsets};

use crate::{
    emit::{emit_copied, reset},
    filter,
    maps::{bump, config, NETNS, SCRATCH, SCRATCH_DROP},
    skb::{copy_and_parse, locate, skb_device, Direct},
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
        copied = copy_and_parse(slot, l3.base as u64, l3.len as u64, ethertype);
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
    emit_copied(slot, copied, true);
}
