//! The TOML configuration: `[pgsluice]` general settings under PgBouncer's names and units, `[databases]`,
//! `[users]` and `[peers]`. Parsing, validation and defaults live here; `resolve` folds them into per-pool settings.
//! Imports only crates.

pub mod auth_file;
pub mod console;
mod general;
pub mod ini_file;
mod peers;
pub mod pgbouncer_ini;
pub mod pgbouncer_names;
mod resolve;
mod set;
mod validate;
mod values;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use general::{EMPTY_CHECK_QUERY, General, RESTART_ONLY, SslMode, TcpOptions, check_query_to_send};
pub use peers::{MAX_PEER_ID, PeerConfig};
pub use resolve::{AuthLookup, LoadBalance, PoolSettings, ServerTarget};
pub use set::SetError;
use values::seconds_opt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    Session,
    Transaction,
    Statement,
}

impl PoolMode {
    /// The name as written in the config and shown by SHOW POOLS.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }
}

/// What transaction and statement mode do with session state a client makes (`session_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatePolicy {
    /// Each client keeps its own: session settings follow it from server to server, and state that
    /// cannot (advisory locks, temporary tables, WITH HOLD cursors, LISTEN, SQL PREPARE) pins it to its
    /// server until the state is gone.
    #[default]
    Isolate,
    /// Statements that would make such state are refused (0A000) before anything runs.
    Refuse,
    /// PgBouncer's behaviour: the state stays on the server, for whichever client gets it next.
    Leak,
}

impl SessionStatePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatePolicy::Isolate => "isolate",
            SessionStatePolicy::Refuse => "refuse",
            SessionStatePolicy::Leak => "leak",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum AuthType {
    #[serde(rename = "trust")]
    Trust,
    /// PgBouncer's `any`: no password asked and the client's user name ignored; every database entry
    /// logs in as its forced `user`. On the console, `admin_users` may do everything, anyone else SHOW.
    #[serde(rename = "any")]
    Any,
    #[serde(rename = "plain")]
    Plain,
    #[serde(rename = "md5")]
    Md5,
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// A TLS client certificate valid under client_tls_ca_file; its common name is the user name.
    #[serde(rename = "cert")]
    Cert,
    /// Per connection, as the first matching line of auth_hba_file says.
    #[serde(rename = "hba")]
    Hba,
}

impl AuthType {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::Trust => "trust",
            AuthType::Any => "any",
            AuthType::Plain => "plain",
            AuthType::Md5 => "md5",
            AuthType::ScramSha256 => "scram-sha-256",
            AuthType::Cert => "cert",
            AuthType::Hba => "hba",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: key `{key}`: {reason}")]
    Invalid { path: PathBuf, key: String, reason: String },
    /// A line of the auth file or of a pgbouncer.ini (or a file it includes).
    #[error("{path}:{line}: {reason}")]
    AtLine { path: PathBuf, line: usize, reason: String },
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub general: General,
    pub databases: BTreeMap<String, DatabaseConfig>,
    pub users: BTreeMap<String, UserConfig>,
    /// `[peers]`, by peer_id (this process's own id may be among them).
    pub peers: BTreeMap<u16, PeerConfig>,
    pub path: PathBuf,
    /// Read from a pgbouncer.ini (RELOAD reads it the same way).
    pub from_pgbouncer_ini: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    pgsluice: General,
    #[serde(default)]
    databases: BTreeMap<String, DatabaseConfig>,
    #[serde(default)]
    users: BTreeMap<String, UserConfig>,
    #[serde(default)]
    peers: BTreeMap<String, PeerConfig>,
}

/// A `[databases]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    #[serde(default = "values::default_host")]
    pub host: String,
    #[serde(default = "values::default_port")]
    pub port: u16,
    pub dbname: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub pool_size: Option<usize>,
    pub min_pool_size: Option<usize>,
    pub reserve_pool_size: Option<usize>,
    pub max_db_connections: Option<usize>,
    /// Client connections to this database at once, over the general max_db_client_connections.
    pub max_db_client_connections: Option<usize>,
    pub pool_mode: Option<PoolMode>,
    pub session_state: Option<SessionStatePolicy>,
    #[serde(default, deserialize_with = "seconds_opt")]
    pub query_wait_timeout: Option<Duration>,
    /// This database's server_lifetime, over the general one.
    #[serde(default, deserialize_with = "seconds_opt")]
    pub server_lifetime: Option<Duration>,
    /// round-robin | disable: how a host list is used (PgBouncer 1.24). Default round-robin.
    pub load_balance_hosts: Option<LoadBalance>,
    /// This database's auth_user, auth_query and auth_dbname, over the general ones.
    pub auth_user: Option<String>,
    pub auth_query: Option<String>,
    pub auth_dbname: Option<String>,
}

/// A `[users]` entry. As in PgBouncer, the pool's settings (pool_mode, session_state, pool_size,
/// reserve_pool_size, max_user_connections and the server-side timeouts query_timeout,
/// idle_transaction_timeout and transaction_timeout) come from the entry of the user the pool logs in
/// as, which for a database with a forced `user` is that user; the client's own settings
/// (query_wait_timeout, client_idle_timeout, max_user_client_connections) from the client's entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub pool_mode: Option<PoolMode>,
    pub session_state: Option<SessionStatePolicy>,
    pub max_user_connections: Option<usize>,
    pub max_user_client_connections: Option<usize>,
    pub pool_size: Option<usize>,
    pub reserve_pool_size: Option<usize>,
    #[serde(default, deserialize_with = "seconds_opt")]
    pub query_wait_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "seconds_opt")]
    pub idle_transaction_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "seconds_opt")]
    pub transaction_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "seconds_opt")]
    pub query_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "seconds_opt")]
    pub client_idle_timeout: Option<Duration>,
}

impl Config {
    /// Loads a TOML config, or a pgbouncer.ini (see `load_any`).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_any(path).map(|(c, _)| c)
    }

    /// Loads a TOML config or a pgbouncer.ini: a name ending in `.ini`, or text that reads as one (a
    /// `[pgbouncer]` section or an `%include`, or `[databases]`/`[users]` lines that are not TOML).
    /// Returns what a pgbouncer.ini had that pgsluice does not support.
    pub fn load_any(path: &Path) -> Result<(Config, Vec<String>), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        if path.extension().is_some_and(|e| e == "ini") || looks_like_pgbouncer_ini(&text) {
            return Self::load_pgbouncer_ini(path);
        }
        Ok((Self::from_toml_str(&text, path)?, Vec::new()))
    }

    /// Loads a pgbouncer.ini as it is (with its includes); returns the config and what it had that
    /// pgsluice does not support. Errors name the ini's file, line and key where they can.
    pub fn load_pgbouncer_ini(path: &Path) -> Result<(Config, Vec<String>), ConfigError> {
        let converted = pgbouncer_ini::convert_file(path)?;
        let mut config = Self::from_toml_str(&converted.toml, path).map_err(|e| {
            if let ConfigError::Invalid { key, reason, .. } = &e
                && let Some(located) = converted.locate(key, reason)
            {
                return located;
            }
            e
        })?;
        config.from_pgbouncer_ini = true;
        Ok((config, converted.unsupported))
    }

    pub fn from_toml_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| validate::parse_error(path, text, e))?;
        let mut general = file.pgsluice;
        validate::normalize_listen_addr(&mut general.listen_addr);
        general.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        general.clear_empty_names();
        let config = Config {
            general,
            databases: file.databases,
            users: file.users,
            peers: peers::by_id(path, file.peers)?,
            path: path.into(),
            from_pgbouncer_ini: false,
        };
        config.validate()?;
        Ok(config)
    }

    /// The auth file, or an empty one when `auth_file` is unset.
    pub fn load_auth_file(&self) -> Result<auth_file::AuthFile, ConfigError> {
        match &self.general.auth_file {
            Some(p) => auth_file::AuthFile::load(p),
            None => Ok(auth_file::AuthFile::default()),
        }
    }
}

/// True for text that is a pgbouncer.ini rather than pgsluice's TOML (which has no `[pgbouncer]`
/// table, no `%include` and, in `[databases]` and `[users]`, inline tables).
fn looks_like_pgbouncer_ini(text: &str) -> bool {
    let lines = || text.lines().map(str::trim);
    let header = |name: &str| lines().any(|l| l.eq_ignore_ascii_case(name));
    if header("[pgbouncer]") || lines().any(|l| l.starts_with("%include")) {
        return true;
    }
    let inline_tables = lines().any(|l| l.split_once('=').is_some_and(|(_, v)| v.trim_start().starts_with('{')));
    (header("[databases]") || header("[users]"))
        && !header("[pgsluice]")
        && !inline_tables
        && text.parse::<toml::Table>().is_err()
}

#[cfg(test)]
mod tests;
