//! Wires a config into a running proxy: shared state, the listeners, background tasks, and the process's
//! life: signals (SIGHUP reload, SIGINT/SIGTERM drain, USR1/USR2 pause/resume) and the console's
//! SHUTDOWN, through one `RunState`. Each step is told to systemd (`sd_notify`, when run as a
//! `Type=notify` unit): READY once serving, RELOADING then READY around a SIGHUP, STOPPING at a drain.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

use crate::config::Config;
use crate::run_state::{RunState, ShutdownMode};
use crate::shared::Shared;
use crate::stats::clients::ClientState;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("could not listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    /// The auth, TLS or HBA files.
    #[error("{0}")]
    Files(String),
}

/// Binds the configured address and serves until shut down.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> Result<(), RunError> {
    let addr = format!("{}:{}", config.general.listen_addr, config.general.listen_port);
    let listener =
        bind(&addr, config.general.so_reuseport).map_err(|source| RunError::Listen { addr: addr.clone(), source })?;
    tracing::info!(%addr, so_reuseport = config.general.so_reuseport, "listening");
    serve(config, listener, shutdown).await
}

/// The Unix socket in unix_socket_dir, if one is configured.
fn bind_unix(g: &crate::config::General) -> Result<Option<crate::listener::UnixSocket>, RunError> {
    if g.unix_socket_dir.is_empty() {
        return Ok(None);
    }
    let mode = g.unix_socket_mode_bits().unwrap_or(0o777);
    crate::listener::UnixSocket::bind(&g.unix_socket_dir, g.listen_port, mode, &g.unix_socket_group, g.so_reuseport)
        .map(Some)
        .map_err(|source| RunError::Listen {
            addr: format!("{}/.s.PGSQL.{}", g.unix_socket_dir, g.listen_port),
            source,
        })
}

/// A listening socket, with SO_REUSEPORT when asked (rolling restarts).
fn bind(addr: &str, reuse_port: bool) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr: std::net::SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(addr)?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address"))?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// Serves on an already-bound listener until `shutdown` turns true, a signal or SHUTDOWN ends it.
pub async fn serve(config: Config, listener: TcpListener, mut shutdown: watch::Receiver<bool>) -> Result<(), RunError> {
    let files = crate::shared::Files::load(&config).map_err(RunError::Files)?;
    let unix = bind_unix(&config.general)?;
    let metrics_addr = config.general.metrics_addr.clone();
    let reuse_port = config.general.so_reuseport;
    let shared = Shared::new(config, files);
    tokio::spawn(roll_stats_periods(Arc::downgrade(&shared)));
    tokio::spawn(reap_auto_pools(Arc::downgrade(&shared)));
    let (stop_accepting, accepting) = watch::channel(false);
    // The TCP listener alone can stop first (SIGINT, SHUTDOWN WAIT_FOR_SERVERS); the Unix socket stays
    // open for the console until the end.
    let (stop_tcp, tcp_accepting) = watch::channel(false);
    // The metrics endpoint outlives the drain (it reports not-ready meanwhile).
    let (stop_metrics, metrics_stopped) = watch::channel(false);
    if let Some(addr) = metrics_addr {
        let metrics =
            TcpListener::bind(&addr).await.map_err(|source| RunError::Listen { addr: addr.clone(), source })?;
        tracing::info!(%addr, "metrics endpoint listening");
        tokio::spawn(crate::metrics::serve(metrics, shared.clone(), metrics_stopped));
    }
    let unix_accept = unix.map(|u| {
        tracing::info!(path = %u.path().display(), "listening on a Unix socket");
        tokio::spawn(u.accept_loop(shared.clone(), accepting.clone(), shared.config().general.listen_port))
    });
    let accept = tokio::spawn(crate::listener::accept_loop(listener, shared.clone(), tcp_accepting));
    let stops = Stops { all: stop_accepting, tcp: stop_tcp };
    let mut signals = Signals::new();
    let mut state = shared.run_state.subscribe();
    // Every listener is bound and its accept loop spawned: systemd (Type=notify) may send clients now.
    crate::sd_notify::ready(&serving_status(&shared));
    // Running: serve until something asks to stop.
    let mode = loop {
        tokio::select! {
            _ = Signals::recv(&mut signals.hup) => reload_on_sighup(&shared),
            _ = Signals::recv(&mut signals.usr1) => {
                tracing::info!("SIGUSR1: PAUSE");
                shared.pause(None);
            }
            _ = Signals::recv(&mut signals.usr2) => {
                tracing::info!("SIGUSR2: RESUME");
                shared.resume(None);
            }
            _ = Signals::recv(&mut signals.term) => break ShutdownMode::WaitForClients,
            _ = Signals::recv(&mut signals.int) => break ShutdownMode::WaitForServers,
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    break ShutdownMode::Immediate;
                }
            }
            _ = state.changed() => {
                if let RunState::Draining(mode) = *state.borrow() {
                    break mode;
                }
            }
        }
    };
    drain(&shared, mode, reuse_port, &stops, &mut signals).await;
    let _ = stops.tcp.send(true);
    let _ = stops.all.send(true);
    let _ = stop_metrics.send(true);
    let _ = accept.await;
    if let Some(u) = unix_accept {
        let _ = u.await; // the socket file goes with it
    }
    for (_, entry) in shared.all_pools() {
        entry.pool.shut();
    }
    Ok(())
}

/// SIGHUP while serving: systemd is told a reload runs, and when it is over whether it failed.
fn reload_on_sighup(shared: &Shared) {
    tracing::info!("SIGHUP received, reloading");
    crate::sd_notify::reloading();
    match shared.reload() {
        Ok(_) => crate::sd_notify::ready(&serving_status(shared)),
        Err(e) => crate::sd_notify::ready(&format!("reload failed, running the previous configuration: {e}")),
    }
}

/// The `STATUS=` systemd shows while serving.
fn serving_status(shared: &Shared) -> String {
    let g = &shared.config().general;
    format!("serving on {}:{}", g.listen_addr, g.listen_port)
}

/// What stops the accept loops: the TCP listener, and every listener (the Unix socket too).
struct Stops {
    all: watch::Sender<bool>,
    tcp: watch::Sender<bool>,
}

/// Winds down in `mode`; a second SIGINT or SIGTERM turns any wait into an immediate exit.
async fn drain(shared: &Arc<Shared>, mode: ShutdownMode, reuse_port: bool, stops: &Stops, signals: &mut Signals) {
    tracing::info!(?mode, "shutting down");
    crate::sd_notify::stopping(match mode {
        ShutdownMode::Immediate => "shutting down",
        ShutdownMode::WaitForServers => "shutting down: letting open transactions finish",
        ShutdownMode::WaitForClients => "shutting down: waiting for clients to leave",
    });
    shared.run_state.send_replace(RunState::Draining(mode));
    if reuse_port {
        // Another pgsluice shares the port: let it take every new connection.
        let _ = stops.all.send(true);
        let _ = stops.tcp.send(true);
    }
    if mode == ShutdownMode::WaitForServers {
        // As PgBouncer's safe shutdown: no new connections over TCP (the Unix socket stays open for the
        // console), no new transactions.
        let _ = stops.tcp.send(true);
        shared.pause(None);
    }
    let done = || match mode {
        ShutdownMode::Immediate => true,
        ShutdownMode::WaitForServers => shared.all_pools().iter().all(|(_, e)| e.pool.counts().open == 0),
        // The console's own users do not hold the process up.
        ShutdownMode::WaitForClients => {
            shared.client_registry.list().iter().all(|c| crate::config::console::is_admin_db(&c.db))
        }
    };
    loop {
        if mode == ShutdownMode::WaitForServers {
            close_waiting_clients(shared);
        }
        if done() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = Signals::recv(&mut signals.term) => break,
            _ = Signals::recv(&mut signals.int) => break,
            _ = Signals::recv(&mut signals.hup) => {
                tracing::info!("SIGHUP received, reloading");
                let _ = shared.reload();
            }
            // As PgBouncer: a shutdown's pause is not undone.
            _ = Signals::recv(&mut signals.usr2) => tracing::info!("got SIGUSR2 while shutting down, ignoring"),
        }
    }
    // Whoever is still connected is told why the connection ends.
    let n = shared.client_registry.kill(|_| true);
    if n > 0 {
        tracing::info!(clients = n, "closing remaining clients");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !shared.client_registry.list().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    tracing::info!("shutdown complete");
}

/// A client waiting for a server would wait for the exit: as PgBouncer's safe shutdown, it is closed now
/// (also one that finished its transaction and starts another), and the log says so in PgBouncer's words.
fn close_waiting_clients(shared: &Shared) {
    let waiting = |c: &crate::stats::clients::ClientEntry| c.state() == ClientState::Waiting && !c.kill.is_cancelled();
    for c in shared.client_registry.list().iter().filter(|c| waiting(c)) {
        tracing::info!(db = %c.db, user = %c.user, peer = %c.addr, "closing because: server shutting down");
    }
    shared.client_registry.kill(waiting);
}

/// The signals pgsluice reacts to (each `None` if it could not be installed).
struct Signals {
    hup: Option<Signal>,
    term: Option<Signal>,
    int: Option<Signal>,
    usr1: Option<Signal>,
    usr2: Option<Signal>,
}

impl Signals {
    fn new() -> Signals {
        let s = |k| signal(k).ok();
        Signals {
            hup: s(SignalKind::hangup()),
            term: s(SignalKind::terminate()),
            int: s(SignalKind::interrupt()),
            usr1: s(SignalKind::user_defined1()),
            usr2: s(SignalKind::user_defined2()),
        }
    }

    async fn recv(sig: &mut Option<Signal>) {
        match sig {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
}

/// Closes a stats period on every pool each `stats_period`, so SHOW STATS averages describe it.
async fn roll_stats_periods(shared: Weak<Shared>) {
    loop {
        let period = match shared.upgrade() {
            Some(s) => s.config().general.stats_period.max(Duration::from_secs(1)),
            None => return,
        };
        tokio::time::sleep(period).await;
        let Some(s) = shared.upgrade() else { return };
        s.stats.roll_period();
    }
}

/// Drops auto-created pools nobody used for autodb_idle_timeout, looking a few times per timeout.
async fn reap_auto_pools(shared: Weak<Shared>) {
    let mut seen = std::collections::HashMap::new();
    loop {
        let every = match shared.upgrade() {
            Some(s) => {
                (s.config().general.autodb_idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(30))
            }
            None => return,
        };
        tokio::time::sleep(every).await;
        let Some(s) = shared.upgrade() else { return };
        s.reap_auto_pools(&mut seen);
    }
}

/// Starts the proxy and runs it until it shuts down (for the binary).
pub async fn run_until_signal(config: Config) -> Result<(), RunError> {
    let (_tx, rx) = watch::channel(false);
    run(config, rx).await
}

#[allow(dead_code)]
fn _shared_is_send_sync(s: Arc<Shared>) -> impl Send + Sync {
    s
}
