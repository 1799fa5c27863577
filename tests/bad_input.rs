//! Hostile and broken clients: each is dropped (with an 08P01/0A000 error where one can be sent) while
//! other clients keep being served, and the process never dies.

mod common;

use std::time::{Duration, Instant};

use common::wire::{RawConn, error_fields};
use common::{Proxy, TestPg};

/// Reads until EOF; returns the first ErrorResponse's SQLSTATE, if any arrived.
async fn error_code_then_eof(conn: &mut RawConn, within: Duration) -> Option<String> {
    let mut code = None;
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        match conn.read_message(deadline - Instant::now()).await {
            Some((b'E', body)) => {
                code.get_or_insert_with(|| error_fields(&body).get(&'C').cloned().unwrap_or_default());
            }
            Some(_) => {}
            None => return code,
        }
    }
    panic!("connection not closed within {within:?}");
}

async fn assert_still_serving(px: &Proxy) {
    let c = px.client("scram_user", "scram_pw", "app").await;
    assert_eq!(common::scalar(&c, "select 41 + 1").await, "42");
}

fn startup_with_len(len: u32, body: &[u8]) -> Vec<u8> {
    let mut v = len.to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_startup_packets_get_08p01_and_others_are_served() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).start().await;
    let proto3 = 196_608u32.to_be_bytes();
    let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage garbage".to_vec(), Some("08P01")),
        ("length below 8", startup_with_len(4, &[]), Some("08P01")),
        ("oversized startup", startup_with_len(20_000, &proto3), Some("08P01")),
        ("2 GB length", startup_with_len(0x8000_0000, &proto3), Some("08P01")),
        (
            "missing final NUL",
            {
                let b = [&proto3[..], b"user\0x\0"].concat();
                startup_with_len(b.len() as u32 + 4, &b)
            },
            Some("08P01"),
        ),
        ("protocol 2.0", startup_with_len(8, &0x0002_0000u32.to_be_bytes()), Some("0A000")),
        ("protocol 4.0", startup_with_len(8, &0x0004_0000u32.to_be_bytes()), Some("0A000")),
        (
            "no user",
            {
                let b = [&proto3[..], b"database\0app\0\0"].concat();
                startup_with_len(b.len() as u32 + 4, &b)
            },
            Some("28000"),
        ),
    ];
    for (name, bytes, expected) in cases {
        let mut c = RawConn::connect(px.port()).await;
        c.send(&bytes).await;
        let code = error_code_then_eof(&mut c, Duration::from_secs(5)).await;
        assert_eq!(code.as_deref(), expected, "{name}");
        assert_still_serving(&px).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_startup_then_eof_and_data_after_ssl_request() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).start().await;
    let full = RawConn::startup_packet("scram_user", "app", &[]);
    let mut c = RawConn::connect(px.port()).await;
    c.send(&full[..full.len() / 2]).await;
    c.shutdown_write().await;
    assert_eq!(error_code_then_eof(&mut c, Duration::from_secs(5)).await, None);
    // SSLRequest with a StartupMessage in the same write: the bytes after it are refused (CVE-2021-23214 class).
    let mut c = RawConn::connect(px.port()).await;
    let mut both = vec![0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    both.extend_from_slice(&full);
    c.send(&both).await;
    assert_eq!(error_code_then_eof(&mut c, Duration::from_secs(5)).await.as_deref(), Some("08P01"));
    assert_still_serving(&px).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_login_gets_08p01_and_oversized_frame_is_not_allocated() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").start().await;
    for frame in [&b"Q\x7f\xff\xff\xffselect"[..], &b"Q\x00\x00\x00\x02"[..], &b"Q\x80\x80\x80\x80"[..]] {
        let mut c = RawConn::connect(px.port()).await;
        c.send(&RawConn::startup_packet("trust_user", "app", &[])).await;
        c.read_until_ready().await;
        c.send(frame).await;
        assert_eq!(error_code_then_eof(&mut c, Duration::from_secs(5)).await.as_deref(), Some("08P01"));
    }
    let c = px.try_client("trust_user", "", "app").await.unwrap();
    c.simple_query("select 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_login_is_dropped_after_client_login_timeout_while_others_log_in() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).general("client_login_timeout", "2").start().await;
    let startup = RawConn::startup_packet("scram_user", "app", &[]);
    let mut slow = RawConn::connect(px.port()).await;
    let started = Instant::now();
    let sender = tokio::spawn(async move {
        // One byte per second, as a slowloris would.
        for b in startup {
            if slow.try_send(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        slow
    });
    assert_still_serving(&px).await;
    let mut slow = sender.await.unwrap();
    let code = error_code_then_eof(&mut slow, Duration::from_secs(5)).await;
    assert_eq!(code.as_deref(), Some("08P01"));
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(8), "dropped after {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_and_gssenc_requests_are_declined_and_login_continues() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").start().await;
    for code in [0x04d2_162fu32, 0x04d2_1630] {
        let mut c = RawConn::connect(px.port()).await;
        let mut req = 8u32.to_be_bytes().to_vec();
        req.extend_from_slice(&code.to_be_bytes());
        c.send(&req).await;
        let mut answer = [0u8; 1];
        assert_eq!(c.read_exact_raw(&mut answer).await, 1);
        assert_eq!(&answer, b"N", "request {code:#x} declined");
        c.send(&RawConn::startup_packet("trust_user", "app", &[])).await;
        c.read_until_ready().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unfinished_logins_neither_counts_against_max_client_conn_nor_locks_real_clients_out() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).max_client_conn(10).general("max_pending_logins", "20").start().await;
    // 60 sockets that never finish their StartupMessage (a slowloris), far more than max_client_conn.
    let half = RawConn::startup_packet("scram_user", "app", &[]);
    let mut flood = Vec::new();
    for _ in 0..60 {
        let mut c = RawConn::connect(px.port()).await;
        c.send(&half[..5]).await;
        flood.push(c);
    }
    // Real clients still log in, up to max_client_conn.
    let mut real = Vec::new();
    for _ in 0..10 {
        real.push(px.client("scram_user", "scram_pw", "app").await);
    }
    assert_eq!(common::scalar(&real[9], "select 'in'").await, "in");
    // ...and max_client_conn still holds for logged-in clients.
    let over = px.try_client("scram_user", "scram_pw", "app").await.expect_err("11th client refused");
    assert_eq!(over.as_db_error().map(|e| e.code().code().to_string()).as_deref(), Some("53300"));
    // The oldest pending logins were dropped to make room (53300 naming the budget), the newest kept.
    let oldest = flood.first_mut().unwrap();
    assert_eq!(error_code_then_eof(oldest, Duration::from_secs(5)).await.as_deref(), Some("53300"));
    let newest = flood.last_mut().unwrap();
    assert_eq!(newest.wait_closed(Duration::from_millis(300)).await, None, "the newest is still pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_startup_parameter_given_twice_is_refused_so_the_console_exemption_cannot_be_borrowed() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").max_client_conn(1).start().await;
    let _first = px.client("trust_user", "", "app").await;
    // database=pgbouncer (exempt from max_client_conn) followed by database=app.
    let mut c = RawConn::connect(px.port()).await;
    c.send(&RawConn::startup_packet("trust_user", "pgbouncer", &[("database", "app")])).await;
    assert_eq!(error_code_then_eof(&mut c, Duration::from_secs(5)).await.as_deref(), Some("08P01"));
    let over = px.try_client("trust_user", "", "app").await.expect_err("second client refused");
    assert_eq!(over.as_db_error().map(|e| e.code().code().to_string()).as_deref(), Some("53300"));
}
