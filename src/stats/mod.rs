//! The single stats model, read by the admin console (and, later, the metrics endpoint): per-pool
//! counters that sessions add to once per transaction (never per message), and the gauges that are
//! read off the pools when a snapshot is taken. Imports: std only.

pub mod clients;
pub mod fingerprint;
pub mod registry;
pub mod servers;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Cumulative counters, PgBouncer's `total_*` figures (times in microseconds).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub xact_count: u64,
    pub query_count: u64,
    pub server_assignment_count: u64,
    pub server_closed_count: u64,
    pub received: u64,
    pub sent: u64,
    pub xact_time: u64,
    pub query_time: u64,
    pub wait_time: u64,
    pub server_lifetime: u64,
    pub client_parse_count: u64,
    pub server_parse_count: u64,
    pub bind_count: u64,
}

macro_rules! each_counter {
    ($m:ident) => {
        $m!(
            xact_count,
            query_count,
            server_assignment_count,
            server_closed_count,
            received,
            sent,
            xact_time,
            query_time,
            wait_time,
            server_lifetime,
            client_parse_count,
            server_parse_count,
            bind_count
        )
    };
}

impl Totals {
    pub fn is_zero(&self) -> bool {
        *self == Totals::default()
    }

    pub fn add(&mut self, o: &Totals) {
        macro_rules! add {
            ($($f:ident),*) => { $( self.$f += o.$f; )* };
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
}

/// PgBouncer's `avg_*` figures over the last complete stats period: counts and bytes per second,
/// times per transaction, query, or assignment (microseconds).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Averages {
    pub xact_count: u64,
    pub query_count: u64,
    pub server_assignment_count: u64,
    pub recv: u64,
    pub sent: u64,
    pub xact_time: u64,
    pub query_time: u64,
    pub wait_time: u64,
    pub server_lifetime: u64,
    pub client_parse_count: u64,
    pub server_parse_count: u64,
    pub bind_count: u64,
}

impl Averages {
    fn over(d: &Totals, period: Duration) -> Averages {
        let secs = period.as_secs_f64().max(1e-3);
        let rate = |v: u64| (v as f64 / secs).round() as u64;
        let per = |v: u64, n: u64| v.checked_div(n).unwrap_or(0);
        Averages {
            xact_count: rate(d.xact_count),
            query_count: rate(d.query_count),
            server_assignment_count: rate(d.server_assignment_count),
            recv: rate(d.received),
            sent: rate(d.sent),
            xact_time: per(d.xact_time, d.xact_count),
            query_time: per(d.query_time, d.query_count),
            wait_time: per(d.wait_time, d.server_assignment_count),
            server_lifetime: per(d.server_lifetime, d.server_closed_count),
            client_parse_count: rate(d.client_parse_count),
            server_parse_count: rate(d.server_parse_count),
            bind_count: rate(d.bind_count),
        }
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

/// One pool's counters, shared by its sessions.
#[derive(Debug)]
pub struct PoolStats {
    xact_count: AtomicU64,
    query_count: AtomicU64,
    server_assignment_count: AtomicU64,
    server_closed_count: AtomicU64,
    received: AtomicU64,
    sent: AtomicU64,
    xact_time: AtomicU64,
    query_time: AtomicU64,
    wait_time: AtomicU64,
    server_lifetime: AtomicU64,
    client_parse_count: AtomicU64,
    server_parse_count: AtomicU64,
    bind_count: AtomicU64,
    /// Clients logged in to this pool.
    pub clients: AtomicU64,
    /// Successful client logins.
    pub logins: AtomicU64,
    /// Waits for a server that ended with query_wait_timeout.
    pub acquire_timeouts: AtomicU64,
    pub acquire_wait: Histo,
    pub xact: Histo,
    pub query: Histo,
    /// Errors sent to clients (pgsluice's own and the server's), by SQLSTATE class.
    errors: Mutex<std::collections::BTreeMap<[u8; 2], u64>>,
    period: Mutex<Period>,
}

#[derive(Debug)]
struct Period {
    started: Instant,
    at_start: Totals,
    averages: Averages,
}

impl Default for PoolStats {
    fn default() -> Self {
        macro_rules! zero {
            ($($f:ident),*) => {
                PoolStats {
                    $( $f: AtomicU64::new(0), )*
                    clients: AtomicU64::new(0),
                    logins: AtomicU64::new(0),
                    acquire_timeouts: AtomicU64::new(0),
                    acquire_wait: Histo::default(),
                    xact: Histo::default(),
                    query: Histo::default(),
                    errors: Mutex::default(),
                    period: Mutex::new(Period { started: Instant::now(), at_start: Totals::default(), averages: Averages::default() }),
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

    /// Closes the current stats period (every `stats_period`): the averages now describe it.
    pub fn roll_period(&self) {
        let now = self.totals();
        if let Ok(mut p) = self.period.lock() {
            let elapsed = p.started.elapsed();
            p.averages = Averages::over(&now.minus(&p.at_start), elapsed);
            p.at_start = now;
            p.started = Instant::now();
        }
    }

    pub fn averages(&self) -> Averages {
        self.period.lock().map(|p| p.averages).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_and_averages_cover_the_last_period() {
        let s = PoolStats::default();
        s.add(&Totals { xact_count: 3, query_count: 6, xact_time: 300, query_time: 120, ..Totals::default() });
        s.add(&Totals { xact_count: 1, query_count: 2, xact_time: 100, query_time: 40, ..Totals::default() });
        let t = s.totals();
        assert_eq!((t.xact_count, t.query_count, t.xact_time), (4, 8, 400));
        s.roll_period();
        let a = s.averages();
        assert_eq!((a.xact_time, a.query_time), (100, 20), "per transaction and per query");
        s.roll_period();
        assert_eq!(s.averages().xact_time, 0, "nothing happened in the next period");
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
