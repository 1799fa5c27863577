//! SHOW commands: PgBouncer's column names, types and order (as of PgBouncer 1.25, plus the
//! client_login_count counter PgBouncer added after it): stats figures as numeric, other numbers as int4,
//! names and timestamps as text, so psql, pgbouncer_exporter and dashboards read them unchanged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{BufMut, BytesMut};

use crate::protocol::messages::{put_cstr, put_message};
use crate::protocol::{PgError, SqlState};
use crate::shared::Shared;
use crate::stats::clients::ClientState;
use crate::stats::servers::ServerState;
use crate::stats::{Totals, calc_average};

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
        put_message(out, b'T', |b| {
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
    put_message(out, b'N', |b| {
        for (k, v) in [(b'S', "NOTICE"), (b'C', "00000"), (b'M', "Console usage"), (b'D', HELP)] {
            b.put_u8(k);
            put_cstr(b, v.as_bytes());
        }
        b.put_u8(0);
    });
    put_message(out, b'C', |b| put_cstr(b, b"SHOW"));
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

/// Totals and averages per database: as PgBouncer, the counters of a database's pools are summed, then
/// averaged over the stats window (see `stats::calc_average`).
fn per_database(shared: &Arc<Shared>) -> BTreeMap<String, (Totals, Totals)> {
    let mut by_db: BTreeMap<String, (Totals, Totals)> = BTreeMap::new();
    for ((db, _), stats) in shared.stats.all() {
        let (cur, older) = stats.window();
        let e = by_db.entry(db).or_default();
        e.0.add(&cur);
        e.1.add(&older);
    }
    let window = shared.stats.window_length();
    by_db.into_iter().map(|(db, (cur, older))| (db, (cur, calc_average(&cur, &older, window)))).collect()
}

/// The stats figures in PgBouncer's order, under their SHOW STATS names (after `total_` / `avg_`).
const STATS_NAMES: [&str; 12] = [
    "server_assignment_count",
    "xact_count",
    "query_count",
    "received",
    "sent",
    "xact_time",
    "query_time",
    "wait_time",
    "client_parse_count",
    "server_parse_count",
    "bind_count",
    "client_login_count",
];

/// SHOW STATS spells the average of `received` as `avg_recv`.
fn average_name(name: &str) -> &str {
    if name == "received" { "recv" } else { name }
}

/// SHOW STATS_TOTALS and STATS_AVERAGES: `bytes_received` / `bytes_sent`, and (PgBouncer's quirk) an
/// `avg_` prefix on the prepared-statement averages only.
fn subset_name(name: &'static str, averages: bool) -> &'static str {
    match name {
        "received" => "bytes_received",
        "sent" => "bytes_sent",
        "client_parse_count" if averages => "avg_client_parse_count",
        "server_parse_count" if averages => "avg_server_parse_count",
        "bind_count" if averages => "avg_bind_count",
        other => other,
    }
}

/// SHOW TOTALS names its rows after PgBouncer's struct fields.
fn totals_name(name: &'static str) -> &'static str {
    match name {
        "received" => "client_bytes",
        "sent" => "server_bytes",
        "client_parse_count" => "ps_client_parse_count",
        "server_parse_count" => "ps_server_parse_count",
        "bind_count" => "ps_bind_count",
        other => other,
    }
}

fn figures(t: &Totals) -> impl Iterator<Item = V> {
    t.values().into_iter().map(n)
}

/// Column names live as long as the process: they are built once.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn stats_columns() -> &'static [(&'static str, u32)] {
    static COLS: std::sync::OnceLock<Vec<(&'static str, u32)>> = std::sync::OnceLock::new();
    COLS.get_or_init(|| {
        let mut c = vec![("database", TEXT)];
        c.extend(STATS_NAMES.iter().map(|n| (leak(format!("total_{n}")), NUMERIC)));
        c.extend(STATS_NAMES.iter().map(|n| (leak(format!("avg_{}", average_name(n))), NUMERIC)));
        c
    })
}

fn stats(shared: &Arc<Shared>) -> Table {
    let mut table = Table::new(stats_columns());
    for (db, (tot, avg)) in per_database(shared) {
        let mut row = vec![t(db)];
        row.extend(figures(&tot));
        row.extend(figures(&avg));
        table.rows.push(row);
    }
    table
}

fn stats_subset(shared: &Arc<Shared>, averages: bool) -> Table {
    let mut cols = vec![("database", TEXT)];
    cols.extend(STATS_NAMES.iter().map(|n| (subset_name(n, averages), NUMERIC)));
    let mut table = Table::new(&cols);
    for (db, (tot, avg)) in per_database(shared) {
        let mut row = vec![t(db)];
        row.extend(figures(if averages { &avg } else { &tot }));
        table.rows.push(row);
    }
    table
}

fn stats_totals(shared: &Arc<Shared>) -> Table {
    stats_subset(shared, false)
}

fn stats_averages(shared: &Arc<Shared>) -> Table {
    stats_subset(shared, true)
}

/// Every database summed, then averaged (as PgBouncer's show_stat_totals).
fn totals(shared: &Arc<Shared>) -> Table {
    let mut table = Table::new(&[("name", TEXT), ("value", NUMERIC)]);
    let (mut cur, mut older) = (Totals::default(), Totals::default());
    for (_, stats) in shared.stats.all() {
        let (c, o) = stats.window();
        cur.add(&c);
        older.add(&o);
    }
    let avg = calc_average(&cur, &older, shared.stats.window_length());
    for (prefix, figs) in [("total", &cur), ("avg", &avg)] {
        for (name, v) in STATS_NAMES.iter().zip(figures(figs)) {
            table.rows.push(vec![t(format!("{prefix}_{}", totals_name(name))), v]);
        }
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
            i(g.server_lifetime.as_secs()),
            d.pool_mode.map(|m| V::T(m.as_str().to_string())).unwrap_or(V::Null),
            V::Null,
            i(d.max_db_connections.unwrap_or(g.max_db_connections)),
            i(current),
            i(g.max_db_client_connections),
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
            t(""),
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
    // Each client's linked server: the one whose link names it.
    let linked: std::collections::HashMap<u64, u64> =
        shared.server_registry.list().iter().filter(|s| s.link() != 0).map(|s| (s.link(), s.id)).collect();
    for c in shared.client_registry.list() {
        let state = c.state();
        let waited = if state == ClientState::Waiting { now.saturating_sub(c.since()) } else { 0 };
        let link = linked.get(&c.id).filter(|_| state == ClientState::Active);
        let (xact_us, idle_in_xact_us) = c.transaction_times(now);
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
            t(ptr(Kind::Client, c.id)),
            t(link.map(|s| ptr(Kind::Server, *s)).unwrap_or_default()),
            i(0),
            t(""),
            t(c.application_name.clone()),
            i(0),
            i(c.id),
            q(xact_us),
            q(idle_in_xact_us),
        ]);
    }
    table
}

#[derive(Clone, Copy)]
enum Kind {
    Client = 1,
    Server = 2,
}

/// PgBouncer shows each connection's address (`ptr`) and its peer's (`link`); pgsluice shows an
/// address-like handle built from the registry id, distinct between clients and servers.
fn ptr(kind: Kind, id: u64) -> String {
    format!("0x{:x}", ((kind as u64) << 40) | (id & ((1 << 40) - 1)))
}

fn connection_columns() -> Vec<(&'static str, u32)> {
    vec![
        ("type", TEXT),
        ("user", TEXT),
        ("database", TEXT),
        ("replication", TEXT),
        ("state", TEXT),
        ("addr", TEXT),
        ("port", INT4),
        ("local_addr", TEXT),
        ("local_port", INT4),
        ("connect_time", TEXT),
        ("request_time", TEXT),
        ("wait", INT4),
        ("wait_us", INT4),
        ("close_needed", INT4),
        ("ptr", TEXT),
        ("link", TEXT),
        ("remote_pid", INT4),
        ("tls", TEXT),
        ("application_name", TEXT),
        ("prepared_statements", INT4),
        ("id", INT4),
    ]
}

fn servers(shared: &Arc<Shared>) -> Table {
    // PgBouncer's columns, then the linked client's time in its transaction and idle inside it.
    let mut columns = connection_columns();
    columns.extend([("xact_us", INT8), ("idle_in_xact_us", INT8)]);
    let mut table = Table::new(&columns);
    let now = crate::stats::registry::now_us();
    let check_delay = shared.config().general.server_check_delay.as_micros() as u64;
    let linked: std::collections::HashMap<u64, (String, (u64, u64))> = shared
        .client_registry
        .list()
        .iter()
        .map(|c| (c.id, (c.application_name.clone(), c.transaction_times(now))))
        .collect();
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
            i(u8::from(s.close_needed())),
            t(ptr(Kind::Server, s.id)),
            t(if link == 0 { String::new() } else { ptr(Kind::Client, link) }),
            i(s.remote_pid),
            t(""),
            t(linked.get(&link).map(|(app, _)| app.clone()).unwrap_or_default()),
            i(s.prepared()),
            i(s.id),
            q(linked.get(&link).map(|(_, times)| times.0).unwrap_or(0)),
            q(linked.get(&link).map(|(_, times)| times.1).unwrap_or(0)),
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

    #[test]
    fn client_and_server_handles_never_collide() {
        assert_ne!(ptr(Kind::Client, 1), ptr(Kind::Server, 1));
        assert_eq!(ptr(Kind::Server, 0x2a), "0x2000000002a");
    }

    #[test]
    fn stats_names_follow_pgbouncer() {
        let cols: Vec<&str> = stats_columns().iter().map(|c| c.0).collect();
        assert_eq!(cols[4], "total_received");
        assert_eq!(cols[16], "avg_recv");
        assert_eq!(subset_name("bind_count", true), "avg_bind_count");
        assert_eq!(subset_name("bind_count", false), "bind_count");
        assert_eq!(totals_name("received"), "client_bytes");
    }
}
