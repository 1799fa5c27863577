//! The reported parameters a client believes in (client_encoding, DateStyle, TimeZone, ...), kept per
//! client and re-applied to whichever server the client lands on.

use crate::server::ServerConn;

/// Parameters tracked for every client, in PostgreSQL's canonical spelling. extra_float_digits is not
/// reported by the server, but JDBC, sqlx and others send it at startup (PgBouncer refuses it unless
/// listed in ignore_startup_parameters); tracking it honours the client's value instead.
pub const TRACKED: &[&str] = &[
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "IntervalStyle",
    "standard_conforming_strings",
    "application_name",
    "extra_float_digits",
];

/// Startup parameters handled by pgsluice itself rather than passed to a server.
pub const PROTOCOL_PARAMS: &[&str] = &["user", "database"];

#[derive(Debug, Clone, Default)]
pub struct ClientParams {
    /// (canonical name, value) for every tracked parameter the client has a value for.
    values: Vec<(String, String)>,
    /// Which names are tracked (TRACKED plus track_extra_parameters).
    names: Vec<String>,
    /// Hash of `values`, never 0: a server synced to the same fingerprint needs no SET.
    fingerprint: u64,
}

impl ClientParams {
    pub fn new(extra: &[String]) -> Self {
        let mut names: Vec<String> = TRACKED.iter().map(|s| s.to_string()).collect();
        for e in extra {
            if !names.iter().any(|n| n.eq_ignore_ascii_case(e)) {
                names.push(e.clone());
            }
        }
        let mut p = ClientParams { values: Vec::new(), names, fingerprint: 0 };
        p.refresh_fingerprint();
        p
    }

    /// The canonical name if `name` is tracked.
    pub fn canonical(&self, name: &str) -> Option<&str> {
        self.names.iter().find(|n| n.eq_ignore_ascii_case(name)).map(|s| s.as_str())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    fn refresh_fingerprint(&mut self) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for name in &self.names {
            (name, self.get(name)).hash(&mut h);
        }
        self.fingerprint = h.finish().max(1);
    }

    /// Sets a tracked parameter; untracked names are ignored.
    pub fn set(&mut self, name: &str, value: &str) {
        let Some(canon) = self.canonical(name).map(str::to_string) else {
            return;
        };
        match self.values.iter_mut().find(|(k, _)| *k == canon) {
            Some((_, v)) => {
                if v != value {
                    *v = value.to_string();
                }
            }
            None => self.values.push((canon, value.to_string())),
        }
        self.refresh_fingerprint();
    }

    /// Fills parameters the client did not choose from a server's welcome values.
    pub fn default_from(&mut self, welcome: &[(String, String)]) {
        for (k, v) in welcome {
            if self.canonical(k).is_some() && self.get(k).is_none() {
                self.set(k, v);
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// SET statements that make `server` agree with this client, or `None` when it already does.
    /// A tracked parameter the client has no value for, but that an earlier client SET on this server
    /// (only recorded ones: PostgreSQL does not report every parameter), is RESET.
    pub fn sync_sql(&self, server: &ServerConn) -> Option<String> {
        let mut sql = String::new();
        for name in &self.names {
            if self.get(name).is_none() && server.set_by_proxy(name) && is_plain_name(name) {
                sql.push_str("RESET ");
                sql.push_str(name);
                sql.push(';');
            }
        }
        for (k, v) in &self.values {
            if server.param(k) == Some(v.as_str()) || !is_plain_name(k) {
                continue;
            }
            if k == "client_encoding" && server.param(k).is_none() {
                continue;
            }
            sql.push_str("SET ");
            sql.push_str(k);
            sql.push_str(" = ");
            push_literal(&mut sql, v);
            sql.push(';');
        }
        (!sql.is_empty()).then_some(sql)
    }

    /// After syncing: record what was SET on the server (for parameters it does not report), and
    /// adopt the server's spelling of each value (e.g. `utc` -> `UTC`) so the next comparison does not SET again.
    pub fn after_sync(&mut self, server: &mut ServerConn) {
        for name in &self.names {
            if self.get(name).is_none() {
                server.forget_param(name);
            }
        }
        for (k, v) in &self.values {
            if server.param(k) != Some(v.as_str()) && !server.reported(k) {
                server.record_set(k, v);
            }
        }
        for (k, v) in self.values.iter_mut() {
            if let Some(sv) = server.param(k)
                && sv.eq_ignore_ascii_case(v)
                && sv != v
            {
                *v = sv.to_string();
            }
        }
        self.refresh_fingerprint();
        server.set_synced_fingerprint(self.fingerprint);
    }
}

fn is_plain_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

/// Appends a SQL string literal (E'' form, escaping quotes and backslashes).
pub(super) fn push_literal(out: &mut String, v: &str) {
    out.push_str("E'");
    for ch in v.chars() {
        match ch {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_escaping() {
        let mut s = String::new();
        push_literal(&mut s, "a'b\\c");
        assert_eq!(s, "E'a''b\\\\c'");
    }

    #[test]
    fn names_are_case_insensitive_and_canonical() {
        let mut p = ClientParams::new(&["search_path".to_string()]);
        p.set("timezone", "UTC");
        p.set("SEARCH_PATH", "public");
        p.set("work_mem", "1MB");
        assert_eq!(p.get("TimeZone"), Some("UTC"));
        assert_eq!(p.iter().map(|(k, _)| k).collect::<Vec<_>>(), vec!["TimeZone", "search_path"]);
    }
}
