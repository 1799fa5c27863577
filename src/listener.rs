//! The accept loops, TCP and Unix socket: one task per client, with the client count kept for
//! `max_client_conn`; and the Unix socket's file, made, permissioned and removed.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

use crate::shared::Shared;
use crate::stats::PeerAddr;
use crate::transport::Stream;

/// Decrements the client count when a client task ends.
struct ClientSlot(Arc<Shared>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One accepted connection: a pooled client's whole session, or a console user's once logged in.
async fn serve_connection(shared: Arc<Shared>, sock: Stream, peer: PeerAddr, pending: crate::shared::PendingLogin) {
    if let Some(console) = crate::client::serve(shared.clone(), sock, peer, pending).await {
        crate::admin::serve(&shared, console).await;
    }
}

fn spawn_client(shared: &Arc<Shared>, sock: Stream, peer: PeerAddr) {
    shared.clients.fetch_add(1, Ordering::Relaxed);
    let slot = ClientSlot(shared.clone());
    let pending = shared.pending_logins.admit(shared.config().general.max_pending_logins);
    let shared = shared.clone();
    let worker = crate::workers::next().filter(|_| !sock.is_tls()); // accepted sockets are not TLS yet
    let Some(worker) = worker else {
        tokio::spawn(async move {
            serve_connection(shared, sock, peer, pending).await;
            drop(slot);
        });
        return;
    };
    // Served on a worker, its socket registered there (see `workers`): deregistered here first, so no
    // descriptor is needed to move it (pgsluice may be out of them).
    let moving = match sock {
        Stream::Tcp(s) => s.into_std().map(Moving::Tcp),
        Stream::Unix(s) => s.into_std().map(Moving::Unix),
        Stream::Tls(_) => return, // not handed over: served above
    };
    let moving = match moving {
        Ok(m) => m,
        Err(e) => return tracing::warn!(%peer, error = %e, "could not hand a client to its worker"),
    };
    worker.spawn(async move {
        let sock = match moving {
            Moving::Tcp(s) => tokio::net::TcpStream::from_std(s).map(Stream::Tcp),
            Moving::Unix(s) => tokio::net::UnixStream::from_std(s).map(Stream::Unix),
        };
        match sock {
            Ok(sock) => serve_connection(shared, sock, peer, pending).await,
            Err(e) => tracing::warn!(%peer, error = %e, "could not register a client on its worker"),
        }
        drop(slot);
    });
}

/// An accepted socket on its way to its worker.
enum Moving {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

/// Accepts whatever the kernel already queued, then closes the listener: those clients are served
/// rather than reset (with SO_REUSEPORT, new ones now go to the other process).
fn take_backlog(listener: TcpListener, shared: &Arc<Shared>) {
    let Ok(std_listener) = listener.into_std() else { return };
    let _ = std_listener.set_nonblocking(true);
    while let Ok((sock, peer)) = std_listener.accept() {
        let _ = sock.set_nonblocking(true);
        if let Ok(sock) = tokio::net::TcpStream::from_std(sock) {
            spawn_client(shared, Stream::Tcp(sock), PeerAddr::Tcp(peer));
        }
    }
}

/// Accepts until `shutdown` turns true.
pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((sock, peer)) => spawn_client(&shared, Stream::Tcp(sock), PeerAddr::Tcp(peer)),
                Err(e) => backoff(e).await,
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

/// EMFILE and friends: back off instead of spinning.
async fn backoff(e: std::io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
}

/// The Unix socket pgsluice listens on; its file is removed when this is dropped, unless another
/// pgsluice has since put its own there (a rolling restart).
pub struct UnixSocket {
    listener: UnixListener,
    path: PathBuf,
    inode: u64,
}

impl UnixSocket {
    /// Binds `<dir>/.s.PGSQL.<port>` with `mode` and, if given, `group`. A file left by a process that
    /// is gone is replaced; one a live process listens on is an error, unless `take_over` (so_reuseport:
    /// a rolling restart), when the new socket is renamed over it and new clients come here.
    pub fn bind(dir: &str, port: u16, mode: u32, group: &str, take_over: bool) -> std::io::Result<UnixSocket> {
        use std::os::unix::fs::PermissionsExt;
        let path = Path::new(dir).join(format!(".s.PGSQL.{port}"));
        let in_use = std::os::unix::net::UnixStream::connect(&path).is_ok();
        if in_use && !take_over {
            let why = format!("{} is in use by another process", path.display());
            return Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, why));
        }
        // Made aside, then renamed into place: a client never finds the name missing or half made.
        let staging = Path::new(dir).join(format!(".s.PGSQL.{port}.{}", std::process::id()));
        let _ = std::fs::remove_file(&staging);
        let listener = UnixListener::bind(&staging)?;
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(mode))?;
        if !group.is_empty() {
            let gid = crate::transport::system::group_id(group).ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, format!("unix_socket_group: no group {group:?}"))
            })?;
            std::os::unix::fs::chown(&staging, None, Some(gid))?;
        }
        std::fs::rename(&staging, &path)?;
        let inode = std::fs::metadata(&path)?.ino();
        Ok(UnixSocket { listener, path, inode })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts until `shutdown` turns true.
    pub async fn accept_loop(self, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>, port: u16) {
        let path: Arc<Path> = self.path.clone().into();
        loop {
            tokio::select! {
                r = self.listener.accept() => match r {
                    Ok((sock, _)) => spawn_client(&shared, Stream::Unix(sock), PeerAddr::Unix { path: path.clone(), port }),
                    Err(e) => backoff(e).await,
                },
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
