use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::*;

fn scram_secret(password: &str) -> Secret {
    Secret::parse(&postgres_protocol::password::scram_sha_256(password.as_bytes()))
}

/// Runs postgres-protocol's client against our server. Ok(client_key) when both sides accept.
async fn exchange(secret: Option<&Secret>, password: &str) -> Result<Option<[u8; 32]>, AuthError> {
    exchange_as(&ScramVerifiers::default(), "bob", secret, password).await
}

async fn exchange_as(
    verifiers: &ScramVerifiers,
    user: &str,
    secret: Option<&Secret>,
    password: &str,
) -> Result<Option<[u8; 32]>, AuthError> {
    let mut server = ScramServer::new(verifiers, user, secret).await?;
    let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
    let first = server.handle_client_first(client.message())?;
    client.update(&first).map_err(|_| AuthError::Malformed("client rejected server-first"))?;
    let fin = server.handle_client_final(client.message())?;
    client.finish(&fin).map_err(|_| AuthError::Malformed("client rejected server-final"))?;
    Ok(server.client_key())
}

async fn scram_server(secret: &Secret) -> ScramServer {
    ScramServer::new(&ScramVerifiers::default(), "bob", Some(secret)).await.unwrap()
}

#[tokio::test]
async fn real_client_authenticates_with_plain_and_scram_secrets() {
    assert!(matches!(scram_secret("pw"), Secret::Scram(_)));
    exchange(Some(&Secret::Plain("pw".into())), "pw").await.unwrap();
    assert!(exchange(Some(&scram_secret("pw")), "pw").await.unwrap().is_some());
}

#[tokio::test]
async fn wrong_password_and_unknown_user_fail_alike() {
    assert_eq!(exchange(Some(&scram_secret("pw")), "nope").await, Err(AuthError::Failed));
    assert_eq!(exchange(Some(&Secret::Plain("pw".into())), "nope").await, Err(AuthError::Failed));
    assert_eq!(exchange(None, "pw").await, Err(AuthError::Failed));
}

#[tokio::test]
async fn learned_client_key_logs_in_like_the_password() {
    let secret = scram_secret("pw");
    let client_key = exchange(Some(&secret), "pw").await.unwrap().unwrap();
    let Secret::Scram(s) = &secret else { unreachable!() };
    for mut client in [ScramClient::with_keys(client_key, s.server_key), ScramClient::with_password("pw")] {
        let mut server = scram_server(&secret).await;
        let first = server.handle_client_first(&client.client_first()).unwrap();
        let fin = server.handle_client_final(&client.handle_server_first(&first).await.unwrap()).unwrap();
        client.handle_server_final(&fin).unwrap();
    }
}

#[tokio::test]
async fn malformed_messages_are_errors_not_panics() {
    let secret = scram_secret("pw");
    for bad in [&b""[..], b"n", b"p=tls-server-end-point,,n=,r=abc", b"x,,n=,r=abc", b"n,,m=ext,n=,r=a", b"n,,n=,r="] {
        assert!(matches!(scram_server(&secret).await.handle_client_first(bad), Err(AuthError::Malformed(_))));
    }
    assert!(scram_server(&secret).await.handle_client_first(&vec![b'a'; 100_000]).is_err());
    let mut server = scram_server(&secret).await;
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
        let mut s = scram_server(&secret).await;
        let _ = s.handle_client_first(&bytes);
        let _ = s.handle_client_final(&bytes);
    }
}

/// The salt and iteration count a server-first-message shows.
async fn salt_shown(verifiers: &ScramVerifiers, user: &str, secret: Option<&Secret>) -> (String, String) {
    let mut server = ScramServer::new(verifiers, user, secret).await.unwrap();
    let first = String::from_utf8(server.handle_client_first(b"n,,n=,r=abc").unwrap()).unwrap();
    let mut parts = first.split(',').skip(1);
    let salt = parts.next().unwrap().strip_prefix("s=").unwrap().to_string();
    (salt, parts.next().unwrap().strip_prefix("i=").unwrap().to_string())
}

#[tokio::test]
async fn unknown_users_get_a_stable_salt_of_their_own() {
    let v = ScramVerifiers::default();
    let (nobody, iterations) = salt_shown(&v, "nobody", None).await;
    assert_eq!(salt_shown(&v, "nobody", None).await, (nobody.clone(), iterations.clone()), "same salt every attempt");
    assert_eq!(iterations, "4096", "the iteration count of real verifiers");
    assert_ne!(salt_shown(&v, "somebody", None).await.0, nobody, "another user, another salt");
    assert_eq!(STANDARD.decode(&nobody).unwrap().len(), 16);
    // Another process (another secret) gives the same name another salt.
    assert_ne!(salt_shown(&ScramVerifiers::default(), "nobody", None).await.0, nobody);
    // A plain-text user's salt is derived the same way: stable, and no different from an unknown user's.
    let plain = Secret::Plain("pw".into());
    assert_eq!(salt_shown(&v, "nobody", Some(&plain)).await.0, nobody);
    // A stored verifier shows its own salt.
    let Secret::Scram(s) = scram_secret("pw") else { unreachable!() };
    assert_eq!(salt_shown(&v, "nobody", Some(&Secret::Scram(s.clone()))).await.0, STANDARD.encode(&s.salt));
}

#[tokio::test]
async fn keys_of_plain_passwords_are_derived_once_and_follow_the_password() {
    let v = ScramVerifiers::default();
    let plain = Secret::Plain("pw".into());
    exchange_as(&v, "bob", Some(&plain), "pw").await.unwrap();
    let cached = v.derived.lock().unwrap().get("bob").cloned().expect("bob's keys are kept");
    assert_eq!(cached.0, "pw");
    // The kept keys are what the next login is checked against (no new derivation): plant other ones.
    let k = Keys::derive(b"planted", &v.salt("bob"), ITERATIONS);
    let planted = ScramSecret { stored_key: k.stored_key, server_key: k.server_key, ..cached.1 };
    v.derived.lock().unwrap().insert("bob".into(), ("pw".into(), planted));
    exchange_as(&v, "bob", Some(&plain), "planted").await.unwrap();
    // A changed password (RELOAD) is derived anew; the old one no longer works.
    let changed = Secret::Plain("pw2".into());
    exchange_as(&v, "bob", Some(&changed), "pw2").await.unwrap();
    assert_eq!(exchange_as(&v, "bob", Some(&changed), "planted").await, Err(AuthError::Failed));
    assert_eq!(exchange_as(&v, "bob", Some(&changed), "pw").await, Err(AuthError::Failed));
    // Unknown users and stored verifiers are not cached.
    let _ = exchange_as(&v, "nobody", None, "pw").await;
    let _ = exchange_as(&v, "alice", Some(&scram_secret("pw")), "pw").await;
    assert_eq!(v.derived.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn the_key_cache_is_bounded() {
    let v = ScramVerifiers::default();
    let plain = Secret::Plain("pw".into());
    // Fill it without paying PBKDF2 for every entry.
    let filler = v.verifier("seed", Some(&plain)).await.unwrap().unwrap();
    {
        let mut cache = v.derived.lock().unwrap();
        for i in 0..MAX_DERIVED {
            cache.insert(format!("user{i}"), ("pw".into(), filler.clone()));
        }
    }
    assert!(v.derived.lock().unwrap().len() > MAX_DERIVED);
    v.verifier("one_more", Some(&plain)).await.unwrap().unwrap();
    let len = v.derived.lock().unwrap().len();
    assert!(len <= MAX_DERIVED, "{len} entries");
    assert!(v.derived.lock().unwrap().contains_key("one_more"));
}

/// A client with a password, its client-first-message sent: (client, its nonce).
fn password_client() -> (ScramClient, String) {
    let mut client = ScramClient::with_password("pw");
    let first = String::from_utf8(client.client_first()).unwrap();
    let nonce = first.rsplit_once("r=").unwrap().1.to_string();
    (client, nonce)
}

#[tokio::test]
async fn a_server_asking_for_too_many_iterations_is_refused_before_any_work() {
    let salt = STANDARD.encode([7u8; 16]);
    for count in [MAX_SERVER_ITERATIONS as u64 + 1, 10_000_000, u32::MAX as u64, u64::MAX] {
        let (mut client, nonce) = password_client();
        let first = format!("r={nonce}srv,s={salt},i={count}");
        let e = client.handle_server_first(first.as_bytes()).await.expect_err("refused");
        assert_eq!(e, AuthError::TooManyIterations { count, cap: MAX_SERVER_ITERATIONS });
        let text = e.to_string();
        assert!(text.contains(&count.to_string()) && text.contains(&MAX_SERVER_ITERATIONS.to_string()), "{text}");
    }
    // The same with keys instead of a password: nothing to derive, but the count is still refused.
    let mut client = ScramClient::with_keys([1; 32], [2; 32]);
    let nonce = String::from_utf8(client.client_first()).unwrap().rsplit_once("r=").unwrap().1.to_string();
    let first = format!("r={nonce}srv,s={salt},i={}", MAX_SERVER_ITERATIONS + 1);
    assert!(matches!(client.handle_server_first(first.as_bytes()).await, Err(AuthError::TooManyIterations { .. })));
    // At the cap and at PostgreSQL's default, the exchange goes on.
    for count in [4096, MAX_SERVER_ITERATIONS] {
        let (mut client, nonce) = password_client();
        let first = format!("r={nonce}srv,s={salt},i={count}");
        let reply = client.handle_server_first(first.as_bytes()).await.expect("accepted");
        assert!(reply.starts_with(format!("c=biws,r={nonce}srv,p=").as_bytes()));
    }
}

#[tokio::test]
async fn a_server_first_message_with_oversized_or_bad_fields_is_refused() {
    let salt = STANDARD.encode([7u8; 16]);
    // NONCE stands for the client's nonce.
    let cases = [
        format!("r=NONCE{},s={salt},i=4096", "x".repeat(MAX_NONCE)), // nonce over MAX_NONCE
        format!("r=NONCE{},s={salt},i=4096", "x".repeat(64 * 1024)), // a 64 KB nonce
        format!("r=NONCE,s={salt},i=4096"),                          // the server added nothing
        format!("r=someone-elseNONCE,s={salt},i=4096"),              // not our nonce
        format!("r=NONCEsr\x01v,s={salt},i=4096"),                   // unprintable
        format!("r=NONCEsrv,s={},i=4096", STANDARD.encode([7u8; MAX_SALT + 1])),
        format!("r=NONCEsrv,s={},i=4096", STANDARD.encode([7u8; 1000])),
        "r=NONCEsrv,s=,i=4096".to_string(),
        "r=NONCEsrv,s=!!!,i=4096".to_string(),
        format!("r=NONCEsrv,s={salt},i=0"),
        format!("r=NONCEsrv,s={salt},i=-1"),
        format!("r=NONCEsrv,s={salt}"),
        format!("s={salt},r=NONCEsrv,i=4096"),
    ];
    for case in cases {
        let (mut client, nonce) = password_client();
        let first = case.replace("NONCE", &nonce);
        let e = client.handle_server_first(first.as_bytes()).await.expect_err("refused");
        assert!(matches!(e, AuthError::Malformed(_)), "{e:?} for {case:.80}");
    }
    // The longest salt allowed is accepted.
    let (mut client, nonce) = password_client();
    let first = format!("r={nonce}srv,s={},i=16", STANDARD.encode([7u8; MAX_SALT]));
    client.handle_server_first(first.as_bytes()).await.expect("a MAX_SALT salt is fine");
}

/// One exchange where the server offers PLUS bound to `server_binding` and the client picks `mechanism`
/// with its own idea of the binding.
async fn bound_exchange(server_binding: &[u8], mechanism: &str, client: ChannelBinding) -> Result<(), AuthError> {
    let secret = scram_secret("pw");
    let server = ScramServer::new(&ScramVerifiers::default(), "bob", Some(&secret)).await?;
    let mut server = server.with_channel_binding(Some(server_binding.to_vec()));
    assert_eq!(server.mechanisms(), &[ScramServer::MECHANISM_PLUS, ScramServer::MECHANISM]);
    server.choose(mechanism.as_bytes())?;
    let mut client = ScramSha256::new(b"pw", client);
    let first = server.handle_client_first(client.message())?;
    client.update(&first).map_err(|_| AuthError::Malformed("client rejected server-first"))?;
    let fin = server.handle_client_final(client.message())?;
    client.finish(&fin).map_err(|_| AuthError::Malformed("client rejected server-final"))
}

#[tokio::test]
async fn channel_binding_holds_only_for_the_same_tls_connection() {
    let plus = ScramServer::MECHANISM_PLUS;
    let binding = [7u8; 32];
    bound_exchange(&binding, plus, ChannelBinding::tls_server_end_point(binding.to_vec())).await.unwrap();
    // A proof bound to another connection's certificate (a man in the middle relaying) fails.
    let relayed = bound_exchange(&binding, plus, ChannelBinding::tls_server_end_point(vec![8u8; 32])).await;
    assert!(matches!(relayed, Err(AuthError::Malformed(_))), "{relayed:?}");
    // Plain SCRAM still works for clients that do not bind ("n").
    bound_exchange(&binding, ScramServer::MECHANISM, ChannelBinding::unsupported()).await.unwrap();
    // "y": the client could bind but believes the server cannot, though PLUS was offered: a downgrade.
    let downgraded = bound_exchange(&binding, ScramServer::MECHANISM, ChannelBinding::unrequested()).await;
    assert!(matches!(downgraded, Err(AuthError::Malformed(_))), "{downgraded:?}");
    // PLUS is not taken where it was not offered.
    let mut server = scram_server(&scram_secret("pw")).await;
    assert_eq!(server.mechanisms(), &[ScramServer::MECHANISM]);
    assert_eq!(server.choose(plus.as_bytes()), Err(AuthError::UnsupportedMechanism));
}
