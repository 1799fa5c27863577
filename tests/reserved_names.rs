//! pgsluice's server-side statement names (`pgsluice_<16 hex digits>`, visible in pg_prepared_statements)
//! cannot be run, replaced or deallocated by a client's SQL: such text is refused with 42501, so one
//! client can never reach into another's statements. A pool of one, so both clients share the server.

mod common;

use common::console::code;
use common::{Proxy, TestPg, scalar};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_naming_a_pooled_statement_is_refused_and_the_owner_keeps_its_statement() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").pool_size(1).start().await;
    let a = px.client("trust_user", "", "app").await;
    let stmt = a.prepare("select 'a:' || $1::text").await.unwrap();
    assert_eq!(a.query_one(&stmt, &[&"1"]).await.unwrap().get::<_, String>(0), "a:1");

    let b = px.client("trust_user", "", "app").await;
    let name = scalar(&b, "select name from pg_prepared_statements where name like 'pgsluice%'").await;
    assert_eq!(name.len(), "pgsluice_".len() + 16, "{name}");
    let upper = name.to_uppercase();
    for sql in [
        format!("execute {name}('x')"),
        format!("EXECUTE {upper}('x')"),
        format!("deallocate {name}"),
        format!("select 1; deallocate prepare \"{name}\""),
        format!("prepare {name}(text) as select 'b:' || $1"),
    ] {
        let e = b.simple_query(&sql).await.expect_err(&sql);
        assert_eq!(code(&e).as_deref(), Some("42501"), "{sql}: {e:?}");
    }
    // Through the extended protocol too (a Parse of that text).
    let e = b.prepare(&format!("execute {name}($1)")).await.expect_err("extended");
    assert_eq!(code(&e).as_deref(), Some("42501"));
    // Inside a transaction the refusal fails the block, as any error does.
    b.batch_execute("begin").await.unwrap();
    assert!(b.simple_query(&format!("deallocate {name}")).await.is_err());
    let e = b.simple_query("select 1").await.expect_err("aborted block");
    assert_eq!(code(&e).as_deref(), Some("25P02"));
    b.batch_execute("rollback").await.unwrap();

    // A's statement is still its own.
    assert_eq!(a.query_one(&stmt, &[&"2"]).await.unwrap().get::<_, String>(0), "a:2");
    // Ordinary text mentioning pgsluice is fine.
    assert_eq!(scalar(&b, "select 'pgsluice_is_not_a_statement'").await, "pgsluice_is_not_a_statement");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_of_a_sql_prepared_statement_reaches_postgres() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").pool_size(1).start().await;
    let a = px.client("trust_user", "", "app").await;
    a.batch_execute("prepare p as select 'a'::text").await.unwrap();
    a.batch_execute("deallocate p").await.unwrap();
    // The same server, the next client: p is gone from it, so B's own p is B's.
    let b = px.client("trust_user", "", "app").await;
    b.batch_execute("prepare p as select 'b'::text").await.unwrap();
    assert_eq!(scalar(&b, "execute p").await, "b");
    b.batch_execute("deallocate p").await.unwrap();
    // And an unknown name gets PostgreSQL's own answer.
    let e = b.batch_execute("deallocate nothing_here").await.expect_err("unknown");
    assert_eq!(code(&e).as_deref(), Some("26000"));
}
