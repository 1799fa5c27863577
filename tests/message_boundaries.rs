//! A server changes hands only at a whole-message boundary, and after login a client may send only
//! frontend message types. Raw-socket tests on a pool of one, so the next client must get the same server.

mod common;

use std::time::Duration;

use common::console::{self, show, value};
use common::wire::{RawConn, error_fields, fe};
use common::{Proxy, TestPg, wait_for};

const SECS: Duration = Duration::from_secs(10);

async fn pool_of_one(pg: &TestPg) -> Proxy {
    let admin = pg.admin_client().await;
    admin.batch_execute("create table if not exists copy_b(x int); grant all on copy_b to public").await.unwrap();
    Proxy::builder(pg)
        .auth_type("trust")
        .general("admin_users", &format!("{:?}", console::ADMIN.0))
        .pool_size(1)
        .query_wait_timeout(60.0)
        .start()
        .await
}

/// The header and the first `sent` bytes of a CopyData whose body is `total` bytes long.
fn copy_data_head(total: usize, sent: usize) -> Vec<u8> {
    let mut v = vec![b'd'];
    v.extend_from_slice(&((total + 4) as u32).to_be_bytes());
    v.extend(std::iter::repeat_n(b'1', sent));
    v
}

/// Client A fails a COPY with a bad row, then starts a 1 MB CopyData and reads the server's error and
/// ReadyForQuery 'I': PostgreSQL is now reading the rest of that message. Returns A and A's backend pid.
async fn start_copy_then_fail(px: &Proxy) -> (RawConn, String, usize) {
    let (mut a, _, _) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
    let pid = a.simple("select pg_backend_pid()", SECS).await.text().remove(0);
    a.send(&fe::query("copy copy_b from stdin")).await;
    assert_eq!(a.read_message(SECS).await.map(|m| m.0), Some(b'G'), "CopyInResponse");
    let total = 1 << 20;
    let sent = 4096;
    let mut bytes = fe::copy_data(b"not a number\n");
    bytes.extend(copy_data_head(total, sent));
    a.send(&bytes).await;
    let answer = a.read_answer(SECS).await;
    assert_eq!(answer.code(), Some("22P02"), "the bad row fails the COPY");
    (a, pid, total - sent)
}

async fn waiting_clients(console: &tokio_postgres::Client) -> i64 {
    let (cols, rows) = show(console, "SHOW POOLS").await;
    rows.iter()
        .filter(|r| value(&cols, r, "database") == "app")
        .map(|r| value(&cols, r, "cl_waiting").parse::<i64>().unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_waits_for_the_end_of_a_client_message_before_the_next_client_gets_it() {
    let pg = TestPg::start().await;
    let px = pool_of_one(&pg).await;
    let console = px.client(console::ADMIN.0, console::ADMIN.1, "pgbouncer").await;
    let (mut a, a_pid, rest) = start_copy_then_fail(&px).await;

    // B asks for the (only) server while A is halfway through its CopyData: B must wait, not be handed a
    // server that will read B's query as the rest of A's message.
    let b = px.client("trust_user", "", "app").await;
    let b_query = tokio::spawn(async move { common::scalar(&b, "select 'b:' || pg_backend_pid()").await });
    wait_for(SECS, "B waiting for the server", || async { waiting_clients(&console).await == 1 }).await;

    a.send(&vec![b'1'; rest]).await; // the rest of A's message; PostgreSQL ignores it (the COPY failed)
    let b_answer = tokio::time::timeout(SECS, b_query).await.expect("B is served once A's message is whole").unwrap();
    assert_eq!(b_answer, format!("b:{a_pid}"), "B got the same (clean) server");
    assert_eq!(a.simple("select 'a still works'", SECS).await.text(), ["a still works"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_message_gets_its_server_closed() {
    let pg = TestPg::start().await;
    let px = pool_of_one(&pg).await;
    let console = px.client(console::ADMIN.0, console::ADMIN.1, "pgbouncer").await;
    let (a, a_pid, _) = start_copy_then_fail(&px).await;
    let b = px.client("trust_user", "", "app").await;
    let b_query = tokio::spawn(async move { common::scalar(&b, "select pg_backend_pid()::text").await });
    wait_for(SECS, "B waiting for the server", || async { waiting_clients(&console).await == 1 }).await;
    drop(a); // gone with 1 MB - 4 KB of its CopyData still owed

    let b_pid = tokio::time::timeout(SECS, b_query).await.expect("B is served on a new server").unwrap();
    assert_ne!(b_pid, a_pid, "the server A left mid-message was closed, not pooled");
    let admin = pg.admin_client().await;
    let pid: i32 = a_pid.parse().unwrap();
    wait_for(SECS, "A's backend gone", || async {
        let rows = admin.query("select 1 from pg_stat_activity where pid = $1", &[&pid]).await.unwrap();
        rows.is_empty()
    })
    .await;
}

/// Reads until EOF; the first ErrorResponse's fields (panics if the connection stays open).
async fn fatal_then_eof(c: &mut RawConn) -> std::collections::HashMap<char, String> {
    let mut first = None;
    loop {
        match c.read_message(SECS).await {
            Some((b'E', body)) => {
                first.get_or_insert_with(|| error_fields(&body));
            }
            Some(_) => {}
            None => break,
        }
    }
    assert!(c.wait_closed(SECS).await.is_some(), "connection closed");
    first.expect("an ErrorResponse before the close")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_types_a_frontend_may_not_send_are_refused_before_any_server_sees_them() {
    let pg = TestPg::start().await;
    let px = pool_of_one(&pg).await;
    let probe = px.client("trust_user", "", "app").await;
    let server_pid = common::scalar(&probe, "select pg_backend_pid()::text").await;
    // 0x01, a NUL type, PasswordMessage after login, and backend-only types (RowDescription, ReadyForQuery).
    for tag in [0x01u8, 0, b'p', b'T', b'Z'] {
        let (mut c, _, _) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
        c.send(&fe::msg(tag, b"x\0")).await;
        let e = fatal_then_eof(&mut c).await;
        assert_eq!((e[&'S'].as_str(), e[&'C'].as_str()), ("FATAL", "08P01"), "type {tag}");
        assert_eq!(e[&'M'], format!("invalid frontend message type {tag}"));
    }
    // Had the server seen any of them it would have died (FATAL): the pool of one still has it.
    assert_eq!(common::scalar(&probe, "select pg_backend_pid()::text").await, server_pid);

    // Inside a transaction: the earlier messages ran, the bad one never reached the server, which is
    // closed (it was mid-transaction); the next client of the pool of one is served.
    let (mut c, _, _) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
    let pid = c.simple("begin; select pg_backend_pid()", SECS).await.text().remove(0);
    c.send(&fe::msg(0x01, b"")).await;
    assert_eq!(fatal_then_eof(&mut c).await[&'C'], "08P01");
    let next = px.client("trust_user", "", "app").await;
    assert_ne!(common::scalar(&next, "select pg_backend_pid()::text").await, pid);
    let log = pg.log_contents();
    assert!(!log.contains("invalid frontend message type"), "PostgreSQL never saw the bad message: {log}");

    // The console answers the same way.
    let (mut admin, _, _) = RawConn::login_with_key(px.port(), console::ADMIN.0, "pgbouncer").await;
    admin.send(&fe::msg(0x01, b"")).await;
    assert_eq!(fatal_then_eof(&mut admin).await[&'M'], "invalid frontend message type 1");
}

/// A hostile backend (TESTPLAN G8: the server link is input too): logs pgsluice in with trust, then
/// answers every Query with a message of type `reply_tag`, which only a frontend may send.
async fn fake_server(reply_tag: u8) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                common::wire::read_startup_as_server(&mut sock).await?;
                let mut hello = fe::msg(b'R', &0u32.to_be_bytes());
                hello.extend(fe::msg(b'S', b"server_version\x0015.0\0"));
                hello.extend(fe::msg(b'K', &[0, 0, 0, 1, 0, 0, 0, 2]));
                hello.extend(fe::msg(b'Z', b"I"));
                sock.write_all(&hello).await?;
                let mut buf = [0u8; 4096];
                while sock.read(&mut buf).await? > 0 {
                    if buf[0] == b'Q' {
                        sock.write_all(&fe::msg(reply_tag, b"select 1\0")).await?;
                    }
                }
                Ok::<_, std::io::Error>(())
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_sends_a_frontend_message_type_is_closed_and_the_client_told() {
    let pg = TestPg::start().await;
    let fake = fake_server(b'Q').await;
    let px = Proxy::builder(&pg)
        .auth_type("trust")
        .database("hostile", &format!("port = {fake}, dbname = \"hostile\""))
        .start()
        .await;
    let (mut c, _, _) = RawConn::login_with_key(px.port(), "trust_user", "hostile").await;
    c.send(&fe::query("select 1")).await;
    let e = fatal_then_eof(&mut c).await;
    assert_eq!((e[&'S'].as_str(), e[&'C'].as_str()), ("FATAL", "08P01"));
    assert!(e[&'M'].contains("invalid message type 0x51"), "{e:?}");
    // Other pools are unaffected.
    let other = px.client("trust_user", "", "app").await;
    assert_eq!(common::scalar(&other, "select 'fine'").await, "fine");
}
