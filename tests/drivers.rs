//! Driver compatibility matrix: real client drivers through pgsluice in transaction mode with a pool of
//! 2 and 6 concurrent connections each, so their named prepared statements keep landing on servers that
//! lack them. The drivers come from `tests/drivers/setup.sh` (run by `.ci/run`); tokio-postgres and
//! pgbench are exercised by the other test files. The same programs run once more over TLS on both
//! hops, each driver verifying pgsluice's certificate in full against the test CA.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::certs::{TestCerts, tls_proxy};
use common::{Proxy, TestPg, scalar};

const USER: &str = "scram_user";
const PW: &str = "scram_pw";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn env_dir() -> PathBuf {
    root().join("target/driver-env")
}

fn require(path: &Path) {
    assert!(path.exists(), "{} is missing: run `bash tests/drivers/setup.sh` first", path.display());
}

/// Runs one driver program against `px` with the libpq environment variables set; asserts it succeeded.
async fn run_driver(px: &Proxy, program: &Path, args: &[&str]) -> String {
    run_driver_with(px, program, args, &[]).await
}

/// As `run_driver`, with `env` set over the defaults.
async fn run_driver_with(px: &Proxy, program: &Path, args: &[&str], env: &[(&str, String)]) -> String {
    require(program);
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(root().join("tests/drivers"))
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", px.port().to_string())
        .env("PGUSER", USER)
        .env("PGPASSWORD", PW)
        .env("PGDATABASE", "app")
        .env("PGSSLMODE", "disable")
        .env("NODE_PATH", env_dir().join("node/node_modules"))
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .expect("driver run timed out")
        .expect("driver started");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} failed:\n{stdout}\n{stderr}\n--- pgsluice log tail ---\n{}",
        program.display(),
        {
            let log = px.log_contents();
            log[log.len().saturating_sub(4000)..].to_string()
        }
    );
    assert!(stdout.contains("rounds ok"), "{stdout}");
    stdout
}

/// Starts PostgreSQL and pgsluice (transaction mode, pool of 2).
async fn setup() -> (TestPg, Proxy) {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).pool_size(2).start().await;
    (pg, px)
}

/// Server truth after a driver that prepares named statements: pgsluice's names are on the servers,
/// and no more than the pool's 2 backends ever existed for the user at the end.
async fn assert_statements_were_prepared(pg: &TestPg, px: &Proxy) {
    let c = px.client(USER, PW, "app").await;
    let n: i64 =
        scalar(&c, "select count(*) from pg_prepared_statements where name like 'pgsluice_%'").await.parse().unwrap();
    assert!(n > 0, "the driver's statements were prepared under pgsluice's names");
    assert!(pg.backends_for(USER).await <= 2);
}

fn python() -> PathBuf {
    env_dir().join("venv/bin/python")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_with_prepare_threshold_0() {
    let (pg, px) = setup().await;
    run_driver(&px, &python(), &["psycopg3_matrix.py"]).await;
    assert_statements_were_prepared(&pg, &px).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg2() {
    let (_pg, px) = setup().await;
    run_driver(&px, &python(), &["psycopg2_matrix.py"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_with_its_statement_cache() {
    let (pg, px) = setup().await;
    run_driver(&px, &python(), &["asyncpg_matrix.py"]).await;
    assert_statements_were_prepared(&pg, &px).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_named_queries() {
    let (pg, px) = setup().await;
    require(&env_dir().join("node/node_modules/pg"));
    let node = which("node");
    run_driver(&px, &node, &["node_pg_matrix.js"]).await;
    assert_statements_were_prepared(&pg, &px).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_past_prepare_threshold() {
    let (pg, px) = setup().await;
    jdbc_schemas(&pg).await;
    run_driver(&px, &which("java"), &["-cp", &jdbc_jar(), "JdbcMatrix.java"]).await;
    assert_statements_were_prepared(&pg, &px).await;
}

/// Each JDBC connection setSchema()s its own schema, where `accounts` is a view of the real table.
async fn jdbc_schemas(pg: &TestPg) {
    let admin = pg.admin_client().await;
    for n in 0..6 {
        let s = format!("jdbc_schema_{n}");
        admin
            .batch_execute(&format!(
                "create schema {s}; create view {s}.accounts as select * from public.accounts; \
                 grant usage on schema {s} to {USER}; grant all on {s}.accounts to {USER}"
            ))
            .await
            .unwrap();
    }
}

/// The pgjdbc jar (from Debian), java's class path for JdbcMatrix.java.
fn jdbc_jar() -> String {
    let jar = Path::new("/usr/share/java/postgresql.jar");
    require(jar);
    jar.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_with_its_statement_cache() {
    use sqlx::Row;
    let (pg, px) = setup().await;
    let mut tasks = Vec::new();
    for n in 0..6i32 {
        let url = format!("postgres://{USER}:{PW}@127.0.0.1:{}/app?sslmode=disable", px.port());
        tasks.push(tokio::spawn(async move {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            // sqlx sends extra_float_digits=2 at startup: honoured on every server it lands on.
            for _ in 0..3 {
                let v: String = sqlx::query("show extra_float_digits").fetch_one(&mut c).await.unwrap().get(0);
                assert_eq!(v, "2");
            }
            for i in 0..30i32 {
                let v = n * 1000 + i;
                let d: i32 = sqlx::query("select $1::int4 * 2").bind(v).fetch_one(&mut c).await.unwrap().get(0);
                assert_eq!(d, v * 2);
                let cnt: i64 = sqlx::query("select count(*) from accounts where id <= $1")
                    .bind(i % 12)
                    .fetch_one(&mut c)
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(cnt, i64::from((i % 12).min(10)));
                let mut tx = c.begin().await.unwrap();
                sqlx::query("update accounts set balance = balance where id = $1")
                    .bind(1 + i % 10)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                let s: String =
                    sqlx::query("select $1::text || 'x'").bind(v.to_string()).fetch_one(&mut *tx).await.unwrap().get(0);
                assert_eq!(s, format!("{v}x"));
                if i % 2 == 0 { tx.commit().await.unwrap() } else { tx.rollback().await.unwrap() }
            }
            c.close().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_statements_were_prepared(&pg, &px).await;
}

/// A PostgreSQL that takes TCP logins only over TLS (`hostnossl ... reject`), and pgsluice in front of
/// it (transaction mode, pool of 2) requiring TLS of clients with the test certificates and checking
/// the server's certificate in full (`server_tls_sslmode = "verify-full"`) against the test CA: plain
/// text is refused on both hops, so every round trip of a driver is TLS end to end.
struct Tls {
    px: Proxy,
    pg: TestPg,
    certs: TestCerts,
}

impl Tls {
    async fn start() -> Tls {
        let certs = TestCerts::new();
        let pg = TestPg::start_tls(&certs, "server", "").await;
        let px = tls_proxy(&pg, &certs, "require").pool_size(2).start().await;
        Tls { px, pg, certs }
    }

    /// The strongest check each driver makes with the test CA: verify-full against `localhost`, a name
    /// the certificate carries. libpq's variables serve psycopg, psycopg2 and asyncpg as they are, and
    /// JdbcMatrix.java maps them onto pgjdbc's `sslmode`/`sslrootcert`; node-postgres turns PGSSLMODE
    /// into `ssl: true` (node's own checks of chain and host name) and trusts the CA through
    /// NODE_EXTRA_CA_CERTS.
    fn env(&self) -> Vec<(&'static str, String)> {
        let ca = self.certs.path("ca.crt").display().to_string();
        vec![
            ("PGHOST", "localhost".into()),
            ("PGSSLMODE", "verify-full".into()),
            ("PGSSLROOTCERT", ca.clone()),
            ("NODE_EXTRA_CA_CERTS", ca),
        ]
    }

    /// Runs the driver program over TLS, then checks that TLS was in force on both hops.
    async fn run(&self, program: &Path, args: &[&str]) {
        run_driver_with(&self.px, program, args, &self.env()).await;
        // The client hop: a plain-text login through the same pgsluice is refused.
        let e = self.px.try_client(USER, PW, "app").await.expect_err("plain text refused under require");
        assert_eq!(e.as_db_error().map(|d| d.code().code()), Some("28000"), "{e}");
        // The server hop: PostgreSQL's own view of the pool's backends, no more than its 2.
        let (tls, all): (i64, i64) = {
            let row = self
                .pg
                .admin_client()
                .await
                .query_one(
                    "select count(*) filter (where s.ssl), count(*) from pg_stat_activity a \
                     join pg_stat_ssl s using (pid) where a.usename = $1 and a.backend_type = 'client backend'",
                    &[&USER],
                )
                .await
                .unwrap();
            (row.get(0), row.get(1))
        };
        assert!((1..=2).contains(&all), "{all} backends for {USER}");
        assert_eq!(tls, all, "every server connection of pgsluice's is TLS");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_over_tls_verify_full() {
    Tls::start().await.run(&python(), &["psycopg3_matrix.py"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg2_over_tls_verify_full() {
    Tls::start().await.run(&python(), &["psycopg2_matrix.py"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_over_tls_verify_full() {
    Tls::start().await.run(&python(), &["asyncpg_matrix.py"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_over_tls_verify_full() {
    require(&env_dir().join("node/node_modules/pg"));
    Tls::start().await.run(&which("node"), &["node_pg_matrix.js"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_over_tls_verify_full() {
    let tls = Tls::start().await;
    jdbc_schemas(&tls.pg).await;
    tls.run(&which("java"), &["-cp", &jdbc_jar(), "JdbcMatrix.java"]).await;
}

fn which(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(program)).find(|p| p.is_file()))
        .unwrap_or_else(|| panic!("{program} not found on PATH: run `bash tests/drivers/setup.sh` first"))
}
