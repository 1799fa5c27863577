//! `session_state` at the session's edges: the check before a server goes back, the settings sync when
//! one is attached (see `client::session_state`).

use std::sync::atomic::Ordering;

use super::{Session, State};
use crate::client::ClientError;
use crate::client::login::LoggedIn;
use crate::client::session_state::Pin;
use crate::server::{CloseReason, ServerConn};

impl Session {
    /// At a clean ReadyForQuery: checks the server if the transaction may have touched session state.
    /// True when the client is pinned and keeps its server.
    pub(super) async fn keep_for_session_state(&mut self) -> bool {
        let State::Active(active) = &mut self.state else { return false };
        let Some(conn) = active.lease.conn() else { return false };
        if self.session_state.needs_check() {
            let was = self.session_state.pin();
            // Bounded by server_connect_timeout (see run_internal); a server that fails it is closed.
            if self.session_state.check(conn, &self.login.params).await.is_err() {
                conn.close_after(CloseReason::InternalFailed);
                return false;
            }
            note_pin_change(&self.login, was, self.session_state.pin());
        }
        let notifications = conn.take_notifications();
        let pinned = self.session_state.pin().is_some();
        if pinned && !notifications.is_empty() {
            // Those that came during the check are the listener's; a client not reading is bounded.
            let limit = Some(self.settings.client_send_timeout).filter(|t| !t.is_zero());
            let write = self.sock.send(&notifications);
            let _ = tokio::time::timeout(limit.unwrap_or(std::time::Duration::from_secs(5)), write).await;
        }
        pinned
    }

    /// Makes a newly attached server's session settings the client's.
    pub(super) async fn sync_session_settings(&mut self, conn: &mut ServerConn) -> Result<(), ClientError> {
        conn.take_notifications(); // for an earlier client, whom they no longer reach
        let Some(sql) = self.session_state.sync_sql(conn) else { return Ok(()) };
        if let Err(e) = run_killable(conn, &sql, &mut self.killed).await {
            conn.close_after(CloseReason::InternalFailed);
            return Err(e);
        }
        // The client's SQL PREPAREd statements, one at a time: one that no longer prepares (its table is
        // gone, say) is lost to the client alone, as a direct connection would find it broken too.
        for (server_name, prepare) in self.session_state.missing_statements(conn) {
            match run_killable(conn, &prepare, &mut self.killed).await {
                Ok(()) => {}
                Err(e) if conn.is_closing() || matches!(e, ClientError::Killed) => return Err(e),
                Err(_) => self.session_state.forget_statement(&server_name),
            }
        }
        self.session_state.after_sync(conn);
        self.login.pool.stats.session_state.settings_applied.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Counts, shows and logs a change of the client's pin (`was` to `now`).
pub(super) fn note_pin_change(login: &LoggedIn, was: Option<Pin>, now: Option<Pin>) {
    if was == now {
        return;
    }
    let counts = &login.pool.stats.session_state;
    let (db, user) = (&login.db, &login.user);
    match (was, now) {
        (None, Some(pin)) => {
            counts.pins.fetch_add(1, Ordering::Relaxed);
            counts.pinned.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%db, %user, reason = pin.as_str(), "client pinned to its server");
        }
        (Some(_), None) => {
            let _ = counts.pinned.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(1)));
            tracing::debug!(%db, %user, "client unpinned");
        }
        _ => {}
    }
    login.registered.entry.set_pin(now.map(Pin::as_str));
}

/// One of pgsluice's own statements on `conn`, bounded by server_connect_timeout (see `run_internal`)
/// and by the console's KILL. A KILL or a lost server marks the server broken.
pub(super) async fn run_killable(
    conn: &mut ServerConn,
    sql: &str,
    killed: &mut std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
) -> Result<(), ClientError> {
    let result = tokio::select! {
        r = conn.run_internal(sql) => r.map_err(ClientError::Server),
        _ = killed => Err(ClientError::Killed),
    };
    if matches!(result, Err(ClientError::Killed)) {
        conn.close_after(CloseReason::ClientGone);
    }
    result
}
