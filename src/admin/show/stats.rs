//! SHOW STATS, STATS_TOTALS, STATS_AVERAGES and TOTALS: PgBouncer's figures per database (and in all),
//! with its column names and order, as numeric.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{NUMERIC, TEXT, Table, V, n, t};
use crate::shared::Shared;
use crate::stats::{Totals, calc_average};

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

pub(super) fn stats(shared: &Arc<Shared>) -> Table {
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

pub(super) fn stats_totals(shared: &Arc<Shared>) -> Table {
    stats_subset(shared, false)
}

pub(super) fn stats_averages(shared: &Arc<Shared>) -> Table {
    stats_subset(shared, true)
}

/// Every database summed, then averaged (as PgBouncer's show_stat_totals).
pub(super) fn totals(shared: &Arc<Shared>) -> Table {
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

#[cfg(test)]
mod tests {
    use super::*;

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
