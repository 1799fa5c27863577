//! Cancel routing. Each client gets its own BackendKeyData from pgsluice; this registry maps it to the
//! server the client is currently using (address and the server's real key), and only that server.
//! With peering (`peer_id`, `[peers]`) a key names the process that handed it out (see `key`), and a
//! request for another process's key is forwarded there (see `peers`).

mod key;
mod peers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use key::CancelKey;
pub use peers::PeerRow;
use peers::PeerTable;

use crate::config::Config;
use crate::server::{CancelInFlight, CancelsInFlight, ServerConn};
use crate::stats::PeerAddr;
use crate::transport::Stream;

/// Where a client's cancel request must go right now.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    pub addr: PeerAddr,
    pub pid: u32,
    pub key: u32,
    /// The server's count of cancels in flight (see `CancelsInFlight`).
    pub in_flight: Arc<CancelsInFlight>,
}

impl CancelTarget {
    pub fn of(conn: &ServerConn) -> CancelTarget {
        CancelTarget { addr: conn.addr().clone(), pid: conn.pid(), key: conn.key(), in_flight: conn.cancels().clone() }
    }
}

/// One client's cancel key and its current server, if any.
#[derive(Debug)]
pub struct CancelSlot {
    pub pid: u32,
    pub key: u32,
    target: Mutex<Option<CancelTarget>>,
}

impl CancelSlot {
    pub fn set(&self, target: Option<CancelTarget>) {
        if let Ok(mut t) = self.target.lock() {
            *t = target;
        }
    }
    /// The current server, counted as having a cancel in flight. Under the same lock as `set`, so a
    /// session that detaches (`set(None)`) and then finds no cancel in flight knows none can come.
    fn begin_cancel(&self) -> Option<(CancelTarget, CancelInFlight)> {
        let t = self.target.lock().ok()?;
        let target = t.clone()?;
        let in_flight = target.in_flight.start();
        Some((target, in_flight))
    }
}

/// All connected clients' keys, by the whole key (pid and secret). Locked at login, logout and cancel.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    slots: Mutex<HashMap<CancelKey, Arc<CancelSlot>>>,
    /// This process's peer_id (0: no peering). Fixed for the process's life: keys handed out name it.
    peer_id: u16,
    peers: PeerTable,
}

/// Removes the client's key when the client goes away.
pub struct Registration {
    registry: Arc<CancelRegistry>,
    pub slot: Arc<CancelSlot>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut slots) = self.registry.slots.lock() {
            slots.remove(&CancelKey { pid: self.slot.pid, secret: self.slot.key });
        }
    }
}

impl CancelRegistry {
    /// The registry of a process with `config`'s peer_id and `[peers]`.
    pub fn new(config: &Config) -> CancelRegistry {
        let registry = CancelRegistry { peer_id: config.general.peer_id, ..Default::default() };
        registry.peers.update(config);
        registry
    }

    /// RELOAD: the new `[peers]` (peer_id itself needs a restart).
    pub fn update_peers(&self, config: &Config) {
        self.peers.update(config);
    }

    /// What SHOW PEERS and SHOW PEER_POOLS show: every `[peers]` entry, by id.
    pub fn peer_rows(&self) -> Vec<PeerRow> {
        self.peers.rows(self.peer_id)
    }

    /// Allocates a fresh, unused key for a client.
    pub fn register(self: &Arc<Self>) -> Registration {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = loop {
            let key = CancelKey::issue(self.peer_id);
            if key.pid != 0 && !slots.contains_key(&key) {
                let slot = Arc::new(CancelSlot { pid: key.pid, key: key.secret, target: Mutex::new(None) });
                slots.insert(key, slot.clone());
                break slot;
            }
        };
        Registration { registry: self.clone(), slot }
    }

    /// Acts on a CancelRequest: a key another peer handed out is forwarded to it; one of ours goes to
    /// the client's current server. Unknown keys and idle clients cancel nothing.
    pub async fn cancel(&self, pid: u32, key: u32, wait: Duration) -> bool {
        let mut key = CancelKey { pid, secret: key };
        if self.peer_id > 0 {
            let to = key.peer_id();
            if to != self.peer_id {
                return self.peers.forward(to, key, wait).await;
            }
            // Forwards used up TTL bits; the key was handed out with them full.
            key = key.as_issued();
        }
        // A whole-key lookup: a forged key matches no slot, whatever part of it is right.
        let slot = self.slots.lock().ok().and_then(|s| s.get(&key).cloned());
        let Some(slot) = slot else {
            tracing::debug!(pid, "cancel request matching no client ignored");
            return false;
        };
        let Some((target, in_flight)) = slot.begin_cancel() else {
            tracing::debug!(pid, "cancel request for an idle client ignored");
            return false;
        };
        send_cancel(target, in_flight, wait).await
    }
}

/// Sends a CancelRequest for `target` to its server and waits until the server closes the connection,
/// which it does once it has acted on the request (as libpq's PQcancel waits), bounded by `wait`
/// (`cancel_wait_timeout`; zero = no bound). The client's own cancel connection is closed after this, so a
/// client that waits for that EOF knows its cancel has been delivered.
/// `in_flight` keeps the server out of the pool until then.
pub async fn send_cancel(target: CancelTarget, in_flight: CancelInFlight, wait: Duration) -> bool {
    let send = async {
        let mut s = match &target.addr {
            PeerAddr::Tcp(a) => Stream::Tcp(TcpStream::connect(a).await?),
            PeerAddr::Unix { path, .. } => Stream::Unix(tokio::net::UnixStream::connect(path).await?),
        };
        s.write_all(&CancelKey { pid: target.pid, secret: target.key }.request()).await?;
        let mut sink = [0u8; 64];
        while s.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    };
    let result = if wait.is_zero() { Ok(send.await) } else { tokio::time::timeout(wait, send).await };
    drop(in_flight);
    match result {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(pid = target.pid, error = %e, "could not forward cancel request");
            false
        }
        Err(_) => {
            tracing::warn!(pid = target.pid, "cancel request timed out (cancel_wait_timeout)");
            false
        }
    }
}
