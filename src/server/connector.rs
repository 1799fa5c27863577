//! Opening connections for one pool: where the next one goes (host lists), with which credentials
//! and TLS, and its SHOW SERVERS entry. Implements `pool::Connect`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::{Credentials, ServerConn, ServerError, login};
use crate::config::{LoadBalance, ServerTarget};
use crate::pool::Connect;

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
    /// log_connections when the pool was made: each new connection is logged, in PgBouncer's words.
    pub log_connections: bool,
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

    fn name(&self) -> String {
        let db = self.registry.as_ref().map_or(self.target.dbname.as_str(), |(_, db)| db.as_str());
        format!("{db}/{}", self.user)
    }

    fn holds_off(&self, e: &ServerError) -> bool {
        !matches!(e, ServerError::LocalResources { .. })
    }

    /// The server is away rather than refusing this login: not reachable, gone mid-login, starting up
    /// or shutting down (57P03), or out of connections (53300). Clients wait for it, as PgBouncer's do.
    fn waits_out(&self, e: &ServerError) -> bool {
        match e {
            ServerError::Connect { .. } | ServerError::Closed | ServerError::Io(_) => true,
            ServerError::Refused { code, .. } => matches!(code.as_str(), "57P03" | "53300"),
            _ => false,
        }
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
        if self.log_connections {
            let local = conn.stream.local_addr().map(|a| a.to_string()).unwrap_or_else(|| "unix socket".into());
            tracing::info!("{}@{} new connection to server (from {local})", self.name(), conn.addr);
        }
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
