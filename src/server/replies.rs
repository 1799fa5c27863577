//! The replies a server owes, in order, when pgsluice rewrites a client's extended-protocol stream
//! (prepared statements): which replies go to the client, which are pgsluice's own (an injected Parse,
//! an eviction Close) and are swallowed, and which the client expects but pgsluice answers itself
//! (ParseComplete for a statement the server already had, CloseComplete). Pure; used by `client/`.

use std::collections::VecDeque;

use bytes::Bytes;

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
}

impl Request {
    /// Whether a reply with `tag` is the last one for this request.
    fn completed_by(self, tag: u8) -> bool {
        match self {
            Request::Parse => tag == b'1',
            Request::Bind => tag == b'2',
            Request::DescribeStatement | Request::DescribePortal => matches!(tag, b'T' | b'n'),
            Request::Execute => matches!(tag, b'C' | b'I' | b's'),
            Request::Close => tag == b'3',
            Request::Sync | Request::Simple => tag == b'Z',
        }
    }
}

/// A server-side statement name, and the client name it was recorded under (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub server_name: Bytes,
    pub client_name: Option<Bytes>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A request forwarded to the server. `swallow`: pgsluice's own, its replies never reach the client.
    /// `parse`: set for a Parse pgsluice rewrote, to forget the statement if it fails. `bind`: set for a
    /// Bind pgsluice rewrote, to recognize a stale cached plan (see `PlanChanged`).
    Pending { request: Request, swallow: bool, parse: Option<Prepared>, bind: Option<BoundStatement> },
    /// A reply pgsluice sends itself when its turn comes.
    Synth(Bytes),
}

impl Entry {
    /// A request whose replies go to the client.
    pub fn pass(request: Request) -> Entry {
        Entry::Pending { request, swallow: false, parse: None, bind: None }
    }

    /// pgsluice's own request: its replies are swallowed.
    pub fn swallowed(request: Request) -> Entry {
        Entry::Pending { request, swallow: true, parse: None, bind: None }
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
    /// Rewritten Parses that failed or were skipped after an error: forget these statements on the
    /// server and (if named) for the client.
    pub failed_parse: Vec<Prepared>,
    /// At a ReadyForQuery: the held plan-change error of this batch. The caller either retries or sends
    /// `error` to the client ahead of the ReadyForQuery.
    pub plan_changed: Option<PlanChanged>,
}

#[derive(Debug, Default)]
pub struct ReplyQueue {
    entries: VecDeque<Entry>,
    /// Entries that are not plain pass-through (Synth, or swallowed).
    special: usize,
    held_error: Option<PlanChanged>,
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
        if matches!(entry, Entry::Synth(_) | Entry::Pending { swallow: true, .. }) {
            self.special += 1;
        }
        self.entries.push_back(entry);
    }

    fn pop(&mut self) -> Option<Entry> {
        let e = self.entries.pop_front()?;
        if matches!(e, Entry::Synth(_) | Entry::Pending { swallow: true, .. }) {
            self.special -= 1;
        }
        Some(e)
    }

    /// Synthesized replies now due (nothing owed by the server before them), appended to `out`.
    pub fn take_due(&mut self, out: &mut impl FnMut(Bytes)) {
        while let Some(Entry::Synth(_)) = self.entries.front() {
            if let Some(Entry::Synth(b)) = self.pop() {
                out(b);
            }
        }
    }

    /// Accounts for one server message. Synthesized replies due before it are handed to `out`; those
    /// due after it are collected by the caller's next `take_due`.
    /// `body` is the message body when the caller holds it whole (ErrorResponse must be held).
    pub fn on_server(&mut self, tag: u8, body: Option<&[u8]>, out: &mut impl FnMut(Bytes)) -> (Verdict, Outcome) {
        let mut outcome = Outcome::default();
        if matches!(tag, b'N' | b'A' | b'S') {
            return (Verdict::Pass, outcome); // asynchronous: belongs to no request
        }
        self.take_due(out);
        let Some(Entry::Pending { request, swallow, bind, .. }) = self.entries.front() else {
            return (Verdict::Pass, outcome); // nothing tracked (e.g. COPY data): pass
        };
        let (request, swallow) = (*request, *swallow);
        let mut verdict = if swallow && tag != b'E' { Verdict::Swallow } else { Verdict::Pass };
        if tag == b'E' && !matches!(request, Request::Simple | Request::Sync) {
            if let (Some(bind), Some(body)) = (bind, body)
                && is_plan_change_error(body)
            {
                let mut error = bytes::BytesMut::with_capacity(5 + body.len());
                crate::protocol::messages::put_message(&mut error, b'E', |b| b.extend_from_slice(body));
                let (server_name, replayable) = (bind.server_name.clone(), bind.replayable);
                self.held_error = Some(PlanChanged { server_name, replayable, error: error.freeze() });
                verdict = Verdict::Swallow;
            }
            if let Some(Entry::Pending { parse, .. }) = self.pop() {
                outcome.failed_parse.extend(parse);
            }
            self.abort_until_sync(&mut outcome.failed_parse);
        } else if tag == b'Z' {
            outcome.plan_changed = self.held_error.take();
            // ReadyForQuery ends everything up to its Sync or Query, whatever was still open.
            while let Some(e) = self.pop() {
                if matches!(e, Entry::Pending { request: Request::Sync | Request::Simple, .. }) {
                    break;
                }
            }
        } else if request.completed_by(tag) {
            self.pop();
        }
        (verdict, outcome)
    }

    /// Drops what the server will skip after an error: everything before the next Sync.
    fn abort_until_sync(&mut self, skipped_parses: &mut Vec<Prepared>) {
        while let Some(e) = self.entries.front() {
            if matches!(e, Entry::Pending { request: Request::Sync, .. }) {
                return;
            }
            if let Some(Entry::Pending { parse: Some(p), .. }) = self.pop() {
                skipped_parses.push(p);
            }
        }
    }

    /// A CopyInResponse: the server ignores the Syncs sent since the COPY's Execute.
    pub fn on_copy_in(&mut self) {
        self.entries.retain(|e| !matches!(e, Entry::Pending { request: Request::Sync, .. }));
    }
}

/// PostgreSQL's 0A000 "cached plan must not change result type", raised when a prepared statement's
/// result columns changed under it (DDL since it was prepared).
fn is_plan_change_error(body: &[u8]) -> bool {
    let mut code_ok = false;
    let mut message_ok = false;
    for field in body.split(|b| *b == 0) {
        match field.split_first() {
            Some((b'C', v)) => code_ok = v == b"0A000",
            // The message may be translated; the routine name is not.
            Some((b'M', v)) => message_ok |= v == b"cached plan must not change result type",
            Some((b'R', v)) => message_ok |= v == b"RevalidateCachedQuery",
            _ => {}
        }
    }
    code_ok && message_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(request: Request) -> Entry {
        Entry::pass(request)
    }

    #[test]
    fn synthesized_parse_complete_goes_before_bind_complete() {
        let mut q = ReplyQueue::default();
        q.push(Entry::Synth(Bytes::from_static(b"1")));
        q.push(pending(Request::Bind));
        q.push(pending(Request::Execute));
        q.push(pending(Request::Sync));
        let mut out = Vec::new();
        let mut emit = |b: Bytes| out.push(b);
        assert_eq!(q.on_server(b'2', None, &mut emit).0, Verdict::Pass);
        assert_eq!(q.on_server(b'D', None, &mut emit).0, Verdict::Pass);
        assert_eq!(q.on_server(b'C', None, &mut emit).0, Verdict::Pass);
        assert_eq!(q.on_server(b'Z', None, &mut emit).0, Verdict::Pass);
        assert!(q.is_empty());
        assert_eq!(out, vec![Bytes::from_static(b"1")]);
    }

    #[test]
    fn injected_parse_is_swallowed_and_errors_skip_to_sync() {
        let mut q = ReplyQueue::default();
        q.push(Entry::swallowed(Request::Parse));
        q.push(pending(Request::Bind));
        q.push(Entry::Synth(Bytes::from_static(b"3")));
        q.push(pending(Request::Execute));
        q.push(pending(Request::Sync));
        let mut out = Vec::new();
        let mut emit = |b: Bytes| out.push(b);
        assert_eq!(q.on_server(b'1', None, &mut emit).0, Verdict::Swallow);
        assert_eq!(q.on_server(b'E', None, &mut emit).0, Verdict::Pass, "the Bind failed");
        assert_eq!(q.on_server(b'Z', None, &mut emit).0, Verdict::Pass);
        q.take_due(&mut emit);
        assert!(q.is_empty());
        assert!(out.is_empty(), "the CloseComplete after the error is never sent");
    }
}
