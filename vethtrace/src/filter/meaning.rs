//! What a filter means, read straight from its syntax tree (the module documentation's rules):
//! the reference the compiled program and its evaluators must agree with (unit property test,
//! fuzz target). Not used to filter packets.

use std::net::IpAddr;

use vethtrace_common::Flow;

use super::{Dir, Expr, Proto, Test};

const IP: u16 = 0x0800;
const IP6: u16 = 0x86dd;
const ARP: u16 = 0x0806;

/// Whether `e` accepts one layer `f` of a packet (`encap`: the packet is VXLAN and `f` its
/// outer layer).
pub fn matches(e: &Expr, f: &Flow, encap: bool) -> bool {
    match e {
        Expr::Any => true,
        Expr::Test(t) => test(t, f, encap),
        Expr::Not(e) => !matches(e, f, encap),
        Expr::And(a, b) => matches(a, f, encap) && matches(b, f, encap),
        Expr::Or(a, b) => matches(a, f, encap) || matches(b, f, encap),
    }
}

fn test(t: &Test, f: &Flow, encap: bool) -> bool {
    let ip = f.ethertype == IP || f.ethertype == IP6;
    let ports = ip && (f.l4 == 6 || f.l4 == 17);
    let ends = |dir: Dir, src: bool, dst: bool| match dir {
        Dir::Either => src || dst,
        Dir::Src => src,
        Dir::Dst => dst,
        Dir::Both => src && dst,
    };
    match *t {
        Test::Addr { dir, net } => {
            let inside = |a: Option<IpAddr>| a.is_some_and(|a| net.contains(a));
            ends(dir, inside(f.src_ip()), inside(f.dst_ip()))
        }
        Test::Port { dir, port } => ports && ends(dir, f.sport == port, f.dport == port),
        Test::Proto(Proto::Ip) => f.ethertype == IP,
        Test::Proto(Proto::Ip6) => f.ethertype == IP6,
        Test::Proto(Proto::Arp) => f.ethertype == ARP,
        Test::Proto(Proto::Icmp) => ip && f.l4 == 1,
        Test::Proto(Proto::Icmp6) => ip && f.l4 == 58,
        Test::Proto(Proto::Tcp) => ip && f.l4 == 6,
        Test::Proto(Proto::Udp) => ip && f.l4 == 17,
        Test::Vxlan => encap,
        Test::IcmpId(id) => (f.l4 == 1 || f.l4 == 58) && f.icmp_id == id,
    }
}
