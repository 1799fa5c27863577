//! Soak with a cross-talk detector (TESTPLAN F5). Many clients share a small transaction-mode pool whose
//! statement cache is smaller than what they prepare, so servers change hands and evict statements all the
//! time. The clients mix simple and extended queries, named prepared statements (per-client texts, and one
//! name every raw client uses for its own text), portals, transactions with SET LOCAL and savepoints, COPY in
//! and out, errors, cancels, pipelines, Flush, CopyFail, and disconnects mid-transaction, mid-query, mid-COPY
//! and mid-message. Every result carries its client's identity (and a sequence number); a result that carries
//! another's, a wrong count, a backend that changes inside a transaction, a SET LOCAL seen outside its
//! transaction, a row that an abandoned transaction committed, or a cancel the client did not send is a
//! mismatch. pgsluice's RSS and descriptors must stay flat, and the pool quiet once the clients are gone.
//!
//! `PGSLUICE_SOAK_SECS` sets the duration (default 60, as CI runs it); a long run:
//! `PGSLUICE_SOAK_SECS=600 cargo nextest run --test soak --no-capture`.

mod common;

use std::fmt::Debug;
use std::pin::pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::console::{show, value};
use common::wire::fe::{bind, close, copy_data, copy_fail, execute, flush, parse, query, sync};
use common::wire::{RawConn, error_fields};
use common::{Proxy, TestPg, wait_for};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio_postgres::types::Type;
use tokio_postgres::{CancelToken, Client, NoTls, SimpleQueryMessage, Statement};

const USER: &str = "scram_user";
const POOL_SIZE: usize = 5;
/// Named statements each server keeps: far fewer than the clients prepare, so the LRU evicts constantly.
const MAX_PREPARED: usize = 8;
const DRIVER_CLIENTS: usize = 48;
const RAW_CLIENTS: usize = 4;
/// Long-lived named statements per driver client (the last one returns several rows, for portals).
const STATEMENTS: usize = 6;
/// Any single operation taking longer than this is a hang.
const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// Rows in soak_rows whose owner contains this must never be committed.
const VOID: &str = ":void:";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Session,
    Simple,
    Extended,
    Prepared,
    Transaction,
    Copy,
    Error,
    Cancel,
    DropInTx,
    DropInCopy,
    RawPrepared,
    RawPipeline,
    RawFlush,
    RawErrorPipeline,
    RawCopyFail,
    RawDrop,
}

const KINDS: [Kind; 16] = [
    Kind::Session,
    Kind::Simple,
    Kind::Extended,
    Kind::Prepared,
    Kind::Transaction,
    Kind::Copy,
    Kind::Error,
    Kind::Cancel,
    Kind::DropInTx,
    Kind::DropInCopy,
    Kind::RawPrepared,
    Kind::RawPipeline,
    Kind::RawFlush,
    Kind::RawErrorPipeline,
    Kind::RawCopyFail,
    Kind::RawDrop,
];

/// Relative weights of what a driver (tokio-postgres) client does next.
const DRIVER_MIX: [(Kind, u32); 9] = [
    (Kind::Simple, 14),
    (Kind::Extended, 14),
    (Kind::Prepared, 20),
    (Kind::Transaction, 14),
    (Kind::Copy, 8),
    (Kind::Error, 10),
    (Kind::Cancel, 5),
    (Kind::DropInTx, 3),
    (Kind::DropInCopy, 2),
];

/// Relative weights of what a raw-wire client does next.
const RAW_MIX: [(Kind, u32); 6] = [
    (Kind::RawPrepared, 30),
    (Kind::RawPipeline, 20),
    (Kind::RawFlush, 15),
    (Kind::RawErrorPipeline, 15),
    (Kind::RawCopyFail, 10),
    (Kind::RawDrop, 5),
];

fn pick(mix: &[(Kind, u32)]) -> Kind {
    let total: u32 = mix.iter().map(|(_, w)| w).sum();
    let mut n = rand::random_range(0..total);
    for (kind, w) in mix {
        if n < *w {
            return *kind;
        }
        n -= w;
    }
    unreachable!()
}

/// What went wrong in one operation.
enum Problem {
    /// A result that is not this client's, or a wrong count: cross-talk.
    Mismatch(String),
    /// An unexpected error or a hang.
    Failure(String),
}

/// How an operation left its connection.
enum After {
    Continue,
    /// The operation dropped its connection on purpose.
    Gone,
}

type OpResult = Result<After, Problem>;

#[derive(Default)]
struct Report {
    ops: [AtomicU64; KINDS.len()],
    canceled: AtomicU64,
    cancel_missed: AtomicU64,
    mismatches: AtomicU64,
    failures: AtomicU64,
    first: Mutex<Vec<String>>,
}

impl Report {
    fn done(&self, kind: Kind) {
        self.ops[kind as usize].fetch_add(1, Ordering::Relaxed);
    }
    fn problem(&self, kind: Kind, p: Problem) {
        let line = match p {
            Problem::Mismatch(m) => {
                self.mismatches.fetch_add(1, Ordering::Relaxed);
                format!("MISMATCH in {kind:?}: {m}")
            }
            Problem::Failure(m) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                format!("FAILURE in {kind:?}: {m}")
            }
        };
        eprintln!("soak: {line}");
        let mut first = self.first.lock().unwrap();
        if first.len() < 30 {
            first.push(line);
        }
    }
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} {}", d.code().code(), d.message()),
        None => format!("{e}"),
    }
}

fn sqlstate(e: &tokio_postgres::Error) -> Option<&str> {
    e.code().map(|c| c.code())
}

/// An error where none was expected. A 57014 the client did not ask for is a cancel meant for someone else.
fn unexpected(id: &str, what: &str, e: tokio_postgres::Error) -> Problem {
    if sqlstate(&e) == Some("57014") {
        Problem::Mismatch(format!("{id}: {what}: a cancel this client never sent: {}", describe(&e)))
    } else {
        Problem::Failure(format!("{id}: {what}: {}", describe(&e)))
    }
}

fn expect_eq<T: PartialEq + Debug>(id: &str, what: &str, got: T, want: T) -> Result<(), Problem> {
    if got == want { Ok(()) } else { Err(Problem::Mismatch(format!("{id}: {what}: got {got:?}, want {want:?}"))) }
}

/// An error with exactly this SQLSTATE.
fn expect_code<T: Debug>(id: &str, what: &str, r: Result<T, tokio_postgres::Error>, code: &str) -> Result<(), Problem> {
    match r {
        Err(e) if sqlstate(&e) == Some(code) => Ok(()),
        Err(e) => Err(unexpected(id, what, e)),
        Ok(v) => Err(Problem::Mismatch(format!("{id}: {what}: succeeded ({v:?}), want {code}"))),
    }
}

/// Each row of a simple-protocol answer, as text.
fn simple_rows(msgs: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect()),
            _ => None,
        })
        .collect()
}

fn strings(v: &[&str]) -> Vec<Vec<Option<String>>> {
    vec![v.iter().map(|s| Some(s.to_string())).collect()]
}

/// Text of a client's j-th named statement: its identity is in the text, so a statement of another client
/// (or another j) answers with the wrong owner.
fn statement_text(id: &str, j: usize) -> String {
    if j + 1 == STATEMENTS {
        format!("select '{id}'::text as owner, g as j, $1::text as arg from generate_series(1, 5) g")
    } else {
        format!("select '{id}'::text as owner, {j}::int4 as j, $1::text as arg")
    }
}

// ---------------------------------------------------------------------------------------------------
// Driver clients (tokio-postgres)

struct Conn {
    client: Client,
    task: tokio::task::JoinHandle<()>,
    id: String,
    seq: u64,
    stmts: Vec<Statement>,
    port: u16,
}

impl Conn {
    async fn open(port: u16, idx: usize) -> Result<Conn, Problem> {
        let id = format!("c{idx}-{:08x}", rand::random::<u32>());
        let conf: tokio_postgres::Config = format!(
            "host=127.0.0.1 port={port} user={USER} dbname=app sslmode=disable connect_timeout=30 application_name={id}"
        )
        .parse()
        .unwrap();
        let (client, conn) = conf.connect(NoTls).await.map_err(|e| Problem::Failure(format!("{id}: connect: {e}")))?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut c = Conn { client, task, id, seq: 0, stmts: Vec::new(), port };
        // Session state of its own (session_state = isolate): a setting, and a SQL statement under a name
        // every client uses. op_simple reads both back.
        let own = format!("set pgsluice.soak_id = '{0}'; prepare soak_p as select '{0}'::text", c.id);
        c.client.batch_execute(&own).await.map_err(|e| unexpected(&c.id, "session state", e))?;
        for j in 0..STATEMENTS {
            let s = c.client.prepare(&statement_text(&c.id, j)).await.map_err(|e| unexpected(&c.id, "prepare", e))?;
            c.stmts.push(s);
        }
        Ok(c)
    }

    /// A fresh tag for one operation: the identity and a sequence number.
    fn tag(&mut self) -> String {
        self.seq += 1;
        format!("{}:{}", self.id, self.seq)
    }

    /// Closes the connection the polite way (Terminate).
    async fn close(self) {
        drop(self.client);
        let _ = tokio::time::timeout(OP_TIMEOUT, self.task).await;
    }

    /// Cuts the connection: the socket is closed with whatever was in flight.
    fn kill(self) {
        self.task.abort();
    }
}

/// Runs one named statement and checks that it answered for this client.
async fn run_statement(
    q: &(impl tokio_postgres::GenericClient + Sync),
    stmts: &[Statement],
    id: &str,
    j: usize,
    tag: &str,
) -> Result<(), Problem> {
    let rows = q.query(&stmts[j], &[&tag]).await.map_err(|e| unexpected(id, "prepared statement", e))?;
    let got: Vec<(String, i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    let want: Vec<(String, i32, String)> = if j + 1 == STATEMENTS {
        (1..=5).map(|g| (id.to_string(), g, tag.to_string())).collect()
    } else {
        vec![(id.to_string(), j as i32, tag.to_string())]
    };
    expect_eq(id, &format!("statement {j}"), got, want)
}

async fn backend_pid(q: &(impl tokio_postgres::GenericClient + Sync), id: &str) -> Result<i32, Problem> {
    let rows = q.query_typed("select pg_backend_pid()", &[]).await.map_err(|e| unexpected(id, "pg_backend_pid", e))?;
    Ok(rows[0].get(0))
}

async fn op_simple(c: &mut Conn) -> OpResult {
    let tag = c.tag();
    let id = c.id.clone();
    let sql = format!(
        "select '{tag}', current_setting('application_name'), current_setting('pgsluice.soak_id'); \
         execute soak_p; select '{tag}:2'"
    );
    let msgs = c.client.simple_query(&sql).await.map_err(|e| unexpected(&id, "simple", e))?;
    let mut want = strings(&[&tag, &id, &id]);
    want.extend(strings(&[&id]));
    want.extend(strings(&[&format!("{tag}:2")]));
    expect_eq(&id, "simple", simple_rows(&msgs), want)?;
    Ok(After::Continue)
}

async fn op_extended(c: &mut Conn) -> OpResult {
    let tag = c.tag();
    let id = c.id.clone();
    // The unnamed statement.
    let rows = c
        .client
        .query_typed("select $1::text, current_setting('application_name')", &[(&tag, Type::TEXT)])
        .await
        .map_err(|e| unexpected(&id, "unnamed statement", e))?;
    let got: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    expect_eq(&id, "unnamed statement", got, vec![(tag.clone(), id.clone())])?;
    // A named statement used once and closed (tokio-postgres prepares every &str query).
    let rows = c
        .client
        .query("select $1::text || '!' || current_setting('application_name')", &[&tag])
        .await
        .map_err(|e| unexpected(&id, "one-shot statement", e))?;
    let got: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    expect_eq(&id, "one-shot statement", got, vec![format!("{tag}!{id}")])?;
    Ok(After::Continue)
}

async fn op_prepared(c: &mut Conn) -> OpResult {
    let id = c.id.clone();
    for _ in 0..rand::random_range(1..=3) {
        let j = rand::random_range(0..STATEMENTS);
        if rand::random_bool(0.1) {
            // A new name for the same text; the old one is closed when dropped.
            let s = c.client.prepare(&statement_text(&id, j)).await.map_err(|e| unexpected(&id, "re-prepare", e))?;
            c.stmts[j] = s;
        }
        let tag = c.tag();
        run_statement(&c.client, &c.stmts, &id, j, &tag).await?;
    }
    Ok(After::Continue)
}

async fn op_transaction(c: &mut Conn) -> OpResult {
    let tags: Vec<String> = (0..4).map(|_| c.tag()).collect();
    let id = c.id.clone();
    let commit = rand::random_bool(0.5);
    let tx = c.client.transaction().await.map_err(|e| unexpected(&id, "begin", e))?;
    let pid = backend_pid(&tx, &id).await?;
    tx.batch_execute(&format!("set local soak.owner = '{id}'")).await.map_err(|e| unexpected(&id, "set local", e))?;
    let rows = tx
        .query_typed("select current_setting('soak.owner'), pg_backend_pid(), current_setting('application_name')", &[])
        .await
        .map_err(|e| unexpected(&id, "current_setting", e))?;
    let got: Vec<(String, i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    expect_eq(&id, "SET LOCAL inside its transaction", got, vec![(id.clone(), pid, id.clone())])?;
    let j = rand::random_range(0..STATEMENTS - 1);
    run_statement(&tx, &c.stmts, &id, j, &tags[0]).await?;
    // A portal read two rows at a time.
    let portal = tx.bind(&c.stmts[STATEMENTS - 1], &[&tags[1]]).await.map_err(|e| unexpected(&id, "bind", e))?;
    let mut got = Vec::new();
    loop {
        let rows = tx.query_portal(&portal, 2).await.map_err(|e| unexpected(&id, "portal", e))?;
        if rows.is_empty() {
            break;
        }
        got.extend(rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, i32>(1), r.get::<_, String>(2))));
        if got.len() > 5 {
            break;
        }
    }
    let want: Vec<(String, i32, String)> = (1..=5).map(|g| (id.clone(), g, tags[1].clone())).collect();
    expect_eq(&id, "portal rows", got, want)?;
    let msgs = tx
        .simple_query(&format!("select pg_backend_pid()::text, '{}'", tags[2]))
        .await
        .map_err(|e| unexpected(&id, "simple in tx", e))?;
    expect_eq(&id, "simple in transaction", simple_rows(&msgs), strings(&[&pid.to_string(), &tags[2]]))?;
    expect_eq(&id, "backend inside the transaction", backend_pid(&tx, &id).await?, pid)?;
    if commit {
        tx.commit().await.map_err(|e| unexpected(&id, "commit", e))?;
    } else {
        tx.rollback().await.map_err(|e| unexpected(&id, "rollback", e))?;
    }
    // SET LOCAL ended with its transaction (an empty placeholder or none at all, wherever this lands).
    let rows = c
        .client
        .query_typed("select coalesce(current_setting('soak.owner', true), ''), $1::text", &[(&tags[3], Type::TEXT)])
        .await
        .map_err(|e| unexpected(&id, "current_setting after", e))?;
    let got: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    expect_eq(&id, "SET LOCAL after its transaction", got, vec![(String::new(), tags[3].clone())])?;
    Ok(After::Continue)
}

async fn op_copy(c: &mut Conn) -> OpResult {
    let tag = c.tag();
    let id = c.id.clone();
    let commit = rand::random_bool(0.5);
    let owner = if commit { format!("{tag}:keep") } else { format!("{tag}{VOID}rolled-back") };
    let n: i64 = rand::random_range(1..=40);
    let tx = c.client.transaction().await.map_err(|e| unexpected(&id, "begin", e))?;
    let pid = backend_pid(&tx, &id).await?;
    let sink = tx
        .copy_in::<_, Bytes>("copy soak_rows(owner, seq) from stdin")
        .await
        .map_err(|e| unexpected(&id, "copy in", e))?;
    let mut sink = pin!(sink);
    let data: String = (0..n).map(|i| format!("{owner}\t{i}\n")).collect();
    let (a, b) = data.split_at(data.len() / 2);
    for part in [a, b] {
        sink.send(Bytes::copy_from_slice(part.as_bytes())).await.map_err(|e| unexpected(&id, "copy data", e))?;
    }
    let written = sink.as_mut().finish().await.map_err(|e| unexpected(&id, "copy done", e))?;
    expect_eq(&id, "rows copied in", written, n as u64)?;
    let rows = tx
        .query_typed("select count(*) from soak_rows where owner = $1", &[(&owner, Type::TEXT)])
        .await
        .map_err(|e| unexpected(&id, "count", e))?;
    expect_eq(&id, "count after copy in", rows[0].get::<_, i64>(0), n)?;
    let sql = format!("copy (select owner, seq from soak_rows where owner = '{owner}' order by seq) to stdout");
    let stream = tx.copy_out(sql.as_str()).await.map_err(|e| unexpected(&id, "copy out", e))?;
    let mut stream = pin!(stream);
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.map_err(|e| unexpected(&id, "copy out data", e))?);
    }
    expect_eq(&id, "rows copied out", String::from_utf8_lossy(&out).into_owned(), data)?;
    expect_eq(&id, "backend inside the copy transaction", backend_pid(&tx, &id).await?, pid)?;
    if commit {
        tx.commit().await.map_err(|e| unexpected(&id, "commit", e))?;
        let deleted = c
            .client
            .execute("delete from soak_rows where owner = $1", &[&owner])
            .await
            .map_err(|e| unexpected(&id, "delete", e))?;
        expect_eq(&id, "committed rows deleted", deleted, n as u64)?;
    } else {
        tx.rollback().await.map_err(|e| unexpected(&id, "rollback", e))?;
        let rows = c
            .client
            .query_typed("select count(*) from soak_rows where owner = $1", &[(&owner, Type::TEXT)])
            .await
            .map_err(|e| unexpected(&id, "count", e))?;
        expect_eq(&id, "count after rollback", rows[0].get::<_, i64>(0), 0)?;
    }
    Ok(After::Continue)
}

async fn op_error(c: &mut Conn) -> OpResult {
    let tag = c.tag();
    let id = c.id.clone();
    match rand::random_range(0..5) {
        0 => {
            expect_code(
                &id,
                "simple 1/0",
                c.client.simple_query("select 1/0").await.map(|m| simple_rows(&m)),
                "22012",
            )?;
            let msgs =
                c.client.simple_query(&format!("select '{tag}'")).await.map_err(|e| unexpected(&id, "after 1/0", e))?;
            expect_eq(&id, "after a simple error", simple_rows(&msgs), strings(&[&tag]))?;
        }
        1 => {
            let r = c.client.query_typed("select 1/$1::int4", &[(&0i32, Type::INT4)]).await.map(|r| r.len());
            expect_code(&id, "extended 1/0", r, "22012")?;
            let j = rand::random_range(0..STATEMENTS);
            run_statement(&c.client, &c.stmts, &id, j, &tag).await?;
        }
        2 => {
            // A unique violation aborts the transaction; the rollback leaves nothing behind.
            let key = format!("{tag}{VOID}uniq");
            let tx = c.client.transaction().await.map_err(|e| unexpected(&id, "begin", e))?;
            tx.execute("insert into soak_uniq values ($1)", &[&key]).await.map_err(|e| unexpected(&id, "insert", e))?;
            expect_code(&id, "duplicate", tx.execute("insert into soak_uniq values ($1)", &[&key]).await, "23505")?;
            expect_code(&id, "in failed transaction", tx.simple_query("select 1").await.map(|m| m.len()), "25P02")?;
            tx.rollback().await.map_err(|e| unexpected(&id, "rollback", e))?;
            let rows = c
                .client
                .query_typed("select count(*) from soak_uniq where k = $1", &[(&key, Type::TEXT)])
                .await
                .map_err(|e| unexpected(&id, "count", e))?;
            expect_eq(&id, "rolled-back key", rows[0].get::<_, i64>(0), 0)?;
        }
        3 => {
            // Outside a transaction: the first insert commits, the second fails, the delete finds one.
            let key = format!("{tag}:uniq");
            c.client
                .execute("insert into soak_uniq values ($1)", &[&key])
                .await
                .map_err(|e| unexpected(&id, "insert", e))?;
            let dup = c.client.execute("insert into soak_uniq values ($1)", &[&key]).await;
            expect_code(&id, "duplicate", dup, "23505")?;
            let deleted = c
                .client
                .execute("delete from soak_uniq where k = $1", &[&key])
                .await
                .map_err(|e| unexpected(&id, "delete", e))?;
            expect_eq(&id, "committed key deleted", deleted, 1)?;
        }
        _ => {
            // An error inside a savepoint, rolled back to it: the transaction goes on, on the same backend.
            let tx = c.client.transaction().await.map_err(|e| unexpected(&id, "begin", e))?;
            let pid = backend_pid(&tx, &id).await?;
            {
                let mut tx = tx;
                let sp = tx.savepoint("soak_sp").await.map_err(|e| unexpected(&id, "savepoint", e))?;
                expect_code(&id, "1/0 in savepoint", sp.simple_query("select 1/0").await.map(|m| m.len()), "22012")?;
                sp.rollback().await.map_err(|e| unexpected(&id, "rollback to savepoint", e))?;
                let j = rand::random_range(0..STATEMENTS);
                run_statement(&tx, &c.stmts, &id, j, &tag).await?;
                expect_eq(&id, "backend after rollback to savepoint", backend_pid(&tx, &id).await?, pid)?;
                tx.commit().await.map_err(|e| unexpected(&id, "commit", e))?;
            }
        }
    }
    Ok(After::Continue)
}

/// Sends a cancel request for `token` through pgsluice and waits until pgsluice closes the connection,
/// which it does once the server has acted on it (or once it decided there is nothing to cancel).
async fn cancel_and_wait(token: CancelToken, port: u16) -> Result<(), String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| format!("connect: {e}"))?;
    token.cancel_query_raw(&mut s, NoTls).await.map_err(|e| format!("cancel: {e}"))?;
    let mut buf = [0u8; 64];
    while s.read(&mut buf).await.map_err(|e| format!("read: {e}"))? > 0 {}
    Ok(())
}

async fn op_cancel(c: &mut Conn, report: &Report) -> OpResult {
    let tag = c.tag();
    let id = c.id.clone();
    let port = c.port;
    let token = c.client.cancel_token();
    let in_tx = rand::random_bool(0.5);
    let delay = Duration::from_millis(rand::random_range(if in_tx { 30..150 } else { 0..100 }));
    // The cancel is sent while the sleep runs, and delivered (or found to have nothing to cancel) before
    // the client goes on, so it can only ever hit this sleep.
    let cancel = async move {
        tokio::time::sleep(delay).await;
        cancel_and_wait(token, port).await
    };
    let result = if in_tx {
        // Inside a transaction the server is the client's, so the cancel finds the query.
        let tx = c.client.transaction().await.map_err(|e| unexpected(&id, "begin", e))?;
        let pid = backend_pid(&tx, &id).await?;
        let sql = format!("select pg_sleep(2), '{tag}'");
        let (r, sent) = tokio::join!(tx.simple_query(&sql), cancel);
        sent.map_err(|e| Problem::Failure(format!("{id}: cancel request: {e}")))?;
        let r = r.map(|msgs| simple_rows(&msgs));
        if r.is_ok() {
            expect_eq(&id, "backend inside the transaction", backend_pid(&tx, &id).await?, pid)?;
        }
        // Whatever came of it, the transaction ends in a rollback.
        tx.rollback().await.map_err(|e| unexpected(&id, "rollback", e))?;
        r
    } else {
        let sql = format!("select pg_sleep(0.2), '{tag}'");
        let (r, sent) = tokio::join!(c.client.simple_query(&sql), cancel);
        sent.map_err(|e| Problem::Failure(format!("{id}: cancel request: {e}")))?;
        r.map(|msgs| simple_rows(&msgs))
    };
    match result {
        Ok(rows) => {
            report.cancel_missed.fetch_add(1, Ordering::Relaxed);
            expect_eq(&id, "uncanceled sleep", rows, strings(&["", &tag]))?;
        }
        Err(e) if sqlstate(&e) == Some("57014") => {
            report.canceled.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => return Err(unexpected(&id, "canceled sleep", e)),
    }
    // The client goes on normally (on any server).
    let tag = c.tag();
    let rows = c
        .client
        .query_typed("select $1::text, current_setting('application_name')", &[(&tag, Type::TEXT)])
        .await
        .map_err(|e| unexpected(&id, "after cancel", e))?;
    let got: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    expect_eq(&id, "after cancel", got, vec![(tag, id.clone())])?;
    Ok(After::Continue)
}

/// A client that vanishes inside a transaction: politely (Terminate), by cutting the socket between
/// statements, or in the middle of a query. What it inserted must never be committed.
async fn op_drop_in_tx(c: Conn) -> OpResult {
    let mut c = c;
    let tag = c.tag();
    let id = c.id.clone();
    let owner = format!("{tag}{VOID}abandoned");
    c.client.batch_execute("begin").await.map_err(|e| unexpected(&id, "begin", e))?;
    c.client
        .execute("insert into soak_rows(owner, seq) values ($1, 0)", &[&owner])
        .await
        .map_err(|e| unexpected(&id, "insert", e))?;
    let pid = backend_pid(&c.client, &id).await?;
    expect_eq(&id, "backend inside the abandoned transaction", backend_pid(&c.client, &id).await?, pid)?;
    match rand::random_range(0..3) {
        0 => c.close().await,
        1 => c.kill(),
        _ => {
            let sleep = c.client.simple_query("select pg_sleep(1)");
            let _ = tokio::time::timeout(Duration::from_millis(rand::random_range(1..50)), sleep).await;
            c.kill();
        }
    }
    Ok(After::Gone)
}

/// A client that vanishes in the middle of COPY FROM STDIN, inside or outside a transaction.
async fn op_drop_in_copy(c: Conn) -> OpResult {
    let mut c = c;
    let tag = c.tag();
    let id = c.id.clone();
    let owner = format!("{tag}{VOID}copy-abandoned");
    if rand::random_bool(0.5) {
        c.client.batch_execute("begin").await.map_err(|e| unexpected(&id, "begin", e))?;
    }
    let sink = c
        .client
        .copy_in::<_, Bytes>("copy soak_rows(owner, seq) from stdin")
        .await
        .map_err(|e| unexpected(&id, "copy in", e))?;
    let mut sink = pin!(sink);
    let rows: String = (0..rand::random_range(1..20)).map(|i| format!("{owner}\t{i}\n")).collect();
    sink.send(Bytes::from(rows)).await.map_err(|e| unexpected(&id, "copy data", e))?;
    c.kill();
    Ok(After::Gone)
}

async fn driver_op(kind: Kind, c: Conn, report: &Report) -> (Option<Conn>, OpResult) {
    let mut c = c;
    let r = match kind {
        Kind::Simple => op_simple(&mut c).await,
        Kind::Extended => op_extended(&mut c).await,
        Kind::Prepared => op_prepared(&mut c).await,
        Kind::Transaction => op_transaction(&mut c).await,
        Kind::Copy => op_copy(&mut c).await,
        Kind::Error => op_error(&mut c).await,
        Kind::Cancel => op_cancel(&mut c, report).await,
        Kind::DropInTx => return (None, op_drop_in_tx(c).await),
        Kind::DropInCopy => return (None, op_drop_in_copy(c).await),
        other => unreachable!("{other:?} is a raw-wire operation"),
    };
    (Some(c), r)
}

async fn driver_client(idx: usize, port: u16, until: Instant, report: Arc<Report>) {
    while Instant::now() < until {
        let c = match tokio::time::timeout(OP_TIMEOUT, Conn::open(port, idx)).await {
            Ok(Ok(c)) => c,
            Ok(Err(p)) => {
                report.problem(Kind::Session, p);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(_) => {
                report.problem(Kind::Session, Problem::Failure(format!("c{idx}: connect and prepare hung")));
                continue;
            }
        };
        report.done(Kind::Session);
        let mut conn = Some(c);
        for _ in 0..rand::random_range(10..120) {
            if Instant::now() >= until {
                break;
            }
            let Some(c) = conn.take() else { break };
            let kind = pick(&DRIVER_MIX);
            let id = c.id.clone();
            match tokio::time::timeout(OP_TIMEOUT, driver_op(kind, c, &report)).await {
                Ok((back, Ok(after))) => {
                    report.done(kind);
                    if let After::Continue = after {
                        conn = back;
                    }
                }
                Ok((_, Err(p))) => report.problem(kind, p), // the connection is dropped: start afresh
                Err(_) => report.problem(kind, Problem::Failure(format!("{id}: no answer within {OP_TIMEOUT:?}"))),
            }
            pace().await;
        }
        if let Some(c) = conn {
            c.close().await;
        }
    }
}

/// A short pause between operations, so the soak leaves the machine some room.
async fn pace() {
    tokio::time::sleep(Duration::from_millis(rand::random_range(0..8))).await;
}

// ---------------------------------------------------------------------------------------------------
// Raw-wire clients: pipelines, Flush, one statement name shared by all of them, CopyFail, half messages

/// One reply, reduced: the tag, with an error's SQLSTATE, a ReadyForQuery's status, a CommandComplete's
/// text and a DataRow's columns.
fn reply(tag: u8, body: &[u8]) -> String {
    let text = |b: &[u8]| String::from_utf8_lossy(b.strip_suffix(&[0]).unwrap_or(b)).into_owned();
    match tag {
        b'E' => format!("E {}", error_fields(body).get(&'C').cloned().unwrap_or_default()),
        b'Z' => format!("Z {}", body.first().map(|b| *b as char).unwrap_or('?')),
        b'C' => format!("C {}", text(body)),
        b'D' => {
            let mut cols = Vec::new();
            let mut rest = body.get(2..).unwrap_or_default();
            while rest.len() >= 4 {
                let len = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
                rest = &rest[4..];
                if len < 0 {
                    cols.push("NULL".to_string());
                } else {
                    let len = (len as usize).min(rest.len());
                    cols.push(String::from_utf8_lossy(&rest[..len]).into_owned());
                    rest = &rest[len..];
                }
            }
            format!("D {}", cols.join("|"))
        }
        other => (other as char).to_string(),
    }
}

struct Raw {
    conn: RawConn,
    id: String,
    seq: u64,
    /// The version of the text behind "soak_stmt" (every raw client uses that name for its own text).
    version: u32,
}

fn shared_statement_text(id: &str, version: u32) -> String {
    format!("select $1::text || ' ' || '{id}' || ' v{version}'")
}

impl Raw {
    fn tag(&mut self) -> String {
        self.seq += 1;
        format!("{}:{}", self.id, self.seq)
    }

    /// Reads replies (notices and parameter changes aside) through the `n`-th message tagged `stop`.
    async fn read_through(&mut self, stop: u8, n: usize) -> Result<Vec<String>, Problem> {
        let mut out = Vec::new();
        let mut seen = 0;
        while seen < n {
            match self.conn.read_message(OP_TIMEOUT).await {
                Some((b'N' | b'S', _)) => {}
                Some((tag, body)) => {
                    seen += usize::from(tag == stop);
                    out.push(reply(tag, &body));
                }
                None => return Err(Problem::Failure(format!("{}: EOF or no reply; so far {out:?}", self.id))),
            }
        }
        Ok(out)
    }

    async fn exchange(&mut self, what: &str, msgs: &[Vec<u8>], want: &[String]) -> Result<(), Problem> {
        self.conn.send(&msgs.concat()).await;
        let syncs = want.iter().filter(|r| r.starts_with('Z')).count();
        let got = self.read_through(b'Z', syncs).await?;
        expect_eq(&self.id, what, got.as_slice(), want)
    }

    async fn open(port: u16, idx: usize) -> Result<Raw, Problem> {
        let id = format!("r{idx}-{:08x}", rand::random::<u32>());
        let mut conn = RawConn::connect(port).await;
        conn.send(&RawConn::startup_packet(USER, "app", &[("application_name", &id)])).await;
        let mut raw = Raw { conn, id, seq: 0, version: 0 };
        let login = raw.read_through(b'Z', 1).await?;
        if login.iter().any(|r| r.starts_with('E')) {
            return Err(Problem::Failure(format!("{}: login: {login:?}", raw.id)));
        }
        let text = shared_statement_text(&raw.id, raw.version);
        raw.exchange("define soak_stmt", &[parse("soak_stmt", &text), sync()], &w(&["1", "Z I"])).await?;
        Ok(raw)
    }

    fn expected_shared(&self, tag: &str) -> String {
        format!("D {tag} {} v{}", self.id, self.version)
    }
}

fn w(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

async fn raw_prepared(r: &mut Raw) -> OpResult {
    if rand::random_bool(0.15) {
        // Redefine it: Close, Parse, and use it in the same batch.
        r.version += 1;
        let tag = r.tag();
        let text = shared_statement_text(&r.id, r.version);
        let msgs = [
            close(b'S', "soak_stmt"),
            parse("soak_stmt", &text),
            bind("", "soak_stmt", &[Some(tag.as_bytes())]),
            execute("", 0),
            sync(),
        ];
        let want = w(&["3", "1", "2", &r.expected_shared(&tag), "C SELECT 1", "Z I"]);
        return r.exchange("redefined soak_stmt", &msgs, &want).await.map(|_| After::Continue);
    }
    let tag = r.tag();
    let msgs = [bind("", "soak_stmt", &[Some(tag.as_bytes())]), execute("", 0), sync()];
    let want = w(&["2", &r.expected_shared(&tag), "C SELECT 1", "Z I"]);
    r.exchange("soak_stmt", &msgs, &want).await?;
    Ok(After::Continue)
}

async fn raw_pipeline(r: &mut Raw) -> OpResult {
    let t: Vec<String> = (0..5).map(|_| r.tag()).collect();
    let msgs = [
        query(&format!("select '{}'", t[0])),
        query(&format!("select '{}'; select '{}'", t[1], t[2])),
        parse("", &format!("select '{}'", t[3])),
        bind("", "", &[]),
        execute("", 0),
        bind("", "soak_stmt", &[Some(t[4].as_bytes())]),
        execute("", 0),
        sync(),
    ];
    let want = w(&[
        "T",
        &format!("D {}", t[0]),
        "C SELECT 1",
        "Z I",
        "T",
        &format!("D {}", t[1]),
        "C SELECT 1",
        "T",
        &format!("D {}", t[2]),
        "C SELECT 1",
        "Z I",
        "1",
        "2",
        &format!("D {}", t[3]),
        "C SELECT 1",
        "2",
        &r.expected_shared(&t[4]),
        "C SELECT 1",
        "Z I",
    ]);
    r.exchange("pipeline", &msgs, &want).await?;
    Ok(After::Continue)
}

async fn raw_flush(r: &mut Raw) -> OpResult {
    let tag = r.tag();
    let msgs = [bind("", "soak_stmt", &[Some(tag.as_bytes())]), execute("", 0), flush()];
    r.conn.send(&msgs.concat()).await;
    let got = r.read_through(b'C', 1).await?;
    expect_eq(&r.id, "flushed", got, w(&["2", &r.expected_shared(&tag), "C SELECT 1"]))?;
    r.exchange("sync after flush", &[sync()], &w(&["Z I"])).await?;
    Ok(After::Continue)
}

async fn raw_error_pipeline(r: &mut Raw) -> OpResult {
    let t: Vec<String> = (0..2).map(|_| r.tag()).collect();
    // The error skips the rest of its batch: the shared statement's Bind and Execute, and the Parse
    // pgsluice adds for it where this server lacks it. The next batch goes in the same write: it must
    // still find the statement (see `pipelined_batch_after_an_error_*` below).
    let msgs = [
        parse("", "select 1/(random() * 0)::int4"),
        bind("", "", &[]),
        execute("", 0),
        bind("", "soak_stmt", &[Some(t[0].as_bytes())]),
        execute("", 0),
        sync(),
        bind("", "soak_stmt", &[Some(t[1].as_bytes())]),
        execute("", 0),
        sync(),
    ];
    let shared = r.expected_shared(&t[1]);
    let want = w(&["1", "2", "E 22012", "Z I", "2", &shared, "C SELECT 1", "Z I"]);
    r.exchange("error mid-pipeline, then the next batch", &msgs, &want).await?;
    Ok(After::Continue)
}

async fn raw_copy_fail(r: &mut Raw) -> OpResult {
    let tag = r.tag();
    let owner = format!("{tag}{VOID}copy-fail");
    let in_tx = rand::random_bool(0.5);
    if in_tx {
        r.exchange("begin", &[query("begin")], &w(&["C BEGIN", "Z T"])).await?;
    }
    r.conn.send(&query("copy soak_rows(owner, seq) from stdin")).await;
    let got = r.read_through(b'G', 1).await?;
    expect_eq(&r.id, "copy in response", got, w(&["G"]))?;
    let msgs = [copy_data(format!("{owner}\t1\n").as_bytes()), copy_fail("soak says no")];
    r.exchange("copy fail", &msgs, &w(&["E 57014", if in_tx { "Z E" } else { "Z I" }])).await?;
    if in_tx {
        r.exchange("rollback", &[query("rollback")], &w(&["C ROLLBACK", "Z I"])).await?;
    }
    let sql = format!("select count(*) from soak_rows where owner = '{owner}'");
    r.exchange("count after copy fail", &[query(&sql)], &w(&["T", "D 0", "C SELECT 1", "Z I"])).await?;
    Ok(After::Continue)
}

/// Vanishes: inside a transaction with half a message sent, after Parse and Bind without Sync, or
/// in the middle of COPY FROM STDIN.
async fn raw_drop(r: Raw) -> OpResult {
    let mut r = r;
    let tag = r.tag();
    let owner = format!("{tag}{VOID}raw-abandoned");
    match rand::random_range(0..3) {
        0 => {
            r.exchange("begin", &[query("begin")], &w(&["C BEGIN", "Z T"])).await?;
            let sql = format!("insert into soak_rows(owner, seq) values ('{owner}', 0)");
            r.exchange("insert", &[query(&sql)], &w(&["C INSERT 0 1", "Z T"])).await?;
            let half = query("select 'never finished'");
            r.conn.send(&half[..half.len() / 2]).await;
        }
        1 => {
            let sql = format!("insert into soak_rows(owner, seq) values ('{owner}', 1)");
            r.conn.send(&[query("begin"), parse("", &sql), bind("", "", &[])].concat()).await;
            let got = r.read_through(b'Z', 1).await?;
            expect_eq(&r.id, "begin", got, w(&["C BEGIN", "Z T"]))?;
        }
        _ => {
            r.conn.send(&query("copy soak_rows(owner, seq) from stdin")).await;
            let got = r.read_through(b'G', 1).await?;
            expect_eq(&r.id, "copy in response", got, w(&["G"]))?;
            let row = copy_data(format!("{owner}\t2\n").as_bytes());
            r.conn.send(&[row.clone(), row[..3].to_vec()].concat()).await;
        }
    }
    drop(r);
    Ok(After::Gone)
}

async fn raw_op(kind: Kind, r: Raw) -> (Option<Raw>, OpResult) {
    let mut r = r;
    let result = match kind {
        Kind::RawPrepared => raw_prepared(&mut r).await,
        Kind::RawPipeline => raw_pipeline(&mut r).await,
        Kind::RawFlush => raw_flush(&mut r).await,
        Kind::RawErrorPipeline => raw_error_pipeline(&mut r).await,
        Kind::RawCopyFail => raw_copy_fail(&mut r).await,
        Kind::RawDrop => return (None, raw_drop(r).await),
        other => unreachable!("{other:?} is a driver operation"),
    };
    (Some(r), result)
}

async fn raw_client(idx: usize, port: u16, until: Instant, report: Arc<Report>) {
    while Instant::now() < until {
        let r = match tokio::time::timeout(OP_TIMEOUT, Raw::open(port, idx)).await {
            Ok(Ok(r)) => r,
            Ok(Err(p)) => {
                report.problem(Kind::Session, p);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(_) => {
                report.problem(Kind::Session, Problem::Failure(format!("r{idx}: login hung")));
                continue;
            }
        };
        report.done(Kind::Session);
        let mut conn = Some(r);
        for _ in 0..rand::random_range(10..120) {
            if Instant::now() >= until {
                break;
            }
            let Some(r) = conn.take() else { break };
            let kind = pick(&RAW_MIX);
            let id = r.id.clone();
            match tokio::time::timeout(OP_TIMEOUT, raw_op(kind, r)).await {
                Ok((back, Ok(after))) => {
                    report.done(kind);
                    if let After::Continue = after {
                        conn = back;
                    }
                }
                Ok((_, Err(p))) => report.problem(kind, p),
                Err(_) => report.problem(kind, Problem::Failure(format!("{id}: no answer within {OP_TIMEOUT:?}"))),
            }
            pace().await;
        }
        if let Some(mut r) = conn {
            r.conn.send(&common::wire::fe::msg(b'X', &[])).await;
            let _ = r.conn.wait_closed(OP_TIMEOUT).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// pgsluice's resources and the pool's state

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).expect("proc fd").count()
}

/// The soak pool's line of SHOW POOLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Pools {
    cl_active: u64,
    cl_waiting: u64,
    sv_active: u64,
    /// Every server connection pgsluice holds for the pool, whatever its state.
    servers: u64,
}

impl Pools {
    fn quiet(&self) -> bool {
        self.cl_active == 0 && self.cl_waiting == 0 && self.sv_active == 0
    }
}

async fn pool_state(console: &Client) -> Pools {
    let (cols, rows) = show(console, "show pools").await;
    let row = rows.iter().find(|r| value(&cols, r, "database") == "app" && value(&cols, r, "user") == USER);
    let n = |name: &str| row.map(|r| value(&cols, r, name).parse().unwrap_or(u64::MAX)).unwrap_or(0);
    Pools {
        cl_active: n("cl_active"),
        cl_waiting: n("cl_waiting"),
        sv_active: n("sv_active"),
        servers: ["sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"].iter().map(|c| n(c)).sum(),
    }
}

async fn backends(admin: &Client) -> i64 {
    admin
        .query_one(
            "select count(*) from pg_stat_activity where usename = $1 and backend_type = 'client backend'",
            &[&USER],
        )
        .await
        .unwrap()
        .get(0)
}

/// What the pool user's backends are doing: (state, query, seconds since the state changed).
async fn backend_states(admin: &Client) -> Vec<(String, String, f64)> {
    admin
        .query(
            "select coalesce(state, ''), left(query, 40), coalesce(extract(epoch from now() - state_change)::float8, -1)
             from pg_stat_activity where usename = $1 and backend_type = 'client backend'",
            &[&USER],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    secs: u64,
    rss_kib: u64,
    fds: usize,
    backends: i64,
    pools: Pools,
}

/// Polls `cond` every 20 ms until it holds or `deadline` passes; whether it held.
async fn eventually<F, Fut>(deadline: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn soak_secs() -> u64 {
    std::env::var("PGSLUICE_SOAK_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(60)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_without_cross_talk_or_leaks() {
    let secs = soak_secs();
    let pg = TestPg::start().await;
    let admin = pg.admin_client().await;
    admin
        .batch_execute(
            "create table soak_rows(owner text not null, seq int not null);
             create index on soak_rows(owner);
             create table soak_uniq(k text primary key);
             grant all on soak_rows, soak_uniq to public",
        )
        .await
        .unwrap();
    let px = Proxy::builder(&pg)
        .auth_type("trust")
        .pool_size(POOL_SIZE)
        .max_client_conn(1000)
        .general("max_prepared_statements", &MAX_PREPARED.to_string())
        .general("admin_users", &format!("{USER:?}"))
        .general("log_connections", "false")
        .general("log_disconnections", "false")
        .start()
        .await;
    let pid = px.pid();
    let console = px.client(USER, "", "pgbouncer").await;

    // Warm-up: open the whole pool, then let every client go; the idle baseline is taken after.
    let mut warm = Vec::new();
    for i in 0..POOL_SIZE {
        let port = px.port();
        warm.push(tokio::spawn(async move {
            let c = Conn::open(port, 1000 + i).await.unwrap_or_else(|_| panic!("warm-up client {i}"));
            c.client.batch_execute("begin; select pg_sleep(0.3); commit").await.unwrap();
            c.close().await;
        }));
    }
    for t in warm {
        t.await.unwrap();
    }
    wait_for(Duration::from_secs(30), "the pool is quiet after warm-up", || async {
        pool_state(&console).await.quiet()
    })
    .await;
    let idle_fds = fd_count(pid);
    let idle_rss = rss_kib(pid);
    eprintln!(
        "soak: {secs} s, {DRIVER_CLIENTS} driver + {RAW_CLIENTS} raw clients, pool_size {POOL_SIZE}, \
         max_prepared_statements {MAX_PREPARED}; idle after warm-up: {idle_fds} fds, {} KiB RSS, {} backends",
        idle_rss,
        backends(&admin).await
    );

    let report = Arc::new(Report::default());
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let mut clients = Vec::new();
    for idx in 0..DRIVER_CLIENTS {
        clients.push(tokio::spawn(driver_client(idx, px.port(), until, report.clone())));
    }
    for idx in 0..RAW_CLIENTS {
        clients.push(tokio::spawn(raw_client(idx, px.port(), until, report.clone())));
    }

    // Watch pgsluice and PostgreSQL while the clients run.
    let warmup = Duration::from_secs((secs / 6).clamp(5, 30));
    let mut samples: Vec<Sample> = Vec::new();
    let mut loaded: Option<Sample> = None;
    let mut max_backends = 0;
    let mut max_servers = 0;
    let mut extra_backends = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while Instant::now() < until {
        tick.tick().await;
        let b = backends(&admin).await;
        let pools = pool_state(&console).await;
        max_backends = max_backends.max(b);
        max_servers = max_servers.max(pools.servers);
        if b > POOL_SIZE as i64 && extra_backends.len() < 3 {
            // PostgreSQL may still be finishing backends pgsluice closed (a killed client's query runs
            // until it next reads its socket): show what they are doing.
            extra_backends.push(backend_states(&admin).await);
        }
        let elapsed = started.elapsed();
        if samples.last().is_none_or(|s| elapsed.as_secs() >= s.secs + 5) {
            let s = Sample { secs: elapsed.as_secs(), rss_kib: rss_kib(pid), fds: fd_count(pid), backends: b, pools };
            eprintln!("soak: {s:?}");
            samples.push(s);
            if loaded.is_none() && elapsed >= warmup {
                loaded = Some(s);
            }
        }
    }
    for t in clients {
        if let Err(e) = tokio::time::timeout(Duration::from_secs(120), t).await.expect("clients finish") {
            report.problem(Kind::Session, Problem::Failure(format!("client task: {e}")));
        }
    }
    let elapsed = started.elapsed();

    // Every client is gone: the pool is quiet, PostgreSQL has at most the pool, descriptors are back.
    let quiet = eventually(Duration::from_secs(30), || async { pool_state(&console).await.quiet() }).await;
    eventually(Duration::from_secs(30), || async { backends(&admin).await <= POOL_SIZE as i64 }).await;
    let fd_margin = 2;
    eventually(Duration::from_secs(30), || async { fd_count(pid) <= idle_fds + fd_margin }).await;
    let end = Sample {
        secs: elapsed.as_secs(),
        rss_kib: rss_kib(pid),
        fds: fd_count(pid),
        backends: backends(&admin).await,
        pools: pool_state(&console).await,
    };
    let loaded = loaded.or(samples.last().copied()).unwrap_or(end);

    // What was committed by mistake: rows of abandoned or rolled-back transactions, or rows left behind.
    let leftovers: Vec<String> = admin
        .query("select owner from soak_rows union all select k from soak_uniq limit 10", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for owner in &leftovers {
        let what = if owner.contains(VOID) { "committed although abandoned or rolled back" } else { "left behind" };
        report.problem(Kind::Session, Problem::Mismatch(format!("row {owner:?} {what}")));
    }

    let total: u64 = report.ops.iter().map(|n| n.load(Ordering::Relaxed)).sum();
    eprintln!("soak: {total} operations in {elapsed:.1?}:");
    for kind in KINDS {
        eprintln!("soak:   {:<18} {}", format!("{kind:?}"), report.ops[kind as usize].load(Ordering::Relaxed));
    }
    let mismatches = report.mismatches.load(Ordering::Relaxed);
    let failures = report.failures.load(Ordering::Relaxed);
    eprintln!(
        "soak: cancels: {} canceled, {} finished first; mismatches {mismatches}, failures {failures}",
        report.canceled.load(Ordering::Relaxed),
        report.cancel_missed.load(Ordering::Relaxed)
    );
    eprintln!(
        "soak: RSS KiB idle {idle_rss}, under load at {} s {}, peak {}, end {}",
        loaded.secs,
        loaded.rss_kib,
        samples.iter().map(|s| s.rss_kib).max().unwrap_or(0),
        end.rss_kib
    );
    eprintln!(
        "soak: fds idle {idle_fds}, under load at {} s {}, peak {}, end {}; backends max {max_backends}, end {}",
        loaded.secs,
        loaded.fds,
        samples.iter().map(|s| s.fds).max().unwrap_or(0),
        end.fds,
        end.backends
    );
    eprintln!("soak: RSS KiB series {:?}", samples.iter().map(|s| s.rss_kib).collect::<Vec<_>>());
    eprintln!("soak: fd series {:?}", samples.iter().map(|s| s.fds).collect::<Vec<_>>());
    eprintln!("soak: cl_waiting series {:?}", samples.iter().map(|s| s.pools.cl_waiting).collect::<Vec<_>>());
    eprintln!("soak: server connections held by pgsluice: max {max_servers} (pool_size {POOL_SIZE})");
    for states in &extra_backends {
        eprintln!("soak: PostgreSQL saw more backends than pool_size: {states:?}");
    }

    let first = report.first.lock().unwrap().clone();
    assert!(
        mismatches == 0 && failures == 0,
        "{mismatches} mismatches, {failures} failures; first:\n{}",
        first.join("\n")
    );
    for kind in KINDS {
        assert!(report.ops[kind as usize].load(Ordering::Relaxed) > 0, "no {kind:?} operation completed");
    }
    let rss_bound = (loaded.rss_kib + 20 * 1024).max(loaded.rss_kib * 3 / 2);
    assert!(
        end.rss_kib <= rss_bound,
        "RSS grew from {} KiB (under load at {} s) to {} KiB at the end",
        loaded.rss_kib,
        loaded.secs,
        end.rss_kib
    );
    assert!(end.fds <= idle_fds + fd_margin, "{} descriptors open at the end, {idle_fds} idle before", end.fds);
    assert!(quiet, "SHOW POOLS at the end: {:?}", end.pools);
    assert!(max_servers <= POOL_SIZE as u64, "pgsluice held {max_servers} server connections");
    assert!(end.backends <= POOL_SIZE as i64, "{} backends at the end", end.backends);
}

// ---------------------------------------------------------------------------------------------------
// What the soak found

/// Reads replies through the `syncs`-th ReadyForQuery, reduced as the soak reduces them.
async fn replies(c: &mut RawConn, syncs: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.iter().filter(|r: &&String| r.starts_with('Z')).count() < syncs {
        match c.read_message(OP_TIMEOUT).await {
            Some((b'N' | b'S', _)) => {}
            Some((tag, body)) => out.push(reply(tag, &body)),
            None => panic!("no ReadyForQuery; so far {out:?}"),
        }
    }
    out
}

async fn repro_login(port: u16) -> RawConn {
    let mut c = RawConn::connect(port).await;
    c.send(&RawConn::startup_packet(USER, "app", &[])).await;
    c.read_until_ready().await;
    c
}

/// Bug: a batch pipelined after one that fails loses the statement pgsluice prepared for it in the failed
/// batch. pgsluice adds a Parse where the server lacks the client's statement and records it in the
/// server's cache at once (`write_parse`); the next batch, sent before the first one's replies are in,
/// is rewritten from that cache and gets no Parse of its own. The server skips the first Parse after the
/// error, pgsluice takes it back from the cache when the replies arrive (`apply_to`), but the second
/// batch's Bind has gone out already: 26000, prepared statement does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_batch_after_an_error_finds_its_statement() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").pool_size(1).general("max_prepared_statements", "1").start().await;
    let mut a = repro_login(px.port()).await;
    let mut b = repro_login(px.port()).await;
    a.send(&[parse("s", "select 'a'"), sync()].concat()).await;
    assert_eq!(replies(&mut a, 1).await, ["1", "Z I"]);
    // B's statement evicts A's from the only server.
    b.send(&[parse("s", "select 'b'"), sync()].concat()).await;
    assert_eq!(replies(&mut b, 1).await, ["1", "Z I"]);
    let error = [parse("", "select 1/(random() * 0)::int4"), bind("", "", &[]), execute("", 0)].concat();
    let use_s = [bind("", "s", &[]), execute("", 0), sync()].concat();
    a.send(&[error, use_s.clone(), use_s].concat()).await;
    assert_eq!(replies(&mut a, 2).await, ["1", "2", "E 22012", "Z I", "2", "D a", "C SELECT 1", "Z I"]);
}

/// The same bug with an eviction: the Close pgsluice adds to evict a statement is skipped after the
/// error, so the server still has it, but a batch pipelined behind it is rewritten from a cache that
/// says it is gone, and pgsluice's Parse of it fails: 42P05, prepared statement already exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_batch_after_an_error_keeps_an_evicted_statement_usable() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").pool_size(1).general("max_prepared_statements", "1").start().await;
    let mut a = repro_login(px.port()).await;
    a.send(&[parse("s1", "select 'one'"), parse("s2", "select 'two'"), sync()].concat()).await;
    assert_eq!(replies(&mut a, 1).await, ["1", "1", "Z I"]);
    // The server now holds s2 only. The failing batch's Bind of s1 evicts s2 and prepares s1, both
    // skipped; the next batch's Bind of s2 then has pgsluice prepare s2 again.
    let error = [parse("", "select 1/(random() * 0)::int4"), bind("", "", &[]), execute("", 0)].concat();
    let use_s1 = [bind("", "s1", &[]), execute("", 0), sync()].concat();
    let use_s2 = [bind("", "s2", &[]), execute("", 0), sync()].concat();
    a.send(&[error, use_s1, use_s2].concat()).await;
    assert_eq!(replies(&mut a, 2).await, ["1", "2", "E 22012", "Z I", "2", "D two", "C SELECT 1", "Z I"]);
}
