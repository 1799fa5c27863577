//! Dead and frozen peers: PgBouncer's tcp_keepalive, tcp_keepidle, tcp_keepintvl, tcp_keepcnt and
//! tcp_user_timeout are set on pgsluice's client and server connections (seen from the kernel with `ss`,
//! iproute2), and pgsluice's own statements on a server are bounded in time.

mod common;

use common::{Proxy, TestPg, scalar};

/// The keepalive timers (`timer:(keepalive,6.9sec,0)`) of established TCP sockets matching `filter`.
fn keepalive_timers(filter: &str) -> Vec<String> {
    let out = std::process::Command::new("ss")
        .args(["-tnoH", "state", "established", filter])
        .output()
        .expect("ss (iproute2) is needed: apt-get install iproute2");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split("timer:(").nth(1).and_then(|t| t.split(',').take(2).last()).unwrap_or("none").to_string())
        .collect()
}

/// Seconds in an `ss` timer value such as `6.9sec`, `850ms` or `119min`.
fn seconds(t: &str) -> f64 {
    let (num, unit) = t.split_at(t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len()));
    let n: f64 = num.parse().unwrap_or(f64::MAX);
    match unit {
        "ms" => n / 1000.0,
        "sec" => n,
        "min" => n * 60.0,
        _ => f64::MAX,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_timings_apply_to_client_and_server_connections() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg)
        .auth_type("trust")
        .general("tcp_keepidle", "7")
        .general("tcp_keepintvl", "2")
        .general("tcp_keepcnt", "3")
        .general("tcp_user_timeout", "1500")
        .start()
        .await;
    let c = px.client("trust_user", "", "app").await;
    assert_eq!(scalar(&c, "select 1").await, "1");
    let client_side = keepalive_timers(&format!("( sport = :{} )", px.port()));
    let server_side = keepalive_timers(&format!("( dport = :{} )", pg.port()));
    assert!(!client_side.is_empty() && !server_side.is_empty(), "{client_side:?} {server_side:?}");
    for t in client_side.iter().chain(&server_side) {
        assert!(seconds(t) <= 7.0, "keepalive timer {t} (client side {client_side:?}, server side {server_side:?})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_does_not_hold_pgsluices_own_check_query_forever() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg)
        .auth_type("trust")
        .pool_size(1)
        .general("server_check_delay", "0")
        .general("server_connect_timeout", "2")
        .query_wait_timeout(20.0)
        .start()
        .await;
    let a = px.client("trust_user", "", "app").await;
    let frozen = scalar(&a, "select pg_backend_pid()::text").await;
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill").args([sig, &frozen]).status().map(|s| s.success());
        assert!(matches!(ok, Ok(true)), "kill {sig} {frozen}");
    };
    signal("-STOP");
    // The next checkout runs server_check_query on the frozen backend: it is given up after
    // server_connect_timeout and a new server is opened for the client.
    let started = std::time::Instant::now();
    let answer = scalar(&a, "select pg_backend_pid()::text").await;
    signal("-CONT");
    assert_ne!(answer, frozen, "served by a new server");
    assert!(started.elapsed() < std::time::Duration::from_secs(15), "took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_that_stops_taking_a_clients_copy_is_given_up_after_server_send_timeout() {
    use common::wire::{RawConn, error_fields, fe};
    use std::time::Duration;
    let pg = TestPg::start().await;
    let admin = pg.admin_client().await;
    admin.batch_execute("create table copy_f(t text); grant all on copy_f to public").await.unwrap();
    let px = Proxy::builder(&pg).auth_type("trust").pool_size(2).general("server_send_timeout", "2").start().await;
    let (mut c, _, _) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
    c.send(&fe::query("copy copy_f from stdin")).await;
    assert_eq!(c.read_message(Duration::from_secs(10)).await.map(|m| m.0), Some(b'G'));
    let q = "select pid from pg_stat_activity where query like 'copy copy_f%'";
    let pid: i32 = admin.query_one(q, &[]).await.unwrap().get(0);
    let signal = |sig: &str| std::process::Command::new("kill").args([sig, &pid.to_string()]).status().unwrap();
    signal("-STOP");
    // 64 MB of rows the frozen backend never reads: the kernel buffers fill, then pgsluice's queue.
    let (mut rd, mut wr) = c.split();
    let writer = tokio::spawn(async move {
        let chunk = fe::copy_data(&b"row\n".repeat(16 * 1024));
        for _ in 0..1024 {
            wr.send(&chunk).await;
        }
        wr
    });
    let started = std::time::Instant::now();
    let code = loop {
        match rd.read_message(Duration::from_secs(20)).await {
            Some((b'E', body)) => break error_fields(&body)[&'C'].clone(),
            Some(_) => {}
            None => panic!("no error within 20 s"),
        }
    };
    signal("-CONT");
    assert_eq!(code, "08006");
    assert!(started.elapsed() < Duration::from_secs(15), "after {:?}", started.elapsed());
    writer.abort();
    // The other server of the pool serves the next client.
    let other = px.client("trust_user", "", "app").await;
    assert_eq!(scalar(&other, "select 'served'").await, "served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_kill_ends_a_client_whose_parameter_sync_waits_on_a_frozen_server() {
    use common::console::{ADMIN, code};
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg)
        .auth_type("trust")
        .pool_size(1)
        .general("admin_users", &format!("{:?}", ADMIN.0))
        .general("server_connect_timeout", "30")
        .start()
        .await;
    let x = px.client("trust_user", "", "app").await;
    let frozen = scalar(&x, "select pg_backend_pid()::text").await;
    drop(x);
    let signal = |sig: &str| std::process::Command::new("kill").args([sig, &frozen]).status().unwrap();
    signal("-STOP");
    // Y's application_name differs: pgsluice SETs it on the (frozen) server before Y's query.
    let y = px.client_with("trust_user", "", "app", &[("application_name", "other")]).await;
    let query = tokio::spawn(async move { y.simple_query("select 1").await.map(|_| ()) });
    let console = px.client(ADMIN.0, ADMIN.1, "pgbouncer").await;
    common::wait_for(std::time::Duration::from_secs(10), "Y's parameters being set on the server", || async {
        let (cols, rows) = common::console::show(&console, "show pools").await;
        rows.iter().any(|r| common::console::value(&cols, r, "sv_tested") == "1") // pgsluice's own SET
    })
    .await;
    let started = std::time::Instant::now();
    console.simple_query("kill app").await.unwrap();
    let e = tokio::time::timeout(std::time::Duration::from_secs(10), query).await.expect("Y ended").unwrap();
    signal("-CONT");
    assert_eq!(code(&e.expect_err("killed")).as_deref(), Some("57P01"));
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "after {:?}", started.elapsed());
}

/// Backends running `pg_sleep` (other than the one asking).
async fn sleeping_backends(pg: &TestPg) -> i64 {
    let c = pg.admin_client().await;
    let q = "select count(*) from pg_stat_activity where query like 'select pg_sleep%' and pid <> pg_backend_pid()";
    c.query_one(q, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_query_has_its_query_canceled_not_left_running() {
    use common::console::ADMIN;
    use std::time::Duration;
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg)
        .auth_type("trust")
        .pool_size(2)
        .general("admin_users", &format!("{:?}", ADMIN.0))
        .start()
        .await;
    let console = px.client(ADMIN.0, ADMIN.1, "pgbouncer").await;
    for how in ["leaves", "is killed"] {
        let (mut c, _, _) = common::wire::RawConn::login_with_key(px.port(), "trust_user", "app").await;
        c.send(&common::wire::fe::query("select pg_sleep(60)")).await;
        common::wait_for(Duration::from_secs(10), "the sleep to start", || async { sleeping_backends(&pg).await == 1 })
            .await;
        if how == "leaves" {
            drop(c);
        } else {
            console.simple_query("kill app").await.unwrap();
        }
        // Without a cancel the backend would sleep on for a minute after its client is gone.
        common::wait_for(Duration::from_secs(10), &format!("the sleep to end once the client {how}"), || async {
            sleeping_backends(&pg).await == 0
        })
        .await;
        console.simple_query("resume app").await.ok(); // KILL pauses the database, as in PgBouncer
    }
    let other = px.client("trust_user", "", "app").await;
    assert_eq!(scalar(&other, "select 'served'").await, "served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_kill_ends_a_client_whose_server_reset_runs_long() {
    use common::console::{ADMIN, code};
    use std::time::{Duration, Instant};
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg)
        .auth_type("trust")
        .pool_size(1)
        .general("admin_users", &format!("{:?}", ADMIN.0))
        .general("server_reset_query_always", "true")
        .general("server_reset_query", "\"select pg_sleep(60)\"")
        .general("server_connect_timeout", "60")
        .start()
        .await;
    let a = px.client("trust_user", "", "app").await;
    assert_eq!(scalar(&a, "select 'one'").await, "one"); // its reset now sleeps on the server
    let next = tokio::spawn(async move { a.simple_query("select 2").await.map(|_| ()) });
    let console = px.client(ADMIN.0, ADMIN.1, "pgbouncer").await;
    let started = Instant::now();
    console.simple_query("kill app").await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(20), next).await.expect("a ended").unwrap();
    assert_eq!(code(&e.expect_err("killed")).as_deref(), Some("57P01"));
    assert!(started.elapsed() < Duration::from_secs(10), "after {:?}", started.elapsed());
}
