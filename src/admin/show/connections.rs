//! SHOW CLIENTS, SERVERS, SOCKETS and ACTIVE_SOCKETS: one row per connection, PgBouncer's 21 columns,
//! then how long the linked client has been in its transaction and idle inside it (CLIENTS, SERVERS) or
//! PgBouncer's buffer positions (SOCKETS).

use std::collections::HashMap;
use std::sync::Arc;

use super::{INT4, INT8, TEXT, Table, V, i, q, t};
use crate::shared::Shared;
use crate::stats::clients::{ClientEntry, ClientState};
use crate::stats::servers::{ServerEntry, ServerState};

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

/// Each client's linked server: the one whose link names it.
fn linked_servers(shared: &Shared) -> HashMap<u64, u64> {
    shared.server_registry.list().iter().filter(|s| s.link() != 0).map(|s| (s.link(), s.id)).collect()
}

/// PgBouncer's 21 columns of a client, its state as given.
fn client_row(c: &ClientEntry, state: &str, linked: &HashMap<u64, u64>, now: u64) -> Vec<V> {
    let waiting = c.state() == ClientState::Waiting;
    let waited = if waiting { now.saturating_sub(c.since()) } else { 0 };
    let link = linked.get(&c.id).filter(|_| c.state() == ClientState::Active);
    vec![
        t("C"),
        t(c.user.clone()),
        t(c.db.clone()),
        t("none"),
        t(state),
        t(c.addr.host_text()),
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
        t(c.tls.clone()),
        t(c.application_name.clone()),
        i(0),
        i(c.id),
    ]
}

/// A server's state as SHOW SERVERS names it.
fn server_state(s: &ServerEntry, now: u64, check_delay: u64) -> &'static str {
    match s.state() {
        ServerState::Active => "active",
        ServerState::Tested => "tested",
        ServerState::Idle if now.saturating_sub(s.since()) > check_delay => "used",
        ServerState::Idle => "idle",
    }
}

/// PgBouncer's 21 columns of a server, its state as given, with its linked client's application_name.
fn server_row(s: &ServerEntry, state: &str, application_name: String) -> Vec<V> {
    let link = s.link();
    vec![
        t("S"),
        t(s.user.clone()),
        t(s.db.clone()),
        t("none"),
        t(state),
        t(s.addr.host_text()),
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
        t(s.tls.clone()),
        t(application_name),
        i(s.prepared()),
        i(s.id),
    ]
}

pub(super) fn clients(shared: &Arc<Shared>) -> Table {
    // PgBouncer's columns, then pgsluice's: how long in the current transaction, idle inside it, and
    // what session state pins the client to its server (empty when none).
    let mut columns = connection_columns();
    columns.extend([("xact_us", INT8), ("idle_in_xact_us", INT8), ("pinned", TEXT)]);
    let mut table = Table::new(&columns);
    let now = crate::stats::registry::now_us();
    let linked = linked_servers(shared);
    for c in shared.client_registry.list() {
        let (xact_us, idle_in_xact_us) = c.transaction_times(now);
        let mut row = client_row(&c, c.state().as_str(), &linked, now);
        row.extend([q(xact_us), q(idle_in_xact_us), t(c.pin().unwrap_or_default())]);
        table.rows.push(row);
    }
    table
}

/// SHOW SOCKETS (every connection) and SHOW ACTIVE_SOCKETS (those in the middle of an exchange):
/// PgBouncer's columns, states named after SHOW POOLS' columns (cl_active, cl_waiting, sv_active,
/// sv_idle, sv_used, sv_tested). PgBouncer's buffer positions (recv_pos .. send_avail) are its own
/// buffers' and are 0 here; ACTIVE_SOCKETS, PgBouncer's sockets with bytes in their buffers, is here
/// the clients linked to a server or waiting for one, and the servers linked to a client.
pub(super) fn sockets(shared: &Arc<Shared>, active_only: bool) -> Table {
    let mut columns = connection_columns();
    columns.extend(
        ["recv_pos", "pkt_pos", "pkt_remain", "send_pos", "send_remain", "pkt_avail", "send_avail"].map(|c| (c, INT4)),
    );
    let mut table = Table::new(&columns);
    let now = crate::stats::registry::now_us();
    let linked = linked_servers(shared);
    let debug = || (0..7).map(|_| i(0));
    for c in shared.client_registry.list() {
        let state = match c.state() {
            ClientState::Waiting => "cl_waiting",
            ClientState::Idle if active_only => continue,
            ClientState::Active | ClientState::Idle => "cl_active",
        };
        let mut row = client_row(&c, state, &linked, now);
        row.extend(debug());
        table.rows.push(row);
    }
    let check_delay = shared.config().general.server_check_delay.as_micros() as u64;
    let apps = application_names(shared);
    for s in shared.server_registry.list() {
        let state = server_state(&s, now, check_delay);
        if active_only && state != "active" {
            continue;
        }
        let mut row = server_row(&s, &format!("sv_{state}"), apps.get(&s.link()).cloned().unwrap_or_default());
        row.extend(debug());
        table.rows.push(row);
    }
    table
}

/// Each client's application_name, by client id.
fn application_names(shared: &Shared) -> HashMap<u64, String> {
    shared.client_registry.list().iter().map(|c| (c.id, c.application_name.clone())).collect()
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

pub(super) fn servers(shared: &Arc<Shared>) -> Table {
    // PgBouncer's columns, then the linked client's time in its transaction and idle inside it.
    let mut columns = connection_columns();
    columns.extend([("xact_us", INT8), ("idle_in_xact_us", INT8)]);
    let mut table = Table::new(&columns);
    let now = crate::stats::registry::now_us();
    let check_delay = shared.config().general.server_check_delay.as_micros() as u64;
    let linked: HashMap<u64, (String, (u64, u64))> = shared
        .client_registry
        .list()
        .iter()
        .map(|c| (c.id, (c.application_name.clone(), c.transaction_times(now))))
        .collect();
    for s in shared.server_registry.list() {
        let (app, times) = linked.get(&s.link()).cloned().unwrap_or_default();
        let mut row = server_row(&s, server_state(&s, now, check_delay), app);
        row.extend([q(times.0), q(times.1)]);
        table.rows.push(row);
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
}
