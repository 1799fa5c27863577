//! The accept loop: one task per client, with the client count kept for `max_client_conn`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::shared::Shared;

/// Decrements the client count when a client task ends.
struct ClientSlot(Arc<Shared>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

fn spawn_client(shared: &Arc<Shared>, sock: tokio::net::TcpStream, peer: std::net::SocketAddr) {
    shared.clients.fetch_add(1, Ordering::Relaxed);
    let slot = ClientSlot(shared.clone());
    let pending = shared.pending_logins.admit(shared.config().general.max_pending_logins);
    let shared = shared.clone();
    tokio::spawn(async move {
        crate::client::serve(shared, sock, peer, pending).await;
        drop(slot);
    });
}

/// Accepts whatever the kernel already queued, then closes the listener: those clients are served
/// rather than reset (with SO_REUSEPORT, new ones now go to the other process).
fn take_backlog(listener: TcpListener, shared: &Arc<Shared>) {
    let Ok(std_listener) = listener.into_std() else { return };
    let _ = std_listener.set_nonblocking(true);
    while let Ok((sock, peer)) = std_listener.accept() {
        let _ = sock.set_nonblocking(true);
        if let Ok(sock) = tokio::net::TcpStream::from_std(sock) {
            spawn_client(shared, sock, peer);
        }
    }
}

/// Accepts until `shutdown` turns true.
pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((sock, peer)) => spawn_client(&shared, sock, peer),
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    take_backlog(listener, &shared);
                    return;
                }
            }
        }
    }
}
