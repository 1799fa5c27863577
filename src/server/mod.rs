//! Connections to PostgreSQL: connect and log in as a client (`login`), then carry raw bytes with a
//! `Tracker` that knows when the connection is clean. Provides `ServerConnector: pool::Connect` and
//! `ServerConn: pool::Poolable`. Imports: protocol, config, auth, pool.

mod login;
pub mod replies;
pub mod statements;
pub mod tcp;
pub mod tracker;

use std::sync::{Arc, Mutex};

use crate::stats::servers::ServerState;

use crate::transport::Stream;
use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::config::{LoadBalance, ServerTarget};
use crate::pool::{Connect, Poolable};
use crate::protocol::frame::whole_message;
use crate::protocol::messages::{self, TxStatus};
use std::sync::atomic::Ordering;
pub use tracker::Tracker;

/// Largest message accepted from a server while pgsluice itself reads its replies (login, reset).
const MAX_INTERNAL_MESSAGE: usize = 1 << 20;

/// Why a server connection could not be made or used. `Clone` so a login failure can be replayed to
/// clients during `server_login_retry`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServerError {
    #[error("could not connect to server {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// No socket could be made here (out of file descriptors or memory): nothing the server did, so it
    /// does not hold off the next attempt (`server_login_retry`).
    #[error("could not connect to server {addr}: {reason}")]
    LocalResources { addr: String, reason: String },
    /// The server sent an ErrorResponse; passed to the client as the server's own error.
    #[error("{message}")]
    Refused { severity: String, code: String, message: String },
    #[error("server protocol error: {0}")]
    Protocol(String),
    #[error("server closed the connection unexpectedly")]
    Closed,
    #[error("server I/O error: {0}")]
    Io(String),
    #[error("server requested an unsupported authentication method ({0})")]
    UnsupportedAuth(String),
    #[error("no password available to log in to the server as {0}")]
    NoPassword(String),
    #[error("TLS with the server failed: {0}")]
    Tls(String),
}

impl ServerError {
    /// The error of a failed connect: `LocalResources` for ENOMEM, ENFILE, EMFILE and ENOBUFS (Linux's
    /// numbers: 12, 23, 24, 105), `Connect` otherwise.
    fn connect_failed(addr: &str, e: &std::io::Error) -> ServerError {
        let (addr, reason) = (addr.to_string(), e.to_string());
        match e.raw_os_error() {
            Some(12 | 23 | 24 | 105) => ServerError::LocalResources { addr, reason },
            _ => ServerError::Connect { addr, reason },
        }
    }
}

impl From<std::io::Error> for ServerError {
    fn from(e: std::io::Error) -> Self {
        ServerError::Io(e.to_string())
    }
}

/// How pgsluice proves itself to PostgreSQL.
#[derive(Debug, Clone, Default)]
pub enum Credentials {
    #[default]
    None,
    Password(String),
    /// `md5` + hex(md5(password || user)): enough for md5 auth.
    Md5Hash(String),
    /// ClientKey/ServerKey learned from a client's SCRAM exchange: enough for SCRAM auth.
    ScramKeys {
        client_key: [u8; 32],
        server_key: [u8; 32],
    },
}

/// One connection to PostgreSQL.
pub struct ServerConn {
    pub(crate) stream: Stream,
    pub addr: crate::stats::PeerAddr,
    pub pid: u32,
    pub key: u32,
    /// Reported parameters (ParameterStatus) as this server currently has them.
    pub params: Vec<(String, String)>,
    pub tracker: Tracker,
    /// Bytes read from the server not yet forwarded (kept with the server across clients).
    pub rbuf: BytesMut,
    pub connected_at: Instant,
    pub last_used: Instant,
    /// Set when pgsluice can no longer tell what state the server is in.
    pub broken: bool,
    pub(crate) check_query: Option<String>,
    /// How long pgsluice waits for the answer to a statement of its own (server_connect_timeout).
    pub(crate) internal_timeout: std::time::Duration,
    /// Names PostgreSQL reported at login (GUC_REPORT parameters).
    pub(crate) reported: Vec<String>,
    /// Fingerprint of the client parameters this server was last made to match; 0 = unknown.
    pub synced_fingerprint: u64,
    /// Session settings (`pg_settings` source `session`, role, session authorization) pgsluice knows this
    /// server has for its last client, besides the tracked parameters; sorted by name.
    pub session_settings: Vec<(String, String)>,
    /// Statements made with SQL PREPARE under pgsluice's names that this server holds (for its last
    /// client: see `client::sql_prepared`).
    pub sql_statements: Vec<String>,
    /// NotificationResponses that arrived while pgsluice ran a statement of its own (whole messages, at
    /// most 1 MiB): the session passes them on to a client the server belongs to, or drops them.
    pub notifications: BytesMut,
    /// Replies owed while pgsluice rewrites prepared statements (empty otherwise).
    pub replies: replies::ReplyQueue,
    /// Statements prepared on this server under pgsluice's names.
    pub statements: statements::StatementCache,
    /// This connection's SHOW SERVERS entry (removed when the connection is dropped).
    pub registered: Option<crate::stats::servers::RegisteredServer>,
    /// Cancel requests forwarded to this server and not yet acted on.
    pub cancels: std::sync::Arc<CancelsInFlight>,
}

/// Cancel requests on their way to a server: counted from the moment a client's cancel picks this server
/// until the server closes the cancel connection (it has signalled its backend by then). While any is in
/// flight the server must not serve another client, whose query a late cancel would hit.
#[derive(Debug, Default)]
pub struct CancelsInFlight {
    n: std::sync::atomic::AtomicUsize,
    settled: tokio::sync::Notify,
}

impl CancelsInFlight {
    pub fn start(self: &std::sync::Arc<Self>) -> CancelInFlight {
        self.n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        CancelInFlight(self.clone())
    }

    pub fn busy(&self) -> bool {
        self.n.load(std::sync::atomic::Ordering::SeqCst) > 0
    }

    /// Returns once no cancel is in flight.
    pub async fn settled(&self) {
        loop {
            let notified = self.settled.notified();
            if !self.busy() {
                return;
            }
            notified.await;
        }
    }
}

/// One cancel in flight; done when dropped.
#[derive(Debug)]
pub struct CancelInFlight(std::sync::Arc<CancelsInFlight>);

impl Drop for CancelInFlight {
    fn drop(&mut self) {
        if self.0.n.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            self.0.settled.notify_waiters();
        }
    }
}

impl ServerConn {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// True when PostgreSQL reported this parameter at login (it will report its changes too).
    pub fn reported(&self, name: &str) -> bool {
        self.reported.iter().any(|r| r.eq_ignore_ascii_case(name))
    }

    /// True when pgsluice SET this unreported parameter on this server for some client.
    pub fn set_by_proxy(&self, name: &str) -> bool {
        !self.reported(name) && self.param(name).is_some()
    }

    /// Records a value pgsluice SET for a parameter PostgreSQL does not report.
    pub fn record_set(&mut self, name: &str, value: &str) {
        self.set_param(name.as_bytes(), value.as_bytes());
    }

    /// Forgets an unreported parameter after it was RESET.
    pub fn forget_param(&mut self, name: &str) {
        self.synced_fingerprint = 0;
        if !self.reported(name) {
            self.params.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        }
    }

    pub(crate) fn set_param(&mut self, name: &[u8], value: &[u8]) {
        self.synced_fingerprint = 0;
        let (name, value) = (String::from_utf8_lossy(name), String::from_utf8_lossy(value));
        match self.params.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(&name)) {
            Some((_, v)) => *v = value.into_owned(),
            None => self.params.push((name.into_owned(), value.into_owned())),
        }
    }

    /// A fresh connection's state, before its login.
    pub(crate) fn new(stream: Stream, addr: crate::stats::PeerAddr) -> ServerConn {
        let now = Instant::now();
        ServerConn {
            stream,
            addr,
            pid: 0,
            key: 0,
            params: Vec::new(),
            tracker: Tracker::default(),
            rbuf: BytesMut::with_capacity(8192),
            connected_at: now,
            last_used: now,
            broken: false,
            check_query: None,
            internal_timeout: std::time::Duration::from_secs(15),
            reported: Vec::new(),
            synced_fingerprint: 0,
            session_settings: Vec::new(),
            sql_statements: Vec::new(),
            notifications: Default::default(),
            replies: Default::default(),
            statements: Default::default(),
            registered: None,
            cancels: Default::default(),
        }
    }

    /// Sends one simple query and reads until its ReadyForQuery, discarding results (tracking
    /// ParameterStatus). Used for reset, check and parameter-sync statements pgsluice sends itself.
    pub async fn run_internal(&mut self, sql: &str) -> Result<(), ServerError> {
        self.query_internal(sql, None).await
    }

    /// As `run_internal`, also collecting the rows of its results (text columns, NULL as `None`) into
    /// `rows`.
    pub async fn query_internal(
        &mut self,
        sql: &str,
        rows: Option<&mut Vec<Vec<Option<String>>>>,
    ) -> Result<(), ServerError> {
        let mut out = BytesMut::new();
        messages::query(&mut out, sql);
        self.internal_request(sql, out, rows).await
    }

    /// One statement with text parameters over the extended protocol (so no parameter is ever
    /// spliced into SQL), collecting its rows. Used for auth_query.
    pub async fn query_with_params(
        &mut self,
        sql: &str,
        params: &[&str],
        rows: &mut Vec<Vec<Option<String>>>,
    ) -> Result<(), ServerError> {
        let mut out = BytesMut::new();
        frontend::parse("", sql, std::iter::empty(), &mut out)?;
        let values = params.iter().map(|p| p.as_bytes());
        frontend::bind(
            "",
            "",
            std::iter::empty(),
            values,
            |v, buf| {
                buf.extend_from_slice(v);
                Ok(postgres_protocol::IsNull::No)
            },
            std::iter::empty(),
            &mut out,
        )
        .map_err(|_| ServerError::Protocol("cannot encode parameters".into()))?;
        frontend::execute("", 0, &mut out)?;
        frontend::sync(&mut out);
        self.internal_request(sql, out, Some(rows)).await
    }

    async fn internal_request(
        &mut self,
        sql: &str,
        out: BytesMut,
        rows: Option<&mut Vec<Vec<Option<String>>>>,
    ) -> Result<(), ServerError> {
        let entry = self.registered.as_ref().map(|r| r.entry.clone());
        let before = entry.as_ref().map(|e| e.state());
        if let Some(e) = &entry {
            e.set_tested(true, ServerState::Idle);
        }
        // Bounded: a server that stops answering pgsluice's own statements is closed, not waited on.
        let result = match tokio::time::timeout(self.internal_timeout, self.run_internal_query(out, rows)).await {
            Ok(r) => r,
            Err(_) => {
                self.broken = true;
                Err(ServerError::Io(format!("no answer to {sql:?} within {:?}", self.internal_timeout)))
            }
        };
        if let (Some(e), Some(before)) = (&entry, before) {
            e.set_tested(false, before);
        }
        result
    }

    async fn run_internal_query(
        &mut self,
        out: BytesMut,
        mut rows: Option<&mut Vec<Vec<Option<String>>>>,
    ) -> Result<(), ServerError> {
        self.stream.send(&out).await?;
        let mut first_error = None;
        loop {
            let (tag, body) = self.read_internal().await?;
            match tag {
                b'Z' => {
                    let status = body.first().copied().and_then(TxStatus::from_byte);
                    self.tracker.on_ready(status.unwrap_or(TxStatus::Failed));
                    return match (first_error, status) {
                        (Some(e), _) => Err(e),
                        (None, Some(TxStatus::Idle)) => Ok(()),
                        _ => Err(ServerError::Protocol("unexpected transaction state".into())),
                    };
                }
                b'E' => {
                    let (severity, code, message) = messages::error_fields(&body);
                    first_error.get_or_insert(ServerError::Refused { severity, code, message });
                }
                b'S' => {
                    if let Some((n, v)) = messages::parameter_status_fields(&body) {
                        self.set_param(n, v);
                    }
                }
                b'A' if self.notifications.len() + body.len() < 1 << 20 => {
                    messages::put_message(&mut self.notifications, b'A', |m| m.extend_from_slice(&body));
                }
                b'D' => {
                    if let Some(rows) = rows.as_deref_mut() {
                        rows.push(
                            messages::data_row_text(&body)
                                .ok_or_else(|| ServerError::Protocol("bad DataRow".into()))?,
                        );
                    }
                }
                // A reset query such as DISCARD ALL drops every prepared statement on the server.
                b'C' if matches!(&body[..], b"DISCARD ALL\0" | b"DEALLOCATE ALL\0") => {
                    self.statements.clear();
                    self.sql_statements.clear();
                    if body.starts_with(b"DISCARD") {
                        self.session_settings.clear();
                    }
                }
                _ => {}
            }
        }
    }

    /// Reads one whole message for pgsluice's own use.
    async fn read_internal(&mut self) -> Result<(u8, Vec<u8>), ServerError> {
        loop {
            if let Some((tag, body, n)) =
                whole_message(&self.rbuf, MAX_INTERNAL_MESSAGE).map_err(|e| ServerError::Protocol(e.to_string()))?
            {
                let out = (tag, body.to_vec());
                let _ = self.rbuf.split_to(n);
                return Ok(out);
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(ServerError::Closed);
            }
        }
    }

    /// Best-effort Terminate without blocking, so PostgreSQL logs a clean disconnect.
    fn say_goodbye(&self) {
        self.stream.write_goodbye(b"X\0\0\0\x04");
    }
}

impl Drop for ServerConn {
    fn drop(&mut self) {
        self.say_goodbye();
    }
}

impl Poolable for ServerConn {
    fn is_reusable(&self) -> bool {
        !self.broken && self.tracker.is_clean() && self.rbuf.is_empty() && self.replies.is_empty()
    }

    fn is_alive(&mut self) -> bool {
        // EOF, or bytes on an idle server (e.g. FATAL on shutdown): not reusable.
        matches!(self.stream.poll_idle_peer(), Ok(false))
    }

    async fn check(&mut self) -> bool {
        let sql = self.check_query.clone();
        match sql {
            Some(sql) => self.run_internal(&sql).await.is_ok(),
            None => true,
        }
    }
}

/// Everything needed to open connections for one pool.
pub struct ServerConnector {
    pub target: ServerTarget,
    /// Keepalive and TCP_USER_TIMEOUT for its connections.
    pub tcp: crate::config::TcpOptions,
    /// The server-side user name.
    pub user: String,
    pub credentials: Arc<Mutex<Credentials>>,
    pub check_query: Option<String>,
    /// Bound on pgsluice's own statements (reset, check, parameter sync) on its connections.
    pub internal_timeout: std::time::Duration,
    /// ParameterStatus values of the first login, sent to clients at their login.
    pub welcome: Mutex<Option<Vec<(String, String)>>>,
    /// Where new connections are listed, under this client-visible database name.
    pub registry: Option<(Arc<crate::stats::servers::ServerRegistry>, String)>,
    /// The running TLS configuration (RELOAD replaces it; new connections take the new one).
    pub tls: Arc<crate::transport::TlsState>,
    /// Which host of a host list is next (see `next_target`).
    pub host_turn: std::sync::atomic::AtomicUsize,
}

impl ServerConnector {
    /// Where the next connection goes: with a host list, the next host (round-robin) or the current
    /// one (load_balance_hosts = disable, which moves on only when a connection fails).
    fn next_target(&self) -> ServerTarget {
        let hosts: Vec<&str> = self.target.hosts().collect();
        if hosts.len() <= 1 {
            return self.target.clone();
        }
        let turn = match self.target.load_balance {
            LoadBalance::RoundRobin => self.host_turn.fetch_add(1, Ordering::Relaxed),
            LoadBalance::Disable => self.host_turn.load(Ordering::Relaxed),
        };
        ServerTarget { host: hosts[turn % hosts.len()].to_string(), ..self.target.clone() }
    }
}

impl Connect for ServerConnector {
    type Conn = ServerConn;
    type Error = ServerError;

    fn holds_off(&self, e: &ServerError) -> bool {
        !matches!(e, ServerError::LocalResources { .. })
    }

    async fn connect(&self) -> Result<ServerConn, ServerError> {
        let creds = self.credentials.lock().map(|c| c.clone()).unwrap_or_default();
        let tls = self.tls.current().servers;
        let target = self.next_target();
        let result = login::connect(&target, &self.user, &creds, &self.tcp, tls.as_deref()).await;
        if result.is_err() && self.target.load_balance == LoadBalance::Disable {
            self.host_turn.fetch_add(1, Ordering::Relaxed); // that host failed: the next one from now on
        }
        let mut conn = result?;
        conn.check_query = self.check_query.clone();
        conn.internal_timeout = self.internal_timeout;
        if let Some((registry, db)) = &self.registry {
            let (local, tls) = (conn.stream.local_addr(), conn.stream.tls_description());
            conn.registered = Some(registry.register(db, &self.user, conn.addr.clone(), local, tls, conn.pid));
        }
        if let Ok(mut w) = self.welcome.lock()
            && w.is_none()
        {
            *w = Some(conn.params.clone());
        }
        Ok(conn)
    }
}
