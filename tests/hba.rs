//! auth_type = hba (PgBouncer's subset of pg_hba.conf, with auth_ident_file maps) and auth_type =
//! cert, against a real PostgreSQL: per user, database and address; hostssl against hostnossl; cert
//! with a map and peer over the Unix socket; RELOAD taking a new file or keeping the old one.

mod common;

use std::path::Path;

use common::certs::{TestCerts, message, psql, quoted, tls_proxy};
use common::{Proxy, TestPg, scalar};
use tokio_postgres::NoTls;

fn os_user() -> String {
    let out = std::process::Command::new("id").arg("-un").output().expect("id");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn code(e: &tokio_postgres::Error) -> Option<String> {
    e.as_db_error().map(|d| d.code().code().to_string())
}

const HBA: &str = "\
# first match wins
local     all       all                         peer map=osmap
hostssl   all       scram_user  127.0.0.1/32    cert map=certmap
hostnossl all       md5_user    127.0.0.1/32    reject
host      all       md5_user    127.0.0.1/32    md5
host      \"app\"     trust_user  127.0.0.1/32    trust
host      all       scram_user  127.0.0.0 255.0.0.0  scram-sha-256
host      all       all         ::1/128         trust
";

fn write_files(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (hba, ident) = (dir.join("pg_hba.conf"), dir.join("pg_ident.conf"));
    std::fs::write(&hba, HBA).unwrap();
    std::fs::write(&ident, format!("certmap  client-cn  scram_user\nosmap  {}  scram_user\n", os_user())).unwrap();
    (hba, ident)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_matching_line_decides_per_user_database_address_and_tls() {
    let certs = TestCerts::new();
    certs.client("client", "client-cn");
    certs.client("intruder", "intruder");
    let pg = TestPg::start_tls(&certs, "server", "").await;
    let (hba, ident) = write_files(certs.dir());
    let sockets = tempfile::tempdir().unwrap();
    let px = tls_proxy(&pg, &certs, "prefer")
        .auth_type("hba")
        .general("auth_hba_file", &quoted(&hba))
        .general("auth_ident_file", &quoted(&ident))
        .general("unix_socket_dir", &quoted(sockets.path()))
        .database("other", "dbname = \"app\"")
        .start()
        .await;
    // Plain TCP: scram for scram_user (by the netmask line), trust for trust_user on app only.
    let c = px.client("scram_user", "scram_pw", "app").await;
    assert_eq!(scalar(&c, "select current_user").await, "scram_user");
    assert!(px.try_client("scram_user", "wrong", "app").await.is_err());
    assert_eq!(scalar(&px.client("trust_user", "", "app").await, "select 'trusted'").await, "trusted");
    let e = px.try_client("trust_user", "", "other").await.expect_err("trust only for app");
    assert_eq!(code(&e).as_deref(), Some("28000"), "{e}");
    assert!(
        message(&e).contains(
            "no pg_hba.conf entry for host \"127.0.0.1\", user \"trust_user\", database \"other\", no encryption"
        ),
        "{e}"
    );
    // hostnossl ... reject: md5_user in plain text is refused, over TLS it gets md5.
    let e = px.try_client("md5_user", "md5_pw", "app").await.expect_err("hostnossl reject");
    assert!(message(&e).contains("pg_hba.conf rejects connection"), "{e}");
    let tls = |user: &str, pw: &str, extra: &str| {
        format!("host=127.0.0.1 port={} user={user} password={pw} dbname=app sslmode=require {extra}", px.port())
    };
    assert_eq!(psql(tls("md5_user", "md5_pw", ""), "select current_user").await.unwrap(), "md5_user");
    // hostssl ... cert map=certmap: the certificate CN client-cn may be scram_user, with no password.
    let cert = |name: &str| {
        format!(
            "sslcert={} sslkey={}",
            certs.path(&format!("{name}.crt")).display(),
            certs.path(&format!("{name}.key")).display()
        )
    };
    assert_eq!(psql(tls("scram_user", "none", &cert("client")), "select current_user").await.unwrap(), "scram_user");
    let e = psql(tls("scram_user", "none", &cert("intruder")), "select 1").await.unwrap_err();
    assert!(e.contains("certificate authentication failed for user \"scram_user\""), "{e}");
    let e = psql(tls("scram_user", "scram_pw", ""), "select 1").await.unwrap_err();
    assert!(e.contains("requires a valid client certificate"), "{e}");
    // local ... peer map=osmap: over the Unix socket the OS user may be scram_user, no one else.
    let unix = |user: &str| format!("host={} port={} user={user} dbname=app", sockets.path().display(), px.port());
    let (c, conn) = tokio_postgres::connect(&unix("scram_user"), NoTls).await.expect("peer login");
    tokio::spawn(conn);
    assert_eq!(scalar(&c, "select 'peer'").await, "peer");
    let e = tokio_postgres::connect(&unix("md5_user"), NoTls).await.err().expect("not mapped");
    assert!(message(&e).contains("peer authentication failed for user \"md5_user\""), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_a_new_hba_file_and_keeps_the_old_rules_when_it_does_not_parse() {
    let pg = TestPg::start().await;
    let dir = tempfile::tempdir().unwrap();
    let hba = dir.path().join("pg_hba.conf");
    std::fs::write(&hba, "host all all 127.0.0.1/32 trust\n").unwrap();
    let px = Proxy::builder(&pg)
        .auth_type("hba")
        .general("auth_hba_file", &quoted(&hba))
        .general("admin_users", "\"trust_user\"")
        .start()
        .await;
    let console = px.client("trust_user", "", "pgbouncer").await;
    assert_eq!(scalar(&px.client("trust_user", "", "app").await, "select 1").await, "1");
    // A line that does not parse: the whole file is refused and the running rules stay.
    std::fs::write(&hba, "host all all 127.0.0.1/32 trust\nhost all all not-an-address reject\n").unwrap();
    let e = console.simple_query("RELOAD").await.expect_err("bad line");
    assert_eq!(code(&e).as_deref(), Some("F0000"), "{e}");
    assert!(message(&e).contains("line 2"), "{e}");
    assert_eq!(scalar(&px.client("trust_user", "", "app").await, "select 2").await, "2");
    // A good new file applies to the next login; the session already in is not touched.
    std::fs::write(&hba, "host pgbouncer all 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 reject\n").unwrap();
    console.simple_query("RELOAD").await.unwrap();
    let e = px.try_client("trust_user", "", "app").await.expect_err("now rejected");
    assert_eq!(code(&e).as_deref(), Some("28000"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_type_cert_logs_in_as_the_certificates_common_name() {
    let certs = TestCerts::new();
    certs.client("scram", "scram_user");
    let pg = TestPg::start_tls(&certs, "server", "").await;
    let px = tls_proxy(&pg, &certs, "verify-full").auth_type("cert").start().await;
    let info = |user: &str, name: &str| {
        format!(
            "host=localhost port={} user={user} dbname=app sslmode=verify-full sslrootcert={} sslcert={} sslkey={}",
            px.port(),
            certs.path("ca.crt").display(),
            certs.path(&format!("{name}.crt")).display(),
            certs.path(&format!("{name}.key")).display()
        )
    };
    assert_eq!(psql(info("scram_user", "scram"), "select current_user").await.unwrap(), "scram_user");
    let e = psql(info("md5_user", "scram"), "select 1").await.unwrap_err();
    assert!(e.contains("certificate authentication failed for user \"md5_user\""), "{e}");
    // verify-full: no client certificate, no handshake.
    let bare = format!("host=localhost port={} user=scram_user dbname=app sslmode=require", px.port());
    assert!(psql(bare, "select 1").await.is_err());
}
