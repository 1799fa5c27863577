//! A fault-injecting TCP proxy (TESTPLAN "Fault injection on one machine", layer 1): listens on a free
//! port, forwards every connection to a target, and misbehaves on command. A mode applies at once to the
//! connections already open and to new ones; it is set for both directions (`set`) or only for what
//! flows from the target to the peer that connected (`set_from_target`). Byte budgets (`ResetAfter`,
//! `CloseAfter`) count what a connection forwards in that direction after the mode was set.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    /// Forwards each chunk read this long after it arrived (latency: reading goes on meanwhile).
    Delay(Duration),
    /// Forwards every byte in a write of its own (TCP_NODELAY on).
    OneByte,
    /// Reads and discards everything; the sockets stay open.
    Blackhole,
    /// Neither reads nor writes (the peers' buffers fill, their writes block); the sockets stay open.
    Freeze,
    /// Resets the connection (SO_LINGER 0, then close); new connections are reset as they arrive.
    Reset,
    /// Forwards this many bytes, then resets the connection.
    ResetAfter(usize),
    /// Forwards this many bytes, then closes the connection (FIN both ways).
    CloseAfter(usize),
}

#[derive(Debug, Clone, Copy)]
struct Modes {
    to_target: Mode,
    from_target: Mode,
    /// Bumped on every change: byte budgets restart.
    epoch: u64,
}

pub struct FaultProxy {
    port: u16,
    modes: watch::Sender<Modes>,
    accepted: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl FaultProxy {
    /// Listens on a free 127.0.0.1 port and forwards to 127.0.0.1:`target`.
    pub async fn start(target: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the fault proxy");
        let port = listener.local_addr().unwrap().port();
        let (modes, rx) = watch::channel(Modes { to_target: Mode::Pass, from_target: Mode::Pass, epoch: 0 });
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, target, rx, accepted.clone(), stop.clone()));
        FaultProxy { port, modes, accepted, stop }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Sets the mode of both directions.
    pub fn set(&self, mode: Mode) {
        self.modes.send_modify(|m| {
            m.to_target = mode;
            m.from_target = mode;
            m.epoch += 1;
        });
    }

    /// Sets the mode of what flows from the target only; the other direction keeps its mode.
    pub fn set_from_target(&self, mode: Mode) {
        self.modes.send_modify(|m| {
            m.from_target = mode;
            m.epoch += 1;
        });
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: u16,
    modes: watch::Receiver<Modes>,
    accepted: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    loop {
        let sock = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok((sock, _)) => sock,
                Err(_) => continue,
            },
        };
        accepted.fetch_add(1, Ordering::SeqCst);
        let (modes, stop) = (modes.clone(), stop.child_token());
        tokio::spawn(async move {
            if modes.borrow().to_target == Mode::Reset {
                return reset(&sock);
            }
            let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)).await else { return reset(&sock) };
            serve(sock, upstream, modes, stop).await;
        });
    }
}

/// Abortive close: the peer gets an RST, not a FIN.
fn reset(sock: &TcpStream) {
    let _ = socket2::SockRef::from(sock).set_linger(Some(Duration::ZERO));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Eof,
    Stopped,
    Reset,
    Close,
}

async fn serve(mut peer: TcpStream, mut upstream: TcpStream, modes: watch::Receiver<Modes>, stop: CancellationToken) {
    let _ = peer.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let ends = {
        let (pr, pw) = peer.split();
        let (ur, uw) = upstream.split();
        tokio::join!(
            pump(pr, uw, |m| m.to_target, modes.clone(), stop.clone()),
            pump(ur, pw, |m| m.from_target, modes, stop.clone()),
        )
    };
    if ends.0 == End::Reset || ends.1 == End::Reset {
        reset(&peer);
        reset(&upstream);
    }
}

/// Forwards one direction until EOF, a fault that ends the connection, or `stop`.
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    dir: fn(&Modes) -> Mode,
    mut modes: watch::Receiver<Modes>,
    stop: CancellationToken,
) -> End {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut epoch, mut sent) = (u64::MAX, 0usize);
    // Chunks read under `Delay`, each with the time it is due.
    let mut delayed: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    loop {
        let mode = {
            let m = *modes.borrow_and_update();
            if m.epoch != epoch {
                (epoch, sent) = (m.epoch, 0);
            }
            dir(&m)
        };
        let budget = match mode {
            Mode::Reset => return stopping(&stop, End::Reset),
            Mode::ResetAfter(n) | Mode::CloseAfter(n) => Some(n.saturating_sub(sent)),
            _ => None,
        };
        if budget == Some(0) {
            return stopping(&stop, if matches!(mode, Mode::CloseAfter(_)) { End::Close } else { End::Reset });
        }
        let due = match mode {
            Mode::Delay(_) => delayed.front().map(|(at, _)| *at),
            _ => delayed.front().map(|_| Instant::now()), // no longer delayed: send what is held first
        };
        let read = async {
            if mode == Mode::Freeze {
                std::future::pending::<()>().await;
            }
            from.read(&mut buf).await
        };
        let n = tokio::select! {
            biased;
            _ = stop.cancelled() => return End::Stopped,
            r = modes.changed() => match r {
                Ok(()) => continue,
                Err(_) => return End::Stopped,
            },
            _ = sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                let Some((_, bytes)) = delayed.pop_front() else { continue };
                if write(&mut to, &bytes, Mode::Pass, &stop).await.is_err() {
                    return stopping(&stop, End::Eof);
                }
                continue;
            }
            r = read => match r {
                Ok(0) | Err(_) => {
                    for (at, bytes) in delayed.drain(..) {
                        sleep_until(at).await;
                        let _ = write(&mut to, &bytes, Mode::Pass, &stop).await;
                    }
                    let _ = to.shutdown().await;
                    return End::Eof;
                }
                Ok(n) => n,
            },
        };
        let chunk = &buf[..budget.map_or(n, |b| n.min(b))];
        sent += chunk.len();
        match mode {
            Mode::Delay(d) => delayed.push_back((Instant::now() + d, chunk.to_vec())),
            Mode::Blackhole => {}
            _ => {
                if write(&mut to, chunk, mode, &stop).await.is_err() {
                    return stopping(&stop, End::Eof);
                }
            }
        }
    }
}

/// Writes `bytes` (one byte per write under `OneByte`); `Err` when the peer is gone or `stop` fired.
async fn write(to: &mut WriteHalf<'_>, bytes: &[u8], mode: Mode, stop: &CancellationToken) -> std::io::Result<()> {
    let write = async {
        if mode != Mode::OneByte {
            return to.write_all(bytes).await;
        }
        for b in bytes {
            to.write_all(std::slice::from_ref(b)).await?;
        }
        Ok(())
    };
    tokio::select! {
        _ = stop.cancelled() => Err(std::io::ErrorKind::Interrupted.into()),
        r = write => r,
    }
}

/// Ends the other direction too.
fn stopping(stop: &CancellationToken, end: End) -> End {
    stop.cancel();
    end
}
