//! Server connection pools, generic over how a connection is made (`Connect`) and what it is (`Poolable`).
//! Knows nothing of sockets or the wire protocol: `server/` provides the implementations.
//! Imports: config (for `PoolSettings`), crates.

mod limits;
#[allow(clippy::module_inception)]
mod pool;

use std::future::Future;
use std::sync::Arc;

use tokio::time::Instant;

pub use limits::{Limits, SharedLimit};
pub use pool::{Pool, PoolCounts};

/// Makes new server connections for one pool.
pub trait Connect: Send + Sync + 'static {
    type Conn: Poolable;
    type Error: std::error::Error + Clone + Send + Sync + 'static;
    fn connect(&self) -> impl Future<Output = Result<Self::Conn, Self::Error>> + Send;
    /// Whether this failure holds off new connects for `server_login_retry` (clients fail fast with it
    /// meanwhile). Yes unless the failure was local and says nothing about the server.
    fn holds_off(&self, _e: &Self::Error) -> bool {
        true
    }
    /// Whether a client that needs a server waits through this failure, retried every
    /// `server_login_retry` until its `query_wait_timeout` (the server is away: restarting, refusing
    /// connections), rather than getting it at once (the server refused this login for good).
    fn waits_out(&self, _e: &Self::Error) -> bool {
        false
    }
    /// The pool's name in log lines (`db/user`).
    fn name(&self) -> String {
        String::new()
    }
}

/// A pooled connection.
pub trait Poolable: Send + 'static {
    /// Provably clean: idle, nothing outstanding. Only such connections go back to the pool.
    fn is_reusable(&self) -> bool;
    /// Non-blocking probe of an idle connection: false when the peer closed it or sent anything.
    fn is_alive(&mut self) -> bool;
    /// Runs `server_check_query`; false when the connection is unusable.
    fn check(&mut self) -> impl Future<Output = bool> + Send;
}

/// Why an acquire failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PoolError<E: std::error::Error + 'static> {
    #[error("timed out waiting for a server connection after {waited:?}")]
    WaitTimeout { waited: std::time::Duration },
    #[error("server connection failed: {0}")]
    Connect(#[source] E),
    #[error("server connect timed out after {0:?} (server_connect_timeout)")]
    ConnectTimeout(std::time::Duration),
    #[error("server login failed recently, not retrying yet: {0}")]
    LoginRetry(#[source] E),
    #[error("pool is closed")]
    Closed,
}

/// A checked-out connection. `release` returns it if it is clean; dropping it closes the connection,
/// so a panic, a vanished client or an early `?` can never put a dirty server back.
pub struct Lease<C: Connect> {
    /// Boxed: a connection is large and moves through the pool several times per transaction.
    conn: Option<Box<C::Conn>>,
    created: Instant,
    pool: Arc<Pool<C>>,
}

impl<C: Connect> Lease<C> {
    pub fn conn(&mut self) -> Option<&mut C::Conn> {
        self.conn.as_deref_mut()
    }
    pub fn conn_ref(&self) -> Option<&C::Conn> {
        self.conn.as_deref()
    }
    pub fn pool(&self) -> &Arc<Pool<C>> {
        &self.pool
    }
    /// Returns the connection to the pool when it is reusable, closes it otherwise.
    pub fn release(mut self) {
        if let Some(conn) = self.conn.take() {
            if conn.is_reusable() {
                self.pool.release(conn, self.created);
            } else {
                self.pool.close_at(conn, self.created);
            }
        }
    }
}

impl<C: Connect> Drop for Lease<C> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.close_at(conn, self.created);
        }
    }
}

#[cfg(test)]
mod tests;
