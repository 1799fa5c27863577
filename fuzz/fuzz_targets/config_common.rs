//! Checks shared by the config targets: what a config that loaded must allow.
#![allow(dead_code)]

use std::path::Path;

use pgsluice::config::Config;

pub const CONFIG_PATH: &str = "/etc/pgsluice/pgsluice.toml";

/// Every pool of a config that loaded resolves, and its `[pgsluice]` settings, written out, load again
/// (what the console's SET and SHOW CONFIG rely on).
pub fn check_loaded(config: &Config) {
    let users: Vec<&str> = config.users.keys().map(String::as_str).chain(["app", "nobody"]).collect();
    for db in config.databases.keys().map(String::as_str).chain(["app", "not_configured"]) {
        for user in &users {
            let settings = config.pool_settings(db, user);
            if config.databases.contains_key(db) {
                assert!(settings.is_some(), "configured database {db:?} has no pool settings");
            }
        }
    }
    let general = toml::Value::try_from(&config.general).expect("the settings serialize");
    let mut file = toml::Table::new();
    file.insert("pgsluice".into(), general);
    let text = toml::to_string(&file).expect("the settings serialize as TOML");
    if let Err(e) = Config::from_toml_str(&text, Path::new(CONFIG_PATH)) {
        panic!("settings that loaded do not load again: {e}\n{text}");
    }
}
