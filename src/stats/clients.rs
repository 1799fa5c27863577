//! The registry of connected clients: what SHOW CLIENTS lists and what KILL and KILL_CLIENT reach.
//! Sessions update their entry's state once per transaction (an atomic store), never per message.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;

use super::registry::{Entry, Registry, now_us};

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

/// One connected client.
#[derive(Debug)]
pub struct ClientEntry {
    pub id: u64,
    pub db: String,
    pub user: String,
    pub addr: super::PeerAddr,
    pub local: Option<SocketAddr>,
    /// The negotiated TLS ("TLSv1.3/TLS_AES_256_GCM_SHA384/..."), empty in plain text.
    pub tls: String,
    pub application_name: String,
    /// Microseconds since the epoch.
    pub connect_time: u64,
    state: AtomicU8,
    /// When the current state began (microseconds since the epoch): the last request, or the wait start.
    since: AtomicU64,
    /// Backend pid of the linked server, 0 when none.
    server_pid: AtomicU64,
    /// When the client last sent something, and when its server last said ReadyForQuery (µs since epoch).
    last_request: AtomicU64,
    last_ready: AtomicU64,
    /// The transaction status of that ReadyForQuery (b'I', b'T' or b'E').
    tx_status: AtomicU8,
    /// Cancelled by KILL, KILL_CLIENT or shutdown: the session ends with 57P01.
    pub kill: CancellationToken,
    /// Why the client holds its server between transactions (session state), if it does.
    pin: std::sync::Mutex<Option<&'static str>>,
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

    /// The client sent requests (once per socket read).
    pub fn requested(&self) {
        self.last_request.store(now_us(), Ordering::Relaxed);
    }

    /// The server answered everything up to a ReadyForQuery with this status.
    pub fn ready(&self, tx_status: u8) {
        self.last_ready.store(now_us(), Ordering::Relaxed);
        self.tx_status.store(tx_status, Ordering::Relaxed);
    }

    /// (µs in the current transaction, µs idle inside it) at `now`.
    pub fn transaction_times(&self, now: u64) -> (u64, u64) {
        if self.state() != ClientState::Active {
            return (0, 0);
        }
        let in_xact = now.saturating_sub(self.since());
        let ready = self.last_ready.load(Ordering::Relaxed);
        let idle_in_xact =
            self.tx_status.load(Ordering::Relaxed) != b'I' && ready >= self.last_request.load(Ordering::Relaxed);
        (in_xact, if idle_in_xact { now.saturating_sub(ready) } else { 0 })
    }

    /// Set when the client is pinned to its server (with the reason) or unpinned; rare.
    pub fn set_pin(&self, reason: Option<&'static str>) {
        if let Ok(mut p) = self.pin.lock() {
            *p = reason;
        }
    }

    pub fn pin(&self) -> Option<&'static str> {
        self.pin.lock().ok().and_then(|p| *p)
    }

    pub fn server_pid(&self) -> u32 {
        self.server_pid.load(Ordering::Relaxed) as u32
    }
}

/// All connected clients of pools (not console users).
pub type ClientRegistry = Registry<ClientEntry>;
pub type Registered = super::registry::Registered<ClientEntry>;

impl Entry for ClientEntry {
    fn id(&self) -> u64 {
        self.id
    }
}

impl Registry<ClientEntry> {
    pub fn register(
        self: &Arc<Self>,
        db: &str,
        user: &str,
        addr: super::PeerAddr,
        local: Option<SocketAddr>,
        tls: Option<String>,
        application_name: &str,
    ) -> Registered {
        let now = now_us();
        self.insert(ClientEntry {
            id: self.next_id(),
            db: db.to_string(),
            user: user.to_string(),
            addr,
            local,
            tls: tls.unwrap_or_default(),
            application_name: application_name.to_string(),
            connect_time: now,
            state: AtomicU8::new(ClientState::Idle as u8),
            since: AtomicU64::new(now),
            server_pid: AtomicU64::new(0),
            last_request: AtomicU64::new(now),
            last_ready: AtomicU64::new(now),
            tx_status: AtomicU8::new(b'I'),
            kill: CancellationToken::new(),
            pin: std::sync::Mutex::new(None),
        })
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
        let addr = crate::stats::PeerAddr::Tcp("127.0.0.1:5000".parse().unwrap_or_else(|_| unreachable!()));
        let a = r.register("app", "u", addr.clone(), None, None, "");
        let b = r.register("other", "u", addr, None, None, "");
        assert_eq!(r.list().len(), 2);
        assert_eq!(r.kill(|e| e.db == "app"), 1);
        assert!(a.entry.kill.is_cancelled() && !b.entry.kill.is_cancelled());
        drop(a);
        assert_eq!(r.list().iter().map(|e| e.id).collect::<Vec<_>>(), vec![b.entry.id]);
        b.entry.set_state(ClientState::Waiting, 0);
        assert_eq!(b.entry.state(), ClientState::Waiting);
    }
}
