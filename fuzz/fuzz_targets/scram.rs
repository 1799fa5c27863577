//! The SCRAM-SHA-256 exchange on both sides. As the server (a client logging in to pgsluice):
//! `ScramServer` fed arbitrary client-first and client-final messages, or a genuine client's exchange
//! with fuzzed changes to its final message. As the client (pgsluice logging in to a hostile
//! PostgreSQL): `ScramClient` fed arbitrary server-first and server-final messages. A proof only ever
//! succeeds for the genuine, unchanged exchange.
//!
//! Input: a mode byte, then two messages separated by the first NUL. Mode bits 0-1 pick the user
//! (plain, md5, SCRAM secret, unknown); bits 2-3: 0 = both messages raw to the server, 1 = the second
//! follows `c=biws,r=<the server's nonce>`, 2 = a genuine client whose client-final has the second
//! message spliced in at an offset given by the first byte of the first, 3 = the client side.
#![no_main]

#[path = "auth_common.rs"]
mod auth_common;

use auth_common::{SCRAM_KEYS, VERIFIERS, block_on, user};
use libfuzzer_sys::fuzz_target;
use pgsluice::auth::AuthError;
use pgsluice::auth::scram::{ScramClient, ScramServer};

fn nonce_of(server_first: &[u8]) -> &[u8] {
    let rest = server_first.strip_prefix(b"r=").expect("server-first starts with the nonce");
    &rest[..rest.iter().position(|b| *b == b',').expect("then the salt")]
}

fn server_with_raw_messages(selector: u8, first: &[u8], last: &[u8], follow_nonce: bool) {
    let (user, secret) = user(selector);
    let mut server = block_on(ScramServer::new(&VERIFIERS, user, secret)).expect("a verifier");
    let Ok(server_first) = server.handle_client_first(first) else {
        assert!(server.handle_client_final(last).is_err(), "a final after a refused first");
        return;
    };
    assert!(server.handle_client_first(first).is_err(), "a second client-first");
    let last = if follow_nonce { [b"c=biws,r=", nonce_of(&server_first), last].concat() } else { last.to_vec() };
    // Without the password nobody can forge the proof.
    assert!(server.handle_client_final(&last).is_err(), "a forged proof was accepted");
    assert!(server.client_key().is_none());
}

/// A genuine client's exchange as `app_scram`, with `patch` written into its client-final at `at`.
fn genuine_exchange_with_a_patch(at: usize, patch: &[u8]) {
    let (client_key, server_key) = *SCRAM_KEYS;
    let mut client = ScramClient::with_keys(client_key, server_key);
    let (user, secret) = ("app_scram", auth_common::AUTH.get("app_scram"));
    let mut server = block_on(ScramServer::new(&VERIFIERS, user, secret)).expect("a verifier");
    let server_first = server.handle_client_first(&client.client_first()).expect("a genuine client-first");
    let mut last = block_on(client.handle_server_first(&server_first)).expect("our own server-first");
    let at = at.min(last.len());
    let end = (at + patch.len()).min(last.len());
    let original = last.clone();
    last.splice(at..end, patch.iter().copied());
    match server.handle_client_final(&last) {
        Ok(server_final) => {
            assert_eq!(last, original, "a changed client-final was accepted");
            assert_eq!(server.client_key(), Some(client_key));
            client.handle_server_final(&server_final).expect("our own server-final");
        }
        Err(e) => assert!(last != original, "the genuine exchange failed: {e}"),
    }
}

fn client_against_a_hostile_server(first: &[u8], last: &[u8]) {
    let (client_key, server_key) = *SCRAM_KEYS;
    for follow_nonce in [false, true] {
        let mut client = ScramClient::with_keys(client_key, server_key);
        let client_first = client.client_first();
        let nonce = &client_first[client_first.windows(2).position(|w| w == b"r=").expect("a nonce") + 2..];
        let server_first = if follow_nonce { [b"r=", nonce, first].concat() } else { first.to_vec() };
        match block_on(client.handle_server_first(&server_first)) {
            // Only pgsluice's real server could sign the AuthMessage.
            Ok(_) => assert!(client.handle_server_final(last).is_err(), "a forged server signature was accepted"),
            Err(AuthError::Failed) => panic!("a malformed server-first reported as a failed password"),
            Err(_) => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else {
        return;
    };
    let (first, last) = match rest.iter().position(|b| *b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    match (mode >> 2) & 3 {
        0 => server_with_raw_messages(*mode, first, last, false),
        1 => server_with_raw_messages(*mode, first, last, true),
        2 => genuine_exchange_with_a_patch(first.first().map_or(0, |b| usize::from(*b)), last),
        _ => client_against_a_hostile_server(first, last),
    }
});
