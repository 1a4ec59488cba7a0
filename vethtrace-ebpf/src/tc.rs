//! tc entry points (TCX or clsact): one per direction, the same code behind both.

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    helpers::{bpf_ktime_get_ns, bpf_skb_load_bytes},
    macros::classifier,
    programs::TcContext,
};
use vethtrace_common::{config_flag, counter, flag, hook, kind, KernelOffsets, SNAP_LEN};

use crate::{
    emit::{emit, reset},
    filter,
    maps::{bump, config, SCRATCH, SCRATCH_TC},
    parse, skb,
};

/// The packet of a tc program. Headers are read straight from the linear part of the skb
/// (direct packet access: plain loads, no helper call); a header that lies past it (a
/// non-linear skb) falls back to bpf_skb_load_bytes, which copies from the fragments.
struct Skb<'a> {
    ctx: &'a TcContext,
    data: usize,
    end: usize,
}

/// Headers are parsed within this many bytes of the frame start; bounding the offset lets the
/// verifier accept `data + off` as a packet pointer (it must stay below 64 KiB).
const MAX_HEADER_OFF: usize = 1024;

impl parse::Reader for Skb<'_> {
    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Option<T> {
        if off > MAX_HEADER_OFF {
            return None;
        }
        let at = self.data + off;
        if at + core::mem::size_of::<T>() <= self.end {
            // SAFETY: [at, at + size_of::<T>()) lies inside the linear packet data, as just
            // checked against data_end (the verifier checks the same).
            return Some(unsafe { load_words::<T>(at) });
        }
        // bpf_skb_load_bytes checks the offset against the whole packet at run time.
        self.ctx.load::<T>(off).ok()
    }
}

/// `T`'s bytes at `at`, loaded 8, 4, 2 then 1 byte at a time into an 8-byte-aligned buffer.
/// `read_unaligned` of a byte array compiles to one load per byte on BPF (it has no unaligned
/// loads in general); packet data may be loaded at any alignment on the architectures whose
/// verifier allows it (those with efficient unaligned access, x86-64 and arm64 included), so
/// word loads are fine and the parser's byte picks become shifts of registers.
///
/// The loads go through `*const u64/u32/u16` pointers that may be unaligned, which Rust's rules
/// do not allow; on BPF they are single `ldx` instructions whose alignment the verifier checks
/// against the architecture (accepted for packet data where unaligned access is efficient),
/// and the crate is never built with debug assertions (release profile, `panic = abort`).
///
/// # Safety
/// `[at, at + size_of::<T>())` must be readable packet data; `T` must be valid for any bytes.
#[inline(always)]
unsafe fn load_words<T: Copy>(at: usize) -> T {
    #[repr(C, align(8))]
    struct Aligned<T>(T);
    let mut buf = core::mem::MaybeUninit::<Aligned<T>>::uninit();
    let dst = buf.as_mut_ptr().cast::<u8>();
    let n = core::mem::size_of::<T>();
    let mut i = 0;
    // SAFETY (all blocks): i + width <= n, inside both the packet range and the buffer; the
    // buffer offsets are multiples of the width, so the stores are aligned.
    while i + 8 <= n {
        unsafe {
            dst.add(i)
                .cast::<u64>()
                .write(((at + i) as *const u64).read_volatile())
        };
        i += 8;
    }
    if i + 4 <= n {
        unsafe {
            dst.add(i)
                .cast::<u32>()
                .write(((at + i) as *const u32).read_volatile())
        };
        i += 4;
    }
    if i + 2 <= n {
        unsafe {
            dst.add(i)
                .cast::<u16>()
                .write(((at + i) as *const u16).read_volatile())
        };
        i += 2;
    }
    if i < n {
        unsafe { dst.add(i).write(((at + i) as *const u8).read_volatile()) };
    }
    // SAFETY: every byte of T was written above.
    unsafe { buf.assume_init().0 }
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
    let Some(slot) = SCRATCH.get_ptr_mut(SCRATCH_TC) else {
        return;
    };
    // SAFETY: this CPU's scratch slot; a program runs to completion without migrating.
    let slot = unsafe { &mut *slot };
    let ev = &mut slot.event;
    reset(ev, kind::PACKET, hook);
    let skb = Skb {
        ctx,
        data: ctx.data(),
        end: ctx.data_end(),
    };
    ev.flags = parse::parse_packet(&skb, 0, 0, &mut ev.outer, &mut ev.inner);
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
    // Only the skb's device knows the namespace (bpf_get_netns_cookie answers for the sending
    // socket's namespace). The context pointer of a tc program is the kernel's `struct sk_buff
    // *`: read through the kfunc's typed pointer, or else with bpf_probe_read_kernel (allowed
    // for privileged, CAP_PERFMON, loaders).
    let o: KernelOffsets = config(|c| &c.offsets);
    let kskb = skb::kern_ctx(ctx.skb.skb as *const u8);
    let dev = if kskb != 0 {
        // Plain loads through the BTF-typed pointer: three helper calls saved per event.
        skb::skb_device::<skb::Direct>(kskb, &o)
    } else {
        skb::skb_device::<skb::Probe>(ctx.skb.skb as u64, &o)
    };
    if let Some((_, cookie)) = dev {
        ev.netns_cookie = cookie;
    }
    // SAFETY: no preconditions.
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    if config(|c| &c.flags) & config_flag::SNAP == 0 {
        emit(ev);
        return;
    }
    // Verifier: the length passed to bpf_skb_load_bytes must be provably in 1..=SNAP_LEN.
    let n = ev.len.min(SNAP_LEN as u32);
    if n == 0 || n > SNAP_LEN as u32 {
        emit(ev);
        return;
    }
    // SAFETY: the destination is SNAP_LEN bytes of map value; n is within 1..=SNAP_LEN.
    let rc = unsafe { bpf_skb_load_bytes(ctx.skb.skb.cast(), 0, slot.snap.as_mut_ptr().cast(), n) };
    slot.event.snap_len = if rc == 0 { n } else { 0 };
    emit(slot);
}
