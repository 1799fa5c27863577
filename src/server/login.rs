//! Opening a connection to PostgreSQL and logging in as a client: TLS as server_tls_sslmode says,
//! startup, authentication (trust, cleartext, md5, SCRAM-SHA-256), then ParameterStatus/BackendKeyData
//! until ReadyForQuery.

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::{Credentials, ServerConn, ServerError};
use crate::auth::md5::md5_hex_secret;
use crate::auth::scram::ScramClient;
use crate::config::{ServerTarget, SslMode};
use crate::protocol::messages::{self, TxStatus};
use crate::protocol::tags::backend;
use crate::stats::PeerAddr;
use crate::transport::{Connector, Stream};

/// Connects and logs in. The returned connection is idle (ReadyForQuery 'I' seen). With
/// server_tls_sslmode = allow, a server that refuses the plain-text login (28000: its pg_hba.conf
/// wants TLS) is tried again over TLS.
pub async fn connect(
    target: &ServerTarget,
    user: &str,
    creds: &Credentials,
    tcp: &crate::config::TcpOptions,
    tls: Option<&Connector>,
) -> Result<ServerConn, ServerError> {
    let first = tls.filter(|t| t.mode != SslMode::Allow);
    match connect_once(target, user, creds, tcp, first).await {
        Err(ServerError::Refused { code, .. }) if code == "28000" && first.is_none() && tls.is_some() => {
            connect_once(target, user, creds, tcp, tls).await
        }
        other => other,
    }
}

async fn connect_once(
    target: &ServerTarget,
    user: &str,
    creds: &Credentials,
    tcp: &crate::config::TcpOptions,
    tls: Option<&Connector>,
) -> Result<ServerConn, ServerError> {
    let (stream, addr) = open_stream(target, tcp, tls).await?;
    let mut conn = ServerConn::new(stream, addr);
    let mut out = BytesMut::new();
    let params = [("user", user), ("database", target.dbname.as_str()), ("client_encoding", "UTF8")];
    frontend::startup_message(params.iter().copied(), &mut out)?;
    conn.stream.send(&out).await?;
    authenticate(&mut conn, user, creds).await?;
    finish_startup(&mut conn).await?;
    conn.reported = conn.params.iter().map(|(k, _)| k.clone()).collect();
    Ok(conn)
}

/// The connection to the server: TCP (TLS as `tls` says), or its Unix socket when the host is a
/// directory (`<host>/.s.PGSQL.<port>`, plain text as libpq: TLS is not spoken over Unix sockets).
async fn open_stream(
    target: &ServerTarget,
    tcp: &crate::config::TcpOptions,
    tls: Option<&Connector>,
) -> Result<(Stream, PeerAddr), ServerError> {
    if target.host.starts_with('/') {
        let path = std::path::Path::new(&target.host).join(format!(".s.PGSQL.{}", target.port));
        let text = path.display().to_string();
        let stream = UnixStream::connect(&path).await.map_err(|e| ServerError::connect_failed(&text, &e))?;
        return Ok((Stream::Unix(stream), PeerAddr::Unix { path: path.into(), port: target.port }));
    }
    let addr_text = format!("{}:{}", target.host, target.port);
    let stream = TcpStream::connect(&addr_text).await.map_err(|e| ServerError::connect_failed(&addr_text, &e))?;
    stream.set_nodelay(true)?;
    super::tcp::apply(&stream, tcp)?;
    let addr = PeerAddr::Tcp(stream.peer_addr()?);
    let stream = match tls {
        Some(t) => negotiate_tls(stream, t, &target.host).await?,
        None => Stream::Tcp(stream),
    };
    Ok((stream, addr))
}

/// SSLRequest, then the handshake if the server agrees. Exactly one byte of answer is read, so
/// nothing a man in the middle sends in plain text before the handshake is taken as the server's
/// (CVE-2021-23222). A server that says no gets plain text under prefer and allow, an error otherwise.
async fn negotiate_tls(mut stream: TcpStream, tls: &Connector, host: &str) -> Result<Stream, ServerError> {
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    stream.write_all(&request).await?;
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).await?;
    match answer[0] {
        b'S' => {}
        b'N' if !tls.mode.requires_tls() => return Ok(Stream::Tcp(stream)),
        b'N' => {
            let mode = tls.mode.as_str();
            return Err(ServerError::Tls(format!("the server does not accept TLS (server_tls_sslmode = {mode})")));
        }
        other => return Err(ServerError::Protocol(format!("unexpected answer 0x{other:02x} to SSLRequest"))),
    }
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|_| ServerError::Tls(format!("{host:?} is not a name TLS can check")))?;
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let stream = connector.connect(name, stream).await.map_err(|e| ServerError::Tls(e.to_string()))?;
    Ok(Stream::Tls(Box::new(stream.into())))
}

fn refused(body: &[u8]) -> ServerError {
    let (severity, code, message) = messages::error_fields(body);
    ServerError::Refused { severity, code, message }
}

fn auth_code(body: &[u8]) -> Result<(u32, &[u8]), ServerError> {
    match body {
        [a, b, c, d, rest @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), rest)),
        _ => Err(ServerError::Protocol("short authentication message".into())),
    }
}

async fn send(conn: &mut ServerConn, out: &mut BytesMut) -> Result<(), ServerError> {
    conn.stream.send(out).await?;
    out.clear();
    Ok(())
}

async fn authenticate(conn: &mut ServerConn, user: &str, creds: &Credentials) -> Result<(), ServerError> {
    let mut out = BytesMut::new();
    let mut scram: Option<ScramClient> = None;
    loop {
        let (tag, body) = conn.read_internal().await?;
        match tag {
            backend::ERROR_RESPONSE => return Err(refused(&body)),
            backend::AUTHENTICATION => {}
            other => {
                return Err(ServerError::Protocol(format!("unexpected message 0x{other:02x} during login")));
            }
        }
        let (code, rest) = auth_code(&body)?;
        match code {
            0 => return Ok(()),
            3 => {
                let Credentials::Password(pw) = creds else {
                    return Err(ServerError::NoPassword(user.into()));
                };
                frontend::password_message(pw.as_bytes(), &mut out)?;
            }
            5 => {
                let salt: [u8; 4] = rest.try_into().map_err(|_| ServerError::Protocol("bad md5 salt".into()))?;
                let hashed = match creds {
                    Credentials::Password(pw) => md5_hex_secret(pw, user),
                    Credentials::Md5Hash(h) => h.clone(),
                    _ => return Err(ServerError::NoPassword(user.into())),
                };
                let response = md5_salted(&hashed, salt);
                frontend::password_message(response.as_bytes(), &mut out)?;
            }
            10 => {
                let offers_scram = rest.split(|b| *b == 0).any(|m| m == b"SCRAM-SHA-256");
                if !offers_scram {
                    return Err(ServerError::UnsupportedAuth("SASL without SCRAM-SHA-256".into()));
                }
                let mut client = match creds {
                    Credentials::Password(pw) => ScramClient::with_password(pw),
                    Credentials::ScramKeys { client_key, server_key } => {
                        ScramClient::with_keys(*client_key, *server_key)
                    }
                    _ => return Err(ServerError::NoPassword(user.into())),
                };
                let first = client.client_first();
                frontend::sasl_initial_response("SCRAM-SHA-256", &first, &mut out)?;
                scram = Some(client);
            }
            11 => {
                let client = scram.as_mut().ok_or_else(|| ServerError::Protocol("unexpected SASL continue".into()))?;
                // Deriving from a password runs on a blocking thread; the wait for it is bounded by
                // server_connect_timeout around the whole connect.
                let reply = client.handle_server_first(rest).await.map_err(|e| ServerError::Protocol(e.to_string()))?;
                frontend::sasl_response(&reply, &mut out)?;
            }
            12 => {
                let client = scram.as_mut().ok_or_else(|| ServerError::Protocol("unexpected SASL final".into()))?;
                client.handle_server_final(rest).map_err(|e| ServerError::Protocol(e.to_string()))?;
                continue;
            }
            other => {
                return Err(ServerError::UnsupportedAuth(format!("authentication request {other}")));
            }
        }
        send(conn, &mut out).await?;
    }
}

/// md5 response for an already-hashed secret: "md5" + hex(md5(hex_secret_without_prefix || salt)).
fn md5_salted(hashed: &str, salt: [u8; 4]) -> String {
    use md5::{Digest, Md5};
    let inner = hashed.strip_prefix("md5").unwrap_or(hashed);
    let mut h = Md5::new();
    h.update(inner.as_bytes());
    h.update(salt);
    let digest = h.finalize();
    let mut s = String::with_capacity(35);
    s.push_str("md5");
    for b in digest.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

async fn finish_startup(conn: &mut ServerConn) -> Result<(), ServerError> {
    loop {
        let (tag, body) = conn.read_internal().await?;
        match tag {
            backend::PARAMETER_STATUS => {
                if let Some((n, v)) = messages::parameter_status_fields(&body) {
                    conn.set_param(n, v);
                }
            }
            backend::BACKEND_KEY_DATA => {
                let [p1, p2, p3, p4, k1, k2, k3, k4] = body[..] else {
                    return Err(ServerError::Protocol("bad BackendKeyData".into()));
                };
                conn.pid = u32::from_be_bytes([p1, p2, p3, p4]);
                conn.key = u32::from_be_bytes([k1, k2, k3, k4]);
            }
            backend::READY_FOR_QUERY => {
                return match body.first().copied().and_then(TxStatus::from_byte) {
                    Some(TxStatus::Idle) => Ok(()),
                    _ => Err(ServerError::Protocol("server not idle after login".into())),
                };
            }
            backend::ERROR_RESPONSE => return Err(refused(&body)),
            backend::NOTICE_RESPONSE => {}
            other => {
                return Err(ServerError::Protocol(format!("unexpected message 0x{other:02x} after login")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn md5_salted_matches_postgres_protocol() {
        let hashed = crate::auth::md5::md5_hex_secret("pw", "bob");
        let salt = [1, 2, 3, 4];
        assert_eq!(super::md5_salted(&hashed, salt), postgres_protocol::authentication::md5_hash(b"bob", b"pw", salt));
    }
}
