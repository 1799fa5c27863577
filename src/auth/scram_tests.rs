use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::*;

fn scram_secret(password: &str) -> Secret {
    Secret::parse(&postgres_protocol::password::scram_sha_256(password.as_bytes()))
}

/// Runs postgres-protocol's client against our server. Ok(client_key) when both sides accept.
fn exchange(secret: Option<&Secret>, password: &str) -> Result<Option<[u8; 32]>, AuthError> {
    exchange_as(&ScramVerifiers::default(), "bob", secret, password)
}

fn exchange_as(
    verifiers: &ScramVerifiers,
    user: &str,
    secret: Option<&Secret>,
    password: &str,
) -> Result<Option<[u8; 32]>, AuthError> {
    let mut server = ScramServer::new(verifiers, user, secret);
    let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
    let first = server.handle_client_first(client.message())?;
    client.update(&first).map_err(|_| AuthError::Malformed("client rejected server-first"))?;
    let fin = server.handle_client_final(client.message())?;
    client.finish(&fin).map_err(|_| AuthError::Malformed("client rejected server-final"))?;
    Ok(server.client_key())
}

#[test]
fn real_client_authenticates_with_plain_and_scram_secrets() {
    assert!(matches!(scram_secret("pw"), Secret::Scram(_)));
    exchange(Some(&Secret::Plain("pw".into())), "pw").unwrap();
    assert!(exchange(Some(&scram_secret("pw")), "pw").unwrap().is_some());
}

#[test]
fn wrong_password_and_unknown_user_fail_alike() {
    assert_eq!(exchange(Some(&scram_secret("pw")), "nope"), Err(AuthError::Failed));
    assert_eq!(exchange(Some(&Secret::Plain("pw".into())), "nope"), Err(AuthError::Failed));
    assert_eq!(exchange(None, "pw"), Err(AuthError::Failed));
}

#[test]
fn learned_client_key_logs_in_like_the_password() {
    let secret = scram_secret("pw");
    let client_key = exchange(Some(&secret), "pw").unwrap().unwrap();
    let Secret::Scram(s) = &secret else { unreachable!() };
    for mut client in [ScramClient::with_keys(client_key, s.server_key), ScramClient::with_password("pw")] {
        let mut server = ScramServer::new(&ScramVerifiers::default(), "bob", Some(&secret));
        let first = server.handle_client_first(&client.client_first()).unwrap();
        let fin = server.handle_client_final(&client.handle_server_first(&first).unwrap()).unwrap();
        client.handle_server_final(&fin).unwrap();
    }
}

#[test]
fn malformed_messages_are_errors_not_panics() {
    let secret = scram_secret("pw");
    for bad in [&b""[..], b"n", b"p=tls-server-end-point,,n=,r=abc", b"x,,n=,r=abc", b"n,,m=ext,n=,r=a", b"n,,n=,r="] {
        assert!(matches!(
            ScramServer::new(&ScramVerifiers::default(), "bob", Some(&secret)).handle_client_first(bad),
            Err(AuthError::Malformed(_))
        ));
    }
    assert!(
        ScramServer::new(&ScramVerifiers::default(), "bob", Some(&secret))
            .handle_client_first(&vec![b'a'; 100_000])
            .is_err()
    );
    let mut server = ScramServer::new(&ScramVerifiers::default(), "bob", Some(&secret));
    server.handle_client_first(b"n,,n=,r=abc").unwrap();
    assert!(server.handle_client_final(b"c=biws,r=wrong,p=AAAA").is_err());
    let mut seed = 7u64;
    for _ in 0..2000 {
        let len = (seed % 64) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (seed >> 33) as u8
            })
            .collect();
        let mut s = ScramServer::new(&ScramVerifiers::default(), "bob", Some(&secret));
        let _ = s.handle_client_first(&bytes);
        let _ = s.handle_client_final(&bytes);
    }
}

/// The salt and iteration count a server-first-message shows.
fn salt_shown(verifiers: &ScramVerifiers, user: &str, secret: Option<&Secret>) -> (String, String) {
    let mut server = ScramServer::new(verifiers, user, secret);
    let first = String::from_utf8(server.handle_client_first(b"n,,n=,r=abc").unwrap()).unwrap();
    let mut parts = first.split(',').skip(1);
    let salt = parts.next().unwrap().strip_prefix("s=").unwrap().to_string();
    (salt, parts.next().unwrap().strip_prefix("i=").unwrap().to_string())
}

#[test]
fn unknown_users_get_a_stable_salt_of_their_own() {
    let v = ScramVerifiers::default();
    let (nobody, iterations) = salt_shown(&v, "nobody", None);
    assert_eq!(salt_shown(&v, "nobody", None), (nobody.clone(), iterations.clone()), "same salt every attempt");
    assert_eq!(iterations, "4096", "the iteration count of real verifiers");
    assert_ne!(salt_shown(&v, "somebody", None).0, nobody, "another user, another salt");
    assert_eq!(STANDARD.decode(&nobody).unwrap().len(), 16);
    // Another process (another secret) gives the same name another salt.
    assert_ne!(salt_shown(&ScramVerifiers::default(), "nobody", None).0, nobody);
    // A plain-text user's salt is derived the same way: stable, and no different from an unknown user's.
    let plain = Secret::Plain("pw".into());
    assert_eq!(salt_shown(&v, "nobody", Some(&plain)).0, nobody);
    // A stored verifier shows its own salt.
    let Secret::Scram(s) = scram_secret("pw") else { unreachable!() };
    assert_eq!(salt_shown(&v, "nobody", Some(&Secret::Scram(s.clone()))).0, STANDARD.encode(&s.salt));
}

#[test]
fn keys_of_plain_passwords_are_derived_once_and_follow_the_password() {
    let v = ScramVerifiers::default();
    let plain = Secret::Plain("pw".into());
    exchange_as(&v, "bob", Some(&plain), "pw").unwrap();
    let cached = v.derived.lock().unwrap().get("bob").cloned().expect("bob's keys are kept");
    assert_eq!(cached.0, "pw");
    // The kept keys are what the next login is checked against (no new derivation): plant other ones.
    let k = Keys::derive(b"planted", &v.salt("bob"), ITERATIONS);
    let planted = ScramSecret { stored_key: k.stored_key, server_key: k.server_key, ..cached.1 };
    v.derived.lock().unwrap().insert("bob".into(), ("pw".into(), planted));
    exchange_as(&v, "bob", Some(&plain), "planted").unwrap();
    // A changed password (RELOAD) is derived anew; the old one no longer works.
    let changed = Secret::Plain("pw2".into());
    exchange_as(&v, "bob", Some(&changed), "pw2").unwrap();
    assert_eq!(exchange_as(&v, "bob", Some(&changed), "planted"), Err(AuthError::Failed));
    assert_eq!(exchange_as(&v, "bob", Some(&changed), "pw"), Err(AuthError::Failed));
    // Unknown users and stored verifiers are not cached.
    let _ = exchange_as(&v, "nobody", None, "pw");
    let _ = exchange_as(&v, "alice", Some(&scram_secret("pw")), "pw");
    assert_eq!(v.derived.lock().unwrap().len(), 1);
}

#[test]
fn the_key_cache_is_bounded() {
    let v = ScramVerifiers::default();
    let plain = Secret::Plain("pw".into());
    // Fill it without paying PBKDF2 for every entry.
    let filler = v.verifier("seed", Some(&plain)).unwrap();
    {
        let mut cache = v.derived.lock().unwrap();
        for i in 0..MAX_DERIVED {
            cache.insert(format!("user{i}"), ("pw".into(), filler.clone()));
        }
    }
    assert!(v.derived.lock().unwrap().len() > MAX_DERIVED);
    v.verifier("one_more", Some(&plain)).unwrap();
    let len = v.derived.lock().unwrap().len();
    assert!(len <= MAX_DERIVED, "{len} entries");
    assert!(v.derived.lock().unwrap().contains_key("one_more"));
}
