//! What a client's statements cost and are called: the client's names with the bytes they hold and the
//! limits on them, and pgsluice's server-side names (derived, unpredictable, and reserved in SQL text).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::Bytes;

use crate::protocol::{PgError, SqlState};
use crate::stats::HeldBytes;

use super::Statement;

/// The client's named statements, with the bytes they hold (names and Parse bodies), which
/// max_client_prepared_bytes bounds, counted also in the process's total (max_total_prepared_bytes).
#[derive(Debug, Default)]
pub(super) struct Names {
    map: HashMap<Bytes, Arc<Statement>>,
    pub(super) bytes: usize,
    pub(super) total: Arc<HeldBytes>,
}

impl Drop for Names {
    fn drop(&mut self) {
        self.total.sub(self.bytes);
    }
}

impl Names {
    pub(super) fn get(&self, name: &[u8]) -> Option<&Arc<Statement>> {
        self.map.get(name)
    }
    pub(super) fn contains_key(&self, name: &[u8]) -> bool {
        self.map.contains_key(name)
    }
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
    pub(super) fn insert(&mut self, name: Bytes, stmt: Arc<Statement>) {
        self.charge(name.len() + stmt.rest.len());
        if let Some(old) = self.map.insert(name.clone(), stmt) {
            self.release(name.len() + old.rest.len());
        }
    }
    pub(super) fn remove_entry(&mut self, name: &[u8]) -> Option<(Bytes, Arc<Statement>)> {
        let (name, stmt) = self.map.remove_entry(name)?;
        self.release(name.len() + stmt.rest.len());
        Some((name, stmt))
    }
    pub(super) fn remove(&mut self, name: &[u8]) -> Option<Arc<Statement>> {
        self.remove_entry(name).map(|(_, s)| s)
    }
    pub(super) fn clear(&mut self) {
        self.map = HashMap::new(); // gives the memory back, however many names there were
        self.release(self.bytes);
    }
    /// The error for one more statement of `size` bytes past the client's limits (54000) or what all
    /// clients together may hold (53200), if it would pass one.
    pub(super) fn refuses(&self, l: &HeldLimits, size: usize) -> Option<PgError> {
        let limit = |msg: String| Some(PgError::error(SqlState::PROGRAM_LIMIT_EXCEEDED, msg));
        if self.len() >= l.statements {
            return limit(format!("too many prepared statements ({}; max_client_prepared_statements)", l.statements));
        }
        if self.bytes + size > l.bytes {
            return limit(format!("prepared statements too large ({} bytes; max_client_prepared_bytes)", l.bytes));
        }
        (self.total.get() + size > l.total).then(|| {
            let msg =
                format!("prepared statements of all clients too large ({} bytes; max_total_prepared_bytes)", l.total);
            PgError::error(SqlState::OUT_OF_MEMORY, msg)
        })
    }

    fn charge(&mut self, n: usize) {
        self.bytes += n;
        self.total.add(n);
    }
    fn release(&mut self, n: usize) {
        let n = n.min(self.bytes);
        self.bytes -= n;
        self.total.sub(n);
    }
}

/// Limits on what one client may make pgsluice hold (see `Statements::set_limits`).
#[derive(Debug, Clone, Copy)]
pub struct HeldLimits {
    /// Largest named Parse held for preparing again on other servers (max_held_message_size).
    pub message: usize,
    /// Most named statements per client (max_client_prepared_statements).
    pub statements: usize,
    /// Most bytes of names and statement texts per client (max_client_prepared_bytes).
    pub bytes: usize,
    /// Most bytes of names and statement texts of all clients together (max_total_prepared_bytes).
    pub total: usize,
}

impl Default for HeldLimits {
    fn default() -> Self {
        HeldLimits { message: 4 << 20, statements: 10_000, bytes: 64 << 20, total: 1 << 30 }
    }
}

/// pgsluice's name for a statement: a hash of its text and parameter types, keyed by the pool's epoch
/// (random at start, so names cannot be predicted or collided on purpose).
pub(super) fn server_name_for(rest: &[u8], epoch: u64) -> Bytes {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    epoch.hash(&mut h);
    rest.hash(&mut h);
    Bytes::from(format!("pgsluice_{:016x}", h.finish()))
}

/// Whether SQL text names one of pgsluice's server-side statements (`server_name_for`): `pgsluice_`
/// in any case (unquoted identifiers are folded) followed by 16 hex digits.
pub(super) fn names_a_pooled_statement(text: &[u8]) -> bool {
    const PREFIX: &[u8] = b"pgsluice_";
    let mut at = 0;
    while let Some(i) = text.get(at..).and_then(|rest| memchr::memchr2(b'p', b'P', rest)) {
        let start = at + i;
        let name = text.get(start..start + PREFIX.len() + 16);
        if let Some(name) = name
            && name.get(..PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(PREFIX))
            && name.get(PREFIX.len()..).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
        {
            return true;
        }
        at = start + 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_statement_names_are_recognized_in_sql_text() {
        for yes in [
            &b"execute pgsluice_0123456789abcdef(1)"[..],
            b"DEALLOCATE PGSLUICE_0123456789ABCDEF",
            b"x\"pgsluice_ffffffffffffffff\"",
        ] {
            assert!(names_a_pooled_statement(yes), "{}", String::from_utf8_lossy(yes));
        }
        for no in [&b"select 'pgsluice_abort'"[..], b"pgsluice_0123", b"pgsluice_0123456789abcdeg", b""] {
            assert!(!names_a_pooled_statement(no), "{}", String::from_utf8_lossy(no));
        }
        let name = server_name_for(b"select 1\0\0\0", 42);
        assert!(names_a_pooled_statement(&name), "the names pgsluice makes are the ones it reserves");
    }
}
