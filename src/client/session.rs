//! The life of a logged-in client: `Idle` (no server) until it sends something, then `Active` with a
//! leased server until the server is provably clean again (transaction mode), the statement ends
//! (statement mode) or the client leaves (session mode). Bytes are forwarded in the chunks they were
//! read in; only message headers are looked at, and the bodies of ReadyForQuery and ParameterStatus.

use std::sync::Arc;
use std::time::Duration;

use crate::transport::Stream;
use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::ClientError;

mod buffers;
mod forward;
mod isolation;
mod release;
mod timers;
mod waiting;
use super::login::LoggedIn;
use super::prepared::{HeldLimits, Statements};
use super::session_state::SessionState;
use super::step::Edits;
use crate::cancel::{CancelSlot, CancelTarget};
use crate::config::{PoolMode, PoolSettings};
use crate::pool::{Lease, Poolable};
use crate::protocol::frame::{FrameScanner, MAX_READ_BODY};
use crate::protocol::messages;
use crate::protocol::tags::frontend;
use crate::server::{CloseReason, ServerConn, ServerConnector};
use crate::stats::Collected;
use crate::stats::clients::ClientState;
use crate::transport::Duplex;
use buffers::{MAX_TO_SERVER, ensure_room, shrink};
use release::{cancel_if_running, close_if_mid_message, release_when_settled, unlink};
use waiting::Acquired;

/// Client bytes buffered while no server is attached (waiting for one) before reading pauses.
const MAX_PENDING_CLIENT_BYTES: usize = 1 << 20;

type ServerLease = Lease<ServerConnector>;

/// Where a client is in its life. (`Active` is large; the state lives in place for the whole session,
/// so boxing it would only add an allocation per transaction.)
#[allow(clippy::large_enum_variant)]
enum State {
    /// No server attached.
    Idle { since: Instant },
    /// A server is leased to this client.
    Active(Active),
}

struct Active {
    lease: ServerLease,
    scanner: FrameScanner,
    /// When the transaction (or the statement outside one) began.
    tx_started: Instant,
    /// When the oldest unanswered request was sent; `None` when nothing is in flight.
    request_started: Option<Instant>,
    last_client_activity: Instant,
    cancel_sent: bool,
    /// idle_transaction_warn already logged for this transaction.
    leak_warned: bool,
}

/// What the loop does next.
enum Flow {
    Continue,
    /// The client is gone or said Terminate.
    Done,
}

pub struct Session {
    sock: Stream,
    cbuf: BytesMut,
    client_scanner: FrameScanner,
    /// Bytes of a client message being dropped as they arrive (one too big to hold that pgsluice
    /// refused or skipped): they never reach a server.
    discarding: usize,
    /// Client bytes for the server that its socket did not take at once: written by the session loop
    /// while it goes on reading the server, so a client pipelining more than the socket buffers hold
    /// cannot deadlock pgsluice and PostgreSQL writing to each other.
    to_server: BytesMut,
    /// When the server last took some of `to_server` (or it stopped being empty): server_send_timeout.
    to_server_progress: Instant,
    state: State,
    login: LoggedIn,
    settings: Arc<PoolSettings>,
    /// The pool's settings version `settings` was read at (RELOAD bumps it).
    settings_version: u64,
    cancel: Arc<CancelSlot>,
    cancel_wait: Duration,
    /// The client's prepared statement names (transaction and statement mode).
    stmts: Statements,
    /// The client's session settings and what pins it to its server (`session_state`).
    session_state: SessionState,
    /// Reused buffers for rewritten output: the edits of a pass, and the assembled write.
    edits: Edits,
    wbuf: BytesMut,
    /// Counted since the last flush to the pool's stats (at every server release).
    counted: Collected,
    /// The transaction's first statement text (capped), for the slow-transaction and leak logs.
    tx_query: Vec<u8>,
    /// Completes when the console kills this client. Made once: a fresh wait per loop would register
    /// and unregister with the token every time.
    killed: std::pin::Pin<Box<WaitForCancellationFutureOwned>>,
    /// The next client timeout, re-armed only when its deadline changes.
    timer: std::pin::Pin<Box<Sleep>>,
}

impl Session {
    pub fn new(sock: Stream, cbuf: BytesMut, login: LoggedIn, cancel: Arc<CancelSlot>, cancel_wait: Duration) -> Self {
        let settings_version = login.pool.settings_version();
        let settings = login.pool.settings();
        let rewrite = settings.pool_mode != PoolMode::Session;
        let max = if rewrite { settings.max_prepared_statements } else { 0 };
        let mut stmts = Statements::new(max, login.pool.plan_epoch.clone());
        let limits = HeldLimits {
            message: settings.max_held_message_size,
            statements: settings.max_client_prepared_statements,
            bytes: settings.max_client_prepared_bytes,
            total: settings.max_total_prepared_bytes,
        };
        stmts.set_limits(limits, login.held_prepared.clone());
        let session_state = SessionState::new(settings.session_state, settings.pool_mode);
        let kill = login.registered.entry.kill.clone();
        Session {
            sock,
            cbuf,
            client_scanner: FrameScanner::new(settings.max_packet_size),
            discarding: 0,
            to_server: BytesMut::new(),
            to_server_progress: Instant::now(),
            state: State::Idle { since: Instant::now() },
            login,
            settings,
            settings_version,
            cancel,
            cancel_wait,
            stmts,
            session_state,
            edits: Edits::default(),
            wbuf: BytesMut::new(),
            counted: Collected::default(),
            tx_query: Vec::new(),
            killed: Box::pin(kill.cancelled_owned()),
            timer: Box::pin(sleep_until(Instant::now() + NEVER)),
        }
    }

    /// Runs until the client leaves; a fatal error is sent to the client before returning it.
    pub async fn run(&mut self) -> Result<(), ClientError> {
        let stats_pool = self.login.pool.clone();
        stats_pool.stats.clients.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        stats_pool.stats.client_login_count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let result = loop {
            let step = match self.state {
                State::Idle { .. } => self.on_idle().await,
                State::Active(_) => self.on_active().await,
            };
            match step {
                Ok(Flow::Continue) => {}
                Ok(Flow::Done) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = &result
            && !matches!(e, ClientError::Io(_))
        {
            // Mid-way through a server message the client would read the error as the rest of it (a
            // corrupted row): then the connection is only closed.
            let mid_reply = matches!(&self.state, State::Active(a) if a.scanner.mid_message());
            if !matches!(e, ClientError::ClientSendTimeout) && !mid_reply {
                let mut out = BytesMut::new();
                let pg = e.to_pg();
                stats_pool.stats.count_error(pg.code.as_bytes());
                pg.encode(&mut out);
                // Bounded: a client that does not read must not keep its server.
                let limit = Some(self.settings.client_send_timeout).filter(|t| !t.is_zero());
                let _ = tokio::time::timeout(limit.unwrap_or(Duration::from_secs(5)), self.sock.send(&out)).await;
            }
        }
        self.finish().await;
        let pool = self.login.pool.clone(); // the current pool: RELOAD may have moved the client
        self.stmts.drain_counts(&mut self.counted.totals);
        pool.stats.flush(&self.counted);
        pool.stats.clients.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        drop(stats_pool);
        result
    }

    /// Session end: a clean server goes back (after the reset query in session mode); anything else is closed.
    async fn finish(&mut self) {
        let State::Active(active) = std::mem::replace(&mut self.state, State::Idle { since: Instant::now() }) else {
            return;
        };
        self.cancel.set(None);
        self.count_transaction(active.tx_started);
        let mut lease = active.lease;
        close_if_mid_message(&mut lease, self.client_mid_message(), &active.scanner);
        cancel_if_running(&mut lease, self.cancel_wait);
        unlink(&mut lease);
        let reset = self.settings.server_reset_query.trim().to_string();
        let pinned = self.session_state.pin();
        let isolating = pinned.is_some() || self.session_state.needs_check();
        if let Some(conn) = lease.conn()
            && conn.is_reusable()
        {
            let clean = if isolating {
                matches!(self.session_state.clean_after(conn, &self.login.params).await, Ok(true))
            } else {
                reset.is_empty() || conn.run_internal(&reset).await.is_ok()
            };
            if !clean {
                conn.close_after(CloseReason::InternalFailed);
            }
        }
        isolation::note_pin_change(&self.login, pinned, None);
        release_when_settled(lease, self.cancel_wait, &self.login.pool.stats);
    }

    /// The leased server, while the client is active.
    fn conn(&mut self) -> Option<&mut ServerConn> {
        match &mut self.state {
            State::Active(active) => active.lease.conn(),
            State::Idle { .. } => None,
        }
    }

    /// The client is halfway through a message: partly forwarded, or partly dropped.
    fn client_mid_message(&self) -> bool {
        self.client_scanner.mid_message() || self.discarding > 0 || !self.to_server.is_empty()
    }

    /// Reads into the client buffer; `Ok(false)` on EOF.
    async fn read_client(&mut self) -> Result<bool, ClientError> {
        Ok(self.sock.read_buf(&mut self.cbuf).await? > 0)
    }

    async fn on_idle(&mut self) -> Result<Flow, ClientError> {
        let State::Idle { since } = self.state else {
            return Ok(Flow::Continue);
        };
        // Wait for a first message, or all of one the scanner holds whole, before taking a server.
        // Enough of it to make progress: the size the scanner asked to hold, or the whole message up to the
        // size it reads whole (it forwards nothing of a wanted message before that, and a server taken for
        // nothing would go straight back, and round again, without the client ever being read).
        let held = self.client_scanner.held_len();
        let header = crate::protocol::frame::read_header(&self.cbuf).filter(|&(_, len)| {
            let need = if held > 0 { held } else { len.saturating_add(1).min(5 + MAX_READ_BODY) };
            self.cbuf.len() >= need
        });
        if let Some((tag, len)) = crate::protocol::frame::read_header(&self.cbuf)
            && (len < 4 || len > self.settings.max_packet_size)
        {
            return Err(ClientError::Protocol(crate::protocol::ProtocolError::BadLength { tag, len }));
        }
        let Some((tag, _)) = header else {
            let idle_timeout = self.settings.client_idle_timeout;
            if !idle_timeout.is_zero() {
                arm(&mut self.timer, since + idle_timeout);
            }
            // Nothing buffered: wait for the socket to be readable without holding a read buffer (TLS
            // may hold decrypted bytes the socket's readiness does not show, so it reads directly).
            // A readiness left over from the last read may be stale: the read then finds nothing
            // (which clears it) and the wait starts again, the buffer handed back.
            while self.cbuf.is_empty() && !self.sock.is_tls() {
                buffers::park(&mut self.cbuf);
                tokio::select! {
                    r = self.sock.readable() => r?,
                    _ = &mut self.timer, if !idle_timeout.is_zero() => return Err(ClientError::ClientIdleTimeout),
                    _ = &mut self.killed => return Err(ClientError::Killed),
                }
                buffers::unpark(&mut self.cbuf);
                ensure_room(&mut self.cbuf);
                match self.sock.read_now(&mut self.cbuf).await {
                    Some(Ok(0)) => return Ok(Flow::Done),
                    Some(Ok(_)) => return Ok(Flow::Continue),
                    None => {}
                    Some(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Some(Err(e)) => return Err(e.into()),
                }
            }
            ensure_room(&mut self.cbuf);
            let got = tokio::select! {
                r = self.sock.read_buf(&mut self.cbuf) => r? > 0,
                _ = &mut self.timer, if !idle_timeout.is_zero() => return Err(ClientError::ClientIdleTimeout),
                _ = &mut self.killed => return Err(ClientError::Killed),
            };
            return Ok(if got { Flow::Continue } else { Flow::Done });
        };
        if tag == frontend::TERMINATE {
            return Ok(Flow::Done);
        }
        if !messages::is_frontend_type(tag) {
            return Err(ClientError::Protocol(crate::protocol::ProtocolError::InvalidFrontendType(tag)));
        }
        match self.acquire().await? {
            Acquired::Lease(lease) => self.attach(lease).await?,
            Acquired::ClientGone => return Ok(Flow::Done),
            Acquired::Rejected => return Ok(Flow::Continue),
        }
        self.forward_client().await
    }

    /// Attaches a leased server: routes cancels to it and makes its parameters match the client's.
    async fn attach(&mut self, mut lease: ServerLease) -> Result<(), ClientError> {
        let Some(conn) = lease.conn() else {
            return Err(ClientError::ServerLost("empty lease".into()));
        };
        conn.come_home();
        if conn.synced_fingerprint() != self.login.params.fingerprint() {
            if let Some(sql) = self.login.params.sync_sql(conn)
                && let Err(e) = isolation::run_killable(conn, &sql, &mut self.killed).await
            {
                conn.close_after(CloseReason::InternalFailed);
                return Err(e);
            }
            self.login.params.after_sync(conn);
        }
        self.sync_session_settings(conn).await?;
        let client = &self.login.registered.entry;
        client.set_state(ClientState::Active, conn.pid());
        conn.link(client.id);
        self.cancel.set(Some(CancelTarget::of(conn)));
        self.stmts.on_new_server();
        let now = Instant::now();
        self.state = State::Active(Active {
            lease,
            scanner: FrameScanner::new(self.settings.max_packet_size),
            tx_started: now,
            request_started: None,
            last_client_activity: now,
            cancel_sent: false,
            leak_warned: false,
        });
        self.tx_query.clear();
        Ok(())
    }

    fn count_transaction(&mut self, started: Instant) {
        let took = started.elapsed();
        let slow = self.settings.log_slow_transaction;
        if !slow.is_zero() && took >= slow {
            let e = &self.login.registered.entry;
            tracing::warn!(
                pool = %format!("{}/{}", self.login.db, self.login.user),
                client = %e.addr,
                application_name = %e.application_name,
                duration_ms = took.as_millis() as u64,
                query = %self.query_fingerprint(),
                "slow transaction"
            );
        }
        self.counted.totals.xact_count += 1;
        self.counted.totals.xact_time += took.as_micros() as u64;
        self.counted.xact.observe(took);
    }

    /// The fingerprint of the transaction's first statement (literals stripped).
    fn query_fingerprint(&self) -> String {
        if self.tx_query.is_empty() {
            return "(not captured)".into();
        }
        crate::stats::fingerprint::fingerprint(&String::from_utf8_lossy(&self.tx_query), 300)
    }

    /// Gives the server back (or closes it when it is not clean) and becomes idle.
    fn release_now(&mut self) {
        if let State::Active(active) = std::mem::replace(&mut self.state, State::Idle { since: Instant::now() }) {
            self.cancel.set(None);
            self.count_transaction(active.tx_started);
            self.login.registered.entry.set_state(ClientState::Idle, 0);
            let mut lease = active.lease;
            close_if_mid_message(&mut lease, self.client_mid_message(), &active.scanner);
            unlink(&mut lease);
            release_when_settled(lease, self.cancel_wait, &self.login.pool.stats);
            self.stmts.drain_counts(&mut self.counted.totals);
            self.login.pool.stats.flush(&self.counted);
            self.counted = Collected::default();
        }
    }

    async fn on_active(&mut self) -> Result<Flow, ClientError> {
        let deadline = self.next_deadline();
        ensure_room(&mut self.cbuf);
        let State::Active(active) = &mut self.state else {
            return Ok(Flow::Continue);
        };
        let Some(conn) = active.lease.conn() else {
            return Err(ClientError::ServerLost("empty lease".into()));
        };
        if let Some((at, _)) = deadline {
            arm(&mut self.timer, at);
        }
        // A message held whole (see `Scan::HoldWhole`) may need more than the usual bound; while the
        // server has not taken what it was sent, the client is not read (backpressure).
        let read_limit = MAX_PENDING_CLIENT_BYTES.max(self.client_scanner.held_len());
        let client_readable = self.cbuf.len() < read_limit && self.to_server.len() < MAX_TO_SERVER;
        let server = conn.duplex(&mut self.to_server);
        tokio::select! {
            r = self.sock.read_buf(&mut self.cbuf), if client_readable => {
                if r? == 0 {
                    return Ok(Flow::Done);
                }
                self.forward_client().await
            }
            io = server => match io {
                Duplex::Read(Ok(0) | Err(_)) => {
                    conn.close_after(CloseReason::Lost);
                    Err(ClientError::ServerLost("server closed the connection unexpectedly".into()))
                }
                Duplex::Read(Ok(_)) => self.forward_server().await,
                Duplex::Wrote(Ok(0) | Err(_)) => {
                    conn.close_after(CloseReason::Lost);
                    Err(ClientError::ServerLost("could not send to the server".into()))
                }
                Duplex::Wrote(Ok(_)) if self.to_server.is_empty() => {
                    shrink(&mut self.to_server);
                    self.forward_client().await // what waited behind it, and maybe the release
                }
                Duplex::Wrote(Ok(_)) => {
                    self.to_server_progress = Instant::now();
                    Ok(Flow::Continue)
                }
            },
            _ = &mut self.killed => {
                conn.close_after(CloseReason::ClientGone); // killed mid-transaction: closed, not pooled
                Err(ClientError::Killed)
            }
            _ = &mut self.timer, if deadline.is_some() => {
                match deadline {
                    Some((_, timer)) => self.on_timer(timer).await,
                    None => Ok(Flow::Continue),
                }
            }
        }
    }

    /// Transaction/statement end: optional reset, then back to the pool.
    async fn release_server(&mut self) {
        // The session's state is read first: a pinned client keeps its server, and its state, unreset.
        if self.keep_for_session_state().await {
            return;
        }
        if self.settings.server_reset_query_always {
            let reset = self.settings.server_reset_query.trim().to_string();
            let kill = self.login.registered.entry.kill.clone();
            if let State::Active(active) = &mut self.state
                && let Some(conn) = active.lease.conn()
                && !reset.is_empty()
            {
                // Bounded by server_connect_timeout (run_internal) and by KILL, which then ends the session.
                let reset_ok = tokio::select! {
                    r = conn.run_internal(&reset) => r.is_ok(),
                    _ = kill.cancelled() => false,
                };
                if !reset_ok {
                    conn.close_after(CloseReason::InternalFailed);
                }
            }
        }
        self.release_now();
    }
}

/// A deadline past any real one (the timer of a session with no timeout configured).
const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// Points the session's timer at `at`, re-registering it only when the deadline moved.
fn arm(timer: &mut std::pin::Pin<Box<Sleep>>, at: Instant) {
    if timer.deadline() != at {
        timer.as_mut().reset(at);
    }
}

#[allow(dead_code)]
fn _assert_send(s: &mut Session) -> impl std::future::Future<Output = Result<(), ClientError>> + Send + '_ {
    s.run()
}

#[allow(dead_code)]
fn _is_conn(_: &ServerConn) {}
