//! One pool of server connections for a (database, user) pair: idle connections (LIFO), a FIFO queue of
//! waiting clients, and the accounting that enforces pool_size, the reserve pool and the shared
//! database/user budgets. The lock is a short synchronous one taken per checkout and check-in, never
//! per message and never across an `.await`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::{Instant, sleep_until, timeout};

use super::{Connect, Lease, Limits, PoolError, Poolable, SharedLimit};

mod choice;
mod guards;
use choice::{next_waiter, take_idle};
use guards::{LoginGuard, SlotGuard, WaiterGuard};

/// What a waiting client is handed: a connection, or the right to open one.
enum Grant<T> {
    Conn(T, Instant),
    Slot { reserve: bool },
}

struct Waiter<T> {
    id: u64,
    since: Instant,
    tx: oneshot::Sender<Grant<T>>,
    /// The worker it waits on (`workers::current`).
    home: usize,
    /// Times a waiter behind it of the releasing worker was served first (see `choice::next_waiter`).
    passed: u8,
}

struct IdleConn<T> {
    conn: T,
    created: Instant,
    idle_since: Instant,
    /// The worker that gave it back (`workers::current`), whose clients it serves best.
    home: usize,
}

struct Inner<T, E> {
    limits: Limits,
    idle: Vec<IdleConn<T>>,
    /// Connections that exist or are being opened: idle + leased + connecting.
    open: usize,
    /// Of `open`, how many were opened from the reserve.
    reserve_open: usize,
    waiters: VecDeque<Waiter<T>>,
    next_waiter: u64,
    last_login_error: Option<(Instant, E)>,
    closed: bool,
    /// A waiter could not get a slot because a shared (database/user) budget is used up.
    starved: bool,
    /// PAUSE: no checkouts; servers are closed as they come back.
    paused: bool,
    /// RECONNECT: connections created before this are closed as they come back.
    reconnect_at: Option<Instant>,
    /// Connections created before `reconnect_at` that are still open (WAIT_CLOSE waits for 0).
    stale_open: usize,
    /// Connections being opened right now.
    connecting: usize,
}

/// Why a slot could not be claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    Got,
    PoolFull,
    BudgetFull,
}

/// Counts for SHOW POOLS and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolCounts {
    pub open: usize,
    pub idle: usize,
    pub waiting: usize,
    pub reserve_open: usize,
    pub max_wait: Duration,
    /// Of `open`, connections still logging in.
    pub connecting: usize,
}

pub struct Pool<C: Connect> {
    connector: C,
    inner: Mutex<Inner<Box<C::Conn>, C::Error>>,
    db_limit: Arc<SharedLimit>,
    user_limit: Arc<SharedLimit>,
    /// Called (outside the lock) when waiters starve on a shared budget: closes an idle connection
    /// of another pool sharing it, as PgBouncer evicts for max_db_connections/max_user_connections.
    on_starved: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

enum Step<T, E: std::error::Error + 'static> {
    Got(T, Instant, Instant),
    Open {
        reserve: bool,
    },
    Wait(oneshot::Receiver<Grant<T>>, u64),
    /// The last login failed in a way clients wait out: try again at this instant.
    HoldOff(Instant, E),
    Fail(PoolError<E>),
}

impl<C: Connect> Pool<C> {
    pub fn new(connector: C, limits: Limits, db_limit: Arc<SharedLimit>, user_limit: Arc<SharedLimit>) -> Arc<Self> {
        let pool = Arc::new(Pool {
            connector,
            inner: Mutex::new(Inner {
                limits,
                idle: Vec::new(),
                open: 0,
                reserve_open: 0,
                waiters: VecDeque::new(),
                next_waiter: 0,
                last_login_error: None,
                closed: false,
                starved: false,
                paused: false,
                reconnect_at: None,
                stale_open: 0,
                connecting: 0,
            }),
            db_limit,
            user_limit,
            on_starved: std::sync::OnceLock::new(),
        });
        tokio::spawn(janitor(Arc::downgrade(&pool)));
        pool
    }

    fn lock(&self) -> MutexGuard<'_, Inner<Box<C::Conn>, C::Error>> {
        // A poisoned lock only means another task panicked mid-update; the counts stay usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_starved_hook(&self, hook: Box<dyn Fn() + Send + Sync>) {
        let _ = self.on_starved.set(hook);
    }

    /// Closes the longest-idle connection, if any. True when one was closed.
    pub fn close_one_idle(&self) -> bool {
        let conn = {
            let mut g = self.lock();
            if g.idle.is_empty() {
                return false;
            }
            g.idle.remove(0)
        };
        self.close_at(conn.conn, conn.created);
        true
    }

    /// PAUSE: checkouts wait (queued clients keep their place); idle servers are closed now and busy ones
    /// when they come back. `open` reaches 0 once every transaction in flight has finished.
    pub fn pause(&self) {
        self.lock().paused = true;
        self.close_idle();
    }

    /// SUSPEND: checkouts wait, but idle servers stay open for RESUME.
    pub fn pause_soft(&self) {
        self.lock().paused = true;
    }

    /// RESUME: waiting clients are served again, in order.
    pub fn resume(&self) {
        let mut g = self.lock();
        g.paused = false;
        self.hand_out_slots(&mut g);
    }

    /// RECONNECT: every current connection is closed, idle ones now and busy ones when released.
    pub fn reconnect(&self) {
        {
            let mut g = self.lock();
            g.reconnect_at = Some(Instant::now());
            g.stale_open = g.open;
        }
        self.close_idle();
    }

    /// Connections that RECONNECT marked and that are still open.
    pub fn stale_open(&self) -> usize {
        self.lock().stale_open
    }

    pub fn connector(&self) -> &C {
        &self.connector
    }

    pub fn limits(&self) -> Limits {
        self.lock().limits.clone()
    }

    /// New limits apply to the next checkout; existing connections are not dropped.
    pub fn set_limits(&self, limits: Limits) {
        let mut g = self.lock();
        g.limits = limits;
        self.hand_out_slots(&mut g);
    }

    pub fn counts(&self) -> PoolCounts {
        let g = self.lock();
        let now = Instant::now();
        PoolCounts {
            open: g.open,
            idle: g.idle.len(),
            waiting: g.waiters.len(),
            reserve_open: g.reserve_open,
            max_wait: g.waiters.front().map(|w| now - w.since).unwrap_or_default(),
            connecting: g.connecting,
        }
    }

    /// Closes idle connections and refuses new checkouts (pool removed or rebuilt).
    pub fn shut(&self) {
        let idle = {
            let mut g = self.lock();
            g.closed = true;
            std::mem::take(&mut g.idle)
        };
        for c in idle {
            self.close_at(c.conn, c.created);
        }
    }

    /// Closes all idle connections now (RECONNECT-like; busy ones are closed on release by lifetime).
    pub fn close_idle(&self) {
        let idle = std::mem::take(&mut self.lock().idle);
        for c in idle {
            self.close_at(c.conn, c.created);
        }
    }

    /// Checks out a connection, waiting at most `wait` (zero = no limit) for one.
    pub async fn acquire(self: &Arc<Self>, wait: Duration) -> Result<Lease<C>, PoolError<C::Error>> {
        let started = Instant::now();
        let deadline = (!wait.is_zero()).then(|| started + wait);
        loop {
            let step = self.next_step();
            let (conn, created, idle_since) = match step {
                Step::Fail(e) => return Err(e),
                Step::HoldOff(at, e) => {
                    // The server is away: wait for the next try, unless the client's wait ends first.
                    if let Some(d) = deadline.filter(|d| *d <= at) {
                        sleep_until(d).await;
                        return Err(PoolError::Connect(e));
                    }
                    sleep_until(at).await;
                    continue;
                }
                Step::Got(c, created, idle_since) => (c, created, idle_since),
                Step::Open { reserve } => match self.open_or_wait(reserve, deadline).await {
                    Some(r) => return r,
                    None => continue,
                },
                Step::Wait(rx, id) => match self.wait(rx, id, started, deadline).await? {
                    Grant::Conn(c, created) => (c, created, Instant::now()),
                    Grant::Slot { reserve } => match self.open_or_wait(reserve, deadline).await {
                        Some(r) => return r,
                        None => continue,
                    },
                },
            };
            if let Some(lease) = self.validate(conn, created, idle_since).await {
                return Ok(lease);
            }
            // The connection was dead and is closed; its slot is still ours. A replacement is opened in
            // it, so this client keeps its turn (unless RELOAD shrank the pool meanwhile).
            if self.within_size() {
                match self.open_or_wait(false, deadline).await {
                    Some(r) => return r,
                    None => continue,
                }
            }
            self.free_slot();
        }
    }

    /// Opens a connection in a claimed slot; `None` when it failed in a way the client waits out (the
    /// caller tries again, held off by server_login_retry).
    async fn open_or_wait(
        self: &Arc<Self>,
        reserve: bool,
        deadline: Option<Instant>,
    ) -> Option<Result<Lease<C>, PoolError<C::Error>>> {
        match self.open_new(reserve).await {
            Err(e) if self.waited_out(&e, deadline) => {
                self.pause_before_retry().await;
                None
            }
            r => Some(r),
        }
    }

    /// A failed login the client waits out (see `Connect::waits_out`), with time left to wait.
    fn waited_out(&self, e: &PoolError<C::Error>, deadline: Option<Instant>) -> bool {
        let away = match e {
            PoolError::Connect(e) => self.connector.waits_out(e),
            PoolError::ConnectTimeout(_) => true,
            _ => false,
        };
        away && deadline.is_none_or(|d| Instant::now() < d)
    }

    /// Without a server_login_retry to space them, retries of a server that is away are 100 ms apart.
    async fn pause_before_retry(&self) {
        let retry = self.limits().server_login_retry;
        if retry < Duration::from_millis(100) {
            tokio::time::sleep(Duration::from_millis(100) - retry).await;
        }
    }

    fn within_size(&self) -> bool {
        let g = self.lock();
        g.open <= g.limits.pool_size + g.limits.reserve_pool_size && !g.closed
    }

    fn next_step(&self) -> Step<Box<C::Conn>, C::Error> {
        let mut g = self.lock();
        if g.closed {
            return Step::Fail(PoolError::Closed);
        }
        if !g.paused
            && let Some(idle) = take_idle(&mut g.idle)
        {
            return Step::Got(idle.conn, idle.created, idle.idle_since);
        }
        if let Some((at, e)) = &g.last_login_error
            && at.elapsed() < g.limits.server_login_retry
        {
            if self.connector.waits_out(e) {
                return Step::HoldOff(*at + g.limits.server_login_retry, e.clone());
            }
            return Step::Fail(PoolError::LoginRetry(e.clone()));
        }
        if !g.paused && g.waiters.is_empty() && self.try_claim(&mut g, false) == Claim::Got {
            return Step::Open { reserve: false };
        }
        let (tx, rx) = oneshot::channel();
        let id = g.next_waiter;
        g.next_waiter += 1;
        g.waiters.push_back(Waiter { id, since: Instant::now(), tx, home: crate::workers::current(), passed: 0 });
        self.hand_out_slots(&mut g);
        Step::Wait(rx, id)
    }

    /// Liveness probe and, after `server_check_delay` idle, the check query. `None` = it was dead and is
    /// closed, its slot still claimed (the caller opens a replacement in it or frees it). The connection
    /// is held by a Lease throughout, so an acquire abandoned mid-check (the client left) closes it and
    /// frees its slot.
    async fn validate(self: &Arc<Self>, conn: Box<C::Conn>, created: Instant, idle_since: Instant) -> Option<Lease<C>> {
        let limits = self.limits();
        let mut lease = Lease { conn: Some(conn), created, pool: self.clone() };
        let conn = lease.conn()?;
        let ok = conn.is_alive()
            && (!limits.check_enabled || idle_since.elapsed() < limits.server_check_delay || conn.check().await);
        if !ok {
            tracing::debug!("idle server connection found dead, replacing it");
            drop(lease.conn.take());
            self.forget_created(created);
            return None;
        }
        Some(lease)
    }

    /// Takes one connection slot under the lock, if pool size, reserve and shared budgets allow.
    fn try_claim(&self, g: &mut Inner<Box<C::Conn>, C::Error>, reserve: bool) -> Claim {
        let cap = g.limits.pool_size + if reserve { g.limits.reserve_pool_size } else { 0 };
        if g.open >= cap {
            return Claim::PoolFull;
        }
        if !self.db_limit.try_take() {
            return Claim::BudgetFull;
        }
        if !self.user_limit.try_take() {
            self.db_limit.give_back();
            return Claim::BudgetFull;
        }
        g.open += 1;
        if g.open > g.limits.pool_size {
            g.reserve_open += 1;
        }
        Claim::Got
    }

    async fn open_new(self: &Arc<Self>, reserve: bool) -> Result<Lease<C>, PoolError<C::Error>> {
        if reserve {
            tracing::info!("{}: taking connection from reserve_pool", self.connector.name()); // PgBouncer's words
        }
        // The slot is claimed: it is freed on failure, and also when this future is dropped mid-connect.
        let slot = SlotGuard { pool: self };
        let connect_timeout = self.limits().server_connect_timeout;
        self.lock().connecting += 1;
        let _login = LoginGuard { pool: self };
        // Boxed: a login (TCP, TLS, authentication) is a large future, and only this rare path needs it;
        // inline, every waiting client's task would carry its size.
        let connect = Box::pin(self.connector.connect());
        let result =
            if connect_timeout.is_zero() { Ok(connect.await) } else { timeout(connect_timeout, connect).await };
        match result {
            Ok(Ok(conn)) => {
                std::mem::forget(slot); // the lease owns the slot now
                self.lock().last_login_error = None;
                Ok(Lease { conn: Some(Box::new(conn)), created: Instant::now(), pool: self.clone() })
            }
            Ok(Err(e)) => {
                if self.connector.holds_off(&e) {
                    self.lock().last_login_error = Some((Instant::now(), e.clone()));
                }
                Err(PoolError::Connect(e))
            }
            Err(_elapsed) => Err(PoolError::ConnectTimeout(connect_timeout)),
        }
    }

    async fn wait(
        self: &Arc<Self>,
        rx: oneshot::Receiver<Grant<Box<C::Conn>>>,
        id: u64,
        started: Instant,
        deadline: Option<Instant>,
    ) -> Result<Grant<Box<C::Conn>>, PoolError<C::Error>> {
        let mut guard = WaiterGuard { pool: self.clone(), id, rx: Some(rx) };
        let reserve = self.limits();
        let reserve_at = (reserve.reserve_pool_size > 0).then(|| started + reserve.reserve_pool_timeout);
        let far = started + Duration::from_secs(365 * 24 * 3600);
        loop {
            // Offer free capacity; if a shared budget starves us, have another pool give some back.
            let starved = {
                let mut g = self.lock();
                self.hand_out_slots(&mut g);
                std::mem::take(&mut g.starved)
            };
            if let (true, Some(hook)) = (starved, self.on_starved.get()) {
                hook();
            }
            let Some(rx) = guard.rx.as_mut() else {
                return Err(PoolError::Closed);
            };
            let db_freed = self.db_limit.freed.notified();
            let user_freed = self.user_limit.freed.notified();
            tokio::select! {
                grant = rx => {
                    guard.rx = None;
                    return grant.map_err(|_| PoolError::Closed);
                }
                _ = sleep_until(deadline.unwrap_or(far)) => {
                    return Err(PoolError::WaitTimeout { waited: started.elapsed() });
                }
                _ = sleep_until(reserve_at.unwrap_or(far)), if reserve_at.is_some_and(|t| t > Instant::now()) => {}
                _ = db_freed => {}
                _ = user_freed => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            // Something changed: capacity freed elsewhere, or the reserve became available to us.
        }
    }

    /// Offers free slots to waiters in FIFO order, the reserve to those who waited long enough.
    fn hand_out_slots(&self, g: &mut Inner<Box<C::Conn>, C::Error>) {
        if g.paused {
            return;
        }
        while let Some(front) = g.waiters.front() {
            if front.tx.is_closed() {
                g.waiters.pop_front();
                continue;
            }
            let reserve = front.since.elapsed() >= g.limits.reserve_pool_timeout && g.limits.reserve_pool_size > 0;
            match self.try_claim(g, reserve) {
                Claim::Got => {}
                Claim::PoolFull => return,
                Claim::BudgetFull => {
                    g.starved = true;
                    return;
                }
            }
            let Some(w) = g.waiters.pop_front() else {
                return;
            };
            if w.tx.send(Grant::Slot { reserve }).is_err() {
                self.unclaim(g);
            }
        }
    }

    fn unclaim(&self, g: &mut Inner<Box<C::Conn>, C::Error>) {
        if g.open > g.limits.pool_size && g.reserve_open > 0 {
            g.reserve_open -= 1;
        }
        g.open = g.open.saturating_sub(1);
        self.db_limit.give_back();
        self.user_limit.give_back();
    }

    /// Returns a clean connection: to the first waiter, else to the idle list (or closes it when the
    /// pool is over size, past its lifetime, or closed).
    pub(super) fn release(&self, conn: Box<C::Conn>, created: Instant) {
        let mut g = self.lock();
        let expired = !g.limits.server_lifetime.is_zero() && created.elapsed() >= g.limits.server_lifetime;
        let stale = g.reconnect_at.is_some_and(|r| created < r);
        if g.closed || expired || g.paused || stale {
            drop(g);
            return self.close_at(conn, created);
        }
        let mut conn = conn;
        while let Some(w) = next_waiter(&mut g.waiters) {
            match w.tx.send(Grant::Conn(conn, created)) {
                Ok(()) => return,
                Err(Grant::Conn(c, _)) => conn = c,
                Err(Grant::Slot { .. }) => return, // unreachable: we sent a Conn
            }
        }
        if g.open > g.limits.pool_size {
            drop(g);
            return self.close_at(conn, created);
        }
        g.idle.push(IdleConn { conn, created, idle_since: Instant::now(), home: crate::workers::current() });
    }

    /// Closes a connection and gives its slot to the next waiter.
    pub(super) fn close(&self, conn: Box<C::Conn>) {
        drop(conn);
        self.free_slot();
    }

    /// `close` for a connection whose creation time is known (it may be one RECONNECT marked).
    pub(super) fn close_at(&self, conn: Box<C::Conn>, created: Instant) {
        self.forget_created(created);
        self.close(conn);
    }

    /// A connection created at `created` is gone: it no longer counts among those RECONNECT marked.
    fn forget_created(&self, created: Instant) {
        let mut g = self.lock();
        if g.reconnect_at.is_some_and(|r| created < r) {
            g.stale_open = g.stale_open.saturating_sub(1);
        }
    }

    fn free_slot(&self) {
        let mut g = self.lock();
        self.unclaim(&mut g);
        self.hand_out_slots(&mut g);
    }

    /// Janitor work: idle timeout and lifetime, then top up to min_pool_size.
    fn maintain(self: &Arc<Self>) {
        let expired: Vec<IdleConn<Box<C::Conn>>> = {
            let mut g = self.lock();
            let l = g.limits.clone();
            let keep = |c: &IdleConn<Box<C::Conn>>| {
                (l.server_idle_timeout.is_zero() || c.idle_since.elapsed() < l.server_idle_timeout)
                    && (l.server_lifetime.is_zero() || c.created.elapsed() < l.server_lifetime)
            };
            let (kept, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut g.idle).into_iter().partition(keep);
            g.idle = kept;
            gone
        };
        for c in expired {
            self.close_at(c.conn, c.created);
        }
        let to_open = {
            let mut g = self.lock();
            let mut n = 0;
            while !g.closed
                && !g.paused
                && g.open < g.limits.min_pool_size
                && self.try_claim(&mut g, false) == Claim::Got
            {
                n += 1;
            }
            n
        };
        for _ in 0..to_open {
            let pool = self.clone();
            tokio::spawn(async move {
                if let Ok(lease) = pool.open_new(false).await {
                    lease.release();
                }
            });
        }
    }
}

async fn janitor<C: Connect>(pool: Weak<Pool<C>>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        if pool.lock().closed {
            return;
        }
        pool.maintain();
    }
}
