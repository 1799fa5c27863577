//! A database entry naming several hosts (PgBouncer 1.24's `host=a,b` with load_balance_hosts):
//! round-robin spreads new server connections over them; disable stays on one until a connection to
//! it fails, then moves to the next.

mod common;

use common::{Proxy, TestPg, scalar};

/// A PostgreSQL listening on 127.0.0.1 and 127.0.0.2, same port.
async fn two_addresses() -> TestPg {
    TestPg::start_with(|data| {
        let mut conf = std::fs::OpenOptions::new().append(true).open(data.join("postgresql.conf")).unwrap();
        use std::io::Write;
        writeln!(conf, "listen_addresses = '127.0.0.1,127.0.0.2'").unwrap();
        let path = data.join("pg_hba.conf");
        let hba = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{hba}host all all 127.0.0.2/32 scram-sha-256\n")).unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_new_server_connections_over_the_hosts() {
    let pg = two_addresses().await;
    let px = Proxy::builder(&pg)
        .database(
            "spread",
            &format!("host = \"127.0.0.1,127.0.0.2\", port = {}, dbname = \"app\", pool_size = 4", pg.port()),
        )
        .start()
        .await;
    let mut seen = std::collections::BTreeSet::new();
    let clients: Vec<_> =
        futures_util::future::join_all((0..4).map(|_| px.client("scram_user", "scram_pw", "spread"))).await;
    // Four transactions at once need four server connections.
    for c in &clients {
        c.batch_execute("begin").await.unwrap();
    }
    for c in &clients {
        seen.insert(scalar(c, "select host(inet_server_addr())").await);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec!["127.0.0.1", "127.0.0.2"], "both hosts used");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_stays_on_one_host_and_moves_on_when_it_fails() {
    let pg = two_addresses().await;
    // Nothing listens on 127.0.0.3: the first connection fails (the client waits it out), and from then
    // on 127.0.0.1 serves.
    let px = Proxy::builder(&pg)
        .general("server_login_retry", "0")
        .database(
            "sticky",
            &format!("host = \"127.0.0.3,127.0.0.1,127.0.0.2\", port = {}, dbname = \"app\", load_balance_hosts = \"disable\"", pg.port()),
        )
        .start()
        .await;
    let first = px.client("scram_user", "scram_pw", "sticky").await;
    assert_eq!(scalar(&first, "select host(inet_server_addr())").await, "127.0.0.1", "moved on from the dead host");
    let clients: Vec<_> =
        futures_util::future::join_all((0..3).map(|_| px.client("scram_user", "scram_pw", "sticky"))).await;
    for c in &clients {
        c.batch_execute("begin").await.unwrap();
    }
    for c in &clients {
        assert_eq!(scalar(c, "select host(inet_server_addr())").await, "127.0.0.1", "stays on the host that works");
    }
}
