//! The auth file (PgBouncer's userlist.txt format): one `"user" "secret"` pair per line.
//! Owns parsing only; verification lives in `auth/`. Imports nothing from the crate.

/// A user's secret as written in the auth file.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// A plain-text password.
    Plain(String),
    /// `md5` followed by 32 hex digits: md5(password || user), as PostgreSQL stores it.
    Md5(String),
    /// A SCRAM-SHA-256 verifier: `SCRAM-SHA-256$<iter>:<salt b64>$<StoredKey b64>:<ServerKey b64>`.
    Scram(ScramSecret),
}

/// The parts of a SCRAM-SHA-256 verifier (RFC 5803 format as PostgreSQL stores it).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ScramSecret {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never print secrets
        match self {
            Secret::Plain(_) => f.write_str("Secret::Plain(..)"),
            Secret::Md5(_) => f.write_str("Secret::Md5(..)"),
            Secret::Scram(_) => f.write_str("Secret::Scram(..)"),
        }
    }
}

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::ConfigError;

/// Users and their secrets.
#[derive(Debug, Clone, Default)]
pub struct AuthFile {
    users: HashMap<String, Secret>,
}

impl AuthFile {
    pub fn load(path: &Path) -> Result<AuthFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::parse(&text, path)
    }

    /// Parses `"user" "secret"` lines; `;`/`#` comments and blank lines are skipped; later lines win.
    pub fn parse(text: &str, path: &Path) -> Result<AuthFile, ConfigError> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
                continue;
            }
            let err = |reason: &str| ConfigError::AtLine { path: path.into(), line: i + 1, reason: reason.into() };
            let (user, rest) = quoted(line).ok_or_else(|| err("expected \"user\" \"secret\""))?;
            let (secret, _) =
                quoted(rest.trim_start()).ok_or_else(|| err("expected a quoted secret after the user"))?;
            if user.is_empty() {
                return Err(err("empty user name"));
            }
            users.insert(user, Secret::parse(&secret));
        }
        Ok(AuthFile { users })
    }

    pub fn get(&self, user: &str) -> Option<&Secret> {
        self.users.get(user)
    }
    /// The user names, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }
    pub fn len(&self) -> usize {
        self.users.len()
    }
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// A double-quoted string with `""` as an escaped quote; returns it and the rest of the line.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut chars = s.strip_prefix('"')?.char_indices().peekable();
    let mut out = String::new();
    let body = s.get(1..)?;
    while let Some((i, c)) = chars.next() {
        if c == '"' {
            if chars.peek().map(|(_, c)| *c) == Some('"') {
                chars.next();
                out.push('"');
                continue;
            }
            return Some((out, body.get(i + 1..)?));
        }
        out.push(c);
    }
    None
}

impl Secret {
    /// `md5` + 32 hex digits, a well-formed SCRAM-SHA-256 verifier, or else a plain password.
    pub fn parse(s: &str) -> Secret {
        if let Some(hex) = s.strip_prefix("md5")
            && hex.len() == 32
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Secret::Md5(s.to_ascii_lowercase());
        }
        if let Some(v) = s.strip_prefix("SCRAM-SHA-256$")
            && let Some(scram) = parse_scram(v)
        {
            return Secret::Scram(scram);
        }
        Secret::Plain(s.to_string())
    }
}

fn parse_scram(v: &str) -> Option<ScramSecret> {
    let (iter_salt, keys) = v.split_once('$')?;
    let (iter, salt) = iter_salt.split_once(':')?;
    let (stored, server) = keys.split_once(':')?;
    let key = |s: &str| -> Option<[u8; 32]> { STANDARD.decode(s).ok()?.try_into().ok() };
    let iterations: u32 = iter.parse().ok().filter(|n| *n > 0)?;
    Some(ScramSecret {
        iterations,
        salt: STANDARD.decode(salt).ok()?,
        stored_key: key(stored)?,
        server_key: key(server)?,
    })
}
