//! The HBA and ident files (`auth_hba_file`, `auth_ident_file`): parsing arbitrary text, with `@file`
//! includes answered from the same text, then matching arbitrary requests. Never a panic; a rule
//! found is one of the parsed rules; `into_strict` fails exactly when some line was skipped.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use pgsluice::auth::hba::{ConnKind, HbaRequest, HbaRules, IdentMap, Replication};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (hba_text, ident_text) = text.split_once("\n---\n").unwrap_or((text, ""));
    let ident = IdentMap::parse(ident_text).ok();
    let include = |name: &str| if name.len() % 2 == 0 { Ok(hba_text.to_string()) } else { Err("no such file".to_string()) };
    let Ok(rules) = HbaRules::parse(hba_text, ident.as_ref(), &include) else {
        return;
    };
    let words: Vec<&str> = hba_text.split_whitespace().take(8).collect();
    let pick = |i: usize| words.get(i).copied().unwrap_or("app");
    let kinds = [
        ConnKind::Local,
        ConnKind::Tcp { addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), tls: false },
        ConnKind::Tcp { addr: IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)), tls: true },
        ConnKind::Tcp { addr: IpAddr::V6(Ipv6Addr::LOCALHOST), tls: true },
    ];
    for (i, kind) in kinds.into_iter().enumerate() {
        for replication in [Replication::None, Replication::Physical] {
            let req = HbaRequest { kind, database: pick(i), user: pick(i + 1), replication };
            if let Some(rule) = rules.find(&req) {
                assert!(rules.rules().iter().any(|r| std::ptr::eq(r, rule)), "a rule of the file");
            }
        }
    }
    if let Some(m) = &ident {
        let _ = m.allows(pick(0), pick(1), pick(2));
    }
    let skipped = !rules.line_errors().is_empty();
    assert_eq!(rules.into_strict().is_err(), skipped);
});
