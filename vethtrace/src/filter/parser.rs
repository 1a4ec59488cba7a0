//! The grammar: from [`super::lexer`] tokens to an [`Expr`], following pcap-filter(7) for the
//! subset described in the [module documentation](super).
//!
//! ```text
//! filter    := ε | expr
//! expr      := unary (("and" | "or") unary)*          -- same precedence, left to right
//! unary     := "not" unary | "(" expr ")" | primitive
//! primitive := "vxlan"
//!            | "ip" | "ip6" | "arp" | "icmp" | "icmp6" | "tcp" | "udp"
//!            | ["ip" | "ip6" | "arp"] [dir] ["host" | "net"] address
//!            | ["tcp" | "udp"] [dir] "port" number
//!            | "icmp" "id" number
//!            | value                                  -- repeats the last qualifiers
//! dir       := "src" | "dst" | "src" "or" "dst" | "src" "and" "dst" | (same with dst first)
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::lexer::{tokenize, Kind, Token};
use super::{Dir, Expr, FilterError, IpNet, Proto, Test};

const PRIMITIVE: &str = "a primitive (host, net, port, src, dst, icmp, icmp6, tcp, udp, arp, \
                         ip, ip6, vxlan, not, \"(\")";

const BARE_AFTER_PROTOCOL: &str = "a qualifier (host, net or port) before this value: a bare \
                                   value repeats the previous primitive's qualifiers, and a \
                                   protocol name has none";

/// Longer filters cannot compile anyway (every primitive costs an instruction); the bound keeps
/// the recursive descent, and the tree it builds, shallow.
const MAX_TOKENS: usize = 1024;

/// Parses a filter expression; empty (or blank) text is [`Expr::Any`].
pub fn parse(text: &str) -> Result<Expr, FilterError> {
    let tokens = tokenize(text);
    if let Some(t) = tokens.get(MAX_TOKENS).filter(|t| t.kind != Kind::End) {
        return Err(error(
            *t,
            format!("a shorter filter (at most {MAX_TOKENS} tokens)"),
        ));
    }
    let mut p = Parser {
        tokens,
        at: 0,
        quals: Some(Quals::DEFAULT),
    };
    if p.peek().kind == Kind::End {
        return Ok(Expr::Any);
    }
    let e = p.expr()?;
    match p.peek() {
        t if t.kind == Kind::End => Ok(e),
        t => Err(unexpected_after_primitive(t, None)),
    }
}

/// The type qualifier of a primitive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Type {
    /// None given: `host`, or `net` when the address has a prefix length.
    Default,
    Host,
    Net,
    Port,
    /// `icmp id`.
    Id,
}

/// The qualifiers of a `[proto] [dir] [type] value` primitive, which a bare value repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Quals {
    proto: Option<Proto>,
    dir: Dir,
    ty: Type,
}

impl Quals {
    /// What a bare value means before any qualifier was written: an address.
    const DEFAULT: Quals = Quals {
        proto: None,
        dir: Dir::Either,
        ty: Type::Default,
    };
}

struct Parser<'a> {
    /// Never empty: ends with a [`Kind::End`] token, which `bump` does not pass.
    tokens: Vec<Token<'a>>,
    at: usize,
    /// The qualifiers a bare value repeats; `None` after a protocol primitive (`tcp`), which has
    /// none.
    quals: Option<Quals>,
}

impl<'a> Parser<'a> {
    fn peek_at(&self, ahead: usize) -> Token<'a> {
        let last = self.tokens.len().saturating_sub(1);
        self.tokens[(self.at + ahead).min(last)]
    }

    fn peek(&self) -> Token<'a> {
        self.peek_at(0)
    }

    fn peek_word(&self, word: &str) -> bool {
        let t = self.peek();
        t.kind == Kind::Word && t.text == word
    }

    fn bump(&mut self) {
        if self.peek().kind != Kind::End {
            self.at += 1;
        }
    }

    fn expr(&mut self) -> Result<Expr, FilterError> {
        self.binary(0)
    }

    /// Precedence climbing over `and`/`or`, left-associative.
    fn binary(&mut self, min_power: u8) -> Result<Expr, FilterError> {
        let mut lhs = self.unary()?;
        loop {
            let op = self.peek().kind;
            let Some(power) = binding_power(op) else {
                break;
            };
            if power < min_power {
                break;
            }
            self.bump();
            let rhs = self.binary(power + 1)?;
            lhs = if op == Kind::And {
                lhs.and(rhs)
            } else {
                lhs.or(rhs)
            };
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        let t = self.peek();
        match t.kind {
            Kind::Not => {
                self.bump();
                Ok(self.unary()?.negate())
            }
            Kind::LParen => {
                self.bump();
                self.group(t)
            }
            Kind::Word => self.primitive(t),
            _ => Err(error(t, PRIMITIVE)),
        }
    }

    /// The rest of `( expr )`. Inside, a bare value repeats the qualifiers from before the
    /// parenthesis; after it, those qualifiers are back (as in tcpdump).
    fn group(&mut self, open: Token<'a>) -> Result<Expr, FilterError> {
        let outer = self.quals;
        let e = self.expr()?;
        let t = self.peek();
        if t.kind != Kind::RParen {
            return Err(unexpected_after_primitive(t, Some(open)));
        }
        self.bump();
        self.quals = outer;
        Ok(e)
    }

    /// A primitive starting at the word `t`.
    fn primitive(&mut self, t: Token<'a>) -> Result<Expr, FilterError> {
        if t.text == "vxlan" {
            self.bump();
            self.quals = None;
            return Ok(Test::Vxlan.into());
        }
        if let Some(proto) = Proto::from_name(t.text) {
            self.bump();
            return self.after_protocol(proto);
        }
        match t.text {
            "src" | "dst" | "host" | "net" | "port" => self.qualified(None),
            value if looks_like_value(value) => match self.quals {
                Some(quals) => self.value(quals),
                None => Err(error(t, BARE_AFTER_PROTOCOL)),
            },
            _ => Err(error(t, PRIMITIVE)),
        }
    }

    /// After a protocol name: a qualified primitive (`tcp port 80`), or the protocol alone.
    fn after_protocol(&mut self, proto: Proto) -> Result<Expr, FilterError> {
        let t = self.peek();
        if t.kind == Kind::Word {
            let qualifies = match proto {
                Proto::Ip | Proto::Ip6 | Proto::Arp => {
                    matches!(t.text, "src" | "dst" | "host" | "net") || looks_like_value(t.text)
                }
                Proto::Tcp | Proto::Udp => matches!(t.text, "src" | "dst" | "port"),
                Proto::Icmp => t.text == "id",
                Proto::Icmp6 => false,
            };
            if qualifies {
                return self.qualified(Some(proto));
            }
            if let Some(allowed) = qualifiers_after(proto) {
                return Err(error(
                    t,
                    format!(
                        "{allowed} after {:?} (or \"and\"/\"or\" before the next primitive)",
                        proto.name()
                    ),
                ));
            }
        }
        self.quals = None;
        Ok(Test::Proto(proto).into())
    }

    /// `[dir] [type] value`, the protocol (if any) already consumed.
    fn qualified(&mut self, proto: Option<Proto>) -> Result<Expr, FilterError> {
        let dir = self.dir();
        let t = self.peek();
        let word = (t.kind == Kind::Word).then_some(t.text);
        let addresses = matches!(proto, None | Some(Proto::Ip | Proto::Ip6 | Proto::Arp));
        let ports = matches!(proto, None | Some(Proto::Tcp | Proto::Udp));
        let ty = match word {
            Some("host") if addresses => Type::Host,
            Some("net") if addresses => Type::Net,
            Some("port") if ports => Type::Port,
            Some("id") if proto == Some(Proto::Icmp) && dir.is_none() => Type::Id,
            Some(value) if addresses && looks_like_value(value) => Type::Default,
            _ => {
                let expected = match proto {
                    None => "host, net, port or an address",
                    Some(Proto::Ip | Proto::Ip6 | Proto::Arp) => "host, net or an address",
                    Some(Proto::Tcp | Proto::Udp) => "port",
                    Some(Proto::Icmp | Proto::Icmp6) => "id",
                };
                return Err(error(t, expected));
            }
        };
        if ty != Type::Default {
            self.bump();
        }
        self.value(Quals {
            proto,
            dir: dir.unwrap_or_default(),
            ty,
        })
    }

    /// An optional direction qualifier.
    fn dir(&mut self) -> Option<Dir> {
        let (single, other) = if self.peek_word("src") {
            (Dir::Src, "dst")
        } else if self.peek_word("dst") {
            (Dir::Dst, "src")
        } else {
            return None;
        };
        self.bump();
        let (op, next) = (self.peek_at(0), self.peek_at(1));
        if matches!(op.kind, Kind::And | Kind::Or) && next.kind == Kind::Word && next.text == other
        {
            self.bump();
            self.bump();
            return Some(if op.kind == Kind::And {
                Dir::Both
            } else {
                Dir::Either
            });
        }
        Some(single)
    }

    /// The value of a primitive with these qualifiers; they become the ones a bare value repeats.
    fn value(&mut self, quals: Quals) -> Result<Expr, FilterError> {
        let t = self.peek();
        let test = match quals.ty {
            Type::Port => Test::Port {
                dir: quals.dir,
                port: self.number(t, "a port number (0-65535)")?,
            },
            Type::Id => Test::IcmpId(self.number(t, "an ICMP echo identifier (0-65535)")?),
            Type::Default | Type::Host | Type::Net => {
                let net = self.address(quals.ty, t)?;
                if let Some(proto) = quals.proto {
                    let family = match proto {
                        Proto::Ip | Proto::Arp if net.addr().is_ipv6() => Some("IPv4"),
                        Proto::Ip6 if net.addr().is_ipv4() => Some("IPv6"),
                        _ => None,
                    };
                    if let Some(family) = family {
                        let expected = format!("an {family} address after {:?}", proto.name());
                        return Err(error(t, expected));
                    }
                }
                Test::Addr {
                    dir: quals.dir,
                    net,
                }
            }
        };
        self.quals = Some(quals);
        Ok(match quals.proto {
            // `icmp id` stays one test: the kernel's ICMP_ID test checks the protocol itself.
            Some(proto) if quals.ty != Type::Id => Expr::from(Test::Proto(proto)).and(test.into()),
            _ => test.into(),
        })
    }

    /// A decimal number that fits in 16 bits.
    fn number(&mut self, t: Token<'a>, expected: &str) -> Result<u16, FilterError> {
        let n = (t.kind == Kind::Word && t.text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.text.parse::<u16>().ok())
            .flatten()
            .ok_or_else(|| error(t, expected))?;
        self.bump();
        Ok(n)
    }

    /// The address of a `host`, `net` or unqualified primitive, starting at `t`.
    fn address(&mut self, ty: Type, t: Token<'a>) -> Result<IpNet, FilterError> {
        let host_expected = "an IPv4 or IPv6 address";
        let net_expected = "a network: ADDRESS/LENGTH (10.0.0.0/8, fd00::/16) or a partial \
                            IPv4 address (10.1)";
        if t.kind != Kind::Word {
            return Err(error(
                t,
                if ty == Type::Net {
                    net_expected
                } else {
                    host_expected
                },
            ));
        }
        self.bump();
        let slash = self.peek();
        let has_length = slash.kind == Kind::Slash;
        if ty == Type::Host || (ty == Type::Default && !has_length) {
            let addr = parse_ip(t.text).ok_or_else(|| error(t, host_expected))?;
            if has_length {
                return Err(error(
                    slash,
                    "a host address without a prefix length (use \"net\" for a network)",
                ));
            }
            return Ok(IpNet::host(addr));
        }

        let (addr, implied_length) = parse_network(t.text).ok_or_else(|| error(t, net_expected))?;
        let net = if has_length {
            self.bump();
            let n = self.peek();
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let net = (n.kind == Kind::Word && n.text.bytes().all(|b| b.is_ascii_digit()))
                .then(|| n.text.parse::<u8>().ok())
                .flatten()
                .and_then(|len| IpNet::truncating(addr, len))
                .ok_or_else(|| error(n, format!("a prefix length (0-{max})")))?;
            self.bump();
            net
        } else {
            IpNet::truncating(addr, implied_length).ok_or_else(|| error(t, net_expected))?
        };
        if net.addr() != addr {
            return Err(error(
                t,
                format!(
                    "a network address with no bits set past its /{} prefix ({net})",
                    net.prefix_len()
                ),
            ));
        }
        Ok(net)
    }
}

/// How tightly a binary operator binds; `None` for other tokens. pcap-filter(7): "Alternation
/// and concatenation have equal precedence and associate left to right" (giving `and` a higher
/// power would make it bind tighter, as in C).
fn binding_power(kind: Kind) -> Option<u8> {
    match kind {
        Kind::And | Kind::Or => Some(1),
        _ => None,
    }
}

/// What may follow a protocol name to qualify it.
fn qualifiers_after(proto: Proto) -> Option<&'static str> {
    match proto {
        Proto::Ip | Proto::Ip6 | Proto::Arp => Some("host, net, src, dst or an address"),
        Proto::Tcp | Proto::Udp => Some("port, src or dst"),
        Proto::Icmp => Some("id"),
        Proto::Icmp6 => None,
    }
}

/// An unqualified word that is a value rather than a keyword: IPv4 addresses, numbers and IPv6
/// addresses (which may start with a letter, but have a colon).
fn looks_like_value(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_digit()) || word.contains(':')
}

/// A full IPv4 address (four decimal octets) or an IPv6 address.
fn parse_ip(text: &str) -> Option<IpAddr> {
    if text.contains(':') {
        return text.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    match parse_ipv4_octets(text)? {
        (octets, 4) => Some(IpAddr::V4(Ipv4Addr::from(octets))),
        _ => None,
    }
}

/// A network address and the prefix length it implies: IPv6 (128), or one to four IPv4 octets
/// (tcpdump's `net 10.1` is `10.1.0.0/16`).
fn parse_network(text: &str) -> Option<(IpAddr, u8)> {
    if text.contains(':') {
        return Some((IpAddr::V6(text.parse().ok()?), 128));
    }
    let (octets, n) = parse_ipv4_octets(text)?;
    // n is 1..=4.
    Some((IpAddr::V4(Ipv4Addr::from(octets)), 8 * n as u8))
}

/// One to four dot-separated decimal octets, left-aligned, and how many there were.
fn parse_ipv4_octets(text: &str) -> Option<([u8; 4], usize)> {
    let mut octets = [0u8; 4];
    let mut n = 0;
    for part in text.split('.') {
        if n == 4 || part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        octets[n] = part.parse().ok()?;
        n += 1;
    }
    Some((octets, n))
}

fn error(t: Token<'_>, expected: impl Into<String>) -> FilterError {
    FilterError {
        pos: t.pos,
        token: t.text.to_string(),
        expected: expected.into(),
    }
}

/// A token where a complete primitive may be followed only by an operator, `)` (inside the
/// group opened by `open`) or the end.
fn unexpected_after_primitive(t: Token<'_>, open: Option<Token<'_>>) -> FilterError {
    let mut expected = match open {
        None => "\"and\", \"or\" or the end of the filter".to_string(),
        Some(open) => format!(
            "\"and\", \"or\" or \")\" to close the \"(\" at position {}",
            open.pos
        ),
    };
    if t.kind == Kind::RParen && open.is_none() {
        expected.push_str(" (this \")\" has no matching \"(\")");
    } else if t.text == "[" {
        expected.push_str(" (packet data accessors such as tcp[13] are not supported)");
    }
    error(t, expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Expr {
        parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn err(text: &str) -> FilterError {
        parse(text).expect_err(text)
    }

    fn t(test: Test) -> Expr {
        Expr::Test(test)
    }

    fn proto(p: Proto) -> Expr {
        t(Test::Proto(p))
    }

    fn host(dir: Dir, a: &str) -> Expr {
        t(Test::Addr {
            dir,
            net: IpNet::host(a.parse().expect("address")),
        })
    }

    fn net(dir: Dir, a: &str, len: u8) -> Expr {
        t(Test::Addr {
            dir,
            net: IpNet::new(a.parse().expect("address"), len).expect("network"),
        })
    }

    fn port(dir: Dir, port: u16) -> Expr {
        t(Test::Port { dir, port })
    }

    #[test]
    fn empty_and_blank_match_everything() {
        assert_eq!(p(""), Expr::Any);
        assert_eq!(p("   "), Expr::Any);
    }

    #[test]
    fn every_protocol_primitive() {
        for (text, pr) in [
            ("ip", Proto::Ip),
            ("ip6", Proto::Ip6),
            ("arp", Proto::Arp),
            ("icmp", Proto::Icmp),
            ("icmp6", Proto::Icmp6),
            ("tcp", Proto::Tcp),
            ("udp", Proto::Udp),
        ] {
            assert_eq!(p(text), proto(pr), "{text}");
        }
        assert_eq!(p("vxlan"), t(Test::Vxlan));
        assert_eq!(p("icmp id 4242"), t(Test::IcmpId(4242)));
    }

    #[test]
    fn hosts_with_directions() {
        assert_eq!(p("host 10.0.0.1"), host(Dir::Either, "10.0.0.1"));
        assert_eq!(p("src host 10.0.0.1"), host(Dir::Src, "10.0.0.1"));
        assert_eq!(p("dst host fd00::1"), host(Dir::Dst, "fd00::1"));
        assert_eq!(p("src or dst host ::1"), host(Dir::Either, "::1"));
        assert_eq!(p("dst || src host ::1"), host(Dir::Either, "::1"));
        assert_eq!(p("src and dst host 10.0.0.1"), host(Dir::Both, "10.0.0.1"));
        assert_eq!(p("dst && src host 10.0.0.1"), host(Dir::Both, "10.0.0.1"));
        assert_eq!(
            p("host ::ffff:10.0.0.1"),
            host(Dir::Either, "::ffff:10.0.0.1")
        );
    }

    #[test]
    fn shorthands_src_dst_and_bare_addresses() {
        assert_eq!(p("src 10.0.0.1"), host(Dir::Src, "10.0.0.1"));
        assert_eq!(p("dst fe80::1"), host(Dir::Dst, "fe80::1"));
        assert_eq!(p("10.0.0.1"), host(Dir::Either, "10.0.0.1"));
        assert_eq!(p("fd00::2"), host(Dir::Either, "fd00::2"));
        // With a prefix length, an unqualified address is a network (as in tcpdump).
        assert_eq!(p("10.1.0.0/16"), net(Dir::Either, "10.1.0.0", 16));
        assert_eq!(p("dst 10.1.0.0/16"), net(Dir::Dst, "10.1.0.0", 16));
    }

    #[test]
    fn networks() {
        assert_eq!(p("net 10.0.0.0/8"), net(Dir::Either, "10.0.0.0", 8));
        assert_eq!(p("src net 10.0.16.0/20"), net(Dir::Src, "10.0.16.0", 20));
        assert_eq!(p("dst net 2000::/3"), net(Dir::Dst, "2000::", 3));
        assert_eq!(p("net 0.0.0.0/0"), net(Dir::Either, "0.0.0.0", 0));
        assert_eq!(p("net ::/0"), net(Dir::Either, "::", 0));
        assert_eq!(p("net 10.0.0.1/32"), host(Dir::Either, "10.0.0.1"));
        assert_eq!(p("net 10.0.0.0 / 24"), net(Dir::Either, "10.0.0.0", 24));
        // tcpdump's partial IPv4 networks.
        assert_eq!(p("net 10"), net(Dir::Either, "10.0.0.0", 8));
        assert_eq!(p("net 172.16"), net(Dir::Either, "172.16.0.0", 16));
        assert_eq!(p("net 192.168.1"), net(Dir::Either, "192.168.1.0", 24));
        assert_eq!(p("net 10.1/16"), net(Dir::Either, "10.1.0.0", 16));
        assert_eq!(p("net fd00::"), host(Dir::Either, "fd00::"));
    }

    #[test]
    fn ports() {
        assert_eq!(p("port 53"), port(Dir::Either, 53));
        assert_eq!(p("src port 0"), port(Dir::Src, 0));
        assert_eq!(p("dst port 65535"), port(Dir::Dst, 65535));
        assert_eq!(p("src and dst port 53"), port(Dir::Both, 53));
    }

    #[test]
    fn protocol_qualifiers() {
        assert_eq!(
            p("tcp port 80"),
            proto(Proto::Tcp).and(port(Dir::Either, 80))
        );
        assert_eq!(
            p("udp dst port 53"),
            proto(Proto::Udp).and(port(Dir::Dst, 53))
        );
        assert_eq!(
            p("ip host 10.0.0.1"),
            proto(Proto::Ip).and(host(Dir::Either, "10.0.0.1"))
        );
        assert_eq!(
            p("ip6 src net fd00::/8"),
            proto(Proto::Ip6).and(net(Dir::Src, "fd00::", 8))
        );
        assert_eq!(
            p("arp 10.0.0.1"),
            proto(Proto::Arp).and(host(Dir::Either, "10.0.0.1"))
        );
        assert_eq!(
            p("arp dst 10.0.0.1"),
            proto(Proto::Arp).and(host(Dir::Dst, "10.0.0.1"))
        );
    }

    #[test]
    fn not_binds_tighter_than_and_and_or() {
        assert_eq!(
            p("not tcp and udp"),
            proto(Proto::Tcp).negate().and(proto(Proto::Udp))
        );
        assert_eq!(
            p("! tcp or udp"),
            proto(Proto::Tcp).negate().or(proto(Proto::Udp))
        );
        assert_eq!(
            p("tcp and !udp"),
            proto(Proto::Tcp).and(proto(Proto::Udp).negate())
        );
        assert_eq!(p("not not tcp"), proto(Proto::Tcp).negate().negate());
        assert_eq!(p("!!tcp"), proto(Proto::Tcp).negate().negate());
    }

    #[test]
    fn and_and_or_have_equal_precedence_left_to_right() {
        let (a, b, c) = (proto(Proto::Tcp), proto(Proto::Udp), proto(Proto::Arp));
        assert_eq!(
            p("tcp or udp and arp"),
            a.clone().or(b.clone()).and(c.clone())
        );
        assert_eq!(
            p("tcp and udp or arp"),
            a.clone().and(b.clone()).or(c.clone())
        );
        assert_eq!(
            p("tcp || udp && arp"),
            a.clone().or(b.clone()).and(c.clone())
        );
        assert_eq!(
            p("tcp and udp and arp"),
            a.clone().and(b.clone()).and(c.clone())
        );
        assert_eq!(p("tcp or udp or arp"), a.or(b).or(c));
    }

    #[test]
    fn parentheses_group() {
        let (a, b, c) = (proto(Proto::Tcp), proto(Proto::Udp), proto(Proto::Arp));
        assert_eq!(
            p("tcp or (udp and arp)"),
            a.clone().or(b.clone().and(c.clone()))
        );
        assert_eq!(p("not (tcp or udp)"), a.clone().or(b.clone()).negate());
        assert_eq!(p("((tcp))"), a.clone());
        assert_eq!(p("(tcp)and(udp)"), a.clone().and(b.clone()));
        assert_eq!(p("!(!(tcp))"), a.negate().negate());
    }

    #[test]
    fn bare_values_repeat_the_previous_qualifiers() {
        assert_eq!(
            p("port 53 or 123"),
            port(Dir::Either, 53).or(port(Dir::Either, 123))
        );
        assert_eq!(
            p("tcp dst port 80 or 443"),
            proto(Proto::Tcp)
                .and(port(Dir::Dst, 80))
                .or(proto(Proto::Tcp).and(port(Dir::Dst, 443)))
        );
        assert_eq!(
            p("host 10.0.0.1 and not 10.0.0.2"),
            host(Dir::Either, "10.0.0.1").and(host(Dir::Either, "10.0.0.2").negate())
        );
        assert_eq!(
            p("src net 10.0.0.0/8 or 192.168.0.0/16"),
            net(Dir::Src, "10.0.0.0", 8).or(net(Dir::Src, "192.168.0.0", 16))
        );
        assert_eq!(
            p("src 10.0.0.1 or 10.2.0.0/16"),
            host(Dir::Src, "10.0.0.1").or(net(Dir::Src, "10.2.0.0", 16))
        );
        assert_eq!(
            p("icmp id 1 or 2"),
            t(Test::IcmpId(1)).or(t(Test::IcmpId(2)))
        );
        // Into a group, and back to the outer ones after it.
        assert_eq!(
            p("port 1 and (2 or host 10.0.0.1) and 3"),
            port(Dir::Either, 1)
                .and(port(Dir::Either, 2).or(host(Dir::Either, "10.0.0.1")))
                .and(port(Dir::Either, 3))
        );
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "tcp",
            "not host 10.0.0.1",
            "(src net 10.0.16.0/20 or dst host fd00::1)",
            "((tcp and port 80) or (udp and src and dst port 53))",
            "not (vxlan and icmp id 7)",
            "(ip and net 2000::/3)",
        ] {
            let e = p(text);
            assert_eq!(p(&e.to_string()), e, "{text}");
        }
        assert_eq!(
            p("tcp or udp and not port 80").to_string(),
            "((tcp or udp) and not port 80)"
        );
    }

    #[test]
    fn unknown_words_point_at_the_token() {
        let e = err("tcp and not frobnicate");
        assert_eq!((e.pos, e.token.as_str()), (12, "frobnicate"));
        assert_eq!(e.expected, PRIMITIVE);
        assert_eq!(
            e.to_string(),
            "filter: at position 12 (\"frobnicate\"): expected a primitive (host, net, port, \
             src, dst, icmp, icmp6, tcp, udp, arp, ip, ip6, vxlan, not, \"(\")"
        );
    }

    #[test]
    fn unsupported_tcpdump_syntax_is_rejected_where_it_starts() {
        for (text, pos, token) in [
            ("ether host 00:11:22:33:44:55", 0, "ether"),
            ("portrange 6000-6008", 0, "portrange"),
            ("less 100", 0, "less"),
            ("greater 100", 0, "greater"),
            ("tcp and gateway snup", 8, "gateway"),
            ("broadcast", 0, "broadcast"),
            ("vlan 100", 0, "vlan"),
            ("sctp", 0, "sctp"),
            ("host snup", 5, "snup"),
            ("port http", 5, "http"),
            ("tcp[13] & 2 != 0", 3, "["),
            ("ip proto 6", 3, "proto"),
            ("ip[9] = 6", 2, "["),
            ("tcp portrange 1-2", 4, "portrange"),
            ("tcp src 10.0.0.1", 8, "10.0.0.1"),
            ("udp 53", 4, "53"),
            ("icmp src id 1", 5, "src"),
            ("icmp6 id 1", 6, "id"),
            ("src portrange 1-2", 4, "portrange"),
            ("net 10.0.0.0 mask 255.0.0.0", 13, "mask"),
            ("tcp or 10.0.0.1", 7, "10.0.0.1"),
            ("host 10.0.0.1 10.0.0.2", 14, "10.0.0.2"),
            ("vxlan 4789", 6, "4789"),
            ("ip and len > 100", 7, "len"),
        ] {
            let e = err(text);
            assert_eq!((e.pos, e.token.as_str()), (pos, token), "{text}: {e}");
        }
        assert!(err("tcp[13] & 2 != 0").expected.contains("tcp[13]"));
        assert_eq!(
            err("tcp portrange 1-2").expected,
            "port, src or dst after \"tcp\" (or \"and\"/\"or\" before the next primitive)"
        );
        assert_eq!(
            err("src portrange 1-2").expected,
            "host, net, port or an address"
        );
        assert_eq!(err("tcp or 10.0.0.1").expected, BARE_AFTER_PROTOCOL);
    }

    #[test]
    fn bad_values() {
        for (text, pos, token, expected) in [
            ("port 65536", 5, "65536", "a port number (0-65535)"),
            ("port -1", 5, "-1", "a port number (0-65535)"),
            ("port", 4, "", "a port number (0-65535)"),
            ("icmp id x", 8, "x", "an ICMP echo identifier (0-65535)"),
            ("host 10.0.0", 5, "10.0.0", "an IPv4 or IPv6 address"),
            (
                "host 10.0.0.256",
                5,
                "10.0.0.256",
                "an IPv4 or IPv6 address",
            ),
            (
                "host 10.0.0.1.1",
                5,
                "10.0.0.1.1",
                "an IPv4 or IPv6 address",
            ),
            ("host fd00:::1", 5, "fd00:::1", "an IPv4 or IPv6 address"),
            ("10.0.0", 0, "10.0.0", "an IPv4 or IPv6 address"),
            ("host (", 5, "(", "an IPv4 or IPv6 address"),
            ("net 10.0.0.0/33", 13, "33", "a prefix length (0-32)"),
            ("net fd00::/129", 11, "129", "a prefix length (0-128)"),
            ("net 10.0.0.0/", 13, "", "a prefix length (0-32)"),
            ("net 10.0.0.0/x", 13, "x", "a prefix length (0-32)"),
            (
                "ip host fd00::1",
                8,
                "fd00::1",
                "an IPv4 address after \"ip\"",
            ),
            (
                "arp host fd00::1",
                9,
                "fd00::1",
                "an IPv4 address after \"arp\"",
            ),
            (
                "ip6 host 10.0.0.1",
                9,
                "10.0.0.1",
                "an IPv6 address after \"ip6\"",
            ),
            ("src", 3, "", "host, net, port or an address"),
        ] {
            let e = err(text);
            assert_eq!(
                (e.pos, e.token.as_str(), e.expected.as_str()),
                (pos, token, expected),
                "{text}"
            );
        }
    }

    #[test]
    fn host_bits_and_host_prefixes() {
        let e = err("net 10.0.0.1/24");
        assert_eq!((e.pos, e.token.as_str()), (4, "10.0.0.1"));
        assert_eq!(
            e.expected,
            "a network address with no bits set past its /24 prefix (10.0.0.0/24)"
        );
        let e = err("net fd00::1/3");
        assert_eq!(
            e.expected,
            "a network address with no bits set past its /3 prefix (e000::/3)"
        );
        let e = err("host 10.0.0.0/24");
        assert_eq!((e.pos, e.token.as_str()), (13, "/"));
        assert!(e.expected.contains("use \"net\""));
    }

    #[test]
    fn unbalanced_parentheses() {
        let e = err("(tcp or udp");
        assert_eq!((e.pos, e.token.as_str()), (11, ""));
        assert_eq!(
            e.expected,
            "\"and\", \"or\" or \")\" to close the \"(\" at position 0"
        );
        assert!(e
            .to_string()
            .starts_with("filter: at position 11 (end of filter): "));

        let e = err("tcp and (udp or (arp)");
        assert_eq!((e.pos, e.expected.contains("position 8")), (21, true));

        let e = err("tcp or udp)");
        assert_eq!((e.pos, e.token.as_str()), (10, ")"));
        assert!(e.expected.contains("no matching"));

        let e = err("()");
        assert_eq!(
            (e.pos, e.token.as_str(), e.expected.as_str()),
            (1, ")", PRIMITIVE)
        );

        let e = err(")");
        assert_eq!((e.pos, e.expected.as_str()), (0, PRIMITIVE));
    }

    #[test]
    fn dangling_operators() {
        for (text, pos, token) in [
            ("tcp and", 7, ""),
            ("tcp or or udp", 7, "or"),
            ("and tcp", 0, "and"),
            ("not", 3, ""),
            ("tcp not udp", 4, "not"),
            ("tcp & udp", 4, "&"),
            ("tcp | udp", 4, "|"),
        ] {
            let e = err(text);
            assert_eq!((e.pos, e.token.as_str()), (pos, token), "{text}: {e}");
        }
    }

    #[test]
    fn overlong_filters_are_rejected_without_deep_recursion() {
        let text = "(".repeat(100_000);
        let e = err(&text);
        assert_eq!(e.pos, MAX_TOKENS);
        let text = vec!["tcp"; 10_000].join(" or ");
        // "tcp" every 7 characters, "or" between them.
        assert_eq!(err(&text).pos, 7 * (MAX_TOKENS / 2));
        // One token over the limit is refused, one under it parses.
        let text = vec!["tcp"; MAX_TOKENS / 2 + 1].join(" or ");
        assert_eq!(tokenize(&text).len(), MAX_TOKENS + 2);
        assert_eq!(err(&text).pos, 7 * (MAX_TOKENS / 2));
        let text = vec!["tcp"; MAX_TOKENS / 2].join(" or ");
        assert!(parse(&text).is_ok());
    }
}
