//! Certificates made for a test with rcgen: a CA, a server certificate for localhost and 127.0.0.1
//! (PostgreSQL's and pgsluice's), client certificates by common name, and the wrong ones (another
//! CA, another host name, expired) that must be refused. Written as PEM files into a temp directory.

use std::path::{Path, PathBuf};

use std::process::Command;

use super::{Proxy, ProxyBuilder, TestPg};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, date_time_ymd};

pub struct TestCerts {
    dir: tempfile::TempDir,
    ca: Issuer<'static, KeyPair>,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p
}

impl TestCerts {
    /// A fresh CA with `ca.crt`, and `server.crt`/`server.key` for localhost and 127.0.0.1 signed by it.
    pub fn new() -> TestCerts {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        // Each CA its own name, so a chain is never built against another test's CA of the same name.
        let params = ca_params(&format!("pgsluice test CA {:016x}", rand::random::<u64>()));
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("ca.crt"), cert.pem()).unwrap();
        let certs = TestCerts { dir, ca: Issuer::new(params, key) };
        certs.server("server", &["localhost", "127.0.0.1"]);
        certs
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, name: &str, params: CertificateParams, issuer: &Issuer<'_, KeyPair>) {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, issuer).unwrap();
        std::fs::write(self.path(&format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).unwrap();
        set_mode(&self.path(&format!("{name}.key")), 0o600);
    }

    /// `<name>.crt`/`<name>.key`: a server certificate for `hosts`, signed by the CA.
    pub fn server(&self, name: &str, hosts: &[&str]) {
        let mut p = CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, hosts[0]);
        self.write(name, p, &self.ca);
    }

    /// `<name>.crt`/`<name>.key`: a client certificate with common name `cn`, signed by the CA.
    pub fn client(&self, name: &str, cn: &str) {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        self.write(name, p, &self.ca);
    }

    /// `<name>.crt`/`<name>.key` for localhost and 127.0.0.1, expired in 2001.
    pub fn expired(&self, name: &str) {
        let mut p = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        p.not_before = date_time_ymd(2000, 1, 1);
        p.not_after = date_time_ymd(2001, 1, 1);
        self.write(name, p, &self.ca);
    }

    /// `<name>-ca.crt` and `<name>.crt`/`<name>.key`: a certificate from a CA nobody trusts.
    pub fn foreign(&self, name: &str, hosts: &[&str], cn: &str) {
        let key = KeyPair::generate().unwrap();
        let params = ca_params("some other CA");
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(self.path(&format!("{name}-ca.crt")), cert.pem()).unwrap();
        let other = Issuer::new(params, key);
        let mut p = CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        self.write(name, p, &other);
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

/// An error's message as pgsluice or PostgreSQL sent it.
/// An error's message, and its DETAIL when it has one (RELOAD gives its reason there).
pub fn message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => match d.detail() {
            Some(detail) => format!("{}: {detail}", d.message()),
            None => d.message().to_string(),
        },
        None => e.to_string(),
    }
}

pub fn quoted(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// pgsluice in front of `pg`, TLS with clients in `mode` with the test certificates, and TLS to the
/// server checked in full against the test CA.
pub fn tls_proxy(pg: &TestPg, certs: &TestCerts, mode: &str) -> ProxyBuilder {
    Proxy::builder(pg)
        .general("client_tls_sslmode", &format!("{mode:?}"))
        .general("client_tls_key_file", &quoted(&certs.path("server.key")))
        .general("client_tls_cert_file", &quoted(&certs.path("server.crt")))
        .general("client_tls_ca_file", &quoted(&certs.path("ca.crt")))
        .general("server_tls_sslmode", "\"verify-full\"")
        .general("server_tls_ca_file", &quoted(&certs.path("ca.crt")))
        .general("admin_users", "[\"scram_user\", \"trust_user\"]")
}

/// Runs one statement with psql (libpq) over `conninfo`: Ok(output) or Err(stderr).
pub async fn psql(conninfo: String, sql: &str) -> Result<String, String> {
    let sql = sql.to_string();
    tokio::task::spawn_blocking(move || {
        let out = Command::new("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", &conninfo, "-c", &sql])
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .expect("psql is installed");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    })
    .await
    .unwrap()
}
