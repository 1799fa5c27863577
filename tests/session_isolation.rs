//! `session_state = isolate` (the default) in transaction mode: session settings follow their client
//! from server to server and never reach another; state that cannot follow (advisory locks, temporary
//! tables, WITH HOLD cursors, LISTEN, SQL PREPARE) pins the client to its server until it is gone, and
//! a pinned client's server is cleaned when it leaves. Each outcome is what a direct connection to
//! PostgreSQL gives the same client.

mod common;

use std::time::Duration;

use common::{Proxy, TestPg, scalar};
use tokio_postgres::Client;

const USER: &str = "trust_user";

async fn pid(c: &Client) -> String {
    scalar(c, "select pg_backend_pid()::text").await
}

async fn show(c: &Client, name: &str) -> String {
    scalar(c, &format!("show {name}")).await
}

/// pgsluice in transaction mode with a pool of `size` and `general` settings.
async fn proxy(pg: &TestPg, size: usize, general: &[(&str, &str)]) -> Proxy {
    // One worker: `hold_server` relies on the pool handing out its most recently used idle server (with
    // several, a worker's own idle servers come first).
    let mut b = Proxy::builder(pg).auth_type("trust").pool_size(size).general("workers", "1");
    for (k, v) in general {
        b = b.general(k, v);
    }
    b.start().await
}

/// Makes `moving`'s next transaction run on a server other than `server`: `holder` opens a transaction
/// on `server` (the most recently used idle one) and keeps it open. Returns the holder's pid.
async fn hold_server(holder: &Client, server: &str) -> String {
    holder.batch_execute("begin").await.unwrap();
    let held = pid(holder).await;
    assert_eq!(held, server, "the holder took the server the other client just left");
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_settings_follow_their_client_and_never_reach_another() {
    let pg = TestPg::start().await;
    let px = proxy(&pg, 2, &[]).await;
    let (a, b) = (px.client(USER, "", "app").await, px.client(USER, "", "app").await);
    let default_work_mem = show(&b, "work_mem").await;
    a.batch_execute("set work_mem = '7MB'; set search_path = private_a, public; set statement_timeout = 4321")
        .await
        .unwrap();
    let first = pid(&a).await;
    // b lands on a's server: it sees none of a's settings.
    hold_server(&b, &first).await;
    assert_eq!(show(&b, "work_mem").await, default_work_mem);
    assert_eq!(show(&b, "search_path").await, "\"$user\", public");
    // a, on the other server, still has all of its own.
    let second = pid(&a).await;
    assert_ne!(first, second, "a moved");
    assert_eq!(show(&a, "work_mem").await, "7MB");
    assert_eq!(show(&a, "search_path").await, "private_a, public");
    assert_eq!(show(&a, "statement_timeout").await, "4321ms");
    b.batch_execute("commit").await.unwrap();
    // RESET ALL clears them for a wherever it goes.
    a.batch_execute("reset all").await.unwrap();
    assert_eq!(show(&a, "work_mem").await, default_work_mem);
    let c = px.client(USER, "", "app").await;
    for _ in 0..4 {
        assert_eq!(show(&c, "statement_timeout").await, "0");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_follows_postgresqls_transaction_semantics() {
    let pg = TestPg::start().await;
    // The same outcomes on two direct connections, and on two clients sharing one pooled server.
    let direct = || pg.direct("scram_user", "scram_pw", "app");
    transaction_semantics(&direct().await, &direct().await).await;
    let px = proxy(&pg, 1, &[]).await;
    transaction_semantics(&px.client(USER, "", "app").await, &px.client(USER, "", "app").await).await;
}

async fn transaction_semantics(a: &Client, b: &Client) {
    let default_work_mem = show(b, "work_mem").await;
    // Rolled back: nothing changes.
    a.batch_execute("begin; set work_mem = '9MB'; rollback").await.unwrap();
    assert_eq!(show(a, "work_mem").await, default_work_mem);
    // A failed SET, and a SET in a failed transaction: nothing changes.
    assert!(a.batch_execute("set work_mem = 'lots'").await.is_err());
    assert!(a.batch_execute("begin; select 1/0; set work_mem = '9MB'; commit").await.is_err());
    a.batch_execute("rollback").await.ok();
    assert_eq!(show(a, "work_mem").await, default_work_mem);
    // SET LOCAL ends with its transaction; a committed SET stays, for a only.
    a.batch_execute("begin; set local work_mem = '5MB'; commit").await.unwrap();
    assert_eq!(show(a, "work_mem").await, default_work_mem);
    a.batch_execute("begin; set work_mem = '9MB'; commit").await.unwrap();
    // set_config(..., false) in a SELECT is a session setting too; with true it is not.
    a.query("select set_config('statement_timeout', '1234', false), set_config('lock_timeout', '77', true)", &[])
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(show(b, "work_mem").await, default_work_mem);
        assert_eq!(show(b, "statement_timeout").await, "0");
        assert_eq!(show(a, "work_mem").await, "9MB");
        assert_eq!(show(a, "statement_timeout").await, "1234ms");
        assert_eq!(show(a, "lock_timeout").await, "0");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_role_is_the_clients_own() {
    let pg = TestPg::start().await;
    let admin = pg.admin_client().await;
    admin.batch_execute(&format!("create role iso_reader; grant iso_reader to {USER}")).await.unwrap();
    let px = proxy(&pg, 1, &[]).await;
    let (a, b) = (px.client(USER, "", "app").await, px.client(USER, "", "app").await);
    a.batch_execute("set role iso_reader").await.unwrap();
    for _ in 0..3 {
        assert_eq!(scalar(&a, "select current_user::text").await, "iso_reader");
        assert_eq!(scalar(&b, "select current_user::text").await, USER);
    }
    a.batch_execute("reset role").await.unwrap();
    assert_eq!(scalar(&a, "select current_user::text").await, USER);
}

/// Whether `key` is free: tries it from `c` and lets go at once.
async fn advisory_free(c: &Client, key: i64) -> bool {
    let got: bool = c.query_one("select pg_try_advisory_lock($1)", &[&key]).await.unwrap().get(0);
    if got {
        c.query("select pg_advisory_unlock($1)", &[&key]).await.unwrap();
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advisory_lock_pins_its_client_until_unlocked_or_gone() {
    let pg = TestPg::start().await;
    let px = proxy(&pg, 2, &[]).await;
    let (a, b) = (px.client(USER, "", "app").await, px.client(USER, "", "app").await);
    a.batch_execute("select pg_advisory_lock(42)").await.unwrap();
    let mine = pid(&a).await;
    // Held while a stays, and a keeps its server: b's transactions never get it.
    for _ in 0..3 {
        assert!(!advisory_free(&b, 42).await, "a's lock is held");
        assert_ne!(pid(&b).await, mine);
        assert_eq!(pid(&a).await, mine);
    }
    // Unlocked: a is unpinned, and its server is anybody's again.
    a.batch_execute("select pg_advisory_unlock(42)").await.unwrap();
    assert!(advisory_free(&b, 42).await);
    a.batch_execute("select pg_advisory_lock(43)").await.unwrap();
    drop(a);
    // Released when a leaves; the server is cleaned, not lost.
    common::wait_for(Duration::from_secs(10), "a's lock released", || async { advisory_free(&b, 43).await }).await;
    assert_eq!(pg.backends_for(USER).await, 2, "the server was cleaned and kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_table_and_a_with_hold_cursor_stay_with_their_client() {
    let pg = TestPg::start().await;
    let px = proxy(&pg, 2, &[]).await;
    let (a, b) = (px.client(USER, "", "app").await, px.client(USER, "", "app").await);
    a.batch_execute("create temp table scratch (x int); insert into scratch values (1), (2)").await.unwrap();
    a.batch_execute("declare c cursor with hold for select generate_series(1, 3) as n").await.unwrap();
    for expect in ["1", "2", "3"] {
        // b keeps the other server busy in between; a's state is where a is.
        b.batch_execute("select 1").await.unwrap();
        assert_eq!(scalar(&a, "select count(*)::text from scratch").await, "2");
        let row = a.query_one("fetch 1 from c", &[]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0).to_string(), expect);
    }
    let temp_here = "select count(*)::text from pg_class where relnamespace = pg_my_temp_schema()";
    assert_eq!(scalar(&b, temp_here).await, "0", "b's server has no temporary table");
    drop(a);
    // The server a leaves has neither: every client now sees none, wherever it lands.
    let (c, d) = (px.client(USER, "", "app").await, px.client(USER, "", "app").await);
    common::wait_for(Duration::from_secs(10), "a gone", || async { pg.backends_for(USER).await == 2 }).await;
    c.batch_execute("begin").await.unwrap();
    d.batch_execute("begin").await.unwrap();
    for x in [&c, &d] {
        assert_eq!(scalar(x, temp_here).await, "0");
        assert_eq!(scalar(x, "select count(*)::text from pg_cursors").await, "0");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prepare_is_the_clients_own_and_execute_never_runs_anothers() {
    let pg = TestPg::start().await;
    let admin = pg.admin_client().await;
    admin.batch_execute(&format!("create table a_private (secret text); insert into a_private values ('a-only'); grant all on a_private to {USER}")).await.unwrap();
    let px = proxy(&pg, 2, &[]).await;
    let (a, b) = (px.client(USER, "", "app").await, px.client(USER, "", "app").await);
    a.batch_execute("prepare p as select secret from a_private").await.unwrap();
    // b's own p, and b never runs a's.
    b.batch_execute("prepare p as select 'b-own'::text").await.unwrap();
    for _ in 0..3 {
        assert_eq!(scalar(&b, "execute p").await, "b-own");
        assert_eq!(scalar(&a, "execute p").await, "a-only");
    }
    // a is not pinned: its statement follows it to the other server.
    let first = pid(&a).await;
    hold_server(&b, &first).await;
    assert_eq!(scalar(&a, "execute p").await, "a-only");
    assert_ne!(pid(&a).await, first, "a moved");
    b.batch_execute("commit").await.unwrap();
    // As on a direct connection: a second PREPARE of the name fails, a failed PREPARE leaves nothing,
    // and an unknown name is unknown (26000), whoever else has one.
    let e = a.batch_execute("prepare p as select 1").await.expect_err("exists");
    assert_eq!(e.code().map(|c| c.code()), Some("42P05"));
    assert!(a.batch_execute("prepare broken as select * from no_such_table").await.is_err());
    let e = a.batch_execute("execute broken").await.expect_err("never prepared");
    assert_eq!(e.code().map(|c| c.code()), Some("26000"));
    let pinned = "select count(*)::text from pg_prepared_statements where from_sql and name = 'p'";
    assert_eq!(scalar(&a, pinned).await, "0", "no statement of a client's keeps its own name on a server");
    // The reproduction: DEALLOCATE reaches PostgreSQL, so the next client of that server can
    // PREPARE the same name, and its EXECUTE runs its own statement.
    a.batch_execute("deallocate p").await.unwrap();
    b.batch_execute("deallocate p").await.unwrap();
    let c = px.client(USER, "", "app").await;
    c.batch_execute("prepare p as select 'c-own'::text").await.unwrap();
    assert_eq!(scalar(&c, "execute p").await, "c-own");
    let e = a.batch_execute("execute p").await.expect_err("a deallocated its p");
    assert_eq!(e.code().map(|c| c.code()), Some("26000"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_pins_and_a_notify_reaches_only_the_listener() {
    use common::wire::{RawConn, fe};
    let pg = TestPg::start().await;
    let px = proxy(&pg, 2, &[]).await;
    let (mut listener, _, _) = RawConn::login_with_key(px.port(), USER, "app").await;
    let (mut other, _, _) = RawConn::login_with_key(px.port(), USER, "app").await;
    listener.send(&fe::query("listen ch")).await;
    while listener.read_message(Duration::from_secs(5)).await.expect("LISTEN answered").0 != b'Z' {}
    let notifier = px.client(USER, "", "app").await;
    notifier.batch_execute("notify ch, 'hello'").await.unwrap();
    let got = loop {
        match listener.read_message(Duration::from_secs(5)).await {
            Some((b'A', body)) => break body,
            Some(_) => {}
            None => panic!("the listener got no notification\n{}", px.log_contents()),
        }
    };
    assert!(got.windows(5).any(|w| w == b"hello"));
    // The other client, on whichever server, gets nothing of it.
    other.send(&fe::query("select 1")).await;
    loop {
        match other.read_message(Duration::from_secs(5)).await.expect("answered") {
            (b'A', _) => panic!("a notification reached a client that did not listen"),
            (b'Z', _) => break,
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_idle_client_is_disconnected_after_pinned_idle_timeout() {
    let pg = TestPg::start().await;
    let px = proxy(&pg, 1, &[("pinned_idle_timeout", "1")]).await;
    let a = px.client(USER, "", "app").await;
    a.batch_execute("select pg_advisory_lock(7)").await.unwrap();
    let started = std::time::Instant::now();
    // b waits for the only server; it gets it when a is dropped, with a's lock gone.
    let b = px.client(USER, "", "app").await;
    assert!(advisory_free(&b, 7).await);
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}\n{}", started.elapsed(), px.log_contents());
    let e = a.batch_execute("select 1").await.expect_err("a was disconnected");
    assert!(e.is_closed() || e.code().map(|c| c.code()) == Some("57P05"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leak_keeps_pgbouncers_behaviour() {
    let pg = TestPg::start().await;
    let px = proxy(&pg, 1, &[("session_state", "\"leak\"")]).await;
    let (a, b) = (px.client(USER, "", "app").await, px.client(USER, "", "app").await);
    a.batch_execute("set work_mem = '11MB'").await.unwrap();
    assert_eq!(show(&b, "work_mem").await, "11MB", "as in PgBouncer, the next client of the server sees it");
}

/// The SQLSTATE and hint of a failed statement.
fn refused(e: &tokio_postgres::Error) -> (String, String) {
    let db = e.as_db_error().unwrap_or_else(|| panic!("not a server error: {e}"));
    (db.code().code().to_string(), db.hint().unwrap_or_default().to_string())
}

/// `rewriting`: prepared statements are rewritten (pgsluice answers in PostgreSQL's place). Without it a
/// refused Parse becomes a statement that raises the error when run, which takes no parameters.
async fn refuse_mode_refuses_what_would_make_session_state(general: &[(&str, &str)], rewriting: bool) {
    let pg = TestPg::start().await;
    let mut settings = vec![("session_state", "\"refuse\"")];
    settings.extend_from_slice(general);
    let px = proxy(&pg, 1, &settings).await;
    let a = px.client(USER, "", "app").await;
    let default_work_mem = show(&a, "work_mem").await;
    for sql in [
        "set work_mem = '3MB'",
        "select 1; set search_path = x",
        "reset all",
        "set role none",
        "listen ch",
        "prepare p as select 1",
        "create temp table t (x int)",
        "declare c cursor with hold for select 1",
        "select pg_advisory_lock(5)",
        "select set_config('work_mem', '3MB', false)",
    ] {
        let e = a.batch_execute(sql).await.expect_err(sql);
        let (code, hint) = refused(&e);
        assert_eq!(code, "0A000", "{sql}: {e}");
        assert!(hint.contains("pool_mode = session"), "{sql}: {hint}");
    }
    // The extended protocol too, and inside a block the refusal fails the transaction as PostgreSQL would.
    let e = a.query("select pg_advisory_lock(5)", &[]).await.expect_err("extended");
    assert_eq!(refused(&e).0, "0A000");
    if rewriting {
        let e = a.query("select pg_advisory_lock($1)", &[&5i64]).await.expect_err("extended, with a parameter");
        assert_eq!(refused(&e).0, "0A000");
    }
    a.batch_execute("begin").await.unwrap();
    assert!(a.batch_execute("set work_mem = '3MB'").await.is_err());
    let e = a.batch_execute("select 1").await.expect_err("the block is aborted");
    assert_eq!(e.code().map(|c| c.code()), Some("25P02"));
    a.batch_execute("rollback").await.unwrap();
    // Nothing ran, and what keeps no session state runs.
    assert_eq!(show(&a, "work_mem").await, default_work_mem);
    assert_eq!(scalar(&a, "select count(*)::text from pg_locks where locktype = 'advisory'").await, "0");
    a.batch_execute("begin; set local work_mem = '3MB'; select pg_advisory_xact_lock(5); commit").await.unwrap();
    a.batch_execute("select 'set work_mem = 1' -- reset all").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_mode_refuses_what_would_make_session_state_with_0a000() {
    refuse_mode_refuses_what_would_make_session_state(&[], true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_mode_refuses_without_statement_rewriting_too() {
    refuse_mode_refuses_what_would_make_session_state(&[("max_prepared_statements", "0")], false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_are_shown_in_show_clients_and_counted_in_metrics() {
    use common::console::{ADMIN, show as console_show, value};
    let pg = TestPg::start().await;
    let mport = common::pg::free_port();
    let px = Proxy::builder(&pg)
        .auth_type("trust")
        .pool_size(2)
        .general("admin_users", &format!("{:?}", ADMIN.0))
        .general("metrics_addr", &format!("\"127.0.0.1:{mport}\""))
        .start()
        .await;
    let a = px.client(USER, "", "app").await;
    a.batch_execute("select pg_advisory_lock(1); set work_mem = '6MB'").await.unwrap();
    // The check runs after a's ReadyForQuery went out and before a is read again: once a's next query is
    // answered, the pin is recorded.
    scalar(&a, "select 1").await;
    let b = px.client(USER, "", "app").await;
    b.batch_execute("set work_mem = '5MB'").await.unwrap();
    let console = px.client(ADMIN.0, ADMIN.1, "pgbouncer").await;
    let (cols, rows) = console_show(&console, "show clients").await;
    let mut pins: Vec<String> =
        rows.iter().filter(|r| value(&cols, r, "database") == "app").map(|r| value(&cols, r, "pinned")).collect();
    pins.sort();
    assert_eq!(pins, ["", "advisory lock"], "b is not pinned; a is, and why");
    let (_, body) = common::http_get(mport, "/metrics").await;
    let metric = |name: &str| {
        body.lines()
            .find(|l| l.starts_with(name) && l.contains("database=\"app\""))
            .unwrap_or_else(|| panic!("{name} in {body}"))
            .rsplit_once(' ')
            .map(|(_, v)| v.to_string())
            .unwrap_or_default()
    };
    assert_eq!(metric("pgsluice_session_pins_total"), "1");
    assert_eq!(metric("pgsluice_pool_pinned_clients"), "1");
    drop(a);
    common::wait_for(Duration::from_secs(10), "a's pin gone from the gauge", || async {
        let (_, body) = common::http_get(mport, "/metrics").await;
        body.lines().any(|l| l.starts_with("pgsluice_pool_pinned_clients") && l.contains("app") && l.ends_with(" 0"))
    })
    .await;
    // b moves to the other server: its work_mem goes with it (applied there: counted).
    let c = px.client(USER, "", "app").await;
    let b_server = pid(&b).await;
    hold_server(&c, &b_server).await;
    assert_eq!(show(&b, "work_mem").await, "5MB");
    assert_ne!(pid(&b).await, b_server);
    let (_, body) = common::http_get(mport, "/metrics").await;
    assert!(
        body.lines().any(|l| l.starts_with("pgsluice_session_settings_applied_total") && !l.ends_with(" 0")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leak_log_names_a_pinned_client_holding_its_server_idle() {
    let pg = TestPg::start().await;
    let px = proxy(&pg, 2, &[("idle_transaction_warn", "1")]).await;
    let a = px.client_with(USER, "", "app", &[("application_name", "holder")]).await;
    a.batch_execute("create temp table kept (x int)").await.unwrap();
    common::wait_for(Duration::from_secs(10), "the leak warning", || async {
        px.log_contents().contains("pinned to its server by session state, idle")
    })
    .await;
    let log = px.log_contents();
    let line = log.lines().find(|l| l.contains("pinned to its server by session state")).unwrap();
    assert!(line.contains("temporary table") && line.contains("holder"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_parameters_follow_their_client_too() {
    // PostgreSQL lists no custom parameter (app.tenant) in pg_settings: pgsluice reads back the ones a
    // client's SET, RESET or set_config names. Row-level security keyed on one is the common case.
    let pg = TestPg::start().await;
    let px = proxy(&pg, 1, &[]).await;
    let (a, b) = (px.client(USER, "", "app").await, px.client(USER, "", "app").await);
    a.batch_execute("set app.tenant = 'alpha'").await.unwrap();
    b.query("select set_config('app.tenant', $1, false)", &[&"beta"]).await.unwrap();
    let tenant = "select coalesce(current_setting('app.tenant', true), '')";
    for _ in 0..3 {
        assert_eq!(scalar(&a, tenant).await, "alpha");
        assert_eq!(scalar(&b, tenant).await, "beta");
    }
    a.batch_execute("reset app.tenant").await.unwrap();
    let c = px.client(USER, "", "app").await;
    for x in [&a, &c] {
        assert_eq!(scalar(x, tenant).await, "");
    }
    assert_eq!(scalar(&b, tenant).await, "beta");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_authorization_is_the_clients_own_and_discard_all_clears_everything() {
    let pg = TestPg::start().await;
    let admin = pg.admin_client().await;
    // SET SESSION AUTHORIZATION needs a superuser's session.
    admin.batch_execute(&format!("create role iso_other; alter role {USER} superuser")).await.unwrap();
    let px = proxy(&pg, 2, &[]).await;
    let (a, b) = (px.client(USER, "", "app").await, px.client(USER, "", "app").await);
    a.batch_execute("set session authorization iso_other; set work_mem = '3MB'").await.unwrap();
    let who = "select session_user::text || '/' || current_user::text";
    let first = pid(&a).await;
    hold_server(&b, &first).await;
    assert_eq!(scalar(&b, who).await, format!("{USER}/{USER}"), "b on the server a left");
    assert_eq!(scalar(&a, who).await, "iso_other/iso_other", "a on the other server");
    b.batch_execute("commit").await.unwrap();
    // DISCARD ALL ends all of a's session state, wherever a goes next.
    a.batch_execute("discard all").await.unwrap();
    for _ in 0..3 {
        assert_eq!(scalar(&a, who).await, format!("{USER}/{USER}"));
        assert_eq!(show(&a, "work_mem").await, "4MB");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_config_of_a_computed_name_pins_and_is_reset_when_its_client_leaves() {
    let pg = TestPg::start().await;
    let px = proxy(&pg, 2, &[]).await;
    let a = px.client(USER, "", "app").await;
    a.query("select set_config($1, 'a-secret', false)", &[&"app.secret"]).await.unwrap();
    let secret = "select coalesce(current_setting('app.secret', true), '')";
    let mine = pid(&a).await;
    for _ in 0..3 {
        assert_eq!(scalar(&a, secret).await, "a-secret");
        assert_eq!(pid(&a).await, mine, "pinned: which parameter it set is unknown");
    }
    drop(a);
    // Two transactions held open at once cover both servers: one of them waits for a's, cleaned.
    let (c, d) = (px.client(USER, "", "app").await, px.client(USER, "", "app").await);
    c.batch_execute("begin").await.unwrap();
    d.batch_execute("begin").await.unwrap();
    for x in [&c, &d] {
        assert_eq!(scalar(x, secret).await, "", "no later client of either server sees a's value");
    }
}
