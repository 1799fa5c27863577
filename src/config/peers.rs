//! The `[peers]` section (PgBouncer 1.19's peering): the other pgsluice or PgBouncer processes behind
//! the same load balancer, by `peer_id`, where a CancelRequest whose key names one of them is forwarded.
//! In pgsluice.toml a table per peer (`[peers.2]` with host, port, pool_size); in a pgbouncer.ini a
//! line per peer (`2 = host=... port=... pool_size=...`). The entry of this process's own `peer_id` may
//! be listed (so every process can share one `[peers]` section) and is not forwarded to.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Config, ConfigError};

/// The largest `peer_id` (PgBouncer's): the id takes 14 bits of the cancel key.
pub const MAX_PEER_ID: u16 = 16383;

/// One `[peers]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Host name or IP address, or a directory (starting with `/`) holding the peer's Unix socket
    /// `.s.PGSQL.<port>`. Default "127.0.0.1".
    #[serde(default = "super::values::default_host")]
    pub host: String,
    /// The peer's listen_port. Default 6432 (PgBouncer's).
    #[serde(default = "default_peer_port")]
    pub port: u16,
    /// Most cancel requests forwarded to this peer at once; unset = default_pool_size (PgBouncer's).
    pub pool_size: Option<usize>,
}

fn default_peer_port() -> u16 {
    6432
}

impl PeerConfig {
    /// The pool_size in effect: its own, or default_pool_size.
    pub fn effective_pool_size(&self, default_pool_size: usize) -> usize {
        self.pool_size.unwrap_or(default_pool_size).max(1)
    }
}

/// The `[peers]` table as written (keys are text in TOML) made into ids: each key a whole number
/// 1..=MAX_PEER_ID, and no id twice (`2` and `02` are the same peer).
pub(super) fn by_id(
    path: &std::path::Path,
    written: BTreeMap<String, PeerConfig>,
) -> Result<BTreeMap<u16, PeerConfig>, ConfigError> {
    let invalid =
        |key: &str, reason: String| ConfigError::Invalid { path: path.into(), key: format!("peers.{key}"), reason };
    let mut peers = BTreeMap::new();
    for (key, peer) in written {
        let id = key
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|id| (1..=MAX_PEER_ID).contains(id))
            .ok_or_else(|| invalid(&key, format!("a peer_id is a whole number 1..{MAX_PEER_ID}")))?;
        if peers.insert(id, peer).is_some() {
            return Err(invalid(&key, format!("peer {id} is listed twice")));
        }
    }
    Ok(peers)
}

impl Config {
    /// `peer_id` in range, and each peer's host, port and pool_size.
    pub(super) fn check_peers(&self) -> Result<(), ConfigError> {
        if self.general.peer_id > MAX_PEER_ID {
            return Err(self.invalid("pgsluice.peer_id", format!("must be 0 (no peering) to {MAX_PEER_ID}")));
        }
        for (id, peer) in &self.peers {
            let host = peer.host.trim();
            if host.is_empty() || host.contains(',') || host.starts_with('@') {
                let why = "one host name, IP address or Unix socket directory (the abstract namespace, @name, is not supported)";
                return Err(self.invalid(format!("peers.{id}.host"), why));
            }
            if peer.port == 0 {
                return Err(self.invalid(format!("peers.{id}.port"), "must be 1..65535"));
            }
            if peer.pool_size == Some(0) {
                return Err(self.invalid(format!("peers.{id}.pool_size"), "must be at least 1"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(&format!("[pgsluice]\nauth_type = \"trust\"\n{text}"), Path::new("p.toml"))
    }

    #[test]
    fn peers_are_read_by_id_with_pgbouncers_defaults() {
        let c = load(
            "peer_id = 2\n[peers.1]\nhost = \"10.0.0.1\"\npool_size = 3\n[peers.2]\nhost = \"/run/ps\"\nport = 7000\n",
        )
        .unwrap();
        assert_eq!(c.general.peer_id, 2);
        assert_eq!(c.peers.len(), 2);
        assert_eq!((c.peers[&1].host.as_str(), c.peers[&1].port, c.peers[&1].pool_size), ("10.0.0.1", 6432, Some(3)));
        assert_eq!(c.peers[&2].effective_pool_size(20), 20);
        let c = load("[peers]\n3 = { host = \"h\" }\n").unwrap();
        assert_eq!(c.peers[&3].host, "h");
    }

    #[test]
    fn bad_peers_are_refused_naming_the_key() {
        for (text, key, reason) in [
            ("peer_id = 16384\n", "pgsluice.peer_id", "16383"),
            ("[peers.0]\nhost = \"h\"\n", "peers.0", "1..16383"),
            ("[peers.16384]\nhost = \"h\"\n", "peers.16384", "1..16383"),
            ("[peers.x]\nhost = \"h\"\n", "peers.x", "whole number"),
            ("[peers.2]\nhost = \"h\"\n[peers.02]\nhost = \"h\"\n", "peers.2", "listed twice"),
            ("[peers.2]\nhost = \"\"\n", "peers.2.host", "one host"),
            ("[peers.2]\nhost = \"a,b\"\n", "peers.2.host", "one host"),
            ("[peers.2]\nport = 0\n", "peers.2.port", "1..65535"),
            ("[peers.2]\npool_size = 0\n", "peers.2.pool_size", "at least 1"),
            ("[peers.2]\nhots = \"h\"\n", "peers.2.hots", "unknown key"),
        ] {
            let e = load(text).map(|_| ()).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")) && e.contains(reason), "{text:?}: {e}");
        }
    }
}
