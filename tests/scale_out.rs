//! Scale-out: three peered pgsluice processes behind a round-robin TCP balancer (written here: it
//! accepts on one port and pipes each connection to the next process that accepts it). 300 clients
//! insert rows in short transactions while one process is drained with SIGINT (pgsluice's and
//! PgBouncer's safe shutdown, WAIT_FOR_SERVERS: its TCP listener closes at once, transactions in flight
//! finish, its clients are told 57P01 before their next one, and it exits once its servers are
//! released; SIGTERM instead would keep them until they leave). Its clients reconnect through the
//! balancer and land on the other two; no committed transaction is lost, and a cancel sent through the
//! balancer reaches the process running the query, before, during and after the drain.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::peers::{self, USER, cancel_via_port, sqlstate, wait_sleeping};
use common::{Proxy, TestPg, wait_for};

const CLIENTS: usize = 300;
/// Commits every client makes before the drain, and again after it.
const ROUNDS: u64 = 20;

/// The balancer: its port, and the connections it handed each process.
struct Balancer {
    port: u16,
    handed: Arc<Vec<AtomicUsize>>,
}

async fn balancer(backends: Vec<u16>) -> Balancer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handed: Arc<Vec<AtomicUsize>> = Arc::new(backends.iter().map(|_| AtomicUsize::new(0)).collect());
    let counts = handed.clone();
    tokio::spawn(async move {
        let mut next = 0usize;
        while let Ok((mut down, _)) = listener.accept().await {
            let start = next;
            next += 1;
            let (backends, counts) = (backends.clone(), counts.clone());
            tokio::spawn(async move {
                // Round robin over the processes that accept: a closed listener is skipped.
                for i in 0..backends.len() {
                    let at = (start + i) % backends.len();
                    if let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", backends[at])).await {
                        counts[at].fetch_add(1, Ordering::Relaxed);
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                        return;
                    }
                }
            });
        }
    });
    Balancer { port, handed }
}

/// What the clients saw.
struct Tally {
    commits: AtomicU64,
    /// Each client's commits.
    by_client: Vec<AtomicU64>,
    reconnects: AtomicU64,
    /// Errors other than the drain's 57P01 or a closed connection (each a failure of the test).
    unexpected: std::sync::Mutex<Vec<String>>,
}

/// One client: connects through the balancer and inserts rows until `stop`, reconnecting when its
/// process closes it; counts the inserts that committed.
async fn client(id: usize, port: u16, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let conn = format!("host=127.0.0.1 port={port} user={USER} dbname=app connect_timeout=10");
    let mut n = 0u64;
    'connect: while !stop.load(Ordering::Relaxed) {
        let c = match tokio_postgres::connect(&conn, tokio_postgres::NoTls).await {
            Ok((c, connection)) => {
                tokio::spawn(connection);
                c
            }
            Err(e) => {
                if !matches!(sqlstate(&Err::<(), _>(e)).as_deref(), None | Some("57P01" | "57P03")) {
                    tally.unexpected.lock().unwrap().push(format!("client {id} connect"));
                }
                tally.reconnects.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            match c.simple_query(&format!("insert into t values ({id}, {n})")).await {
                Ok(_) => {
                    tally.commits.fetch_add(1, Ordering::Relaxed);
                    tally.by_client[id].fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    let code = e.as_db_error().map(|d| d.code().code().to_string());
                    if !(e.is_closed() || code.as_deref() == Some("57P01")) {
                        tally.unexpected.lock().unwrap().push(format!("client {id}: {e} {code:?}"));
                    }
                    tally.reconnects.fetch_add(1, Ordering::Relaxed);
                    continue 'connect;
                }
            }
        }
    }
}

/// A `pg_sleep(30)` on a client of `conn`'s, canceled with a CancelRequest sent through the balancer:
/// the time from the cancel to the query's 57014.
async fn cancel_through(balancer: u16, conn: &str, admin: &tokio_postgres::Client) -> Duration {
    let (c, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls).await.expect("the canceled client");
    tokio::spawn(connection);
    let token = c.cancel_token();
    let query = tokio::spawn(async move { c.simple_query("select pg_sleep(30)").await.map(|_| ()) });
    wait_sleeping(admin, 1).await;
    let asked = Instant::now();
    cancel_via_port(&token, balancer).await;
    let r = tokio::time::timeout(Duration::from_secs(5), query).await.expect("the cancel works").unwrap();
    assert_eq!(sqlstate(&r), Some("57014".into()), "{r:?}");
    asked.elapsed()
}

/// Three peered processes on their own ports, each with a Unix socket in its own directory, peered by
/// those sockets (which a draining process keeps open), behind a balancer.
async fn peered_behind_a_balancer(pg: &TestPg, dirs: &[tempfile::TempDir]) -> (Vec<Proxy>, Balancer) {
    let mut px: Vec<Proxy> = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let b = peers::builder(pg, i as u16 + 1)
            .max_client_conn(CLIENTS + 50)
            .general("unix_socket_dir", &format!("{:?}", dir.path().display().to_string()));
        px.push(b.start().await);
    }
    let list: Vec<_> =
        px.iter().zip(dirs).zip(1..).map(|((p, d), id)| (id, d.path().display().to_string(), p.port())).collect();
    peers::add_peers(&px.iter().collect::<Vec<_>>(), &peers::peers_section(&list)).await;
    let lb = balancer(px.iter().map(Proxy::port).collect()).await;
    (px, lb)
}

/// SIGINT to `drained` while a query of one of its clients sleeps; the query is canceled through the
/// balancer during the drain (the balancer no longer reaches that process: the cancel lands on another,
/// which forwards it over the drained one's Unix socket). Returns the time the cancel took once the
/// process has exited.
async fn drain_with_a_cancel(mut drained: Proxy, lb: &Balancer, admin: &tokio_postgres::Client) -> Duration {
    let conn = format!("host=127.0.0.1 port={} user={USER} dbname=app", drained.port());
    let (c, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let token = c.cancel_token();
    let sleeper = tokio::spawn(async move { c.simple_query("select pg_sleep(30)").await.map(|_| ()) });
    wait_sleeping(admin, 1).await;
    drained.signal("INT");
    wait_for(Duration::from_secs(5), "the drain began", || async { drained.full_log().contains("shutting down") })
        .await;
    let asked = Instant::now();
    cancel_via_port(&token, lb.port).await;
    let r = tokio::time::timeout(Duration::from_secs(5), sleeper).await.expect("canceled during the drain").unwrap();
    assert_eq!(sqlstate(&r), Some("57014".into()), "{r:?}");
    let took = asked.elapsed();
    assert!(drained.wait_exit(Duration::from_secs(15)).await.is_some(), "the drained process exits");
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_peered_processes_behind_a_balancer_survive_a_drain_losing_no_commit() {
    let started = Instant::now();
    let pg = TestPg::start().await;
    let admin = pg.admin_client().await;
    admin.batch_execute("create table t(client int, n int); grant all on t to public").await.unwrap();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut px, lb) = peered_behind_a_balancer(&pg, &dirs).await;
    let tally = Arc::new(Tally {
        commits: AtomicU64::new(0),
        by_client: (0..CLIENTS).map(|_| AtomicU64::new(0)).collect(),
        reconnects: AtomicU64::new(0),
        unexpected: Default::default(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> =
        (0..CLIENTS).map(|id| tokio::spawn(client(id, lb.port, stop.clone(), tally.clone()))).collect();
    let handed = || lb.handed.iter().map(|n| n.load(Ordering::Relaxed)).collect::<Vec<usize>>();
    // Some load first: every client has committed ROUNDS times (and so is connected).
    wait_for(Duration::from_secs(15), "every client connected and inserting", || async {
        tally.by_client.iter().all(|n| n.load(Ordering::Relaxed) >= ROUNDS)
    })
    .await;
    let via_lb = format!("host=127.0.0.1 port={} user={USER} dbname=app", lb.port);
    let before = cancel_through(lb.port, &via_lb, &admin).await;
    let (at_signal, commits_at_signal) = (handed(), tally.commits.load(Ordering::Relaxed));
    let during = drain_with_a_cancel(px.remove(0), &lb, &admin).await;
    // After: the survivors carry every client and still cancel through the balancer.
    let after = cancel_through(lb.port, &via_lb, &admin).await;
    let at_exit: Vec<u64> = tally.by_client.iter().map(|n| n.load(Ordering::Relaxed)).collect();
    wait_for(Duration::from_secs(10), "every client commits again, on the survivors", || async {
        tally.by_client.iter().zip(&at_exit).all(|(n, then)| n.load(Ordering::Relaxed) >= *then + ROUNDS)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let committed = tally.commits.load(Ordering::Relaxed);
    let rows: i64 = admin.query_one("select count(*) from t", &[]).await.unwrap().get(0);
    let unexpected = tally.unexpected.lock().unwrap().clone();
    let (reconnects, handed) = (tally.reconnects.load(Ordering::Relaxed), handed());
    eprintln!(
        "clients {CLIENTS}, commits {committed} ({commits_at_signal} before the drain), reconnects {reconnects}, \
         handed {handed:?}, cancel before {before:?} during {during:?} after {after:?}, total {:?}",
        started.elapsed()
    );
    assert!(
        unexpected.is_empty(),
        "{} unexpected errors: {:?}",
        unexpected.len(),
        &unexpected[..unexpected.len().min(5)]
    );
    assert_eq!(rows, committed as i64, "every committed insert is in the table, and nothing else");
    assert!(at_signal[0] >= CLIENTS / 4, "the drained process had its share: {at_signal:?}");
    assert!(
        handed[1] + handed[2] >= at_signal[1] + at_signal[2] + at_signal[0],
        "each of its clients reconnected to a survivor: {handed:?}, {reconnects} reconnects"
    );
    for (what, d) in [("before", before), ("during", during), ("after", after)] {
        assert!(d < Duration::from_secs(3), "cancel {what} the drain took {d:?}");
    }
}
