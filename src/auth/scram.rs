//! SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL speaks it: the server side for our clients, and a
//! client side that can log in to PostgreSQL from ClientKey/ServerKey when pgsluice has no password.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::{AuthError, ct_eq};
use crate::config::auth_file::{ScramSecret, Secret};

const MAX_MESSAGE: usize = 2048;
const MAX_NONCE: usize = 256;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length; the error branch cannot happen, but never panic.
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(key) else {
        return [0; 32];
    };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The derived keys of a password.
pub struct Keys {
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl Keys {
    /// Hi() (PBKDF2-HMAC-SHA-256) then ClientKey/StoredKey/ServerKey.
    pub fn derive(password: &[u8], salt: &[u8], iterations: u32) -> Keys {
        let mut u = hmac(password, &[salt, &1u32.to_be_bytes()]);
        let mut salted = u;
        for _ in 1..iterations {
            u = hmac(password, &[&u]);
            salted.iter_mut().zip(u.iter()).for_each(|(s, x)| *s ^= x);
        }
        let client_key = hmac(&salted, &[b"Client Key"]);
        Keys { stored_key: sha256(&client_key), server_key: hmac(&salted, &[b"Server Key"]) }
    }
}

fn random_nonce() -> String {
    STANDARD.encode(rand::random::<[u8; 18]>())
}

fn text(msg: &[u8]) -> Result<&str, AuthError> {
    if msg.len() > MAX_MESSAGE {
        return Err(AuthError::Malformed("message too long"));
    }
    std::str::from_utf8(msg).map_err(|_| AuthError::Malformed("not UTF-8"))
}

/// `k=value` attribute at the front of `part`.
fn attr(part: Option<&str>, key: char) -> Result<&str, AuthError> {
    part.and_then(|p| p.strip_prefix(key))
        .and_then(|p| p.strip_prefix('='))
        .ok_or(AuthError::Malformed("missing attribute"))
}

fn valid_nonce(n: &str) -> bool {
    !n.is_empty() && n.len() <= MAX_NONCE && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

enum ScramExchange {
    AwaitFirst,
    AwaitFinal { gs2_header: String, client_first_bare: String, server_first: String, nonce: String },
    Done { client_key: [u8; 32] },
    Failed,
}

/// Iterations of the verifiers pgsluice makes itself (plain-text secrets, unknown users): PostgreSQL's default.
pub const ITERATIONS: u32 = 4096;

/// Plain-text users whose derived keys are kept; past this the cache starts over.
const MAX_DERIVED: usize = 10_000;

/// The SCRAM server side's per-process state. A random secret from which every user name gets its own
/// salt, the same on every attempt (PostgreSQL's mock salt): an unknown user looks like a real one, and a
/// plain-text user's salt is as stable as a stored verifier's. And the keys derived from plain-text
/// passwords, so a login pays PBKDF2 once per (user, password) rather than every time. The cache is keyed
/// on the password itself, so a RELOAD that changes it derives anew.
pub struct ScramVerifiers {
    secret: [u8; 32],
    derived: std::sync::Mutex<std::collections::HashMap<String, (String, ScramSecret)>>,
}

impl Default for ScramVerifiers {
    fn default() -> Self {
        ScramVerifiers { secret: rand::random(), derived: Default::default() }
    }
}

impl ScramVerifiers {
    /// `user`'s salt when pgsluice makes the verifier: HMAC-SHA-256(process secret, user), 16 bytes.
    pub fn salt(&self, user: &str) -> [u8; 16] {
        let mac = hmac(&self.secret, &[user.as_bytes()]);
        let mut salt = [0u8; 16];
        salt.copy_from_slice(&mac[..16]);
        salt
    }

    /// The verifier `user` is checked against: the auth file's SCRAM secret, or one derived from a
    /// plain-text password with `user`'s salt. `None` for unknown users and md5 secrets.
    pub fn verifier(&self, user: &str, secret: Option<&Secret>) -> Option<ScramSecret> {
        let password = match secret {
            Some(Secret::Scram(s)) => return Some(s.clone()),
            Some(Secret::Plain(p)) => p,
            _ => return None,
        };
        let lock = || self.derived.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((pw, v)) = lock().get(user)
            && pw == password
        {
            return Some(v.clone());
        }
        let salt = self.salt(user);
        let k = Keys::derive(password.as_bytes(), &salt, ITERATIONS);
        let v = ScramSecret {
            iterations: ITERATIONS,
            salt: salt.to_vec(),
            stored_key: k.stored_key,
            server_key: k.server_key,
        };
        let mut cache = lock();
        if cache.len() >= MAX_DERIVED && !cache.contains_key(user) {
            cache.clear();
        }
        cache.insert(user.to_string(), (password.clone(), v.clone()));
        Some(v)
    }
}

/// Server side of one client's exchange.
pub struct ScramServer {
    secret: ScramSecret,
    /// False for unknown users and unusable secrets: the exchange runs, then fails.
    genuine: bool,
    state: ScramExchange,
}

impl ScramServer {
    pub const MECHANISM: &'static str = "SCRAM-SHA-256";

    /// An exchange for `user`. Unknown users get a mock verifier with `user`'s own salt, so two attempts
    /// show the same salt and iteration count, as for a real user; the exchange then fails at the proof.
    pub fn new(verifiers: &ScramVerifiers, user: &str, secret: Option<&Secret>) -> ScramServer {
        let derived = verifiers.verifier(user, secret);
        let genuine = derived.is_some();
        let secret = derived.unwrap_or_else(|| ScramSecret {
            iterations: ITERATIONS,
            salt: verifiers.salt(user).to_vec(),
            stored_key: rand::random(),
            server_key: rand::random(),
        });
        ScramServer { secret, genuine, state: ScramExchange::AwaitFirst }
    }

    pub fn handle_client_first(&mut self, client_first: &[u8]) -> Result<Vec<u8>, AuthError> {
        if !matches!(self.state, ScramExchange::AwaitFirst) {
            return Err(AuthError::Malformed("unexpected client-first-message"));
        }
        self.state = ScramExchange::Failed;
        let msg = text(client_first)?;
        let mut parts = msg.splitn(3, ',');
        let cbind = parts.next().ok_or(AuthError::Malformed("empty message"))?;
        match cbind {
            "n" | "y" => {}
            c if c.starts_with("p=") => {
                return Err(AuthError::Malformed("channel binding is not supported"));
            }
            _ => return Err(AuthError::Malformed("bad channel binding flag")),
        }
        let authzid = parts.next().ok_or(AuthError::Malformed("missing authzid"))?;
        if !authzid.is_empty() && !authzid.starts_with("a=") {
            return Err(AuthError::Malformed("bad authzid"));
        }
        let bare = parts.next().ok_or(AuthError::Malformed("missing client-first-message-bare"))?;
        let mut attrs = bare.split(',');
        let first = attrs.next();
        if first.is_some_and(|p| p.starts_with("m=")) {
            return Err(AuthError::Malformed("mandatory extensions are not supported"));
        }
        attr(first, 'n')?; // PostgreSQL ignores the SCRAM user name: the startup user counts
        let client_nonce = attr(attrs.next(), 'r')?;
        if !valid_nonce(client_nonce) {
            return Err(AuthError::Malformed("bad nonce"));
        }
        let nonce = format!("{client_nonce}{}", random_nonce());
        let server_first = format!("r={nonce},s={},i={}", STANDARD.encode(&self.secret.salt), self.secret.iterations);
        let gs2_header = format!("{cbind},{authzid},");
        self.state = ScramExchange::AwaitFinal {
            gs2_header,
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok(server_first.into_bytes())
    }

    pub fn handle_client_final(&mut self, client_final: &[u8]) -> Result<Vec<u8>, AuthError> {
        let ScramExchange::AwaitFinal { gs2_header, client_first_bare, server_first, nonce } =
            std::mem::replace(&mut self.state, ScramExchange::Failed)
        else {
            return Err(AuthError::Malformed("unexpected client-final-message"));
        };
        let msg = text(client_final)?;
        let (without_proof, proof) = msg.rsplit_once(",p=").ok_or(AuthError::Malformed("missing proof"))?;
        let mut parts = without_proof.split(',');
        let cbind = attr(parts.next(), 'c')?;
        if STANDARD.decode(cbind).ok().as_deref() != Some(gs2_header.as_bytes()) {
            return Err(AuthError::Malformed("channel binding does not match"));
        }
        if attr(parts.next(), 'r')? != nonce {
            return Err(AuthError::Malformed("nonce does not match"));
        }
        let proof: [u8; 32] =
            STANDARD.decode(proof).ok().and_then(|p| p.try_into().ok()).ok_or(AuthError::Malformed("bad proof"))?;
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac(&self.secret.stored_key, &[auth_message.as_bytes()]);
        let mut client_key = proof;
        client_key.iter_mut().zip(signature.iter()).for_each(|(k, s)| *k ^= s);
        if !ct_eq(&sha256(&client_key), &self.secret.stored_key) || !self.genuine {
            return Err(AuthError::Failed);
        }
        let server_signature = hmac(&self.secret.server_key, &[auth_message.as_bytes()]);
        self.state = ScramExchange::Done { client_key };
        Ok(format!("v={}", STANDARD.encode(server_signature)).into_bytes())
    }

    /// The ClientKey proven by the client, after a successful exchange.
    pub fn client_key(&self) -> Option<[u8; 32]> {
        match self.state {
            ScramExchange::Done { client_key } => Some(client_key),
            _ => None,
        }
    }
}

enum ClientCreds {
    Password(String),
    Keys { client_key: [u8; 32], server_key: [u8; 32] },
}

/// Client side, logging in to PostgreSQL with a password or with ClientKey/ServerKey.
pub struct ScramClient {
    creds: ClientCreds,
    nonce: String,
    /// AuthMessage and the expected ServerSignature, once the server-first-message is in.
    expect: Option<[u8; 32]>,
}

impl ScramClient {
    pub fn with_password(password: &str) -> ScramClient {
        ScramClient { creds: ClientCreds::Password(password.into()), nonce: random_nonce(), expect: None }
    }

    pub fn with_keys(client_key: [u8; 32], server_key: [u8; 32]) -> ScramClient {
        ScramClient { creds: ClientCreds::Keys { client_key, server_key }, nonce: random_nonce(), expect: None }
    }

    pub fn client_first(&mut self) -> Vec<u8> {
        format!("n,,n=,r={}", self.nonce).into_bytes()
    }

    pub fn handle_server_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, AuthError> {
        let msg = text(msg)?;
        let mut parts = msg.split(',');
        let nonce = attr(parts.next(), 'r')?;
        let salt = STANDARD.decode(attr(parts.next(), 's')?).map_err(|_| AuthError::Malformed("bad salt"))?;
        let iterations: u32 =
            attr(parts.next(), 'i')?.parse().map_err(|_| AuthError::Malformed("bad iteration count"))?;
        if !nonce.starts_with(&self.nonce) || !valid_nonce(nonce) || iterations == 0 || iterations > 10_000_000 {
            return Err(AuthError::Malformed("bad server-first-message"));
        }
        let (client_key, server_key) = match &self.creds {
            ClientCreds::Keys { client_key, server_key } => (*client_key, *server_key),
            ClientCreds::Password(pw) => {
                let k = Keys::derive(pw.as_bytes(), &salt, iterations);
                let mut salted_client = [0u8; 32];
                // Recompute ClientKey (Keys keeps only its hash).
                let mut u = hmac(pw.as_bytes(), &[&salt, &1u32.to_be_bytes()]);
                let mut salted = u;
                for _ in 1..iterations {
                    u = hmac(pw.as_bytes(), &[&u]);
                    salted.iter_mut().zip(u.iter()).for_each(|(s, x)| *s ^= x);
                }
                salted_client.copy_from_slice(&hmac(&salted, &[b"Client Key"]));
                (salted_client, k.server_key)
            }
        };
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("n=,r={},{msg},{without_proof}", self.nonce);
        let signature = hmac(&sha256(&client_key), &[auth_message.as_bytes()]);
        let mut proof = client_key;
        proof.iter_mut().zip(signature.iter()).for_each(|(p, s)| *p ^= s);
        self.expect = Some(hmac(&server_key, &[auth_message.as_bytes()]));
        Ok(format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes())
    }

    pub fn handle_server_final(&mut self, msg: &[u8]) -> Result<(), AuthError> {
        let msg = text(msg)?;
        if msg.starts_with("e=") {
            return Err(AuthError::Failed);
        }
        let sig = STANDARD.decode(attr(Some(msg), 'v')?).map_err(|_| AuthError::Malformed("bad signature"))?;
        match self.expect {
            Some(expected) if ct_eq(&expected, &sig) => Ok(()),
            _ => Err(AuthError::Failed),
        }
    }
}

#[cfg(test)]
#[path = "scram_tests.rs"]
mod tests;
