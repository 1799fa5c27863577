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
