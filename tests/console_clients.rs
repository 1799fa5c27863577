//! The console's users are clients, as in PgBouncer: listed by SHOW CLIENTS under the `pgbouncer`
//! database, counted in the `pgbouncer` pseudo-database and pool of every SHOW, ended by KILL_CLIENT
//! (and left alone by KILL); SHOW SOCKETS and ACTIVE_SOCKETS; the console's welcome and version.

mod common;

use std::time::Duration;

use common::console::{ADMIN, STATS, code, proxy, show, value};
use common::{Proxy, TestPg};

/// The row of `rows` whose column `col` is `v`.
fn row_with<'a>(cols: &[String], rows: &'a [Vec<Option<String>>], col: &str, v: &str) -> &'a Vec<Option<String>> {
    rows.iter().find(|r| value(cols, r, col) == v).unwrap_or_else(|| panic!("no row with {col} = {v}: {rows:?}"))
}

async fn connect_with_app(px: &Proxy, (user, pw): (&str, &str), app: &str) -> tokio_postgres::Client {
    px.client_with(user, pw, "pgbouncer", &[("application_name", app)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_users_are_clients_of_the_pgbouncer_pseudo_pool() {
    let pg = TestPg::start().await;
    let px = proxy(&pg).await;
    let app = px.client(ADMIN.0, ADMIN.1, "app").await;
    app.simple_query("select 1").await.unwrap();
    let admin = connect_with_app(&px, ADMIN, "watcher").await;
    let stats = px.client(STATS.0, STATS.1, "pgsluice").await; // the other name of the console
    // SHOW CLIENTS: both console users under `pgbouncer`, idle, with their own user and application_name.
    let (cols, rows) = show(&admin, "show clients").await;
    let console: Vec<_> = rows.iter().filter(|r| value(&cols, r, "database") == "pgbouncer").collect();
    assert_eq!(console.len(), 2, "{rows:?}");
    let a = row_with(&cols, &rows, "application_name", "watcher");
    assert_eq!((value(&cols, a, "user"), value(&cols, a, "state")), (ADMIN.0.to_string(), "idle".to_string()));
    let s = row_with(&cols, &rows, "user", STATS.0);
    assert_eq!(value(&cols, s, "database"), "pgbouncer");
    assert_eq!(value(&cols, row_with(&cols, &rows, "database", "app"), "user"), ADMIN.0);
    // SHOW POOLS: the pgbouncer/pgbouncer pool, its clients active, no servers, statement mode.
    let (cols, rows) = show(&admin, "show pools").await;
    let pool = row_with(&cols, &rows, "database", "pgbouncer");
    assert_eq!(value(&cols, pool, "user"), "pgbouncer");
    assert_eq!(value(&cols, pool, "cl_active"), "2");
    assert_eq!(value(&cols, pool, "pool_mode"), "statement");
    for col in ["cl_waiting", "sv_active", "sv_idle", "sv_used", "sv_login"] {
        assert_eq!(value(&cols, pool, col), "0", "{col}");
    }
    // SHOW DATABASES: PgBouncer's admin database row.
    let (cols, rows) = show(&admin, "show databases").await;
    let db = row_with(&cols, &rows, "name", "pgbouncer");
    let got: Vec<(String, Option<String>)> =
        ["host", "port", "database", "force_user", "pool_size", "pool_mode", "current_client_connections"]
            .iter()
            .map(|c| (c.to_string(), db[cols.iter().position(|n| n == c).unwrap()].clone()))
            .collect();
    let port = px.port().to_string();
    let want: Vec<(String, Option<String>)> = [
        ("host", None),
        ("port", Some(port.as_str())),
        ("database", Some("pgbouncer")),
        ("force_user", Some("pgbouncer")),
        ("pool_size", Some("2")),
        ("pool_mode", Some("statement")),
        ("current_client_connections", Some("2")),
    ]
    .iter()
    .map(|(c, v)| (c.to_string(), v.map(str::to_string)))
    .collect();
    assert_eq!(got, want);
    // SHOW USERS and SHOW LISTS know the pgbouncer user, database and pool (and, as PgBouncer, every
    // user of the auth file).
    let (cols, rows) = show(&admin, "show users").await;
    let names: Vec<String> = rows.iter().map(|r| value(&cols, r, "name")).collect();
    assert_eq!(names, ["md5_user", "pgbouncer", "scram_user", "trust_user"]);
    let (_, rows) = show(&admin, "show lists").await;
    let item = |name: &str| rows.iter().find(|r| r[0].as_deref() == Some(name)).and_then(|r| r[1].clone());
    assert_eq!(item("pools").as_deref(), Some("2"), "app and pgbouncer");
    assert_eq!(item("users").as_deref(), Some("4"), "the auth file's three and pgbouncer");
    // SHOW STATS: a pgbouncer row; each console login and command counts, as PgBouncer's.
    let figures = || async {
        let (cols, rows) = show(&admin, "show stats").await;
        let row = row_with(&cols, &rows, "database", "pgbouncer").clone();
        let n = |c: &str| value(&cols, &row, c).parse::<u64>().unwrap();
        (n("total_client_login_count"), n("total_xact_count"), n("total_query_count"))
    };
    let (logins, xacts, queries) = figures().await;
    assert_eq!(logins, 2);
    assert!(xacts >= 6 && queries == xacts, "{xacts} {queries}");
    assert_eq!(figures().await, (2, xacts + 1, queries + 1));
    // KILL_CLIENT ends a console user with 57P01; KILL leaves the console alone.
    let (cols, rows) = show(&admin, "show clients").await;
    let id = value(&cols, row_with(&cols, &rows, "user", STATS.0), "id");
    admin.simple_query(&format!("kill_client {id}")).await.unwrap();
    let e = stats.simple_query("show version").await.unwrap_err();
    assert!(code(&e).as_deref() == Some("57P01") || stats.is_closed(), "{e}");
    common::wait_for(Duration::from_secs(5), "the stats user's session is gone", || async {
        let (cols, rows) = show(&admin, "show pools").await;
        value(&cols, row_with(&cols, &rows, "database", "pgbouncer"), "cl_active") == "1"
    })
    .await;
    admin.simple_query("kill").await.unwrap();
    assert!(app.simple_query("select 1").await.is_err(), "KILL ends the app's client");
    common::wait_for(Duration::from_secs(5), "only the console is left", || async {
        let (cols, rows) = show(&admin, "show clients").await;
        rows.iter().map(|r| value(&cols, r, "database")).collect::<Vec<_>>() == ["pgbouncer"]
    })
    .await;
    admin.simple_query("resume").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_sockets_lists_every_connection_and_active_sockets_those_in_an_exchange() {
    let pg = TestPg::start().await;
    let px = proxy(&pg).await;
    let busy = px.client_with(ADMIN.0, ADMIN.1, "app", &[("application_name", "busy")]).await;
    busy.batch_execute("begin; select 1").await.unwrap();
    let idle = px.client_with(ADMIN.0, ADMIN.1, "app", &[("application_name", "idle")]).await;
    idle.simple_query("select 1").await.unwrap();
    let console = px.client(ADMIN.0, ADMIN.1, "pgbouncer").await;
    let sockets = "type user database replication state addr port local_addr local_port connect_time \
                   request_time wait wait_us close_needed ptr link remote_pid tls application_name \
                   prepared_statements id recv_pos pkt_pos pkt_remain send_pos send_remain pkt_avail send_avail";
    let (cols, rows) = show(&console, "show sockets").await;
    assert_eq!(cols, sockets.split_whitespace().collect::<Vec<_>>());
    let states = |rows: &[Vec<Option<String>>]| {
        let mut s: Vec<(String, String)> =
            rows.iter().map(|r| (value(&cols, r, "state"), value(&cols, r, "application_name"))).collect();
        s.sort();
        s
    };
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    // Three clients (the console too) and two servers (the busy one's, and the one the idle client used).
    let all = states(&rows);
    assert_eq!(all.iter().filter(|(s, _)| s == "cl_active").count(), 3, "{all:?}");
    assert!(all.contains(&pair("sv_active", "busy")) && all.contains(&pair("sv_idle", "")), "{all:?}");
    let ids: std::collections::BTreeSet<String> = rows.iter().map(|r| value(&cols, r, "id")).collect();
    assert_eq!(ids.len(), rows.len(), "clients and servers never share an id: {rows:?}");
    // ACTIVE_SOCKETS: the client in its transaction and its server only.
    let (_, rows) = show(&console, "show active_sockets").await;
    assert_eq!(states(&rows), [pair("cl_active", "busy"), pair("sv_active", "busy")]);
    busy.batch_execute("commit").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_welcome_and_show_version_are_pgbouncer_s() {
    use common::wire::{RawConn, query_message};
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg)
        .auth_type("trust")
        .userlist(&[(ADMIN.0, "")])
        .general("admin_users", &format!("{:?}", ADMIN.0))
        .start()
        .await;
    let mut c = RawConn::connect(px.port()).await;
    c.send(&RawConn::startup_packet(ADMIN.0, "pgbouncer", &[("application_name", "psql")])).await;
    let mut params = std::collections::BTreeMap::new();
    let mut kinds = Vec::new();
    loop {
        let (tag, body) = c.read_message(Duration::from_secs(5)).await.expect("the welcome");
        kinds.push(tag);
        if tag == b'S' {
            let mut parts = body.split(|b| *b == 0).map(|p| String::from_utf8_lossy(p).into_owned());
            params.insert(parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        }
        if tag == b'Z' {
            break;
        }
    }
    assert!(!kinds.contains(&b'N') && !kinds.contains(&b'E'), "no notice at login, as PgBouncer 1.25: {kinds:?}");
    for (k, v) in [
        ("application_name", "psql"),
        ("client_encoding", "UTF8"),
        ("server_encoding", "UTF8"),
        ("DateStyle", "ISO"),
        ("TimeZone", "GMT"),
        ("standard_conforming_strings", "on"),
        ("is_superuser", "on"),
    ] {
        assert_eq!(params.get(k).map(String::as_str), Some(v), "{k}: {params:?}");
    }
    // SHOW VERSION is the first line of `--version`, as PgBouncer's.
    c.send(&query_message("SHOW VERSION")).await;
    let version = loop {
        let (tag, body) = c.read_message(Duration::from_secs(5)).await.expect("an answer");
        if tag == b'D' {
            break String::from_utf8_lossy(&body[6..]).into_owned();
        }
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgsluice")).arg("--version").output().unwrap();
    let first = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_string();
    assert_eq!(version, first);
    assert!(version.contains("PgBouncer 1.25.0"), "{version}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_users_count_under_the_client_caps_and_admin_users_are_never_refused() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg)
        .general("admin_users", &format!("{:?}", ADMIN.0))
        .general("stats_users", &format!("{:?}", STATS.0))
        .general("max_user_client_connections", "1")
        .general("max_db_client_connections", "2")
        .start()
        .await;
    let admin = px.client(ADMIN.0, ADMIN.1, "pgbouncer").await;
    let _stats = px.client(STATS.0, STATS.1, "pgbouncer").await;
    // A stats user is refused past its cap on the console as anywhere else (PgBouncer's 53300).
    let e = px.try_client(STATS.0, STATS.1, "pgbouncer").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("53300"), "{e}");
    // An admin user is counted but never refused, on the console: past both caps here.
    let _admin2 = px.client(ADMIN.0, ADMIN.1, "pgsluice").await;
    let (cols, rows) = show(&admin, "show users").await;
    let count = |u: &str| value(&cols, row_with(&cols, &rows, "name", u), "current_client_connections");
    assert_eq!((count(ADMIN.0), count(STATS.0)), ("2".to_string(), "1".to_string()), "{rows:?}");
    let (cols, rows) = show(&admin, "show databases").await;
    assert_eq!(value(&cols, row_with(&cols, &rows, "name", "pgbouncer"), "current_client_connections"), "3");
    // Off the console the admin user's cap holds like anyone's.
    let e = px.try_client(ADMIN.0, ADMIN.1, "app").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("53300"), "{e}");
}
