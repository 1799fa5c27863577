//! Connections to PostgreSQL: connect and log in as a client (`login`, `connector`), then carry raw
//! bytes while a `ServerModel` knows when the connection is clean (`conn`), and run pgsluice's own
//! statements (`internal`). Provides `ServerConnector: pool::Connect` and `ServerConn: pool::Poolable`.
//! Imports: protocol, stats, workers, config, auth, pool, transport.

mod cancels;
mod conn;
mod connector;
mod internal;
mod login;
pub mod replies;
pub mod statements;
pub mod tcp;
pub mod tracker;

pub use cancels::{CancelInFlight, CancelsInFlight};
pub use conn::{CloseReason, ConnState, ServerConn, ServerModel, SessionRecord};
pub use connector::ServerConnector;
pub use internal::Rows;
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
