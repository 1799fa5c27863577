//! One connection to PostgreSQL: its life as a state (`ConnState`), what pgsluice knows of its protocol
//! state (`ServerModel`), the parameters and session settings it has, and the small API the session
//! drives it through.

use bytes::BytesMut;

use super::replies::ReplyQueue;
use super::statements::StatementCache;
use super::{CancelsInFlight, Tracker};
use crate::pool::Poolable;
use crate::stats::PeerAddr;
use crate::stats::servers::{RegisteredServer, ServerState};
use crate::transport::{Duplex, Stream};

/// Where a server connection is in its life: the states SHOW SERVERS reports, and the one it is
/// never reported in (closing: it leaves the pool when it is given back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// In the pool, or being handed out.
    Idle,
    /// Linked to the client with this SHOW CLIENTS id.
    Active { client: u64 },
    /// Running a statement of pgsluice's own (check, reset, parameter or session-state sync).
    Tested,
    /// pgsluice can no longer vouch for its state: closed, never pooled again.
    Closing(CloseReason),
}

/// Why a server connection is closed rather than pooled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Its socket failed or closed, or it sent what the protocol does not allow.
    Lost,
    /// A client or server message was partly passed on when it would change hands.
    MidMessage,
    /// Its client left, was killed or timed out while it was busy.
    ClientGone,
    /// A statement of pgsluice's own failed or went unanswered.
    InternalFailed,
    /// It did not take what it was sent within server_send_timeout.
    SendTimeout,
    /// A transaction was opened in statement mode.
    StatementMode,
}

/// What pgsluice knows of a server's protocol state: its transaction state and the replies it owes
/// (`tracker`), the replies being rewritten for prepared statements (`replies`), and the statements
/// it holds under pgsluice's names (`statements`). Owned by a `ServerConn`, or alone where the protocol
/// is driven without a socket (tests, fuzz targets).
#[derive(Debug, Default)]
pub struct ServerModel {
    pub tracker: Tracker,
    pub replies: ReplyQueue,
    pub statements: StatementCache,
}

impl ServerModel {
    /// Nothing owed, no transaction open, no rewriting pending.
    pub fn is_clean(&self) -> bool {
        self.tracker.is_clean() && self.replies.is_empty()
    }
}

/// One connection to PostgreSQL.
pub struct ServerConn {
    pub(super) stream: Stream,
    pub(super) addr: PeerAddr,
    pub(super) pid: u32,
    pub(super) key: u32,
    /// Reported parameters (ParameterStatus) as this server currently has them.
    pub(super) params: Vec<(String, String)>,
    pub(super) model: ServerModel,
    /// Bytes read from the server not yet forwarded (kept with the server across clients).
    pub(super) rbuf: BytesMut,
    state: ConnState,
    pub(super) check_query: Option<String>,
    /// How long pgsluice waits for the answer to a statement of its own (server_connect_timeout).
    pub(super) internal_timeout: std::time::Duration,
    /// Names PostgreSQL reported at login (GUC_REPORT parameters).
    pub(super) reported: Vec<String>,
    /// Fingerprint of the client parameters this server was last made to match; 0 = unknown.
    synced_fingerprint: u64,
    /// What pgsluice knows this server has for its last client besides the tracked parameters.
    pub(super) session: SessionRecord,
    /// NotificationResponses that arrived while pgsluice ran a statement of its own (whole messages, at
    /// most 1 MiB): the session passes them on to a client the server belongs to, or drops them.
    pub(super) notifications: BytesMut,
    /// This connection's SHOW SERVERS entry (removed when the connection is dropped).
    pub(super) registered: Option<RegisteredServer>,
    /// Cancel requests forwarded to this server and not yet acted on.
    pub(super) cancels: std::sync::Arc<CancelsInFlight>,
    /// The worker its socket is registered with (see `workers`).
    home: usize,
}

/// Session state pgsluice knows a server has for its last client (see `client::session_state`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Session settings (`pg_settings` source `session`, role, session authorization); sorted by name.
    pub settings: Vec<(String, String)>,
    /// Statements made with SQL PREPARE under pgsluice's names.
    pub sql_statements: Vec<String>,
}

impl ServerConn {
    /// A fresh connection's state, before its login.
    pub(crate) fn new(stream: Stream, addr: PeerAddr) -> ServerConn {
        ServerConn {
            stream,
            addr,
            pid: 0,
            key: 0,
            params: Vec::new(),
            model: ServerModel::default(),
            rbuf: BytesMut::with_capacity(8192),
            state: ConnState::Idle,
            check_query: None,
            internal_timeout: std::time::Duration::from_secs(15),
            reported: Vec::new(),
            synced_fingerprint: 0,
            session: SessionRecord::default(),
            notifications: Default::default(),
            registered: None,
            cancels: Default::default(),
            home: crate::workers::current(),
        }
    }

    pub fn state(&self) -> ConnState {
        self.state
    }

    /// From now on the connection is closed when given back, never pooled; the first reason stays.
    pub fn close_after(&mut self, reason: CloseReason) {
        if !self.is_closing() {
            self.state = ConnState::Closing(reason);
        }
    }

    pub fn is_closing(&self) -> bool {
        matches!(self.state, ConnState::Closing(_))
    }

    /// Linked to a client (SHOW SERVERS: active, with the client's id as link).
    pub fn link(&mut self, client: u64) {
        self.show(ConnState::Active { client }, Some(client));
    }

    /// No longer linked to a client: about to go back to the pool (SHOW SERVERS: idle).
    pub fn unlink(&mut self) {
        self.show(ConnState::Idle, Some(0));
    }

    /// Moves to `state` (a closing connection stays closing) and shows it in SHOW SERVERS; `link` also
    /// changes the linked client there (0 = none).
    fn show(&mut self, state: ConnState, link: Option<u64>) {
        if !self.is_closing() {
            self.state = state;
        }
        let Some(r) = &self.registered else { return };
        let shown = match state {
            ConnState::Idle => ServerState::Idle,
            ConnState::Active { .. } => ServerState::Active,
            ConnState::Tested => ServerState::Tested,
            ConnState::Closing(_) => return,
        };
        match link {
            Some(link) => r.entry.set_link(link, self.model.statements.len()),
            None => r.entry.set_state(shown),
        }
    }

    /// Enters the Tested state for a statement of pgsluice's own; returns the state to restore.
    pub(super) fn begin_test(&mut self) -> ConnState {
        let before = self.state;
        self.show(ConnState::Tested, None);
        before
    }

    /// Back to the state before `begin_test` (unless the connection is closing now).
    pub(super) fn end_test(&mut self, before: ConnState) {
        if self.state == ConnState::Tested {
            self.show(before, None);
        }
    }

    /// Lent to a client on another worker: the socket's registration moves to this one, so its
    /// readiness wakes this thread alone. A connection that cannot move stays where it is (correct,
    /// only slower).
    pub fn come_home(&mut self) {
        let here = crate::workers::current();
        if here != crate::workers::NONE && here != self.home && self.stream.rehome().is_ok() {
            self.home = here;
        }
    }

    /// The server's protocol state (see `ServerModel`).
    pub fn model(&self) -> &ServerModel {
        &self.model
    }

    pub fn model_mut(&mut self) -> &mut ServerModel {
        &mut self.model
    }

    pub fn tracker(&self) -> &Tracker {
        &self.model.tracker
    }

    /// Prepared statements this server holds under pgsluice's names.
    pub fn prepared_count(&self) -> usize {
        self.model.statements.len()
    }

    /// The server bytes read and not yet passed on, with the protocol state a pass over them changes.
    pub fn received(&mut self) -> (&[u8], &mut ServerModel) {
        (&self.rbuf, &mut self.model)
    }

    /// The first `n` received bytes were passed on.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.rbuf.len());
        bytes::Buf::advance(&mut self.rbuf, n);
    }

    /// Reads from the server and writes `to_server` to it, whichever it is ready for first.
    pub fn duplex<'a>(&'a mut self, to_server: &'a mut BytesMut) -> impl Future<Output = Duplex> + 'a {
        crate::transport::buffers::ensure_room(&mut self.rbuf);
        self.stream.duplex(&mut self.rbuf, to_server)
    }

    /// Writes what the socket takes now, without waiting (`WouldBlock` when it takes nothing).
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.stream.try_write(bytes)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn key(&self) -> u32 {
        self.key
    }

    pub fn addr(&self) -> &PeerAddr {
        &self.addr
    }

    pub fn cancels(&self) -> &std::sync::Arc<CancelsInFlight> {
        &self.cancels
    }

    /// Nothing is being sent or owed to the client right now (no query running silently).
    pub fn is_quiet(&self) -> bool {
        self.model.tracker.outstanding() == 0 || !self.rbuf.is_empty()
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// True when PostgreSQL reported this parameter at login (it will report its changes too).
    pub fn reported(&self, name: &str) -> bool {
        self.reported.iter().any(|r| r.eq_ignore_ascii_case(name))
    }

    /// True when pgsluice SET this unreported parameter on this server for some client.
    pub fn set_by_proxy(&self, name: &str) -> bool {
        !self.reported(name) && self.param(name).is_some()
    }

    /// Records a value pgsluice SET for a parameter PostgreSQL does not report.
    pub fn record_set(&mut self, name: &str, value: &str) {
        self.set_param(name.as_bytes(), value.as_bytes());
    }

    /// Forgets an unreported parameter after it was RESET.
    pub fn forget_param(&mut self, name: &str) {
        self.synced_fingerprint = 0;
        if !self.reported(name) {
            self.params.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        }
    }

    /// A parameter's new value, from ParameterStatus.
    pub fn set_param(&mut self, name: &[u8], value: &[u8]) {
        self.synced_fingerprint = 0;
        let (name, value) = (String::from_utf8_lossy(name), String::from_utf8_lossy(value));
        match self.params.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(&name)) {
            Some((_, v)) => *v = value.into_owned(),
            None => self.params.push((name.into_owned(), value.into_owned())),
        }
    }

    /// Fingerprint of the client parameters this server was last made to match; 0 = unknown.
    pub fn synced_fingerprint(&self) -> u64 {
        self.synced_fingerprint
    }

    pub fn set_synced_fingerprint(&mut self, fingerprint: u64) {
        self.synced_fingerprint = fingerprint;
    }

    /// Session state this server has for its last client.
    pub fn session(&self) -> &SessionRecord {
        &self.session
    }

    pub fn set_session(&mut self, session: SessionRecord) {
        self.session = session;
    }

    /// The notifications that arrived during pgsluice's own statements, taken.
    pub fn take_notifications(&mut self) -> BytesMut {
        std::mem::take(&mut self.notifications)
    }

    /// Best-effort Terminate without blocking, so PostgreSQL logs a clean disconnect.
    fn say_goodbye(&self) {
        self.stream.write_goodbye(b"X\0\0\0\x04");
    }
}

impl Drop for ServerConn {
    fn drop(&mut self) {
        if let ConnState::Closing(reason) = self.state {
            tracing::debug!(pid = self.pid, ?reason, "closing server connection");
        }
        self.say_goodbye();
    }
}

impl Poolable for ServerConn {
    fn is_reusable(&self) -> bool {
        !self.is_closing() && self.model.is_clean() && self.rbuf.is_empty()
    }

    fn is_alive(&mut self) -> bool {
        // EOF, or bytes on an idle server (e.g. FATAL on shutdown): not reusable.
        matches!(self.stream.poll_idle_peer(), Ok(false))
    }

    async fn check(&mut self) -> bool {
        let sql = self.check_query.clone();
        match sql {
            Some(sql) => self.run_internal(&sql).await.is_ok(),
            None => true,
        }
    }
}
