//! Asynchronous messages and COPY in transaction mode, with a pool of one where isolation is the point:
//! a NotificationResponse, NoticeResponse or ParameterStatus produced for one client never reaches the
//! next user of the same server; COPY in both protocols releases the server after every round; COPY
//! errors (before and after CopyDone, CopyFail, inside and outside BEGIN) give exactly PostgreSQL's
//! replies and leave a server the next client can use; a Describe of a named statement lands on a
//! server that lacks it; DISCARD ALL forgets the client's names while other clients re-prepare.

mod common;

use std::time::Duration;

use common::wire::fe::*;
use common::wire::{RawConn, error_fields};
use common::{Proxy, TestPg, wait_for};
use tokio_postgres::SimpleQueryMessage;

type Msg = (u8, Vec<u8>);

const USER: &str = "trust_user";

/// What to read after sending a step.
#[derive(Clone, Copy, Debug)]
enum Until {
    /// This many ReadyForQuery messages.
    Ready(usize),
    /// The first message with this tag.
    Tag(u8),
}
use Until::*;

/// Logs in as the trust user with extra startup parameters; the login's messages are not kept.
async fn login(port: u16, extra: &[(&str, &str)]) -> RawConn {
    let mut c = RawConn::connect(port).await;
    c.send(&RawConn::startup_packet(USER, "app", extra)).await;
    c.read_until_ready().await;
    c
}

/// Reads replies until `until`; `Err` with what was read if the stream stalls or ends first.
async fn try_read(c: &mut RawConn, until: Until) -> Result<Vec<Msg>, Vec<Msg>> {
    let mut got = Vec::new();
    let mut ready = 0;
    loop {
        let Some((tag, body)) = c.read_message(Duration::from_secs(10)).await else {
            return Err(got);
        };
        got.push((tag, body));
        match until {
            Ready(n) if tag == b'Z' => {
                ready += 1;
                if ready == n {
                    return Ok(got);
                }
            }
            Tag(t) if tag == t => return Ok(got),
            _ => {}
        }
    }
}

/// Sends `parts` in one write and reads until `until`, panicking on a stall.
async fn exchange(c: &mut RawConn, parts: &[Vec<u8>], until: Until) -> Vec<Msg> {
    c.send(&parts.concat()).await;
    match try_read(c, until).await {
        Ok(m) => m,
        Err(m) => panic!("stalled waiting for {until:?}; got {}", describe_all(&m)),
    }
}

/// The tags of `msgs`, as a string ("TDCZ").
fn tags(msgs: &[Msg]) -> String {
    msgs.iter().map(|(t, _)| *t as char).collect()
}

/// The SQLSTATEs of the ErrorResponses in `msgs`.
fn codes(msgs: &[Msg]) -> Vec<String> {
    msgs.iter()
        .filter(|(t, _)| *t == b'E')
        .map(|(_, b)| error_fields(b).get(&'C').cloned().unwrap_or_default())
        .collect()
}

/// The transaction status of the last ReadyForQuery in `msgs`.
fn status(msgs: &[Msg]) -> char {
    msgs.iter().rev().find(|(t, _)| *t == b'Z').map(|(_, b)| b[0] as char).expect("a ReadyForQuery")
}

/// The columns of a DataRow, as text.
fn data_row(body: &[u8]) -> Vec<Option<String>> {
    let n = u16::from_be_bytes([body[0], body[1]]) as usize;
    let mut at = 2;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
        at += 4;
        if len < 0 {
            out.push(None);
        } else {
            out.push(Some(String::from_utf8_lossy(&body[at..at + len as usize]).into_owned()));
            at += len as usize;
        }
    }
    out
}

/// The first column of the first DataRow in `msgs`.
fn first_value(msgs: &[Msg]) -> String {
    let (_, body) = msgs.iter().find(|(t, _)| *t == b'D').unwrap_or_else(|| panic!("no row in {}", describe_all(msgs)));
    data_row(body)[0].clone().unwrap_or_default()
}

/// The (name, value) of every ParameterStatus in `msgs`.
fn parameter_statuses(msgs: &[Msg]) -> Vec<(String, String)> {
    msgs.iter()
        .filter(|(t, _)| *t == b'S')
        .map(|(_, b)| {
            let mut parts = b.split(|c| *c == 0).map(|p| String::from_utf8_lossy(p).into_owned());
            (parts.next().unwrap_or_default(), parts.next().unwrap_or_default())
        })
        .collect()
}

fn describe_all(msgs: &[Msg]) -> String {
    format!("{:?}", msgs.iter().map(|(t, b)| common::wire::normalize_reply(*t, b)).collect::<Vec<_>>())
}

/// A simple query through a raw connection whose reply must be exactly one row of one value.
async fn raw_scalar(c: &mut RawConn, sql: &str) -> String {
    let r = exchange(c, &[query(sql)], Ready(1)).await;
    assert_eq!(tags(&r), "TDCZ", "{sql}: {}", describe_all(&r));
    first_value(&r)
}

fn extended(sql: &str) -> Vec<Vec<u8>> {
    vec![parse("", sql), bind("", "", &[]), execute("", 0), sync()]
}

/// The pool's only server must be free for a new client: a simple query is answered (not 57014).
async fn next_client_is_served(port: u16) -> Result<(), String> {
    let mut next = login(port, &[]).await;
    next.send(&query("select 'next'")).await;
    match try_read(&mut next, Ready(1)).await {
        Ok(r) if tags(&r) == "TDCZ" && first_value(&r) == "next" => Ok(()),
        Ok(r) | Err(r) => Err(describe_all(&r)),
    }
}

async fn console_rows(c: &tokio_postgres::Client, cmd: &str) -> Vec<std::collections::HashMap<String, String>> {
    let mut rows = Vec::new();
    for m in c.simple_query(cmd).await.unwrap_or_else(|e| panic!("{cmd}: {e}")) {
        if let SimpleQueryMessage::Row(r) = m {
            rows.push(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, col)| (col.name().to_string(), r.get(i).unwrap_or("").to_string()))
                    .collect(),
            );
        }
    }
    rows
}

// ---------------------------------------------------------------------------------------------------
// 1. NotificationResponse

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_for_a_listening_server_never_reach_the_client_holding_it() {
    let pg = TestPg::start().await;
    let admin = pg.admin_client().await;
    // Control, straight to PostgreSQL: a listener inside a transaction gets the notification at the end
    // of that transaction, ahead of COMMIT's ReadyForQuery. This is the moment pgsluice must cover.
    let mut direct = login(pg.port(), &[]).await;
    assert_eq!(tags(&exchange(&mut direct, &[query("listen ch")], Ready(1)).await), "CZ");
    assert_eq!(tags(&exchange(&mut direct, &[query("begin")], Ready(1)).await), "CZ");
    assert_eq!(tags(&exchange(&mut direct, &[query("select 1")], Ready(1)).await), "TDCZ");
    admin.batch_execute("notify ch, 'x'").await.unwrap();
    assert_eq!(tags(&exchange(&mut direct, &[query("select 2")], Ready(1)).await), "TDCZ");
    let commit = exchange(&mut direct, &[query("commit")], Ready(1)).await;
    assert_eq!(tags(&commit), "CAZ", "PostgreSQL delivers at COMMIT: {}", describe_all(&commit));
    drop(direct);

    // session_state = leak: A leaves its (only) server listening, LISTEN staying on the backend.
    let px = Proxy::builder(&pg).auth_type("trust").pool_size(1).general("session_state", "\"leak\"").start().await;
    let mut a = login(px.port(), &[]).await;
    assert_eq!(tags(&exchange(&mut a, &[query("listen ch")], Ready(1)).await), "CZ");
    let a_pid = raw_scalar(&mut a, "select pg_backend_pid()").await;
    drop(a);
    // B gets that same backend, still listening, and holds it in an open transaction.
    let mut b = login(px.port(), &[]).await;
    assert_eq!(tags(&exchange(&mut b, &[query("begin")], Ready(1)).await), "CZ");
    let seen = raw_scalar(
        &mut b,
        "select pg_backend_pid() || ':' || (select string_agg(c, ',') from pg_listening_channels() c)",
    )
    .await;
    assert_eq!(seen, format!("{a_pid}:ch"), "B holds the backend A left listening");
    let b_pid: i32 = a_pid.parse().unwrap();
    wait_for(Duration::from_secs(5), "B's backend is idle in transaction", || async {
        let state: Option<String> =
            admin.query_one("select state from pg_stat_activity where pid = $1", &[&b_pid]).await.unwrap().get(0);
        state.as_deref() == Some("idle in transaction")
    })
    .await;
    admin.batch_execute("notify ch, 'x'").await.unwrap();
    // B's replies are its own only: the notification PostgreSQL sends at COMMIT is not forwarded.
    let r = exchange(&mut b, &[query("select 1")], Ready(1)).await;
    assert_eq!(tags(&r), "TDCZ", "{}", describe_all(&r));
    let r = exchange(&mut b, &[query("commit")], Ready(1)).await;
    assert_eq!(tags(&r), "CZ", "no NotificationResponse for B: {}", describe_all(&r));
    for _ in 0..3 {
        let r = exchange(&mut b, &[query("select 2")], Ready(1)).await;
        assert_eq!(tags(&r), "TDCZ", "{}", describe_all(&r));
    }
}

// ---------------------------------------------------------------------------------------------------
// 2. NoticeResponse and ParameterStatus

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_and_parameter_changes_reach_only_their_own_client() {
    let pg = TestPg::start().await;
    let px =
        Proxy::builder(&pg).auth_type("trust").pool_size(1).general("admin_users", &format!("{USER:?}")).start().await;
    let console = px.client(USER, "", "pgbouncer").await;
    let mut a = login(px.port(), &[("application_name", "a1")]).await;
    let mut b = login(px.port(), &[("application_name", "b1"), ("TimeZone", "Europe/Paris")]).await;
    assert_eq!(raw_scalar(&mut b, "show timezone").await, "Europe/Paris");
    let b_pid = raw_scalar(&mut b, "select pg_backend_pid()").await;

    // A's transaction: notices and parameter changes, all for A.
    assert_eq!(tags(&exchange(&mut a, &[query("begin")], Ready(1)).await), "CZ");
    assert_eq!(raw_scalar(&mut a, "select pg_backend_pid()").await, b_pid, "one server for both");
    let r = exchange(&mut a, &[query("do $$ begin raise notice 'for-a'; end $$")], Ready(1)).await;
    assert_eq!(tags(&r), "NCZ", "{}", describe_all(&r));
    assert_eq!(error_fields(&r[0].1).get(&'M').map(String::as_str), Some("for-a"));
    let r = exchange(&mut a, &[query("set application_name = 'a2'")], Ready(1)).await;
    assert_eq!(parameter_statuses(&r), [("application_name".to_string(), "a2".to_string())]);
    let r = exchange(&mut a, &[query("set timezone = 'Asia/Tokyo'")], Ready(1)).await;
    assert_eq!(parameter_statuses(&r), [("TimeZone".to_string(), "Asia/Tokyo".to_string())]);
    // B asks while A holds the only server, and waits.
    b.send(&query("show timezone")).await;
    wait_for(Duration::from_secs(5), "B waits for the server", || async {
        console_rows(&console, "show pools").await.iter().any(|r| r["database"] == "app" && r["cl_waiting"] == "1")
    })
    .await;
    let r = exchange(&mut a, &[query("do $$ begin raise notice 'for-a-again'; end $$")], Ready(1)).await;
    assert_eq!(tags(&r), "NCZ", "{}", describe_all(&r));
    assert_eq!(tags(&exchange(&mut a, &[query("commit")], Ready(1)).await), "CZ");

    // B gets the server A changed: only its own reply, with its own values, and no ParameterStatus or
    // notice of A's.
    let r = try_read(&mut b, Ready(1)).await.unwrap_or_else(|m| panic!("B stalled: {}", describe_all(&m)));
    assert_eq!(tags(&r), "TDCZ", "{}", describe_all(&r));
    assert_eq!(first_value(&r), "Europe/Paris");
    assert_eq!(raw_scalar(&mut b, "show application_name").await, "b1");
    assert_eq!(raw_scalar(&mut b, "select pg_backend_pid()").await, b_pid, "still the server A changed");
    let r = exchange(&mut b, &[query("do $$ begin raise notice 'for-b'; end $$")], Ready(1)).await;
    assert_eq!(tags(&r), "NCZ");
    assert_eq!(error_fields(&r[0].1).get(&'M').map(String::as_str), Some("for-b"));
    // And A finds its own values again, without a ParameterStatus from B's use of the server.
    let r = exchange(&mut a, &[query("show application_name")], Ready(1)).await;
    assert_eq!((tags(&r).as_str(), first_value(&r).as_str()), ("TDCZ", "a2"), "{}", describe_all(&r));
    let r = exchange(&mut a, &[query("show timezone")], Ready(1)).await;
    assert_eq!((tags(&r).as_str(), first_value(&r).as_str()), ("TDCZ", "Asia/Tokyo"), "{}", describe_all(&r));
    assert_eq!(raw_scalar(&mut b, "show timezone").await, "Europe/Paris");
}

// ---------------------------------------------------------------------------------------------------
// 3. Pool release after COPY

async fn create_copy_table(pg: &TestPg) {
    pg.admin_client()
        .await
        .batch_execute("create table copy_t(x int, s text); grant all on copy_t to public")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_both_protocols_releases_a_pool_of_one_after_every_round() {
    let pg = TestPg::start().await;
    create_copy_table(&pg).await;
    let px = Proxy::builder(&pg).auth_type("trust").pool_size(1).query_wait_timeout(3.0).start().await;
    let mut clients = [login(px.port(), &[]).await, login(px.port(), &[]).await];
    let count_sql = "copy (select count(*) from copy_t) to stdout";
    let mut rows = 0;
    for round in 0..3 {
        for turn in 0..2 {
            let [first, second] = &mut clients;
            let (writer, reader) = if turn == 0 { (first, second) } else { (second, first) };
            // Extended COPY FROM STDIN, as libpq and tokio-postgres send it.
            let mut r = exchange(writer, &extended("copy copy_t from stdin"), Tag(b'G')).await;
            r.extend(
                exchange(writer, &[copy_data(b"1\ta\n"), copy_data(b"2\tb\n"), copy_done(), sync()], Ready(1)).await,
            );
            assert_eq!(tags(&r), "12GCZ", "round {round}: {}", describe_all(&r));
            assert_eq!(r[3].1, b"COPY 2\0");
            assert_eq!(status(&r), 'I');
            rows += 2;
            // The other client's extended COPY TO STDOUT gets the server at once.
            let r = exchange(reader, &extended(count_sql), Ready(1)).await;
            assert_eq!(tags(&r), "12HdcCZ", "round {round}: {}", describe_all(&r));
            assert_eq!(r[3].1, format!("{rows}\n").into_bytes());
        }
    }
    // Simple-protocol COPY in and out, then the other client.
    let [first, second] = &mut clients;
    let mut r = exchange(first, &[query("copy copy_t from stdin")], Tag(b'G')).await;
    r.extend(exchange(first, &[copy_data(b"3\tc\n"), copy_done()], Ready(1)).await);
    assert_eq!(tags(&r), "GCZ", "{}", describe_all(&r));
    rows += 1;
    let r = exchange(second, &[query(count_sql)], Ready(1)).await;
    assert_eq!(tags(&r), "HdcCZ", "{}", describe_all(&r));
    assert_eq!(r[1].1, format!("{rows}\n").into_bytes());
    let r = exchange(first, &[query("select count(*) from copy_t")], Ready(1)).await;
    assert_eq!(first_value(&r), rows.to_string());
    // And tokio-postgres's own COPY (extended protocol) alternating with another tokio-postgres client.
    use futures_util::{SinkExt, StreamExt};
    let c1 = px.client(USER, "", "app").await;
    let c2 = px.client(USER, "", "app").await;
    for _ in 0..3 {
        let sink = c1.copy_in("copy copy_t from stdin").await.unwrap();
        tokio::pin!(sink);
        sink.send(bytes::Bytes::from_static(b"4\td\n5\te\n")).await.unwrap();
        assert_eq!(sink.finish().await.unwrap(), 2);
        rows += 2;
        let out = c2.copy_out(count_sql).await.unwrap();
        tokio::pin!(out);
        let mut got = Vec::new();
        while let Some(chunk) = out.next().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(got, format!("{rows}\n").into_bytes());
    }
    assert_eq!(pg.backends_for(USER).await, 1, "a pool of one");
}

// ---------------------------------------------------------------------------------------------------
// 4. COPY errors, compared with PostgreSQL

struct Step {
    send: Vec<u8>,
    until: Until,
}

fn step(parts: &[Vec<u8>], until: Until) -> Step {
    Step { send: parts.concat(), until }
}

fn ext(sql: &str, until: Until) -> Step {
    step(&extended(sql), until)
}

const BAD_ROW: &[u8] = b"not a number\tx\n";
/// A CSV quoted field never closed: PostgreSQL only knows it is an error at the end of the data.
const OPEN_QUOTE: &[u8] = b"1,\"abc";
const COPY_IN: &str = "copy copy_t from stdin";
const COPY_CSV: &str = "copy copy_t from stdin (format csv)";

/// Scenarios whose replies and aftermath (the pool's server free for the next client) must match.
fn copy_error_scenarios() -> Vec<(&'static str, Vec<Step>)> {
    let q = |sql: &str, until| step(&[query(sql)], until);
    let select_after = || vec![q("select 1", Ready(1)), ext("select 2", Ready(1))];
    let in_block = |mut steps: Vec<Step>| {
        let mut all = vec![q("begin", Ready(1))];
        all.append(&mut steps);
        all.push(q("select 1", Ready(1))); // 25P02: the block stays failed
        all.push(ext("select 2", Ready(1)));
        all.push(q("rollback", Ready(1)));
        all.append(&mut select_after());
        all
    };
    let with_after = |mut steps: Vec<Step>| {
        steps.append(&mut select_after());
        steps
    };
    // Error on a row, before CopyDone; the client sends CopyDone (ignored by the server) anyway.
    let simple_bad_row = || vec![q(COPY_IN, Tag(b'G')), step(&[copy_data(BAD_ROW), copy_done()], Ready(1))];
    let ext_bad_row = || vec![ext(COPY_IN, Tag(b'G')), step(&[copy_data(BAD_ROW), copy_done(), sync()], Ready(1))];
    // Error found at CopyDone.
    let simple_at_done = || vec![q(COPY_CSV, Tag(b'G')), step(&[copy_data(OPEN_QUOTE), copy_done()], Ready(1))];
    let ext_at_done = || vec![ext(COPY_CSV, Tag(b'G')), step(&[copy_data(OPEN_QUOTE), copy_done(), sync()], Ready(1))];
    let ext_copy_fail =
        || vec![ext(COPY_IN, Tag(b'G')), step(&[copy_data(b"9\tz\n"), copy_fail("bye"), sync()], Ready(1))];
    vec![
        ("simple, bad row before CopyDone", with_after(simple_bad_row())),
        ("simple, bad row before CopyDone, in BEGIN", in_block(simple_bad_row())),
        ("simple, error at CopyDone", with_after(simple_at_done())),
        ("simple, error at CopyDone, in BEGIN", in_block(simple_at_done())),
        ("extended, bad row before CopyDone", with_after(ext_bad_row())),
        ("extended, bad row before CopyDone, in BEGIN", in_block(ext_bad_row())),
        ("extended, error at CopyDone", with_after(ext_at_done())),
        ("extended, error at CopyDone, in BEGIN", in_block(ext_at_done())),
        ("extended, CopyFail", with_after(ext_copy_fail())),
        ("extended, CopyFail, in BEGIN", in_block(ext_copy_fail())),
        (
            // The client waits for the error before it sends CopyDone; the server ignores the late one.
            "simple, bad row, CopyDone after the error",
            with_after(vec![
                q(COPY_IN, Tag(b'G')),
                step(&[copy_data(BAD_ROW)], Ready(1)),
                step(&[copy_done(), query("select 3")], Ready(1)),
            ]),
        ),
        (
            // As above in the extended protocol: CopyDone, then the Sync the server waits for.
            "extended, bad row, CopyDone and Sync after the error",
            with_after(vec![
                ext(COPY_IN, Tag(b'G')),
                step(&[copy_data(BAD_ROW)], Tag(b'E')),
                step(&[copy_done(), sync()], Ready(1)),
            ]),
        ),
    ]
}

/// Scenarios where the client stops the COPY at the server's error without CopyDone (as libpq does:
/// PQputCopyEnd after an error sends nothing): legal, and must leave the server reusable.
fn copy_abandoned_scenarios() -> Vec<(&'static str, Vec<Step>)> {
    let q = |sql: &str, until| step(&[query(sql)], until);
    vec![
        (
            "simple, bad row, no CopyDone",
            vec![
                q(COPY_IN, Tag(b'G')),
                step(&[copy_data(BAD_ROW)], Ready(1)),
                q("select 1", Ready(1)),
                ext("select 2", Ready(1)),
            ],
        ),
        (
            "extended, bad row, Sync without CopyDone",
            vec![
                ext(COPY_IN, Tag(b'G')),
                step(&[copy_data(BAD_ROW)], Tag(b'E')),
                step(&[sync()], Ready(1)),
                q("select 1", Ready(1)),
                ext("select 2", Ready(1)),
            ],
        ),
    ]
}

async fn run_steps(port: u16, steps: &[Step]) -> (Vec<Vec<String>>, RawConn) {
    let mut c = login(port, &[]).await;
    let mut out = Vec::new();
    for s in steps {
        c.send(&s.send).await;
        let got = match try_read(&mut c, s.until).await {
            Ok(m) => m.iter().map(|(t, b)| common::wire::normalize_reply(*t, b)).collect(),
            Err(m) => {
                let mut v: Vec<String> = m.iter().map(|(t, b)| common::wire::normalize_reply(*t, b)).collect();
                v.push("<stalled or EOF>".into());
                v
            }
        };
        out.push(got);
    }
    (out, c)
}

/// Runs each scenario straight to PostgreSQL and through pgsluice (pool of one); the replies must be the
/// same, and while the scenario's client stays connected the next client must get the server.
async fn check_copy_scenarios(scenarios: Vec<(&'static str, Vec<Step>)>) {
    let pg = TestPg::start().await;
    create_copy_table(&pg).await;
    let px = Proxy::builder(&pg).auth_type("trust").pool_size(1).query_wait_timeout(3.0).start().await;
    let mut failures = Vec::new();
    for (name, steps) in scenarios {
        let (direct, _d) = run_steps(pg.port(), &steps).await;
        let (proxied, _client_stays) = run_steps(px.port(), &steps).await;
        if direct != proxied {
            failures.push(format!("{name}:\n  direct:  {direct:?}\n  through: {proxied:?}"));
        }
        if let Err(got) = next_client_is_served(px.port()).await {
            failures.push(format!("{name}: the next client was not served: {got}"));
        }
    }
    assert!(failures.is_empty(), "{}\n{}", failures.join("\n"), px.log_contents());
    // Sanity: the scenarios really produced the errors they are about.
    let (replies, _) = run_steps(
        pg.port(),
        &[step(&[query(COPY_CSV)], Tag(b'G')), step(&[copy_data(OPEN_QUOTE), copy_done()], Ready(1))],
    )
    .await;
    assert!(replies[1][0].contains("22P04"), "unterminated CSV quoted field at CopyDone: {replies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_errors_match_postgres_and_leave_the_server_to_the_next_client() {
    check_copy_scenarios(copy_error_scenarios()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_stopped_at_the_error_without_copydone_leaves_the_server_reusable() {
    check_copy_scenarios(copy_abandoned_scenarios()).await;
}

// ---------------------------------------------------------------------------------------------------
// 5. Describe on a server that lacks the statement

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_of_a_named_statement_prepares_it_on_a_server_that_lacks_it() {
    let pg = TestPg::start().await;
    // One worker: which server C gets below depends on the pool's order of idle servers, which with
    // several workers puts a worker's own first.
    let px = Proxy::builder(&pg)
        .auth_type("trust")
        .pool_size(2)
        .general("admin_users", &format!("{USER:?}"))
        .general("workers", "1")
        .start()
        .await;
    let sql = "select $1::int4 + 1 as n, 'x'::text as t";
    // What PostgreSQL answers to the Describe.
    let mut direct = login(pg.port(), &[]).await;
    assert_eq!(tags(&exchange(&mut direct, &[parse("S1", sql), sync()], Ready(1)).await), "1Z");
    let expected = exchange(&mut direct, &[describe(b'S', "S1"), sync()], Ready(1)).await;
    assert_eq!(tags(&expected), "tTZ");

    // A parses S1 on server X (the pool's first).
    let mut a = login(px.port(), &[]).await;
    let r = exchange(&mut a, &[vec![parse("S1", sql)], extended("select pg_backend_pid()")].concat(), Ready(1)).await;
    assert_eq!(tags(&r), "112DCZ", "{}", describe_all(&r));
    let x_pid = first_value(&r);
    // C holds X in a transaction, so A's next batch needs the second server, Y.
    let mut c = login(px.port(), &[]).await;
    assert_eq!(tags(&exchange(&mut c, &[query("begin")], Ready(1)).await), "CZ");
    assert_eq!(raw_scalar(&mut c, "select pg_backend_pid()").await, x_pid, "C holds X");
    // A's Describe lands on Y, which lacks S1: the same reply as PostgreSQL's.
    let r = exchange(&mut a, &[describe(b'S', "S1"), sync()], Ready(1)).await;
    assert_eq!(describe_all(&r), describe_all(&expected));
    let y_pid = raw_scalar(&mut a, "select pg_backend_pid()").await;
    assert_ne!(y_pid, x_pid, "A's batches land on the second server");
    // Server truth, from each backend: both hold the statement now, once.
    let on_y =
        raw_scalar(&mut a, "select count(*) || ':' || string_agg(statement, ',') from pg_prepared_statements").await;
    assert_eq!(on_y, format!("1:{sql}"));
    let on_x =
        raw_scalar(&mut c, "select count(*) || ':' || string_agg(statement, ',') from pg_prepared_statements").await;
    assert_eq!(on_x, format!("1:{sql}"));
    // And the console agrees.
    let console = px.client(USER, "", "pgbouncer").await;
    let servers = console_rows(&console, "show servers").await;
    for pid in [&x_pid, &y_pid] {
        let row = servers.iter().find(|r| &r["remote_pid"] == pid).unwrap_or_else(|| panic!("{pid}: {servers:?}"));
        assert_eq!(row["prepared_statements"], "1", "{row:?}");
    }
    // S1 works on Y.
    let r = exchange(&mut a, &[bind("", "S1", &[Some(b"41")]), execute("", 0), sync()], Ready(1)).await;
    assert_eq!(tags(&r), "2DCZ", "{}", describe_all(&r));
    assert_eq!(first_value(&r), "42");
    assert_eq!(tags(&exchange(&mut c, &[query("commit")], Ready(1)).await), "CZ");
}

// ---------------------------------------------------------------------------------------------------
// 6. DISCARD ALL

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_all_forgets_the_clients_names_and_others_re_prepare() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").pool_size(1).start().await;
    let mut a = login(px.port(), &[]).await;
    let mut b = login(px.port(), &[]).await;
    let count = "select count(*) from pg_prepared_statements";
    // B and A prepare the same text (one server-side statement) and A one more.
    assert_eq!(tags(&exchange(&mut b, &[parse("b1", "select 42 as v"), sync()], Ready(1)).await), "1Z");
    let r = exchange(&mut a, &[parse("a1", "select 42 as v"), parse("a2", "select 43 as v"), sync()], Ready(1)).await;
    assert_eq!(tags(&r), "11Z");
    assert_eq!(raw_scalar(&mut a, count).await, "2");
    // A discards everything on the server.
    let r = exchange(&mut a, &[query("discard all")], Ready(1)).await;
    assert_eq!(tags(&r), "CZ", "{}", describe_all(&r));
    assert_eq!(r[0].1, b"DISCARD ALL\0");
    assert_eq!(raw_scalar(&mut a, count).await, "0", "the server holds nothing");
    // A's old names are gone, as on PostgreSQL.
    for name in ["a1", "a2"] {
        let r = exchange(&mut a, &[bind("", name, &[]), execute("", 0), sync()], Ready(1)).await;
        assert_eq!((tags(&r), codes(&r)), ("EZ".to_string(), vec!["26000".to_string()]), "{name}");
    }
    // B's statement has the same text: pgsluice prepares it again on the same server.
    let r = exchange(&mut b, &[bind("", "b1", &[]), execute("", 0), sync()], Ready(1)).await;
    assert_eq!(tags(&r), "2DCZ", "{}", describe_all(&r));
    assert_eq!(first_value(&r), "42");
    assert_eq!(raw_scalar(&mut b, count).await, "1");
    // A may use its old names for new statements.
    let r = exchange(&mut a, &[parse("a1", "select 44"), bind("", "a1", &[]), execute("", 0), sync()], Ready(1)).await;
    assert_eq!(tags(&r), "12DCZ", "{}", describe_all(&r));
    assert_eq!(first_value(&r), "44");
}

/// DISCARD ALL (and DEALLOCATE ALL) that PostgreSQL refuses (inside a transaction block, in a failed
/// one) drops nothing: the client's statements still work afterwards, as on a direct connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_discard_all_keeps_the_clients_statements() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").pool_size(1).start().await;
    let q = |sql: &str| step(&[query(sql)], Ready(1));
    let run_s1 = || step(&[bind("", "s1", &[]), execute("", 0), sync()], Ready(1));
    let steps = vec![
        step(&[parse("s1", "select 42 as v"), sync()], Ready(1)),
        q("begin"),
        q("discard all"), // 25001
        q("rollback"),
        run_s1(),
        // The same text under a new name: the server still has it, pgsluice must not Parse it again.
        step(&[parse("s2", "select 42 as v"), bind("", "s2", &[]), execute("", 0), sync()], Ready(1)),
        q("begin"),
        q("select 1/0"),
        q("deallocate all"), // 25P02
        q("rollback"),
        run_s1(),
    ];
    let (direct, _) = run_steps(pg.port(), &steps).await;
    let (proxied, _) = run_steps(px.port(), &steps).await;
    assert!(direct[2][0].contains("25001") && direct[8][0].contains("25P02"), "{direct:?}");
    assert_eq!(direct, proxied);
}
