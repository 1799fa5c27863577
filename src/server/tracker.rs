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
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker { status: TxStatus::Idle, outstanding: 0, unsynced: false }
    }
}

impl Tracker {
    /// Records a frontend message going to the server.
    #[inline]
    pub fn on_client(&mut self, tag: u8) {
        match tag {
            b'Q' | b'F' => self.outstanding += 1,
            b'S' => {
                self.outstanding += 1;
                self.unsynced = false;
            }
            b'P' | b'B' | b'E' | b'D' | b'C' | b'H' => self.unsynced = true,
            _ => {}
        }
    }

    /// Records a ReadyForQuery from the server.
    #[inline]
    pub fn on_ready(&mut self, status: TxStatus) {
        self.status = status;
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
}
