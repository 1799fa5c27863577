//! Verifying clients against the auth file (the proxy as server): which method to ask for, md5 and
//! cleartext checks, and the SCRAM-SHA-256 exchanges. No I/O; the one async part is PBKDF2, which runs
//! on tokio's blocking threads (`keys`); and the HBA/ident files (`hba`). Imports: config.

pub mod hba;
pub mod keys;
pub mod md5;
pub mod scram;

use crate::config::AuthType;
use crate::config::auth_file::Secret;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("password authentication failed")]
    Failed,
    #[error("malformed SASL message: {0}")]
    Malformed(&'static str),
    #[error("unsupported SASL mechanism")]
    UnsupportedMechanism,
    /// A server-first-message asking for more PBKDF2 work than pgsluice does for one login.
    #[error("the server asks for {count} SCRAM iterations, more than pgsluice allows ({cap})")]
    TooManyIterations { count: u64, cap: u32 },
    /// The blocking threads that derive keys are gone (the runtime is shutting down).
    #[error("key derivation is unavailable (shutting down)")]
    Unavailable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Trust,
    Plain,
    Md5,
    ScramSha256,
    /// The TLS client certificate's common name must be the user (or map to it in `map`).
    Cert {
        map: Option<String>,
    },
    /// The Unix socket peer's OS user must be the user (or map to it in `map`).
    Peer {
        map: Option<String>,
    },
    /// Refused, saying why (an HBA `reject` line, no line at all, a method pgsluice lacks).
    Reject(&'static str),
}

/// What to ask a client for. As PgBouncer: md5 configured but only a SCRAM secret known -> SCRAM; never
/// the other way: scram-sha-256 with only an md5 secret known fails like a wrong password (no downgrade).
/// An unknown user gets the configured method and fails at the end, like a wrong password.
/// `auth_type = hba` is decided per connection (`hba_method`).
pub fn choose_method(auth_type: AuthType, secret: Option<&Secret>) -> Method {
    match (auth_type, secret) {
        (AuthType::Trust | AuthType::Any, _) => Method::Trust,
        (AuthType::Plain, _) => Method::Plain,
        (AuthType::Md5, Some(Secret::Scram(_))) => Method::ScramSha256,
        (AuthType::Md5, _) => Method::Md5,
        (AuthType::ScramSha256, _) => Method::ScramSha256,
        (AuthType::Cert, _) => Method::Cert { map: None },
        (AuthType::Hba, _) => Method::Reject("no pg_hba.conf entry"),
    }
}

/// The method an HBA line asks for; `None` (no line matched) is refused, as PostgreSQL does.
pub fn hba_method(rule: Option<&hba::HbaRule>, secret: Option<&Secret>) -> Method {
    use hba::HbaMethod as H;
    let Some(rule) = rule else { return Method::Reject("no pg_hba.conf entry") };
    let as_type = |t| choose_method(t, secret);
    match rule.method {
        H::Trust => Method::Trust,
        H::Reject => Method::Reject("pg_hba.conf rejects connection"),
        H::Password => as_type(AuthType::Plain),
        H::Md5 => as_type(AuthType::Md5),
        H::ScramSha256 => as_type(AuthType::ScramSha256),
        H::Cert => Method::Cert { map: rule.ident_map.clone() },
        H::Peer => Method::Peer { map: rule.ident_map.clone() },
        H::Ldap => Method::Reject("LDAP authentication is not supported"),
    }
}

/// Checks a cleartext password against any kind of secret (a SCRAM verifier's keys are derived off
/// the async threads).
pub async fn verify_plain(secret: Option<&Secret>, user: &str, password: &[u8]) -> Result<bool, AuthError> {
    match secret {
        Some(Secret::Plain(p)) => Ok(ct_eq(p.as_bytes(), password)),
        Some(Secret::Md5(h)) => {
            let pw = String::from_utf8_lossy(password);
            Ok(ct_eq(h.as_bytes(), md5::md5_hex_secret(&pw, user).as_bytes()))
        }
        Some(Secret::Scram(s)) => {
            let keys = keys::derive_off_thread(password, &s.salt, s.iterations).await?;
            Ok(ct_eq(&keys.stored_key, &s.stored_key) && ct_eq(&keys.server_key, &s.server_key))
        }
        None => Ok(false),
    }
}

/// Constant-time equality (length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
