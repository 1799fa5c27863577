//! The rustls configurations made from the `client_tls_*` and `server_tls_*` settings: the acceptor
//! pgsluice meets TLS clients with and the connector it reaches TLS servers with. Every file is read
//! here, bounded, so a RELOAD that changed only a file's contents takes it up.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{RootCertStore, ServerConfig};

use super::cert;
use super::suites;
use crate::config::{General, SslMode};

/// The largest key, certificate or CA file read.
const MAX_PEM_FILE: u64 = 4 << 20;

/// ALPN protocol PostgreSQL 17 names for TLS (required with direct TLS).
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    #[error("{setting} = {mode} needs {needs}")]
    Missing { setting: &'static str, mode: &'static str, needs: &'static str },
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("{setting}: {reason}")]
    Setting { setting: &'static str, reason: String },
}

/// How pgsluice accepts TLS from clients.
pub struct Acceptor {
    pub mode: SslMode,
    pub config: Arc<ServerConfig>,
    /// The tls-server-end-point channel binding of pgsluice's certificate (RFC 5929), when its
    /// signature's hash allows one: SCRAM-SHA-256-PLUS is offered only then.
    pub end_point: Option<Vec<u8>>,
}

/// How pgsluice speaks TLS to servers.
pub struct Connector {
    pub mode: SslMode,
    pub config: Arc<rustls::ClientConfig>,
}

/// Both sides, as loaded from one configuration.
#[derive(Default, Clone)]
pub struct TlsSetup {
    /// `None` when client_tls_sslmode = disable.
    pub clients: Option<Arc<Acceptor>>,
    /// `None` when server_tls_sslmode = disable.
    pub servers: Option<Arc<Connector>>,
}

impl TlsSetup {
    /// Reads every file the settings name and builds both configurations.
    pub fn load(general: &General) -> Result<TlsSetup, TlsError> {
        Ok(TlsSetup { clients: load_acceptor(general)?.map(Arc::new), servers: load_connector(general)?.map(Arc::new) })
    }
}

/// The TLS configuration in force: what new connections use. RELOAD replaces it whole.
#[derive(Default)]
pub struct TlsState(std::sync::RwLock<TlsSetup>);

impl TlsState {
    pub fn new(setup: TlsSetup) -> TlsState {
        TlsState(std::sync::RwLock::new(setup))
    }

    pub fn current(&self) -> TlsSetup {
        self.0.read().map(|s| s.clone()).unwrap_or_else(|e| e.into_inner().clone())
    }

    pub fn replace(&self, setup: TlsSetup) {
        match self.0.write() {
            Ok(mut s) => *s = setup,
            Err(e) => *e.into_inner() = setup,
        }
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    let fail = |reason: String| TlsError::File { path: path.display().to_string(), reason };
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if meta.len() > MAX_PEM_FILE {
        return Err(fail(format!("larger than {MAX_PEM_FILE} bytes")));
    }
    std::fs::read(path).map_err(|e| fail(e.to_string()))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let fail = |reason: String| TlsError::File { path: path.display().to_string(), reason };
    let text = read_file(path)?;
    let certs: Vec<_> =
        CertificateDer::pem_slice_iter(&text).collect::<Result<_, _>>().map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&text)
        .map_err(|e| TlsError::File { path: path.display().to_string(), reason: format!("no usable private key: {e}") })
}

fn load_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(path)? {
        roots.add(c).map_err(|e| TlsError::File {
            path: path.display().to_string(),
            reason: format!("not a CA certificate: {e}"),
        })?;
    }
    Ok(Arc::new(roots))
}

fn file_setting<'a>(
    value: &'a Option<std::path::PathBuf>,
    setting: &'static str,
    mode: SslMode,
    needs: &'static str,
) -> Result<&'a Path, TlsError> {
    value.as_deref().ok_or(TlsError::Missing { setting, mode: mode.as_str(), needs })
}

fn load_acceptor(g: &General) -> Result<Option<Acceptor>, TlsError> {
    let mode = g.client_tls_sslmode;
    if mode == SslMode::Disable {
        return Ok(None);
    }
    const S: &str = "client_tls_sslmode";
    let key = load_key(file_setting(&g.client_tls_key_file, S, mode, "client_tls_key_file")?)?;
    let certs = load_certs(file_setting(&g.client_tls_cert_file, S, mode, "client_tls_cert_file")?)?;
    let provider = Arc::new(suites::provider(
        ("client_tls_ciphers", &g.client_tls_ciphers),
        ("client_tls13_ciphers", &g.client_tls13_ciphers),
        &g.client_tls_ecdhcurve,
        &g.client_tls_dheparams,
    )?);
    let versions = suites::versions("client_tls_protocols", &g.client_tls_protocols)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| TlsError::Setting { setting: "client_tls_protocols", reason: e.to_string() })?;
    // verify-ca/verify-full: a valid client certificate is required. Otherwise one is asked for only
    // when a CA is configured, and checked if the client sends it (certificate authentication relies
    // on that); without a CA none is asked for.
    let ca = match (&g.client_tls_ca_file, mode.verifies()) {
        (Some(p), _) => Some(load_roots(p)?),
        (None, true) => return Err(TlsError::Missing { setting: S, mode: mode.as_str(), needs: "client_tls_ca_file" }),
        (None, false) => None,
    };
    let builder = match ca {
        Some(roots) => {
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider);
            let v = if mode.verifies() { v } else { v.allow_unauthenticated() };
            let v =
                v.build().map_err(|e| TlsError::Setting { setting: "client_tls_ca_file", reason: e.to_string() })?;
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    };
    let end_point = cert::end_point_binding(&certs[0]);
    let mut config = builder.with_single_cert(certs, key).map_err(|e| TlsError::Setting {
        setting: "client_tls_key_file",
        reason: format!("the key does not go with client_tls_cert_file: {e}"),
    })?;
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(Some(Acceptor { mode, config: Arc::new(config), end_point }))
}

fn load_connector(g: &General) -> Result<Option<Connector>, TlsError> {
    let mode = g.server_tls_sslmode;
    if mode == SslMode::Disable {
        return Ok(None);
    }
    let provider = Arc::new(suites::provider(
        ("server_tls_ciphers", &g.server_tls_ciphers),
        ("server_tls13_ciphers", &g.server_tls13_ciphers),
        "auto",
        "auto",
    )?);
    let versions = suites::versions("server_tls_protocols", &g.server_tls_protocols)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| TlsError::Setting { setting: "server_tls_protocols", reason: e.to_string() })?;
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = if mode.verifies() {
        let path = file_setting(&g.server_tls_ca_file, "server_tls_sslmode", mode, "server_tls_ca_file")?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(load_roots(path)?, provider.clone())
            .build()
            .map_err(|e| TlsError::Setting { setting: "server_tls_ca_file", reason: e.to_string() })?;
        Arc::new(cert::CaVerifier { inner, check_name: mode == SslMode::VerifyFull })
    } else {
        Arc::new(cert::AnyCertificate(provider))
    };
    let builder = builder.dangerous().with_custom_certificate_verifier(verifier);
    let mut config = match (&g.server_tls_cert_file, &g.server_tls_key_file) {
        (Some(c), Some(k)) => {
            builder.with_client_auth_cert(load_certs(c)?, load_key(k)?).map_err(|e| TlsError::Setting {
                setting: "server_tls_key_file",
                reason: format!("does not go with server_tls_cert_file: {e}"),
            })?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            let reason = "server_tls_cert_file and server_tls_key_file go together".to_string();
            return Err(TlsError::Setting { setting: "server_tls_cert_file", reason });
        }
    };
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(Some(Connector { mode, config: Arc::new(config) }))
}

/// The default provider, for code that needs one before any setting is read.
pub fn default_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().self_signed(&key).unwrap();
        let (c, k) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn general(cert: &Path, key: &Path) -> General {
        General {
            client_tls_sslmode: SslMode::Require,
            client_tls_cert_file: Some(cert.into()),
            client_tls_key_file: Some(key.into()),
            server_tls_sslmode: SslMode::Disable,
            ..General::default()
        }
    }

    #[test]
    fn a_key_that_does_not_go_with_the_certificate_is_refused_naming_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_a, key_a) = write_pair(dir.path(), "a");
        let (_, key_b) = write_pair(dir.path(), "b");
        assert!(TlsSetup::load(&general(&cert_a, &key_a)).unwrap().clients.is_some());
        let e = TlsSetup::load(&general(&cert_a, &key_b)).err().expect("mismatched").to_string();
        assert!(e.contains("client_tls_key_file"), "{e}");
        let e = TlsSetup::load(&general(&key_a, &key_a)).err().expect("a key is no certificate").to_string();
        assert!(e.contains("a.key"), "{e}");
        let missing = General { client_tls_key_file: None, ..general(&cert_a, &key_a) };
        let e = TlsSetup::load(&missing).err().expect("no key").to_string();
        assert!(e.contains("needs client_tls_key_file"), "{e}");
    }
}
