//! The TOML config: `Config::from_toml_str` (parse, normalize, validate) on arbitrary text, then what a
//! config that loaded must allow (see `config_common::check_loaded`).
#![no_main]

#[path = "config_common.rs"]
mod config_common;

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pgsluice::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::from_toml_str(text, Path::new(config_common::CONFIG_PATH)) {
        config_common::check_loaded(&config);
    }
});
