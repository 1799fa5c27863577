//! SHOW commands: PgBouncer's column names, types and order (as of PgBouncer 1.25, plus the
//! client_login_count counter PgBouncer added after it): stats figures as numeric, other numbers as int4,
//! names and timestamps as text, so psql, pgbouncer_exporter and dashboards read them unchanged.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};

mod connections;
mod pools;
mod stats;

use connections::{clients, servers, sockets};
use pools::{databases, lists, pools, users};
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
        "SOCKETS" => sockets(shared, false),
        "ACTIVE_SOCKETS" => sockets(shared, true),
        "PEERS" => peers(shared),
        "PEER_POOLS" => peer_pools(shared),
        // pgsluice has no DNS cache or slab allocator: PgBouncer's columns, no rows.
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

/// SHOW HELP's detail: PgBouncer's, less the command pgsluice does not have (FDS: its online restart).
pub const HELP: &str = "\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n\
                        \tSHOW PEERS|PEER_POOLS\n\
                        \tSHOW SOCKETS|ACTIVE_SOCKETS|LISTS|MEM|STATE\n\
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
    // The first line of `pgsluice --version`, as PgBouncer's; pgbouncer_exporter reads the PgBouncer
    // version out of it.
    t.rows.push(vec![self::t(format!("pgsluice {}", crate::VERSION))]);
    t
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

/// `[peers]` as running, this process's own entry included (as PgBouncer lists it).
fn peers(shared: &Arc<Shared>) -> Table {
    let mut table = Table::new(&[("peer_id", INT4), ("host", TEXT), ("port", INT4), ("pool_size", INT4)]);
    for p in shared.cancel.peer_rows() {
        table.rows.push(vec![i(p.peer_id), t(p.host), i(p.port), i(p.pool_size)]);
    }
    table
}

/// The cancel requests forwarded to each peer (not to this process's own entry): waiting for one of the
/// peer's pool_size places, connecting, and sent (a forward is both a client and a server in PgBouncer's terms).
fn peer_pools(shared: &Arc<Shared>) -> Table {
    let mut table = Table::new(&[
        ("peer_id", INT4),
        ("cl_active_cancel_req", INT4),
        ("cl_waiting_cancel_req", INT4),
        ("sv_active_cancel", INT4),
        ("sv_login", INT4),
    ]);
    for p in shared.cancel.peer_rows().into_iter().filter(|p| p.forwarded_to) {
        table.rows.push(vec![i(p.peer_id), i(p.active), i(p.waiting), i(p.active), i(p.connecting)]);
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
