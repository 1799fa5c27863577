//! The session's buffers: room for reads, giving back what grew for one large message, and the queue of
//! client bytes the server's socket did not take at once.

use bytes::BytesMut;

use crate::client::ClientError;
use crate::server::ServerConn;

/// Size of one socket read.
const READ_CHUNK: usize = 16 * 1024;

/// Makes room for a full-sized read. `reserve` reuses the buffer's own storage once what was read
/// has been forwarded, so this does not allocate in steady state. A buffer that grew for one large
/// message is given back once it is mostly empty.
pub(super) fn ensure_room(buf: &mut BytesMut) {
    shrink(buf);
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
}

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

/// Buffers above this capacity are reallocated small once what they hold fits in a read chunk.
const SHRINK_ABOVE: usize = 256 * 1024;

pub(super) fn shrink(buf: &mut BytesMut) {
    if buf.capacity() > SHRINK_ABOVE && buf.len() <= READ_CHUNK {
        let mut small = BytesMut::with_capacity(READ_CHUNK.max(buf.len()));
        small.extend_from_slice(buf);
        *buf = small;
    }
}

/// Client bytes waiting for the server beyond which the client is no longer read.
pub(super) const MAX_TO_SERVER: usize = 256 * 1024;

/// Sends client bytes to the server without waiting: what its socket does not take now is queued in
/// `to_server`, behind anything already there (see `Session::to_server`).
pub(super) fn send_to_server(conn: &mut ServerConn, to_server: &mut BytesMut, bytes: &[u8]) -> Result<(), ClientError> {
    let mut sent = 0;
    if to_server.is_empty() {
        match conn.stream.try_write(bytes) {
            Ok(n) => sent = n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                conn.broken = true;
                return Err(ClientError::ServerLost(e.to_string()));
            }
        }
    }
    to_server.extend_from_slice(bytes.get(sent..).unwrap_or_default());
    Ok(())
}
