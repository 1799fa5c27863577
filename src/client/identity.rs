//! Who the connection itself says the client is, for the methods that ask no password: the TLS
//! client certificate's common name (cert) and the OS user at the other end of a Unix socket (peer);
//! and the HBA line that decides the method.

use super::ClientError;
use crate::auth::hba::{ConnKind, HbaFiles, HbaRequest, Replication};
use crate::auth::{self, Method};
use crate::config::AuthType;
use crate::config::auth_file::Secret;
use crate::shared::Shared;
use crate::stats::PeerAddr;
use crate::transport::Stream;

/// The method for this login: auth_type's, or under auth_type = hba the first matching line's.
pub fn method(
    shared: &Shared,
    sock: &Stream,
    peer: &PeerAddr,
    db: &str,
    user: &str,
    secret: Option<&Secret>,
) -> Method {
    let auth_type = shared.config().general.auth_type;
    if auth_type != AuthType::Hba {
        return auth::choose_method(auth_type, secret);
    }
    let kind = match peer {
        PeerAddr::Unix { .. } => ConnKind::Local,
        PeerAddr::Tcp(a) => ConnKind::Tcp { addr: a.ip(), tls: sock.is_tls() },
    };
    let request = HbaRequest { kind, database: db, user, replication: Replication::None };
    let hba = shared.hba();
    auth::hba_method(hba.as_ref().and_then(|h| h.rules.find(&request)), secret)
}

/// PostgreSQL's refusal when no line (or a `reject` line) matched.
pub fn rejected(why: &'static str, sock: &Stream, peer: &PeerAddr, db: &str, user: &str) -> ClientError {
    let encryption = if sock.is_tls() { "SSL encryption" } else { "no encryption" };
    let host = match peer {
        PeerAddr::Unix { .. } => "[local]".to_string(),
        PeerAddr::Tcp(a) => a.ip().to_string(),
    };
    ClientError::Refused(format!("{why} for host \"{host}\", user \"{user}\", database \"{db}\", {encryption}"))
}

fn allowed(hba: Option<&HbaFiles>, map: Option<&str>, system_user: &str, user: &str) -> bool {
    match hba {
        Some(h) => h.allows(map, system_user, user),
        None => map.is_none() && system_user == user,
    }
}

/// cert: a certificate the handshake verified, whose common name is `user` (or maps to it).
pub fn check_certificate(shared: &Shared, sock: &Stream, map: Option<&str>, user: &str) -> Result<(), ClientError> {
    let cn = sock
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or_else(|| ClientError::Refused("connection requires a valid client certificate".into()))?;
    let cn = crate::transport::cert::common_name(cn)
        .ok_or_else(|| ClientError::Refused("could not read the certificate's common name".into()))?;
    if allowed(shared.hba().as_deref(), map, &cn, user) {
        Ok(())
    } else {
        Err(ClientError::Refused(format!("certificate authentication failed for user \"{user}\"")))
    }
}

/// peer: the Unix socket's other end runs as `user` (or an OS user that maps to it).
pub fn check_peer(shared: &Shared, sock: &Stream, map: Option<&str>, user: &str) -> Result<(), ClientError> {
    let failed = || ClientError::Refused(format!("peer authentication failed for user \"{user}\""));
    let Stream::Unix(unix) = sock else {
        return Err(ClientError::Refused("peer authentication is only available on Unix sockets".into()));
    };
    let uid = unix.peer_cred().map_err(|_| failed())?.uid();
    let name = crate::transport::system::user_name(uid).ok_or_else(failed)?;
    if allowed(shared.hba().as_deref(), map, &name, user) { Ok(()) } else { Err(failed()) }
}
