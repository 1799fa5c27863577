//! PgBouncer drop-in: reads a pgbouncer.ini (sections `[databases]`, `[users]`, `[peers]`, `[pgbouncer]`, with
//! `%include`s: see `ini_file`) and turns it into pgsluice's TOML, so `pgsluice --pgbouncer-ini` runs
//! from an existing config and `pgsluice convert` prints the equivalent. Every setting pgsluice has is
//! carried over under its name, in each section PgBouncer allows it; everything else is reported (never
//! silently ignored).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use toml::{Table, Value};

use super::ini_file::{self, IniLine};
use super::pgbouncer_names::is_pgbouncer_setting;
use super::{ConfigError, General};

/// When a value in a `[databases]` or `[users]` entry means "not set here" (the general setting applies),
/// as PgBouncer reads it.
#[derive(Debug, Clone, Copy)]
enum Unset {
    /// Every value is the entry's own.
    Never,
    /// Below 0 (PgBouncer's -1).
    Negative,
    /// 0 or below: PgBouncer takes only a positive value over the general one.
    NotPositive,
}

/// Connection-string keys of a `[databases]` entry pgsluice honours: PgBouncer name, pgsluice name.
const DATABASE: &[(&str, &str, Kind, Unset)] = &[
    ("host", "host", Kind::Str, Unset::Never),
    ("port", "port", Kind::Int, Unset::Never),
    ("dbname", "dbname", Kind::Str, Unset::Never),
    ("user", "user", Kind::Str, Unset::Never),
    ("password", "password", Kind::Str, Unset::Never),
    ("pool_size", "pool_size", Kind::Int, Unset::Negative),
    ("min_pool_size", "min_pool_size", Kind::Int, Unset::Negative),
    ("reserve_pool", "reserve_pool_size", Kind::Int, Unset::Negative),
    ("reserve_pool_size", "reserve_pool_size", Kind::Int, Unset::Negative),
    ("max_db_connections", "max_db_connections", Kind::Int, Unset::NotPositive),
    ("max_db_client_connections", "max_db_client_connections", Kind::Int, Unset::NotPositive),
    ("server_lifetime", "server_lifetime", Kind::Num, Unset::NotPositive),
    ("query_wait_timeout", "query_wait_timeout", Kind::Num, Unset::Negative),
    ("pool_mode", "pool_mode", Kind::Str, Unset::Never),
    ("session_state", "session_state", Kind::Str, Unset::Never),
    ("load_balance_hosts", "load_balance_hosts", Kind::Str, Unset::Never),
    ("auth_user", "auth_user", Kind::Str, Unset::Never),
    ("auth_query", "auth_query", Kind::Str, Unset::Never),
    ("auth_dbname", "auth_dbname", Kind::Str, Unset::Never),
];

/// Keys of a `[users]` entry pgsluice honours (the same names in both).
const USER: &[(&str, Kind, Unset)] = &[
    ("pool_mode", Kind::Str, Unset::Never),
    ("session_state", Kind::Str, Unset::Never),
    ("pool_size", Kind::Int, Unset::Negative),
    ("reserve_pool_size", Kind::Int, Unset::Negative),
    ("max_user_connections", Kind::Int, Unset::NotPositive),
    ("max_user_client_connections", Kind::Int, Unset::NotPositive),
    ("query_wait_timeout", Kind::Num, Unset::Negative),
    ("query_timeout", Kind::Num, Unset::NotPositive),
    ("idle_transaction_timeout", Kind::Num, Unset::NotPositive),
    ("transaction_timeout", Kind::Num, Unset::NotPositive),
    ("client_idle_timeout", Kind::Num, Unset::NotPositive),
];

/// Keys of a `[peers]` entry (PgBouncer's: all pgsluice has).
const PEER: &[(&str, Kind, Unset)] =
    &[("host", Kind::Str, Unset::Never), ("port", Kind::Int, Unset::Never), ("pool_size", Kind::Int, Unset::Negative)];

#[derive(Debug, Clone, Copy)]
enum Kind {
    Str,
    Int,
    Num,
    Bool,
}

/// How a `[pgbouncer]` key's value is typed: every `[pgsluice]` setting is read (pgsluice's own too),
/// typed as its default is.
fn general_kind(key: &str) -> Option<Kind> {
    static DEFAULTS: OnceLock<Table> = OnceLock::new();
    if !General::keys().contains(&key) {
        return None;
    }
    let defaults = DEFAULTS.get_or_init(|| match Value::try_from(General::default()) {
        Ok(Value::Table(t)) => t,
        _ => Table::new(),
    });
    Some(match defaults.get(key) {
        Some(Value::Integer(_) | Value::Float(_)) => Kind::Num,
        Some(Value::Boolean(_)) => Kind::Bool,
        _ => Kind::Str,
    })
}

/// The TOML text, what could not be carried over (one line each), and where each TOML key came from.
pub struct Converted {
    pub toml: String,
    pub unsupported: Vec<String>,
    /// TOML key path (`databases.app.pool_size`, and `databases.app` for the entry) -> the ini line and
    /// the key as written there (`[databases] app: pool_size`).
    pub origins: BTreeMap<String, (PathBuf, usize, String)>,
}

impl Converted {
    /// An error about TOML key `key` told in the ini's terms: its file, line and key, when known (a key
    /// the entry does not have, such as a missing `user`, is told as the entry's).
    pub fn locate(&self, key: &str, reason: &str) -> Option<ConfigError> {
        let ((path, line, written), leaf) = match self.origins.get(key) {
            Some(o) => (o, None),
            None => {
                let (parent, leaf) = key.rsplit_once('.')?;
                (self.origins.get(parent)?, Some(leaf))
            }
        };
        let written = match leaf {
            Some(leaf) => format!("{written}: {leaf}"),
            None => written.clone(),
        };
        // A serde error's line is one of the generated TOML, not of the ini.
        let reason = match reason.rfind(" (line ") {
            Some(at) if reason.ends_with(')') => &reason[..at],
            _ => reason,
        };
        Some(ConfigError::AtLine { path: path.clone(), line: *line, reason: format!("{written}: {reason}") })
    }
}

fn typed(kind: Kind, raw: &str) -> Result<Value, String> {
    let raw = raw.trim();
    let bad = || format!("cannot read {raw:?} as {}", kind_name(kind));
    Ok(match kind {
        Kind::Str => Value::String(raw.to_string()),
        Kind::Int => Value::Integer(raw.parse().map_err(|_| bad())?),
        Kind::Num => match raw.parse::<i64>() {
            Ok(i) => Value::Integer(i),
            Err(_) => Value::Float(raw.parse::<f64>().ok().filter(|f| f.is_finite()).ok_or_else(bad)?),
        },
        Kind::Bool => Value::Boolean(match raw.to_ascii_lowercase().as_str() {
            "1" | "yes" | "on" | "true" => true,
            "0" | "no" | "off" | "false" => false,
            _ => return Err(bad()),
        }),
    })
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Str => "text",
        Kind::Int => "an integer",
        Kind::Num => "a number",
        Kind::Bool => "a boolean (1/0, on/off, yes/no, true/false)",
    }
}

/// True when `v` means "not set here" under `rule`.
fn unset(rule: Unset, v: &Value) -> bool {
    let n = match v {
        Value::Integer(i) => *i as f64,
        Value::Float(f) => *f,
        _ => return false,
    };
    match rule {
        Unset::Never => false,
        Unset::Negative => n < 0.0,
        Unset::NotPositive => n <= 0.0,
    }
}

/// Splits a libpq-style connection string (`host=x port=5432 password='a b'`) into pairs. Errors do not
/// repeat the string (it may hold a password); the caller names the file and line.
fn conn_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect::<String>().trim().to_string();
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    // Not quoted back: the string may hold a password.
                    None => return Err("unterminated quote in the connection string".into()),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied().filter(|c| !c.is_whitespace()) {
                value.push(c);
                chars.next();
            }
        }
        if key.is_empty() {
            return Err("malformed connection string: a value without a `key=`".into());
        }
        out.push((key, value));
    }
}

/// Converts pgbouncer.ini text that includes no other file (the fuzz target's entry: it reads nothing).
pub fn convert(text: &str) -> Result<Converted, String> {
    if text.lines().any(|l| l.trim_start().starts_with("%include")) {
        return Err("%include needs the ini read from a file".into());
    }
    let lines = ini_file::parse(text, Path::new("pgbouncer.ini")).map_err(|e| e.to_string())?;
    convert_lines(&lines).map_err(|e| e.to_string())
}

/// Reads the pgbouncer.ini at `path` (with its includes) and converts it.
pub fn convert_file(path: &Path) -> Result<Converted, ConfigError> {
    convert_lines(&ini_file::read(path)?)
}

/// Converts the lines of a pgbouncer.ini. PgBouncer's defaults that differ from pgsluice's are written
/// out, so the result behaves as PgBouncer did (pool_mode session when unset).
pub fn convert_lines(lines: &[IniLine]) -> Result<Converted, ConfigError> {
    let mut out = Output::default();
    out.general.insert("pool_mode".into(), Value::String("session".into())); // PgBouncer's default
    for l in lines {
        match l.section.as_str() {
            "pgbouncer" => out.general_line(l)?,
            "databases" => {
                let entry = out.entry(l, DATABASE.iter().map(|(k, name, kind, u)| (*k, *name, *kind, *u)))?;
                out.databases.insert(l.key.clone(), Value::Table(entry));
            }
            "users" => {
                let entry = out.entry(l, USER.iter().map(|(k, kind, u)| (*k, *k, *kind, *u)))?;
                out.users.insert(l.key.clone(), Value::Table(entry));
            }
            "peers" => {
                let entry = out.entry(l, PEER.iter().map(|(k, kind, u)| (*k, *k, *kind, *u)))?;
                if out.peers.insert(l.key.trim().to_string(), Value::Table(entry)).is_some() {
                    return Err(l.error(format!("peer {} is listed twice", l.key.trim())));
                }
            }
            "" => out.unsupported.push(format!("{} (outside any section)", l.key)),
            other => out.unsupported.push(format!("[{other}] {}", l.key)),
        }
    }
    out.finish()
}

#[derive(Default)]
struct Output {
    general: Table,
    databases: Table,
    users: Table,
    peers: Table,
    unsupported: Vec<String>,
    origins: BTreeMap<String, (PathBuf, usize, String)>,
}

impl Output {
    fn general_line(&mut self, l: &IniLine) -> Result<(), ConfigError> {
        let Some(kind) = general_kind(&l.key) else {
            let note = if is_pgbouncer_setting(&l.key) { "" } else { " (not a PgBouncer setting either)" };
            self.unsupported.push(format!("[pgbouncer] {}{note}", l.key));
            return Ok(());
        };
        let mut v = typed(kind, &l.value).map_err(|e| l.error(e))?;
        if l.key == "listen_addr" && l.value.trim() == "*" {
            v = Value::String("0.0.0.0".into());
        }
        let origin = (l.file.clone(), l.line, format!("[pgbouncer] {}", l.key));
        self.origins.insert(format!("pgsluice.{}", l.key), origin);
        self.general.insert(l.key.clone(), v);
        Ok(())
    }

    /// A `[databases]` or `[users]` entry: its connection string's keys that `known` has, typed.
    fn entry(
        &mut self,
        l: &IniLine,
        known: impl Iterator<Item = (&'static str, &'static str, Kind, Unset)> + Clone,
    ) -> Result<Table, ConfigError> {
        let section = l.section.as_str();
        let mut entry = Table::new();
        let written = format!("[{section}] {}", l.key);
        self.origins.insert(format!("{section}.{}", l.key), (l.file.clone(), l.line, written.clone()));
        for (k, v) in conn_pairs(&l.value).map_err(|e| l.error(e))? {
            let Some((_, name, kind, rule)) = known.clone().find(|(pk, ..)| *pk == k) else {
                self.unsupported.push(format!("[{section}] {}: {k}", l.key));
                continue;
            };
            let value = typed(kind, &v).map_err(|e| l.error(format!("{k}: {e}")))?;
            let origin = (l.file.clone(), l.line, format!("{written}: {k}"));
            self.origins.insert(format!("{section}.{}.{name}", l.key), origin);
            if unset(rule, &value) {
                entry.remove(name);
            } else {
                entry.insert(name.to_string(), value);
            }
        }
        Ok(entry)
    }

    fn finish(mut self) -> Result<Converted, ConfigError> {
        // As PgBouncer: an entry (a database or a peer) without a host connects over the Unix socket in
        // unix_socket_dir.
        let socket_dir = match self.general.get("unix_socket_dir") {
            Some(Value::String(d)) => d.clone(),
            _ => "/tmp".to_string(),
        };
        let default_host = if socket_dir.is_empty() { "127.0.0.1".to_string() } else { socket_dir };
        for (_, entry) in self.databases.iter_mut().chain(self.peers.iter_mut()) {
            if let Value::Table(t) = entry
                && !t.contains_key("host")
            {
                t.insert("host".into(), Value::String(default_host.clone()));
            }
        }
        let mut doc = Table::new();
        doc.insert("pgsluice".into(), Value::Table(self.general));
        doc.insert("databases".into(), Value::Table(self.databases));
        doc.insert("users".into(), Value::Table(self.users));
        if !self.peers.is_empty() {
            doc.insert("peers".into(), Value::Table(self.peers));
        }
        let toml = toml::to_string(&doc)
            .map_err(|e| ConfigError::Parse { path: "pgbouncer.ini".into(), message: e.to_string() })?;
        Ok(Converted { toml, unsupported: self.unsupported, origins: self.origins })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pgbouncer_ini_becomes_equivalent_toml() {
        let ini = "[databases]\n\
                   app = host=db.internal port=5433 dbname=app_prod pool_size=30 reserve_pool=5 connect_query='SELECT 1'\n\
                   * = host=localhost\n\
                   [users]\n\
                   report = pool_mode=session max_user_connections=4\n\
                   [pgbouncer]\n\
                   listen_addr = *\n\
                   pool_mode = transaction\n\
                   max_client_conn = 1000\n\
                   reserve_pool_timeout = 3.5\n\
                   server_reset_query_always = 1\n\
                   admin_users = admin, ops\n\
                   logfile = /var/log/pgbouncer.log\n";
        let c = convert(ini).unwrap();
        let doc: Table = toml::from_str(&c.toml).unwrap();
        let g = doc["pgsluice"].as_table().unwrap();
        assert_eq!(g["listen_addr"].as_str(), Some("0.0.0.0"));
        assert_eq!(g["pool_mode"].as_str(), Some("transaction"));
        assert_eq!(g["max_client_conn"].as_integer(), Some(1000));
        assert_eq!(g["reserve_pool_timeout"].as_float(), Some(3.5));
        assert_eq!(g["server_reset_query_always"].as_bool(), Some(true));
        let app = doc["databases"]["app"].as_table().unwrap();
        assert_eq!(app["port"].as_integer(), Some(5433));
        assert_eq!(app["reserve_pool_size"].as_integer(), Some(5));
        assert_eq!(doc["users"]["report"]["max_user_connections"].as_integer(), Some(4));
        assert_eq!(c.unsupported, vec!["[databases] app: connect_query", "[pgbouncer] logfile"]);
    }

    #[test]
    fn auth_type_any_is_carried_over() {
        let ini = "[databases]\napp = host=db user=app_owner password=pw\n[pgbouncer]\nauth_type = any\n";
        let c = convert(ini).unwrap();
        assert!(c.unsupported.is_empty(), "{:?}", c.unsupported);
        let config = crate::config::Config::from_toml_str(&c.toml, std::path::Path::new("pgbouncer.ini")).unwrap();
        assert_eq!(config.general.auth_type, crate::config::AuthType::Any);
    }

    #[test]
    fn session_state_is_read_in_every_section() {
        let ini = "[pgbouncer]\nauth_type = trust\nsession_state = refuse\npinned_idle_timeout = 30\npool_mode = transaction\n\
                   [databases]\napp = host=h session_state=leak\nother = host=h\n\
                   [users]\nalice = session_state=isolate\n";
        let c = convert(ini).unwrap();
        assert!(c.unsupported.is_empty(), "{:?}", c.unsupported);
        let config = crate::config::Config::from_toml_str(&c.toml, std::path::Path::new("pgbouncer.ini")).unwrap();
        use crate::config::SessionStatePolicy::*;
        assert_eq!((config.general.session_state, config.general.pinned_idle_timeout.as_secs()), (Refuse, 30));
        let policy = |db: &str, user: &str| config.pool_settings(db, user).map(|s| s.session_state);
        assert_eq!(policy("app", "bob"), Some(Leak));
        assert_eq!(policy("other", "bob"), Some(Refuse));
        assert_eq!(policy("app", "alice"), Some(Isolate), "a user's entry wins, as for pool_mode");
    }

    /// Loads `ini` through a file, as `--pgbouncer-ini` does.
    fn load(ini: &str) -> Result<(crate::config::Config, Vec<String>), crate::config::ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgbouncer.ini");
        std::fs::write(&path, ini).unwrap();
        crate::config::Config::load_pgbouncer_ini(&path)
    }

    #[test]
    fn every_database_and_user_key_pgsluice_has_is_read() {
        let ini = "[pgbouncer]\nauth_type = trust\nserver_lifetime = 120\nmax_db_client_connections = 50\n\
                   max_user_client_connections = 40\nclient_idle_timeout = 9\ntransaction_timeout = 8\n\
                   [databases]\np9 = host=h server_lifetime=2 max_db_client_connections=2 query_wait_timeout=3\n\
                   other = host=h\n\
                   [users]\nbob = reserve_pool_size=2 max_user_client_connections=3 query_wait_timeout=4 \
                   client_idle_timeout=5 transaction_timeout=6 idle_transaction_timeout=7 query_timeout=1\n";
        let (c, unsupported) = load(ini).unwrap();
        assert!(unsupported.is_empty(), "{unsupported:?}");
        let s = c.pool_settings("p9", "alice").unwrap();
        assert_eq!((s.server_lifetime.as_secs(), s.query_wait_timeout.as_secs()), (2, 3));
        assert_eq!(c.pool_settings("other", "alice").unwrap().server_lifetime.as_secs(), 120);
        assert_eq!((c.max_db_client_connections("p9"), c.max_db_client_connections("other")), (2, 50));
        let s = c.pool_settings("other", "bob").unwrap();
        let secs = |d: std::time::Duration| d.as_secs();
        assert_eq!(s.reserve_pool_size, 2);
        assert_eq!(
            [
                s.query_wait_timeout,
                s.client_idle_timeout,
                s.transaction_timeout,
                s.idle_transaction_timeout,
                s.query_timeout
            ]
            .map(secs),
            [4, 5, 6, 7, 1]
        );
        let s = c.pool_settings("other", "alice").unwrap();
        assert_eq!((secs(s.client_idle_timeout), secs(s.transaction_timeout)), (9, 8));
        assert_eq!((c.max_user_client_connections("bob"), c.max_user_client_connections("alice")), (3, 40));
    }

    #[test]
    fn values_pgbouncer_reads_as_not_set_leave_the_general_setting() {
        let ini = "[pgbouncer]\nauth_type = trust\nmax_db_connections = 7\nquery_timeout = 30\ndefault_pool_size = 9\n\
                   [databases]\napp = host=h max_db_connections=0 pool_size=-1 server_lifetime=0 query_wait_timeout=-1\n\
                   [users]\nbob = query_timeout=0 max_user_connections=0 query_wait_timeout=0\n";
        let (c, _) = load(ini).unwrap();
        let s = c.pool_settings("app", "bob").unwrap();
        assert_eq!((s.max_db_connections, s.pool_size, s.server_lifetime.as_secs()), (7, 9, 3600));
        assert_eq!(s.query_timeout.as_secs(), 30, "a user's 0 is not set");
        assert_eq!(s.query_wait_timeout.as_secs(), 0, "but a user's query_wait_timeout = 0 waits forever");
    }

    #[test]
    fn a_forced_user_database_takes_the_forced_users_pool_settings() {
        // PgBouncer's test_pool_size: poolsize1's pool_size does not apply where the database forces a user.
        let ini = "[pgbouncer]\nauth_type = trust\ndefault_pool_size = 5\n[databases]\n\
                   p0 = host=h user=bouncer pool_size=2\np0a = host=h pool_size=2\np0b = host=h user=small\n\
                   [users]\npoolsize1 = pool_size=1 client_idle_timeout=4 pool_mode=statement\nsmall = pool_size=3\n";
        let (c, _) = load(ini).unwrap();
        let s = c.pool_settings("p0", "poolsize1").unwrap();
        assert_eq!(
            (s.pool_size, s.pool_mode, s.client_idle_timeout.as_secs()),
            (2, crate::config::PoolMode::Session, 4)
        );
        assert_eq!(c.pool_settings("p0a", "poolsize1").unwrap().pool_size, 1);
        assert_eq!(c.pool_settings("p0b", "poolsize1").unwrap().pool_size, 3);
    }

    #[test]
    fn errors_name_the_ini_file_line_and_key() {
        for (ini, at, reason) in [
            ("[pgbouncer]\nauth_type = trust\nlisten_port = many\n", ":3: [pgbouncer] listen_port: ", "cannot read"),
            (
                "[pgbouncer]\nauth_type = trust\n[databases]\napp = host=h pool_size=0\n",
                ":4: [databases] app: pool_size: ",
                "at least 1",
            ),
            (
                "[pgbouncer]\nauth_type = trust\n[databases]\napp = host=h port=x\n",
                ":4: [databases] app: port: ",
                "cannot read",
            ),
            (
                "[pgbouncer]\nauth_type = trust\n[users]\nbob = pool_mode=sometimes\n",
                ":4: [users] bob: pool_mode: ",
                "unknown variant",
            ),
            (
                "[pgbouncer]\npool_mode = sometimes\nauth_type = trust\n",
                ":2: [pgbouncer] pool_mode: ",
                "unknown variant",
            ),
            (
                "[pgbouncer]\nauth_type = any\n[databases]\napp = host=h\n",
                ":4: [databases] app: user: ",
                "needs a user",
            ),
            (
                "[pgbouncer]\nauth_type = trust\n[databases]\napp = host=h password='s3cret\n",
                ":4: [databases] app: ",
                "unterminated quote",
            ),
        ] {
            let e = load(ini).map(|_| ()).unwrap_err().to_string();
            assert!(e.contains(&format!("pgbouncer.ini{at}")) && e.contains(reason), "{ini:?}: {e}");
            assert!(!e.contains("(line "), "no line of the generated TOML: {e}");
            assert!(!e.contains("s3cret"), "a password is not repeated: {e}");
        }
    }

    #[test]
    fn an_unknown_pgbouncer_key_is_told_apart_from_a_pgbouncer_setting() {
        let c = convert("[pgbouncer]\nlogfile = x\nmax_client_con = 5\nmetrics_addr = 127.0.0.1:9127\n").unwrap();
        assert_eq!(
            c.unsupported,
            vec!["[pgbouncer] logfile", "[pgbouncer] max_client_con (not a PgBouncer setting either)"]
        );
        assert!(c.toml.contains("metrics_addr"), "pgsluice's own settings are read too: {}", c.toml);
    }

    #[test]
    fn peers_and_peer_id_are_carried_over() {
        let ini = "[pgbouncer]\nauth_type = trust\npeer_id = 2\nunix_socket_dir = /run/pgb\n\
                   [peers]\n1 = host=10.0.0.1 port=6433 pool_size=4\n2 = host=/tmp/pgb2\n3 = port=7000 pool_size=-1\n";
        let (c, unsupported) = load(ini).unwrap();
        assert!(unsupported.is_empty(), "{unsupported:?}");
        assert_eq!(c.general.peer_id, 2);
        assert_eq!((c.peers[&1].host.as_str(), c.peers[&1].port, c.peers[&1].pool_size), ("10.0.0.1", 6433, Some(4)));
        assert_eq!((c.peers[&2].host.as_str(), c.peers[&2].port), ("/tmp/pgb2", 6432));
        assert_eq!((c.peers[&3].host.as_str(), c.peers[&3].pool_size), ("/run/pgb", None), "no host: the socket dir");
        let e = load("[pgbouncer]\nauth_type = trust\n[peers]\n1 = host=a\n1 = host=b\n").map(|_| ()).unwrap_err();
        assert!(e.to_string().contains("pgbouncer.ini:5: [peers] 1: peer 1 is listed twice"), "{e}");
        let e = load("[pgbouncer]\nauth_type = trust\n[peers]\n0 = host=a\n").map(|_| ()).unwrap_err();
        assert!(e.to_string().contains("pgbouncer.ini:4: [peers] 0: "), "{e}");
        let e = load("[pgbouncer]\nauth_type = trust\n[peers]\n1 = host=a port=0\n").map(|_| ()).unwrap_err();
        assert!(e.to_string().contains("pgbouncer.ini:4: [peers] 1: port: "), "{e}");
    }

    #[test]
    fn pool_mode_defaults_to_pgbouncers_session() {
        let c = convert("[databases]\nx = host=h\n").unwrap();
        assert!(c.toml.contains("pool_mode = \"session\""), "{}", c.toml);
    }
}
