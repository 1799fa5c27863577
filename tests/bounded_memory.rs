//! Everything a client can make pgsluice hold is bounded: a named Parse too big to hold is refused
//! (54000) and streamed away, a client's statement names are capped in number and bytes, and a client
//! that pipelines without reading is held back, then dropped. Each ends in an error or backpressure while
//! pgsluice's memory stays bounded and other clients are served.

mod common;

use std::time::Duration;

use common::wire::{RawConn, fe};
use common::{Proxy, TestPg, peak_rss_mib, scalar};

const SECS: Duration = Duration::from_secs(30);
/// pgsluice's whole resident set may grow by buffers and bookkeeping, never by what a client streams.
const MAX_PROXY_MIB: u64 = 40;

async fn still_served(px: &Proxy) {
    let c = px.client("trust_user", "", "app").await;
    assert_eq!(scalar(&c, "select 'served'").await, "served");
}

/// The ErrorResponse SQLSTATEs and the number of other messages up to ReadyForQuery.
async fn answer_codes(c: &mut RawConn) -> (Vec<String>, usize) {
    let mut codes = Vec::new();
    let mut others = 0;
    loop {
        match c.read_message(SECS).await {
            Some((b'Z', _)) => return (codes, others),
            Some((b'E', body)) => codes.push(common::wire::error_fields(&body)[&'C'].clone()),
            Some(_) => others += 1,
            None => panic!("no ReadyForQuery (errors so far {codes:?})"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_gib_named_parse_is_refused_and_streamed_away_without_being_held() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").pool_size(2).start().await;
    let (mut c, _, _) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
    // Parse "big" with a text of (1 GiB - 64) bytes: header and name, then the text in 1 MiB writes.
    let text_len = (1usize << 30) - 64;
    let mut head = vec![b'P'];
    head.extend_from_slice(&((4 + 4 + text_len + 1 + 2) as u32).to_be_bytes());
    head.extend_from_slice(b"big\0");
    c.send(&head).await;
    let chunk = vec![b' '; 1 << 20];
    let mut left = text_len;
    while left > 0 {
        let n = left.min(chunk.len());
        c.send(&chunk[..n]).await;
        left -= n;
    }
    c.send(&[0, 0, 0]).await; // the text's NUL and no parameter types
    c.send(&fe::sync()).await;
    let (codes, _) = answer_codes(&mut c).await;
    assert_eq!(codes, ["54000"], "refused: too large to pool");
    // The connection goes on; the name was never taken.
    c.send(&[fe::parse("big", "select 7"), fe::bind("", "big", &[]), fe::execute("", 0), fe::sync()].concat()).await;
    let (codes, others) = answer_codes(&mut c).await;
    assert!(codes.is_empty() && others == 4, "ParseComplete, BindComplete, DataRow, CommandComplete");
    still_served(&px).await;
    let peak = peak_rss_mib(px.pid());
    assert!(peak < MAX_PROXY_MIB, "pgsluice peaked at {peak} MiB");
    eprintln!("1 GiB named Parse refused; pgsluice peak RSS {peak} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_statement_names_end_at_the_per_client_cap() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").general("max_client_prepared_statements", "1000").start().await;
    let (mut c, _, _) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
    // 1,000,000 Parse messages of distinct names and one Sync.
    let mut batch = Vec::with_capacity(1 << 20);
    for i in 0..1_000_000u32 {
        batch.extend(fe::parse(&format!("s{i}"), "select 1"));
        if batch.len() > (1 << 20) || i == 999_999 {
            if i == 999_999 {
                batch.extend(fe::sync());
            }
            c.send(&batch).await;
            batch.clear();
        }
    }
    let (codes, parsed) = answer_codes(&mut c).await;
    assert_eq!((codes.as_slice(), parsed), (&["54000".to_string()][..], 1000), "1000 parsed, then the cap");
    // The client keeps its 1000 statements and can still use them.
    c.send(&[fe::bind("", "s999", &[]), fe::execute("", 0), fe::sync()].concat()).await;
    let (codes, others) = answer_codes(&mut c).await;
    assert!(codes.is_empty() && others == 3, "{codes:?}");
    still_served(&px).await;
    let peak = peak_rss_mib(px.pid());
    assert!(peak < MAX_PROXY_MIB, "pgsluice peaked at {peak} MiB");
    eprintln!("1,000,000 names: capped at 1000; pgsluice peak RSS {peak} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_pipelined_syncs_are_answered_while_the_client_is_still_sending() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").start().await;
    let (c, _, _) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
    let (mut rd, mut wr) = c.split();
    // 5 MB of Syncs written in one go while their 6 MB of answers are read: pgsluice must read the
    // server while it writes to it, or pgsluice and PostgreSQL block writing to each other.
    let writer = tokio::spawn(async move {
        wr.send(&fe::sync().repeat(1_000_000)).await;
        wr // kept open: dropping it would end the connection (EOF)
    });
    let mut ready = 0;
    while ready < 1_000_000 {
        match rd.read_message(SECS).await {
            Some((b'Z', _)) => ready += 1,
            other => panic!("after {ready} ReadyForQuery: {other:?}"),
        }
    }
    let _wr = writer.await.unwrap();
    still_served(&px).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_pipelined_syncs_never_read_are_held_back_then_dropped() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").general("client_send_timeout", "2").start().await;
    let (mut c, _, _) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
    // A million Syncs and then a 20 MB result: more than the socket buffers between pgsluice and the
    // client hold. Never reads: pgsluice stops reading it once its answers back up, then drops it.
    let mut syncs: Vec<u8> = fe::sync().repeat(1_000_000);
    syncs.extend(fe::query("select repeat('x', 20000000)"));
    let writer = tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(20), c.try_send(&syncs)).await;
        c
    });
    still_served(&px).await;
    common::wait_for(Duration::from_secs(20), "the client dropped after client_send_timeout", || async {
        px.log_contents().contains("client_send_timeout")
    })
    .await;
    let mut c = writer.await.unwrap();
    assert!(c.wait_closed(Duration::from_secs(20)).await.is_some(), "closed");
    still_served(&px).await;
    let peak = peak_rss_mib(px.pid());
    assert!(peak < MAX_PROXY_MIB, "pgsluice peaked at {peak} MiB");
    eprintln!("1,000,000 Syncs never read: dropped; pgsluice peak RSS {peak} MiB");
}

/// Parses named statements of about 10 KiB each until one is refused; how many went in, and the code.
async fn parse_until_refused(c: &mut RawConn, prefix: &str, most: usize) -> (usize, Vec<String>) {
    let text = format!("select 1 -- {}", "p".repeat(10 << 10));
    let mut batch = Vec::new();
    for i in 0..most {
        batch.extend(fe::parse(&format!("{prefix}{i}"), &text));
    }
    batch.extend(fe::sync());
    c.send(&batch).await;
    let (codes, parsed) = answer_codes(c).await;
    (parsed, codes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_clients_together_hold_no_more_than_max_total_prepared_bytes() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").general("max_total_prepared_bytes", "102400").start().await;
    let (mut a, _, _) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
    let (mut b, _, _) = RawConn::login_with_key(px.port(), "trust_user", "app").await;
    // 100 KiB holds nine statements of 10 KiB and a bit, whoever parses them.
    let (parsed, codes) = parse_until_refused(&mut a, "a", 6).await;
    assert_eq!((parsed, codes.as_slice()), (6, &[][..]));
    let (parsed, codes) = parse_until_refused(&mut b, "b", 6).await;
    assert_eq!((parsed, codes.as_slice()), (3, &["53200".to_string()][..]), "b got what a left");
    // Closing statements gives their bytes back to everybody.
    a.send(&[fe::close(b'S', "a0"), fe::close(b'S', "a1"), fe::sync()].concat()).await;
    assert_eq!(answer_codes(&mut a).await, (vec![], 2));
    let (parsed, codes) = parse_until_refused(&mut b, "c", 3).await;
    assert_eq!((parsed, codes.as_slice()), (2, &["53200".to_string()][..]));
    // So does leaving: a's four statements are free for b once a is gone.
    drop(a);
    let until = std::time::Instant::now() + SECS;
    for i in 0.. {
        let (parsed, codes) = parse_until_refused(&mut b, &format!("d{i}_"), 1).await;
        if parsed == 1 && codes.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < until, "a's statements were not released: {codes:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Nothing else is refused meanwhile: clients without named statements are served.
    still_served(&px).await;
}
