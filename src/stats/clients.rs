//! The registry of connected clients: what SHOW CLIENTS lists and what KILL and KILL_CLIENT reach.
//! Sessions update their entry's state once per transaction (an atomic store), never per message.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

/// A client's state, after PgBouncer's client lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Logged in, no server (or linked to one between requests in session mode).
    Idle,
    /// Linked to a server.
    Active,
    /// Waiting for a server.
    Waiting,
}

impl ClientState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Idle => "idle",
            ClientState::Active => "active",
            ClientState::Waiting => "waiting",
        }
    }
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// One connected client.
#[derive(Debug)]
pub struct ClientEntry {
    pub id: u64,
    pub db: String,
    pub user: String,
    pub addr: SocketAddr,
    pub local: Option<SocketAddr>,
    pub application_name: String,
    /// Microseconds since the epoch.
    pub connect_time: u64,
    state: AtomicU8,
    /// When the current state began (microseconds since the epoch): the last request, or the wait start.
    since: AtomicU64,
    /// Backend pid of the linked server, 0 when none.
    server_pid: AtomicU64,
    /// Cancelled by KILL, KILL_CLIENT or shutdown: the session ends with 57P01.
    pub kill: CancellationToken,
}

impl ClientEntry {
    pub fn set_state(&self, state: ClientState, server_pid: u32) {
        self.state.store(state as u8, Ordering::Relaxed);
        self.since.store(now_us(), Ordering::Relaxed);
        self.server_pid.store(u64::from(server_pid), Ordering::Relaxed);
    }

    pub fn state(&self) -> ClientState {
        match self.state.load(Ordering::Relaxed) {
            1 => ClientState::Active,
            2 => ClientState::Waiting,
            _ => ClientState::Idle,
        }
    }

    /// When the current state began, microseconds since the epoch.
    pub fn since(&self) -> u64 {
        self.since.load(Ordering::Relaxed)
    }

    pub fn server_pid(&self) -> u32 {
        self.server_pid.load(Ordering::Relaxed) as u32
    }
}

/// All connected clients of pools (not console users).
#[derive(Debug, Default)]
pub struct ClientRegistry {
    next_id: AtomicU64,
    clients: Mutex<HashMap<u64, Arc<ClientEntry>>>,
}

/// Removes the client from the registry when dropped.
pub struct Registered {
    registry: Arc<ClientRegistry>,
    pub entry: Arc<ClientEntry>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut c) = self.registry.clients.lock() {
            c.remove(&self.entry.id);
        }
    }
}

impl ClientRegistry {
    pub fn register(
        self: &Arc<Self>,
        db: &str,
        user: &str,
        addr: SocketAddr,
        local: Option<SocketAddr>,
        application_name: &str,
    ) -> Registered {
        let now = now_us();
        let entry = Arc::new(ClientEntry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed) + 1,
            db: db.to_string(),
            user: user.to_string(),
            addr,
            local,
            application_name: application_name.to_string(),
            connect_time: now,
            state: AtomicU8::new(ClientState::Idle as u8),
            since: AtomicU64::new(now),
            server_pid: AtomicU64::new(0),
            kill: CancellationToken::new(),
        });
        if let Ok(mut c) = self.clients.lock() {
            c.insert(entry.id, entry.clone());
        }
        Registered { registry: self.clone(), entry }
    }

    /// Every client, oldest first.
    pub fn list(&self) -> Vec<Arc<ClientEntry>> {
        let mut v: Vec<_> = self.clients.lock().map(|c| c.values().cloned().collect()).unwrap_or_default();
        v.sort_by_key(|e| e.id);
        v
    }

    /// Ends the sessions of every client matching `filter`; returns how many.
    pub fn kill(&self, filter: impl Fn(&ClientEntry) -> bool) -> usize {
        let victims: Vec<_> = self.list().into_iter().filter(|e| filter(e)).collect();
        for v in &victims {
            v.kill.cancel();
        }
        victims.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_clients_are_listed_until_dropped_and_can_be_killed() {
        let r = Arc::new(ClientRegistry::default());
        let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap_or_else(|_| unreachable!());
        let a = r.register("app", "u", addr, None, "");
        let b = r.register("other", "u", addr, None, "");
        assert_eq!(r.list().len(), 2);
        assert_eq!(r.kill(|e| e.db == "app"), 1);
        assert!(a.entry.kill.is_cancelled() && !b.entry.kill.is_cancelled());
        drop(a);
        assert_eq!(r.list().iter().map(|e| e.id).collect::<Vec<_>>(), vec![b.entry.id]);
        b.entry.set_state(ClientState::Waiting, 0);
        assert_eq!(b.entry.state(), ClientState::Waiting);
    }
}
