//! The console's `SET key = value`: one `[pgsluice]` setting changed in a copy of the running config,
//! validated as a file would be. Every PgBouncer setting name is known: one pgsluice does not have is
//! refused as such, never as an unknown setting.

use std::path::Path;

use serde::Deserialize;

use super::pgbouncer_names::is_pgbouncer_setting;
use super::{Config, General, validate};

/// Why a SET was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    /// Neither a pgsluice nor a PgBouncer setting.
    #[error("unknown setting \"{0}\"")]
    Unknown(String),
    /// A PgBouncer setting pgsluice does not have.
    #[error("{0} is a PgBouncer setting that pgsluice does not support")]
    NotSupported(String),
    /// A setting pgsluice has, with a value it cannot take.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// This config with one `[pgsluice]` setting changed (the console's SET), validated as a file would be.
    /// The value may be quoted ('...'); a file name is taken relative to the config file's directory.
    pub fn with_setting(&self, key: &str, raw: &str) -> Result<Config, SetError> {
        if !General::keys().contains(&key) {
            return Err(match is_pgbouncer_setting(key) {
                true => SetError::NotSupported(key.to_string()),
                false => SetError::Unknown(key.to_string()),
            });
        }
        let invalid = |m: String| SetError::Invalid(m);
        let mut table = match toml::Value::try_from(&self.general) {
            Ok(toml::Value::Table(t)) => t,
            _ => return Err(invalid("cannot read the running settings".into())),
        };
        let raw = raw.trim();
        let raw = raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')).unwrap_or(raw);
        // A setting that is unset now (auth_file, metrics_addr, ...) takes text.
        let value = match table.get(key) {
            Some(toml::Value::Integer(_) | toml::Value::Float(_)) => match raw.parse::<i64>() {
                Ok(i) => toml::Value::Integer(i),
                Err(_) => toml::Value::Float(
                    raw.parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite())
                        .ok_or_else(|| invalid(format!("{key}: {raw:?} is not a number")))?,
                ),
            },
            Some(toml::Value::Boolean(_)) => toml::Value::Boolean(match raw.to_ascii_lowercase().as_str() {
                "1" | "on" | "true" | "yes" => true,
                "0" | "off" | "false" | "no" => false,
                _ => return Err(invalid(format!("{key}: {raw:?} is not a boolean"))),
            }),
            _ => toml::Value::String(raw.to_string()),
        };
        table.insert(key.to_string(), value);
        let mut general =
            General::deserialize(toml::Value::Table(table)).map_err(|e| invalid(format!("{key}: {e}")))?;
        validate::normalize_listen_addr(&mut general.listen_addr);
        general.resolve_paths(self.path.parent().unwrap_or(Path::new(".")));
        general.clear_empty_names();
        let config = Config { general, ..self.clone() };
        config.validate().map_err(|e| invalid(e.to_string()))?;
        Ok(config)
    }
}
