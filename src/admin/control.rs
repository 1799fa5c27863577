//! Control commands: KILL, KILL_CLIENT, PAUSE, RESUME, RECONNECT, RELOAD, ...
//! Each returns the command tag for CommandComplete (with notices to send before it), or the error.

use std::sync::Arc;

use crate::protocol::{PgError, SqlState};
use crate::shared::Shared;

/// Polls `done` every 20 ms (the console command blocks, as PgBouncer's does).
async fn wait_until(done: impl Fn() -> bool) {
    while !done() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A command's success: its tag and any notices for the console user.
pub struct Done {
    pub tag: String,
    pub notices: Vec<PgError>,
}

pub async fn run(shared: &Arc<Shared>, verb: &str, args: &[String]) -> Result<Done, PgError> {
    if verb == "RELOAD" {
        // PgBouncer's words (its log has the reason); pgsluice also says why in the DETAIL.
        let restart = shared.reload().map_err(|e| {
            PgError::error(SqlState::CONFIG_FILE_ERROR, "RELOAD failed, see logs for additional details").with_detail(e)
        })?;
        let notices = restart
            .iter()
            .map(|key| PgError::notice(format!("{key} changed: restart pgsluice for it to take effect")))
            .collect();
        return Ok(Done { tag: "RELOAD".into(), notices });
    }
    run_plain(shared, verb, args).await.map(|tag| Done { tag, notices: Vec::new() })
}

/// The database a command names, checked as PgBouncer checks it: not the console's own (RESUME of it is
/// a no-op), and one that exists (an entry, the `"*"` fallback, or a pool).
fn check_database(shared: &Shared, verb: &str, db: &str) -> Result<(), PgError> {
    let action = match verb {
        "KILL" => "kill",
        "PAUSE" => "pause",
        "RECONNECT" => "reconnect",
        "WAIT_CLOSE" => "wait in",
        "DISABLE" => "disable",
        "ENABLE" => "enable",
        _ => return Ok(()),
    };
    if crate::config::console::is_admin_db(db) {
        let msg = format!("cannot {action} admin db: {db}");
        return Err(PgError::error(SqlState::FEATURE_NOT_SUPPORTED, msg));
    }
    let config = shared.config();
    let known = config.databases.contains_key(db) || config.databases.contains_key("*");
    if !known && shared.pools_of(Some(db)).is_empty() {
        return Err(PgError::error(SqlState::INVALID_CATALOG_NAME, format!("no such database: {db}")));
    }
    Ok(())
}

async fn run_plain(shared: &Arc<Shared>, verb: &str, args: &[String]) -> Result<String, PgError> {
    if let Some(db) = args.first().filter(|_| verb != "SET" && verb != "SHUTDOWN" && verb != "KILL_CLIENT") {
        check_database(shared, verb, db)?;
    }
    match verb {
        "KILL" => {
            let db = args.first().cloned();
            // As PgBouncer, KILL also pauses the database (every database with a pool, without a name): new
            // clients wait until RESUME. Pausing first closes the idle servers, and the killed clients'
            // servers as they are released.
            let dbs: std::collections::BTreeSet<String> = match &db {
                Some(d) => [d.clone()].into(),
                None => shared.all_pools().into_iter().map(|(k, _)| k.db).collect(),
            };
            for d in &dbs {
                shared.pause(Some(d));
            }
            // The console's own users are not the databases' clients: KILL leaves them (as PgBouncer).
            let n = shared
                .client_registry
                .kill(|c| !crate::config::console::is_admin_db(&c.db) && db.as_ref().is_none_or(|d| &c.db == d));
            tracing::info!(db = db.as_deref().unwrap_or("(all)"), clients = n, "KILL");
            Ok("KILL".into())
        }
        "KILL_CLIENT" => {
            // PgBouncer's words; the id is SHOW CLIENTS' `id`.
            let id: u64 = args
                .first()
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| PgError::error(SqlState::SYNTAX_ERROR, "invalid client pointer supplied"))?;
            if shared.client_registry.kill(|c| c.id == id) == 0 {
                return Err(PgError::error(SqlState::UNDEFINED_OBJECT, "client not found"));
            }
            Ok("KILL_CLIENT".into())
        }
        "PAUSE" => {
            let db = args.first().map(String::as_str);
            shared.pause(db);
            // Returns once every server of the paused pools is closed (transactions in flight finish).
            wait_until(|| shared.pools_of(db).iter().all(|(_, e)| e.pool.counts().open == 0)).await;
            tracing::info!(db = db.unwrap_or("(all)"), "PAUSE");
            Ok("PAUSE".into())
        }
        "RESUME" => {
            // As PgBouncer: a shutdown's pause is not undone.
            if args.is_empty() && *shared.run_state.borrow() != crate::run_state::RunState::Running {
                return Err(PgError::error(SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE, "pooler is shutting down"));
            }
            shared.resume(args.first().map(String::as_str));
            Ok("RESUME".into())
        }
        "RECONNECT" => {
            shared.reconnect(args.first().map(String::as_str));
            Ok("RECONNECT".into())
        }
        "WAIT_CLOSE" => {
            let db = args.first().map(String::as_str);
            wait_until(|| shared.pools_of(db).iter().all(|(_, e)| e.pool.stale_open() == 0)).await;
            Ok("WAIT_CLOSE".into())
        }
        "DISABLE" | "ENABLE" => {
            let db = args
                .first()
                .ok_or_else(|| PgError::error(SqlState::SYNTAX_ERROR, format!("{verb} needs a database name")))?;
            shared.set_disabled(db, verb == "DISABLE");
            Ok(verb.to_string())
        }
        "SHUTDOWN" => shutdown(shared, args),
        "SET" => set(shared, args),
        "SUSPEND" => {
            // pgsluice keeps no socket buffers to flush: SUSPEND stops handing out servers at once (like
            // PAUSE, without waiting for them to close) until RESUME. Online restarts use so_reuseport.
            shared.suspend();
            Ok("SUSPEND".into())
        }
        _ => Err(PgError::error(SqlState::FEATURE_NOT_SUPPORTED, format!("{verb} is not supported yet"))),
    }
}

/// SHUTDOWN [WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS]: the supervisor acts on the new run state.
fn shutdown(shared: &Arc<Shared>, args: &[String]) -> Result<String, PgError> {
    use crate::run_state::{RunState, ShutdownMode};
    let mode = match args.first().map(|a| a.to_ascii_uppercase()).as_deref() {
        None => ShutdownMode::Immediate,
        Some("WAIT_FOR_SERVERS") => ShutdownMode::WaitForServers,
        Some("WAIT_FOR_CLIENTS") => ShutdownMode::WaitForClients,
        Some(other) => {
            let msg = format!("SHUTDOWN {other}: expected WAIT_FOR_SERVERS or WAIT_FOR_CLIENTS");
            return Err(PgError::error(SqlState::SYNTAX_ERROR, msg));
        }
    };
    shared.run_state.send_replace(RunState::Draining(mode));
    Ok("SHUTDOWN".into())
}

/// SET key = value: the running config with one setting changed, applied as RELOAD applies a file.
fn set(shared: &Arc<Shared>, args: &[String]) -> Result<String, PgError> {
    let text = args.join(" ");
    let (key, value) = text
        .split_once('=')
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .ok_or_else(|| PgError::error(SqlState::SYNTAX_ERROR, "usage: SET key = value"))?;
    if crate::config::RESTART_ONLY.contains(&key.as_str()) {
        let msg = format!("{key} cannot be changed while running");
        return Err(PgError::error(SqlState::CANT_CHANGE_RUNTIME_PARAM, msg));
    }
    let config = shared.config().with_setting(&key, &value).map_err(|e| {
        use crate::config::SetError;
        let code = match e {
            SetError::Unknown(_) => SqlState::UNDEFINED_OBJECT,
            SetError::NotSupported(_) => SqlState::FEATURE_NOT_SUPPORTED,
            SetError::Invalid(_) => SqlState::INVALID_PARAMETER_VALUE,
        };
        PgError::error(code, e.to_string())
    })?;
    for warning in config.warnings() {
        tracing::warn!(%warning, "configuration");
    }
    let files = crate::shared::Files::load(&config).map_err(|e| PgError::error(SqlState::CONFIG_FILE_ERROR, e))?;
    shared.apply(config, files);
    tracing::info!(%key, %value, "SET");
    Ok("SET".into())
}
