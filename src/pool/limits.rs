//! Pure accounting of how many server connections a pool, a database and a user may hold.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::PoolSettings;

/// The per-pool numbers the pool enforces. Derived from `PoolSettings`; replaced on reload.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub pool_size: usize,
    pub min_pool_size: usize,
    pub reserve_pool_size: usize,
    pub reserve_pool_timeout: Duration,
    pub server_lifetime: Duration,
    pub server_idle_timeout: Duration,
    pub server_connect_timeout: Duration,
    pub server_login_retry: Duration,
    pub server_check_delay: Duration,
    pub check_enabled: bool,
}

impl Limits {
    pub fn from_settings(s: &PoolSettings) -> Limits {
        Limits {
            pool_size: s.pool_size.max(1),
            min_pool_size: s.min_pool_size.min(s.pool_size.max(1)),
            reserve_pool_size: s.reserve_pool_size,
            reserve_pool_timeout: s.reserve_pool_timeout,
            server_lifetime: s.server_lifetime,
            server_idle_timeout: s.server_idle_timeout,
            server_connect_timeout: s.server_connect_timeout,
            server_login_retry: s.server_login_retry,
            server_check_delay: s.server_check_delay,
            check_enabled: !s.server_check_query.trim().is_empty(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            pool_size: 20,
            min_pool_size: 0,
            reserve_pool_size: 0,
            reserve_pool_timeout: Duration::from_secs(5),
            server_lifetime: Duration::from_secs(3600),
            server_idle_timeout: Duration::from_secs(600),
            server_connect_timeout: Duration::from_secs(15),
            server_login_retry: Duration::from_secs(15),
            server_check_delay: Duration::from_secs(30),
            check_enabled: true,
        }
    }
}

/// A connection budget shared by several pools (`max_db_connections`, `max_user_connections`).
/// `max == 0` means unlimited. Freed capacity is announced on `freed`.
#[derive(Debug, Default)]
pub struct SharedLimit {
    max: AtomicUsize,
    used: AtomicUsize,
    pub freed: Notify,
}

impl SharedLimit {
    pub fn new(max: usize) -> Self {
        SharedLimit { max: AtomicUsize::new(max), used: AtomicUsize::new(0), freed: Notify::new() }
    }
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
        self.freed.notify_waiters();
    }
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
    /// Takes one unit if the budget allows.
    pub fn try_take(&self) -> bool {
        let max = self.max.load(Ordering::Relaxed);
        self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| (max == 0 || u < max).then_some(u + 1)).is_ok()
    }
    pub fn give_back(&self) {
        let _ = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| u.checked_sub(1));
        self.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_limit_caps_and_frees() {
        let l = SharedLimit::new(2);
        assert!(l.try_take() && l.try_take());
        assert!(!l.try_take());
        l.give_back();
        assert!(l.try_take());
        let unlimited = SharedLimit::new(0);
        assert!((0..1000).all(|_| unlimited.try_take()));
    }
}
