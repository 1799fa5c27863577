//! SHOW POOLS, LISTS, DATABASES and USERS. As PgBouncer, the console is a database and a pool of its
//! own: `pgbouncer` (user `pgbouncer`, pool_mode statement, pool_size 2), with the console's users as
//! its clients and no servers.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{INT4, TEXT, Table, V, i, t};
use crate::admin::{CONSOLE_DB, CONSOLE_USER};
use crate::shared::Shared;

/// PgBouncer's admin database has a pool size of 2 (it never opens a server).
const CONSOLE_POOL_SIZE: usize = 2;

/// Console users connected now (the `pgbouncer` pool's clients).
fn console_clients(shared: &Shared) -> u64 {
    shared.stats.get(CONSOLE_DB, CONSOLE_USER).clients.load(Ordering::Relaxed)
}

pub(super) fn pools(shared: &Arc<Shared>) -> Table {
    let mut table = Table::new(&[
        ("database", TEXT),
        ("user", TEXT),
        ("cl_active", INT4),
        ("cl_waiting", INT4),
        ("cl_active_cancel_req", INT4),
        ("cl_waiting_cancel_req", INT4),
        ("sv_active", INT4),
        ("sv_active_cancel", INT4),
        ("sv_being_canceled", INT4),
        ("sv_idle", INT4),
        ("sv_used", INT4),
        ("sv_tested", INT4),
        ("sv_login", INT4),
        ("maxwait", INT4),
        ("maxwait_us", INT4),
        ("pool_mode", TEXT),
        ("load_balance_hosts", TEXT),
    ]);
    let check_delay = shared.config().general.server_check_delay.as_micros() as u64;
    let states = crate::stats::servers::used_and_tested(&shared.server_registry.list(), check_delay);
    let mut rows: Vec<((String, String), Vec<V>)> = Vec::new();
    for (key, entry) in shared.all_pools() {
        let c = entry.pool.counts();
        let clients = entry.stats.clients.load(Ordering::Relaxed) as usize;
        let server_user = &entry.pool.connector().user;
        let (used, tested) = states.get(&(key.db.clone(), server_user.clone())).copied().unwrap_or_default();
        let sv_idle = c.idle.saturating_sub(used);
        let being_canceled = entry.stats.being_canceled.load(Ordering::Relaxed) as usize;
        let sv_active = c.open.saturating_sub(c.idle + c.connecting + tested + being_canceled);
        let row = vec![
            t(key.db.clone()),
            t(key.user.clone()),
            i(clients.saturating_sub(c.waiting)),
            i(c.waiting),
            i(0),
            i(0),
            i(sv_active),
            i(0),
            i(being_canceled),
            i(sv_idle),
            i(used),
            i(tested),
            i(c.connecting),
            i(c.max_wait.as_secs()),
            i(c.max_wait.subsec_micros()),
            t(entry.settings().pool_mode.as_str()),
            V::Null,
        ];
        rows.push(((key.db, key.user), row));
    }
    // The console's pool: its users are active clients (never waiting), it has no servers.
    let mut console = vec![t(CONSOLE_DB), t(CONSOLE_USER), i(console_clients(shared))];
    console.extend((0..12).map(|_| i(0)));
    console.extend([t("statement"), V::Null]);
    rows.push(((CONSOLE_DB.to_string(), CONSOLE_USER.to_string()), console));
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    table.rows = rows.into_iter().map(|(_, r)| r).collect();
    table
}

/// The user names SHOW USERS lists (and SHOW LISTS counts), as PgBouncer's user list: the auth file's,
/// per-user entries, the users of pools (auth_query's among them), and the console's `pgbouncer` user.
fn user_names(shared: &Shared) -> Vec<String> {
    let mut names: Vec<String> = shared.config().users.keys().cloned().collect();
    names.extend(shared.auth().names().map(str::to_string));
    names.extend(shared.all_pools().into_iter().map(|(k, _)| k.user));
    names.push(CONSOLE_USER.to_string());
    names.sort();
    names.dedup();
    names
}

pub(super) fn lists(shared: &Arc<Shared>) -> Table {
    let config = shared.config();
    let pools = shared.all_pools();
    let servers: usize = pools.iter().map(|(_, e)| e.pool.counts().open).sum();
    let mut table = Table::new(&[("list", TEXT), ("items", INT4)]);
    let has_console_entry = config.databases.contains_key(CONSOLE_DB);
    let peers = shared.cancel.peer_rows();
    let peer_pools = peers.iter().filter(|p| p.forwarded_to).count();
    for (name, n) in [
        ("databases", config.databases.len() + usize::from(!has_console_entry)),
        ("users", user_names(shared).len()),
        ("peers", peers.len()),
        ("pools", pools.len() + 1),
        ("peer_pools", peer_pools),
        ("free_clients", 0),
        ("used_clients", shared.client_count()),
        ("login_clients", shared.pending_logins.len()),
        ("free_servers", 0),
        ("used_servers", servers),
        ("dns_names", 0),
        ("dns_zones", 0),
        ("dns_queries", 0),
        ("dns_pending", 0),
    ] {
        table.rows.push(vec![t(name), i(n)]);
    }
    table
}

pub(super) fn databases(shared: &Arc<Shared>) -> Table {
    let config = shared.config();
    let pools = shared.all_pools();
    let g = &config.general;
    let mut table = Table::new(&[
        ("name", TEXT),
        ("host", TEXT),
        ("port", INT4),
        ("database", TEXT),
        ("force_user", TEXT),
        ("pool_size", INT4),
        ("min_pool_size", INT4),
        ("reserve_pool_size", INT4),
        ("server_lifetime", INT4),
        ("pool_mode", TEXT),
        ("load_balance_hosts", TEXT),
        ("max_connections", INT4),
        ("current_connections", INT4),
        ("max_client_connections", INT4),
        ("current_client_connections", INT4),
        ("paused", INT4),
        ("disabled", INT4),
    ]);
    let mut rows: Vec<(String, Vec<V>)> = Vec::new();
    for (name, d) in &config.databases {
        let current: usize = pools.iter().filter(|(k, _)| &k.db == name).map(|(_, e)| e.pool.counts().open).sum();
        let clients: u64 =
            pools.iter().filter(|(k, _)| &k.db == name).map(|(_, e)| e.stats.clients.load(Ordering::Relaxed)).sum();
        let row = vec![
            t(name.clone()),
            t(d.host.clone()),
            i(d.port),
            t(d.dbname.clone().unwrap_or_else(|| name.clone())),
            d.user.clone().map(V::T).unwrap_or(V::Null),
            i(d.pool_size.unwrap_or(g.default_pool_size)),
            i(d.min_pool_size.unwrap_or(g.min_pool_size)),
            i(d.reserve_pool_size.unwrap_or(g.reserve_pool_size)),
            i(d.server_lifetime.unwrap_or(g.server_lifetime).as_secs()),
            d.pool_mode.map(|m| V::T(m.as_str().to_string())).unwrap_or(V::Null),
            V::Null,
            i(d.max_db_connections.unwrap_or(g.max_db_connections)),
            i(current),
            i(config.max_db_client_connections(name)),
            i(clients),
            i(u8::from(shared.is_db_paused(name))),
            i(u8::from(shared.is_disabled(name))),
        ];
        rows.push((name.clone(), row));
    }
    // The console's database, as PgBouncer's admin database: no host, pgsluice's own port, forced user
    // `pgbouncer`, statement mode, the general limits; its clients are the console's users.
    if !config.databases.contains_key(CONSOLE_DB) {
        let console = vec![
            V::Null,
            i(g.listen_port),
            t(CONSOLE_DB),
            t(CONSOLE_USER),
            i(CONSOLE_POOL_SIZE),
            i(g.min_pool_size),
            i(g.reserve_pool_size),
            i(g.server_lifetime.as_secs()),
            t("statement"),
            V::Null,
            i(g.max_db_connections),
            i(0),
            i(g.max_db_client_connections),
            i(shared.db_clients.count(CONSOLE_DB)),
            i(0),
            i(0),
        ];
        rows.push((CONSOLE_DB.to_string(), std::iter::once(t(CONSOLE_DB)).chain(console).collect()));
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    table.rows = rows.into_iter().map(|(_, r)| r).collect();
    table
}

pub(super) fn users(shared: &Arc<Shared>) -> Table {
    let config = shared.config();
    let pools = shared.all_pools();
    let g = &config.general;
    let mut table = Table::new(&[
        ("name", TEXT),
        // Text, as PgBouncer: the override right-aligned in 9 characters, or empty when not set.
        ("pool_size", TEXT),
        ("reserve_pool_size", TEXT),
        ("pool_mode", TEXT),
        ("max_user_connections", INT4),
        ("current_connections", INT4),
        ("max_user_client_connections", INT4),
        ("current_client_connections", INT4),
    ]);
    for name in user_names(shared) {
        let u = config.users.get(&name);
        let mine = || pools.iter().filter(|(k, _)| k.user == name);
        let current: usize = mine().map(|(_, e)| e.pool.counts().open).sum();
        let clients = shared.user_clients.count(&name); // the console's users too, as PgBouncer
        table.rows.push(vec![
            t(name.clone()),
            t(u.and_then(|u| u.pool_size).map(|n| format!("{n:>9}")).unwrap_or_default()),
            t(u.and_then(|u| u.reserve_pool_size).map(|n| format!("{n:>9}")).unwrap_or_default()),
            u.and_then(|u| u.pool_mode).map(|m| V::T(m.as_str().to_string())).unwrap_or(V::Null),
            i(u.and_then(|u| u.max_user_connections).unwrap_or(g.max_user_connections)),
            i(current),
            i(config.max_user_client_connections(&name)),
            i(clients),
        ]);
    }
    table
}
