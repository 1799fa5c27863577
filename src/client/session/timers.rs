//! Client timeouts: query_timeout (cancel, then give up), idle_transaction_timeout, transaction_timeout
//! and client_idle_timeout, computed from the session's state.

use std::time::Duration;

use tokio::time::Instant;

use super::{Flow, Session, State};
use crate::cancel::CancelTarget;
use crate::client::ClientError;
use crate::server::CloseReason;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    Query,
    IdleTransaction,
    IdleTransactionWarn,
    Transaction,
    ClientIdle,
    /// Pinned to its server by session state and idle: pinned_idle_timeout.
    PinnedIdle,
    /// The server took none of the bytes queued for it for server_send_timeout.
    ServerSend,
}

impl Session {
    /// The next timeout that applies to an active client, if any.
    pub(super) fn next_deadline(&self) -> Option<(Instant, Timer)> {
        let State::Active(active) = &self.state else {
            return None;
        };
        let conn = active.lease.conn_ref()?;
        let s = &self.settings;
        let mut best: Option<(Instant, Timer)> = None;
        let mut consider = |d: Duration, from: Instant, t: Timer| {
            if !d.is_zero() && best.is_none_or(|(b, _)| from + d < b) {
                best = Some((from + d, t));
            }
        };
        if !self.to_server.is_empty() {
            consider(s.server_send_timeout, self.to_server_progress, Timer::ServerSend);
        }
        if let Some(started) = active.request_started {
            let wait = if active.cancel_sent { self.cancel_wait.max(Duration::from_secs(1)) } else { s.query_timeout };
            consider(wait, started, Timer::Query);
        }
        // Extended messages without a Sync, all answered, and the client silent: as idle in a transaction
        // (the server stays pinned until a Sync). Only known when replies are tracked (rewriting on).
        let (tracker, replies) = (&conn.model().tracker, &conn.model().replies);
        let idle_unsynced = self.stmts.enabled() && tracker.busy() && tracker.outstanding() == 0 && replies.is_empty();
        if tracker.in_transaction() || idle_unsynced {
            if !tracker.busy() || idle_unsynced {
                consider(s.idle_transaction_timeout, active.last_client_activity, Timer::IdleTransaction);
                if !active.leak_warned {
                    consider(s.idle_transaction_warn, active.last_client_activity, Timer::IdleTransactionWarn);
                }
            }
            consider(s.transaction_timeout, active.tx_started, Timer::Transaction);
        } else if !tracker.busy() {
            consider(s.client_idle_timeout, active.last_client_activity, Timer::ClientIdle);
            if self.session_state.pin().is_some() {
                consider(s.pinned_idle_timeout, active.last_client_activity, Timer::PinnedIdle);
                if !active.leak_warned {
                    consider(s.idle_transaction_warn, active.last_client_activity, Timer::IdleTransactionWarn);
                }
            }
        }
        best
    }

    pub(super) async fn on_timer(&mut self, timer: Timer) -> Result<Flow, ClientError> {
        match timer {
            Timer::Query => {
                let State::Active(active) = &mut self.state else {
                    return Ok(Flow::Continue);
                };
                if active.cancel_sent {
                    return Err(ClientError::QueryTimeout);
                }
                active.cancel_sent = true;
                active.request_started = Some(Instant::now());
                let target = active.lease.conn_ref().map(|c| (CancelTarget::of(c), c.cancels().start()));
                tracing::info!(db = %self.login.db, user = %self.login.user, "query_timeout: canceling the query");
                if let Some((t, in_flight)) = target {
                    // Not awaited here: the session keeps forwarding the server's answer meanwhile.
                    tokio::spawn(crate::cancel::send_cancel(t, in_flight, self.cancel_wait));
                }
                Ok(Flow::Continue)
            }
            Timer::IdleTransaction => Err(ClientError::IdleTransactionTimeout),
            Timer::IdleTransactionWarn => {
                let fingerprint = self.query_fingerprint();
                let State::Active(active) = &mut self.state else {
                    return Ok(Flow::Continue);
                };
                active.leak_warned = true;
                let e = &self.login.registered.entry;
                if let Some(pin) = self.session_state.pin()
                    && !active.lease.conn_ref().is_some_and(|c| c.tracker().in_transaction())
                {
                    tracing::warn!(
                        pool = %format!("{}/{}", self.login.db, self.login.user),
                        client = %e.addr,
                        application_name = %e.application_name,
                        idle_ms = active.last_client_activity.elapsed().as_millis() as u64,
                        pinned_by = pin.as_str(),
                        "client pinned to its server by session state, idle: suspected connection leak"
                    );
                    return Ok(Flow::Continue);
                }
                tracing::warn!(
                    pool = %format!("{}/{}", self.login.db, self.login.user),
                    client = %e.addr,
                    application_name = %e.application_name,
                    idle_in_transaction_ms = active.last_client_activity.elapsed().as_millis() as u64,
                    transaction_ms = active.tx_started.elapsed().as_millis() as u64,
                    query = %fingerprint,
                    "client idle in transaction: suspected connection leak"
                );
                Ok(Flow::Continue)
            }
            Timer::Transaction => Err(ClientError::TransactionTimeout),
            Timer::ClientIdle => Err(ClientError::ClientIdleTimeout),
            Timer::PinnedIdle => {
                let reason = self.session_state.pin().map_or("session state", |p| p.as_str());
                Err(ClientError::PinnedIdleTimeout(reason))
            }
            Timer::ServerSend => {
                if let State::Active(active) = &mut self.state
                    && let Some(conn) = active.lease.conn()
                {
                    conn.close_after(CloseReason::SendTimeout);
                }
                let waited = self.settings.server_send_timeout;
                Err(ClientError::ServerLost(format!(
                    "the server took nothing sent to it for {waited:?} (server_send_timeout)"
                )))
            }
        }
    }
}
