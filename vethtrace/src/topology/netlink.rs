//! A small synchronous rtnetlink client: one request, its replies collected into a Vec. The
//! socket belongs to the network namespace of the thread that opened it, so topology discovery
//! opens one per namespace on the worker thread that entered it — no async runtime needed.
//!
//! Owns: framing, sequence numbers, multipart dumps, netlink errors as `io::Error`. A reply that
//! this version of netlink-packet-route cannot parse is skipped rather than failing the dump.

use std::io;

use anyhow::{Context, Result};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR,
    NLM_F_REQUEST,
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

    /// Sends `msg` with `flags`; returns the replies and whether the dump was interrupted.
    fn exchange(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<(Vec<RouteNetlinkMessage>, bool)> {
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

        let mut replies = Vec::new();
        let mut interrupted = false;
        loop {
            let size = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let mut offset = 0;
            while offset + 16 <= size {
                let Some(len) = frame_len(&self.buf[offset..size]) else {
                    break;
                };
                let frame = &self.buf[offset..offset + len];
                offset += align4(len);
                let Ok(reply) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(frame) else {
                    // An attribute this crate version cannot parse: skip the message.
                    continue;
                };
                if reply.header.sequence_number != seq {
                    continue;
                }
                if reply.header.flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match reply.payload {
                    NetlinkPayload::Done(_) => return Ok((replies, interrupted)),
                    NetlinkPayload::Error(e) => {
                        if e.code.is_some() {
                            return Err(e.to_io());
                        }
                        // A plain ACK ends a non-dump request.
                        return Ok((replies, interrupted));
                    }
                    // A single request's answer is followed by its ACK; keep reading.
                    NetlinkPayload::InnerMessage(m) => replies.push(m),
                    _ => {}
                }
            }
        }
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
}
