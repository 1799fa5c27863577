//! The HTTP endpoint (`metrics_addr`): `/metrics` in Prometheus text format, built at scrape time from
//! the stats model and the pools' counts; `/healthz` (the process answers) and `/readyz` (listening, not
//! shutting down, every configured database reachable; JSON with per-pool utilization). Served with hyper,
//! at most `MAX_CONNECTIONS` connections at once, each closed if its request headers take longer than
//! `HEADER_READ_TIMEOUT`.
//! Imports: stats, run_state, shared (and config through it).

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use prometheus::proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, TextEncoder};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::shared::Shared;
use crate::stats::HistoSnapshot;

/// How long a peer may take to send a request's headers, counted from when pgsluice starts waiting
/// for them (accept, or the end of the previous response on a kept-alive connection): a slow or
/// silent peer is closed after this.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Metrics connections served at once; a connection over this is closed as soon as it is accepted.
pub const MAX_CONNECTIONS: usize = 64;

/// Serves the endpoint on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, max = MAX_CONNECTIONS, "metrics connection over the cap, closed");
            drop(stream);
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            serve_connection(stream, shared).await;
            drop(slot);
        });
    }
}

/// One HTTP/1 connection, with the header read timeout.
async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        let down = *shared.run_state.borrow() != crate::run_state::RunState::Running;
        async move { Ok::<_, Infallible>(route(req, &shared, down).await) }
    });
    let io = hyper_util::rt::TokioIo::new(stream);
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(io, service)
        .await;
}

async fn route(req: Request<Incoming>, shared: &Arc<Shared>, shutting_down: bool) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => {
            let mut out = Vec::new();
            let families = gather(shared);
            match TextEncoder::new().encode(&families, &mut out) {
                Ok(()) => reply(StatusCode::OK, "text/plain; version=0.0.4", out),
                Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", e.to_string().into_bytes()),
            }
        }
        "/healthz" => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
        "/readyz" => {
            let (ready, body) = readiness(shared, shutting_down).await;
            let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            reply(status, "application/json", body.to_string().into_bytes())
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
    }
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Ready when not shutting down and every configured database answers a TCP connect within a second.
async fn readiness(shared: &Arc<Shared>, shutting_down: bool) -> (bool, serde_json::Value) {
    let config = shared.config();
    let targets: BTreeSet<(String, u16)> = config.databases.values().map(|d| (d.host.clone(), d.port)).collect();
    let mut databases = Vec::new();
    let mut all_up = true;
    for (host, port) in targets {
        let up = matches!(
            tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect((host.as_str(), port))).await,
            Ok(Ok(_))
        );
        all_up &= up;
        databases.push(serde_json::json!({ "host": host, "port": port, "reachable": up }));
    }
    let mut pools = Vec::new();
    for (key, entry) in shared.all_pools() {
        let c = entry.pool.counts();
        let max = entry.settings().pool_size.max(1);
        let active = c.open.saturating_sub(c.idle);
        pools.push(serde_json::json!({
            "database": key.db,
            "user": key.user,
            "active": active,
            "idle": c.idle,
            "waiting": c.waiting,
            "max": entry.settings().pool_size,
            "utilization_percent": (active * 100) / max,
        }));
    }
    let ready = all_up && !shutting_down;
    (
        ready,
        serde_json::json!({ "ready": ready, "shutting_down": shutting_down, "databases": databases, "pools": pools }),
    )
}

/// Builds every metric family from the current state.
pub fn gather(shared: &Arc<Shared>) -> Vec<MetricFamily> {
    let mut f = Families::default();
    let check_delay = shared.config().general.server_check_delay.as_micros() as u64;
    let states = crate::stats::servers::used_and_tested(&shared.server_registry.list(), check_delay);
    for (key, entry) in shared.all_pools() {
        let labels = [("database", key.db.as_str()), ("user", key.user.as_str())];
        let c = entry.pool.counts();
        let s = &entry.stats;
        let (used, tested) =
            states.get(&(key.db.clone(), entry.pool.connector().user.clone())).copied().unwrap_or_default();
        let active = c.open.saturating_sub(c.idle + c.connecting + tested);
        let clients = s.clients.load(Ordering::Relaxed) as usize;
        let idle_clients = clients.saturating_sub(c.waiting + active);
        for (state, v) in [("active", active), ("waiting", c.waiting), ("idle", idle_clients)] {
            f.gauge("pgsluice_pool_clients", "Clients of the pool by state.", &labels, &[("state", state)], v as f64);
        }
        let servers = [
            ("active", active),
            ("idle", c.idle.saturating_sub(used)),
            ("used", used),
            ("tested", tested),
            ("login", c.connecting),
        ];
        for (state, v) in servers {
            let help = "Server connections of the pool by state.";
            f.gauge("pgsluice_pool_servers", help, &labels, &[("state", state)], v as f64);
        }
        f.gauge(
            "pgsluice_pool_maxwait_seconds",
            "How long the oldest waiting client has waited.",
            &labels,
            &[],
            c.max_wait.as_secs_f64(),
        );
        f.gauge("pgsluice_pool_size", "Configured pool_size.", &labels, &[], entry.settings().pool_size as f64);
        let pinned = s.session_state.pinned.load(Ordering::Relaxed) as f64;
        f.gauge(
            "pgsluice_pool_pinned_clients",
            "Clients pinned to their server by session state.",
            &labels,
            &[],
            pinned,
        );
        let t = s.totals();
        for (name, help, v) in [
            ("pgsluice_transactions_total", "Transactions pooled.", t.xact_count),
            ("pgsluice_queries_total", "Queries pooled.", t.query_count),
            ("pgsluice_received_bytes_total", "Bytes received from clients.", t.received),
            ("pgsluice_sent_bytes_total", "Bytes sent to clients.", t.sent),
            (
                "pgsluice_server_assignments_total",
                "Times a server was assigned to a client.",
                t.server_assignment_count,
            ),
            ("pgsluice_client_logins_total", "Successful client logins.", s.client_login_count.load(Ordering::Relaxed)),
            (
                "pgsluice_acquire_timeouts_total",
                "Waits for a server ended by query_wait_timeout.",
                s.acquire_timeouts.load(Ordering::Relaxed),
            ),
            (
                "pgsluice_session_pins_total",
                "Times a client was pinned to its server by session state it made.",
                s.session_state.pins.load(Ordering::Relaxed),
            ),
            (
                "pgsluice_session_settings_applied_total",
                "Times a client's session settings were applied to a server it landed on.",
                s.session_state.settings_applied.load(Ordering::Relaxed),
            ),
            (
                "pgsluice_session_state_refused_total",
                "Statements refused by session_state = refuse.",
                s.session_state.refused.load(Ordering::Relaxed),
            ),
        ] {
            f.counter(name, help, &labels, &[], v as f64);
        }
        for (class, n) in s.errors() {
            f.counter(
                "pgsluice_errors_total",
                "Errors sent to clients, by SQLSTATE class.",
                &labels,
                &[("class", &class)],
                n as f64,
            );
        }
        f.histogram(
            "pgsluice_acquire_wait_seconds",
            "Time clients waited for a server.",
            &labels,
            s.acquire_wait.snapshot(),
        );
        f.histogram(
            "pgsluice_transaction_duration_seconds",
            "Transaction durations (server held).",
            &labels,
            s.xact.snapshot(),
        );
        f.histogram("pgsluice_query_duration_seconds", "Query durations.", &labels, s.query.snapshot());
    }
    f.gauge("pgsluice_clients", "Clients connected to pgsluice.", &[], &[], shared.client_count() as f64);
    let held = shared.held_prepared.get() as f64;
    f.gauge("pgsluice_prepared_bytes_held", "Bytes held for all clients' prepared statements.", &[], &[], held);
    f.into_vec()
}

/// Metric families by name, in a stable order.
#[derive(Default)]
struct Families(BTreeMap<&'static str, MetricFamily>);

fn label_pairs(base: &[(&str, &str)], extra: &[(&str, &str)]) -> Vec<LabelPair> {
    base.iter()
        .chain(extra)
        .map(|(k, v)| {
            let mut l = LabelPair::default();
            l.set_name(k.to_string());
            l.set_value(v.to_string());
            l
        })
        .collect()
}

impl Families {
    fn family(&mut self, name: &'static str, help: &str, kind: MetricType) -> &mut MetricFamily {
        self.0.entry(name).or_insert_with(|| {
            let mut f = MetricFamily::default();
            f.set_name(name.to_string());
            f.set_help(help.to_string());
            f.set_field_type(kind);
            f
        })
    }

    fn gauge(&mut self, name: &'static str, help: &str, base: &[(&str, &str)], extra: &[(&str, &str)], v: f64) {
        let mut g = Gauge::default();
        g.set_value(v);
        let mut m = Metric::default();
        m.set_label(label_pairs(base, extra));
        m.set_gauge(g);
        self.family(name, help, MetricType::GAUGE).mut_metric().push(m);
    }

    fn counter(&mut self, name: &'static str, help: &str, base: &[(&str, &str)], extra: &[(&str, &str)], v: f64) {
        let mut c = Counter::default();
        c.set_value(v);
        let mut m = Metric::default();
        m.set_label(label_pairs(base, extra));
        m.set_counter(c);
        self.family(name, help, MetricType::COUNTER).mut_metric().push(m);
    }

    fn histogram(&mut self, name: &'static str, help: &str, base: &[(&str, &str)], snap: HistoSnapshot) {
        let mut h = Histogram::default();
        h.set_sample_count(snap.count);
        h.set_sample_sum(snap.sum_secs);
        h.set_bucket(
            snap.cumulative
                .iter()
                .map(|(bound, n)| {
                    let mut b = Bucket::default();
                    b.set_upper_bound(*bound);
                    b.set_cumulative_count(*n);
                    b
                })
                .collect(),
        );
        let mut m = Metric::default();
        m.set_label(label_pairs(base, &[]));
        m.set_histogram(h);
        self.family(name, help, MetricType::HISTOGRAM).mut_metric().push(m);
    }

    fn into_vec(self) -> Vec<MetricFamily> {
        self.0.into_values().collect()
    }
}
