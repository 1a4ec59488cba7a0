//! tc entry points (TCX or clsact): one per direction, the same code behind both.

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC, helpers::bpf_ktime_get_ns, macros::classifier, programs::TcContext,
};
use vethtrace_common::{counter, flag, hook, kind, Event, KernelOffsets, WIRE_VERSION};

use crate::{
    emit::emit,
    filter,
    maps::{bump, config},
    parse, skb,
};

struct Skb<'a>(&'a TcContext);

impl parse::Reader for Skb<'_> {
    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Option<T> {
        // bpf_skb_load_bytes checks the offset against the packet at run time.
        self.0.load::<T>(off).ok()
    }
}

#[classifier]
pub fn vethtrace_tc_ingress(ctx: TcContext) -> i32 {
    trace(&ctx, hook::TC_INGRESS);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn vethtrace_tc_egress(ctx: TcContext) -> i32 {
    trace(&ctx, hook::TC_EGRESS);
    TC_ACT_UNSPEC
}

#[inline(always)]
fn trace(ctx: &TcContext, hook: u8) {
    let mut ev = Event {
        version: WIRE_VERSION,
        kind: kind::PACKET,
        hook,
        ..Default::default()
    };
    ev.flags = parse::parse_packet(&Skb(ctx), 0, 0, &mut ev.outer, &mut ev.inner);
    if !filter::accepts(&ev.outer, &ev.inner, ev.flags & flag::ENCAP != 0) {
        bump(counter::FILTERED);
        return;
    }
    // SAFETY: reads of the tc context fields the verifier allows for sched_cls programs.
    unsafe {
        let skb = &*ctx.skb.skb;
        ev.ifindex = skb.ifindex;
        ev.len = skb.len;
        ev.mark = skb.mark;
    }
    // The context pointer of a tc program is the kernel's `struct sk_buff *`; only its device
    // knows the namespace (bpf_get_netns_cookie answers for the sending socket's namespace).
    // Passing it to bpf_probe_read_kernel is allowed for privileged (CAP_PERFMON) loaders.
    let o: KernelOffsets = config(|c| &c.offsets);
    if let Some((_, cookie)) = skb::device(ctx.skb.skb as *const u8, &o) {
        ev.netns_cookie = cookie;
    }
    // SAFETY: no preconditions.
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    emit(&ev);
}
