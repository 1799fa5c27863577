//! Spawns the real pgsluice binary with a generated config, on a free port; killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

use super::pg::{TestPg, free_port};

pub struct ProxyBuilder {
    pg_port: u16,
    general: Vec<(String, String)>,
    databases: Vec<(String, String)>,
    users: Vec<(String, String)>,
    userlist: Vec<(String, String)>,
    fallback: bool,
    nofile: Option<u32>,
    env: Vec<(String, String)>,
}

impl ProxyBuilder {
    /// Sets a `[pgsluice]` key to a TOML value written verbatim (`"\"session\""`, `"5"`, `"1.5"`).
    pub fn general(mut self, key: &str, toml_value: &str) -> Self {
        self.general.retain(|(k, _)| k != key);
        self.general.push((key.into(), toml_value.into()));
        self
    }
    pub fn pool_size(self, n: usize) -> Self {
        self.general("default_pool_size", &n.to_string())
    }
    pub fn reserve_pool(self, size: usize, timeout_secs: f64) -> Self {
        self.general("reserve_pool_size", &size.to_string())
            .general("reserve_pool_timeout", &format!("{timeout_secs:?}"))
    }
    pub fn query_wait_timeout(self, secs: f64) -> Self {
        self.general("query_wait_timeout", &format!("{secs:?}"))
    }
    pub fn max_client_conn(self, n: usize) -> Self {
        self.general("max_client_conn", &n.to_string())
    }
    pub fn pool_mode(self, mode: &str) -> Self {
        self.general("pool_mode", &format!("{mode:?}"))
    }
    pub fn auth_type(self, t: &str) -> Self {
        self.general("auth_type", &format!("{t:?}"))
    }
    /// Adds a `[databases]` entry; `fields` are extra inline-table fields (`pool_size = 2, dbname = "app"`).
    pub fn database(mut self, name: &str, fields: &str) -> Self {
        self.databases.push((name.into(), fields.into()));
        self
    }
    pub fn user(mut self, name: &str, fields: &str) -> Self {
        self.users.push((name.into(), fields.into()));
        self
    }
    /// Replaces the auth file's entries.
    pub fn userlist(mut self, entries: &[(&str, &str)]) -> Self {
        self.userlist = entries.iter().map(|(u, p)| (u.to_string(), p.to_string())).collect();
        self
    }
    pub fn no_fallback_database(mut self) -> Self {
        self.fallback = false;
        self
    }
    /// Starts pgsluice with this RLIMIT_NOFILE (soft and hard), set by a shell that then execs it.
    pub fn nofile_limit(mut self, n: u32) -> Self {
        self.nofile = Some(n);
        self
    }

    /// Sets an environment variable of the pgsluice process (`NOTIFY_SOCKET`, ...).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    fn config_text(&self, port: u16, userlist: &std::path::Path) -> String {
        let mut s = format!(
            "[pgsluice]\nlisten_addr = \"127.0.0.1\"\nlisten_port = {port}\nauth_file = {:?}\n",
            userlist.display().to_string()
        );
        for (k, v) in &self.general {
            s.push_str(&format!("{k} = {v}\n"));
        }
        s.push_str("[databases]\n");
        let mut have_app = false;
        for (name, fields) in &self.databases {
            have_app |= name == "app";
            let port = if fields.contains("port") { String::new() } else { format!(", port = {}", self.pg_port) };
            let host = if fields.contains("host =") { "" } else { "host = \"127.0.0.1\"" };
            let sep = if fields.is_empty() || host.is_empty() { "" } else { ", " };
            s.push_str(&format!("{name:?} = {{ {host}{sep}{fields}{port} }}\n"));
        }
        if !have_app {
            s.push_str(&format!("app = {{ host = \"127.0.0.1\", port = {}, dbname = \"app\" }}\n", self.pg_port));
        }
        if self.fallback {
            s.push_str(&format!("\"*\" = {{ host = \"127.0.0.1\", port = {} }}\n", self.pg_port));
        }
        s.push_str("[users]\n");
        for (name, fields) in &self.users {
            s.push_str(&format!("{name:?} = {{ {fields} }}\n"));
        }
        s
    }

    pub async fn start(self) -> Proxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let userlist = dir.path().join("userlist.txt");
        let lines: String = self.userlist.iter().map(|(u, p)| format!("\"{u}\" \"{p}\"\n")).collect();
        std::fs::write(&userlist, lines).unwrap();
        let config = dir.path().join("pgsluice.toml");
        let log = dir.path().join("pgsluice.log");
        for _ in 0..5 {
            let port = free_port();
            std::fs::write(&config, self.config_text(port, &userlist)).unwrap();
            let mut cmd = match self.nofile {
                Some(n) => {
                    let mut c = Command::new("sh");
                    c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\"")]);
                    c.arg(env!("CARGO_BIN_EXE_pgsluice"));
                    c
                }
                None => Command::new(env!("CARGO_BIN_EXE_pgsluice")),
            };
            let mut child = cmd
                .arg(&config)
                .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "debug".into()))
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
                .spawn()
                .expect("spawn pgsluice");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                    return Proxy { child, port, dir, config };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break; // probably lost the port race: try another
                }
                assert!(Instant::now() < deadline, "pgsluice did not start listening");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!(
            "pgsluice failed to start: {}",
            std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
        );
    }
}

pub struct Proxy {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Proxy {
    pub fn builder(pg: &TestPg) -> ProxyBuilder {
        ProxyBuilder {
            pg_port: pg.port(),
            general: vec![("auth_type".into(), "\"scram-sha-256\"".into())],
            databases: Vec::new(),
            users: Vec::new(),
            userlist: vec![
                ("scram_user".into(), "scram_pw".into()),
                ("md5_user".into(), "md5_pw".into()),
                ("trust_user".into(), "".into()),
            ],
            fallback: true,
            nofile: None,
            env: Vec::new(),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn connstr(&self, user: &str, password: &str, db: &str) -> String {
        format!("host=127.0.0.1 port={} user={user} password='{password}' dbname={db} connect_timeout=30", self.port)
    }

    pub async fn try_client_with(
        &self,
        user: &str,
        password: &str,
        db: &str,
        opts: &[(&str, &str)],
    ) -> Result<Client, tokio_postgres::Error> {
        let mut conf: tokio_postgres::Config = self.connstr(user, password, db).parse().unwrap();
        let mut options = String::new();
        for (k, v) in opts {
            match *k {
                "application_name" => {
                    conf.application_name(*v);
                }
                _ => options.push_str(&format!("-c {k}={v} ")),
            }
        }
        if !options.is_empty() {
            conf.options(options.trim());
        }
        let (c, conn) = conf.connect(NoTls).await?;
        tokio::spawn(conn);
        Ok(c)
    }

    pub async fn try_client(&self, user: &str, password: &str, db: &str) -> Result<Client, tokio_postgres::Error> {
        self.try_client_with(user, password, db, &[]).await
    }

    pub async fn client(&self, user: &str, password: &str, db: &str) -> Client {
        self.try_client(user, password, db)
            .await
            .unwrap_or_else(|e| panic!("connect through pgsluice as {user}: {e}\n{}", self.log_contents()))
    }

    pub async fn client_with(&self, user: &str, password: &str, db: &str, opts: &[(&str, &str)]) -> Client {
        self.try_client_with(user, password, db, opts)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}\n{}", self.log_contents()))
    }

    pub fn log_contents(&self) -> String {
        let out = std::fs::read_to_string(self.dir.path().join("pgsluice.log")).unwrap_or_default();
        let err = std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default();
        let tail =
            |s: &str| s.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
        format!("{}{}", tail(&out), tail(&err))
    }

    /// The whole log (stdout and stderr), for counting lines.
    pub fn full_log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        read("pgsluice.log") + &read("stderr.log")
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill").args(["-s", sig, &self.child.id().to_string()]).status();
    }

    /// Waits for the process to exit by itself; `None` if it is still running after `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Appends `text` to the config file (a `[peers]` section, say); RELOAD or SIGHUP applies it.
    pub fn append_config(&self, text: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&self.config).expect("open config");
        f.write_all(text.as_bytes()).expect("append to config");
    }

    /// A second pgsluice on a copy of this one's config (so the same port: needs so_reuseport) with the
    /// `[pgsluice]` keys in `changes` set to these TOML values (each must be in the config already).
    pub async fn sibling_with(&self, changes: &[(&str, &str)]) -> Proxy {
        let text = std::fs::read_to_string(&self.config).expect("read config");
        let changed: Vec<String> = text
            .lines()
            .map(|l| match changes.iter().find(|(k, _)| l.split('=').next().map(str::trim) == Some(*k)) {
                Some((k, v)) => format!("{k} = {v}"),
                None => l.to_string(),
            })
            .collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("pgsluice.toml");
        std::fs::write(&config, changed.join("\n") + "\n").unwrap();
        self.spawn_sibling(dir, config).await
    }

    /// A second pgsluice on the same config file (and so the same port: needs so_reuseport), started
    /// once its log says it is listening.
    pub async fn sibling(&self) -> Proxy {
        self.spawn_sibling(tempfile::tempdir().expect("tempdir"), self.config.clone()).await
    }

    async fn spawn_sibling(&self, dir: tempfile::TempDir, config: PathBuf) -> Proxy {
        let child = Command::new(env!("CARGO_BIN_EXE_pgsluice"))
            .arg(&config)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("pgsluice.log")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .expect("spawn sibling");
        let sibling = Proxy { child, port: self.port, dir, config };
        wait_for(Duration::from_secs(10), "the sibling listens", || async {
            sibling.log_contents().contains("listening")
        })
        .await;
        sibling
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` every 20 ms until it holds; panics naming `what` after `deadline`.
pub async fn wait_for<F, Fut>(deadline: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    while !cond().await {
        assert!(Instant::now() < until, "timed out after {deadline:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
