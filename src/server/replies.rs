//! The replies a server owes, in order, when pgsluice rewrites a client's extended-protocol stream
//! (prepared statements): which replies go to the client, which are pgsluice's own (an injected Parse,
//! an eviction Close) and are swallowed, and which the client expects but pgsluice answers itself
//! (ParseComplete for a statement the server already had, CloseComplete). Each rewrite records what it
//! changed (`Undo`), so a request the server never ran (it failed, or was skipped after an error) is
//! taken back. Pure; used by `client/`.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::protocol::tags::{backend, error_field};

/// What kind of request a reply belongs to; decides which reply completes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Parse,
    Bind,
    DescribeStatement,
    DescribePortal,
    Execute,
    Close,
    Sync,
    /// Query or FunctionCall: everything up to its ReadyForQuery.
    Simple,
    /// pgsluice's own Parse that fails on purpose, standing in for an error pgsluice raised itself, so the
    /// server aborts the batch (and a transaction block) exactly as the client's error would have. All its
    /// replies, its ErrorResponse included, are swallowed.
    Abort,
    /// pgsluice's own simple Query standing in for one pgsluice answered itself: everything but its
    /// ReadyForQuery (which carries the server's real transaction status) is swallowed.
    Shadow,
}

impl Request {
    /// Whether a reply with `tag` is the last one for this request.
    fn completed_by(self, tag: u8) -> bool {
        match self {
            Request::Parse => tag == backend::PARSE_COMPLETE,
            Request::Bind => tag == backend::BIND_COMPLETE,
            Request::DescribeStatement | Request::DescribePortal => {
                matches!(tag, backend::ROW_DESCRIPTION | backend::NO_DATA)
            }
            Request::Execute => {
                matches!(tag, backend::COMMAND_COMPLETE | backend::EMPTY_QUERY_RESPONSE | backend::PORTAL_SUSPENDED)
            }
            Request::Close => tag == backend::CLOSE_COMPLETE,
            Request::Abort => tag == backend::ERROR_RESPONSE,
            Request::Sync | Request::Simple | Request::Shadow => tag == backend::READY_FOR_QUERY,
        }
    }

    fn ends_at_ready(self) -> bool {
        matches!(self, Request::Sync | Request::Simple | Request::Shadow)
    }
}

/// A server-side statement name, and the client name it was recorded under (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub server_name: Bytes,
    pub client_name: Option<Bytes>,
}

/// What pgsluice recorded when it sent (or answered) a request, to take back if the server never runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undo {
    /// A Parse pgsluice sent: the statement exists on no server, and (if named) not for the client.
    Parse(Prepared),
    /// A Parse pgsluice answered itself (the server had the statement): the client's name is not recorded.
    ClientParse(Bytes),
    /// An eviction Close: the server still holds the statement.
    Evicted(Bytes),
    /// A Close pgsluice answered itself: the client's statement lives on.
    ClientClose { name: Bytes, server_name: Bytes, rest: Bytes },
    /// A Parse of the unnamed statement pgsluice sent on the client's behalf.
    Unnamed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A request forwarded to the server. `swallow`: pgsluice's own, its replies never reach the client.
    /// `undo`: what to take back if the server does not run it. `bind`: set for a Bind pgsluice rewrote,
    /// to recognize a stale cached plan (see `PlanChanged`).
    Pending { request: Request, swallow: bool, undo: Option<Undo>, bind: Option<BoundStatement> },
    /// A reply pgsluice sends itself when its turn comes.
    Synth { reply: Bytes, undo: Option<Undo> },
}

impl Entry {
    /// A request whose replies go to the client.
    pub fn pass(request: Request) -> Entry {
        Entry::Pending { request, swallow: false, undo: None, bind: None }
    }

    /// pgsluice's own request: its replies are swallowed.
    pub fn swallowed(request: Request, undo: Option<Undo>) -> Entry {
        Entry::Pending { request, swallow: true, undo, bind: None }
    }

    pub fn synth(reply: Bytes, undo: Option<Undo>) -> Entry {
        Entry::Synth { reply, undo }
    }

    fn changes_statements(&self) -> bool {
        matches!(self, Entry::Pending { undo: Some(Undo::Parse(_) | Undo::Evicted(_)), .. })
    }

    fn is_special(&self) -> bool {
        matches!(self, Entry::Synth { .. } | Entry::Pending { swallow: true, .. })
    }

    fn take_undo(self) -> Option<Undo> {
        match self {
            Entry::Pending { undo, .. } | Entry::Synth { undo, .. } => undo,
        }
    }
}

/// The statement a rewritten Bind used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundStatement {
    pub server_name: Bytes,
    /// The first Bind of its batch, whose batch the client side kept for a replay.
    pub replayable: bool,
}

/// A Bind of a cached statement failed with "cached plan must not change result type": the error is
/// held back until the ReadyForQuery that ends its batch shows whether a transparent retry is safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanChanged {
    pub server_name: Bytes,
    pub replayable: bool,
    /// The ErrorResponse as the server sent it, for the client if there is no retry.
    pub error: Bytes,
}

/// What to do with one server message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Swallow,
}

/// Effects the caller must apply after a reply.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Requests the server did not run (failed, or skipped after an error), in the order they were sent:
    /// the caller takes them back in reverse order.
    pub undo: Vec<Undo>,
    /// At a ReadyForQuery: the held plan-change error of this batch. The caller either retries or sends
    /// `error` to the client ahead of the ReadyForQuery.
    pub plan_changed: Option<PlanChanged>,
    /// The server says it holds a statement pgsluice thought it lacked (42P05 on pgsluice's own Parse), or
    /// lacks one pgsluice thought it held (26000 on a rewritten Bind): the caller corrects its cache.
    pub drifted: Vec<Drift>,
    /// The server ran DEALLOCATE ALL or DISCARD ALL, in whatever form: it holds no statements now.
    pub statements_dropped: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    Present(Bytes),
    Missing(Bytes),
}

/// An empty queue whose storage grew past this many entries gives it back.
const SHRINK_ABOVE: usize = 1024;

#[derive(Debug, Default)]
pub struct ReplyQueue {
    entries: VecDeque<Entry>,
    /// Entries that are not plain pass-through (Synth, or swallowed).
    special: usize,
    /// Entries that change which statements the server holds (a Parse, an eviction Close).
    changes: usize,
    held_error: Option<PlanChanged>,
    /// The server failed a request whose batch's Sync has not been sent yet: it skips every request
    /// until that Sync, so those sent meanwhile are not queued (no reply comes, a synthesized one must
    /// not be sent) and what they recorded is taken back (`skipped`).
    skipping: bool,
    /// What the requests sent while `skipping` recorded, handed back with the next reply's outcome.
    skipped: Vec<Undo>,
}

impl Outcome {
    /// Adds `other`'s effects after this one's.
    pub fn merge(&mut self, other: Outcome) {
        if other.undo.is_empty() && other.drifted.is_empty() && !other.statements_dropped {
            return; // nearly every reply
        }
        self.undo.extend(other.undo);
        self.drifted.extend(other.drifted);
        self.statements_dropped |= other.statements_dropped;
    }
}

impl ReplyQueue {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True when every queued reply passes through unchanged (the fast path).
    pub fn is_plain(&self) -> bool {
        self.special == 0
    }

    pub fn push(&mut self, entry: Entry) {
        if self.skipping {
            if !matches!(entry, Entry::Pending { request: Request::Sync, .. }) {
                self.skipped.extend(entry.take_undo());
                return;
            }
            self.skipping = false;
        }
        if entry.is_special() {
            self.special += 1;
        }
        if entry.changes_statements() {
            self.changes += 1;
        }
        self.entries.push_back(entry);
    }

    fn pop(&mut self) -> Option<Entry> {
        let e = self.entries.pop_front()?;
        if e.is_special() {
            self.special -= 1;
        }
        if e.changes_statements() {
            self.changes -= 1;
        }
        if self.entries.is_empty() && self.entries.capacity() > SHRINK_ABOVE {
            self.entries = VecDeque::new(); // a burst of pipelined requests leaves no lasting memory
        }
        Some(e)
    }

    /// A change to the server's statements (a Parse, an eviction Close) is not confirmed yet in a batch
    /// already closed by its Sync. The server may still skip it (after an error earlier in that batch), so
    /// the client's next batch must wait for those replies before it is rewritten: rewritten now, it would
    /// count on a statement the server may never have, or miss one it still has.
    pub fn unconfirmed_before_sync(&self) -> bool {
        if self.changes == 0 {
            return false; // nearly always
        }
        let mut change = false;
        for e in &self.entries {
            change |= e.changes_statements();
            if change && matches!(e, Entry::Pending { request: Request::Sync, .. }) {
                return true;
            }
        }
        false
    }

    /// Requests whose replies are still owed (what a pipelining client has in flight).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Synthesized replies now due (nothing owed by the server before them), appended to `out`.
    pub fn take_due(&mut self, out: &mut impl FnMut(Bytes)) {
        while let Some(Entry::Synth { .. }) = self.entries.front() {
            if let Some(Entry::Synth { reply, .. }) = self.pop() {
                out(reply);
            }
        }
    }

    /// Accounts for one server message. Synthesized replies due before it are handed to `out`; those
    /// due after it are collected by the caller's next `take_due`.
    /// `body` is the message body when the caller holds it whole (ErrorResponse must be held).
    pub fn on_server(&mut self, tag: u8, body: Option<&[u8]>, out: &mut impl FnMut(Bytes)) -> (Verdict, Outcome) {
        let mut outcome = Outcome { undo: std::mem::take(&mut self.skipped), ..Outcome::default() };
        if matches!(tag, backend::NOTICE_RESPONSE | backend::NOTIFICATION_RESPONSE | backend::PARAMETER_STATUS) {
            return (Verdict::Pass, outcome); // asynchronous: belongs to no request
        }
        self.take_due(out);
        let Some(Entry::Pending { request, swallow, bind, undo }) = self.entries.front() else {
            return (Verdict::Pass, outcome); // nothing tracked (e.g. COPY data): pass
        };
        let (request, swallow) = (*request, *swallow);
        let mut verdict = match request {
            Request::Abort => Verdict::Swallow,
            Request::Shadow if tag == backend::READY_FOR_QUERY => Verdict::Pass,
            Request::Shadow => Verdict::Swallow,
            _ if swallow && tag != backend::ERROR_RESPONSE => Verdict::Swallow,
            _ => Verdict::Pass,
        };
        if tag == backend::COMMAND_COMPLETE && body.is_some_and(drops_all_statements) {
            outcome.statements_dropped = true;
        }
        if tag == backend::ERROR_RESPONSE && request == Request::Shadow {
            // Its ReadyForQuery follows; nothing is skipped for a simple Query.
        } else if tag == backend::ERROR_RESPONSE && !matches!(request, Request::Simple | Request::Sync) {
            let code = body.and_then(crate::protocol::messages::error_code);
            if let (Some(bind), Some(body)) = (bind, body)
                && is_plan_change_error(body)
            {
                let mut error = bytes::BytesMut::with_capacity(5 + body.len());
                crate::protocol::messages::put_message(&mut error, backend::ERROR_RESPONSE, |b| {
                    b.extend_from_slice(body)
                });
                let (server_name, replayable) = (bind.server_name.clone(), bind.replayable);
                self.held_error = Some(PlanChanged { server_name, replayable, error: error.freeze() });
                verdict = Verdict::Swallow;
            }
            outcome.drifted.extend(match (code, bind, undo) {
                (Some(b"42P05"), _, Some(Undo::Parse(p))) => Some(Drift::Present(p.server_name.clone())),
                (Some(b"26000"), Some(bind), _) => Some(Drift::Missing(bind.server_name.clone())),
                _ => None,
            });
            if let Some(undo) = self.pop().and_then(Entry::take_undo) {
                outcome.undo.push(undo);
            }
            self.abort_until_sync(&mut outcome.undo);
        } else if tag == backend::READY_FOR_QUERY {
            outcome.plan_changed = self.held_error.take();
            // ReadyForQuery ends everything up to its Sync or Query, whatever was still open.
            while let Some(e) = self.pop() {
                if matches!(e, Entry::Pending { request, .. } if request.ends_at_ready()) {
                    break;
                }
            }
        } else if request.completed_by(tag) {
            self.pop();
        }
        (verdict, outcome)
    }

    /// Drops what the server will skip after an error: everything before the next Sync, and what is
    /// sent until then if that Sync is still to come.
    fn abort_until_sync(&mut self, skipped: &mut Vec<Undo>) {
        while let Some(e) = self.entries.front() {
            if matches!(e, Entry::Pending { request: Request::Sync, .. }) {
                return;
            }
            if let Some(undo) = self.pop().and_then(Entry::take_undo) {
                skipped.push(undo);
            }
        }
        self.skipping = true;
    }

    /// A CopyInResponse: the server ignores the Syncs sent since the COPY's Execute.
    pub fn on_copy_in(&mut self) {
        self.entries.retain(|e| !matches!(e, Entry::Pending { request: Request::Sync, .. }));
    }
}

/// A CommandComplete of DEALLOCATE ALL or DISCARD ALL (the server dropped every prepared statement).
fn drops_all_statements(body: &[u8]) -> bool {
    matches!(body, b"DEALLOCATE ALL\0" | b"DISCARD ALL\0")
}

/// PostgreSQL's 0A000 "cached plan must not change result type", raised when a prepared statement's
/// result columns changed under it (DDL since it was prepared).
fn is_plan_change_error(body: &[u8]) -> bool {
    let mut code_ok = false;
    let mut message_ok = false;
    for field in body.split(|b| *b == 0) {
        match field.split_first() {
            Some((&error_field::CODE, v)) => code_ok = v == b"0A000",
            // The message may be translated; the routine name is not.
            Some((&error_field::MESSAGE, v)) => message_ok |= v == b"cached plan must not change result type",
            Some((&error_field::ROUTINE, v)) => message_ok |= v == b"RevalidateCachedQuery",
            _ => {}
        }
    }
    code_ok && message_ok
}

#[cfg(test)]
#[path = "replies_props.rs"]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(request: Request) -> Entry {
        Entry::pass(request)
    }

    fn synth(b: &'static [u8]) -> Entry {
        Entry::synth(Bytes::from_static(b), None)
    }

    #[test]
    fn synthesized_parse_complete_goes_before_bind_complete() {
        let mut q = ReplyQueue::default();
        q.push(synth(b"1"));
        q.push(pending(Request::Bind));
        q.push(pending(Request::Execute));
        q.push(pending(Request::Sync));
        let mut out = Vec::new();
        let mut emit = |b: Bytes| out.push(b);
        assert_eq!(q.on_server(backend::BIND_COMPLETE, None, &mut emit).0, Verdict::Pass);
        assert_eq!(q.on_server(backend::DATA_ROW, None, &mut emit).0, Verdict::Pass);
        assert_eq!(q.on_server(backend::COMMAND_COMPLETE, None, &mut emit).0, Verdict::Pass);
        assert_eq!(q.on_server(backend::READY_FOR_QUERY, None, &mut emit).0, Verdict::Pass);
        assert!(q.is_empty());
        assert_eq!(out, vec![Bytes::from_static(b"1")]);
    }

    #[test]
    fn injected_parse_is_swallowed_and_errors_skip_to_sync() {
        let mut q = ReplyQueue::default();
        q.push(Entry::swallowed(Request::Parse, None));
        q.push(pending(Request::Bind));
        q.push(synth(b"3"));
        q.push(pending(Request::Execute));
        q.push(pending(Request::Sync));
        let mut out = Vec::new();
        let mut emit = |b: Bytes| out.push(b);
        assert_eq!(q.on_server(backend::PARSE_COMPLETE, None, &mut emit).0, Verdict::Swallow);
        assert_eq!(q.on_server(backend::ERROR_RESPONSE, None, &mut emit).0, Verdict::Pass, "the Bind failed");
        assert_eq!(q.on_server(backend::READY_FOR_QUERY, None, &mut emit).0, Verdict::Pass);
        q.take_due(&mut emit);
        assert!(q.is_empty());
        assert!(out.is_empty(), "the CloseComplete after the error is never sent");
    }

    #[test]
    fn what_an_error_skips_is_handed_back_in_order() {
        let name = |s: &'static [u8]| Bytes::from_static(s);
        let mut q = ReplyQueue::default();
        q.push(pending(Request::Execute)); // fails
        q.push(Entry::swallowed(Request::Close, Some(Undo::Evicted(name(b"old")))));
        let parse = Prepared { server_name: name(b"new"), client_name: Some(name(b"s1")) };
        q.push(Entry::Pending {
            request: Request::Parse,
            swallow: false,
            undo: Some(Undo::Parse(parse.clone())),
            bind: None,
        });
        q.push(Entry::synth(name(b"1"), Some(Undo::ClientParse(name(b"s2")))));
        q.push(pending(Request::Sync));
        let mut out = Vec::new();
        let (_, outcome) = q.on_server(backend::ERROR_RESPONSE, None, &mut |b| out.push(b));
        assert_eq!(outcome.undo, vec![Undo::Evicted(name(b"old")), Undo::Parse(parse), Undo::ClientParse(name(b"s2"))]);
        assert!(out.is_empty());
        assert_eq!(q.on_server(backend::READY_FOR_QUERY, None, &mut |b| out.push(b)).0, Verdict::Pass);
        assert!(q.is_empty() && q.is_plain());
    }

    #[test]
    fn abort_and_shadow_requests_show_nothing_but_the_ready_for_query() {
        let mut q = ReplyQueue::default();
        q.push(synth(b"E-from-pgsluice"));
        q.push(Entry::swallowed(Request::Abort, None));
        q.push(pending(Request::Sync));
        let mut out = Vec::new();
        assert_eq!(q.on_server(backend::ERROR_RESPONSE, None, &mut |b| out.push(b)).0, Verdict::Swallow);
        assert_eq!(q.on_server(backend::READY_FOR_QUERY, None, &mut |b| out.push(b)).0, Verdict::Pass);
        assert_eq!(out, vec![Bytes::from_static(b"E-from-pgsluice")]);
        q.push(synth(b"C-from-pgsluice"));
        q.push(Entry::swallowed(Request::Shadow, None));
        assert_eq!(q.on_server(backend::ERROR_RESPONSE, None, &mut |b| out.push(b)).0, Verdict::Swallow);
        assert_eq!(q.on_server(backend::READY_FOR_QUERY, None, &mut |b| out.push(b)).0, Verdict::Pass);
        assert!(q.is_empty());
    }

    #[test]
    fn deallocate_all_in_any_form_is_noticed() {
        let mut q = ReplyQueue::default();
        q.push(pending(Request::Simple));
        let (_, o) = q.on_server(backend::COMMAND_COMPLETE, Some(b"DISCARD ALL\0"), &mut |_| {});
        assert!(o.statements_dropped);
        let (_, o) = q.on_server(backend::COMMAND_COMPLETE, Some(b"DEALLOCATE\0"), &mut |_| {});
        assert!(!o.statements_dropped);
    }
}
