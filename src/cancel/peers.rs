//! Forwarding a CancelRequest to the peer its key names (`[peers]`): a new connection to the peer,
//! the 16-byte request with one TTL step used up, then a wait for the peer to close the connection
//! (it does once it has acted), so the client's own wait for EOF still means "delivered". At most
//! `pool_size` forwards per peer are connected at once; the rest wait their turn. The whole forward,
//! the wait included, is bounded by cancel_wait_timeout, so a peer that is down or silent ties up
//! nothing for longer, and what waits is bounded by the connections that carry cancel requests
//! (max_pending_logins).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use super::key::CancelKey;
use crate::config::{Config, PeerConfig};
use crate::transport::Stream;

/// The bound on a forward when cancel_wait_timeout is 0 (no bound on the wait for a server): a peer's
/// forward always has one, PgBouncer's default cancel_wait_timeout.
const UNBOUNDED_WAIT_CAP: Duration = Duration::from_secs(10);

/// One configured peer and its forwards in progress.
#[derive(Debug)]
struct Peer {
    config: PeerConfig,
    pool_size: usize,
    permits: Semaphore,
    /// Forwards waiting for a permit (PgBouncer's cl_waiting_cancel_req).
    waiting: AtomicUsize,
    /// Forwards connecting to the peer (sv_login).
    connecting: AtomicUsize,
    /// Forwards sent and waiting for the peer to close (cl_active_cancel_req, sv_active_cancel).
    active: AtomicUsize,
}

/// Counts one forward in a stage while it lasts.
struct InStage<'a>(&'a AtomicUsize);

impl<'a> InStage<'a> {
    fn enter(n: &'a AtomicUsize) -> InStage<'a> {
        n.fetch_add(1, Ordering::Relaxed);
        InStage(n)
    }
}

impl Drop for InStage<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What SHOW PEERS and SHOW PEER_POOLS show of one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRow {
    pub peer_id: u16,
    pub host: String,
    pub port: u16,
    pub pool_size: usize,
    /// Whether cancels are forwarded to it (not this process's own entry).
    pub forwarded_to: bool,
    pub waiting: usize,
    pub connecting: usize,
    pub active: usize,
}

/// The running `[peers]`, replaced by RELOAD. A peer whose entry is unchanged keeps its forwards in
/// progress and their count; a changed one starts afresh (forwards already under way finish on the old).
#[derive(Debug, Default)]
pub struct PeerTable {
    peers: RwLock<Arc<BTreeMap<u16, Arc<Peer>>>>,
}

impl PeerTable {
    pub fn update(&self, config: &Config) {
        let default_pool_size = config.general.default_pool_size;
        let old = self.current();
        let mut next = BTreeMap::new();
        for (id, c) in &config.peers {
            let pool_size = c.effective_pool_size(default_pool_size);
            let peer = match old.get(id) {
                Some(p) if p.config == *c && p.pool_size == pool_size => p.clone(),
                _ => Arc::new(Peer {
                    config: c.clone(),
                    pool_size,
                    permits: Semaphore::new(pool_size),
                    waiting: AtomicUsize::new(0),
                    connecting: AtomicUsize::new(0),
                    active: AtomicUsize::new(0),
                }),
            };
            next.insert(*id, peer);
        }
        if let Ok(mut p) = self.peers.write() {
            *p = Arc::new(next);
        }
    }

    fn current(&self) -> Arc<BTreeMap<u16, Arc<Peer>>> {
        self.peers.read().map(|p| p.clone()).unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Every configured peer, by id; `own` is this process's peer_id (listed, never forwarded to).
    pub fn rows(&self, own: u16) -> Vec<PeerRow> {
        let load = |n: &AtomicUsize| n.load(Ordering::Relaxed);
        self.current()
            .iter()
            .map(|(id, p)| PeerRow {
                peer_id: *id,
                host: p.config.host.clone(),
                port: p.config.port,
                pool_size: p.pool_size,
                forwarded_to: *id != own,
                waiting: load(&p.waiting),
                connecting: load(&p.connecting),
                active: load(&p.active),
            })
            .collect()
    }

    /// Forwards `key` to peer `to` (never this process: the caller handles its own keys). True when
    /// the peer took the request and closed the connection.
    pub async fn forward(&self, to: u16, key: CancelKey, wait: Duration) -> bool {
        let Some(next) = key.forwarded() else {
            tracing::debug!(peer_id = to, "cancel request not forwarded: its TTL is used up (a forwarding loop?)");
            return false;
        };
        let Some(peer) = self.current().get(&to).cloned() else {
            tracing::debug!(peer_id = to, "cancel request for an unknown peer dropped");
            return false;
        };
        tracing::debug!(peer_id = to, ttl = next.ttl(), "forwarding cancel request to peer");
        let bound = if wait.is_zero() { UNBOUNDED_WAIT_CAP } else { wait };
        match tokio::time::timeout(bound, peer.send(next)).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::info!(peer_id = to, error = %e, "could not forward cancel request to peer");
                false
            }
            Err(_) => {
                tracing::info!(peer_id = to, "forwarding cancel request to peer timed out (cancel_wait_timeout)");
                false
            }
        }
    }
}

impl Peer {
    async fn send(&self, key: CancelKey) -> std::io::Result<()> {
        let waiting = InStage::enter(&self.waiting);
        let _permit = self.permits.acquire().await.map_err(|_| std::io::ErrorKind::ConnectionAborted)?;
        drop(waiting);
        let connecting = InStage::enter(&self.connecting);
        let mut s = self.connect().await?;
        drop(connecting);
        let _active = InStage::enter(&self.active);
        s.write_all(&key.request()).await?;
        // Whatever the peer sends is read into a fixed buffer and dropped, until it closes.
        let mut sink = [0u8; 64];
        while s.read(&mut sink).await? > 0 {}
        Ok(())
    }

    async fn connect(&self) -> std::io::Result<Stream> {
        let PeerConfig { host, port, .. } = &self.config;
        let host = host.trim();
        if host.starts_with('/') {
            let path = std::path::Path::new(host).join(format!(".s.PGSQL.{port}"));
            return Ok(Stream::Unix(tokio::net::UnixStream::connect(path).await?));
        }
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        Ok(Stream::Tcp(tokio::net::TcpStream::connect((host, *port)).await?))
    }
}
