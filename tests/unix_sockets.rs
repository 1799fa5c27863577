//! Unix-domain sockets on both sides: pgsluice listening on `<unix_socket_dir>/.s.PGSQL.<port>` (its
//! mode, a stale file replaced, a live one refused, the file removed at exit) and connecting to
//! PostgreSQL over its socket when a database's host is a directory, cancel requests included.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::console::{show, value};
use common::{Proxy, TestPg, scalar, wait_for};
use tokio_postgres::NoTls;

async fn unix_client(
    dir: &std::path::Path,
    port: u16,
    db: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let conf = format!("host={} port={port} user=scram_user password=scram_pw dbname={db}", dir.display());
    let (c, conn) = tokio_postgres::connect(&conf, NoTls).await?;
    tokio::spawn(conn);
    Ok(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_connect_over_the_unix_socket_which_has_its_mode_and_goes_at_exit() {
    let pg = TestPg::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut px = Proxy::builder(&pg)
        .general("unix_socket_dir", &format!("{:?}", dir.path().display().to_string()))
        .general("unix_socket_mode", "\"0700\"")
        .general("client_tls_sslmode", "\"disable\"")
        .general("admin_users", "\"scram_user\"")
        .start()
        .await;
    let socket = dir.path().join(format!(".s.PGSQL.{}", px.port()));
    let mode = std::fs::metadata(&socket).expect("the socket file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "unix_socket_mode");
    let c = unix_client(dir.path(), px.port(), "app").await.unwrap();
    assert_eq!(scalar(&c, "select 'over unix'").await, "over unix");
    let console = unix_client(dir.path(), px.port(), "pgbouncer").await.unwrap();
    let (cols, rows) = show(&console, "show clients").await;
    let row = rows.iter().find(|r| value(&cols, r, "database") == "app").expect("the unix client");
    assert_eq!((value(&cols, row, "addr"), value(&cols, row, "port")), ("unix".to_string(), px.port().to_string()));
    // A second pgsluice for the same port on another address (no so_reuseport) does not steal the
    // live socket: it refuses to start, naming it.
    let text = std::fs::read_to_string(&px.config).unwrap().replace("127.0.0.1\"", "127.0.0.2\"");
    let other = dir.path().join("second.toml");
    std::fs::write(&other, text).unwrap();
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_pgsluice"))
        .arg(&other)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = tokio::task::spawn_blocking(move || second.wait_with_output()).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("in use by another process"), "{stderr}");
    assert_eq!(scalar(&c, "select 'still here'").await, "still here");
    drop(c);
    drop(console);
    px.signal("INT");
    assert!(px.wait_exit(Duration::from_secs(10)).await.is_some());
    assert!(!socket.exists(), "the socket file is removed at exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_file_left_by_a_killed_pgsluice_is_replaced() {
    let pg = TestPg::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut px = Proxy::builder(&pg)
        .general("unix_socket_dir", &format!("{:?}", dir.path().display().to_string()))
        .start()
        .await;
    let socket = dir.path().join(format!(".s.PGSQL.{}", px.port()));
    px.signal("KILL");
    assert!(px.wait_exit(Duration::from_secs(10)).await.is_some());
    assert!(socket.exists(), "SIGKILL leaves the file behind");
    // The same config again: the file nobody listens on is replaced, and clients get in.
    let mut again = std::process::Command::new(env!("CARGO_BIN_EXE_pgsluice")).arg(&px.config).spawn().unwrap();
    let port = px.port();
    wait_for(Duration::from_secs(10), "the new pgsluice on the old socket", || async {
        unix_client(dir.path(), port, "app").await.is_ok()
    })
    .await;
    let c = unix_client(dir.path(), port, "app").await.unwrap();
    assert_eq!(scalar(&c, "select 'again'").await, "again");
    let _ = again.kill();
    let _ = again.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_are_reached_over_their_unix_socket_and_canceled_there() {
    let pg = TestPg::start().await;
    // pg_hba.conf: `local all all trust`; the test PostgreSQL's socket is in its data directory.
    let host = pg.data_dir().display().to_string();
    let px = Proxy::builder(&pg)
        .general("admin_users", "\"scram_user\"")
        .database("local", &format!("host = {host:?}, port = {}, dbname = \"app\", pool_size = 1", pg.port()))
        .start()
        .await;
    let c = px.client("scram_user", "scram_pw", "local").await;
    assert_eq!(
        scalar(&c, "select coalesce(inet_client_addr()::text, 'no address: a Unix socket')").await,
        "no address: a Unix socket"
    );
    let console = px.client("scram_user", "scram_pw", "pgbouncer").await;
    let (cols, rows) = show(&console, "show servers").await;
    let row = rows.iter().find(|r| value(&cols, r, "database") == "local").expect("the server");
    assert_eq!((value(&cols, row, "addr"), value(&cols, row, "port")), ("unix".to_string(), pg.port().to_string()));
    // A cancel reaches the backend over the same socket.
    let token = c.cancel_token();
    let sleeper = tokio::spawn(async move { c.simple_query("select pg_sleep(30)").await.map(|_| ()) });
    wait_for(Duration::from_secs(10), "the sleep runs", || async {
        let admin = pg.admin_client().await;
        let n: i64 = admin
            .query_one(
                "select count(*) from pg_stat_activity where query = 'select pg_sleep(30)' and state = 'active'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        n == 1
    })
    .await;
    token.cancel_query(NoTls).await.unwrap();
    let e =
        tokio::time::timeout(Duration::from_secs(10), sleeper).await.expect("canceled in time").unwrap().unwrap_err();
    assert_eq!(e.as_db_error().map(|d| d.code().code()), Some("57014"), "{e}");
}
