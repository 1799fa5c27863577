//! What a statement text may do to its session, decided from the text alone: a small lexer (quotes,
//! escape strings, dollar quotes, nested comments, quoted identifiers) and the statements that make
//! session state, for the `session_state` policy. Pure functions over bytes; imports nothing.
//!
//! Two questions, two costs:
//! - [`mentions_session_state`]: a byte scan of the whole text (quotes and comments included, so no
//!   lexing mistake can hide a word) for the words behind state the server's replies do not announce:
//!   advisory locks, `set_config`, temporary objects. A hit only costs a check after the transaction.
//! - [`first_refused`]: the lexed statements, for `session_state = refuse`, which must decide before
//!   anything runs.

mod names;
pub use names::{CustomSettings, NameKind, NameUse, custom_setting_names, prepared_statement_names};

/// A token of SQL text. Literals, comments and punctuation other than `;` and `(` are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// An unquoted word (keyword or identifier), as written.
    Word(&'a [u8]),
    /// A quoted identifier, without its quotes (doubled quotes left as they are).
    Quoted(&'a [u8]),
    /// A string or dollar-quoted literal, as written (quotes and any `E` prefix included).
    Literal(&'a [u8]),
    Dot,
    Comma,
    Semicolon,
    OpenParen,
    /// Anything else: operators, numbers, parameters, other punctuation.
    Other,
}

/// Lexes SQL as PostgreSQL does for the statement boundaries and words that matter here.
/// `backslash_quotes`: standard_conforming_strings is off, so `'...'` strings take backslash escapes.
pub struct Lexer<'a> {
    s: &'a [u8],
    at: usize,
    backslash_quotes: bool,
}

const fn is_word_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

const fn is_word_byte(b: u8) -> bool {
    is_word_start(b) || b.is_ascii_digit() || b == b'$'
}

impl<'a> Lexer<'a> {
    pub fn new(s: &'a [u8], backslash_quotes: bool) -> Self {
        Lexer { s, at: 0, backslash_quotes }
    }

    /// Where the next token starts looking (after the last one returned).
    pub fn position(&self) -> usize {
        self.at
    }

    fn peek(&self, ahead: usize) -> Option<u8> {
        self.s.get(self.at + ahead).copied()
    }

    /// Skips a quoted run that began just before `at`, ending at `close` (doubled = escaped).
    fn skip_quoted(&mut self, close: u8, backslashes: bool) {
        while let Some(b) = self.peek(0) {
            self.at += 1;
            if backslashes && b == b'\\' {
                self.at += 1;
            } else if b == close {
                if self.peek(0) == Some(close) {
                    self.at += 1;
                } else {
                    return;
                }
            }
        }
    }

    fn skip_block_comment(&mut self) {
        let mut depth = 1usize;
        while depth > 0 && self.at < self.s.len() {
            match (self.peek(0), self.peek(1)) {
                (Some(b'*'), Some(b'/')) => {
                    depth -= 1;
                    self.at += 2;
                }
                (Some(b'/'), Some(b'*')) => {
                    depth += 1;
                    self.at += 2;
                }
                _ => self.at += 1,
            }
        }
    }

    /// At a `$`: a dollar quote (`$tag$ ... $tag$`) is skipped and true returned; a parameter is not.
    fn skip_dollar_quote(&mut self) -> bool {
        let rest = &self.s[self.at..];
        let tag_len = rest.iter().skip(1).position(|&b| b == b'$');
        let Some(tag_len) = tag_len else { return false };
        let tag = &rest[..tag_len + 2];
        if !tag[1..tag.len() - 1].iter().all(|&b| is_word_byte(b) && b != b'$')
            || tag.get(1).is_some_and(u8::is_ascii_digit)
        {
            return false;
        }
        let body = &rest[tag.len()..];
        self.at += tag.len() + memchr::memmem::find(body, tag).map_or(body.len(), |i| i + tag.len());
        true
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        loop {
            let b = self.peek(0)?;
            let start = self.at;
            self.at += 1;
            return Some(match b {
                b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => continue,
                b'-' if self.peek(0) == Some(b'-') => {
                    self.at = memchr::memchr(b'\n', &self.s[self.at..]).map_or(self.s.len(), |i| self.at + i);
                    continue;
                }
                b'/' if self.peek(0) == Some(b'*') => {
                    self.at += 1;
                    self.skip_block_comment();
                    continue;
                }
                b'\'' => {
                    self.skip_quoted(b'\'', self.backslash_quotes);
                    Token::Literal(&self.s[start..self.at.min(self.s.len())])
                }
                b'"' => {
                    self.skip_quoted(b'"', false);
                    let end = self.at.saturating_sub(1).max(start + 1);
                    Token::Quoted(&self.s[start + 1..end])
                }
                b'$' => {
                    self.at -= 1;
                    if self.skip_dollar_quote() {
                        Token::Literal(&self.s[start..self.at.min(self.s.len())])
                    } else {
                        self.at += 1;
                        Token::Other
                    }
                }
                b';' => Token::Semicolon,
                b'.' => Token::Dot,
                b',' => Token::Comma,
                b'(' => Token::OpenParen,
                b if is_word_start(b) => {
                    // E'...' (and e'...') is an escape string whatever standard_conforming_strings says.
                    if matches!(b, b'e' | b'E') && self.peek(0) == Some(b'\'') {
                        self.at += 1;
                        self.skip_quoted(b'\'', true);
                        return Some(Token::Literal(&self.s[start..self.at.min(self.s.len())]));
                    }
                    while self.peek(0).is_some_and(is_word_byte) {
                        self.at += 1;
                    }
                    Token::Word(&self.s[start..self.at])
                }
                _ => Token::Other,
            });
        }
    }
}

/// Whether the text, read as plain bytes (quotes and comments included), names something that makes
/// session state no reply announces: an advisory lock function, `set_config`, or a temporary object
/// (`TEMP`, `TEMPORARY`, `pg_temp`). Case-insensitive, whole words.
pub fn mentions_session_state(text: &[u8]) -> bool {
    mentions(text).state
}

/// What a byte scan of a statement text found (see `mentions`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mentions {
    /// Words of state no reply announces (`mentions_session_state`).
    pub state: bool,
    /// `PREPARE`, `EXECUTE` or `DEALLOCATE`: SQL prepared statement names may need renaming.
    pub prepared: bool,
    /// `SET` or `RESET` (also as in `UPDATE ... SET`): a custom parameter may be set.
    pub setting: bool,
}

/// One pass over the text, one table lookup per byte; only words of a length a trigger word has are
/// looked at.
pub fn mentions(text: &[u8]) -> Mentions {
    let mut found = Mentions::default();
    let mut i = 0;
    while i < text.len() {
        if !WORD[text[i] as usize] {
            i += 1;
            continue;
        }
        let start = i;
        while i < text.len() && WORD[text[i] as usize] {
            i += 1;
        }
        let w = &text[start..i];
        found.state |= word_makes_state(w);
        found.prepared |= word_names_prepared(w);
        found.setting |= w.eq_ignore_ascii_case(b"set") || w.eq_ignore_ascii_case(b"reset");
        if found.state && found.prepared {
            break;
        }
    }
    found
}

fn word_names_prepared(w: &[u8]) -> bool {
    match w.len() {
        7 => w.eq_ignore_ascii_case(b"prepare") || w.eq_ignore_ascii_case(b"execute"),
        10 => w.eq_ignore_ascii_case(b"deallocate"),
        _ => false,
    }
}

/// Bytes of a word for the scan: letters, `_` and non-ASCII. Digits and `$` split words here (the
/// lexer would start a new word after a `$` or a number), so the scan finds at least what the lexer
/// finds: `x$temp` and `1temp` are looked at as `temp`.
const WORD: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = is_word_start(b as u8);
        b += 1;
    }
    t
};

fn word_makes_state(w: &[u8]) -> bool {
    let at = |i: usize, needle: &[u8]| w.get(i..i + needle.len()).is_some_and(|x| x.eq_ignore_ascii_case(needle));
    match w.len() {
        0..4 => false,
        4 => at(0, b"temp"),
        l => {
            (l == 9 && at(0, b"temporary"))
                || at(0, b"pg_temp")
                || (l >= 8
                    && w.iter().enumerate().any(|(i, &b)| match b {
                        b'v' | b'V' => i >= 2 && at(i - 2, b"advisory"),
                        b'_' => i >= 3 && at(i - 3, b"set_config"),
                        _ => false,
                    }))
        }
    }
}

/// The first statement in `text` that makes session state pgsluice does not carry in `refuse` mode,
/// named for the error message: session SET/RESET, SQL PREPARE, LISTEN, temporary objects, WITH HOLD
/// cursors, LOAD, session advisory locks and `set_config`.
pub fn first_refused(text: &[u8], backslash_quotes: bool) -> Option<&'static str> {
    // A statement longer than MAX_STATEMENT_TOKENS is judged on its head; what its tail makes is found
    // by the check after the transaction (`mentions` scans all of the text), and pins.
    let mut refused = None;
    for_each_statement(text, backslash_quotes, |stmt, _| {
        refused = refused_statement(stmt);
        refused.is_some()
    });
    refused
}

/// Tokens of one statement kept for looking at: a client's statement text is up to a few MiB, and its
/// tokens (24 bytes each) are not held whole.
pub const MAX_STATEMENT_TOKENS: usize = 4096;

/// Calls `f` with each statement's tokens (at most MAX_STATEMENT_TOKENS, and whether there were more)
/// until it returns true.
pub(crate) fn for_each_statement<'a>(
    text: &'a [u8],
    backslash_quotes: bool,
    mut f: impl FnMut(&[Token<'a>], bool) -> bool,
) {
    let mut stmt = Vec::new();
    let mut lexer = Lexer::new(text, backslash_quotes).peekable();
    while lexer.peek().is_some() {
        stmt.clear();
        let mut truncated = false;
        for t in lexer.by_ref().take_while(|t| *t != Token::Semicolon) {
            if stmt.len() < MAX_STATEMENT_TOKENS {
                stmt.push(t);
            } else {
                truncated = true;
            }
        }
        if f(&stmt, truncated) {
            return;
        }
    }
}

fn word_is(t: Option<&Token<'_>>, w: &str) -> bool {
    matches!(t, Some(Token::Word(x)) if x.eq_ignore_ascii_case(w.as_bytes()))
}

fn refused_statement(stmt: &[Token<'_>]) -> Option<&'static str> {
    let first = stmt.first();
    let second = stmt.get(1);
    if word_is(first, "set") {
        let scoped = ["local", "transaction", "constraints"].iter().any(|w| word_is(second, w));
        return (!scoped).then_some("SET");
    }
    let head = [("reset", "RESET"), ("listen", "LISTEN"), ("load", "LOAD")].iter().find(|(w, _)| word_is(first, w));
    if let Some((_, name)) = head {
        return Some(name);
    }
    if word_is(first, "prepare") && !word_is(second, "transaction") {
        return Some("PREPARE");
    }
    if word_is(first, "declare") {
        let mut w = stmt.iter().filter_map(|t| if let Token::Word(w) = t { Some(*w) } else { None }).peekable();
        while let Some(x) = w.next() {
            if x.eq_ignore_ascii_case(b"with") && w.peek().is_some_and(|h| h.eq_ignore_ascii_case(b"hold")) {
                return Some("DECLARE ... WITH HOLD");
            }
        }
        return None;
    }
    if makes_temporary_object(stmt) {
        return Some("a temporary object");
    }
    for (i, t) in stmt.iter().enumerate() {
        let Token::Word(w) = t else { continue };
        if stmt.get(i + 1) != Some(&Token::OpenParen) {
            continue;
        }
        let named = |n: &str| w.eq_ignore_ascii_case(n.as_bytes());
        if ["pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock", "pg_try_advisory_lock_shared"]
            .iter()
            .any(|n| named(n))
        {
            return Some("a session advisory lock");
        }
        if named("set_config") {
            return Some("set_config");
        }
    }
    None
}

/// `CREATE [OR REPLACE] [GLOBAL | LOCAL] {TEMP | TEMPORARY} ...`, `... INTO TEMP ...`, or an object in
/// `pg_temp` (a column named `temp` is not one).
fn makes_temporary_object(stmt: &[Token<'_>]) -> bool {
    let is_temp = |t: &Token<'_>| matches!(t, Token::Word(w) if w.eq_ignore_ascii_case(b"temp") || w.eq_ignore_ascii_case(b"temporary"));
    let opens = |t: &Token<'_>| ["create", "replace", "global", "local", "into"].iter().any(|w| word_is(Some(t), w));
    stmt.windows(2).any(|p| opens(&p[0]) && is_temp(&p[1]))
        || stmt.iter().any(|t| matches!(t, Token::Word(w) | Token::Quoted(w) if w.len() >= 7 && w[..7].eq_ignore_ascii_case(b"pg_temp")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        Lexer::new(s.as_bytes(), false)
            .filter_map(|t| match t {
                Token::Word(w) => Some(String::from_utf8_lossy(w).into_owned()),
                Token::Semicolon => Some(";".into()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn literals_comments_and_quotes_hide_their_contents() {
        assert_eq!(words("select 'set x; reset' ; show"), ["select", ";", "show"]);
        assert_eq!(words("select $$ ; set $$, $a$ $$ ; $a$ x"), ["select", "x"]);
        assert_eq!(words("select /* a /* nested ; */ set */ 1 -- set ;\n; y"), ["select", ";", "y"]);
        assert_eq!(words("select E'\\'; set' z"), ["select", "z"]);
        assert_eq!(words("select 'it''s; set' w"), ["select", "w"]);
        assert_eq!(words("select $1; $2"), ["select", ";"]);
        assert_eq!(words("select \"a;b\"\"c\" d"), ["select", "d"]);
        // Unterminated constructs end the text instead of panicking.
        for s in ["'abc", "\"abc", "/* abc", "$a$ abc", "E'\\", "$", "-- x"] {
            let _ = words(s);
        }
    }

    #[test]
    fn standard_conforming_strings_off_takes_backslash_escapes() {
        let text = b"select 'a\\''; set work_mem = 1";
        assert_eq!(first_refused(text, true), Some("SET"), "the string ends at the last quote");
        assert_eq!(first_refused(text, false), None, "with escapes off the SET is inside a string");
    }

    #[test]
    fn refused_statements_are_found_in_any_position() {
        let refused = |s: &str| first_refused(s.as_bytes(), false);
        assert_eq!(refused("set work_mem = '1MB'"), Some("SET"));
        assert_eq!(refused("SET SESSION search_path TO x"), Some("SET"));
        assert_eq!(refused("select 1; Set role r"), Some("SET"));
        assert_eq!(refused("reset all"), Some("RESET"));
        assert_eq!(refused("listen ch"), Some("LISTEN"));
        assert_eq!(refused("prepare p as select 1"), Some("PREPARE"));
        assert_eq!(refused("create temp table t (x int)"), Some("a temporary object"));
        assert_eq!(refused("create table pg_temp.t (x int)"), Some("a temporary object"));
        assert_eq!(refused("select * into temporary t from x"), Some("a temporary object"));
        assert_eq!(refused("declare c cursor with hold for select 1"), Some("DECLARE ... WITH HOLD"));
        assert_eq!(refused("select pg_advisory_lock(1)"), Some("a session advisory lock"));
        assert_eq!(refused("select PG_TRY_ADVISORY_LOCK_SHARED (1)"), Some("a session advisory lock"));
        assert_eq!(refused("select set_config('a.b', 'c', false)"), Some("set_config"));
        for fine in [
            "set local work_mem = '1MB'",
            "set transaction isolation level serializable",
            "SET CONSTRAINTS ALL DEFERRED",
            "update t set x = 1",
            "select pg_advisory_xact_lock(1)",
            "select 'set x', $$listen$$ -- reset\n",
            "declare c cursor for select 1",
            "prepare transaction 'x'",
            "discard all",
            "select template, temperature from t",
            "select temp from readings",
        ] {
            assert_eq!(refused(fine), None, "{fine}");
        }
    }

    #[test]
    fn mentions_are_whole_words_anywhere() {
        for yes in [
            "select pg_advisory_lock(1)",
            "CREATE TEMP TABLE t()",
            "select set_config('x','y',false)",
            "create table pg_temp_3.t()",
            "select 'temporary'",
            "select pg_advisory_unlock_all()",
            "select $pg_temp\".f()",
            "select 1temp",
        ] {
            assert!(mentions_session_state(yes.as_bytes()), "{yes}");
        }
        for no in ["select 1", "update t set x = 1", "select template, temperature, attempt", "select tempo", ""] {
            assert!(!mentions_session_state(no.as_bytes()), "{no}");
        }
    }

    /// The per-statement cost of the detection on the hot path (not asserted: run with
    /// `cargo test --release --lib sql::tests::detection_cost -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn detection_cost() {
        let texts: [&[u8]; 3] = [
            b"SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
            b"UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;",
            b"select o.id, o.created_at, c.name, sum(l.amount) from orders o join customers c on c.id = o.customer_id join lines l on l.order_id = o.id where o.created_at > now() - interval '7 days' group by 1, 2, 3 order by 2 desc limit 50",
        ];
        for text in texts {
            let n = 2_000_000;
            let started = std::time::Instant::now();
            let mut hits = 0;
            for _ in 0..n {
                hits += usize::from(mentions_session_state(std::hint::black_box(text)));
            }
            let per = started.elapsed().as_nanos() as f64 / n as f64;
            eprintln!("{} bytes: {per:.1} ns per statement ({hits} hits)", text.len());
        }
    }
}
