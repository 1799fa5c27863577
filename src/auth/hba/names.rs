//! The database and user columns: comma lists of names and keywords, and `@file` includes (a file of
//! more such names, resolved relative to the directory of the file that names it). Reading included
//! files goes through a caller's closure, so this stays free of I/O.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::rc::Rc;

use super::lexer::{Lexer, Tok, describe};
use super::{MAX_BYTES, MAX_INCLUDE_DEPTH, MAX_NAME_LEN, Reader};

/// Which column a name list is in: the keywords allowed differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Column {
    Database,
    User,
}

/// One database or user column: the keywords it holds and its literal names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct NameSet {
    /// `all`.
    pub(super) all: bool,
    /// `sameuser`: the database name equals the user name (PgBouncer honours it in both columns).
    pub(super) sameuser: bool,
    /// `replication` (database column): physical replication connections.
    pub(super) replication: bool,
    /// Literal names, compared byte for byte.
    pub(super) names: HashSet<String>,
}

impl NameSet {
    /// PgBouncer's `name_match`: `all`, then `sameuser` (against `pair`, the other column's value),
    /// then the literal names. `replication` plays no part here.
    pub(super) fn matches(&self, name: &str, pair: &str) -> bool {
        self.all || (self.sameuser && name == pair) || self.names.contains(name)
    }

    fn merge(&mut self, other: &NameSet) {
        self.all |= other.all;
        self.sameuser |= other.sameuser;
        self.replication |= other.replication;
        self.names.extend(other.names.iter().cloned());
    }
}

/// Why a line failed: most failures drop the line (as PgBouncer skips it); exhausting the size budget
/// through includes fails the whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Fail {
    Line(String),
    TooLarge,
    TooManyLines,
}

impl From<String> for Fail {
    fn from(s: String) -> Self {
        Fail::Line(s)
    }
}

/// State shared by every `@file` of one parse: the reader, caches, the include stack and budgets.
pub(super) struct Includes<'r> {
    read: &'r Reader<'r>,
    /// Text of each file read so far (or why it could not be read), by resolved path.
    texts: HashMap<String, Result<Rc<str>, String>>,
    /// Successfully parsed files, with the nesting height of their own includes.
    parsed: HashMap<(String, Column), (Rc<NameSet>, usize)>,
    /// Files being parsed, outermost first: for loops and the depth bound.
    stack: Vec<String>,
    bytes_left: usize,
    lines_left: usize,
    /// Bytes that may still be parsed from included files, counting re-parses of failing ones.
    work_left: usize,
}

impl<'r> Includes<'r> {
    /// `bytes_left`/`lines_left` are what the main file left of the budgets.
    pub(super) fn new(read: &'r Reader<'r>, bytes_left: usize, lines_left: usize) -> Self {
        Includes {
            read,
            texts: HashMap::new(),
            parsed: HashMap::new(),
            stack: Vec::new(),
            bytes_left,
            lines_left,
            work_left: MAX_BYTES * 4,
        }
    }

    /// The path the reader is asked for: absolute as written, otherwise relative to the directory of
    /// `parent` (the main file is `""`, so its includes are relative to its own directory).
    fn resolve(parent: &str, name: &str) -> String {
        if name.starts_with('/') {
            return name.to_string();
        }
        match Path::new(parent).parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.join(name).to_string_lossy().into_owned(),
            _ => name.to_string(),
        }
    }

    fn text(&mut self, path: &str) -> Result<Rc<str>, Fail> {
        if let Some(known) = self.texts.get(path) {
            return known.clone().map_err(Fail::Line);
        }
        let result = (self.read)(path).map(|t| Rc::<str>::from(t.as_str()));
        if let Ok(text) = &result {
            let lines = text.lines().count();
            if text.len() > self.bytes_left {
                return Err(Fail::TooLarge);
            }
            if lines > self.lines_left {
                return Err(Fail::TooManyLines);
            }
            self.bytes_left -= text.len();
            self.lines_left -= lines;
        }
        let result = result.map_err(|e| format!("cannot read @{path}: {e}"));
        self.texts.insert(path.to_string(), result.clone());
        result.map_err(Fail::Line)
    }

    /// Adds the names of `@name` (seen in the file `parent`) to `set`; returns the file's include
    /// height (1 when it includes nothing).
    fn include(&mut self, parent: &str, name: &str, column: Column, set: &mut NameSet) -> Result<usize, Fail> {
        if name.is_empty() {
            return Err(Fail::Line("'@' without a file name".to_string()));
        }
        let path = Self::resolve(parent, name);
        let depth = self.stack.len() + 1;
        if let Some((names, height)) = self.parsed.get(&(path.clone(), column)) {
            if depth + height > MAX_INCLUDE_DEPTH + 1 {
                return Err(too_deep());
            }
            set.merge(names);
            return Ok(*height);
        }
        if self.stack.contains(&path) {
            return Err(Fail::Line(format!("@{path} includes itself")));
        }
        if depth > MAX_INCLUDE_DEPTH {
            return Err(too_deep());
        }
        let text = self.text(&path)?;
        self.work_left = self.work_left.checked_sub(text.len()).ok_or(Fail::TooLarge)?;
        self.stack.push(path.clone());
        let parsed = self.parse_file(&path, &text, column);
        self.stack.pop();
        let (names, height) = parsed?;
        set.merge(&names);
        self.parsed.insert((path, column), (Rc::new(names), height));
        Ok(height)
    }

    /// An included file: on each line a comma list like the column's (blank and comment lines are
    /// fine). Returns the names and how deep its own includes nest (1 = none).
    fn parse_file(&mut self, path: &str, text: &str, column: Column) -> Result<(NameSet, usize), Fail> {
        let mut set = NameSet::default();
        let mut height = 1;
        for (i, line) in text.lines().enumerate() {
            if line.contains('\0') {
                return Err(in_file(path, i, Fail::Line("the line contains a NUL byte".to_string())));
            }
            let mut lx = Lexer::new(line);
            if lx.peek().map_err(|e| in_file(path, i, Fail::Line(e)))? == Tok::End {
                continue;
            }
            let mut inner = Height(1);
            parse_name_list(&mut lx, column, &mut set, self, path, &mut inner).map_err(|e| in_file(path, i, e))?;
            height = height.max(inner.0);
            match lx.next_tok().map_err(|e| in_file(path, i, Fail::Line(e)))? {
                Tok::End => {}
                other => {
                    let msg = format!("unexpected {} (separate names with commas)", describe(&other));
                    return Err(in_file(path, i, Fail::Line(msg)));
                }
            }
        }
        Ok((set, height))
    }
}

/// The include height of what a name list pulled in: 1 plus the tallest `@file` it named (1 if none).
pub(super) struct Height(pub(super) usize);

fn too_deep() -> Fail {
    Fail::Line(format!("@file includes nest more than {MAX_INCLUDE_DEPTH} deep"))
}

fn in_file(path: &str, index: usize, fail: Fail) -> Fail {
    match fail {
        Fail::Line(msg) => Fail::Line(format!("in @{path} line {}: {msg}", index + 1)),
        other => other,
    }
}

/// Reads one column: items separated by commas, each a keyword, `@file`, or a name.
pub(super) fn parse_name_list(
    lx: &mut Lexer<'_>,
    column: Column,
    set: &mut NameSet,
    inc: &mut Includes<'_>,
    parent: &str,
    height: &mut Height,
) -> Result<(), Fail> {
    loop {
        match lx.next_tok()? {
            Tok::Word(w) => parse_word(w, column, set, inc, parent, height)?,
            Tok::Quoted(q) => add_name(set, q)?,
            other => {
                let what = if column == Column::Database { "a database name" } else { "a user name" };
                return Err(Fail::Line(format!("expected {what}, found {}", describe(&other))));
            }
        }
        if !lx.eat_comma()? {
            return Ok(());
        }
    }
}

fn parse_word(
    w: &str,
    column: Column,
    set: &mut NameSet,
    inc: &mut Includes<'_>,
    parent: &str,
    height: &mut Height,
) -> Result<(), Fail> {
    match (w, column) {
        ("all", _) => set.all = true,
        ("sameuser", _) => set.sameuser = true,
        ("replication", Column::Database) => set.replication = true,
        ("replication", Column::User) => {
            return Err(Fail::Line(
                "'replication' in the user column never matches in PgBouncer: quote it (\"replication\") \
                 for a user of that name"
                    .to_string(),
            ));
        }
        ("samerole" | "samegroup", _) => {
            return Err(Fail::Line(format!("'{w}' is not supported (PgBouncer does not support it either)")));
        }
        _ if w.starts_with('+') => {
            return Err(Fail::Line(format!(
                "group membership '{w}' is not supported (PgBouncer does not support +group either)"
            )));
        }
        _ if w.starts_with('@') => {
            let nested = inc.include(parent, &w[1..], column, set)?;
            height.0 = height.0.max(nested + 1);
        }
        _ => add_name(set, w.to_string())?,
    }
    Ok(())
}

fn add_name(set: &mut NameSet, name: String) -> Result<(), Fail> {
    if name.len() > MAX_NAME_LEN {
        return Err(Fail::Line(format!("name '{name}' is longer than {MAX_NAME_LEN} bytes")));
    }
    set.names.insert(name);
    Ok(())
}
