//! Reading a pgbouncer.ini the way PgBouncer does: `[section]` headers, `key = value` lines (the value
//! is the rest of the line, `;` and `#` only start a comment at the beginning of a line) and
//! `%include FILE` lines, which read FILE in place. Every line read keeps its file and line number, so
//! errors can say where.
//!
//! Includes: a relative FILE is taken relative to the directory of the file that includes it (as
//! pgsluice takes auth_file and the other file settings relative to the config file; PgBouncer takes
//! it relative to its working directory, which is the same when it runs in the config's directory).
//! At most `MAX_INCLUDE_DEPTH` levels deep, PgBouncer's limit, which also stops a file that includes
//! itself. The section in effect carries into an included file and out of it, as in PgBouncer.

use std::path::{Path, PathBuf};

use super::ConfigError;

/// PgBouncer's limit on nested `%include`s.
pub const MAX_INCLUDE_DEPTH: usize = 10;

/// One `key = value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniLine {
    pub file: PathBuf,
    pub line: usize,
    /// The section it is in, lower-cased; empty before the first header.
    pub section: String,
    pub key: String,
    pub value: String,
}

impl IniLine {
    /// `file:line: [section] key: reason`, the error for a value that cannot be used.
    pub fn error(&self, reason: impl std::fmt::Display) -> ConfigError {
        let reason = format!("[{}] {}: {reason}", self.section, self.key);
        ConfigError::AtLine { path: self.file.clone(), line: self.line, reason }
    }
}

/// The lines of the ini at `path` and of every file it includes, in reading order.
pub fn read(path: &Path) -> Result<Vec<IniLine>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    parse(&text, path)
}

/// The lines of `text`, read as the file `path` (which relative includes are taken against).
pub fn parse(text: &str, path: &Path) -> Result<Vec<IniLine>, ConfigError> {
    let mut reader = Reader { lines: Vec::new(), section: String::new() };
    reader.parse(text, path, 0)?;
    Ok(reader.lines)
}

struct Reader {
    lines: Vec<IniLine>,
    section: String,
}

impl Reader {
    fn parse(&mut self, text: &str, path: &Path, depth: usize) -> Result<(), ConfigError> {
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let at = |reason: String| ConfigError::AtLine { path: path.into(), line, reason };
            let s = raw.trim();
            if s.is_empty() || s.starts_with(';') || s.starts_with('#') {
                continue;
            }
            if let Some(file) = include_target(s) {
                if depth >= MAX_INCLUDE_DEPTH {
                    return Err(at(format!(
                        "%include {file}: includes nested more than {MAX_INCLUDE_DEPTH} deep (does a file include itself?)"
                    )));
                }
                let target = match Path::new(file) {
                    p if p.is_absolute() => p.to_path_buf(),
                    p => path.parent().unwrap_or(Path::new(".")).join(p),
                };
                let included = std::fs::read_to_string(&target)
                    .map_err(|e| at(format!("%include {}: cannot read: {e}", target.display())))?;
                self.parse(&included, &target, depth + 1)?;
                continue;
            }
            if let Some(rest) = s.strip_prefix('[') {
                let (name, after) =
                    rest.split_once(']').ok_or_else(|| at(format!("section header without `]`: {s}")))?;
                let after = after.trim();
                if !(after.is_empty() || after.starts_with(';') || after.starts_with('#')) {
                    return Err(at(format!("unexpected text after the section header: {after}")));
                }
                self.section = name.trim().to_ascii_lowercase();
                continue;
            }
            let (key, value) = split_key(s).ok_or_else(|| at(format!("expected `key = value`: {s}")))?;
            self.lines.push(IniLine { file: path.into(), line, section: self.section.clone(), key, value });
        }
        Ok(())
    }
}

/// The file of a `%include FILE` line (PgBouncer: `%include`, blanks, then the rest of the line).
fn include_target(s: &str) -> Option<&str> {
    let rest = s.strip_prefix("%include")?;
    rest.starts_with([' ', '\t']).then(|| rest.trim()).filter(|f| !f.is_empty())
}

/// `key = value`, the key bare or in single or double quotes (a database name such as `"my db"`;
/// doubled quotes inside stand for one), the value the rest of the line.
fn split_key(s: &str) -> Option<(String, String)> {
    let (key, rest) = match s.chars().next()? {
        q @ ('\'' | '"') => {
            let mut key = String::new();
            let mut chars = s[1..].char_indices().peekable();
            let end = loop {
                let (i, c) = chars.next()?;
                if c != q {
                    key.push(c);
                } else if chars.peek().is_some_and(|(_, n)| *n == q) {
                    chars.next();
                    key.push(q);
                } else {
                    break i + 2;
                }
            };
            (key, s.get(end..)?.trim_start().strip_prefix('=')?)
        }
        _ => {
            let (k, v) = s.split_once('=')?;
            (k.trim().to_string(), v)
        }
    };
    (!key.is_empty()).then(|| (key, rest.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(lines: &[IniLine]) -> Vec<(String, String, String)> {
        lines.iter().map(|l| (l.section.clone(), l.key.clone(), l.value.clone())).collect()
    }

    #[test]
    fn lines_keep_section_key_value_and_position() {
        let text = "; comment\n[databases]\n  app = host=h dbname=x ; not a comment\n\"my \"\"db\"\"\" = host=h\n\
                    'q' = port=1\n[PgBouncer]\n# comment\nlisten_port=6432\n";
        let lines = parse(text, Path::new("/etc/pgbouncer/pgbouncer.ini")).unwrap();
        let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(
            keys(&lines),
            vec![
                s("databases", "app", "host=h dbname=x ; not a comment"),
                s("databases", "my \"db\"", "host=h"),
                s("databases", "q", "port=1"),
                s("pgbouncer", "listen_port", "6432"),
            ]
        );
        assert_eq!(lines[3].line, 8);
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        for (text, reason) in [
            ("[databases\n", "without `]`"),
            ("[pgbouncer]\n\nlisten_port\n", "expected `key = value`"),
            ("\"x = 1\n", "expected"),
        ] {
            let e = parse(text, Path::new("/x/pgbouncer.ini")).unwrap_err().to_string();
            let line = text.lines().count();
            assert!(e.starts_with(&format!("/x/pgbouncer.ini:{line}: ")) && e.contains(reason), "{text:?}: {e}");
        }
    }

    #[test]
    fn includes_are_read_in_place_relative_to_the_including_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        std::fs::write(dir.path().join("conf.d/dbs.ini"), "app = host=h\n%include more.ini\n").unwrap();
        std::fs::write(dir.path().join("conf.d/more.ini"), "[users]\nalice = pool_size=2\n").unwrap();
        let main = dir.path().join("pgbouncer.ini");
        std::fs::write(&main, "[databases]\n%include conf.d/dbs.ini\nbob = pool_size=3\n").unwrap();
        let lines = read(&main).unwrap();
        let found: Vec<(String, String, usize)> =
            lines.iter().map(|l| (l.section.clone(), l.key.clone(), l.line)).collect();
        assert_eq!(
            found,
            vec![
                ("databases".into(), "app".into(), 1),
                ("users".into(), "alice".into(), 2),
                ("users".into(), "bob".into(), 3)
            ],
            "the section set in an included file stays in effect after it"
        );
        assert_eq!(lines[0].file, dir.path().join("conf.d/dbs.ini"));
    }

    #[test]
    fn a_missing_include_and_an_include_loop_are_errors_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("pgbouncer.ini");
        std::fs::write(&main, "[pgbouncer]\n%include nowhere.ini\n").unwrap();
        let e = read(&main).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:2: %include ", main.display())) && e.contains("nowhere.ini"), "{e}");
        std::fs::write(&main, "[pgbouncer]\n%include pgbouncer.ini\n").unwrap();
        let e = read(&main).unwrap_err().to_string();
        assert!(e.contains(":2: %include pgbouncer.ini: includes nested more than 10 deep"), "{e}");
    }
}
