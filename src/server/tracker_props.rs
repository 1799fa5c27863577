//! Property tests of the tracker against a small model of a PostgreSQL backend: whatever well-formed
//! client stream is sent, and however the client's messages, the backend's work and the delivery of its
//! replies interleave, `is_clean()` is never true while a Query, Sync or FunctionCall still has a
//! ReadyForQuery to come, while extended-protocol messages are not yet synced, in COPY FROM STDIN, or
//! inside a transaction block.

use std::collections::VecDeque;

use proptest::prelude::*;

use super::Tracker;
use crate::protocol::messages::TxStatus;
use crate::protocol::tags::frontend;

/// How the backend answers one client message (only some apply to each tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Error,
    /// The statement is a COPY FROM STDIN (Query and Execute only).
    CopyIn,
    /// BEGIN (Query and Execute only).
    Begin,
    /// COMMIT (Query and Execute only).
    Commit,
}

#[derive(Debug, Clone, Copy)]
struct Msg {
    tag: u8,
    outcome: Outcome,
}

/// What the backend sends that the tracker is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    Ready(TxStatus),
    Error,
    CopyInResponse,
    /// Anything else (ParseComplete, rows, CommandComplete...).
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Copy {
    Simple,
    Extended,
}

/// PostgreSQL's side, as postgres.c and copyfromparse.c behave.
#[derive(Debug, Clone)]
struct Backend {
    /// Sent by the client, not yet read by the backend.
    input: VecDeque<Msg>,
    /// Sent by the backend, not yet delivered to pgsluice.
    output: VecDeque<Reply>,
    status: TxStatus,
    /// After an error in an extended-protocol message: everything up to Sync is discarded.
    skipping: bool,
    copy: Option<Copy>,
    /// Extended-protocol messages run since the last Sync (an implicit transaction may be open).
    unsynced: bool,
}

impl Backend {
    fn new() -> Self {
        Backend {
            input: VecDeque::new(),
            output: VecDeque::new(),
            status: TxStatus::Idle,
            skipping: false,
            copy: None,
            unsynced: false,
        }
    }

    fn error(&mut self) {
        self.output.push_back(Reply::Error);
        if self.status == TxStatus::InBlock {
            self.status = TxStatus::Failed;
        }
    }

    fn ready(&mut self) {
        self.output.push_back(Reply::Ready(self.status));
    }

    /// Runs a statement (of a Query or an Execute); true when it succeeded.
    fn run(&mut self, outcome: Outcome, kind: Copy) -> bool {
        if self.status == TxStatus::Failed && outcome != Outcome::Commit {
            self.error(); // current transaction is aborted, commands ignored until end of block
            return false;
        }
        match outcome {
            Outcome::Error => {
                self.error();
                return false;
            }
            Outcome::CopyIn => {
                self.output.push_back(Reply::CopyInResponse);
                self.copy = Some(kind);
                return true;
            }
            Outcome::Begin => self.status = TxStatus::InBlock,
            Outcome::Commit => self.status = TxStatus::Idle,
            Outcome::Ok => {}
        }
        self.output.push_back(Reply::Other);
        true
    }

    fn during_copy(&mut self, kind: Copy, m: Msg) {
        match m.tag {
            // Data; Sync and Flush are ignored during COPY FROM STDIN.
            frontend::COPY_DATA | frontend::SYNC | frontend::FLUSH => {}
            frontend::COPY_DONE => {
                self.copy = None;
                self.output.push_back(Reply::Other); // CommandComplete
                if kind == Copy::Simple {
                    self.ready();
                }
            }
            _ => {
                // CopyFail, or a message the client should not send now: the COPY fails.
                self.copy = None;
                self.error();
                match kind {
                    Copy::Simple => self.ready(),
                    Copy::Extended => self.skipping = true,
                }
            }
        }
    }

    /// Reads and acts on the next client message.
    fn step(&mut self) {
        let Some(m) = self.input.pop_front() else { return };
        if let Some(kind) = self.copy {
            return self.during_copy(kind, m);
        }
        if self.skipping && m.tag != frontend::SYNC {
            return;
        }
        match m.tag {
            frontend::QUERY => {
                if self.unsynced && self.status == TxStatus::Idle {
                    self.unsynced = false; // a Query commits the implicit transaction first
                }
                if self.run(m.outcome, Copy::Simple) {
                    if self.copy.is_none() {
                        self.ready();
                    }
                } else {
                    self.ready();
                }
            }
            frontend::FUNCTION_CALL => {
                if m.outcome == Outcome::Error || self.status == TxStatus::Failed {
                    self.error();
                } else {
                    self.output.push_back(Reply::Other);
                }
                self.ready();
            }
            frontend::SYNC => {
                self.skipping = false;
                self.unsynced = false;
                self.ready();
            }
            frontend::EXECUTE => {
                self.unsynced = true;
                if !self.run(m.outcome, Copy::Extended) {
                    self.skipping = true;
                }
            }
            frontend::PARSE | frontend::BIND | frontend::DESCRIBE | frontend::CLOSE => {
                self.unsynced = true;
                if m.outcome == Outcome::Error {
                    self.error();
                    self.skipping = true;
                } else {
                    self.output.push_back(Reply::Other);
                }
            }
            frontend::FLUSH => self.unsynced = true,
            _ => {} // CopyData, CopyDone, CopyFail outside COPY: ignored
        }
    }

    /// Whether a server in this state, with these messages still unread, may serve another client:
    /// once everything sent is read, no reply is left to deliver and no transaction, pipeline or COPY
    /// is open.
    fn truly_clean(&self) -> bool {
        let mut after = self.clone();
        while !after.input.is_empty() {
            after.step();
        }
        after.output.is_empty()
            && after.status == TxStatus::Idle
            && !after.unsynced
            && !after.skipping
            && after.copy.is_none()
    }
}

/// One batch of a well-behaved client (what libpq, JDBC and friends send).
#[derive(Debug, Clone)]
enum Batch {
    Simple(Outcome),
    /// Extended messages, optionally a COPY at the Execute with `syncs_in_copy` Syncs sent before its
    /// data (libpq sends one), then Sync unless `synced` is false.
    Extended {
        msgs: Vec<Msg>,
        copy: Option<(usize, bool)>,
        synced: bool,
    },
    Function(Outcome),
    /// CopyData, CopyDone or CopyFail with no COPY running (after a COPY failed).
    Stray(u8),
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        6 => Just(Outcome::Ok),
        2 => Just(Outcome::Error),
        1 => Just(Outcome::Begin),
        1 => Just(Outcome::Commit),
    ]
}

fn statement_outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![8 => outcome(), 2 => Just(Outcome::CopyIn)]
}

fn extended_msg() -> impl Strategy<Value = Msg> {
    (prop::sample::select(&b"PBDCEH"[..]), outcome()).prop_map(|(tag, outcome)| {
        let outcome = match (tag, outcome) {
            (frontend::EXECUTE, o) | (_, o @ Outcome::Error) => o,
            _ => Outcome::Ok,
        };
        Msg { tag, outcome }
    })
}

fn batch() -> impl Strategy<Value = Batch> {
    prop_oneof![
        3 => statement_outcome().prop_map(Batch::Simple),
        4 => (prop::collection::vec(extended_msg(), 0..5), prop::option::of((0..3usize, any::<bool>())), any::<bool>())
            .prop_map(|(msgs, copy, synced)| Batch::Extended { msgs, copy, synced }),
        1 => outcome().prop_map(Batch::Function),
        1 => prop::sample::select(&b"dcf"[..]).prop_map(Batch::Stray),
    ]
}

fn msg(tag: u8) -> Msg {
    Msg { tag, outcome: Outcome::Ok }
}

/// The client's messages for `batches`, in order.
fn client_stream(batches: &[Batch]) -> Vec<Msg> {
    let mut out = Vec::new();
    for b in batches {
        match b {
            Batch::Simple(o) => {
                out.push(Msg { tag: frontend::QUERY, outcome: *o });
                if *o == Outcome::CopyIn {
                    out.extend([msg(frontend::COPY_DATA), msg(frontend::COPY_DONE)]);
                }
            }
            Batch::Extended { msgs, copy, synced } => {
                out.extend(msgs);
                if let Some((syncs, fail)) = copy {
                    out.push(Msg { tag: frontend::EXECUTE, outcome: Outcome::CopyIn });
                    out.extend(std::iter::repeat_n(msg(frontend::SYNC), *syncs));
                    out.extend([
                        msg(frontend::COPY_DATA),
                        msg(if *fail { frontend::COPY_FAIL } else { frontend::COPY_DONE }),
                    ]);
                }
                if *synced {
                    out.push(msg(frontend::SYNC));
                }
            }
            Batch::Function(o) => out.push(Msg { tag: frontend::FUNCTION_CALL, outcome: *o }),
            Batch::Stray(tag) => out.push(msg(*tag)),
        }
    }
    out
}

/// Feeds `stream` through the backend model and the tracker in the order `schedule` picks (0: the
/// client sends its next message, 1: the backend reads one, 2: one reply is delivered; a choice that
/// cannot be made falls to the next), then drains everything. Checks the tracker after every step.
fn run(stream: &[Msg], schedule: &[u8]) -> Result<(), TestCaseError> {
    let mut backend = Backend::new();
    let mut tracker = Tracker::default();
    let mut to_send = stream.iter().copied();
    let mut next = to_send.next();
    let mut choices = schedule.iter().copied().chain(std::iter::repeat(0));
    let mut steps = 0;
    loop {
        let mut choice = choices.next().unwrap_or(0) % 3;
        let mut moved = false;
        for _ in 0..3 {
            match choice {
                0 if next.is_some() => {
                    if let Some(m) = next {
                        tracker.on_client(m.tag);
                        backend.input.push_back(m);
                    }
                    next = to_send.next();
                }
                1 if !backend.input.is_empty() => backend.step(),
                2 if !backend.output.is_empty() => match backend.output.pop_front() {
                    Some(Reply::Ready(s)) => tracker.on_ready(s),
                    Some(Reply::Error) => tracker.on_error(),
                    Some(Reply::CopyInResponse) => tracker.on_copy_in(),
                    _ => {}
                },
                _ => {
                    choice = (choice + 1) % 3;
                    continue;
                }
            }
            moved = true;
            break;
        }
        if !moved {
            return Ok(());
        }
        steps += 1;
        prop_assert!(
            !tracker.is_clean() || backend.truly_clean(),
            "clean too early after {steps} steps: {tracker:?}, backend {backend:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn never_clean_while_the_server_owes_replies(
        batches in prop::collection::vec(batch(), 1..8),
        schedule in prop::collection::vec(any::<u8>(), 0..80),
    ) {
        run(&client_stream(&batches), &schedule)?;
    }
}
