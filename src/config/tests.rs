use std::path::Path;
use std::time::Duration;

use super::auth_file::{AuthFile, Secret};
use super::*;

fn cfg(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, Path::new("/etc/pgsluice/test.toml"))
}

#[test]
fn defaults_follow_pgbouncer() {
    let c = cfg("").unwrap();
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
    let c = cfg("[databases]\napp = {}\n").unwrap();
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
    let e = cfg("[databases]\napp = { pool_size = 0 }\n").unwrap_err().to_string();
    assert!(e.contains("databases.app.pool_size"), "{e}");
    let e = cfg("[databases]\napp = { hots = \"x\" }\n").unwrap_err().to_string();
    assert!(e.contains("hots"), "{e}");
}

#[test]
fn lists_accept_arrays_and_comma_strings() {
    let c = cfg("[pgsluice]\nignore_startup_parameters = \"extra_float_digits, options\"\n").unwrap();
    assert_eq!(c.general.ignore_startup_parameters, vec!["extra_float_digits", "options"]);
    let c = cfg("[pgsluice]\ntrack_extra_parameters = [\"search_path\"]\n").unwrap();
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
