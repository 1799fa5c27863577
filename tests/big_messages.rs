//! Big messages and backpressure: messages far larger than any buffer stream through (named statements
//! included) without pgsluice holding them whole, a 1 GB COPY passes in both directions with bounded proxy
//! memory, and a client that stops reading slows only its own server and is dropped after
//! client_send_timeout while others are served; max_packet_size bounds messages both ways.

mod common;

use std::time::Duration;

use common::wire::{RawConn, fe};
use common::{Proxy, TestPg, peak_rss_mib, scalar};
use futures_util::{SinkExt, StreamExt};

const USER: &str = "scram_user";
const PW: &str = "scram_pw";

/// Proxy memory may grow by read buffers and bookkeeping, never by a whole big message.
const MAX_PROXY_MIB: u64 = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_binds_and_parses_of_named_statements_work_across_servers() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).pool_size(2).start().await;
    let mut tasks = Vec::new();
    for i in 0..4usize {
        let connstr = px.connstr(USER, PW, "app");
        tasks.push(tokio::spawn(async move {
            let (c, conn) = tokio_postgres::connect(&connstr, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            // A 600 KB statement text: a named Parse too big to hold at once.
            let filler = "x".repeat(600_000);
            let big_parse = c.prepare(&format!("select $1::int4 + {i} /* {filler} */")).await.unwrap();
            // A 5 MB parameter: a named Bind whose names are rewritten while its body streams.
            let stmt = c.prepare("select length($1::text), left($1::text, 3), right($1::text, 3)").await.unwrap();
            for j in 0..3usize {
                let param = format!("{j:03}{}{i:03}", "y".repeat(5_000_000));
                let row = c.query_one(&stmt, &[&param]).await.unwrap();
                assert_eq!(row.get::<_, i32>(0) as usize, param.len());
                assert_eq!(row.get::<_, String>(1), format!("{j:03}"));
                assert_eq!(row.get::<_, String>(2), format!("{i:03}"));
                let row = c.query_one(&big_parse, &[&(j as i32)]).await.unwrap();
                assert_eq!(row.get::<_, i32>(0) as usize, i + j);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let peak = peak_rss_mib(px.pid());
    assert!(peak < MAX_PROXY_MIB, "pgsluice peaked at {peak} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mb_row_and_a_100_mb_parameter_stream_through() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).pool_size(1).start().await;
    let c = px.client(USER, PW, "app").await;
    let row = c.query_one("select repeat('x', 200000000)", &[]).await.unwrap();
    assert_eq!(row.get::<_, &str>(0).len(), 200_000_000);
    let param = "z".repeat(100_000_000);
    let row = c.query_one("select length($1::text)", &[&param]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 100_000_000);
    let peak = peak_rss_mib(px.pid());
    assert!(peak < MAX_PROXY_MIB, "pgsluice peaked at {peak} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_gb_copy_streams_both_ways_with_bounded_proxy_memory() {
    let pg = TestPg::start().await;
    let admin = pg.admin_client().await;
    admin.batch_execute("create unlogged table copy_sink(t text); grant all on copy_sink to public").await.unwrap();
    let px = Proxy::builder(&pg).pool_size(1).start().await;
    let c = px.client(USER, PW, "app").await;
    // Out: ~1 GB from the server.
    let started = std::time::Instant::now();
    let out = c.copy_out("copy (select repeat('x', 1023) from generate_series(1, 1048576)) to stdout").await.unwrap();
    tokio::pin!(out);
    let mut bytes = 0usize;
    while let Some(chunk) = out.next().await {
        bytes += chunk.unwrap().len();
    }
    assert_eq!(bytes, 1 << 30);
    eprintln!("1 GB COPY out in {:?}", started.elapsed());
    let started = std::time::Instant::now();
    // In: ~1 GB to the server, 8 MB at a time.
    let sink = c.copy_in("copy copy_sink from stdin").await.unwrap();
    tokio::pin!(sink);
    let line = format!("{}\n", "y".repeat(1023));
    let chunk = bytes::Bytes::from(line.repeat(8192));
    for _ in 0..128 {
        sink.send(chunk.clone()).await.unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 1 << 20);
    let stored = scalar(&c, "select sum(length(t)) from copy_sink").await;
    assert_eq!(stored, (1023u64 << 20).to_string());
    eprintln!("1 GB COPY in in {:?}", started.elapsed());
    c.batch_execute("truncate copy_sink").await.unwrap();
    let peak = peak_rss_mib(px.pid());
    assert!(peak < MAX_PROXY_MIB, "pgsluice peaked at {peak} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_and_others_are_served() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").pool_size(2).general("client_send_timeout", "1").start().await;
    let (mut stalled, _, _) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
    // ~300 MB of results, never read while the timeout runs.
    stalled.send(&fe::query("select repeat('x', 1000) from generate_series(1, 300000)")).await;
    let admin = pg.admin_client().await;
    let running = "select count(*) from pg_stat_activity where query like 'select repeat%' and state = 'active'";
    common::wait_for(Duration::from_secs(5), "the big query runs", || async {
        admin.query_one(running, &[]).await.unwrap().get::<_, i64>(0) == 1
    })
    .await;
    // Meanwhile another client is served by the other server.
    let other = px.client("trust_user", "", "app").await;
    for i in 0..20 {
        assert_eq!(scalar(&other, &format!("select {i}")).await, i.to_string());
    }
    // The stalled client is dropped after client_send_timeout, and its server is closed with it.
    common::wait_for(Duration::from_secs(10), "the stalled query's backend is gone", || async {
        admin.query_one(running, &[]).await.unwrap().get::<_, i64>(0) == 0
    })
    .await;
    let (received, closed) = stalled.drain(Duration::from_secs(10)).await;
    assert!(closed, "pgsluice closed the stalled client");
    assert!(received < 100_000_000, "only socket buffers' worth arrived ({received} bytes), not the result");
    let peak = peak_rss_mib(px.pid());
    assert!(peak < MAX_PROXY_MIB, "pgsluice peaked at {peak} MiB");
    assert_eq!(scalar(&other, "select 'still served'").await, "still served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_packet_size_bounds_messages_both_ways() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").general("max_packet_size", "65536").start().await;
    // A client message over the limit: 08P01, connection closed, nothing held.
    let mut c = RawConn::connect(px.port()).await;
    c.send(&RawConn::startup_packet("trust_user", "app", &[])).await;
    c.read_until_ready().await;
    c.send(&fe::query(&format!("select '{}'", "x".repeat(100_000)))).await;
    let (tag, body) = c.read_message(Duration::from_secs(10)).await.expect("an error");
    assert_eq!(tag, b'E');
    let fields = common::wire::error_fields(&body);
    assert_eq!((fields[&'S'].as_str(), fields[&'C'].as_str()), ("FATAL", "08P01"), "{fields:?}");
    assert!(c.wait_closed(Duration::from_secs(5)).await.is_some(), "closed after the error");
    // A row over the limit from the server: the client gets an error instead of the row.
    let client = px.client("trust_user", "", "app").await;
    let e = client.simple_query("select repeat('x', 100000)").await.expect_err("row over max_packet_size");
    let db = e.as_db_error().unwrap_or_else(|| panic!("an ErrorResponse, not a bare close: {e}"));
    assert_eq!(db.code().code(), "08006", "{db:?}");
    assert!(db.message().contains("invalid message length"), "{}", db.message());
    // Under the limit both ways, and other clients are unaffected.
    let other = px.client("trust_user", "", "app").await;
    assert_eq!(scalar(&other, &format!("select length('{}')", "y".repeat(60_000))).await, "60000");
    assert_eq!(scalar(&other, "select length(repeat('z', 60000))").await, "60000");
}
