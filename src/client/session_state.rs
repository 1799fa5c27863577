//! `session_state = isolate` in transaction and statement mode: each client's session state stays its
//! own. Session settings (any parameter SET, RESET, SET ROLE, SET SESSION AUTHORIZATION or set_config
//! changes, besides the tracked reported ones in `params`) are read back from the server after the
//! transaction that may have changed them and re-applied wherever the client lands; state that cannot
//! follow a client (advisory locks, WITH HOLD cursors, LISTEN, temporary tables, SQL PREPARE) pins the
//! client to its server until the server says it is gone.
//!
//! Detection costs nothing extra per transaction that does none of this: a byte scan of statement texts
//! for the words no reply announces (`sql::mentions_session_state`) and a look at CommandComplete tags.
//! Only a transaction that hit one pays one round trip, the check, before its server is released.

use bytes::BytesMut;

use super::params::{ClientParams, push_literal};
use super::sql_prepared::SqlStatements;
use crate::config::{PoolMode, SessionStatePolicy};
use crate::protocol::messages::{put_cstr, put_message};
use crate::protocol::tags::frontend;
use crate::protocol::{PgError, SqlState};
use crate::server::{ServerConn, SessionRecord};

/// Why a client holds its server between transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    AdvisoryLock,
    HoldCursor,
    Listen,
    TemporaryTable,
    SqlPrepare,
    ComputedSetting,
}

impl Pin {
    pub fn as_str(self) -> &'static str {
        match self {
            Pin::AdvisoryLock => "advisory lock",
            Pin::HoldCursor => "WITH HOLD cursor",
            Pin::Listen => "LISTEN",
            Pin::TemporaryTable => "temporary table",
            Pin::SqlPrepare => "SQL PREPARE",
            Pin::ComputedSetting => "set_config with a computed name",
        }
    }

    fn from_check(name: &str) -> Option<Pin> {
        [Pin::AdvisoryLock, Pin::HoldCursor, Pin::Listen, Pin::TemporaryTable, Pin::SqlPrepare]
            .into_iter()
            .find(|p| p.as_str() == name)
    }
}

/// One round trip: the session's own settings (`s` rows: name, value) and the state that pins (`p` rows).
const CHECK_SQL: &str = "select 's', name, setting from pg_settings where source = 'session' \
    union all select 's', 'role', r from current_setting('role') r where r <> 'none' \
    union all select 's', 'session_authorization', a from current_setting('session_authorization') a \
        where a <> (select usename::text from pg_stat_activity where pid = pg_backend_pid()) \
    union all select 'p', 'advisory lock', null \
        where exists (select from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()) \
    union all select 'p', 'WITH HOLD cursor', null where exists (select from pg_cursors where is_holdable) \
    union all select 'p', 'LISTEN', null where exists (select from pg_listening_channels()) \
    union all select 'p', 'temporary table', null \
        where exists (select from pg_class where relnamespace = pg_my_temp_schema()) \
    union all select 'p', 'SQL PREPARE', null where exists (select from pg_prepared_statements \
        where from_sql and name !~ '^pgsluice_[0-9a-f]{16}$') \
    union all select 'q', name, null from pg_prepared_statements where from_sql and name ~ '^pgsluice_[0-9a-f]{16}$'";

/// What a pinned client's server runs when the client leaves, before the check proves it clean.
const CLEANUP_SQL: &str = "select pg_advisory_unlock_all(); close all; unlisten *; discard temp";

/// CommandComplete tags after which the session may hold settings or state it did not before (or no
/// longer holds what it did).
fn tag_touches_state(tag: &[u8]) -> bool {
    const TAGS: &[&[u8]] = &[
        b"SET",
        b"RESET",
        b"DISCARD ALL",
        b"DISCARD TEMP",
        b"LISTEN",
        b"UNLISTEN",
        b"DECLARE CURSOR",
        b"CLOSE CURSOR",
        b"CLOSE CURSOR ALL",
        b"PREPARE",
        b"DEALLOCATE",
        b"DEALLOCATE ALL",
        b"LOAD",
        b"CREATE TABLE",
        b"CREATE VIEW",
        b"CREATE SEQUENCE",
        b"CREATE FUNCTION",
        b"DROP TABLE",
        b"DROP VIEW",
        b"DROP SEQUENCE",
    ];
    TAGS.contains(&tag)
}

#[derive(Debug)]
pub struct SessionState {
    /// Isolating (transaction or statement mode, `session_state` isolate or refuse).
    active: bool,
    policy: SessionStatePolicy,
    /// Since the last check something may have changed the session's settings or state.
    unchecked: bool,
    pin: Option<Pin>,
    /// The client's session settings besides the tracked parameters, sorted by name.
    settings: Vec<(String, String)>,
    /// Named statements whose text mentions session state: each Bind of one is looked at too.
    flagged: std::collections::HashSet<Vec<u8>>,
    /// The client's SQL PREPAREd statements, under pgsluice's names.
    sql: SqlStatements,
    /// Custom parameters the client may have set (see `note_custom_settings`).
    custom_names: Vec<String>,
    /// The client called set_config with a computed name: pinned until it leaves.
    computed_setting: bool,
    /// More flagged names than kept: every Bind counts as one.
    every_bind: bool,
    refused: u64,
}

const REFUSE_HINT: &str = "Use a pool with pool_mode = session for clients that need session state.";

/// Where no reply queue can answer in PostgreSQL's place (prepared statements not rewritten), a refused
/// Query or Parse is replaced by one that makes PostgreSQL raise `err` itself when it runs. A Parse keeps
/// its name and parameter types (`params`, the bytes after its text), so its Describe and Bind still fit.
pub fn put_raising_statement(out: &mut BytesMut, tag: u8, name: &[u8], params: &[u8], err: &PgError) {
    let quote = |s: &str| s.replace('\'', "''");
    let sql = format!(
        "DO $pgsluice$BEGIN RAISE EXCEPTION USING ERRCODE = '{}', MESSAGE = '{}', HINT = '{}'; END$pgsluice$",
        err.code,
        quote(&err.message),
        quote(err.hint.unwrap_or_default())
    );
    put_message(out, tag, |b| {
        if tag == frontend::PARSE {
            put_cstr(b, name);
        }
        put_cstr(b, sql.as_bytes());
        if tag == frontend::PARSE {
            b.extend_from_slice(if params.len() >= 2 { params } else { &[0, 0] });
        }
    });
}

/// Custom parameters followed per client.
const MAX_CUSTOM: usize = 64;

/// Flagged statement names kept per client (beyond it, every Bind is treated as flagged).
const MAX_FLAGGED: usize = 1000;

impl SessionState {
    pub fn new(policy: SessionStatePolicy, mode: PoolMode) -> Self {
        let active = mode != PoolMode::Session && policy != SessionStatePolicy::Leak;
        SessionState {
            active,
            policy,
            unchecked: false,
            pin: None,
            settings: Vec::new(),
            flagged: Default::default(),
            sql: SqlStatements::default(),
            custom_names: Vec::new(),
            computed_setting: false,
            every_bind: false,
            refused: 0,
        }
    }

    /// RELOAD changed the pool's `session_state` or `pool_mode`: it applies from the next transaction.
    /// What the client already has is kept (its settings go on being applied while isolating).
    pub fn set_policy(&mut self, policy: SessionStatePolicy, mode: PoolMode) {
        self.policy = policy;
        self.active = mode != PoolMode::Session && policy != SessionStatePolicy::Leak;
    }

    pub fn active(&self) -> bool {
        self.active
    }

    /// In `refuse`, the error for a Query or Parse whose text would make session state.
    /// `backslash_quotes`: the client has standard_conforming_strings off.
    pub fn refusal(&mut self, tag: u8, body: Option<&[u8]>, backslash_quotes: bool) -> Option<PgError> {
        if !self.active || self.policy != SessionStatePolicy::Refuse {
            return None;
        }
        let text = match (tag, body) {
            (frontend::QUERY, Some(b)) => b,
            (frontend::PARSE, Some(b)) => b.get(memchr::memchr(0, b)? + 1..)?,
            _ => return None,
        };
        let what = crate::sql::first_refused(text, backslash_quotes)?;
        self.refused += 1;
        let msg = format!(
            "{what} is not allowed here: it would keep session state on a shared server (session_state = refuse)"
        );
        Some(PgError::error(SqlState::FEATURE_NOT_SUPPORTED, msg).with_hint(REFUSE_HINT))
    }

    /// Statements refused since the last `take_refused`.
    pub fn take_refused(&mut self) -> u64 {
        std::mem::take(&mut self.refused)
    }

    pub fn pin(&self) -> Option<Pin> {
        self.pin
    }

    /// A client message (`body`: `None` when too large to be looked at). For a simple Query that names
    /// the client's SQL prepared statements, the body to send instead (with pgsluice's names).
    pub fn on_client_message(&mut self, tag: u8, body: Option<&[u8]>, backslash_quotes: bool) -> Option<Vec<u8>> {
        match (tag, body) {
            (frontend::QUERY, Some(b)) => return self.on_query(b, backslash_quotes),
            (frontend::PARSE, Some(b)) => self.on_parse(b, backslash_quotes),
            (frontend::QUERY | frontend::PARSE, None) => self.on_unseen_statement(),
            (frontend::BIND, _) if self.wants_binds() => self.on_bind(body),
            _ => {}
        }
        None
    }

    /// A simple Query the client sent.
    fn on_query(&mut self, body: &[u8], backslash_quotes: bool) -> Option<Vec<u8>> {
        if !self.active {
            return None;
        }
        let found = crate::sql::mentions(body);
        self.unchecked |= found.state;
        self.note_custom_settings(body, found, backslash_quotes);
        if !found.prepared || self.policy != SessionStatePolicy::Isolate {
            return None;
        }
        let renamed = self.sql.rename(body, backslash_quotes);
        self.unchecked |= self.sql.take_changed();
        renamed
    }

    /// A Parse the client sent: its text, and (for a named statement) its later Binds.
    fn on_parse(&mut self, body: &[u8], backslash_quotes: bool) {
        if !self.active {
            return;
        }
        let name_end = memchr::memchr(0, body).unwrap_or(body.len());
        let text = body.get(name_end + 1..).unwrap_or_default();
        let found = crate::sql::mentions(text);
        self.note_custom_settings(text, found, backslash_quotes);
        if !found.state {
            return;
        }
        self.unchecked = true;
        let name = &body[..name_end];
        if !name.is_empty() {
            if self.flagged.len() < MAX_FLAGGED {
                self.flagged.insert(name.to_vec());
            } else {
                self.every_bind = true;
            }
        }
    }

    /// Custom parameters (`app.tenant`) the text may set: PostgreSQL lists none of them in pg_settings, so
    /// the check reads these back by name. Looked for only in a text with a dot and SET, RESET or
    /// set_config in it; at most `MAX_CUSTOM` names per client are followed.
    fn note_custom_settings(&mut self, text: &[u8], found: crate::sql::Mentions, backslash_quotes: bool) {
        let may_name_custom = found.setting && memchr::memchr(b'.', text).is_some();
        if !(found.state || may_name_custom) {
            return;
        }
        let custom = crate::sql::custom_setting_names(text, backslash_quotes);
        // A parameter whose name is computed cannot be read back: the client keeps its server.
        self.computed_setting |= custom.computed;
        for name in custom.names {
            if !self.custom_names.contains(&name) && self.custom_names.len() < MAX_CUSTOM {
                self.custom_names.push(name);
            }
        }
    }

    /// Whether Bind bodies are wanted (some named statement was flagged).
    pub fn wants_binds(&self) -> bool {
        self.every_bind || !self.flagged.is_empty()
    }

    /// A Bind the client sent (`None`: too large to look at).
    pub fn on_bind(&mut self, body: Option<&[u8]>) {
        let stmt = body.and_then(|b| {
            let portal_end = memchr::memchr(0, b)?;
            let rest = b.get(portal_end + 1..)?;
            rest.get(..memchr::memchr(0, rest)?)
        });
        if self.every_bind || stmt.is_none_or(|s| self.flagged.contains(s)) {
            self.unchecked |= self.active;
        }
    }

    /// A message too large to look at: it may do anything.
    pub fn on_unseen_statement(&mut self) {
        self.unchecked |= self.active;
    }

    /// A CommandComplete body from the server.
    pub fn on_command_complete(&mut self, body: &[u8]) {
        if self.active && !self.unchecked && tag_touches_state(body.strip_suffix(&[0]).unwrap_or(body)) {
            self.unchecked = true;
        }
    }

    /// Whether the server must be checked before it may go back to the pool.
    pub fn needs_check(&self) -> bool {
        self.active && self.unchecked
    }

    /// Reads the session's settings and pins from `conn` (idle, outside a transaction).
    pub async fn check(
        &mut self,
        conn: &mut ServerConn,
        tracked: &ClientParams,
    ) -> Result<(), crate::server::ServerError> {
        let mut rows = Vec::new();
        conn.query_internal(&self.check_sql(), Some(&mut rows)).await?;
        let mut settings = Vec::new();
        let mut pin = None;
        let mut sql_names = Vec::new();
        for row in rows {
            match row.as_slice() {
                [Some(kind), Some(name), value] if kind == "s" && tracked.canonical(name).is_none() => {
                    settings.push((name.clone(), value.clone().unwrap_or_default()));
                }
                [Some(kind), Some(name), _] if kind == "p" => pin = pin.or(Pin::from_check(name)),
                [Some(kind), Some(name), _] if kind == "q" => sql_names.push(name.clone()),
                _ => {}
            }
        }
        settings.sort();
        if self.computed_setting {
            pin = pin.or(Some(Pin::ComputedSetting));
        }
        self.sql.keep_present(&sql_names);
        conn.set_session(SessionRecord { settings: settings.clone(), sql_statements: sql_names });
        self.settings = settings;
        self.pin = pin;
        self.unchecked = false;
        Ok(())
    }

    /// CHECK_SQL, and the custom parameters the client may have set, read back by name.
    fn check_sql(&self) -> std::borrow::Cow<'static, str> {
        if self.custom_names.is_empty() {
            return CHECK_SQL.into();
        }
        let mut sql = String::from(CHECK_SQL);
        sql.push_str(" union all select 's', n, v from (values ");
        for (i, name) in self.custom_names.iter().enumerate() {
            sql.push_str(if i == 0 { "(" } else { ", (" });
            push_literal(&mut sql, name);
            sql.push_str(", current_setting(");
            push_literal(&mut sql, name);
            sql.push_str(", true))");
        }
        sql.push_str(") t(n, v) where v <> ''");
        sql.into()
    }

    /// A pinned client leaves: its server drops what pinned it and is checked; `Ok(true)` if clean.
    pub async fn clean_after(
        &mut self,
        conn: &mut ServerConn,
        tracked: &ClientParams,
    ) -> Result<bool, crate::server::ServerError> {
        match self.pin {
            Some(Pin::SqlPrepare) => conn.run_internal("deallocate all").await?,
            // What it set is unknown: every parameter goes back to its default (the next client's own
            // are applied again when it lands: reported ones from their ParameterStatus).
            Some(Pin::ComputedSetting) => {
                conn.run_internal("reset all").await?;
                self.computed_setting = false;
            }
            _ => {}
        }
        conn.run_internal(CLEANUP_SQL).await?;
        self.check(conn, tracked).await?;
        Ok(self.pin.is_none())
    }

    /// Statements that make `conn`'s session settings the client's, or `None` when they already are.
    /// Session authorization first (it resets the role), then the role, then the rest.
    pub fn sync_sql(&self, conn: &ServerConn) -> Option<String> {
        let on_server = conn.session();
        if !self.active || (self.settings == on_server.settings && self.sql.matches(&on_server.sql_statements)) {
            return None;
        }
        let get = |list: &[(String, String)], name: &str| list.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let mut sql = String::new();
        for (name, reset) in [("session_authorization", "reset session authorization;"), ("role", "reset role;")] {
            match get(&self.settings, name) {
                Some(v) => push_set_config(&mut sql, name, &v),
                None if get(&on_server.settings, name).is_some() || name == "role" => sql.push_str(reset),
                None => {}
            }
        }
        for (name, _) in &on_server.settings {
            if !is_identity(name) && get(&self.settings, name).is_none() {
                sql.push_str("reset \"");
                sql.push_str(&name.replace('"', "\"\""));
                sql.push_str("\";");
            }
        }
        for (name, value) in &self.settings {
            if !is_identity(name) && get(&on_server.settings, name).as_ref() != Some(value) {
                push_set_config(&mut sql, name, value);
            }
        }
        sql.push_str(&self.sql.sync(&on_server.sql_statements).0);
        Some(sql)
    }

    /// The client's SQL statements `conn` lacks: (pgsluice's name, the PREPARE to run).
    pub fn missing_statements(&self, conn: &ServerConn) -> Vec<(String, String)> {
        self.sql.sync(&conn.session().sql_statements).1
    }

    /// One of them could not be prepared on the new server: it is gone for the client.
    pub fn forget_statement(&mut self, server_name: &str) {
        self.sql.forget(server_name);
    }

    /// After `sync_sql` ran on `conn`.
    pub fn after_sync(&self, conn: &mut ServerConn) {
        conn.set_session(SessionRecord { settings: self.settings.clone(), sql_statements: self.sql.server_names() });
    }
}

fn is_identity(name: &str) -> bool {
    name == "role" || name == "session_authorization"
}

fn push_set_config(sql: &mut String, name: &str, value: &str) {
    sql.push_str("select set_config(");
    push_literal(sql, name);
    sql.push_str(", ");
    push_literal(sql, value);
    sql.push_str(", false);");
}
