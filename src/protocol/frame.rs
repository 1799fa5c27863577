//! Splitting a byte stream of tagged messages (`tag, u32 length, body`) without copying it.
//!
//! The proxy forwards bytes in the chunks it read them in. `FrameScanner::scan` walks the frames in a
//! buffer, hands the caller each message header (and, for the few tags the caller needs to read, the whole
//! body as a slice of the buffer), and says how many leading bytes may be forwarded now. A message whose
//! body the caller does not need is never buffered whole: its bytes are forwarded as they arrive, so a
//! 1 GiB DataRow or CopyData streams through in read-sized chunks.

use super::error::ProtocolError;

/// PostgreSQL's own limit for any message (`PQ_LARGE_MESSAGE_LIMIT`, MaxAllocSize - 1).
pub const MAX_MESSAGE_LEN: usize = (1 << 30) - 1;
/// Largest body the scanner holds back to hand over whole; bigger messages are streamed.
pub const MAX_READ_BODY: usize = 256 * 1024;
/// For a wanted message too big to hold, how much of its body the caller sees first (enough for the
/// portal and statement names of a Bind or the name of a Parse).
pub const PREFIX_LEN: usize = 512;

/// What the caller wants to do after seeing a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// Keep scanning.
    Continue,
    /// Stop right after this message: the bytes up to and including it are forwardable.
    StopAfter,
    /// Stop right before this message: it stays in the buffer, unforwarded.
    StopBefore,
    /// (For a message seen by its prefix.) Stop before it and hand it over whole once it has arrived,
    /// however big: the caller must keep reading until `held_len` bytes are buffered.
    HoldWhole,
}

/// Frame-walking state that survives between reads: how much of a streamed message is still to come.
#[derive(Debug, Default, Clone)]
pub struct FrameScanner {
    /// Bytes of the current streamed (not held back) message not yet seen.
    streaming: usize,
    max_len: usize,
    /// Size of the message at the start of the next scan that the caller asked to see whole.
    hold_whole: usize,
}

/// One message header, with its body when the caller asked for it and it was small enough.
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    pub tag: u8,
    /// Length as on the wire (body plus the 4 length bytes).
    pub len: usize,
    /// Where the message starts in the scanned buffer.
    pub offset: usize,
    pub body: Option<&'a [u8]>,
    /// For a wanted message too big to hold: the first `PREFIX_LEN` bytes of its body (fewer only when
    /// the body is shorter).
    pub prefix: Option<&'a [u8]>,
}

impl FrameScanner {
    pub fn new(max_len: usize) -> Self {
        FrameScanner { streaming: 0, max_len: max_len.min(MAX_MESSAGE_LEN), hold_whole: 0 }
    }

    /// How many bytes must be buffered for the message the caller asked to see whole (0 = none).
    pub fn held_len(&self) -> usize {
        self.hold_whole
    }

    /// True while the tail of a streamed message is still expected.
    pub fn mid_message(&self) -> bool {
        self.streaming > 0
    }

    /// Walks `buf` from its start. `wants_body(tag)` says which messages must be seen whole; `on_msg` is
    /// called once per message header (for held-back messages, once the whole message is in `buf`).
    /// Returns how many leading bytes of `buf` are complete enough to forward.
    pub fn scan<W, F>(&mut self, buf: &[u8], wants_body: W, mut on_msg: F) -> Result<usize, ProtocolError>
    where
        W: Fn(u8) -> bool,
        F: FnMut(Header<'_>) -> Scan,
    {
        let mut pos = 0usize;
        loop {
            if self.streaming > 0 {
                let n = self.streaming.min(buf.len() - pos);
                pos += n;
                self.streaming -= n;
                if self.streaming > 0 {
                    return Ok(pos);
                }
            }
            let Some(rest) = buf.get(pos..) else {
                return Ok(pos);
            };
            let Some((tag, len)) = read_header(rest) else {
                return Ok(pos);
            };
            if len < 4 || len > self.max_len {
                return Err(ProtocolError::BadLength { tag, len });
            }
            let total = 1 + len;
            let wanted = wants_body(tag);
            let hold = (wanted && len - 4 <= MAX_READ_BODY) || (pos == 0 && self.hold_whole == total);
            let verdict = if hold {
                let Some(body) = rest.get(5..total) else {
                    return Ok(pos);
                };
                self.hold_whole = 0;
                on_msg(Header { tag, len, offset: pos, body: Some(body), prefix: None })
            } else if wanted {
                let Some(prefix) = rest.get(5..5 + PREFIX_LEN.min(len - 4)) else {
                    return Ok(pos);
                };
                on_msg(Header { tag, len, offset: pos, body: None, prefix: Some(prefix) })
            } else {
                on_msg(Header { tag, len, offset: pos, body: None, prefix: None })
            };
            match verdict {
                Scan::StopBefore => return Ok(pos),
                Scan::HoldWhole => {
                    self.hold_whole = total;
                    return Ok(pos);
                }
                Scan::Continue | Scan::StopAfter if hold => pos += total,
                Scan::Continue | Scan::StopAfter => self.streaming = total,
            }
            if verdict == Scan::StopAfter {
                if self.streaming > 0 {
                    let n = self.streaming.min(buf.len() - pos);
                    pos += n;
                    self.streaming -= n;
                }
                return Ok(pos);
            }
        }
    }
}

/// Reads a message header without consuming it; `None` when fewer than 5 bytes are there.
pub fn read_header(buf: &[u8]) -> Option<(u8, usize)> {
    let [tag, a, b, c, d, ..] = *buf else {
        return None;
    };
    Some((tag, u32::from_be_bytes([a, b, c, d]) as usize))
}

/// A whole message: tag, body, and how many bytes it took in the buffer.
pub type Whole<'a> = (u8, &'a [u8], usize);

/// The next whole message in `buf` (tag, body), with a length check; `None` when incomplete.
/// For contexts (login) where every message is read whole; `max_len` bounds what we hold.
pub fn whole_message(buf: &[u8], max_len: usize) -> Result<Option<Whole<'_>>, ProtocolError> {
    let Some((tag, len)) = read_header(buf) else {
        return Ok(None);
    };
    if len < 4 || len > max_len.min(MAX_MESSAGE_LEN) {
        return Err(ProtocolError::BadLength { tag, len });
    }
    Ok(buf.get(5..1 + len).map(|body| (tag, body, 1 + len)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::protocol::tags::{backend, frontend};

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    /// Feeds `wire` split at `cut` and collects (tag, body) and the total forwarded count.
    type Seen = Vec<(u8, Option<Vec<u8>>)>;

    fn run(wire: &[u8], cut: usize) -> (Seen, usize) {
        let mut sc = FrameScanner::new(MAX_MESSAGE_LEN);
        let mut buf = wire[..cut].to_vec();
        let mut seen = vec![];
        let mut fwd = 0;
        let mut rest = &wire[cut..];
        loop {
            let n = sc
                .scan(
                    &buf,
                    |t| t == backend::READY_FOR_QUERY,
                    |h| {
                        seen.push((h.tag, h.body.map(|b| b.to_vec())));
                        Scan::Continue
                    },
                )
                .unwrap();
            fwd += n;
            buf.drain(..n);
            if rest.is_empty() {
                break;
            }
            buf.extend_from_slice(rest);
            rest = &[];
        }
        (seen, fwd)
    }

    #[test]
    fn every_split_point_gives_the_same_frames() {
        let mut wire = msg(backend::DATA_ROW, &[7u8; 300]);
        wire.extend(msg(backend::READY_FOR_QUERY, b"I"));
        wire.extend(msg(backend::COMMAND_COMPLETE, b"SELECT 1\0"));
        let (whole, n) = run(&wire, wire.len());
        assert_eq!(n, wire.len());
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[1], (backend::READY_FOR_QUERY, Some(b"I".to_vec())));
        for cut in 0..wire.len() {
            let (seen, n) = run(&wire, cut);
            assert_eq!(n, wire.len(), "cut {cut}");
            assert_eq!(seen, whole, "cut {cut}");
        }
    }

    #[test]
    fn streamed_message_is_forwarded_before_it_is_complete() {
        let wire = msg(backend::DATA_ROW, &[1u8; 1000]);
        let mut sc = FrameScanner::new(MAX_MESSAGE_LEN);
        let n = sc.scan(&wire[..100], |_| false, |_| Scan::Continue).unwrap();
        assert_eq!(n, 100);
        assert!(sc.mid_message());
        let n = sc.scan(&wire[100..], |_| false, |_| Scan::Continue).unwrap();
        assert_eq!(n, 905);
        assert!(!sc.mid_message());
    }

    #[test]
    fn big_wanted_message_shows_a_prefix_and_can_be_held_whole() {
        let mut body = b"name\0".to_vec();
        body.resize(MAX_READ_BODY + 100, b'x');
        let wire = msg(frontend::PARSE, &body);
        let mut sc = FrameScanner::new(MAX_MESSAGE_LEN);
        let mut seen = None;
        let n = sc
            .scan(
                &wire[..5 + PREFIX_LEN],
                |_| true,
                |h| {
                    seen = h.prefix.map(|p| p.len());
                    Scan::HoldWhole
                },
            )
            .unwrap();
        assert_eq!((n, seen, sc.held_len()), (0, Some(PREFIX_LEN), wire.len()));
        assert_eq!(sc.scan(&wire[..1000], |_| true, |_| Scan::Continue).unwrap(), 0, "waits for all of it");
        let mut whole = 0;
        let n = sc
            .scan(
                &wire,
                |_| true,
                |h| {
                    whole = h.body.map_or(0, |b| b.len());
                    Scan::Continue
                },
            )
            .unwrap();
        assert_eq!((n, whole, sc.held_len()), (wire.len(), body.len(), 0));
    }

    #[test]
    fn bad_lengths_are_rejected_before_any_allocation() {
        for len in [0u32, 3, 0x8080_8080, 0x7fff_ffff] {
            let mut wire = vec![frontend::QUERY];
            wire.extend_from_slice(&len.to_be_bytes());
            let mut sc = FrameScanner::new(MAX_MESSAGE_LEN);
            assert!(sc.scan(&wire, |_| true, |_| Scan::Continue).is_err(), "len {len}");
        }
    }

    #[test]
    fn stop_before_and_after() {
        let mut wire = msg(frontend::QUERY, b"select 1\0");
        wire.extend(msg(frontend::TERMINATE, b""));
        let mut sc = FrameScanner::new(MAX_MESSAGE_LEN);
        let n = sc
            .scan(
                &wire,
                |_| false,
                |h| {
                    if h.tag == frontend::TERMINATE { Scan::StopBefore } else { Scan::Continue }
                },
            )
            .unwrap();
        assert_eq!(n, 14);
        let mut sc = FrameScanner::new(MAX_MESSAGE_LEN);
        let n = sc.scan(&wire, |_| false, |_| Scan::StopAfter).unwrap();
        assert_eq!(n, 14);
    }
}
