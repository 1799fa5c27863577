//! A client's login messages after the StartupMessage, read as src/client/login.rs reads them: whole
//! messages of at most 10,000 bytes (`whole_message`); a PasswordMessage's body (`password_body`)
//! checked as a cleartext password (`verify_plain`) and as an md5 response (`md5::verify`) against each
//! kind of secret; a SASLInitialResponse (`sasl_initial_response`) into a SCRAM server's first step.
//! Nothing may panic, and no response matches but the right one.
//!
//! Input: a salt (4 bytes), then the client's bytes.
#![no_main]

#[path = "auth_common.rs"]
mod auth_common;

use auth_common::{PASSWORD, USERS, VERIFIERS, block_on, user};
use libfuzzer_sys::fuzz_target;
use pgsluice::auth::scram::ScramServer;
use pgsluice::auth::{md5, verify_plain};
use pgsluice::config::auth_file::Secret;
use pgsluice::protocol::frame::whole_message;
use pgsluice::protocol::messages::{password_body, sasl_initial_response};

/// PostgreSQL's `PQ_SMALL_MESSAGE_LIMIT`, login.rs's bound.
const MAX_LOGIN_MESSAGE: usize = 10_000;

fn check_password(salt: [u8; 4], password: &[u8]) {
    for selector in 0..USERS.len() as u8 {
        let (user, secret) = user(selector);
        let known = secret.is_some();
        // A SCRAM secret costs 4096 HMACs to check in clear: only the genuine password is tried.
        if !matches!(secret, Some(Secret::Scram(_))) || password == PASSWORD.as_bytes() {
            let ok = block_on(verify_plain(secret, user, password)).expect("no derivation failure");
            assert_eq!(ok, known && password == PASSWORD.as_bytes(), "{user}: cleartext {password:?}");
        }
        let right = md5::expected_response(&md5::md5_hex_secret(PASSWORD, user), salt);
        let ok = md5::verify(secret, user, salt, password);
        let md5_user = matches!(secret, Some(Secret::Plain(_) | Secret::Md5(_)));
        assert_eq!(ok, md5_user && password == right.as_bytes(), "{user}: md5 {password:?}");
    }
}

fn check_sasl(selector: u8, body: &[u8]) {
    let Ok((mechanism, data)) = sasl_initial_response(body) else {
        return;
    };
    assert!(mechanism.len() < body.len() && data.len() < body.len());
    let (user, secret) = user(selector);
    let mut server = block_on(ScramServer::new(&VERIFIERS, user, secret)).expect("a verifier");
    let _ = server.handle_client_first(data);
}

fuzz_target!(|data: &[u8]| {
    let [a, b, c, d, login @ ..] = data else {
        return;
    };
    let mut rest = login;
    let salt = [*a, *b, *c, *d];
    while let Ok(Some((tag, body, n))) = whole_message(rest, MAX_LOGIN_MESSAGE) {
        assert!(n <= rest.len() && n <= MAX_LOGIN_MESSAGE + 1);
        if tag == b'p' {
            if let Ok(password) = password_body(body) {
                assert!(!password.contains(&0));
                check_password(salt, password);
            }
            check_sasl(*a, body);
        }
        rest = &rest[n..];
    }
});
