//! Checks of a parsed config that serde cannot express: ranges, addresses, and settings that only make
//! sense together. Every error names the file, the key (as `section.key`) and why.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use super::auth_file::Secret;
use super::{AuthType, Config, ConfigError, DatabaseConfig};

/// The most hosts one database entry may list.
const MAX_HOSTS: usize = 16;

impl Config {
    pub(super) fn invalid(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { path: self.path.clone(), key: key.into(), reason: reason.into() }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let g = &self.general;
        if let Err(reason) = check_listen_addr(&g.listen_addr) {
            return Err(self.invalid("pgsluice.listen_addr", reason));
        }
        if g.listen_port == 0 {
            return Err(self.invalid("pgsluice.listen_port", "must be 1..65535"));
        }
        if let Some(addr) = &g.metrics_addr
            && let Err(reason) = check_host_port(addr)
        {
            return Err(self.invalid("pgsluice.metrics_addr", reason));
        }
        if !g.unix_socket_dir.is_empty() && !g.unix_socket_dir.starts_with('/') {
            let why = "must be an absolute directory, or empty for no Unix socket (the abstract namespace, @name, is not supported)";
            return Err(self.invalid("pgsluice.unix_socket_dir", why));
        }
        if g.unix_socket_mode_bits().is_none() {
            return Err(self.invalid("pgsluice.unix_socket_mode", "must be an octal mode such as \"0777\""));
        }
        if g.default_pool_size == 0 {
            return Err(self.invalid("pgsluice.default_pool_size", "must be at least 1"));
        }
        // Above PostgreSQL's largest message (PgBouncer's default is 2147483647) it is capped: see warnings.
        if g.max_packet_size < 1024 {
            return Err(self.invalid("pgsluice.max_packet_size", "must be at least 1024"));
        }
        if g.max_held_message_size < 1024 {
            return Err(self.invalid("pgsluice.max_held_message_size", "must be at least 1024"));
        }
        if g.workers > 1024 {
            return Err(self.invalid("pgsluice.workers", "must be at most 1024"));
        }
        let needs_secrets = matches!(g.auth_type, AuthType::Plain | AuthType::Md5 | AuthType::ScramSha256);
        if needs_secrets && g.auth_file.is_none() && g.auth_user.is_none() {
            let name = g.auth_type.as_str();
            return Err(self.invalid(
                "pgsluice.auth_file",
                format!("auth_type = \"{name}\" needs an auth_file with the users' secrets (or auth_type = \"trust\")"),
            ));
        }
        if g.auth_type == AuthType::Hba && g.auth_hba_file.is_none() {
            return Err(self.invalid("pgsluice.auth_hba_file", "auth_type = \"hba\" needs an auth_hba_file"));
        }
        if g.auth_type == AuthType::Cert && !(g.client_tls_sslmode.requires_tls() && g.client_tls_ca_file.is_some()) {
            let why = "auth_type = \"cert\" needs client_tls_sslmode = \"verify-full\" (or require/verify-ca) and a client_tls_ca_file";
            return Err(self.invalid("pgsluice.auth_type", why));
        }
        // PgBouncer: `any` "requires that all databases are configured to log in as a specific user".
        if g.auth_type == AuthType::Any
            && let Some((name, _)) = self.databases.iter().find(|(_, db)| db.user.is_none())
        {
            return Err(self.invalid(
                format!("databases.{name}.user"),
                "auth_type = \"any\" ignores the client's user name, so every database entry needs a user to log in as",
            ));
        }
        for (name, db) in &self.databases {
            self.check_database(name, db)?;
        }
        self.check_peers()?;
        for (name, u) in &self.users {
            if u.pool_size == Some(0) {
                return Err(self.invalid(format!("users.{name}.pool_size"), "must be at least 1"));
            }
        }
        Ok(())
    }

    /// One `[databases]` entry: its host (list), port, pool size and password.
    fn check_database(&self, name: &str, db: &DatabaseConfig) -> Result<(), ConfigError> {
        if db.host.trim().is_empty() {
            return Err(self.invalid(format!("databases.{name}.host"), "must not be empty"));
        }
        if db.host.trim().starts_with('@') {
            let why = "a Unix socket in the abstract namespace: not supported (use a directory such as \"/var/run/postgresql\")";
            return Err(self.invalid(format!("databases.{name}.host"), why));
        }
        let hosts: Vec<&str> = db.host.split(',').map(str::trim).collect();
        if hosts.len() > MAX_HOSTS || hosts.iter().any(|h| h.is_empty() || h.starts_with('@')) {
            let why = format!("a host list has 1 to {MAX_HOSTS} hosts, none empty or in the abstract namespace");
            return Err(self.invalid(format!("databases.{name}.host"), why));
        }
        if db.port == 0 {
            return Err(self.invalid(format!("databases.{name}.port"), "must be 1..65535"));
        }
        if db.pool_size == Some(0) {
            return Err(self.invalid(format!("databases.{name}.pool_size"), "must be at least 1"));
        }
        if db.password.as_deref().map(Secret::parse).is_some_and(|s| matches!(s, Secret::Scram(_))) {
            return Err(self.invalid(
                format!("databases.{name}.password"),
                "a SCRAM verifier cannot log in to a server (it does not reveal the password): give the \
                 password, or its md5 hash (\"md5\" + md5(password || user)) for an md5 server",
            ));
        }
        Ok(())
    }

    /// What the config sets that pgsluice accepts, as PgBouncer does, but does not do as written: a
    /// min_pool_size above the pool size it goes with (capped at the pool size) and a max_packet_size
    /// above PostgreSQL's largest message (capped at it). One line each, for the log.
    pub fn warnings(&self) -> Vec<String> {
        let g = &self.general;
        let mut out = Vec::new();
        let max_message = crate::protocol::frame::MAX_MESSAGE_LEN;
        if g.max_packet_size > max_message {
            out.push(format!(
                "max_packet_size {} is more than PostgreSQL's largest message: {max_message} is used",
                g.max_packet_size
            ));
        }
        if self.databases.is_empty() && g.min_pool_size > g.default_pool_size {
            out.push(format!(
                "min_pool_size {} is more than default_pool_size {}: pools keep at most {} open, as PgBouncer's do",
                g.min_pool_size, g.default_pool_size, g.default_pool_size
            ));
        }
        for (db_name, db) in &self.databases {
            self.min_pool_warnings(db_name, db, &mut out);
        }
        out
    }

    /// What `--check` adds to `warnings`: what loads but will only fail later. A console user
    /// (`admin_users`, `stats_users`) with no secret in the auth file cannot log in where passwords are
    /// asked (unless auth_query may find one); a server host that does not resolve fails every
    /// connection to it. Resolves names (blocking): for `--check` only, not for a running pooler.
    pub fn check_warnings(&self, auth: &super::auth_file::AuthFile) -> Vec<String> {
        let g = &self.general;
        let mut out = Vec::new();
        let asks_password = matches!(g.auth_type, AuthType::Plain | AuthType::Md5 | AuthType::ScramSha256);
        if asks_password && g.auth_user.is_none() {
            for (key, users) in [("admin_users", &g.admin_users), ("stats_users", &g.stats_users)] {
                for user in users.iter().filter(|u| auth.get(u).is_none()) {
                    out.push(format!("{key}: {user:?} is not in the auth file, so it cannot log in to the console"));
                }
            }
        }
        for (name, db) in &self.databases {
            // A directory is a Unix-socket host (as server/ reads it): nothing to resolve.
            for host in super::resolve::host_list(&db.host).filter(|h| !h.starts_with('/')) {
                let resolves =
                    std::net::ToSocketAddrs::to_socket_addrs(&(host, db.port)).is_ok_and(|mut a| a.next().is_some());
                if !resolves {
                    out.push(format!("databases.{name}: host {host:?} does not resolve; connections to it will fail"));
                }
            }
        }
        out
    }

    /// min_pool_size of `db` against the pool sizes that go with it: the forced user's `[users]` entry,
    /// else the entry's own (or default_pool_size), and for a database without a forced user each
    /// `[users]` pool_size (the pools of those users).
    fn min_pool_warnings(&self, db_name: &str, db: &DatabaseConfig, out: &mut Vec<String>) {
        let g = &self.general;
        let min = db.min_pool_size.unwrap_or(g.min_pool_size);
        let forced = db.user.as_ref().and_then(|u| self.users.get(u)).and_then(|u| u.pool_size);
        let size = forced.or(db.pool_size).unwrap_or(g.default_pool_size);
        if min > size {
            out.push(format!(
                "database {db_name}: min_pool_size {min} is more than its pool size {size}: its pools keep at most {size} open, as PgBouncer's do"
            ));
        }
        if db.user.is_some() {
            return;
        }
        for (user_name, u) in &self.users {
            if let Some(size) = u.pool_size
                && min > size
            {
                out.push(format!(
                    "user {user_name}: pool_size {size} is less than min_pool_size {min} of database {db_name}: that pool keeps at most {size} open, as PgBouncer's does"
                ));
            }
        }
    }
}

/// PgBouncer's `listen_addr = *` (all addresses) is bound as 0.0.0.0, as `--pgbouncer-ini` does.
pub(super) fn normalize_listen_addr(addr: &mut String) {
    if addr.trim() == "*" {
        *addr = "0.0.0.0".into();
    }
}

/// An IP address (IPv6 with or without brackets) or a host name; one only.
fn check_listen_addr(addr: &str) -> Result<(), String> {
    if addr.contains(',') {
        return Err(format!("{addr:?}: one address only (a list of addresses is not supported)"));
    }
    if valid_host(addr) {
        Ok(())
    } else {
        Err(format!("{addr:?} is not an IP address or host name (\"*\" or \"0.0.0.0\" = all addresses)"))
    }
}

/// `host:port`, as the metrics endpoint binds it.
fn check_host_port(addr: &str) -> Result<(), String> {
    let expected = || format!("{addr:?} is not host:port (e.g. \"127.0.0.1:9127\")");
    let port = match addr.parse::<SocketAddr>() {
        Ok(sa) => sa.port(),
        Err(_) => {
            let (host, port) = addr.rsplit_once(':').ok_or_else(expected)?;
            if !valid_host(host) {
                return Err(expected());
            }
            port.parse::<u16>().map_err(|_| expected())?
        }
    };
    if port == 0 {
        return Err(format!("{addr:?}: the port must be 1..65535"));
    }
    Ok(())
}

fn valid_host(host: &str) -> bool {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    if let Some(inner) = bare {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    host.parse::<IpAddr>().is_ok() || valid_hostname(host)
}

/// RFC 1123 host name: dot-separated labels of letters, digits, '-' (and '_'), not all-numeric at the end
/// (so a mistyped IPv4 address such as 10.0.0.256 is not taken for a name).
fn valid_hostname(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(label_ok)
        && host.rsplit('.').next().is_some_and(|last| !last.bytes().all(|b| b.is_ascii_digit()))
}

/// A TOML or type error from serde as `file: key `section.key`: reason (line N)` when toml knows the key;
/// syntax errors keep toml's own report (line, column and the offending text).
pub(super) fn parse_error(path: &Path, text: &str, e: toml::de::Error) -> ConfigError {
    // toml prints the key path (`in `a.b``) only when it has no input to quote.
    let mut bare = e.clone();
    bare.set_input(None);
    let shown = bare.to_string();
    let parents = shown.lines().last().and_then(|l| l.strip_prefix("in `")).and_then(|l| l.strip_suffix('`'));
    let message = e.message();
    // An unknown key is reported by its name, with the table it is in as the path.
    let unknown = message.strip_prefix("unknown field `").and_then(|m| m.split_once('`'));
    let (key, reason) = match (parents, unknown) {
        (Some(p), Some((leaf, rest))) => (format!("{p}.{leaf}"), unknown_key(leaf, rest)),
        (None, Some((leaf, rest))) => (leaf.to_string(), unknown_key(leaf, rest)),
        (Some(p), None) => (p.to_string(), message.to_string()),
        (None, None) => return ConfigError::Parse { path: path.into(), message: e.to_string() },
    };
    let line = e.span().map(|s| text.get(..s.start).unwrap_or(text).matches('\n').count() + 1);
    let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
    ConfigError::Invalid { path: path.into(), key, reason: format!("{reason}{at}") }
}

/// "unknown key", with serde's list of the expected keys when it is short, else the nearest one.
fn unknown_key(key: &str, expected: &str) -> String {
    let names: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    if names.len() <= 12 {
        return format!("unknown key{expected}");
    }
    match names.iter().map(|n| (edit_distance(key, n), *n)).min() {
        Some((d, near)) if d <= 3 => format!("unknown key (did you mean `{near}`?)"),
        _ => "unknown key (conf/pgsluice.toml lists every key)".into(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
