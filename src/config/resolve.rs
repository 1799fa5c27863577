//! Folding global, database and user settings into the settings of one (database, user) pool.
//! Precedence: `[users]` entry, then `[databases]` entry, then `[pgsluice]`.

use std::time::Duration;

use super::{Config, PoolMode, UserConfig};

/// Where and as whom a pool's server connections log in.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerTarget {
    /// One host, or several separated by commas (see `hosts`).
    pub host: String,
    /// How a host list is walked (load_balance_hosts).
    pub load_balance: LoadBalance,
    pub port: u16,
    pub dbname: String,
    /// Forced server user from the database entry; `None` = the client's user.
    pub user: Option<String>,
    pub password: Option<String>,
}

/// auth_query as it applies to one database: run by `user` in the pool of (`dbname`, `user`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthLookup {
    pub user: String,
    pub query: String,
    /// The client-visible database whose pool runs it (auth_dbname, else the client's database).
    pub dbname: String,
}

/// PgBouncer's load_balance_hosts: which host of a list a new server connection goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadBalance {
    /// Each new connection to the next host.
    #[default]
    RoundRobin,
    /// The same host until a connection to it fails, then the next.
    Disable,
}

impl ServerTarget {
    /// The hosts of the entry, in order (one unless `host` is a comma-separated list).
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        host_list(&self.host)
    }
}

/// The hosts of a `host` setting, in order: one, or several separated by commas.
pub fn host_list(host: &str) -> impl Iterator<Item = &str> {
    host.split(',').map(str::trim).filter(|h| !h.is_empty())
}

/// Everything one pool needs, resolved once.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSettings {
    pub server: ServerTarget,
    pub pool_mode: PoolMode,
    pub session_state: crate::config::SessionStatePolicy,
    pub pinned_idle_timeout: Duration,
    pub pool_size: usize,
    pub min_pool_size: usize,
    pub reserve_pool_size: usize,
    pub reserve_pool_timeout: Duration,
    pub max_db_connections: usize,
    pub max_user_connections: usize,
    pub query_wait_timeout: Duration,
    pub query_timeout: Duration,
    pub idle_transaction_timeout: Duration,
    pub transaction_timeout: Duration,
    pub client_idle_timeout: Duration,
    pub client_send_timeout: Duration,
    pub server_send_timeout: Duration,
    pub log_slow_transaction: Duration,
    pub idle_transaction_warn: Duration,
    pub server_lifetime: Duration,
    pub server_idle_timeout: Duration,
    pub server_connect_timeout: Duration,
    pub server_login_retry: Duration,
    pub server_check_query: String,
    pub server_check_delay: Duration,
    pub server_reset_query: String,
    pub server_reset_query_always: bool,
    /// Prepared statements per server; 0 = off. Session mode never rewrites (the server is the client's).
    pub max_prepared_statements: usize,
    /// Largest message from a client or a server.
    pub max_packet_size: usize,
    /// What one client may make pgsluice hold: a named Parse, its statements (count and bytes).
    pub max_held_message_size: usize,
    pub max_client_prepared_statements: usize,
    pub max_client_prepared_bytes: usize,
    pub max_total_prepared_bytes: usize,
    /// Log the errors pgsluice itself sends to clients (PgBouncer: `log_pooler_errors`).
    pub log_pooler_errors: bool,
}

impl Config {
    /// True when `db` has no entry of its own and is served by the `"*"` fallback.
    pub fn is_auto_database(&self, db: &str) -> bool {
        !self.databases.contains_key(db) && self.databases.contains_key("*")
    }

    /// How a user missing from the auth file is looked up for a login to `db` (auth_user and
    /// auth_query, the database entry's over the general ones); `None` without an auth_user.
    pub fn auth_lookup(&self, db: &str) -> Option<AuthLookup> {
        let entry = self.databases.get(db).or_else(|| self.databases.get("*"));
        let g = &self.general;
        let user = entry.and_then(|e| e.auth_user.clone()).or_else(|| g.auth_user.clone())?;
        let query = entry.and_then(|e| e.auth_query.clone()).unwrap_or_else(|| g.auth_query.clone());
        let dbname = entry
            .and_then(|e| e.auth_dbname.clone())
            .or_else(|| g.auth_dbname.clone())
            .unwrap_or_else(|| db.to_string());
        Some(AuthLookup { user, query, dbname })
    }

    /// Most clients of `db` at once: its entry's max_db_client_connections (the `"*"` entry's for a
    /// database made from it), else the general one; 0 = unlimited.
    pub fn max_db_client_connections(&self, db: &str) -> usize {
        let entry = self.databases.get(db).or_else(|| self.databases.get("*"));
        entry.and_then(|e| e.max_db_client_connections).unwrap_or(self.general.max_db_client_connections)
    }

    /// Most clients logged in as `user` at once: its `[users]` entry's max_user_client_connections,
    /// else the general one; 0 = unlimited.
    pub fn max_user_client_connections(&self, user: &str) -> usize {
        let entry = self.users.get(user).and_then(|u| u.max_user_client_connections);
        entry.unwrap_or(self.general.max_user_client_connections)
    }

    /// Settings for the pool of (`db`, `user`); `None` when `db` is not configured and there is no `"*"`.
    pub fn pool_settings(&self, db: &str, user: &str) -> Option<PoolSettings> {
        let (entry, dbname) = match self.databases.get(db) {
            Some(e) => (e, e.dbname.clone().unwrap_or_else(|| db.to_string())),
            None => {
                let e = self.databases.get("*")?;
                (e, e.dbname.clone().unwrap_or_else(|| db.to_string()))
            }
        };
        let g = &self.general;
        // The pool logs in as the forced user when the entry has one: its [users] entry sets the pool's
        // size, mode and server-side timeouts (PgBouncer's pool user); the client's sets its own waits.
        let none = UserConfig::default();
        let pu = self.users.get(entry.user.as_deref().unwrap_or(user)).unwrap_or(&none);
        let lu = self.users.get(user).unwrap_or(&none);
        // Capped at PostgreSQL's largest message (PgBouncer's default, 2147483647, is above it).
        let max_packet_size = g.max_packet_size.min(crate::protocol::frame::MAX_MESSAGE_LEN);
        let pool_size = pu.pool_size.or(entry.pool_size).unwrap_or(g.default_pool_size);
        Some(PoolSettings {
            server: ServerTarget {
                host: entry.host.clone(),
                load_balance: entry.load_balance_hosts.unwrap_or_default(),
                port: entry.port,
                dbname,
                user: entry.user.clone(),
                password: entry.password.clone(),
            },
            pool_mode: pu.pool_mode.or(entry.pool_mode).unwrap_or(g.pool_mode),
            session_state: pu.session_state.or(entry.session_state).unwrap_or(g.session_state),
            pinned_idle_timeout: g.pinned_idle_timeout,
            pool_size,
            // As PgBouncer: never more than the pool may hold (Config::warnings says so).
            min_pool_size: entry.min_pool_size.unwrap_or(g.min_pool_size).min(pool_size),
            reserve_pool_size: pu.reserve_pool_size.or(entry.reserve_pool_size).unwrap_or(g.reserve_pool_size),
            reserve_pool_timeout: g.reserve_pool_timeout,
            max_db_connections: entry.max_db_connections.unwrap_or(g.max_db_connections),
            max_user_connections: pu.max_user_connections.unwrap_or(g.max_user_connections),
            query_wait_timeout: lu.query_wait_timeout.or(entry.query_wait_timeout).unwrap_or(g.query_wait_timeout),
            query_timeout: pu.query_timeout.unwrap_or(g.query_timeout),
            idle_transaction_timeout: pu.idle_transaction_timeout.unwrap_or(g.idle_transaction_timeout),
            transaction_timeout: pu.transaction_timeout.unwrap_or(g.transaction_timeout),
            client_idle_timeout: lu.client_idle_timeout.unwrap_or(g.client_idle_timeout),
            client_send_timeout: g.client_send_timeout,
            server_send_timeout: g.server_send_timeout,
            log_slow_transaction: Duration::from_millis(g.log_slow_transaction_ms),
            idle_transaction_warn: g.idle_transaction_warn,
            server_lifetime: entry.server_lifetime.unwrap_or(g.server_lifetime),
            server_idle_timeout: g.server_idle_timeout,
            server_connect_timeout: g.server_connect_timeout,
            server_login_retry: g.server_login_retry,
            server_check_query: g.server_check_query.clone(),
            server_check_delay: g.server_check_delay,
            server_reset_query: g.server_reset_query.clone(),
            server_reset_query_always: g.server_reset_query_always,
            max_prepared_statements: g.max_prepared_statements,
            max_packet_size,
            max_held_message_size: g.max_held_message_size.min(max_packet_size),
            max_client_prepared_statements: g.max_client_prepared_statements,
            max_client_prepared_bytes: g.max_client_prepared_bytes,
            max_total_prepared_bytes: g.max_total_prepared_bytes,
            log_pooler_errors: g.log_pooler_errors,
        })
    }
}
