//! The registry of server connections: what SHOW SERVERS lists. Sessions update an entry once per
//! transaction (linked client, state), never per message.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use super::registry::{Entry, Registry, now_us};

/// A server connection's state, after PgBouncer's server lists (`used` is derived at SHOW time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    Idle,
    Active,
    /// Running server_check_query or server_reset_query (or a parameter sync).
    Tested,
}

#[derive(Debug)]
pub struct ServerEntry {
    pub id: u64,
    /// The client-visible database and the server-side user.
    pub db: String,
    pub user: String,
    pub addr: super::PeerAddr,
    pub local: Option<SocketAddr>,
    /// The negotiated TLS, empty in plain text.
    pub tls: String,
    pub connect_time: u64,
    pub remote_pid: u32,
    state: AtomicU8,
    since: AtomicU64,
    /// Id of the linked client, 0 when none.
    link: AtomicU64,
    prepared: AtomicU64,
    /// RECONNECT, or a RELOAD that changed its server: closed as soon as it is released.
    close_needed: AtomicBool,
}

pub type ServerRegistry = Registry<ServerEntry>;
pub type RegisteredServer = super::registry::Registered<ServerEntry>;

impl Entry for ServerEntry {
    fn id(&self) -> u64 {
        self.id
    }
}

impl ServerEntry {
    /// Linked to client `link` (Active), or back in the pool (`link` 0: Idle) with `prepared` statements.
    pub fn set_link(&self, link: u64, prepared: usize) {
        let state = if link == 0 { ServerState::Idle } else { ServerState::Active };
        self.state.store(state as u8, Ordering::Relaxed);
        self.since.store(now_us(), Ordering::Relaxed);
        self.link.store(link, Ordering::Relaxed);
        self.prepared.store(prepared as u64, Ordering::Relaxed);
    }

    pub fn state(&self) -> ServerState {
        match self.state.load(Ordering::Relaxed) {
            1 => ServerState::Active,
            2 => ServerState::Tested,
            _ => ServerState::Idle,
        }
    }

    /// Shows a change of state that keeps the linked client (entering or leaving Tested).
    pub fn set_state(&self, state: ServerState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    pub fn since(&self) -> u64 {
        self.since.load(Ordering::Relaxed)
    }

    pub fn link(&self) -> u64 {
        self.link.load(Ordering::Relaxed)
    }

    pub fn prepared(&self) -> u64 {
        self.prepared.load(Ordering::Relaxed)
    }

    /// Marks the connection as one the pool closes once it is released (SHOW SERVERS `close_needed`).
    pub fn mark_close_needed(&self) {
        self.close_needed.store(true, Ordering::Relaxed);
    }

    pub fn close_needed(&self) -> bool {
        self.close_needed.load(Ordering::Relaxed)
    }
}

impl Registry<ServerEntry> {
    pub fn register(
        self: &std::sync::Arc<Self>,
        db: &str,
        user: &str,
        addr: super::PeerAddr,
        local: Option<SocketAddr>,
        tls: Option<String>,
        remote_pid: u32,
    ) -> RegisteredServer {
        let now = now_us();
        self.insert(ServerEntry {
            id: self.next_id(),
            db: db.to_string(),
            user: user.to_string(),
            addr,
            local,
            tls: tls.unwrap_or_default(),
            connect_time: now,
            remote_pid,
            state: AtomicU8::new(ServerState::Idle as u8),
            since: AtomicU64::new(now),
            link: AtomicU64::new(0),
            prepared: AtomicU64::new(0),
            close_needed: AtomicBool::new(false),
        })
    }
}

/// Per (database, server user): how many servers are `used` (idle longer than `check_delay_us`, so due a
/// check) and how many are `tested` (running an internal query), for SHOW POOLS and the metrics.
pub fn used_and_tested(
    servers: &[std::sync::Arc<ServerEntry>],
    check_delay_us: u64,
) -> std::collections::HashMap<(String, String), (usize, usize)> {
    let now = now_us();
    let mut out: std::collections::HashMap<(String, String), (usize, usize)> = std::collections::HashMap::new();
    for s in servers {
        let e = out.entry((s.db.clone(), s.user.clone())).or_default();
        match s.state() {
            ServerState::Tested => e.1 += 1,
            ServerState::Idle if now.saturating_sub(s.since()) > check_delay_us => e.0 += 1,
            _ => {}
        }
    }
    out
}
