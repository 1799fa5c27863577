//! Pipelines and asynchronous messages in transaction mode: the server stays with a client until its
//! last Sync is answered, a client that vanishes mid-pipeline leaves nothing behind, and notifications
//! reach only the client they belong to.

mod common;

use std::time::Duration;

use common::wire::RawConn;
use common::wire::fe::*;
use common::{Proxy, TestPg, scalar};

async fn read_tags_until_ready(c: &mut RawConn, n: usize) -> Vec<u8> {
    let mut tags = Vec::new();
    let mut ready = 0;
    while ready < n {
        let (tag, _) = c.read_message(Duration::from_secs(10)).await.expect("reply");
        tags.push(tag);
        ready += usize::from(tag == b'Z');
    }
    tags
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stays_until_the_last_sync_of_a_pipeline_is_answered() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").pool_size(1).start().await;
    let (mut a, _, _) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
    let b = px.client("trust_user", "", "app").await;
    // Three batches in one write; the first takes a while, so the server goes idle ('I') between
    // batches while more are still queued. Released at the first 'I', the server would carry A's later
    // replies to B.
    let pipeline = [
        parse("", "select pg_sleep(0.3)"),
        bind("", "", &[]),
        execute("", 0),
        sync(),
        parse("", "select 2"),
        bind("", "", &[]),
        execute("", 0),
        sync(),
        parse("", "select 3"),
        bind("", "", &[]),
        execute("", 0),
        sync(),
    ]
    .concat();
    a.send(&pipeline).await;
    let b_query = tokio::spawn(async move { scalar(&b, "select 'b'").await });
    let tags = read_tags_until_ready(&mut a, 3).await;
    assert_eq!(tags, b"12DCZ12DCZ12DCZ".to_vec());
    assert_eq!(b_query.await.unwrap(), "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_vanishing_mid_pipeline_leave_no_backend_waiting() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").pool_size(1).query_wait_timeout(5.0).start().await;
    // Each cut ends with a Flush, and the client waits for the first reply, so its server is certainly
    // mid-pipeline (Parse, Bind or Execute done, no Sync) when it vanishes.
    let cuts: [(Vec<u8>, u8); 3] = [
        ([parse("s", "select 1"), flush()].concat(), b'1'),
        (
            [parse("s", "update accounts set balance = balance where id = 1"), bind("", "s", &[]), flush()].concat(),
            b'1',
        ),
        (
            [
                parse("", "update accounts set balance = balance where id = 1"),
                bind("", "", &[]),
                execute("", 0),
                flush(),
            ]
            .concat(),
            b'1',
        ),
    ];
    for i in 0..12 {
        let (mut c, _, _) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
        let (bytes, first_reply) = &cuts[i % cuts.len()];
        c.send(bytes).await;
        assert_eq!(c.read_message(Duration::from_secs(10)).await.map(|m| m.0), Some(*first_reply));
        drop(c);
    }
    // And 20 at once that vanish without waiting for anything.
    let mut conns = Vec::new();
    for _ in 0..20 {
        let (mut c, _, _) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
        c.send(&cuts[2].0[..cuts[2].0.len() - 5]).await;
        conns.push(c);
    }
    drop(conns);
    // The next client of the pool of one is served, on a server that is not mid-pipeline.
    let next = px.client("trust_user", "", "app").await;
    if let Err(e) = next.simple_query("select 1").await {
        panic!("{e}\n{}", px.log_contents());
    }
    assert_eq!(scalar(&next, "select count(*) from accounts").await, "10");
    let admin = pg.admin_client().await;
    let stuck = "select count(*) from pg_stat_activity where usename = 'trust_user' and pid <> $1 \
                 and (state <> 'idle' or xact_start is not null)";
    let next_pid: i32 = scalar(&next, "select pg_backend_pid()").await.parse().unwrap();
    common::wait_for(Duration::from_secs(5), "no backend left mid-pipeline", || async {
        admin.query_one(stuck, &[&next_pid]).await.unwrap().get::<_, i64>(0) == 0
    })
    .await;
    // Nobody holds a lock on the updated row.
    let locks: i64 = admin
        .query_one("select count(*) from pg_locks where relation = 'accounts'::regclass", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(locks, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_never_reach_the_next_user_of_a_server() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").pool_size(1).start().await;
    // Client A leaves its (only) server listening in transaction mode, then goes away.
    let (mut a, _, _) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
    a.send(&query("listen chan")).await;
    assert_eq!(read_tags_until_ready(&mut a, 1).await, b"CZ".to_vec());
    drop(a);
    // The pooled idle server receives a notification (and a notice-producing statement runs elsewhere).
    let admin = pg.admin_client().await;
    admin.batch_execute("notify chan, 'for a only'").await.unwrap();
    // B gets the server: it must see only its own replies.
    let (mut b, _, _) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
    for _ in 0..3 {
        b.send(&query("select 1")).await;
        assert_eq!(read_tags_until_ready(&mut b, 1).await, b"TDCZ".to_vec());
    }
    assert!(b.read_message(Duration::from_millis(300)).await.is_none(), "nothing unasked-for arrives");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_work_in_session_mode() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").pool_mode("session").pool_size(2).start().await;
    let (mut a, _, _) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
    a.send(&query("listen chan")).await;
    assert_eq!(read_tags_until_ready(&mut a, 1).await, b"CZ".to_vec());
    let other = px.client("trust_user", "", "app").await;
    other.batch_execute("notify chan, 'hello'").await.unwrap();
    let (tag, body) = a.read_message(Duration::from_secs(5)).await.expect("notification");
    assert_eq!(tag, b'A');
    assert!(body.ends_with(b"chan\0hello\0"), "{body:?}");
}

/// Random pipelines of up to 10 statements drawn from 100 prepared ones, several clients through a pool
/// of 2 whose servers keep at most 66 statements each: statements are evicted and re-prepared all the
/// time, on whichever server a pipeline lands. Every result is checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_pipelines_over_an_evicting_cache_return_every_result_right() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).pool_size(2).general("max_prepared_statements", "66").start().await;
    let mut tasks = Vec::new();
    for client in 0..6u64 {
        let connstr = px.connstr("scram_user", "scram_pw", "app");
        tasks.push(tokio::spawn(async move {
            let (c, conn) = tokio_postgres::connect(&connstr, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            let mut stmts = Vec::new();
            for k in 0..100 {
                stmts.push(c.prepare(&format!("select $1::int8 * 1000 + {k}")).await.unwrap());
            }
            // A small deterministic generator per client (xorshift), so a failure can be replayed.
            let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ (client + 1);
            let mut next = move |n: u64| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state % n
            };
            for round in 0..60i64 {
                let len = 1 + next(10) as usize;
                let picks: Vec<usize> = (0..len).map(|_| next(100) as usize).collect();
                // Futures polled together on one client are sent as one pipeline.
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&round];
                let queries = picks.iter().map(|&k| c.query_one(&stmts[k], &params));
                let rows = futures_util::future::join_all(queries).await;
                for (row, &k) in rows.into_iter().zip(&picks) {
                    let v: i64 = row.unwrap().get(0);
                    assert_eq!(v, round * 1000 + k as i64, "client {client} round {round}");
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Server truth: the server a client lands on stays within the bound.
    let c = px.client("scram_user", "scram_pw", "app").await;
    let n: i64 = scalar(&c, "select count(*) from pg_prepared_statements").await.parse().unwrap();
    assert!(n <= 66, "a server holds {n} statements");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_idle_after_flush_without_sync_is_cut_by_idle_transaction_timeout() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").pool_size(1).general("idle_transaction_timeout", "1").start().await;
    let (mut a, _, _) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
    a.send(&[parse("", "select 1"), bind("", "", &[]), execute("", 0), flush()].concat()).await;
    for want in [b'1', b'2', b'D', b'C'] {
        assert_eq!(a.read_message(Duration::from_secs(5)).await.map(|m| m.0), Some(want));
    }
    // A holds the only server with an unsynced pipeline and goes silent: cut, as idle in a transaction.
    let b = px.client("trust_user", "", "app").await;
    let started = std::time::Instant::now();
    assert_eq!(scalar(&b, "select 'b'").await, "b");
    assert!(started.elapsed() < Duration::from_secs(10), "B waited {:?}", started.elapsed());
    let (tag, body) = a.read_message(Duration::from_secs(5)).await.expect("A is told");
    assert_eq!((tag, common::wire::error_fields(&body)[&'C'].as_str()), (b'E', "25P03"));
}
