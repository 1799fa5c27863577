//! Peering (`peer_id`, `[peers]`, PgBouncer 1.19's): a CancelRequest that lands on the wrong pgsluice
//! process is forwarded to the one whose key it carries, over its TCP port or Unix socket; forged keys,
//! unknown peers, peers that are down and forwarding loops cancel nothing and hold nothing up.

mod common;

use std::time::{Duration, Instant};

use common::peers::{self, USER, cancel_via_port, cancel_via_socket, console, forwards, sqlstate, wait_sleeping};
use common::wire::{RawConn, cancel_request, query_message};
use common::{Proxy, TestPg, wait_for};

/// A query on `on` that a cancel sent by `cancel` must end with 57014 within 3 s (it sleeps 30).
async fn assert_cancels<F, Fut>(on: &Proxy, admin: &tokio_postgres::Client, cancel: F)
where
    F: FnOnce(tokio_postgres::CancelToken) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let c = on.client(USER, "", "app").await;
    let token = c.cancel_token();
    let query = tokio::spawn(async move { c.simple_query("select pg_sleep(30)").await.map(|_| ()) });
    wait_sleeping(admin, 1).await;
    let asked = Instant::now();
    cancel(token).await;
    let result = tokio::time::timeout(Duration::from_secs(5), query).await.expect("the query ends").unwrap();
    assert_eq!(sqlstate(&result), Some("57014".into()), "{result:?}\n{}", on.log_contents());
    assert!(asked.elapsed() < Duration::from_secs(3), "canceled after {:?}", asked.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_sent_to_any_peer_cancels_the_query_where_it_runs() {
    let pg = TestPg::start().await;
    let admin = pg.admin_client().await;
    let px = peers::three(&pg).await;
    // Sent to B, then to C: each forwards it to A, whose key it carries.
    for to in [&px[1], &px[2]] {
        assert_cancels(&px[0], &admin, |t| async move { cancel_via_port(&t, to.port()).await }).await;
    }
    assert_eq!((forwards(&px[1]), forwards(&px[2]), forwards(&px[0])), (1, 1, 0));
    // Sent to A itself: handled there, as without peering.
    let a_port = px[0].port();
    assert_cancels(&px[0], &admin, |t| async move { cancel_via_port(&t, a_port).await }).await;
    // SHOW PEERS lists the three entries (its own among them); SHOW PEER_POOLS the two it forwards to.
    let b = console(&px[1]).await;
    let (cols, rows) = common::console::show(&b, "SHOW PEERS").await;
    assert_eq!(cols, ["peer_id", "host", "port", "pool_size"]);
    let listed: Vec<Vec<String>> =
        rows.iter().map(|r| r.iter().map(|v| v.clone().unwrap_or_default()).collect()).collect();
    let expected: Vec<Vec<String>> = px
        .iter()
        .zip(1..)
        .map(|(p, id)| vec![format!("{id}"), "127.0.0.1".into(), p.port().to_string(), "4".into()])
        .collect();
    assert_eq!(listed, expected);
    let (_, pools) = common::console::show(&b, "SHOW PEER_POOLS").await;
    let ids: Vec<String> = pools.iter().map(|r| r[0].clone().unwrap_or_default()).collect();
    assert_eq!(ids, ["1", "3"]);
    let (_, lists) = common::console::show(&b, "SHOW LISTS").await;
    let count = |name: &str| lists.iter().find(|r| r[0].as_deref() == Some(name)).and_then(|r| r[1].clone());
    assert_eq!((count("peers"), count("peer_pools")), (Some("3".into()), Some("2".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_key_naming_a_peer_cancels_nothing() {
    let pg = TestPg::start().await;
    let admin = pg.admin_client().await;
    let px = peers::three(&pg).await;
    let (mut a, pid, key) = RawConn::login_with_key(px[0].port(), USER, "app").await;
    a.send(&query_message("select pg_sleep(30)")).await;
    wait_sleeping(&admin, 1).await;
    // The right process id (so the right peer_id), other secrets; and the right peer_id with the rest
    // random. Each with a full TTL, so that B forwards it.
    let peer_bytes = pid & 0x00ff_ff00;
    let forged = [(pid, key ^ 0x8000_0000), (pid, !key | 3), ((rand_u32() & 0x7f00_00ff) | peer_bytes, rand_u32() | 3)];
    for (p, k) in forged {
        let mut c = RawConn::connect(px[1].port()).await;
        c.send(&cancel_request(p, k)).await;
        // B closes once A has closed the forwarded request: it has been dealt with.
        c.wait_closed(Duration::from_secs(5)).await.expect("B deals with the forged cancel");
    }
    wait_for(Duration::from_secs(5), "A saw the forwarded requests", || async {
        px[0].full_log().matches("cancel request matching no client ignored").count() == forged.len()
    })
    .await;
    assert_eq!(forwards(&px[1]), forged.len(), "each was forwarded to A");
    assert!(a.read_message(Duration::from_millis(300)).await.is_none(), "a forged key canceled the query");
    assert_eq!(peers::sleeping(&admin).await, 1, "the query still runs");
    // The real key, through B, does.
    RawConn::connect(px[1].port()).await.send(&cancel_request(pid, key)).await;
    let (tag, body) = loop {
        match a.read_message(Duration::from_secs(3)).await.expect("an answer to the cancel") {
            (b'T', _) => continue,
            m => break m,
        }
    };
    assert_eq!((tag, common::wire::error_fields(&body).get(&'C').cloned()), (b'E', Some("57014".into())));
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() as u32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_is_down_or_silent_holds_nothing_up() {
    let pg = TestPg::start().await;
    let mut px = peers::three(&pg).await;
    let (_c_client, pid, key) = RawConn::login_with_key(px[2].port(), USER, "app").await;
    let c_port = px[2].port();
    drop(px.pop()); // C stopped: connections to it are refused
    let b = px[1].port();
    let sent = Instant::now();
    let mut c = RawConn::connect(b).await;
    c.send(&cancel_request(pid, key)).await;
    c.wait_closed(Duration::from_secs(3)).await.expect("B gives up on a refused peer at once");
    assert!(sent.elapsed() < Duration::from_secs(2), "{:?}", sent.elapsed());
    // Now something takes C's connections and never answers: each forward waits cancel_wait_timeout (2 s),
    // at most pool_size (4) of them connected at once, and B serves its clients meanwhile.
    let silent = std::net::TcpListener::bind(("127.0.0.1", c_port)).expect("bind C's port");
    let flood: Vec<_> = (0..12)
        .map(|_| {
            tokio::spawn(async move {
                let mut c = RawConn::connect(b).await;
                c.send(&cancel_request(pid, key)).await;
                c.wait_closed(Duration::from_secs(6)).await
            })
        })
        .collect();
    let b_console = console(&px[1]).await;
    wait_for(Duration::from_secs(3), "forwards to C waiting their turn", || async {
        let (cols, rows) = common::console::show(&b_console, "SHOW PEER_POOLS").await;
        let c_row = rows.iter().find(|r| r[0].as_deref() == Some("3")).expect("a row for C");
        let n = |name: &str| common::console::value(&cols, c_row, name).parse::<usize>().unwrap();
        assert!(n("sv_active_cancel") + n("sv_login") <= 4, "more than pool_size forwards at once");
        n("cl_waiting_cancel_req") > 0 && n("sv_active_cancel") == 4
    })
    .await;
    let client = px[1].client(USER, "", "app").await;
    let served = Instant::now();
    assert_eq!(common::scalar(&client, "select 41 + 1").await, "42");
    assert!(served.elapsed() < Duration::from_secs(1), "B is held up: {:?}", served.elapsed());
    for f in flood {
        let closed = f.await.unwrap().expect("every forward ends within cancel_wait_timeout");
        assert!(closed < Duration::from_millis(3500), "a forward took {closed:?}");
    }
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_pointing_at_each_other_bounce_a_cancel_three_times_only() {
    let pg = TestPg::start().await;
    let a = peers::builder(&pg, 1).start().await;
    let b = peers::builder(&pg, 2).start().await;
    // Misconfigured: each says peer 3 is the other.
    let host = || "127.0.0.1".to_string();
    peers::add_peers(&[&a], &peers::peers_section(&[(3, host(), b.port())])).await;
    peers::add_peers(&[&b], &peers::peers_section(&[(3, host(), a.port())])).await;
    // A key naming peer 3 (bytes 1 and 2 of the process id), TTL 3.
    let pid = 0x1203_0045;
    let mut c = RawConn::connect(a.port()).await;
    c.send(&cancel_request(pid, 0xabcd_ef03)).await;
    c.wait_closed(Duration::from_secs(3)).await.expect("the bouncing ends");
    wait_for(Duration::from_secs(3), "the TTL used up", || async {
        (a.full_log() + &b.full_log()).contains("its TTL is used up")
    })
    .await;
    assert_eq!(forwards(&a) + forwards(&b), 3, "A to B to A to B, then dropped");
    // And a key naming a peer nobody lists is dropped where it lands.
    let mut c = RawConn::connect(a.port()).await;
    c.send(&cancel_request(0x1209_0045, 0xabcd_ef03)).await;
    c.wait_closed(Duration::from_secs(3)).await.expect("dropped");
    assert!(a.full_log().contains("cancel request for an unknown peer dropped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_sharing_a_port_forward_cancels_over_their_unix_sockets() {
    let pg = TestPg::start().await;
    let admin = pg.admin_client().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let quoted = |d: &tempfile::TempDir| format!("{:?}", d.path().display().to_string());
    let a = peers::builder(&pg, 1)
        .general("so_reuseport", "true")
        .general("unix_socket_dir", &quoted(&dir_a))
        .start()
        .await;
    let port = a.port();
    let section = peers::peers_section(&[
        (1, dir_a.path().display().to_string(), port),
        (2, dir_b.path().display().to_string(), port),
    ]);
    peers::add_peers(&[&a], &section).await;
    let b = a.sibling_with(&[("peer_id", "2"), ("unix_socket_dir", &quoted(&dir_b))]).await;
    // A query on A (over its own socket), canceled through B's socket, then through the shared port as
    // often as it takes for the kernel to hand a cancel to B at least once.
    let on_a = |query_dir: &std::path::Path| format!("host={} port={port} user={USER} dbname=app", query_dir.display());
    let run = |conn: String| async move {
        let (c, conn) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        let token = c.cancel_token();
        (token, tokio::spawn(async move { c.simple_query("select pg_sleep(30)").await.map(|_| ()) }))
    };
    let (token, query) = run(on_a(dir_a.path())).await;
    wait_sleeping(&admin, 1).await;
    cancel_via_socket(&token, dir_b.path(), port).await;
    let r = tokio::time::timeout(Duration::from_secs(3), query).await.expect("canceled via B").unwrap();
    assert_eq!(sqlstate(&r), Some("57014".into()));
    assert_eq!(forwards(&b), 1, "B forwarded it to A over A's socket");
    for _ in 0..40 {
        let (token, query) = run(on_a(dir_a.path())).await;
        wait_sleeping(&admin, 1).await;
        cancel_via_port(&token, port).await;
        let r = tokio::time::timeout(Duration::from_secs(3), query).await.expect("canceled via the port").unwrap();
        assert_eq!(sqlstate(&r), Some("57014".into()));
        if forwards(&b) > 1 {
            return;
        }
    }
    panic!("no cancel through the shared port landed on B in 40 tries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_change_on_reload_and_peer_id_needs_a_restart() {
    let pg = TestPg::start().await;
    let px = peers::three(&pg).await;
    let b = console(&px[1]).await;
    // Rewrite B's [peers] without C, and with a new peer_id.
    let text = std::fs::read_to_string(&px[1].config).unwrap();
    let without_c: String = text.lines().filter(|l| !l.starts_with("3 = ")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&px[1].config, without_c.replace("peer_id = 2", "peer_id = 7")).unwrap();
    b.simple_query("RELOAD").await.unwrap();
    let (_, rows) = common::console::show(&b, "SHOW PEERS").await;
    assert_eq!(rows.iter().map(|r| r[0].clone().unwrap_or_default()).collect::<Vec<_>>(), ["1", "2"]);
    let (cols, config) = common::console::show(&b, "SHOW CONFIG").await;
    let row = config.iter().find(|r| r[0].as_deref() == Some("peer_id")).expect("peer_id in SHOW CONFIG");
    assert_eq!(common::console::value(&cols, row, "value"), "2", "the running id is kept");
    assert_eq!(common::console::value(&cols, row, "changeable"), "no");
    assert!(px[1].full_log().contains("changed setting needs a restart"), "{}", px[1].log_contents());
    // A key of C's is now dropped at B (unknown peer), and B's own keys still work there.
    let (_c_client, pid, key) = RawConn::login_with_key(px[2].port(), USER, "app").await;
    let mut c = RawConn::connect(px[1].port()).await;
    c.send(&cancel_request(pid, key)).await;
    c.wait_closed(Duration::from_secs(3)).await.expect("dropped");
    assert!(px[1].full_log().contains("cancel request for an unknown peer dropped"));
    let admin = pg.admin_client().await;
    let on_b = &px[1];
    assert_cancels(on_b, &admin, |t| async move { cancel_via_port(&t, on_b.port()).await }).await;
}
