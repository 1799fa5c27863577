//! The file-level part: `@file` includes, the ident map, and never panicking on any text.

use super::*;

// ---- @file includes ----

#[test]
fn include_files() {
    let files = Files::new(&[
        ("dbs.txt", "db1, db2\n# comment\n\ndb3 # trailing\n\"quoted db\"\n"),
        ("users.txt", "alice,@more/users2.txt\n"),
        ("more/users2.txt", "bob\n@deeper.txt\n"),
        ("more/deeper.txt", "carol\n"),
        ("/etc/abs.txt", "all\n"),
    ]);
    let read = |p: &str| files.read(p);
    let text = "host @dbs.txt @users.txt 0.0.0.0/0 md5\nlocal @/etc/abs.txt dave trust\n";
    let rules = HbaRules::parse(text, None, &read).expect("parse").into_strict().expect("strict");
    let m = |db, user| method(&rules, tcp("1.1.1.1", false), db, user);
    for db in ["db1", "db2", "db3", "quoted db"] {
        for user in ["alice", "bob", "carol"] {
            assert_eq!(m(db, user), Some(HbaMethod::Md5), "{db} {user}");
        }
    }
    assert_eq!(m("db4", "alice"), None);
    assert_eq!(m("db1", "dave"), None);
    // keywords work inside an included file
    assert_eq!(method(&rules, ConnKind::Local, "anything", "dave"), Some(HbaMethod::Trust));
    // nested includes resolve relative to the including file's directory
    let reads = files.reads.borrow().clone();
    assert!(reads.contains(&"more/deeper.txt".to_string()), "{reads:?}");
}

#[test]
fn include_files_are_read_once() {
    let files = Files::new(&[("u.txt", "alice\n")]);
    let read = |p: &str| files.read(p);
    let text = "local all @u.txt trust\nhost all @u.txt all md5\nhost @u.txt all all md5\n";
    let rules = HbaRules::parse(text, None, &read).expect("parse").into_strict().expect("strict");
    assert_eq!(rules.rules().len(), 3);
    assert_eq!(files.reads.borrow().len(), 1);
    // the same file as a database list
    assert_eq!(method(&rules, tcp("1.1.1.1", false), "alice", "x"), Some(HbaMethod::Md5));
}

#[test]
fn include_errors() {
    let files = Files::new(&[
        ("loop1", "@loop2\n"),
        ("loop2", "x,@loop1\n"),
        ("spaces", "alice bob\n"),
        ("group", "+admins\n"),
        ("bad", "ok\n\"open\n"),
        ("self", "@self\n"),
        ("nul", "a\0b\n"),
    ]);
    let read = |p: &str| files.read(p);
    let cases = [
        ("local @missing all trust", "cannot read @missing"),
        ("local @loop1 all trust", "includes itself"),
        ("local @self all trust", "includes itself"),
        ("local all @spaces trust", "in @spaces line 1: unexpected 'bob'"),
        ("local all @group trust", "in @group line 1: group membership"),
        ("local all @bad trust", "in @bad line 2: unterminated"),
        ("local all @nul trust", "in @nul line 1: the line contains a NUL"),
    ];
    for (text, want) in cases {
        let (line, reason) = line_error_with(&format!("#\n{text}\n"), None, &read);
        assert_eq!(line, 2, "{text}");
        assert!(reason.contains(want), "{text}: {reason}");
    }
}

#[test]
fn include_depth_is_bounded() {
    // f1 includes f2 ... f{n-1} includes f{n}; f{n} holds a name
    let chain = |n: usize| {
        let mut files: Vec<(String, String)> = (1..n).map(|i| (format!("f{i}"), format!("@f{}\n", i + 1))).collect();
        files.push((format!("f{n}"), "alice\n".to_string()));
        files
    };
    let ok = chain(MAX_INCLUDE_DEPTH);
    let ok: Vec<(&str, &str)> = ok.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let files = Files::new(&ok);
    let read = |p: &str| files.read(p);
    let rules = HbaRules::parse("local all @f1 trust\n", None, &read).expect("parse");
    assert_eq!(rules.line_errors(), &[]);
    assert_eq!(method(&rules, ConnKind::Local, "d", "alice"), Some(HbaMethod::Trust));

    let deep = chain(MAX_INCLUDE_DEPTH + 1);
    let deep: Vec<(&str, &str)> = deep.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let files = Files::new(&deep);
    let read = |p: &str| files.read(p);
    let (_, reason) = line_error_with("local all @f1 trust\n", None, &read);
    assert!(reason.contains("nest more than 10"), "{reason}");
    // a file that parsed fine once is still held to the bound when named deeper down
    let text = "local all @f2 trust\nlocal all @f1 trust\n";
    let rules = HbaRules::parse(text, None, &read).expect("parse");
    assert_eq!(rules.rules().len(), 1);
    assert!(matches!(rules.line_errors(), [HbaError::Line { line: 2, .. }]), "{:?}", rules.line_errors());
}

#[test]
fn load_reads_includes_relative_to_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sub = dir.path().join("conf");
    std::fs::create_dir(&sub).expect("mkdir");
    std::fs::write(sub.join("users.txt"), "alice\n").expect("write");
    std::fs::write(sub.join("ident.conf"), "m sys alice\n").expect("write");
    std::fs::write(sub.join("hba.conf"), "local all @users.txt peer map=m\n").expect("write");
    let ident = IdentMap::load(&sub.join("ident.conf")).expect("ident");
    let rules = load(&sub.join("hba.conf"), Some(&ident)).expect("load").into_strict().expect("strict");
    assert_eq!(method(&rules, ConnKind::Local, "d", "alice"), Some(HbaMethod::Peer));
    assert!(matches!(load(&sub.join("missing.conf"), None), Err(HbaError::Read { .. })));
    assert!(matches!(IdentMap::load(&sub.join("missing.conf")), Err(HbaError::Read { .. })));
    std::fs::write(sub.join("bin.conf"), [0xff, 0xfe]).expect("write");
    assert!(matches!(load(&sub.join("bin.conf"), None), Err(HbaError::Read { .. })));
}

// ---- ident map ----

#[test]
fn ident_exact_and_all() {
    let ident = ident_with(
        "# MAPNAME SYSTEM-USERNAME PG-USERNAME\n\
         \n\
         gui   user   bottom\n\
         gui   user2  rapouille  # comment\n\
         gui   user   top\n\
         other \"sys name\" \"db \"\"user\"\"\"\n\
         wide  root   all\n",
    );
    assert!(ident.allows("gui", "user", "bottom"));
    assert!(ident.allows("gui", "user", "top"));
    assert!(ident.allows("gui", "user2", "rapouille"));
    assert!(!ident.allows("gui", "user2", "bottom"));
    assert!(!ident.allows("gui", "nobody", "bottom"));
    assert!(!ident.allows("nomap", "user", "bottom"));
    assert!(ident.allows("other", "sys name", "db \"user\""));
    assert!(ident.allows("wide", "root", "anyone"));
    assert!(!ident.allows("wide", "notroot", "anyone"));
    assert!(ident.has_map("gui") && !ident.has_map("GUI"));
}

#[test]
fn ident_quoted_all_is_a_name() {
    let ident = ident_with("m sys \"all\"\n");
    assert!(ident.allows("m", "sys", "all"));
    assert!(!ident.allows("m", "sys", "bob"));
}

#[test]
fn ident_errors_name_the_line() {
    let long = "y".repeat(MAX_NAME_LEN + 1);
    let cases = [
        ("mymap /^(.*)@example\\.com$ \\1".to_string(), "regular expression"),
        ("mymap sys /^db.*$".to_string(), "regular expression"),
        ("mymap sys +admins".to_string(), "+admins"),
        ("mymap sys".to_string(), "expected a database user name"),
        ("mymap".to_string(), "expected a system user name"),
        ("mymap sys user extra".to_string(), "unexpected 'extra'"),
        ("\"mymap\" sys user".to_string(), "expected a map name"),
        ("include other.conf".to_string(), "'include' directives"),
        ("include_dir conf.d".to_string(), "'include_dir' directives"),
        ("mymap sys \"open".to_string(), "unterminated"),
        (format!("mymap sys {long}"), "longer than 63"),
        (format!("{long} sys user"), "longer than 63"),
        (format!("mymap {} user", "z".repeat(MAX_SYSTEM_NAME_LEN + 1)), "longer than 255"),
        ("mymap sys user\0".to_string(), "NUL"),
    ];
    for (text, want) in cases {
        let map = IdentMap::parse(&format!("ok a b\n{text}\nok2 c d\n")).expect("parse");
        match map.line_errors() {
            [HbaError::Line { line: 2, reason }] => assert!(reason.contains(want), "{text}: {reason}"),
            other => panic!("{text}: {other:?}"),
        }
        // PgBouncer skips the line and keeps the others
        assert!(map.allows("ok", "a", "b") && map.allows("ok2", "c", "d"), "{text}");
        assert!(map.clone().into_strict().is_err());
    }
    // a quoted system name may start with '/', and a map may be called "include"
    let ident = ident_with("m \"/literal\" u\ninclude a b\n");
    assert!(ident.allows("m", "/literal", "u"));
    assert!(ident.allows("include", "a", "b"));
}

// ---- never panic ----

fn token_soup() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        Just("local"),
        Just("host"),
        Just("hostssl"),
        Just("hostnossl"),
        Just("all"),
        Just("sameuser"),
        Just("replication"),
        Just("@f"),
        Just("@g"),
        Just("+g"),
        Just("10.0.0.0/8"),
        Just("::1/128"),
        Just("255.255.0.0"),
        Just("1.2.3.4"),
        Just("/"),
        Just("md5"),
        Just("trust"),
        Just("ldap"),
        Just("cert"),
        Just("map=m"),
        Just(","),
        Just("\""),
        Just("\"\""),
        Just("#"),
        Just("\\"),
        Just("\n"),
        Just("é"),
    ];
    prop::collection::vec(word, 0..40).prop_map(|w| w.join(" "))
}

proptest! {
    #[test]
    fn parsing_anything_never_panics(text in prop_oneof![token_soup(), any::<String>()], inc in token_soup()) {
        let ident = IdentMap::parse(&text).expect("small input");
        let files = Files::new(&[("f", &inc), ("g", "@f\n@g\n")]);
        let read = |p: &str| files.read(p);
        let rules = HbaRules::parse(&text, Some(&ident), &read).expect("small input");
        for e in rules.line_errors() {
            prop_assert!(matches!(e, HbaError::Line { .. }), "not a line error: {}", e);
        }
        let _ = rules.find(&req(ConnKind::Local, "d", "u"));
    }

    #[test]
    fn matching_anything_never_panics(
        text in token_soup(),
        ip in any::<[u8; 16]>(),
        v4 in any::<bool>(),
        tls in any::<bool>(),
        local in any::<bool>(),
        db in "\\PC{0,70}",
        user in "\\PC{0,70}",
        repl in 0u8..3,
        system in "\\PC{0,20}",
    ) {
        let ident = IdentMap::parse(&text).expect("small input");
        let rules = HbaRules::parse(&text, Some(&ident), &no_include).expect("small input");
        let addr = if v4 {
            IpAddr::from([ip[0], ip[1], ip[2], ip[3]])
        } else {
            IpAddr::from(ip)
        };
        let kind = if local { ConnKind::Local } else { ConnKind::Tcp { addr, tls } };
        let replication = [Replication::None, Replication::Logical, Replication::Physical][usize::from(repl)];
        let found = rules.find(&HbaRequest { kind, database: &db, user: &user, replication });
        if let Some(map) = found.and_then(|rule| rule.ident_map.as_deref()) {
            let _ = ident.allows(map, &system, &user);
        }
    }
}
