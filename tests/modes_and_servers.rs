//! Pool modes (session, statement), server lifecycle settings (min_pool_size, server_lifetime,
//! server_idle_timeout, server_check_query and server_check_delay, server_connect_timeout,
//! server_login_retry), shared budgets and startup parameters.

mod common;

use std::time::{Duration, Instant};

use common::{Proxy, TestPg, scalar, wait_for};
use tokio_postgres::error::SqlState;

const USER: &str = "scram_user";
const PW: &str = "scram_pw";

fn code(e: &tokio_postgres::Error) -> Option<String> {
    e.as_db_error().map(|d| d.code().code().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_keeps_the_backend_and_resets_it_for_the_next_client() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).pool_size(1).pool_mode("session").start().await;
    let a = px.client(USER, PW, "app").await;
    let pid = scalar(&a, "select pg_backend_pid()").await;
    a.batch_execute("set work_mem = '7MB'; prepare leftover as select 1").await.unwrap();
    assert_eq!(scalar(&a, "select pg_backend_pid()").await, pid, "session mode keeps one backend");
    drop(a);
    let b = px.client(USER, PW, "app").await;
    assert_eq!(scalar(&b, "select pg_backend_pid()").await, pid, "the server was reused");
    assert_eq!(scalar(&b, "show work_mem").await, "4MB", "DISCARD ALL ran between sessions");
    assert_eq!(scalar(&b, "select count(*) from pg_prepared_statements").await, "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_mode_refuses_transaction_blocks() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).pool_size(1).pool_mode("statement").start().await;
    let a = px.client(USER, PW, "app").await;
    let b = px.client(USER, PW, "app").await;
    assert_eq!(scalar(&a, "select 1").await, "1");
    assert_eq!(scalar(&b, "select 2").await, "2");
    let e = a.batch_execute("begin").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("0A000"), "{e}");
    assert_eq!(scalar(&b, "select 3").await, "3", "the pool of one is usable after the refusal");
    let idle_tx: i64 = pg
        .admin_client()
        .await
        .query_one("select count(*) from pg_stat_activity where state like 'idle in transaction%'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(idle_tx, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_pool_size_is_kept_warm() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).general("min_pool_size", "3").start().await;
    let _c = px.client(USER, PW, "app").await;
    wait_for(Duration::from_secs(10), "three warm servers", || async { pg.backends_for(USER).await == 3 }).await;
}

/// Whether PostgreSQL still has a backend with this pid.
async fn backend_exists(pg: &TestPg, pid: &str) -> bool {
    let n: i64 = pg
        .admin_client()
        .await
        .query_one("select count(*) from pg_stat_activity where pid = $1::text::int", &[&pid])
        .await
        .unwrap()
        .get(0);
    n == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_lifetime_replaces_a_server_in_regular_use() {
    let pg = TestPg::start().await;
    // server_idle_timeout off: only the lifetime can close the server, and it is never idle for long.
    let px = Proxy::builder(&pg)
        .pool_size(1)
        .general("server_lifetime", "1")
        .general("server_idle_timeout", "0")
        .start()
        .await;
    let c = px.client(USER, PW, "app").await;
    let first = scalar(&c, "select pg_backend_pid()").await;
    let started = Instant::now();
    wait_for(Duration::from_secs(10), "a new server once the first is older than server_lifetime", || async {
        scalar(&c, "select pg_backend_pid()").await != first
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(5), "replaced after {:?}", started.elapsed());
    wait_for(Duration::from_secs(5), "the old backend gone", || async { !backend_exists(&pg, &first).await }).await;
    assert_eq!(pg.backends_for(USER).await, 1, "replaced, not added");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_idle_timeout_closes_only_idle_servers() {
    let pg = TestPg::start().await;
    // server_lifetime off: only idleness can close the server.
    let px = Proxy::builder(&pg)
        .pool_size(1)
        .general("server_idle_timeout", "1.5")
        .general("server_lifetime", "0")
        .start()
        .await;
    let c = px.client(USER, PW, "app").await;
    let first = scalar(&c, "select pg_backend_pid()").await;
    // In use every 200 ms for twice the idle timeout: never idle long enough, so it stays.
    let busy_until = Instant::now() + Duration::from_secs(3);
    let mut idle_from = Instant::now();
    while Instant::now() < busy_until {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(scalar(&c, "select pg_backend_pid()").await, first, "a server in use is kept");
        idle_from = Instant::now();
    }
    wait_for(Duration::from_secs(10), "the idle server closed by server_idle_timeout", || async {
        pg.backends_for(USER).await == 0
    })
    .await;
    assert!(idle_from.elapsed() >= Duration::from_millis(1400), "closed after {:?}", idle_from.elapsed());
    assert_ne!(scalar(&c, "select pg_backend_pid()").await, first, "a new server for the next transaction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_server_past_its_lifetime_is_closed_when_released() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg)
        .pool_size(1)
        .general("server_lifetime", "1")
        .general("server_idle_timeout", "0")
        .start()
        .await;
    let c = px.client(USER, PW, "app").await;
    c.batch_execute("begin").await.unwrap();
    let pid = scalar(&c, "select pg_backend_pid()").await;
    // The transaction outlives the server's lifetime: the server is not taken away meanwhile.
    c.batch_execute("select pg_sleep(1.3)").await.unwrap();
    assert_eq!(scalar(&c, "select pg_backend_pid()").await, pid, "same server throughout the transaction");
    c.batch_execute("commit").await.unwrap();
    // Released past its lifetime: closed at once, so the very next transaction gets a new one.
    let next = scalar(&c, "select pg_backend_pid()").await;
    assert_ne!(next, pid, "the expired server was not reused");
    wait_for(Duration::from_secs(5), "the expired backend gone", || async { !backend_exists(&pg, &pid).await }).await;
    assert!(backend_exists(&pg, &next).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_check_query_runs_only_after_server_check_delay() {
    let pg = TestPg::start().await;
    let admin = pg.admin_client().await;
    admin
        .batch_execute("create table checks(at timestamptz default now()); grant all on checks to public")
        .await
        .unwrap();
    let px = Proxy::builder(&pg)
        .pool_size(1)
        .general("server_check_query", "\"insert into checks default values\"")
        .general("server_check_delay", "1.5")
        .start()
        .await;
    let checks = || async { admin.query_one("select count(*) from checks", &[]).await.unwrap().get::<_, i64>(0) };
    let c = px.client(USER, PW, "app").await;
    let pid = scalar(&c, "select pg_backend_pid()").await;
    for _ in 0..5 {
        assert_eq!(scalar(&c, "select pg_backend_pid()").await, pid);
    }
    assert_eq!(checks().await, 0, "no check for a server idle less than server_check_delay");
    wait_for(Duration::from_secs(10), "the server idle longer than server_check_delay", || async {
        let idle: f64 = admin
            .query_one(
                "select extract(epoch from clock_timestamp() - state_change)::float8 from pg_stat_activity \
                 where pid = $1::text::int and state = 'idle'",
                &[&pid],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(0.0);
        idle > 1.8
    })
    .await;
    assert_eq!(checks().await, 0, "nothing checks an idle server before it is reused");
    assert_eq!(scalar(&c, "select pg_backend_pid()").await, pid, "checked and reused");
    assert_eq!(checks().await, 1, "server_check_query ran before reusing the long-idle server");
    assert_eq!(scalar(&c, "select 1").await, "1");
    assert_eq!(checks().await, 1, "just used: no check");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_server_check_is_an_empty_query_and_an_empty_setting_turns_checks_off() {
    let pg = TestPg::start().await;
    let admin = pg.admin_client().await;
    admin.batch_execute("alter role scram_user set log_statement = 'all'").await.unwrap();
    // PostgreSQL logs an empty query as a statement with no text: one per check.
    let empty_statements = || pg.log_contents().lines().filter(|l| l.trim_end().ends_with("LOG:  statement:")).count();
    for (setting, checks) in [(None, true), (Some("\"\""), false)] {
        let mut b = Proxy::builder(&pg).pool_size(1).general("server_check_delay", "0");
        if let Some(v) = setting {
            b = b.general("server_check_query", v);
        }
        let px = b.start().await;
        let c = px.client(USER, PW, "app").await;
        let pid = scalar(&c, "select pg_backend_pid()").await;
        let before = empty_statements();
        for _ in 0..3 {
            assert_eq!(scalar(&c, "select pg_backend_pid()").await, pid, "the checked server is reused");
        }
        // Each reuse is checked (server_check_delay = 0) with the default; none with "".
        let want = if checks { before + 3 } else { before };
        if checks {
            wait_for(Duration::from_secs(5), "three empty-query checks in PostgreSQL's log", || async {
                empty_statements() >= want
            })
            .await;
        }
        assert_eq!(empty_statements(), want, "setting {setting:?}");
    }
}

/// How many logins PostgreSQL refused for md5_user, from its log.
fn refused_logins(pg: &TestPg) -> usize {
    pg.log_contents().lines().filter(|l| l.contains("password authentication failed for user \"md5_user\"")).count()
}

/// `n` clients at once; each must fail with the server's 28P01. Returns how long the slowest took.
async fn refused_burst(px: &Proxy, n: usize) -> Duration {
    let started = Instant::now();
    let attempts = (0..n).map(|_| async {
        let r = tokio::time::timeout(Duration::from_secs(20), px.try_client("md5_user", "", "app")).await;
        let e = r.expect("login attempt hung").expect_err("the server refuses pgsluice");
        assert_eq!(code(&e).as_deref(), Some("28P01"), "{e}");
        let msg = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
        assert!(msg.contains("password authentication failed"), "the server's own error: {msg}");
    });
    futures_util::future::join_all(attempts).await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_login_retry_stops_hammering_a_refusing_server() {
    let pg = TestPg::start().await;
    let refusing = |retry: &str| {
        // Clients log in to pgsluice (trust), PostgreSQL refuses pgsluice's password for md5_user.
        Proxy::builder(&pg)
            .auth_type("trust")
            .userlist(&[("md5_user", "not-the-server-password")])
            .general("server_login_retry", retry)
    };
    // Without a retry window every client costs the server a login attempt: the count is reliable.
    let px = refusing("0").start().await;
    let base = refused_logins(&pg);
    refused_burst(&px, 6).await;
    assert_eq!(refused_logins(&pg), base + 6, "retry off: one server login per client");
    drop(px);

    let px = refusing("30").start().await;
    let base = refused_logins(&pg);
    refused_burst(&px, 1).await;
    assert_eq!(refused_logins(&pg), base + 1);
    let took = refused_burst(&px, 8).await;
    assert_eq!(refused_logins(&pg), base + 1, "within server_login_retry no client reaches the server");
    assert!(took < Duration::from_secs(2), "clients fail fast: {took:?}");
    drop(px);

    // After the window, the next client makes one new attempt.
    let px = refusing("1").start().await;
    let base = refused_logins(&pg);
    refused_burst(&px, 1).await;
    refused_burst(&px, 4).await;
    assert_eq!(refused_logins(&pg), base + 1);
    wait_for(Duration::from_secs(10), "a new server login once server_login_retry passed", || async {
        refused_burst(&px, 1).await;
        refused_logins(&pg) > base + 1
    })
    .await;
    assert_eq!(refused_logins(&pg), base + 2, "one attempt per window");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_idle_server_is_replaced_and_check_query_runs() {
    let pg = TestPg::start().await;
    let admin = pg.admin_client().await;
    admin
        .batch_execute("create table checks(at timestamptz default now()); grant all on checks to public")
        .await
        .unwrap();
    let px = Proxy::builder(&pg)
        .pool_size(1)
        .general("server_check_query", "\"insert into checks default values\"")
        .general("server_check_delay", "0")
        .start()
        .await;
    let c = px.client(USER, PW, "app").await;
    let pid = scalar(&c, "select pg_backend_pid()").await;
    let checks_before: i64 = admin.query_one("select count(*) from checks", &[]).await.unwrap().get(0);
    assert_eq!(scalar(&c, "select 1").await, "1");
    let checks_after: i64 = admin.query_one("select count(*) from checks", &[]).await.unwrap().get(0);
    assert!(checks_after > checks_before, "server_check_query ran before reuse");
    admin.execute("select pg_terminate_backend($1::text::int)", &[&pid]).await.unwrap();
    wait_for(Duration::from_secs(5), "backend gone", || async { pg.backends_for(USER).await == 0 }).await;
    let new_pid = scalar(&c, "select pg_backend_pid()").await;
    assert_ne!(pid, new_pid, "the client never saw the dead server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_connect_timeout_is_retried_until_query_wait_timeout_then_fails_clearly() {
    let pg = TestPg::start().await;
    // A server that accepts TCP and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let px = Proxy::builder(&pg)
        .general("server_connect_timeout", "1")
        .general("query_wait_timeout", "3")
        .database("silent", &format!("port = {port}, dbname = \"app\""))
        .start()
        .await;
    let started = Instant::now();
    let e = px.try_client(USER, PW, "silent").await.expect_err("no server");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(8), "{waited:?}");
    assert_eq!(code(&e).as_deref(), Some("08006"), "{e}");
    drop(silent);
}

/// PostgreSQL away for a moment (a restart): a client that needs a server meanwhile waits and is served
/// once it is back, as with PgBouncer, instead of getting the first connect error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_waits_out_a_server_that_is_briefly_away() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).general("server_login_retry", "1").general("query_wait_timeout", "30").start().await;
    let c = px.client(USER, PW, "app").await;
    assert_eq!(scalar(&c, "select 1").await, "1");
    pg.stop().await; // its idle server is gone with it
    let started = Instant::now();
    let query = tokio::spawn(async move { c.simple_query("select 2").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(2500)).await; // two tries at least, held off between
    assert!(!query.is_finished(), "the client got an answer while PostgreSQL was down: {:?}", query.await);
    pg.start_again().await;
    let got = tokio::time::timeout(Duration::from_secs(20), query).await.expect("served").expect("no panic");
    assert!(got.is_ok(), "{got:?}");
    assert!(started.elapsed() >= Duration::from_millis(2500));
    drop(px);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_user_connections_is_shared_by_the_pools_of_a_user() {
    let pg = TestPg::start().await;
    // Two client-visible databases for the same user: two pools, one budget of 2 servers for the user.
    let px = Proxy::builder(&pg)
        .database("app2", "dbname = \"app\"")
        .user(USER, "max_user_connections = 2")
        .query_wait_timeout(1.0)
        .start()
        .await;
    let a = px.client(USER, PW, "app").await;
    let b = px.client(USER, PW, "app2").await;
    a.batch_execute("begin; select 1").await.unwrap();
    b.batch_execute("begin; select 1").await.unwrap();
    let c = px.client(USER, PW, "app2").await;
    let e = c.simple_query("select 1").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("57014"), "{e}");
    // Another user is not limited by scram_user's budget.
    let other = px.client("md5_user", "md5_pw", "app").await;
    assert_eq!(scalar(&other, "select 7").await, "7");
    assert_eq!(pg.backends_for(USER).await, 2);
    a.batch_execute("commit").await.unwrap();
    // The server freed in the `app` pool lets the `app2` pool open one.
    assert_eq!(scalar(&c, "select 5").await, "5");
    assert!(pg.backends_for(USER).await <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_db_connections_is_shared_by_the_pools_of_a_database() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).general("max_db_connections", "2").query_wait_timeout(1.0).start().await;
    let a = px.client(USER, PW, "app").await;
    let b = px.client("md5_user", "md5_pw", "app").await;
    a.batch_execute("begin; select 1").await.unwrap();
    b.batch_execute("begin; select 1").await.unwrap();
    let c = px.client("md5_user", "md5_pw", "app").await;
    let e = c.simple_query("select 1").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("57014"), "{e}");
    let total: i64 = pg
        .admin_client()
        .await
        .query_one("select count(*) from pg_stat_activity where datname = 'app' and usename <> 'postgres'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 2);
    a.batch_execute("commit").await.unwrap();
    // The freed capacity (in scram_user's pool) lets md5_user's pool open a server.
    assert_eq!(scalar(&c, "select 5").await, "5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_wait_timeout_in_the_extended_protocol_skips_to_sync() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).pool_size(1).query_wait_timeout(1.0).start().await;
    let holder = px.client(USER, PW, "app").await;
    holder.batch_execute("begin").await.unwrap();
    let c = px.client(USER, PW, "app").await;
    let e = c.query_typed("select $1::int4 + 1", &[(&1i32, tokio_postgres::types::Type::INT4)]).await.unwrap_err();
    assert_eq!(e.as_db_error().map(|d| d.code().clone()), Some(SqlState::QUERY_CANCELED), "{e}");
    holder.batch_execute("commit").await.unwrap();
    let rows = c.query_typed("select $1::int4 + 1", &[(&1i32, tokio_postgres::types::Type::INT4)]).await.unwrap();
    assert_eq!(rows[0].get::<_, i32>(0), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_startup_parameters_are_refused_unless_ignored() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).start().await;
    let e = px.try_client_with(USER, PW, "app", &[("work_mem", "1MB")]).await.err().unwrap();
    assert_eq!(code(&e).as_deref(), Some("08P01"), "{e}");
    let msg = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
    assert!(msg.contains("work_mem"), "{msg}");
    assert!(msg.contains("unsupported startup parameter in options: work_mem"), "PgBouncer's words: {msg}");
    // `options` that are not `-c` settings: PgBouncer's refusal.
    let mut conf: tokio_postgres::Config = px.connstr(USER, PW, "app").parse().unwrap();
    let e = conf.options("-d").connect(tokio_postgres::NoTls).await.err().unwrap();
    let msg = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
    assert_eq!(msg, "unsupported options startup parameter: only '-c config=val' and '--config=val' are allowed");
    // An untracked setting named in ignore_startup_parameters is ignored inside `options` too.
    let px = Proxy::builder(&pg).general("ignore_startup_parameters", "\"work_mem\"").start().await;
    let c = px.client_with(USER, PW, "app", &[("work_mem", "1MB")]).await;
    assert_eq!(scalar(&c, "show work_mem").await, "4MB", "ignored, not applied");
    // Naming `options` ignores what in it is not tracked, and still applies what is.
    let px = Proxy::builder(&pg).general("ignore_startup_parameters", "\"options\"").start().await;
    let c = px.client_with(USER, PW, "app", &[("work_mem", "1MB"), ("TimeZone", "Europe/Lisbon")]).await;
    assert_eq!(scalar(&c, "show work_mem").await, "4MB", "ignored, not applied");
    assert_eq!(scalar(&c, "show timezone").await, "Europe/Lisbon", "tracked: applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_name_add_host_and_search_path_tracking() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg)
        .pool_size(1)
        .general("application_name_add_host", "true")
        .general("track_extra_parameters", "[\"search_path\"]")
        .start()
        .await;
    let a = px.client_with(USER, PW, "app", &[("application_name", "api"), ("search_path", "pg_catalog")]).await;
    let b = px.client(USER, PW, "app").await;
    let name = scalar(&a, "show application_name").await;
    assert!(name.starts_with("api - 127.0.0.1:"), "{name}");
    assert_eq!(scalar(&a, "show search_path").await, "pg_catalog");
    assert_ne!(scalar(&b, "show search_path").await, "pg_catalog");
    assert_eq!(scalar(&a, "show search_path").await, "pg_catalog");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_3_2_gets_negotiate_protocol_version() {
    use common::wire::RawConn;
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").start().await;
    let mut c = RawConn::connect(px.port()).await;
    let mut pkt = RawConn::startup_packet("trust_user", "app", &[("_pq_.test_option", "1")]);
    pkt[4..8].copy_from_slice(&0x0003_0002u32.to_be_bytes());
    c.send(&pkt).await;
    let (tag, body) = c.read_message(Duration::from_secs(5)).await.expect("a reply");
    assert_eq!(tag, b'v', "NegotiateProtocolVersion first");
    assert_eq!(&body[..4], &196_608u32.to_be_bytes());
    assert_eq!(&body[4..8], &1u32.to_be_bytes());
    c.read_until_ready().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_reset_query_always_cleans_between_transactions() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).pool_size(1).general("server_reset_query_always", "true").start().await;
    let a = px.client(USER, PW, "app").await;
    let b = px.client(USER, PW, "app").await;
    a.batch_execute("set work_mem = '7MB'").await.unwrap();
    assert_eq!(scalar(&b, "show work_mem").await, "4MB", "DISCARD ALL ran after a's transaction");
    // a's own setting is kept for a: read before the reset, and applied again where a goes next.
    assert_eq!(scalar(&a, "show work_mem").await, "7MB");
    let px = Proxy::builder(&pg).pool_size(1).general("session_state", "\"leak\"").start().await;
    let a = px.client(USER, PW, "app").await;
    let b = px.client(USER, PW, "app").await;
    a.batch_execute("set work_mem = '7MB'").await.unwrap();
    assert_eq!(scalar(&b, "show work_mem").await, "7MB", "without it, leak does not reset (as PgBouncer)");
}

/// `scalar`, bounded: the next client of a pool of one waits for the previous session's server.
async fn scalar_within(c: &tokio_postgres::Client, sql: &str) -> String {
    tokio::time::timeout(Duration::from_secs(20), scalar(c, sql)).await.unwrap_or_else(|_| panic!("{sql}: no answer"))
}

/// Client A leaves session state on the pool's only server and disconnects; returns its backend pid.
async fn leave_state_behind(px: &Proxy) -> String {
    let a = px.client(USER, PW, "app").await;
    let pid = scalar_within(&a, "select pg_backend_pid()").await;
    a.batch_execute(
        "set work_mem = '7MB'; set pgsluice.mark = 'from-a'; set timezone = 'Asia/Tokyo'; \
         create temp table a_temp(x int)",
    )
    .await
    .unwrap();
    assert_eq!(scalar_within(&a, "show work_mem").await, "7MB");
    pid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_runs_the_configured_server_reset_query_and_none_when_it_is_empty() {
    let pg = TestPg::start().await;
    let server_timezone = scalar(&pg.admin_client().await, "show timezone").await;
    assert_ne!(server_timezone, "Asia/Tokyo");

    // A custom reset query runs instead of DISCARD ALL: its own mark is there, RESET ALL undid A's
    // settings, and A's temp table (which DISCARD ALL would drop) is still on the server.
    let custom = "RESET ALL; SELECT set_config('pgsluice.reset', 'ran', false)";
    let px = Proxy::builder(&pg)
        .pool_size(1)
        .pool_mode("session")
        .general("server_reset_query", &format!("{custom:?}"))
        .start()
        .await;
    let pid = leave_state_behind(&px).await;
    let b = px.client(USER, PW, "app").await;
    assert_eq!(scalar_within(&b, "select pg_backend_pid()").await, pid, "B got A's server");
    assert_eq!(scalar(&b, "select current_setting('pgsluice.reset', true)").await, "ran", "the custom reset ran");
    assert_eq!(scalar(&b, "show work_mem").await, "4MB", "its RESET ALL undid A's SET");
    assert_ne!(scalar(&b, "select current_setting('pgsluice.mark', true)").await, "from-a");
    assert_eq!(scalar(&b, "show timezone").await, server_timezone);
    assert_eq!(
        scalar(&b, "select to_regclass('pg_temp.a_temp') is not null").await,
        "t",
        "only the configured query ran: no DISCARD ALL, so A's temp table survives"
    );
    drop(b);
    drop(px);

    // An empty server_reset_query resets nothing (PgBouncer's semantics): A's session settings leak to
    // the next client; only the reported parameters pgsluice tracks per client are put back.
    let px = Proxy::builder(&pg).pool_size(1).pool_mode("session").general("server_reset_query", "\"\"").start().await;
    let pid = leave_state_behind(&px).await;
    let b = px.client(USER, PW, "app").await;
    assert_eq!(scalar_within(&b, "select pg_backend_pid()").await, pid, "B got A's server");
    assert_eq!(scalar(&b, "show work_mem").await, "7MB", "no reset: A's work_mem leaks");
    assert_eq!(scalar(&b, "select current_setting('pgsluice.mark', true)").await, "from-a");
    assert_eq!(scalar(&b, "select to_regclass('pg_temp.a_temp') is not null").await, "t");
    assert_eq!(scalar(&b, "select current_setting('pgsluice.reset', true)").await, "NULL", "nothing else ran");
    assert_eq!(scalar(&b, "show timezone").await, server_timezone, "TimeZone is B's own, reported parameter");
}
