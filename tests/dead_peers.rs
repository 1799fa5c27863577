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
