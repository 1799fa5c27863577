use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

use super::*;

fn scram_secret(password: &str) -> Secret {
    Secret::parse(&postgres_protocol::password::scram_sha_256(password.as_bytes()))
}

/// Runs postgres-protocol's client against our server. Ok(client_key) when both sides accept.
fn exchange(secret: Option<&Secret>, password: &str) -> Result<Option<[u8; 32]>, AuthError> {
    let mut server = ScramServer::new(secret);
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
        let mut server = ScramServer::new(Some(&secret));
        let first = server.handle_client_first(&client.client_first()).unwrap();
        let fin = server.handle_client_final(&client.handle_server_first(&first).unwrap()).unwrap();
        client.handle_server_final(&fin).unwrap();
    }
}

#[test]
fn malformed_messages_are_errors_not_panics() {
    let secret = scram_secret("pw");
    for bad in [&b""[..], b"n", b"p=tls-server-end-point,,n=,r=abc", b"x,,n=,r=abc", b"n,,m=ext,n=,r=a", b"n,,n=,r="] {
        assert!(matches!(ScramServer::new(Some(&secret)).handle_client_first(bad), Err(AuthError::Malformed(_))));
    }
    assert!(ScramServer::new(Some(&secret)).handle_client_first(&vec![b'a'; 100_000]).is_err());
    let mut server = ScramServer::new(Some(&secret));
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
        let mut s = ScramServer::new(Some(&secret));
        let _ = s.handle_client_first(&bytes);
        let _ = s.handle_client_final(&bytes);
    }
}
