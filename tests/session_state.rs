//! Per-client state across shared servers (reported parameters, cancel keys) and the client timeouts.

mod common;

use std::time::{Duration, Instant};

use common::{Proxy, TestPg};
use tokio_postgres::error::SqlState;

const USER: &str = "scram_user";
const PW: &str = "scram_pw";

async fn show(c: &tokio_postgres::Client, name: &str) -> String {
    common::scalar(c, &format!("show {name}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_keep_their_own_timezone_and_application_name_through_a_pool_of_one() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).pool_size(1).start().await;
    let a = px.client_with(USER, PW, "app", &[("application_name", "alpha"), ("timezone", "Asia/Tokyo")]).await;
    let b = px.client_with(USER, PW, "app", &[("application_name", "beta"), ("timezone", "America/Lima")]).await;
    for _ in 0..3 {
        assert_eq!(show(&a, "timezone").await, "Asia/Tokyo");
        assert_eq!(show(&b, "timezone").await, "America/Lima");
        assert_eq!(show(&a, "application_name").await, "alpha");
        assert_eq!(show(&b, "application_name").await, "beta");
    }
    // A SET inside a client's session follows that client, not the server.
    a.batch_execute("set timezone = 'Europe/Oslo'").await.unwrap();
    assert_eq!(show(&b, "timezone").await, "America/Lima");
    assert_eq!(show(&a, "timezone").await, "Europe/Oslo");
    assert_eq!(pg.backends_for(USER).await, 1, "all of this on one server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_right_server_and_a_wrong_key_cancels_nothing() {
    use common::wire::{RawConn, cancel_request, query_message};
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").pool_size(2).start().await;
    // A raw client, so the test knows the BackendKeyData pgsluice gave it.
    let (mut a, pid, key) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
    a.send(&query_message("select pg_sleep(20)")).await;
    let admin = pg.admin_client().await;
    common::wait_for(Duration::from_secs(5), "pg_sleep running", || async {
        admin
            .query_one(
                "select count(*) from pg_stat_activity where query like 'select pg_sleep%' and state = 'active'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 1
    })
    .await;
    // A forged key (right pid, wrong key) cancels nothing: nothing arrives within a second.
    RawConn::connect(px.port()).await.send(&cancel_request(pid, key ^ 0x5a5a)).await;
    assert!(a.read_message(Duration::from_secs(1)).await.is_none(), "a wrong key canceled the query");
    // The right key cancels it: 57014 well within 2 s.
    let asked = Instant::now();
    RawConn::connect(px.port()).await.send(&cancel_request(pid, key)).await;
    let (tag, body) = loop {
        let (tag, body) = a.read_message(Duration::from_secs(2)).await.expect("reply to the cancel");
        if tag != b'T' {
            break (tag, body);
        }
    };
    assert_eq!(tag, b'E');
    assert_eq!(common::wire::error_fields(&body).get(&'C').map(String::as_str), Some("57014"));
    assert!(asked.elapsed() < Duration::from_secs(2), "canceled after {:?}", asked.elapsed());
    // Another client's query on the other server was not touched.
    let b = px.try_client("trust_user", "", "app").await.unwrap();
    b.simple_query("select 1").await.unwrap();
}

async fn expect_fatal(c: &tokio_postgres::Client, within: Duration) -> tokio_postgres::Error {
    // The proxy closes the session on its own; the next use reports the FATAL it sent.
    let started = Instant::now();
    loop {
        match c.simple_query("select 1").await {
            Err(e) => return e,
            Ok(_) if started.elapsed() < within => tokio::time::sleep(Duration::from_millis(100)).await,
            Ok(_) => panic!("session still open after {within:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_transaction_timeout_is_fatal_25p03_and_frees_the_server() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).pool_size(1).general("idle_transaction_timeout", "1").start().await;
    let (c, conn) = tokio_postgres::connect(&px.connstr(USER, PW, "app"), tokio_postgres::NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    c.batch_execute("begin; select 1").await.unwrap();
    let err = conn.await.unwrap().expect_err("connection ends with the FATAL");
    assert_eq!(
        err.as_db_error().map(|d| d.code().clone()),
        Some(SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT),
        "{err}"
    );
    let next = px.client(USER, PW, "app").await;
    next.simple_query("select 1").await.expect("pool of one usable again");
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_timeout_is_fatal_25p04() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).general("transaction_timeout", "1").start().await;
    let (c, conn) = tokio_postgres::connect(&px.connstr(USER, PW, "app"), tokio_postgres::NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    c.batch_execute("begin").await.unwrap();
    // Keep the client busy with short statements: it is never idle, the transaction just lasts too long.
    let started = Instant::now();
    while c.simple_query("select 1").await.is_ok() {
        assert!(started.elapsed() < Duration::from_secs(10), "transaction_timeout never fired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let err = conn.await.unwrap().expect_err("FATAL");
    assert_eq!(err.as_db_error().map(|d| d.code().code().to_string()), Some("25P04".to_string()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_idle_timeout_is_fatal_57p05() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).general("client_idle_timeout", "1").start().await;
    let (c, conn) = tokio_postgres::connect(&px.connstr(USER, PW, "app"), tokio_postgres::NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    c.simple_query("select 1").await.unwrap();
    let err =
        tokio::time::timeout(Duration::from_secs(10), conn).await.expect("closed in time").unwrap().expect_err("FATAL");
    assert_eq!(err.as_db_error().map(|d| d.code().code().to_string()), Some("57P05".to_string()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_timeout_cancels_with_57014_and_client_stays_usable() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).general("query_timeout", "1").start().await;
    let c = px.client(USER, PW, "app").await;
    let started = Instant::now();
    let e = c.simple_query("select pg_sleep(10)").await.unwrap_err();
    assert_eq!(e.as_db_error().map(|d| d.code().clone()), Some(SqlState::QUERY_CANCELED), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
    c.simple_query("select 1").await.expect("usable after query_timeout");
    // An idle client is never hit by query_timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.simple_query("select 1").await.expect("idle client untouched");
    let _ = expect_fatal; // shared helper kept for other timeouts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_waits_for_the_server_and_cancel_wait_timeout_bounds_it() {
    use common::wire::{RawConn, cancel_request, query_message};
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").pool_size(2).general("cancel_wait_timeout", "1").start().await;
    let (mut a, pid, key) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
    a.send(&query_message("select pg_sleep(30)")).await;
    let admin = pg.admin_client().await;
    let sleeping = "select count(*) from pg_stat_activity where query like 'select pg_sleep%' and state = 'active'";
    common::wait_for(Duration::from_secs(5), "pg_sleep running", || async {
        admin.query_one(sleeping, &[]).await.unwrap().get::<_, i64>(0) == 1
    })
    .await;
    // A frozen postmaster accepts the TCP connection (kernel backlog) but never acts on the cancel:
    // pgsluice waits for the server to close it, for cancel_wait_timeout and no longer.
    pg.signal_postmaster("STOP");
    let mut c = RawConn::connect(px.port()).await;
    c.send(&cancel_request(pid, key)).await;
    let closed = c.wait_closed(Duration::from_secs(5)).await;
    pg.signal_postmaster("CONT");
    let closed = closed.expect("cancel connection closed within 5 s");
    assert!(closed >= Duration::from_millis(800), "closed after {closed:?}: did not wait for the server");
    assert!(closed < Duration::from_secs(3), "closed after {closed:?}: cancel_wait_timeout is 1 s");
    // Once the postmaster runs again the queued cancel is acted on; new clients are served throughout.
    let (tag, body) = loop {
        let (tag, body) = a.read_message(Duration::from_secs(5)).await.expect("reply to the cancel");
        if tag != b'T' {
            break (tag, body);
        }
    };
    assert_eq!((tag, common::wire::error_fields(&body).get(&'C').cloned()), (b'E', Some("57014".to_string())));
    let b = px.try_client("trust_user", "", "app").await.unwrap();
    b.simple_query("select 1").await.unwrap();
}

/// Backends (other than the asking one) running a query that starts with `prefix` right now.
async fn running(admin: &tokio_postgres::Client, prefix: &str) -> Vec<i32> {
    admin
        .query(
            "select pid from pg_stat_activity where state = 'active' and pid <> pg_backend_pid() \
             and starts_with(query, $1)",
            &[&prefix],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Sends one CancelRequest through pgsluice and waits until pgsluice closes that connection, which it
/// does once it has dealt with the request (delivered to a server and acted on, or dropped).
async fn cancel_and_wait(port: u16, pid: u32, key: u32) {
    use common::wire::{RawConn, cancel_request};
    let mut c = RawConn::connect(port).await;
    c.send(&cancel_request(pid, key)).await;
    c.wait_closed(Duration::from_secs(10)).await.expect("pgsluice closes the cancel connection");
}

/// A simple query that must have succeeded with exactly these first-column values.
#[track_caller]
fn assert_ok(answer: &common::wire::SimpleAnswer, rows: &[&str], what: &str) {
    assert_eq!(answer.error, None, "{what}: unexpected error");
    assert_eq!(answer.text(), rows, "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_ends_only_its_clients_query_while_another_server_runs_one() {
    use common::wire::{RawConn, query_message};
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").pool_size(2).start().await;
    let admin = pg.admin_client().await;
    let (mut a, a_pid, a_key) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
    let (mut b, b_pid, b_key) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
    assert_ne!((a_pid, a_key), (b_pid, b_key), "each client has its own key");
    a.send(&query_message("select pg_sleep(30)")).await;
    b.send(&query_message("select pg_sleep(2)")).await;
    let b_sent = Instant::now();
    common::wait_for(Duration::from_secs(10), "both queries running, on two servers", || async {
        running(&admin, "select pg_sleep(30)").await.len() == 1
            && running(&admin, "select pg_sleep(2)").await.len() == 1
    })
    .await;
    let a_server = running(&admin, "select pg_sleep(30)").await[0];
    let b_server = running(&admin, "select pg_sleep(2)").await[0];
    assert_ne!(a_server, b_server);
    let asked = Instant::now();
    cancel_and_wait(px.port(), a_pid, a_key).await;
    // The cancel has been acted on by now, and B's query is still running: had it gone to B's server,
    // B's query would be the one canceled (and A's would keep sleeping).
    assert_eq!(
        running(&admin, "select pg_sleep(2)").await,
        vec![b_server],
        "B's query must still be running once A's cancel was delivered (else this test proves nothing)"
    );
    let a_answer = tokio::time::timeout(Duration::from_secs(5), a.read_answer(Duration::from_secs(5)))
        .await
        .expect("A answered after its cancel");
    assert_eq!(a_answer.code(), Some("57014"), "A's query canceled: {a_answer:?}");
    assert!(asked.elapsed() < Duration::from_secs(2), "A canceled after {:?}", asked.elapsed());
    let b_answer = tokio::time::timeout(Duration::from_secs(10), b.read_answer(Duration::from_secs(10)))
        .await
        .expect("B answered");
    assert_ok(&b_answer, &[""], "B's pg_sleep(2) completes untouched");
    assert!(b_sent.elapsed() >= Duration::from_millis(1900), "B's sleep ran its full 2 s ({:?})", b_sent.elapsed());
    assert!(running(&admin, "select pg_sleep(30)").await.is_empty(), "A's query is gone from the server");
    assert_ok(&a.simple("select 1", Duration::from_secs(10)).await, &["1"], "A usable after its cancel");
    assert_ok(&b.simple("select 2", Duration::from_secs(10)).await, &["2"], "B usable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_for_an_idle_client_is_dropped_not_sent_to_its_last_server() {
    use common::wire::{RawConn, query_message};
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").pool_size(1).start().await;
    let admin = pg.admin_client().await;
    // The idle client used the pool's only server a moment ago, then let it go.
    let (mut idle, idle_pid, idle_key) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
    let its_server = idle.simple("select pg_backend_pid()", Duration::from_secs(10)).await;
    assert_eq!(its_server.error, None);
    let its_server: i32 = its_server.text()[0].parse().unwrap();
    let (mut c, _, _) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
    c.send(&query_message("select pg_sleep(2)")).await;
    let c_sent = Instant::now();
    common::wait_for(Duration::from_secs(10), "C's query running", || async {
        !running(&admin, "select pg_sleep(2)").await.is_empty()
    })
    .await;
    assert_eq!(
        running(&admin, "select pg_sleep(2)").await,
        vec![its_server],
        "C runs on the idle client's last server"
    );
    cancel_and_wait(px.port(), idle_pid, idle_key).await;
    assert_eq!(
        running(&admin, "select pg_sleep(2)").await,
        vec![its_server],
        "C's query must still be running once the idle client's cancel was dealt with"
    );
    let answer = tokio::time::timeout(Duration::from_secs(10), c.read_answer(Duration::from_secs(10)))
        .await
        .expect("C answered");
    assert_ok(&answer, &[""], "C's query is not canceled by another (idle) client's cancel");
    assert!(c_sent.elapsed() >= Duration::from_millis(1900), "C's sleep ran its full 2 s ({:?})", c_sent.elapsed());
    // Nor is the cancel kept for the idle client's next query.
    let next = idle.simple("select pg_sleep(0.3), 'after'", Duration::from_secs(10)).await;
    assert_eq!(next.error, None, "the idle client's next query is not canceled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_cancels_for_a_finished_client_do_not_reach_the_next_client_on_its_server() {
    use common::wire::{RawConn, query_message};
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").pool_size(1).start().await;
    let admin = pg.admin_client().await;
    let (mut a, a_pid, a_key) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
    let a_server = a.simple("select pg_backend_pid()", Duration::from_secs(10)).await;
    assert_eq!(a_server.error, None);
    let a_server: i32 = a_server.text()[0].parse().unwrap();
    let (mut b, _, _) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
    b.send(&query_message("select pg_sleep(2)")).await;
    let b_sent = Instant::now();
    common::wait_for(Duration::from_secs(10), "B's query running", || async {
        !running(&admin, "select pg_sleep(2)").await.is_empty()
    })
    .await;
    assert_eq!(running(&admin, "select pg_sleep(2)").await, vec![a_server], "B runs on A's former server");
    // 50 cancels for A at once (PgBouncer's test_cancel_race): A has no server, so none may go anywhere.
    let cancels = (0..50).map(|_| cancel_and_wait(px.port(), a_pid, a_key));
    tokio::time::timeout(Duration::from_secs(30), futures_util::future::join_all(cancels))
        .await
        .expect("all 50 cancel connections dealt with");
    assert_eq!(
        running(&admin, "select pg_sleep(2)").await,
        vec![a_server],
        "B's query must still be running once the 50 cancels were dealt with"
    );
    let answer = tokio::time::timeout(Duration::from_secs(10), b.read_answer(Duration::from_secs(10)))
        .await
        .expect("B answered");
    assert_ok(&answer, &[""], "B is not canceled by cancels meant for A");
    assert!(b_sent.elapsed() >= Duration::from_millis(1900), "B's sleep ran its full 2 s ({:?})", b_sent.elapsed());
    assert_ok(&a.simple("select 1", Duration::from_secs(10)).await, &["1"], "A's next query not canceled");
}

/// The race behind PgBouncer's test_cancel_race: cancels for A that pgsluice accepted while A's query ran
/// may still be on their way to the server when that query ends and the server passes to the waiting B.
/// None of them may cancel B's query (PgBouncer keeps such a server out of the pool until its in-flight
/// cancels are done: SHOW POOLS' sv_being_canceled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_in_flight_when_a_query_ends_do_not_reach_the_next_client() {
    use common::wire::{RawConn, query_message};
    let pg = TestPg::start().await;
    let px =
        Proxy::builder(&pg).auth_type("trust").pool_size(1).general("admin_users", "[\"trust_user\"]").start().await;
    let admin = pg.admin_client().await;
    let console = px.client("trust_user", "", "pgbouncer").await;
    let waiting = || async {
        let msgs = console.simple_query("show pools").await.unwrap();
        msgs.iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) if r.get("database") == Some("app") => {
                    r.get("cl_waiting").map(|v| v.parse::<i64>().unwrap())
                }
                _ => None,
            })
            .unwrap_or(0)
    };
    let (mut a, a_pid, a_key) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
    let (mut b, _, _) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
    for round in 0..3 {
        a.send(&query_message("select pg_sleep(30)")).await;
        common::wait_for(Duration::from_secs(10), "A's query running", || async {
            running(&admin, "select pg_sleep(30)").await.len() == 1
        })
        .await;
        // B queues for the pool's only server, which it gets the moment A's query ends.
        b.send(&query_message("select pg_sleep(2)")).await;
        common::wait_for(Duration::from_secs(10), "B waiting for the server", || async { waiting().await == 1 }).await;
        let b_queued = Instant::now();
        let cancels = (0..50).map(|_| cancel_and_wait(px.port(), a_pid, a_key));
        tokio::time::timeout(Duration::from_secs(30), futures_util::future::join_all(cancels))
            .await
            .expect("all 50 cancel connections dealt with");
        let a_answer = tokio::time::timeout(Duration::from_secs(10), a.read_answer(Duration::from_secs(10)))
            .await
            .expect("A answered");
        assert_eq!(a_answer.code(), Some("57014"), "round {round}: A canceled: {a_answer:?}");
        let b_answer = tokio::time::timeout(Duration::from_secs(10), b.read_answer(Duration::from_secs(10)))
            .await
            .expect("B answered");
        assert_ok(&b_answer, &[""], &format!("round {round}: B is not canceled by A's late cancels"));
        assert!(
            b_queued.elapsed() >= Duration::from_millis(1900),
            "round {round}: B slept 2 s ({:?})",
            b_queued.elapsed()
        );
    }
}

/// One transaction showing the four reported parameters and what they do: chr(233) as the client's
/// encoding sends it, a date written and read by DateStyle, an interval by IntervalStyle, and a
/// backslash in a plain literal by standard_conforming_strings. Then the backend's pid.
const PARAMS_PROBE: &str = "show client_encoding; show DateStyle; show IntervalStyle; \
    show standard_conforming_strings; select chr(233); select '2024-03-05'::date; \
    select to_char('05/03/2024'::date, 'YYYY-MM-DD'); select interval '1 day 2 hours'; \
    select length('a\\nb'); select pg_backend_pid()";

/// LATIN1, 'SQL, DMY', iso_8601, standard_conforming_strings off.
const LATIN1_SQL_DMY: [&[u8]; 9] =
    [b"LATIN1", b"SQL, DMY", b"iso_8601", b"off", &[0xe9], b"05/03/2024", b"2024-03-05", b"P1DT2H", b"3"];
/// UTF8, 'ISO, MDY', postgres, standard_conforming_strings on (the server's defaults).
const UTF8_ISO_MDY: [&[u8]; 9] =
    [b"UTF8", b"ISO, MDY", b"postgres", b"on", &[0xc3, 0xa9], b"2024-03-05", b"2024-05-03", b"1 day 02:00:00", b"4"];

/// Runs PARAMS_PROBE and checks it against `expected`; returns the backend pid it ran on.
async fn probe_params(c: &mut common::wire::RawConn, expected: &[&[u8]; 9], who: &str) -> String {
    let answer = c.simple(PARAMS_PROBE, Duration::from_secs(10)).await;
    assert_eq!(answer.error, None, "{who}: probe failed");
    assert_eq!(answer.rows.len(), 10, "{who}: {answer:?}");
    let got: Vec<&[u8]> = answer.rows[..9].iter().map(|r| r.as_deref().unwrap_or(b"NULL")).collect();
    assert_eq!(got, expected.to_vec(), "{who}: as text {:?}", answer.text());
    answer.text()[9].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoding_datestyle_intervalstyle_and_string_syntax_follow_each_client_through_a_pool_of_one() {
    use common::wire::RawConn;
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").pool_size(1).start().await;
    // A picks its values in the startup options; B starts with the server's and SETs them explicitly.
    let options = "-c client_encoding=LATIN1 -c DateStyle=SQL,\\ DMY -c IntervalStyle=iso_8601 \
                   -c standard_conforming_strings=off";
    let (mut a, _, _) = RawConn::login_with_params(px.port(), "trust_user", "app", &[("options", options)]).await;
    let (mut b, _, _) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
    let first = probe_params(&mut a, &LATIN1_SQL_DMY, "A (startup options)").await;
    let set_defaults = "set client_encoding = 'UTF8'; set DateStyle = 'ISO, MDY'; set IntervalStyle = 'postgres'; \
                        set standard_conforming_strings = on";
    assert_eq!(b.simple(set_defaults, Duration::from_secs(10)).await.error, None);
    let mut pids = vec![first];
    for round in 0..3 {
        pids.push(probe_params(&mut b, &UTF8_ISO_MDY, &format!("B (SET), round {round}")).await);
        pids.push(probe_params(&mut a, &LATIN1_SQL_DMY, &format!("A (startup options), round {round}")).await);
    }
    // Swap by SET, each while the other's values are on the server: SETs follow their client too.
    assert_eq!(a.simple(set_defaults, Duration::from_secs(10)).await.error, None);
    pids.push(probe_params(&mut b, &UTF8_ISO_MDY, "B before its own SET").await);
    let set_latin1 = "set client_encoding = 'LATIN1'; set DateStyle = 'SQL, DMY'; set IntervalStyle = 'iso_8601'; \
                      set standard_conforming_strings = off";
    assert_eq!(b.simple(set_latin1, Duration::from_secs(10)).await.error, None);
    for round in 0..3 {
        pids.push(probe_params(&mut a, &UTF8_ISO_MDY, &format!("A after SET, round {round}")).await);
        pids.push(probe_params(&mut b, &LATIN1_SQL_DMY, &format!("B after SET, round {round}")).await);
    }
    pids.dedup();
    assert_eq!(pids.len(), 1, "every transaction ran on the one server: {pids:?}");
    assert_eq!(pg.backends_for("trust_user").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_startup_parameter_wins_over_the_same_setting_in_options_as_in_postgresql() {
    use common::wire::RawConn;
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").pool_size(1).start().await;
    // tokio-postgres sends client_encoding=UTF8 ahead of options, JDBC sends DateStyle=ISO: PostgreSQL
    // applies options first and the explicit startup parameters over them.
    let startup = [
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("options", "-c client_encoding=LATIN1 -c DateStyle=SQL,\\ DMY"),
    ];
    let probe = "show client_encoding; show DateStyle";
    let (mut direct, _, _) = RawConn::login_with_params(pg.port(), "trust_user", "app", &startup).await;
    let truth = direct.simple(probe, Duration::from_secs(10)).await;
    assert_ok(&truth, &["UTF8", "ISO, MDY"], "PostgreSQL itself");
    let (mut c, _, _) = RawConn::login_with_params(px.port(), "trust_user", "app", &startup).await;
    assert_ok(&c.simple(probe, Duration::from_secs(10)).await, &["UTF8", "ISO, MDY"], "through pgsluice");
}

/// A server whose cancel request PostgreSQL has not acted on yet (its postmaster is frozen) is held out of
/// the pool and shown as sv_being_canceled; the next client waits for it rather than run where the late
/// cancel would land, and is served, not canceled, once the cancel is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_a_cancel_in_flight_is_held_back_and_shown_as_being_canceled() {
    use common::wire::{RawConn, cancel_request, query_message};
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg)
        .auth_type("trust")
        .pool_size(1)
        .general("cancel_wait_timeout", "20")
        .general("admin_users", "[\"trust_user\"]")
        .start()
        .await;
    let console = px.client("trust_user", "", "pgbouncer").await;
    let pools = || async {
        let msgs = console.simple_query("show pools").await.unwrap();
        msgs.iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) if r.get("database") == Some("app") => Some(
                    ["sv_active", "sv_being_canceled", "sv_idle"].map(|c| r.get(c).unwrap_or_default().to_string()),
                ),
                _ => None,
            })
            .unwrap_or_default()
    };
    let admin = pg.admin_client().await;
    let (mut a, pid, key) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
    a.send(&query_message("select pg_sleep(1)")).await;
    common::wait_for(Duration::from_secs(5), "A's query running", || async {
        running(&admin, "select pg_sleep(1)").await.len() == 1
    })
    .await;
    // The cancel reaches a frozen postmaster: accepted by the kernel, never acted on for now.
    pg.signal_postmaster("STOP");
    let mut cancel = RawConn::connect(px.port()).await;
    cancel.send(&cancel_request(pid, key)).await;
    // A's query ends by itself meanwhile; its server must not go back to the pool yet.
    a.read_until_ready().await;
    common::wait_for(Duration::from_secs(5), "the server shown as being canceled", || async {
        pools().await == ["0", "1", "0"]
    })
    .await;
    let mut b = RawConn::connect(px.port()).await;
    b.send(&RawConn::startup_packet("trust_user", "app", &[])).await;
    b.read_until_ready().await;
    b.send(&query_message("select pg_sleep(0.5)")).await;
    assert!(b.read_message(Duration::from_millis(500)).await.is_none(), "B waits while the cancel is in flight");
    pg.signal_postmaster("CONT");
    // The postmaster acts on the cancel (A's backend is idle: nothing to cancel) and B is served.
    let mut tags = Vec::new();
    loop {
        let (tag, body) = b.read_message(Duration::from_secs(10)).await.expect("B's reply");
        assert_ne!(tag, b'E', "B must not be canceled: {:?}", common::wire::error_fields(&body));
        tags.push(tag);
        if tag == b'Z' {
            break;
        }
    }
    assert_eq!(tags, b"TDCZ");
    assert!(cancel.wait_closed(Duration::from_secs(5)).await.is_some(), "the cancel connection is done");
    common::wait_for(Duration::from_secs(5), "nothing being canceled", || async { pools().await[1] == "0" }).await;
}
