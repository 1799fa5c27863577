//! The `[pgsluice]` settings: their names (PgBouncer's), meanings, defaults, and which need a restart.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::values::{self, seconds, string_list};
use super::{AuthType, PoolMode, SessionStatePolicy};

/// The server_check_query value that sends an empty query (PgBouncer's spelling, and its default).
pub const EMPTY_CHECK_QUERY: &str = "<empty>";

/// What server_check_query asks for: no check (""), an empty query (`<empty>`), or that statement.
pub fn check_query_to_send(setting: &str) -> Option<String> {
    match setting.trim() {
        "" => None,
        EMPTY_CHECK_QUERY => Some(String::new()),
        q => Some(q.to_string()),
    }
}
/// The `[pgsluice]` table. Each field: meaning, PgBouncer name (the same unless said), default.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct General {
    /// Address to listen on: an IP address or host name, "*" = all IPv4 addresses (bound as 0.0.0.0).
    /// Default "127.0.0.1". Needs restart.
    pub listen_addr: String,
    /// TCP port, also in the Unix socket's name. Default 6432. Needs restart.
    pub listen_port: u16,
    /// Directory of the Unix socket `.s.PGSQL.<listen_port>` pgsluice also listens on; empty = none.
    /// Default "/tmp" (PgBouncer's). Needs restart.
    pub unix_socket_dir: String,
    /// Permissions of that socket, octal. Default "0777". Needs restart.
    pub unix_socket_mode: String,
    /// Group the socket is given; empty = the process's. Default "". Needs restart.
    pub unix_socket_group: String,
    /// session | transaction | statement. Default transaction.
    pub pool_mode: PoolMode,
    /// isolate | refuse | leak: what transaction and statement mode do with a client's session state
    /// (see README). pgsluice only. Default isolate.
    pub session_state: SessionStatePolicy,
    /// Seconds a client pinned to its server by session state may sit idle before it is disconnected
    /// (FATAL 57P05) and its server cleaned; 0 = no limit. pgsluice only. Default 600.
    #[serde(deserialize_with = "seconds", serialize_with = "values::ser_seconds")]
    pub pinned_idle_timeout: Duration,
    /// Most client connections at once (53300 beyond). Default 100.
    pub max_client_conn: usize,
    /// Most connections still logging in (pgsluice only): beyond it the oldest is dropped, so a flood of
    /// sockets that never finish logging in cannot lock real clients out; not counted in max_client_conn.
    /// 0 = unlimited. Default 1000.
    pub max_pending_logins: usize,
    /// Seconds after which a pool made from the "*" entry that nobody used is dropped, with its
    /// counters; 0 = never. Default 3600.
    #[serde(deserialize_with = "seconds", serialize_with = "values::ser_seconds")]
    pub autodb_idle_timeout: Duration,
    /// Most pools made from the "*" entry at once (53300 beyond; pgsluice only). Default 1000.
    pub autodb_max_pools: usize,
    /// Server connections per (database, user) pool. Default 20.
    pub default_pool_size: usize,
    /// Server connections kept open per pool even when idle. Default 0.
    pub min_pool_size: usize,
    /// Extra connections for clients that waited longer than reserve_pool_timeout. Default 0.
    pub reserve_pool_size: usize,
    /// Seconds a client waits before the reserve may be used. Default 5.
    #[serde(deserialize_with = "seconds", serialize_with = "values::ser_seconds")]
    pub reserve_pool_timeout: Duration,
    /// Server connections per database across its pools; 0 = unlimited. Default 0.
    pub max_db_connections: usize,
    /// Server connections per user across its pools; 0 = unlimited. Default 0.
    pub max_user_connections: usize,
    /// Client connections per database; 0 = unlimited. Default 0.
    pub max_db_client_connections: usize,
    /// Client connections per user; 0 = unlimited. Default 0.
    pub max_user_client_connections: usize,
    /// Seconds after which a server connection is closed once free. Default 3600.
    #[serde(deserialize_with = "seconds", serialize_with = "values::ser_seconds")]
    pub server_lifetime: Duration,
    /// Seconds an idle server connection is kept. Default 600.
    #[serde(deserialize_with = "seconds", serialize_with = "values::ser_seconds")]
    pub server_idle_timeout: Duration,
    /// Seconds for connect plus login to a server. Default 15.
    #[serde(deserialize_with = "seconds", serialize_with = "values::ser_seconds")]
    pub server_connect_timeout: Duration,
    /// Seconds to wait after a failed server login before trying again; clients fail fast meanwhile. Default 15.
    #[serde(deserialize_with = "seconds", serialize_with = "values::ser_seconds")]
    pub server_login_retry: Duration,
    /// Query run on a server idle longer than server_check_delay before reuse; `<empty>` (the default, as
    /// PgBouncer 1.25) sends an empty query, the cheapest round trip; "" = off.
    pub server_check_query: String,
    /// Seconds idle before server_check_query is run. Default 30.
    #[serde(deserialize_with = "seconds", serialize_with = "values::ser_seconds")]
    pub server_check_delay: Duration,
    /// Run when a server is released in session mode. Default "DISCARD ALL".
    pub server_reset_query: String,
    /// Run server_reset_query in every pool mode. Default false.
    pub server_reset_query_always: bool,
    /// Seconds a client may wait for a server before ERROR 57014; 0 = forever. Default 120.
    #[serde(deserialize_with = "seconds", serialize_with = "values::ser_seconds")]
    pub query_wait_timeout: Duration,
    /// Seconds a query may run before it is canceled (57014); 0 = off. Default 0.
    #[serde(deserialize_with = "seconds", serialize_with = "values::ser_seconds")]
    pub query_timeout: Duration,
    /// Seconds a client may idle inside a transaction (FATAL 25P03); 0 = off. Default 0.
    #[serde(deserialize_with = "seconds", serialize_with = "values::ser_seconds")]
    pub idle_transaction_timeout: Duration,
    /// Seconds a transaction may last (FATAL 25P04); 0 = off. Default 0.
    #[serde(deserialize_with = "seconds", serialize_with = "values::ser_seconds")]
    pub transaction_timeout: Duration,
    /// Seconds a client may idle outside a transaction (FATAL 57P05); 0 = off. Default 0.
    #[serde(deserialize_with = "seconds", serialize_with = "values::ser_seconds")]
    pub client_idle_timeout: Duration,
    /// Seconds a client has to log in. Default 60.
    #[serde(deserialize_with = "seconds", serialize_with = "values::ser_seconds")]
    pub client_login_timeout: Duration,
    /// This process's id among peered processes (`[peers]`), encoded in the cancel keys it hands out so
    /// that a peer receiving one forwards it here; 0 = no peering. 0..16383. Default 0. Needs restart
    /// (keys already handed out name the id).
    pub peer_id: u16,
    /// Seconds to deliver a cancel request to a server (or to forward one to a peer). Default 10.
    #[serde(deserialize_with = "seconds", serialize_with = "values::ser_seconds")]
    pub cancel_wait_timeout: Duration,
    /// Seconds a write to a client may make no progress (a client that stopped reading its results)
    /// before the client is dropped and its server closed; 0 = wait forever. pgsluice only. Default 60.
    #[serde(deserialize_with = "seconds", serialize_with = "values::ser_seconds")]
    pub client_send_timeout: Duration,
    /// Seconds a server may take no bytes of what pgsluice sends it (a frozen or overloaded server)
    /// before the client gets 08006 and the server is closed; 0 = off. pgsluice only. Default 60.
    #[serde(deserialize_with = "seconds", serialize_with = "values::ser_seconds")]
    pub server_send_timeout: Duration,
    /// trust | any | plain | md5 | scram-sha-256. Default md5.
    pub auth_type: AuthType,
    /// userlist.txt-format file; relative to the config file. Default none.
    pub auth_file: Option<PathBuf>,
    /// User that looks up, with auth_query, the secrets of users missing from auth_file; its own
    /// password comes from auth_file. Unset = no lookups. Default none.
    pub auth_user: Option<String>,
    /// Query run by auth_user with the user name as $1; returns (name, secret), no row for an unknown
    /// user, a NULL secret for one that may not log in. Default PgBouncer 1.25's, schema-qualified and
    /// refusing expired (rolvaliduntil) and NOLOGIN roles.
    pub auth_query: String,
    /// Database (a [databases] name) whose pool runs auth_query; unset = the client's. Default none.
    pub auth_dbname: Option<String>,
    /// pg_hba.conf-format file for auth_type = hba (PgBouncer's subset); relative to the config file.
    /// RELOAD reads it again (a file that does not parse keeps the running rules). Default none.
    pub auth_hba_file: Option<PathBuf>,
    /// pg_ident.conf-format maps for the `map=` option of cert and peer lines. Default none.
    pub auth_ident_file: Option<PathBuf>,
    /// Startup parameters accepted and ignored. Default [].
    #[serde(deserialize_with = "string_list", serialize_with = "values::ser_list")]
    pub ignore_startup_parameters: Vec<String>,
    /// Users allowed every admin console command. Default [].
    #[serde(deserialize_with = "string_list", serialize_with = "values::ser_list")]
    pub admin_users: Vec<String>,
    /// Users allowed the read-only admin console commands (SHOW). Default [].
    #[serde(deserialize_with = "string_list", serialize_with = "values::ser_list")]
    pub stats_users: Vec<String>,
    /// Listen with SO_REUSEPORT, so a new pgsluice can bind the same port for a rolling restart.
    /// Needs restart. Default false.
    pub so_reuseport: bool,
    /// host:port of the HTTP endpoint for /metrics, /healthz and /readyz; off when unset. pgsluice only.
    pub metrics_addr: Option<String>,
    /// Log every transaction that held its server at least this many milliseconds (pool, client,
    /// application_name, duration, query fingerprint); 0 = off. pgsluice only. Default 0.
    pub log_slow_transaction_ms: u64,
    /// Seconds idle inside a transaction after which the client is logged as a suspected connection leak
    /// (before idle_transaction_timeout cuts it); 0 = off. pgsluice only. Default 0.
    #[serde(deserialize_with = "seconds", serialize_with = "values::ser_seconds")]
    pub idle_transaction_warn: Duration,
    /// Log successful client logins. Default true.
    pub log_connections: bool,
    /// Log client disconnections, with the reason. Default true.
    pub log_disconnections: bool,
    /// Log errors pgsluice itself sends to clients. Default true.
    pub log_pooler_errors: bool,
    /// Seconds between updates of the averages in SHOW STATS. Default 60.
    #[serde(deserialize_with = "seconds", serialize_with = "values::ser_seconds")]
    pub stats_period: Duration,
    /// Parameters tracked per client beyond the reported ones. Default ["IntervalStyle"].
    #[serde(deserialize_with = "string_list", serialize_with = "values::ser_list")]
    pub track_extra_parameters: Vec<String>,
    /// Append the client address to application_name. Default false.
    pub application_name_add_host: bool,
    /// Worker threads; 0 = one per core. pgsluice only. Default 0. Needs restart.
    pub workers: usize,
    /// Largest message from a client (FATAL 08P01) or a server (08006), bytes. PgBouncer:
    /// `max_packet_size`. Default 1073741823 (PostgreSQL's 1 GiB).
    pub max_packet_size: usize,
    /// Named prepared statements kept per server connection in transaction/statement mode; 0 = off
    /// (names then reach the server unchanged). Default 200.
    pub max_prepared_statements: usize,
    /// Largest named Parse pgsluice holds whole to prepare again on other servers, bytes; a bigger one is
    /// refused with 54000 (and streamed away, never buffered). pgsluice only. Default 4194304 (4 MiB).
    pub max_held_message_size: usize,
    /// Most named prepared statements one client may have at once (54000 beyond). pgsluice only.
    /// Default 10000.
    pub max_client_prepared_statements: usize,
    /// Most bytes of statement names and texts one client may have pgsluice hold (54000 beyond).
    /// pgsluice only. Default 67108864 (64 MiB).
    pub max_client_prepared_bytes: usize,
    /// Most bytes of statement names and texts all clients together may have pgsluice hold; a Parse past
    /// it gets 53200 (out of memory). pgsluice only. Default 1073741824 (1 GiB).
    pub max_total_prepared_bytes: usize,
    /// TCP keepalive on client and server connections (OS timings unless set below). Default true.
    /// Needs restart (applies to connections made after it), as do the four below.
    pub tcp_keepalive: bool,
    /// Seconds of idleness before the first keepalive probe; 0 = the OS default. Default 0.
    #[serde(deserialize_with = "seconds", serialize_with = "values::ser_seconds")]
    pub tcp_keepidle: Duration,
    /// Seconds between keepalive probes; 0 = the OS default. Default 0.
    #[serde(deserialize_with = "seconds", serialize_with = "values::ser_seconds")]
    pub tcp_keepintvl: Duration,
    /// Unanswered keepalive probes before the connection is dropped; 0 = the OS default. Default 0.
    pub tcp_keepcnt: u32,
    /// Milliseconds sent data may stay unacknowledged before the connection is dropped (TCP_USER_TIMEOUT);
    /// 0 = the OS default. Default 0.
    pub tcp_user_timeout: u64,
    /// TLS with clients: disable | allow | prefer | require | verify-ca | verify-full, PgBouncer's
    /// meanings (allow = prefer; verify-full = verify-ca: a valid client certificate). Default disable.
    pub client_tls_sslmode: SslMode,
    /// Private key pgsluice accepts TLS clients with (PEM); relative to the config file. Default none.
    pub client_tls_key_file: Option<PathBuf>,
    /// Certificate (chain, PEM) for that key. Default none.
    pub client_tls_cert_file: Option<PathBuf>,
    /// CA certificates client certificates are checked against (verify-ca, verify-full). Default none.
    pub client_tls_ca_file: Option<PathBuf>,
    /// TLS versions offered to clients: secure (tlsv1.2,tlsv1.3), all/legacy (the same: rustls has
    /// nothing older), or a list. Default "secure".
    pub client_tls_protocols: String,
    /// TLS 1.2 cipher suites, in OpenSSL syntax (names and the classes rustls can express). Default "default".
    pub client_tls_ciphers: String,
    /// TLS 1.3 cipher suites; empty = from client_tls_ciphers. Default "".
    pub client_tls13_ciphers: String,
    /// Key-exchange groups: auto or curve names (X25519, P-256, P-384). Default "auto".
    pub client_tls_ecdhcurve: String,
    /// auto | none: rustls offers no finite-field DHE either way ("legacy" is refused). Default "auto".
    pub client_tls_dheparams: String,
    /// TLS with servers: disable | allow | prefer | require | verify-ca | verify-full, libpq's meanings.
    /// Default prefer.
    pub server_tls_sslmode: SslMode,
    /// CA certificates server certificates are checked against (verify-ca, verify-full). Default none.
    pub server_tls_ca_file: Option<PathBuf>,
    /// Private key of the client certificate pgsluice shows servers. Default none.
    pub server_tls_key_file: Option<PathBuf>,
    /// The client certificate pgsluice shows servers. Default none.
    pub server_tls_cert_file: Option<PathBuf>,
    /// TLS versions pgsluice offers servers, as client_tls_protocols. Default "secure".
    pub server_tls_protocols: String,
    /// TLS 1.2 cipher suites offered to servers, as client_tls_ciphers. Default "default".
    pub server_tls_ciphers: String,
    /// TLS 1.3 cipher suites offered to servers; empty = from server_tls_ciphers. Default "".
    pub server_tls13_ciphers: String,
}

/// PgBouncer 1.25's auth_query, with every name and operator schema-qualified so that nothing a user
/// can create in a schema on the search path changes what it does (CVE-2025-12819), and expired or
/// NOLOGIN roles getting no secret (CVE-2025-2291).
pub const DEFAULT_AUTH_QUERY: &str = "SELECT rolname, CASE WHEN rolvaliduntil OPERATOR(pg_catalog.<) pg_catalog.now() THEN NULL ELSE rolpassword END FROM pg_catalog.pg_authid WHERE rolname OPERATOR(pg_catalog.=) $1 AND rolcanlogin";

/// A TLS mode (PgBouncer's `client_tls_sslmode` / `server_tls_sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Plain text is refused (require and the verify modes).
    pub fn requires_tls(self) -> bool {
        matches!(self, SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull)
    }

    /// The peer's certificate is checked against a CA.
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

/// How pgsluice's TCP connections detect a dead peer (PgBouncer's tcp_* settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpOptions {
    pub keepalive: bool,
    pub keepidle: Duration,
    pub keepintvl: Duration,
    pub keepcnt: u32,
    pub user_timeout: Duration,
}

impl General {
    /// unix_socket_mode as permission bits (`None` when it is not an octal mode).
    pub fn unix_socket_mode_bits(&self) -> Option<u32> {
        u32::from_str_radix(self.unix_socket_mode.trim(), 8).ok().filter(|m| *m <= 0o777)
    }

    /// Everything that shapes TLS to servers: when it changes, servers are reconnected.
    pub fn server_tls_settings(&self) -> impl PartialEq + use<> {
        (
            self.server_tls_sslmode,
            self.server_tls_ca_file.clone(),
            self.server_tls_key_file.clone(),
            self.server_tls_cert_file.clone(),
            (self.server_tls_protocols.clone(), self.server_tls_ciphers.clone(), self.server_tls13_ciphers.clone()),
        )
    }

    /// Makes the file settings absolute, relative to `base` (the config file's directory).
    pub(super) fn resolve_paths(&mut self, base: &std::path::Path) {
        for p in [
            &mut self.auth_file,
            &mut self.auth_hba_file,
            &mut self.auth_ident_file,
            &mut self.client_tls_key_file,
            &mut self.client_tls_cert_file,
            &mut self.client_tls_ca_file,
            &mut self.server_tls_ca_file,
            &mut self.server_tls_key_file,
            &mut self.server_tls_cert_file,
        ] {
            // An empty value (`client_tls_ca_file =` in a pgbouncer.ini) means not set.
            if let Some(a) = p.take().filter(|a| !a.as_os_str().is_empty()) {
                *p = Some(if a.is_absolute() { a } else { base.join(a) });
            }
        }
    }

    /// An empty auth_user, auth_dbname or metrics_addr (`auth_user =` in a pgbouncer.ini, `SET auth_user
    /// = ''`) means not set, as in PgBouncer.
    pub(super) fn clear_empty_names(&mut self) {
        for v in [&mut self.auth_user, &mut self.auth_dbname, &mut self.metrics_addr] {
            if v.as_deref().is_some_and(|s| s.trim().is_empty()) {
                *v = None;
            }
        }
    }

    pub fn tcp_options(&self) -> TcpOptions {
        TcpOptions {
            keepalive: self.tcp_keepalive,
            keepidle: self.tcp_keepidle,
            keepintvl: self.tcp_keepintvl,
            keepcnt: self.tcp_keepcnt,
            user_timeout: Duration::from_millis(self.tcp_user_timeout),
        }
    }
}

/// The settings read only at startup (PgBouncer's "can be changed only at boot time"), listed once: the
/// name list for SHOW CONFIG and SET, and the comparison RELOAD makes.
macro_rules! restart_only {
    ($($field:ident),*) => {
        pub const RESTART_ONLY: &[&str] = &[$(stringify!($field)),*];

        impl General {
            /// Puts back into `new` the running values of the startup-only settings it changes, and names them.
            pub fn keep_restart_only(&self, new: &mut General) -> Vec<&'static str> {
                let mut changed = Vec::new();
                $(
                    if self.$field != new.$field {
                        changed.push(stringify!($field));
                        new.$field = self.$field.clone();
                    }
                )*
                changed
            }
        }
    };
}
restart_only!(
    listen_addr,
    listen_port,
    unix_socket_dir,
    unix_socket_mode,
    unix_socket_group,
    workers,
    so_reuseport,
    metrics_addr,
    peer_id,
    tcp_keepalive,
    tcp_keepidle,
    tcp_keepintvl,
    tcp_keepcnt,
    tcp_user_timeout
);

impl General {
    /// Every `[pgsluice]` key, in declaration order.
    pub fn keys() -> &'static [&'static str] {
        values::struct_fields::<General>()
    }
}

impl Default for General {
    fn default() -> Self {
        let s = Duration::from_secs;
        General {
            listen_addr: "127.0.0.1".into(),
            listen_port: 6432,
            unix_socket_dir: "/tmp".into(),
            unix_socket_mode: "0777".into(),
            unix_socket_group: String::new(),
            pool_mode: PoolMode::Transaction,
            session_state: SessionStatePolicy::Isolate,
            pinned_idle_timeout: s(600),
            max_client_conn: 100,
            max_pending_logins: 1000,
            autodb_idle_timeout: s(3600),
            autodb_max_pools: 1000,
            default_pool_size: 20,
            min_pool_size: 0,
            reserve_pool_size: 0,
            reserve_pool_timeout: s(5),
            max_db_connections: 0,
            max_user_connections: 0,
            max_db_client_connections: 0,
            max_user_client_connections: 0,
            server_lifetime: s(3600),
            server_idle_timeout: s(600),
            server_connect_timeout: s(15),
            server_login_retry: s(15),
            server_check_query: EMPTY_CHECK_QUERY.into(),
            server_check_delay: s(30),
            server_reset_query: "DISCARD ALL".into(),
            server_reset_query_always: false,
            query_wait_timeout: s(120),
            query_timeout: s(0),
            idle_transaction_timeout: s(0),
            transaction_timeout: s(0),
            client_idle_timeout: s(0),
            client_login_timeout: s(60),
            peer_id: 0,
            cancel_wait_timeout: s(10),
            client_send_timeout: s(60),
            server_send_timeout: s(60),
            auth_type: AuthType::Md5,
            auth_file: None,
            auth_hba_file: None,
            auth_user: None,
            auth_query: DEFAULT_AUTH_QUERY.into(),
            auth_dbname: None,
            auth_ident_file: None,
            ignore_startup_parameters: Vec::new(),
            track_extra_parameters: vec!["IntervalStyle".into()],
            admin_users: Vec::new(),
            stats_users: Vec::new(),
            stats_period: s(60),
            metrics_addr: None,
            so_reuseport: false,
            log_slow_transaction_ms: 0,
            idle_transaction_warn: s(0),
            log_connections: true,
            log_disconnections: true,
            log_pooler_errors: true,
            application_name_add_host: false,
            workers: 0,
            max_packet_size: crate::protocol::frame::MAX_MESSAGE_LEN,
            max_prepared_statements: 200,
            max_held_message_size: 4 << 20,
            max_client_prepared_statements: 10_000,
            max_client_prepared_bytes: 64 << 20,
            max_total_prepared_bytes: 1 << 30,
            tcp_keepalive: true,
            tcp_keepidle: s(0),
            tcp_keepintvl: s(0),
            tcp_keepcnt: 0,
            tcp_user_timeout: 0,
            client_tls_sslmode: SslMode::Disable,
            client_tls_key_file: None,
            client_tls_cert_file: None,
            client_tls_ca_file: None,
            client_tls_protocols: "secure".into(),
            client_tls_ciphers: "default".into(),
            client_tls13_ciphers: String::new(),
            client_tls_ecdhcurve: "auto".into(),
            client_tls_dheparams: "auto".into(),
            server_tls_sslmode: SslMode::Prefer,
            server_tls_ca_file: None,
            server_tls_key_file: None,
            server_tls_cert_file: None,
            server_tls_protocols: "secure".into(),
            server_tls_ciphers: "default".into(),
            server_tls13_ciphers: String::new(),
        }
    }
}
