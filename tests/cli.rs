//! The command line: `--check` (exit 0, or 1 with `file: key: reason`), `--version`, and `workers`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Proxy, TestPg, scalar};

struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn pgsluice(args: &[&std::ffi::OsStr]) -> Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgsluice")).args(args).kill_on_drop(true).output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("pgsluice did not exit within 30 s")
        .expect("run pgsluice");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Writes `pgsluice.toml` (and an auth file next to it) into `dir`.
fn write_config(dir: &Path, general: &str) -> PathBuf {
    std::fs::write(dir.join("userlist.txt"), "\"app\" \"app-secret\"\n").unwrap();
    let path = dir.join("pgsluice.toml");
    let text = format!(
        "[pgsluice]\nlisten_port = 6432\nauth_type = \"scram-sha-256\"\nauth_file = \"userlist.txt\"\n{general}\n\
         [databases]\napp = {{ host = \"127.0.0.1\", port = 5432 }}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

async fn check(path: &Path) -> Output {
    pgsluice(&["--check".as_ref(), path.as_os_str()]).await
}

#[tokio::test]
async fn check_accepts_a_good_config_and_the_example() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "default_pool_size = 5\nquery_wait_timeout = 2.5\nworkers = 1");
    let out = check(&path).await;
    assert_eq!(out.code, Some(0), "stdout: {}\nstderr: {}", out.stdout, out.stderr);
    assert!(out.stdout.contains("OK"), "{}", out.stdout);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/pgsluice.toml");
    let out = check(&example).await;
    assert_eq!(out.code, Some(0), "conf/pgsluice.toml: {}", out.stderr);
}

#[tokio::test]
async fn check_rejects_bad_configs_naming_file_key_and_reason() {
    let cases = [
        (
            "unknown key",
            "max_client_con = 5",
            "pgsluice.max_client_con",
            "unknown key (did you mean `max_client_conn`?)",
        ),
        ("wrong type", "default_pool_size = \"big\"", "pgsluice.default_pool_size", "invalid type"),
        ("negative time", "query_wait_timeout = -1", "pgsluice.query_wait_timeout", "not a valid number of seconds"),
        ("impossible value", "default_pool_size = 0", "pgsluice.default_pool_size", "must be at least 1"),
        ("too many workers", "workers = 5000", "pgsluice.workers", "must be at most 1024"),
        ("bad address", "listen_addr = \"127.0.0.1,::1\"", "pgsluice.listen_addr", "one address only"),
    ];
    for (what, line, key, reason) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), line);
        let out = check(&path).await;
        assert_eq!(out.code, Some(1), "{what}: exit code; stderr: {}", out.stderr);
        let expected = format!("{}: key `{key}`: ", path.display());
        assert!(out.stderr.contains(&expected), "{what}: wanted {expected:?} in: {}", out.stderr);
        assert!(out.stderr.contains(reason), "{what}: wanted {reason:?} in: {}", out.stderr);
        assert!(!out.stdout.contains("OK"), "{what}: {}", out.stdout);
    }
}

#[tokio::test]
async fn check_accepts_min_pool_size_above_the_pool_size_and_warns() {
    // PgBouncer accepts it and keeps at most the pool size open.
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "min_pool_size = 9\ndefault_pool_size = 3");
    let out = check(&path).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("database app: min_pool_size 9 is more than its pool size 3"), "{}", out.stderr);
}

#[tokio::test]
async fn check_warns_of_console_users_without_a_secret_and_hosts_that_do_not_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "admin_users = \"app,ghost\"\nstats_users = \"watcher\"");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace("[databases]\n", "[databases]\nfar = { host = \"no-such-host.invalid\" }\n");
    std::fs::write(&path, text).unwrap();
    let out = check(&path).await;
    assert_eq!(out.code, Some(0), "warnings, not errors: {}", out.stderr);
    for needle in [
        "admin_users: \"ghost\" is not in the auth file",
        "stats_users: \"watcher\" is not in the auth file",
        "databases.far: host \"no-such-host.invalid\" does not resolve",
    ] {
        assert!(out.stderr.contains(needle), "{needle} missing: {}", out.stderr);
    }
    assert!(!out.stderr.contains("\"app\" is not in the auth file"), "{}", out.stderr);
    assert!(!out.stderr.contains("databases.app"), "127.0.0.1 resolves: {}", out.stderr);
}

#[tokio::test]
async fn log_level_quiets_warnings_and_rust_log_takes_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "min_pool_size = 9\ndefault_pool_size = 3");
    let warning = "min_pool_size 9 is more than its pool size 3";
    let run = |level: &'static str, rust_log: Option<&'static str>| {
        let path = path.clone();
        async move {
            let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgsluice"));
            cmd.args(["--log-level", level, "--check"]).arg(&path).env_remove("RUST_LOG");
            if let Some(filter) = rust_log {
                cmd.env("RUST_LOG", filter);
            }
            let out = tokio::time::timeout(Duration::from_secs(30), cmd.output()).await.unwrap().unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8_lossy(&out.stderr).contains(warning)
        }
    };
    assert!(run("warn", None).await, "--log-level warn keeps warnings");
    assert!(!run("error", None).await, "--log-level error drops them");
    assert!(run("error", Some("warn")).await, "RUST_LOG wins over --log-level");
}

#[tokio::test]
async fn help_says_what_the_signals_do_and_where_the_docs_are() {
    let out = pgsluice(&["--help".as_ref()]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for needle in ["SIGHUP", "SIGINT", "SIGTERM", "SIGUSR1", "RUST_LOG", "--log-level", "README.md", "man pgsluice"] {
        assert!(out.stdout.contains(needle), "{needle} missing from --help:\n{}", out.stdout);
    }
}

#[tokio::test]
async fn a_pgbouncer_ini_given_as_the_config_reports_what_it_does_not_support() {
    let dir = tempfile::tempdir().unwrap();
    let ini = "[databases]\napp = host=127.0.0.1 connect_query='select 1'\n\
               [pgbouncer]\nauth_type = trust\nlogfile = pgbouncer.log\n";
    // By its name, and by its text under any name.
    for name in ["pgbouncer.ini", "pgbouncer.conf"] {
        let path = dir.path().join(name);
        std::fs::write(&path, ini).unwrap();
        let out = check(&path).await;
        assert_eq!(out.code, Some(0), "{name}: {}", out.stderr);
        assert_eq!(out.stderr.matches("not supported by pgsluice").count(), 2, "{name}: {}", out.stderr);
        assert!(
            out.stderr.contains("[databases] app: connect_query") && out.stderr.contains("logfile"),
            "{}",
            out.stderr
        );
    }
}

#[tokio::test]
async fn check_rejects_a_missing_auth_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "");
    std::fs::remove_file(dir.path().join("userlist.txt")).unwrap();
    let out = check(&path).await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("userlist.txt") && out.stderr.contains("cannot read"), "{}", out.stderr);
}

#[tokio::test]
async fn version_prints_the_crate_version() {
    let out = pgsluice(&["--version".as_ref()]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // As PgBouncer's `--version`, its first line is what SHOW VERSION shows (tests/console_clients.rs).
    assert_eq!(out.stdout.trim(), format!("pgsluice {} (PgBouncer 1.25.0 compatible)", env!("CARGO_PKG_VERSION")));
}

/// Threads of `pid` named like tokio's runtime workers ("tokio-rt-worker"; older tokio: "tokio-runtime-worker",
/// which the kernel cuts to 15 bytes).
fn runtime_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the pgsluice process")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "pgsluice-worker") // blocking threads are "pgsluice-blocki"
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_sets_the_number_of_runtime_threads() {
    let pg = TestPg::start().await;
    for workers in [1, 3] {
        let px = Proxy::builder(&pg).general("workers", &workers.to_string()).start().await;
        assert_eq!(runtime_threads(px.pid()), workers, "workers = {workers}");
        let clients: Vec<_> =
            futures_util::future::join_all((0..4).map(|_| px.client("scram_user", "scram_pw", "app"))).await;
        for (i, c) in clients.iter().enumerate() {
            assert_eq!(scalar(c, &format!("select {i} + 1")).await, (i + 1).to_string(), "workers = {workers}");
        }
        // SCRAM logins derived keys on blocking threads meanwhile: those are not counted as workers.
        assert_eq!(runtime_threads(px.pid()), workers, "workers = {workers}, after SCRAM logins");
    }
}

/// The long options `--help` lists (`--check`, ..., `--help`, `--version`).
fn long_options(help: &str) -> Vec<String> {
    help.split_whitespace()
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| w.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).next().unwrap_or_default())
        .filter(|w| !w.is_empty())
        .map(|w| format!("--{w}"))
        .collect()
}

#[tokio::test]
async fn print_man_renders_the_help_as_a_manual_page() {
    let out = pgsluice(&["--print-man".as_ref()]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let man = out.stdout;
    assert!(man.lines().any(|l| l.starts_with(".TH PGSLUICE 1 ")), "{}", &man[..man.len().min(300)]);
    assert_eq!(man.matches(".TH ").count(), 1, "{man}");
    // roff writes a dash as `\-`.
    let text = man.replace("\\-", "-");
    let help = pgsluice(&["--help".as_ref()]).await.stdout;
    let options = long_options(&help);
    assert!(options.len() >= 5 && options.contains(&"--pgbouncer-ini".to_string()), "{options:?} from {help}");
    for option in &options {
        assert!(text.contains(&format!("\\fB{option}")), "{option} missing from the man page:\n{man}");
    }
    assert!(!text.contains("print-man"), "the hidden flag is left out of the man page");
    assert!(!man.contains("Signals:"), "--help's summary is not repeated before SIGNALS");
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH COMMANDS", ".SH SIGNALS", ".SH FILES"] {
        assert!(man.contains(section), "{section} missing:\n{man}");
    }
    assert!(man.contains("\\fBpgsluice convert\\fR"), "the convert subcommand: {man}");
    assert!(text.contains(env!("CARGO_PKG_VERSION")), "{man}");
}
