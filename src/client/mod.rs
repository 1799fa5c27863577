//! One task per client connection: login, then the session loop. This is the edge where every
//! error becomes a PostgreSQL ErrorResponse. Imports: protocol, stats, run_state, sql, config, auth, pool,
//! transport, server, cancel, shared.

mod auth_lookup;
mod error;
mod identity;
mod login;
mod opening;
mod params;
mod prepared;
mod session;
mod session_state;
mod sql_prepared;
mod step;

use std::sync::Arc;

use crate::stats::PeerAddr;
use crate::transport::Stream;
use bytes::BytesMut;

pub use error::ClientError;
use login::Login;
pub use login::{CapsHeld, ConsoleLogin};
use opening::Opening;
use session::Session;

use crate::shared::{PendingLogin, Shared};

/// A console connection past login, for `admin::serve` (the listener hands it over): its socket, what
/// it sent after logging in, who it is, and its cancel key's registration, held while it is served.
pub struct Console {
    pub sock: Stream,
    pub buf: BytesMut,
    pub login: ConsoleLogin,
    _registration: crate::cancel::Registration,
}

/// Serves one accepted client connection to the end of its pooled session, or through its login when
/// it is a console user (returned, for the console to serve). Never panics on client input.
pub async fn serve(shared: Arc<Shared>, stream: Stream, peer: PeerAddr, pending: PendingLogin) -> Option<Console> {
    let config = shared.config();
    let general = &config.general;
    if let Some(tcp) = stream.tcp() {
        let _ = tcp.set_nodelay(true);
        if let Err(e) = crate::server::tcp::apply(tcp, &general.tcp_options()) {
            tracing::debug!(%peer, error = %e, "could not set TCP options");
        }
    }
    let accepted = std::time::Instant::now();
    let registration = shared.cancel.register();
    // Small: login messages are (a StartupMessage, a password); the session reads into pooled buffers.
    let mut buf = BytesMut::with_capacity(512);
    // Outside the login, so that a login cut short (timeout, eviction) can still be told why.
    let mut sock = Some(stream);
    let login = async {
        let opening = opening::open(&mut sock, &mut buf, &shared).await?;
        let s = sock.as_mut().ok_or_else(|| ClientError::Io(std::io::ErrorKind::NotConnected.into()))?;
        let startup = match opening {
            Opening::Cancelled => return Ok(None),
            Opening::Startup(s) => s,
        };
        // The admin console stays reachable when the proxy is full.
        let admin = startup.params.iter().any(|(k, v)| k == "database" && crate::config::console::is_admin_db(v));
        // Refused early when full (counted for real, atomically, before the welcome: login::login).
        // Those still logging in have their own budget.
        if !admin && general.max_client_conn != 0 && shared.logged_in_count() >= general.max_client_conn {
            return Err(ClientError::TooManyClients("max_client_conn"));
        }
        let key = (registration.slot.pid, registration.slot.key);
        login::login(s, &mut buf, &shared, &peer, startup, key).await.map(Some)
    };
    // Boxed, and gone once the client is in: the login's state (TLS handshake, SCRAM, lookups) is
    // several times the session's, and inline every idle client's task would keep its size.
    let login = Box::pin(login);
    let login = async {
        tokio::select! {
            r = login => r,
            _ = pending.evicted() => Err(ClientError::TooManyClients("max_pending_logins")),
        }
    };
    let timeout = general.client_login_timeout;
    let result = if timeout.is_zero() {
        login.await
    } else {
        tokio::time::timeout(timeout, login).await.unwrap_or(Err(ClientError::LoginTimeout))
    };
    let (logged_in, sock) = match (result, sock) {
        (Ok(Some(l)), Some(s)) => (l, s),
        (Ok(_), _) => return None,
        (Err(e), sock) => {
            // A peer that connects and leaves (a health check, a port probe) is not an error.
            if matches!(e, ClientError::Io(_)) {
                tracing::debug!(%peer, error = %e, "connection closed during login");
            } else if general.log_pooler_errors {
                let age = accepted.elapsed().as_secs();
                tracing::info!(%peer, error = %e, "closing because: {} (age={age}s)", e.close_reason());
            }
            if let Some(mut s) = sock.filter(|_| !matches!(e, ClientError::Io(_))) {
                login::send_error(&mut s, &e.to_pg()).await;
            }
            return None;
        }
    };
    drop(pending); // a pooled client is counted among the logged-in ones (LoggedIn::_counted)
    let logged_in = match logged_in {
        Login::Pooled(l) => l,
        Login::Admin { user, role, application_name, caps } => {
            if general.log_connections {
                tracing::info!(%peer, %user, ?role, "admin console login");
            }
            let cancel_key = (registration.slot.pid, registration.slot.key);
            let login = ConsoleLogin { user, role, peer: peer.clone(), application_name, cancel_key, caps };
            return Some(Console { sock, buf, login, _registration: registration });
        }
    };
    let (db, user) = (logged_in.db.clone(), logged_in.user.clone());
    if general.log_connections {
        tracing::info!(%peer, %db, %user, "login");
    }
    let cancel_wait = general.cancel_wait_timeout;
    let mut session = Session::new(sock, buf, logged_in, registration.slot.clone(), cancel_wait);
    let ended = session.run().await;
    drop(session);
    // PgBouncer's wording ("closing because: …"), which its users' log alerts match.
    let age = accepted.elapsed().as_secs();
    match ended {
        Ok(()) | Err(ClientError::Io(_)) if !general.log_disconnections => {}
        Err(ref e) if !matches!(e, ClientError::Io(_)) && !general.log_pooler_errors => {}
        Ok(()) => tracing::info!(%peer, %db, %user, "closing because: client close request (age={age}s)"),
        Err(ClientError::Io(_)) => {
            tracing::info!(%peer, %db, %user, "closing because: client unexpected eof (age={age}s)")
        }
        Err(e) => tracing::info!(%peer, %db, %user, error = %e, "closing because: {} (age={age}s)", e.close_reason()),
    }
    drop(registration);
    None
}
