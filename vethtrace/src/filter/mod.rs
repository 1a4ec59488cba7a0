//! The packet filter: a tcpdump-like expression, compiled for the in-kernel evaluator.
//!
//! Owns: the filter language (tokens in `lexer.rs`, grammar in `parser.rs`), its syntax tree
//! ([`Expr`]), the compiler to the postfix [`FilterInsn`] programs the eBPF side runs
//! ([`compile()`], in `compile.rs`), and a pure Rust copy of the kernel's evaluator ([`eval`], [`accepts`]) so the
//! semantics can be tested without a kernel. Does not own: writing the program into the loaded
//! object (the loader does, through [`Filter::apply_to`]) or the kernel evaluator itself
//! (`vethtrace-ebpf/src/filter.rs`).
//!
//! # Language
//!
//! The subset of pcap-filter(7) that the kernel evaluator can test, with tcpdump's meaning:
//!
//! - `host A`, `src host A`, `dst host A`, `src or dst host A`, `src and dst host A`: A is an
//!   IPv4 or IPv6 address; IPv4 addresses also match ARP's sender and target.
//! - `net N`, `src net N`, `dst net N`: N is `ADDR/LEN` (IPv4 or IPv6, any length) or a partial
//!   IPv4 network such as `10.1` (= `10.1.0.0/16`). Bits past the prefix must be zero.
//! - `port N`, `src port N`, `dst port N`: a TCP or UDP port.
//! - `ip`, `ip6`, `arp` (ethertype), `icmp`, `icmp6`, `tcp`, `udp` (transport protocol),
//!   `vxlan` (the packet is VXLAN-encapsulated).
//! - Protocol qualifiers: `ip host A`, `ip6 net N`, `arp src A`, `tcp port N`, `udp dst port N`.
//! - `icmp id N` (vethtrace extension, used by `vethtrace ping`): the ICMP or ICMPv6 echo
//!   identifier is N.
//! - `not`/`!`, `and`/`&&`, `or`/`||` and parentheses. As in tcpdump, `not` binds tightest and
//!   `and` and `or` have the same precedence, associating left to right: `a or b and c` is
//!   `(a or b) and c`.
//! - tcpdump's shorthands: `src A` is `src host A`, a bare address is `host A`, a bare
//!   `ADDR/LEN` is `net ADDR/LEN`, and a bare value after `and`/`or`/`not` repeats the previous
//!   primitive's qualifiers (`port 53 or 123`, `tcp dst port 80 or 443`, `host a and not b`).
//! - An empty expression matches every packet.
//!
//! Hostnames, service names and everything else tcpdump knows (`ether`, `portrange`, `less`,
//! `tcp[13]`, …) are rejected with an error pointing at the token.
//!
//! # Evaluation
//!
//! The kernel runs the program on the outer packet and, when that fails on a VXLAN packet, on the
//! encapsulated one (where `vxlan` is false). Address tests need IPv4/ARP (IPv4 addresses) or
//! IPv6; protocol tests need IPv4 or IPv6; port tests need TCP or UDP; `icmp id` needs ICMP or
//! ICMPv6.

mod compile;
mod lexer;
mod meaning;
mod parser;

use std::fmt;
use std::net::IpAddr;

use vethtrace_common::{Config, FilterInsn, Flow};

pub use compile::{accepts, compile, eval};
pub use meaning::matches;
pub use parser::parse;

/// Parses the words of a command line (`vethtrace trace tcp port 80`), joined with spaces.
/// Error positions count characters of the joined text.
pub fn parse_args(words: &[String]) -> Result<Expr, FilterError> {
    parse(&words.join(" "))
}

/// A parsed filter expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    /// The empty expression: matches every packet.
    Any,
    Test(Test),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

impl Expr {
    /// `self and rhs`.
    pub fn and(self, rhs: Expr) -> Expr {
        Expr::And(Box::new(self), Box::new(rhs))
    }

    /// `self or rhs`.
    pub fn or(self, rhs: Expr) -> Expr {
        Expr::Or(Box::new(self), Box::new(rhs))
    }

    /// `not self`.
    pub fn negate(self) -> Expr {
        Expr::Not(Box::new(self))
    }
}

impl From<Test> for Expr {
    fn from(t: Test) -> Expr {
        Expr::Test(t)
    }
}

/// One primitive test the kernel can evaluate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Test {
    /// `host A` (a full-length prefix) or `net N`.
    Addr { dir: Dir, net: IpNet },
    /// `port N`: TCP or UDP.
    Port { dir: Dir, port: u16 },
    /// `ip`, `ip6`, `arp`, `icmp`, `icmp6`, `tcp`, `udp`.
    Proto(Proto),
    /// `vxlan`: the packet is VXLAN-encapsulated.
    Vxlan,
    /// `icmp id N`: the ICMP or ICMPv6 echo identifier.
    IcmpId(u16),
}

/// Which end of the packet a `host`, `net` or `port` test looks at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dir {
    /// No qualifier, or `src or dst`: either end.
    #[default]
    Either,
    Src,
    Dst,
    /// `src and dst`: both ends.
    Both,
}

/// Protocol names usable as primitives and as qualifiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Ip,
    Ip6,
    Arp,
    Icmp,
    Icmp6,
    Tcp,
    Udp,
}

impl Proto {
    /// The keyword, as written in a filter.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Ip => "ip",
            Proto::Ip6 => "ip6",
            Proto::Arp => "arp",
            Proto::Icmp => "icmp",
            Proto::Icmp6 => "icmp6",
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    fn from_name(name: &str) -> Option<Proto> {
        [
            Proto::Ip,
            Proto::Ip6,
            Proto::Arp,
            Proto::Icmp,
            Proto::Icmp6,
            Proto::Tcp,
            Proto::Udp,
        ]
        .into_iter()
        .find(|p| p.name() == name)
    }
}

/// An IPv4 or IPv6 prefix whose bits past the prefix length are zero. A host is a full-length
/// prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix_len: u8,
}

impl IpNet {
    /// The network `addr/prefix_len`; `None` when the length exceeds the address's width or
    /// `addr` has bits set past it.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Option<IpNet> {
        let net = IpNet::truncating(addr, prefix_len)?;
        (net.addr == addr).then_some(net)
    }

    /// The network `addr/prefix_len` with the bits of `addr` past the prefix cleared; `None`
    /// when the length exceeds the address's width.
    pub fn truncating(addr: IpAddr, prefix_len: u8) -> Option<IpNet> {
        let addr = match addr {
            IpAddr::V4(a) if prefix_len <= 32 => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(prefix_len))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) if prefix_len <= 128 => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(prefix_len))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
            _ => return None,
        };
        Some(IpNet { addr, prefix_len })
    }

    /// A single host.
    pub fn host(addr: IpAddr) -> IpNet {
        let prefix_len = if addr.is_ipv4() { 32 } else { 128 };
        IpNet { addr, prefix_len }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether this is a full-length prefix (`host`).
    pub fn is_host(&self) -> bool {
        self.prefix_len == if self.addr.is_ipv4() { 32 } else { 128 }
    }

    /// Whether `ip` is inside the network (never across families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        IpNet::truncating(ip, self.prefix_len).is_some_and(|n| n.addr == self.addr)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix_len)
        }
    }
}

/// Renders the expression in the filter language, with every binary operation parenthesized:
/// parsing the text gives back the same expression (except [`Expr::Any`] below an operator,
/// which has no syntax).
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Any => Ok(()),
            Expr::Test(t) => write!(f, "{t}"),
            Expr::Not(e) => write!(f, "not {e}"),
            Expr::And(a, b) => write!(f, "({a} and {b})"),
            Expr::Or(a, b) => write!(f, "({a} or {b})"),
        }
    }
}

impl fmt::Display for Test {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Test::Addr { dir, net } if net.is_host() => write!(f, "{dir}host {net}"),
            Test::Addr { dir, net } => write!(f, "{dir}net {net}"),
            Test::Port { dir, port } => write!(f, "{dir}port {port}"),
            Test::Proto(p) => f.write_str(p.name()),
            Test::Vxlan => f.write_str("vxlan"),
            Test::IcmpId(id) => write!(f, "icmp id {id}"),
        }
    }
}

/// The qualifier with its trailing space, or nothing.
impl fmt::Display for Dir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dir::Either => "",
            Dir::Src => "src ",
            Dir::Dst => "dst ",
            Dir::Both => "src and dst ",
        })
    }
}

/// A filter that cannot be parsed or compiled: where, and what would have been accepted there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterError {
    /// Offset of the offending token, in characters from the start of the filter text.
    pub pos: usize,
    /// The offending token; empty at the end of the text. For a filter too large to compile, the
    /// whole filter.
    pub token: String,
    /// What would have been accepted, e.g. `a port number (0-65535)`.
    pub expected: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.token.is_empty() {
            write!(f, "filter: at position {} (end of filter)", self.pos)?;
        } else {
            write!(f, "filter: at position {} ({:?})", self.pos, self.token)?;
        }
        write!(f, ": expected {}", self.expected)
    }
}

impl std::error::Error for FilterError {}

/// A compiled filter, ready for the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// The expression as the user wrote it (words joined with spaces); empty for "everything".
    pub text: String,
    /// The postfix program; empty matches everything.
    pub insns: Vec<FilterInsn>,
}

impl Filter {
    /// Parses and compiles the words of a command line.
    pub fn new(words: &[String]) -> Result<Filter, FilterError> {
        let text = words.join(" ");
        let expr = parse(&text)?;
        let insns = compile(&expr).map_err(|e| FilterError {
            token: text.clone(),
            ..e
        })?;
        Ok(Filter { text, insns })
    }

    /// `icmp id ID`: the echo requests and replies of one `vethtrace ping`, IPv4 or IPv6.
    pub fn icmp_id(id: u16) -> Filter {
        let test = Test::IcmpId(id);
        Filter {
            text: test.to_string(),
            insns: compile::test_insns(&test),
        }
    }

    /// Whether the filter matches every packet.
    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// Whether the kernel would accept a packet with these layers (see [`accepts`]).
    pub fn accepts(&self, outer: &Flow, inner: &Flow, encap: bool) -> bool {
        accepts(&self.insns, outer, inner, encap)
    }

    /// Writes the program into the load-time configuration. [`compile()`] keeps programs within
    /// [`vethtrace_common::MAX_FILTER_INSNS`], so nothing is cut off.
    pub fn apply_to(&self, config: &mut Config) {
        let n = self.insns.len().min(config.filter.len());
        config.filter = [FilterInsn::default(); vethtrace_common::MAX_FILTER_INSNS];
        config.filter[..n].copy_from_slice(&self.insns[..n]);
        // n <= MAX_FILTER_INSNS, which fits in a u32.
        config.filter_len = n as u32;
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use vethtrace_common::MAX_FILTER_INSNS;

    use super::*;

    const IP: u16 = 0x0800;
    const IP6: u16 = 0x86dd;
    const ARP: u16 = 0x0806;

    fn v4(a: &str) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&a.parse::<Ipv4Addr>().expect("IPv4").octets());
        b
    }

    fn v6(a: &str) -> [u8; 16] {
        a.parse::<Ipv6Addr>().expect("IPv6").octets()
    }

    fn flow(ethertype: u16, src: [u8; 16], dst: [u8; 16], l4: u8) -> Flow {
        Flow {
            ethertype,
            src,
            dst,
            l4,
            ..Flow::default()
        }
    }

    fn tcp4(src: &str, sport: u16, dst: &str, dport: u16) -> Flow {
        Flow {
            sport,
            dport,
            ..flow(IP, v4(src), v4(dst), 6)
        }
    }

    fn program(text: &str) -> Vec<FilterInsn> {
        let e = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        compile(&e).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    /// Checks the compiled program on one layer against the expected verdict, and the reference
    /// semantics against the program.
    fn check(text: &str, f: &Flow, expected: bool) {
        let e = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(
            eval(&program(text), f, false),
            expected,
            "{text:?} on {f:?}"
        );
        assert_eq!(
            matches(&e, f, false),
            expected,
            "reference: {text:?} on {f:?}"
        );
    }

    #[test]
    fn ipv4_tcp_packet() {
        let f = tcp4("10.0.0.1", 40000, "10.0.0.2", 80);
        for (text, expected) in [
            ("", true),
            ("host 10.0.0.1", true),
            ("host 10.0.0.2", true),
            ("host 10.0.0.3", false),
            ("src host 10.0.0.1", true),
            ("dst host 10.0.0.1", false),
            ("src 10.0.0.1", true),
            ("dst 10.0.0.2", true),
            ("10.0.0.2", true),
            ("src and dst host 10.0.0.1", false),
            ("src and dst net 10.0.0.0/30", true),
            ("net 10.0.0.0/24", true),
            ("net 10", true),
            ("net 10.1", false),
            ("dst net 10.0.0.0/31", false),
            ("src net 10.0.0.0/31", true),
            ("dst net 10.0.0.2/32", true),
            ("net 0.0.0.0/0", true),
            ("net ::/0", false),
            ("host fd00::1", false),
            ("ip", true),
            ("ip6 or arp", false),
            ("tcp", true),
            ("udp or icmp or icmp6", false),
            ("port 80", true),
            ("port 40000", true),
            ("src port 80", false),
            ("dst port 80", true),
            ("tcp dst port 80", true),
            ("udp port 80", false),
            ("src or dst port 40000", true),
            ("src and dst port 80", false),
            ("vxlan", false),
            ("icmp id 0", false),
            ("ip host 10.0.0.1", true),
            ("arp host 10.0.0.1", false),
        ] {
            check(text, &f, expected);
        }
    }

    #[test]
    fn ipv4_nets_not_on_byte_boundaries() {
        for (addr, expected) in [
            ("10.0.16.0", true),
            ("10.0.31.255", true),
            ("10.0.15.255", false),
            ("10.0.32.0", false),
            ("10.1.16.1", false),
        ] {
            let f = tcp4(addr, 1, "192.0.2.1", 2);
            check("src net 10.0.16.0/20", &f, expected);
        }
        for (addr, expected) in [
            ("96.0.0.1", true),
            ("127.255.0.1", true),
            ("128.0.0.1", false),
        ] {
            let f = tcp4(addr, 1, "192.0.2.1", 2);
            check("net 96.0.0.0/3", &f, expected);
        }
    }

    #[test]
    fn ipv4_address_bytes_past_the_fourth_are_ignored() {
        let mut f = tcp4("10.0.0.1", 1, "10.0.0.2", 2);
        f.src[4..].fill(0xa5);
        check("src host 10.0.0.1", &f, true);
        check("src net 10.0.0.0/8", &f, true);
    }

    #[test]
    fn ipv6_packet() {
        let f = Flow {
            sport: 5353,
            dport: 53,
            ..flow(IP6, v6("2001:db8::1"), v6("fd00::53"), 17)
        };
        for (text, expected) in [
            ("host 2001:db8::1", true),
            ("dst host 2001:db8::1", false),
            ("dst fd00::53", true),
            ("fd00::53", true),
            ("net 2000::/3", true),
            ("dst net 2000::/3", false),
            ("dst net fc00::/7", true),
            ("dst net fd00::/16", true),
            ("dst net fd00::/120", true),
            ("dst net fd00::100/120", false),
            ("net 10.0.0.0/8", false),
            ("ip6", true),
            ("ip", false),
            ("udp", true),
            ("udp dst port 53", true),
            ("tcp port 53", false),
            ("ip6 src net 2001:db8::/32", true),
        ] {
            check(text, &f, expected);
        }
        // /3 at the edges.
        for (addr, expected) in [
            ("3fff:ffff::1", true),
            ("4000::1", false),
            ("1fff::1", false),
        ] {
            let f = flow(IP6, v6(addr), v6("::1"), 6);
            check("src net 2000::/3", &f, expected);
        }
        // An IPv4 address in the first bytes of an IPv6 packet is not an IPv4 address.
        let f = flow(IP6, v4("10.0.0.1"), v6("::1"), 6);
        check("host 10.0.0.1", &f, false);
    }

    #[test]
    fn arp_packet() {
        let f = Flow {
            arp_op: 1,
            ..flow(ARP, v4("10.0.0.1"), v4("10.0.0.2"), 0)
        };
        for (text, expected) in [
            ("arp", true),
            ("host 10.0.0.2", true),
            ("arp src 10.0.0.1", true),
            ("ip host 10.0.0.2", false),
            ("net 10.0.0.0/24", true),
            ("ip or ip6", false),
            ("tcp or udp or icmp", false),
            ("port 0", false),
        ] {
            check(text, &f, expected);
        }
        // Transport fields of a non-IP packet are never looked at.
        let f = Flow {
            l4: 6,
            sport: 80,
            ..f
        };
        check("tcp", &f, false);
        check("port 80", &f, false);
    }

    #[test]
    fn icmp_echo() {
        let ping4 = Flow {
            icmp_id: 4242,
            icmp_type: 8,
            ..flow(IP, v4("10.0.0.1"), v4("10.0.0.2"), 1)
        };
        let ping6 = Flow {
            icmp_id: 4242,
            icmp_type: 128,
            ..flow(IP6, v6("fd00::1"), v6("fd00::2"), 58)
        };
        for (text, on4, on6) in [
            ("icmp", true, false),
            ("icmp6", false, true),
            ("icmp id 4242", true, true),
            ("icmp id 4243", false, false),
            ("icmp and icmp id 4242", true, false),
            ("port 0", false, false),
        ] {
            check(text, &ping4, on4);
            check(text, &ping6, on6);
        }
        let udp = Flow {
            icmp_id: 4242,
            ..flow(IP, v4("10.0.0.1"), v4("10.0.0.2"), 17)
        };
        check("icmp id 4242", &udp, false);
    }

    #[test]
    fn other_ethertypes() {
        let f = Flow {
            l4: 6,
            sport: 80,
            ..flow(0x88cc, v4("10.0.0.1"), v4("10.0.0.2"), 6)
        };
        check("ip or ip6 or arp", &f, false);
        check("host 10.0.0.1 or tcp or port 80", &f, false);
        check("not ip", &f, true);
    }

    #[test]
    fn precedence_is_tcpdumps() {
        let f = tcp4("10.0.0.1", 40000, "10.0.0.2", 80);
        // (tcp or udp) and port 53; C-style precedence would say true.
        check("tcp or udp and port 53", &f, false);
        check("tcp or (udp and port 53)", &f, true);
        check("port 53 and udp or tcp", &f, true);
        check("not tcp or port 80", &f, true);
        check("not (tcp or port 80)", &f, false);
        check("!tcp && !udp", &f, false);
        check("not not tcp", &f, true);
    }

    #[test]
    fn vxlan_outer_then_inner() {
        let outer = Flow {
            sport: 51234,
            dport: 8472,
            ..flow(IP, v4("192.168.0.1"), v4("192.168.0.2"), 17)
        };
        let inner = Flow {
            icmp_id: 7,
            ..flow(IP, v4("10.0.0.1"), v4("10.0.0.2"), 1)
        };
        let plain = Filter::default();
        assert!(plain.accepts(&outer, &inner, true));
        for (text, expected) in [
            ("vxlan", true),
            ("udp port 8472", true),
            ("icmp", true),
            ("host 10.0.0.2", true),
            ("host 192.168.0.1", true),
            ("icmp id 7", true),
            ("tcp", false),
            // `vxlan` is only true on the outer layer, the inner one only on the inner.
            ("vxlan and icmp", false),
            ("vxlan and udp", true),
            // The inner layer is not VXLAN, so this matches there.
            ("not vxlan", true),
            ("not udp", true),
            ("not (udp or icmp)", false),
        ] {
            let filter = Filter::new(&[text.to_string()]).expect("filter");
            assert_eq!(filter.accepts(&outer, &inner, true), expected, "{text}");
        }
        // Without encapsulation the inner layer is never tried.
        let filter = Filter::new(&["icmp".to_string()]).expect("filter");
        assert!(!filter.accepts(&outer, &inner, false));
    }

    #[test]
    fn filter_from_words() {
        let words: Vec<String> = ["tcp", "port", "80", "or", "icmp id 7"]
            .iter()
            .map(|w| w.to_string())
            .collect();
        let f = Filter::new(&words).expect("filter");
        assert_eq!(f.text, "tcp port 80 or icmp id 7");
        assert_eq!(f.insns, program("tcp port 80 or icmp id 7"));
        assert_eq!(parse_args(&words), parse("tcp port 80 or icmp id 7"));
        assert!(!f.is_empty());

        let all = Filter::new(&[]).expect("filter");
        assert_eq!(all, Filter::default());
        assert!(all.is_empty());

        // Positions count characters of the joined words.
        let words = vec!["tcp".to_string(), "and".to_string(), "frob".to_string()];
        let e = Filter::new(&words).expect_err("bad word");
        assert_eq!((e.pos, e.token.as_str()), (8, "frob"));
        let _: &dyn std::error::Error = &e;

        // Too long to compile: the error shows the filter as written.
        let words = vec!["udp or".to_string(); 16]
            .into_iter()
            .chain(["tcp".to_string()]);
        let words: Vec<String> = words.collect();
        let e = Filter::new(&words).expect_err("too long");
        assert_eq!(e.token, words.join(" "));
        assert_eq!(e.pos, 0);
        assert!(e.to_string().contains("at most 32 instructions"), "{e}");
    }

    #[test]
    fn ping_filter() {
        let f = Filter::icmp_id(31337);
        assert_eq!(f.text, "icmp id 31337");
        assert_eq!(
            Ok(f.insns.clone()),
            compile(&parse(&f.text).expect("parses"))
        );
        assert_eq!(f.insns.len(), 1);
    }

    #[test]
    fn apply_to_config() {
        // Leftovers of an earlier program are cleared.
        let mut config = Config {
            filter: [FilterInsn {
                op: 9,
                ..FilterInsn::default()
            }; MAX_FILTER_INSNS],
            ..Config::default()
        };
        let f = Filter::new(&["tcp or udp".to_string()]).expect("filter");
        f.apply_to(&mut config);
        assert_eq!(config.filter_len, 3);
        assert_eq!(config.filter[..3], f.insns[..]);
        assert!(config.filter[3..]
            .iter()
            .all(|i| *i == FilterInsn::default()));
        Filter::default().apply_to(&mut config);
        assert_eq!(config.filter_len, 0);
    }

    // ---- Property test: compile + eval against a direct evaluation of the tree. ----

    /// xorshift64*: deterministic, no dependencies.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len())]
        }

        fn bytes(&mut self) -> [u8; 16] {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&self.next().to_ne_bytes());
            b[8..].copy_from_slice(&self.next().to_ne_bytes());
            b
        }
    }

    const V4: [&str; 5] = [
        "10.0.0.1",
        "10.0.0.2",
        "10.0.16.5",
        "192.168.1.77",
        "172.31.255.255",
    ];
    const V6: [&str; 5] = [
        "fd00::1",
        "fd00::2",
        "fd00:1:2:3:c000::9",
        "2001:db8::1",
        "fe80::aa",
    ];
    const PORTS: [u16; 5] = [53, 80, 443, 4789, 8472];
    const ICMP_IDS: [u16; 3] = [0, 1, 4242];
    const PROTOS: [Proto; 7] = [
        Proto::Ip,
        Proto::Ip6,
        Proto::Arp,
        Proto::Icmp,
        Proto::Icmp6,
        Proto::Tcp,
        Proto::Udp,
    ];
    const DIRS: [Dir; 4] = [Dir::Either, Dir::Src, Dir::Dst, Dir::Both];

    fn random_address(rng: &mut Rng) -> [u8; 16] {
        if rng.below(2) == 0 {
            // IPv4, with whatever in the unused bytes.
            let mut b = rng.bytes();
            b[..4].copy_from_slice(&v4(rng.pick(&V4))[..4]);
            b
        } else {
            v6(rng.pick(&V6))
        }
    }

    fn random_flow(rng: &mut Rng) -> Flow {
        let port = |rng: &mut Rng| {
            if rng.below(4) == 0 {
                rng.next() as u16
            } else {
                rng.pick(&PORTS)
            }
        };
        Flow {
            ethertype: rng.pick(&[IP, IP6, ARP, 0x8847]),
            src: random_address(rng),
            dst: random_address(rng),
            l4: rng.pick(&[1, 6, 17, 58, 47]),
            sport: port(rng),
            dport: port(rng),
            icmp_id: rng.pick(&ICMP_IDS),
            ..Flow::default()
        }
    }

    fn random_test(rng: &mut Rng) -> Test {
        match rng.below(5) {
            0 => {
                let addr: IpAddr = if rng.below(2) == 0 {
                    IpAddr::V4(rng.pick(&V4).parse().expect("IPv4"))
                } else {
                    IpAddr::V6(rng.pick(&V6).parse().expect("IPv6"))
                };
                let width: u8 = if addr.is_ipv4() { 32 } else { 128 };
                // Hosts half of the time, any prefix length otherwise.
                let len = if rng.below(2) == 0 {
                    width
                } else {
                    rng.below(usize::from(width) + 1) as u8
                };
                Test::Addr {
                    dir: rng.pick(&DIRS),
                    net: IpNet::truncating(addr, len).expect("length in range"),
                }
            }
            1 => Test::Port {
                dir: rng.pick(&DIRS),
                port: rng.pick(&PORTS),
            },
            2 => Test::Proto(rng.pick(&PROTOS)),
            3 => Test::Vxlan,
            _ => Test::IcmpId(rng.pick(&ICMP_IDS)),
        }
    }

    fn random_expr(rng: &mut Rng, depth: usize) -> Expr {
        if depth == 0 || rng.below(4) == 0 {
            return if rng.below(40) == 0 {
                Expr::Any
            } else {
                random_test(rng).into()
            };
        }
        match rng.below(3) {
            0 => random_expr(rng, depth - 1).negate(),
            1 => random_expr(rng, depth - 1).and(random_expr(rng, depth - 1)),
            _ => random_expr(rng, depth - 1).or(random_expr(rng, depth - 1)),
        }
    }

    fn contains_any(e: &Expr) -> bool {
        match e {
            Expr::Any => true,
            Expr::Test(_) => false,
            Expr::Not(e) => contains_any(e),
            Expr::And(a, b) | Expr::Or(a, b) => contains_any(a) || contains_any(b),
        }
    }

    #[test]
    fn compiled_programs_agree_with_the_tree() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut compiled, mut too_long, mut matched, mut checked) = (0, 0, 0, 0);
        for _ in 0..3000 {
            let e = random_expr(&mut rng, 5);
            if !contains_any(&e) {
                let text = e.to_string();
                assert_eq!(parse(&text).as_ref(), Ok(&e), "round trip of {text:?}");
            }
            let insns = match compile(&e) {
                Ok(insns) => insns,
                Err(err) => {
                    assert!(err.expected.contains("instructions"), "{err}");
                    too_long += 1;
                    continue;
                }
            };
            compiled += 1;
            assert!(insns.len() <= MAX_FILTER_INSNS);
            for _ in 0..40 {
                let (outer, inner) = (random_flow(&mut rng), random_flow(&mut rng));
                let encap = rng.below(2) == 0;
                let expected = matches(&e, &outer, encap);
                assert_eq!(eval(&insns, &outer, encap), expected, "{e} on {outer:?}");
                let accepted = expected || (encap && matches(&e, &inner, false));
                assert_eq!(accepts(&insns, &outer, &inner, encap), accepted, "{e}");
                matched += usize::from(expected);
                checked += 1;
            }
        }
        // The generator exercises both outcomes and both compile results.
        assert!(compiled > 2000, "{compiled} compiled");
        assert!(too_long > 10, "{too_long} too long");
        assert!(
            matched > checked / 5 && matched < checked * 4 / 5,
            "{matched}/{checked}"
        );
    }
}
