//! The ident map file (`auth_ident_file`, PostgreSQL's pg_ident.conf) in PgBouncer's subset: lines
//! `map-name system-username database-username`, `#` comments, the HBA tokenizer's quoting. As in
//! PgBouncer there are no includes and no regular expressions; the database user may be `all`.
//! PgBouncer skips a line it cannot parse (and logs it); so does [`IdentMap::parse`], which records
//! each skipped line in [`IdentMap::line_errors`] — [`IdentMap::into_strict`] turns them into an error.

use std::collections::HashMap;
use std::path::Path;

use super::lexer::{Lexer, Tok, describe};
use super::{HbaError, MAX_BYTES, MAX_NAME_LEN, MAX_SYSTEM_NAME_LEN, check_size, read_bounded};

/// Which database users one system user may log in as, under one map.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mapping {
    system_user: String,
    /// `None` for the `all` keyword.
    db_user: Option<String>,
}

/// The parsed ident map file: map name -> its lines, in file order.
#[derive(Debug, Clone, Default)]
pub struct IdentMap {
    maps: HashMap<String, Vec<Mapping>>,
    line_errors: Vec<HbaError>,
}

impl IdentMap {
    /// Parses the file's text. `Err` only when the text is over the size or line bounds; a bad line is
    /// skipped as PgBouncer does and listed in [`IdentMap::line_errors`].
    pub fn parse(text: &str) -> Result<IdentMap, HbaError> {
        check_size(text)?;
        let mut map = IdentMap::default();
        for (i, line) in text.lines().enumerate() {
            match parse_line(line) {
                Ok(None) => {}
                Ok(Some((name, mapping))) => map.maps.entry(name).or_default().push(mapping),
                Err(reason) => map.line_errors.push(HbaError::Line { line: i + 1, reason }),
            }
        }
        Ok(map)
    }

    /// Reads (at most [`MAX_BYTES`](super::MAX_BYTES)) and parses the file at `path`.
    pub fn load(path: &Path) -> Result<IdentMap, HbaError> {
        let text = read_bounded(path, MAX_BYTES)
            .map_err(|reason| HbaError::Read { path: path.display().to_string(), reason })?;
        Self::parse(&text)
    }

    /// Whether `system_user` (the TLS certificate's name, or the peer's OS user) may log in as
    /// `db_user` under the map `map`: some line of the map names that system user and either that
    /// database user or `all`. Names compare byte for byte; an unknown map allows nothing.
    pub fn allows(&self, map: &str, system_user: &str, db_user: &str) -> bool {
        self.maps.get(map).is_some_and(|lines| {
            lines.iter().any(|m| m.system_user == system_user && m.db_user.as_deref().is_none_or(|u| u == db_user))
        })
    }

    /// Whether a map of this name has at least one line (what `map=` in the HBA file must name).
    pub fn has_map(&self, map: &str) -> bool {
        self.maps.contains_key(map)
    }

    /// The lines that were skipped, each with its line number and reason.
    pub fn line_errors(&self) -> &[HbaError] {
        &self.line_errors
    }

    /// The map if no line was skipped, else the first skipped line's error.
    pub fn into_strict(self) -> Result<IdentMap, HbaError> {
        match self.line_errors.first() {
            Some(e) => Err(e.clone()),
            None => Ok(self),
        }
    }
}

/// One line: `None` for blank and comment lines.
fn parse_line(line: &str) -> Result<Option<(String, Mapping)>, String> {
    if line.contains('\0') {
        return Err("the line contains a NUL byte".to_string());
    }
    let mut lx = Lexer::new(line);
    let map = match lx.next_tok()? {
        Tok::End => return Ok(None),
        Tok::Word(w) => w.to_string(),
        other => return Err(format!("expected a map name, found {}", describe(&other))),
    };
    if matches!(map.as_str(), "include" | "include_if_exists" | "include_dir") && count_fields(&lx) == 1 {
        return Err(format!("'{map}' directives are not supported (PgBouncer does not support them either)"));
    }
    check_len("map name", &map, MAX_NAME_LEN)?;
    let system_user = match lx.next_tok()? {
        Tok::Word(w) if w.starts_with('/') => return Err(regex_error(w)),
        Tok::Word(w) => w.to_string(),
        Tok::Quoted(q) => q,
        other => return Err(format!("expected a system user name, found {}", describe(&other))),
    };
    check_len("system user name", &system_user, MAX_SYSTEM_NAME_LEN)?;
    let db_user = match lx.next_tok()? {
        Tok::Word("all") => None,
        Tok::Word(w) if w.starts_with('/') => return Err(regex_error(w)),
        Tok::Word(w) if w.starts_with('+') => {
            return Err(format!("group membership '{w}' is not supported (PgBouncer does not support +group either)"));
        }
        Tok::Word(w) => Some(w.to_string()),
        Tok::Quoted(q) => Some(q),
        other => return Err(format!("expected a database user name, found {}", describe(&other))),
    };
    if let Some(u) = &db_user {
        check_len("database user name", u, MAX_NAME_LEN)?;
    }
    match lx.next_tok()? {
        Tok::End => Ok(Some((map, Mapping { system_user, db_user }))),
        other => {
            Err(format!("unexpected {} (a line is: map-name system-username database-username)", describe(&other)))
        }
    }
}

/// How many more tokens the line has (stops at the first error).
fn count_fields(lx: &Lexer<'_>) -> usize {
    let mut lx = lx.clone();
    let mut n = 0;
    while let Ok(tok) = lx.next_tok() {
        if tok == Tok::End {
            break;
        }
        n += 1;
    }
    n
}

fn regex_error(w: &str) -> String {
    format!(
        "regular expression '{w}' is not supported (PgBouncer does not support them either); \
         quote the name if it really starts with '/'"
    )
}

fn check_len(what: &str, name: &str, max: usize) -> Result<(), String> {
    if name.len() > max {
        return Err(format!("{what} '{name}' is longer than {max} bytes"));
    }
    Ok(())
}
