//! The auth file (PgBouncer's userlist.txt): `AuthFile::parse` and `Secret::parse` on arbitrary text.
//! A line that parsed names a user the file then knows, unless a later line names it again.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pgsluice::config::auth_file::{AuthFile, Secret};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines() {
        let _ = Secret::parse(line.trim());
    }
    let Ok(file) = AuthFile::parse(text, Path::new("userlist.txt")) else {
        return;
    };
    let lines = text.lines().filter(|l| {
        let l = l.trim();
        !l.is_empty() && !l.starts_with(';') && !l.starts_with('#')
    });
    assert!(file.len() <= lines.count(), "more users than lines");
    // The simplest lines, `"user" "secret"` without quotes inside: the user is known.
    for line in text.lines().map(str::trim) {
        let mut parts = line.split('"');
        if let (Some(""), Some(user), Some(" "), Some(_), Some(""), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
            && !user.is_empty()
        {
            assert!(file.get(user).is_some(), "user {user:?} of line {line:?} is unknown");
        }
    }
});
