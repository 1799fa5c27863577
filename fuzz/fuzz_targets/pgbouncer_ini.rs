//! pgbouncer.ini: `pgbouncer_ini::convert` on arbitrary text. What it writes is always TOML, and when
//! that loads, the config passes `config_common::check_loaded`.
#![no_main]

#[path = "config_common.rs"]
mod config_common;

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pgsluice::config::{Config, pgbouncer_ini};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(converted) = pgbouncer_ini::convert(text) else {
        return;
    };
    if let Err(e) = converted.toml.parse::<toml::Table>() {
        panic!("convert wrote text that is not TOML: {e}\n{}", converted.toml);
    }
    if let Ok(config) = Config::from_toml_str(&converted.toml, Path::new("/etc/pgbouncer/pgbouncer.ini")) {
        config_common::check_loaded(&config);
    }
});
