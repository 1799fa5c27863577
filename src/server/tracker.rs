//! What a server connection owes: the transaction status from the last ReadyForQuery and the replies
//! still outstanding. Pure and synchronous; it decides whether a server is provably clean.

use crate::protocol::messages::TxStatus;

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
    /// Syncs sent since the last Execute or Query: if that statement turns out to be a COPY FROM STDIN,
    /// the server ignores them.
    syncs_since_execute: u32,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker { status: TxStatus::Idle, outstanding: 0, unsynced: false, copy_in: false, syncs_since_execute: 0 }
    }
}

impl Tracker {
    /// Records a frontend message going to the server.
    #[inline]
    pub fn on_client(&mut self, tag: u8) {
        match tag {
            b'S' | b'H' if self.copy_in => {} // ignored by the server during COPY FROM STDIN
            b'Q' | b'F' => {
                self.outstanding += 1;
                self.syncs_since_execute = 0;
            }
            b'S' => {
                self.outstanding += 1;
                self.unsynced = false;
                self.syncs_since_execute += 1;
            }
            b'E' => {
                self.unsynced = true;
                self.syncs_since_execute = 0;
            }
            b'P' | b'B' | b'D' | b'C' | b'H' => self.unsynced = true,
            b'c' | b'f' => self.copy_in = false,
            _ => {}
        }
    }

    /// Records a CopyInResponse: Syncs already sent after the COPY's Execute will be ignored, as will
    /// any sent before the client's CopyDone or CopyFail.
    pub fn on_copy_in(&mut self) {
        self.copy_in = true;
        self.outstanding = self.outstanding.saturating_sub(self.syncs_since_execute);
        if self.syncs_since_execute > 0 {
            self.unsynced = true; // the client owes the Sync that ends the COPY
        }
        self.syncs_since_execute = 0;
    }

    /// Records an ErrorResponse: a COPY FROM STDIN it ends is over, and the server no longer ignores
    /// Sync (a client need not send CopyDone or CopyFail after the error).
    pub fn on_error(&mut self) {
        self.copy_in = false;
    }

    pub fn in_copy_in(&self) -> bool {
        self.copy_in
    }

    /// Records a ReadyForQuery from the server.
    #[inline]
    pub fn on_ready(&mut self, status: TxStatus) {
        self.status = status;
        self.copy_in = false; // whatever the COPY was, it is over
        self.outstanding = self.outstanding.saturating_sub(1);
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
mod tests {
    use super::*;

    #[test]
    fn clean_only_after_last_ready_for_query_idle() {
        let mut t = Tracker::default();
        t.on_client(b'Q');
        t.on_client(b'Q');
        assert!(!t.is_clean());
        t.on_ready(TxStatus::Idle);
        assert!(!t.is_clean(), "one reply still outstanding");
        t.on_ready(TxStatus::Idle);
        assert!(t.is_clean());
    }

    #[test]
    fn open_transaction_and_unsynced_pipeline_are_dirty() {
        let mut t = Tracker::default();
        t.on_client(b'Q');
        t.on_ready(TxStatus::InBlock);
        assert!(!t.is_clean());
        let mut t = Tracker::default();
        for tag in [b'P', b'B', b'E', b'H'] {
            t.on_client(tag);
        }
        assert!(!t.is_clean(), "Flush without Sync keeps the server");
        t.on_client(b'S');
        t.on_ready(TxStatus::Idle);
        assert!(t.is_clean());
    }

    #[test]
    fn an_error_ends_copy_in_without_copy_done() {
        let mut t = Tracker::default();
        for tag in [b'B', b'E', b'S'] {
            t.on_client(tag);
        }
        t.on_copy_in();
        t.on_client(b'd');
        t.on_error(); // the row was bad; the client sends only Sync
        t.on_client(b'S');
        t.on_ready(TxStatus::Idle);
        assert!(t.is_clean());
        // Simple protocol: the ReadyForQuery after the error ends it too.
        let mut t = Tracker::default();
        t.on_client(b'Q');
        t.on_copy_in();
        t.on_ready(TxStatus::Idle);
        assert!(!t.in_copy_in() && t.is_clean());
    }

    #[test]
    fn syncs_around_an_extended_copy_in_are_not_counted() {
        // libpq and tokio-postgres: Bind, Execute, Sync; CopyInResponse; CopyData, CopyDone, Sync.
        let mut t = Tracker::default();
        for tag in [b'B', b'E', b'S'] {
            t.on_client(tag);
        }
        t.on_copy_in();
        for tag in [b'd', b'S', b'd', b'c', b'S'] {
            t.on_client(tag);
        }
        assert_eq!(t.outstanding(), 1, "the server sends one ReadyForQuery");
        t.on_ready(TxStatus::Idle);
        assert!(t.is_clean());
    }
}
