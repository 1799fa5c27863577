//! What the session does with each side's bytes (src/client/session/forward.rs), without sockets: the
//! client's messages through the frame scanner, the prepared-statement rewriting and the tracker; the
//! server's replies through the scanner, the reply queue and the tracker. Shared by the `frontend` and
//! `backend` targets, which check what must hold whatever the peers send.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bytes::{Bytes, BytesMut};
use client::prepared::{Edit, Statements};
use pgsluice::protocol::frame::{FrameScanner, Header, MAX_MESSAGE_LEN};
use pgsluice::protocol::messages::TxStatus;
use pgsluice::protocol::{ProtocolError, Scan};
use pgsluice::server::ServerModel;
use pgsluice::server::replies::{Outcome, PlanChanged};

/// src/client/prepared.rs itself (and its submodules). `client::prepared` is private to pgsluice, so
/// the targets compile the file against pgsluice's public modules: each target's root imports
/// `protocol`, `server` and `stats` from pgsluice, where the file's `crate::` paths find them.
#[path = "../../src/client"]
pub mod client {
    #[allow(dead_code, clippy::all)]
    pub mod prepared;
}

/// The message types a frontend may send once logged in (as `messages::is_frontend_type`).
fn is_frontend_type(tag: u8) -> bool {
    matches!(tag, b'Q' | b'P' | b'B' | b'E' | b'D' | b'C' | b'S' | b'H' | b'F' | b'd' | b'c' | b'f' | b'X')
}

/// The options byte at the front of an input: bits 0-2 `max_prepared_statements` (0 = rewriting off),
/// bit 3 a small `max_packet_size`.
pub struct Options {
    pub max_prepared: usize,
    pub max_len: usize,
}

impl Options {
    pub fn from_byte(b: u8) -> Options {
        let max_len = if b & 8 != 0 { 64 } else { MAX_MESSAGE_LEN };
        Options { max_prepared: usize::from(b & 7), max_len }
    }
}

/// Chunk sizes from a seed byte: xorshift, 1..=64 bytes, and now and then everything left.
pub struct Chunks(u32);

impl Chunks {
    pub fn new(seed: u8) -> Chunks {
        Chunks(u32::from(seed).wrapping_mul(0x9e37_79b9) | 1)
    }

    pub fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }

    pub fn next_len(&mut self, left: usize) -> usize {
        let r = self.next_u32();
        if r.is_multiple_of(16) { left } else { (1 + (r >> 4) as usize % 64).min(left) }
    }
}

/// One server connection as the session sees it, and the client attached to it.
pub struct Session {
    pub stmts: Statements,
    pub server: ServerModel,
    client_scanner: FrameScanner,
    server_scanner: FrameScanner,
    /// Client bytes read and not yet forwarded.
    cbuf: Vec<u8>,
    /// Server bytes read and not yet forwarded.
    rbuf: Vec<u8>,
    extra: BytesMut,
    pub client_in: usize,
    pub client_forwarded: usize,
    pub server_in: usize,
    pub server_forwarded: usize,
    /// A scanner refused the stream (the session closes the connection): nothing more is read.
    pub closed: Option<ProtocolError>,
    /// Bytes still to come of a client message that is dropped as it streams in.
    discarding: usize,
}

impl Session {
    pub fn new(opts: &Options) -> Session {
        Session {
            stmts: Statements::new(opts.max_prepared, Arc::new(AtomicU64::new(7))),
            server: ServerModel::default(),
            client_scanner: FrameScanner::new(opts.max_len),
            server_scanner: FrameScanner::new(opts.max_len),
            cbuf: Vec::new(),
            rbuf: Vec::new(),
            extra: BytesMut::new(),
            client_in: 0,
            client_forwarded: 0,
            server_in: 0,
            server_forwarded: 0,
            closed: None,
            discarding: 0,
        }
    }

    /// Client bytes arrive; forwards what `forward_client` would.
    pub fn client_sends(&mut self, chunk: &[u8]) {
        if self.closed.is_some() {
            return;
        }
        self.client_in += chunk.len();
        self.cbuf.extend_from_slice(chunk);
        loop {
            let dropped = self.discarding.min(self.cbuf.len());
            self.cbuf.drain(..dropped);
            self.client_forwarded += dropped; // consumed, though never sent
            self.discarding -= dropped;
            if self.discarding > 0 || self.closed.is_some() {
                return;
            }
            self.discarding = self.client_pass();
            if self.discarding == 0 {
                return;
            }
        }
    }

    /// One scan of the client's bytes; returns the size of a message to drop as it streams in (0 = none).
    fn client_pass(&mut self) -> usize {
        let rewrite = self.stmts.enabled();
        self.extra.clear();
        let (stmts, extra, cbuf) = (&mut self.stmts, &mut self.extra, &self.cbuf);
        let side = &mut self.server;
        let (mut discard, mut invalid) = (0, false);
        let scanned = self.client_scanner.scan(
            cbuf,
            |t| rewrite && Statements::wants_body(t),
            |h: Header<'_>| {
                assert!(h.offset + 5 <= cbuf.len(), "header past the buffer");
                if let Some(b) = h.body {
                    assert_eq!(b.len() + 4, h.len);
                    assert!(h.offset + 1 + h.len <= cbuf.len(), "held body past the buffer");
                }
                if h.tag == b'X' {
                    return Scan::StopBefore;
                }
                if !is_frontend_type(h.tag) {
                    invalid = true; // FATAL 08P01 from pgsluice; the server never sees it
                    return Scan::StopBefore;
                }
                let edit = if rewrite { stmts.rewrite(&h, side, extra) } else { Edit::Keep };
                match edit {
                    Edit::Keep => side.tracker.on_client(h.tag),
                    Edit::HoldWhole => {
                        assert!(h.body.is_none(), "HoldWhole for a message already whole");
                        return Scan::HoldWhole;
                    }
                    Edit::ReplaceHead { drop, with } => {
                        assert!(drop <= 1 + h.len && h.offset + drop <= cbuf.len(), "head past the message");
                        assert!(with.start <= with.end && with.end <= extra.len(), "bad range");
                        side.tracker.on_client(h.tag);
                    }
                    Edit::Replace(r) => {
                        assert!(r.start <= r.end && r.end <= extra.len(), "bad range");
                        if !r.is_empty() {
                            side.tracker.on_client(h.tag);
                        }
                        if h.body.is_none() {
                            // Seen by its prefix only: dropped as it streams in, never buffered whole.
                            discard = 1 + h.len;
                            return Scan::StopBefore;
                        }
                    }
                }
                Scan::Continue
            },
        );
        self.after_scan(scanned, true);
        if invalid {
            self.closed = Some(ProtocolError::UnexpectedMessage(0));
        }
        if rewrite {
            self.server.replies.take_due(&mut |_| {});
        }
        discard
    }

    /// Server bytes arrive; forwards what `forward_server` would.
    pub fn server_sends(&mut self, chunk: &[u8]) {
        if self.closed.is_some() {
            return;
        }
        self.server_in += chunk.len();
        self.rbuf.extend_from_slice(chunk);
        let rewrite = self.stmts.enabled();
        let mut effects = Outcome::default();
        let mut retry = None;
        let mut went_stale = Vec::new();
        let (stmts, rbuf) = (&self.stmts, &self.rbuf);
        let ServerModel { tracker, replies, .. } = &mut self.server;
        let scanned = self.server_scanner.scan(
            rbuf,
            |t| {
                matches!(t, b'Z' | b'S' | b'E' | b'A')
                    || (rewrite && matches!(t, b'1' | b'2' | b'3' | b'C' | b'n' | b'T' | b'I' | b's'))
            },
            |h: Header<'_>| {
                let mut plan_changed = None;
                if rewrite {
                    let (_verdict, mut outcome) = replies.on_server(h.tag, h.body, &mut |_| {});
                    plan_changed = outcome.plan_changed.take();
                    effects.merge(outcome);
                    replies.take_due(&mut |_| {});
                }
                match (h.tag, h.body) {
                    (b'E', Some(_)) => tracker.on_error(),
                    (b'G', _) => {
                        tracker.on_copy_in();
                        replies.on_copy_in();
                    }
                    (b'Z', Some(body)) => {
                        let status = body.first().copied().and_then(TxStatus::from_byte).unwrap_or(TxStatus::Failed);
                        tracker.on_ready(status);
                        if let Some(pc) = plan_changed {
                            if status == TxStatus::Idle && replies.is_empty() && stmts.can_retry(&pc) {
                                retry = Some(pc.server_name);
                                return Scan::StopAfter;
                            }
                            went_stale.push(pc);
                        }
                        if tracker.is_clean() {
                            return Scan::StopAfter; // released (and, here, leased again at once)
                        }
                    }
                    _ => {}
                }
                Scan::Continue
            },
        );
        self.apply(effects, went_stale, retry);
        self.after_scan(scanned, false);
    }

    fn apply(&mut self, mut effects: Outcome, went_stale: Vec<PlanChanged>, retry: Option<Bytes>) {
        let side = &mut self.server;
        self.stmts.apply(&mut effects, side);
        for p in &went_stale {
            self.stmts.plan_went_stale(p);
        }
        if let Some(name) = retry {
            self.extra.clear();
            self.stmts.retry(&name, side, &mut self.extra);
        }
        if self.server.is_clean() {
            self.stmts.on_new_server();
        }
    }

    fn after_scan(&mut self, scanned: Result<usize, ProtocolError>, client: bool) {
        let (buf, forwarded) = if client {
            (&mut self.cbuf, &mut self.client_forwarded)
        } else {
            (&mut self.rbuf, &mut self.server_forwarded)
        };
        match scanned {
            Ok(n) => {
                assert!(n <= buf.len(), "forwarded {n} of {} buffered", buf.len());
                buf.drain(..n);
                *forwarded += n;
            }
            Err(e) => self.closed = Some(e),
        }
    }
}
