//! A small synchronous rtnetlink client: one request, its replies collected into a Vec. The
//! socket belongs to the network namespace of the thread that opened it, so topology discovery
//! opens one per namespace on the worker thread that entered it — no async runtime needed.
//!
//! Owns: framing, sequence numbers, multipart dumps, netlink errors as `io::Error`. A reply that
//! this version of netlink-packet-route cannot parse is skipped rather than failing the dump.

use std::io;

use anyhow::{Context, Result};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP,
    NLMSG_OVERRUN, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Receive buffer size: the kernel caps dump messages well below this.
const RECV_BUF: usize = 64 * 1024;
/// How many times a dump interrupted by a concurrent change is retried.
const DUMP_RETRIES: usize = 3;

/// An rtnetlink socket in the current thread's network namespace.
pub struct Rtnl {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Rtnl {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE).context("open rtnetlink socket")?;
        socket.bind_auto().context("bind rtnetlink socket")?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .context("connect rtnetlink socket")?;
        Ok(Self {
            socket,
            seq: 0,
            buf: vec![0; RECV_BUF],
        })
    }

    /// Sends a dump request and returns every message of the reply.
    pub fn dump(&mut self, msg: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        let mut last = Ok(Vec::new());
        for _ in 0..DUMP_RETRIES {
            match self.exchange(msg.clone(), NLM_F_REQUEST | NLM_F_DUMP) {
                Ok((out, false)) => return Ok(out),
                Ok((out, true)) => last = Ok(out),
                Err(e) => return Err(e),
            }
        }
        last
    }

    /// Sends a single request and returns the replies (none for a plain ACK).
    pub fn request(&mut self, msg: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.exchange(msg, NLM_F_REQUEST | NLM_F_ACK)
            .map(|(out, _)| out)
    }

    /// Sends a dump request and returns every reply's payload (after the netlink header)
    /// unparsed, for callers that read a few attributes of many messages (parsing every
    /// attribute of a link dump doubled the time the survey of the namespaces at start takes:
    /// see `kinds`).
    pub fn dump_raw(&mut self, msg: RouteNetlinkMessage) -> io::Result<Vec<Vec<u8>>> {
        let mut last = Vec::new();
        for _ in 0..DUMP_RETRIES {
            let mut out = Vec::new();
            let interrupted =
                self.exchange_frames(msg.clone(), NLM_F_REQUEST | NLM_F_DUMP, |f| {
                    out.push(f.get(HEADER_LEN..).unwrap_or_default().to_vec())
                })?;
            if !interrupted {
                return Ok(out);
            }
            last = out;
        }
        Ok(last)
    }

    /// Sends `msg` with `flags`; returns the replies and whether the dump was interrupted.
    fn exchange(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<(Vec<RouteNetlinkMessage>, bool)> {
        let mut replies = Vec::new();
        let interrupted = self.exchange_frames(msg, flags, |frame| {
            // An attribute this crate version cannot parse: skip the message.
            if let Ok(NetlinkMessage {
                payload: NetlinkPayload::InnerMessage(m),
                ..
            }) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(frame)
            {
                replies.push(m);
            }
        })?;
        Ok((replies, interrupted))
    }

    /// Sends `msg` with `flags` and hands every reply frame (header included) but the final
    /// DONE or ACK to `each`; returns whether the dump was interrupted.
    fn exchange_frames(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        mut each: impl FnMut(&[u8]),
    ) -> io::Result<bool> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0)?;

        let mut interrupted = false;
        loop {
            let size = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let mut offset = 0;
            while offset + HEADER_LEN <= size {
                let Some(len) = frame_len(&self.buf[offset..size]) else {
                    break;
                };
                let frame = &self.buf[offset..offset + len];
                offset += align4(len);
                let Some(h) = FrameHeader::of(frame) else {
                    continue;
                };
                if h.seq != seq {
                    continue;
                }
                if h.flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match h.kind {
                    NLMSG_DONE => return Ok(interrupted),
                    NLMSG_ERROR => {
                        // struct nlmsgerr: the error code, then the request's header.
                        let Some(code) = frame.get(HEADER_LEN..HEADER_LEN + 4) else {
                            continue;
                        };
                        let code = i32::from_ne_bytes(code.try_into().unwrap_or_default());
                        if code != 0 {
                            return Err(io::Error::from_raw_os_error(code.saturating_abs()));
                        }
                        // A plain ACK ends a non-dump request.
                        return Ok(interrupted);
                    }
                    NLMSG_NOOP | NLMSG_OVERRUN => {}
                    // A single request's answer is followed by its ACK; keep reading.
                    _ => each(frame),
                }
            }
        }
    }
}

/// `struct nlmsghdr`'s length.
const HEADER_LEN: usize = 16;

/// The fields of a frame's `struct nlmsghdr` the exchange looks at.
#[derive(Debug, PartialEq, Eq)]
struct FrameHeader {
    kind: u16,
    flags: u16,
    seq: u32,
}

impl FrameHeader {
    fn of(frame: &[u8]) -> Option<Self> {
        let u16_at = |i: usize| Some(u16::from_ne_bytes(frame.get(i..i + 2)?.try_into().ok()?));
        Some(Self {
            kind: u16_at(4)?,
            flags: u16_at(6)?,
            seq: u32::from_ne_bytes(frame.get(8..12)?.try_into().ok()?),
        })
    }
}

/// Length of the netlink frame at the start of `buf`, when it is complete and sane.
fn frame_len(buf: &[u8]) -> Option<usize> {
    let len = u32::from_ne_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    (len >= 16 && len <= buf.len()).then_some(len)
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_len_rejects_short_and_truncated_frames() {
        let mut b = vec![0u8; 20];
        b[..4].copy_from_slice(&20u32.to_ne_bytes());
        assert_eq!(frame_len(&b), Some(20));
        b[..4].copy_from_slice(&24u32.to_ne_bytes());
        assert_eq!(frame_len(&b), None);
        b[..4].copy_from_slice(&8u32.to_ne_bytes());
        assert_eq!(frame_len(&b), None);
        assert_eq!(align4(17), 20);
        assert_eq!(align4(20), 20);
    }

    #[test]
    fn frame_header_fields_and_short_frames() {
        let mut f = vec![0u8; 16];
        f[..4].copy_from_slice(&16u32.to_ne_bytes());
        f[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        f[6..8].copy_from_slice(&NLM_F_DUMP_INTR.to_ne_bytes());
        f[8..12].copy_from_slice(&7u32.to_ne_bytes());
        assert_eq!(
            FrameHeader::of(&f),
            Some(FrameHeader {
                kind: NLMSG_DONE,
                flags: NLM_F_DUMP_INTR,
                seq: 7
            })
        );
        assert_eq!(FrameHeader::of(&f[..11]), None);
    }
}
