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

        // DUMP_INTR may be set on any frame of any datagram of the reply, so it is remembered
        // across datagrams until the final frame.
        let mut interrupted = false;
        loop {
            let size = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let datagram = &self.buf[..size.min(self.buf.len())];
            match walk(datagram, seq, &mut each) {
                Walk::Continue { interrupted: i } => interrupted |= i,
                Walk::Done { interrupted: i } => return Ok(interrupted || i),
                Walk::Err(e) => return Err(e),
            }
        }
    }
}

/// What one received datagram says about the exchange it belongs to.
#[derive(Debug)]
enum Walk {
    /// No final frame yet: the reply goes on in the next datagram. `interrupted`: a frame of
    /// this datagram carried `NLM_F_DUMP_INTR`.
    Continue { interrupted: bool },
    /// The final DONE or ACK arrived.
    Done { interrupted: bool },
    /// The kernel answered with an error, or its error message was unreadable.
    Err(io::Error),
}

/// Walks the netlink frames of one datagram of the reply to request `seq`, handing every data
/// frame (header included) to `each`. Pure, so every framing case is unit-tested on built bytes.
///
/// Frames of another sequence number (a reply left over from an earlier exchange that ended
/// early) are skipped. A frame whose length field is below the header or runs past the datagram
/// ends the walk of this datagram: its length cannot be trusted to find the next frame.
fn walk(buf: &[u8], seq: u32, mut each: impl FnMut(&[u8])) -> Walk {
    let mut interrupted = false;
    let mut offset = 0;
    // `get` rather than indexing: the padding after the last frame may be missing, which puts
    // `offset` past the end of the datagram.
    while let Some(rest) = buf.get(offset..) {
        let Some(frame) = frame_len(rest).and_then(|len| rest.get(..len)) else {
            break;
        };
        offset += align4(frame.len());
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
            NLMSG_DONE => {
                // The kernel's netlink_dump_done puts the dump's final status
                // (`dump_done_errno`) after the header: negative when the dump stopped
                // partway (-EMSGSIZE: a record larger than the buffer; -EINTR; a rejected
                // filter), in which case the frames before it are an incomplete list and must
                // not pass for the whole one. A DONE without that word is plain success.
                return match status(frame) {
                    Some(code) if code < 0 => Walk::Err(os_error(code)),
                    _ => Walk::Done { interrupted },
                };
            }
            NLMSG_ERROR => {
                // struct nlmsgerr: the error code, then the request's header. Without the
                // code there is no telling ACK from failure, and skipping the frame would
                // leave the caller blocked in recv waiting for an end that already came.
                return match status(frame) {
                    None => Walk::Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink error message",
                    )),
                    // A plain ACK ends a non-dump request.
                    Some(0) => Walk::Done { interrupted },
                    Some(code) => Walk::Err(os_error(code)),
                };
            }
            NLMSG_NOOP | NLMSG_OVERRUN => {}
            // A single request's answer is followed by its ACK; keep reading.
            _ => each(frame),
        }
    }
    Walk::Continue { interrupted }
}

/// The `int` right after the header: the error code of NLMSG_ERROR, the dump status of
/// NLMSG_DONE.
fn status(frame: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(
        frame.get(HEADER_LEN..HEADER_LEN + 4)?.try_into().ok()?,
    ))
}

/// The `io::Error` of a kernel status code, which is a negative errno. `saturating_abs`, not
/// negation: `i32::MIN` from a confused sender must not overflow.
fn os_error(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code.saturating_abs())
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

    const SEQ: u32 = 42;

    /// One netlink frame: header, `payload`, then padding to 4 bytes (not counted in the
    /// length field, as the kernel builds them).
    fn frame(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = HEADER_LEN + payload.len();
        let mut f = Vec::with_capacity(align4(len));
        f.extend_from_slice(&(len as u32).to_ne_bytes());
        f.extend_from_slice(&kind.to_ne_bytes());
        f.extend_from_slice(&flags.to_ne_bytes());
        f.extend_from_slice(&seq.to_ne_bytes());
        f.extend_from_slice(&0u32.to_ne_bytes());
        f.extend_from_slice(payload);
        f.resize(align4(len), 0);
        f
    }

    /// A data frame (RTM_NEWLINK) whose payload is `payload`.
    fn data(seq: u32, payload: &[u8]) -> Vec<u8> {
        frame(16, 0, seq, payload)
    }

    fn done(seq: u32, code: i32) -> Vec<u8> {
        frame(NLMSG_DONE, 0, seq, &code.to_ne_bytes())
    }

    /// NLMSG_ERROR: the code, then (as the kernel does) the request's header.
    fn error(seq: u32, code: i32) -> Vec<u8> {
        let mut p = code.to_ne_bytes().to_vec();
        p.extend_from_slice(&frame(18, NLM_F_REQUEST, seq, &[])[..HEADER_LEN]);
        frame(NLMSG_ERROR, 0, seq, &p)
    }

    /// Walks `buf` for `SEQ`, returning the result and the frames handed to the callback.
    fn run(buf: &[u8]) -> (Walk, Vec<Vec<u8>>) {
        let mut seen = Vec::new();
        let w = walk(buf, SEQ, |f| seen.push(f.to_vec()));
        (w, seen)
    }

    fn errno(w: Walk) -> Option<i32> {
        match w {
            Walk::Err(e) => e.raw_os_error(),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn dump_of_two_frames_then_done() {
        let (a, b) = (data(SEQ, b"link"), data(SEQ, b"eth0"));
        let buf = [a.clone(), b.clone(), done(SEQ, 0)].concat();
        let (w, seen) = run(&buf);
        assert!(matches!(w, Walk::Done { interrupted: false }), "{w:?}");
        assert_eq!(seen, vec![a, b]);
    }

    #[test]
    fn frames_without_done_continue() {
        let a = data(SEQ, b"link");
        let (w, seen) = run(&a);
        assert!(matches!(w, Walk::Continue { interrupted: false }), "{w:?}");
        assert_eq!(seen, vec![a]);
    }

    #[test]
    fn done_without_status_word_is_success() {
        let buf = frame(NLMSG_DONE, 0, SEQ, &[]);
        assert!(matches!(run(&buf).0, Walk::Done { interrupted: false }));
    }

    #[test]
    fn other_sequence_numbers_are_skipped() {
        let mine = data(SEQ, b"mine");
        let buf = [
            data(SEQ - 1, b"old!"),
            // A stale DONE or error must neither end nor fail this exchange.
            done(SEQ - 1, 0),
            error(SEQ + 1, -libc::EPERM),
            mine.clone(),
            done(SEQ, 0),
        ]
        .concat();
        let (w, seen) = run(&buf);
        assert!(matches!(w, Walk::Done { interrupted: false }), "{w:?}");
        assert_eq!(seen, vec![mine]);
    }

    #[test]
    fn dump_intr_is_reported() {
        let intr = frame(16, NLM_F_DUMP_INTR, SEQ, b"link");
        let (w, seen) = run(&[intr.clone(), done(SEQ, 0)].concat());
        assert!(matches!(w, Walk::Done { interrupted: true }), "{w:?}");
        assert_eq!(seen, vec![intr.clone()]);
        // Also when the DONE comes in a later datagram.
        assert!(matches!(run(&intr).0, Walk::Continue { interrupted: true }));
        // Not from a frame of another exchange.
        let other = frame(16, NLM_F_DUMP_INTR, SEQ + 1, b"link");
        let (w, _) = run(&[other, done(SEQ, 0)].concat());
        assert!(matches!(w, Walk::Done { interrupted: false }), "{w:?}");
    }

    #[test]
    fn done_with_negative_status_is_that_error() {
        let buf = [data(SEQ, b"link"), done(SEQ, -libc::EMSGSIZE)].concat();
        assert_eq!(errno(run(&buf).0), Some(libc::EMSGSIZE));
        assert_eq!(errno(run(&done(SEQ, -libc::EINTR)).0), Some(libc::EINTR));
        // An absurd status must not overflow on negation.
        assert_eq!(errno(run(&done(SEQ, i32::MIN)).0), Some(i32::MAX));
    }

    #[test]
    fn error_zero_is_an_ack() {
        let (w, seen) = run(&[error(SEQ, 0), data(SEQ, b"late")].concat());
        assert!(matches!(w, Walk::Done { interrupted: false }), "{w:?}");
        assert!(seen.is_empty());
    }

    #[test]
    fn request_answer_then_ack() {
        let answer = data(SEQ, b"nsid");
        let (w, seen) = run(&[answer.clone(), error(SEQ, 0)].concat());
        assert!(matches!(w, Walk::Done { interrupted: false }), "{w:?}");
        assert_eq!(seen, vec![answer]);
    }

    #[test]
    fn error_code_is_a_positive_os_error() {
        let e = match run(&error(SEQ, -libc::ENODEV)).0 {
            Walk::Err(e) => e,
            other => panic!("expected an error, got {other:?}"),
        };
        assert_eq!(e.raw_os_error(), Some(libc::ENODEV));
        assert_eq!(e.kind(), io::Error::from_raw_os_error(libc::ENODEV).kind());
    }

    #[test]
    fn truncated_error_is_invalid_data() {
        // Length field 18: the header and half of the error code.
        for short in [&[][..], &[0xff, 0xff][..]] {
            match run(&frame(NLMSG_ERROR, 0, SEQ, short)).0 {
                Walk::Err(e) => assert_eq!(e.kind(), io::ErrorKind::InvalidData),
                other => panic!("expected InvalidData, got {other:?}"),
            }
        }
    }

    #[test]
    fn noop_and_overrun_are_ignored() {
        let a = data(SEQ, b"link");
        let buf = [
            frame(NLMSG_NOOP, 0, SEQ, &[]),
            a.clone(),
            frame(NLMSG_OVERRUN, 0, SEQ, b"xx"),
        ]
        .concat();
        let (w, seen) = run(&buf);
        assert!(matches!(w, Walk::Continue { interrupted: false }), "{w:?}");
        assert_eq!(seen, vec![a]);
    }

    #[test]
    fn bad_length_fields_stop_the_walk() {
        let a = data(SEQ, b"link");
        for bad_len in [0u32, 4, 15, 1 << 20, u32::MAX] {
            let mut bad = done(SEQ, 0);
            bad[..4].copy_from_slice(&bad_len.to_ne_bytes());
            // Nothing after the bad frame is read: not even a DONE.
            let buf = [a.clone(), bad, done(SEQ, 0)].concat();
            let (w, seen) = run(&buf);
            assert!(
                matches!(w, Walk::Continue { interrupted: false }),
                "{bad_len}: {w:?}"
            );
            assert_eq!(seen, vec![a.clone()], "{bad_len}");
        }
        // Too short for a header, or empty.
        for buf in [&a[..3], &a[..15], &[][..]] {
            let (w, seen) = run(buf);
            assert!(matches!(w, Walk::Continue { interrupted: false }), "{w:?}");
            assert!(seen.is_empty());
        }
    }

    #[test]
    fn frames_are_found_after_alignment_padding() {
        // Payloads of 1, 3 and 6 bytes: frames of 17, 19 and 22 bytes, padded to 20, 20, 24.
        let frames = [data(SEQ, b"a"), data(SEQ, b"bcd"), data(SEQ, b"efghij")];
        assert_eq!(
            frames.iter().map(Vec::len).collect::<Vec<_>>(),
            [20, 20, 24]
        );
        let (w, seen) = run(&[frames.concat(), done(SEQ, 0)].concat());
        assert!(matches!(w, Walk::Done { interrupted: false }), "{w:?}");
        // Each frame is handed over at its own length, without the padding.
        let payloads: Vec<&[u8]> = seen.iter().map(|f| &f[HEADER_LEN..]).collect();
        assert_eq!(payloads, [&b"a"[..], b"bcd", b"efghij"]);
        // The last frame's padding may be missing from the datagram.
        let last = data(SEQ, b"a");
        let (w, seen) = run(&last[..17]);
        assert!(matches!(w, Walk::Continue { interrupted: false }), "{w:?}");
        assert_eq!(seen, vec![last[..17].to_vec()]);
    }
}
