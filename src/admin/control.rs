//! Control commands: KILL, KILL_CLIENT (and, as they land, PAUSE, RESUME, RECONNECT, RELOAD, ...).
//! Each returns the command tag for CommandComplete, or the error to send.

use std::sync::Arc;

use crate::protocol::{PgError, SqlState};
use crate::shared::Shared;

pub async fn run(shared: &Arc<Shared>, verb: &str, args: &[String]) -> Result<String, PgError> {
    match verb {
        "KILL" => {
            let db = args.first().cloned();
            if db.as_deref().is_some_and(super::is_admin_db) {
                return Err(PgError::error(SqlState::FEATURE_NOT_SUPPORTED, "cannot kill the admin database"));
            }
            let n = shared.client_registry.kill(|c| db.as_ref().is_none_or(|d| &c.db == d));
            for (key, entry) in shared.all_pools() {
                if db.as_ref().is_none_or(|d| &key.db == d) {
                    entry.pool.close_idle();
                }
            }
            tracing::info!(db = db.as_deref().unwrap_or("(all)"), clients = n, "KILL");
            Ok("KILL".into())
        }
        "KILL_CLIENT" => {
            let id: u64 = args.first().and_then(|a| a.parse().ok()).ok_or_else(|| {
                PgError::error(SqlState::SYNTAX_ERROR, "KILL_CLIENT needs a client id (SHOW CLIENTS)")
            })?;
            if shared.client_registry.kill(|c| c.id == id) == 0 {
                return Err(PgError::error(SqlState::UNDEFINED_OBJECT, format!("no client with id {id}")));
            }
            Ok("KILL_CLIENT".into())
        }
        _ => Err(PgError::error(SqlState::FEATURE_NOT_SUPPORTED, format!("{verb} is not supported yet"))),
    }
}
