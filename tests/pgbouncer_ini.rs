//! PgBouncer drop-in: a realistic pgbouncer.ini (the SentinelCore write-up's) and its userlist.txt run
//! pgsluice as they are; unsupported settings are reported once; `pgsluice convert` prints TOML that
//! pgsluice accepts.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::pg::free_port;
use common::{TestPg, scalar};

fn sentinelcore_ini(pg_port: u16, listen_port: u16, userlist: &str) -> String {
    format!(
        "[databases]\n\
         vulnerability_manager = host=127.0.0.1 port={pg_port} dbname=app\n\
         \n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {listen_port}\n\
         auth_type = md5\n\
         auth_file = {userlist}\n\
         logfile = /var/log/pgbouncer/pgbouncer.log\n\
         pidfile = /var/run/pgbouncer/pgbouncer.pid\n\
         admin_users = md5_user\n\
         pool_mode = transaction\n\
         max_client_conn = 1000\n\
         default_pool_size = 30\n\
         reserve_pool_size = 5\n\
         reserve_pool_timeout = 3\n\
         server_idle_timeout = 600\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pgbouncer_ini_runs_as_it_is() {
    let pg = TestPg::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("userlist.txt"), "\"md5_user\" \"md5_pw\"\n").unwrap();
    let port = free_port();
    let ini = dir.path().join("pgbouncer.ini");
    std::fs::write(&ini, sentinelcore_ini(pg.port(), port, "userlist.txt")).unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgsluice"))
        .arg("--pgbouncer-ini")
        .arg(&ini)
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let connstr = format!("host=127.0.0.1 port={port} user=md5_user password=md5_pw dbname=vulnerability_manager");
    let mut client = None;
    for _ in 0..250 {
        if let Ok((c, conn)) = tokio_postgres::connect(&connstr, tokio_postgres::NoTls).await {
            tokio::spawn(conn);
            client = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let c = client
        .unwrap_or_else(|| panic!("pgsluice did not serve: {}", std::fs::read_to_string(&log).unwrap_or_default()));
    assert_eq!(scalar(&c, "select count(*) from accounts").await, "10");
    // pool_mode = transaction was honoured: the console says so.
    let console = format!("host=127.0.0.1 port={port} user=md5_user password=md5_pw dbname=pgbouncer");
    let (admin, conn) = tokio_postgres::connect(&console, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let rows = admin.simple_query("show pools").await.unwrap();
    let mode = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) if r.get("database") == Some("vulnerability_manager") => {
            r.get("pool_mode").map(str::to_string)
        }
        _ => None,
    });
    assert_eq!(mode.as_deref(), Some("transaction"));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("not supported by pgsluice").count(), 2, "logfile and pidfile reported once each: {text}");
    assert!(text.contains("logfile") && text.contains("pidfile"), "{text}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn convert_prints_toml_that_pgsluice_accepts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("userlist.txt"), "\"md5_user\" \"md5_pw\"\n").unwrap();
    let ini = dir.path().join("pgbouncer.ini");
    std::fs::write(&ini, sentinelcore_ini(5432, 6432, "userlist.txt")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pgsluice")).arg("convert").arg(&ini).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let toml_text = String::from_utf8(out.stdout).unwrap();
    assert!(toml_text.contains("default_pool_size = 30"), "{toml_text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("logfile"));
    let converted = dir.path().join("pgsluice.toml");
    std::fs::write(&converted, &toml_text).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_pgsluice")).arg("--check").arg(&converted).output().unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

/// Kills the pgsluice it holds on drop.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn try_connect(port: u16, user: &str, password: &str, db: &str) -> Result<tokio_postgres::Client, String> {
    let connstr = format!("host=127.0.0.1 port={port} user={user} password={password} dbname={db}");
    let (c, conn) = tokio_postgres::connect(&connstr, tokio_postgres::NoTls).await.map_err(|e| {
        e.as_db_error().map(|d| format!("{}: {}", d.code().code(), d.message())).unwrap_or(e.to_string())
    })?;
    tokio::spawn(conn);
    Ok(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_type_any_logs_everyone_in_as_the_database_user() {
    let pg = TestPg::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let ini = dir.path().join("pgbouncer.ini");
    // No auth_file: PgBouncer's any needs none.
    std::fs::write(
        &ini,
        format!(
            "[databases]\n\
             app = host=127.0.0.1 port={} dbname=app user=md5_user password=md5_pw\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             auth_type = any\n\
             admin_users = ops\n",
            pg.port()
        ),
    )
    .unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_pgsluice")).arg("--check").arg(&ini).output().unwrap();
    assert!(
        check.status.success(),
        "--check: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let log = dir.path().join("stderr.log");
    let _px = Running(
        Command::new(env!("CARGO_BIN_EXE_pgsluice"))
            .arg("--pgbouncer-ini")
            .arg(&ini)
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    common::wait_for(Duration::from_secs(10), "pgsluice listens", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await;
    // Any name and any password: the server session is the entry's user's.
    for (user, password) in [("whoever", "anything"), ("md5_user", "wrong"), ("scram_user", "not-its-password")] {
        let c = try_connect(port, user, password, "app")
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}\n{}", std::fs::read_to_string(&log).unwrap_or_default()));
        assert_eq!(scalar(&c, "select current_user").await, "md5_user", "{user}");
    }
    // The console: admin_users may do everything, anyone else SHOW only.
    let ops = try_connect(port, "ops", "x", "pgbouncer").await.unwrap();
    let someone = try_connect(port, "someone", "y", "pgbouncer").await.unwrap();
    let c = try_connect(port, "whoever", "anything", "app").await.unwrap();
    // The three clients of the loop are gone once pgsluice has seen them leave; `c` stays.
    common::wait_for(Duration::from_secs(5), "one client, counted as the database's user", || async {
        let rows = someone.simple_query("show clients").await.unwrap();
        let users: Vec<String> = rows
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get("user").map(str::to_string),
                _ => None,
            })
            .collect();
        // As PgBouncer with auth_type = any, the console's users show as its `pgbouncer` user.
        users == ["pgbouncer", "pgbouncer", "md5_user"] || users == ["md5_user", "pgbouncer", "pgbouncer"]
    })
    .await;
    let e = someone.simple_query("pause app").await.expect_err("SHOW only");
    assert_eq!(e.as_db_error().map(|d| d.code().code()), Some("42501"), "{e}");
    ops.simple_query("pause app").await.unwrap();
    ops.simple_query("resume app").await.unwrap();
    assert_eq!(scalar(&c, "select 1").await, "1");
}

#[test]
fn auth_type_any_without_a_database_user_is_refused_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("pgbouncer.ini");
    std::fs::write(&ini, "[databases]\napp = host=127.0.0.1 dbname=app\n[pgbouncer]\nauth_type = any\n").unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_pgsluice")).arg("--check").arg(&ini).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    assert_eq!(check.status.code(), Some(1), "{text}");
    assert!(text.contains("pgbouncer.ini:2: [databases] app: user: auth_type = \"any\""), "{text}");
}

#[test]
fn includes_are_followed_and_pgbouncers_test_ini_shape_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("userlist.txt"), "\"md5_user\" \"md5_pw\"\n").unwrap();
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    // As PgBouncer's own test.ini: a [users] pool_size below a database's min_pool_size.
    std::fs::write(
        dir.path().join("conf.d/databases.ini"),
        "p0x = port=6666 host=127.0.0.1 dbname=p0 min_pool_size=5 pool_size=5\n\
         p9 = port=6666 host=127.0.0.1 dbname=postgres server_lifetime=2 user=bouncer\n",
    )
    .unwrap();
    let ini = dir.path().join("pgbouncer.ini");
    std::fs::write(
        &ini,
        "[databases]\n%include conf.d/databases.ini\n[users]\npoolsize1 = pool_size=1\n\
         maxedout2 = max_user_connections=2 max_user_client_connections=2\n\
         [pgbouncer]\nauth_type = trust\nauth_file = userlist.txt\ntcp_socket_buffer = 4096\n",
    )
    .unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_pgsluice")).args(["--check", "--pgbouncer-ini"]).arg(&ini).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("user poolsize1: pool_size 1 is less than min_pool_size 5 of database p0x"), "{stderr}");
    assert_eq!(stderr.matches("not supported by pgsluice").count(), 1, "only tcp_socket_buffer: {stderr}");
    // A missing include is an error naming the file and line that includes it.
    std::fs::write(&ini, "[pgbouncer]\nauth_type = trust\n%include nowhere.ini\n").unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_pgsluice")).args(["--check", "--pgbouncer-ini"]).arg(&ini).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{}:3: %include ", ini.display())) && stderr.contains("nowhere.ini"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_database_and_per_user_settings_from_the_ini_apply() {
    let pg = TestPg::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("userlist.txt"), "\"md5_user\" \"md5_pw\"\n\"scram_user\" \"scram_pw\"\n").unwrap();
    let port = free_port();
    let ini = dir.path().join("pgbouncer.ini");
    std::fs::write(
        &ini,
        format!(
            "[databases]\n\
             app = host=127.0.0.1 port={pg} dbname=app max_db_client_connections=1 server_lifetime=7\n\
             other = host=127.0.0.1 port={pg} dbname=app\n\
             [users]\n\
             scram_user = max_user_client_connections=1\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nauth_type = md5\nauth_file = userlist.txt\n\
             admin_users = md5_user\nmax_db_client_connections = 100\nmax_user_client_connections = 100\n",
            pg = pg.port()
        ),
    )
    .unwrap();
    let log = dir.path().join("stderr.log");
    let _px = Running(
        Command::new(env!("CARGO_BIN_EXE_pgsluice"))
            .arg("--pgbouncer-ini")
            .arg(&ini)
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    common::wait_for(Duration::from_secs(10), "pgsluice listens", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await;
    let first = try_connect(port, "md5_user", "md5_pw", "app").await.unwrap();
    let e = try_connect(port, "md5_user", "md5_pw", "app").await.expect_err("app takes one client");
    assert!(e.contains("max_db_client_connections"), "{e}");
    let _other = try_connect(port, "md5_user", "md5_pw", "other").await.expect("other has the general limit");
    let _scram = try_connect(port, "scram_user", "scram_pw", "other").await.unwrap();
    let e = try_connect(port, "scram_user", "scram_pw", "other").await.expect_err("scram_user has one");
    assert!(e.contains("max_user_client_connections"), "{e}");
    assert_eq!(scalar(&first, "select 1").await, "1");
    let console = try_connect(port, "md5_user", "md5_pw", "pgbouncer").await.unwrap();
    let rows = console.simple_query("show databases").await.unwrap();
    let app = rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get("name") == Some("app") => Some(r),
            _ => None,
        })
        .expect("app is listed");
    assert_eq!((app.get("max_client_connections"), app.get("server_lifetime")), (Some("1"), Some("7")));
}
