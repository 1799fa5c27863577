//! Client authentication (trust, md5, SCRAM; wrong password and unknown user look the same) and the
//! client caps (max_client_conn, per-user and per-database) answered with 53300.

mod common;

use common::{Proxy, TestPg};
use tokio_postgres::error::SqlState;

fn code(e: &tokio_postgres::Error) -> Option<SqlState> {
    e.as_db_error().map(|d| d.code().clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_md5_and_trust_logins_work() {
    let pg = TestPg::start().await;
    for auth_type in ["scram-sha-256", "md5"] {
        let px = Proxy::builder(&pg).auth_type(auth_type).start().await;
        for (user, pw) in [("scram_user", "scram_pw"), ("md5_user", "md5_pw")] {
            let c = px.try_client(user, pw, "app").await.unwrap_or_else(|e| panic!("{auth_type} {user}: {e}"));
            let who = common::scalar(&c, "select current_user").await;
            assert_eq!(who, user);
        }
    }
    let px = Proxy::builder(&pg).auth_type("trust").start().await;
    let c = px.try_client("trust_user", "", "app").await.expect("trust login");
    c.simple_query("select 1").await.unwrap();
    // trust asks no password, but only of users the auth file knows (as PgBouncer); `any` of anyone.
    let e = px.try_client("nobody", "", "app").await.expect_err("unknown user under trust");
    assert_eq!(code(&e), Some(SqlState::INVALID_AUTHORIZATION_SPECIFICATION), "{e}");
    assert_eq!(e.as_db_error().unwrap().message(), "\"trust\" authentication failed");
    assert!(px.log_contents().contains("closing because: \"trust\" authentication failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_get_the_same_28p01() {
    let pg = TestPg::start().await;
    for auth_type in ["scram-sha-256", "md5", "plain"] {
        let px = Proxy::builder(&pg).auth_type(auth_type).start().await;
        let wrong = px.try_client("scram_user", "nope", "app").await.expect_err("wrong password refused");
        let unknown = px.try_client("nobody", "nope", "app").await.expect_err("unknown user refused");
        assert_eq!(code(&wrong), Some(SqlState::INVALID_PASSWORD), "{auth_type}: {wrong}");
        assert_eq!(code(&unknown), Some(SqlState::INVALID_PASSWORD), "{auth_type}: {unknown}");
        let strip = |e: &tokio_postgres::Error, u: &str| e.as_db_error().unwrap().message().replace(u, "USER");
        assert_eq!(strip(&wrong, "scram_user"), strip(&unknown, "nobody"), "{auth_type}: same text");
        // Unknown database with a wrong password is still 28P01 (no pre-auth enumeration).
        let e = px.try_client("scram_user", "nope", "nosuchdb").await.err().unwrap();
        assert_eq!(code(&e), Some(SqlState::INVALID_PASSWORD));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_database_after_auth_is_3d000() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).no_fallback_database().start().await;
    let e = px.try_client("scram_user", "scram_pw", "nosuchdb").await.err().unwrap();
    assert_eq!(code(&e), Some(SqlState::INVALID_CATALOG_NAME), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_client_conn_gives_53300_and_frees_on_disconnect() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).max_client_conn(3).start().await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(px.client("scram_user", "scram_pw", "app").await);
    }
    for _ in 0..2 {
        let e = px.try_client("scram_user", "scram_pw", "app").await.expect_err("4th client refused");
        assert_eq!(code(&e), Some(SqlState::TOO_MANY_CONNECTIONS), "{e}");
    }
    drop(held.pop());
    common::wait_for(std::time::Duration::from_secs(5), "a slot frees after a disconnect", || async {
        px.try_client("scram_user", "scram_pw", "app").await.is_ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logins_racing_for_the_last_places_never_exceed_max_client_conn() {
    let pg = TestPg::start().await;
    let px = std::sync::Arc::new(Proxy::builder(&pg).max_client_conn(4).start().await);
    // 24 logins at once: each is checked before it authenticates, and only counted atomically before
    // its welcome can more than 4 be told they are in.
    let tries: Vec<_> = (0..24)
        .map(|_| {
            let px = px.clone();
            tokio::spawn(async move { px.try_client("scram_user", "scram_pw", "app").await })
        })
        .collect();
    let mut held = Vec::new();
    for t in tries {
        match t.await.unwrap() {
            Ok(c) => held.push(c),
            Err(e) => assert_eq!(code(&e), Some(SqlState::TOO_MANY_CONNECTIONS), "{e}"),
        }
    }
    assert!((1..=4).contains(&held.len()), "{} clients got in past max_client_conn = 4", held.len());
    // Every one let in can work (none was told it is in and then dropped).
    for c in &held {
        c.simple_query("select 1").await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_and_per_db_client_caps_give_53300() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg)
        .general("max_user_client_connections", "2")
        .general("max_db_client_connections", "3")
        .start()
        .await;
    let a1 = px.client("scram_user", "scram_pw", "app").await;
    let _a2 = px.client("scram_user", "scram_pw", "app").await;
    let e = px.try_client("scram_user", "scram_pw", "app").await.err().unwrap();
    assert_eq!(code(&e), Some(SqlState::TOO_MANY_CONNECTIONS), "per-user cap: {e}");
    let _b1 = px.client("md5_user", "md5_pw", "app").await;
    let e = px.try_client("md5_user", "md5_pw", "app").await.err().unwrap();
    assert_eq!(code(&e), Some(SqlState::TOO_MANY_CONNECTIONS), "per-db cap: {e}");
    // Failed logins are not counted, and a disconnect frees the slot.
    let _ = px.try_client("scram_user", "wrong", "app").await;
    drop(a1);
    common::wait_for(std::time::Duration::from_secs(5), "user slot freed", || async {
        px.try_client("scram_user", "scram_pw", "app").await.is_ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_login_failure_reaches_the_client_fast() {
    let pg = TestPg::start().await;
    // The auth file has the wrong password for md5_user as the server sees it: the client logs in to
    // pgsluice (trust) but the server refuses pgsluice.
    let px = Proxy::builder(&pg).auth_type("trust").userlist(&[("md5_user", "not-the-server-password")]).start().await;
    let started = std::time::Instant::now();
    let e = px.try_client("md5_user", "", "app").await.expect_err("server refuses the login");
    assert_eq!(code(&e), Some(SqlState::INVALID_PASSWORD), "{e}");
    let e = px.try_client("md5_user", "", "app").await.expect_err("still refused, from server_login_retry");
    assert_eq!(code(&e), Some(SqlState::INVALID_PASSWORD), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

/// The secrets PostgreSQL itself stores for the test roles (md5_user: md5, scram_user: SCRAM-SHA-256).
async fn stored_secrets(pg: &TestPg) -> (String, String) {
    let admin = pg.admin_client().await;
    let secret = |user: &'static str| {
        let admin = &admin;
        async move {
            let row = admin.query_one("select rolpassword from pg_authid where rolname = $1", &[&user]).await.unwrap();
            row.get::<_, String>(0)
        }
    };
    let md5 = secret("md5_user").await;
    let scram = secret("scram_user").await;
    assert!(md5.starts_with("md5") && md5.len() == 35, "md5 secret: {md5}");
    assert!(scram.starts_with("SCRAM-SHA-256$4096:"), "SCRAM verifier: {scram}");
    (md5, scram)
}

/// No plain password in the config or the auth file pgsluice runs with.
fn assert_no_plain_passwords(px: &Proxy) {
    let config = std::fs::read_to_string(&px.config).unwrap();
    let userlist = std::fs::read_to_string(px.config.with_file_name("userlist.txt")).unwrap();
    for text in [&config, &userlist] {
        for pw in ["md5_pw", "scram_pw"] {
            assert!(!text.contains(pw), "plain password {pw} found in:\n{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashed_secrets_log_in_on_both_sides() {
    let pg = TestPg::start().await;
    let (md5, scram) = stored_secrets(&pg).await;
    for auth_type in ["md5", "scram-sha-256"] {
        let px = Proxy::builder(&pg)
            .auth_type(auth_type)
            .userlist(&[("md5_user", &md5), ("scram_user", &scram)])
            .pool_size(2)
            .start()
            .await;
        assert_no_plain_passwords(&px);
        // md5_user: the client proves the password against the md5 hash, and pgsluice answers PostgreSQL's
        // md5 challenge (pg_hba: md5) with the same hash. scram_user: the client's SCRAM exchange gives
        // pgsluice the ClientKey it needs for PostgreSQL's SCRAM challenge (pg_hba: scram-sha-256).
        let users: &[(&str, &str)] = match auth_type {
            "md5" => &[("md5_user", "md5_pw"), ("scram_user", "scram_pw")],
            // An md5 secret cannot answer SCRAM: refused like a wrong password, never downgraded to md5.
            _ => &[("scram_user", "scram_pw")],
        };
        if auth_type == "scram-sha-256" {
            let e = px.try_client("md5_user", "md5_pw", "app").await.expect_err("no downgrade to md5");
            assert_eq!(code(&e), Some(SqlState::INVALID_PASSWORD), "{e}");
        }
        for &(user, pw) in users {
            let c = px.try_client(user, pw, "app").await.unwrap_or_else(|e| {
                panic!("{auth_type} {user}: {e}\n{}", px.log_contents());
            });
            assert_eq!(common::scalar(&c, "select current_user").await, user, "{auth_type}");
            // A second server for the pool is opened with the same stored secret / learned keys.
            let c2 = px.client(user, pw, "app").await;
            c.batch_execute("begin; select 1").await.unwrap();
            assert_eq!(common::scalar(&c2, "select current_user").await, user);
            c.batch_execute("commit").await.unwrap();
            let wrong = px.try_client(user, "not-it", "app").await.expect_err("wrong password refused");
            assert_eq!(code(&wrong), Some(SqlState::INVALID_PASSWORD), "{auth_type} {user}: {wrong}");
        }
        assert_eq!(pg.backends_for("scram_user").await, 2, "{auth_type}: two SCRAM logins to PostgreSQL");
        let md5_logins = if auth_type == "md5" { 2 } else { 0 };
        assert_eq!(pg.backends_for("md5_user").await, md5_logins, "{auth_type}: md5 logins to PostgreSQL");
        drop(px);
        common::wait_for(std::time::Duration::from_secs(10), "the servers of the stopped pgsluice gone", || async {
            pg.backends_for("scram_user").await + pg.backends_for("md5_user").await == 0
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_server_user_from_the_database_entry() {
    let pg = TestPg::start().await;
    let (md5, scram) = stored_secrets(&pg).await;
    let px = Proxy::builder(&pg)
        .auth_type("md5")
        .userlist(&[("md5_user", &md5), ("scram_user", &scram)])
        // Forced user with its password in the entry.
        .database("as_scram", "dbname = \"app\", user = \"scram_user\", password = \"scram_pw\"")
        // Forced user without a password: its md5 secret from the auth file logs in.
        .database("as_md5", "dbname = \"app\", user = \"md5_user\"")
        .start()
        .await;
    let c = px.client("md5_user", "md5_pw", "as_scram").await;
    assert_eq!(common::scalar(&c, "select current_user").await, "scram_user");
    assert_eq!(common::scalar(&c, "select current_database()").await, "app");
    let c = px.client("scram_user", "scram_pw", "as_md5").await;
    assert_eq!(common::scalar(&c, "select current_user").await, "md5_user");
    // The client still has to prove its own password.
    let e = px.try_client("md5_user", "scram_pw", "as_scram").await.expect_err("client password checked");
    assert_eq!(code(&e), Some(SqlState::INVALID_PASSWORD), "{e}");
    let admin = pg.admin_client().await;
    let n: i64 = admin
        .query_one(
            "select count(*) from pg_stat_activity where datname = 'app' and usename in ('scram_user', 'md5_user')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "one server per forced user");
}

/// The salt and iteration count of the server-first-message pgsluice sends `user`, read off the wire.
async fn scram_salt(port: u16, user: &str) -> (String, String) {
    use common::wire::{RawConn, fe};
    let within = std::time::Duration::from_secs(10);
    let mut c = RawConn::connect(port).await;
    c.send(&RawConn::startup_packet(user, "app", &[])).await;
    let (tag, body) = c.read_message(within).await.expect("an authentication request");
    assert_eq!((tag, &body[..4]), (b'R', &10u32.to_be_bytes()[..]), "{user}: AuthenticationSASL");
    assert!(body.windows(13).any(|w| w == b"SCRAM-SHA-256"), "{user}: SCRAM-SHA-256 offered");
    let client_first = b"n,,n=,r=rOprNGfwEbeRWgbNEkqO";
    let mut initial = b"SCRAM-SHA-256\0".to_vec();
    initial.extend_from_slice(&(client_first.len() as i32).to_be_bytes());
    initial.extend_from_slice(client_first);
    c.send(&fe::msg(b'p', &initial)).await;
    let (tag, body) = c.read_message(within).await.expect("a server-first-message");
    assert_eq!((tag, &body[..4]), (b'R', &11u32.to_be_bytes()[..]), "{user}: AuthenticationSASLContinue");
    let first = String::from_utf8(body[4..].to_vec()).unwrap();
    let attr = |k: &str| first.split(',').find_map(|p| p.strip_prefix(k)).map(str::to_string);
    (attr("s=").unwrap_or_else(|| panic!("no salt: {first}")), attr("i=").unwrap_or_else(|| panic!("{first}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_salts_do_not_tell_real_users_from_unknown_ones() {
    let pg = TestPg::start().await;
    let (_, scram) = stored_secrets(&pg).await;
    let px = Proxy::builder(&pg)
        .auth_type("scram-sha-256")
        .userlist(&[("scram_user", &scram), ("md5_user", "md5_pw")])
        .start()
        .await;
    // A real user's verifier shows its salt: the same on every attempt.
    let real = scram_salt(px.port(), "scram_user").await;
    assert_eq!(scram_salt(px.port(), "scram_user").await, real);
    let stored_salt = scram.split(['$', ':']).nth(2).unwrap();
    assert_eq!(real, (stored_salt.to_string(), "4096".to_string()), "the verifier's salt and iterations");
    // So does an unknown user, with a salt of its own and the same iteration count.
    let unknown = scram_salt(px.port(), "nobody").await;
    assert_eq!(scram_salt(px.port(), "nobody").await, unknown, "an unknown user's salt is stable too");
    assert_eq!(unknown.1, real.1);
    assert_ne!(unknown.0, real.0);
    assert_ne!(scram_salt(px.port(), "somebody").await.0, unknown.0, "each name its own salt");
    // And a user with a plain-text secret, who logs in with it (twice: the second from the kept keys).
    let plain = scram_salt(px.port(), "md5_user").await;
    assert_eq!(scram_salt(px.port(), "md5_user").await, plain);
    assert_eq!(plain.1, "4096");
    for _ in 0..2 {
        let c = px.client("md5_user", "md5_pw", "app").await;
        assert_eq!(common::scalar(&c, "select current_user").await, "md5_user");
    }
    // Wrong password and unknown user still end alike.
    let wrong = px.try_client("scram_user", "nope", "app").await.expect_err("wrong password refused");
    let unknown = px.try_client("nobody", "nope", "app").await.expect_err("unknown user refused");
    assert_eq!(code(&wrong), Some(SqlState::INVALID_PASSWORD), "{wrong}");
    assert_eq!(code(&unknown), Some(SqlState::INVALID_PASSWORD), "{unknown}");
    let strip = |e: &tokio_postgres::Error, u: &str| e.as_db_error().unwrap().message().replace(u, "USER");
    assert_eq!(strip(&wrong, "scram_user"), strip(&unknown, "nobody"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_entry_password_given_as_an_md5_hash_logs_in() {
    let pg = TestPg::start().await;
    let (md5, _) = stored_secrets(&pg).await;
    // md5_user is not in the auth file: only the entry's hash can log it in (pg_hba: md5).
    let px = Proxy::builder(&pg)
        .auth_type("scram-sha-256")
        .userlist(&[("scram_user", "scram_pw")])
        .database("as_md5", &format!("dbname = \"app\", user = \"md5_user\", password = {md5:?}"))
        .start()
        .await;
    let config = std::fs::read_to_string(&px.config).unwrap();
    assert!(!config.contains("md5_pw"), "{config}");
    let c = px.client("scram_user", "scram_pw", "as_md5").await;
    assert_eq!(common::scalar(&c, "select current_user").await, "md5_user");
}

/// A fake PostgreSQL that answers every login with SCRAM and a server-first-message asking for
/// `iterations`, then holds the connection open (so a proxy that obeyed would wait on it).
async fn greedy_scram_server(iterations: u64) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let reply = |code: u32, data: &[u8]| {
        let mut m = vec![b'R'];
        m.extend_from_slice(&((8 + data.len()) as u32).to_be_bytes());
        m.extend_from_slice(&code.to_be_bytes());
        m.extend_from_slice(data);
        m
    };
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                common::wire::read_startup_as_server(&mut s).await?;
                s.write_all(&reply(10, b"SCRAM-SHA-256\0\0")).await?;
                let mut head = [0u8; 5];
                s.read_exact(&mut head).await?;
                let mut body =
                    vec![0u8; (u32::from_be_bytes(head[1..].try_into().unwrap()) as usize).saturating_sub(4)];
                s.read_exact(&mut body).await?;
                let text = String::from_utf8_lossy(&body).into_owned();
                let nonce = text.rsplit_once("r=").map(|(_, n)| n.to_string()).unwrap_or_default();
                let first = format!("r={nonce}greedy,s=c2FsdHNhbHRzYWx0c2FsdA==,i={iterations}");
                s.write_all(&reply(11, first.as_bytes())).await?;
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).await?;
                Ok::<_, std::io::Error>(())
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_asking_for_too_many_scram_iterations_is_refused_with_08006() {
    let pg = TestPg::start().await;
    let greedy = greedy_scram_server(1_000_000).await;
    // scram_user logs in to the server with the plain-text password of the default auth file.
    let px = Proxy::builder(&pg).database("greedy", &format!("port = {greedy}, dbname = \"app\"")).start().await;
    let started = std::time::Instant::now();
    let e = px.try_client("scram_user", "scram_pw", "greedy").await.expect_err("the server is refused");
    assert_eq!(code(&e), Some(SqlState::CONNECTION_FAILURE), "{e}");
    let message = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
    assert!(message.contains("1000000") && message.contains("100000)"), "names the count and the cap: {message}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "refused before any work: {:?}", started.elapsed());
    // The real server still works for the same user (with PostgreSQL's 4096 iterations).
    let c = px.client("scram_user", "scram_pw", "app").await;
    assert_eq!(common::scalar(&c, "select current_user").await, "scram_user");
}

/// A SCRAM verifier for `password` with `iterations`, as an auth file holds it.
fn scram_verifier(password: &str, iterations: u32) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let salt = *b"pgsluice-test-salt";
    let k = pgsluice::auth::keys::Keys::derive(password.as_bytes(), &salt, iterations);
    let (salt, stored, server) = (b64.encode(salt), b64.encode(k.stored_key), b64.encode(k.server_key));
    format!("SCRAM-SHA-256${iterations}:{salt}${stored}:{server}")
}

/// auth_type = plain against a SCRAM verifier costs a full PBKDF2 per login. A burst of such logins
/// (here about 1.5 s of CPU each) must not stall the async threads: another client's queries stay
/// fast meanwhile. Derived inline, the two worker threads would each be busy for whole derivations,
/// and the other client's query would wait for one to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expensive_logins_in_flight_leave_other_clients_queries_fast() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};
    let pg = TestPg::start().await;
    // Calibrate on this machine, as loaded as it is now: iterations for about 1.5 s.
    let probe = 50_000u32;
    let t = Instant::now();
    pgsluice::auth::keys::Keys::derive(b"pw", b"salt", probe);
    let per_iteration = t.elapsed().as_nanos().max(1) / u128::from(probe);
    let iterations = u32::try_from((1_500_000_000 / per_iteration).clamp(probe.into(), 20_000_000)).unwrap();
    let t = Instant::now();
    let verifier = scram_verifier("heavy_pw", iterations);
    let derive_time = t.elapsed();
    let px = Proxy::builder(&pg)
        .auth_type("plain")
        .userlist(&[("heavy_user", &verifier), ("md5_user", "md5_pw")])
        .database("heavy", "dbname = \"app\", user = \"scram_user\", password = \"scram_pw\"")
        .start()
        .await;
    let other = px.client("md5_user", "md5_pw", "app").await;
    assert_eq!(common::scalar(&other, "select 1").await, "1");
    let done = AtomicBool::new(false);
    let logins = async {
        let started = Instant::now();
        let burst = (0..6).map(|_| px.try_client("heavy_user", "heavy_pw", "heavy"));
        let results = futures_util::future::join_all(burst).await;
        done.store(true, Ordering::SeqCst);
        (results, started.elapsed())
    };
    let queries = async {
        let (mut worst, mut n) = (Duration::ZERO, 0);
        while !done.load(Ordering::SeqCst) {
            let t = Instant::now();
            other.simple_query("select 1").await.unwrap();
            worst = worst.max(t.elapsed());
            n += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (worst, n)
    };
    let ((results, burst_time), (worst, n)) = tokio::join!(logins, queries);
    for r in results {
        let c = r.unwrap_or_else(|e| panic!("a plain login against the verifier: {e}\n{}", px.log_contents()));
        assert_eq!(common::scalar(&c, "select current_user").await, "scram_user");
    }
    assert!(burst_time >= derive_time, "the logins were not in flight long: {burst_time:?} < {derive_time:?}");
    assert!(n >= 5, "only {n} queries ran during the {burst_time:?} burst");
    assert!(
        worst < derive_time / 2,
        "a query took {worst:?} while logins derived keys ({derive_time:?} each, {iterations} iterations)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_of_65530_bytes_logs_in_and_a_longer_message_is_refused() {
    let pg = TestPg::start().await;
    let long = "p".repeat(65_530); // the longest PostgreSQL takes: 65,535 with the terminator and length
    pg.admin_client().await.batch_execute(&format!("create role longpass login password '{long}'")).await.unwrap();
    let px = Proxy::builder(&pg).auth_type("plain").userlist(&[("longpass", &long)]).start().await;
    let c = px.try_client("longpass", &long, "app").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(common::scalar(&c, "select current_user").await, "longpass");
    // One byte more is PostgreSQL's "invalid message length": 08P01, nothing allocated for it.
    let e = px.try_client("longpass", &format!("{long}p"), "app").await.expect_err("past the bound");
    assert_eq!(code(&e), Some(SqlState::PROTOCOL_VIOLATION), "{e}");
}
