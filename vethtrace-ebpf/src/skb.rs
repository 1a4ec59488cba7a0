//! Walking kernel structures from an `sk_buff` pointer with bpf_probe_read_kernel, at offsets
//! user space read from the running kernel's BTF (`Config::offsets`).

use aya_ebpf::helpers::bpf_probe_read_kernel;
use vethtrace_common::KernelOffsets;

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
    let dev: u64 = field(skb, o.skb_dev);
    if dev == 0 {
        return None;
    }
    let dev = dev as *const u8;
    let ifindex: u32 = field(dev, o.dev_ifindex);
    // possible_net_t is one `struct net *` at the start of nd_net.
    let net: u64 = field(dev, o.dev_nd_net);
    let cookie = if net == 0 {
        0
    } else {
        field(net as *const u8, o.net_cookie)
    };
    Some((ifindex, cookie))
}
