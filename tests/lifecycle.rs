//! The process's life: SIGTERM waits for clients (no transaction lost), a second signal exits at once,
//! SIGINT lets transactions finish, the console's SHUTDOWN, USR1/USR2 pause and resume, and a rolling
//! restart over SO_REUSEPORT under pgbench with zero failed transactions.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Proxy, TestPg, scalar};

const USER: &str = "scram_user";
const PW: &str = "scram_pw";

fn code(e: &tokio_postgres::Error) -> Option<String> {
    e.as_db_error().map(|d| d.code().code().to_string())
}

fn pgbench_init(pg: &TestPg) {
    let init = Command::new("pgbench")
        .args(["-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p", &pg.port().to_string(), "-U", USER, "app"])
        .env("PGPASSWORD", PW)
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
}

/// pgbench through `port` in the background: (stdout, success).
fn pgbench(port: u16, args: &[&str]) -> tokio::task::JoinHandle<(String, bool)> {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", USER, "app"].map(String::from));
    tokio::task::spawn_blocking(move || {
        let out = Command::new("pgbench").args(&all).env("PGPASSWORD", PW).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (text, out.status.success())
    })
}

/// Waits until pgbench's transactions are flowing: by then every client is connected (pgbench starts
/// its clients together once all are connected).
async fn wait_running(pg: &TestPg) {
    let direct = pg.direct(USER, PW, "app").await;
    common::wait_for(Duration::from_secs(10), "pgbench transactions flow", || async {
        scalar(&direct, "select count(*) from pgbench_history").await != "0"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_for_clients_and_loses_no_transaction() {
    let pg = TestPg::start().await;
    pgbench_init(&pg);
    let mut px = Proxy::builder(&pg).pool_size(2).start().await;
    let bench = pgbench(px.port(), &["-c", "4", "-j", "2", "-t", "250"]);
    wait_running(&pg).await;
    px.signal("TERM");
    // New logins are refused while the old clients finish.
    common::wait_for(Duration::from_secs(5), "new logins refused", || async {
        match px.try_client(USER, PW, "app").await {
            Err(e) if code(&e).as_deref() == Some("57P03") => true,
            other => {
                eprintln!("login during drain: {:?}", other.err());
                false
            }
        }
    })
    .await;
    let (out, ok) = bench.await.unwrap();
    assert!(ok, "{out}");
    assert!(out.contains("number of transactions actually processed: 1000/1000"), "{out}");
    let status = px.wait_exit(Duration::from_secs(10)).await.expect("pgsluice exits once its clients are gone");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_exits_at_once_with_57p01() {
    let pg = TestPg::start().await;
    let mport = common::pg::free_port();
    let mut px = Proxy::builder(&pg)
        .pool_size(2)
        .general("admin_users", &format!("{USER:?}"))
        .general("metrics_addr", &format!("\"127.0.0.1:{mport}\""))
        .start()
        .await;
    let c = px.client(USER, PW, "app").await;
    px.signal("TERM");
    // Still serving the connected client...
    assert_eq!(scalar(&c, "select 1").await, "1");
    // ...not ready for new ones (readyz), but the console stays reachable.
    common::wait_for(Duration::from_secs(5), "readyz says not ready", || async { readyz_status(mport).await == 503 })
        .await;
    let console = px.client(USER, PW, "pgbouncer").await;
    assert!(!console.simple_query("show pools").await.unwrap().is_empty());
    assert!(px.wait_exit(Duration::from_millis(300)).await.is_none(), "waits for its client");
    // ...until the second signal.
    px.signal("TERM");
    assert!(px.wait_exit(Duration::from_secs(5)).await.is_some(), "exits on the second SIGTERM");
    let e = c.simple_query("select 1").await.unwrap_err();
    assert!(c.is_closed(), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_lets_the_open_transaction_finish() {
    let pg = TestPg::start().await;
    let mut px = Proxy::builder(&pg).pool_size(2).start().await;
    let c = px.client(USER, PW, "app").await;
    c.batch_execute("begin; update accounts set balance = balance + 1 where id = 1").await.unwrap();
    px.signal("INT");
    // The transaction goes on and commits; then pgsluice exits.
    assert_eq!(scalar(&c, "select balance from accounts where id = 1").await, "1");
    c.batch_execute("commit").await.unwrap();
    assert!(px.wait_exit(Duration::from_secs(5)).await.is_some(), "exits after the transaction");
    let direct = pg.direct(USER, PW, "app").await;
    assert_eq!(scalar(&direct, "select balance from accounts where id = 1").await, "1", "committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usr1_pauses_and_usr2_resumes() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).pool_size(2).query_wait_timeout(10.0).start().await;
    let c = px.client(USER, PW, "app").await;
    assert_eq!(scalar(&c, "select 1").await, "1");
    px.signal("USR1");
    common::wait_for(Duration::from_secs(5), "paused: servers closed", || async { pg.backends_for(USER).await == 0 })
        .await;
    let q = tokio::spawn(async move { scalar(&c, "select 2").await });
    assert!(pg.backends_for(USER).await == 0, "no server while paused");
    px.signal("USR2");
    assert_eq!(tokio::time::timeout(Duration::from_secs(5), q).await.unwrap().unwrap(), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_over_so_reuseport_has_no_failed_transaction() {
    // Closing a SO_REUSEPORT listener resets the connections still queued on it unless the kernel hands
    // them to another listener of the group (Linux >= 5.14, net.ipv4.tcp_migrate_req = 1, as the README
    // says for production). Without it a connection can be reset in the instant between the old
    // process's last accept and its close, so the test needs it.
    const MIGRATE: &str = "/proc/sys/net/ipv4/tcp_migrate_req";
    if std::fs::read_to_string(MIGRATE).map(|v| v.trim() == "0").unwrap_or(true) {
        let _ = std::fs::write(MIGRATE, "1");
    }
    if std::fs::read_to_string(MIGRATE).map(|v| v.trim() != "1").unwrap_or(true) {
        eprintln!("SKIPPED: {MIGRATE} is not 1 and cannot be set here (needs root on Linux >= 5.14)");
        return;
    }
    let pg = TestPg::start().await;
    pgbench_init(&pg);
    let mut old = Proxy::builder(&pg).pool_size(4).general("so_reuseport", "true").start().await;
    // -C: a new connection per transaction, so clients keep arriving across the switch.
    let bench = pgbench(old.port(), &["-C", "-c", "4", "-j", "2", "-t", "150"]);
    wait_running(&pg).await;
    let new = old.sibling().await;
    old.signal("TERM");
    assert!(old.wait_exit(Duration::from_secs(20)).await.is_some(), "the old process drains and exits");
    let (out, ok) = bench.await.unwrap();
    assert!(ok, "{out}");
    assert!(out.contains("number of transactions actually processed: 600/600"), "{out}");
    assert!(out.contains("number of failed transactions: 0"), "{out}");
    // The new process took over.
    let c = new.client(USER, PW, "app").await;
    assert_eq!(scalar(&c, "select 1").await, "1");
}

/// The HTTP status of /readyz.
async fn readyz_status(port: u16) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return 0 };
    let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw)).await;
    String::from_utf8_lossy(&raw).split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_stable_fields() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::pg::free_port();
    let config = dir.path().join("pgsluice.toml");
    std::fs::write(&config, format!("[pgsluice]\nlisten_port = {port}\nauth_type = \"trust\"\n")).unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgsluice"))
        .args(["--log-format", "json"])
        .arg(&config)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    common::wait_for(Duration::from_secs(10), "the listening line", || async {
        std::fs::read_to_string(&log).unwrap_or_default().contains("listening")
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text.lines().find(|l| l.contains("listening")).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["fields"]["message"], "listening");
    assert!(v["fields"]["addr"].as_str().unwrap_or_default().ends_with(&port.to_string()), "{v}");
    assert_eq!(v["level"], "INFO");
}

/// The whole pgsluice log, ANSI colours removed.
fn full_log(px: &Proxy) -> String {
    let raw = std::fs::read_to_string(px.config.with_file_name("stderr.log")).unwrap_or_default();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn proxy_with_console(pg: &TestPg) -> common::ProxyBuilder {
    Proxy::builder(pg).pool_size(2).general("admin_users", &format!("{USER:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shutdown_exits_at_once() {
    let pg = TestPg::start().await;
    let mut px = proxy_with_console(&pg).start().await;
    let c = px.client(USER, PW, "app").await;
    c.batch_execute("begin").await.unwrap();
    let console = px.client(USER, PW, "pgbouncer").await;
    let _ = console.simple_query("shutdown").await;
    let status = px.wait_exit(Duration::from_secs(5)).await.expect("SHUTDOWN exits without waiting");
    assert!(status.success(), "{status:?}");
    let e = c.simple_query("select 1").await.unwrap_err();
    assert!(c.is_closed(), "the open transaction's client is disconnected: {e}");
}

/// Polls until a TCP connection to `port` is refused (the listener is closed).
async fn tcp_refused(port: u16) {
    common::wait_for(Duration::from_secs(5), "TCP connections refused", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err()
    })
    .await;
}

fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shutdown_wait_for_servers_lets_the_open_transaction_finish() {
    let pg = TestPg::start().await;
    let mut px = proxy_with_console(&pg).query_wait_timeout(30.0).start().await;
    let a = px.client(USER, PW, "app").await;
    let b = px.client(USER, PW, "app").await;
    a.batch_execute("begin; update accounts set balance = balance + 1 where id = 1").await.unwrap();
    let console = px.client(USER, PW, "pgbouncer").await;
    console.simple_query("shutdown wait_for_servers").await.unwrap();
    common::wait_for(Duration::from_secs(5), "pgsluice holds new transactions", || async {
        let rows = console.simple_query("show state").await.unwrap();
        rows.iter().any(|m| {
            matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("paused") && r.get(1) == Some("yes"))
        })
    })
    .await;
    // A client that wants a new transaction is closed at once, not left waiting for the exit.
    let started = std::time::Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(5), b.simple_query("select 1"))
        .await
        .expect("B is answered while A's transaction is still open")
        .unwrap_err();
    assert!(code(&e).as_deref() == Some("57P01") || b.is_closed(), "{e}");
    assert!(started.elapsed() < Duration::from_secs(2), "closed promptly: {:?}", started.elapsed());
    common::wait_for(Duration::from_secs(5), "the log says why, in PgBouncer's words", || async {
        full_log(&px).contains("closing because: server shutting down")
    })
    .await;
    // As PgBouncer: no new connections over TCP, and RESUME does not undo the shutdown's pause.
    tcp_refused(px.port()).await;
    let e = console.simple_query("resume").await.unwrap_err();
    assert_eq!(message(&e), "pooler is shutting down");
    assert!(px.wait_exit(Duration::from_millis(300)).await.is_none(), "waits for the open transaction");
    // The open one runs to its commit; then pgsluice exits.
    assert_eq!(scalar(&a, "select balance from accounts where id = 1").await, "1");
    a.batch_execute("commit").await.unwrap();
    assert!(px.wait_exit(Duration::from_secs(10)).await.is_some(), "exits once no server is in use");
    let direct = pg.direct(USER, PW, "app").await;
    assert_eq!(scalar(&direct, "select balance from accounts where id = 1").await, "1", "committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_accepting_over_tcp_and_keeps_the_console_on_the_unix_socket() {
    let pg = TestPg::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut px = proxy_with_console(&pg)
        .general("unix_socket_dir", &format!("{:?}", dir.path().display().to_string()))
        .start()
        .await;
    let a = px.client(USER, PW, "app").await;
    a.batch_execute("begin; update accounts set balance = balance + 1 where id = 1").await.unwrap();
    px.signal("INT");
    tcp_refused(px.port()).await;
    let unix = |db: &str| {
        let conf = format!("host={} port={} user={USER} password={PW} dbname={db}", dir.path().display(), px.port());
        async move {
            let (c, conn) = tokio_postgres::connect(&conf, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            Ok::<_, tokio_postgres::Error>(c)
        }
    };
    // Over the Unix socket the console still answers; a client of a database is refused.
    let console = unix("pgbouncer").await.expect("the console over the Unix socket");
    let e = console.simple_query("resume").await.unwrap_err();
    assert_eq!(message(&e), "pooler is shutting down");
    // Nor does SIGUSR2 undo it.
    px.signal("USR2");
    common::wait_for(Duration::from_secs(5), "SIGUSR2 is ignored", || async {
        full_log(&px).contains("got SIGUSR2 while shutting down, ignoring")
    })
    .await;
    let rows = console.simple_query("show state").await.unwrap();
    let paused = rows.iter().any(|m| {
        matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("paused") && r.get(1) == Some("yes"))
    });
    assert!(paused, "still paused after SIGUSR2");
    let Err(e) = unix("app").await else { panic!("a new client logged in during shutdown") };
    assert_eq!(code(&e).as_deref(), Some("57P03"), "{e}");
    // The open transaction finishes, then pgsluice exits.
    a.batch_execute("commit").await.unwrap();
    assert!(px.wait_exit(Duration::from_secs(10)).await.is_some(), "exits after the transaction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shutdown_wait_for_clients_serves_them_until_they_leave() {
    let pg = TestPg::start().await;
    let mut px = proxy_with_console(&pg).start().await;
    let a = px.client(USER, PW, "app").await;
    let console = px.client(USER, PW, "pgbouncer").await;
    console.simple_query("shutdown wait_for_clients").await.unwrap();
    common::wait_for(Duration::from_secs(5), "new logins refused", || async {
        px.try_client(USER, PW, "app").await.err().and_then(|e| code(&e)).as_deref() == Some("57P03")
    })
    .await;
    // The connected client goes on with new transactions; pgsluice waits for it.
    for i in 0..3 {
        assert_eq!(scalar(&a, &format!("select {i}")).await, i.to_string());
    }
    assert!(px.wait_exit(Duration::from_millis(300)).await.is_none(), "waits for its client");
    drop(a);
    let status = px.wait_exit(Duration::from_secs(10)).await.expect("exits once the client has left");
    assert!(status.success(), "{status:?}");
}

/// Connects, runs a query and leaves; then fails a login with a wrong password. Returns once pgsluice has
/// seen the client go and has logged a later line (a RELOAD), so an absent line would have been written.
async fn connect_leave_and_fail_login(px: &Proxy) {
    let console = px.client(USER, PW, "pgbouncer").await;
    let c = px.client(USER, PW, "app").await;
    assert_eq!(scalar(&c, "select 1").await, "1");
    drop(c);
    let e = px.try_client(USER, "wrong", "app").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("28P01"));
    common::wait_for(Duration::from_secs(5), "the client is gone", || async {
        console.simple_query("show clients").await.unwrap().iter().all(|m| match m {
            // Only the console itself is left.
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get("database") == Some("pgbouncer"),
            _ => true,
        })
    })
    .await;
    console.simple_query("reload").await.unwrap();
    common::wait_for(Duration::from_secs(5), "the reload is logged", || async {
        full_log(px).contains("configuration reloaded")
    })
    .await;
}

/// Log lines with `what` about a client at 127.0.0.1.
fn lines_with(log: &str, what: &str) -> usize {
    log.lines().filter(|l| l.contains(what) && l.contains("127.0.0.1")).count()
}

/// PgBouncer's wording for a client that left and for the failed login (the wrong password, not the
/// harness's readiness probe), which its users' log alerts match.
const LEFT: &str = "closing because: client close request (age=";
const FAILED: &str = "closing because: password authentication failed (age=";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_connections_disconnections_and_pooler_errors_follow_their_settings() {
    let pg = TestPg::start().await;
    // On (the default): a login line, a disconnect line, and the failed login.
    let on = proxy_with_console(&pg).start().await;
    connect_leave_and_fail_login(&on).await;
    let log = full_log(&on);
    assert_eq!(lines_with(&log, ": login peer="), 1, "{log}");
    assert_eq!(lines_with(&log, LEFT), 1, "{log}");
    assert_eq!(lines_with(&log, FAILED), 1, "{log}");
    // Off: none of them.
    let off = proxy_with_console(&pg)
        .general("log_connections", "false")
        .general("log_disconnections", "false")
        .general("log_pooler_errors", "false")
        .start()
        .await;
    connect_leave_and_fail_login(&off).await;
    let log = full_log(&off);
    assert_eq!(lines_with(&log, ": login peer="), 0, "{log}");
    assert_eq!(lines_with(&log, LEFT), 0, "{log}");
    assert_eq!(lines_with(&log, FAILED), 0, "{log}");
    // Each setting alone.
    let only_disconnections =
        proxy_with_console(&pg).general("log_connections", "false").general("log_pooler_errors", "false").start().await;
    connect_leave_and_fail_login(&only_disconnections).await;
    let log = full_log(&only_disconnections);
    assert_eq!(
        (lines_with(&log, ": login peer="), lines_with(&log, LEFT), lines_with(&log, FAILED)),
        (0, 1, 0),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_pooler_errors_also_gates_errors_sent_inside_a_session() {
    let pg = TestPg::start().await;
    for (setting, expected) in [("true", 1), ("false", 0)] {
        let px = Proxy::builder(&pg)
            .pool_size(1)
            .query_wait_timeout(0.3)
            .general("log_pooler_errors", setting)
            .start()
            .await;
        let holder = px.client(USER, PW, "app").await;
        holder.batch_execute("begin").await.unwrap();
        let waiter = px.client(USER, PW, "app").await;
        let e = waiter.simple_query("select 1").await.unwrap_err();
        assert_eq!(code(&e).as_deref(), Some("57014"), "{e}");
        holder.batch_execute("commit").await.unwrap();
        // The waiter's connection still works, and its error was logged only when asked for.
        assert_eq!(scalar(&waiter, "select 1").await, "1");
        let log = full_log(&px);
        let lines = log.lines().filter(|l| l.contains("query_wait_timeout") && l.contains("WARN")).count();
        assert_eq!(lines, expected, "log_pooler_errors = {setting}:\n{log}");
    }
}

/// The slow-transaction log names the statement that made the transaction, not its BEGIN, also when it
/// was a Bind of a statement prepared earlier (in another transaction), and never its literals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_transaction_log_skips_begin_and_names_prepared_statements() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).general("log_slow_transaction_ms", "200").start().await;
    let mut c = px.client(USER, PW, "app").await;
    let slow = c.prepare("select pg_sleep($1) where 'secret-literal' <> 'x'").await.unwrap();
    let tx = c.transaction().await.unwrap(); // BEGIN on its own
    tx.query(&slow, &[&0.3f64]).await.unwrap();
    tx.commit().await.unwrap();
    common::wait_for(Duration::from_secs(5), "the slow transaction is logged", || async {
        full_log(&px).contains("slow transaction")
    })
    .await;
    let log = full_log(&px);
    let line = log.lines().find(|l| l.contains("slow transaction")).unwrap();
    assert!(line.contains("pg_sleep($1)") || line.contains("pg_sleep(?)"), "the prepared statement: {line}");
    assert!(!line.contains("secret-literal") && !line.to_lowercase().contains("query=begin"), "{line}");
}
