//! A tiny raw protocol client for bad-input tests.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct RawConn {
    sock: TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    pub async fn connect(port: u16) -> RawConn {
        RawConn { sock: TcpStream::connect(("127.0.0.1", port)).await.expect("connect"), buf: Vec::new() }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        let _ = self.sock.write_all(bytes).await;
    }

    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.sock.write_all(bytes).await
    }

    /// Reads exactly `out.len()` raw bytes (for the one-byte SSL/GSS answers); returns how many arrived.
    pub async fn read_exact_raw(&mut self, out: &mut [u8]) -> usize {
        match tokio::time::timeout(Duration::from_secs(5), self.sock.read_exact(out)).await {
            Ok(Ok(n)) => n,
            _ => 0,
        }
    }

    pub async fn shutdown_write(&mut self) {
        let _ = self.sock.shutdown().await;
    }

    pub fn startup_packet(user: &str, db: &str, extra: &[(&str, &str)]) -> Vec<u8> {
        let mut body = 196_608u32.to_be_bytes().to_vec();
        for (k, v) in [("user", user), ("database", db)].iter().chain(extra) {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        out
    }

    /// Next message, or `None` on EOF, error, or when nothing complete arrives within `within`.
    pub async fn read_message(&mut self, within: Duration) -> Option<(u8, Vec<u8>)> {
        read_message_from(&mut self.sock, &mut self.buf, within).await
    }

    /// The two directions apart, for a test that reads while it writes.
    pub fn split(self) -> (RawReader, RawWriter) {
        let (rd, wr) = self.sock.into_split();
        (RawReader { sock: rd, buf: self.buf }, RawWriter { sock: wr })
    }

    /// Logs in (trust) and returns the connection with the BackendKeyData it was given.
    pub async fn login_with_key(port: u16, user: &str, db: &str) -> (RawConn, u32, u32) {
        RawConn::login_with_params(port, user, db, &[]).await
    }

    /// Waits for the peer to close the connection; `None` if it is still open after `within`.
    pub async fn wait_closed(&mut self, within: Duration) -> Option<Duration> {
        let started = tokio::time::Instant::now();
        let deadline = started + within;
        let mut chunk = [0u8; 1024];
        loop {
            match tokio::time::timeout_at(deadline, self.sock.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
                Ok(Ok(_)) => {}
                Err(_) => return None,
            }
        }
    }

    /// Reads and discards everything until EOF or `within`: (bytes read, whether EOF came).
    pub async fn drain(&mut self, within: Duration) -> (usize, bool) {
        let deadline = tokio::time::Instant::now() + within;
        let mut total = self.buf.len();
        self.buf.clear();
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            match tokio::time::timeout_at(deadline, self.sock.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return (total, true),
                Ok(Ok(n)) => total += n,
                Err(_) => return (total, false),
            }
        }
    }

    /// Reads through ReadyForQuery (panics on an error or EOF first).
    pub async fn read_until_ready(&mut self) {
        loop {
            match self.read_message(Duration::from_secs(10)).await {
                Some((b'Z', _)) => return,
                Some((b'E', body)) => {
                    panic!("error before ReadyForQuery: {:?}", error_fields(&body))
                }
                Some(_) => {}
                None => panic!("EOF before ReadyForQuery"),
            }
        }
    }
}

/// The reading half of a split `RawConn`.
pub struct RawReader {
    sock: tokio::net::tcp::OwnedReadHalf,
    buf: Vec<u8>,
}

impl RawReader {
    pub async fn read_message(&mut self, within: Duration) -> Option<(u8, Vec<u8>)> {
        read_message_from(&mut self.sock, &mut self.buf, within).await
    }
}

/// The writing half of a split `RawConn`.
pub struct RawWriter {
    sock: tokio::net::tcp::OwnedWriteHalf,
}

impl RawWriter {
    pub async fn send(&mut self, bytes: &[u8]) {
        let _ = self.sock.write_all(bytes).await;
    }
}

async fn read_message_from<R: tokio::io::AsyncRead + Unpin>(
    sock: &mut R,
    buf: &mut Vec<u8>,
    within: Duration,
) -> Option<(u8, Vec<u8>)> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if buf.len() >= 5 {
            let len = u32::from_be_bytes(buf[1..5].try_into().unwrap()) as usize;
            if buf.len() > len {
                let msg: Vec<u8> = buf.drain(..1 + len).collect();
                return Some((msg[0], msg[5..].to_vec()));
            }
        }
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout_at(deadline, sock.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

pub fn query_message(sql: &str) -> Vec<u8> {
    let mut out = vec![b'Q'];
    out.extend_from_slice(&((sql.len() + 5) as u32).to_be_bytes());
    out.extend_from_slice(sql.as_bytes());
    out.push(0);
    out
}

pub fn cancel_request(pid: u32, key: u32) -> Vec<u8> {
    let mut out = 16u32.to_be_bytes().to_vec();
    out.extend_from_slice(&80_877_102u32.to_be_bytes());
    out.extend_from_slice(&pid.to_be_bytes());
    out.extend_from_slice(&key.to_be_bytes());
    out
}

/// ErrorResponse fields by their one-letter code.
/// One reply reduced to what must match PostgreSQL's: errors and notices without their source location
/// (file, line, routine), everything else byte for byte.
pub fn normalize_reply(tag: u8, body: &[u8]) -> String {
    match tag {
        b'E' | b'N' => {
            let mut f: Vec<(char, String)> =
                error_fields(body).into_iter().filter(|(k, _)| !matches!(k, 'F' | 'L' | 'R')).collect();
            f.sort();
            format!("{} {f:?}", tag as char)
        }
        _ => format!("{} {}", tag as char, String::from_utf8_lossy(body)),
    }
}

pub fn error_fields(body: &[u8]) -> HashMap<char, String> {
    let mut out = HashMap::new();
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let end = tail.iter().position(|b| *b == 0).unwrap_or(tail.len());
        out.insert(kind as char, String::from_utf8_lossy(&tail[..end]).into_owned());
        rest = tail.get(end + 1..).unwrap_or_default();
    }
    out
}

/// Builders for frontend messages, for tests that speak the extended protocol by hand.
pub mod fe {
    pub fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn cstr(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    pub fn parse(name: &str, sql: &str) -> Vec<u8> {
        let mut b = Vec::new();
        cstr(&mut b, name);
        cstr(&mut b, sql);
        b.extend_from_slice(&0u16.to_be_bytes());
        msg(b'P', &b)
    }

    /// Bind with text parameters (`None` = NULL) and text results.
    pub fn bind(portal: &str, stmt: &str, params: &[Option<&[u8]>]) -> Vec<u8> {
        let mut b = Vec::new();
        cstr(&mut b, portal);
        cstr(&mut b, stmt);
        b.extend_from_slice(&0u16.to_be_bytes());
        b.extend_from_slice(&(params.len() as u16).to_be_bytes());
        for p in params {
            match p {
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        b.extend_from_slice(&0u16.to_be_bytes());
        msg(b'B', &b)
    }

    pub fn describe(kind: u8, name: &str) -> Vec<u8> {
        let mut b = vec![kind];
        cstr(&mut b, name);
        msg(b'D', &b)
    }

    pub fn execute(portal: &str, max_rows: i32) -> Vec<u8> {
        let mut b = Vec::new();
        cstr(&mut b, portal);
        b.extend_from_slice(&max_rows.to_be_bytes());
        msg(b'E', &b)
    }

    pub fn close(kind: u8, name: &str) -> Vec<u8> {
        let mut b = vec![kind];
        cstr(&mut b, name);
        msg(b'C', &b)
    }

    pub fn sync() -> Vec<u8> {
        msg(b'S', &[])
    }

    pub fn flush() -> Vec<u8> {
        msg(b'H', &[])
    }

    pub fn query(sql: &str) -> Vec<u8> {
        let mut b = Vec::new();
        cstr(&mut b, sql);
        msg(b'Q', &b)
    }

    pub fn copy_data(data: &[u8]) -> Vec<u8> {
        msg(b'd', data)
    }

    pub fn copy_done() -> Vec<u8> {
        msg(b'c', &[])
    }

    pub fn copy_fail(reason: &str) -> Vec<u8> {
        let mut b = Vec::new();
        cstr(&mut b, reason);
        msg(b'f', &b)
    }
}

/// What one simple Query answered: the first column of every DataRow (raw bytes, as sent in the
/// client's encoding; `None` = NULL) and the first ErrorResponse, if any.
#[derive(Debug, Default)]
pub struct SimpleAnswer {
    pub rows: Vec<Option<Vec<u8>>>,
    pub error: Option<HashMap<char, String>>,
}

impl SimpleAnswer {
    /// The rows as text (lossy), for readable assertions; NULL is "NULL".
    pub fn text(&self) -> Vec<String> {
        self.rows
            .iter()
            .map(|r| r.as_deref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_else(|| "NULL".into()))
            .collect()
    }

    /// The SQLSTATE of the error, if the query failed.
    pub fn code(&self) -> Option<&str> {
        self.error.as_ref().and_then(|e| e.get(&'C')).map(String::as_str)
    }
}

impl RawConn {
    /// Logs in (trust) with extra startup parameters (e.g. `("options", "-c DateStyle=SQL")`,
    /// `("client_encoding", "LATIN1")`); returns the connection and the BackendKeyData it was given.
    pub async fn login_with_params(port: u16, user: &str, db: &str, extra: &[(&str, &str)]) -> (RawConn, u32, u32) {
        let mut c = RawConn::connect(port).await;
        c.send(&RawConn::startup_packet(user, db, extra)).await;
        let mut key = None;
        loop {
            match c.read_message(Duration::from_secs(10)).await {
                Some((b'K', body)) => {
                    key = Some((
                        u32::from_be_bytes(body[..4].try_into().unwrap()),
                        u32::from_be_bytes(body[4..8].try_into().unwrap()),
                    ))
                }
                Some((b'Z', _)) => break,
                Some((b'E', body)) => panic!("login failed: {:?}", error_fields(&body)),
                Some(_) => {}
                None => panic!("EOF during login"),
            }
        }
        let (pid, key) = key.expect("BackendKeyData");
        (c, pid, key)
    }

    /// Reads one simple Query's answer through its ReadyForQuery (panics on EOF or after `within`).
    pub async fn read_answer(&mut self, within: Duration) -> SimpleAnswer {
        let deadline = tokio::time::Instant::now() + within;
        let mut answer = SimpleAnswer::default();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_message(left).await {
                Some((b'Z', _)) => return answer,
                Some((b'D', body)) => {
                    let len = i32::from_be_bytes(body[2..6].try_into().unwrap());
                    answer.rows.push((len >= 0).then(|| body[6..6 + len as usize].to_vec()));
                }
                Some((b'E', body)) => {
                    answer.error.get_or_insert_with(|| error_fields(&body));
                }
                Some(_) => {}
                None => panic!("no ReadyForQuery within {within:?} (answer so far: {answer:?})"),
            }
        }
    }

    /// Sends a simple Query and reads its answer (see `read_answer`).
    pub async fn simple(&mut self, sql: &str, within: Duration) -> SimpleAnswer {
        self.send(&query_message(sql)).await;
        self.read_answer(within).await
    }
}

/// A stand-in server's side of the opening: declines an SSLRequest with 'N' (as a PostgreSQL without
/// TLS does) and returns the body of the StartupMessage that follows.
pub async fn read_startup_as_server(sock: &mut tokio::net::TcpStream) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let mut len = [0u8; 4];
        sock.read_exact(&mut len).await?;
        let mut body = vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
        sock.read_exact(&mut body).await?;
        if body == 80_877_103u32.to_be_bytes() {
            sock.write_all(b"N").await?;
            continue;
        }
        return Ok(body);
    }
}
