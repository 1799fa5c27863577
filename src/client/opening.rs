//! What a client sends before its StartupMessage: SSLRequest (answered 'S' and a TLS handshake when
//! client_tls_sslmode allows, 'N' otherwise), direct TLS (a ClientHello first, PostgreSQL 17's
//! `sslnegotiation=direct`), GSSENCRequest ('N'), and CancelRequest (routed, then the connection ends).

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::ClientError;
use crate::protocol::ProtocolError;
use crate::protocol::startup::StartupPacket;
use crate::shared::Shared;
use crate::transport::tls::ALPN_POSTGRESQL;
use crate::transport::{Acceptor, Stream};

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// A StartupMessage, and the TLS it came over.
pub struct Startup {
    pub minor: u16,
    pub params: Vec<(String, String)>,
    /// The TLS configuration the client's handshake used (for channel binding and certificate
    /// authentication), `None` in plain text.
    pub tls: Option<Arc<Acceptor>>,
}

/// Result of reading the opening packets.
pub enum Opening {
    Startup(Startup),
    /// A CancelRequest was handled; close the connection.
    Cancelled,
}

/// Whether an SSLRequest can still be answered with a handshake.
#[derive(Clone, Copy, PartialEq)]
enum Offer {
    Tls,
    PlainOnly,
    /// TLS is already up: another SSLRequest is a protocol violation.
    Done,
}

/// Reads the opening packets from the stream in `slot`, doing the TLS handshake when one is asked for
/// and allowed (the slot then holds the TLS stream). The stream stays in the slot so that whoever
/// stops this early can still tell the client why; it is empty only when a handshake failed (nothing
/// can be said then) or was cut short.
pub async fn open(slot: &mut Option<Stream>, buf: &mut BytesMut, shared: &Shared) -> Result<Opening, ClientError> {
    let acceptor = shared.tls.current().clients;
    let gone = || ClientError::Io(std::io::ErrorKind::NotConnected.into());
    if let (Some(a), Some(Stream::Tcp(tcp))) = (&acceptor, slot.as_ref()) {
        let mut first = [0u8; 1];
        if tcp.peek(&mut first).await? == 1 && first[0] == TLS_HANDSHAKE {
            let Some(Stream::Tcp(tcp)) = slot.take() else { return Err(gone()) };
            *slot = Some(handshake(tcp, a, true).await?);
            return after_handshake(slot.as_mut().ok_or_else(gone)?, buf, a, shared).await;
        }
    }
    // TLS is for TCP: over a Unix socket an SSLRequest gets 'N' and plain text is never refused (as
    // PostgreSQL and PgBouncer).
    let tcp = matches!(slot, Some(Stream::Tcp(_)));
    let offer = if acceptor.is_some() && tcp { Offer::Tls } else { Offer::PlainOnly };
    let opening = read_opening(slot.as_mut().ok_or_else(gone)?, buf, shared, offer).await?;
    let (Some(opening), mode) = (opening, acceptor.as_ref().map(|a| a.mode)) else {
        // SSLRequest with TLS on offer: 'S', then the handshake.
        let (Some(Stream::Tcp(tcp)), Some(a)) = (slot.take(), &acceptor) else { return Err(gone()) };
        *slot = Some(handshake_after_request(tcp, a).await?);
        return after_handshake(slot.as_mut().ok_or_else(gone)?, buf, a, shared).await;
    };
    match (opening, mode) {
        (Opening::Startup(_), Some(mode)) if mode.requires_tls() && tcp => Err(ClientError::TlsRequired(mode.as_str())),
        (o, _) => Ok(o),
    }
}

async fn handshake_after_request(mut tcp: TcpStream, acceptor: &Arc<Acceptor>) -> Result<Stream, ClientError> {
    use tokio::io::AsyncWriteExt;
    tcp.write_all(b"S").await?;
    handshake(tcp, acceptor, false).await
}

/// The TLS handshake. With direct TLS the client must name PostgreSQL's ALPN protocol (as PostgreSQL
/// 17 insists); after an SSLRequest it may name none, and rustls refuses any other.
async fn handshake(tcp: TcpStream, acceptor: &Arc<Acceptor>, direct: bool) -> Result<Stream, ClientError> {
    let tls = tokio_rustls::TlsAcceptor::from(acceptor.config.clone());
    let stream = tls.accept(tcp).await.map_err(|e| ClientError::TlsHandshake(e.to_string()))?;
    if direct && stream.get_ref().1.alpn_protocol() != Some(ALPN_POSTGRESQL) {
        return Err(ClientError::TlsHandshake("direct TLS without the ALPN protocol \"postgresql\"".into()));
    }
    Ok(Stream::Tls(Box::new(stream.into())))
}

async fn after_handshake(
    sock: &mut Stream,
    buf: &mut BytesMut,
    acceptor: &Arc<Acceptor>,
    shared: &Shared,
) -> Result<Opening, ClientError> {
    match read_opening(sock, buf, shared, Offer::Done).await? {
        Some(Opening::Startup(s)) => Ok(Opening::Startup(Startup { tls: Some(acceptor.clone()), ..s })),
        Some(o) => Ok(o),
        None => Err(ProtocolError::Malformed("SSLRequest inside TLS").into()),
    }
}

/// Reads packets until a StartupMessage or CancelRequest, answering GSSENCRequest (and SSLRequest
/// when TLS is not on offer) with 'N'. `Ok(None)`: an SSLRequest to answer with a handshake.
async fn read_opening(
    sock: &mut Stream,
    buf: &mut BytesMut,
    shared: &Shared,
    offer: Offer,
) -> Result<Option<Opening>, ClientError> {
    loop {
        match StartupPacket::parse(buf)? {
            None => {
                if sock.read_buf(buf).await? == 0 {
                    return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
            }
            Some((packet, n)) => {
                buf.advance(n);
                match packet {
                    StartupPacket::SslRequest | StartupPacket::GssEncRequest if offer == Offer::Done => {
                        return Err(ProtocolError::Malformed("encryption requested inside TLS").into());
                    }
                    StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                        // Bytes sent behind the request, before any answer, would be read as if they had
                        // come over TLS (CVE-2021-23222's class): refused.
                        if !buf.is_empty() {
                            return Err(ProtocolError::DataAfterSslRequest.into());
                        }
                        if packet == StartupPacket::SslRequest && offer == Offer::Tls {
                            return Ok(None);
                        }
                        sock.send(b"N").await?;
                    }
                    StartupPacket::Cancel { pid, key } => {
                        let wait = shared.config().general.cancel_wait_timeout;
                        shared.cancel.cancel(pid, key, wait).await;
                        return Ok(Some(Opening::Cancelled));
                    }
                    StartupPacket::UnsupportedVersion { major, minor } => {
                        return Err(ClientError::UnsupportedProtocol(major, minor));
                    }
                    StartupPacket::Startup { minor, params } => {
                        return Ok(Some(Opening::Startup(Startup { minor, params, tls: None })));
                    }
                }
            }
        }
    }
}
