//! The session's work on each side's bytes, without sockets: one pass over what a client sent (tracked,
//! checked against session state, prepared statements rewritten) and one over what its server sent
//! (async messages filtered, pgsluice's own replies swallowed or added, ReadyForQuery read). Each pass
//! returns what happened; the session's I/O tail acts on it (`session::forward`).

use bytes::{Bytes, BytesMut};

use super::prepared::{Edit, Statements};
use super::session_state::{SessionState, put_raising_statement};
use crate::config::PoolMode;
use crate::protocol::frame::{FrameScanner, Header};
use crate::protocol::messages::{self, TxStatus, put_message};
use crate::protocol::tags::{backend, frontend};
use crate::protocol::{ProtocolError, Scan};
use crate::server::ServerModel;
use crate::server::replies::{Outcome, PlanChanged, ReplyQueue, Verdict};

/// Requests awaiting their replies beyond which a pipelining client's further messages wait (the
/// bookkeeping per request is what a client could otherwise grow without bound). PostgreSQL flushes its
/// replies whenever it waits for input, so the queue always drains.
pub const MAX_QUEUED_REPLIES: usize = 10_000;

/// The reply queue is short enough again for client messages held back while it was full to go on.
pub fn replies_drained(replies: &ReplyQueue) -> bool {
    replies.len() < MAX_QUEUED_REPLIES / 2 && !replies.unconfirmed_before_sync()
}

/// One change to a forwarded chunk: at `at`, drop `drop` bytes and insert `insert`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Splice {
    pub at: usize,
    pub drop: usize,
    pub insert: Insert,
}

/// Bytes a splice inserts: a range of the pass's `extra` buffer, or bytes of their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Insert {
    Extra(std::ops::Range<usize>),
    Owned(Bytes),
}

impl Splice {
    /// Drops the whole message that starts at `at` and is `len` long on the wire (after its tag).
    fn dropping(at: usize, len: usize) -> Splice {
        Splice { at, drop: 1 + len, insert: Insert::Extra(0..0) }
    }

    fn adding(at: usize, bytes: Bytes) -> Splice {
        Splice { at, drop: 0, insert: Insert::Owned(bytes) }
    }
}

/// The edits of one pass, in buffers reused from pass to pass: replacement bytes and where they go.
#[derive(Debug, Default)]
pub struct Edits {
    pub extra: BytesMut,
    pub splices: Vec<Splice>,
}

impl Edits {
    fn clear(&mut self) {
        self.extra.clear();
        self.splices.clear();
    }

    /// The bytes to forward: `input` itself when nothing changed, else `input` with the splices applied,
    /// assembled in `wbuf`.
    pub fn apply<'a>(&self, input: &'a [u8], wbuf: &'a mut BytesMut) -> &'a [u8] {
        if self.splices.is_empty() {
            return input;
        }
        wbuf.clear();
        let mut pos = 0;
        for e in &self.splices {
            let at = e.at.min(input.len());
            wbuf.extend_from_slice(input.get(pos..at).unwrap_or_default());
            match &e.insert {
                Insert::Extra(r) => wbuf.extend_from_slice(self.extra.get(r.clone()).unwrap_or_default()),
                Insert::Owned(b) => wbuf.extend_from_slice(b),
            }
            pos = (at + e.drop).min(input.len()).max(pos);
        }
        wbuf.extend_from_slice(input.get(pos..).unwrap_or_default());
        wbuf
    }
}

/// What the client pass reads and changes besides the server's protocol state.
pub struct ClientContext<'a> {
    pub stmts: &'a mut Statements,
    pub state: &'a mut SessionState,
    /// The transaction's first statement text, kept for the slow-transaction and leak logs.
    pub tx_query: Option<&'a mut Vec<u8>>,
    /// `standard_conforming_strings` is off for the client: backslashes escape quotes in its SQL.
    pub backslash_quotes: bool,
}

/// What one pass over client bytes did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ClientPass {
    /// Bytes of the input passed on (as the edits say).
    pub consumed: usize,
    /// The client said Terminate (not consumed).
    pub terminate: bool,
    /// A message of a type no client may send once logged in (not consumed; pgsluice answers it).
    pub invalid: Option<u8>,
    /// A refused message too big to hold begins where the pass stopped: this many bytes of it are
    /// dropped as they arrive (0 = none).
    pub discard: usize,
}

/// One pass over client bytes bound for a server: every whole (or streaming) message is tracked,
/// refused or rewritten; the pass stops at Terminate, at an invalid message, before a message to drop
/// as it streams, and while the server owes too many replies.
pub fn client_pass(
    scanner: &mut FrameScanner,
    input: &[u8],
    server: &mut ServerModel,
    cx: &mut ClientContext<'_>,
    edits: &mut Edits,
) -> Result<ClientPass, ProtocolError> {
    edits.clear();
    let mut pass = ClientPass::default();
    let rewrite = cx.stmts.enabled();
    let track = cx.state.active();
    let track_binds = cx.state.wants_binds();
    let keep_query = cx.tx_query.is_some();
    pass.consumed = scanner.scan(
        input,
        |t| {
            (rewrite && Statements::wants_body(t))
                || (keep_query && matches!(t, frontend::QUERY | frontend::PARSE | frontend::BIND))
                || (track && (matches!(t, frontend::QUERY | frontend::PARSE) || (t == frontend::BIND && track_binds)))
        },
        |h: Header<'_>| {
            if h.tag == frontend::TERMINATE {
                pass.terminate = true;
                return Scan::StopBefore;
            }
            let replies = &server.replies;
            if replies.len() >= MAX_QUEUED_REPLIES || (rewrite && replies.unconfirmed_before_sync()) {
                return Scan::StopBefore; // the rest waits until the server has answered more
            }
            if !messages::is_frontend_type(h.tag) {
                pass.invalid = Some(h.tag);
                return Scan::StopBefore;
            }
            if let Some(tx_query) = cx.tx_query.as_deref_mut()
                && (tx_query.is_empty() || is_transaction_control(tx_query))
            {
                let named = match (h.tag, h.body) {
                    (frontend::BIND, Some(b)) => cx.stmts.text_of_bind(b),
                    _ => None,
                };
                remember_query(tx_query, h.tag, h.body, named);
            }
            match client_edit(&h, server, cx, &mut edits.extra) {
                Edit::Keep => server.tracker.on_client(h.tag),
                Edit::HoldWhole => return Scan::HoldWhole,
                Edit::ReplaceHead { drop, with } => {
                    server.tracker.on_client(h.tag);
                    edits.splices.push(Splice { at: h.offset, drop, insert: Insert::Extra(with) });
                }
                Edit::Replace(r) => {
                    if !r.is_empty() {
                        server.tracker.on_client(h.tag);
                    }
                    if h.body.is_none() {
                        // Seen by its prefix only: dropped as it streams in, never buffered whole.
                        edits.splices.push(Splice { at: h.offset, drop: 0, insert: Insert::Extra(r) });
                        pass.discard = 1 + h.len;
                        return Scan::StopBefore;
                    }
                    edits.splices.push(Splice { at: h.offset, drop: 1 + h.len, insert: Insert::Extra(r) });
                }
            }
            Scan::Continue
        },
    )?;
    Ok(pass)
}

/// What becomes of one client message: refused by session state, rewritten for prepared statements,
/// renamed (SQL PREPARE under pgsluice's names), or kept.
fn client_edit(h: &Header<'_>, server: &mut ServerModel, cx: &mut ClientContext<'_>, extra: &mut BytesMut) -> Edit {
    let rewrite = cx.stmts.enabled();
    let track = cx.state.active();
    let refusal = if track { cx.state.refusal(h.tag, h.body, cx.backslash_quotes) } else { None };
    let refused = refusal.is_some();
    let edit = match refusal {
        Some(err) if rewrite => match cx.stmts.refuse(h.tag, err, server, extra) {
            Some(edit) => edit,
            None => cx.stmts.rewrite(h, server, extra), // skipped with the rest of its batch
        },
        Some(err) => {
            let start = extra.len();
            let (name, params) = parse_name_and_params(h.body.unwrap_or_default());
            put_raising_statement(extra, h.tag, name, params, &err);
            Edit::Replace(start..extra.len())
        }
        None if rewrite => cx.stmts.rewrite(h, server, extra),
        None => Edit::Keep,
    };
    // Seen once whole (a message held whole is looked at when it is), unless refused.
    if !track || refused || matches!(edit, Edit::HoldWhole) {
        return edit;
    }
    match (cx.state.on_client_message(h.tag, h.body, cx.backslash_quotes), edit) {
        (Some(renamed), Edit::Keep) => {
            let start = extra.len();
            put_message(extra, frontend::QUERY, |b| b.extend_from_slice(&renamed));
            Edit::Replace(start..extra.len())
        }
        (_, edit) => edit,
    }
}

/// What the server pass reads and changes besides the server's protocol state.
pub struct ServerContext<'a> {
    pub mode: PoolMode,
    pub stmts: &'a Statements,
    pub state: &'a mut SessionState,
}

/// What one pass over server bytes did.
#[derive(Debug, Default)]
pub struct ServerPass {
    /// Bytes of the input passed on (as the edits say).
    pub consumed: usize,
    /// A clean ReadyForQuery outside session mode ends the pass: the server may go back.
    pub release: bool,
    /// Statement mode, and the server is in a transaction: the pass stopped before its ReadyForQuery.
    pub statement_mode_block: bool,
    /// A stale cached plan whose batch can be replayed: its server-side statement name.
    pub retry: Option<Bytes>,
    /// ReadyForQuery messages seen (requests answered).
    pub ready: u64,
    /// A message of a type no server may send (not consumed).
    pub invalid: Option<u8>,
    /// ParameterStatus changes, in order.
    pub parameters: Vec<(Vec<u8>, Vec<u8>)>,
    /// Stale plans whose error reached the client (no retry possible).
    pub went_stale: Vec<PlanChanged>,
    /// What the replies showed for the prepared-statement bookkeeping (`Statements::apply`).
    pub effects: Outcome,
}

/// One pass over server bytes bound for the client. `on_error` sees the SQLSTATE of every
/// ErrorResponse.
pub fn server_pass(
    scanner: &mut FrameScanner,
    input: &[u8],
    server: &mut ServerModel,
    cx: &mut ServerContext<'_>,
    edits: &mut Edits,
    on_error: &mut impl FnMut(&[u8]),
) -> Result<ServerPass, ProtocolError> {
    edits.clear();
    let mut pass = ServerPass::default();
    let rewrite = cx.stmts.enabled();
    let track = cx.state.active();
    // A NOTIFY reaches the client only when the server is its own: session mode, or pinned by LISTEN.
    let own_server = cx.mode == PoolMode::Session || cx.state.pin().is_some();
    let ServerModel { tracker, replies, .. } = server;
    let splices = &mut edits.splices;
    pass.consumed = scanner.scan(
        input,
        // Replies that may be swallowed or followed by pgsluice's own are held whole.
        |t| {
            t == backend::READY_FOR_QUERY
                || t == backend::PARAMETER_STATUS
                || t == backend::ERROR_RESPONSE // counted by SQLSTATE class
                || (t == backend::NOTIFICATION_RESPONSE && !own_server)
                || (t == backend::COMMAND_COMPLETE && track)
                || (rewrite && matches!(t, backend::PARSE_COMPLETE | backend::BIND_COMPLETE | backend::CLOSE_COMPLETE | backend::COMMAND_COMPLETE | backend::NO_DATA | backend::ROW_DESCRIPTION | backend::EMPTY_QUERY_RESPONSE | backend::PORTAL_SUSPENDED | backend::ERROR_RESPONSE))
        },
        |h: Header<'_>| {
            if !messages::is_backend_type(h.tag) {
                pass.invalid = Some(h.tag);
                return Scan::StopBefore;
            }
            let mut plan_changed = None;
            if rewrite {
                let mut emit = |b| splices.push(Splice::adding(h.offset, b));
                let (verdict, mut outcome) = replies.on_server(h.tag, h.body, &mut emit);
                if verdict == Verdict::Swallow {
                    splices.push(Splice::dropping(h.offset, h.len));
                }
                plan_changed = outcome.plan_changed.take();
                pass.effects.merge(outcome);
                let after = h.offset + 1 + h.len;
                replies.take_due(&mut |b| splices.push(Splice::adding(after, b)));
            }
            match (h.tag, h.body) {
                (backend::COMMAND_COMPLETE, Some(body)) if track => cx.state.on_command_complete(body),
                // A NOTIFY for whichever client LISTENed on this server earlier: in transaction and
                // statement mode it belongs to no current client, so it reaches none.
                (backend::NOTIFICATION_RESPONSE, Some(_)) if !own_server => splices.push(Splice::dropping(h.offset, h.len)),
                (backend::ERROR_RESPONSE, Some(body)) => {
                    tracker.on_error();
                    if let Some(code) = messages::error_code(body) {
                        on_error(code);
                    }
                }
                (backend::COPY_IN_RESPONSE, _) => {
                    tracker.on_copy_in();
                    replies.on_copy_in();
                }
                (backend::READY_FOR_QUERY, Some(body)) => {
                    pass.ready += 1;
                    let status = body.first().copied().and_then(TxStatus::from_byte).unwrap_or(TxStatus::Failed);
                    tracker.on_ready(status);
                    if let Some(pc) = plan_changed {
                        // A stale cached plan: replay the batch once if nothing else depends on it.
                        if status == TxStatus::Idle && replies.is_empty() && cx.stmts.can_retry(&pc) {
                            splices.push(Splice::dropping(h.offset, h.len));
                            pass.retry = Some(pc.server_name);
                            return Scan::StopAfter;
                        }
                        splices.push(Splice::adding(h.offset, pc.error.clone()));
                        if !cx.stmts.can_retry(&pc) {
                            pass.went_stale.push(pc); // a client that could be retried is, outside the block
                        }
                    }
                    if cx.mode == PoolMode::Statement && status != TxStatus::Idle {
                        pass.statement_mode_block = true;
                        return Scan::StopBefore;
                    }
                    if tracker.is_clean() && cx.mode != PoolMode::Session {
                        pass.release = true;
                        return Scan::StopAfter;
                    }
                }
                (backend::PARAMETER_STATUS, Some(body)) => {
                    if let Some((k, v)) = messages::parameter_status_fields(body) {
                        pass.parameters.push((k.to_vec(), v.to_vec()));
                    }
                }
                _ => {}
            }
            Scan::Continue
        },
    )?;
    Ok(pass)
}

/// Keeps the statement text of a Query, a Parse or a Bind of a named statement (`named`, its text), at
/// most 2 KiB, for the logs. A transaction's BEGIN (or SET, SAVEPOINT...) is replaced by the statement
/// that follows it.
fn remember_query(into: &mut Vec<u8>, tag: u8, body: Option<&[u8]>, named: Option<&[u8]>) {
    let text = match (tag, body, named) {
        (frontend::QUERY, Some(b), _) => b,
        (frontend::PARSE, Some(b), _) => {
            b.iter().position(|c| *c == 0).and_then(|n| b.get(n + 1..)).unwrap_or_default()
        }
        (frontend::BIND, _, Some(t)) => t,
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

#[cfg(test)]
mod tests;
