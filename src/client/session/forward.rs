//! Forwarding within a transaction: client messages to the server (tracked, prepared statements
//! rewritten) and server messages to the client (async messages filtered, pgsluice's own replies
//! swallowed or added), and the release of a server at a clean ReadyForQuery.

use bytes::{Buf, BytesMut};
use tokio::time::Instant;

use super::{Flow, Insert, Session, Splice, State};
use crate::client::ClientError;
use crate::client::prepared::{Edit, Statements};
use crate::client::session_state::put_raising_statement;
use crate::config::PoolMode;
use crate::pool::Poolable;
use crate::protocol::frame::Header;
use crate::protocol::messages::{self, TxStatus, put_message};
use crate::protocol::{ProtocolError, Scan};
use crate::server::ServerConn;
use crate::server::replies::{Outcome, Verdict};

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
        let was_busy = conn.tracker.busy();
        let mut terminate = false;
        let mut invalid = None;
        let mut discard = 0;
        let (stmts, extra, edits) = (&mut self.stmts, &mut self.extra, &mut self.edits);
        let tx_query = &mut self.tx_query;
        let keep_query =
            !self.settings.log_slow_transaction.is_zero() || !self.settings.idle_transaction_warn.is_zero();
        let rewrite = stmts.enabled();
        let state = &mut self.session_state;
        let track = state.active();
        let track_binds = state.wants_binds();
        let backslash_quotes = self.login.params.get("standard_conforming_strings") == Some("off");
        extra.clear();
        edits.clear();
        let n = self.client_scanner.scan(
            &self.cbuf,
            |t| {
                (rewrite && Statements::wants_body(t))
                    || (keep_query && matches!(t, b'Q' | b'P' | b'B'))
                    || (track && (matches!(t, b'Q' | b'P') || (t == b'B' && track_binds)))
            },
            |h: Header<'_>| {
                if h.tag == b'X' {
                    terminate = true;
                    return Scan::StopBefore;
                }
                if conn.replies.len() >= MAX_QUEUED_REPLIES || (rewrite && conn.replies.unconfirmed_before_sync()) {
                    return Scan::StopBefore; // the rest waits until the server has answered more
                }
                if !messages::is_frontend_type(h.tag) {
                    invalid = Some(h.tag); // answered by pgsluice; the server never sees it
                    return Scan::StopBefore;
                }
                if keep_query && (tx_query.is_empty() || is_transaction_control(tx_query)) {
                    let named = match (h.tag, h.body) {
                        (b'B', Some(b)) => stmts.text_of_bind(b),
                        _ => None,
                    };
                    remember_query(tx_query, h.tag, h.body, named);
                }
                let refusal = if track { state.refusal(h.tag, h.body, backslash_quotes) } else { None };
                let refused = refusal.is_some();
                let edit = match refusal {
                    Some(err) if rewrite => match stmts.refuse(h.tag, err, conn, extra) {
                        Some(edit) => edit,
                        None => stmts.on_message(&h, conn, extra), // skipped with the rest of its batch
                    },
                    Some(err) => {
                        let start = extra.len();
                        let (name, params) = parse_name_and_params(h.body.unwrap_or_default());
                        put_raising_statement(extra, h.tag, name, params, &err);
                        Edit::Replace(start..extra.len())
                    }
                    None if rewrite => stmts.on_message(&h, conn, extra),
                    None => Edit::Keep,
                };
                // Seen once whole (a message held whole is looked at when it is), unless refused.
                let edit = if track && !refused && !matches!(edit, Edit::HoldWhole) {
                    match (state.on_client_message(h.tag, h.body, backslash_quotes), edit) {
                        (Some(renamed), Edit::Keep) => {
                            let start = extra.len();
                            put_message(extra, b'Q', |b| b.extend_from_slice(&renamed));
                            Edit::Replace(start..extra.len())
                        }
                        (_, edit) => edit,
                    }
                } else {
                    edit
                };
                match edit {
                    Edit::Keep => conn.tracker.on_client(h.tag),
                    Edit::HoldWhole => return Scan::HoldWhole,
                    Edit::ReplaceHead { drop, with } => {
                        conn.tracker.on_client(h.tag);
                        edits.push(Splice { at: h.offset, drop, insert: Insert::Extra(with) });
                    }
                    Edit::Replace(r) => {
                        if !r.is_empty() {
                            conn.tracker.on_client(h.tag);
                        }
                        if h.body.is_none() {
                            // Seen by its prefix only: dropped as it streams in, never buffered whole.
                            edits.push(Splice { at: h.offset, drop: 0, insert: Insert::Extra(r) });
                            discard = 1 + h.len;
                            return Scan::StopBefore;
                        }
                        edits.push(Splice { at: h.offset, drop: 1 + h.len, insert: Insert::Extra(r) });
                    }
                }
                Scan::Continue
            },
        )?;
        let refused = self.session_state.take_refused();
        if refused > 0 {
            let counts = &self.login.pool.stats.session_state;
            counts.refused.fetch_add(refused, std::sync::atomic::Ordering::Relaxed);
        }
        if n > 0 || !self.edits.is_empty() {
            let now = Instant::now();
            self.counted.totals.received += n as u64;
            self.login.registered.entry.requested();
            active.last_client_activity = now;
            if !was_busy && conn.tracker.busy() {
                active.request_started = Some(now);
                if !conn.tracker.in_transaction() {
                    active.tx_started = now;
                }
            }
            let out = splice(&self.cbuf[..n], &self.edits, &self.extra, &mut self.wbuf);
            let was_empty = self.to_server.is_empty();
            super::buffers::send_to_server(conn, &mut self.to_server, out)?;
            if was_empty && !self.to_server.is_empty() {
                self.to_server_progress = now;
            }
            self.cbuf.advance(n);
        }
        if rewrite {
            // Replies pgsluice answers itself may be due now (e.g. Parse of a known statement + Flush).
            self.wbuf.clear();
            let wbuf = &mut self.wbuf;
            conn.replies.take_due(&mut |b| wbuf.extend_from_slice(&b));
            if !self.wbuf.is_empty() {
                self.sock.send(&self.wbuf).await?;
            }
        }
        if let Some(tag) = invalid {
            return Err(ClientError::Protocol(ProtocolError::InvalidFrontendType(tag)));
        }
        // A server left clean by an earlier reply (ReadyForQuery while this client was mid-message, e.g. a
        // COPY the server failed) goes back once the client's message is whole.
        let mid_message = self.client_scanner.mid_message() || discard > 0 || !self.to_server.is_empty();
        if conn.is_reusable() && self.settings.pool_mode != PoolMode::Session && !mid_message {
            self.release_server().await;
        }
        if terminate {
            let _ = self.cbuf.split_to(5);
            return Ok((Flow::Done, 0));
        }
        Ok((Flow::Continue, discard))
    }

    /// Forwards server bytes to the client; releases the server at a clean ReadyForQuery.
    pub(super) async fn forward_server(&mut self) -> Result<Flow, ClientError> {
        let mode = self.settings.pool_mode;
        let params = &mut self.login.params;
        let State::Active(active) = &mut self.state else {
            return Ok(Flow::Continue);
        };
        let Some(conn) = active.lease.conn() else {
            return Err(ClientError::ServerLost("empty lease".into()));
        };
        let mut release = false;
        let mut refused_block = false;
        let rewrite = self.stmts.enabled();
        let edits = &mut self.edits;
        edits.clear();
        let mut effects = Outcome::default();
        let mut retry = None;
        let pool_stats = &self.login.pool.stats;
        let mut queries = 0u64;
        let mut went_stale = Vec::new();
        let stmts = &self.stmts;
        let state = &mut self.session_state;
        let track = state.active();
        // A NOTIFY reaches the client only when the server is its own: session mode, or pinned by LISTEN.
        let own_server = mode == PoolMode::Session || state.pin().is_some();
        let ServerConn { tracker, rbuf, replies, .. } = &mut *conn;
        let mut status_changes: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut invalid = None;
        let n = active.scanner.scan(
            rbuf,
            // Replies that may be swallowed or followed by pgsluice's own are held whole.
            |t| {
                t == b'Z'
                    || t == b'S'
                    || t == b'E' // counted by SQLSTATE class
                    || (t == b'A' && !own_server)
                    || (t == b'C' && track)
                    || (rewrite && matches!(t, b'1' | b'2' | b'3' | b'C' | b'n' | b'T' | b'I' | b's' | b'E'))
            },
            |h: Header<'_>| {
                if !messages::is_backend_type(h.tag) {
                    invalid = Some(h.tag);
                    return Scan::StopBefore;
                }
                let mut plan_changed = None;
                if rewrite {
                    let mut emit = |b| edits.push(Splice { at: h.offset, drop: 0, insert: Insert::Owned(b) });
                    let (verdict, mut outcome) = replies.on_server(h.tag, h.body, &mut emit);
                    if verdict == Verdict::Swallow {
                        edits.push(Splice { at: h.offset, drop: 1 + h.len, insert: Insert::Extra(0..0) });
                    }
                    plan_changed = outcome.plan_changed.take();
                    effects.merge(outcome);
                    let after = h.offset + 1 + h.len;
                    replies.take_due(&mut |b| edits.push(Splice { at: after, drop: 0, insert: Insert::Owned(b) }));
                }
                match (h.tag, h.body) {
                    (b'C', Some(body)) if track => state.on_command_complete(body),
                    (b'A', Some(_)) if !own_server => {
                        // A NOTIFY for whichever client LISTENed on this server earlier: in transaction
                        // and statement mode it belongs to no current client, so it reaches none.
                        edits.push(Splice { at: h.offset, drop: 1 + h.len, insert: Insert::Extra(0..0) });
                    }
                    (b'E', Some(body)) => {
                        tracker.on_error();
                        if let Some(code) = messages::error_code(body) {
                            pool_stats.count_error(code);
                        }
                    }
                    (b'G', _) => {
                        tracker.on_copy_in();
                        replies.on_copy_in();
                    }
                    (b'Z', Some(body)) => {
                        queries += 1;
                        let status = body.first().copied().and_then(TxStatus::from_byte).unwrap_or(TxStatus::Failed);
                        tracker.on_ready(status);
                        if let Some(pc) = plan_changed {
                            // A stale cached plan: replay the batch once if nothing else depends on it.
                            if status == TxStatus::Idle && replies.is_empty() && stmts.can_retry(&pc) {
                                edits.push(Splice { at: h.offset, drop: 1 + h.len, insert: Insert::Extra(0..0) });
                                retry = Some(pc.server_name);
                                return Scan::StopAfter;
                            }
                            edits.push(Splice { at: h.offset, drop: 0, insert: Insert::Owned(pc.error.clone()) });
                            if !stmts.can_retry(&pc) {
                                went_stale.push(pc); // a client that could be retried is, outside the block
                            }
                        }
                        if mode == PoolMode::Statement && status != TxStatus::Idle {
                            refused_block = true;
                            return Scan::StopBefore;
                        }
                        if tracker.is_clean() && mode != PoolMode::Session {
                            release = true;
                            return Scan::StopAfter;
                        }
                    }
                    (b'S', Some(body)) => {
                        if let Some((k, v)) = messages::parameter_status_fields(body) {
                            status_changes.push((k.to_vec(), v.to_vec()));
                        }
                    }
                    _ => {}
                }
                Scan::Continue
            },
        );
        let n = match n {
            Ok(n) => n,
            Err(e) => {
                conn.broken = true;
                // As PostgreSQL's own clients see an oversized message: the connection is lost.
                return Err(ClientError::ServerLost(format!("server sent a malformed message: {e}")));
            }
        };
        self.stmts.apply(&mut effects, conn);
        for p in &went_stale {
            self.stmts.plan_went_stale(p);
        }
        for (k, v) in &status_changes {
            conn.set_param(k, v);
            params.set(&String::from_utf8_lossy(k), &String::from_utf8_lossy(v));
        }
        if n > 0 {
            let out = splice(&conn.rbuf[..n], &self.edits, &self.extra, &mut self.wbuf);
            if !out.is_empty() {
                self.counted.totals.sent += out.len() as u64;
                // While this write waits, the server is not read: a slow client slows its server down
                // (bounded memory), and one that stops reading is dropped after client_send_timeout.
                let limit = self.settings.client_send_timeout;
                if limit.is_zero() {
                    self.sock.send(out).await?;
                } else {
                    match tokio::time::timeout(limit, self.sock.send(out)).await {
                        Ok(r) => r?,
                        Err(_) => {
                            conn.broken = true;
                            return Err(ClientError::ClientSendTimeout);
                        }
                    }
                }
            }
            conn.rbuf.advance(n);
        }
        if let Some(tag) = invalid {
            conn.broken = true;
            return Err(ClientError::ServerProtocol(ProtocolError::InvalidBackendType(tag)));
        }
        if let Some(name) = retry {
            tracing::info!(db = %self.login.db, user = %self.login.user, "cached plan went stale: re-preparing and retrying");
            self.extra.clear();
            self.stmts.retry(&name, conn, &mut self.extra);
            if self.to_server.is_empty() {
                self.to_server_progress = Instant::now();
            }
            super::buffers::send_to_server(conn, &mut self.to_server, &self.extra)?;
        }
        if queries > 0 {
            self.login.registered.entry.ready(conn.tracker.status().as_byte());
            self.counted.totals.query_count += queries;
            if let Some(t) = active.request_started {
                let took = t.elapsed();
                self.counted.totals.query_time += took.as_micros() as u64 * queries;
                for _ in 0..queries {
                    self.counted.query.observe(took);
                }
            }
        }
        if !conn.tracker.busy() {
            active.request_started = None;
            active.cancel_sent = false;
        }
        if refused_block {
            conn.broken = true;
            return Err(ClientError::StatementModeTransaction);
        }
        // The server is clean, but it goes back only at a client message boundary: PostgreSQL is still
        // reading the rest of a message the client is halfway through sending.
        let queue_drained = conn.replies.len() < MAX_QUEUED_REPLIES / 2 && !conn.replies.unconfirmed_before_sync();
        if release && !self.client_mid_message() {
            self.release_server().await;
        } else if !self.cbuf.is_empty() && queue_drained {
            return self.forward_client().await; // client messages held back while the queue was full
        }
        Ok(Flow::Continue)
    }
}

/// Requests awaiting their replies beyond which a pipelining client's further messages wait (the
/// bookkeeping per request is what a client could otherwise grow without bound). PostgreSQL flushes its
/// replies whenever it waits for input, so the queue always drains.
const MAX_QUEUED_REPLIES: usize = 10_000;

/// The bytes to forward: `input` itself when nothing changed, else `input` with `edits` applied, in `wbuf`.
fn splice<'a>(input: &'a [u8], edits: &[Splice], extra: &[u8], wbuf: &'a mut BytesMut) -> &'a [u8] {
    if edits.is_empty() {
        return input;
    }
    wbuf.clear();
    let mut pos = 0;
    for e in edits {
        let at = e.at.min(input.len());
        wbuf.extend_from_slice(input.get(pos..at).unwrap_or_default());
        match &e.insert {
            Insert::Extra(r) => wbuf.extend_from_slice(extra.get(r.clone()).unwrap_or_default()),
            Insert::Owned(b) => wbuf.extend_from_slice(b),
        }
        pos = (at + e.drop).min(input.len()).max(pos);
    }
    wbuf.extend_from_slice(input.get(pos..).unwrap_or_default());
    wbuf
}

/// Keeps the statement text of a Query, a Parse or a Bind of a named statement (`named`, its text), at
/// most 2 KiB, for the logs. A transaction's BEGIN (or SET, SAVEPOINT...) is replaced by the statement
/// that follows it.
fn remember_query(into: &mut Vec<u8>, tag: u8, body: Option<&[u8]>, named: Option<&[u8]>) {
    let text = match (tag, body, named) {
        (b'Q', Some(b), _) => b,
        (b'P', Some(b), _) => b.iter().position(|c| *c == 0).and_then(|n| b.get(n + 1..)).unwrap_or_default(),
        (b'B', _, Some(t)) => t,
        _ => return,
    };
    let end = text.iter().position(|c| *c == 0).unwrap_or(text.len()).min(2048);
    into.clear();
    into.extend_from_slice(text.get(..end).unwrap_or_default());
}

/// A statement that only opens, names or configures the transaction: the log shows what comes next.
fn is_transaction_control(sql: &[u8]) -> bool {
    let head = sql.trim_ascii_start();
    ["begin", "start transaction", "set ", "savepoint"]
        .iter()
        .any(|w| head.get(..w.len()).is_some_and(|h| h.eq_ignore_ascii_case(w.as_bytes())))
}

/// A Parse body's statement name and what follows its text (the parameter types).
fn parse_name_and_params(body: &[u8]) -> (&[u8], &[u8]) {
    let Some(name_end) = memchr::memchr(0, body) else { return (&[], &[]) };
    let rest = body.get(name_end + 1..).unwrap_or_default();
    let params = memchr::memchr(0, rest).and_then(|i| rest.get(i + 1..)).unwrap_or_default();
    (&body[..name_end], params)
}
