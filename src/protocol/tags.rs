//! The type bytes of protocol v3 messages, by direction: the same byte means different messages from a
//! client (`frontend`) and from a server (`backend`), e.g. `D` is Describe one way and DataRow the other.
//! Plain `u8` constants, so they work in `match` patterns. Also the field codes inside an ErrorResponse
//! or NoticeResponse body (`error_field`), which are not message types.

/// Messages a client sends (after the startup packet, which has no type byte).
pub mod frontend {
    pub const BIND: u8 = b'B';
    pub const CLOSE: u8 = b'C';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const FLUSH: u8 = b'H';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const PARSE: u8 = b'P';
    pub const QUERY: u8 = b'Q';
    pub const SYNC: u8 = b'S';
    pub const TERMINATE: u8 = b'X';
    /// PasswordMessage, SASLInitialResponse, SASLResponse and GSSResponse all share this byte: which one
    /// it is follows from the authentication request it answers.
    pub const PASSWORD: u8 = b'p';
}

/// Messages a server sends.
pub mod backend {
    /// Every authentication request (AuthenticationOk, ...CleartextPassword, ...SASL, ...): the body's
    /// first four bytes say which.
    pub const AUTHENTICATION: u8 = b'R';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const BIND_COMPLETE: u8 = b'2';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    pub const DATA_ROW: u8 = b'D';
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
    pub const NO_DATA: u8 = b'n';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const PORTAL_SUSPENDED: u8 = b's';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ROW_DESCRIPTION: u8 = b'T';
}

/// Field codes inside an ErrorResponse or NoticeResponse body (each a code byte, then a NUL-terminated
/// string; a lone NUL ends the body). Not message types.
pub mod error_field {
    /// Severity, possibly localized.
    pub const SEVERITY: u8 = b'S';
    /// Severity, never localized (PostgreSQL 9.6 and later).
    pub const SEVERITY_NONLOCALIZED: u8 = b'V';
    /// The SQLSTATE.
    pub const CODE: u8 = b'C';
    pub const MESSAGE: u8 = b'M';
    pub const DETAIL: u8 = b'D';
    pub const HINT: u8 = b'H';
    pub const POSITION: u8 = b'P';
    pub const INTERNAL_POSITION: u8 = b'p';
    pub const INTERNAL_QUERY: u8 = b'q';
    pub const WHERE: u8 = b'W';
    pub const SCHEMA_NAME: u8 = b's';
    pub const TABLE_NAME: u8 = b't';
    pub const COLUMN_NAME: u8 = b'c';
    pub const DATA_TYPE_NAME: u8 = b'd';
    pub const CONSTRAINT_NAME: u8 = b'n';
    pub const FILE: u8 = b'F';
    pub const LINE: u8 = b'L';
    /// The name of the server's source routine reporting the error (never translated).
    pub const ROUTINE: u8 = b'R';
}

#[cfg(test)]
mod tests {
    use super::{backend, error_field, frontend};

    fn assert_distinct(all: &[u8]) {
        let mut sorted = all.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), all.len(), "a byte named twice in {:?}", String::from_utf8_lossy(all));
    }

    #[test]
    fn no_byte_names_two_messages_of_one_direction() {
        use backend::*;
        use frontend::*;
        assert_distinct(&[
            BIND,
            CLOSE,
            frontend::COPY_DATA,
            frontend::COPY_DONE,
            COPY_FAIL,
            DESCRIBE,
            EXECUTE,
            FLUSH,
            FUNCTION_CALL,
            PARSE,
            QUERY,
            SYNC,
            TERMINATE,
            PASSWORD,
        ]);
        assert_distinct(&[
            AUTHENTICATION,
            BACKEND_KEY_DATA,
            BIND_COMPLETE,
            CLOSE_COMPLETE,
            COMMAND_COMPLETE,
            backend::COPY_DATA,
            backend::COPY_DONE,
            COPY_IN_RESPONSE,
            COPY_OUT_RESPONSE,
            COPY_BOTH_RESPONSE,
            DATA_ROW,
            EMPTY_QUERY_RESPONSE,
            ERROR_RESPONSE,
            FUNCTION_CALL_RESPONSE,
            NEGOTIATE_PROTOCOL_VERSION,
            NO_DATA,
            NOTICE_RESPONSE,
            NOTIFICATION_RESPONSE,
            PARAMETER_DESCRIPTION,
            PARAMETER_STATUS,
            PARSE_COMPLETE,
            PORTAL_SUSPENDED,
            READY_FOR_QUERY,
            ROW_DESCRIPTION,
        ]);
    }

    #[test]
    fn error_field_codes_are_distinct() {
        use error_field::*;
        assert_distinct(&[
            SEVERITY,
            SEVERITY_NONLOCALIZED,
            CODE,
            MESSAGE,
            DETAIL,
            HINT,
            POSITION,
            INTERNAL_POSITION,
            INTERNAL_QUERY,
            WHERE,
            SCHEMA_NAME,
            TABLE_NAME,
            COLUMN_NAME,
            DATA_TYPE_NAME,
            CONSTRAINT_NAME,
            FILE,
            LINE,
            ROUTINE,
        ]);
    }
}
