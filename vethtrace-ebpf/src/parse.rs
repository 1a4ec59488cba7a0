//! Bounds-checked header parsing shared by the tc and drop programs.
//!
//! Every read goes through [`Reader::read`], which fails instead of reading past the frame, and
//! parsing follows header lengths (VLAN tags, IPv4 IHL, IPv6 extension headers), never fixed
//! offsets. When a read fails the flow keeps what was parsed so far and `TRUNCATED` is set.

use vethtrace_common::{flag, Flow};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
/// UDP ports that carry VXLAN: IANA's and the Linux/flannel default.
pub const VXLAN_PORTS: [u16; 2] = [4789, 8472];
const ETH_HLEN: usize = 14;
const VXLAN_HLEN: usize = 8;
const UDP_HLEN: usize = 8;
/// Most IPv6 extension headers followed before giving up.
const MAX_IPV6_EXT: usize = 6;

/// Reads `T` at `off` bytes into the frame, or fails when the frame is shorter.
pub trait Reader {
    fn read<T: Copy>(&self, off: usize) -> Option<T>;
}

/// Where parsing of one layer stopped.
pub struct Parsed {
    /// Offset of the UDP payload when the packet is UDP to a VXLAN port.
    pub vxlan_payload: Option<usize>,
    pub truncated: bool,
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// Parses an Ethernet frame starting at `off`.
#[inline(always)]
pub fn parse_ethernet<R: Reader>(r: &R, off: usize, flow: &mut Flow) -> Parsed {
    let Some(mut ethertype) = r.read::<[u8; 2]>(off + 12).map(be16) else {
        return truncated();
    };
    let mut off = off + ETH_HLEN;
    // Up to two tags: 802.1ad outer + 802.1Q inner (QinQ). `vlan` is the outermost tag's id,
    // even when that is 0 (a priority tag).
    for tag_index in 0..2 {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let Some(tag) = r.read::<[u8; 4]>(off) else {
            flow.ethertype = ethertype;
            return truncated();
        };
        if tag_index == 0 {
            flow.vlan = be16([tag[0], tag[1]]) & 0x0fff;
        }
        ethertype = be16([tag[2], tag[3]]);
        off += 4;
    }
    parse_l3(r, off, ethertype, flow)
}

/// Parses the network layer at `off`, of the given ethertype.
#[inline(always)]
pub fn parse_l3<R: Reader>(r: &R, off: usize, ethertype: u16, flow: &mut Flow) -> Parsed {
    flow.ethertype = ethertype;
    match ethertype {
        ETH_P_IP => parse_ipv4(r, off, flow),
        ETH_P_IPV6 => parse_ipv6(r, off, flow),
        ETH_P_ARP => parse_arp(r, off, flow),
        _ => done(),
    }
}

#[inline(always)]
fn parse_arp<R: Reader>(r: &R, off: usize, flow: &mut Flow) -> Parsed {
    // Ethernet/IPv4 ARP: htype(2) ptype(2) hlen plen op(2) sha(6) spa(4) tha(6) tpa(4).
    let Some(hdr) = r.read::<[u8; 8]>(off) else {
        return truncated();
    };
    flow.arp_op = hdr[7];
    if hdr[4] != 6 || hdr[5] != 4 {
        return done();
    }
    let Some(spa) = r.read::<[u8; 4]>(off + 14) else {
        return truncated();
    };
    flow.src[..4].copy_from_slice(&spa);
    let Some(tpa) = r.read::<[u8; 4]>(off + 24) else {
        return truncated();
    };
    flow.dst[..4].copy_from_slice(&tpa);
    done()
}

#[inline(always)]
fn parse_ipv4<R: Reader>(r: &R, off: usize, flow: &mut Flow) -> Parsed {
    let Some(h) = r.read::<[u8; 20]>(off) else {
        return truncated();
    };
    let ihl = ((h[0] & 0x0f) as usize) * 4;
    if ihl < 20 {
        return done();
    }
    flow.ip_len = be16([h[2], h[3]]);
    flow.ip_id = be16([h[4], h[5]]) as u32;
    flow.ttl = h[8];
    flow.l4 = h[9];
    flow.src[..4].copy_from_slice(&h[12..16]);
    flow.dst[..4].copy_from_slice(&h[16..20]);
    // Only the first fragment carries the transport header.
    let frag_off = be16([h[6], h[7]]) & 0x1fff;
    if frag_off != 0 {
        return done();
    }
    parse_l4(r, off + ihl, flow)
}

#[inline(always)]
fn parse_ipv6<R: Reader>(r: &R, off: usize, flow: &mut Flow) -> Parsed {
    let Some(h) = r.read::<[u8; 40]>(off) else {
        return truncated();
    };
    flow.ip_id = u32::from_be_bytes([0, h[1] & 0x0f, h[2], h[3]]);
    flow.ip_len = be16([h[4], h[5]]).saturating_add(40);
    flow.ttl = h[7];
    flow.src.copy_from_slice(&h[8..24]);
    flow.dst.copy_from_slice(&h[24..40]);
    let mut next = h[6];
    let mut off = off + 40;
    for _ in 0..MAX_IPV6_EXT {
        match next {
            // Hop-by-hop, routing, destination options: length in 8-byte units, not counting the first 8.
            0 | 43 | 60 => {
                let Some(e) = r.read::<[u8; 2]>(off) else {
                    flow.l4 = next;
                    return truncated();
                };
                next = e[0];
                off += (e[1] as usize + 1) * 8;
            }
            // Fragment header: fixed 8 bytes; later fragments carry no transport header.
            44 => {
                let Some(e) = r.read::<[u8; 4]>(off) else {
                    flow.l4 = next;
                    return truncated();
                };
                next = e[0];
                off += 8;
                if be16([e[2], e[3]]) & 0xfff8 != 0 {
                    flow.l4 = next;
                    return done();
                }
            }
            // Authentication header: length in 4-byte units, not counting the first 8.
            51 => {
                let Some(e) = r.read::<[u8; 2]>(off) else {
                    flow.l4 = next;
                    return truncated();
                };
                next = e[0];
                off += (e[1] as usize + 2) * 4;
            }
            _ => break,
        }
    }
    flow.l4 = next;
    parse_l4(r, off, flow)
}

#[inline(always)]
fn parse_l4<R: Reader>(r: &R, off: usize, flow: &mut Flow) -> Parsed {
    match flow.l4 {
        IPPROTO_TCP => {
            let Some(t) = r.read::<[u8; 14]>(off) else {
                return truncated();
            };
            flow.sport = be16([t[0], t[1]]);
            flow.dport = be16([t[2], t[3]]);
            flow.tcp_seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
            flow.tcp_flags = t[13];
            done()
        }
        IPPROTO_UDP => {
            let Some(u) = r.read::<[u8; 4]>(off) else {
                return truncated();
            };
            flow.sport = be16([u[0], u[1]]);
            flow.dport = be16([u[2], u[3]]);
            if VXLAN_PORTS.contains(&flow.dport) {
                return Parsed {
                    vxlan_payload: Some(off + UDP_HLEN),
                    truncated: false,
                };
            }
            done()
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let Some(i) = r.read::<[u8; 8]>(off) else {
                return truncated();
            };
            flow.icmp_type = i[0];
            flow.icmp_code = i[1];
            flow.icmp_id = be16([i[4], i[5]]);
            flow.icmp_seq = be16([i[6], i[7]]);
            done()
        }
        _ => done(),
    }
}

/// Parses a whole frame (Ethernet at `off`, or L3 of `ethertype` when `ethertype != 0`) into
/// `outer`, and the VXLAN-encapsulated frame, if any, into `inner`. Returns [`flag`] bits.
#[inline(always)]
pub fn parse_packet<R: Reader>(
    r: &R,
    off: usize,
    ethertype: u16,
    outer: &mut Flow,
    inner: &mut Flow,
) -> u8 {
    let p = if ethertype == 0 {
        parse_ethernet(r, off, outer)
    } else {
        parse_l3(r, off, ethertype, outer)
    };
    let mut flags = 0;
    if p.truncated {
        flags |= flag::TRUNCATED;
    }
    if let Some(vx) = p.vxlan_payload {
        // VXLAN header: flags(1) with the I bit (0x08) set, reserved(3), VNI(3), reserved(1).
        // Read as the whole 8-byte header: a 1-byte read lets the compiler turn the tc
        // reader's `at + 1 <= end` into `at < end`, which the verifier cannot use as a bound.
        match r.read::<[u8; VXLAN_HLEN]>(vx).map(|h| h[0]) {
            Some(f) if f & 0x08 != 0 => {
                flags |= flag::ENCAP;
                // The inner layer is parsed without looking for VXLAN again (no recursion in BPF).
                let q = parse_ethernet_inner(r, vx + VXLAN_HLEN, inner);
                if q {
                    flags |= flag::TRUNCATED;
                }
            }
            Some(_) => {}
            None => flags |= flag::TRUNCATED,
        }
    }
    flags
}

/// The inner frame of a VXLAN packet; returns whether it was truncated.
#[inline(always)]
fn parse_ethernet_inner<R: Reader>(r: &R, off: usize, flow: &mut Flow) -> bool {
    parse_ethernet(r, off, flow).truncated
}

#[inline(always)]
fn truncated() -> Parsed {
    Parsed {
        vxlan_payload: None,
        truncated: true,
    }
}

#[inline(always)]
fn done() -> Parsed {
    Parsed {
        vxlan_payload: None,
        truncated: false,
    }
}
