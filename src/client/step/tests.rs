//! The passes without sockets: bytes in, what happened out.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bytes::{BufMut, BytesMut};

use super::*;
use crate::config::SessionStatePolicy;
use crate::protocol::frame::MAX_MESSAGE_LEN;
use crate::protocol::tags::{backend, frontend};

/// One client and its server, as the session holds them between passes.
struct Fixture {
    stmts: Statements,
    state: SessionState,
    server: ServerModel,
    client_scanner: FrameScanner,
    server_scanner: FrameScanner,
    edits: Edits,
    tx_query: Vec<u8>,
    mode: PoolMode,
    errors: Vec<Vec<u8>>,
}

impl Fixture {
    fn new(mode: PoolMode, policy: SessionStatePolicy, max_prepared: usize) -> Fixture {
        Fixture {
            stmts: Statements::new(max_prepared, Arc::new(AtomicU64::new(1))),
            state: SessionState::new(policy, mode),
            server: ServerModel::default(),
            client_scanner: FrameScanner::new(MAX_MESSAGE_LEN),
            server_scanner: FrameScanner::new(MAX_MESSAGE_LEN),
            edits: Edits::default(),
            tx_query: Vec::new(),
            mode,
            errors: Vec::new(),
        }
    }

    fn transaction_mode() -> Fixture {
        Fixture::new(PoolMode::Transaction, SessionStatePolicy::Isolate, 0)
    }

    fn client(&mut self, bytes: &[u8]) -> ClientPass {
        let mut cx = ClientContext {
            stmts: &mut self.stmts,
            state: &mut self.state,
            tx_query: Some(&mut self.tx_query),
            backslash_quotes: false,
        };
        client_pass(&mut self.client_scanner, bytes, &mut self.server, &mut cx, &mut self.edits).expect("client pass")
    }

    fn server(&mut self, bytes: &[u8]) -> ServerPass {
        let mut cx = ServerContext { mode: self.mode, stmts: &self.stmts, state: &mut self.state };
        let errors = &mut self.errors;
        let mut on_error = |code: &[u8]| errors.push(code.to_vec());
        server_pass(&mut self.server_scanner, bytes, &mut self.server, &mut cx, &mut self.edits, &mut on_error)
            .expect("server pass")
    }

    /// What the last pass forwards.
    fn forwarded(&self, input: &[u8], consumed: usize) -> Vec<u8> {
        let mut wbuf = BytesMut::new();
        self.edits.apply(&input[..consumed], &mut wbuf).to_vec()
    }
}

fn query(sql: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    messages::query(&mut b, sql);
    b.to_vec()
}

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    put_message(&mut b, tag, |m| m.put_slice(body));
    b.to_vec()
}

fn ready(status: TxStatus) -> Vec<u8> {
    let mut b = BytesMut::new();
    messages::ready_for_query(&mut b, status);
    b.to_vec()
}

fn command_complete(tag: &str) -> Vec<u8> {
    msg(backend::COMMAND_COMPLETE, format!("{tag}\0").as_bytes())
}

fn error(code: &str) -> Vec<u8> {
    msg(backend::ERROR_RESPONSE, format!("SERROR\0C{code}\0Mboom\0\0").as_bytes())
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn a_query_is_passed_whole_and_leaves_the_server_busy() {
    let mut f = Fixture::transaction_mode();
    let q = query("select 1");
    let pass = f.client(&q);
    assert_eq!(pass, ClientPass { consumed: q.len(), ..ClientPass::default() });
    assert!(f.server.tracker.busy());
    assert_eq!(f.forwarded(&q, pass.consumed), q);
    assert_eq!(f.tx_query, b"select 1");
}

#[test]
fn terminate_and_invalid_messages_stop_the_client_pass_before_them() {
    let mut f = Fixture::transaction_mode();
    let q = query("select 1");
    let input = cat(&[&q, &msg(frontend::TERMINATE, b"")]);
    let pass = f.client(&input);
    assert!(pass.terminate);
    assert_eq!(pass.consumed, q.len());

    let mut f = Fixture::transaction_mode();
    let input = cat(&[&q, &msg(backend::READY_FOR_QUERY, b"I")]); // a server's message from the client
    let pass = f.client(&input);
    assert_eq!(pass.invalid, Some(b'Z'));
    assert_eq!(pass.consumed, q.len());
}

#[test]
fn a_clean_ready_for_query_releases_and_ends_the_server_pass() {
    let mut f = Fixture::transaction_mode();
    f.client(&query("select 1"));
    let answer = cat(&[&command_complete("SELECT 1"), &ready(TxStatus::Idle)]);
    let next = msg(backend::NOTICE_RESPONSE, b"SNOTICE\0\0"); // for whoever comes next: not this pass's
    let pass = f.server(&cat(&[&answer, &next]));
    assert!(pass.release);
    assert_eq!(pass.ready, 1);
    assert_eq!(pass.consumed, answer.len());
    assert!(f.server.is_clean());
}

#[test]
fn a_transaction_left_open_keeps_the_server() {
    let mut f = Fixture::transaction_mode();
    f.client(&query("begin"));
    let pass = f.server(&cat(&[&command_complete("BEGIN"), &ready(TxStatus::InBlock)]));
    assert!(!pass.release);
    assert_eq!(pass.ready, 1);
    assert!(f.server.tracker.in_transaction());
}

#[test]
fn session_mode_never_releases_and_statement_mode_refuses_a_transaction() {
    let mut f = Fixture::new(PoolMode::Session, SessionStatePolicy::Isolate, 0);
    f.client(&query("select 1"));
    let pass = f.server(&cat(&[&command_complete("SELECT 1"), &ready(TxStatus::Idle)]));
    assert!(!pass.release);
    assert_eq!(pass.ready, 1);

    let mut f = Fixture::new(PoolMode::Statement, SessionStatePolicy::Isolate, 0);
    f.client(&query("begin"));
    let begun = command_complete("BEGIN");
    let pass = f.server(&cat(&[&begun, &ready(TxStatus::InBlock)]));
    assert!(pass.statement_mode_block);
    assert_eq!(pass.consumed, begun.len(), "stopped before the ReadyForQuery");
}

#[test]
fn a_notification_reaches_no_client_in_transaction_mode_and_its_own_in_session_mode() {
    let notify = msg(backend::NOTIFICATION_RESPONSE, b"\0\0\0\x07chan\0payload\0");
    let rows = msg(backend::DATA_ROW, b"\0\x01\0\0\0\x011");
    let input = cat(&[&notify, &rows]);

    let mut f = Fixture::transaction_mode();
    f.client(&query("select 1"));
    let pass = f.server(&input);
    assert_eq!(pass.consumed, input.len());
    assert_eq!(f.forwarded(&input, pass.consumed), rows);

    let mut f = Fixture::new(PoolMode::Session, SessionStatePolicy::Isolate, 0);
    f.client(&query("select 1"));
    let pass = f.server(&input);
    assert_eq!(f.forwarded(&input, pass.consumed), input);
}

#[test]
fn parameter_changes_and_error_codes_are_reported() {
    let mut f = Fixture::transaction_mode();
    f.client(&query("set timezone = 'UTC'; select 1/0"));
    let input = cat(&[
        &msg(backend::PARAMETER_STATUS, b"TimeZone\0UTC\0"),
        &command_complete("SET"),
        &error("22012"),
        &ready(TxStatus::Idle),
    ]);
    let pass = f.server(&input);
    assert_eq!(pass.parameters, vec![(b"TimeZone".to_vec(), b"UTC".to_vec())]);
    assert_eq!(f.errors, vec![b"22012".to_vec()]);
    assert!(pass.release);
    assert_eq!(f.forwarded(&input, pass.consumed), input, "passed on unchanged");
}

#[test]
fn a_message_no_server_may_send_stops_the_server_pass() {
    let mut f = Fixture::transaction_mode();
    f.client(&query("select 1"));
    let rows = msg(backend::DATA_ROW, b"\0\x01\0\0\0\x011");
    let pass = f.server(&cat(&[&rows, &msg(frontend::QUERY, b"x\0")]));
    assert_eq!(pass.invalid, Some(b'Q'));
    assert_eq!(pass.consumed, rows.len());
}

#[test]
fn a_refused_statement_is_answered_in_place_and_never_reaches_the_server() {
    let mut f = Fixture::new(PoolMode::Transaction, SessionStatePolicy::Refuse, 0);
    let q = query("listen chan");
    let pass = f.client(&q);
    assert_eq!(pass.consumed, q.len());
    let out = f.forwarded(&q, pass.consumed);
    assert_ne!(out, q, "replaced");
    assert!(!out.windows(11).any(|w| w == b"listen chan"), "the LISTEN itself is not sent: {out:?}");
}

#[test]
fn named_statements_are_renamed_for_the_server_when_rewriting() {
    let mut f = Fixture::new(PoolMode::Transaction, SessionStatePolicy::Isolate, 100);
    let parse = msg(frontend::PARSE, b"mine\0select 1\0\0\0");
    let input = cat(&[&parse, &msg(frontend::SYNC, b"")]);
    let pass = f.client(&input);
    assert_eq!(pass.consumed, input.len());
    let out = f.forwarded(&input, pass.consumed);
    assert!(!out.windows(5).any(|w| w == b"mine\0"), "the client's name does not reach the server");
    assert!(out.windows(9).any(|w| w == b"select 1\0"));
    // Its ParseComplete is the client's; the server's answer releases the server once all is answered.
    let answer = cat(&[&msg(backend::PARSE_COMPLETE, b""), &ready(TxStatus::Idle)]);
    let pass = f.server(&answer);
    assert!(pass.release);
    assert!(f.server.is_clean());
}

#[test]
fn splices_drop_and_insert_in_order() {
    let mut edits = Edits::default();
    edits.extra.extend_from_slice(b"XY");
    edits.splices.push(Splice { at: 1, drop: 2, insert: Insert::Extra(0..2) });
    edits.splices.push(Splice::adding(4, bytes::Bytes::from_static(b"!")));
    edits.splices.push(Splice::dropping(5, 0));
    let mut wbuf = BytesMut::new();
    assert_eq!(edits.apply(b"abcdefg", &mut wbuf), b"aXYd!eg");
    edits.splices.clear();
    assert_eq!(edits.apply(b"abc", &mut wbuf), b"abc", "no splice: the input itself");
}
