//! PBKDF2 (SCRAM's Hi()) and the keys derived from a password. Deriving costs thousands of HMACs, so
//! async code calls [`derive_off_thread`]: the work runs on tokio's blocking threads, at most
//! [`permits`] derivations at a time in the whole process, and a burst of logins cannot stall the async
//! worker threads that serve other clients' queries. A waiter for a permit is bounded by the login
//! timeout around its login (client_login_timeout, server_connect_timeout).

use std::sync::LazyLock;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::AuthError;

pub(crate) fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length; the error branch cannot happen, but never panic.
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(key) else {
        return [0; 32];
    };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The derived keys of a password.
pub struct Keys {
    pub client_key: [u8; 32],
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl Keys {
    /// Hi() (PBKDF2-HMAC-SHA-256) then ClientKey/StoredKey/ServerKey. CPU-bound: from async code use
    /// [`derive_off_thread`].
    pub fn derive(password: &[u8], salt: &[u8], iterations: u32) -> Keys {
        let mut u = hmac(password, &[salt, &1u32.to_be_bytes()]);
        let mut salted = u;
        for _ in 1..iterations {
            u = hmac(password, &[&u]);
            salted.iter_mut().zip(u.iter()).for_each(|(s, x)| *s ^= x);
        }
        let client_key = hmac(&salted, &[b"Client Key"]);
        Keys { client_key, stored_key: sha256(&client_key), server_key: hmac(&salted, &[b"Server Key"]) }
    }
}

/// How many derivations may run at once: half the cores (the other half stay with the async workers),
/// at least 2.
pub fn permits() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get() / 2).max(2)
}

static PERMITS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(permits()));

/// [`Keys::derive`] on a blocking thread, once a permit is free (waiters are served in order). The
/// permit travels with the work: a login that gives up (its timeout fired) leaves its derivation
/// holding the permit until it ends, so abandoned work still counts against the bound.
pub async fn derive_off_thread(password: &[u8], salt: &[u8], iterations: u32) -> Result<Keys, AuthError> {
    let permit = PERMITS.acquire().await.map_err(|_| AuthError::Unavailable)?;
    let (password, salt) = (password.to_vec(), salt.to_vec());
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        Keys::derive(&password, &salt, iterations)
    })
    .await
    .map_err(|_| AuthError::Unavailable)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn derive_matches_postgres_protocol() {
        let verifier = postgres_protocol::password::scram_sha_256(b"pw");
        let crate::config::auth_file::Secret::Scram(s) = crate::config::auth_file::Secret::parse(&verifier) else {
            panic!("not a SCRAM verifier: {verifier}");
        };
        let k = Keys::derive(b"pw", &s.salt, s.iterations);
        assert_eq!((k.stored_key, k.server_key), (s.stored_key, s.server_key));
        assert_eq!(sha256(&k.client_key), k.stored_key);
    }

    /// On a single-threaded runtime, a timer keeps ticking while a long derivation runs: the work is
    /// not on the runtime's thread. (Inline, the one thread would be busy and the ticker would see at
    /// most one tick before the derivation ends.)
    #[tokio::test(flavor = "current_thread")]
    async fn derivation_leaves_the_async_thread_free() {
        let work = tokio::spawn(derive_off_thread(b"pw", b"salt", 400_000));
        let mut ticks = 0;
        while !work.is_finished() {
            tokio::time::sleep(Duration::from_millis(1)).await;
            ticks += 1;
        }
        let keys = work.await.expect("no panic").expect("derived");
        assert_eq!(keys.stored_key, Keys::derive(b"pw", b"salt", 400_000).stored_key);
        assert!(ticks >= 5, "only {ticks} ticks while deriving: the async thread was blocked");
    }

    /// With every permit taken, a derivation waits (and a timeout around it, like the login timeouts,
    /// ends the wait); once permits are back it runs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn derivations_wait_for_a_permit() {
        let all = u32::try_from(permits()).expect("a few permits");
        let held = PERMITS.acquire_many(all).await.expect("semaphore open");
        let waited = tokio::time::timeout(Duration::from_millis(300), derive_off_thread(b"pw", b"s", 16)).await;
        assert!(waited.is_err(), "a derivation ran with no permit free");
        drop(held);
        let keys = tokio::time::timeout(Duration::from_secs(30), derive_off_thread(b"pw", b"s", 16)).await;
        assert!(matches!(keys, Ok(Ok(_))), "the derivation runs once a permit is free");
        assert!(permits() >= 2);
    }
}
