//! The in-kernel filter: a postfix program (compiled by user space from a tcpdump-like
//! expression) evaluated over a stack of booleans kept in the bits of one register.
//! It runs before any ring-buffer work, so a rejected packet costs only the parse.

use vethtrace_common::{field, op, FilterInsn, Flow, MAX_FILTER_INSNS};

use crate::maps::config;

/// Whether the filter accepts the packet: the outer layer, or else the encapsulated one.
#[inline(always)]
pub fn accepts(outer: &Flow, inner: &Flow, encap: bool) -> bool {
    let len = config(|c| &c.filter_len) as usize;
    if len == 0 {
        return true;
    }
    eval(len, outer, encap) || (encap && eval(len, inner, false))
}

#[inline(always)]
fn eval(len: usize, flow: &Flow, encap: bool) -> bool {
    // Bit 0 is the top of the stack.
    let mut stack: u32 = 0;
    // The verifier needs the loop bounded by a constant; `len` only ends it early.
    for i in 0..MAX_FILTER_INSNS {
        if i >= len {
            break;
        }
        let insn: FilterInsn = config(|c| &c.filter[i]);
        stack = match insn.op {
            op::TEST => (stack << 1) | test(&insn, flow, encap) as u32,
            op::AND => ((stack >> 2) << 1) | (stack & (stack >> 1) & 1),
            op::OR => ((stack >> 2) << 1) | ((stack | (stack >> 1)) & 1),
            op::NOT => stack ^ 1,
            _ => return false,
        };
    }
    stack & 1 == 1
}

#[inline(always)]
fn test(insn: &FilterInsn, f: &Flow, encap: bool) -> bool {
    match insn.field {
        field::HOST => addr_eq(insn, f, &f.src) || addr_eq(insn, f, &f.dst),
        field::SRC_HOST => addr_eq(insn, f, &f.src),
        field::DST_HOST => addr_eq(insn, f, &f.dst),
        field::L4 => has_l4(f) && f.l4 as u32 == insn.value,
        field::ETHERTYPE => f.ethertype as u32 == insn.value,
        field::PORT => {
            has_ports(f) && (f.sport as u32 == insn.value || f.dport as u32 == insn.value)
        }
        field::SRC_PORT => has_ports(f) && f.sport as u32 == insn.value,
        field::DST_PORT => has_ports(f) && f.dport as u32 == insn.value,
        field::ENCAP => encap,
        field::ICMP_ID => {
            (f.l4 == crate::parse::IPPROTO_ICMP || f.l4 == crate::parse::IPPROTO_ICMPV6)
                && f.icmp_id as u32 == insn.value
        }
        _ => false,
    }
}

#[inline(always)]
fn has_l4(f: &Flow) -> bool {
    f.ethertype == crate::parse::ETH_P_IP || f.ethertype == crate::parse::ETH_P_IPV6
}

#[inline(always)]
fn has_ports(f: &Flow) -> bool {
    has_l4(f) && (f.l4 == crate::parse::IPPROTO_TCP || f.l4 == crate::parse::IPPROTO_UDP)
}

#[inline(always)]
fn addr_eq(insn: &FilterInsn, f: &Flow, a: &[u8; 16]) -> bool {
    let family_ok = match insn.family {
        4 => f.ethertype == crate::parse::ETH_P_IP || f.ethertype == crate::parse::ETH_P_ARP,
        6 => f.ethertype == crate::parse::ETH_P_IPV6,
        _ => false,
    };
    let w0 = u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
    let w1 = u64::from_ne_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]);
    family_ok && w0 & insn.mask[0] == insn.addr[0] && w1 & insn.mask[1] == insn.addr[1]
}
