//! Forwarding within a transaction: the I/O around the passes of `client::step` — client bytes to the
//! server, server bytes to the client — and the release of a server at a clean ReadyForQuery.

use bytes::Buf;
use tokio::time::Instant;

use super::{Flow, Session, State};
use crate::client::ClientError;
use crate::client::step::{self, ClientContext, ServerContext};
use crate::config::PoolMode;
use crate::pool::Poolable;
use crate::protocol::ProtocolError;
use crate::server::CloseReason;

impl Session {
    /// Forwards every complete (or streaming) client message to the server, tracking what it owes and
    /// rewriting prepared statements; drops what was refused as it arrives.
    pub(super) async fn forward_client(&mut self) -> Result<Flow, ClientError> {
        loop {
            let drop = self.discarding.min(self.cbuf.len());
            self.cbuf.advance(drop);
            self.discarding -= drop;
            if self.discarding > 0 {
                return Ok(Flow::Continue); // the rest of it is still to come
            }
            let (flow, discard) = self.forward_client_chunk().await?;
            if discard == 0 || !matches!(flow, Flow::Continue) {
                return Ok(flow);
            }
            self.discarding = discard;
        }
    }

    /// One pass of `forward_client`; also returns the size of a message to drop that begins where the pass
    /// stopped (0 = none).
    async fn forward_client_chunk(&mut self) -> Result<(Flow, usize), ClientError> {
        let State::Active(active) = &mut self.state else {
            return Ok((Flow::Continue, 0));
        };
        let Some(conn) = active.lease.conn() else {
            return Err(ClientError::ServerLost("empty lease".into()));
        };
        let was_busy = conn.tracker().busy();
        let keep_query =
            !self.settings.log_slow_transaction.is_zero() || !self.settings.idle_transaction_warn.is_zero();
        let mut cx = ClientContext {
            stmts: &mut self.stmts,
            state: &mut self.session_state,
            tx_query: keep_query.then_some(&mut self.tx_query),
            backslash_quotes: self.login.params.get("standard_conforming_strings") == Some("off"),
        };
        let pass = step::client_pass(&mut self.client_scanner, &self.cbuf, conn.model_mut(), &mut cx, &mut self.edits)?;
        let refused = self.session_state.take_refused();
        if refused > 0 {
            let counts = &self.login.pool.stats.session_state;
            counts.refused.fetch_add(refused, std::sync::atomic::Ordering::Relaxed);
        }
        let n = pass.consumed;
        if n > 0 || !self.edits.splices.is_empty() {
            let now = Instant::now();
            self.counted.totals.received += n as u64;
            self.login.registered.entry.requested();
            active.last_client_activity = now;
            if !was_busy && conn.tracker().busy() {
                active.request_started = Some(now);
                if !conn.tracker().in_transaction() {
                    active.tx_started = now;
                }
            }
            let out = self.edits.apply(&self.cbuf[..n], &mut self.wbuf);
            let was_empty = self.to_server.is_empty();
            super::buffers::send_to_server(conn, &mut self.to_server, out)?;
            if was_empty && !self.to_server.is_empty() {
                self.to_server_progress = now;
            }
            self.cbuf.advance(n);
        }
        if self.stmts.enabled() {
            // Replies pgsluice answers itself may be due now (e.g. Parse of a known statement + Flush).
            self.wbuf.clear();
            let wbuf = &mut self.wbuf;
            conn.model_mut().replies.take_due(&mut |b| wbuf.extend_from_slice(&b));
            if !self.wbuf.is_empty() {
                self.sock.send(&self.wbuf).await?;
            }
        }
        if let Some(tag) = pass.invalid {
            return Err(ClientError::Protocol(ProtocolError::InvalidFrontendType(tag)));
        }
        // A server left clean by an earlier reply (ReadyForQuery while this client was mid-message, e.g. a
        // COPY the server failed) goes back once the client's message is whole.
        let mid_message = self.client_scanner.mid_message() || pass.discard > 0 || !self.to_server.is_empty();
        if conn.is_reusable() && self.settings.pool_mode != PoolMode::Session && !mid_message {
            self.release_server().await;
        }
        if pass.terminate {
            let _ = self.cbuf.split_to(5);
            return Ok((Flow::Done, 0));
        }
        Ok((Flow::Continue, pass.discard))
    }

    /// Forwards server bytes to the client; releases the server at a clean ReadyForQuery.
    pub(super) async fn forward_server(&mut self) -> Result<Flow, ClientError> {
        let Some(pass) = self.server_pass()? else { return Ok(Flow::Continue) };
        // Counted (and shown in SHOW CLIENTS) before the client can read the answer and ask again.
        self.count_queries(pass.ready);
        let State::Active(active) = &mut self.state else { return Ok(Flow::Continue) };
        let Some(conn) = active.lease.conn() else { return Ok(Flow::Continue) };
        if pass.consumed > 0 {
            let (input, _) = conn.received();
            let out = self.edits.apply(&input[..pass.consumed], &mut self.wbuf);
            if !out.is_empty() {
                self.counted.totals.sent += out.len() as u64;
                // While this write waits, the server is not read: a slow client slows its server down
                // (bounded memory), and one that stops reading is dropped after client_send_timeout.
                let limit = self.settings.client_send_timeout;
                if limit.is_zero() {
                    self.sock.send(out).await?;
                } else if let Ok(r) = tokio::time::timeout(limit, self.sock.send(out)).await {
                    r?;
                } else {
                    conn.close_after(CloseReason::ClientGone);
                    return Err(ClientError::ClientSendTimeout);
                }
            }
            conn.consume(pass.consumed);
        }
        if let Some(tag) = pass.invalid {
            conn.close_after(CloseReason::Lost);
            return Err(ClientError::ServerProtocol(ProtocolError::InvalidBackendType(tag)));
        }
        if let Some(name) = pass.retry {
            tracing::info!(db = %self.login.db, user = %self.login.user, "cached plan went stale: re-preparing and retrying");
            self.edits.extra.clear();
            self.stmts.retry(&name, conn.model_mut(), &mut self.edits.extra);
            if self.to_server.is_empty() {
                self.to_server_progress = Instant::now();
            }
            super::buffers::send_to_server(conn, &mut self.to_server, &self.edits.extra)?;
        }
        if pass.statement_mode_block {
            if let Some(conn) = self.conn() {
                conn.close_after(CloseReason::StatementMode);
            }
            return Err(ClientError::StatementModeTransaction);
        }
        self.after_server_pass(pass.release).await
    }

    /// One pass over what the server sent (see `step::server_pass`), its effects on the prepared
    /// statements and parameters applied; `None` without a server.
    fn server_pass(&mut self) -> Result<Option<step::ServerPass>, ClientError> {
        let State::Active(active) = &mut self.state else {
            return Ok(None);
        };
        let Some(conn) = active.lease.conn() else {
            return Err(ClientError::ServerLost("empty lease".into()));
        };
        let pool_stats = &self.login.pool.stats;
        let mut cx =
            ServerContext { mode: self.settings.pool_mode, stmts: &self.stmts, state: &mut self.session_state };
        let (input, model) = conn.received();
        let mut count_error = |code: &[u8]| pool_stats.count_error(code);
        let pass = step::server_pass(&mut active.scanner, input, model, &mut cx, &mut self.edits, &mut count_error);
        let mut pass = match pass {
            Ok(pass) => pass,
            Err(e) => {
                conn.close_after(CloseReason::Lost);
                // As PostgreSQL's own clients see an oversized message: the connection is lost.
                return Err(ClientError::ServerLost(format!("server sent a malformed message: {e}")));
            }
        };
        self.stmts.apply(&mut pass.effects, conn.model_mut());
        for p in &pass.went_stale {
            self.stmts.plan_went_stale(p);
        }
        for (k, v) in &pass.parameters {
            conn.set_param(k, v);
            self.login.params.set(&String::from_utf8_lossy(k), &String::from_utf8_lossy(v));
        }
        Ok(Some(pass))
    }

    /// Counts requests answered by `ready` ReadyForQuery messages and their time; a server no longer busy
    /// has no request running (nor a cancel sent for one).
    fn count_queries(&mut self, ready: u64) {
        let State::Active(active) = &mut self.state else { return };
        let Some(conn) = active.lease.conn_ref() else { return };
        if ready > 0 {
            self.login.registered.entry.ready(conn.tracker().status().as_byte());
            self.counted.totals.query_count += ready;
        }
        if let Some(t) = active.request_started.filter(|_| ready > 0) {
            let took = t.elapsed();
            self.counted.totals.query_time += took.as_micros() as u64 * ready;
            for _ in 0..ready {
                self.counted.query.observe(took);
            }
        }
        if !conn.tracker().busy() {
            active.request_started = None;
            active.cancel_sent = false;
        }
    }

    /// After server bytes were passed: the server goes back if it is clean (`release`), but only at a
    /// client message boundary (PostgreSQL is still reading the rest of a message the client is halfway
    /// through sending); client messages held back while the reply queue was full go on.
    async fn after_server_pass(&mut self, release: bool) -> Result<Flow, ClientError> {
        let queue_drained = self.conn().is_some_and(|c| step::replies_drained(&c.model().replies));
        if release && !self.client_mid_message() {
            self.release_server().await;
        } else if !self.cbuf.is_empty() && queue_drained {
            return self.forward_client().await;
        }
        Ok(Flow::Continue)
    }
}
