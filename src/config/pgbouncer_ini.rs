//! PgBouncer drop-in: reads a pgbouncer.ini (sections `[databases]`, `[users]`, `[pgbouncer]`) and
//! turns it into pgsluice's TOML, so `pgsluice --pgbouncer-ini` runs from an existing config and
//! `pgsluice convert` prints the equivalent. Every setting pgsluice has is carried over under its name;
//! everything else is reported (never silently ignored).

use ini::{Ini, ParseOption};
use toml::{Table, Value};

/// `[pgbouncer]` settings pgsluice honours, with how their values are typed in TOML.
const GENERAL: &[(&str, Kind)] = &[
    ("listen_addr", Kind::Str),
    ("listen_port", Kind::Int),
    ("pool_mode", Kind::Str),
    ("session_state", Kind::Str),
    ("pinned_idle_timeout", Kind::Num),
    ("max_client_conn", Kind::Int),
    ("default_pool_size", Kind::Int),
    ("min_pool_size", Kind::Int),
    ("reserve_pool_size", Kind::Int),
    ("reserve_pool_timeout", Kind::Num),
    ("max_db_connections", Kind::Int),
    ("max_user_connections", Kind::Int),
    ("max_db_client_connections", Kind::Int),
    ("max_user_client_connections", Kind::Int),
    ("server_lifetime", Kind::Num),
    ("server_idle_timeout", Kind::Num),
    ("server_connect_timeout", Kind::Num),
    ("server_login_retry", Kind::Num),
    ("server_check_query", Kind::Str),
    ("server_check_delay", Kind::Num),
    ("server_reset_query", Kind::Str),
    ("server_reset_query_always", Kind::Bool),
    ("query_wait_timeout", Kind::Num),
    ("query_timeout", Kind::Num),
    ("idle_transaction_timeout", Kind::Num),
    ("transaction_timeout", Kind::Num),
    ("client_idle_timeout", Kind::Num),
    ("client_login_timeout", Kind::Num),
    ("autodb_idle_timeout", Kind::Num),
    ("tcp_keepalive", Kind::Bool),
    ("tcp_keepidle", Kind::Num),
    ("tcp_keepintvl", Kind::Num),
    ("tcp_keepcnt", Kind::Int),
    ("tcp_user_timeout", Kind::Int),
    ("unix_socket_dir", Kind::Str),
    ("unix_socket_mode", Kind::Str),
    ("unix_socket_group", Kind::Str),
    ("client_tls_sslmode", Kind::Str),
    ("client_tls_key_file", Kind::Str),
    ("client_tls_cert_file", Kind::Str),
    ("client_tls_ca_file", Kind::Str),
    ("client_tls_protocols", Kind::Str),
    ("client_tls_ciphers", Kind::Str),
    ("client_tls13_ciphers", Kind::Str),
    ("client_tls_ecdhcurve", Kind::Str),
    ("client_tls_dheparams", Kind::Str),
    ("server_tls_sslmode", Kind::Str),
    ("server_tls_ca_file", Kind::Str),
    ("server_tls_key_file", Kind::Str),
    ("server_tls_cert_file", Kind::Str),
    ("server_tls_protocols", Kind::Str),
    ("server_tls_ciphers", Kind::Str),
    ("server_tls13_ciphers", Kind::Str),
    ("cancel_wait_timeout", Kind::Num),
    ("auth_type", Kind::Str),
    ("auth_file", Kind::Str),
    ("auth_hba_file", Kind::Str),
    ("auth_user", Kind::Str),
    ("auth_query", Kind::Str),
    ("auth_dbname", Kind::Str),
    ("auth_ident_file", Kind::Str),
    ("ignore_startup_parameters", Kind::Str),
    ("admin_users", Kind::Str),
    ("stats_users", Kind::Str),
    ("so_reuseport", Kind::Bool),
    ("stats_period", Kind::Num),
    ("track_extra_parameters", Kind::Str),
    ("application_name_add_host", Kind::Bool),
    ("log_connections", Kind::Bool),
    ("log_disconnections", Kind::Bool),
    ("log_pooler_errors", Kind::Bool),
    ("max_packet_size", Kind::Int),
    ("max_prepared_statements", Kind::Int),
];

/// Connection-string keys of a `[databases]` entry pgsluice honours (PgBouncer name -> pgsluice name).
const DATABASE: &[(&str, &str, Kind)] = &[
    ("host", "host", Kind::Str),
    ("port", "port", Kind::Int),
    ("dbname", "dbname", Kind::Str),
    ("user", "user", Kind::Str),
    ("password", "password", Kind::Str),
    ("pool_size", "pool_size", Kind::Int),
    ("min_pool_size", "min_pool_size", Kind::Int),
    ("reserve_pool", "reserve_pool_size", Kind::Int),
    ("reserve_pool_size", "reserve_pool_size", Kind::Int),
    ("max_db_connections", "max_db_connections", Kind::Int),
    ("pool_mode", "pool_mode", Kind::Str),
    ("session_state", "session_state", Kind::Str),
    ("load_balance_hosts", "load_balance_hosts", Kind::Str),
    ("auth_user", "auth_user", Kind::Str),
    ("auth_query", "auth_query", Kind::Str),
    ("auth_dbname", "auth_dbname", Kind::Str),
];

const USER: &[(&str, Kind)] = &[
    ("pool_mode", Kind::Str),
    ("session_state", Kind::Str),
    ("max_user_connections", Kind::Int),
    ("pool_size", Kind::Int),
    ("query_timeout", Kind::Num),
    ("idle_transaction_timeout", Kind::Num),
];

#[derive(Debug, Clone, Copy)]
enum Kind {
    Str,
    Int,
    Num,
    Bool,
}

/// The TOML text, and what could not be carried over (one line each).
pub struct Converted {
    pub toml: String,
    pub unsupported: Vec<String>,
}

fn typed(kind: Kind, key: &str, raw: &str) -> Result<Value, String> {
    let raw = raw.trim();
    let bad = || format!("`{key}`: cannot read {raw:?}");
    Ok(match kind {
        Kind::Str => Value::String(raw.to_string()),
        Kind::Int => Value::Integer(raw.parse().map_err(|_| bad())?),
        Kind::Num => match raw.parse::<i64>() {
            Ok(i) => Value::Integer(i),
            Err(_) => Value::Float(raw.parse().map_err(|_| bad())?),
        },
        Kind::Bool => Value::Boolean(match raw.to_ascii_lowercase().as_str() {
            "1" | "yes" | "on" | "true" => true,
            "0" | "no" | "off" | "false" => false,
            _ => return Err(bad()),
        }),
    })
}

/// Splits a libpq-style connection string (`host=x port=5432 password='a b'`) into pairs.
fn conn_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect::<String>().trim().to_string();
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("unterminated quote in {s:?}")),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied().filter(|c| !c.is_whitespace()) {
                value.push(c);
                chars.next();
            }
        }
        if key.is_empty() {
            return Err(format!("malformed connection string {s:?}"));
        }
        out.push((key, value));
    }
}

/// Converts pgbouncer.ini text. PgBouncer's defaults that differ from pgsluice's are written out, so
/// the result behaves as PgBouncer did (pool_mode session when unset).
pub fn convert(text: &str) -> Result<Converted, String> {
    let opt = ParseOption { enabled_quote: false, enabled_escape: false, ..ParseOption::default() };
    let ini = Ini::load_from_str_opt(text, opt).map_err(|e| e.to_string())?;
    let mut unsupported = Vec::new();
    let mut general = Table::new();
    general.insert("pool_mode".into(), Value::String("session".into())); // PgBouncer's default
    let mut databases = Table::new();
    let mut users = Table::new();
    for (section, props) in ini.iter() {
        let section = section.unwrap_or("").to_ascii_lowercase();
        for (key, raw) in props.iter() {
            match section.as_str() {
                "pgbouncer" => match GENERAL.iter().find(|(k, _)| *k == key) {
                    Some((k, kind)) => {
                        let mut v = typed(*kind, k, raw)?;
                        if *k == "listen_addr" && raw.trim() == "*" {
                            v = Value::String("0.0.0.0".into());
                        }
                        general.insert(k.to_string(), v);
                    }
                    None => unsupported.push(format!("[pgbouncer] {key}")),
                },
                "databases" => {
                    let mut entry = Table::new();
                    for (k, v) in conn_pairs(raw)? {
                        match DATABASE.iter().find(|(pk, _, _)| *pk == k) {
                            Some((_, name, kind)) => {
                                entry.insert(name.to_string(), typed(*kind, &k, &v)?);
                            }
                            None => unsupported.push(format!("[databases] {key}: {k}")),
                        }
                    }
                    databases.insert(key.to_string(), Value::Table(entry));
                }
                "users" => {
                    let mut entry = Table::new();
                    for (k, v) in conn_pairs(raw)? {
                        match USER.iter().find(|(uk, _)| *uk == k) {
                            Some((name, kind)) => {
                                entry.insert(name.to_string(), typed(*kind, &k, &v)?);
                            }
                            None => unsupported.push(format!("[users] {key}: {k}")),
                        }
                    }
                    users.insert(key.to_string(), Value::Table(entry));
                }
                other => unsupported.push(format!("[{other}] {key}")),
            }
        }
    }
    // As PgBouncer: an entry without a host connects over the Unix socket in unix_socket_dir.
    let socket_dir = match general.get("unix_socket_dir") {
        Some(Value::String(d)) => d.clone(),
        _ => "/tmp".to_string(),
    };
    let default_host = if socket_dir.is_empty() { "127.0.0.1".to_string() } else { socket_dir };
    for (_, entry) in databases.iter_mut() {
        if let Value::Table(t) = entry
            && !t.contains_key("host")
        {
            t.insert("host".into(), Value::String(default_host.clone()));
        }
    }
    let mut doc = Table::new();
    doc.insert("pgsluice".into(), Value::Table(general));
    doc.insert("databases".into(), Value::Table(databases));
    doc.insert("users".into(), Value::Table(users));
    let toml = toml::to_string(&doc).map_err(|e| e.to_string())?;
    Ok(Converted { toml, unsupported })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pgbouncer_ini_becomes_equivalent_toml() {
        let ini = "[databases]\n\
                   app = host=db.internal port=5433 dbname=app_prod pool_size=30 reserve_pool=5 connect_query='SELECT 1'\n\
                   * = host=localhost\n\
                   [users]\n\
                   report = pool_mode=session max_user_connections=4\n\
                   [pgbouncer]\n\
                   listen_addr = *\n\
                   pool_mode = transaction\n\
                   max_client_conn = 1000\n\
                   reserve_pool_timeout = 3.5\n\
                   server_reset_query_always = 1\n\
                   admin_users = admin, ops\n\
                   logfile = /var/log/pgbouncer.log\n";
        let c = convert(ini).unwrap();
        let doc: Table = toml::from_str(&c.toml).unwrap();
        let g = doc["pgsluice"].as_table().unwrap();
        assert_eq!(g["listen_addr"].as_str(), Some("0.0.0.0"));
        assert_eq!(g["pool_mode"].as_str(), Some("transaction"));
        assert_eq!(g["max_client_conn"].as_integer(), Some(1000));
        assert_eq!(g["reserve_pool_timeout"].as_float(), Some(3.5));
        assert_eq!(g["server_reset_query_always"].as_bool(), Some(true));
        let app = doc["databases"]["app"].as_table().unwrap();
        assert_eq!(app["port"].as_integer(), Some(5433));
        assert_eq!(app["reserve_pool_size"].as_integer(), Some(5));
        assert_eq!(doc["users"]["report"]["max_user_connections"].as_integer(), Some(4));
        assert_eq!(c.unsupported, vec!["[databases] app: connect_query", "[pgbouncer] logfile"]);
    }

    #[test]
    fn auth_type_any_is_carried_over() {
        let ini = "[databases]\napp = host=db user=app_owner password=pw\n[pgbouncer]\nauth_type = any\n";
        let c = convert(ini).unwrap();
        assert!(c.unsupported.is_empty(), "{:?}", c.unsupported);
        let config = crate::config::Config::from_toml_str(&c.toml, std::path::Path::new("pgbouncer.ini")).unwrap();
        assert_eq!(config.general.auth_type, crate::config::AuthType::Any);
    }

    #[test]
    fn session_state_is_read_in_every_section() {
        let ini = "[pgbouncer]\nauth_type = trust\nsession_state = refuse\npinned_idle_timeout = 30\npool_mode = transaction\n\
                   [databases]\napp = host=h session_state=leak\nother = host=h\n\
                   [users]\nalice = session_state=isolate\n";
        let c = convert(ini).unwrap();
        assert!(c.unsupported.is_empty(), "{:?}", c.unsupported);
        let config = crate::config::Config::from_toml_str(&c.toml, std::path::Path::new("pgbouncer.ini")).unwrap();
        use crate::config::SessionStatePolicy::*;
        assert_eq!((config.general.session_state, config.general.pinned_idle_timeout.as_secs()), (Refuse, 30));
        let policy = |db: &str, user: &str| config.pool_settings(db, user).map(|s| s.session_state);
        assert_eq!(policy("app", "bob"), Some(Leak));
        assert_eq!(policy("other", "bob"), Some(Refuse));
        assert_eq!(policy("app", "alice"), Some(Isolate), "a user's entry wins, as for pool_mode");
    }

    #[test]
    fn pool_mode_defaults_to_pgbouncers_session() {
        let c = convert("[databases]\nx = host=h\n").unwrap();
        assert!(c.toml.contains("pool_mode = \"session\""), "{}", c.toml);
    }
}
