//! Who reaches the admin console: its virtual database names and the role a user has there, decided
//! from the config alone (the login reads it; the console acts on it). Imports: nothing outside config.

use super::{AuthType, General};

/// Names of the console's virtual database.
pub const ADMIN_DBS: &[&str] = &["pgbouncer", "pgsluice"];

/// The database and user of the console's pseudo-pool, as PgBouncer shows its admin database and pool
/// (whichever of `ADMIN_DBS` the user connected to).
pub const CONSOLE_DB: &str = "pgbouncer";
pub const CONSOLE_USER: &str = "pgbouncer";

pub fn is_admin_db(db: &str) -> bool {
    ADMIN_DBS.contains(&db)
}

/// What a console user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything (`admin_users`).
    Admin,
    /// SHOW only (`stats_users`).
    Stats,
}

/// Who may use the console. With `auth_type = any` anyone may (PgBouncer's admin_post_login): admin_users
/// everything, everyone else SHOW only.
pub fn role_of(general: &General, user: &str) -> Option<Role> {
    if general.admin_users.iter().any(|u| u == user) {
        Some(Role::Admin)
    } else if general.stats_users.iter().any(|u| u == user) || general.auth_type == AuthType::Any {
        Some(Role::Stats)
    } else {
        None
    }
}
