//! From an [`Expr`] to the kernel's postfix program, and a Rust copy of the kernel's evaluator
//! (`vethtrace-ebpf/src/filter.rs`) to test programs against handmade [`Flow`]s.

use std::net::IpAddr;

use vethtrace_common::{field, op, FilterInsn, Flow, MAX_FILTER_INSNS, MAX_FILTER_STACK};

use super::{Dir, Expr, FilterError, IpNet, Proto, Test};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;

/// An ethertype no packet has (they are 16 bits): `TEST ETHERTYPE NO_ETHERTYPE; NOT` is the
/// always-true program an [`Expr::Any`] below an operator compiles to.
const NO_ETHERTYPE: u32 = 0x1_0000;

/// Compiles an expression to the kernel's postfix program. [`Expr::Any`] is the empty program.
/// Fails when the program would be longer than [`MAX_FILTER_INSNS`] or need a deeper stack than
/// [`MAX_FILTER_STACK`]; the error's token is then the whole expression.
pub fn compile(e: &Expr) -> Result<Vec<FilterInsn>, FilterError> {
    compile_within(e, MAX_FILTER_INSNS, MAX_FILTER_STACK)
}

fn compile_within(
    e: &Expr,
    max_insns: usize,
    max_stack: usize,
) -> Result<Vec<FilterInsn>, FilterError> {
    if *e == Expr::Any {
        return Ok(Vec::new());
    }
    let mut insns = Vec::new();
    let depth = emit(e, &mut insns);
    let too_big = |expected: String| FilterError {
        pos: 0,
        token: e.to_string(),
        expected,
    };
    if insns.len() > max_insns {
        return Err(too_big(format!(
            "a filter that compiles to at most {max_insns} instructions (this one needs {})",
            insns.len()
        )));
    }
    if depth > max_stack {
        return Err(too_big(format!(
            "a filter that needs at most {max_stack} stack entries (this one needs {depth})"
        )));
    }
    Ok(insns)
}

/// Appends the program for `e`, which leaves one value on the stack, and returns the stack
/// depth it reaches.
fn emit(e: &Expr, out: &mut Vec<FilterInsn>) -> usize {
    match e {
        Expr::Any => {
            out.push(value_test(field::ETHERTYPE, NO_ETHERTYPE));
            out.push(insn(op::NOT));
            1
        }
        Expr::Test(t) => emit_test(t, out),
        Expr::Not(e) => {
            let depth = emit(e, out);
            out.push(insn(op::NOT));
            depth
        }
        Expr::And(a, b) | Expr::Or(a, b) => {
            let da = emit(a, out);
            let db = emit(b, out);
            out.push(insn(if matches!(e, Expr::And(..)) {
                op::AND
            } else {
                op::OR
            }));
            da.max(db + 1)
        }
    }
}

/// The program for one test (never too long: at most three instructions).
pub(super) fn test_insns(t: &Test) -> Vec<FilterInsn> {
    let mut out = Vec::new();
    emit_test(t, &mut out);
    out
}

fn emit_test(t: &Test, out: &mut Vec<FilterInsn>) -> usize {
    match *t {
        Test::Addr { dir, net } => emit_dir(
            dir,
            [field::HOST, field::SRC_HOST, field::DST_HOST],
            |f| addr_test(f, &net),
            out,
        ),
        Test::Port { dir, port } => emit_dir(
            dir,
            [field::PORT, field::SRC_PORT, field::DST_PORT],
            |f| value_test(f, port.into()),
            out,
        ),
        Test::Proto(p) => {
            let (f, value) = match p {
                Proto::Ip => (field::ETHERTYPE, ETH_P_IP.into()),
                Proto::Ip6 => (field::ETHERTYPE, ETH_P_IPV6.into()),
                Proto::Arp => (field::ETHERTYPE, ETH_P_ARP.into()),
                Proto::Icmp => (field::L4, IPPROTO_ICMP.into()),
                Proto::Icmp6 => (field::L4, IPPROTO_ICMPV6.into()),
                Proto::Tcp => (field::L4, IPPROTO_TCP.into()),
                Proto::Udp => (field::L4, IPPROTO_UDP.into()),
            };
            out.push(value_test(f, value));
            1
        }
        Test::Vxlan => {
            out.push(value_test(field::ENCAP, 0));
            1
        }
        Test::IcmpId(id) => {
            out.push(value_test(field::ICMP_ID, id.into()));
            1
        }
    }
}

/// A `host`/`net`/`port` test in one direction; `fields` are the either/source/destination
/// variants. `src and dst` is two tests.
fn emit_dir(
    dir: Dir,
    [either, src, dst]: [u8; 3],
    test: impl Fn(u8) -> FilterInsn,
    out: &mut Vec<FilterInsn>,
) -> usize {
    match dir {
        Dir::Either => out.push(test(either)),
        Dir::Src => out.push(test(src)),
        Dir::Dst => out.push(test(dst)),
        Dir::Both => {
            out.extend([test(src), test(dst), insn(op::AND)]);
            return 2;
        }
    }
    1
}

fn insn(op: u8) -> FilterInsn {
    FilterInsn {
        op,
        ..FilterInsn::default()
    }
}

fn value_test(field: u8, value: u32) -> FilterInsn {
    FilterInsn {
        op: op::TEST,
        field,
        value,
        ..FilterInsn::default()
    }
}

/// An address test: the packet's 16 address bytes (IPv4 in the first 4), masked, as two
/// native-endian words, compared with the pre-masked network.
fn addr_test(field: u8, net: &IpNet) -> FilterInsn {
    let (family, mut addr) = match net.addr() {
        IpAddr::V4(a) => {
            let mut bytes = [0u8; 16];
            bytes[..4].copy_from_slice(&a.octets());
            (4, bytes)
        }
        IpAddr::V6(a) => (6, a.octets()),
    };
    let mut mask = [0u8; 16];
    let mut bits = u32::from(net.prefix_len());
    for (m, a) in mask.iter_mut().zip(addr.iter_mut()) {
        let n = bits.min(8);
        // The top n bits of a byte.
        *m = (0xff00_u16 >> n) as u8;
        *a &= *m;
        bits -= n;
    }
    FilterInsn {
        op: op::TEST,
        field,
        family,
        addr: words(&addr),
        mask: words(&mask),
        ..FilterInsn::default()
    }
}

/// 16 bytes as the two native-endian words the kernel compares.
fn words(bytes: &[u8; 16]) -> [u64; 2] {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&bytes[..8]);
    hi.copy_from_slice(&bytes[8..]);
    [u64::from_ne_bytes(lo), u64::from_ne_bytes(hi)]
}

/// Whether the kernel would accept a packet: the filter matches the outer layer or, on a VXLAN
/// packet (`encap`), the encapsulated one. The empty program accepts everything.
pub fn accepts(insns: &[FilterInsn], outer: &Flow, inner: &Flow, encap: bool) -> bool {
    eval(insns, outer, encap) || (encap && eval(insns, inner, false))
}

/// Runs a program on one layer of a packet exactly as the kernel does (the empty program
/// matches): a stack of booleans in the bits of a `u32`, at most [`MAX_FILTER_INSNS`]
/// instructions, and an unknown opcode rejects the packet. `encap` is what `vxlan` tests.
pub fn eval(insns: &[FilterInsn], flow: &Flow, encap: bool) -> bool {
    if insns.is_empty() {
        return true;
    }
    // Bit 0 is the top of the stack.
    let mut stack: u32 = 0;
    for insn in insns.iter().take(MAX_FILTER_INSNS) {
        stack = match insn.op {
            op::TEST => (stack << 1) | u32::from(test(insn, flow, encap)),
            op::AND => ((stack >> 2) << 1) | (stack & (stack >> 1) & 1),
            op::OR => ((stack >> 2) << 1) | ((stack | (stack >> 1)) & 1),
            op::NOT => stack ^ 1,
            _ => return false,
        };
    }
    stack & 1 == 1
}

fn test(insn: &FilterInsn, f: &Flow, encap: bool) -> bool {
    let value = insn.value;
    match insn.field {
        field::HOST => addr_eq(insn, f, &f.src) || addr_eq(insn, f, &f.dst),
        field::SRC_HOST => addr_eq(insn, f, &f.src),
        field::DST_HOST => addr_eq(insn, f, &f.dst),
        field::L4 => has_l4(f) && u32::from(f.l4) == value,
        field::ETHERTYPE => u32::from(f.ethertype) == value,
        field::PORT => has_ports(f) && (u32::from(f.sport) == value || u32::from(f.dport) == value),
        field::SRC_PORT => has_ports(f) && u32::from(f.sport) == value,
        field::DST_PORT => has_ports(f) && u32::from(f.dport) == value,
        field::ENCAP => encap,
        field::ICMP_ID => {
            (f.l4 == IPPROTO_ICMP || f.l4 == IPPROTO_ICMPV6) && u32::from(f.icmp_id) == value
        }
        _ => false,
    }
}

fn has_l4(f: &Flow) -> bool {
    f.ethertype == ETH_P_IP || f.ethertype == ETH_P_IPV6
}

fn has_ports(f: &Flow) -> bool {
    has_l4(f) && (f.l4 == IPPROTO_TCP || f.l4 == IPPROTO_UDP)
}

fn addr_eq(insn: &FilterInsn, f: &Flow, a: &[u8; 16]) -> bool {
    let family_ok = match insn.family {
        4 => f.ethertype == ETH_P_IP || f.ethertype == ETH_P_ARP,
        6 => f.ethertype == ETH_P_IPV6,
        _ => false,
    };
    let [w0, w1] = words(a);
    family_ok && w0 & insn.mask[0] == insn.addr[0] && w1 & insn.mask[1] == insn.addr[1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::parse;

    fn c(text: &str) -> Vec<FilterInsn> {
        let e = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        compile(&e).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    /// `(op, field, value)` of each instruction.
    fn shape(insns: &[FilterInsn]) -> Vec<(u8, u8, u32)> {
        insns.iter().map(|i| (i.op, i.field, i.value)).collect()
    }

    fn bytes(words: [u64; 2]) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&words[0].to_ne_bytes());
        b[8..].copy_from_slice(&words[1].to_ne_bytes());
        b
    }

    const T: u8 = op::TEST;

    #[test]
    fn empty_expression_is_the_empty_program() {
        assert_eq!(compile(&Expr::Any), Ok(Vec::new()));
        assert_eq!(c(""), Vec::new());
    }

    #[test]
    fn protocol_primitives() {
        for (text, f, value) in [
            ("ip", field::ETHERTYPE, 0x0800),
            ("ip6", field::ETHERTYPE, 0x86dd),
            ("arp", field::ETHERTYPE, 0x0806),
            ("icmp", field::L4, 1),
            ("icmp6", field::L4, 58),
            ("tcp", field::L4, 6),
            ("udp", field::L4, 17),
            ("vxlan", field::ENCAP, 0),
            ("icmp id 513", field::ICMP_ID, 513),
            ("port 8472", field::PORT, 8472),
            ("src port 53", field::SRC_PORT, 53),
            ("dst port 80", field::DST_PORT, 80),
        ] {
            assert_eq!(shape(&c(text)), vec![(T, f, value)], "{text}");
        }
    }

    #[test]
    fn postfix_order() {
        assert_eq!(
            shape(&c("tcp and not (port 80 or udp)")),
            vec![
                (T, field::L4, 6),
                (T, field::PORT, 80),
                (T, field::L4, 17),
                (op::OR, 0, 0),
                (op::NOT, 0, 0),
                (op::AND, 0, 0),
            ]
        );
        assert_eq!(
            shape(&c("src and dst port 53")),
            vec![
                (T, field::SRC_PORT, 53),
                (T, field::DST_PORT, 53),
                (op::AND, 0, 0)
            ]
        );
    }

    #[test]
    fn ipv4_hosts_and_nets() {
        let i = c("src host 10.1.2.3");
        assert_eq!((i[0].field, i[0].family), (field::SRC_HOST, 4));
        assert_eq!(
            bytes(i[0].addr),
            [10, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            bytes(i[0].mask),
            [255, 255, 255, 255, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );

        let i = c("dst net 192.168.1.0/24");
        assert_eq!((i[0].field, i[0].family), (field::DST_HOST, 4));
        assert_eq!(bytes(i[0].mask)[..5], [255, 255, 255, 0, 0]);

        let i = c("net 10.0.16.0/20");
        assert_eq!((i[0].field, i[0].family), (field::HOST, 4));
        assert_eq!(bytes(i[0].addr)[..4], [10, 0, 16, 0]);
        assert_eq!(
            bytes(i[0].mask),
            [255, 255, 0xf0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );

        let i = c("net 0.0.0.0/0");
        assert_eq!((i[0].addr, i[0].mask), ([0, 0], [0, 0]));
    }

    #[test]
    fn ipv6_hosts_and_nets() {
        let i = c("host fd00::1");
        assert_eq!((i[0].field, i[0].family), (field::HOST, 6));
        assert_eq!(
            bytes(i[0].addr),
            "fd00::1"
                .parse::<std::net::Ipv6Addr>()
                .expect("v6")
                .octets()
        );
        assert_eq!(bytes(i[0].mask), [0xff; 16]);

        let i = c("net 2000::/3");
        assert_eq!(bytes(i[0].addr)[0], 0x20);
        assert_eq!(
            bytes(i[0].mask),
            [0xe0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );

        // A prefix that crosses from the first word into the second.
        let i = c("net fd00:1:2:3:4000::/66");
        let mask = bytes(i[0].mask);
        assert_eq!(mask[..8], [0xff; 8]);
        assert_eq!(mask[8..], [0xc0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(bytes(i[0].addr)[8], 0x40);
        let i = c("net fd00:1:2:3:c000::/66");
        assert_eq!(bytes(i[0].addr)[8], 0xc0);
        assert_eq!(
            bytes(c("net fd00:1:2:3:8000::/65")[0].mask)[8],
            0x80,
            "/65 keeps one bit of byte 8"
        );
    }

    #[test]
    fn nested_any_is_always_true() {
        let e = Expr::Any.and(Test::Proto(Proto::Tcp).into());
        let insns = compile(&e).expect("compiles");
        assert_eq!(insns.len(), 4);
        let mut tcp = Flow {
            ethertype: ETH_P_IP,
            l4: IPPROTO_TCP,
            ..Flow::default()
        };
        assert!(eval(&insns, &tcp, false));
        tcp.l4 = IPPROTO_UDP;
        assert!(!eval(&insns, &tcp, false));
        let never = compile(&Expr::Any.negate()).expect("compiles");
        for ethertype in [0, ETH_P_IP, ETH_P_IPV6, ETH_P_ARP, 0xffff] {
            let f = Flow {
                ethertype,
                ..Flow::default()
            };
            assert!(!eval(&never, &f, true));
        }
    }

    #[test]
    fn too_many_instructions() {
        let text = ["tcp"; 16].join(" or ");
        assert_eq!(c(&text).len(), 31);
        let text = ["tcp"; 17].join(" or ");
        let e = compile(&parse(&text).expect("parses")).expect_err("33 instructions");
        assert_eq!(e.pos, 0);
        assert!(e.token.ends_with("or tcp) or tcp)"), "{}", e.token);
        assert_eq!(
            e.expected,
            "a filter that compiles to at most 32 instructions (this one needs 33)"
        );
        // `src and dst` costs three.
        let text = ["src and dst port 1"; 8].join(" or ");
        assert_eq!(c(&text).len(), 31);
        let text = ["src and dst port 1"; 9].join(" or ");
        assert!(compile(&parse(&text).expect("parses")).is_err());
    }

    #[test]
    fn stack_depth() {
        // Left-nested operators need two entries, right-nested ones one per operand.
        let left = parse("tcp or udp or arp or ip").expect("parses");
        let right = parse("tcp or (udp or (arp or ip))").expect("parses");
        assert!(compile_within(&left, 32, 2).is_ok());
        assert!(compile_within(&right, 32, 4).is_ok());
        let e = compile_within(&right, 32, 3).expect_err("needs 4");
        assert_eq!(
            e.expected,
            "a filter that needs at most 3 stack entries (this one needs 4)"
        );
        // `src and dst` needs two entries on its own.
        let both = parse("not src and dst host 10.0.0.1").expect("parses");
        assert!(compile_within(&both, 32, 1).is_err());
        assert!(compile_within(&both, 32, 2).is_ok());
        // With the real limits, no program short enough to load is too deep: n instructions
        // hold at most n / 2 + 1 tests.
        const { assert!(MAX_FILTER_STACK > MAX_FILTER_INSNS / 2) };
    }

    #[test]
    fn evaluator_stack_operations() {
        let yes = value_test(field::ENCAP, 0);
        let no = value_test(field::ETHERTYPE, NO_ETHERTYPE);
        let (and, or, not) = (insn(op::AND), insn(op::OR), insn(op::NOT));
        let f = Flow::default();
        for (program, expected) in [
            (vec![yes], true),
            (vec![no], false),
            (vec![no, not], true),
            (vec![yes, yes, and], true),
            (vec![yes, no, and], false),
            (vec![no, yes, and], false),
            (vec![no, no, or], false),
            (vec![no, yes, or], true),
            (vec![yes, no, or], true),
            // Operators work on the top of a deeper stack and leave the rest alone.
            (vec![yes, no, no, or, and], false),
            (vec![no, yes, yes, and, or], true),
            (vec![yes, no, yes, and, not, and], true),
            // The result is the top of the stack, whatever is below.
            (vec![yes, no], false),
            (vec![no, yes], true),
            // An unknown opcode rejects.
            (vec![yes, FilterInsn { op: 9, ..yes }], false),
            // An unknown field tests false.
            (vec![FilterInsn { field: 99, ..yes }], false),
        ] {
            assert_eq!(eval(&program, &f, true), expected, "{program:?}");
        }
        // Like the kernel, instructions past MAX_FILTER_INSNS are ignored.
        let mut long = vec![yes; MAX_FILTER_INSNS];
        long.push(not);
        assert!(eval(&long, &f, true));
    }

    #[test]
    fn evaluator_stack_is_32_deep() {
        let yes = value_test(field::ENCAP, 0);
        let no = value_test(field::ETHERTYPE, NO_ETHERTYPE);
        let f = Flow::default();
        // 16 pushes then 15 ANDs: the bottom `no` decides.
        let mut program = vec![no];
        program.extend([yes; 15]);
        program.extend([insn(op::AND); 15]);
        assert_eq!(program.len(), 31);
        assert!(!eval(&program, &f, true));
        program[0] = yes;
        assert!(eval(&program, &f, true));
    }
}
