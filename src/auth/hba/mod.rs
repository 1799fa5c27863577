//! PgBouncer's HBA file (`auth_hba_file`, PostgreSQL's pg_hba.conf format) and ident map file
//! (`auth_ident_file`): parsing, and "which line applies to this connection". Pure: the only I/O is in
//! [`load`] and [`IdentMap::load`]; `@file` includes are read through a caller's closure.
//!
//! PgBouncer's subset, as its `src/hba.c` and docs have it:
//! - types `local`, `host`, `hostssl`, `hostnossl` (no `hostgssenc`/`hostnogssenc`);
//! - database column: names, `all`, `sameuser`, `replication` (only physical replication connections;
//!   `all` does not match those), `@file`; user column: names, `all`, `@file` (no `+group`). PgBouncer
//!   reads both columns with the same keywords, so `sameuser` in the user column also means
//!   "database name = user name";
//! - address: `all`, IPv4/IPv6 with `/bits` or a netmask column (no host names, `samehost`, `samenet`);
//!   an IPv4 line matches only IPv4 clients, an IPv6 line only IPv6 clients;
//! - methods: `trust`, `reject`, `md5`, `password`, `scram-sha-256`, `cert`, `peer`, `ldap`; the one
//!   option is `map=` (which must name a map of the ident file); `ldap` keeps the rest of its line;
//! - `#` comments, `"..."` quoting (`""` inside; a quoted keyword is a plain name), no backslash line
//!   continuation; keywords and names are case-sensitive.
//!
//! PgBouncer skips (and logs) a line it cannot parse. [`HbaRules::parse`] does the same and lists the
//! skipped lines in [`HbaRules::line_errors`]; [`HbaRules::into_strict`] makes any of them an error.
//!
//! Where this is stricter than PgBouncer, the line is reported instead of being kept in a form that
//! silently differs: an address with bits outside its mask and `replication` in the user column (lines
//! PgBouncer keeps but can never match); several names on one `@file` line without commas (PgBouncer
//! drops all but the first); a `/bits` that is not 0-128 in digits; names over 63 bytes; NUL bytes.
//! Blank and comment lines in an `@file` are fine here (PgBouncer fails the line, its bug #304). An
//! IPv4-mapped IPv6 client address is matched as IPv4. Includes are bounded ([`MAX_INCLUDE_DEPTH`],
//! loops refused) and count towards [`MAX_BYTES`] and [`MAX_LINES`].

mod address;
mod ident;
mod lexer;
mod line;
mod names;

#[cfg(test)]
mod tests;

use std::io::Read;
use std::net::IpAddr;
use std::path::Path;

pub use ident::IdentMap;

use address::Address;
use names::{Fail, Includes, NameSet};

/// The most text one file may have, and all `@file` includes together with it (bytes).
pub const MAX_BYTES: usize = 10 * 1024 * 1024;
/// The most lines one file may have, and all `@file` includes together with it.
pub const MAX_LINES: usize = 100_000;
/// How deep `@file` includes may nest (an `@file` on an HBA line is depth 1).
pub const MAX_INCLUDE_DEPTH: usize = 10;
/// The longest database, user or map name (PostgreSQL's NAMEDATALEN - 1).
pub const MAX_NAME_LEN: usize = 63;
/// The longest system user name in the ident file (certificate names can exceed NAMEDATALEN).
pub const MAX_SYSTEM_NAME_LEN: usize = 255;

/// Reads an included `@file` given its resolved path, returning its text (see [`HbaRules::parse`]).
pub type Reader<'a> = dyn Fn(&str) -> Result<String, String> + 'a;

/// What went wrong with an HBA or ident file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HbaError {
    /// One line could not be used; PgBouncer skips such a line.
    #[error("line {line}: {reason}")]
    Line { line: usize, reason: String },
    /// The file, with what it includes, is over [`MAX_BYTES`].
    #[error("the file and its @file includes are larger than {max} bytes")]
    TooLarge { max: usize },
    /// The file, with what it includes, is over [`MAX_LINES`].
    #[error("the file and its @file includes have more than {max} lines")]
    TooManyLines { max: usize },
    /// The file itself could not be read.
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
}

/// How the client reached the pooler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    /// A Unix socket: only `local` lines apply.
    Local,
    /// TCP from `addr`, with or without TLS. An IPv4-mapped IPv6 address counts as IPv4 (what
    /// PgBouncer's separate IPv4 and IPv6 listeners would have seen).
    Tcp { addr: IpAddr, tls: bool },
}

/// The startup packet's `replication` parameter, as far as HBA is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Replication {
    /// A normal connection.
    #[default]
    None,
    /// `replication=database`: matched like a normal connection, by database name.
    Logical,
    /// `replication=true`: matched only by lines with the `replication` keyword.
    Physical,
}

/// One login to decide on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HbaRequest<'a> {
    pub kind: ConnKind,
    pub database: &'a str,
    pub user: &'a str,
    pub replication: Replication,
}

/// A line's connection type (its first column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnType {
    /// `local`: Unix sockets.
    Local,
    /// `host`: TCP, with or without TLS.
    Host,
    /// `hostssl`: TCP with TLS.
    HostSsl,
    /// `hostnossl`: TCP without TLS.
    HostNoSsl,
}

/// A line's authentication method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HbaMethod {
    /// Let the client in without a password.
    Trust,
    /// Refuse the login.
    Reject,
    /// `password`: cleartext password (PgBouncer's `plain`).
    Password,
    /// MD5 password exchange (SCRAM when the user's secret is a SCRAM verifier, as PgBouncer does).
    Md5,
    /// `scram-sha-256`.
    ScramSha256,
    /// TLS client certificate: its common name must be the user, or allowed by the line's map.
    Cert,
    /// Unix socket peer credentials: the OS user must be the user, or allowed by the line's map.
    Peer,
    /// LDAP; its options are in [`HbaRule::ldap_options`].
    Ldap,
}

/// One usable line of the HBA file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HbaRule {
    /// The line's number in the HBA file (1-based).
    pub line: usize,
    pub conn_type: ConnType,
    pub method: HbaMethod,
    /// `map=NAME`: the ident map that relates certificate/peer names to database users.
    pub ident_map: Option<String>,
    /// For `ldap`: the rest of the line after the method, as PgBouncer keeps it.
    pub ldap_options: Option<String>,
    databases: NameSet,
    users: NameSet,
    /// `None` for `local` lines.
    address: Option<Address>,
}

impl HbaRule {
    /// PgBouncer's `hba_eval` test for one line.
    fn matches(&self, req: &HbaRequest<'_>) -> bool {
        let type_ok = match (req.kind, self.conn_type) {
            (ConnKind::Local, ConnType::Local) => true,
            (ConnKind::Local, _) | (ConnKind::Tcp { .. }, ConnType::Local) => false,
            (ConnKind::Tcp { tls, addr }, t) => {
                let tls_ok = match t {
                    ConnType::HostSsl => tls,
                    ConnType::HostNoSsl => !tls,
                    _ => true,
                };
                tls_ok && self.address.is_some_and(|a| a.matches(addr.to_canonical()))
            }
        };
        if !type_ok {
            return false;
        }
        let db_ok = match req.replication {
            Replication::Physical => self.databases.replication,
            Replication::None | Replication::Logical => self.databases.matches(req.database, req.user),
        };
        db_ok && self.users.matches(req.user, req.database)
    }
}

/// The usable lines of an HBA file, in file order, and the lines that were skipped.
#[derive(Debug, Clone, Default)]
pub struct HbaRules {
    rules: Vec<HbaRule>,
    line_errors: Vec<HbaError>,
}

impl HbaRules {
    /// Parses the HBA file's text. `ident` is the loaded ident map file, if any: a `map=` must name one
    /// of its maps. `include` reads an `@file`: it gets the path relative to the HBA file's directory
    /// (absolute paths as written; a nested include is relative to the file that names it) and
    /// returns its text. `Err` only when the text and its includes are over [`MAX_BYTES`] or
    /// [`MAX_LINES`]; a bad line is skipped as PgBouncer does and listed in [`HbaRules::line_errors`].
    pub fn parse(text: &str, ident: Option<&IdentMap>, include: &Reader<'_>) -> Result<HbaRules, HbaError> {
        check_size(text)?;
        let lines = text.lines().count();
        let mut inc = Includes::new(include, MAX_BYTES - text.len(), MAX_LINES - lines);
        let mut out = HbaRules::default();
        for (i, text_line) in text.lines().enumerate() {
            match line::parse_line(text_line, i + 1, ident, &mut inc) {
                Ok(None) => {}
                Ok(Some(rule)) => out.rules.push(rule),
                Err(Fail::Line(reason)) => out.line_errors.push(HbaError::Line { line: i + 1, reason }),
                Err(Fail::TooLarge) => return Err(HbaError::TooLarge { max: MAX_BYTES }),
                Err(Fail::TooManyLines) => return Err(HbaError::TooManyLines { max: MAX_LINES }),
            }
        }
        Ok(out)
    }

    /// The first line that matches wins; `None` when no line matches (refuse the login, as PgBouncer
    /// does, like `reject`).
    pub fn find(&self, req: &HbaRequest<'_>) -> Option<&HbaRule> {
        self.rules.iter().find(|r| r.matches(req))
    }

    /// The usable lines, in file order.
    pub fn rules(&self) -> &[HbaRule] {
        &self.rules
    }

    /// The lines that were skipped, each with its line number and reason (for the log, as PgBouncer
    /// logs "could not parse hba config line N").
    pub fn line_errors(&self) -> &[HbaError] {
        &self.line_errors
    }

    /// The rules if no line was skipped, else the first skipped line's error: for a caller that would
    /// rather keep its previous rules than run with part of a file.
    pub fn into_strict(self) -> Result<HbaRules, HbaError> {
        match self.line_errors.first() {
            Some(e) => Err(e.clone()),
            None => Ok(self),
        }
    }
}

/// Reads (bounded) and parses the HBA file at `path`; `@file` includes are read relative to its
/// directory. See [`HbaRules::parse`].
pub fn load(path: &Path, ident: Option<&IdentMap>) -> Result<HbaRules, HbaError> {
    let text =
        read_bounded(path, MAX_BYTES).map_err(|reason| HbaError::Read { path: path.display().to_string(), reason })?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let include = move |p: &str| {
        let p = Path::new(p);
        let full = if p.is_absolute() { p.to_path_buf() } else { dir.join(p) };
        read_bounded(&full, MAX_BYTES)
    };
    HbaRules::parse(&text, ident, &include)
}

/// The HBA rules in force and the ident maps their `map=` options name, read together from
/// auth_hba_file and auth_ident_file. Strict: any line that does not parse fails the whole load, so
/// RELOAD keeps the running rules rather than quietly dropping, say, a `reject` line.
#[derive(Debug)]
pub struct HbaFiles {
    pub rules: HbaRules,
    pub ident: Option<IdentMap>,
}

impl HbaFiles {
    pub fn load(hba: &Path, ident: Option<&Path>) -> Result<HbaFiles, String> {
        let ident = match ident {
            Some(p) => {
                Some(IdentMap::load(p).and_then(IdentMap::into_strict).map_err(|e| format!("{}: {e}", p.display()))?)
            }
            None => None,
        };
        let rules =
            load(hba, ident.as_ref()).and_then(HbaRules::into_strict).map_err(|e| format!("{}: {e}", hba.display()))?;
        Ok(HbaFiles { rules, ident })
    }

    /// Whether `system_user` (a certificate's common name, a Unix user) may log in as `db_user`:
    /// the same name, or allowed by `map`.
    pub fn allows(&self, map: Option<&str>, system_user: &str, db_user: &str) -> bool {
        match (map, &self.ident) {
            (None, _) => system_user == db_user,
            (Some(m), Some(ident)) => ident.allows(m, system_user, db_user),
            (Some(_), None) => false,
        }
    }
}

/// Reads at most `max` bytes of UTF-8 text from `path`; a longer file is an error.
pub(crate) fn read_bounded(path: &Path, max: usize) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    file.take(limit).read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    if bytes.len() > max {
        return Err(format!("larger than {max} bytes"));
    }
    String::from_utf8(bytes).map_err(|_| "not valid UTF-8".to_string())
}

/// The bounds every file is held to.
pub(crate) fn check_size(text: &str) -> Result<(), HbaError> {
    if text.len() > MAX_BYTES {
        return Err(HbaError::TooLarge { max: MAX_BYTES });
    }
    if text.lines().count() > MAX_LINES {
        return Err(HbaError::TooManyLines { max: MAX_LINES });
    }
    Ok(())
}
