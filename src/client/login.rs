//! A client's login after its StartupMessage (see `opening` for what comes before): limits,
//! authentication against the auth file, and the welcome (ParameterStatus, BackendKeyData, ReadyForQuery).

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;

use super::opening::Startup;
use super::params::{ClientParams, PROTOCOL_PARAMS};
use super::{ClientError, auth_lookup, identity};
use crate::auth::scram::ScramServer;
use crate::auth::{self, Method};
use crate::config::AuthType;
use crate::config::auth_file::Secret;
use crate::config::console::Role;
use crate::protocol::frame::whole_message;
use crate::protocol::messages::{self, TxStatus};
use crate::protocol::tags::frontend;
use crate::protocol::{PgError, ProtocolError};
use crate::server::Credentials;
use crate::shared::{ClientCountGuard, PoolEntry, Shared};
use crate::stats::PeerAddr;
use crate::transport::{Acceptor, Stream};

/// PostgreSQL's `PG_MAX_AUTH_TOKEN_LENGTH`: no password or SASL message may be larger (a password of
/// up to 65,530 bytes, as PostgreSQL and PgBouncer take; the StartupMessage has its own, smaller bound).
/// What a login in flight may hold is bounded by max_pending_logins.
const MAX_AUTH_MESSAGE: usize = 65_535;

/// What a successful login hands to the session.
pub struct LoggedIn {
    pub db: String,
    pub user: String,
    pub pool: Arc<PoolEntry>,
    pub params: ClientParams,
    pub registered: crate::stats::clients::Registered,
    /// The process's count of bytes held for prepared statements (`Shared::held_prepared`).
    pub held_prepared: Arc<crate::stats::HeldBytes>,
    pub _caps: CapsHeld,
    /// The client's place under max_client_conn, taken before the welcome so that a client told it is
    /// in is already counted.
    pub _counted: crate::shared::LoggedInGuard,
}

/// Who logged in to the console, and from where: the console is a client like any other (SHOW CLIENTS
/// lists it under the `pgbouncer` database, KILL_CLIENT ends it).
pub struct ConsoleLogin {
    pub user: String,
    pub role: Role,
    pub peer: crate::stats::PeerAddr,
    pub application_name: String,
    /// The BackendKeyData of the welcome.
    pub cancel_key: (u32, u32),
    pub caps: CapsHeld,
}

/// A client's places under its database's and its user's client caps (max_db_client_connections,
/// max_user_client_connections), held while it is connected; SHOW DATABASES and SHOW USERS count them.
pub struct CapsHeld {
    _db: ClientCountGuard,
    _user: ClientCountGuard,
}

/// Counts a client under its database's and user's client caps, or refuses it (53300). `exempt`: counted
/// but never refused (an admin user on the console, as PgBouncer).
fn count_under_caps(shared: &Shared, db: &str, user: &str, exempt: bool) -> Result<CapsHeld, ClientError> {
    let config = shared.config();
    let cap = |max: usize| if exempt { 0 } else { max };
    let db = shared.db_clients.try_add(db, cap(config.max_db_client_connections(db)));
    let db = db.ok_or(ClientError::TooManyClients("max_db_client_connections"))?;
    let user = shared.user_clients.try_add(user, cap(config.max_user_client_connections(user)));
    let user = user.ok_or(ClientError::TooManyClients("max_user_client_connections"))?;
    Ok(CapsHeld { _db: db, _user: user })
}

/// Who logged in: a client of a pool, or a user of the admin console.
#[allow(clippy::large_enum_variant)]
pub enum Login {
    Pooled(LoggedIn),
    Admin { user: String, role: Role, application_name: String, caps: CapsHeld },
}

/// Reads the next whole message from the client during login.
async fn read_login_message(sock: &mut Stream, buf: &mut BytesMut) -> Result<(u8, Vec<u8>), ClientError> {
    loop {
        if let Some((tag, body, n)) = whole_message(buf, MAX_AUTH_MESSAGE)? {
            let out = (tag, body.to_vec());
            buf.advance(n);
            return Ok(out);
        }
        if sock.read_buf(buf).await? == 0 {
            return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// Reads a PasswordMessage-family ('p') message, rejecting anything else.
async fn read_password(sock: &mut Stream, buf: &mut BytesMut) -> Result<Vec<u8>, ClientError> {
    match read_login_message(sock, buf).await? {
        (frontend::PASSWORD, body) => Ok(body),
        (tag, _) => Err(ProtocolError::UnexpectedMessage(tag).into()),
    }
}

/// Runs the configured authentication exchange. On success returns the SCRAM ClientKey when one was learned.
async fn authenticate(
    sock: &mut Stream,
    buf: &mut BytesMut,
    shared: &Shared,
    (peer, db, user): (&PeerAddr, &str, &str),
    tls: Option<&Acceptor>,
    secret: Option<&Secret>,
) -> Result<Option<[u8; 32]>, ClientError> {
    let failed = || ClientError::AuthFailed(user.to_string());
    let mut out = BytesMut::new();
    match identity::method(shared, sock, peer, db, user, secret) {
        // `trust` asks nothing, but only of users pgsluice knows; `any` lets anyone in.
        Method::Trust if secret.is_none() && shared.config().general.auth_type != AuthType::Any => {
            Err(ClientError::TrustFailed)
        }
        Method::Trust => Ok(None),
        Method::Reject(why) => Err(identity::rejected(why, sock, peer, db, user)),
        Method::Cert { map } => identity::check_certificate(shared, sock, map.as_deref(), user).map(|_| None),
        Method::Peer { map } => identity::check_peer(shared, sock, map.as_deref(), user).map(|_| None),
        Method::Plain => {
            messages::auth_cleartext(&mut out);
            sock.send(&out).await?;
            let body = read_password(sock, buf).await?;
            let pw = messages::password_body(&body)?;
            let ok = auth::verify_plain(secret, user, pw).await.map_err(|e| scram_error(e, user))?;
            ok.then_some(None).ok_or_else(failed)
        }
        Method::Md5 => {
            let salt = auth::md5::new_salt();
            messages::auth_md5(&mut out, salt);
            sock.send(&out).await?;
            let body = read_password(sock, buf).await?;
            let response = messages::password_body(&body)?;
            auth::md5::verify(secret, user, salt, response).then_some(None).ok_or_else(failed)
        }
        Method::ScramSha256 => {
            let binding = tls.and_then(|t| t.end_point.clone());
            scram_exchange(sock, buf, shared, secret, user, binding).await
        }
    }
}

async fn scram_exchange(
    sock: &mut Stream,
    buf: &mut BytesMut,
    shared: &Shared,
    secret: Option<&Secret>,
    user: &str,
    channel_binding: Option<Vec<u8>>,
) -> Result<Option<[u8; 32]>, ClientError> {
    let failed = || ClientError::AuthFailed(user.to_string());
    // A plain-text secret's keys are derived (once, then kept) off the async threads; the wait for a
    // permit is bounded by client_login_timeout around the whole login.
    let scram = ScramServer::new(&shared.scram, user, secret).await.map_err(|e| scram_error(e, user))?;
    let mut scram = scram.with_channel_binding(channel_binding);
    let mut out = BytesMut::new();
    messages::auth_sasl(&mut out, scram.mechanisms());
    sock.send(&out).await?;
    let body = read_password(sock, buf).await?;
    let (mechanism, data) = messages::sasl_initial_response(&body)?;
    scram.choose(mechanism).map_err(|_| ProtocolError::Malformed("unsupported SASL mechanism"))?;
    let server_first = scram.handle_client_first(data).map_err(|e| scram_error(e, user))?;
    out.clear();
    messages::auth_sasl_continue(&mut out, &server_first);
    sock.send(&out).await?;
    let body = read_password(sock, buf).await?;
    let server_final = scram.handle_client_final(&body).map_err(|e| scram_error(e, user))?;
    out.clear();
    messages::auth_sasl_final(&mut out, &server_final);
    sock.send(&out).await?;
    match secret {
        Some(Secret::Scram(_)) => Ok(scram.client_key()),
        Some(_) => Ok(None),
        None => Err(failed()),
    }
}

fn scram_error(e: auth::AuthError, user: &str) -> ClientError {
    match e {
        auth::AuthError::Failed => ClientError::AuthFailed(user.to_string()),
        auth::AuthError::Unavailable => ClientError::ShuttingDown,
        _ => ProtocolError::Malformed("malformed SCRAM message").into(),
    }
}

/// The whole login after the StartupMessage. Sends AuthenticationOk and the welcome on success.
pub async fn login(
    sock: &mut Stream,
    buf: &mut BytesMut,
    shared: &Shared,
    peer: &PeerAddr,
    startup: Startup,
    cancel_key: (u32, u32),
) -> Result<Login, ClientError> {
    let Startup { minor, params: startup, tls } = startup;
    let config = shared.config();
    let get = |k: &str| startup.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let user = get("user").filter(|u| !u.is_empty()).ok_or(ClientError::NoUser)?;
    let db = get("database").filter(|d| !d.is_empty()).unwrap_or_else(|| user.clone());
    let mut out = BytesMut::new();
    if minor > 0 {
        let unknown: Vec<&str> =
            startup.iter().filter(|(k, _)| k.starts_with("_pq_.")).map(|(k, _)| k.as_str()).collect();
        messages::negotiate_protocol_version(&mut out, &unknown);
        sock.send(&out).await?;
        out.clear();
    }
    let secret = auth_lookup::secret_for(shared, &db, &user).await?;
    let client_key = authenticate(sock, buf, shared, (peer, &db, &user), tls.as_deref(), secret.as_ref()).await?;
    if crate::config::console::is_admin_db(&db) {
        let role = crate::config::console::role_of(&config.general, &user)
            .ok_or_else(|| ClientError::NotAdmin(user.clone()))?;
        let caps = count_under_caps(shared, crate::config::console::CONSOLE_DB, &user, role == Role::Admin)?;
        // The console sends its welcome once its user is listed among the clients (admin::serve).
        let application_name = get("application_name").unwrap_or_default();
        return Ok(Login::Admin { user, role, application_name, caps });
    }
    // Draining: without SO_REUSEPORT the port stays open (for the console) and new clients are refused;
    // with it the listener is closed, so whoever got in before that is served.
    if *shared.run_state.borrow() != crate::run_state::RunState::Running && !config.general.so_reuseport {
        return Err(ClientError::ShuttingDown);
    }
    // auth_type = any: the client's user name is ignored, the database entry's user logs in (and counts).
    let user = if config.general.auth_type == AuthType::Any {
        let settings = config.pool_settings(&db, &user).ok_or_else(|| ClientError::NoDatabase(db.clone()))?;
        // The config is refused without one; never fall back to the client's own name.
        settings.server.user.ok_or(ProtocolError::Malformed("auth_type = any needs a user in every database entry"))?
    } else {
        user
    };
    let pool = shared.pool(&db, &user).map_err(|e| match e {
        crate::shared::NoPool::NoDatabase => ClientError::NoDatabase(db.clone()),
        crate::shared::NoPool::TooManyAutoPools => ClientError::TooManyClients("autodb_max_pools"),
    })?;
    if shared.is_disabled(&db) {
        return Err(ClientError::DatabaseDisabled(db));
    }
    let general = &config.general;
    let counted =
        shared.try_count_logged_in(general.max_client_conn).ok_or(ClientError::TooManyClients("max_client_conn"))?;
    let caps = count_under_caps(shared, &db, &user, false)?;
    let mut params = startup_settings(general, &startup)?;
    if general.application_name_add_host {
        let app = params.get("application_name").unwrap_or_default().to_string();
        params.set("application_name", &format!("{app} - {}:{}", peer.host_text(), peer.port()));
    }
    // What the login proved logs in to the server as that same user (never a forced one): SCRAM keys
    // from the client's proof (SCRAM passthrough: no password needed), or an md5 secret auth_query
    // returned. Replaced each time, so a changed password takes effect at the next login.
    if pool.pool.connector().user == user {
        let learned = match (client_key, &secret) {
            (Some(ck), Some(Secret::Scram(s))) => {
                Some(Credentials::ScramKeys { client_key: ck, server_key: s.server_key })
            }
            (_, Some(Secret::Md5(h))) if shared.secret(&user).is_none() => Some(Credentials::Md5Hash(h.clone())),
            _ => None,
        };
        if let Some(c) = learned {
            *pool.pool.connector().credentials.lock().unwrap_or_else(|e| e.into_inner()) = c;
        }
    }
    let welcome = welcome_params(&pool, &db).await?;
    params.default_from(&welcome);
    messages::auth_ok(&mut out);
    for (k, v) in &welcome {
        let v = params.get(k).unwrap_or(v);
        messages::parameter_status(&mut out, k, v);
    }
    for (k, v) in params.iter().filter(|(k, _)| !welcome.iter().any(|(w, _)| w == k)) {
        messages::parameter_status(&mut out, k, v);
    }
    messages::backend_key_data(&mut out, cancel_key.0, cancel_key.1);
    messages::ready_for_query(&mut out, TxStatus::Idle);
    sock.send(&out).await?;
    let app = params.get("application_name").unwrap_or_default().to_string();
    let registered =
        shared.client_registry.register(&db, &user, peer.clone(), sock.local_addr(), sock.tls_description(), &app);
    let held_prepared = shared.held_prepared.clone();
    Ok(Login::Pooled(LoggedIn { db, user, pool, params, registered, held_prepared, _caps: caps, _counted: counted }))
}

/// The pool's server parameters, connecting once if no server has been seen yet (this also proves
/// the database is reachable and the server credentials work).
async fn welcome_params(pool: &PoolEntry, db: &str) -> Result<Vec<(String, String)>, ClientError> {
    let cached = || pool.pool.connector().welcome.lock().ok().and_then(|w| w.clone());
    if let Some(w) = cached() {
        return Ok(w);
    }
    let lease =
        pool.pool.acquire(pool.settings().query_wait_timeout).await.map_err(|e| ClientError::from_pool(e, db))?;
    lease.release();
    cached().ok_or_else(|| ClientError::ServerLost("no server parameters".into()))
}

/// Sends a login error (best effort) before the connection is closed.
pub async fn send_error(sock: &mut Stream, err: &PgError) {
    let mut out = BytesMut::new();
    err.encode(&mut out);
    // Bounded: a peer that does not read cannot hold its task here.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), sock.send(&out)).await;
}

/// The `options` startup parameter, when it holds only `-c name=value` / `--name=value` settings
/// (what libpq's PGOPTIONS and drivers send). Anything else is refused by the caller.
/// The session settings a client's startup packet asks for. As PostgreSQL, the `-c` settings in `options`
/// first, then the startup parameters, which win. As PgBouncer, what pgsluice does not track is refused
/// unless ignore_startup_parameters names it; naming `options` there ignores whatever in it is not
/// tracked (and an `options` that is not `-c` settings), while what is tracked still applies.
fn startup_settings(
    general: &crate::config::General,
    startup: &[(String, String)],
) -> Result<ClientParams, ClientError> {
    let mut params = ClientParams::new(&general.track_extra_parameters);
    let ignored = |k: &str| general.ignore_startup_parameters.iter().any(|i| i.eq_ignore_ascii_case(k));
    let given = startup.iter().filter(|(k, _)| !PROTOCOL_PARAMS.contains(&k.as_str()) && !k.starts_with("_pq_."));
    let (options, explicit): (Vec<_>, Vec<_>) = given.partition(|(k, _)| k == "options");
    for (_, v) in options {
        let Some(settings) = parse_options(v) else {
            if ignored("options") {
                continue;
            }
            return Err(ClientError::UnsupportedOptions);
        };
        for (k, v) in settings {
            if params.canonical(&k).is_some() {
                params.set(&k, &v);
            } else if !ignored(&k) && !ignored("options") {
                return Err(ClientError::UnsupportedParameterInOptions(k));
            }
        }
    }
    for (k, v) in explicit {
        if params.canonical(k).is_some() {
            params.set(k, v);
        } else if !ignored(k) {
            return Err(ClientError::UnsupportedParameter(k.clone()));
        }
    }
    Ok(params)
}

fn parse_options(options: &str) -> Option<Vec<(String, String)>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.push(chars.next()?),
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let setting = if w == "-c" {
            it.next()?
        } else if let Some(s) = w.strip_prefix("-c").or_else(|| w.strip_prefix("--")) {
            s.to_string()
        } else {
            return None;
        };
        let (k, v) = setting.split_once('=')?;
        out.push((k.replace('-', "_"), v.to_string()));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn options_hold_settings_only() {
        assert_eq!(
            super::parse_options("-c timezone=UTC  --search_path=a\\ b -cDateStyle=ISO").unwrap(),
            vec![
                ("timezone".into(), "UTC".into()),
                ("search_path".into(), "a b".into()),
                ("DateStyle".into(), "ISO".into())
            ]
        );
        assert!(super::parse_options("-X").is_none());
        assert!(super::parse_options("-c").is_none());
    }
}
