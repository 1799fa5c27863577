//! Pool sizing under load, the reserve pool, query_wait_timeout, and dirty servers never reused.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use common::{Proxy, TestPg, wait_for};
use tokio_postgres::error::SqlState;

const USER: &str = "scram_user";
const PW: &str = "scram_pw";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_clients_share_a_pool_of_five() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).pool_size(5).max_client_conn(1000).query_wait_timeout(60.0).start().await;
    let admin = pg.admin_client().await;
    // Watch PostgreSQL's own view of the pool's connections for the whole run.
    let running = Arc::new(AtomicBool::new(true));
    let max_seen = Arc::new(AtomicI64::new(0));
    let watcher = {
        let (running, max_seen) = (running.clone(), max_seen.clone());
        tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                let row = admin
                    .query_one(
                        "select count(*) from pg_stat_activity where usename = $1 and backend_type = 'client backend'",
                        &[&USER],
                    )
                    .await
                    .unwrap();
                max_seen.fetch_max(row.get::<_, i64>(0), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut tasks = Vec::new();
    for i in 0..500 {
        let connstr = px.connstr(USER, PW, "app");
        tasks.push(tokio::spawn(async move {
            let (client, conn) = tokio_postgres::connect(&connstr, tokio_postgres::NoTls).await.expect("connect");
            tokio::spawn(conn);
            for j in 0..20 {
                let tx_sql = format!(
                    "begin; update accounts set balance = balance + 1 where id = {}; commit;",
                    (i + j) % 10 + 1
                );
                client.batch_execute(&tx_sql).await.expect("transaction");
            }
            let rows = client.simple_query(&format!("select {i} + 1")).await.unwrap();
            let expected = (i + 1).to_string();
            assert!(rows.iter().any(
                |m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some(expected.as_str()))
            ));
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    running.store(false, Ordering::Relaxed);
    watcher.await.unwrap();
    let seen = max_seen.load(Ordering::Relaxed);
    assert!((1..=5).contains(&seen), "PostgreSQL saw {seen} connections from a pool of 5");
    let c = pg.direct(USER, PW, "app").await;
    let total: i64 = c.query_one("select sum(balance)::int8 from accounts", &[]).await.unwrap().get(0);
    let initial: i64 = c.query_one("select count(*) * 0 from accounts", &[]).await.unwrap().get(0);
    assert!(total >= 500 * 20 + initial, "every transaction committed: sum {total}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_pool_only_after_reserve_timeout_and_wait_timeout_keeps_client_usable() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).pool_size(5).reserve_pool(2, 1.0).query_wait_timeout(2.5).start().await;
    // Seven clients each hold a server inside a transaction.
    let mut holders = Vec::new();
    for i in 0..5 {
        let c = px.client(USER, PW, "app").await;
        c.batch_execute("begin; select 1").await.unwrap();
        holders.push(c);
        assert_eq!(pg.backends_for(USER).await, i + 1);
    }
    // The 6th waits: no reserve connection before reserve_pool_timeout.
    let sixth = px.client(USER, PW, "app").await;
    let started = Instant::now();
    let sixth_tx = tokio::spawn(async move {
        sixth.batch_execute("begin; select 1").await.unwrap();
        (sixth, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pg.backends_for(USER).await, 5, "reserve used before reserve_pool_timeout");
    let (sixth, waited) = sixth_tx.await.unwrap();
    assert!(waited >= Duration::from_millis(900), "reserve granted after {waited:?}");
    assert_eq!(pg.backends_for(USER).await, 6);
    holders.push(sixth);
    let seventh = px.client(USER, PW, "app").await;
    seventh.batch_execute("begin; select 1").await.unwrap();
    holders.push(seventh);
    assert_eq!(pg.backends_for(USER).await, 7);
    // Logged as PgBouncer does: every new server, and each of the two from the reserve.
    let log = px.log_contents();
    assert_eq!(log.matches("app/scram_user@127.0.0.1:").count(), 7, "{log}");
    assert_eq!(log.matches(" new connection to server (from 127.0.0.1:").count(), 7, "{log}");
    assert_eq!(log.matches("app/scram_user: taking connection from reserve_pool").count(), 2, "{log}");
    // The 8th: pool 5 + reserve 2 all busy -> 57014 after query_wait_timeout, connection still usable.
    let eighth = px.client(USER, PW, "app").await;
    let started = Instant::now();
    let err = eighth.simple_query("select 1").await.unwrap_err();
    let waited = started.elapsed();
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code(), &SqlState::QUERY_CANCELED);
    assert!(db.message().starts_with("query_wait_timeout"), "{}", db.message());
    assert!(waited >= Duration::from_secs(2), "timed out after {waited:?}");
    assert_eq!(pg.backends_for(USER).await, 7, "never more than pool + reserve");
    // Free one server: the same 8th connection now works.
    holders[0].batch_execute("commit").await.unwrap();
    assert_eq!(common::scalar(&eighth, "select 42").await, "42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_client_inside_transaction_leaves_no_lock_and_pool_of_one_recovers() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).pool_size(1).start().await;
    let (client, conn) = tokio_postgres::connect(&px.connstr(USER, PW, "app"), tokio_postgres::NoTls).await.unwrap();
    let conn_task = tokio::spawn(conn);
    client.batch_execute("begin; update accounts set balance = balance + 1000 where id = 1").await.unwrap();
    // Kill the client abruptly: the socket closes while the server holds a row lock.
    conn_task.abort();
    drop(client);
    let admin = pg.admin_client().await;
    wait_for(Duration::from_secs(10), "no idle-in-transaction backend and no row lock", || async {
        let idle_tx: i64 = admin
            .query_one("select count(*) from pg_stat_activity where state like 'idle in transaction%'", &[])
            .await
            .unwrap()
            .get(0);
        let locks: i64 = admin
            .query_one(
                "select count(*) from pg_locks l join pg_class c on c.oid = l.relation where c.relname = 'accounts'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        idle_tx == 0 && locks == 0
    })
    .await;
    let next = px.client(USER, PW, "app").await;
    let balance: i64 = common::scalar(&next, "select balance from accounts where id = 1").await.parse().unwrap();
    assert!(balance < 1000, "the killed client's update was rolled back");
    next.batch_execute("update accounts set balance = balance where id = 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_keeps_one_backend_and_released_after_commit() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).pool_size(2).start().await;
    let a = px.client(USER, PW, "app").await;
    let b = px.client(USER, PW, "app").await;
    a.batch_execute("begin").await.unwrap();
    let pid1 = common::scalar(&a, "select pg_backend_pid()").await;
    // b works meanwhile on the other server.
    let pid_b = common::scalar(&b, "select pg_backend_pid()").await;
    assert_ne!(pid1, pid_b);
    let pid2 = common::scalar(&a, "select pg_backend_pid()").await;
    assert_eq!(pid1, pid2, "a transaction stays on one backend");
    a.batch_execute("commit").await.unwrap();
    assert_eq!(pg.backends_for(USER).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_while_clients_idle_is_survived() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).pool_size(3).start().await;
    let clients = futures_join(&px, 3).await;
    for c in &clients {
        c.simple_query("select 1").await.unwrap();
    }
    pg.restart_fast().await;
    for c in &clients {
        assert_eq!(common::scalar(c, "select 7").await, "7");
    }
}

async fn futures_join(px: &Proxy, n: usize) -> Vec<tokio_postgres::Client> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(px.client(USER, PW, "app").await);
    }
    v
}
