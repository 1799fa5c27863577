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
    /// `parse`: set for a Parse pgsluice rewrote, to forget the statement if it fails.
    Pending { request: Request, swallow: bool, parse: Option<Prepared> },
    /// A reply pgsluice sends itself when its turn comes.
    Synth(Bytes),
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
    /// A rewritten Parse failed: forget this statement on the server and (if named) for the client.
    pub failed_parse: Option<Prepared>,
}

#[derive(Debug, Default)]
pub struct ReplyQueue {
    entries: VecDeque<Entry>,
    /// Entries that are not plain pass-through (Synth, or swallowed).
    special: usize,
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
    pub fn on_server(&mut self, tag: u8, out: &mut impl FnMut(Bytes)) -> (Verdict, Outcome) {
        let mut outcome = Outcome::default();
        if matches!(tag, b'N' | b'A' | b'S') {
            return (Verdict::Pass, outcome); // asynchronous: belongs to no request
        }
        self.take_due(out);
        let Some(&Entry::Pending { request, swallow, .. }) = self.entries.front() else {
            return (Verdict::Pass, outcome); // nothing tracked (e.g. COPY data): pass
        };
        let verdict = if swallow && tag != b'E' { Verdict::Swallow } else { Verdict::Pass };
        if tag == b'E' && !matches!(request, Request::Simple | Request::Sync) {
            if let Some(Entry::Pending { parse, .. }) = self.pop() {
                outcome.failed_parse = parse;
            }
            self.abort_until_sync();
        } else if tag == b'Z' {
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
    fn abort_until_sync(&mut self) {
        while let Some(e) = self.entries.front() {
            if matches!(e, Entry::Pending { request: Request::Sync, .. }) {
                return;
            }
            self.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(request: Request) -> Entry {
        Entry::Pending { request, swallow: false, parse: None }
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
        assert_eq!(q.on_server(b'2', &mut emit).0, Verdict::Pass);
        assert_eq!(q.on_server(b'D', &mut emit).0, Verdict::Pass);
        assert_eq!(q.on_server(b'C', &mut emit).0, Verdict::Pass);
        assert_eq!(q.on_server(b'Z', &mut emit).0, Verdict::Pass);
        assert!(q.is_empty());
        assert_eq!(out, vec![Bytes::from_static(b"1")]);
    }

    #[test]
    fn injected_parse_is_swallowed_and_errors_skip_to_sync() {
        let mut q = ReplyQueue::default();
        q.push(Entry::Pending { request: Request::Parse, swallow: true, parse: None });
        q.push(pending(Request::Bind));
        q.push(Entry::Synth(Bytes::from_static(b"3")));
        q.push(pending(Request::Execute));
        q.push(pending(Request::Sync));
        let mut out = Vec::new();
        let mut emit = |b: Bytes| out.push(b);
        assert_eq!(q.on_server(b'1', &mut emit).0, Verdict::Swallow);
        assert_eq!(q.on_server(b'E', &mut emit).0, Verdict::Pass, "the Bind failed");
        assert_eq!(q.on_server(b'Z', &mut emit).0, Verdict::Pass);
        q.take_due(&mut emit);
        assert!(q.is_empty());
        assert!(out.is_empty(), "the CloseComplete after the error is never sent");
    }
}
