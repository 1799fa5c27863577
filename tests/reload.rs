//! Live reload: a timeout and a limit changed by RELOAD apply to the next wait, an unchanged pool keeps
//! its server, a user added to the auth file can log in, and a rebuilt pool's counters never go back
//! (console and /metrics).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::pg::free_port;
use common::{Proxy, TestPg, scalar};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::SimpleQueryMessage;

const USER: &str = "scram_user";
const PW: &str = "scram_pw";

fn code(e: &tokio_postgres::Error) -> Option<String> {
    e.as_db_error().map(|d| d.code().code().to_string())
}

/// Rewrites the running config file.
fn edit_config(px: &Proxy, from: &str, to: &str) {
    let text = std::fs::read_to_string(&px.config).unwrap();
    assert!(text.contains(from), "{from:?} in {text}");
    std::fs::write(&px.config, text.replacen(from, to, 1)).unwrap();
}

/// The `[databases]` line of `db` gets a password field: a changed server entry, the same server.
fn change_server_of(px: &Proxy, db: &str) {
    let text = std::fs::read_to_string(&px.config).unwrap();
    let prefix = format!("{db:?} = ");
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with(&prefix) || (db == "app" && l.starts_with("app = ")) {
                l.replace(" }", &format!(", password = {PW:?} }}"))
            } else {
                l.to_string()
            }
        })
        .collect();
    assert_ne!(lines.join("\n"), text.trim_end(), "{db} has an entry: {text}");
    std::fs::write(&px.config, lines.join("\n") + "\n").unwrap();
}

async fn admin(px: &Proxy) -> tokio_postgres::Client {
    px.client(USER, PW, "pgbouncer").await
}

/// One database's row of a console SHOW command, by column name.
async fn stats_row(console: &tokio_postgres::Client, cmd: &str, db: &str) -> HashMap<String, String> {
    for m in console.simple_query(cmd).await.unwrap() {
        if let SimpleQueryMessage::Row(r) = m
            && r.get(0) == Some(db)
        {
            return r
                .columns()
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name().to_string(), r.get(i).unwrap_or("").to_string()))
                .collect();
        }
    }
    HashMap::new()
}

fn num(row: &HashMap<String, String>, name: &str) -> u64 {
    row.get(name).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name} in {row:?}"))
}

/// /metrics samples: "name{labels}" -> value.
async fn metrics(port: u16) -> HashMap<String, f64> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect to metrics");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    body.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(k, v)| Some((k.to_string(), v.parse().ok()?))))
        .collect()
}

const POOL: &str = "{database=\"app\",user=\"scram_user\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_never_go_back_when_reload_rebuilds_a_pool() {
    let pg = TestPg::start().await;
    let mport = free_port();
    let px = Proxy::builder(&pg)
        .general("admin_users", &format!("{USER:?}"))
        .general("metrics_addr", &format!("\"127.0.0.1:{mport}\""))
        .start()
        .await;
    let console = admin(&px).await;
    let a = px.client(USER, PW, "app").await;
    for i in 0..5 {
        assert_eq!(scalar(&a, &format!("select {i}")).await, i.to_string());
    }
    common::wait_for(Duration::from_secs(5), "the workload is counted", || async {
        stats_row(&console, "show stats", "app").await.get("total_xact_count").map(String::as_str) == Some("5")
    })
    .await;
    let before = stats_row(&console, "show stats", "app").await;
    let names = ["total_xact_count", "total_query_count", "total_server_assignment_count", "total_received"];
    let m_before = metrics(mport).await;
    // A transaction is open on the old pool while RELOAD rebuilds it: it finishes there, counted in the
    // same figures as everything the client does on the new pool afterwards.
    a.batch_execute("begin; select 1").await.unwrap();
    change_server_of(&px, "app");
    console.simple_query("reload").await.unwrap();
    let right_after = stats_row(&console, "show stats", "app").await;
    for name in names.iter().chain(&["total_client_login_count"]) {
        assert!(num(&right_after, name) >= num(&before, name), "{name}: {right_after:?} after {before:?}");
    }
    a.batch_execute("commit").await.unwrap();
    assert_eq!(scalar(&a, "select 42").await, "42");
    common::wait_for(Duration::from_secs(5), "both transactions are counted", || async {
        stats_row(&console, "show stats", "app").await.get("total_xact_count").map(String::as_str) == Some("7")
    })
    .await;
    let after = stats_row(&console, "show stats_totals", "app").await;
    assert!(num(&after, "query_count") > num(&before, "total_query_count"), "{after:?}");
    assert_eq!(num(&after, "client_login_count"), 1);
    let m = metrics(mport).await;
    for name in [
        "pgsluice_transactions_total",
        "pgsluice_queries_total",
        "pgsluice_server_assignments_total",
        "pgsluice_received_bytes_total",
        "pgsluice_client_logins_total",
        "pgsluice_transaction_duration_seconds_count",
    ] {
        let key = format!("{name}{POOL}");
        let (was, is) = (m_before.get(&key).copied(), m.get(&key).copied());
        assert!(was.is_some() && is >= was, "{key}: {was:?} then {is:?}");
    }
    assert_eq!(m.get(&format!("pgsluice_transactions_total{POOL}")), Some(&7.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_shortens_query_wait_timeout_for_the_next_wait() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg)
        .general("admin_users", &format!("{USER:?}"))
        .pool_size(1)
        .query_wait_timeout(60.0)
        .start()
        .await;
    let console = admin(&px).await;
    let a = px.client(USER, PW, "app").await;
    let b = px.client(USER, PW, "app").await;
    a.batch_execute("begin; select 1").await.unwrap();
    edit_config(&px, "query_wait_timeout = 60.0", "query_wait_timeout = 0.3");
    console.simple_query("reload").await.unwrap();
    // B waits for A's server: no longer a minute, but the new 0.3 s.
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(20), b.simple_query("select 1")).await.expect("B is answered");
    assert_eq!(code(&r.unwrap_err()).as_deref(), Some("57014"));
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    a.batch_execute("commit").await.unwrap();
    assert_eq!(scalar(&b, "select 2").await, "2", "B goes on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_lowers_max_db_connections_for_the_next_wait() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg)
        .general("admin_users", &format!("{USER:?}"))
        .general("max_db_connections", "5")
        .pool_size(5)
        .query_wait_timeout(1.0)
        .start()
        .await;
    let console = admin(&px).await;
    let (a, b, c) =
        (px.client(USER, PW, "app").await, px.client(USER, PW, "app").await, px.client(USER, PW, "app").await);
    a.batch_execute("begin; select 1").await.unwrap();
    b.batch_execute("begin; select 1").await.unwrap();
    edit_config(&px, "max_db_connections = 5", "max_db_connections = 2");
    console.simple_query("reload").await.unwrap();
    // The database's budget is now two servers, both busy: C waits and times out, nobody is dropped.
    let e = c.simple_query("select 1").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("57014"), "{e}");
    assert_eq!(pg.backends_for(USER).await, 2);
    a.batch_execute("commit").await.unwrap();
    assert_eq!(scalar(&c, "select 3").await, "3", "C gets A's server");
    b.batch_execute("commit").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_the_servers_of_unchanged_pools() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg)
        .general("admin_users", &format!("{USER:?}"))
        .database("app2", "dbname = \"app\"")
        .pool_size(1)
        .start()
        .await;
    let console = admin(&px).await;
    let a = px.client(USER, PW, "app").await;
    let b = px.client(USER, PW, "app2").await;
    let a_pid = scalar(&a, "select pg_backend_pid()").await;
    let b_pid = scalar(&b, "select pg_backend_pid()").await;
    // Only app2's server entry changes (and an unrelated setting): app keeps its connection, app2 reconnects.
    change_server_of(&px, "app2");
    edit_config(&px, "default_pool_size = 1", "default_pool_size = 1\nstats_period = 30");
    console.simple_query("reload").await.unwrap();
    assert_eq!(scalar(&a, "select pg_backend_pid()").await, a_pid, "the unchanged pool keeps its server");
    assert_ne!(scalar(&b, "select pg_backend_pid()").await, b_pid, "the rebuilt pool has a new one");
    common::wait_for(Duration::from_secs(5), "app2's old server is closed", || async {
        pg.backends_for(USER).await == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_rereads_the_auth_file() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).general("admin_users", &format!("{USER:?}")).userlist(&[(USER, PW)]).start().await;
    let console = admin(&px).await;
    let e = px.try_client("md5_user", "md5_pw", "app").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("28P01"), "not in the auth file yet: {e}");
    let userlist = px.config.with_file_name("userlist.txt");
    let mut text = std::fs::read_to_string(&userlist).unwrap();
    text.push_str("\"md5_user\" \"md5_pw\"\n");
    std::fs::write(&userlist, text).unwrap();
    console.simple_query("reload").await.unwrap();
    let c = px.client("md5_user", "md5_pw", "app").await;
    assert_eq!(scalar(&c, "select current_user").await, "md5_user");
}

/// RELOAD with a changed restart-only setting: a NOTICE says so, the listener stays where it was, and
/// SHOW CONFIG shows the value in effect, not the one in the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_reports_restart_only_settings_and_keeps_them_running() {
    use common::wire::{RawConn, query_message};
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").general("admin_users", "\"trust_user\"").start().await;
    let old_port = px.port().to_string();
    let new_port = free_port().to_string();
    edit_config(&px, &format!("listen_port = {old_port}"), &format!("listen_port = {new_port}"));
    let mut console = RawConn::connect(px.port()).await;
    console.send(&RawConn::startup_packet("trust_user", "pgbouncer", &[])).await;
    console.read_until_ready().await;
    console.send(&query_message("RELOAD")).await;
    let got = replies(&mut console).await;
    let tags: Vec<u8> = got.iter().map(|(t, _)| *t).collect();
    assert_eq!(tags, b"NCZ", "{got:?}");
    assert!(got[0].1.contains("listen_port changed: restart pgsluice"), "{got:?}");
    console.send(&query_message("SHOW CONFIG")).await;
    let rows = replies(&mut console).await;
    let port_row = rows.iter().find(|(t, b)| *t == b'D' && b.contains("listen_port")).expect("listen_port row");
    assert!(port_row.1.contains(&old_port) && !port_row.1.contains(&new_port), "{port_row:?}");
    // Still served on the old port; nothing listens on the new one.
    let c = px.client("trust_user", "", "app").await;
    assert_eq!(scalar(&c, "select 1").await, "1");
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", new_port.parse::<u16>().unwrap())).await.is_err());
}

/// Every reply through ReadyForQuery, as (tag, body with NULs shown as '|').
async fn replies(c: &mut common::wire::RawConn) -> Vec<(u8, String)> {
    let mut out = Vec::new();
    loop {
        let (tag, body) = c.read_message(Duration::from_secs(10)).await.expect("a reply");
        out.push((tag, String::from_utf8_lossy(&body).replace('\0', "|")));
        if tag == b'Z' {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_changes_session_state_from_the_next_transaction() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg)
        .general("admin_users", &format!("{USER:?}"))
        .general("session_state", "\"isolate\"")
        .pool_size(1)
        .start()
        .await;
    let console = admin(&px).await;
    let (a, b) = (px.client(USER, PW, "app").await, px.client(USER, PW, "app").await);
    a.batch_execute("set work_mem = '9MB'").await.unwrap();
    assert_eq!(scalar(&b, "show work_mem").await, "4MB");
    edit_config(&px, "session_state = \"isolate\"", "session_state = \"leak\"");
    console.simple_query("reload").await.unwrap();
    a.batch_execute("set work_mem = '9MB'").await.unwrap();
    assert_eq!(scalar(&b, "show work_mem").await, "9MB", "leak now: a's SET stays on the shared server");
}
