//! The same raw message sequences sent straight to PostgreSQL and through pgsluice (transaction mode,
//! a pool of one, prepared-statement rewriting on) must produce the same reply stream: simple and
//! extended protocol, pipelines, Flush without Sync, errors mid-pipeline and late Syncs, Bind without
//! Parse, portals, COPY in both directions and both protocols, notices. Only the values that legitimately
//! differ are ignored: BackendKeyData and the login's ParameterStatus messages (login is not compared),
//! and the source-location fields of errors (file, line, routine).

mod common;

use std::time::Duration;

use common::wire::RawConn;
use common::wire::fe::*;
use common::{Proxy, TestPg};

/// What to read after sending a step.
#[derive(Clone, Copy)]
enum Until {
    /// This many ReadyForQuery messages.
    Ready(usize),
    /// The first message with this tag.
    Tag(u8),
}

struct Step {
    send: Vec<u8>,
    until: Until,
}

fn step(parts: &[Vec<u8>], until: Until) -> Step {
    Step { send: parts.concat(), until }
}

fn scenarios() -> Vec<(&'static str, Vec<Step>)> {
    use Until::*;
    let fifty: Vec<Vec<u8>> = (0..50).map(|i| query(&format!("select {i}"))).collect();
    vec![
        ("multi-statement simple query", vec![step(&[query("select 1 as a; select 'x'::text as b")], Ready(1))]),
        ("50 simple queries in one write", vec![step(&fifty, Ready(50))]),
        (
            "empty query and notice",
            vec![
                step(&[query("")], Ready(1)),
                step(&[query("do $$ begin raise notice 'hello %', 1; end $$")], Ready(1)),
            ],
        ),
        ("simple query error then recovery", vec![step(&[query("select 1/0"), query("select 2")], Ready(2))]),
        (
            "unnamed extended",
            vec![step(
                &[
                    parse("", "select $1::int4 + 1 as n"),
                    bind("", "", &[Some(b"41")]),
                    describe(b'P', ""),
                    execute("", 0),
                    sync(),
                ],
                Ready(1),
            )],
        ),
        (
            "named statement across batches",
            vec![
                step(&[parse("s1", "select $1::text || 'y' as t"), describe(b'S', "s1"), sync()], Ready(1)),
                step(&[bind("", "s1", &[Some(b"x")]), execute("", 0), sync()], Ready(1)),
                step(&[bind("p1", "s1", &[None]), describe(b'P', "p1"), execute("p1", 0), sync()], Ready(1)),
                step(&[query("deallocate s1")], Ready(1)),
                step(&[bind("", "s1", &[Some(b"x")]), execute("", 0), sync()], Ready(1)),
                step(&[parse("s1", "select $1::text || 'z' as t"), parse("s2", "select 2"), sync()], Ready(1)),
                step(&[query("deallocate all")], Ready(1)),
                step(&[bind("", "s2", &[]), execute("", 0), sync()], Ready(1)),
                step(&[parse("s1", "select $1::text || 'y' as t"), sync()], Ready(1)),
                step(&[close(b'S', "s1"), sync()], Ready(1)),
                step(&[bind("", "s1", &[Some(b"x")]), execute("", 0), sync()], Ready(1)),
            ],
        ),
        (
            "bind, describe and close of unknown names",
            vec![
                step(&[bind("", "nosuch", &[]), execute("", 0), sync()], Ready(1)),
                step(&[describe(b'S', "nosuch"), sync()], Ready(1)),
                step(&[close(b'S', "nosuch"), close(b'P', "nosuch"), sync()], Ready(1)),
            ],
        ),
        (
            "duplicate statement name",
            vec![
                step(&[parse("d1", "select 1"), sync()], Ready(1)),
                step(&[parse("d1", "select 2"), bind("", "d1", &[]), execute("", 0), sync()], Ready(1)),
                step(&[bind("", "d1", &[]), execute("", 0), sync()], Ready(1)),
            ],
        ),
        (
            "error mid-pipeline skips to Sync",
            vec![
                step(
                    &[
                        parse("a", "select 1"),
                        bind("", "a", &[]),
                        execute("", 0),
                        parse("b", "select 1/0"),
                        bind("", "b", &[]),
                        execute("", 0),
                        parse("c", "select 3"),
                        bind("", "c", &[]),
                        execute("", 0),
                        sync(),
                    ],
                    Ready(1),
                ),
                // `c` was never parsed, `a` was.
                step(
                    &[bind("", "c", &[]), execute("", 0), sync(), bind("", "a", &[]), execute("", 0), sync()],
                    Ready(2),
                ),
            ],
        ),
        (
            "several syncs in one write",
            vec![step(
                &[
                    parse("", "select 1"),
                    bind("", "", &[]),
                    execute("", 0),
                    sync(),
                    parse("", "select 1/0"),
                    bind("", "", &[]),
                    execute("", 0),
                    sync(),
                    parse("", "select 3"),
                    bind("", "", &[]),
                    execute("", 0),
                    sync(),
                ],
                Ready(3),
            )],
        ),
        (
            "flush without sync, then a late sync",
            vec![
                step(&[parse("", "select 42"), bind("", "", &[]), execute("", 0), flush()], Tag(b'C')),
                step(&[sync()], Ready(1)),
                step(&[parse("", "select 1/0"), bind("", "", &[]), execute("", 0), flush()], Tag(b'E')),
                step(&[parse("", "select 5"), bind("", "", &[]), execute("", 0), sync()], Ready(1)),
            ],
        ),
        (
            "portal suspended and resumed in a transaction",
            vec![
                step(&[query("begin")], Ready(1)),
                step(
                    &[
                        parse("", "select generate_series(1, 3)"),
                        bind("cur", "", &[]),
                        execute("cur", 1),
                        execute("cur", 1),
                        execute("cur", 0),
                        sync(),
                    ],
                    Ready(1),
                ),
                step(&[query("commit")], Ready(1)),
            ],
        ),
        (
            "copy, simple protocol",
            vec![
                step(&[query("create temp table parity_t(x int)")], Ready(1)),
                step(&[query("copy parity_t from stdin")], Tag(b'G')),
                step(&[copy_data(b"1\n2\n"), copy_data(b"3\n"), copy_done()], Ready(1)),
                step(&[query("copy parity_t from stdin")], Tag(b'G')),
                step(&[copy_data(b"4\n"), copy_fail("client gave up")], Ready(1)),
                step(&[query("copy parity_t from stdin")], Tag(b'G')),
                step(&[copy_data(b"not a number\n"), copy_done()], Ready(1)),
                step(&[query("copy (select x from parity_t order by x) to stdout")], Ready(1)),
                step(&[query("begin"), query("copy parity_t from stdin")], Tag(b'G')),
                step(&[copy_fail("inside a block")], Ready(1)),
                step(&[query("rollback"), query("drop table parity_t")], Ready(2)),
            ],
        ),
        (
            "copy, extended protocol (as libpq and tokio-postgres)",
            vec![
                step(&[query("create temp table parity_e(x int)")], Ready(1)),
                step(&[parse("", "copy parity_e from stdin"), bind("", "", &[]), execute("", 0), sync()], Tag(b'G')),
                step(&[copy_data(b"7\n"), copy_done(), sync()], Ready(1)),
                step(&[parse("", "copy parity_e from stdin"), bind("", "", &[]), execute("", 0), sync()], Tag(b'G')),
                step(&[copy_fail("nope"), sync()], Ready(1)),
                step(&[parse("", "copy parity_e to stdout"), bind("", "", &[]), execute("", 0), sync()], Ready(1)),
                step(&[query("drop table parity_e")], Ready(1)),
            ],
        ),
    ]
}

async fn run(port: u16, steps: &[Step]) -> Vec<Vec<String>> {
    let (mut c, _, _) = RawConn::login_with_key(port, "trust_user", "app").await;
    let mut out = Vec::new();
    for s in steps {
        c.send(&s.send).await;
        let mut got = Vec::new();
        let mut ready = 0;
        loop {
            let Some((tag, body)) = c.read_message(Duration::from_secs(5)).await else {
                got.push("<timeout or EOF>".to_string());
                break;
            };
            got.push(common::wire::normalize_reply(tag, &body));
            match s.until {
                Until::Ready(n) if tag == b'Z' => {
                    ready += 1;
                    if ready == n {
                        break;
                    }
                }
                Until::Tag(t) if tag == t => break,
                _ => {}
            }
        }
        out.push(got);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_match_postgres_message_for_message() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").pool_size(1).start().await;
    let mut failures = Vec::new();
    for (name, steps) in scenarios() {
        let direct = run(pg.port(), &steps).await;
        let proxied = run(px.port(), &steps).await;
        if direct != proxied {
            failures.push(format!("{name}:\n  direct:  {direct:?}\n  through: {proxied:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The pool's one server went back clean after every scenario: a new client gets it at once.
    let c = px.client("trust_user", "", "app").await;
    assert_eq!(common::scalar(&c, "select 1").await, "1");
}
