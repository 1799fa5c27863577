//! The console's control commands: KILL and KILL_CLIENT, PAUSE/RESUME under load, RECONNECT, WAIT_CLOSE,
//! DISABLE/ENABLE, SUSPEND, and RELOAD of pool sizes and servers.

mod common;

use std::time::Duration;

use common::console::{ADMIN, code, proxy, show, value};
use common::{Proxy, TestPg};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_clients_and_kill_client_and_kill() {
    use common::wire::{RawConn, error_fields, query_message};
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg)
        .auth_type("trust")
        .userlist(&[("trust_user", ""), (ADMIN.0, ADMIN.1)])
        .general("admin_users", &format!("{:?}", ADMIN.0))
        .pool_size(2)
        .no_fallback_database()
        .start()
        .await;
    let console = px.client(ADMIN.0, ADMIN.1, "pgbouncer").await;
    // A holds a row lock inside a transaction; B is idle.
    let (mut a, _, _) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
    a.send(&query_message("begin; update accounts set balance = balance where id = 1")).await;
    a.read_until_ready().await;
    let (mut b, _, _) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
    let (cols, rows) = show(&console, "show clients").await;
    assert_eq!(cols.len(), 24, "PgBouncer's 21 columns, then xact_us, idle_in_xact_us and pinned");
    assert_eq!(cols[20..], ["id", "xact_us", "idle_in_xact_us", "pinned"]);
    // The console itself is listed too, under the pgbouncer database.
    let (console_rows, rows): (Vec<_>, Vec<_>) =
        rows.into_iter().partition(|r| value(&cols, r, "database") == "pgbouncer");
    assert_eq!(console_rows.len(), 1, "{console_rows:?}");
    let states: Vec<String> = rows.iter().map(|r| value(&cols, r, "state")).collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(states.contains(&"active".to_string()) && states.contains(&"idle".to_string()), "{states:?}");
    let a_row = rows.iter().find(|r| value(&cols, r, "state") == "active").unwrap();
    let a_id = value(&cols, a_row, "id");
    let (xact, idle): (u64, u64) =
        (value(&cols, a_row, "xact_us").parse().unwrap(), value(&cols, a_row, "idle_in_xact_us").parse().unwrap());
    assert!(idle > 0 && xact >= idle, "A sits idle in its transaction: {xact} {idle}");
    let b_row = rows.iter().find(|r| value(&cols, r, "state") == "idle").unwrap();
    assert_eq!(value(&cols, b_row, "xact_us"), "0");
    // SHOW SERVERS says the same of the server A holds.
    let (scols, srows) = show(&console, "show servers").await;
    let held = srows.iter().find(|r| value(&scols, r, "state") == "active").expect("A's server");
    let server_idle: u64 = value(&scols, held, "idle_in_xact_us").parse().unwrap();
    assert!(server_idle > 0 && value(&scols, held, "xact_us").parse::<u64>().unwrap() >= server_idle);
    // KILL_CLIENT ends A with 57P01; its server is closed, so the lock goes with it.
    console.simple_query(&format!("kill_client {a_id}")).await.unwrap();
    let (tag, body) = a.read_message(Duration::from_secs(5)).await.expect("A is told");
    assert_eq!((tag, error_fields(&body).get(&'C').cloned()), (b'E', Some("57P01".to_string())));
    assert!(a.wait_closed(Duration::from_secs(5)).await.is_some(), "A is closed");
    let admin_pg = pg.admin_client().await;
    common::wait_for(Duration::from_secs(5), "A's row lock is gone", || async {
        let n: i64 = admin_pg
            .query_one("select count(*) from pg_locks where relation = 'accounts'::regclass", &[])
            .await
            .unwrap()
            .get(0);
        n == 0
    })
    .await;
    // KILL app ends B too; unknown ids are an error; the console stays usable.
    console.simple_query("kill app").await.unwrap();
    let (tag, body) = b.read_message(Duration::from_secs(5)).await.expect("B is told");
    assert_eq!((tag, error_fields(&body).get(&'C').cloned()), (b'E', Some("57P01".to_string())));
    let e = console.simple_query("kill_client 999999").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("42704"));
    assert_eq!(e.as_db_error().map(|d| d.message()), Some("client not found"), "PgBouncer's words");
    let e = console.simple_query("kill_client someone").await.unwrap_err();
    assert_eq!(e.as_db_error().map(|d| d.message()), Some("invalid client pointer supplied"));
    // As PgBouncer: a database that does not exist, or the console's own, is refused by name.
    let e = console.simple_query("kill nosuchdb").await.unwrap_err();
    assert_eq!(e.as_db_error().map(|d| d.message()), Some("no such database: nosuchdb"));
    for (cmd, msg) in
        [("kill pgbouncer", "cannot kill admin db: pgbouncer"), ("pause pgsluice", "cannot pause admin db: pgsluice")]
    {
        let e = console.simple_query(cmd).await.unwrap_err();
        assert_eq!(e.as_db_error().map(|d| d.message()), Some(msg), "{cmd}");
    }
    common::wait_for(Duration::from_secs(5), "no clients left but the console", || async {
        let (cols, rows) = show(&console, "show clients").await;
        rows.iter().all(|r| value(&cols, r, "database") == "pgbouncer")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_under_pgbench_lose_no_transaction() {
    use std::process::Command;
    let pg = TestPg::start().await;
    let init = Command::new("pgbench")
        .args(["-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p", &pg.port().to_string(), "-U", ADMIN.0, "app"])
        .env("PGPASSWORD", ADMIN.1)
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let px = proxy(&pg).await;
    let port = px.port().to_string();
    let bench = tokio::task::spawn_blocking(move || {
        Command::new("pgbench")
            .args(["-c", "4", "-j", "2", "-t", "300", "-h", "127.0.0.1", "-p", &port, "-U", ADMIN.0, "app"])
            .env("PGPASSWORD", ADMIN.1)
            .output()
            .unwrap()
    });
    let console = px.client(ADMIN.0, ADMIN.1, "pgbouncer").await;
    common::wait_for(Duration::from_secs(10), "pgbench is running", || async {
        let (cols, rows) = show(&console, "show stats").await;
        rows.iter().any(|r| r[0].as_deref() == Some("app") && value(&cols, r, "total_xact_count") != "0")
    })
    .await;
    // PAUSE returns once the pool's servers are all closed: PostgreSQL sees none of ours.
    console.simple_query("pause app").await.unwrap();
    // pgsluice holds none the moment PAUSE returns ...
    let (cols, rows) = show(&console, "show servers").await;
    let held: Vec<_> = rows.iter().filter(|r| value(&cols, r, "database") == "app").collect();
    assert!(held.is_empty(), "servers still held after PAUSE: {held:?}");
    // ... but PostgreSQL's backends exit on their own time after the socket closes: pg_stat_activity
    // still listed one for a moment under load (the 1-in-20 failure of an immediate check).
    common::wait_for(Duration::from_secs(5), "paused: no server connections", || async {
        pg.backends_for(ADMIN.0).await == 0
    })
    .await;
    let (cols, rows) = show(&console, "show pools").await;
    let app = rows.iter().find(|r| r[0].as_deref() == Some("app")).unwrap();
    assert_eq!(value(&cols, app, "sv_active"), "0");
    console.simple_query("resume app").await.unwrap();
    let out = bench.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("number of transactions actually processed: 1200/1200"), "{stdout}");
    assert!(stdout.contains("number of failed transactions: 0"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_wait_close_disable_and_enable() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg)
        .general("admin_users", &format!("{:?}", ADMIN.0))
        .pool_size(1)
        .query_wait_timeout(10.0)
        .start()
        .await;
    let console = px.client(ADMIN.0, ADMIN.1, "pgbouncer").await;
    let c = px.client(ADMIN.0, ADMIN.1, "app").await;
    let first = common::scalar(&c, "select pg_backend_pid()").await;
    assert_eq!(common::scalar(&c, "select pg_backend_pid()").await, first, "one pooled server");
    // A transaction is open while RECONNECT runs: its server is closed when it ends, not before.
    c.batch_execute("begin").await.unwrap();
    console.simple_query("reconnect app").await.unwrap();
    let in_tx = common::scalar(&c, "select pg_backend_pid()").await;
    assert_eq!(in_tx, first, "the open transaction keeps its server");
    let wait_close = {
        let console2 = px.client(ADMIN.0, ADMIN.1, "pgbouncer").await;
        tokio::spawn(async move { console2.simple_query("wait_close app").await.map(|_| ()) })
    };
    c.batch_execute("commit").await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), wait_close).await.expect("WAIT_CLOSE returns").unwrap().unwrap();
    let after = common::scalar(&c, "select pg_backend_pid()").await;
    assert_ne!(after, first, "a new server after RECONNECT");
    // DISABLE refuses new logins with 57P03; existing clients go on; ENABLE lets them in again.
    console.simple_query("disable app").await.unwrap();
    let e = px.try_client(ADMIN.0, ADMIN.1, "app").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("57P03"), "{e}");
    assert_eq!(common::scalar(&c, "select 1").await, "1");
    console.simple_query("enable app").await.unwrap();
    px.client(ADMIN.0, ADMIN.1, "app").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_pool_size_live_and_keeps_the_old_config_when_broken() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg)
        .general("admin_users", &format!("{:?}", ADMIN.0))
        .pool_size(2)
        .query_wait_timeout(1.0)
        .start()
        .await;
    let console = px.client(ADMIN.0, ADMIN.1, "pgbouncer").await;
    let a = px.client(ADMIN.0, ADMIN.1, "app").await;
    let b = px.client(ADMIN.0, ADMIN.1, "app").await;
    let c = px.client(ADMIN.0, ADMIN.1, "app").await;
    a.batch_execute("begin; select 1").await.unwrap();
    b.batch_execute("begin; select 1").await.unwrap();
    let e = c.simple_query("select 1").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("57014"), "pool of 2 is full");
    // Raise the pool size in the file and RELOAD: the waiting client gets a third server, nobody drops.
    let text = std::fs::read_to_string(&px.config).unwrap();
    assert!(text.contains("default_pool_size = 2"), "{text}");
    std::fs::write(&px.config, text.replace("default_pool_size = 2", "default_pool_size = 3")).unwrap();
    console.simple_query("reload").await.unwrap();
    assert_eq!(common::scalar(&c, "select 3").await, "3");
    assert_eq!(pg.backends_for(ADMIN.0).await, 3);
    a.batch_execute("commit").await.unwrap();
    b.batch_execute("commit").await.unwrap();
    // A broken file: RELOAD says F0000 and the running config stays (pool of 3, clients served).
    std::fs::write(&px.config, "[pgsluice]\nno_such_setting = 1\n").unwrap();
    let e = console.simple_query("reload").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("F0000"), "{e}");
    // PgBouncer's words; the reason in the DETAIL.
    let message = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
    assert_eq!(message, "RELOAD failed, see logs for additional details");
    let detail = e.as_db_error().and_then(|d| d.detail()).unwrap_or_default().to_string();
    assert!(detail.contains("no_such_setting"), "{detail}");
    px.signal("HUP");
    let d = px.client(ADMIN.0, ADMIN.1, "app").await;
    a.batch_execute("begin; select 1").await.unwrap();
    b.batch_execute("begin; select 1").await.unwrap();
    assert_eq!(common::scalar(&d, "select 4").await, "4", "still a pool of 3 after the failed reloads");
    common::wait_for(Duration::from_secs(5), "the SIGHUP failure is logged", || async {
        px.log_contents().matches("reload failed").count() >= 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_with_a_changed_server_rebuilds_the_pool_without_dropping_clients() {
    let pg = TestPg::start().await;
    let px = proxy(&pg).await;
    let console = px.client(ADMIN.0, ADMIN.1, "pgbouncer").await;
    let a = px.client(ADMIN.0, ADMIN.1, "app").await;
    a.batch_execute("begin").await.unwrap();
    let before = common::scalar(&a, "select pg_backend_pid()").await;
    // The server entry changes (here its password is now given in the entry): a new pool.
    let text = std::fs::read_to_string(&px.config).unwrap();
    assert_eq!(text.matches("dbname = \"app\" }").count(), 1, "{text}");
    let text = text.replace("dbname = \"app\" }", &format!("dbname = \"app\", password = {:?} }}", ADMIN.1));
    std::fs::write(&px.config, text).unwrap();
    console.simple_query("reload").await.unwrap();
    // The open transaction finishes on its server...
    assert_eq!(common::scalar(&a, "select pg_backend_pid()").await, before);
    a.batch_execute("commit").await.unwrap();
    // ...which is then closed; the same client goes on through the new pool.
    let after = common::scalar(&a, "select pg_backend_pid()").await;
    assert_ne!(after, before);
    common::wait_for(Duration::from_secs(5), "the old server is closed", || async {
        pg.backends_for(ADMIN.0).await == 1
    })
    .await;
    let (cols, rows) = show(&console, "show pools").await;
    let app = rows.iter().find(|r| r[0].as_deref() == Some("app")).unwrap();
    assert_eq!(value(&cols, app, "cl_active"), "1", "the client counts in the new pool");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_holds_new_transactions_until_resume_and_show_state_says_so() {
    let pg = TestPg::start().await;
    let px = proxy(&pg).await;
    let console = px.client(ADMIN.0, ADMIN.1, "pgbouncer").await;
    let state = || async {
        let (_, rows) = show(&console, "show state").await;
        rows.iter().map(|r| (r[0].clone().unwrap_or_default(), r[1].clone().unwrap_or_default())).collect::<Vec<_>>()
    };
    let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert!(state().await.contains(&pair("active", "yes")));
    let c = px.client(ADMIN.0, ADMIN.1, "app").await;
    assert_eq!(common::scalar(&c, "select 1").await, "1");
    console.simple_query("suspend").await.unwrap();
    assert!(state().await.contains(&pair("suspended", "yes")));
    let held = tokio::spawn(async move { common::scalar(&c, "select 2").await });
    common::wait_for(Duration::from_secs(5), "the query waits", || async {
        let (cols, rows) = show(&console, "show pools").await;
        rows.iter().any(|r| r[0].as_deref() == Some("app") && value(&cols, r, "cl_waiting") == "1")
    })
    .await;
    console.simple_query("resume").await.unwrap();
    assert_eq!(tokio::time::timeout(Duration::from_secs(5), held).await.unwrap().unwrap(), "2");
    assert!(state().await.contains(&pair("active", "yes")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_holds_new_clients_of_the_database_until_resume() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg)
        .general("admin_users", &format!("{:?}", ADMIN.0))
        .database("other", "dbname = \"app\"")
        .pool_size(2)
        .start()
        .await;
    let console = px.client(ADMIN.0, ADMIN.1, "pgbouncer").await;
    let flag = |db: &'static str, col: &'static str| {
        let console = &console;
        async move {
            let (cols, rows) = show(console, "show databases").await;
            let row = rows.iter().find(|r| r[0].as_deref() == Some(db)).unwrap_or_else(|| panic!("{db}: {rows:?}"));
            value(&cols, row, col)
        }
    };
    let waiting = |db: &'static str| {
        let console = &console;
        async move {
            let (cols, rows) = show(console, "show pools").await;
            rows.iter().find(|r| r[0].as_deref() == Some(db)).map(|r| value(&cols, r, "cl_waiting"))
        }
    };
    let a = px.client(ADMIN.0, ADMIN.1, "app").await;
    assert_eq!(common::scalar(&a, "select 1").await, "1");
    let o = px.client(ADMIN.0, ADMIN.1, "other").await;
    assert_eq!(common::scalar(&o, "select 1").await, "1");
    // KILL app ends its clients and servers, and marks it paused.
    console.simple_query("kill app").await.unwrap();
    assert!(a.simple_query("select 1").await.is_err(), "A was killed");
    assert_eq!((flag("app", "paused").await, flag("other", "paused").await), ("1".into(), "0".into()));
    common::wait_for(Duration::from_secs(5), "app's servers closed", || async { pg.backends_for(ADMIN.0).await == 1 })
        .await;
    // A new client of app waits (it logs in, its query waits for a server) until RESUME.
    let port = px.port();
    let held = tokio::spawn(async move {
        let connstr = format!("host=127.0.0.1 port={port} user={} password={} dbname=app", ADMIN.0, ADMIN.1);
        let (c, conn) = tokio_postgres::connect(&connstr, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        common::scalar(&c, "select 2").await
    });
    common::wait_for(Duration::from_secs(5), "the new client of app waits", || async {
        waiting("app").await.as_deref() == Some("1")
    })
    .await;
    assert!(!held.is_finished());
    assert_eq!(common::scalar(&o, "select 3").await, "3", "other databases are not held");
    console.simple_query("resume app").await.unwrap();
    assert_eq!(tokio::time::timeout(Duration::from_secs(5), held).await.unwrap().unwrap(), "2");
    assert_eq!(flag("app", "paused").await, "0");
    // KILL without a database does this to every database.
    console.simple_query("kill").await.unwrap();
    assert_eq!((flag("app", "paused").await, flag("other", "paused").await), ("1".into(), "1".into()));
    console.simple_query("resume").await.unwrap();
    assert_eq!((flag("app", "paused").await, flag("other", "paused").await), ("0".into(), "0".into()));
    let c = px.client(ADMIN.0, ADMIN.1, "other").await;
    assert_eq!(common::scalar(&c, "select 4").await, "4");
}
