//! SQL `PREPARE`, `EXECUTE` and `DEALLOCATE` under `session_state = isolate`: a client's statements get
//! names of pgsluice's (`pgsluice_<16 hex>`, keyed per client, so no other client can name them; the
//! pattern is reserved in SQL text) and follow the client: each server it lands on is given the
//! client's statements (and loses other clients'). Only simple-protocol Queries are renamed; a PREPARE
//! sent otherwise, or past the bounds here, keeps its name and pins its client instead.

use std::hash::{Hash, Hasher};

use crate::sql::{NameKind, prepared_statement_names};

/// Statements kept per client, the largest PREPARE text kept to prepare again, and the most bytes of
/// them per client. Past any of them a PREPARE keeps its own name, and pins its client instead.
const MAX_STATEMENTS: usize = 1000;
const MAX_TEXT: usize = 64 * 1024;
const MAX_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
struct SqlStatement {
    name: String,
    server_name: String,
    /// The PREPARE statement under `server_name`, as the client wrote it otherwise.
    prepare: String,
}

#[derive(Debug)]
pub struct SqlStatements {
    key: u64,
    list: Vec<SqlStatement>,
    /// A PREPARE or DEALLOCATE was renamed since `take_changed`: the transaction must be checked.
    changed: bool,
}

impl Default for SqlStatements {
    fn default() -> Self {
        SqlStatements { key: rand::random(), list: Vec::new(), changed: false }
    }
}

impl SqlStatements {
    fn server_name(&self, name: &str) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (self.key, name).hash(&mut h);
        format!("pgsluice_{:016x}", h.finish())
    }

    fn find(&self, name: &str) -> Option<&SqlStatement> {
        self.list.iter().find(|s| s.name == name)
    }

    /// A simple Query's body (NUL-terminated) with the client's statement names replaced by pgsluice's,
    /// or `None` when nothing is renamed. A new PREPARE is recorded at once; the check after the
    /// transaction keeps only what the server really has (`keep_present`).
    pub fn rename(&mut self, body: &[u8], backslash_quotes: bool) -> Option<Vec<u8>> {
        let text = body.strip_suffix(&[0]).unwrap_or(body);
        let mut replace: Vec<(std::ops::Range<usize>, String)> = Vec::new();
        for u in prepared_statement_names(text, backslash_quotes) {
            self.changed |= !matches!(u.kind, NameKind::Execute);
            match (&u.kind, self.find(&u.name)) {
                (NameKind::Prepare { statement }, None) => {
                    let held: usize = self.list.iter().map(|s| s.prepare.len()).sum();
                    if self.list.len() >= MAX_STATEMENTS
                        || statement.len() > MAX_TEXT
                        || held + statement.len() > MAX_BYTES
                    {
                        continue; // keeps its own name: the check pins the client to this server
                    }
                    let server_name = self.server_name(&u.name);
                    let prepare = format!(
                        "{}{server_name}{}",
                        String::from_utf8_lossy(&text[statement.start..u.span.start]),
                        String::from_utf8_lossy(&text[u.span.end..statement.end])
                    );
                    replace.push((u.span.clone(), server_name.clone()));
                    self.list.push(SqlStatement { name: u.name.clone(), server_name, prepare });
                }
                // A PREPARE of a name it has fails on the server as it would directly ("already exists").
                (NameKind::Prepare { .. } | NameKind::Execute | NameKind::Deallocate, Some(s)) => {
                    replace.push((u.span.clone(), s.server_name.clone()));
                }
                _ => {}
            }
        }
        if replace.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(body.len() + 32 * replace.len());
        let mut at = 0;
        for (span, name) in replace {
            out.extend_from_slice(&text[at..span.start]);
            out.extend_from_slice(name.as_bytes());
            at = span.end;
        }
        out.extend_from_slice(&text[at..]);
        out.push(0);
        Some(out)
    }

    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// After the check: the client's statements are those the server has (a PREPARE that failed, and
    /// a DEALLOCATE that ran, leave none).
    pub fn keep_present(&mut self, on_server: &[String]) {
        self.list.retain(|s| on_server.contains(&s.server_name));
    }

    /// Statements that make `on_server` (the server's SQL-prepared names) hold exactly the client's:
    /// the DEALLOCATEs of others' in one string, then each missing PREPARE (run one by one, so one that
    /// fails, say its table is gone, costs only itself).
    pub fn sync(&self, on_server: &[String]) -> (String, Vec<(String, String)>) {
        let mut deallocate = String::new();
        for name in on_server.iter().filter(|n| !self.list.iter().any(|s| &s.server_name == *n)) {
            deallocate.push_str("deallocate ");
            deallocate.push_str(name);
            deallocate.push(';');
        }
        let missing = self
            .list
            .iter()
            .filter(|s| !on_server.contains(&s.server_name))
            .map(|s| (s.server_name.clone(), s.prepare.clone()))
            .collect();
        (deallocate, missing)
    }

    /// pgsluice's names of the client's statements.
    pub fn server_names(&self) -> Vec<String> {
        self.list.iter().map(|s| s.server_name.clone()).collect()
    }

    /// Whether `on_server` holds exactly the client's statements.
    pub fn matches(&self, on_server: &[String]) -> bool {
        self.list.len() == on_server.len() && self.list.iter().all(|s| on_server.contains(&s.server_name))
    }

    /// A statement that could not be prepared again on a new server is gone for the client.
    pub fn forget(&mut self, server_name: &str) {
        self.list.retain(|s| s.server_name != server_name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: Option<Vec<u8>>) -> String {
        String::from_utf8(v.expect("renamed")).unwrap().trim_end_matches('\0').to_string()
    }

    #[test]
    fn names_are_the_clients_own_and_follow_it() {
        let (mut a, mut b) = (SqlStatements::default(), SqlStatements::default());
        let ra = text(a.rename(b"PREPARE p (int) AS select $1; execute p(1)\0", false));
        let rb = text(b.rename(b"prepare P as select 2\0", false));
        let (na, nb) = (a.list[0].server_name.clone(), b.list[0].server_name.clone());
        assert_ne!(na, nb, "the same name, two clients, two server names");
        assert_eq!(ra, format!("PREPARE {na} (int) AS select $1; execute {na}(1)"));
        assert_eq!(rb, format!("prepare {nb} as select 2"));
        assert_eq!(a.list[0].prepare, format!("PREPARE {na} (int) AS select $1"));
        // Unknown names, and words that only look like one, are left alone.
        assert!(a.rename(b"execute q; grant execute on function f() to x\0", false).is_none());
        assert_eq!(
            text(a.rename(b"explain execute p(2); deallocate prepare p\0", false)),
            format!("explain execute {na}(2); deallocate prepare {na}")
        );
        // What the server has decides.
        assert!(!a.matches(&[]));
        assert_eq!(
            a.sync(std::slice::from_ref(&nb)),
            (format!("deallocate {nb};"), vec![(na.clone(), a.list[0].prepare.clone())])
        );
        a.keep_present(&[]);
        assert!(a.list.is_empty() && a.matches(&[]));
    }
}
