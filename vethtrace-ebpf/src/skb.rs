//! Walking kernel structures from an `sk_buff` pointer with bpf_probe_read_kernel, at offsets
//! user space read from the running kernel's BTF (`Config::offsets`), and parsing the packet an
//! skb holds from its network header. Shared by the programs that see an `sk_buff *` rather
//! than a tc context: drops (kfree_skb) and netfilter verdicts (nft_do_chain).

use aya_ebpf::helpers::bpf_probe_read_kernel;
use vethtrace_common::{flag, Event, KernelOffsets};

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

/// The device an skb is on: (ifindex, netns cookie), or None when it has no device.
#[inline(always)]
pub fn device(skb: *const u8, o: &KernelOffsets) -> Option<(u32, u64)> {
    net_device(field(skb, o.skb_dev), o)
}

/// (ifindex, netns cookie) of a `struct net_device *`, or None for a null pointer.
#[inline(always)]
pub fn net_device(dev: u64, o: &KernelOffsets) -> Option<(u32, u64)> {
    if dev == 0 {
        return None;
    }
    let dev = dev as *const u8;
    let ifindex: u32 = field(dev, o.dev_ifindex);
    // possible_net_t is one `struct net *` at the start of nd_net.
    let net: u64 = field(dev, o.dev_nd_net);
    Some((ifindex, net_cookie(net, o)))
}

/// `net->net_cookie` of a `struct net *`; 0 for a null pointer.
#[inline(always)]
pub fn net_cookie(net: u64, o: &KernelOffsets) -> u64 {
    if net == 0 {
        0
    } else {
        field(net as *const u8, o.net_cookie)
    }
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

/// Parses the packet `skb` holds, from its network header (of ethertype `skb->protocol`),
/// into `ev.outer`/`ev.inner` and `ev.flags`, and sets `ev.len` and `ev.mark`. Returns the
/// network-layer bytes (for a snapshot), or None when they could not be located (then
/// `TRUNCATED` is set).
#[inline(always)]
pub fn parse_skb(skb: *const u8, o: &KernelOffsets, ev: &mut Event) -> Option<KernelBytes> {
    let head: u64 = field(skb, o.skb_head);
    let data: u64 = field(skb, o.skb_data);
    let len: u32 = field(skb, o.skb_len);
    let nh: u16 = field(skb, o.skb_network_header);
    // skb->protocol is the ethertype in network byte order.
    let ethertype: u16 = u16::from_be(field::<u16>(skb, o.skb_protocol));
    ev.len = len;
    ev.mark = field(skb, o.skb_mark);
    // Bytes from the network header to the end of the packet: len counts from data.
    let data_off = data.wrapping_sub(head) as i64;
    let avail = len as i64 + data_off - nh as i64;
    if head == 0 || avail <= 0 || ethertype == 0 {
        ev.flags |= flag::TRUNCATED;
        return None;
    }
    let bytes = KernelBytes {
        base: (head + nh as u64) as *const u8,
        len: avail as usize,
    };
    ev.flags |= parse::parse_packet(&bytes, 0, ethertype, &mut ev.outer, &mut ev.inner);
    Some(bytes)
}
