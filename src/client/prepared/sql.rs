//! SQL the rewriting answers or refuses itself: DEALLOCATE of the client's own statements, and text that
//! names pgsluice's server-side statements.

use bytes::BytesMut;

use super::{Edit, Statements, Unnamed, synth};
use crate::protocol::messages::{self, put_message};
use crate::protocol::tags::{backend, frontend};
use crate::protocol::{PgError, SqlState};
use crate::server::ServerModel;
use crate::server::replies::{Entry, Request};

impl Statements {
    /// DEALLOCATE and DISCARD ALL sent as SQL act on the client's names.
    pub(super) fn on_query(&mut self, body: &[u8], server: &mut ServerModel, out: &mut BytesMut) -> Option<Edit> {
        // Most queries are neither: decide on the first bytes without allocating.
        let head = body.trim_ascii_start();
        let starts = |w: &[u8]| head.get(..w.len()).is_some_and(|h| h.eq_ignore_ascii_case(w));
        if !starts(b"discard") && !starts(b"deallocate") {
            return None;
        }
        let sql = std::str::from_utf8(body.strip_suffix(&[0])?).ok()?;
        let words: Vec<String> =
            sql.trim().trim_end_matches(';').split_whitespace().map(|w| w.to_ascii_lowercase()).collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let target = match words.as_slice() {
            // Forwarded: once the server has run it (in whatever form: see `apply`), its statements and
            // the client's names are gone. PostgreSQL may refuse it (inside a block), and then both stay.
            ["discard", "all"] | ["deallocate", "all"] | ["deallocate", "prepare", "all"] => return None,
            ["deallocate", name] | ["deallocate", "prepare", name] => name.trim_matches('"').to_string(),
            _ => return None,
        };
        // One of the client's protocol-level statements: answered here. Any other name (a statement made
        // with SQL PREPARE, or none) is PostgreSQL's to deallocate or to refuse.
        self.by_name.remove(target.as_bytes())?;
        let done =
            |b: &mut BytesMut| put_message(b, backend::COMMAND_COMPLETE, |m| messages::put_cstr(m, b"DEALLOCATE"));
        Some(self.answer_query(synth(done), false, server, out))
    }

    /// Answers a simple Query with `reply` in pgsluice's place. A query goes to the server instead, so its
    /// ReadyForQuery carries the server's real transaction status: an empty one, or (`fail`) one that
    /// fails, so that an error fails a transaction block as PostgreSQL's own would.
    fn answer_query(&mut self, reply: Entry, fail: bool, server: &mut ServerModel, out: &mut BytesMut) -> Edit {
        server.replies.push(reply);
        let start = out.len();
        let shadow: &[u8] = if fail { b"pgsluice: fail this query" } else { b";" };
        put_message(out, frontend::QUERY, |b| messages::put_cstr(b, shadow));
        server.replies.push(Entry::swallowed(Request::Shadow, None));
        Edit::Replace(start..out.len())
    }

    /// A Query or Parse whose text names one of pgsluice's server-side statements: refused with 42501,
    /// since running, replacing or deallocating one would reach into other clients' statements.
    pub(super) fn refuse_reserved_name(&mut self, tag: u8, server: &mut ServerModel, out: &mut BytesMut) -> Edit {
        let msg = "prepared statement names of the form pgsluice_<16 hex digits> are reserved by pgsluice";
        self.refuse_with(tag, PgError::error(SqlState::INSUFFICIENT_PRIVILEGE, msg), server, out)
    }

    /// A Query or Parse (`tag`) refused with `err` as PostgreSQL refuses a statement: a Parse fails its
    /// batch up to Sync, a Query fails as one statement would (a transaction block is aborted). `None`
    /// while the rest of a failed batch is being skipped anyway.
    pub fn refuse(&mut self, tag: u8, err: PgError, server: &mut ServerModel, out: &mut BytesMut) -> Option<Edit> {
        (!self.skipping).then(|| self.refuse_with(tag, err, server, out))
    }

    fn refuse_with(&mut self, tag: u8, err: PgError, server: &mut ServerModel, out: &mut BytesMut) -> Edit {
        if tag == frontend::PARSE {
            return self.raise(err, server, out);
        }
        self.unnamed = Unnamed::None; // a simple Query drops the unnamed statement, failed or not
        self.unnamed_here = true;
        self.answer_query(synth(|b| err.encode(b)), true, server, out)
    }
}
