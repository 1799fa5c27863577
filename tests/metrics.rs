//! The HTTP endpoint: /metrics parses as Prometheus text and moves with a known workload (counters and
//! histogram counts), /healthz answers, /readyz reports pool utilization and goes not-ready while the
//! database is down. The endpoint cuts off a peer that is slow to send its request headers, and closes
//! connections over its cap at once.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::pg::free_port;
use common::{Proxy, TestPg, http_get as get, scalar};
use pgsluice::metrics::{HEADER_READ_TIMEOUT, MAX_CONNECTIONS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Samples of the exposition format: "name{labels}" -> value. Panics on a malformed line.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("malformed line {line:?}"));
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        out.insert(key.to_string(), v);
    }
    out
}

fn sample(m: &HashMap<String, f64>, name: &str, labels: &str) -> f64 {
    m.get(&format!("{name}{{{labels}}}")).copied().unwrap_or_else(|| panic!("no {name}{{{labels}}} in {m:?}"))
}

const POOL: &str = "database=\"app\",user=\"scram_user\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_a_known_workload() {
    let pg = TestPg::start().await;
    let mport = free_port();
    let px = Proxy::builder(&pg).general("metrics_addr", &format!("\"127.0.0.1:{mport}\"")).pool_size(2).start().await;
    let (status, body) = get(mport, "/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"));
    let c = px.client("scram_user", "scram_pw", "app").await;
    for i in 0..7 {
        assert_eq!(scalar(&c, &format!("select {i}")).await, i.to_string());
    }
    let e = c.simple_query("select 1/0").await.unwrap_err();
    assert!(e.as_db_error().is_some());
    let expected_xacts = 8.0;
    let m = {
        let mut m = HashMap::new();
        for _ in 0..100 {
            let (status, body) = get(mport, "/metrics").await;
            assert_eq!(status, 200);
            m = parse(&body);
            if m.get(&format!("pgsluice_transactions_total{{{POOL}}}")) == Some(&expected_xacts) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        m
    };
    assert_eq!(sample(&m, "pgsluice_transactions_total", POOL), expected_xacts);
    assert_eq!(sample(&m, "pgsluice_queries_total", POOL), expected_xacts);
    assert_eq!(sample(&m, "pgsluice_client_logins_total", POOL), 1.0);
    assert_eq!(sample(&m, "pgsluice_server_assignments_total", POOL), expected_xacts);
    assert_eq!(sample(&m, "pgsluice_errors_total", &format!("{POOL},class=\"22\"")), 1.0);
    assert!(sample(&m, "pgsluice_received_bytes_total", POOL) > 0.0);
    assert_eq!(sample(&m, "pgsluice_transaction_duration_seconds_count", POOL), expected_xacts);
    assert_eq!(sample(&m, "pgsluice_query_duration_seconds_count", POOL), expected_xacts);
    assert_eq!(sample(&m, "pgsluice_acquire_wait_seconds_count", POOL), expected_xacts);
    assert_eq!(
        sample(&m, "pgsluice_transaction_duration_seconds_bucket", &format!("{POOL},le=\"+Inf\"")),
        expected_xacts
    );
    assert_eq!(sample(&m, "pgsluice_pool_clients", &format!("{POOL},state=\"idle\"")), 1.0);
    assert_eq!(sample(&m, "pgsluice_pool_servers", &format!("{POOL},state=\"idle\"")), 1.0);
    assert_eq!(sample(&m, "pgsluice_pool_size", POOL), 2.0);
    // The whole page parses with Prometheus' own client library, histograms included.
    let (_, body) = get(mport, "/metrics").await;
    let families = parse_with_prometheus_client(&body);
    for family in ["pgsluice_transaction_duration_seconds histogram", "pgsluice_transactions counter"] {
        assert!(families.lines().any(|l| l == family), "{family} in {families}");
    }
}

/// Parses a scrape with prometheus_client's text parser (from tests/drivers/setup.sh's virtualenv):
/// one line per family, "name type".
fn parse_with_prometheus_client(body: &str) -> String {
    use std::io::Write;
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/driver-env/venv/bin/python");
    assert!(python.exists(), "{} missing: run bash tests/drivers/setup.sh", python.display());
    let script = "import sys\nfrom prometheus_client.parser import text_string_to_metric_families as parse\n\
                  for f in parse(sys.stdin.read()):\n    print(f.name, f.type)\n";
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "prometheus_client rejects the page: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_utilization_and_follows_the_database() {
    let pg = TestPg::start().await;
    let mport = free_port();
    let px = Proxy::builder(&pg).general("metrics_addr", &format!("\"127.0.0.1:{mport}\"")).pool_size(4).start().await;
    let c = px.client("scram_user", "scram_pw", "app").await;
    c.batch_execute("begin").await.unwrap();
    let (status, body) = get(mport, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], true);
    let pool = v["pools"].as_array().unwrap().iter().find(|p| p["database"] == "app").expect("app pool").clone();
    assert_eq!((pool["active"].as_u64(), pool["max"].as_u64()), (Some(1), Some(4)));
    assert_eq!(pool["utilization_percent"].as_u64(), Some(25));
    drop(c);
    pg.stop().await;
    let (status, body) = get(mport, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], false);
    pg.start_again().await;
    let (status, _) = get(mport, "/readyz").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_timeouts_count_query_wait_timeouts() {
    let pg = TestPg::start().await;
    let mport = free_port();
    let px = Proxy::builder(&pg)
        .general("metrics_addr", &format!("\"127.0.0.1:{mport}\""))
        .pool_size(1)
        .query_wait_timeout(0.3)
        .start()
        .await;
    let a = px.client("scram_user", "scram_pw", "app").await;
    let b = px.client("scram_user", "scram_pw", "app").await;
    a.batch_execute("begin; select 1").await.unwrap();
    let timeouts = || async {
        parse(&get(mport, "/metrics").await.1).get(&format!("pgsluice_acquire_timeouts_total{{{POOL}}}")).copied()
    };
    assert_eq!(timeouts().await, Some(0.0));
    for _ in 0..2 {
        let e = b.simple_query("select 1").await.unwrap_err();
        assert_eq!(e.as_db_error().map(|d| d.code().code()), Some("57014"), "{e}");
    }
    assert_eq!(timeouts().await, Some(2.0), "two waits ended by query_wait_timeout");
    let m = parse(&get(mport, "/metrics").await.1);
    assert_eq!(sample(&m, "pgsluice_errors_total", &format!("{POOL},class=\"57\"")), 2.0);
    a.batch_execute("commit").await.unwrap();
    assert_eq!(scalar(&b, "select 2").await, "2");
    assert_eq!(timeouts().await, Some(2.0), "a wait that got a server is no timeout");
}

/// A GET that tolerates a refused or cut connection: the status, or `None`.
async fn try_get(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw)).await.ok()?.ok()?;
    String::from_utf8_lossy(&raw).split_whitespace().nth(1)?.parse().ok()
}

/// Whether the peer closes `s` (EOF or reset) within `within`; whatever it sends first is skipped.
/// `Duration::ZERO` asks whether it is closed already.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_elapsed) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

async fn metrics_proxy(pg: &TestPg) -> (Proxy, u16) {
    let mport = free_port();
    let px = Proxy::builder(pg).general("metrics_addr", &format!("\"127.0.0.1:{mport}\"")).start().await;
    common::wait_for(Duration::from_secs(10), "the metrics endpoint answers", || async {
        try_get(mport, "/healthz").await == Some(200)
    })
    .await;
    (px, mport)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_slow_to_send_its_request_headers_is_cut_off() {
    let pg = TestPg::start().await;
    let (_px, mport) = metrics_proxy(&pg).await;
    let mut half = TcpStream::connect(("127.0.0.1", mport)).await.unwrap();
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.unwrap();
    let mut silent = TcpStream::connect(("127.0.0.1", mport)).await.unwrap();
    let started = Instant::now();
    let deadline = HEADER_READ_TIMEOUT + Duration::from_secs(5);
    assert!(closed_within(&mut half, deadline).await, "half a request header still open after {deadline:?}");
    let left = deadline.saturating_sub(started.elapsed());
    assert!(closed_within(&mut silent, left).await, "a silent connection still open after {deadline:?}");
    assert!(
        started.elapsed() >= HEADER_READ_TIMEOUT.saturating_sub(Duration::from_secs(1)),
        "closed after {:?}, before the header read timeout",
        started.elapsed()
    );
    // A whole request is answered as before.
    assert_eq!(try_get(mport, "/metrics").await, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_connections_over_the_cap_are_closed_at_once() {
    let pg = TestPg::start().await;
    let (_px, mport) = metrics_proxy(&pg).await;
    let started = Instant::now();
    let mut conns = Vec::new();
    for _ in 0..=MAX_CONNECTIONS {
        conns.push(TcpStream::connect(("127.0.0.1", mport)).await.unwrap());
    }
    // Of one more than the cap, silent all: exactly one is closed, without waiting for the header read
    // timeout. (Normally the last; the one before it if the /healthz probe's slot was freed late.)
    let deadline = Instant::now() + Duration::from_secs(1);
    let closed = loop {
        let mut closed = Vec::new();
        for (i, s) in conns.iter_mut().enumerate() {
            if closed_within(s, Duration::ZERO).await {
                closed.push(i);
            }
        }
        if !closed.is_empty() || Instant::now() >= deadline {
            break closed;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(closed.len(), 1, "closed at once, of {} connections: {closed:?}", conns.len());
    assert_eq!(try_get(mport, "/metrics").await, None, "no answer while the cap's worth are held");
    assert!(started.elapsed() < HEADER_READ_TIMEOUT, "too slow to tell the cap from the header timeout");
    // Closing them frees their slots (sooner than the header read timeout would).
    drop(conns);
    common::wait_for(Duration::from_secs(3), "/metrics answered once the held connections are closed", || async {
        try_get(mport, "/metrics").await == Some(200)
    })
    .await;
    assert!(started.elapsed() < HEADER_READ_TIMEOUT, "slots freed only by the header read timeout");
}
