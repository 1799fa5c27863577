//! The admin console: PgBouncer's SHOW commands with PgBouncer's columns, exact counters after a known
//! workload, and who may do what.

mod common;

use std::time::Duration;

use common::console::{ADMIN, STATS, code, proxy, show, value};
use common::{Proxy, TestPg};

/// What a console command answered, read off the wire: its columns (name, type oid, type length), its
/// rows (as text), and any notices (fields by code).
#[derive(Debug, Default)]
struct Answer {
    columns: Vec<(String, u32, i16)>,
    rows: Vec<Vec<Option<String>>>,
    notices: Vec<std::collections::HashMap<char, String>>,
}

async fn raw_show(c: &mut common::wire::RawConn, cmd: &str) -> Answer {
    use common::wire::{error_fields, query_message};
    c.send(&query_message(cmd)).await;
    let mut answer = Answer::default();
    loop {
        let (tag, body) = c.read_message(Duration::from_secs(10)).await.unwrap_or_else(|| panic!("{cmd}: no answer"));
        match tag {
            b'T' => {
                let mut rest = &body[2..];
                while !rest.is_empty() {
                    let end = rest.iter().position(|b| *b == 0).unwrap();
                    let name = String::from_utf8_lossy(&rest[..end]).into_owned();
                    let f = &rest[end + 1..];
                    let oid = u32::from_be_bytes(f[6..10].try_into().unwrap());
                    let len = i16::from_be_bytes(f[10..12].try_into().unwrap());
                    answer.columns.push((name, oid, len));
                    rest = &f[18..];
                }
            }
            b'D' => {
                let n = u16::from_be_bytes(body[..2].try_into().unwrap());
                let mut rest = &body[2..];
                let mut row = Vec::new();
                for _ in 0..n {
                    let len = i32::from_be_bytes(rest[..4].try_into().unwrap());
                    rest = &rest[4..];
                    if len < 0 {
                        row.push(None);
                    } else {
                        row.push(Some(String::from_utf8_lossy(&rest[..len as usize]).into_owned()));
                        rest = &rest[len as usize..];
                    }
                }
                answer.rows.push(row);
            }
            b'N' => answer.notices.push(error_fields(&body)),
            b'E' => panic!("{cmd}: {:?}", error_fields(&body)),
            b'Z' => return answer,
            _ => {}
        }
    }
}

/// PgBouncer's RowDescription type letters (pktbuf.c): s text, i int4, q int8, N numeric, T timestamp as text.
fn pgbouncer_types(letters: &str) -> Vec<(u32, i16)> {
    letters
        .chars()
        .map(|c| match c {
            's' | 'T' => (25, -1),
            'i' => (23, 4),
            'q' => (20, 8),
            'N' => (1700, -1),
            other => panic!("type letter {other}"),
        })
        .collect()
}

const FIGURES: &str = "server_assignment_count xact_count query_count received sent xact_time query_time wait_time \
                     client_parse_count server_parse_count bind_count client_login_count";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_commands_have_pgbouncer_columns() {
    use common::wire::RawConn;
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg)
        .auth_type("trust")
        .userlist(&[(ADMIN.0, ADMIN.1)])
        .general("admin_users", &format!("{:?}", ADMIN.0))
        .pool_size(2)
        .start()
        .await;
    let app = px.client(ADMIN.0, ADMIN.1, "app").await;
    app.simple_query("select 1").await.unwrap();
    let (mut console, _, _) = RawConn::login_with_key(px.port(), ADMIN.0, "pgbouncer").await;
    // PgBouncer 1.25's layouts (admin.c and stats.c: column names and RowDescription type letters), with
    // the client_login_count counter PgBouncer added after 1.25. SHOW CLIENTS has pgsluice's two columns
    // after PgBouncer's.
    let sockets = "type user database replication state addr port local_addr local_port connect_time \
                   request_time wait wait_us close_needed ptr link remote_pid tls application_name \
                   prepared_statements id";
    let stats_totals: Vec<String> = FIGURES.split(' ').map(|n| format!("total_{n}")).collect();
    let stats_avgs: Vec<String> =
        FIGURES.split(' ').map(|n| format!("avg_{}", if n == "received" { "recv" } else { n })).collect();
    let show_stats = format!("database {} {}", stats_totals.join(" "), stats_avgs.join(" "));
    let subset = |avg: bool| {
        let names: Vec<&str> = FIGURES
            .split(' ')
            .map(|n| match n {
                "received" => "bytes_received",
                "sent" => "bytes_sent",
                "client_parse_count" if avg => "avg_client_parse_count",
                "server_parse_count" if avg => "avg_server_parse_count",
                "bind_count" if avg => "avg_bind_count",
                n => n,
            })
            .collect();
        format!("database {}", names.join(" "))
    };
    let expect: Vec<(&str, String, String)> = vec![
        (
            "SHOW POOLS",
            "ssiiiiiiiiiiiiiss".into(),
            "database user cl_active cl_waiting cl_active_cancel_req cl_waiting_cancel_req sv_active \
             sv_active_cancel sv_being_canceled sv_idle sv_used sv_tested sv_login maxwait maxwait_us pool_mode \
             load_balance_hosts"
                .into(),
        ),
        ("SHOW STATS", format!("s{}", "N".repeat(24)), show_stats),
        ("SHOW STATS_TOTALS", format!("s{}", "N".repeat(12)), subset(false)),
        ("SHOW STATS_AVERAGES", format!("s{}", "N".repeat(12)), subset(true)),
        ("SHOW TOTALS", "sN".into(), "name value".into()),
        ("SHOW LISTS", "si".into(), "list items".into()),
        (
            "SHOW DATABASES",
            "ssissiiiissiiiiii".into(),
            "name host port database force_user pool_size min_pool_size reserve_pool_size server_lifetime pool_mode \
             load_balance_hosts max_connections current_connections max_client_connections \
             current_client_connections paused disabled"
                .into(),
        ),
        (
            "SHOW USERS",
            "ssssiiii".into(),
            "name pool_size reserve_pool_size pool_mode max_user_connections current_connections \
             max_user_client_connections current_client_connections"
                .into(),
        ),
        ("SHOW CLIENTS", "ssssssisiTTiiississiiqqs".into(), format!("{sockets} xact_us idle_in_xact_us pinned")),
        ("SHOW SERVERS", "ssssssisiTTiiississiiqq".into(), format!("{sockets} xact_us idle_in_xact_us")),
        ("SHOW CONFIG", "ssss".into(), "key value default changeable".into()),
        ("SHOW STATE", "ss".into(), "key value".into()),
        ("SHOW VERSION", "s".into(), "version".into()),
        ("SHOW PEERS", "isii".into(), "peer_id host port pool_size".into()),
        (
            "SHOW PEER_POOLS",
            "iiiii".into(),
            "peer_id cl_active_cancel_req cl_waiting_cancel_req sv_active_cancel sv_login".into(),
        ),
        ("SHOW MEM", "siiii".into(), "name size used free memtotal".into()),
        ("SHOW DNS_HOSTS", "sqs".into(), "hostname ttl addrs".into()),
        ("SHOW DNS_ZONES", "sqi".into(), "zonename serial count".into()),
    ];
    let pgsluice_has_no = ["SHOW PEERS", "SHOW PEER_POOLS", "SHOW MEM", "SHOW DNS_HOSTS", "SHOW DNS_ZONES"];
    for (cmd, types, cols) in &expect {
        let answer = raw_show(&mut console, cmd).await;
        let names: Vec<&str> = answer.columns.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(names, cols.split_whitespace().collect::<Vec<_>>(), "{cmd}");
        let got: Vec<(u32, i16)> = answer.columns.iter().map(|c| (c.1, c.2)).collect();
        assert_eq!(got, pgbouncer_types(types), "{cmd}: column types");
        assert_eq!(answer.rows.is_empty(), pgsluice_has_no.contains(cmd), "{cmd} rows: {:?}", answer.rows);
    }
    let rows = |a: Answer| a.rows.iter().map(|r| r[0].clone().unwrap_or_default()).collect::<Vec<_>>();
    assert_eq!(
        rows(raw_show(&mut console, "SHOW LISTS").await),
        "databases users peers pools peer_pools free_clients used_clients login_clients free_servers used_servers \
         dns_names dns_zones dns_queries dns_pending"
            .split_whitespace()
            .collect::<Vec<_>>()
    );
    assert_eq!(rows(raw_show(&mut console, "SHOW STATE").await), ["active", "paused", "suspended"]);
    let totals_rows: Vec<String> = ["total", "avg"]
        .iter()
        .flat_map(|p| {
            FIGURES.split(' ').map(move |n| {
                let n = match n {
                    "received" => "client_bytes",
                    "sent" => "server_bytes",
                    "client_parse_count" | "server_parse_count" | "bind_count" => return format!("{p}_ps_{n}"),
                    n => n,
                };
                format!("{p}_{n}")
            })
        })
        .collect();
    assert_eq!(rows(raw_show(&mut console, "SHOW TOTALS").await), totals_rows);
    // SHOW HELP is PgBouncer's notice: "Console usage", the commands in its detail; every SHOW listed works.
    let help = raw_show(&mut console, "SHOW HELP").await;
    assert!(help.columns.is_empty());
    let notice = help.notices.first().expect("a notice");
    assert_eq!((notice[&'S'].as_str(), notice[&'M'].as_str()), ("NOTICE", "Console usage"));
    let detail = &notice[&'D'];
    assert!(detail.starts_with("\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n"), "{detail}");
    for line in ["\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS", "\tSET key = arg", "\tKILL_CLIENT <client_id>"] {
        assert!(detail.lines().any(|l| l == line), "{line:?} in {detail}");
    }
    for line in detail.lines().filter_map(|l| l.trim().strip_prefix("SHOW ")) {
        for what in line.split('|') {
            raw_show(&mut console, &format!("SHOW {what}")).await;
        }
    }
    // The values read as PgBouncer's do.
    let client = px.client(ADMIN.0, ADMIN.1, "pgbouncer").await;
    let (cols, rows) = show(&client, "show pools").await;
    let pool = rows.iter().find(|r| r[0].as_deref() == Some("app")).expect("the app pool");
    assert_eq!(value(&cols, pool, "user"), ADMIN.0);
    assert_eq!(value(&cols, pool, "cl_active"), "1");
    assert_eq!(value(&cols, pool, "pool_mode"), "transaction");
    let (cols, rows) = show(&client, "show servers").await;
    assert_eq!(rows[0][cols.iter().position(|c| c == "tls").unwrap()].as_deref(), Some(""), "tls is '' not NULL");
    let (_, rows) = show(&client, "show version").await;
    assert!(rows[0][0].as_deref().unwrap_or_default().contains("PgBouncer 1.25.0"), "{rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_a_known_workload_exactly() {
    let pg = TestPg::start().await;
    let px = proxy(&pg).await;
    let app = px.client(ADMIN.0, ADMIN.1, "app").await;
    for _ in 0..5 {
        app.simple_query("select 1").await.unwrap();
    }
    for q in ["begin", "select 1", "select 2", "commit"] {
        app.simple_query(q).await.unwrap();
    }
    // 6 transactions, 9 queries (each simple query is one).
    let console = px.client(STATS.0, STATS.1, "pgbouncer").await;
    let counts = || async {
        let (cols, rows) = show(&console, "show stats").await;
        let row = rows.iter().find(|r| r[0].as_deref() == Some("app")).cloned().unwrap_or_default();
        if row.is_empty() {
            return (String::new(), String::new(), String::new());
        }
        (
            value(&cols, &row, "total_xact_count"),
            value(&cols, &row, "total_query_count"),
            value(&cols, &row, "total_server_assignment_count"),
        )
    };
    common::wait_for(Duration::from_secs(5), "stats reach the workload", || async {
        counts().await == ("6".to_string(), "9".to_string(), "6".to_string())
    })
    .await;
    let (cols, rows) = show(&console, "show stats_totals").await;
    let row = rows.iter().find(|r| r[0].as_deref() == Some("app")).unwrap();
    assert_eq!(value(&cols, row, "xact_count"), "6");
    assert_eq!(value(&cols, row, "client_login_count"), "1", "one client logged in");
    assert!(value(&cols, row, "bytes_received").parse::<u64>().unwrap() > 0);
    assert!(value(&cols, row, "bytes_sent").parse::<u64>().unwrap() > 0);
    // Averages as PgBouncer's calc_average: no stats period has ended yet (stats_period is 60 s), so they
    // cover everything since start: times per transaction, query and assignment; counts per second (the
    // window is over a second long, so never more than the totals).
    let (cols, rows) = show(&console, "show stats").await;
    let row = rows.iter().find(|r| r[0].as_deref() == Some("app")).unwrap();
    let num = |name: &str| value(&cols, row, name).parse::<u64>().unwrap_or_else(|_| panic!("{name}"));
    assert!(num("total_xact_time") > 0 && num("total_query_time") > 0);
    assert_eq!(num("avg_xact_time"), num("total_xact_time") / 6);
    assert_eq!(num("avg_query_time"), num("total_query_time") / 9);
    assert_eq!(num("avg_wait_time"), num("total_wait_time") / 6);
    assert!(num("avg_xact_count") <= 6 && num("avg_query_count") <= 9 && num("avg_client_login_count") <= 1);
    assert!(num("avg_recv") <= num("total_received") && num("avg_sent") <= num("total_sent"));
    // The console is the `pgbouncer` database: its login and each of its commands count there (a
    // transaction and a query each, taking no server time), as PgBouncer's.
    let console_row = rows.iter().find(|r| r[0].as_deref() == Some("pgbouncer")).expect("the pgbouncer row");
    let console_num = |name: &str| value(&cols, console_row, name).parse::<u64>().unwrap();
    assert_eq!(console_num("total_client_login_count"), 1);
    let console_xacts = console_num("total_xact_count");
    assert!(console_xacts >= 3 && console_num("total_query_count") == console_xacts, "{console_xacts}");
    assert_eq!((console_num("total_xact_time"), console_num("total_server_assignment_count")), (0, 0));
    // SHOW TOTALS sums every database under PgBouncer's row names (the console's next command included).
    let (_, rows) = show(&console, "show totals").await;
    let total = |name: &str| rows.iter().find(|r| r[0].as_deref() == Some(name)).and_then(|r| r[1].clone());
    let total_n = |name: &str| total(name).map(|v| v.parse::<u64>().unwrap());
    assert_eq!(total_n("total_xact_count"), Some(6 + console_xacts + 1));
    assert_eq!(total_n("total_client_login_count"), Some(2));
    assert_eq!(total_n("total_client_bytes"), Some(num("total_received")));
    assert_eq!(total_n("total_xact_time"), Some(num("total_xact_time")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_do_what_on_the_console() {
    let pg = TestPg::start().await;
    let px = proxy(&pg).await;
    // Stats users read, and nothing else.
    let stats = px.client(STATS.0, STATS.1, "pgbouncer").await;
    assert!(!show(&stats, "show lists").await.0.is_empty());
    for cmd in [
        "pause",
        "resume app",
        "reconnect",
        "wait_close",
        "disable app",
        "enable app",
        "kill app",
        "kill_client 1",
        "suspend",
        "shutdown",
        "shutdown wait_for_clients",
        "reload",
        "set default_pool_size = 5",
    ] {
        let e = stats.simple_query(cmd).await.unwrap_err();
        assert_eq!(code(&e).as_deref(), Some("42501"), "{cmd}: {e}");
    }
    for cmd in
        ["show pools", "show stats", "show clients", "show servers", "show config", "show databases", "show users"]
    {
        stats.simple_query(cmd).await.unwrap_or_else(|e| panic!("{cmd}: {e}"));
    }
    // Admin users may.
    let admin = px.client(ADMIN.0, ADMIN.1, "pgsluice").await;
    admin.simple_query("reload").await.unwrap();
    admin.simple_query("pause app").await.unwrap();
    admin.simple_query("resume app").await.unwrap();
    // Unknown commands and the extended protocol get clear errors; the console stays usable.
    let e = admin.simple_query("select 1").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("42601"));
    let e = admin.query("show pools", &[]).await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("0A000"), "{e}");
    assert!(!show(&admin, "show version").await.0.is_empty());
    // Anyone else is refused at login, after authenticating.
    let e = px.try_client("trust_user", "", "pgbouncer").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("28000"), "{e}");
    let e = px.try_client(ADMIN.0, "wrong", "pgbouncer").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("28P01"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_is_reachable_when_max_client_conn_is_reached() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).general("admin_users", &format!("{:?}", ADMIN.0)).max_client_conn(1).start().await;
    // The harness's readiness probe holds the one slot until pgsluice sees it leave.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let _only = loop {
        match px.try_client(ADMIN.0, ADMIN.1, "app").await {
            Ok(c) => break c,
            Err(e) => assert!(std::time::Instant::now() < deadline, "the one client slot stays taken: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let e = px.try_client(ADMIN.0, ADMIN.1, "app").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("53300"));
    let console = px.client(ADMIN.0, ADMIN.1, "pgbouncer").await;
    assert!(!show(&console, "show lists").await.1.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_transactions_and_suspected_leaks_are_logged_without_data() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg)
        .general("log_slow_transaction_ms", "200")
        .general("idle_transaction_warn", "0.3")
        .general("max_prepared_statements", "0") // the query text is captured without statement rewriting too
        .start()
        .await;
    let c = px.client_with(ADMIN.0, ADMIN.1, "app", &[("application_name", "billing-worker")]).await;
    c.batch_execute("begin; select pg_sleep(0.3) where 'card-4242' <> 'x'; commit").await.unwrap();
    common::wait_for(Duration::from_secs(5), "the slow transaction is logged", || async {
        px.log_contents().contains("slow transaction")
    })
    .await;
    let log = px.log_contents();
    let line = log.lines().find(|l| l.contains("slow transaction")).unwrap();
    assert!(line.contains("billing-worker") && line.contains("app/scram_user"), "{line}");
    assert!(line.contains("pg_sleep(?)") && !line.contains("card-4242"), "literals stripped: {line}");
    // A client that sits idle inside a transaction is reported before anything cuts it.
    c.batch_execute("begin; update accounts set balance = balance where id = 7").await.unwrap();
    common::wait_for(Duration::from_secs(5), "the leak warning", || async {
        px.log_contents().contains("suspected connection leak")
    })
    .await;
    let log = px.log_contents();
    let line = log.lines().find(|l| l.contains("suspected connection leak")).unwrap();
    assert!(line.contains("billing-worker") && line.contains("where id = ?"), "{line}");
    assert_eq!(common::scalar(&c, "select 1").await, "1", "the client is only warned about");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_config_and_set_change_settings_live() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg)
        .general("admin_users", &format!("{:?}", ADMIN.0))
        .pool_size(1)
        .query_wait_timeout(1.0)
        .start()
        .await;
    let console = px.client(ADMIN.0, ADMIN.1, "pgbouncer").await;
    let (cols, rows) = show(&console, "show config").await;
    assert_eq!(cols, ["key", "value", "default", "changeable"]);
    let row =
        |rows: &[Vec<Option<String>>], key: &str| rows.iter().find(|r| r[0].as_deref() == Some(key)).cloned().unwrap();
    let pool_size = row(&rows, "default_pool_size");
    assert_eq!(pool_size[1].as_deref(), Some("1"));
    assert_eq!(pool_size[2].as_deref(), Some("20"));
    assert_eq!(row(&rows, "listen_port")[3].as_deref(), Some("no"));
    // SET raises the pool size live: a second transaction gets its own server.
    let a = px.client(ADMIN.0, ADMIN.1, "app").await;
    let b = px.client(ADMIN.0, ADMIN.1, "app").await;
    a.batch_execute("begin; select 1").await.unwrap();
    assert_eq!(code(&b.simple_query("select 1").await.unwrap_err()).as_deref(), Some("57014"));
    console.simple_query("set default_pool_size = 2").await.unwrap();
    assert_eq!(common::scalar(&b, "select 2").await, "2");
    assert_eq!(row(&show(&console, "show config").await.1, "default_pool_size")[1].as_deref(), Some("2"));
    // Bad values, unknown keys and restart-only settings are refused with clear codes.
    let e = console.simple_query("set default_pool_size = many").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("22023"), "{e}");
    let e = console.simple_query("set no_such_thing = 1").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("42704"), "{e}");
    // Every PgBouncer setting is known: one pgsluice lacks is refused as such, one it has that is unset
    // now takes a value.
    let e = console.simple_query("set verbose = 2").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("0A000"), "{e}");
    let message = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
    assert_eq!(message, "verbose is a PgBouncer setting that pgsluice does not support");
    console.simple_query("set auth_dbname = 'app'").await.unwrap();
    assert_eq!(row(&show(&console, "show config").await.1, "auth_dbname")[1].as_deref(), Some("app"));
    let e = console.simple_query("set listen_port = 7000").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("55P02"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_servers_links_servers_to_their_clients() {
    let pg = TestPg::start().await;
    let px = proxy(&pg).await;
    let console = px.client(ADMIN.0, ADMIN.1, "pgbouncer").await;
    let a = px.client_with(ADMIN.0, ADMIN.1, "app", &[("application_name", "orders-api")]).await;
    a.batch_execute("begin").await.unwrap();
    let pid = common::scalar(&a, "select pg_backend_pid()").await;
    let (cols, rows) = show(&console, "show servers").await;
    assert_eq!(cols.len(), 23, "PgBouncer's 21 columns, then xact_us and idle_in_xact_us");
    let mine = rows.iter().find(|r| value(&cols, r, "remote_pid") == pid).expect("A's server is listed");
    assert_eq!(value(&cols, mine, "state"), "active");
    assert_eq!(value(&cols, mine, "application_name"), "orders-api");
    assert_eq!(value(&cols, mine, "database"), "app");
    a.batch_execute("commit").await.unwrap();
    common::wait_for(Duration::from_secs(5), "the server is idle again", || async {
        let (cols, rows) = show(&console, "show servers").await;
        rows.iter().any(|r| value(&cols, r, "remote_pid") == pid && value(&cols, r, "state") == "idle")
    })
    .await;
    // RECONNECT: once closed, it is gone from the list.
    console.simple_query("reconnect app").await.unwrap();
    common::wait_for(Duration::from_secs(5), "the server is gone", || async {
        let (cols, rows) = show(&console, "show servers").await;
        !rows.iter().any(|r| value(&cols, r, "remote_pid") == pid)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_pools_counts_logging_in_and_used_servers() {
    let pg = TestPg::start().await;
    // A server that accepts TCP and never answers: its connections stay logging in.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let px = Proxy::builder(&pg)
        .general("admin_users", &format!("{:?}", ADMIN.0))
        .general("server_check_delay", "0.2")
        .general("server_connect_timeout", "10")
        .database("silent", &format!("port = {silent_port}, dbname = \"app\""))
        .start()
        .await;
    let console = px.client(ADMIN.0, ADMIN.1, "pgbouncer").await;
    let pool_row = |db: &'static str| {
        let console = &console;
        async move {
            let (cols, rows) = show(console, "show pools").await;
            rows.iter().find(|r| r[0].as_deref() == Some(db)).map(|r| {
                ["sv_active", "sv_idle", "sv_used", "sv_login"].map(|c| value(&cols, r, c).parse::<u64>().unwrap())
            })
        }
    };
    let connstr = px.connstr(ADMIN.0, ADMIN.1, "silent");
    let stuck = tokio::spawn(async move { tokio_postgres::connect(&connstr, tokio_postgres::NoTls).await.map(|_| ()) });
    common::wait_for(Duration::from_secs(5), "a server logging in", || async {
        pool_row("silent").await.is_some_and(|r| r[3] == 1)
    })
    .await;
    stuck.abort();
    // A server idle longer than server_check_delay is `used` (it gets the check query before reuse).
    let c = px.client(ADMIN.0, ADMIN.1, "app").await;
    assert_eq!(common::scalar(&c, "select 1").await, "1");
    common::wait_for(Duration::from_secs(5), "the idle server becomes used", || async {
        pool_row("app").await == Some([0, 0, 1, 0])
    })
    .await;
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_databases_reports_pause_and_disable() {
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg)
        .general("admin_users", &format!("{:?}", ADMIN.0))
        .database("other", "dbname = \"app\"")
        .start()
        .await;
    let console = px.client(ADMIN.0, ADMIN.1, "pgbouncer").await;
    let flags = || async {
        let (cols, rows) = show(&console, "show databases").await;
        let get = |db: &str| {
            let row = rows.iter().find(|r| r[0].as_deref() == Some(db)).unwrap_or_else(|| panic!("{db}: {rows:?}"));
            (value(&cols, row, "paused"), value(&cols, row, "disabled"))
        };
        (get("app"), get("other"))
    };
    let pair = |p: &str, d: &str| (p.to_string(), d.to_string());
    assert_eq!(flags().await, (pair("0", "0"), pair("0", "0")));
    console.simple_query("pause app").await.unwrap();
    console.simple_query("disable other").await.unwrap();
    assert_eq!(flags().await, (pair("1", "0"), pair("0", "1")));
    console.simple_query("resume app").await.unwrap();
    console.simple_query("enable other").await.unwrap();
    assert_eq!(flags().await, (pair("0", "0"), pair("0", "0")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_servers_close_needed_and_the_links_between_clients_and_servers() {
    let pg = TestPg::start().await;
    let px = proxy(&pg).await;
    let console = px.client(ADMIN.0, ADMIN.1, "pgbouncer").await;
    let a = px.client(ADMIN.0, ADMIN.1, "app").await;
    a.batch_execute("begin").await.unwrap();
    let pid = common::scalar(&a, "select pg_backend_pid()").await;
    let server_row = || async {
        let (cols, rows) = show(&console, "show servers").await;
        let row = rows.iter().find(|r| value(&cols, r, "remote_pid") == pid).cloned();
        row.map(|r| (value(&cols, &r, "close_needed"), value(&cols, &r, "ptr"), value(&cols, &r, "link")))
    };
    // A's client row links to its server's ptr, and the server's row to the client's.
    let (close_needed, server_ptr, server_link) = server_row().await.expect("A's server is listed");
    assert_eq!(close_needed, "0");
    let (cols, rows) = show(&console, "show clients").await;
    let client = rows.iter().find(|r| value(&cols, r, "state") == "active").expect("A is active");
    assert_eq!(value(&cols, client, "link"), server_ptr, "the client links to its server");
    assert_eq!(server_link, value(&cols, client, "ptr"), "the server links to its client");
    assert_eq!(value(&cols, client, "tls"), "");
    assert_ne!(value(&cols, client, "ptr"), server_ptr, "clients and servers have distinct handles");
    // RECONNECT: the busy server is listed with close_needed = 1 until its transaction ends and it is closed.
    console.simple_query("reconnect app").await.unwrap();
    assert_eq!(server_row().await.map(|r| r.0).as_deref(), Some("1"));
    a.batch_execute("commit").await.unwrap();
    common::wait_for(Duration::from_secs(5), "the marked server is closed", || async { server_row().await.is_none() })
        .await;
    // A RELOAD that changes the server marks the busy servers of the rebuilt pool too.
    a.batch_execute("begin").await.unwrap();
    let pid2 = common::scalar(&a, "select pg_backend_pid()").await;
    assert_ne!(pid2, pid);
    let (cols, rows) = show(&console, "show servers").await;
    let row = rows.iter().find(|r| value(&cols, r, "remote_pid") == pid2).expect("the new server");
    assert_eq!(value(&cols, row, "close_needed"), "0", "a new server is not marked");
    let text = std::fs::read_to_string(&px.config).unwrap();
    let text = text.replace("dbname = \"app\" }", &format!("dbname = \"app\", password = {:?} }}", ADMIN.1));
    std::fs::write(&px.config, text).unwrap();
    console.simple_query("reload").await.unwrap();
    let (cols, rows) = show(&console, "show servers").await;
    let row = rows.iter().find(|r| value(&cols, r, "remote_pid") == pid2).expect("still open while busy");
    assert_eq!(value(&cols, row, "close_needed"), "1");
    a.batch_execute("commit").await.unwrap();
}

/// The extended protocol on the console: one ErrorResponse for the batch, the rest skipped to its Sync,
/// as PostgreSQL answers a failed batch; the console stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_on_the_console_gets_one_error_per_batch() {
    use common::wire::{RawConn, fe};
    let pg = TestPg::start().await;
    let px = Proxy::builder(&pg).auth_type("trust").general("admin_users", "[\"trust_user\"]").start().await;
    let (mut c, _, _) = RawConn::login_with_key(px.port(), "trust_user", "pgbouncer").await;
    let batch =
        [fe::parse("", "show pools"), fe::bind("", "", &[]), fe::describe(b'P', ""), fe::execute("", 0), fe::sync()];
    c.send(&batch.concat()).await;
    let mut tags = Vec::new();
    loop {
        let (tag, body) = c.read_message(Duration::from_secs(5)).await.expect("a reply");
        if tag == b'E' {
            assert_eq!(common::wire::error_fields(&body).get(&'C').map(String::as_str), Some("0A000"));
        }
        tags.push(tag);
        if tag == b'Z' {
            break;
        }
    }
    assert_eq!(tags, b"EZ");
    c.send(&fe::query("show version")).await;
    c.read_until_ready().await;
}
