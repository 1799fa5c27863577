//! Real client programs through pgsluice: psql and pgbench (simple and extended protocol).

mod common;

use std::process::Command;

use common::{Proxy, TestPg};

fn pgbench(args: &[&str], port: u16) -> std::process::Output {
    Command::new("pgbench")
        .args(args)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "scram_user", "app"])
        .env("PGPASSWORD", "scram_pw")
        .output()
        .expect("pgbench is installed (.ci/run installs postgresql)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_simple_and_extended_have_no_failed_transactions() {
    let pg = TestPg::start().await;
    let init = pgbench(&["-i", "-s", "1", "-q"], pg.port());
    assert!(init.status.success(), "pgbench -i: {}", String::from_utf8_lossy(&init.stderr));
    let px =
        Proxy::builder(&pg).pool_size(4).general("ignore_startup_parameters", "\"extra_float_digits\"").start().await;
    for mode in ["simple", "extended"] {
        let out = pgbench(&["-c", "16", "-j", "2", "-t", "200", "-M", mode], px.port());
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "pgbench -M {mode}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("number of transactions actually processed: 3200/3200"), "{mode}: {stdout}");
        assert!(
            !stdout.contains("number of failed transactions: ") || stdout.contains("number of failed transactions: 0 "),
            "{stdout}"
        );
    }
    assert!(pg.backends_for("scram_user").await <= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_runs_a_script_through_pgsluice() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).start().await;
    let out = Command::new("psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &px.port().to_string(),
            "-U",
            "scram_user",
            "-d",
            "app",
        ])
        .args(["-c", "begin", "-c", "select count(*) from accounts", "-c", "commit", "-c", "show application_name"])
        .env("PGPASSWORD", "scram_pw")
        .output()
        .expect("psql is installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("10"), "{stdout}");
    assert!(stdout.contains("psql"), "application_name reaches the server: {stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_reads_the_admin_console() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).general("admin_users", "\"scram_user\"").start().await;
    let c = px.client("scram_user", "scram_pw", "app").await;
    c.simple_query("select 1").await.unwrap();
    let out = Command::new("psql")
        .args(["-X", "-h", "127.0.0.1", "-p", &px.port().to_string(), "-U", "scram_user", "-d", "pgbouncer"])
        .args(["-c", "SHOW POOLS;", "-c", "SHOW HELP;", "-c", "SHOW VERSION;"])
        .env("PGPASSWORD", "scram_pw")
        .output()
        .expect("psql is installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("cl_active") && stdout.contains("transaction"), "{stdout}");
    assert!(stderr.contains("Console usage"), "SHOW HELP's notice: {stderr}");
    assert!(stdout.contains("pgsluice"), "{stdout}");
}
