//! Named prepared statements in transaction mode: per-client names, lazy re-prepare on whichever server
//! the client lands on, Close/DEALLOCATE/DISCARD ALL, duplicate and unknown names, the per-server bound.

mod common;

use std::process::Command;
use std::time::Duration;

use common::wire::fe::msg;
use common::{Proxy, TestPg, scalar};

const USER: &str = "scram_user";
const PW: &str = "scram_pw";

fn code(e: &tokio_postgres::Error) -> Option<String> {
    e.as_db_error().map(|d| d.code().code().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_statements_follow_clients_across_servers() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).pool_size(2).start().await;
    let mut tasks = Vec::new();
    for i in 0..8i32 {
        let connstr = px.connstr(USER, PW, "app");
        tasks.push(tokio::spawn(async move {
            let (c, conn) = tokio_postgres::connect(&connstr, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            // tokio-postgres prepares a named statement, then binds it in later round trips that may
            // land on another server.
            let stmt = c.prepare("select $1::int4 * 2, pg_backend_pid()").await.unwrap();
            let mut pids = std::collections::HashSet::new();
            for j in 0..50i32 {
                let row = c.query_one(&stmt, &[&(i * 100 + j)]).await.unwrap();
                assert_eq!(row.get::<_, i32>(0), (i * 100 + j) * 2);
                pids.insert(row.get::<_, i32>(1));
                if j % 10 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            let other = c.prepare("select $1::text || 'x'").await.unwrap();
            let s: String = c.query_one(&other, &[&"a"]).await.unwrap().get(0);
            assert_eq!(s, "ax");
            pids.len()
        }));
    }
    let mut multi_server = 0;
    for t in tasks {
        if t.await.unwrap() > 1 {
            multi_server += 1;
        }
    }
    assert!(multi_server > 0, "some client really did use both servers");
    // Server truth: each server holds each statement at most once.
    let admin = pg.admin_client().await;
    assert!(pg.backends_for(USER).await <= 2);
    drop(admin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_duplicate_and_unknown_names_behave_like_postgres() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).pool_size(1).start().await;
    let c = px.client(USER, PW, "app").await;
    let stmt = c.prepare("select 1").await.unwrap();
    assert_eq!(c.query_one(&stmt, &[]).await.unwrap().get::<_, i32>(0), 1);
    drop(stmt); // tokio-postgres sends Close for it
    let again = c.prepare("select 1").await.unwrap();
    assert_eq!(c.query_one(&again, &[]).await.unwrap().get::<_, i32>(0), 1);
    // Unknown statement in SQL DEALLOCATE: 26000, like PostgreSQL.
    let e = c.batch_execute("deallocate nosuch").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("26000"), "{e}");
    // DISCARD ALL clears the client's statements; new ones work afterwards.
    c.batch_execute("discard all").await.unwrap();
    let fresh = c.prepare("select 2").await.unwrap();
    assert_eq!(c.query_one(&fresh, &[]).await.unwrap().get::<_, i32>(0), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_name_is_42p05_and_failed_parse_is_not_recorded() {
    use common::wire::RawConn;
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").pool_size(1).start().await;
    let mut c = RawConn::connect(px.port()).await;
    c.send(&RawConn::startup_packet("trust_user", "app", &[])).await;
    c.read_until_ready().await;
    let parse = |name: &str, sql: &str| {
        let mut body = name.as_bytes().to_vec();
        body.push(0);
        body.extend_from_slice(sql.as_bytes());
        body.extend_from_slice(&[0, 0, 0]);
        msg(b'P', &body)
    };
    let sync = msg(b'S', &[]);
    // A failing Parse: the name must not be recorded, so the same name can be parsed again.
    c.send(&[parse("s1", "select nosuchcolumn"), sync.clone()].concat()).await;
    assert_eq!(read_tags(&mut c).await, vec![b'E', b'Z']);
    c.send(&[parse("s1", "select 1"), sync.clone()].concat()).await;
    assert_eq!(read_tags(&mut c).await, vec![b'1', b'Z']);
    // Reusing the name: 42P05, and the rest of the pipeline is skipped to Sync.
    c.send(&[parse("s1", "select 2"), parse("s2", "select 3"), sync.clone()].concat()).await;
    let (tags, codes) = read_tags_codes(&mut c).await;
    assert_eq!(tags, vec![b'E', b'Z']);
    assert_eq!(codes, vec!["42P05".to_string()]);
    // s2 was skipped: binding it is 26000.
    let mut bind = b"\0s2\0".to_vec();
    bind.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    c.send(&[msg(b'B', &bind), msg(b'E', b"\0\0\0\0\0"), sync].concat()).await;
    let (tags, codes) = read_tags_codes(&mut c).await;
    assert_eq!(tags, vec![b'E', b'Z']);
    assert_eq!(codes, vec!["26000".to_string()]);
}

async fn read_tags(c: &mut common::wire::RawConn) -> Vec<u8> {
    read_tags_codes(c).await.0
}

async fn read_tags_codes(c: &mut common::wire::RawConn) -> (Vec<u8>, Vec<String>) {
    let (mut tags, mut codes) = (Vec::new(), Vec::new());
    loop {
        let (tag, body) = c.read_message(Duration::from_secs(5)).await.expect("reply");
        tags.push(tag);
        if tag == b'E' {
            codes.push(common::wire::error_fields(&body).get(&'C').cloned().unwrap_or_default());
        }
        if tag == b'Z' {
            return (tags, codes);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_per_server_are_bounded_by_max_prepared_statements() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).pool_size(1).general("max_prepared_statements", "5").start().await;
    let c = px.client(USER, PW, "app").await;
    let mut stmts = Vec::new();
    for i in 0..20 {
        stmts.push(c.prepare(&format!("select {i}::int4")).await.unwrap());
    }
    // Every statement still works: evicted ones are prepared again on demand.
    for (i, s) in stmts.iter().enumerate() {
        assert_eq!(c.query_one(s, &[]).await.unwrap().get::<_, i32>(0), i as i32);
    }
    let n: i64 = scalar(&c, "select count(*) from pg_prepared_statements").await.parse().unwrap();
    assert!(n <= 5, "server holds {n} statements");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_mode_has_no_failed_transactions() {
    let pg = TestPg::start().await;
    let init = Command::new("pgbench")
        .args(["-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p", &pg.port().to_string(), "-U", USER, "app"])
        .env("PGPASSWORD", PW)
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    // pgbench prepares with the blocking PQprepare, which stalls every client of its thread while it
    // waits for a server; one client per thread keeps that from starving the pool. 8 clients through a
    // pool of 2 land on servers that lack their statements all the time.
    let px = Proxy::builder(&pg).pool_size(2).start().await;
    let out = Command::new("pgbench")
        .args(["-c", "8", "-j", "8", "-t", "150", "-M", "prepared", "-h", "127.0.0.1"])
        .args(["-p", &px.port().to_string(), "-U", USER, "app"])
        .env("PGPASSWORD", PW)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("number of transactions actually processed: 1200/1200"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_cached_plan_after_ddl_is_retried_outside_transactions_only() {
    use common::wire::{RawConn, query_message};
    let pg = TestPg::start().await;
    let admin = pg.admin_client().await;
    admin
        .batch_execute(
            "create table plan_t(a int, b int); insert into plan_t values (1, 2); grant all on plan_t to public",
        )
        .await
        .unwrap();
    let px = Proxy::builder(&pg).auth_type("trust").pool_size(1).start().await;
    let mut c = RawConn::connect(px.port()).await;
    c.send(&RawConn::startup_packet("trust_user", "app", &[])).await;
    c.read_until_ready().await;
    // As libpq's PQexecPrepared: Bind, Describe portal, Execute, Sync.
    let run = [msg(b'B', b"\0s1\0\0\0\0\0\0\0"), msg(b'D', b"P\0"), msg(b'E', b"\0\0\0\0\0"), msg(b'S', &[])].concat();
    c.send(&[msg(b'P', b"s1\0select * from plan_t\0\0\0"), run.clone()].concat()).await;
    assert_eq!(read_tags(&mut c).await, vec![b'1', b'2', b'T', b'D', b'C', b'Z']);
    // A migration changes the statement's result columns under the cached plan. PostgreSQL answers the
    // next Bind with 0A000 "cached plan must not change result type"; pgsluice re-prepares and retries
    // once, and the client reads the new RowDescription with the rows.
    admin.batch_execute("alter table plan_t add column c int default 7").await.unwrap();
    c.send(&run).await;
    let mut replies = Vec::new();
    loop {
        let (tag, body) = c.read_message(Duration::from_secs(5)).await.expect("reply");
        replies.push((tag, body));
        if tag == b'Z' {
            break;
        }
    }
    let tags: Vec<u8> = replies.iter().map(|(t, _)| *t).collect();
    assert_eq!(tags, vec![b'2', b'T', b'D', b'C', b'Z'], "{replies:?}");
    assert_eq!(u16::from_be_bytes([replies[1].1[0], replies[1].1[1]]), 3, "the new row shape");
    assert!(px.log_contents().contains("retrying"), "the retry is logged");
    // Inside a transaction block the error reaches the client: a retry could not be transparent there.
    c.send(&query_message("begin")).await;
    c.read_until_ready().await;
    admin.batch_execute("alter table plan_t drop column c").await.unwrap();
    c.send(&run).await;
    let (tags, codes) = read_tags_codes(&mut c).await;
    assert_eq!((tags, codes), (vec![b'E', b'Z'], vec!["0A000".to_string()]));
    c.send(&query_message("rollback")).await;
    c.read_until_ready().await;
    // Outside the block the statement works again.
    c.send(&run).await;
    assert_eq!(read_tags(&mut c).await, vec![b'2', b'T', b'D', b'C', b'Z']);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_cached_plan_is_not_retried_for_a_client_that_does_not_describe() {
    let pg = TestPg::start().await;
    let admin = pg.admin_client().await;
    admin
        .batch_execute("create table plan_u(a int, b int, c int); insert into plan_u values (1, 2, 3); grant all on plan_u to scram_user")
        .await
        .unwrap();
    let px = Proxy::builder(&pg).pool_size(1).start().await;
    let c = px.client(USER, PW, "app").await;
    // tokio-postgres binds with the columns it described at prepare time. After a dropped column a
    // replay would hand it (a, c) as if it were (a, b): it must get PostgreSQL's 0A000 instead.
    let stmt = c.prepare("select * from plan_u").await.unwrap();
    assert_eq!(c.query(&stmt, &[]).await.unwrap().len(), 1);
    admin.batch_execute("alter table plan_u drop column b").await.unwrap();
    let e = c.query(&stmt, &[]).await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("0A000"), "{e}");
    // A fresh prepare sees the new shape.
    let fresh = c.prepare("select * from plan_u").await.unwrap();
    let row = c.query_one(&fresh, &[]).await.unwrap();
    assert_eq!((row.len(), row.get::<_, i32>(1)), (2, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_prepared_statements_0_and_session_mode_pass_names_through() {
    let pg = TestPg::start().await;
    for px in [
        Proxy::builder(&pg).pool_size(1).general("max_prepared_statements", "0").start().await,
        Proxy::builder(&pg).pool_size(1).pool_mode("session").start().await,
    ] {
        let c = px.client(USER, PW, "app").await;
        let stmt = c.prepare("select 41 + 1").await.unwrap();
        assert_eq!(c.query_one(&stmt, &[]).await.unwrap().get::<_, i32>(0), 42);
        // The server holds the client's own name (tokio-postgres calls it s0, s1, ...), not pgsluice's.
        let names = scalar(&c, "select string_agg(name, ',') from pg_prepared_statements").await;
        assert!(names.starts_with('s') && !names.contains("pgsluice_"), "{names}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_stats_counts_client_parses_server_parses_and_binds() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).pool_size(1).general("admin_users", &format!("{USER:?}")).start().await;
    let a = px.client(USER, PW, "app").await;
    let s1 = a.prepare("select $1::int4").await.unwrap();
    let s2 = a.prepare("select $1::text").await.unwrap();
    for i in 0..3 {
        a.query_one(&s1, &[&i]).await.unwrap();
    }
    a.query_one(&s2, &[&"x"]).await.unwrap();
    // Another client prepares a text the one server already holds: a client parse, no server parse.
    let b = px.client(USER, PW, "app").await;
    let s3 = b.prepare("select $1::int4").await.unwrap();
    b.query_one(&s3, &[&7]).await.unwrap();
    let console = px.client(USER, PW, "pgbouncer").await;
    let figures = || async {
        let msgs = console.simple_query("show stats_totals").await.unwrap();
        msgs.iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) if r.get("database") == Some("app") => Some(
                    ["client_parse_count", "server_parse_count", "bind_count"]
                        .map(|c| r.get(c).unwrap_or_default().to_string()),
                ),
                _ => None,
            })
            .unwrap_or_default()
    };
    common::wait_for(Duration::from_secs(5), "3 client parses, 2 server parses, 5 binds", || async {
        figures().await == ["3", "2", "5"]
    })
    .await;
}
