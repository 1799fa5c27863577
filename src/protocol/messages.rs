//! Writers for the backend messages pgsluice originates towards clients, and readers for the few
//! frontend and backend message bodies it must understand. Login-time only: the forwarding path
//! never calls these per message.

use bytes::{BufMut, BytesMut};

use super::error::ProtocolError;
use super::tags::{backend, error_field, frontend};

/// Transaction status carried by ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    Idle,
    InBlock,
    Failed,
}

impl TxStatus {
    pub fn from_byte(b: u8) -> Option<TxStatus> {
        match b {
            b'I' => Some(TxStatus::Idle),
            b'T' => Some(TxStatus::InBlock),
            b'E' => Some(TxStatus::Failed),
            _ => None,
        }
    }
    pub fn as_byte(self) -> u8 {
        match self {
            TxStatus::Idle => b'I',
            TxStatus::InBlock => b'T',
            TxStatus::Failed => b'E',
        }
    }
}

/// The message types a frontend may send once logged in (PasswordMessage `p` only while authenticating).
/// Anything else is a protocol violation that pgsluice answers itself, before any server sees it.
#[inline]
pub fn is_frontend_type(tag: u8) -> bool {
    FRONTEND_TYPES.get(usize::from(tag)).copied().unwrap_or(false)
}

/// The message types a backend may send once the login is over. Authentication (`R`), BackendKeyData
/// (`K`), NegotiateProtocolVersion (`v`) and CopyBothResponse (`W`, replication only) are not among them.
#[inline]
pub fn is_backend_type(tag: u8) -> bool {
    BACKEND_TYPES.get(usize::from(tag)).copied().unwrap_or(false)
}

const FRONTEND_TYPES: [bool; 256] = {
    use frontend::*;
    type_table(&[
        QUERY,
        PARSE,
        BIND,
        EXECUTE,
        DESCRIBE,
        CLOSE,
        SYNC,
        FLUSH,
        FUNCTION_CALL,
        COPY_DATA,
        COPY_DONE,
        COPY_FAIL,
        TERMINATE,
    ])
};
const BACKEND_TYPES: [bool; 256] = {
    use backend::*;
    type_table(&[
        PARSE_COMPLETE,
        BIND_COMPLETE,
        CLOSE_COMPLETE,
        NOTIFICATION_RESPONSE,
        COMMAND_COMPLETE,
        DATA_ROW,
        ERROR_RESPONSE,
        COPY_IN_RESPONSE,
        COPY_OUT_RESPONSE,
        EMPTY_QUERY_RESPONSE,
        NOTICE_RESPONSE,
        PARAMETER_STATUS,
        ROW_DESCRIPTION,
        FUNCTION_CALL_RESPONSE,
        READY_FOR_QUERY,
        COPY_DONE,
        COPY_DATA,
        NO_DATA,
        PORTAL_SUSPENDED,
        PARAMETER_DESCRIPTION,
    ])
};

/// Evaluated at compile time only (an index out of range would fail the build, not a connection).
#[allow(clippy::indexing_slicing)]
const fn type_table(tags: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut i = 0;
    while i < tags.len() {
        table[tags[i] as usize] = true;
        i += 1;
    }
    table
}

/// Writes a tagged message whose body is produced by `body`, patching in the length.
pub fn put_message(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let at = out.len();
    out.put_u32(0);
    body(out);
    let len = (out.len() - at) as u32;
    if let Some(slot) = out.get_mut(at..at + 4) {
        slot.copy_from_slice(&len.to_be_bytes());
    }
}

pub fn put_cstr(out: &mut BytesMut, s: &[u8]) {
    out.put_slice(s);
    out.put_u8(0);
}

pub fn auth_ok(out: &mut BytesMut) {
    put_message(out, backend::AUTHENTICATION, |b| b.put_u32(0));
}
pub fn auth_cleartext(out: &mut BytesMut) {
    put_message(out, backend::AUTHENTICATION, |b| b.put_u32(3));
}
pub fn auth_md5(out: &mut BytesMut, salt: [u8; 4]) {
    put_message(out, backend::AUTHENTICATION, |b| {
        b.put_u32(5);
        b.put_slice(&salt);
    });
}
pub fn auth_sasl(out: &mut BytesMut, mechanisms: &[&str]) {
    put_message(out, backend::AUTHENTICATION, |b| {
        b.put_u32(10);
        for m in mechanisms {
            put_cstr(b, m.as_bytes());
        }
        b.put_u8(0);
    });
}
pub fn auth_sasl_continue(out: &mut BytesMut, data: &[u8]) {
    put_message(out, backend::AUTHENTICATION, |b| {
        b.put_u32(11);
        b.put_slice(data);
    });
}
pub fn auth_sasl_final(out: &mut BytesMut, data: &[u8]) {
    put_message(out, backend::AUTHENTICATION, |b| {
        b.put_u32(12);
        b.put_slice(data);
    });
}
pub fn parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    put_message(out, backend::PARAMETER_STATUS, |b| {
        put_cstr(b, name.as_bytes());
        put_cstr(b, value.as_bytes());
    });
}
pub fn backend_key_data(out: &mut BytesMut, pid: u32, key: u32) {
    put_message(out, backend::BACKEND_KEY_DATA, |b| {
        b.put_u32(pid);
        b.put_u32(key);
    });
}
pub fn ready_for_query(out: &mut BytesMut, status: TxStatus) {
    put_message(out, backend::READY_FOR_QUERY, |b| b.put_u8(status.as_byte()));
}
/// NegotiateProtocolVersion: the newest minor version we support (0) and options we did not recognise.
pub fn negotiate_protocol_version(out: &mut BytesMut, unrecognized: &[&str]) {
    put_message(out, backend::NEGOTIATE_PROTOCOL_VERSION, |b| {
        b.put_u32(196_608);
        b.put_u32(unrecognized.len() as u32);
        for o in unrecognized {
            put_cstr(b, o.as_bytes());
        }
    });
}
/// A simple-protocol Query, for the statements pgsluice itself sends to a server.
pub fn query(out: &mut BytesMut, sql: &str) {
    put_message(out, frontend::QUERY, |b| put_cstr(b, sql.as_bytes()));
}
pub fn terminate(out: &mut BytesMut) {
    put_message(out, frontend::TERMINATE, |_| {});
}

/// Body of a PasswordMessage ('p') holding a password or md5 response: the bytes before the NUL.
pub fn password_body(body: &[u8]) -> Result<&[u8], ProtocolError> {
    match body.split_last() {
        Some((0, s)) if !s.contains(&0) => Ok(s),
        _ => Err(ProtocolError::Malformed("password message must be one NUL-terminated string")),
    }
}

/// Body of a SASLInitialResponse: (mechanism, data). A data length of -1 means no data.
pub fn sasl_initial_response(body: &[u8]) -> Result<(&[u8], &[u8]), ProtocolError> {
    let end = memchr::memchr(0, body).ok_or(ProtocolError::Malformed("SASL mechanism not terminated"))?;
    let (mechanism, rest) = body.split_at(end);
    let rest = rest.get(1..).unwrap_or_default();
    let [a, b, c, d, data @ ..] = rest else {
        return Err(ProtocolError::Malformed("SASL length missing"));
    };
    let len = i32::from_be_bytes([*a, *b, *c, *d]);
    match usize::try_from(len) {
        Ok(n) if n == data.len() => Ok((mechanism, data)),
        Err(_) if len == -1 && data.is_empty() => Ok((mechanism, data)),
        _ => Err(ProtocolError::Malformed("SASL data length does not match the message")),
    }
}

/// Body of an ErrorResponse/NoticeResponse: (severity, sqlstate, message), any missing as "".
pub fn error_fields(body: &[u8]) -> (String, String, String) {
    let (mut sev, mut code, mut msg) = (String::new(), String::new(), String::new());
    let mut rest = body;
    while let [kind, tail @ ..] = rest {
        if *kind == 0 {
            break;
        }
        let Some(end) = memchr::memchr(0, tail) else {
            break;
        };
        let (value, after) = tail.split_at(end);
        let value = String::from_utf8_lossy(value).into_owned();
        match *kind {
            error_field::SEVERITY_NONLOCALIZED => sev = value,
            error_field::SEVERITY if sev.is_empty() => sev = value,
            error_field::CODE => code = value,
            error_field::MESSAGE => msg = value,
            _ => {}
        }
        rest = after.get(1..).unwrap_or_default();
    }
    (sev, code, msg)
}

/// Body of a DataRow as text columns (NULL = `None`); `None` if the body is malformed.
pub fn data_row_text(body: &[u8]) -> Option<Vec<Option<String>>> {
    let n = u16::from_be_bytes(body.get(..2)?.try_into().ok()?) as usize;
    let mut at = 2;
    let mut cols = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let len = i32::from_be_bytes(body.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        if len < 0 {
            cols.push(None);
            continue;
        }
        let v = body.get(at..at + len as usize)?;
        at += len as usize;
        cols.push(Some(String::from_utf8_lossy(v).into_owned()));
    }
    Some(cols)
}

/// Body of a ParameterStatus: (name, value).
/// The SQLSTATE (`C` field) of an ErrorResponse or NoticeResponse body.
pub fn error_code(body: &[u8]) -> Option<&[u8]> {
    body.split(|b| *b == 0).find_map(|f| f.strip_prefix(&[error_field::CODE]))
}

pub fn parameter_status_fields(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = memchr::memchr(0, body)?;
    let (name, rest) = body.split_at(end);
    let rest = rest.get(1..)?;
    let vend = memchr::memchr(0, rest)?;
    Some((name, rest.get(..vend)?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn message_type_tables_match_the_protocol() {
        let frontend: Vec<u8> = (0..=255u8).filter(|t| is_frontend_type(*t)).collect();
        assert_eq!(frontend, b"BCDEFHPQSXcdf");
        let backend: Vec<u8> = (0..=255u8).filter(|t| is_backend_type(*t)).collect();
        assert_eq!(backend, b"123ACDEGHINSTVZcdnst");
    }

    #[test]
    fn writers_patch_lengths() {
        let mut out = BytesMut::new();
        ready_for_query(&mut out, TxStatus::Idle);
        assert_eq!(&out[..], b"Z\0\0\0\x05I");
        out.clear();
        parameter_status(&mut out, "a", "b");
        assert_eq!(&out[..], b"S\0\0\0\x08a\0b\0");
    }

    #[test]
    fn sasl_initial_response_checks_inner_length() {
        let mut body = b"SCRAM-SHA-256\0".to_vec();
        body.extend_from_slice(&3i32.to_be_bytes());
        body.extend_from_slice(b"abc");
        assert_eq!(sasl_initial_response(&body).unwrap(), (&b"SCRAM-SHA-256"[..], &b"abc"[..]));
        for bad in [0x7fff_ffffi32, -1, 4, 2] {
            let mut b = b"SCRAM-SHA-256\0".to_vec();
            b.extend_from_slice(&bad.to_be_bytes());
            b.extend_from_slice(b"abc");
            assert!(sasl_initial_response(&b).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_fields_tolerate_missing_code() {
        assert_eq!(error_fields(b"SERROR\0Mboom\0\0"), ("ERROR".into(), "".into(), "boom".into()));
        assert_eq!(error_fields(b"Mtrunc"), ("".into(), "".into(), "".into()));
    }
}
