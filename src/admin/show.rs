//! SHOW commands: PgBouncer's column names, types and order (as of PgBouncer 1.25, plus the
//! client_login_count counter PgBouncer added after it): stats figures as numeric, other numbers as int4,
//! names and timestamps as text, so psql, pgbouncer_exporter and dashboards read them unchanged.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{BufMut, BytesMut};

mod connections;
mod stats;

use connections::{clients, servers};
use stats::{stats, stats_averages, stats_totals, totals};

use crate::protocol::messages::{put_cstr, put_message};
use crate::protocol::tags::{backend, error_field};
use crate::protocol::{PgError, SqlState};
use crate::shared::Shared;

const TEXT: u32 = 25;
const INT4: u32 = 23;
const INT8: u32 = 20;
const NUMERIC: u32 = 1700;

/// One value of a result row.
enum V {
    T(String),
    I(i64),
    Null,
}

fn t(s: impl Into<String>) -> V {
    V::T(s.into())
}

/// An int4 column's value (PgBouncer's `i`), saturated to its range.
fn i(n: impl TryInto<i32>) -> V {
    V::I(i64::from(n.try_into().unwrap_or(i32::MAX)))
}

/// An int8 column's value (PgBouncer's `q`, and pgsluice's own microsecond columns).
fn q(n: u64) -> V {
    V::I(i64::try_from(n).unwrap_or(i64::MAX))
}

/// A numeric column's value (PgBouncer's `N`, the stats figures).
fn n(v: u64) -> V {
    V::I(i64::try_from(v).unwrap_or(i64::MAX))
}

/// A result set in the making: columns with their types, then rows.
struct Table {
    columns: Vec<(&'static str, u32)>,
    rows: Vec<Vec<V>>,
}

impl Table {
    fn new(columns: &[(&'static str, u32)]) -> Table {
        Table { columns: columns.to_vec(), rows: Vec::new() }
    }

    fn encode(self, out: &mut BytesMut) {
        put_message(out, backend::ROW_DESCRIPTION, |b| {
            b.put_u16(self.columns.len() as u16);
            for (name, oid) in &self.columns {
                put_cstr(b, name.as_bytes());
                b.put_u32(0); // table oid
                b.put_u16(0); // column number
                b.put_u32(*oid);
                b.put_i16(match *oid {
                    INT8 => 8,
                    INT4 => 4,
                    _ => -1,
                });
                b.put_i32(-1);
                b.put_u16(0); // text format
            }
        });
        for row in &self.rows {
            put_message(out, backend::DATA_ROW, |b| {
                b.put_u16(row.len() as u16);
                for v in row {
                    let s = match v {
                        V::T(s) => s.clone(),
                        V::I(n) => n.to_string(),
                        V::Null => {
                            b.put_i32(-1);
                            continue;
                        }
                    };
                    b.put_i32(s.len() as i32);
                    b.put_slice(s.as_bytes());
                }
            });
        }
        put_message(out, backend::COMMAND_COMPLETE, |b| put_cstr(b, b"SHOW"));
    }
}

/// Answers `SHOW what` into `out`.
pub fn show(shared: &Arc<Shared>, what: &str, out: &mut BytesMut) -> Result<(), PgError> {
    let table = match what {
        "HELP" => {
            help(out);
            return Ok(());
        }
        "VERSION" => version(),
        "POOLS" => pools(shared),
        "STATS" => stats(shared),
        "STATS_TOTALS" => stats_totals(shared),
        "STATS_AVERAGES" => stats_averages(shared),
        "TOTALS" => totals(shared),
        "LISTS" => lists(shared),
        "DATABASES" => databases(shared),
        "USERS" => users(shared),
        "STATE" => state(shared),
        "CLIENTS" => clients(shared),
        "CONFIG" => config(shared),
        "SERVERS" => servers(shared),
        // pgsluice has no peering, DNS cache or slab allocator: PgBouncer's columns, no rows.
        "PEERS" => Table::new(&[("peer_id", INT4), ("host", TEXT), ("port", INT4), ("pool_size", INT4)]),
        "PEER_POOLS" => Table::new(&[
            ("peer_id", INT4),
            ("cl_active_cancel_req", INT4),
            ("cl_waiting_cancel_req", INT4),
            ("sv_active_cancel", INT4),
            ("sv_login", INT4),
        ]),
        "MEM" => Table::new(&[("name", TEXT), ("size", INT4), ("used", INT4), ("free", INT4), ("memtotal", INT4)]),
        "DNS_HOSTS" => Table::new(&[("hostname", TEXT), ("ttl", INT8), ("addrs", TEXT)]),
        "DNS_ZONES" => Table::new(&[("zonename", TEXT), ("serial", INT8), ("count", INT4)]),
        _ => {
            let msg = format!("invalid command 'SHOW {what}', use SHOW HELP;");
            return Err(PgError::error(SqlState::SYNTAX_ERROR, msg));
        }
    };
    table.encode(out);
    Ok(())
}

/// SHOW HELP's detail: PgBouncer's, less the commands pgsluice does not have (FDS, SOCKETS, ACTIVE_SOCKETS).
pub const HELP: &str = "\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n\
                        \tSHOW PEERS|PEER_POOLS\n\
                        \tSHOW LISTS|MEM|STATE\n\
                        \tSHOW DNS_HOSTS|DNS_ZONES\n\
                        \tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS\n\
                        \tSET key = arg\n\
                        \tRELOAD\n\
                        \tPAUSE [<db>]\n\
                        \tRESUME [<db>]\n\
                        \tDISABLE <db>\n\
                        \tENABLE <db>\n\
                        \tRECONNECT [<db>]\n\
                        \tKILL [<db>]\n\
                        \tKILL_CLIENT <client_id>\n\
                        \tSUSPEND\n\
                        \tSHUTDOWN\n\
                        \tSHUTDOWN WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS\n\
                        \tWAIT_CLOSE [<db>]";

/// A NoticeResponse "Console usage" with the command list as its detail, as PgBouncer sends it.
fn help(out: &mut BytesMut) {
    put_message(out, backend::NOTICE_RESPONSE, |b| {
        for (k, v) in [
            (error_field::SEVERITY, "NOTICE"),
            (error_field::CODE, "00000"),
            (error_field::MESSAGE, "Console usage"),
            (error_field::DETAIL, HELP),
        ] {
            b.put_u8(k);
            put_cstr(b, v.as_bytes());
        }
        b.put_u8(0);
    });
    put_message(out, backend::COMMAND_COMPLETE, |b| put_cstr(b, b"SHOW"));
}

fn version() -> Table {
    let mut t = Table::new(&[("version", TEXT)]);
    // pgbouncer_exporter reads the PgBouncer version out of this string.
    t.rows.push(vec![self::t(format!("pgsluice {} (PgBouncer 1.25.0 compatible)", env!("CARGO_PKG_VERSION")))]);
    t
}

fn pools(shared: &Arc<Shared>) -> Table {
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
    let mut pools = shared.all_pools();
    pools.sort_by(|a, b| (&a.0.db, &a.0.user).cmp(&(&b.0.db, &b.0.user)));
    let check_delay = shared.config().general.server_check_delay.as_micros() as u64;
    let states = crate::stats::servers::used_and_tested(&shared.server_registry.list(), check_delay);
    for (key, entry) in pools {
        let c = entry.pool.counts();
        let clients = entry.stats.clients.load(Ordering::Relaxed) as usize;
        let server_user = &entry.pool.connector().user;
        let (used, tested) = states.get(&(key.db.clone(), server_user.clone())).copied().unwrap_or_default();
        let sv_idle = c.idle.saturating_sub(used);
        let being_canceled = entry.stats.being_canceled.load(Ordering::Relaxed) as usize;
        let sv_active = c.open.saturating_sub(c.idle + c.connecting + tested + being_canceled);
        table.rows.push(vec![
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
        ]);
    }
    table
}

fn lists(shared: &Arc<Shared>) -> Table {
    let config = shared.config();
    let pools = shared.all_pools();
    let servers: usize = pools.iter().map(|(_, e)| e.pool.counts().open).sum();
    let mut table = Table::new(&[("list", TEXT), ("items", INT4)]);
    let mut users: Vec<&String> = config.users.keys().collect();
    users.extend(pools.iter().map(|(k, _)| &k.user));
    users.sort();
    users.dedup();
    for (name, n) in [
        ("databases", config.databases.len()),
        ("users", users.len()),
        ("peers", 0),
        ("pools", pools.len()),
        ("peer_pools", 0),
        ("free_clients", 0),
        ("used_clients", shared.client_count()),
        ("login_clients", 0),
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

fn databases(shared: &Arc<Shared>) -> Table {
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
    for (name, d) in &config.databases {
        let current: usize = pools.iter().filter(|(k, _)| &k.db == name).map(|(_, e)| e.pool.counts().open).sum();
        let clients: u64 =
            pools.iter().filter(|(k, _)| &k.db == name).map(|(_, e)| e.stats.clients.load(Ordering::Relaxed)).sum();
        table.rows.push(vec![
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
        ]);
    }
    table
}

fn users(shared: &Arc<Shared>) -> Table {
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
    let mut names: Vec<String> = config.users.keys().cloned().collect();
    names.extend(pools.iter().map(|(k, _)| k.user.clone()));
    names.sort();
    names.dedup();
    for name in names {
        let u = config.users.get(&name);
        let mine = || pools.iter().filter(|(k, _)| k.user == name);
        let current: usize = mine().map(|(_, e)| e.pool.counts().open).sum();
        let clients: u64 = mine().map(|(_, e)| e.stats.clients.load(Ordering::Relaxed)).sum();
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

fn toml_text(v: Option<&toml::Value>) -> String {
    match v {
        Some(toml::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

fn config(shared: &Arc<Shared>) -> Table {
    let mut table = Table::new(&[("key", TEXT), ("value", TEXT), ("default", TEXT), ("changeable", TEXT)]);
    let as_table = |g: &crate::config::General| match toml::Value::try_from(g) {
        Ok(toml::Value::Table(t)) => t,
        _ => toml::Table::new(),
    };
    let current = as_table(&shared.config().general);
    let defaults = as_table(&crate::config::General::default());
    for (key, value) in &current {
        let changeable = if crate::config::RESTART_ONLY.contains(&key.as_str()) { "no" } else { "yes" };
        table.rows.push(vec![
            t(key.clone()),
            t(toml_text(Some(value))),
            t(toml_text(defaults.get(key))),
            t(changeable),
        ]);
    }
    table
}

fn state(shared: &Arc<Shared>) -> Table {
    let mut table = Table::new(&[("key", TEXT), ("value", TEXT)]);
    let (paused, suspended) = shared.pause_state();
    let yes = |b: bool| if b { "yes" } else { "no" };
    for (k, v) in [("active", yes(!paused && !suspended)), ("paused", yes(paused)), ("suspended", yes(suspended))] {
        table.rows.push(vec![t(k), t(v)]);
    }
    table
}
