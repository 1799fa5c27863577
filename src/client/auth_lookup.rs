//! The secret a client is checked against: the auth file's, else (auth_user set) what auth_query
//! returns for it, run over a pooled connection of auth_user with the name as a bound parameter.
//! Lookups are bounded in number (`MAX_AUTH_LOOKUPS` at once) and in time (the pool's query_wait_timeout,
//! then server_connect_timeout for the query; client_login_timeout around it all). A user the query
//! does not know, or knows without a secret (expired, NOLOGIN), is `None`: the login then fails with
//! the same 28P01 as a wrong password.

use super::ClientError;
use crate::config::auth_file::Secret;
use crate::shared::Shared;

/// The secret for `user` logging in to `db`.
pub async fn secret_for(shared: &Shared, db: &str, user: &str) -> Result<Option<Secret>, ClientError> {
    if let Some(s) = shared.secret(user) {
        return Ok(Some(s));
    }
    let config = shared.config();
    let Some(lookup) = config.auth_lookup(db) else { return Ok(None) };
    // auth_user's own secret must come from the auth file (it logs in to run the query).
    if lookup.user == user || crate::config::console::is_admin_db(db) {
        return Ok(None);
    }
    let _permit = shared.auth_lookups.acquire().await.map_err(|_| ClientError::ShuttingDown)?;
    let failed = |why: String| {
        tracing::warn!(%db, auth_user = %lookup.user, error = %why, "auth_query failed");
        ClientError::Refused(format!("authentication lookup for user \"{user}\" failed"))
    };
    let entry =
        shared.pool(&lookup.dbname, &lookup.user).map_err(|_| failed(format!("no database {:?}", lookup.dbname)))?;
    let wait = entry.settings().query_wait_timeout;
    let mut lease = entry.pool.acquire(wait).await.map_err(|e| failed(e.to_string()))?;
    let conn = lease.conn().ok_or_else(|| failed("no server".into()))?;
    let mut rows = Vec::new();
    let result = conn.query_with_params(&lookup.query, &[user], &mut rows).await;
    lease.release();
    result.map_err(|e| failed(e.to_string()))?;
    Ok(secret_of(&rows))
}

/// The first row's secret: no row, a NULL name or a NULL secret mean none.
fn secret_of(rows: &[Vec<Option<String>>]) -> Option<Secret> {
    match rows.first().map(Vec::as_slice) {
        Some([Some(_name), Some(secret), ..]) if !secret.is_empty() => Some(Secret::parse(secret)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_without_a_usable_secret_mean_none() {
        let row = |n: Option<&str>, s: Option<&str>| vec![vec![n.map(String::from), s.map(String::from)]];
        assert!(secret_of(&[]).is_none());
        assert!(secret_of(&row(None, Some("md5abc"))).is_none(), "null user: unknown");
        assert!(secret_of(&row(Some("bob"), None)).is_none(), "null secret: no password accepted");
        let md5 = format!("md5{}", "0123456789abcdef".repeat(2));
        assert!(matches!(secret_of(&row(Some("bob"), Some(&md5))), Some(Secret::Md5(_))));
    }
}
