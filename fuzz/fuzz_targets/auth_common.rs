//! The users the auth targets log in as, from conf/userlist.txt (all for the password `app-secret`),
//! and a runtime for the async parts of the SCRAM exchange.
#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use pgsluice::auth::keys::Keys;
use pgsluice::auth::md5;
use pgsluice::auth::scram::ScramVerifiers;
use pgsluice::config::auth_file::{AuthFile, Secret};

pub const USERLIST: &str = include_str!("../../conf/userlist.txt");
pub const PASSWORD: &str = "app-secret";
/// A plain, an md5, a SCRAM user, and one the auth file does not know.
pub const USERS: [&str; 4] = ["app", "app_md5", "app_scram", "nobody"];

/// conf/userlist.txt, with two secrets remade from the password: `app_md5`'s from that user's name (the
/// file's entry is md5("app-secret" || "app"), the secret of user `app`, so no password logs `app_md5`
/// in), and `app_scram`'s with one PBKDF2 iteration (a check in clear derives the keys every time).
pub static AUTH: LazyLock<AuthFile> = LazyLock::new(|| {
    let md5_user = format!("\"app_md5\" \"{}\"\n", md5::md5_hex_secret(PASSWORD, "app_md5"));
    let salt = b"pgsluice-fuzz";
    let k = Keys::derive(PASSWORD.as_bytes(), salt, 1);
    let b64 = |b: &[u8]| STANDARD.encode(b);
    let scram = format!("SCRAM-SHA-256$1:{}${}:{}", b64(salt), b64(&k.stored_key), b64(&k.server_key));
    let text = format!("{USERLIST}{md5_user}\"app_scram\" \"{scram}\"\n");
    AuthFile::parse(&text, Path::new("userlist.txt")).expect("conf/userlist.txt parses")
});
/// One per process, as in pgsluice: a plain-text user's keys are derived once, then cached.
pub static VERIFIERS: LazyLock<ScramVerifiers> = LazyLock::new(ScramVerifiers::default);
static RUNTIME: LazyLock<tokio::runtime::Runtime> =
    LazyLock::new(|| tokio::runtime::Builder::new_current_thread().build().expect("a tokio runtime"));

/// The ClientKey and ServerKey of `app_scram`, for a genuine client.
pub static SCRAM_KEYS: LazyLock<([u8; 32], [u8; 32])> = LazyLock::new(|| {
    let Some(Secret::Scram(s)) = AUTH.get("app_scram") else { panic!("app_scram has a SCRAM secret") };
    let k = Keys::derive(PASSWORD.as_bytes(), &s.salt, s.iterations);
    (k.client_key, k.server_key)
});

pub fn block_on<F: Future>(f: F) -> F::Output {
    RUNTIME.block_on(f)
}

/// The user (and secret) an input's selector byte picks.
pub fn user(selector: u8) -> (&'static str, Option<&'static Secret>) {
    let user = USERS[usize::from(selector) % USERS.len()];
    (user, AUTH.get(user))
}
