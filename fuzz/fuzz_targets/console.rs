//! The admin console's commands: a simple Query's text as src/admin/mod.rs reads it (whole message,
//! NUL stripped, lossy UTF-8) into `AdminCommand::parse`, and a SET's `key = value` (split as
//! src/admin/control.rs splits it) into `Config::with_setting` on the reference config. A setting that
//! applied must show its new value through the same serialization SHOW CONFIG uses.
//!
//! Input: the text of one command (or several, one per line).
#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use pgsluice::admin::AdminCommand;
use pgsluice::config::Config;

static REFERENCE: LazyLock<Config> = LazyLock::new(|| {
    let text = include_str!("../../conf/pgsluice.toml");
    Config::from_toml_str(text, Path::new("/etc/pgsluice/pgsluice.toml")).expect("conf/pgsluice.toml loads")
});

fn check_command(sql: &str) {
    match AdminCommand::parse(sql) {
        AdminCommand::Empty => assert!(sql.trim().trim_end_matches(';').trim().is_empty()),
        AdminCommand::Show(what) => assert_eq!(what, what.to_ascii_uppercase()),
        AdminCommand::Control { verb, args } if verb == "SET" => check_set(&args.join(" ")),
        AdminCommand::Control { verb, .. } => assert_eq!(verb, verb.to_ascii_uppercase()),
        AdminCommand::Unknown(_) => {}
    }
}

fn check_set(text: &str) {
    let Some((key, value)) = text.split_once('=').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
    else {
        return;
    };
    if let Ok(config) = REFERENCE.with_setting(&key, &value) {
        let shown = toml::Value::try_from(&config.general).expect("the settings serialize");
        // An empty value unsets an optional setting (a file, a user), which TOML then leaves out.
        let unset = value.trim_matches(|c| c == '\'' || c == '"').trim().is_empty();
        assert!(shown.get(&key).is_some() || unset, "SET {key} applied but SHOW CONFIG has no {key}");
    }
}

fuzz_target!(|data: &[u8]| {
    // src/admin/mod.rs: the Query body without its NUL, lossy UTF-8.
    let body = data.strip_suffix(&[0]).unwrap_or(data);
    let sql = String::from_utf8_lossy(body);
    check_command(&sql);
    for line in sql.lines() {
        check_command(line);
    }
});
