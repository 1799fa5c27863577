//! The session's buffers: idle clients' read buffers lent to a per-thread spare list, and the queue of
//! client bytes the server's socket did not take at once.

use bytes::BytesMut;

use crate::client::ClientError;
use crate::server::{CloseReason, ServerConn};
use crate::transport::buffers::READ_CHUNK;
pub(super) use crate::transport::buffers::{ensure_room, shrink};

/// Read buffers idle clients handed back, per worker thread, for the next client that wakes.
const SPARE_PER_THREAD: usize = 64;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<BytesMut>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An idle client with nothing buffered gives its read buffer's storage to this thread's spares (or
/// back to the allocator past `SPARE_PER_THREAD`): thousands of idle clients then hold none.
pub(super) fn park(buf: &mut BytesMut) {
    if buf.capacity() == 0 {
        return;
    }
    let storage = std::mem::take(buf);
    if storage.capacity() <= 4 * READ_CHUNK {
        SPARE.with_borrow_mut(|s| {
            if s.len() < SPARE_PER_THREAD {
                s.push(storage);
            }
        });
    }
}

/// A client that woke takes a spare buffer (no allocation in steady state) or a new one.
pub(super) fn unpark(buf: &mut BytesMut) {
    if buf.capacity() == 0
        && let Some(mut spare) = SPARE.with_borrow_mut(Vec::pop)
    {
        spare.clear();
        *buf = spare;
    }
}

/// Client bytes waiting for the server beyond which the client is no longer read.
pub(super) const MAX_TO_SERVER: usize = 256 * 1024;

/// Sends client bytes to the server without waiting: what its socket does not take now is queued in
/// `to_server`, behind anything already there (see `Session::to_server`).
pub(super) fn send_to_server(conn: &mut ServerConn, to_server: &mut BytesMut, bytes: &[u8]) -> Result<(), ClientError> {
    let mut sent = 0;
    if to_server.is_empty() {
        match conn.try_send(bytes) {
            Ok(n) => sent = n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                conn.close_after(CloseReason::Lost);
                return Err(ClientError::ServerLost(e.to_string()));
            }
        }
    }
    to_server.extend_from_slice(bytes.get(sent..).unwrap_or_default());
    Ok(())
}
