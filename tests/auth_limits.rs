//! Client authentication (trust, md5, SCRAM; wrong password and unknown user look the same) and the
//! client caps (max_client_conn, per-user and per-database) answered with 53300.

mod common;

use common::{Proxy, TestPg};
use tokio_postgres::error::SqlState;

fn code(e: &tokio_postgres::Error) -> Option<SqlState> {
    e.as_db_error().map(|d| d.code().clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_md5_and_trust_logins_work() {
    let pg = TestPg::start().await;
    for auth_type in ["scram-sha-256", "md5"] {
        let px = Proxy::builder(&pg).auth_type(auth_type).start().await;
        for (user, pw) in [("scram_user", "scram_pw"), ("md5_user", "md5_pw")] {
            let c = px.try_client(user, pw, "app").await.unwrap_or_else(|e| panic!("{auth_type} {user}: {e}"));
            let who = common::scalar(&c, "select current_user").await;
            assert_eq!(who, user);
        }
    }
    let px = Proxy::builder(&pg).auth_type("trust").start().await;
    let c = px.try_client("trust_user", "", "app").await.expect("trust login");
    c.simple_query("select 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_get_the_same_28p01() {
    let pg = TestPg::start().await;
    for auth_type in ["scram-sha-256", "md5", "plain"] {
        let px = Proxy::builder(&pg).auth_type(auth_type).start().await;
        let wrong = px.try_client("scram_user", "nope", "app").await.expect_err("wrong password refused");
        let unknown = px.try_client("nobody", "nope", "app").await.expect_err("unknown user refused");
        assert_eq!(code(&wrong), Some(SqlState::INVALID_PASSWORD), "{auth_type}: {wrong}");
        assert_eq!(code(&unknown), Some(SqlState::INVALID_PASSWORD), "{auth_type}: {unknown}");
        let strip = |e: &tokio_postgres::Error, u: &str| e.as_db_error().unwrap().message().replace(u, "USER");
        assert_eq!(strip(&wrong, "scram_user"), strip(&unknown, "nobody"), "{auth_type}: same text");
        // Unknown database with a wrong password is still 28P01 (no pre-auth enumeration).
        let e = px.try_client("scram_user", "nope", "nosuchdb").await.err().unwrap();
        assert_eq!(code(&e), Some(SqlState::INVALID_PASSWORD));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_database_after_auth_is_3d000() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).no_fallback_database().start().await;
    let e = px.try_client("scram_user", "scram_pw", "nosuchdb").await.err().unwrap();
    assert_eq!(code(&e), Some(SqlState::INVALID_CATALOG_NAME), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_client_conn_gives_53300_and_frees_on_disconnect() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).max_client_conn(3).start().await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(px.client("scram_user", "scram_pw", "app").await);
    }
    for _ in 0..2 {
        let e = px.try_client("scram_user", "scram_pw", "app").await.expect_err("4th client refused");
        assert_eq!(code(&e), Some(SqlState::TOO_MANY_CONNECTIONS), "{e}");
    }
    drop(held.pop());
    common::wait_for(std::time::Duration::from_secs(5), "a slot frees after a disconnect", || async {
        px.try_client("scram_user", "scram_pw", "app").await.is_ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_and_per_db_client_caps_give_53300() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg)
        .general("max_user_client_connections", "2")
        .general("max_db_client_connections", "3")
        .start()
        .await;
    let a1 = px.client("scram_user", "scram_pw", "app").await;
    let _a2 = px.client("scram_user", "scram_pw", "app").await;
    let e = px.try_client("scram_user", "scram_pw", "app").await.err().unwrap();
    assert_eq!(code(&e), Some(SqlState::TOO_MANY_CONNECTIONS), "per-user cap: {e}");
    let _b1 = px.client("md5_user", "md5_pw", "app").await;
    let e = px.try_client("md5_user", "md5_pw", "app").await.err().unwrap();
    assert_eq!(code(&e), Some(SqlState::TOO_MANY_CONNECTIONS), "per-db cap: {e}");
    // Failed logins are not counted, and a disconnect frees the slot.
    let _ = px.try_client("scram_user", "wrong", "app").await;
    drop(a1);
    common::wait_for(std::time::Duration::from_secs(5), "user slot freed", || async {
        px.try_client("scram_user", "scram_pw", "app").await.is_ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_login_failure_reaches_the_client_fast() {
    let pg = TestPg::start().await;
    // The auth file has the wrong password for md5_user as the server sees it: the client logs in to
    // pgsluice (trust) but the server refuses pgsluice.
    let px = Proxy::builder(&pg).auth_type("trust").userlist(&[("md5_user", "not-the-server-password")]).start().await;
    let started = std::time::Instant::now();
    let e = px.try_client("md5_user", "", "app").await.expect_err("server refuses the login");
    assert_eq!(code(&e), Some(SqlState::INVALID_PASSWORD), "{e}");
    let e = px.try_client("md5_user", "", "app").await.expect_err("still refused, from server_login_retry");
    assert_eq!(code(&e), Some(SqlState::INVALID_PASSWORD), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
