//! Peered pgsluice processes (`peer_id`, `[peers]`) for the peering and scale-out tests, and cancels
//! sent by tokio-postgres's CancelToken to an address of the test's choosing.

use std::time::Duration;

use tokio_postgres::{CancelToken, Client, NoTls};

use super::{Proxy, ProxyBuilder, TestPg};

pub const USER: &str = "trust_user";

/// A trusting pgsluice with this peer_id, whose console takes `USER`, and a short cancel_wait_timeout.
pub fn builder(pg: &TestPg, peer_id: u16) -> ProxyBuilder {
    Proxy::builder(pg)
        .auth_type("trust")
        .general("admin_users", &format!("{USER:?}"))
        .general("peer_id", &peer_id.to_string())
        .general("cancel_wait_timeout", "2")
        .pool_size(4)
}

/// A `[peers]` section: (peer_id, host, port) each.
pub fn peers_section(peers: &[(u16, String, u16)]) -> String {
    let mut s = String::from("[peers]\n");
    for (id, host, port) in peers {
        s.push_str(&format!("{id} = {{ host = {host:?}, port = {port} }}\n"));
    }
    s
}

/// The console of `px`.
pub async fn console(px: &Proxy) -> Client {
    px.client(USER, "", "pgbouncer").await
}

/// Appends `section` to each proxy's config and RELOADs it.
pub async fn add_peers(proxies: &[&Proxy], section: &str) {
    for px in proxies {
        px.append_config(section);
        console(px).await.simple_query("RELOAD").await.unwrap_or_else(|e| panic!("RELOAD: {e}"));
    }
}

/// Three processes on their own ports, peer_ids 1, 2, 3, each listing all three.
pub async fn three(pg: &TestPg) -> Vec<Proxy> {
    let mut proxies = Vec::new();
    for id in 1..=3 {
        proxies.push(builder(pg, id).start().await);
    }
    let list: Vec<(u16, String, u16)> =
        proxies.iter().zip(1..).map(|(p, id)| (id, "127.0.0.1".to_string(), p.port())).collect();
    add_peers(&proxies.iter().collect::<Vec<_>>(), &peers_section(&list)).await;
    proxies
}

/// Backends running `pg_sleep` now.
pub async fn sleeping(admin: &Client) -> i64 {
    let sql = "select count(*) from pg_stat_activity where query like 'select pg_sleep%' and state = 'active'";
    admin.query_one(sql, &[]).await.unwrap().get(0)
}

/// Waits until `n` backends run `pg_sleep`.
pub async fn wait_sleeping(admin: &Client, n: i64) {
    super::wait_for(Duration::from_secs(10), "pg_sleep running", || async { sleeping(admin).await == n }).await;
}

/// Sends `token`'s CancelRequest to 127.0.0.1:`port` (as tokio-postgres does: without waiting for an answer).
pub async fn cancel_via_port(token: &CancelToken, port: u16) {
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect for the cancel");
    token.cancel_query_raw(s, NoTls).await.expect("send the cancel");
}

/// Sends `token`'s CancelRequest over the Unix socket `<dir>/.s.PGSQL.<port>`.
pub async fn cancel_via_socket(token: &CancelToken, dir: &std::path::Path, port: u16) {
    let s = tokio::net::UnixStream::connect(dir.join(format!(".s.PGSQL.{port}"))).await.expect("connect the socket");
    token.cancel_query_raw(s, NoTls).await.expect("send the cancel");
}

/// Lines of `px`'s log saying it forwarded a cancel to a peer.
pub fn forwards(px: &Proxy) -> usize {
    px.full_log().matches("forwarding cancel request to peer").count()
}

/// The SQLSTATE of a query's failure (`None`: it did not fail).
pub fn sqlstate<T>(r: &Result<T, tokio_postgres::Error>) -> Option<String> {
    r.as_ref().err().and_then(|e| e.as_db_error()).map(|d| d.code().code().to_string())
}
