//! SHOW commands: PgBouncer's column names and order (as of PgBouncer 1.23), numbers as int8, names as
//! text, so psql, pgbouncer_exporter and dashboards read them unchanged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{BufMut, BytesMut};

use crate::protocol::messages::{put_cstr, put_message};
use crate::protocol::{PgError, SqlState};
use crate::shared::Shared;
use crate::stats::clients::ClientState;
use crate::stats::servers::ServerState;
use crate::stats::{Averages, Totals};

const TEXT: u32 = 25;
const INT8: u32 = 20;

/// One value of a result row.
enum V {
    T(String),
    I(i64),
    Null,
}

fn t(s: impl Into<String>) -> V {
    V::T(s.into())
}

fn i(n: impl TryInto<i64>) -> V {
    V::I(n.try_into().unwrap_or(i64::MAX))
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
        put_message(out, b'T', |b| {
            b.put_u16(self.columns.len() as u16);
            for (name, oid) in &self.columns {
                put_cstr(b, name.as_bytes());
                b.put_u32(0); // table oid
                b.put_u16(0); // column number
                b.put_u32(*oid);
                b.put_i16(if *oid == INT8 { 8 } else { -1 });
                b.put_i32(-1);
                b.put_u16(0); // text format
            }
        });
        for row in &self.rows {
            put_message(out, b'D', |b| {
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
        put_message(out, b'C', |b| put_cstr(b, b"SHOW"));
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
        _ => {
            let msg = format!("invalid command 'SHOW {what}', use SHOW HELP;");
            return Err(PgError::error(SqlState::SYNTAX_ERROR, msg));
        }
    };
    table.encode(out);
    Ok(())
}

fn help(out: &mut BytesMut) {
    let text = "Console usage\n\tSHOW HELP|VERSION|CONFIG|POOLS|CLIENTS|SERVERS|STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS|LISTS|DATABASES|USERS|STATE\n\
                \tPAUSE [db], RESUME [db], RECONNECT [db], WAIT_CLOSE [db], DISABLE db, ENABLE db, KILL [db], KILL_CLIENT id\n\tSHUTDOWN [WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS], RELOAD, SET key = value";
    PgError::notice(text).encode(out);
    put_message(out, b'C', |b| put_cstr(b, b"SHOW"));
}

fn version() -> Table {
    let mut t = Table::new(&[("version", TEXT)]);
    // pgbouncer_exporter reads the PgBouncer version out of this string.
    t.rows.push(vec![self::t(format!("pgsluice {} (PgBouncer 1.23 compatible)", env!("CARGO_PKG_VERSION")))]);
    t
}

fn pools(shared: &Arc<Shared>) -> Table {
    let mut table = Table::new(&[
        ("database", TEXT),
        ("user", TEXT),
        ("cl_active", INT8),
        ("cl_waiting", INT8),
        ("cl_active_cancel_req", INT8),
        ("cl_waiting_cancel_req", INT8),
        ("sv_active", INT8),
        ("sv_active_cancel", INT8),
        ("sv_being_canceled", INT8),
        ("sv_idle", INT8),
        ("sv_used", INT8),
        ("sv_tested", INT8),
        ("sv_login", INT8),
        ("maxwait", INT8),
        ("maxwait_us", INT8),
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
        let sv_active = c.open.saturating_sub(c.idle + c.connecting + tested);
        table.rows.push(vec![
            t(key.db.clone()),
            t(key.user.clone()),
            i(clients.saturating_sub(c.waiting)),
            i(c.waiting),
            i(0),
            i(0),
            i(sv_active),
            i(0),
            i(0),
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

/// Totals and averages per database (PgBouncer reports stats per database, summed over its pools).
fn per_database(shared: &Arc<Shared>) -> BTreeMap<String, (Totals, Averages)> {
    let mut by_db: BTreeMap<String, (Totals, Averages)> = BTreeMap::new();
    for (key, entry) in shared.all_pools() {
        let e = by_db.entry(key.db.clone()).or_default();
        e.0.add(&entry.stats.totals());
        let a = entry.stats.averages();
        add_averages(&mut e.1, &a);
    }
    by_db
}

fn add_averages(sum: &mut Averages, a: &Averages) {
    // Rates add up across pools; per-transaction times are kept as the larger (conservative) figure.
    sum.xact_count += a.xact_count;
    sum.query_count += a.query_count;
    sum.server_assignment_count += a.server_assignment_count;
    sum.recv += a.recv;
    sum.sent += a.sent;
    sum.client_parse_count += a.client_parse_count;
    sum.server_parse_count += a.server_parse_count;
    sum.bind_count += a.bind_count;
    sum.xact_time = sum.xact_time.max(a.xact_time);
    sum.query_time = sum.query_time.max(a.query_time);
    sum.wait_time = sum.wait_time.max(a.wait_time);
    sum.server_lifetime = sum.server_lifetime.max(a.server_lifetime);
}

fn total_values(t: &Totals) -> Vec<V> {
    vec![
        i(t.xact_count),
        i(t.query_count),
        i(t.server_assignment_count),
        i(t.server_closed_count),
        i(t.received),
        i(t.sent),
        i(t.xact_time),
        i(t.query_time),
        i(t.wait_time),
        i(t.server_lifetime),
        i(t.client_parse_count),
        i(t.server_parse_count),
        i(t.bind_count),
    ]
}

fn average_values(a: &Averages) -> Vec<V> {
    vec![
        i(a.xact_count),
        i(a.query_count),
        i(a.server_assignment_count),
        i(a.recv),
        i(a.sent),
        i(a.xact_time),
        i(a.query_time),
        i(a.wait_time),
        i(a.server_lifetime),
        i(a.client_parse_count),
        i(a.server_parse_count),
        i(a.bind_count),
    ]
}

const TOTAL_NAMES: [&str; 13] = [
    "xact_count",
    "query_count",
    "server_assignment_count",
    "server_closed_count",
    "received",
    "sent",
    "xact_time",
    "query_time",
    "wait_time",
    "server_lifetime",
    "client_parse_count",
    "server_parse_count",
    "bind_count",
];

const AVERAGE_NAMES: [&str; 12] = [
    "xact_count",
    "query_count",
    "server_assignment_count",
    "recv",
    "sent",
    "xact_time",
    "query_time",
    "wait_time",
    "server_lifetime",
    "client_parse_count",
    "server_parse_count",
    "bind_count",
];

/// Column names live as long as the process: they are built once.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn stats_columns() -> &'static [(&'static str, u32)] {
    static COLS: std::sync::OnceLock<Vec<(&'static str, u32)>> = std::sync::OnceLock::new();
    COLS.get_or_init(|| {
        let mut c = vec![("database", TEXT)];
        c.extend(TOTAL_NAMES.iter().map(|n| (leak(format!("total_{n}")), INT8)));
        c.extend(AVERAGE_NAMES.iter().map(|n| (leak(format!("avg_{n}")), INT8)));
        c
    })
}

fn stats(shared: &Arc<Shared>) -> Table {
    let mut table = Table::new(stats_columns());
    for (db, (tot, avg)) in per_database(shared) {
        let mut row = vec![t(db)];
        row.extend(total_values(&tot));
        row.extend(average_values(&avg));
        table.rows.push(row);
    }
    table
}

/// PgBouncer spells received/sent as bytes_received/bytes_sent in the totals and averages views.
fn subset_name(n: &'static str) -> &'static str {
    match n {
        "received" | "recv" => "bytes_received",
        "sent" => "bytes_sent",
        other => other,
    }
}

fn stats_totals(shared: &Arc<Shared>) -> Table {
    let mut cols = vec![("database", TEXT)];
    cols.extend(TOTAL_NAMES.iter().map(|n| (subset_name(n), INT8)));
    let mut table = Table::new(&cols);
    for (db, (tot, _)) in per_database(shared) {
        let mut row = vec![t(db)];
        row.extend(total_values(&tot));
        table.rows.push(row);
    }
    table
}

fn stats_averages(shared: &Arc<Shared>) -> Table {
    let mut cols = vec![("database", TEXT)];
    cols.extend(AVERAGE_NAMES.iter().map(|n| (subset_name(n), INT8)));
    let mut table = Table::new(&cols);
    for (db, (_, avg)) in per_database(shared) {
        let mut row = vec![t(db)];
        row.extend(average_values(&avg));
        table.rows.push(row);
    }
    table
}

fn totals(shared: &Arc<Shared>) -> Table {
    let mut table = Table::new(&[("name", TEXT), ("value", INT8)]);
    let (mut tot, mut avg) = (Totals::default(), Averages::default());
    for (_, (t2, a2)) in per_database(shared) {
        tot.add(&t2);
        add_averages(&mut avg, &a2);
    }
    for (name, v) in TOTAL_NAMES.iter().zip(total_values(&tot)) {
        table.rows.push(vec![t(format!("total_{name}")), v]);
    }
    for (name, v) in AVERAGE_NAMES.iter().zip(average_values(&avg)) {
        table.rows.push(vec![t(format!("avg_{name}")), v]);
    }
    table
}

fn lists(shared: &Arc<Shared>) -> Table {
    let config = shared.config();
    let pools = shared.all_pools();
    let servers: usize = pools.iter().map(|(_, e)| e.pool.counts().open).sum();
    let mut table = Table::new(&[("list", TEXT), ("items", INT8)]);
    let mut users: Vec<&String> = config.users.keys().collect();
    users.extend(pools.iter().map(|(k, _)| &k.user));
    users.sort();
    users.dedup();
    for (name, n) in [
        ("databases", config.databases.len()),
        ("users", users.len()),
        ("pools", pools.len()),
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
        ("port", INT8),
        ("database", TEXT),
        ("force_user", TEXT),
        ("pool_size", INT8),
        ("min_pool_size", INT8),
        ("reserve_pool_size", INT8),
        ("server_lifetime", INT8),
        ("pool_mode", TEXT),
        ("load_balance_hosts", TEXT),
        ("max_connections", INT8),
        ("current_connections", INT8),
        ("max_client_connections", INT8),
        ("current_client_connections", INT8),
        ("paused", INT8),
        ("disabled", INT8),
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
            i(g.server_lifetime.as_secs()),
            d.pool_mode.map(|m| V::T(m.as_str().to_string())).unwrap_or(V::Null),
            V::Null,
            i(d.max_db_connections.unwrap_or(g.max_db_connections)),
            i(current),
            i(g.max_db_client_connections),
            i(clients),
            i(0),
            i(0),
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
        ("pool_size", INT8),
        ("reserve_pool_size", INT8),
        ("pool_mode", TEXT),
        ("max_user_connections", INT8),
        ("current_connections", INT8),
        ("max_user_client_connections", INT8),
        ("current_client_connections", INT8),
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
            u.and_then(|u| u.pool_size).map(i).unwrap_or(V::Null),
            V::Null,
            u.and_then(|u| u.pool_mode).map(|m| V::T(m.as_str().to_string())).unwrap_or(V::Null),
            i(u.and_then(|u| u.max_user_connections).unwrap_or(g.max_user_connections)),
            i(current),
            i(g.max_user_client_connections),
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
        let changeable = if super::control::NEEDS_RESTART.contains(&key.as_str()) { "no" } else { "yes" };
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

/// `YYYY-MM-DD HH:MM:SS UTC` for microseconds since the epoch (PgBouncer's timestamp format).
fn timestamp(us: u64) -> String {
    let secs = us / 1_000_000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn clients(shared: &Arc<Shared>) -> Table {
    // PgBouncer's columns, then pgsluice's: how long in the current transaction, and idle inside it.
    let mut columns = connection_columns();
    columns.extend([("xact_us", INT8), ("idle_in_xact_us", INT8)]);
    let mut table = Table::new(&columns);
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
    for c in shared.client_registry.list() {
        let state = c.state();
        let waited = if state == ClientState::Waiting { now.saturating_sub(c.since()) } else { 0 };
        let pid = c.server_pid();
        table.rows.push(vec![
            t("C"),
            t(c.user.clone()),
            t(c.db.clone()),
            t("none"),
            t(state.as_str()),
            t(c.addr.ip().to_string()),
            i(c.addr.port()),
            t(c.local.map(|a| a.ip().to_string()).unwrap_or_default()),
            i(c.local.map(|a| a.port()).unwrap_or(0)),
            t(timestamp(c.connect_time)),
            t(timestamp(c.since())),
            i(waited / 1_000_000),
            i(waited % 1_000_000),
            i(0),
            t(format!("0x{:x}", c.id)),
            if pid == 0 { V::Null } else { t(format!("server pid {pid}")) },
            i(0),
            V::Null,
            t(c.application_name.clone()),
            i(0),
            i(c.id),
            i(c.transaction_times(now).0),
            i(c.transaction_times(now).1),
        ]);
    }
    table
}

fn connection_columns() -> Vec<(&'static str, u32)> {
    vec![
        ("type", TEXT),
        ("user", TEXT),
        ("database", TEXT),
        ("replication", TEXT),
        ("state", TEXT),
        ("addr", TEXT),
        ("port", INT8),
        ("local_addr", TEXT),
        ("local_port", INT8),
        ("connect_time", TEXT),
        ("request_time", TEXT),
        ("wait", INT8),
        ("wait_us", INT8),
        ("close_needed", INT8),
        ("ptr", TEXT),
        ("link", TEXT),
        ("remote_pid", INT8),
        ("tls", TEXT),
        ("application_name", TEXT),
        ("prepared_statements", INT8),
        ("id", INT8),
    ]
}

fn servers(shared: &Arc<Shared>) -> Table {
    let mut table = Table::new(&connection_columns());
    let now = crate::stats::registry::now_us();
    let check_delay = shared.config().general.server_check_delay.as_micros() as u64;
    let apps: std::collections::HashMap<u64, String> =
        shared.client_registry.list().iter().map(|c| (c.id, c.application_name.clone())).collect();
    for s in shared.server_registry.list() {
        let link = s.link();
        let state = match s.state() {
            ServerState::Active => "active",
            ServerState::Tested => "tested",
            ServerState::Idle if now.saturating_sub(s.since()) > check_delay => "used",
            ServerState::Idle => "idle",
        };
        table.rows.push(vec![
            t("S"),
            t(s.user.clone()),
            t(s.db.clone()),
            t("none"),
            t(state),
            t(s.addr.ip().to_string()),
            i(s.addr.port()),
            t(s.local.map(|a| a.ip().to_string()).unwrap_or_default()),
            i(s.local.map(|a| a.port()).unwrap_or(0)),
            t(timestamp(s.connect_time)),
            t(timestamp(s.since())),
            i(0),
            i(0),
            i(0),
            t(format!("0x{:x}", s.id)),
            if link == 0 { V::Null } else { t(format!("0x{link:x}")) },
            i(s.remote_pid),
            V::Null,
            t(apps.get(&link).cloned().unwrap_or_default()),
            i(s.prepared()),
            i(s.id),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_civil_utc() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(timestamp(1_795_366_771_000_000), "2026-11-22 16:59:31 UTC");
        assert_eq!(timestamp(951_782_400_000_000), "2000-02-29 00:00:00 UTC");
    }
}
