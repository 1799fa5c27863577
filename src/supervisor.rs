//! Wires a config into a running proxy: shared state, the listener, and signals.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::shared::Shared;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("could not listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
}

/// Binds the configured address and serves until `shutdown` turns true.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> Result<(), RunError> {
    let addr = format!("{}:{}", config.general.listen_addr, config.general.listen_port);
    let listener = TcpListener::bind(&addr).await.map_err(|source| RunError::Listen { addr: addr.clone(), source })?;
    tracing::info!(%addr, "listening");
    serve(config, listener, shutdown).await
}

/// Serves on an already-bound listener (tests bind 127.0.0.1:0).
pub async fn serve(config: Config, listener: TcpListener, shutdown: watch::Receiver<bool>) -> Result<(), RunError> {
    let auth = config.load_auth_file()?;
    let metrics_addr = config.general.metrics_addr.clone();
    let shared = Shared::new(config, auth);
    tokio::spawn(roll_stats_periods(Arc::downgrade(&shared)));
    tokio::spawn(reload_on_sighup(Arc::downgrade(&shared)));
    if let Some(addr) = metrics_addr {
        let metrics =
            TcpListener::bind(&addr).await.map_err(|source| RunError::Listen { addr: addr.clone(), source })?;
        tracing::info!(%addr, "metrics endpoint listening");
        tokio::spawn(crate::metrics::serve(metrics, shared.clone(), shutdown.clone()));
    }
    crate::listener::accept_loop(listener, shared.clone(), shutdown).await;
    for (_, entry) in shared.all_pools() {
        entry.pool.shut();
    }
    Ok(())
}

/// Closes a stats period on every pool each `stats_period`, so SHOW STATS averages describe it.
async fn roll_stats_periods(shared: std::sync::Weak<Shared>) {
    loop {
        let period = match shared.upgrade() {
            Some(s) => s.config().general.stats_period.max(std::time::Duration::from_secs(1)),
            None => return,
        };
        tokio::time::sleep(period).await;
        let Some(s) = shared.upgrade() else { return };
        for (_, entry) in s.all_pools() {
            entry.stats.roll_period();
        }
    }
}

/// RELOAD and SIGHUP: re-reads the config and auth files; a bad file is rejected with its error and
/// the running config stays.
pub fn reload(shared: &Shared) -> Result<(), String> {
    match shared.reload() {
        Ok(report) => {
            for key in &report.needs_restart {
                tracing::warn!(setting = key, "changed setting needs a restart to take effect");
            }
            tracing::info!(rebuilt_pools = report.rebuilt, "configuration reloaded");
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "reload failed, keeping the running configuration");
            Err(e.to_string())
        }
    }
}

async fn reload_on_sighup(shared: std::sync::Weak<Shared>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
    while hup.recv().await.is_some() {
        let Some(s) = shared.upgrade() else { return };
        tracing::info!("SIGHUP received, reloading");
        let _ = reload(&s);
    }
}

/// Resolves once SIGINT or SIGTERM arrives.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
    }
}

/// Starts the proxy with an owned shutdown channel (for the binary).
pub async fn run_until_signal(config: Config) -> Result<(), RunError> {
    let (tx, rx) = watch::channel(false);
    let server = tokio::spawn(run(config, rx));
    tokio::select! {
        r = server => return r.unwrap_or(Ok(())),
        _ = wait_for_signal() => {}
    }
    let _ = tx.send(true);
    Ok(())
}

#[allow(dead_code)]
fn _shared_is_send_sync(s: Arc<Shared>) -> impl Send + Sync {
    s
}
