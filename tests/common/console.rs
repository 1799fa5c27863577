//! Helpers for the admin console tests: the console users, reading a SHOW command's rows by column name.

use tokio_postgres::SimpleQueryMessage;

use super::{Proxy, TestPg};

pub const ADMIN: (&str, &str) = ("scram_user", "scram_pw");
pub const STATS: (&str, &str) = ("md5_user", "md5_pw");

pub fn code(e: &tokio_postgres::Error) -> Option<String> {
    e.as_db_error().map(|d| d.code().code().to_string())
}

/// Column names and rows (as text) of a console command.
pub async fn show(c: &tokio_postgres::Client, cmd: &str) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    let mut cols = Vec::new();
    let mut rows = Vec::new();
    for m in c.simple_query(cmd).await.unwrap() {
        if let SimpleQueryMessage::Row(r) = m {
            cols = r.columns().iter().map(|c| c.name().to_string()).collect();
            rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
        }
    }
    (cols, rows)
}

pub fn value(cols: &[String], row: &[Option<String>], name: &str) -> String {
    let i = cols.iter().position(|c| c == name).unwrap_or_else(|| panic!("no column {name}"));
    row[i].clone().unwrap_or_default()
}

pub async fn proxy(pg: &TestPg) -> Proxy {
    Proxy::builder(pg)
        .general("admin_users", &format!("{:?}", ADMIN.0))
        .general("stats_users", &format!("{:?}", STATS.0))
        .pool_size(2)
        .start()
        .await
}
