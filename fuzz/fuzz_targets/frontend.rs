//! A client's byte stream after login, read in arbitrary chunks: the frame scanner's invariants (the
//! same frames and the same forwarded total whatever the chunking, never more than what came in; the
//! login path's `whole_message` agrees with it), then the session's handling of each message (prepared
//! statement rewriting, the tracker) with checks on every edit it asks for.
//!
//! Input: an options byte (see `model::Options`), a chunking seed, then the client's bytes.
#![no_main]

#[path = "model.rs"]
mod model;

// For src/client/prepared.rs, compiled into `model` (see there).
#[allow(unused_imports)]
use pgsluice::{protocol, server, stats};

use libfuzzer_sys::fuzz_target;
use model::{Chunks, Options, Session};
use pgsluice::protocol::Scan;
use pgsluice::protocol::frame::{FrameScanner, MAX_READ_BODY, whole_message};

/// (tag, length, body when held) per message, and the bytes forwarded (or the error).
type Seen = (Vec<(u8, usize, Option<Vec<u8>>)>, Result<usize, ()>);

/// Scans `wire` delivered in chunks (`None`: all at once), as a session's read loop does.
fn scan_in_chunks(wire: &[u8], max_len: usize, wants: impl Fn(u8) -> bool, mut chunks: Option<Chunks>) -> Seen {
    let mut scanner = FrameScanner::new(max_len);
    let (mut buf, mut seen, mut forwarded) = (Vec::new(), Vec::new(), 0usize);
    let mut rest = wire;
    loop {
        let n = chunks.as_mut().map_or(rest.len(), |c| c.next_len(rest.len()));
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        let scanned = scanner.scan(&buf, &wants, |h| {
            seen.push((h.tag, h.len, h.body.map(<[u8]>::to_vec)));
            Scan::Continue
        });
        let Ok(n) = scanned else {
            return (seen, Err(()));
        };
        assert!(n <= buf.len(), "forwarded {n} of {} buffered", buf.len());
        buf.drain(..n);
        forwarded += n;
        if rest.is_empty() {
            assert!(forwarded <= wire.len());
            return (seen, Ok(forwarded));
        }
    }
}

fn scanner_is_split_invariant(wire: &[u8], max_len: usize, seed: u8) {
    let wants = |t: u8| matches!(t, b'P' | b'B' | b'Z' | b'E') || t == seed;
    let whole = scan_in_chunks(wire, max_len, wants, None);
    let chunked = scan_in_chunks(wire, max_len, wants, Some(Chunks::new(seed)));
    assert_eq!(whole, chunked, "chunking changed what was seen or forwarded");
}

/// The login path reads whole messages; the scanner, asked for every body, must see the same ones.
fn whole_message_agrees(wire: &[u8], max_len: usize) {
    let mut read = Vec::new();
    let mut rest = wire;
    while let Ok(Some((tag, body, n))) = whole_message(rest, max_len) {
        assert_eq!(n, body.len() + 5);
        read.push((tag, body.len() + 4, Some(body.to_vec())));
        rest = &rest[n..];
    }
    let (seen, _) = scan_in_chunks(wire, max_len, |_| true, None);
    // Bodies up to MAX_READ_BODY are held whole; a bigger one is streamed, and the comparison ends there.
    let held = seen.iter().take_while(|(_, len, _)| len - 4 <= MAX_READ_BODY).count();
    let n = read.len().min(held);
    assert_eq!(read[..n], seen[..n], "whole_message and the scanner disagree");
    if read.iter().all(|(_, len, _)| len - 4 <= MAX_READ_BODY) {
        assert!(read.len() <= held, "whole_message read a message the scanner never saw");
    }
}

fuzz_target!(|data: &[u8]| {
    let [opts, seed, wire @ ..] = data else {
        return;
    };
    let opts = Options::from_byte(*opts);
    scanner_is_split_invariant(wire, opts.max_len, *seed);
    whole_message_agrees(wire, opts.max_len);
    let mut session = Session::new(&opts);
    let mut chunks = Chunks::new(*seed);
    let mut rest = wire;
    while !rest.is_empty() && session.closed.is_none() {
        let n = chunks.next_len(rest.len());
        session.client_sends(&rest[..n]);
        rest = &rest[n..];
    }
    assert!(session.client_forwarded <= session.client_in);
});
