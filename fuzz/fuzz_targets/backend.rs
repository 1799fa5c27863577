//! A client and a server talking through the session in an arbitrary interleaving of chunks: the
//! client's messages rewritten and tracked, the server's replies (a hostile server's included) through
//! the frame scanner, the reply queue (`on_server`, `take_due`, what an error takes back, stale plans and
//! their replay) and the tracker. Nothing may panic, and nothing is forwarded that did not come in.
//!
//! Input: an options byte (see `model::Options`), an interleaving seed, the client stream's length
//! (2 bytes, big-endian), the client's bytes, then the server's bytes.
#![no_main]

#[path = "model.rs"]
mod model;

// For src/client/prepared.rs, compiled into `model` (see there).
#[allow(unused_imports)]
use pgsluice::{protocol, server, stats};

use libfuzzer_sys::fuzz_target;
use model::{Chunks, Options, Session};

fuzz_target!(|data: &[u8]| {
    let [opts, seed, hi, lo, streams @ ..] = data else {
        return;
    };
    let opts = Options::from_byte(*opts);
    let split = usize::from(u16::from_be_bytes([*hi, *lo])).min(streams.len());
    let (mut client, mut server) = streams.split_at(split);
    let mut session = Session::new(&opts);
    let mut chunks = Chunks::new(*seed);
    while (!client.is_empty() || !server.is_empty()) && session.closed.is_none() {
        let to_server = server.is_empty() || (!client.is_empty() && chunks.next_u32() & 1 == 0);
        let from = if to_server { &mut client } else { &mut server };
        let n = chunks.next_len(from.len());
        let (chunk, rest) = from.split_at(n);
        *from = rest;
        if to_server { session.client_sends(chunk) } else { session.server_sends(chunk) }
    }
    assert!(session.client_forwarded <= session.client_in);
    assert!(session.server_forwarded <= session.server_in);
});
