//! Named prepared statements in transaction mode. Each client keeps its own statement names; the
//! server-side name is derived from the statement's text and parameter types, so one statement is
//! prepared at most once per server and lazily on whichever server the client lands on. Parse, Bind,
//! Describe and Close are rewritten here; the replies they change are queued in the server's
//! `ReplyQueue`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::frame::Header;
use crate::protocol::messages::{self, put_message};
use crate::protocol::tags::frontend;
use crate::protocol::{PgError, SqlState};
use crate::server::ServerModel;
use crate::server::replies::{BoundStatement, Drift, Entry, Outcome, PlanChanged, Prepared, Request, Undo};

mod names;
mod sql;
pub use names::HeldLimits;
use names::{Names, names_a_pooled_statement, server_name_for};

const PARSE_COMPLETE: &[u8] = b"1\0\0\0\x04";
const CLOSE_COMPLETE: &[u8] = b"3\0\0\0\x04";

/// One client statement: pgsluice's name for it and the Parse body after the name.
#[derive(Debug)]
struct Statement {
    server_name: Bytes,
    rest: Bytes,
}

/// What to do with one client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Forward the original bytes.
    Keep,
    /// Forward `out[range]` instead (empty = drop the message).
    Replace(std::ops::Range<usize>),
    /// Replace only the first `drop` bytes (header and names) of a message too big to hold with
    /// `out[with]`; the rest of it streams through unchanged.
    ReplaceHead { drop: usize, with: std::ops::Range<usize> },
    /// Show the message again once it is buffered whole (a named Parse, or a message to drop, too big
    /// to see at once).
    HoldWhole,
}

/// The client's unnamed statement, which PostgreSQL keeps across Syncs until the next unnamed Parse or
/// simple Query.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Unnamed {
    /// The client has none.
    #[default]
    None,
    /// Its Parse body after the name is in `unnamed_rest`.
    Known,
    /// It was too big to keep: it cannot be prepared again on another server.
    TooBig,
}

#[derive(Debug, Default)]
pub struct Statements {
    by_name: Names,
    limits: HeldLimits,
    unnamed: Unnamed,
    /// Reused for every unnamed Parse (no allocation per message once grown).
    unnamed_rest: BytesMut,
    /// The current server holds the client's unnamed statement (or, if the client has none, none of
    /// anybody else's). False on every newly leased server: another client may have left its own there.
    unnamed_here: bool,
    /// `max_prepared_statements` per server; 0 = feature off.
    max: usize,
    /// The pool's plan epoch, part of every server-side name (see `PoolEntry::plan_epoch`).
    epoch: Arc<AtomicU64>,
    /// Server-side names whose plan went stale under this client: Binds of the client's statements that
    /// use them fail with PostgreSQL's 0A000, as they would on a direct connection, until re-parsed.
    stale: HashSet<Bytes>,
    /// After an error pgsluice raised itself, the rest of the pipeline is skipped up to Sync.
    skipping: bool,
    /// No Bind/Execute/Describe/Close since the last Sync or Query.
    batch_started: bool,
    /// The client messages of the current batch from its first Bind through its Sync, kept so a batch
    /// whose cached plan went stale can be replayed once (see `retry`).
    capture: BytesMut,
    capture_state: Capture,
    /// The captured batch describes its portal, so the client learns the new row shape on a replay.
    capture_describes: bool,
    replaying: bool,
    /// Counted for SHOW STATS since the last `drain_counts`: named Parses from the client, Parses sent
    /// to a server, Binds of named statements.
    counts: PreparedCounts,
}

#[derive(Debug, Default, Clone, Copy)]
struct PreparedCounts {
    client_parse: u64,
    server_parse: u64,
    bind: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Capture {
    #[default]
    None,
    Open,
    Complete,
}

/// Batches larger than this are not kept for a retry.
const MAX_CAPTURE: usize = 64 * 1024;

fn cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = memchr::memchr(0, buf)?;
    Some((buf.get(..end)?, buf.get(end + 1..)?))
}

/// One whole message at the start of `buf`: (tag, body, rest).
fn split_message(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, after) = buf.split_first()?;
    let len = u32::from_be_bytes(after.get(..4)?.try_into().ok()?) as usize;
    let body = after.get(4..len)?;
    Some((tag, body, after.get(len..)?))
}

fn synth(f: impl FnOnce(&mut BytesMut)) -> Entry {
    let mut b = BytesMut::new();
    f(&mut b);
    Entry::synth(b.freeze(), None)
}

/// Unnamed statements larger than this are not kept for preparing again on another server.
const MAX_UNNAMED: usize = 256 * 1024;

impl Statements {
    pub fn new(max: usize, epoch: Arc<AtomicU64>) -> Self {
        Statements { max, epoch, ..Default::default() }
    }

    pub fn enabled(&self) -> bool {
        self.max > 0
    }

    /// The client's limits, and the process's count of held bytes that `limits.total` bounds.
    pub fn set_limits(&mut self, limits: HeldLimits, total: Arc<crate::stats::HeldBytes>) {
        self.limits = limits;
        self.by_name.total.sub(self.by_name.bytes);
        total.add(self.by_name.bytes);
        self.by_name.total = total;
    }

    /// Moves the prepared-statement counts into `totals`.
    pub fn drain_counts(&mut self, totals: &mut crate::stats::Totals) {
        let c = std::mem::take(&mut self.counts);
        totals.client_parse_count += c.client_parse;
        totals.server_parse_count += c.server_parse;
        totals.bind_count += c.bind;
    }

    /// The statement text of a Bind of one of the client's named statements (for the logs).
    pub fn text_of_bind(&self, body: &[u8]) -> Option<&[u8]> {
        let (_, after_portal) = cstr(body)?;
        let (name, _) = cstr(after_portal)?;
        let stmt = self.by_name.get(name)?;
        Some(cstr(&stmt.rest)?.0)
    }

    /// A server was leased: it may hold another client's unnamed statement, not this one's.
    pub fn on_new_server(&mut self) {
        self.unnamed_here = false;
    }

    /// Which client messages must be seen whole.
    pub fn wants_body(tag: u8) -> bool {
        // Execute, Sync and Flush are tiny; holding them lets a skipped pipeline drop them whole.
        matches!(
            tag,
            frontend::PARSE
                | frontend::BIND
                | frontend::DESCRIBE
                | frontend::CLOSE
                | frontend::QUERY
                | frontend::EXECUTE
                | frontend::SYNC
                | frontend::FLUSH
        )
    }

    /// Handles one client message bound for `conn`; replacement bytes are appended to `out`. `body` is
    /// the whole body when held; `prefix` its start for a wanted message too big to hold.
    pub fn rewrite(&mut self, msg: &Header<'_>, server: &mut ServerModel, out: &mut BytesMut) -> Edit {
        let (tag, body, prefix) = (msg.tag, msg.body, msg.prefix);
        if let Some(p) = prefix
            && tag == frontend::PARSE
            && p.first() != Some(&0)
            && !self.skipping
        {
            // A named Parse is held whole, to be prepared again on other servers: up to a bound.
            if msg.len > self.limits.message {
                let msg = format!(
                    "prepared statement too large to pool ({} bytes; max_held_message_size is {})",
                    msg.len, self.limits.message
                );
                return self.raise(PgError::error(SqlState::PROGRAM_LIMIT_EXCEEDED, msg), server, out);
            }
            return Edit::HoldWhole;
        }
        if prefix.is_some() && tag == frontend::QUERY && !self.skipping && msg.len <= self.limits.message {
            return Edit::HoldWhole; // its text is checked for pgsluice's statement names
        }
        if self.capture_state == Capture::Open {
            match body {
                Some(b)
                    if matches!(tag, frontend::DESCRIBE | frontend::EXECUTE | frontend::FLUSH | frontend::SYNC)
                        && self.capture.len() + b.len() < MAX_CAPTURE =>
                {
                    put_message(&mut self.capture, tag, |m| m.put_slice(b));
                    self.capture_describes |= tag == frontend::DESCRIBE && b.first() == Some(&b'P');
                    if tag == frontend::SYNC {
                        self.capture_state = Capture::Complete;
                    }
                }
                _ => self.capture_state = Capture::None,
            }
        }
        let batch_was_started = self.batch_started;
        match tag {
            frontend::SYNC | frontend::QUERY => self.batch_started = false,
            frontend::BIND | frontend::EXECUTE | frontend::DESCRIBE | frontend::CLOSE | frontend::FUNCTION_CALL => {
                self.batch_started = true
            }
            _ => {}
        }
        if tag == frontend::SYNC && server.tracker.in_copy_in() {
            return Edit::Keep; // the server ignores it: no reply owed
        }
        if self.skipping {
            if tag == frontend::SYNC {
                self.skipping = false;
            } else {
                return Edit::Replace(out.len()..out.len()); // (one seen by its prefix is dropped as it streams)
            }
        }
        let request = match tag {
            frontend::PARSE => Request::Parse,
            frontend::BIND => Request::Bind,
            frontend::DESCRIBE if body.and_then(|b| b.first()) == Some(&b'S') => Request::DescribeStatement,
            frontend::DESCRIBE => Request::DescribePortal,
            frontend::EXECUTE => Request::Execute,
            frontend::CLOSE => Request::Close,
            frontend::SYNC => Request::Sync,
            frontend::QUERY | frontend::FUNCTION_CALL => Request::Simple,
            _ => return Edit::Keep,
        };
        if matches!(tag, frontend::QUERY | frontend::PARSE)
            && let Some(text) = body.or(prefix)
            && names_a_pooled_statement(text)
        {
            return self.refuse_reserved_name(tag, server, out);
        }
        if tag == frontend::PARSE && body.or(prefix).and_then(|b| b.first()) == Some(&0) {
            self.on_unnamed_parse(body);
        }
        if tag == frontend::QUERY {
            // A simple Query drops the unnamed statement, on the server and so for the client.
            self.unnamed = Unnamed::None;
            self.unnamed_here = true;
        }
        let unnamed_use = match (tag, body.or(prefix)) {
            (frontend::BIND, Some(b)) => cstr(b).and_then(|(_, after_portal)| after_portal.first()) == Some(&0),
            (frontend::DESCRIBE, Some([b'S', 0, ..])) => true,
            _ => false,
        };
        if unnamed_use && !self.unnamed_here {
            let start = out.len();
            self.put_unnamed(server, out);
            server.replies.push(Entry::pass(request));
            return match body {
                Some(b) => {
                    put_message(out, tag, |m| m.put_slice(b));
                    Edit::Replace(start..out.len())
                }
                None => Edit::ReplaceHead { drop: 0, with: start..out.len() },
            };
        }
        let edit = match (tag, body) {
            (frontend::PARSE, Some(b)) => self.on_parse(b, server, out),
            (frontend::BIND, Some(b)) => self.on_bind(b, !batch_was_started, server, out),
            (frontend::BIND, None) => prefix.and_then(|p| self.on_big_bind(p, msg.len, server, out)),
            (frontend::DESCRIBE, Some(b)) if request == Request::DescribeStatement => self.on_describe(b, server, out),
            (frontend::CLOSE, Some([b'S', name @ ..])) => self.on_close(name, server, out),
            (frontend::QUERY, Some(b)) => self.on_query(b, server, out),
            _ => None,
        };
        edit.unwrap_or_else(|| {
            server.replies.push(Entry::pass(request));
            Edit::Keep
        })
    }

    /// A Bind too big to hold: only its header and names are rewritten, the parameters stream through.
    /// `len` is the message's length field.
    fn on_big_bind(&mut self, prefix: &[u8], len: usize, server: &mut ServerModel, out: &mut BytesMut) -> Option<Edit> {
        let (portal, after_portal) = cstr(prefix)?;
        let (name, _) = cstr(after_portal)?;
        let stmt = self.by_name.get(name)?.clone();
        if self.stale.contains(&stmt.server_name) {
            return Some(Edit::HoldWhole); // answered as a whole message
        }
        let new_len = u32::try_from(len - name.len() + stmt.server_name.len()).ok()?;
        let start = out.len();
        self.ensure(&stmt, server, out);
        out.put_u8(frontend::BIND);
        out.put_u32(new_len);
        messages::put_cstr(out, portal);
        messages::put_cstr(out, &stmt.server_name);
        self.counts.bind += 1;
        let bind = Some(BoundStatement { server_name: stmt.server_name.clone(), replayable: false });
        server.replies.push(Entry::Pending { request: Request::Bind, swallow: false, undo: None, bind });
        let head = 5 + portal.len() + 1 + name.len() + 1;
        Some(Edit::ReplaceHead { drop: head, with: start..out.len() })
    }

    fn on_unnamed_parse(&mut self, body: Option<&[u8]>) {
        self.unnamed_here = true;
        self.unnamed = match body.and_then(|b| b.get(1..)) {
            Some(rest) if rest.len() <= MAX_UNNAMED => {
                self.unnamed_rest.clear();
                self.unnamed_rest.extend_from_slice(rest);
                Unnamed::Known
            }
            _ => Unnamed::TooBig,
        };
    }

    /// The client uses its unnamed statement on a server that may hold somebody else's: prepares the
    /// client's own there first, or closes the stranger's so the server answers 26000 as PostgreSQL would.
    fn put_unnamed(&mut self, server: &mut ServerModel, out: &mut BytesMut) {
        self.unnamed_here = true;
        if self.unnamed == Unnamed::Known {
            put_message(out, frontend::PARSE, |b| {
                b.put_u8(0);
                b.put_slice(&self.unnamed_rest);
            });
            server.replies.push(Entry::swallowed(Request::Parse, Some(Undo::Unnamed)));
        } else {
            put_message(out, frontend::CLOSE, |b| b.put_slice(b"S\0"));
            server.replies.push(Entry::swallowed(Request::Close, Some(Undo::Unnamed)));
        }
    }

    /// Answers with pgsluice's own error and makes the server fail the batch too (a Parse that cannot
    /// succeed), so an implicit transaction is rolled back and a block fails, as PostgreSQL would have.
    fn raise(&mut self, err: PgError, server: &mut ServerModel, out: &mut BytesMut) -> Edit {
        let start = out.len();
        server.replies.push(synth(|b| err.encode(b)));
        put_message(out, frontend::PARSE, |b| {
            messages::put_cstr(b, b"pgsluice_abort");
            messages::put_cstr(b, b"pgsluice: abort this batch");
            b.put_u16(0);
        });
        server.replies.push(Entry::swallowed(Request::Abort, None));
        self.skipping = true;
        Edit::Replace(start..out.len())
    }

    /// Makes sure `stmt` exists on `server`, writing a Parse (whose reply is swallowed) if needed.
    fn ensure(&mut self, stmt: &Statement, server: &mut ServerModel, out: &mut BytesMut) {
        if server.statements.contains(&stmt.server_name) {
            return;
        }
        self.write_parse(stmt, None, true, server, out);
    }

    fn write_parse(
        &mut self,
        stmt: &Statement,
        client_name: Option<Bytes>,
        swallow: bool,
        server: &mut ServerModel,
        out: &mut BytesMut,
    ) {
        server.statements.insert(stmt.server_name.clone());
        while let Some(evicted) = server.statements.pop_over(self.max) {
            put_message(out, frontend::CLOSE, |b| {
                b.put_u8(b'S');
                messages::put_cstr(b, &evicted);
            });
            server.replies.push(Entry::swallowed(Request::Close, Some(Undo::Evicted(evicted))));
        }
        put_message(out, frontend::PARSE, |b| {
            messages::put_cstr(b, &stmt.server_name);
            b.put_slice(&stmt.rest);
        });
        self.counts.server_parse += 1;
        let parse = Prepared { server_name: stmt.server_name.clone(), client_name };
        server.replies.push(Entry::Pending {
            request: Request::Parse,
            swallow,
            undo: Some(Undo::Parse(parse)),
            bind: None,
        });
    }

    fn on_parse(&mut self, body: &[u8], server: &mut ServerModel, out: &mut BytesMut) -> Option<Edit> {
        let (name, rest) = cstr(body)?;
        if name.is_empty() {
            return None;
        }
        if self.by_name.contains_key(name) {
            let msg = format!("prepared statement \"{}\" already exists", String::from_utf8_lossy(name));
            return Some(self.raise(PgError::error(SqlState::DUPLICATE_PREPARED_STATEMENT, msg), server, out));
        }
        if let Some(err) = self.by_name.refuses(&self.limits, name.len() + rest.len()) {
            return Some(self.raise(err, server, out));
        }
        let start = out.len();
        self.counts.client_parse += 1;
        let server_name = server_name_for(rest, self.epoch.load(Ordering::Relaxed));
        let stmt = Arc::new(Statement { server_name, rest: Bytes::copy_from_slice(rest) });
        let name = Bytes::copy_from_slice(name);
        self.by_name.insert(name.clone(), stmt.clone());
        if server.statements.contains(&stmt.server_name) {
            server.replies.push(Entry::synth(Bytes::from_static(PARSE_COMPLETE), Some(Undo::ClientParse(name))));
        } else {
            self.write_parse(&stmt, Some(name), false, server, out);
        }
        Some(Edit::Replace(start..out.len()))
    }

    /// `first`: the first Bind of its batch, which can be replayed if its cached plan went stale.
    fn on_bind(&mut self, body: &[u8], first: bool, server: &mut ServerModel, out: &mut BytesMut) -> Option<Edit> {
        let (portal, after_portal) = cstr(body)?;
        let (name, rest) = cstr(after_portal)?;
        let stmt = self.by_name.get(name)?.clone();
        if self.stale.contains(&stmt.server_name) {
            let msg = "cached plan must not change result type";
            return Some(self.raise(PgError::error(SqlState::FEATURE_NOT_SUPPORTED, msg), server, out));
        }
        let start = out.len();
        let cached = server.statements.contains(&stmt.server_name);
        self.ensure(&stmt, server, out);
        put_message(out, frontend::BIND, |b| {
            messages::put_cstr(b, portal);
            messages::put_cstr(b, &stmt.server_name);
            b.put_slice(rest);
        });
        let replayable = first && cached && !self.replaying && body.len() < MAX_CAPTURE;
        if replayable {
            self.capture.clear();
            put_message(&mut self.capture, frontend::BIND, |b| b.put_slice(body));
            self.capture_state = Capture::Open;
            self.capture_describes = false;
        } else if first {
            self.capture_state = Capture::None;
        }
        self.counts.bind += 1;
        let bind = Some(BoundStatement { server_name: stmt.server_name.clone(), replayable });
        server.replies.push(Entry::Pending { request: Request::Bind, swallow: false, undo: None, bind });
        Some(Edit::Replace(start..out.len()))
    }

    fn on_describe(&mut self, body: &[u8], server: &mut ServerModel, out: &mut BytesMut) -> Option<Edit> {
        let (name, _) = cstr(body.get(1..)?)?;
        let stmt = self.by_name.get(name)?.clone();
        let start = out.len();
        self.ensure(&stmt, server, out);
        put_message(out, frontend::DESCRIBE, |b| {
            b.put_u8(b'S');
            messages::put_cstr(b, &stmt.server_name);
        });
        server.replies.push(Entry::pass(Request::DescribeStatement));
        Some(Edit::Replace(start..out.len()))
    }

    fn on_close(&mut self, name: &[u8], server: &mut ServerModel, out: &mut BytesMut) -> Option<Edit> {
        let (name, _) = cstr(name)?;
        if name.is_empty() {
            return None;
        }
        // The server keeps its copy for other clients; the client's name is gone.
        let undo = self.by_name.remove_entry(name).map(|(name, s)| Undo::ClientClose {
            name,
            server_name: s.server_name.clone(),
            rest: s.rest.clone(),
        });
        server.replies.push(Entry::synth(Bytes::from_static(CLOSE_COMPLETE), undo));
        Some(Edit::Replace(out.len()..out.len()))
    }

    /// Applies what the server's replies showed: requests it never ran are taken back, newest first, and
    /// the cache of its statements is corrected where it drifted.
    pub fn apply(&mut self, outcome: &mut Outcome, server: &mut ServerModel) {
        if outcome.statements_dropped {
            self.by_name.clear();
            server.statements.clear();
        }
        for drift in outcome.drifted.drain(..) {
            match drift {
                Drift::Present(name) => server.statements.insert(name),
                Drift::Missing(name) => server.statements.remove(&name),
            }
        }
        while let Some(undo) = outcome.undo.pop() {
            match undo {
                Undo::Parse(p) => {
                    server.statements.remove(&p.server_name);
                    if let Some(name) = &p.client_name {
                        self.by_name.remove(name);
                    }
                }
                Undo::ClientParse(name) => {
                    self.by_name.remove(&name);
                }
                Undo::Evicted(name) => server.statements.insert(name),
                Undo::ClientClose { name, server_name, rest } => {
                    self.by_name.insert(name, Arc::new(Statement { server_name, rest }));
                }
                Undo::Unnamed => self.unnamed_here = false,
            }
        }
    }

    /// Whether the batch whose Bind hit a stale cached plan was captured whole and can be replayed. Only a
    /// batch that describes its portal is: the client then reads the new RowDescription. A client relying
    /// on a description it cached earlier would misread the new rows (or, with a dropped column, silently
    /// read the wrong column), so it gets PostgreSQL's error instead.
    pub fn can_retry(&self, plan: &PlanChanged) -> bool {
        plan.replayable && self.capture_state == Capture::Complete && self.capture_describes
    }

    /// A stale plan's error went to the client: the client's statements using it keep failing (as on a
    /// direct connection), and statements parsed from now on get fresh server-side names.
    pub fn plan_went_stale(&mut self, plan: &PlanChanged) {
        self.epoch.fetch_add(1, Ordering::Relaxed);
        self.stale.insert(plan.server_name.clone());
    }

    /// Replays the captured batch after a stale-plan error: closes the stale statement on the server and
    /// sends the client's messages again (the Bind re-prepares it). The bytes for the server go to `out`.
    pub fn retry(&mut self, server_name: &[u8], server: &mut ServerModel, out: &mut BytesMut) {
        if self.capture_state != Capture::Complete {
            return;
        }
        self.capture_state = Capture::None;
        // Statements parsed from now on get new names; this one is re-prepared under its own.
        self.epoch.fetch_add(1, Ordering::Relaxed);
        server.statements.remove(server_name);
        put_message(out, frontend::CLOSE, |b| {
            b.put_u8(b'S');
            messages::put_cstr(b, server_name);
        });
        server.replies.push(Entry::swallowed(Request::Close, None));
        server.tracker.on_client(frontend::CLOSE);
        let capture = std::mem::take(&mut self.capture);
        self.replaying = true;
        let mut rest = &capture[..];
        while let Some((tag, body, next)) = split_message(rest) {
            rest = next;
            let msg = Header { tag, len: body.len() + 4, offset: 0, body: Some(body), prefix: None };
            match self.rewrite(&msg, server, out) {
                Edit::Keep => {
                    server.tracker.on_client(tag);
                    put_message(out, tag, |b| b.put_slice(body));
                }
                Edit::Replace(r) if r.is_empty() => {}
                // Captured messages are whole, so nothing else is returned for them.
                Edit::Replace(_) | Edit::ReplaceHead { .. } | Edit::HoldWhole => server.tracker.on_client(tag),
            }
        }
        self.replaying = false;
        self.capture = capture;
        self.capture.clear();
    }
}
