//! auth_user / auth_query against a real PostgreSQL, with an auth file that holds only the lookup
//! users: SCRAM secrets from pg_authid authenticate the client and the server login reuses the keys
//! from the client's own proof (SCRAM passthrough), md5 secrets work too, expired and NOLOGIN roles,
//! unknown users and wrong passwords all get the same 28P01, the name is a bound parameter, and a
//! database entry's own auth_user/auth_query (a SECURITY DEFINER function) wins over the general one.

mod common;

use common::certs::message;
use common::{Proxy, TestPg, scalar};

const SETUP: &str = "
create role lookup_user login superuser password 'lookup_pw';
create role lookup_fn_user login password 'lookup_fn_pw';
create role alice login password 'alice_pw';
create role expired_bob login password 'bob_pw' valid until '2000-01-01';
create role nologin_carol nologin password 'carol_pw';
set password_encryption = 'md5';
create role dave login password 'dave_pw';
reset password_encryption;
grant all on database app to public;
create function public.get_auth(p_usename text) returns table(username text, password text)
  language sql security definer set search_path = pg_catalog
  as $$ select rolname::text, rolpassword::text from pg_catalog.pg_authid where rolname = p_usename and rolcanlogin $$;
revoke all on function public.get_auth(text) from public;
grant execute on function public.get_auth(text) to lookup_fn_user;
";

async fn start() -> (TestPg, Proxy) {
    // dave's secret is md5, which an scram-sha-256 line cannot check: give him an md5 line.
    let pg = TestPg::start_with(|data| {
        let path = data.join("pg_hba.conf");
        let hba = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("host all dave 127.0.0.1/32 md5\n{hba}")).unwrap();
    })
    .await;
    let admin = pg.admin_client().await;
    admin.batch_execute(SETUP).await.unwrap();
    let px = Proxy::builder(&pg)
        .auth_type("md5")
        .userlist(&[("lookup_user", "lookup_pw"), ("lookup_fn_user", "lookup_fn_pw")])
        .general("auth_user", "\"lookup_user\"")
        .database("fnapp", "dbname = \"app\", auth_user = \"lookup_fn_user\", auth_query = \"select username, password from public.get_auth($1)\"")
        .database("broken", "dbname = \"app\", auth_query = \"select * from no_such_function($1)\"")
        .start()
        .await;
    (pg, px)
}

fn code(e: &tokio_postgres::Error) -> Option<String> {
    e.as_db_error().map(|d| d.code().code().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_missing_from_the_auth_file_log_in_with_secrets_from_pg_authid() {
    let (_pg, px) = start().await;
    // SCRAM: pgsluice never had alice's password; the server login reuses her proof's keys.
    let alice = px.client("alice", "alice_pw", "app").await;
    assert_eq!(scalar(&alice, "select current_user").await, "alice");
    // md5: the secret from pg_authid logs in to the server as well.
    let dave = px.client("dave", "dave_pw", "app").await;
    assert_eq!(scalar(&dave, "select current_user").await, "dave");
    // Whatever is wrong, the same answer: 28P01, "password authentication failed".
    for (user, pw, why) in [
        ("alice", "wrong", "a wrong password"),
        ("nobody", "x", "an unknown user"),
        ("expired_bob", "bob_pw", "VALID UNTIL in the past"),
        ("nologin_carol", "carol_pw", "NOLOGIN"),
    ] {
        let e = px.try_client(user, pw, "app").await.expect_err(why);
        assert_eq!(code(&e).as_deref(), Some("28P01"), "{why}: {e}");
        assert!(message(&e).contains("password authentication failed"), "{why}: {e}");
    }
    // A name that would be SQL if it were spliced into the query: it is a bound parameter.
    let mut conf = tokio_postgres::Config::new();
    conf.host("127.0.0.1").port(px.port()).user("alice' or '1'='1").password("x").dbname("app");
    let e = conf.connect(tokio_postgres::NoTls).await.err().expect("no such user");
    assert_eq!(code(&e).as_deref(), Some("28P01"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_entry_uses_its_own_lookup_and_a_failing_query_refuses_without_details() {
    let (pg, px) = start().await;
    // fnapp: a non-superuser calling a SECURITY DEFINER function.
    let alice = px.client("alice", "alice_pw", "fnapp").await;
    assert_eq!(scalar(&alice, "select current_user").await, "alice");
    // A password changed in PostgreSQL counts at the next login.
    pg.admin_client().await.batch_execute("alter role alice password 'new_pw'").await.unwrap();
    let e = px.try_client("alice", "alice_pw", "fnapp").await.expect_err("old password");
    assert_eq!(code(&e).as_deref(), Some("28P01"), "{e}");
    let again = px.client("alice", "new_pw", "fnapp").await;
    assert_eq!(scalar(&again, "select 'new'").await, "new");
    // A lookup that fails is refused (28000) without the server's error; the log has it.
    let e = px.try_client("alice", "new_pw", "broken").await.expect_err("broken auth_query");
    assert_eq!(code(&e).as_deref(), Some("28000"), "{e}");
    assert!(!message(&e).contains("no_such_function"), "{e}");
    assert!(px.log_contents().contains("no_such_function"), "the operator sees why");
}
