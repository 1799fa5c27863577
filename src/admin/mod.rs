//! The admin console: the virtual database `pgbouncer` (or `pgsluice`) speaks PgBouncer's SHOW and
//! control commands over the simple query protocol, reading only the stats model and the pools' own
//! counts. Imports: protocol, stats, run_state, config, transport, shared, and client (the console
//! logins it serves).

pub(crate) mod control;
mod show;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::stats::clients::ClientState;
use crate::transport::Stream;
use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;

use crate::client::{Console, ConsoleLogin};
use crate::config::AuthType;
use crate::config::console::Role;
use crate::protocol::frame::whole_message;
use crate::protocol::messages::{self, TxStatus};
use crate::protocol::tags::{backend, frontend};
use crate::protocol::{PgError, SqlState};
use crate::shared::Shared;

pub use crate::config::console::{CONSOLE_DB, CONSOLE_USER};

/// Largest console command accepted.
const MAX_COMMAND: usize = 64 * 1024;

/// AuthenticationOk and the parameters PgBouncer's console sends (its admin pool's welcome: the
/// version, UTF8 encodings, ISO dates, GMT, standard strings, superuser), with the client's own
/// application_name echoed as PgBouncer does for every startup parameter it tracks; then ReadyForQuery.
/// Like PgBouncer 1.25, no NoticeResponse.
pub fn welcome(out: &mut BytesMut, cancel_key: (u32, u32), application_name: &str) {
    messages::auth_ok(out);
    let version = format!("{}/pgsluice", env!("CARGO_PKG_VERSION"));
    for (k, v) in [
        ("server_version", version.as_str()),
        ("client_encoding", "UTF8"),
        ("server_encoding", "UTF8"),
        ("DateStyle", "ISO"),
        ("TimeZone", "GMT"),
        ("standard_conforming_strings", "on"),
        ("is_superuser", "on"),
        ("integer_datetimes", "on"),
        ("application_name", application_name),
    ] {
        messages::parameter_status(out, k, v);
    }
    messages::backend_key_data(out, cancel_key.0, cancel_key.1);
    messages::ready_for_query(out, TxStatus::Idle);
}

/// The console command set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    Show(String),
    /// A command that changes state (PAUSE, RESUME, RELOAD, KILL, ...): its verb and arguments.
    Control {
        verb: String,
        args: Vec<String>,
    },
    Empty,
    Unknown(String),
}

const CONTROL_VERBS: &[&str] = &[
    "PAUSE",
    "RESUME",
    "RECONNECT",
    "DISABLE",
    "ENABLE",
    "KILL",
    "KILL_CLIENT",
    "WAIT_CLOSE",
    "SUSPEND",
    "SHUTDOWN",
    "RELOAD",
    "SET",
];

impl AdminCommand {
    pub fn parse(sql: &str) -> AdminCommand {
        let sql = sql.trim().trim_end_matches(';').trim();
        let mut words = sql.split_whitespace();
        let Some(verb) = words.next().map(str::to_ascii_uppercase) else {
            return AdminCommand::Empty;
        };
        match verb.as_str() {
            "SHOW" => AdminCommand::Show(words.next().unwrap_or("").to_ascii_uppercase()),
            v if CONTROL_VERBS.contains(&v) => {
                AdminCommand::Control { verb, args: words.map(|w| w.trim_matches('"').to_string()).collect() }
            }
            _ => AdminCommand::Unknown(sql.to_string()),
        }
    }
}

/// A console user's place among the clients (SHOW CLIENTS, KILL_CLIENT) and in the `pgbouncer`
/// pseudo-pool's counts, while its session lasts.
struct Counted {
    registered: crate::stats::clients::Registered,
    stats: Arc<crate::stats::PoolStats>,
    /// Its places under the client caps (SHOW DATABASES and SHOW USERS count console users).
    _caps: crate::client::CapsHeld,
}

impl Counted {
    fn new(shared: &Shared, login: ConsoleLogin, sock: &Stream) -> Counted {
        let ConsoleLogin { user, peer, application_name, caps, .. } = login;
        // With auth_type = any the name a client gives means nothing: PgBouncer shows its `pgbouncer` user.
        let any = shared.config().general.auth_type == AuthType::Any;
        let user = if any { CONSOLE_USER.to_string() } else { user };
        let registered = shared.client_registry.register(
            CONSOLE_DB,
            &user,
            peer,
            sock.local_addr(),
            sock.tls_description(),
            &application_name,
        );
        let stats = shared.stats.get(CONSOLE_DB, CONSOLE_USER);
        stats.client_login_count.fetch_add(1, Ordering::Relaxed);
        stats.clients.fetch_add(1, Ordering::Relaxed);
        Counted { registered, stats, _caps: caps }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.stats.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves console commands until the user leaves or is killed (KILL_CLIENT, shutdown).
pub async fn serve(shared: &Arc<Shared>, console: Console) {
    // The rest of `console` (its cancel key's registration) is held until the user leaves.
    let Console { mut sock, mut buf, login, .. } = console;
    let (role, cancel_key, application_name) = (login.role, login.cancel_key, login.application_name.clone());
    let counted = Counted::new(shared, login, &sock);
    let (entry, stats) = (counted.registered.entry.clone(), counted.stats.clone());
    // Listed first, welcomed then: whoever the user tells it is logged in finds it in SHOW CLIENTS.
    let mut out = BytesMut::new();
    welcome(&mut out, cancel_key, &application_name);
    if sock.send(&out).await.is_err() {
        return;
    }
    out.clear();
    // After an extended-protocol message is refused, the rest of its batch is skipped up to Sync.
    let mut skipping = false;
    loop {
        let (tag, body, n) = match whole_message(&buf, MAX_COMMAND) {
            Ok(Some((tag, body, n))) => (tag, body.to_vec(), n),
            Ok(None) => {
                let read = tokio::select! {
                    r = sock.read_buf(&mut buf) => r,
                    _ = entry.kill.cancelled() => return killed(&mut sock).await,
                };
                match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
            Err(e) => {
                let err = PgError::fatal(SqlState::PROTOCOL_VIOLATION, e.to_string());
                err.encode(&mut out);
                let _ = sock.send(&out).await;
                return;
            }
        };
        buf.advance(n);
        out.clear();
        match tag {
            frontend::TERMINATE => return,
            frontend::QUERY => {
                entry.set_state(ClientState::Idle, 0);
                // As PgBouncer, each console command counts as a transaction and a query of the pseudo-pool.
                stats.add(&crate::stats::Totals { xact_count: 1, query_count: 1, ..Default::default() });
                let sql = String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(&body)).into_owned();
                let cmd = AdminCommand::parse(&sql);
                // A command that waits (PAUSE, WAIT_CLOSE) ends with its session when that is killed.
                tokio::select! {
                    _ = execute(shared, role, &cmd, &mut out) => {}
                    _ = entry.kill.cancelled() => return killed(&mut sock).await,
                }
                messages::ready_for_query(&mut out, TxStatus::Idle);
            }
            frontend::SYNC => {
                skipping = false;
                messages::ready_for_query(&mut out, TxStatus::Idle);
            }
            frontend::FLUSH => {}
            tag if !messages::is_frontend_type(tag) => {
                let err = PgError::from(crate::protocol::ProtocolError::InvalidFrontendType(tag));
                err.encode(&mut out);
                let _ = sock.send(&out).await;
                return;
            }
            _ => {
                // Extended-protocol messages: one error, then skipped through their Sync like PostgreSQL does.
                if !skipping {
                    skipping = true;
                    let msg = "the admin console supports only the simple query protocol";
                    PgError::error(SqlState::FEATURE_NOT_SUPPORTED, msg).encode(&mut out);
                }
            }
        }
        if !out.is_empty() && sock.send(&out).await.is_err() {
            return;
        }
    }
}

/// Tells a killed console user why its connection ends (bounded: a peer that does not read cannot hold it).
async fn killed(sock: &mut Stream) {
    let mut out = BytesMut::new();
    PgError::fatal(SqlState::ADMIN_SHUTDOWN, "terminating connection due to administrator command").encode(&mut out);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), sock.send(&out)).await;
}

async fn execute(shared: &Arc<Shared>, role: Role, cmd: &AdminCommand, out: &mut BytesMut) {
    match cmd {
        AdminCommand::Empty => messages::put_message(out, backend::EMPTY_QUERY_RESPONSE, |_| {}),
        AdminCommand::Show(what) => {
            if let Err(e) = show::show(shared, what, out) {
                e.encode(out);
            }
        }
        AdminCommand::Control { verb, .. } if role != Role::Admin => {
            let msg = format!("{verb}: admin command not allowed for a stats user (admin_users)");
            PgError::error(SqlState::INSUFFICIENT_PRIVILEGE, msg).encode(out);
        }
        AdminCommand::Control { verb, args } => match control::run(shared, verb, args).await {
            Ok(done) => {
                done.notices.iter().for_each(|n| n.encode(out));
                messages::put_message(out, backend::COMMAND_COMPLETE, |b| messages::put_cstr(b, done.tag.as_bytes()));
            }
            Err(e) => e.encode(out),
        },
        AdminCommand::Unknown(sql) => {
            let msg = format!("invalid command '{sql}', use SHOW HELP;");
            PgError::error(SqlState::SYNTAX_ERROR, msg).encode(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_case_insensitively() {
        assert_eq!(AdminCommand::parse("show pools;"), AdminCommand::Show("POOLS".into()));
        assert_eq!(AdminCommand::parse("  SHOW   stats_totals "), AdminCommand::Show("STATS_TOTALS".into()));
        assert_eq!(
            AdminCommand::parse("kill_client 7"),
            AdminCommand::Control { verb: "KILL_CLIENT".into(), args: vec!["7".into()] }
        );
        assert_eq!(AdminCommand::parse(";"), AdminCommand::Empty);
        assert_eq!(AdminCommand::parse("select 1"), AdminCommand::Unknown("select 1".into()));
    }
}
