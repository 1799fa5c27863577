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

    /// Records `name`; returns the least recently used name to close when over `max`.
    pub fn insert(&mut self, name: Bytes, max: usize) -> Option<Bytes> {
        self.tick += 1;
        self.names.insert(name, self.tick);
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
        assert_eq!(c.insert(Bytes::from_static(b"a"), 2), None);
        assert_eq!(c.insert(Bytes::from_static(b"b"), 2), None);
        assert!(c.contains(b"a"));
        assert_eq!(c.insert(Bytes::from_static(b"c"), 2), Some(Bytes::from_static(b"b")));
        assert!(c.contains(b"a") && c.contains(b"c") && !c.contains(b"b"));
    }
}
