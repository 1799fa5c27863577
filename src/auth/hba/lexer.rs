//! The tokenizer PgBouncer uses for HBA, ident and `@file` lines: words end at whitespace, `,`, `#`
//! or `"`; `"..."` is a quoted string with `""` for a literal quote; `,` is a token of its own; `#`
//! outside quotes starts a comment. Tokens are read lazily, so the LDAP method can take the raw rest
//! of its line the way PgBouncer does.

/// One token of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tok<'a> {
    /// An unquoted word; only words can be keywords (`all`, `host`, `md5`, ...).
    Word(&'a str),
    /// A double-quoted string, unescaped; never a keyword.
    Quoted(String),
    /// A `,` separating the items of a name list.
    Comma,
    /// The end of the line or the start of a comment.
    End,
}

/// A cursor over one line (no `\n` in it).
#[derive(Debug, Clone)]
pub(super) struct Lexer<'a> {
    line: &'a str,
    pos: usize,
}

/// What `isspace` says in the C locale: PgBouncer's notion of whitespace (includes `\v`, unlike
/// `u8::is_ascii_whitespace`).
pub(super) fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

impl<'a> Lexer<'a> {
    pub(super) fn new(line: &'a str) -> Self {
        Lexer { line, pos: 0 }
    }

    /// The next token; an unterminated quoted string is an error.
    pub(super) fn next_tok(&mut self) -> Result<Tok<'a>, String> {
        let bytes = self.line.as_bytes();
        while self.pos < bytes.len() && is_space(bytes[self.pos]) {
            self.pos += 1;
        }
        let Some(&first) = bytes.get(self.pos) else {
            return Ok(Tok::End);
        };
        match first {
            b'#' => {
                self.pos = bytes.len();
                Ok(Tok::End)
            }
            b',' => {
                self.pos += 1;
                Ok(Tok::Comma)
            }
            b'"' => self.quoted(),
            _ => {
                let start = self.pos;
                let len = bytes[start..]
                    .iter()
                    .position(|&b| matches!(b, b',' | b'#' | b'"') || is_space(b))
                    .unwrap_or(bytes.len() - start);
                self.pos = start + len;
                // the stop bytes are ASCII, so both ends are char boundaries
                Ok(Tok::Word(self.line.get(start..self.pos).unwrap_or("")))
            }
        }
    }

    /// The token after the current position, without consuming it.
    pub(super) fn peek(&self) -> Result<Tok<'a>, String> {
        self.clone().next_tok()
    }

    /// Consumes a `,` if one comes next.
    pub(super) fn eat_comma(&mut self) -> Result<bool, String> {
        if self.peek()? == Tok::Comma {
            self.next_tok()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// The unread rest of the line, as PgBouncer hands it to LDAP (trimmed).
    pub(super) fn rest(&self) -> &'a str {
        self.line.get(self.pos..).unwrap_or("").trim_matches(|c: char| c.is_ascii() && is_space(c as u8))
    }

    fn quoted(&mut self) -> Result<Tok<'a>, String> {
        let bytes = self.line.as_bytes();
        let mut out = String::new();
        let mut i = self.pos + 1;
        let mut seg = i;
        loop {
            match bytes.get(i) {
                None => return Err("unterminated quoted string".to_string()),
                Some(b'"') if bytes.get(i + 1) == Some(&b'"') => {
                    out.push_str(self.line.get(seg..=i).unwrap_or(""));
                    i += 2;
                    seg = i;
                }
                Some(b'"') => {
                    out.push_str(self.line.get(seg..i).unwrap_or(""));
                    self.pos = i + 1;
                    return Ok(Tok::Quoted(out));
                }
                Some(_) => i += 1,
            }
        }
    }
}

/// Describes a token for error messages.
pub(super) fn describe(tok: &Tok<'_>) -> String {
    match tok {
        Tok::Word(w) => format!("'{w}'"),
        Tok::Quoted(q) => format!("\"{q}\""),
        Tok::Comma => "','".to_string(),
        Tok::End => "the end of the line".to_string(),
    }
}
