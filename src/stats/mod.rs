//! The single stats model, read by the admin console and the metrics endpoint: counters per (database,
//! user) that sessions add to once per transaction (never per message) and that outlive pool rebuilds,
//! the stats periods PgBouncer's averages are computed over, and the connection registries. The gauges
//! are read off the pools when a snapshot is taken. Imports: std (and tokio-util for kill tokens).

pub mod clients;
pub mod fingerprint;
pub mod registry;
pub mod servers;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where a connection's peer is: a TCP address, or a Unix socket (shown as PgBouncer does: address
/// "unix", and the port in the socket's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAddr {
    Tcp(std::net::SocketAddr),
    Unix { path: std::sync::Arc<std::path::Path>, port: u16 },
}

impl PeerAddr {
    /// The address column of SHOW CLIENTS/SERVERS.
    pub fn host_text(&self) -> String {
        match self {
            PeerAddr::Tcp(a) => a.ip().to_string(),
            PeerAddr::Unix { .. } => "unix".to_string(),
        }
    }

    pub fn port(&self) -> u16 {
        match self {
            PeerAddr::Tcp(a) => a.port(),
            PeerAddr::Unix { port, .. } => *port,
        }
    }
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerAddr::Tcp(a) => write!(f, "{a}"),
            PeerAddr::Unix { path, .. } => write!(f, "unix:{}", path.display()),
        }
    }
}

/// `session_state` events of one pool: events are counted as they happen (they are rare: a client
/// pinned, settings applied to a server, a statement refused), `pinned` is a gauge.
#[derive(Debug, Default)]
pub struct SessionStateCounts {
    /// Times a client was pinned to its server.
    pub pins: AtomicU64,
    /// Clients pinned now.
    pub pinned: AtomicU64,
    /// Times a client's session settings were applied to a server it landed on.
    pub settings_applied: AtomicU64,
    /// Statements refused by `session_state = refuse`.
    pub refused: AtomicU64,
}

/// Bytes the process holds for its clients' prepared statements (names and texts), all clients
/// together: sessions add and take back as statements come and go; max_total_prepared_bytes bounds it.
#[derive(Debug, Default)]
pub struct HeldBytes(AtomicUsize);

impl HeldBytes {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
    pub fn add(&self, n: usize) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn sub(&self, n: usize) {
        let _ = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(n)));
    }
}

/// Cumulative counters, PgBouncer's `total_*` figures (times in microseconds), in PgBouncer's order.
/// The same shape holds PgBouncer's `avg_*` figures (see [`calc_average`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub server_assignment_count: u64,
    pub xact_count: u64,
    pub query_count: u64,
    /// Bytes received from clients (PgBouncer's `client_bytes`).
    pub received: u64,
    /// Bytes sent to clients (PgBouncer's `server_bytes`).
    pub sent: u64,
    pub xact_time: u64,
    pub query_time: u64,
    pub wait_time: u64,
    pub client_parse_count: u64,
    pub server_parse_count: u64,
    pub bind_count: u64,
    /// Successful client logins.
    pub client_login_count: u64,
}

macro_rules! each_counter {
    ($m:ident) => {
        $m!(
            server_assignment_count,
            xact_count,
            query_count,
            received,
            sent,
            xact_time,
            query_time,
            wait_time,
            client_parse_count,
            server_parse_count,
            bind_count,
            client_login_count
        )
    };
}

impl Totals {
    pub fn is_zero(&self) -> bool {
        *self == Totals::default()
    }

    pub fn add(&mut self, o: &Totals) {
        macro_rules! add {
            ($($f:ident),*) => { $( self.$f = self.$f.saturating_add(o.$f); )* };
        }
        each_counter!(add);
    }

    fn minus(&self, o: &Totals) -> Totals {
        let mut d = *self;
        macro_rules! sub {
            ($($f:ident),*) => { $( d.$f = d.$f.saturating_sub(o.$f); )* };
        }
        each_counter!(sub);
        d
    }

    /// The figures in PgBouncer's order, for the SHOW commands.
    pub fn values(&self) -> [u64; 12] {
        [
            self.server_assignment_count,
            self.xact_count,
            self.query_count,
            self.received,
            self.sent,
            self.xact_time,
            self.query_time,
            self.wait_time,
            self.client_parse_count,
            self.server_parse_count,
            self.bind_count,
            self.client_login_count,
        ]
    }
}

/// PgBouncer's `calc_average`: between the snapshot `old` and the counters `cur`, `dur` apart, counts
/// and bytes per second, transaction time per transaction, query time per query and wait time per server
/// assignment (microseconds). Zero when `dur` is.
pub fn calc_average(cur: &Totals, old: &Totals, dur: Duration) -> Totals {
    let d = cur.minus(old);
    let dur_us = dur.as_micros();
    if dur_us == 0 {
        return Totals::default();
    }
    let rate = |v: u64| u64::try_from(u128::from(v) * 1_000_000 / dur_us).unwrap_or(u64::MAX);
    let per = |v: u64, n: u64| v.checked_div(n).unwrap_or(0);
    Totals {
        server_assignment_count: rate(d.server_assignment_count),
        xact_count: rate(d.xact_count),
        query_count: rate(d.query_count),
        received: rate(d.received),
        sent: rate(d.sent),
        xact_time: per(d.xact_time, d.xact_count),
        query_time: per(d.query_time, d.query_count),
        wait_time: per(d.wait_time, d.server_assignment_count),
        client_parse_count: rate(d.client_parse_count),
        server_parse_count: rate(d.server_parse_count),
        bind_count: rate(d.bind_count),
        client_login_count: rate(d.client_login_count),
    }
}

/// Upper bounds (seconds) of the latency histograms' buckets; one more bucket holds the rest.
pub const BUCKETS: [f64; 16] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const NB: usize = BUCKETS.len() + 1;

/// A latency histogram a session fills locally and flushes with its counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LocalHisto {
    counts: [u64; NB],
    sum_us: u64,
}

impl LocalHisto {
    pub fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS.iter().position(|b| secs <= *b).unwrap_or(BUCKETS.len());
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.sum_us += d.as_micros() as u64;
    }
}

/// The shared form of a histogram: per-bucket (not cumulative) counts and the sum.
#[derive(Debug, Default)]
pub struct Histo {
    counts: [AtomicU64; NB],
    sum_us: AtomicU64,
}

/// A histogram as read at scrape time: cumulative counts per bound, total count, sum in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoSnapshot {
    pub cumulative: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_secs: f64,
}

impl Histo {
    fn add(&self, l: &LocalHisto) {
        for (a, n) in self.counts.iter().zip(l.counts) {
            if n != 0 {
                a.fetch_add(n, Ordering::Relaxed);
            }
        }
        if l.sum_us != 0 {
            self.sum_us.fetch_add(l.sum_us, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> HistoSnapshot {
        let mut running = 0;
        let mut cumulative = Vec::with_capacity(BUCKETS.len());
        for (i, a) in self.counts.iter().enumerate() {
            running += a.load(Ordering::Relaxed);
            if let Some(b) = BUCKETS.get(i) {
                cumulative.push((*b, running));
            }
        }
        HistoSnapshot { cumulative, count: running, sum_secs: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6 }
    }
}

/// What a session collected since its last flush.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Collected {
    pub totals: Totals,
    pub acquire_wait: LocalHisto,
    pub xact: LocalHisto,
    pub query: LocalHisto,
}

/// The counters of one (database, user), shared by its sessions. They outlive the pool object: a pool
/// that RELOAD rebuilds keeps counting into the same figures, so no counter ever goes backwards.
#[derive(Debug)]
pub struct PoolStats {
    server_assignment_count: AtomicU64,
    xact_count: AtomicU64,
    query_count: AtomicU64,
    received: AtomicU64,
    sent: AtomicU64,
    xact_time: AtomicU64,
    query_time: AtomicU64,
    wait_time: AtomicU64,
    client_parse_count: AtomicU64,
    server_parse_count: AtomicU64,
    bind_count: AtomicU64,
    /// Successful client logins (PgBouncer's client_login_count).
    pub client_login_count: AtomicU64,
    /// Clients logged in to this pool.
    pub clients: AtomicU64,
    /// Waits for a server that ended with query_wait_timeout.
    pub acquire_timeouts: AtomicU64,
    /// Servers held out of the pool until the cancel requests sent to them are done (sv_being_canceled).
    pub being_canceled: AtomicU64,
    /// What `session_state` did for the pool's clients.
    pub session_state: SessionStateCounts,
    pub acquire_wait: Histo,
    pub xact: Histo,
    pub query: Histo,
    /// Errors sent to clients (pgsluice's own and the server's), by SQLSTATE class.
    errors: Mutex<std::collections::BTreeMap<[u8; 2], u64>>,
    /// The counters as they were at the last two period ends (PgBouncer's newer_stats, older_stats).
    period: Mutex<(Totals, Totals)>,
}

impl Default for PoolStats {
    fn default() -> Self {
        macro_rules! zero {
            ($($f:ident),*) => {
                PoolStats {
                    $( $f: AtomicU64::new(0), )*
                    clients: AtomicU64::new(0),
                    acquire_timeouts: AtomicU64::new(0),
                    being_canceled: AtomicU64::new(0),
                    session_state: SessionStateCounts::default(),
                    acquire_wait: Histo::default(),
                    xact: Histo::default(),
                    query: Histo::default(),
                    errors: Mutex::default(),
                    period: Mutex::default(),
                }
            };
        }
        each_counter!(zero)
    }
}

impl PoolStats {
    /// Adds what a session counted (once per transaction or server assignment).
    pub fn add(&self, t: &Totals) {
        macro_rules! add {
            ($($f:ident),*) => { $( if t.$f != 0 { self.$f.fetch_add(t.$f, Ordering::Relaxed); } )* };
        }
        each_counter!(add);
    }

    /// Adds a session's counters and histograms.
    pub fn flush(&self, c: &Collected) {
        self.add(&c.totals);
        self.acquire_wait.add(&c.acquire_wait);
        self.xact.add(&c.xact);
        self.query.add(&c.query);
    }

    /// Counts an error sent to a client, by the first two characters of its SQLSTATE.
    pub fn count_error(&self, sqlstate: &[u8]) {
        let class = [sqlstate.first().copied().unwrap_or(b'?'), sqlstate.get(1).copied().unwrap_or(b'?')];
        if let Ok(mut e) = self.errors.lock() {
            *e.entry(class).or_default() += 1;
        }
    }

    /// Errors by SQLSTATE class ("57", "08", ...).
    pub fn errors(&self) -> Vec<(String, u64)> {
        self.errors
            .lock()
            .map(|e| e.iter().map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), *v)).collect())
            .unwrap_or_default()
    }

    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        macro_rules! load {
            ($($f:ident),*) => { $( t.$f = self.$f.load(Ordering::Relaxed); )* };
        }
        each_counter!(load);
        t
    }

    /// The counters now and at the end of the period before last: what averages are computed between.
    pub fn window(&self) -> (Totals, Totals) {
        let older = self.period.lock().map(|p| p.1).unwrap_or_default();
        (self.totals(), older)
    }

    /// A stats period ended: the previous snapshot becomes the older one.
    fn roll(&self) {
        let now = self.totals();
        if let Ok(mut p) = self.period.lock() {
            *p = (now, p.0);
        }
    }
}

/// Every (database, user)'s counters, and the clock of the stats periods (PgBouncer's old_stamp and
/// new_stamp, one for all pools as in PgBouncer).
#[derive(Debug)]
pub struct StatsBook {
    pools: Mutex<HashMap<(String, String), Arc<PoolStats>>>,
    /// (old_stamp, new_stamp): averages cover the time since old_stamp.
    clock: Mutex<(Instant, Instant)>,
}

impl Default for StatsBook {
    fn default() -> Self {
        let now = Instant::now();
        // As PgBouncer: before the first period ends, averages cover the time since a second before start.
        let before = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
        StatsBook { pools: Mutex::default(), clock: Mutex::new((before, now)) }
    }
}

impl StatsBook {
    /// The counters of (db, user), created on first use and kept for the life of the process.
    pub fn get(&self, db: &str, user: &str) -> Arc<PoolStats> {
        let mut m = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        m.entry((db.to_string(), user.to_string())).or_default().clone()
    }

    /// Forgets the counters of (db, user) (its auto-created pool was dropped).
    pub fn remove(&self, db: &str, user: &str) {
        let mut m = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(&(db.to_string(), user.to_string()));
    }

    /// Every (database, user) with counters, sorted.
    pub fn all(&self) -> Vec<((String, String), Arc<PoolStats>)> {
        let m = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = m.iter().map(|(k, s)| (k.clone(), s.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Ends a stats period (every `stats_period`).
    pub fn roll_period(&self) {
        let all = self.all();
        let mut clock = self.clock.lock().unwrap_or_else(|e| e.into_inner());
        for (_, s) in all {
            s.roll();
        }
        *clock = (clock.1, Instant::now());
    }

    /// How long the averages' window is now.
    pub fn window_length(&self) -> Duration {
        self.clock.lock().map(|c| c.0.elapsed()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_and_averages_follow_pgbouncer_calc_average() {
        let book = StatsBook::default();
        let s = book.get("app", "u");
        s.add(&Totals { xact_count: 3, query_count: 6, xact_time: 300, query_time: 120, ..Totals::default() });
        s.add(&Totals { xact_count: 1, query_count: 2, xact_time: 100, query_time: 40, ..Totals::default() });
        s.client_login_count.fetch_add(2, Ordering::Relaxed);
        let t = s.totals();
        assert_eq!((t.xact_count, t.query_count, t.xact_time, t.client_login_count), (4, 8, 400, 2));
        assert!(Arc::ptr_eq(&s, &book.get("app", "u")), "one set of counters per (database, user)");
        let (cur, old) = s.window();
        let a = calc_average(&cur, &old, Duration::from_secs(2));
        assert_eq!((a.xact_time, a.query_time), (100, 20), "per transaction and per query");
        assert_eq!((a.xact_count, a.query_count, a.client_login_count), (2, 4, 1), "per second");
        book.roll_period();
        book.roll_period();
        let (cur, old) = s.window();
        assert!(calc_average(&cur, &old, Duration::from_secs(1)).is_zero(), "nothing since the older snapshot");
        assert_eq!(s.totals().xact_count, 4, "totals never go back");
        assert!(calc_average(&cur, &Totals::default(), Duration::ZERO).is_zero());
    }

    #[test]
    fn histograms_are_cumulative_at_scrape_time() {
        let s = PoolStats::default();
        let mut c = Collected::default();
        c.query.observe(Duration::from_micros(300));
        c.query.observe(Duration::from_millis(20));
        c.query.observe(Duration::from_secs(100));
        s.flush(&c);
        let h = s.query.snapshot();
        assert_eq!(h.count, 3);
        assert_eq!(h.cumulative[0], (0.0005, 1));
        assert_eq!(h.cumulative.iter().find(|(b, _)| *b == 0.025).map(|x| x.1), Some(2));
        assert_eq!(h.cumulative.last().map(|x| x.1), Some(2), "100 s is only in +Inf");
        assert!((h.sum_secs - 100.0203).abs() < 1e-6);
    }
}
