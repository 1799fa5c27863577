//! Waiting for a server: the client is still read meanwhile (one that leaves stops waiting), RELOAD's new
//! pool or settings are picked up, and a wait that times out answers the pending request with the error
//! as PostgreSQL answers a failed one.

use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use super::{MAX_PENDING_CLIENT_BYTES, ServerLease, Session};
use crate::client::ClientError;
use crate::protocol::messages::{self, TxStatus};
use crate::protocol::tags::frontend;
use crate::protocol::{PgError, Scan};
use crate::stats::clients::ClientState;

#[allow(clippy::large_enum_variant)]
pub(super) enum Acquired {
    Lease(ServerLease),
    ClientGone,
    /// The wait timed out; the client got an error and stays connected.
    Rejected,
}

impl Session {
    /// Waits for a server while still watching the client (a client that leaves stops waiting).
    pub(super) async fn acquire(&mut self) -> Result<Acquired, ClientError> {
        let entry = self.login.registered.entry.clone();
        entry.set_state(ClientState::Waiting, 0);
        // RELOAD rebuilt the pool (its server changed): move to the new one.
        let mut moved = false;
        while let Some(next) = self.login.pool.successor.get().cloned() {
            self.login.pool.stats.clients.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            next.stats.clients.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.login.pool = next;
            moved = true;
        }
        // RELOAD: new limits and timeouts apply from the next transaction on.
        let version = self.login.pool.settings_version();
        if moved || version != self.settings_version {
            self.settings = self.login.pool.settings();
            self.settings_version = version;
            self.session_state.set_policy(self.settings.session_state, self.settings.pool_mode);
        }
        let pool = self.login.pool.pool.clone();
        let started = Instant::now();
        let acquire = pool.acquire(self.settings.query_wait_timeout);
        tokio::pin!(acquire);
        let read_limit = MAX_PENDING_CLIENT_BYTES.max(self.client_scanner.held_len());
        let result = loop {
            tokio::select! {
                r = &mut acquire => break r,
                _ = &mut self.killed => return Err(ClientError::Killed),
                r = self.sock.read_buf(&mut self.cbuf), if self.cbuf.len() < read_limit => {
                    if r? == 0 {
                        return Ok(Acquired::ClientGone);
                    }
                }
            }
        };
        match result {
            Ok(lease) => {
                let waited = started.elapsed();
                self.counted.totals.server_assignment_count += 1;
                self.counted.totals.wait_time += waited.as_micros() as u64;
                self.counted.acquire_wait.observe(waited);
                Ok(Acquired::Lease(lease))
            }
            Err(e) => {
                let err = ClientError::from_pool(e, &format!("{}/{}", self.login.db, self.login.user));
                if !matches!(err, ClientError::QueryWaitTimeout { .. }) {
                    return Err(err);
                }
                if self.settings.log_pooler_errors {
                    tracing::warn!(db = %self.login.db, user = %self.login.user, "query_wait_timeout");
                }
                let stats = &self.login.pool.stats;
                stats.acquire_timeouts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                stats.count_error(err.to_pg().code.as_bytes());
                Ok(if self.reject_pending(&err.to_pg()).await? { Acquired::Rejected } else { Acquired::ClientGone })
            }
        }
    }

    /// Answers the pending request with `err` the way PostgreSQL answers a failed one: a simple Query is
    /// dropped and answered with ReadyForQuery; an extended-protocol batch is skipped through its Sync.
    /// Returns false if the client left meanwhile.
    async fn reject_pending(&mut self, err: &PgError) -> Result<bool, ClientError> {
        let mut out = BytesMut::new();
        err.encode(&mut out);
        self.sock.send(&out).await?;
        let simple = matches!(
            crate::protocol::frame::read_header(&self.cbuf),
            Some((frontend::QUERY | frontend::FUNCTION_CALL, _))
        );
        loop {
            let mut done = false;
            let mut invalid = None;
            let n = self.client_scanner.scan(
                &self.cbuf,
                |_| false,
                |h| match (done, simple, h.tag) {
                    (true, _, _) => Scan::StopBefore,
                    (_, _, tag) if !messages::is_frontend_type(tag) => {
                        invalid = Some(tag);
                        Scan::StopBefore
                    }
                    (false, true, _) | (false, false, frontend::SYNC) => {
                        done = true;
                        Scan::StopAfter
                    }
                    _ => Scan::Continue,
                },
            )?;
            self.cbuf.advance(n);
            if let Some(tag) = invalid {
                return Err(ClientError::Protocol(crate::protocol::ProtocolError::InvalidFrontendType(tag)));
            }
            if done && !self.client_scanner.mid_message() {
                break;
            }
            if !self.read_client().await? {
                return Ok(false);
            }
        }
        out.clear();
        messages::ready_for_query(&mut out, TxStatus::Idle);
        self.sock.send(&out).await?;
        Ok(true)
    }
}
