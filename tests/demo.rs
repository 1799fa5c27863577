//! README's "Run it" command, `conf/demo.sh`, as a newcomer runs it: it starts a throwaway PostgreSQL
//! and pgsluice in front of it, says how to reach the database, the console and /metrics, each of which
//! answers as said, and Ctrl-C (SIGINT to its process group) stops both and removes the temp dir.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::pg::free_port;
use tokio::io::{AsyncBufReadExt, BufReader};

async fn connect(port: u16, user: &str, password: &str, db: &str) -> Option<tokio_postgres::Client> {
    let conf = format!("host=127.0.0.1 port={port} user={user} password={password} dbname={db}");
    let (client, conn) = tokio_postgres::connect(&conf, tokio_postgres::NoTls).await.ok()?;
    tokio::spawn(conn);
    Some(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_the_database_the_console_and_metrics_and_ctrl_c_cleans_up() {
    let (port, metrics_port, pg_port) = (free_port(), free_port(), free_port());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/demo.sh");
    let mut demo = tokio::process::Command::new("bash")
        .arg(script)
        .env("PGSLUICE_BIN", env!("CARGO_BIN_EXE_pgsluice"))
        .env("PORT", port.to_string())
        .env("METRICS_PORT", metrics_port.to_string())
        .env("PG_PORT", pg_port.to_string())
        .env_remove("PGSLUICE_CONFIG")
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("run conf/demo.sh");
    let pgid = demo.id().expect("the demo's pid");
    // What it prints, up to the config's path (the temp dir it promises to remove).
    let mut lines = BufReader::new(demo.stdout.take().expect("stdout")).lines();
    let mut said = String::new();
    let work_dir = tokio::time::timeout(Duration::from_secs(120), async {
        while let Ok(Some(line)) = lines.next_line().await {
            said.push_str(&line);
            said.push('\n');
            if let Some(path) = line.strip_prefix("Config: ") {
                return std::path::Path::new(path).parent().map(|p| p.to_path_buf());
            }
        }
        None
    })
    .await
    .expect("the demo printed its instructions within 120 s")
    .expect("a Config: line with the temp dir");
    for needle in [format!("port={port} user=app"), "dbname=pgbouncer".into(), format!("{metrics_port}/metrics")] {
        assert!(said.contains(&needle), "{needle} missing from what the demo says:\n{said}");
    }
    common::wait_for(Duration::from_secs(30), "the demo accepts the app user", || async {
        connect(port, "app", "app-secret", "app").await.is_some()
    })
    .await;
    let app = connect(port, "app", "app-secret", "app").await.expect("app login");
    assert_eq!(common::scalar(&app, "select current_user").await, "app");
    let console = connect(port, "admin", "admin-secret", "pgbouncer").await.expect("console login");
    let pools = console.simple_query("show pools").await.expect("SHOW POOLS");
    let has_app = pools.iter().any(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0) == Some("app"),
        _ => false,
    });
    assert!(has_app, "SHOW POOLS lists the app pool");
    let (status, body) = common::http_get(metrics_port, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("pgsluice_"), "{body}");
    drop((app, console));
    // Ctrl-C in the terminal: SIGINT to the whole process group.
    let killed = std::process::Command::new("kill").args(["-INT", "--", &format!("-{pgid}")]).status().unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(60), demo.wait())
        .await
        .expect("the demo stopped within 60 s of Ctrl-C")
        .unwrap();
    assert!(status.success() || status.code() == Some(130), "{status:?}");
    assert!(!work_dir.exists(), "{} left behind", work_dir.display());
    assert!(std::net::TcpStream::connect(("127.0.0.1", pg_port)).is_err(), "PostgreSQL still listening");
}
