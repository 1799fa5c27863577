//! Integration-test harness: a real PostgreSQL per test and the real pgsluice binary in front of it.
#![allow(dead_code)]

pub mod console;
pub mod fault;
pub mod pg;
pub mod proxy;
pub mod wire;

pub use pg::TestPg;
#[allow(unused_imports)]
pub use proxy::{Proxy, ProxyBuilder, wait_for};

/// The first column of the first row of a simple-protocol query (no prepared statements).
pub async fn scalar(c: &tokio_postgres::Client, sql: &str) -> String {
    let msgs = c.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    msgs.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_string()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

/// Peak resident memory of a process, in MiB (VmHWM).
pub fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kb / 1024
}
