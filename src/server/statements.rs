//! The prepared statements a server connection holds under pgsluice's names, bounded by
//! `max_prepared_statements` with least-recently-used eviction.

use std::collections::HashMap;

use bytes::Bytes;

#[derive(Debug, Default)]
pub struct StatementCache {
    /// Server-side name -> last use tick.
    names: HashMap<Bytes, u64>,
    tick: u64,
}

impl StatementCache {
    pub fn contains(&mut self, name: &[u8]) -> bool {
        self.tick += 1;
        let tick = self.tick;
        match self.names.get_mut(name) {
            Some(t) => {
                *t = tick;
                true
            }
            None => false,
        }
    }

    /// Records `name` as held by the server (and most recently used). The cache may now be over its
    /// bound: `pop_over` names what to close.
    pub fn insert(&mut self, name: Bytes) {
        self.tick += 1;
        self.names.insert(name, self.tick);
    }

    /// The least recently used name, removed, while more than `max` are held.
    pub fn pop_over(&mut self, max: usize) -> Option<Bytes> {
        if self.names.len() <= max {
            return None;
        }
        let oldest = self.names.iter().min_by_key(|(_, t)| **t).map(|(n, _)| n.clone())?;
        self.names.remove(&oldest);
        Some(oldest)
    }

    pub fn remove(&mut self, name: &[u8]) {
        self.names.remove(name);
    }

    pub fn clear(&mut self) {
        self.names.clear();
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used() {
        let mut c = StatementCache::default();
        c.insert(Bytes::from_static(b"a"));
        c.insert(Bytes::from_static(b"b"));
        assert_eq!(c.pop_over(2), None);
        assert!(c.contains(b"a"));
        c.insert(Bytes::from_static(b"c"));
        assert_eq!(c.pop_over(2), Some(Bytes::from_static(b"b")));
        assert_eq!(c.pop_over(2), None);
        assert!(c.contains(b"a") && c.contains(b"c") && !c.contains(b"b"));
    }
}
