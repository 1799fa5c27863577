use std::path::Path;
use std::time::Duration;

use super::auth_file::{AuthFile, Secret};
use super::*;

fn cfg(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, Path::new("/etc/pgsluice/test.toml"))
}

#[test]
fn defaults_follow_pgbouncer() {
    let c = cfg("[pgsluice]\nauth_file = \"users.txt\"\n").unwrap();
    assert_eq!(c.general.default_pool_size, 20);
    assert_eq!(c.general.query_wait_timeout, Duration::from_secs(120));
    assert_eq!(c.general.pool_mode, PoolMode::Transaction);
    assert_eq!(c.general.server_reset_query, "DISCARD ALL");
}

#[test]
fn precedence_user_then_database_then_global() {
    let c = cfg(r#"
        [pgsluice]
        default_pool_size = 7
        query_wait_timeout = 0.5
        auth_file = "users.txt"
        [databases]
        app = { port = 5433, dbname = "real", pool_size = 3, pool_mode = "session" }
        "*" = { host = "db.local" }
        [users]
        alice = { pool_mode = "statement", pool_size = 2 }
    "#)
    .unwrap();
    assert_eq!(c.general.auth_file.as_deref(), Some(Path::new("/etc/pgsluice/users.txt")));
    let s = c.pool_settings("app", "bob").unwrap();
    assert_eq!(
        (s.pool_size, s.pool_mode, s.server.dbname.as_str(), s.server.port),
        (3, PoolMode::Session, "real", 5433)
    );
    assert_eq!(s.query_wait_timeout, Duration::from_millis(500));
    let s = c.pool_settings("app", "alice").unwrap();
    assert_eq!((s.pool_size, s.pool_mode), (2, PoolMode::Statement));
    let s = c.pool_settings("other", "bob").unwrap();
    assert_eq!((s.server.host.as_str(), s.server.dbname.as_str(), s.pool_size), ("db.local", "other", 7));
    let c = cfg("[pgsluice]\nauth_type = \"trust\"\n[databases]\napp = {}\n").unwrap();
    assert!(c.pool_settings("other", "bob").is_none());
}

#[test]
fn bad_input_is_rejected_naming_file_key_and_reason() {
    let e = cfg("[pgsluice]\nmax_clients = 5\n").unwrap_err().to_string();
    assert!(e.contains("/etc/pgsluice/test.toml") && e.contains("max_clients"), "{e}");
    let e = cfg("[pgsluice]\ndefault_pool_size = \"big\"\n").unwrap_err().to_string();
    assert!(e.contains("default_pool_size"), "{e}");
    let e = cfg("[pgsluice]\nquery_wait_timeout = -1\n").unwrap_err().to_string();
    assert!(e.contains("query_wait_timeout"), "{e}");
    let e = cfg("[pgsluice]\nauth_type = \"trust\"\n[databases]\napp = { pool_size = 0 }\n").unwrap_err().to_string();
    assert!(e.contains("databases.app.pool_size"), "{e}");
    let e = cfg("[databases]\napp = { hots = \"x\" }\n").unwrap_err().to_string();
    assert!(e.contains("hots"), "{e}");
}

#[test]
fn lists_accept_arrays_and_comma_strings() {
    let c = cfg("[pgsluice]\nauth_type = \"trust\"\nignore_startup_parameters = \"extra_float_digits, options\"\n")
        .unwrap();
    assert_eq!(c.general.ignore_startup_parameters, vec!["extra_float_digits", "options"]);
    let c = cfg("[pgsluice]\nauth_type = \"trust\"\ntrack_extra_parameters = [\"search_path\"]\n").unwrap();
    assert_eq!(c.general.track_extra_parameters, vec!["search_path"]);
}

#[test]
fn auth_file_formats() {
    let text = r#"
; comment
# another
"alice" "pw with ""quotes"""
"bob" "md5ee0f3f7d3d7d8bd7b1bd6b87e1b1a1d3"
"carol" "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0$8wKsOt9Ry24tG6P7ZUBeXSQbcvAx4KQxsRELSFgE7tU=:Ss6bxC0iQaJuvfdz1ClmQhQGpH0VSJmWy1iDi+ME5+0="
"#;
    let a = AuthFile::parse(text, Path::new("u.txt")).unwrap();
    assert_eq!(a.get("alice"), Some(&Secret::Plain("pw with \"quotes\"".into())));
    assert!(matches!(a.get("bob"), Some(Secret::Md5(_))));
    match a.get("carol") {
        Some(Secret::Scram(s)) => assert_eq!((s.iterations, s.salt.len()), (4096, 12)),
        other => panic!("{other:?}"),
    }
    let e = AuthFile::parse("\"alice\" pw\n", Path::new("u.txt")).unwrap_err().to_string();
    assert!(e.starts_with("u.txt:1:"), "{e}");
}

#[test]
fn example_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/pgsluice.toml");
    let c = Config::load(&path).unwrap();
    c.load_auth_file().unwrap();
}

/// A trust config with `extra` added to `[pgsluice]` and `rest` after it.
fn trusting(extra: &str, rest: &str) -> Result<Config, ConfigError> {
    cfg(&format!("[pgsluice]\nauth_type = \"trust\"\n{extra}\n{rest}"))
}

/// The error names the file, the key and the reason.
#[track_caller]
fn assert_rejected(r: Result<Config, ConfigError>, key: &str, reason: &str) {
    let e = r.expect_err("config accepted").to_string();
    assert!(e.starts_with("/etc/pgsluice/test.toml: "), "file: {e}");
    assert!(e.contains(&format!("key `{key}`: ")), "key {key}: {e}");
    assert!(e.contains(reason), "reason {reason:?}: {e}");
}

#[test]
fn unknown_keys_and_wrong_types_name_the_key_path_and_line() {
    assert_rejected(trusting("max_client_con = 5", ""), "pgsluice.max_client_con", "did you mean `max_client_conn`?");
    assert_rejected(trusting("frobnicate = 5", ""), "pgsluice.frobnicate", "unknown key (conf/pgsluice.toml lists");
    assert_rejected(
        trusting("", "[databases]\napp = { hots = \"x\" }"),
        "databases.app.hots",
        "unknown key (did you mean `host`?)",
    );
    assert_rejected(trusting("", "[users]\nbob = { pool_sise = 2 }"), "users.bob.pool_sise", "unknown key");
    assert_rejected(trusting("default_pool_size = \"big\"", ""), "pgsluice.default_pool_size", "invalid type");
    assert_rejected(
        trusting("query_wait_timeout = -1", ""),
        "pgsluice.query_wait_timeout",
        "not a valid number of seconds",
    );
    assert_rejected(trusting("pool_mode = \"sometimes\"", ""), "pgsluice.pool_mode", "unknown variant");
    let db = |host: &str| trusting("", &format!("[databases]\napp = {{ host = {host:?} }}"));
    assert!(db("/var/run/postgresql").is_ok(), "a Unix-socket directory is a host");
    assert_rejected(db("@abstract"), "databases.app.host", "abstract namespace");
    assert_rejected(trusting("unix_socket_dir = \"relative\"", ""), "pgsluice.unix_socket_dir", "absolute");
    assert_rejected(trusting("unix_socket_mode = \"rwx\"", ""), "pgsluice.unix_socket_mode", "octal");
    assert!(db("a.example,b.example").is_ok(), "a host list");
    assert_rejected(db("a.example,,b.example"), "databases.app.host", "host list");
    let e = trusting("listen_port = 70000", "").unwrap_err().to_string();
    assert!(e.contains("key `pgsluice.listen_port`") && e.contains("(line 3)"), "{e}");
    // A syntax error keeps toml's report, with the file.
    let e = cfg("[pgsluice\n").unwrap_err().to_string();
    assert!(e.starts_with("/etc/pgsluice/test.toml: ") && e.contains("line 1"), "{e}");
}

#[test]
fn min_pool_size_above_the_pool_size_is_accepted_and_capped_with_a_warning() {
    // PgBouncer's own test.ini: a [users] pool_size below a database's min_pool_size.
    let c = trusting(
        "default_pool_size = 5",
        "[databases]\np0x = { min_pool_size = 5, pool_size = 5 }\nforced = { user = \"bouncer\", min_pool_size = 4 }\n\
         [users]\npoolsize1 = { pool_size = 1 }\nbouncer = { pool_size = 2 }",
    )
    .unwrap();
    let s = c.pool_settings("p0x", "poolsize1").unwrap();
    assert_eq!((s.pool_size, s.min_pool_size), (1, 1));
    assert_eq!(c.pool_settings("p0x", "bob").unwrap().min_pool_size, 5);
    // The forced user's entry sets the pool size, whoever the client is.
    let s = c.pool_settings("forced", "poolsize1").unwrap();
    assert_eq!((s.pool_size, s.min_pool_size), (2, 2));
    let w = c.warnings();
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(w[0].starts_with("database forced: min_pool_size 4 is more than its pool size 2"), "{w:?}");
    assert!(w[1].starts_with("user bouncer: pool_size 2 is less than min_pool_size 5 of database p0x"), "{w:?}");
    assert!(w[2].starts_with("user poolsize1: pool_size 1 is less than min_pool_size 5 of database p0x"), "{w:?}");
    for (extra, rest, warning) in [
        ("min_pool_size = 5\ndefault_pool_size = 3", "", "min_pool_size 5 is more than default_pool_size 3"),
        ("", "[databases]\napp = { pool_size = 2, min_pool_size = 3 }", "database app: min_pool_size 3"),
        ("min_pool_size = 4", "[databases]\napp = { pool_size = 2 }", "database app: min_pool_size 4"),
    ] {
        let c = trusting(extra, rest).unwrap();
        assert!(c.warnings().iter().any(|w| w.starts_with(warning)), "{extra} {rest}: {:?}", c.warnings());
    }
    assert!(trusting("min_pool_size = 3\ndefault_pool_size = 3", "").unwrap().warnings().is_empty());
}

#[test]
fn max_packet_size_above_postgresqls_largest_message_is_capped() {
    // PgBouncer's default, written out.
    let c = trusting("max_packet_size = 2147483647", "[databases]\napp = {}").unwrap();
    assert_eq!(c.pool_settings("app", "bob").unwrap().max_packet_size, 1073741823);
    assert!(c.warnings()[0].starts_with("max_packet_size 2147483647 is more than"), "{:?}", c.warnings());
    assert_rejected(trusting("max_packet_size = 100", ""), "pgsluice.max_packet_size", "at least 1024");
}

#[test]
fn database_port_zero_is_rejected() {
    assert_rejected(trusting("", "[databases]\napp = { port = 0 }"), "databases.app.port", "must be 1..65535");
}

#[test]
fn listen_addr_must_be_an_address_or_host_name() {
    for bad in ["", "127.0.0.1,::1", "not an address", "10.0.0.256", "-bad.example", "[127.0.0.1]", "a..b"] {
        assert_rejected(trusting(&format!("listen_addr = {bad:?}"), ""), "pgsluice.listen_addr", &format!("{bad:?}"));
    }
    for good in ["127.0.0.1", "0.0.0.0", "::1", "[::1]", "::", "localhost", "db-1.internal.example."] {
        let c = trusting(&format!("listen_addr = {good:?}"), "").unwrap_or_else(|e| panic!("{good}: {e}"));
        assert_eq!(c.general.listen_addr, good);
    }
    // PgBouncer's "*" (all addresses) is accepted and bound as 0.0.0.0, as --pgbouncer-ini does.
    assert_eq!(trusting("listen_addr = \"*\"", "").unwrap().general.listen_addr, "0.0.0.0");
    let e = trusting("listen_addr = \"127.0.0.1,::1\"", "").unwrap_err().to_string();
    assert!(e.contains("one address only"), "{e}");
}

#[test]
fn metrics_addr_must_be_host_and_port() {
    for bad in ["127.0.0.1", "127.0.0.1:", "127.0.0.1:port", "127.0.0.1:99999", "no such host:9127", ":9127"] {
        assert_rejected(
            trusting(&format!("metrics_addr = {bad:?}"), ""),
            "pgsluice.metrics_addr",
            &format!("{bad:?} is not host:port"),
        );
    }
    assert_rejected(trusting("metrics_addr = \"127.0.0.1:0\"", ""), "pgsluice.metrics_addr", "port must be 1..65535");
    for good in ["127.0.0.1:9127", "[::1]:9127", "localhost:9127", "0.0.0.0:1"] {
        trusting(&format!("metrics_addr = {good:?}"), "").unwrap_or_else(|e| panic!("{good}: {e}"));
    }
}

#[test]
fn auth_types_with_secrets_need_an_auth_file() {
    for t in ["plain", "md5", "scram-sha-256"] {
        assert_rejected(
            cfg(&format!("[pgsluice]\nauth_type = {t:?}\n")),
            "pgsluice.auth_file",
            &format!("auth_type = \"{t}\" needs an auth_file"),
        );
        cfg(&format!("[pgsluice]\nauth_type = {t:?}\nauth_file = \"users.txt\"\n")).unwrap();
    }
    // The default auth_type is md5, so an empty config needs one too.
    assert_rejected(cfg(""), "pgsluice.auth_file", "auth_type = \"md5\" needs an auth_file");
    cfg("[pgsluice]\nauth_type = \"trust\"\n").unwrap();
}

#[test]
fn auth_type_any_needs_no_auth_file_but_a_user_in_every_database_entry() {
    let c = cfg(r#"
        [pgsluice]
        auth_type = "any"
        [databases]
        app = { user = "app_owner", password = "pw" }
        "*" = { user = "fallback" }
    "#)
    .unwrap();
    assert_eq!(c.general.auth_type, AuthType::Any);
    assert_eq!(c.pool_settings("other", "whoever").unwrap().server.user.as_deref(), Some("fallback"));
    for (db, entries) in [("app", "app = {}\n\"*\" = { user = \"u\" }"), ("*", "app = { user = \"u\" }\n\"*\" = {}")] {
        assert_rejected(
            cfg(&format!("[pgsluice]\nauth_type = \"any\"\n[databases]\n{entries}\n")),
            &format!("databases.{db}.user"),
            "every database entry needs a user",
        );
    }
    // Shown and set under PgBouncer's name.
    let c = trusting("", "").unwrap();
    assert_eq!(c.with_setting("auth_type", "any").unwrap().general.auth_type, AuthType::Any);
}

#[test]
fn a_database_password_may_be_an_md5_hash_but_not_a_scram_verifier() {
    let md5 = "md5a1f1a4d94b7bd1c2d7a5d8e1f6c0c3b2";
    trusting("", &format!("[databases]\napp = {{ user = \"u\", password = {md5:?} }}\n")).unwrap();
    let verifier = postgres_protocol::password::scram_sha_256(b"pw");
    assert_rejected(
        trusting("", &format!("[databases]\napp = {{ user = \"u\", password = {verifier:?} }}\n")),
        "databases.app.password",
        "a SCRAM verifier cannot log in to a server",
    );
}

#[test]
fn set_validates_like_a_file() {
    let c = trusting("", "").unwrap();
    let e = c.with_setting("default_pool_size", "0").unwrap_err().to_string();
    assert!(e.contains("pgsluice.default_pool_size") && e.contains("at least 1"), "{e}");
    assert_eq!(c.with_setting("min_pool_size", "50").unwrap().general.min_pool_size, 50, "capped, as PgBouncer");
    assert_eq!(c.with_setting("listen_addr", "*").unwrap().general.listen_addr, "0.0.0.0");
    let e = c.with_setting("auth_type", "md5").unwrap_err().to_string();
    assert!(e.contains("pgsluice.auth_file"), "{e}");
}

#[test]
fn set_knows_every_pgbouncer_setting() {
    let c = trusting("", "").unwrap();
    // Settings that are unset now take a value (file names relative to the config file).
    let c2 = c.with_setting("auth_file", "'users.txt'").unwrap();
    assert_eq!(c2.general.auth_file.as_deref(), Some(Path::new("/etc/pgsluice/users.txt")));
    assert_eq!(c.with_setting("auth_user", "pswcheck").unwrap().general.auth_user.as_deref(), Some("pswcheck"));
    assert_eq!(c2.with_setting("auth_user", "''").unwrap().general.auth_user, None, "empty = unset");
    for key in ["verbose", "logfile", "server_fast_close", "pool_idle_timeout", "dns_max_ttl"] {
        assert_eq!(
            c.with_setting(key, "1").unwrap_err(),
            SetError::NotSupported(key.into()),
            "{key}: a PgBouncer setting, never an unknown one"
        );
    }
    assert_eq!(
        c.with_setting("server_fast_close", "1").unwrap_err().to_string(),
        "server_fast_close is a PgBouncer setting that pgsluice does not support"
    );
    assert_eq!(c.with_setting("frobnicate", "1").unwrap_err(), SetError::Unknown("frobnicate".into()));
}

#[test]
fn every_general_key_is_documented_in_the_example_config() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/pgsluice.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let keys = General::keys();
    assert!(keys.len() > 40 && keys.contains(&"listen_addr") && keys.contains(&"metrics_addr"), "{keys:?}");
    let pgsluice_section = text.split("[databases]").next().unwrap_or_default();
    for key in keys {
        // `key = value  # comment`, possibly itself commented out (settings that are off when unset).
        let line = pgsluice_section
            .lines()
            .map(|l| l.trim_start().trim_start_matches('#').trim_start())
            .find(|l| l.split('=').next().map(str::trim) == Some(key))
            .unwrap_or_else(|| panic!("conf/pgsluice.toml lacks [pgsluice] key {key}"));
        let comment = line.split_once(" # ").map(|(_, c)| c.trim()).unwrap_or_default();
        assert!(!comment.is_empty(), "conf/pgsluice.toml: {key} has no comment: {line}");
    }
}

#[test]
fn a_pgbouncer_ini_is_recognised_by_its_text() {
    assert!(looks_like_pgbouncer_ini("[databases]\napp = host=h\n[pgbouncer]\nlisten_port = 1\n"));
    assert!(looks_like_pgbouncer_ini("[databases]\napp = host=h port=5432\n"));
    assert!(looks_like_pgbouncer_ini("%include /etc/pgbouncer/main.ini\n"));
    assert!(!looks_like_pgbouncer_ini("[pgsluice]\nauth_type = \"trust\"\n[databases]\napp = { host = \"h\" }\n"));
    // Broken TOML stays TOML, so its error is TOML's.
    assert!(!looks_like_pgbouncer_ini("[databases]\napp = { host = \"h\", port = 5432\n"));
}
