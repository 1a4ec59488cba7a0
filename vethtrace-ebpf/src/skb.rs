//! Walking kernel structures from an `sk_buff` pointer at offsets user space read from the
//! running kernel's BTF (`Config::offsets`) — with plain loads where the verifier types the
//! pointer from BTF ([`Direct`]), else with bpf_probe_read_kernel ([`Probe`]) — and parsing the
//! packet an skb holds from its network header.

use aya_ebpf::helpers::{bpf_probe_read_kernel, generated};
use vethtrace_common::{flag, Event, EventSnap, KernelOffsets, SNAP_LEN};

use crate::parse;

/// Reads a `T` at `base + off`; 0 (`T::default()`) if the read faults.
#[inline(always)]
pub fn field<T: Copy + Default>(base: *const u8, off: u32) -> T {
    // SAFETY: bpf_probe_read_kernel tolerates any address: a bad one returns an error, which
    // becomes the default value.
    unsafe {
        bpf_probe_read_kernel(base.wrapping_add(off as usize).cast::<T>()).unwrap_or_default()
    }
}

/// (ifindex, netns cookie) of a `struct net_device *`, or None for a null pointer.
#[inline(always)]
pub fn net_device<F: Fields>(dev: u64, o: &KernelOffsets) -> Option<(u32, u64)> {
    if dev == 0 {
        return None;
    }
    let ifindex: u32 = F::get(dev, o.dev_ifindex);
    // possible_net_t is one `struct net *` at the start of nd_net.
    let net: u64 = F::get(dev, o.dev_nd_net);
    Some((ifindex, net_cookie::<F>(net, o)))
}

/// `net->net_cookie` of a `struct net *`; 0 for a null pointer.
#[inline(always)]
pub fn net_cookie<F: Fields>(net: u64, o: &KernelOffsets) -> u64 {
    if net == 0 {
        0
    } else {
        F::get(net, o.net_cookie)
    }
}

/// `bpf_cast_to_kern_ctx(ctx)`: the tc context as the kernel's `struct sk_buff *`, which the
/// verifier types from BTF so its fields (and the structures they point to) are read with
/// plain loads; 0 when user space found no such kfunc and patched the call into `r0 = 0`.
#[inline(always)]
pub fn kern_ctx(ctx: *const u8) -> u64 {
    let skb: u64;
    // SAFETY: the bytes are `vethtrace_common::kfunc::PLACEHOLDER`, one call instruction that
    // user space patches before loading (into the kfunc's BTF id, or `r0 = 0`). Like any BPF
    // call it reads r1 and clobbers r0–r5; it touches no memory of ours.
    unsafe {
        core::arch::asm!(
            ".byte 0x85, 0x20, 0x00, 0x00, 0xc7, 0xc7, 0x7e, 0x7e",
            inlateout("r1") ctx => _,
            lateout("r0") skb,
            lateout("r2") _,
            lateout("r3") _,
            lateout("r4") _,
            lateout("r5") _,
            options(nostack, readonly),
        );
    }
    skb
}

/// Reads a `T` at `base + off` where `base` is a BTF-typed kernel pointer (from
/// [`kern_ctx`] or a field loaded through one): the verifier checks the access against the
/// kernel's types and turns it into a fault-tolerant load, so no helper call is needed.
#[inline(always)]
fn btf_load<T: Copy>(base: u64, off: u32) -> T {
    // SAFETY: see above; a faulting address reads as 0 instead of crashing (PROBE_MEM).
    unsafe { core::ptr::read_volatile((base + off as u64) as *const T) }
}

/// A packet's bytes in kernel memory from its network header: `base` is kernel memory, `len`
/// how much of it belongs to the packet.
pub struct KernelBytes {
    pub base: *const u8,
    pub len: usize,
}

impl parse::Reader for KernelBytes {
    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Option<T> {
        if off + core::mem::size_of::<T>() > self.len {
            return None;
        }
        // SAFETY: bpf_probe_read_kernel tolerates faults; the bound above keeps us inside the skb.
        unsafe { bpf_probe_read_kernel(self.base.add(off).cast::<T>()).ok() }
    }
}

/// How kernel structure fields are read: [`Probe`] (bpf_probe_read_kernel, any pointer) or
/// [`Direct`] (plain loads, for pointers the verifier types from BTF: a tp_btf argument or
/// [`kern_ctx`]'s result; no helper call).
pub trait Fields {
    fn get<T: Copy + Default>(base: u64, off: u32) -> T;
}

pub struct Probe;

impl Fields for Probe {
    #[inline(always)]
    fn get<T: Copy + Default>(base: u64, off: u32) -> T {
        field(base as *const u8, off)
    }
}

pub struct Direct;

impl Fields for Direct {
    #[inline(always)]
    fn get<T: Copy + Default>(base: u64, off: u32) -> T {
        btf_load(base, off)
    }
}

/// (ifindex, netns cookie) of the device `skb` is on, or None when it has none.
#[inline(always)]
pub fn skb_device<F: Fields>(skb: u64, o: &KernelOffsets) -> Option<(u32, u64)> {
    net_device::<F>(F::get(skb, o.skb_dev), o)
}

/// Where the linear data of `skb` ends, as an offset from `head`: `len` counts from `data`
/// and includes `data_len` bytes in paged fragments, which only bpf_skb_load_bytes-like
/// copies reach; past the linear end lie tailroom and `skb_shared_info`.
#[inline(always)]
pub fn linear_end<F: Fields>(skb: u64, o: &KernelOffsets, head: u64, data: u64, len: u32) -> i64 {
    let data_len: u32 = F::get(skb, o.skb_data_len);
    data.wrapping_sub(head) as i64 + len.saturating_sub(data_len) as i64
}

/// Where the packet `skb` holds starts, from its network header: sets `ev.len` and `ev.mark`
/// and returns the network-layer bytes and their ethertype (`skb->protocol`), or None when
/// they could not be located (then `TRUNCATED` is set).
#[inline(always)]
pub fn locate<F: Fields>(
    skb: u64,
    o: &KernelOffsets,
    ev: &mut Event,
) -> Option<(KernelBytes, u16)> {
    let head: u64 = F::get(skb, o.skb_head);
    let data: u64 = F::get(skb, o.skb_data);
    let len: u32 = F::get(skb, o.skb_len);
    let nh: u16 = F::get(skb, o.skb_network_header);
    // skb->protocol is the ethertype in network byte order.
    let ethertype: u16 = u16::from_be(F::get::<u16>(skb, o.skb_protocol));
    ev.len = len;
    ev.mark = F::get(skb, o.skb_mark);
    // Bytes from the network header to the end of the linear data (headers in paged
    // fragments read as truncated).
    let avail = linear_end::<F>(skb, o, head, data, len) - nh as i64;
    if head == 0 || avail <= 0 || ethertype == 0 {
        ev.flags |= flag::TRUNCATED;
        return None;
    }
    let bytes = KernelBytes {
        base: (head + nh as u64) as *const u8,
        len: avail as usize,
    };
    Some((bytes, ethertype))
}

/// Parses the packet `skb` holds, from its network header, into `ev.outer`/`ev.inner` and
/// `ev.flags` (see [`locate`]), probe-reading each header. Returns the network-layer bytes
/// (for a snapshot), or None when they could not be located.
#[inline(always)]
pub fn parse_skb<F: Fields>(skb: u64, o: &KernelOffsets, ev: &mut Event) -> Option<KernelBytes> {
    let (bytes, ethertype) = locate::<F>(skb, o, ev)?;
    ev.flags |= parse::parse_packet(&bytes, 0, ethertype, &mut ev.outer, &mut ev.inner);
    Some(bytes)
}

/// Headers start within this many bytes of the network header in a [`Copied`] buffer (deeper
/// ones read as truncated). Far enough below SNAP_LEN that the verifier accepts every read even
/// when the compiler computes the address before the length check (it did).
pub const COPIED_MAX_OFF: usize = 128;

/// Packet bytes already copied into a buffer (one probe read for all headers): `len` of them
/// are valid.
pub struct Copied<'a> {
    pub buf: &'a [u8; SNAP_LEN],
    pub len: usize,
}

impl parse::Reader for Copied<'_> {
    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Option<T> {
        if off > COPIED_MAX_OFF {
            return None;
        }
        if off + core::mem::size_of::<T>() > self.len {
            return None;
        }
        // SAFETY: [off, off + size) lies inside the buffer's valid bytes, checked above; the
        // largest header read (40 bytes) from COPIED_MAX_OFF stays inside SNAP_LEN.
        Some(unsafe { core::ptr::read_unaligned(self.buf.as_ptr().add(off).cast::<T>()) })
    }
}

const _: () = assert!(COPIED_MAX_OFF + 40 <= SNAP_LEN);

/// Copies the first bytes of a packet from kernel memory (`src`, `avail` bytes of packet
/// there) into the slot's buffer with one probe read, and parses them into the slot's event:
/// from the Ethernet header when `ethertype` is 0, else from a network header of that
/// ethertype. Returns how many bytes were copied (0 when the read failed: then the event is
/// parsed as truncated).
#[inline(always)]
pub fn copy_and_parse(slot: &mut EventSnap, src: u64, avail: u64, ethertype: u16) -> u32 {
    // Verifier: the size must be provably in 1..=SNAP_LEN.
    let n = avail.min(SNAP_LEN as u64) as u32;
    let mut copied = 0;
    if n > 0 && n <= SNAP_LEN as u32 {
        // SAFETY: the destination is SNAP_LEN bytes of map value and n is within 1..=SNAP_LEN;
        // a bad source address makes the helper fail, not fault.
        let rc = unsafe {
            generated::bpf_probe_read_kernel(slot.snap.as_mut_ptr().cast(), n, src as *const _)
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
    copied
}
