//! Device tracepoints (tp_btf net:netif_receive_skb and net:net_dev_queue): a device's ingress
//! and egress on every device of the machine with two attachments, instead of one tc hook per
//! device and direction. The `HOOKS` map says which (namespace, interface) pairs are traced,
//! and in which directions (`hook_dir`: an upper device's ingress is left to the tc program);
//! everything else costs one device walk and one lookup.
//!
//! Why: a TCX link waits for RCU grace periods under the RTNL (about 12 ms each here), so
//! hundreds of hooks take seconds to attach and detach; these attach in microseconds whatever
//! the number of interfaces, and close with their fds. The packet is the same the tc hook sees:
//! netif_receive_skb fires at the top of the receive path, just before tc ingress;
//! net_dev_queue fires as the packet is handed to the device's queue, just after tc egress.
//! The events are the tc programs' (same hooks ids, same fields): user space cannot tell them
//! apart, and need not.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};
use vethtrace_common::{counter, flag, hook, hook_dir, kind, HookKey, KernelOffsets};

use crate::{
    emit::{emit_copied, reset},
    filter,
    maps::{bump, config, HOOKS, SCRATCH, SCRATCH_DEV},
    skb::{copy_and_parse, linear_end, skb_device, Direct, Fields},
};

/// `skb->mac_header` when no link-layer header was set (`(u16)~0U`).
const MAC_UNSET: u16 = 0xffff;

// TP_PROTO(struct sk_buff *skb) for both.
#[btf_tracepoint(function = "netif_receive_skb")]
pub fn vethtrace_dev_ingress(ctx: BtfTracePointContext) -> i32 {
    trace(ctx.arg(0), hook::TC_INGRESS, hook_dir::INGRESS);
    0
}

#[btf_tracepoint(function = "net_dev_queue")]
pub fn vethtrace_dev_egress(ctx: BtfTracePointContext) -> i32 {
    trace(ctx.arg(0), hook::TC_EGRESS, hook_dir::EGRESS);
    0
}

#[inline(always)]
fn trace(skb: u64, hook: u8, dir: u8) {
    let o: KernelOffsets = config(|c| &c.offsets);
    if o.valid == 0 {
        return;
    }
    // The argument is typed from BTF: its fields are plain loads (Direct).
    let Some((ifindex, cookie)) = skb_device::<Direct>(skb, &o) else {
        return;
    };
    let key = HookKey {
        netns_cookie: cookie,
        ifindex,
        _pad: 0,
    };
    // SAFETY: the value is a plain byte, read once; user space only inserts and deletes keys.
    match unsafe { HOOKS.get(key) } {
        Some(dirs) if *dirs & dir != 0 => {}
        _ => return,
    }
    let Some(slot) = SCRATCH.get_ptr_mut(SCRATCH_DEV) else {
        return;
    };
    // SAFETY: this CPU's device-tracepoint slot; a program runs to completion on its CPU.
    let slot = unsafe { &mut *slot };
    let ev = &mut slot.event;
    reset(ev, kind::PACKET, hook);
    let head: u64 = Direct::get(skb, o.skb_head);
    let data: u64 = Direct::get(skb, o.skb_data);
    let len: u32 = Direct::get(skb, o.skb_len);
    let mac: u16 = Direct::get(skb, o.skb_mac_header);
    ev.mark = Direct::get(skb, o.skb_mark);
    let data_off = data.wrapping_sub(head) as i64;
    // Where the network header starts. At ingress the receive path has pulled the link-layer
    // header (data is at the network header) but resets `network_header` only after this
    // tracepoint, so it may be stale; at egress `data` is at the link-layer header and
    // `network_header` was set by the stack.
    let l3 = if hook == hook::TC_INGRESS {
        data_off
    } else {
        Direct::get::<u16>(skb, o.skb_network_header) as i64
    };
    // The frame from its link-layer header, as a tc program sees it. A device without one
    // (no mac header, or mac == network header) is parsed from the network header, by
    // skb->protocol.
    let (start, ethertype) = if mac != MAC_UNSET && (mac as i64) < l3 {
        (mac as i64, 0)
    } else {
        (l3, u16::from_be(Direct::get::<u16>(skb, o.skb_protocol)))
    };
    let frame = len as i64 + data_off - start;
    if head == 0 || start < 0 || frame <= 0 {
        return;
    }
    ev.len = frame as u32;
    // Only the linear part can be copied from `head` (the rest is in paged fragments).
    let linear = linear_end::<Direct>(skb, &o, head, data, len) - start;
    // One probe read copies the headers (and the snapshot) into the slot.
    let copied = copy_and_parse(slot, head + start as u64, linear.max(0) as u64, ethertype);
    let ev = &mut slot.event;
    if !filter::accepts(&ev.outer, &ev.inner, ev.flags & flag::ENCAP != 0) {
        bump(counter::FILTERED);
        return;
    }
    ev.ifindex = ifindex;
    ev.netns_cookie = cookie;
    // SAFETY: no preconditions.
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    emit_copied(slot, copied, ethertype != 0);
}
