//! PostgreSQL's md5 password method: the secret is md5(password || user), the client answers
//! "md5" + md5(hex(secret) || salt).

use md5::{Digest, Md5};

use super::ct_eq;
use crate::config::auth_file::Secret;

pub fn new_salt() -> [u8; 4] {
    rand::random()
}

fn hex_md5(parts: &[&[u8]]) -> String {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The stored form: "md5" + hex(md5(password || user)).
pub fn md5_hex_secret(password: &str, user: &str) -> String {
    format!("md5{}", hex_md5(&[password.as_bytes(), user.as_bytes()]))
}

/// What a client must answer for a stored `md5...` secret and `salt`.
pub fn expected_response(hex_secret: &str, salt: [u8; 4]) -> String {
    let inner = hex_secret.strip_prefix("md5").unwrap_or(hex_secret);
    format!("md5{}", hex_md5(&[inner.as_bytes(), &salt]))
}

/// Checks a client's md5 response. Unknown users and SCRAM secrets never match.
pub fn verify(secret: Option<&Secret>, user: &str, salt: [u8; 4], response: &[u8]) -> bool {
    let stored = match secret {
        Some(Secret::Plain(p)) => md5_hex_secret(p, user),
        Some(Secret::Md5(h)) => h.clone(),
        Some(Secret::Scram(_)) | None => md5_hex_secret(&format!("{:x}", rand::random::<u64>()), user),
    };
    let ok = ct_eq(expected_response(&stored, salt).as_bytes(), response);
    ok && matches!(secret, Some(Secret::Plain(_) | Secret::Md5(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_postgres_protocol() {
        let salt = [9, 8, 7, 6];
        let response = postgres_protocol::authentication::md5_hash(b"bob", b"secret", salt);
        assert!(verify(Some(&Secret::Plain("secret".into())), "bob", salt, response.as_bytes()));
        let stored = Secret::Md5(md5_hex_secret("secret", "bob"));
        assert!(verify(Some(&stored), "bob", salt, response.as_bytes()));
        assert!(!verify(Some(&Secret::Plain("other".into())), "bob", salt, response.as_bytes()));
        assert!(!verify(None, "bob", salt, response.as_bytes()));
        assert_eq!(md5_hex_secret("secret", "bob"), postgres_protocol::password::md5(b"secret", "bob"));
    }
}
