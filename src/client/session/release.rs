//! Handing a server back: closed when either side is mid-message, unlinked from its client in SHOW
//! SERVERS, and held back while cancel requests for it are in flight.

use std::sync::Arc;
use std::time::Duration;

use super::ServerLease;
use crate::cancel::{CancelTarget, send_cancel};
use crate::pool::Poolable;
use crate::protocol::frame::FrameScanner;
use crate::server::CloseReason;

/// A server may change hands only at a whole-message boundary on both sides: with a client message
/// partly forwarded (PostgreSQL would read the next client's bytes as its rest) or a server message partly
/// passed on, it is closed instead.
pub(super) fn close_if_mid_message(lease: &mut ServerLease, client_mid_message: bool, server: &FrameScanner) {
    if (client_mid_message || server.mid_message())
        && let Some(conn) = lease.conn()
    {
        conn.close_after(CloseReason::MidMessage);
    }
}

/// The client left (or was killed) while its query runs silently on the server: a sleep, a lock wait, a
/// long sort. Closing the socket alone would leave that backend working until the query ends (PostgreSQL
/// notices a closed client only when it writes), so the query is canceled first, in the background and
/// bounded by `cancel_wait`; the server is closed, not pooled. A server already sending is left alone:
/// its next write fails once the socket is closed.
pub(super) fn cancel_if_running(lease: &mut ServerLease, cancel_wait: Duration) {
    let Some(conn) = lease.conn() else { return };
    if conn.is_quiet() || !conn.is_alive() {
        return;
    }
    conn.close_after(CloseReason::ClientGone);
    let target = CancelTarget::of(conn);
    let in_flight = target.in_flight.start();
    let wait = if cancel_wait.is_zero() { Duration::from_secs(10) } else { cancel_wait };
    tokio::spawn(send_cancel(target, in_flight, wait));
}

/// Marks the lease's server as back in the pool in SHOW SERVERS.
pub(super) fn unlink(lease: &mut ServerLease) {
    if let Some(conn) = lease.conn() {
        conn.unlink();
    }
}

/// Returns a server to the pool, unless a cancel request for it is still in flight: then it waits
/// (bounded by cancel_wait_timeout) until the server has acted on it, so the cancel cannot hit the next
/// client's query; a cancel that never settles closes the server.
pub(super) fn release_when_settled(lease: ServerLease, cancel_wait: Duration, stats: &Arc<crate::stats::PoolStats>) {
    let Some(in_flight) = lease.conn_ref().map(|c| c.cancels().clone()).filter(|c| c.busy()) else {
        lease.release();
        return;
    };
    let limit = if cancel_wait.is_zero() { Duration::from_secs(10) } else { cancel_wait };
    let stats = stats.clone();
    stats.being_canceled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tokio::spawn(async move {
        if tokio::time::timeout(limit, in_flight.settled()).await.is_ok() {
            lease.release();
        } else {
            drop(lease); // closed
        }
        stats.being_canceled.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    });
}
