//! A throwaway PostgreSQL per test: `initdb` runs once into a shared template (with the test roles and
//! the `app` database), each test copies it and starts its own postmaster on a free port.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

pub fn pg_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PG_BIN") {
        return PathBuf::from(p);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).filter(|p| p.join("initdb").exists()).collect())
        .unwrap_or_default();
    found.sort_by_key(|p| {
        p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0)
    });
    found.pop().expect("PostgreSQL server binaries not found: apt-get install postgresql, or set PG_BIN")
}

/// Runs a PostgreSQL binary, as `postgres` when we are root.
fn pg_cmd(bin: &str) -> Command {
    let path = pg_bin().join(bin);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

fn run(mut cmd: Command, what: &str) {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn chown_postgres(path: &Path) {
    if is_root() {
        run(
            {
                let mut c = Command::new("chown");
                c.args(["-R", "postgres:postgres"]).arg(path);
                c
            },
            "chown",
        );
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

const SETUP_SQL: &str = r#"
set password_encryption = 'scram-sha-256';
create role scram_user login createdb password 'scram_pw';
create role trust_user login createdb;
set password_encryption = 'md5';
create role md5_user login createdb password 'md5_pw';
create database app owner scram_user;
grant all on database app to public;
"#;
const APP_SQL: &str = r#"
create table accounts(id int primary key, balance int not null);
insert into accounts select g, 0 from generate_series(1, 10) g;
grant all on accounts to public;
grant all on schema public to public;
"#;

/// The template data directory, created once per machine (atomically: built aside, then renamed).
fn template() -> PathBuf {
    let version =
        pg_bin().parent().and_then(|p| p.file_name()).map(|v| v.to_string_lossy().into_owned()).unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("pgsluice-test-template-v2-{version}"));
    if dir.join("ready").exists() {
        return dir;
    }
    // One builder at a time across test processes; the others wait on the lock, then reuse.
    let lock = std::fs::File::create(std::env::temp_dir().join(format!("pgsluice-test-template-{version}.lock")))
        .expect("template lock file");
    lock.lock().expect("lock the template");
    if dir.join("ready").exists() {
        return dir;
    }
    let work = std::env::temp_dir().join(format!("pgsluice-template-build-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    set_mode(&work, 0o755);
    chown_postgres(&work);
    let data = work.join("data");
    run(
        {
            let mut c = pg_cmd("initdb");
            c.arg("-D").arg(&data).args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]);
            c
        },
        "initdb",
    );
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\nhost all trust_user 127.0.0.1/32 trust\nhost all md5_user 127.0.0.1/32 md5\nhost all all 127.0.0.1/32 scram-sha-256\n",
    )
    .unwrap();
    let mut conf = std::fs::OpenOptions::new().append(true).open(data.join("postgresql.conf")).unwrap();
    use std::io::Write;
    writeln!(
        conf,
        "listen_addresses = '127.0.0.1'\nmax_connections = 200\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\nshared_buffers = 32MB\nlogging_collector = off\nlog_min_messages = warning"
    )
    .unwrap();
    drop(conf);
    chown_postgres(&work);
    let port = free_port();
    let pg = StopOnDrop(Postmaster { data: data.clone(), port });
    pg.0.start();
    let psql = |db: &str, sql: &str| {
        let mut c = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "psql"]);
            c
        } else {
            Command::new("psql")
        };
        c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"]).arg(&data).args([
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            db,
        ]);
        for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            c.args(["-c", stmt]);
        }
        run(c, "psql setup");
    };
    psql("postgres", SETUP_SQL);
    psql("app", APP_SQL);
    drop(pg);
    std::fs::write(work.join("ready"), "").unwrap();
    if std::fs::rename(&work, &dir).is_err() {
        // Another test process won the race; use its template.
        let _ = std::fs::remove_dir_all(&work);
    }
    dir
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

/// Stops a postmaster even when setup panics, so no stray server outlives the test.
struct StopOnDrop(Postmaster);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop("fast");
    }
}

struct Postmaster {
    data: PathBuf,
    port: u16,
}

impl Postmaster {
    fn start(&self) {
        let opts = format!("-p {} -k {}", self.port, self.data.display());
        let mut c = pg_cmd("pg_ctl");
        c.arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.data.join("postgres.log"))
            .args(["-o", &opts, "-w", "-t", "30", "start"]);
        run(c, "pg_ctl start");
    }
    fn stop(&self, mode: &str) {
        let mut c = pg_cmd("pg_ctl");
        c.arg("-D").arg(&self.data).args(["-m", mode, "-w", "stop"]);
        let _ = c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
    fn restart(&self) {
        let opts = format!("-p {} -k {}", self.port, self.data.display());
        let mut c = pg_cmd("pg_ctl");
        c.arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.data.join("postgres.log"))
            .args(["-o", &opts, "-m", "fast", "-w", "restart"]);
        run(c, "pg_ctl restart");
    }
}

/// One running PostgreSQL, stopped and removed on drop.
pub struct TestPg {
    dir: PathBuf,
    pm: Postmaster,
}

impl TestPg {
    pub async fn start() -> TestPg {
        tokio::task::spawn_blocking(|| Self::start_blocking(|_| {})).await.expect("start postgres")
    }

    /// Starts one whose data directory `setup` changed first (postgresql.conf, pg_hba.conf, files).
    pub async fn start_with(setup: impl FnOnce(&Path) + Send + 'static) -> TestPg {
        tokio::task::spawn_blocking(move || Self::start_blocking(setup)).await.expect("start postgres")
    }

    /// Starts one with `ssl = on` (certs' `<cert>.crt`, and ca.crt for client certificates) whose
    /// pg_hba.conf takes TCP logins only over TLS (`hostssl`), after the `hba_extra` lines, and refuses
    /// plain text (`hostnossl ... reject`).
    pub async fn start_tls(certs: &super::certs::TestCerts, cert: &str, hba_extra: &str) -> TestPg {
        let (crt, key) = (certs.path(&format!("{cert}.crt")), certs.path(&format!("{cert}.key")));
        let ca = certs.path("ca.crt");
        let hba_extra = hba_extra.to_string();
        Self::start_with(move |data| {
            for (from, to) in [(&crt, "server.crt"), (&key, "server.key"), (&ca, "root.crt")] {
                std::fs::copy(from, data.join(to)).unwrap();
            }
            set_mode(&data.join("server.key"), 0o600);
            let mut conf = std::fs::OpenOptions::new().append(true).open(data.join("postgresql.conf")).unwrap();
            use std::io::Write;
            writeln!(conf, "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nssl_ca_file = 'root.crt'")
                .unwrap();
            let hba = format!(
                "local all all trust\n{hba_extra}hostssl all trust_user 127.0.0.1/32 trust\nhostssl all md5_user 127.0.0.1/32 md5\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all 127.0.0.1/32 reject\n"
            );
            std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
        })
        .await
    }

    fn start_blocking(setup: impl FnOnce(&Path)) -> TestPg {
        let started = Instant::now();
        let template = template();
        let dir = std::env::temp_dir().join(format!("pgsluice-test-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        set_mode(&dir, 0o755);
        run(
            {
                let mut c = Command::new("cp");
                c.arg("-a").arg(template.join("data")).arg(dir.join("data"));
                c
            },
            "copy template",
        );
        let data = dir.join("data");
        setup(&data);
        chown_postgres(&dir);
        let _ = std::fs::remove_file(data.join("postmaster.pid"));
        let mut last = None;
        for _ in 0..5 {
            let pm = Postmaster { data: data.clone(), port: free_port() };
            let opts = format!("-p {} -k {}", pm.port, data.display());
            let mut c = pg_cmd("pg_ctl");
            c.arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(data.join("postgres.log"))
                .args(["-o", &opts, "-w", "-t", "30", "start"]);
            match c.stdin(Stdio::null()).output() {
                Ok(o) if o.status.success() => {
                    if started.elapsed() > Duration::from_secs(10) {
                        eprintln!("TestPg: slow start ({:?})", started.elapsed());
                    }
                    return TestPg { dir, pm };
                }
                other => last = Some(format!("{other:?}")),
            }
        }
        panic!(
            "could not start postgres: {last:?}\n{}",
            std::fs::read_to_string(data.join("postgres.log")).unwrap_or_default()
        );
    }

    pub fn port(&self) -> u16 {
        self.pm.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.pm.data
    }

    pub fn log_contents(&self) -> String {
        std::fs::read_to_string(self.pm.data.join("postgres.log")).unwrap_or_default()
    }

    /// Superuser over the unix socket.
    pub async fn admin_client(&self) -> Client {
        let conf = format!("host={} port={} user=postgres dbname=app", self.pm.data.display(), self.pm.port);
        let (c, conn) = tokio_postgres::connect(&conf, NoTls).await.expect("admin connection");
        tokio::spawn(conn);
        c
    }

    /// A direct TCP connection, bypassing pgsluice.
    pub async fn direct(&self, user: &str, password: &str, db: &str) -> Client {
        let conf = format!("host=127.0.0.1 port={} user={user} password={password} dbname={db}", self.pm.port);
        let (c, conn) = tokio_postgres::connect(&conf, NoTls).await.expect("direct connection");
        tokio::spawn(conn);
        c
    }

    /// Client backends PostgreSQL has for `user`.
    pub async fn backends_for(&self, user: &str) -> i64 {
        let c = self.admin_client().await;
        c.query_one(
            "select count(*) from pg_stat_activity where usename = $1 and backend_type = 'client backend'",
            &[&user],
        )
        .await
        .unwrap()
        .get(0)
    }

    /// Sends `sig` (e.g. "STOP", "CONT") to the postmaster process only, not its backends.
    pub fn signal_postmaster(&self, sig: &str) {
        let pid_file = std::fs::read_to_string(self.pm.data.join("postmaster.pid")).expect("postmaster.pid");
        let pid = pid_file.lines().next().expect("pid line").trim().to_string();
        let ok = Command::new("kill").args(["-s", sig, &pid]).status().map(|s| s.success()).unwrap_or(false);
        assert!(ok, "kill -s {sig} {pid}");
    }

    pub async fn restart_fast(&self) {
        let pm = Postmaster { data: self.pm.data.clone(), port: self.pm.port };
        tokio::task::spawn_blocking(move || pm.restart()).await.unwrap();
    }

    pub async fn stop(&self) {
        let pm = Postmaster { data: self.pm.data.clone(), port: self.pm.port };
        tokio::task::spawn_blocking(move || pm.stop("fast")).await.unwrap();
    }

    pub async fn start_again(&self) {
        let pm = Postmaster { data: self.pm.data.clone(), port: self.pm.port };
        tokio::task::spawn_blocking(move || pm.start()).await.unwrap();
    }
}

impl Drop for TestPg {
    fn drop(&mut self) {
        self.pm.stop("immediate");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
