//! TLS on both sides, against a real PostgreSQL started with `ssl = on` and a pg_hba.conf that takes
//! TCP logins only over TLS: psql (libpq) with each sslmode and channel_binding=require, pg_stat_ssl
//! proving pgsluice's own server connections are encrypted, the certificate checks pgsluice makes of
//! servers, hostile openings, and certificate rotation by RELOAD under load.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::certs::{TestCerts, message, psql, quoted, tls_proxy};
use common::console::{show, value};
use common::wire::{RawConn, error_fields, fe};
use common::{Proxy, TestPg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

fn conninfo(port: u16, host: &str, db: &str, extra: &str) -> String {
    format!("host={host} port={port} user=scram_user password=scram_pw dbname={db} {extra}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libpq_logs_in_over_tls_in_every_sslmode_and_pgsluice_reaches_the_server_over_tls() {
    let certs = TestCerts::new();
    let pg = TestPg::start_tls(&certs, "server", "").await;
    let px = tls_proxy(&pg, &certs, "prefer").start().await;
    let ca = certs.path("ca.crt");
    let ssl_of_backend = "select ssl::text || ' ' || version from pg_stat_ssl where pid = pg_backend_pid()";
    for (host, mode) in [("127.0.0.1", "require"), ("127.0.0.1", "verify-ca"), ("localhost", "verify-full")] {
        let info = conninfo(px.port(), host, "app", &format!("sslmode={mode} sslrootcert={}", ca.display()));
        let out = psql(info, ssl_of_backend).await.unwrap_or_else(|e| panic!("sslmode={mode}: {e}"));
        assert!(out.starts_with("true TLSv1."), "pgsluice's own connection to PostgreSQL uses TLS: {out}");
    }
    // channel_binding=require: libpq insists on SCRAM-SHA-256-PLUS, which PgBouncer does not offer.
    let info = conninfo(
        px.port(),
        "localhost",
        "app",
        &format!("sslmode=verify-full sslrootcert={} channel_binding=require", ca.display()),
    );
    assert_eq!(psql(info, "select 1").await.unwrap(), "1");
    // SHOW CLIENTS and SHOW SERVERS name the TLS of each connection; a plain-text client has none.
    let plain = px.client("scram_user", "scram_pw", "app").await;
    let info =
        conninfo(px.port(), "localhost", "pgbouncer", &format!("sslmode=verify-full sslrootcert={}", ca.display()));
    let servers = psql(info, "show servers").await.unwrap();
    assert!(servers.contains("|TLSv1.3/TLS_AES_256_GCM_SHA384/ECDH="), "{servers}");
    let (cols, rows) = show(&px.client("scram_user", "scram_pw", "pgbouncer").await, "show clients").await;
    let row = rows.iter().find(|r| value(&cols, r, "database") == "app").expect("the plain client");
    assert_eq!(value(&cols, row, "tls"), "", "plain text has no tls");
    drop(plain);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_refuses_plain_text_clients_with_28000_and_serves_tls_ones() {
    let certs = TestCerts::new();
    let pg = TestPg::start_tls(&certs, "server", "").await;
    let px = tls_proxy(&pg, &certs, "require").start().await;
    let e = px.try_client("scram_user", "scram_pw", "app").await.expect_err("plain text refused");
    let db = e.as_db_error().expect("an error from pgsluice");
    assert_eq!(db.code().code(), "28000", "{e}");
    assert!(db.message().contains("TLS is required"), "{e}");
    let e = psql(conninfo(px.port(), "127.0.0.1", "app", "sslmode=disable"), "select 1").await.unwrap_err();
    assert!(e.contains("TLS is required"), "{e}");
    assert_eq!(psql(conninfo(px.port(), "127.0.0.1", "app", "sslmode=require"), "select 1").await.unwrap(), "1");
    // verify-ca against a CA that did not sign pgsluice's certificate: libpq refuses.
    certs.foreign("stranger", &["localhost"], "localhost");
    let other = certs.path("stranger-ca.crt");
    let e = psql(
        conninfo(px.port(), "localhost", "app", &format!("sslmode=verify-ca sslrootcert={}", other.display())),
        "select 1",
    )
    .await
    .unwrap_err();
    assert!(e.contains("certificate verify failed"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_ca_and_verify_full_check_the_servers_certificate() {
    let certs = TestCerts::new();
    certs.server("localonly", &["localhost"]);
    certs.foreign("stranger", &["localhost"], "localhost");
    let pg = TestPg::start_tls(&certs, "localonly", "").await;
    let start = |mode: &str, ca: &str, host: &str| {
        Proxy::builder(&pg)
            .general("server_tls_sslmode", &format!("{mode:?}"))
            .general("server_tls_ca_file", &quoted(&certs.path(ca)))
            .database("tls", &format!("host = {host:?}, port = {}, dbname = \"app\"", pg.port()))
            .start()
    };
    // The certificate names localhost only: verify-full to 127.0.0.1 is refused, verify-ca is not.
    let px = start("verify-full", "ca.crt", "127.0.0.1").await;
    let e = px.try_client("scram_user", "scram_pw", "tls").await.expect_err("wrong host name");
    assert!(message(&e).contains("TLS with the server failed"), "{e:?}");
    drop(px);
    let px = start("verify-ca", "ca.crt", "127.0.0.1").await;
    assert_eq!(common::scalar(&px.client("scram_user", "scram_pw", "tls").await, "select 'ca'").await, "ca");
    drop(px);
    let px = start("verify-full", "ca.crt", "localhost").await;
    assert_eq!(common::scalar(&px.client("scram_user", "scram_pw", "tls").await, "select 'full'").await, "full");
    drop(px);
    // A CA that did not sign it.
    let px = start("verify-ca", "stranger-ca.crt", "localhost").await;
    let e = px.try_client("scram_user", "scram_pw", "tls").await.expect_err("unknown issuer");
    assert!(message(&e).contains("TLS with the server failed"), "{e:?}");
    drop(px);
    // pg_hba.conf refuses plain text: with TLS off the server's own refusal reaches the client.
    let px = start("disable", "ca.crt", "localhost").await;
    let e = px.try_client("scram_user", "scram_pw", "tls").await.expect_err("hostnossl reject");
    assert_eq!(e.as_db_error().map(|d| d.code().code()), Some("28000"), "{e}");
    drop(px);
    // allow: plain text first, TLS when the server refuses it.
    let px = start("allow", "ca.crt", "localhost").await;
    assert_eq!(common::scalar(&px.client("scram_user", "scram_pw", "tls").await, "select 'allow'").await, "allow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_server_certificate_is_refused_and_require_needs_a_tls_server() {
    let certs = TestCerts::new();
    certs.expired("old");
    let pg = TestPg::start_tls(&certs, "old", "").await;
    let px = Proxy::builder(&pg)
        .general("server_tls_sslmode", "\"verify-ca\"")
        .general("server_tls_ca_file", &quoted(&certs.path("ca.crt")))
        .start()
        .await;
    let e = px.try_client("scram_user", "scram_pw", "app").await.expect_err("expired");
    assert!(message(&e).contains("TLS with the server failed"), "{e:?}");
    assert!(message(&e).to_lowercase().contains("expired"), "{e:?}");
    // A server without TLS under require.
    let plain = TestPg::start().await;
    let px = Proxy::builder(&plain).general("server_tls_sslmode", "\"require\"").start().await;
    let e = px.try_client("scram_user", "scram_pw", "app").await.expect_err("no TLS there");
    assert!(message(&e).contains("does not accept TLS"), "{e:?}");
}

fn client_config(ca: &Path, alpn: bool) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    if alpn {
        config.alpn_protocols = vec![b"postgresql".to_vec()];
    }
    Arc::new(config)
}

/// Reads messages until ReadyForQuery; returns the tags seen (an error's fields if one came).
async fn until_ready<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Result<Vec<u8>, String> {
    let mut tags = Vec::new();
    loop {
        let mut head = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut head))
            .await
            .map_err(|_| "timeout")?
            .map_err(|e| e.to_string())?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        s.read_exact(&mut body).await.map_err(|e| e.to_string())?;
        if head[0] == b'E' {
            return Err(format!("{:?}", error_fields(&body)));
        }
        tags.push(head[0]);
        if head[0] == b'Z' {
            return Ok(tags);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_needs_alpn_and_hostile_openings_are_cut_off_without_harm() {
    let certs = TestCerts::new();
    let pg = TestPg::start_tls(&certs, "server", "").await;
    let px = tls_proxy(&pg, &certs, "require").auth_type("trust").general("client_login_timeout", "1").start().await;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    // Direct TLS (a ClientHello first, no SSLRequest), as PostgreSQL 17's sslnegotiation=direct.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", px.port())).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(client_config(&certs.path("ca.crt"), true))
        .connect(name.clone(), tcp)
        .await
        .unwrap();
    tls.write_all(&RawConn::startup_packet("trust_user", "app", &[])).await.unwrap();
    assert_eq!(until_ready(&mut tls).await.unwrap().last(), Some(&b'Z'));
    tls.write_all(&fe::query("select 1")).await.unwrap();
    assert!(until_ready(&mut tls).await.unwrap().contains(&b'D'));
    // Without the ALPN protocol the connection is dropped after the handshake.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", px.port())).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_config(&certs.path("ca.crt"), false));
    if let Ok(mut tls) = connector.connect(name.clone(), tcp).await {
        let _ = tls.write_all(&RawConn::startup_packet("trust_user", "app", &[])).await;
        assert!(until_ready(&mut tls).await.is_err(), "refused without ALPN");
    }
    // Bytes behind the SSLRequest, before the answer (CVE-2021-23222's class): 08P01 in plain text.
    let mut c = RawConn::connect(px.port()).await;
    let mut stuffed = SSL_REQUEST.to_vec();
    stuffed.extend(RawConn::startup_packet("trust_user", "app", &[]));
    c.send(&stuffed).await;
    let (tag, body) = c.read_message(Duration::from_secs(5)).await.expect("an error");
    assert_eq!((tag, error_fields(&body)[&'C'].as_str()), (b'E', "08P01"));
    // Garbage instead of a ClientHello, and a handshake that never starts: both closed.
    let mut garbage = RawConn::connect(px.port()).await;
    garbage.send(&SSL_REQUEST).await;
    let mut s = [0u8; 1];
    garbage.read_exact_raw(&mut s).await;
    assert_eq!(&s, b"S");
    garbage.send(b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(garbage.wait_closed(Duration::from_secs(5)).await.is_some(), "garbage handshake closed");
    let mut stalled = RawConn::connect(px.port()).await;
    stalled.send(&SSL_REQUEST).await;
    stalled.read_exact_raw(&mut s).await;
    assert!(
        stalled.wait_closed(Duration::from_secs(5)).await.is_some(),
        "stalled handshake cut by client_login_timeout"
    );
    // The TLS client from before is unaffected.
    tls.write_all(&fe::query("select 2")).await.unwrap();
    assert!(until_ready(&mut tls).await.unwrap().contains(&b'D'));
}

/// A TLS session the way libpq opens one (SSLRequest, 'S', handshake), logged in as trust_user.
async fn tls_session(port: u16, ca: &Path) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tcp.write_all(&SSL_REQUEST).await.unwrap();
    let mut s = [0u8; 1];
    tcp.read_exact(&mut s).await.unwrap();
    assert_eq!(&s, b"S");
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(client_config(ca, false)).connect(name, tcp).await.unwrap();
    tls.write_all(&RawConn::startup_packet("trust_user", "app", &[])).await.unwrap();
    until_ready(&mut tls).await.unwrap();
    tls
}

fn pgbench_over_tls(port: u16, seconds: u32, dir: &Path) -> std::process::Output {
    let script = dir.join("select.sql");
    std::fs::write(&script, "select 1;\n").unwrap();
    Command::new("pgbench")
        .args(["-n", "-C", "-c", "4", "-j", "2", "-T", &seconds.to_string(), "-f"])
        .arg(&script)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "trust_user", "app"])
        .env("PGSSLMODE", "require")
        .output()
        .expect("pgbench is installed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_rotates_the_certificate_under_load_and_keeps_it_when_the_new_file_is_broken() {
    let (certs, next) = (TestCerts::new(), TestCerts::new());
    let pg = TestPg::start_tls(&certs, "server", "").await;
    let (live_crt, live_key) = (certs.path("live.crt"), certs.path("live.key"));
    std::fs::copy(certs.path("server.crt"), &live_crt).unwrap();
    std::fs::copy(certs.path("server.key"), &live_key).unwrap();
    let px = tls_proxy(&pg, &certs, "prefer")
        .auth_type("trust")
        .general("client_tls_cert_file", &quoted(&live_crt))
        .general("client_tls_key_file", &quoted(&live_key))
        .start()
        .await;
    let verify = |ca: &Path| {
        conninfo(
            px.port(),
            "localhost",
            "app",
            &format!("user=trust_user sslmode=verify-full sslrootcert={}", ca.display()),
        )
    };
    assert_eq!(psql(verify(&certs.path("ca.crt")), "select 1").await.unwrap(), "1");
    let mut open = tls_session(px.port(), &certs.path("ca.crt")).await;
    // New connections over TLS all through the rotation (-C: one per transaction).
    let (port, dir) = (px.port(), certs.dir().to_path_buf());
    let bench = tokio::task::spawn_blocking(move || pgbench_over_tls(port, 4, &dir));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Only the files' contents change; the settings stay the same.
    std::fs::copy(next.path("server.crt"), &live_crt).unwrap();
    std::fs::copy(next.path("server.key"), &live_key).unwrap();
    let console = px.client("trust_user", "", "pgbouncer").await;
    console.simple_query("RELOAD").await.unwrap();
    let out = bench.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("number of failed transactions: 0 "), "{stdout}");
    // New handshakes show the new certificate; the old CA no longer verifies it.
    assert_eq!(psql(verify(&next.path("ca.crt")), "select 1").await.unwrap(), "1");
    let e = psql(verify(&certs.path("ca.crt")), "select 1").await.unwrap_err();
    assert!(e.contains("certificate verify failed"), "{e}");
    // The connection made before goes on.
    open.write_all(&fe::query("select 1")).await.unwrap();
    assert!(until_ready(&mut open).await.unwrap().contains(&b'D'));
    // A broken file: RELOAD fails (F0000) naming it, and the running certificate stays.
    std::fs::write(&live_crt, "not a certificate\n").unwrap();
    let e = console.simple_query("RELOAD").await.expect_err("broken certificate file");
    assert_eq!(e.as_db_error().map(|d| d.code().code()), Some("F0000"), "{e}");
    assert!(message(&e).contains("live.crt"), "{e:?}");
    assert_eq!(psql(verify(&next.path("ca.crt")), "select 1").await.unwrap(), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgsluice_shows_servers_its_own_client_certificate() {
    let certs = TestCerts::new();
    certs.client("pgsluice", "md5_user");
    // PostgreSQL lets md5_user in by certificate only (its CN must be the user).
    let pg = TestPg::start_tls(&certs, "server", "hostssl all md5_user 127.0.0.1/32 cert\n").await;
    let with_cert = tls_proxy(&pg, &certs, "prefer")
        .general("server_tls_cert_file", &quoted(&certs.path("pgsluice.crt")))
        .general("server_tls_key_file", &quoted(&certs.path("pgsluice.key")))
        .start()
        .await;
    let c = with_cert.client("md5_user", "md5_pw", "app").await;
    assert_eq!(common::scalar(&c, "select current_user").await, "md5_user");
    // Without it PostgreSQL refuses, and the client is told.
    let without = tls_proxy(&pg, &certs, "prefer").start().await;
    let e = without.try_client("md5_user", "md5_pw", "app").await.expect_err("no certificate");
    assert!(message(&e).contains("certificate"), "{e:?}");
}
