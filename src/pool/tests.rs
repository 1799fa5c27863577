//! Pool accounting with a fake connector (no sockets): FIFO waiters, reserve, shared budgets, Drop safety.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;

#[derive(Debug, Clone, thiserror::Error)]
#[error("fake connect error")]
struct FakeError;

struct FakeConn {
    clean: bool,
    alive: bool,
    live: Arc<AtomicUsize>,
}

impl Drop for FakeConn {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Poolable for FakeConn {
    fn is_reusable(&self) -> bool {
        self.clean
    }
    fn is_alive(&mut self) -> bool {
        self.alive
    }
    async fn check(&mut self) -> bool {
        true
    }
}

#[derive(Clone, Default)]
struct FakeConnect {
    live: Arc<AtomicUsize>,
    opened: Arc<AtomicUsize>,
    /// Milliseconds each connect takes.
    delay_ms: Arc<AtomicUsize>,
}

impl Connect for FakeConnect {
    type Conn = FakeConn;
    type Error = FakeError;
    async fn connect(&self) -> Result<FakeConn, FakeError> {
        let delay = self.delay_ms.load(Ordering::SeqCst) as u64;
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        self.live.fetch_add(1, Ordering::SeqCst);
        self.opened.fetch_add(1, Ordering::SeqCst);
        Ok(FakeConn { clean: true, alive: true, live: self.live.clone() })
    }
}

fn pool(size: usize, reserve: usize, reserve_timeout_ms: u64) -> (Arc<Pool<FakeConnect>>, FakeConnect) {
    let fc = FakeConnect::default();
    let limits = Limits {
        pool_size: size,
        reserve_pool_size: reserve,
        reserve_pool_timeout: Duration::from_millis(reserve_timeout_ms),
        ..Limits::default()
    };
    let p = Pool::new(fc.clone(), limits, Arc::new(SharedLimit::new(0)), Arc::new(SharedLimit::new(0)));
    (p, fc)
}

#[tokio::test]
async fn reuses_clean_connections_and_closes_dirty_ones() {
    let (p, fc) = pool(2, 0, 0);
    let lease = p.acquire(Duration::from_secs(1)).await.unwrap();
    lease.release();
    let mut lease = p.acquire(Duration::from_secs(1)).await.unwrap();
    assert_eq!(fc.opened.load(Ordering::SeqCst), 1, "reused");
    if let Some(c) = lease.conn() {
        c.clean = false;
    }
    lease.release();
    assert_eq!(fc.live.load(Ordering::SeqCst), 0, "dirty connection closed");
    let lease = p.acquire(Duration::from_secs(1)).await.unwrap();
    drop(lease);
    assert_eq!(fc.live.load(Ordering::SeqCst), 0, "dropping a lease closes its connection");
    assert_eq!(p.counts().open, 0);
}

#[tokio::test]
async fn waiters_are_served_in_order_and_time_out() {
    let (p, _fc) = pool(1, 0, 0);
    let held = p.acquire(Duration::from_secs(1)).await.unwrap();
    let err = p.acquire(Duration::from_millis(50)).await.err().unwrap();
    assert!(matches!(err, PoolError::WaitTimeout { .. }));
    assert_eq!(p.counts().waiting, 0, "a timed-out waiter leaves the queue");
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..5 {
        let (p2, order) = (p.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let l = p2.acquire(Duration::from_secs(5)).await.unwrap();
            order.lock().unwrap().push(i);
            l.release();
        }));
        while p.counts().waiting < i + 1 {
            tokio::task::yield_now().await;
        }
    }
    held.release();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    assert_eq!(p.counts().open, 1);
}

#[tokio::test]
async fn reserve_only_after_timeout_and_shrinks_back() {
    let (p, fc) = pool(1, 1, 200);
    let held = p.acquire(Duration::from_secs(1)).await.unwrap();
    let started = tokio::time::Instant::now();
    let extra = p.acquire(Duration::from_secs(2)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(190));
    assert_eq!(p.counts().open, 2);
    assert_eq!(p.counts().reserve_open, 1);
    extra.release();
    assert_eq!(fc.live.load(Ordering::SeqCst), 1, "over-size connection closed when no one waits");
    held.release();
}

#[tokio::test]
async fn shared_budget_caps_several_pools() {
    let db = Arc::new(SharedLimit::new(1));
    let fc = FakeConnect::default();
    let a = Pool::new(fc.clone(), Limits::default(), db.clone(), Arc::new(SharedLimit::new(0)));
    let b = Pool::new(fc.clone(), Limits::default(), db.clone(), Arc::new(SharedLimit::new(0)));
    let la = a.acquire(Duration::from_secs(1)).await.unwrap();
    assert!(b.acquire(Duration::from_millis(100)).await.is_err(), "db budget of 1 is used by pool a");
    let waiter = tokio::spawn(async move { b.acquire(Duration::from_secs(2)).await.is_ok() });
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(la);
    assert!(waiter.await.unwrap(), "capacity freed in pool a reaches pool b's waiter");
}

#[tokio::test]
async fn abandoned_waiter_does_not_leak_a_connection() {
    let (p, fc) = pool(1, 0, 0);
    let held = p.acquire(Duration::from_secs(1)).await.unwrap();
    let p2 = p.clone();
    let waiter = tokio::spawn(async move { p2.acquire(Duration::from_secs(10)).await.map(|_| ()) });
    while p.counts().waiting == 0 {
        tokio::task::yield_now().await;
    }
    waiter.abort();
    let _ = waiter.await;
    held.release();
    assert_eq!(p.counts().waiting, 0);
    assert_eq!(p.counts().idle, 1, "the connection went back to idle");
    assert_eq!(fc.live.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn acquire_abandoned_mid_connect_frees_its_slot() {
    let (p, fc) = pool(1, 0, 0);
    fc.delay_ms.store(500, Ordering::SeqCst);
    // The client leaves while its server is still connecting.
    assert!(tokio::time::timeout(Duration::from_millis(50), p.acquire(Duration::ZERO)).await.is_err());
    fc.delay_ms.store(0, Ordering::SeqCst);
    let lease = tokio::time::timeout(Duration::from_secs(1), p.acquire(Duration::ZERO)).await;
    assert!(matches!(lease, Ok(Ok(_))), "the slot of the abandoned connect was freed");
}

#[tokio::test]
async fn a_waiter_handed_a_dead_connection_keeps_its_turn() {
    let (p, fc) = pool(1, 0, 0);
    let mut held = p.acquire(Duration::from_secs(1)).await.unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let waiters = |n: usize| {
        let p = p.clone();
        async move {
            let until = tokio::time::Instant::now() + Duration::from_secs(5);
            while p.counts().waiting < n {
                assert!(tokio::time::Instant::now() < until, "{n} waiters");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    let spawn = |name: &'static str| {
        let (p, order) = (p.clone(), order.clone());
        tokio::spawn(async move {
            let lease = p.acquire(Duration::from_secs(5)).await.unwrap();
            order.lock().unwrap().push(name);
            lease.release();
        })
    };
    let b = spawn("b");
    waiters(1).await;
    let c = spawn("c");
    waiters(2).await;
    // B, first in line, is handed a connection that turns out dead: a replacement is opened for B in
    // the same slot, and C still comes second.
    if let Some(conn) = held.conn() {
        conn.alive = false;
    }
    held.release();
    b.await.unwrap();
    c.await.unwrap();
    assert_eq!(*order.lock().unwrap(), ["b", "c"]);
    assert_eq!(fc.opened.load(Ordering::SeqCst), 2, "one replacement");
    assert_eq!(p.counts().open, 1);
}

/// Many tasks on several threads hammer three pools that share a database budget (a starved pool has
/// another close an idle server, as `Shared` wires it): no pool ever has more servers out than its size,
/// the database never more than its budget, every wait is served, and the budget is reached (exact,
/// not merely respected by serving less).
#[test]
fn limits_hold_exactly_under_concurrency() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    rt.block_on(async {
        const DB_BUDGET: usize = 8;
        let db = Arc::new(SharedLimit::new(DB_BUDGET));
        let db_live = Arc::new(AtomicUsize::new(0));
        let db_peak = Arc::new(AtomicUsize::new(0));
        let mut pools = Vec::new();
        for size in [5, 5, 3] {
            let fc = FakeConnect::default();
            let limits = Limits { pool_size: size, ..Limits::default() };
            let p = Pool::new(fc.clone(), limits, db.clone(), Arc::new(SharedLimit::new(0)));
            pools.push((p, fc, size, Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))));
        }
        let all: Vec<_> = pools.iter().map(|(p, ..)| Arc::downgrade(p)).collect();
        for (p, ..) in &pools {
            let others = all.clone();
            p.set_starved_hook(Box::new(move || {
                for other in others.iter().filter_map(std::sync::Weak::upgrade) {
                    if other.close_one_idle() {
                        return;
                    }
                }
            }));
        }
        let mut tasks = Vec::new();
        for (i, (p, _, size, out, peak)) in pools.iter().enumerate() {
            for t in 0..48usize {
                let (p, size, out, peak) = (p.clone(), *size, out.clone(), peak.clone());
                let (db_live, db_peak) = (db_live.clone(), db_peak.clone());
                tasks.push(tokio::spawn(async move {
                    for round in 0..40usize {
                        let mut lease = p.acquire(Duration::from_secs(20)).await.expect("served");
                        let now = out.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        let total = db_live.fetch_add(1, Ordering::SeqCst) + 1;
                        db_peak.fetch_max(total, Ordering::SeqCst);
                        assert!(now <= size, "pool {i}: {now} servers out, size {size}");
                        tokio::task::yield_now().await;
                        if (t + round) % 7 == 0 {
                            tokio::time::sleep(Duration::from_micros(200)).await;
                        }
                        out.fetch_sub(1, Ordering::SeqCst);
                        db_live.fetch_sub(1, Ordering::SeqCst);
                        match (t + round) % 11 {
                            0 => {
                                if let Some(c) = lease.conn() {
                                    c.clean = false; // closed, not pooled: its slot must come back
                                }
                                lease.release();
                            }
                            1 => drop(lease),
                            _ => lease.release(),
                        }
                    }
                }));
            }
        }
        for t in tasks {
            t.await.expect("no task panicked");
        }
        let peak_total = db_peak.load(Ordering::SeqCst);
        assert!(peak_total <= DB_BUDGET, "database budget {DB_BUDGET}, {peak_total} out at once");
        assert_eq!(peak_total, DB_BUDGET, "the budget was reached");
        for (i, (p, fc, size, _, peak)) in pools.iter().enumerate() {
            let peak = peak.load(Ordering::SeqCst);
            assert!(peak >= 1 && peak <= *size, "pool {i}: peak {peak}");
            let live = fc.live.load(Ordering::SeqCst);
            assert!(live <= *size, "pool {i}: {live} connections live, size {size}");
            assert_eq!(p.counts().waiting, 0, "pool {i}: nobody left waiting");
        }
    });
}
