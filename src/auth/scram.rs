//! SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL speaks it: the server side for our clients, and a
//! client side that can log in to PostgreSQL from ClientKey/ServerKey when pgsluice has no password.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

pub use super::keys::Keys;
use super::keys::{derive_off_thread, hmac, sha256};
use super::{AuthError, ct_eq};
use crate::config::auth_file::{ScramSecret, Secret};

const MAX_MESSAGE: usize = 2048;
const MAX_NONCE: usize = 256;

/// The most PBKDF2 iterations a server may ask pgsluice for. PostgreSQL's default is 4096 (its
/// `scram_iterations`); a server asking for more than this is refused rather than obeyed, since each
/// login would cost this much CPU.
pub const MAX_SERVER_ITERATIONS: u32 = 100_000;

/// The longest salt (decoded) a server may send. PostgreSQL's salts are 16 bytes.
pub const MAX_SALT: usize = 64;

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
    /// plain-text password with `user`'s salt (off the async threads, once per password). `None` for
    /// unknown users and md5 secrets.
    pub async fn verifier(&self, user: &str, secret: Option<&Secret>) -> Result<Option<ScramSecret>, AuthError> {
        let password = match secret {
            Some(Secret::Scram(s)) => return Ok(Some(s.clone())),
            Some(Secret::Plain(p)) => p,
            _ => return Ok(None),
        };
        let lock = || self.derived.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((pw, v)) = lock().get(user)
            && pw == password
        {
            return Ok(Some(v.clone()));
        }
        let salt = self.salt(user);
        let k = derive_off_thread(password.as_bytes(), &salt, ITERATIONS).await?;
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
        Ok(Some(v))
    }
}

/// Server side of one client's exchange.
pub struct ScramServer {
    secret: ScramSecret,
    /// False for unknown users and unusable secrets: the exchange runs, then fails.
    genuine: bool,
    state: ScramExchange,
    /// The tls-server-end-point data of the client's TLS connection, when SCRAM-SHA-256-PLUS is offered.
    channel_binding: Option<Vec<u8>>,
    /// The client chose SCRAM-SHA-256-PLUS.
    plus: bool,
}

impl ScramServer {
    pub const MECHANISM: &'static str = "SCRAM-SHA-256";
    pub const MECHANISM_PLUS: &'static str = "SCRAM-SHA-256-PLUS";

    /// Offers SCRAM-SHA-256-PLUS bound to `data` (RFC 5929 tls-server-end-point) besides SCRAM-SHA-256.
    pub fn with_channel_binding(mut self, data: Option<Vec<u8>>) -> Self {
        self.channel_binding = data;
        self
    }

    /// The mechanisms to offer, in PostgreSQL's order (the channel-bound one first).
    pub fn mechanisms(&self) -> &'static [&'static str] {
        match self.channel_binding {
            Some(_) => &[Self::MECHANISM_PLUS, Self::MECHANISM],
            None => &[Self::MECHANISM],
        }
    }

    /// Takes the client's choice among `mechanisms`.
    pub fn choose(&mut self, mechanism: &[u8]) -> Result<(), AuthError> {
        match mechanism {
            m if m == Self::MECHANISM.as_bytes() => self.plus = false,
            m if m == Self::MECHANISM_PLUS.as_bytes() && self.channel_binding.is_some() => self.plus = true,
            _ => return Err(AuthError::UnsupportedMechanism),
        }
        Ok(())
    }

    /// An exchange for `user`. Unknown users get a mock verifier with `user`'s own salt, so two attempts
    /// show the same salt and iteration count, as for a real user; the exchange then fails at the proof.
    pub async fn new(
        verifiers: &ScramVerifiers,
        user: &str,
        secret: Option<&Secret>,
    ) -> Result<ScramServer, AuthError> {
        let derived = verifiers.verifier(user, secret).await?;
        let genuine = derived.is_some();
        let secret = derived.unwrap_or_else(|| ScramSecret {
            iterations: ITERATIONS,
            salt: verifiers.salt(user).to_vec(),
            stored_key: rand::random(),
            server_key: rand::random(),
        });
        Ok(ScramServer { secret, genuine, state: ScramExchange::AwaitFirst, channel_binding: None, plus: false })
    }

    pub fn handle_client_first(&mut self, client_first: &[u8]) -> Result<Vec<u8>, AuthError> {
        if !matches!(self.state, ScramExchange::AwaitFirst) {
            return Err(AuthError::Malformed("unexpected client-first-message"));
        }
        self.state = ScramExchange::Failed;
        let msg = text(client_first)?;
        let mut parts = msg.splitn(3, ',');
        let cbind = parts.next().ok_or(AuthError::Malformed("empty message"))?;
        // As PostgreSQL: the flag must agree with the mechanism chosen, and a client that would bind
        // but believes the server cannot ("y") while it was offered PLUS is being downgraded.
        match (cbind, self.plus) {
            ("n", false) => {}
            ("y", false) if self.channel_binding.is_none() => {}
            ("y", false) => return Err(AuthError::Malformed("channel binding was offered but the client thinks not")),
            ("p=tls-server-end-point", true) => {}
            (c, true) if c.starts_with("p=") => return Err(AuthError::Malformed("unsupported channel binding type")),
            (_, true) => return Err(AuthError::Malformed("SCRAM-SHA-256-PLUS without channel binding")),
            (c, false) if c.starts_with("p=") => {
                return Err(AuthError::Malformed("channel binding requested without SCRAM-SHA-256-PLUS"));
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
        let mut expected = gs2_header.into_bytes();
        if self.plus {
            expected.extend_from_slice(self.channel_binding.as_deref().unwrap_or_default());
        }
        // A binding that differs is a proof made over another TLS connection (a man in the middle);
        // PostgreSQL calls it a protocol violation ("SCRAM channel binding check failed").
        if !STANDARD.decode(cbind).is_ok_and(|c| ct_eq(&c, &expected)) {
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

    /// Answers the server-first-message with our proof. With a password this derives the keys (off
    /// the async threads) with the server's salt and iteration count, both bounded first.
    pub async fn handle_server_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, AuthError> {
        let msg = text(msg)?;
        let first = ServerFirst::parse(msg, &self.nonce)?;
        let (client_key, server_key) = match &self.creds {
            ClientCreds::Keys { client_key, server_key } => (*client_key, *server_key),
            ClientCreds::Password(pw) => {
                let k = derive_off_thread(pw.as_bytes(), &first.salt, first.iterations).await?;
                (k.client_key, k.server_key)
            }
        };
        let without_proof = format!("c=biws,r={}", first.nonce);
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

/// A server-first-message (`r=nonce,s=salt,i=iterations`), checked before any work is done for it:
/// the nonce extends ours and is at most `MAX_NONCE` printable characters, the salt is 1 to `MAX_SALT`
/// bytes, and the iteration count is 1 to `MAX_SERVER_ITERATIONS`.
struct ServerFirst<'a> {
    nonce: &'a str,
    salt: Vec<u8>,
    iterations: u32,
}

impl<'a> ServerFirst<'a> {
    fn parse(msg: &'a str, our_nonce: &str) -> Result<ServerFirst<'a>, AuthError> {
        let mut parts = msg.split(',');
        let nonce = attr(parts.next(), 'r')?;
        if !valid_nonce(nonce) {
            return Err(AuthError::Malformed("server nonce empty, not printable or too long"));
        }
        if !nonce.starts_with(our_nonce) || nonce.len() == our_nonce.len() {
            return Err(AuthError::Malformed("server nonce does not extend ours"));
        }
        let salt = attr(parts.next(), 's')?;
        if salt.len() > MAX_SALT.div_ceil(3) * 4 {
            return Err(AuthError::Malformed("server salt too long"));
        }
        let salt = STANDARD.decode(salt).map_err(|_| AuthError::Malformed("bad salt"))?;
        if salt.is_empty() || salt.len() > MAX_SALT {
            return Err(AuthError::Malformed("server salt empty or too long"));
        }
        let count: u64 = attr(parts.next(), 'i')?.parse().map_err(|_| AuthError::Malformed("bad iteration count"))?;
        let iterations = match u32::try_from(count) {
            Ok(0) => return Err(AuthError::Malformed("bad iteration count")),
            Ok(n) if n <= MAX_SERVER_ITERATIONS => n,
            _ => return Err(AuthError::TooManyIterations { count, cap: MAX_SERVER_ITERATIONS }),
        };
        Ok(ServerFirst { nonce, salt, iterations })
    }
}

#[cfg(test)]
#[path = "scram_tests.rs"]
mod tests;
