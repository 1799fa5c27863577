//! systemd's `Type=notify` protocol: with `$NOTIFY_SOCKET` set, pgsluice sends READY=1 once it serves
//! (never before its listeners are bound), RELOADING=1 with MONOTONIC_USEC then READY=1 around a SIGHUP
//! reload (a failed one too), and STOPPING=1 when a shutdown begins. A socket that is not there does not
//! keep it from starting.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::pg::free_port;
use common::{Proxy, TestPg, scalar};
use tokio::net::UnixDatagram;

/// The test's end of `$NOTIFY_SOCKET`: a datagram socket bound in a temp dir.
struct Systemd {
    socket: UnixDatagram,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Systemd {
    fn bind() -> Systemd {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        Systemd { socket, path, _dir: dir }
    }

    fn var(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// The next notification, as its `KEY=value` lines.
    async fn next(&self, what: &str) -> Vec<String> {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(15), self.socket.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no notification within 15 s, waiting for {what}"))
            .unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap().lines().map(str::to_string).collect()
    }

    /// Whether a notification is waiting (after the sender is gone).
    fn pending(&self) -> Option<String> {
        let mut buf = vec![0u8; 4096];
        self.socket.try_recv(&mut buf).ok().map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

fn value<'a>(msg: &'a [String], key: &str) -> Option<&'a str> {
    msg.iter().find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

fn monotonic_usec() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1_000
}

/// SIGHUP, and the RELOADING=1 it brings, stamped with CLOCK_MONOTONIC between the signal and its receipt.
async fn reload(px: &Proxy, systemd: &Systemd) {
    let before = monotonic_usec();
    px.signal("HUP");
    let msg = systemd.next("RELOADING=1").await;
    let after = monotonic_usec();
    assert_eq!(value(&msg, "RELOADING"), Some("1"), "{msg:?}");
    let stamp: u64 = value(&msg, "MONOTONIC_USEC").and_then(|v| v.parse().ok()).expect("MONOTONIC_USEC");
    assert!((before..=after).contains(&stamp), "MONOTONIC_USEC {stamp} not in [{before}, {after}]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_reloading_and_stopping_follow_the_process_life() {
    let pg = TestPg::start().await;
    let systemd = Systemd::bind();
    let mut px = Proxy::builder(&pg).env("NOTIFY_SOCKET", systemd.var()).start().await;
    let ready = systemd.next("READY=1").await;
    assert_eq!(value(&ready, "READY"), Some("1"), "{ready:?}");
    assert_eq!(value(&ready, "STATUS"), Some(format!("serving on 127.0.0.1:{}", px.port()).as_str()));
    let client = px.client("scram_user", "scram_pw", "app").await;
    assert_eq!(scalar(&client, "select 40 + 2").await, "42");

    reload(&px, &systemd).await;
    let done = systemd.next("READY=1 after the reload").await;
    assert_eq!(value(&done, "READY"), Some("1"), "{done:?}");
    assert!(value(&done, "STATUS").is_some_and(|s| s.starts_with("serving")), "{done:?}");

    // A config that does not load: the reload fails, the running config stays, and systemd hears both.
    std::fs::write(&px.config, "[pgsluice]\nno_such_key = 1\n").unwrap();
    reload(&px, &systemd).await;
    let failed = systemd.next("READY=1 after the failed reload").await;
    assert_eq!(value(&failed, "READY"), Some("1"), "{failed:?}");
    let status = value(&failed, "STATUS").unwrap_or_default();
    assert!(status.starts_with("reload failed") && status.contains("no_such_key"), "{failed:?}");
    assert_eq!(scalar(&client, "select 1").await, "1");

    drop(client);
    px.signal("TERM");
    let stopping = systemd.next("STOPPING=1").await;
    assert_eq!(value(&stopping, "STOPPING"), Some("1"), "{stopping:?}");
    assert!(value(&stopping, "STATUS").is_some_and(|s| s.contains("waiting for clients")), "{stopping:?}");
    assert!(px.wait_exit(Duration::from_secs(15)).await.is_some(), "pgsluice still runs after SIGTERM");
}

/// pgsluice run directly (no PostgreSQL needed: it connects to servers only for clients) on `port`.
struct Bare {
    child: Child,
    dir: tempfile::TempDir,
}

impl Bare {
    fn start(port: u16, notify_socket: &str) -> Bare {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("userlist.txt"), "\"app\" \"app-secret\"\n").unwrap();
        let config = dir.path().join("pgsluice.toml");
        let text = format!(
            "[pgsluice]\nlisten_addr = \"127.0.0.1\"\nlisten_port = {port}\nauth_file = \"userlist.txt\"\n\
             unix_socket_dir = \"\"\nworkers = 1\n[databases]\napp = {{ host = \"127.0.0.1\", port = 9 }}\n"
        );
        std::fs::write(&config, text).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pgsluice"))
            .arg(&config)
            .env("NOTIFY_SOCKET", notify_socket)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .expect("spawn pgsluice");
        Bare { child, dir }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    async fn exit_code(&mut self) -> Option<i32> {
        for _ in 0..750 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("pgsluice did not exit: {}", self.stderr());
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn accepts(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
}

#[tokio::test]
async fn no_ready_when_the_port_cannot_be_bound() {
    let systemd = Systemd::bind();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut px = Bare::start(port, systemd.var());
    assert_eq!(px.exit_code().await, Some(1), "{}", px.stderr());
    assert!(px.stderr().contains("could not listen"), "{}", px.stderr());
    // The process is gone: whatever it sent is in the socket already.
    assert_eq!(systemd.pending(), None, "a notification from a pgsluice that never listened");
}

#[tokio::test]
async fn an_abstract_notify_socket_gets_ready_once_the_port_accepts() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("pgsluice-notify-test-{}-{}", std::process::id(), free_port());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let std_socket = std::os::unix::net::UnixDatagram::bind_addr(&addr).unwrap();
    std_socket.set_nonblocking(true).unwrap();
    let socket = UnixDatagram::from_std(std_socket).unwrap();
    for _ in 0..5 {
        let port = free_port();
        let mut px = Bare::start(port, &format!("@{name}"));
        let mut buf = [0u8; 4096];
        tokio::select! {
            n = socket.recv(&mut buf) => {
                // No retry here: at READY=1 the port accepts already.
                assert!(accepts(port).await, "READY=1 came before the port accepted");
                let msg = String::from_utf8_lossy(&buf[..n.unwrap()]).into_owned();
                assert!(msg.starts_with("READY=1\n"), "{msg}");
                return;
            }
            code = px.exit_code() => assert!(px.stderr().contains("could not listen"), "exit {code:?}: {}", px.stderr()),
        }
    }
    panic!("pgsluice never got a free port");
}

#[tokio::test]
async fn a_missing_notify_socket_does_not_keep_it_from_serving() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("notify");
    let port = free_port();
    let mut px = Bare::start(port, missing.to_str().unwrap());
    common::wait_for(Duration::from_secs(10), "pgsluice listens", || accepts(port)).await;
    common::wait_for(Duration::from_secs(10), "the failed notification is logged", || async {
        px.stderr().contains("could not notify systemd")
    })
    .await;
    assert_eq!(px.child.try_wait().unwrap(), None, "pgsluice exited: {}", px.stderr());
    // Its stderr is a file here, as the journal is under systemd: no colour codes in the lines.
    assert!(!px.stderr().contains('\u{1b}'), "ANSI escapes in a log that is not a terminal: {}", px.stderr());
    let _ = Command::new("kill").args(["-s", "TERM", &px.child.id().to_string()]).status();
    assert_eq!(px.exit_code().await, Some(0), "{}", px.stderr());
}
