//! vethtrace's kernel side: tc programs that record matching packets at every hook they are
//! attached to, a tp_btf program on skb:kfree_skb that records matching drops, and fentry/fexit
//! programs on nft_do_chain that record the verdicts of nftables base chains (iptables-nft's
//! included) on matching packets.
//!
//! Owns: header parsing, the in-kernel filter, writing events and loss counters.
//! Does not own: deciding where to attach, naming things, correlating hops (user space does).
//! The programs never change a packet's fate: every tc entry point returns TC_ACT_UNSPEC so the
//! next program on the hook (a CNI's) and the kernel's normal path run unchanged.
#![no_std]
#![no_main]
// One placeholder kfunc call instruction (see `vethtrace_common::kfunc`) is emitted with asm.
#![feature(asm_experimental_arch)]

mod devhook;
mod drop;
mod emit;
mod filter;
mod maps;
mod netfilter;
mod parse;
mod skb;
mod tc;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach this; it exists only to satisfy no_std.
    loop {}
}
