//! What a server connection owes: the transaction status from the last ReadyForQuery and the replies
//! still outstanding. Pure and synchronous; it decides whether a server is provably clean.

use std::collections::VecDeque;

use crate::protocol::messages::TxStatus;
use crate::protocol::tags::frontend;

/// A client message still unanswered, as far as COPY FROM STDIN cares: the ones a ReadyForQuery answers,
/// the Executes that may turn out to be a COPY, and anything else (which would end a COPY).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Query,
    Sync,
    FunctionCall,
    Execute,
    Other,
}

impl Sent {
    fn is_answered_by_ready(self) -> bool {
        matches!(self, Sent::Query | Sent::Sync | Sent::FunctionCall)
    }

    /// A statement that may be the COPY a CopyInResponse is for.
    fn may_copy(self) -> bool {
        matches!(self, Sent::Query | Sent::Execute)
    }
}

/// Reply bookkeeping for one server connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    status: TxStatus,
    /// Query, Sync and FunctionCall messages sent whose ReadyForQuery has not arrived.
    outstanding: u32,
    /// Extended-protocol messages sent since the last Sync (a pipeline the server may still act on).
    unsynced: bool,
    /// The server is in COPY FROM STDIN mode: it ignores Sync and Flush until CopyDone or CopyFail.
    copy_in: bool,
    /// What was sent since the last ReadyForQuery arrived, in order (runs of `Other` as one): when a
    /// CopyInResponse comes, which Syncs the server will ignore depends on which statement is the COPY.
    /// At most `MAX_SENT` long; past that (a client pipelining without waiting for replies) it is
    /// dropped and `lost_track` set until every ReadyForQuery is in.
    sent: VecDeque<Sent>,
    /// `sent` overflowed: a CopyInResponse is then taken as ignoring no Sync (every reply is expected).
    lost_track: bool,
}

/// How many unanswered messages `Tracker::sent` keeps (a byte each).
const MAX_SENT: usize = 4096;

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            status: TxStatus::Idle,
            outstanding: 0,
            unsynced: false,
            copy_in: false,
            sent: VecDeque::new(),
            lost_track: false,
        }
    }
}

impl Tracker {
    /// Records a frontend message going to the server.
    #[inline]
    pub fn on_client(&mut self, tag: u8) {
        match tag {
            frontend::SYNC | frontend::FLUSH if self.copy_in => {} // ignored by the server during COPY FROM STDIN
            frontend::QUERY => self.sent_answered(Sent::Query),
            frontend::FUNCTION_CALL => self.sent_answered(Sent::FunctionCall),
            frontend::SYNC => {
                self.sent_answered(Sent::Sync);
                self.unsynced = false;
            }
            frontend::EXECUTE => {
                self.unsynced = true;
                self.record(Sent::Execute);
            }
            frontend::FLUSH => self.unsynced = true,
            frontend::COPY_DATA => {} // CopyData: the server stays in COPY
            _ => {
                if matches!(tag, frontend::PARSE | frontend::BIND | frontend::DESCRIBE | frontend::CLOSE) {
                    self.unsynced = true;
                }
                if matches!(tag, frontend::COPY_DONE | frontend::COPY_FAIL) {
                    self.copy_in = false;
                }
                // Anything else ends a COPY (CopyDone, CopyFail, or an error for a message out of place).
                if !self.sent.is_empty() && self.sent.back() != Some(&Sent::Other) {
                    self.record(Sent::Other);
                }
            }
        }
    }

    fn sent_answered(&mut self, what: Sent) {
        self.outstanding += 1;
        self.record(what);
    }

    fn record(&mut self, what: Sent) {
        if self.lost_track {
            return;
        }
        if self.sent.len() >= MAX_SENT {
            self.sent = VecDeque::new();
            self.lost_track = true;
            return;
        }
        self.sent.push_back(what);
    }

    /// Records a CopyInResponse. The COPY is a statement sent before the first message still owed a
    /// ReadyForQuery (those before it were answered already), and the server ignores the Syncs sent right
    /// after it, up to the client's CopyDone or CopyFail (or any other message). When more than one
    /// statement could be the COPY and they disagree on that, none is taken as ignored and the tracker stays
    /// out of COPY mode: it may then expect a ReadyForQuery that never comes (the server stays with its
    /// client), never the other way round.
    pub fn on_copy_in(&mut self) {
        if self.lost_track {
            self.copy_in = false;
            return;
        }
        let first_answered = self.sent.iter().position(|s| s.is_answered_by_ready()).unwrap_or(self.sent.len());
        let last_candidate = first_answered.min(self.sent.len().saturating_sub(1));
        let mut verdicts = (0..=last_candidate)
            .filter(|&i| self.sent.get(i).is_some_and(|s| s.may_copy()))
            .map(|i| (i, self.syncs_right_after(i)));
        let Some((at, (ignored, copy_goes_on))) = verdicts.next() else {
            self.copy_in = false; // no statement of ours could be a COPY: expect every reply
            return;
        };
        if verdicts.any(|(_, v)| v != (ignored, copy_goes_on)) {
            self.copy_in = false;
            return;
        }
        self.sent.drain(at + 1..at + 1 + ignored as usize);
        self.outstanding = self.outstanding.saturating_sub(ignored);
        self.copy_in = copy_goes_on;
        if ignored > 0 && !self.sent.iter().skip(at + 1).any(|s| *s == Sent::Sync) {
            self.unsynced = true; // the client owes the Sync that ends the COPY
        }
    }

    /// The Syncs sent right after `sent[at]`, and whether nothing else was sent after them.
    fn syncs_right_after(&self, at: usize) -> (u32, bool) {
        let run = self.sent.iter().skip(at + 1).take_while(|s| **s == Sent::Sync).count();
        (run as u32, at + 1 + run == self.sent.len())
    }

    /// Records an ErrorResponse: a COPY FROM STDIN it ends is over, and the server no longer ignores
    /// Sync (a client need not send CopyDone or CopyFail after the error).
    pub fn on_error(&mut self) {
        self.copy_in = false;
    }

    pub fn in_copy_in(&self) -> bool {
        self.copy_in
    }

    /// Records a ReadyForQuery from the server: it answers the oldest Query, Sync or FunctionCall.
    #[inline]
    pub fn on_ready(&mut self, status: TxStatus) {
        self.status = status;
        self.copy_in = false; // whatever the COPY was, it is over
        self.outstanding = self.outstanding.saturating_sub(1);
        while let Some(s) = self.sent.pop_front() {
            if s.is_answered_by_ready() {
                break;
            }
        }
        if self.sent.front() == Some(&Sent::Other) {
            self.sent.pop_front(); // ends nothing that is still unanswered
        }
        if self.outstanding == 0 && self.lost_track {
            self.lost_track = false; // what is still unanswered is at most Executes: taken as no COPY
        }
    }

    pub fn status(&self) -> TxStatus {
        self.status
    }

    /// Nothing in flight and no transaction open: the only state in which a server may be reused.
    pub fn is_clean(&self) -> bool {
        self.status == TxStatus::Idle && self.outstanding == 0 && !self.unsynced
    }

    /// Replies still owed by the server (the client expects them).
    pub fn outstanding(&self) -> u32 {
        self.outstanding
    }

    pub fn in_transaction(&self) -> bool {
        self.status != TxStatus::Idle
    }

    /// True when requests are in flight (a query is running or a pipeline is unsynced).
    pub fn busy(&self) -> bool {
        self.outstanding > 0 || self.unsynced
    }
}

#[cfg(test)]
#[path = "tracker_props.rs"]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_only_after_last_ready_for_query_idle() {
        let mut t = Tracker::default();
        t.on_client(frontend::QUERY);
        t.on_client(frontend::QUERY);
        assert!(!t.is_clean());
        t.on_ready(TxStatus::Idle);
        assert!(!t.is_clean(), "one reply still outstanding");
        t.on_ready(TxStatus::Idle);
        assert!(t.is_clean());
    }

    #[test]
    fn open_transaction_and_unsynced_pipeline_are_dirty() {
        let mut t = Tracker::default();
        t.on_client(frontend::QUERY);
        t.on_ready(TxStatus::InBlock);
        assert!(!t.is_clean());
        let mut t = Tracker::default();
        for tag in [frontend::PARSE, frontend::BIND, frontend::EXECUTE, frontend::FLUSH] {
            t.on_client(tag);
        }
        assert!(!t.is_clean(), "Flush without Sync keeps the server");
        t.on_client(frontend::SYNC);
        t.on_ready(TxStatus::Idle);
        assert!(t.is_clean());
    }

    #[test]
    fn an_error_ends_copy_in_without_copy_done() {
        let mut t = Tracker::default();
        for tag in [frontend::BIND, frontend::EXECUTE, frontend::SYNC] {
            t.on_client(tag);
        }
        t.on_copy_in();
        t.on_client(frontend::COPY_DATA);
        t.on_error(); // the row was bad; the client sends only Sync
        t.on_client(frontend::SYNC);
        t.on_ready(TxStatus::Idle);
        assert!(t.is_clean());
        // Simple protocol: the ReadyForQuery after the error ends it too.
        let mut t = Tracker::default();
        t.on_client(frontend::QUERY);
        t.on_copy_in();
        t.on_ready(TxStatus::Idle);
        assert!(!t.in_copy_in() && t.is_clean());
    }

    #[test]
    fn syncs_around_an_extended_copy_in_are_not_counted() {
        // libpq and tokio-postgres: Bind, Execute, Sync; CopyInResponse; CopyData, CopyDone, Sync.
        let mut t = Tracker::default();
        for tag in [frontend::BIND, frontend::EXECUTE, frontend::SYNC] {
            t.on_client(tag);
        }
        t.on_copy_in();
        for tag in [frontend::COPY_DATA, frontend::SYNC, frontend::COPY_DATA, frontend::COPY_DONE, frontend::SYNC] {
            t.on_client(tag);
        }
        assert_eq!(t.outstanding(), 1, "the server sends one ReadyForQuery");
        t.on_ready(TxStatus::Idle);
        assert!(t.is_clean());
    }

    #[test]
    fn a_copy_in_response_belongs_to_the_oldest_unanswered_statement() {
        // Found by the property test: the COPY is the first Execute, ended by CopyDone before the second
        // Execute and its Sync. The server ignores no Sync, so three Syncs get three ReadyForQuery.
        let mut t = Tracker::default();
        for tag in [frontend::EXECUTE, frontend::COPY_DATA, frontend::COPY_DONE, frontend::EXECUTE, frontend::SYNC] {
            t.on_client(tag);
        }
        t.on_copy_in();
        t.on_client(frontend::SYNC);
        t.on_ready(TxStatus::Idle);
        t.on_client(frontend::SYNC);
        t.on_ready(TxStatus::Idle);
        assert!(!t.is_clean(), "a ReadyForQuery is still owed");
        t.on_ready(TxStatus::Idle);
        assert!(t.is_clean());
    }

    #[test]
    fn a_copy_done_sent_before_the_copy_in_response_ends_the_copy() {
        // An eager client: Bind, Execute, Sync, CopyData, CopyDone, Sync before CopyInResponse arrives.
        // The first Sync is ignored, the second answered; Syncs after the CopyDone count.
        let mut t = Tracker::default();
        for tag in [
            frontend::BIND,
            frontend::EXECUTE,
            frontend::SYNC,
            frontend::COPY_DATA,
            frontend::COPY_DONE,
            frontend::SYNC,
        ] {
            t.on_client(tag);
        }
        t.on_copy_in();
        assert!(!t.in_copy_in(), "the client has ended it");
        t.on_client(frontend::SYNC);
        t.on_ready(TxStatus::Idle);
        assert!(!t.is_clean(), "the last Sync is still owed its ReadyForQuery");
        t.on_ready(TxStatus::Idle);
        assert!(t.is_clean());
    }

    #[test]
    fn an_ignored_sync_with_none_after_the_copy_leaves_the_pipeline_open() {
        let mut t = Tracker::default();
        for tag in [frontend::BIND, frontend::EXECUTE, frontend::SYNC, frontend::COPY_DATA, frontend::COPY_DONE] {
            t.on_client(tag);
        }
        t.on_copy_in();
        assert!(!t.is_clean(), "the only Sync was ignored: the client owes one");
        t.on_client(frontend::SYNC);
        t.on_ready(TxStatus::Idle);
        assert!(t.is_clean());
    }

    #[test]
    fn a_pipeline_that_never_waits_is_tracked_in_bounded_memory() {
        let mut t = Tracker::default();
        for _ in 0..3 * MAX_SENT {
            t.on_client(frontend::BIND);
            t.on_client(frontend::EXECUTE);
        }
        t.on_client(frontend::SYNC);
        assert!(t.sent.len() <= MAX_SENT);
        t.on_copy_in(); // which Execute is the COPY is no longer known: no Sync is taken as ignored
        assert_eq!((t.outstanding(), t.in_copy_in()), (1, false));
        t.on_ready(TxStatus::Idle);
        assert!(t.is_clean() && !t.lost_track);
    }
}
