//! Statement texts as the session reads them for `session_state` (src/sql.rs): the lexer ends on any
//! input, and the plain byte scan (`mentions_session_state`, which decides whether a transaction is
//! checked) never misses state the lexer finds (advisory locks, set_config, temporary objects), whatever
//! the quoting.
//!
//! Input: the first byte picks standard_conforming_strings (odd = off); the rest is the statement text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgsluice::sql::{Lexer, Token, first_refused, mentions_session_state};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, text)) = data.split_first() else { return };
    let backslash_quotes = mode & 1 == 1;
    let mut tokens = 0usize;
    for t in Lexer::new(text, backslash_quotes) {
        if let Token::Word(w) | Token::Quoted(w) = t {
            assert!(w.len() <= text.len());
        }
        tokens += 1;
        assert!(tokens <= text.len(), "every token consumes input");
    }
    let mentioned = mentions_session_state(text);
    if let Some(what) = first_refused(text, backslash_quotes) {
        if matches!(what, "a session advisory lock" | "set_config" | "a temporary object") {
            assert!(mentioned, "the byte scan missed {what} in {:?}", String::from_utf8_lossy(text));
        }
    }
});
