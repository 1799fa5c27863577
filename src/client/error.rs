//! Client-edge errors and the one table that turns them into SQLSTATEs.

use std::time::Duration;

use crate::pool::PoolError;
use crate::protocol::{PgError, ProtocolError, Severity, SqlState};
use crate::server::ServerError;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("client I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("client login timed out")]
    LoginTimeout,
    #[error("unsupported frontend protocol {0}.{1}: server supports 3.0 to 3.0")]
    UnsupportedProtocol(u16, u16),
    #[error("no PostgreSQL user name specified in startup packet")]
    NoUser,
    #[error("password authentication failed for user \"{0}\"")]
    AuthFailed(String),
    /// `trust` for a user neither the auth file nor auth_query knows (as PgBouncer; `any` lets anyone in).
    #[error("\"trust\" authentication failed")]
    TrustFailed,
    #[error("no such database: {0}")]
    NoDatabase(String),
    #[error("user \"{0}\" is not allowed to use the admin console (admin_users, stats_users)")]
    NotAdmin(String),
    #[error("unsupported startup parameter: {0}")]
    UnsupportedParameter(String),
    #[error("unsupported options startup parameter: only '-c config=val' and '--config=val' are allowed")]
    UnsupportedOptions,
    #[error("unsupported startup parameter in options: {0}")]
    UnsupportedParameterInOptions(String),
    #[error("no more connections allowed ({0})")]
    TooManyClients(&'static str),
    #[error("query_wait_timeout: no server connection available in pool {pool} after waiting {waited:?}")]
    QueryWaitTimeout { pool: String, waited: Duration },
    #[error("{0}")]
    Server(ServerError),
    #[error("server connection failed: {0}")]
    ServerLost(String),
    /// The server broke the protocol: its connection is closed, the client told why.
    #[error("server connection closed: {0}")]
    ServerProtocol(ProtocolError),
    #[error("pool for {0} is closed")]
    PoolClosed(String),
    #[error("client_idle_timeout")]
    ClientIdleTimeout,
    /// Idle while its session state (the reason) kept its server its own.
    #[error("pinned_idle_timeout: idle while holding a server for its {0}")]
    PinnedIdleTimeout(&'static str),
    #[error("pgsluice is shutting down")]
    ShuttingDown,
    #[error("database \"{0}\" is disabled")]
    DatabaseDisabled(String),
    #[error("terminating connection due to administrator command")]
    Killed,
    /// The client stopped reading: nothing can be sent to it any more.
    #[error("client_send_timeout: the client stopped reading")]
    ClientSendTimeout,
    #[error("idle transaction timeout")]
    IdleTransactionTimeout,
    #[error("transaction timeout")]
    TransactionTimeout,
    #[error("query_timeout: canceling statement due to query_timeout")]
    QueryTimeout,
    #[error("transaction blocks not allowed in statement pooling mode")]
    StatementModeTransaction,
    /// Refused by the HBA rules or by certificate/peer authentication (28000, PostgreSQL's wording).
    #[error("{0}")]
    Refused(String),
    /// A plain-text login where client_tls_sslmode requires TLS.
    #[error("TLS is required (client_tls_sslmode = {0}): connect with sslmode=require or stronger")]
    TlsRequired(&'static str),
    /// The handshake failed: nothing more can be said to the client.
    #[error("TLS handshake failed: {0}")]
    TlsHandshake(String),
}

impl ClientError {
    /// Why the client is closed, in PgBouncer's words where it has some (its log lines read
    /// `closing because: <this>`, and alerts match them); else the error's own text.
    pub fn close_reason(&self) -> std::borrow::Cow<'_, str> {
        use ClientError as E;
        match self {
            E::AuthFailed(_) => "password authentication failed".into(),
            E::LoginTimeout => "client_login_timeout".into(),
            E::ClientIdleTimeout => "client_idle_timeout".into(),
            E::QueryTimeout => "query timeout".into(),
            E::ShuttingDown => "server shutting down".into(),
            E::Killed => "admin command".into(),
            E::ClientSendTimeout => "client_send_timeout".into(),
            e => e.to_string().into(),
        }
    }

    /// The only SQLSTATE table in pgsluice (DESIGN.md, "Decisions already made").
    pub fn to_pg(&self) -> PgError {
        use ClientError as E;
        let msg = self.to_string();
        match self {
            E::Protocol(_) | E::LoginTimeout => PgError::fatal(SqlState::PROTOCOL_VIOLATION, msg),
            E::Io(_) => PgError::fatal(SqlState::CONNECTION_FAILURE, msg),
            E::UnsupportedProtocol(..) => PgError::fatal(SqlState::FEATURE_NOT_SUPPORTED, msg),
            E::NoUser => PgError::fatal(SqlState::INVALID_AUTHORIZATION, msg),
            E::AuthFailed(_) => PgError::fatal(SqlState::INVALID_PASSWORD, msg),
            E::NoDatabase(_) => PgError::fatal(SqlState::INVALID_CATALOG_NAME, msg),
            E::NotAdmin(_) | E::TrustFailed => PgError::fatal(SqlState::INVALID_AUTHORIZATION, msg),
            E::UnsupportedParameter(_) | E::UnsupportedOptions | E::UnsupportedParameterInOptions(_) => {
                PgError::fatal(SqlState::PROTOCOL_VIOLATION, msg)
            }
            E::TooManyClients(_) => PgError::fatal(SqlState::TOO_MANY_CONNECTIONS, msg),
            E::QueryWaitTimeout { .. } => PgError::error(SqlState::QUERY_CANCELED, msg),
            E::Server(ServerError::Refused { code, message, .. }) => {
                PgError::forwarded(Severity::Fatal, code, message.clone())
            }
            E::Server(_) | E::ServerLost(_) => PgError::fatal(SqlState::CONNECTION_FAILURE, msg),
            E::ServerProtocol(_) => PgError::fatal(SqlState::PROTOCOL_VIOLATION, msg),
            E::PoolClosed(_) => PgError::fatal(SqlState::CANNOT_CONNECT_NOW, msg),
            E::ClientIdleTimeout | E::PinnedIdleTimeout(_) => PgError::fatal(SqlState::IDLE_SESSION_TIMEOUT, msg),
            E::IdleTransactionTimeout => PgError::fatal(SqlState::IDLE_IN_TRANSACTION_TIMEOUT, msg),
            E::TransactionTimeout => PgError::fatal(SqlState::TRANSACTION_TIMEOUT, msg),
            E::QueryTimeout => PgError::fatal(SqlState::QUERY_CANCELED, msg),
            E::Killed => PgError::fatal(SqlState::ADMIN_SHUTDOWN, msg),
            E::ShuttingDown => PgError::fatal(SqlState::CANNOT_CONNECT_NOW, msg),
            E::DatabaseDisabled(_) => PgError::fatal(SqlState::CANNOT_CONNECT_NOW, msg),
            E::ClientSendTimeout => PgError::fatal(SqlState::CONNECTION_FAILURE, msg),
            E::StatementModeTransaction => PgError::fatal(SqlState::FEATURE_NOT_SUPPORTED, msg),
            E::TlsRequired(_) | E::Refused(_) => PgError::fatal(SqlState::INVALID_AUTHORIZATION, msg),
            E::TlsHandshake(_) => PgError::fatal(SqlState::PROTOCOL_VIOLATION, msg),
        }
    }

    pub fn from_pool(e: PoolError<ServerError>, pool: &str) -> ClientError {
        match e {
            PoolError::WaitTimeout { waited } => ClientError::QueryWaitTimeout { pool: pool.to_string(), waited },
            PoolError::Connect(s) | PoolError::LoginRetry(s) => ClientError::Server(s),
            PoolError::Closed => ClientError::PoolClosed(pool.to_string()),
            PoolError::ConnectTimeout(d) => ClientError::ServerLost(format!("connect timed out after {d:?}")),
        }
    }
}
