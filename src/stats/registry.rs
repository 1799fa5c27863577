//! A registry of live connections (clients or servers) for SHOW CLIENTS / SHOW SERVERS and KILL:
//! entries are added at login or connect and removed when their guard drops.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Something listed by id.
pub trait Entry: Send + Sync {
    fn id(&self) -> u64;
}

/// Microseconds since the epoch.
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

#[derive(Debug)]
pub struct Registry<E> {
    /// Shared between registries made `with_ids` the same counter: as PgBouncer's socket ids, a client's
    /// and a server's id never coincide.
    next_id: Arc<AtomicU64>,
    items: Mutex<HashMap<u64, Arc<E>>>,
}

impl<E> Default for Registry<E> {
    fn default() -> Self {
        Registry::with_ids(Arc::default())
    }
}

/// Removes its entry from the registry when dropped.
#[derive(Debug)]
pub struct Registered<E: Entry> {
    registry: Arc<Registry<E>>,
    pub entry: Arc<E>,
}

impl<E: Entry> Drop for Registered<E> {
    fn drop(&mut self) {
        if let Ok(mut items) = self.registry.items.lock() {
            items.remove(&self.entry.id());
        }
    }
}

impl<E> Registry<E> {
    /// An empty registry drawing its ids from `ids` (which other registries may share).
    pub fn with_ids(ids: Arc<AtomicU64>) -> Self {
        Registry { next_id: ids, items: Mutex::new(HashMap::new()) }
    }
}

impl<E: Entry> Registry<E> {
    /// A fresh id for the next entry (ids start at 1).
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn insert(self: &Arc<Self>, entry: E) -> Registered<E> {
        let entry = Arc::new(entry);
        if let Ok(mut items) = self.items.lock() {
            items.insert(entry.id(), entry.clone());
        }
        Registered { registry: self.clone(), entry }
    }

    /// Every entry, oldest first.
    pub fn list(&self) -> Vec<Arc<E>> {
        let mut v: Vec<_> = self.items.lock().map(|c| c.values().cloned().collect()).unwrap_or_default();
        v.sort_by_key(|e| e.id());
        v
    }
}
