//! Pools made from the `"*"` entry are bounded: dropped with their counters after autodb_idle_timeout
//! unused, and at most autodb_max_pools of them at once.

mod common;

use std::time::Duration;

use common::console::{self, code, show, value};
use common::{Proxy, TestPg, wait_for};

async fn create_databases(pg: &TestPg, names: &[&str]) {
    let admin = pg.admin_client().await;
    for n in names {
        admin.batch_execute(&format!("create database {n}")).await.unwrap();
    }
}

/// The databases listed by a console SHOW command.
async fn listed(console: &tokio_postgres::Client, cmd: &str) -> Vec<String> {
    let (cols, rows) = show(console, cmd).await;
    rows.iter().map(|r| value(&cols, r, "database")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_auto_created_pool_is_dropped_with_its_counters_and_a_used_one_is_kept() {
    let pg = TestPg::start().await;
    create_databases(&pg, &["auto_a", "auto_b"]).await;
    let px = Proxy::builder(&pg)
        .auth_type("trust")
        .general("admin_users", &format!("{:?}", console::ADMIN.0))
        .general("autodb_idle_timeout", "1")
        .start()
        .await;
    let console = px.client(console::ADMIN.0, console::ADMIN.1, "pgbouncer").await;
    let a = px.client("trust_user", "", "auto_a").await;
    assert_eq!(common::scalar(&a, "select current_database()").await, "auto_a");
    drop(a);
    let b = px.client("trust_user", "", "auto_b").await; // stays connected, idle
    common::scalar(&b, "select 1").await;
    assert!(listed(&console, "SHOW POOLS").await.contains(&"auto_a".to_string()));

    wait_for(Duration::from_secs(10), "auto_a's pool dropped", || async {
        !listed(&console, "SHOW POOLS").await.contains(&"auto_a".to_string())
    })
    .await;
    assert!(!listed(&console, "SHOW STATS").await.contains(&"auto_a".to_string()), "its counters went too");
    let admin = pg.admin_client().await;
    wait_for(Duration::from_secs(10), "auto_a's server closed", || async {
        let q = "select count(*) from pg_stat_activity where datname = 'auto_a'";
        admin.query_one(q, &[]).await.unwrap().get::<_, i64>(0) == 0
    })
    .await;
    // The pool with a client logged in survived the same idle time, and still serves.
    assert!(listed(&console, "SHOW POOLS").await.contains(&"auto_b".to_string()));
    assert_eq!(common::scalar(&b, "select current_database()").await, "auto_b");
    // A dropped pool is made again on demand.
    let again = px.client("trust_user", "", "auto_a").await;
    assert_eq!(common::scalar(&again, "select current_database()").await, "auto_a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_created_pools_are_capped_by_autodb_max_pools() {
    let pg = TestPg::start().await;
    create_databases(&pg, &["auto_a", "auto_b", "auto_c"]).await;
    let px = Proxy::builder(&pg).auth_type("trust").general("autodb_max_pools", "2").start().await;
    let _a = px.client("trust_user", "", "auto_a").await;
    let _b = px.client("trust_user", "", "auto_b").await;
    let refused = px.try_client("trust_user", "", "auto_c").await.expect_err("a third auto pool is refused");
    assert_eq!(code(&refused).as_deref(), Some("53300"));
    let message = refused.as_db_error().map(|e| e.message().to_string()).unwrap_or_default();
    assert!(message.contains("autodb_max_pools"), "{message}");
    // Existing auto pools and configured databases are unaffected.
    let more_a = px.client("trust_user", "", "auto_a").await;
    assert_eq!(common::scalar(&more_a, "select 'a'").await, "a");
    let app = px.client("trust_user", "", "app").await;
    assert_eq!(common::scalar(&app, "select 'app'").await, "app");
    // Each auto pool made is logged once, in PgBouncer's words; the refused one and `app` are not.
    let log = px.log_contents();
    let made: Vec<&str> = log.lines().filter(|l| l.contains("registered new auto-database: ")).collect();
    assert_eq!(made.len(), 2, "{log}");
    assert!(made[0].ends_with(": auto_a") && made[1].ends_with(": auto_b"), "{made:?}");
}
