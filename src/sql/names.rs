//! The names a statement text uses: SQL prepared statement names (to rename them per client) and
//! custom parameters (to read them back), found with the lexer.

use super::{Lexer, Token, for_each_statement, word_is};

/// The custom (dotted: `app.tenant`) parameters the text SETs, RESETs or passes to `set_config` by a
/// literal name, lower-cased. PostgreSQL lists no custom parameter in `pg_settings`, so these names are
/// what the session state check reads back one by one.
pub fn custom_setting_names(text: &[u8], backslash_quotes: bool) -> CustomSettings {
    let mut found = CustomSettings::default();
    for_each_statement(text, backslash_quotes, |stmt, truncated| {
        // Past the tokens kept, a set_config's name is unknown: as good as computed.
        if truncated && !found.computed {
            found.computed = text.windows(10).any(|w| w.eq_ignore_ascii_case(b"set_config"));
        }
        if word_is(stmt.first(), "set") || word_is(stmt.first(), "reset") {
            let skip = if ["session", "local"].iter().any(|w| word_is(stmt.get(1), w)) { 2 } else { 1 };
            if let Some(name) = dotted_name(stmt.get(skip..).unwrap_or_default()) {
                found.names.push(name);
            }
        }
        for (i, t) in stmt.iter().enumerate() {
            if !word_is(Some(t), "set_config") || stmt.get(i + 1) != Some(&Token::OpenParen) {
                continue;
            }
            // The name is known only when it is a plain literal standing alone: `set_config('a.b', ...`.
            match (stmt.get(i + 2), stmt.get(i + 3)) {
                (Some(Token::Literal(raw)), Some(Token::Comma)) => match plain_literal(raw) {
                    Some(name) if name.contains('.') => found.names.push(name.to_ascii_lowercase()),
                    Some(_) => {}
                    None => found.computed = true,
                },
                _ => found.computed = true,
            }
        }
        false
    });
    found.names.sort();
    found.names.dedup();
    found
}

/// What `custom_setting_names` found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CustomSettings {
    pub names: Vec<String>,
    /// A `set_config` whose parameter name is not a plain literal: which parameter it sets is unknown.
    pub computed: bool,
}

/// `a.b[.c]` at the start of `tokens`, if it has a dot.
fn dotted_name(tokens: &[Token<'_>]) -> Option<String> {
    let part = |t: Option<&Token<'_>>| match t {
        Some(Token::Word(w)) => Some(String::from_utf8_lossy(w).to_ascii_lowercase()),
        // Parameter names are matched without regard to case, quoted or not.
        Some(Token::Quoted(q)) => Some(String::from_utf8_lossy(q).replace("\"\"", "\"").to_ascii_lowercase()),
        _ => None,
    };
    let mut name = part(tokens.first())?;
    let mut i = 1;
    while tokens.get(i) == Some(&Token::Dot) {
        name.push('.');
        name.push_str(&part(tokens.get(i + 1))?);
        i += 2;
    }
    (i > 1).then_some(name)
}

/// The value of a plain `'...'` literal (no escapes but doubled quotes).
fn plain_literal(raw: &[u8]) -> Option<String> {
    let inner = raw.strip_prefix(b"'")?.strip_suffix(b"'")?;
    (!inner.contains(&b'\\')).then(|| String::from_utf8_lossy(inner).replace("''", "'"))
}

/// Most names one text is looked at for (what a client's few MiB of text may make pgsluice hold).
pub const MAX_NAME_USES: usize = 4096;

/// A statement name in SQL `PREPARE`, `EXECUTE` or `DEALLOCATE`, where it is in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameUse {
    pub kind: NameKind,
    /// The name as PostgreSQL reads it (unquoted: lower-cased; quoted: as written, `""` undoubled).
    pub name: String,
    /// Where the name (with its quotes) is in the text.
    pub span: std::ops::Range<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameKind {
    /// `PREPARE name ... AS ...`: the statement runs from `statement.start` to `statement.end`.
    Prepare { statement: std::ops::Range<usize> },
    /// `EXECUTE name` (also inside EXPLAIN or CREATE TABLE AS).
    Execute,
    /// `DEALLOCATE [PREPARE] name`.
    Deallocate,
    /// `DEALLOCATE [PREPARE] ALL`.
    DeallocateAll,
}

/// Every SQL prepared statement name the text uses, in order. `PREPARE` counts only at the start of a
/// statement (`PREPARE TRANSACTION` is not one); `EXECUTE` anywhere a name follows it (`GRANT EXECUTE ON`
/// yields the name `on`: callers act only on names they know). At most MAX_NAME_USES are returned (a
/// text naming more keeps the rest as written: they then name nothing on the server).
pub fn prepared_statement_names(text: &[u8], backslash_quotes: bool) -> Vec<NameUse> {
    let mut uses = Vec::new();
    let mut lexer = Lexer::new(text, backslash_quotes);
    let mut prev: [Option<Token<'_>>; 2] = [None, None];
    let mut first_in_statement = true;
    let mut open_prepare: Option<usize> = None; // index in `uses` of a PREPARE whose statement is open
    loop {
        let before = lexer.position();
        let Some(token) = lexer.next() else { break };
        if token == Token::Semicolon {
            if let Some(i) = open_prepare.take() {
                set_statement_end(&mut uses[i], text, before);
            }
            first_in_statement = true;
            prev = [None, None];
            continue;
        }
        let name = match token {
            Token::Word(w) => {
                Some((String::from_utf8_lossy(w).to_ascii_lowercase(), offset(text, w)..offset(text, w) + w.len()))
            }
            Token::Quoted(q) => {
                let start = offset(text, q) - 1;
                Some((String::from_utf8_lossy(q).replace("\"\"", "\""), start..start + q.len() + 2))
            }
            _ => None,
        };
        let kind = match (prev[0], prev[1], &name) {
            (Some(p @ Token::Word(w)), _, Some((n, _))) if word_is(Some(&p), "prepare") && first_in_statement => {
                (n != "transaction").then(|| NameKind::Prepare { statement: offset(text, w)..text.len() })
            }
            (Some(p), _, Some(_)) if word_is(Some(&p), "execute") => Some(NameKind::Execute),
            (Some(p), b, Some((n, _)))
                if word_is(Some(&p), "deallocate")
                    || (word_is(Some(&p), "prepare") && word_is(b.as_ref(), "deallocate")) =>
            {
                if matches!(token, Token::Word(_)) && (n == "all") {
                    Some(NameKind::DeallocateAll)
                } else if matches!(token, Token::Word(_)) && n == "prepare" && word_is(Some(&p), "deallocate") {
                    None // DEALLOCATE PREPARE name: the name comes next
                } else {
                    Some(NameKind::Deallocate)
                }
            }
            _ => None,
        };
        if let (Some(kind), Some((name, span))) = (kind, name) {
            if matches!(kind, NameKind::Prepare { .. }) {
                open_prepare = Some(uses.len());
            }
            if uses.len() >= MAX_NAME_USES {
                // A PREPARE whose statement has not ended here has no known end: it is not kept.
                if let Some(i) = open_prepare.take() {
                    uses.truncate(i);
                }
                return uses;
            }
            uses.push(NameUse { kind, name, span });
        }
        // PREPARE is first in its statement; after it come the name, types and AS.
        if !(first_in_statement && word_is(Some(&token), "prepare")) {
            first_in_statement = false;
        }
        prev = [Some(token), prev[0]];
    }
    if let Some(i) = open_prepare {
        set_statement_end(&mut uses[i], text, text.len());
    }
    uses
}

fn offset(text: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - text.as_ptr() as usize
}

fn set_statement_end(u: &mut NameUse, text: &[u8], end: usize) {
    if let NameKind::Prepare { statement } = &mut u.kind {
        let trimmed = text.get(statement.start..end).map_or(0, |t| t.trim_ascii_end().len());
        statement.end = statement.start + trimmed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepared_statement_names_are_found_with_their_spans() {
        let text = "select 1; PREPARE \"My\"\"P\" (int) AS select $1; execute \"My\"\"P\"(1); Deallocate Prepare Q; deallocate all; prepare transaction 'x'";
        let uses = prepared_statement_names(text.as_bytes(), false);
        let got: Vec<(String, &str)> = uses.iter().map(|u| (u.name.clone(), &text[u.span.clone()])).collect();
        assert_eq!(
            got,
            [
                ("My\"P".to_string(), "\"My\"\"P\""),
                ("My\"P".into(), "\"My\"\"P\""),
                ("q".into(), "Q"),
                ("all".into(), "all")
            ]
        );
        assert_eq!(uses[0].kind, NameKind::Prepare { statement: 10..44 });
        assert_eq!(&text[10..44], "PREPARE \"My\"\"P\" (int) AS select $1");
        assert_eq!(
            (&uses[1].kind, &uses[2].kind, &uses[3].kind),
            (&NameKind::Execute, &NameKind::Deallocate, &NameKind::DeallocateAll)
        );
        let explain = prepared_statement_names(b"explain analyze execute p(2); create table t as execute p", false);
        assert_eq!(explain.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(), ["p", "p"]);
        assert!(prepared_statement_names(b"select 'prepare p as select 1'", false).is_empty());
    }

    #[test]
    fn custom_setting_names_are_read_from_set_reset_and_set_config() {
        let names = |s: &str| custom_setting_names(s.as_bytes(), false);
        let found = names(
            "SET App.Tenant = 5; set session \"My\".x to 'y'; reset a.b.c; select set_config('Rls.User', $1, false)",
        );
        assert_eq!(found.names, ["a.b.c", "app.tenant", "my.x", "rls.user"]);
        assert!(!found.computed);
        let found = names("set work_mem = 1; select set_config('work_mem', '1', false); select 'set a.b = 1'");
        assert_eq!(found, CustomSettings::default());
        assert!(names("select set_config($1, $2, false)").computed);
        assert!(names("select set_config('app.' || $1, 'x', false)").names.is_empty());
    }

    #[test]
    fn a_statement_past_the_tokens_kept_is_judged_on_its_head() {
        let long = format!("update t set x = 1 where t.id in ({})", vec!["1"; 5000].join(", "));
        assert_eq!(custom_setting_names(long.as_bytes(), false), CustomSettings::default(), "no set_config: nothing");
        let tail = format!("select {}, set_config('app.x', 'y', false)", vec!["1"; 5000].join(", "));
        assert!(custom_setting_names(tail.as_bytes(), false).computed, "a set_config past the head is unknown");
    }

    #[test]
    fn names_are_looked_for_up_to_a_bound() {
        let many = "execute p; ".repeat(MAX_NAME_USES + 10);
        assert_eq!(prepared_statement_names(many.as_bytes(), false).len(), MAX_NAME_USES);
        // q is the last use kept, and its statement goes on past the bound (to another name).
        let cut =
            format!("{}prepare q as select 1 from execute x; drop table x", "execute p; ".repeat(MAX_NAME_USES - 1));
        let uses = prepared_statement_names(cut.as_bytes(), false);
        assert!(uses.iter().all(|u| u.name == "p"), "the PREPARE past the bound is not taken with an unknown end");
    }
}
