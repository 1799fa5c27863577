//! SQLSTATE codes the proxy originates, `PgError` (what becomes an ErrorResponse/NoticeResponse) and
//! `ProtocolError` (what a peer did wrong on the wire).

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};

use super::tags::{backend, error_field};

/// A five-character SQLSTATE. Only the codes pgsluice sends on its own are named here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlState(pub &'static str);

impl SqlState {
    pub const FEATURE_NOT_SUPPORTED: SqlState = SqlState("0A000");
    pub const PROTOCOL_VIOLATION: SqlState = SqlState("08P01");
    pub const CONNECTION_FAILURE: SqlState = SqlState("08006");
    pub const CANNOT_CONNECT_NOW: SqlState = SqlState("57P03");
    pub const ADMIN_SHUTDOWN: SqlState = SqlState("57P01");
    pub const QUERY_CANCELED: SqlState = SqlState("57014");
    pub const IDLE_SESSION_TIMEOUT: SqlState = SqlState("57P05");
    pub const IDLE_IN_TRANSACTION_TIMEOUT: SqlState = SqlState("25P03");
    pub const TRANSACTION_TIMEOUT: SqlState = SqlState("25P04");
    pub const TOO_MANY_CONNECTIONS: SqlState = SqlState("53300");
    pub const INVALID_PASSWORD: SqlState = SqlState("28P01");
    pub const INVALID_AUTHORIZATION: SqlState = SqlState("28000");
    pub const INVALID_CATALOG_NAME: SqlState = SqlState("3D000");
    pub const INSUFFICIENT_PRIVILEGE: SqlState = SqlState("42501");
    pub const CONFIG_FILE_ERROR: SqlState = SqlState("F0000");
    pub const INTERNAL_ERROR: SqlState = SqlState("XX000");
    pub const DUPLICATE_PREPARED_STATEMENT: SqlState = SqlState("42P05");
    pub const INVALID_SQL_STATEMENT_NAME: SqlState = SqlState("26000");
    pub const SYNTAX_ERROR: SqlState = SqlState("42601");
    pub const UNDEFINED_OBJECT: SqlState = SqlState("42704");
    pub const INVALID_PARAMETER_VALUE: SqlState = SqlState("22023");
    pub const CANT_CHANGE_RUNTIME_PARAM: SqlState = SqlState("55P02");
    pub const OBJECT_NOT_IN_PREREQUISITE_STATE: SqlState = SqlState("55000");
    pub const PROGRAM_LIMIT_EXCEEDED: SqlState = SqlState("54000");
    pub const OUT_OF_MEMORY: SqlState = SqlState("53200");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
    Notice,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Notice => "NOTICE",
        }
    }
}

/// An error or notice pgsluice itself sends to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    pub severity: Severity,
    /// SQLSTATE: one of ours, or a server's forwarded as it was.
    pub code: Cow<'static, str>,
    pub message: String,
    /// The HINT field, if any.
    pub hint: Option<&'static str>,
    /// The DETAIL field, if any.
    pub detail: Option<String>,
}

impl PgError {
    pub fn error(code: SqlState, message: impl Into<String>) -> Self {
        PgError {
            severity: Severity::Error,
            code: Cow::Borrowed(code.0),
            message: message.into(),
            hint: None,
            detail: None,
        }
    }
    pub fn fatal(code: SqlState, message: impl Into<String>) -> Self {
        PgError {
            severity: Severity::Fatal,
            code: Cow::Borrowed(code.0),
            message: message.into(),
            hint: None,
            detail: None,
        }
    }
    pub fn notice(message: impl Into<String>) -> Self {
        PgError {
            severity: Severity::Notice,
            code: Cow::Borrowed("00000"),
            message: message.into(),
            hint: None,
            detail: None,
        }
    }
    /// A server's error passed on with its own SQLSTATE (anything not 5 characters becomes 08006).
    pub fn forwarded(severity: Severity, code: &str, message: impl Into<String>) -> Self {
        let code =
            if code.len() == 5 && code.is_ascii() { Cow::Owned(code.to_string()) } else { Cow::Borrowed("08006") };
        PgError { severity, code, message: message.into(), hint: None, detail: None }
    }
    pub fn with_hint(mut self, hint: &'static str) -> Self {
        self.hint = Some(hint);
        self
    }
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
    pub fn is_fatal(&self) -> bool {
        self.severity == Severity::Fatal
    }

    /// Appends the ErrorResponse ('E') or NoticeResponse ('N') to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let tag = if self.severity == Severity::Notice { backend::NOTICE_RESPONSE } else { backend::ERROR_RESPONSE };
        let sev = self.severity.as_str();
        let hint = self.hint.map(|h| (error_field::HINT, h));
        let detail = self.detail.as_deref().map(|d| (error_field::DETAIL, d));
        let base = [
            (error_field::SEVERITY, sev),
            (error_field::SEVERITY_NONLOCALIZED, sev),
            (error_field::CODE, &*self.code),
            (error_field::MESSAGE, self.message.as_str()),
        ];
        let fields = base.into_iter().chain(detail).chain(hint);
        let len = 4 + 1 + fields.clone().map(|(_, v)| 2 + v.len()).sum::<usize>();
        out.put_u8(tag);
        out.put_u32(len as u32);
        for (k, v) in fields {
            out.put_u8(k);
            out.put_slice(v.as_bytes());
            out.put_u8(0);
        }
        out.put_u8(0);
    }
}

/// A peer broke the framing rules. Always answered with FATAL 08P01 (where an answer is possible) and a close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("invalid length of startup packet ({0})")]
    BadStartupLength(usize),
    #[error("invalid message length {len} for message type 0x{tag:02x}")]
    BadLength { tag: u8, len: usize },
    #[error("malformed startup packet: {0}")]
    BadStartup(&'static str),
    #[error("unexpected message type 0x{0:02x}")]
    UnexpectedMessage(u8),
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    #[error("received unencrypted data after SSL request")]
    DataAfterSslRequest,
    #[error("message too large for this context ({0} bytes)")]
    TooLarge(usize),
    /// PostgreSQL's own wording (postgres.c), with the type as a decimal number.
    #[error("invalid frontend message type {0}")]
    InvalidFrontendType(u8),
    #[error("duplicate startup parameter \"{0}\"")]
    DuplicateStartupParameter(String),
    #[error("server sent an invalid message type 0x{0:02x}")]
    InvalidBackendType(u8),
}

impl From<ProtocolError> for PgError {
    fn from(e: ProtocolError) -> Self {
        PgError::fatal(SqlState::PROTOCOL_VIOLATION, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_layout() {
        let mut out = BytesMut::new();
        PgError::error(SqlState::QUERY_CANCELED, "x").encode(&mut out);
        let expected: &[u8] = b"E\0\0\0\x1dSERROR\0VERROR\0C57014\0Mx\0\0";
        assert_eq!(&out[..], expected);
    }
}
