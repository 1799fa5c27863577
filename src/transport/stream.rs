//! One connection's byte stream, whatever carries it: plain TCP, TLS over TCP (either side), or a Unix
//! socket. Reads and writes dispatch on the variant; a TLS write is flushed by `send`, and `poll_duplex`
//! lets one task read and write the same stream without splitting it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// A connection to a client or to PostgreSQL.
pub enum Stream {
    Tcp(TcpStream),
    /// Boxed: a TLS session's state is large next to a socket, and most connections have none.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
    Unix(UnixStream),
}

/// What `poll_duplex` finished first.
pub enum Duplex {
    Read(io::Result<usize>),
    Wrote(io::Result<usize>),
}

/// What a TLS session negotiated, as PgBouncer's SHOW CLIENTS/SERVERS print it, in OpenSSL's names
/// ("TLSv1.3/TLS_AES_256_GCM_SHA384/ECDH=X25519").
pub fn describe(state: &rustls::CommonState) -> String {
    let version = match state.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(v) => format!("{v:?}"),
        None => "TLS".to_string(),
    };
    let suite = state.negotiated_cipher_suite().and_then(super::suites::openssl_name);
    let group = state.negotiated_key_exchange_group().map(|g| super::suites::group_name(g.name()));
    match (suite, group) {
        (Some(s), Some(g)) => format!("{version}/{s}/ECDH={g}"),
        (Some(s), None) => format!("{version}/{s}"),
        _ => version,
    }
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    pub fn is_unix(&self) -> bool {
        matches!(self, Stream::Unix(_))
    }

    /// The TCP socket under the stream (for socket options and addresses); `None` for a Unix socket.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Tcp(s) => Some(s),
            Stream::Tls(s) => Some(s.get_ref().0),
            Stream::Unix(_) => None,
        }
    }

    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.tcp().and_then(|s| s.local_addr().ok())
    }

    /// The negotiated TLS version and cipher, or `None` in plain text.
    pub fn tls_description(&self) -> Option<String> {
        match self {
            Stream::Tls(s) => Some(describe(s.get_ref().1)),
            _ => None,
        }
    }

    /// The peer's certificate chain, leaf first, when it presented one over TLS.
    pub fn peer_certificates(&self) -> Option<&[rustls_pki_types::CertificateDer<'static>]> {
        match self {
            Stream::Tls(s) => s.get_ref().1.peer_certificates(),
            _ => None,
        }
    }

    /// Moves the socket's registration to the current runtime (a server lent to a client on another
    /// worker, a client handed from the accept loop to its worker): the descriptor is duplicated and
    /// registered here, and the old one deregistered and closed; the connection and any TLS session
    /// are untouched.
    pub fn rehome(&mut self) -> io::Result<()> {
        fn dup<S: std::os::fd::AsFd, T: From<std::os::fd::OwnedFd>>(s: &S) -> io::Result<T> {
            Ok(T::from(s.as_fd().try_clone_to_owned()?))
        }
        match self {
            Stream::Tcp(s) => *s = TcpStream::from_std(dup(s)?)?,
            Stream::Tls(s) => {
                let tcp = s.get_mut().0;
                *tcp = TcpStream::from_std(dup(tcp)?)?;
            }
            Stream::Unix(s) => *s = UnixStream::from_std(dup(s)?)?,
        }
        Ok(())
    }

    /// Waits until the socket has something to read (or is closed). Over TLS it returns at once:
    /// the session may already hold decrypted bytes.
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.readable().await,
            Stream::Unix(s) => s.readable().await,
            Stream::Tls(_) => Ok(()),
        }
    }

    /// Reads what is there now without waiting (`None` when nothing is). Unlike a `try_read`, a read
    /// that leaves the socket drained also clears its readiness, so the next wait does not begin with a
    /// read that finds nothing (one wasted system call per request otherwise).
    pub async fn read_now(&mut self, buf: &mut BytesMut) -> Option<io::Result<usize>> {
        std::future::poll_fn(|cx| match tokio_util::io::poll_read_buf(Pin::new(&mut *self), cx, buf) {
            Poll::Ready(r) => Poll::Ready(Some(r)),
            Poll::Pending => Poll::Ready(None),
        })
        .await
    }

    /// Writes all of `bytes` and, over TLS, flushes them to the socket (a TLS write alone may leave
    /// them in the session's buffer).
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes).await?;
        if self.is_tls() {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes what the socket takes now without waiting (`WouldBlock` if nothing). Over TLS nothing is
    /// written here: the bytes are left to `poll_duplex`, which also flushes them.
    pub fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_write(bytes),
            Stream::Unix(s) => s.try_write(bytes),
            Stream::Tls(_) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Whether the peer sent something or hung up on an idle connection: `Ok(false)` when nothing is
    /// there (the connection looks alive), `Ok(true)` when bytes or EOF arrived.
    pub fn poll_idle_peer(&mut self) -> io::Result<bool> {
        let mut probe = [0u8; 1];
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut buf = ReadBuf::new(&mut probe);
        match Pin::new(self).poll_read(&mut cx, &mut buf) {
            Poll::Pending => Ok(false),
            Poll::Ready(Ok(())) => Ok(true),
            Poll::Ready(Err(e)) => Err(e),
        }
    }

    /// Best effort, never waiting: a Terminate (or any last bytes) on a plain connection; over TLS
    /// nothing (the connection is simply closed).
    pub fn write_goodbye(&self, bytes: &[u8]) {
        let _ = self.try_write(bytes);
    }

    /// Reads into `rbuf` or writes from `wbuf` (when it is not empty), whichever can go first; over
    /// TLS, output the session still holds is flushed meanwhile. Written bytes leave `wbuf`.
    pub fn poll_duplex(&mut self, cx: &mut Context<'_>, rbuf: &mut BytesMut, wbuf: &mut BytesMut) -> Poll<Duplex> {
        if !wbuf.is_empty()
            && let Poll::Ready(r) = Pin::new(&mut *self).poll_write(cx, wbuf)
        {
            if let Ok(n) = r {
                wbuf.advance(n);
            }
            return Poll::Ready(Duplex::Wrote(r));
        }
        if let Stream::Tls(s) = self
            && s.get_ref().1.wants_write()
            && let Poll::Ready(Err(e)) = Pin::new(&mut **s).poll_flush(cx)
        {
            return Poll::Ready(Duplex::Wrote(Err(e)));
        }
        match tokio_util::io::poll_read_buf(Pin::new(self), cx, rbuf) {
            Poll::Ready(r) => Poll::Ready(Duplex::Read(r)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// `poll_duplex` as a future.
    pub async fn duplex(&mut self, rbuf: &mut BytesMut, wbuf: &mut BytesMut) -> Duplex {
        std::future::poll_fn(|cx| self.poll_duplex(cx, rbuf, wbuf)).await
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A socket made on one runtime keeps working on another after `rehome`, once the first is gone:
    /// its readiness is delivered by the runtime it now belongs to.
    #[test]
    fn a_rehomed_socket_works_on_its_new_runtime_after_the_old_one_is_gone() {
        let rt = |_| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let (first, second) = (rt(1), rt(2));
        let (mut ours, peer) = first.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = l.local_addr().expect("addr");
            let (c, a) = tokio::join!(TcpStream::connect(addr), l.accept());
            (Stream::Tcp(c.expect("connect")), a.expect("accept").0)
        });
        let peer_std = peer.into_std().expect("peer out of the first runtime");
        drop(first);
        second.block_on(async move {
            ours.rehome().expect("rehome");
            let mut peer = TcpStream::from_std(peer_std).expect("peer here");
            ours.send(b"ping").await.expect("write on the new runtime");
            let mut got = [0u8; 4];
            peer.read_exact(&mut got).await.expect("peer reads");
            peer.write_all(b"pong").await.expect("peer writes");
            let mut buf = BytesMut::new();
            ours.read_buf(&mut buf).await.expect("read on the new runtime");
            assert_eq!((&got, &buf[..]), (b"ping", &b"pong"[..]));
        });
    }
}
