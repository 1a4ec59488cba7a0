//! ICMP echo probes sent from inside a namespace, for `vethtrace ping`.
//!
//! The socket is a raw ICMP (or ICMPv6) socket created on a thread that entered the source
//! namespace, so the probe uses that namespace's routes and source address; a socket stays
//! bound to the namespace it was created in, so the main thread can use it afterwards. The
//! probe carries an ICMP id of our own, which the kernel-side filter matches on. Replies and
//! ICMP errors quoting our probe (unreachable, fragmentation needed / packet too big, time
//! exceeded) are read back from the same socket.

use std::{
    io,
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::netns;

/// What came back for one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The echo reply, after this long.
    Reply(Duration),
    /// An ICMP error quoting our probe.
    Error(IcmpError),
}

/// An ICMP error received for a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcmpError {
    pub from: IpAddr,
    pub icmp_type: u8,
    pub code: u8,
    /// Next-hop MTU of "fragmentation needed" / "packet too big".
    pub mtu: Option<u32>,
}

pub struct Pinger {
    sock: OwnedFd,
    pub id: u16,
    pub dst: IpAddr,
    /// The source address the namespace's routing picked for `dst`.
    pub src: IpAddr,
    v6: bool,
}

/// Why a probe could not even be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRoute {
    /// The namespace has no route to the destination (ENETUNREACH at route lookup).
    Unreachable(String),
}

impl Pinger {
    /// Opens the socket inside the namespace at `netns` and looks up the route to `dst`.
    /// `Ok(Err(NoRoute))` when the namespace cannot reach `dst` at all.
    pub fn open(
        netns: &Path,
        dst: IpAddr,
        id: u16,
    ) -> Result<std::result::Result<Pinger, NoRoute>> {
        netns::run_in(netns, move || {
            // The route lookup, the way ping's own connect() does it.
            let probe = UdpSocket::bind(if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })
                .context("create a socket in the source namespace")?;
            let src = match probe.connect(SocketAddr::new(dst, 1025)) {
                Ok(()) => probe.local_addr().context("read the source address")?.ip(),
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENETUNREACH) | Some(libc::EHOSTUNREACH)
                    ) =>
                {
                    return Ok(Err(NoRoute::Unreachable(e.to_string())));
                }
                Err(e) => return Err(e).context("route lookup for the destination"),
            };
            let v6 = dst.is_ipv6();
            let (domain, proto) = if v6 {
                (libc::AF_INET6, libc::IPPROTO_ICMPV6)
            } else {
                (libc::AF_INET, libc::IPPROTO_ICMP)
            };
            // SAFETY: plain socket(2); the descriptor is owned below.
            let fd = unsafe {
                libc::socket(
                    domain,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                    proto,
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error())
                    .context("open a raw ICMP socket (needs CAP_NET_RAW)");
            }
            // SAFETY: fd is a fresh descriptor nobody else owns.
            let sock = unsafe { OwnedFd::from_raw_fd(fd) };
            // Don't fragment, like `ping -M do`: a probe larger than a link's MTU must show up
            // as EMSGSIZE here or "fragmentation needed" from a router, not pass in pieces.
            let (level, opt) = if v6 {
                (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER)
            } else {
                (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER)
            };
            let val: libc::c_int = 2; // IP_PMTUDISC_DO / IPV6_PMTUDISC_DO
                                      // SAFETY: val is a c_int, as these options expect.
            let rc = unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    level,
                    opt,
                    (&val as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error())
                    .context("set don't-fragment on the probe socket");
            }
            Ok(Ok(Pinger {
                sock,
                id,
                dst,
                src,
                v6,
            }))
        })
    }

    /// Sends echo request `seq` with `size` bytes of payload. `Ok(false)` when the kernel
    /// refused it as larger than the outgoing device's MTU (EMSGSIZE): the probe never left.
    pub fn send(&self, seq: u16, size: usize) -> Result<bool> {
        let pkt = echo_request(self.v6, self.id, seq, size);
        let addr: socket2_addr::Addr = socket2_addr::Addr::new(self.dst);
        // SAFETY: pkt and the sockaddr are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                self.sock.as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                addr.as_ptr(),
                addr.len(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EMSGSIZE) {
                return Ok(false);
            }
            return Err(e).context("send the echo request");
        }
        Ok(true)
    }

    /// Waits until `deadline` for the reply to `seq`, or an ICMP error quoting it.
    pub fn wait(&self, seq: u16, sent: Instant, deadline: Instant) -> Result<Option<Answer>> {
        let mut buf = [0u8; 2048];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let timeout = (deadline - now).as_millis().clamp(1, i32::MAX as u128) as i32;
            let mut pfd = libc::pollfd {
                fd: self.sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, timeout) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    return Ok(None);
                }
                return Err(e).context("wait for the reply");
            }
            if rc == 0 {
                continue;
            }
            let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let mut from_len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            // SAFETY: buf, from and from_len are valid for writes of the sizes given.
            let n = unsafe {
                libc::recvfrom(
                    self.sock.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut from as *mut libc::sockaddr_storage).cast(),
                    &mut from_len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e).context("read the reply");
            }
            let msg = &buf[..n as usize];
            let Some(from_ip) = sockaddr_ip(&from) else {
                continue;
            };
            match classify(self.v6, msg, self.id, seq, from_ip) {
                Some(Classified::Reply) => return Ok(Some(Answer::Reply(sent.elapsed()))),
                Some(Classified::Error(e)) => return Ok(Some(Answer::Error(e))),
                None => continue,
            }
        }
    }
}

enum Classified {
    Reply,
    Error(IcmpError),
}

/// What a received message means for probe (`id`, `seq`). IPv4 raw sockets deliver the IP
/// header too; IPv6 raw sockets deliver the ICMPv6 message only.
fn classify(v6: bool, msg: &[u8], id: u16, seq: u16, from: IpAddr) -> Option<Classified> {
    let icmp = if v6 {
        msg
    } else {
        let ihl = (*msg.first()? as usize & 0x0f) * 4;
        msg.get(ihl..)?
    };
    let (t, code) = (*icmp.first()?, *icmp.get(1)?);
    let be16 = |b: &[u8], at: usize| -> Option<u16> {
        Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
    };
    let (reply, unreach, too_big, exceeded) = if v6 { (129, 1, 2, 3) } else { (0, 3, 255, 11) };
    if t == reply {
        return (be16(icmp, 4)? == id && be16(icmp, 6)? == seq).then_some(Classified::Reply);
    }
    if t == unreach || t == too_big || t == exceeded {
        // The error quotes our packet: its IP header, then our ICMP header.
        let quoted = icmp.get(8..)?;
        let inner = if v6 {
            quoted.get(40..)?
        } else {
            let ihl = (*quoted.first()? as usize & 0x0f) * 4;
            quoted.get(ihl..)?
        };
        if be16(inner, 4)? != id || be16(inner, 6)? != seq {
            return None;
        }
        let mtu = if v6 && t == too_big {
            Some(u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]))
        } else if !v6 && t == unreach && code == 4 {
            be16(icmp, 6).map(u32::from)
        } else {
            None
        };
        return Some(Classified::Error(IcmpError {
            from,
            icmp_type: t,
            code,
            mtu,
        }));
    }
    None
}

/// An echo request with a checksum (the kernel fills ICMPv6 checksums itself).
pub fn echo_request(v6: bool, id: u16, seq: u16, size: usize) -> Vec<u8> {
    let mut p = vec![0u8; 8 + size];
    p[0] = if v6 { 128 } else { 8 };
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in p[8..].iter_mut().enumerate() {
        *b = i as u8;
    }
    if !v6 {
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// The Internet checksum (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn sockaddr_ip(ss: &libc::sockaddr_storage) -> Option<IpAddr> {
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let sin =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(IpAddr::from(
                u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let sin6 =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(IpAddr::from(sin6.sin6_addr.s6_addr))
        }
        _ => None,
    }
}

/// A socket address for sendto(2).
mod socket2_addr {
    use std::net::IpAddr;

    pub struct Addr {
        storage: libc::sockaddr_storage,
        len: libc::socklen_t,
    }

    impl Addr {
        pub fn new(ip: IpAddr) -> Addr {
            // SAFETY: all-zero is a valid sockaddr_storage.
            let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let len = match ip {
                IpAddr::V4(v4) => {
                    // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
                    let sin = unsafe {
                        &mut *(&mut storage as *mut libc::sockaddr_storage)
                            .cast::<libc::sockaddr_in>()
                    };
                    sin.sin_family = libc::AF_INET as libc::sa_family_t;
                    sin.sin_addr.s_addr = u32::from_ne_bytes(v4.octets());
                    std::mem::size_of::<libc::sockaddr_in>()
                }
                IpAddr::V6(v6) => {
                    // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
                    let sin6 = unsafe {
                        &mut *(&mut storage as *mut libc::sockaddr_storage)
                            .cast::<libc::sockaddr_in6>()
                    };
                    sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                    sin6.sin6_addr.s6_addr = v6.octets();
                    std::mem::size_of::<libc::sockaddr_in6>()
                }
            };
            Addr {
                storage,
                len: len as libc::socklen_t,
            }
        }

        pub fn as_ptr(&self) -> *const libc::sockaddr {
            (&self.storage as *const libc::sockaddr_storage).cast()
        }

        pub fn len(&self) -> libc::socklen_t {
            self.len
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_checksum_verifies() {
        let p = echo_request(false, 0x1234, 7, 56);
        assert_eq!(p.len(), 64);
        assert_eq!((p[0], &p[4..8]), (8, &[0x12, 0x34, 0, 7][..]));
        assert_eq!(checksum(&p), 0, "a packet with its checksum sums to zero");
    }

    fn ipv4(payload: &[u8]) -> Vec<u8> {
        let mut v = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1,
        ];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn classifies_our_reply_and_ignores_others() {
        let from: IpAddr = "10.0.0.2".parse().expect("ip");
        let mut reply = echo_request(false, 9, 3, 8);
        reply[0] = 0;
        assert!(matches!(
            classify(false, &ipv4(&reply), 9, 3, from),
            Some(Classified::Reply)
        ));
        assert!(
            classify(false, &ipv4(&reply), 9, 4, from).is_none(),
            "other seq"
        );
        assert!(
            classify(false, &ipv4(&reply), 8, 3, from).is_none(),
            "other id"
        );
        let req = echo_request(false, 9, 3, 8);
        assert!(
            classify(false, &ipv4(&req), 9, 3, from).is_none(),
            "our own request"
        );
    }

    #[test]
    fn frag_needed_quoting_our_probe_carries_the_mtu() {
        let from: IpAddr = "10.0.0.254".parse().expect("ip");
        let quoted = ipv4(&echo_request(false, 9, 3, 0));
        let mut err = vec![3, 4, 0, 0, 0, 0, 0x05, 0xaa]; // MTU 1450
        err.extend_from_slice(&quoted);
        match classify(false, &ipv4(&err), 9, 3, from) {
            Some(Classified::Error(e)) => {
                assert_eq!((e.icmp_type, e.code, e.mtu), (3, 4, Some(1450)));
                assert_eq!(e.from, from);
            }
            _ => panic!("not classified as an error"),
        }
        assert!(classify(false, &ipv4(&err), 9, 4, from).is_none());
    }

    #[test]
    fn ipv6_reply_and_packet_too_big() {
        let from: IpAddr = "fd00::2".parse().expect("ip");
        let mut reply = echo_request(true, 5, 1, 8);
        reply[0] = 129;
        assert!(matches!(
            classify(true, &reply, 5, 1, from),
            Some(Classified::Reply)
        ));
        let mut ptb = vec![2, 0, 0, 0, 0, 0, 0x05, 0xaa];
        ptb.extend_from_slice(&[0x60; 40]);
        ptb.extend_from_slice(&echo_request(true, 5, 1, 0));
        match classify(true, &ptb, 5, 1, from) {
            Some(Classified::Error(e)) => assert_eq!(e.mtu, Some(1450)),
            _ => panic!("packet too big not recognised"),
        }
    }
}
