//! Prepared statements where pgsluice's rewriting could drift from PostgreSQL: the unnamed statement
//! across servers, requests the server skipped after an error (eviction Close, a Parse or Close pgsluice
//! answered itself), pgsluice's own errors failing the server's batch, DEALLOCATE ALL in any form, and a
//! reset query between transactions. Each sequence is also run on a direct connection where PostgreSQL's
//! answer is the reference.

mod common;

use std::time::Duration;

use common::wire::RawConn;
use common::wire::fe::{bind, close, execute, parse, query, sync};
use common::{Proxy, TestPg};

/// One reply, normalized: the tag, with the SQLSTATE of an error, the status of a ReadyForQuery, the
/// first column of a row and the text of a CommandComplete.
fn describe_reply(tag: u8, body: &[u8]) -> String {
    let text = |b: &[u8]| String::from_utf8_lossy(b.strip_suffix(&[0]).unwrap_or(b)).to_string();
    match tag {
        b'E' => format!("E {}", common::wire::error_fields(body).get(&'C').cloned().unwrap_or_default()),
        b'Z' => format!("Z {}", body.first().map(|b| *b as char).unwrap_or('?')),
        b'C' => format!("C {}", text(body)),
        b'D' => {
            let len = i32::from_be_bytes(body[2..6].try_into().unwrap());
            let value = if len < 0 { "NULL".into() } else { text(&body[6..6 + len as usize]) };
            format!("D {value}")
        }
        other => (other as char).to_string(),
    }
}

/// Sends `bytes` and reads the replies through the `syncs`-th ReadyForQuery.
async fn exchange(c: &mut RawConn, bytes: &[u8], syncs: usize) -> Vec<String> {
    c.send(bytes).await;
    let mut out = Vec::new();
    let mut seen = 0;
    while seen < syncs {
        let (tag, body) = c.read_message(Duration::from_secs(10)).await.expect("a reply before the timeout");
        if matches!(tag, b'N' | b'S') {
            continue;
        }
        seen += usize::from(tag == b'Z');
        out.push(describe_reply(tag, &body));
    }
    out
}

async fn login(port: u16) -> RawConn {
    let mut c = RawConn::connect(port).await;
    c.send(&RawConn::startup_packet("trust_user", "app", &[])).await;
    c.read_until_ready().await;
    c
}

async fn proxy(pg: &TestPg, extra: &[(&str, &str)]) -> Proxy {
    let mut b = Proxy::builder(pg).auth_type("trust").pool_size(1);
    for (k, v) in extra {
        b = b.general(k, v);
    }
    b.start().await
}

/// Runs the same steps (each ending in one or more Syncs or Queries) directly and through pgsluice.
async fn both(pg: &TestPg, px: &Proxy, steps: &[(Vec<u8>, usize)]) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let (mut direct, mut proxied) = (login(pg.port()).await, login(px.port()).await);
    let (mut d, mut p) = (Vec::new(), Vec::new());
    for (bytes, syncs) in steps {
        d.push(exchange(&mut direct, bytes, *syncs).await);
        p.push(exchange(&mut proxied, bytes, *syncs).await);
    }
    (d, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unnamed_statement_is_the_clients_own_on_every_server() {
    let pg = TestPg::start().await;
    let px = proxy(&pg, &[]).await;
    let mut a = login(px.port()).await;
    let mut b = login(px.port()).await;
    let mut c = login(px.port()).await;
    let use_unnamed = [bind("", "", &[]), execute("", 0), sync()].concat();
    // A and B each leave an unnamed statement on the one server; B's is there last.
    assert_eq!(exchange(&mut a, &[parse("", "select 'A'::text"), sync()].concat(), 1).await, ["1", "Z I"]);
    assert_eq!(exchange(&mut b, &[parse("", "select 'B'::text"), sync()].concat(), 1).await, ["1", "Z I"]);
    // PostgreSQL keeps the unnamed statement across Syncs: A runs its own, never B's.
    assert_eq!(exchange(&mut a, &use_unnamed, 1).await, ["2", "D A", "C SELECT 1", "Z I"]);
    assert_eq!(exchange(&mut b, &use_unnamed, 1).await, ["2", "D B", "C SELECT 1", "Z I"]);
    // C never parsed one: 26000 as on a direct connection, not whatever the server holds.
    let reply = exchange(&mut c, &use_unnamed, 1).await;
    assert_eq!(reply, ["E 26000", "Z I"], "C must not run another client's statement");
    // A simple Query drops the unnamed statement (PostgreSQL does too).
    assert_eq!(exchange(&mut a, &query("select 1"), 1).await, ["T", "D 1", "C SELECT 1", "Z I"]);
    assert_eq!(exchange(&mut a, &use_unnamed, 1).await, ["E 26000", "Z I"]);
    // The same sequence directly, for reference.
    let mut d = login(pg.port()).await;
    exchange(&mut d, &[parse("", "select 'A'::text"), sync()].concat(), 1).await;
    assert_eq!(exchange(&mut d, &use_unnamed, 1).await, ["2", "D A", "C SELECT 1", "Z I"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_skipped_after_an_error_are_taken_back() {
    let pg = TestPg::start().await;
    let px = proxy(&pg, &[("max_prepared_statements", "2")]).await;
    // Another client leaves "select 3" prepared on the one server, so pgsluice answers a later Parse of
    // it itself; and "select 1"/"select 2" fill the cache of two.
    let mut other = login(px.port()).await;
    exchange(&mut other, &[parse("x", "select 3"), sync()].concat(), 1).await;
    let use_stmt = |name: &str| [bind("", name, &[]), execute("", 0), sync()].concat();
    let steps = vec![
        ([parse("s1", "select 1"), parse("s2", "select 2"), sync()].concat(), 1),
        // An error first: the server skips the rest, so s3 (answered by pgsluice, the server has it) is
        // not parsed, the Close of s1 is not run, and the Parse of s4 (which evicts s1 from the server's
        // cache of two) is not run either.
        (
            [
                parse("bad", "select nosuchcolumn"),
                parse("s3", "select 3"),
                close(b'S', "s1"),
                parse("s4", "select 4"),
                sync(),
            ]
            .concat(),
            1,
        ),
        (use_stmt("s1"), 1),
        (use_stmt("s3"), 1),
        (use_stmt("s4"), 1),
        ([parse("s3", "select 3"), bind("", "s3", &[]), execute("", 0), sync()].concat(), 1),
        ([parse("s4", "select 4"), bind("", "s4", &[]), execute("", 0), sync()].concat(), 1),
        (use_stmt("s2"), 1),
        (query("select count(*) <= 2 from pg_prepared_statements"), 1),
    ];
    let (direct, proxied) = both(&pg, &px, &steps).await;
    assert_eq!(direct[2], ["2", "D 1", "C SELECT 1", "Z I"], "PostgreSQL skipped the Close");
    assert_eq!(direct[3], ["E 26000", "Z I"], "and the Parse of s3");
    // pg_prepared_statements differs (pgsluice's names, bounded cache); everything else is identical.
    assert_eq!(proxied[..8], direct[..8]);
    assert_eq!(proxied[8], ["T", "D t", "C SELECT 1", "Z I"], "the server's cache stays bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgsluices_own_errors_fail_the_batch_and_the_block_on_the_server() {
    let pg = TestPg::start().await;
    let px = proxy(&pg, &[]).await;
    let admin = pg.admin_client().await;
    admin.batch_execute("create table fidelity(x int); grant all on fidelity to public").await.unwrap();
    let steps = vec![
        ([parse("s1", "select 1"), sync()].concat(), 1),
        // The INSERT runs, then the duplicate name fails the batch: its implicit transaction rolls back.
        (
            [
                parse("", "insert into fidelity values (1)"),
                bind("", "", &[]),
                execute("", 0),
                parse("s1", "select 2"),
                sync(),
            ]
            .concat(),
            1,
        ),
        (query("select count(*) from fidelity"), 1),
        // Inside a block the duplicate fails the block ('E') until ROLLBACK.
        (query("begin"), 1),
        ([parse("s1", "select 2"), sync()].concat(), 1),
        (query("select 1"), 1),
        (query("rollback"), 1),
        // DEALLOCATE answered by pgsluice, pipelined after BEGIN: the status is the server's.
        ([query("begin"), query("deallocate s1"), query("deallocate nosuch"), query("rollback")].concat(), 4),
        ([parse("s1", "select 5"), bind("", "s1", &[]), execute("", 0), sync()].concat(), 1),
    ];
    let (direct, proxied) = both(&pg, &px, &steps).await;
    assert_eq!(direct[2], ["T", "D 0", "C SELECT 1", "Z I"]);
    assert_eq!(direct[4], ["E 42P05", "Z E"]);
    assert_eq!(proxied, direct);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_all_is_noticed_in_any_form() {
    let pg = TestPg::start().await;
    let px = proxy(&pg, &[]).await;
    let mut a = login(px.port()).await;
    let mut b = login(px.port()).await;
    let select_one = [parse("mine", "select 1"), bind("", "mine", &[]), execute("", 0), sync()].concat();
    for (i, drop_all) in [
        query("select 1; deallocate all"),
        [parse("", "deallocate all"), bind("", "", &[]), execute("", 0), sync()].concat(),
        query("discard all"),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("s{i}");
        let reply = exchange(&mut a, &[parse(&name, "select 1"), sync()].concat(), 1).await;
        assert_eq!(reply, ["1", "Z I"]);
        exchange(&mut a, &drop_all, 1).await;
        // A's name is gone, as on a direct connection.
        let reply = exchange(&mut a, &[bind("", &name, &[]), execute("", 0), sync()].concat(), 1).await;
        assert_eq!(reply, ["E 26000", "Z I"], "form {i}");
        // B's statement of the same text is prepared again on the server, not assumed to be there.
        let reply = exchange(&mut b, &select_one, 1).await;
        assert_eq!(reply, ["1", "2", "D 1", "C SELECT 1", "Z I"], "form {i}");
        exchange(&mut b, &[close(b'S', "mine"), sync()].concat(), 1).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_survive_server_reset_query_always() {
    let pg = TestPg::start().await;
    let px = proxy(&pg, &[("server_reset_query_always", "true")]).await;
    let c = px.client("trust_user", "", "app").await;
    let stmt = c.prepare("select $1::int4 + 1").await.unwrap();
    // DISCARD ALL runs after every transaction: each Bind finds the statement prepared again.
    for i in 0..3 {
        let v: i32 = c.query_one(&stmt, &[&i]).await.unwrap().get(0);
        assert_eq!(v, i + 1);
    }
}
