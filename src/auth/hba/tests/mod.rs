use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;

use proptest::prelude::*;

use super::*;

fn no_include(path: &str) -> Result<String, String> {
    Err(format!("no file {path} in this test"))
}

/// Parses, insisting that no line was skipped.
fn strict(text: &str) -> HbaRules {
    HbaRules::parse(text, None, &no_include).expect("parse").into_strict().expect("no line errors")
}

/// Parses with an ident map, insisting that no line was skipped.
fn strict_with(text: &str, ident: &IdentMap) -> HbaRules {
    HbaRules::parse(text, Some(ident), &no_include).expect("parse").into_strict().expect("no line errors")
}

/// The one skipped line of `text`: its number and reason.
fn line_error(text: &str) -> (usize, String) {
    line_error_with(text, None, &no_include)
}

fn line_error_with(text: &str, ident: Option<&IdentMap>, include: &Reader<'_>) -> (usize, String) {
    let rules = HbaRules::parse(text, ident, include).expect("parse");
    match rules.line_errors() {
        [HbaError::Line { line, reason }] => (*line, reason.clone()),
        other => panic!("expected one line error, got {other:?}"),
    }
}

fn tcp(ip: &str, tls: bool) -> ConnKind {
    ConnKind::Tcp { addr: ip.parse::<IpAddr>().expect("ip"), tls }
}

fn req<'a>(kind: ConnKind, database: &'a str, user: &'a str) -> HbaRequest<'a> {
    HbaRequest { kind, database, user, replication: Replication::None }
}

/// The method of the line that applies, or `None`.
fn method(rules: &HbaRules, kind: ConnKind, database: &str, user: &str) -> Option<HbaMethod> {
    rules.find(&req(kind, database, user)).map(|r| r.method)
}

/// The line number that applies, or `None`.
fn line_of(rules: &HbaRules, kind: ConnKind, database: &str, user: &str) -> Option<usize> {
    rules.find(&req(kind, database, user)).map(|r| r.line)
}

/// A reader over an in-memory set of files that counts reads.
struct Files {
    files: HashMap<String, String>,
    reads: RefCell<Vec<String>>,
}

impl Files {
    fn new(files: &[(&str, &str)]) -> Self {
        Files {
            files: files.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            reads: RefCell::new(Vec::new()),
        }
    }

    fn read(&self, path: &str) -> Result<String, String> {
        self.reads.borrow_mut().push(path.to_string());
        self.files.get(path).cloned().ok_or_else(|| "no such file".to_string())
    }
}

// ---- matching ----

#[test]
fn first_matching_line_wins() {
    let rules = strict(
        "host all alice 10.0.0.0/8 reject\n\
         host all all 10.0.0.0/8 md5\n\
         host all all 0.0.0.0/0 trust\n",
    );
    assert_eq!(method(&rules, tcp("10.1.2.3", false), "db", "alice"), Some(HbaMethod::Reject));
    assert_eq!(line_of(&rules, tcp("10.1.2.3", false), "db", "bob"), Some(2));
    assert_eq!(line_of(&rules, tcp("192.168.1.1", false), "db", "alice"), Some(3));
}

#[test]
fn no_matching_line_is_none() {
    let rules = strict("host db1 all 10.0.0.0/8 md5\n");
    assert_eq!(method(&rules, tcp("10.0.0.1", false), "db2", "u"), None);
    assert_eq!(method(&rules, ConnKind::Local, "db1", "u"), None);
    assert_eq!(method(&strict(""), ConnKind::Local, "db", "u"), None);
}

#[test]
fn connection_types_against_local_tcp_and_tls() {
    let rules = strict(
        "local all all peer\n\
         hostssl all all 10.0.0.0/8 cert\n\
         hostnossl all all 10.0.0.0/8 md5\n\
         host all all 0.0.0.0/0 password\n",
    );
    assert_eq!(method(&rules, ConnKind::Local, "db", "u"), Some(HbaMethod::Peer));
    assert_eq!(method(&rules, tcp("10.0.0.1", true), "db", "u"), Some(HbaMethod::Cert));
    assert_eq!(method(&rules, tcp("10.0.0.1", false), "db", "u"), Some(HbaMethod::Md5));
    assert_eq!(method(&rules, tcp("11.0.0.1", true), "db", "u"), Some(HbaMethod::Password));
    assert_eq!(method(&rules, tcp("11.0.0.1", false), "db", "u"), Some(HbaMethod::Password));
    // a host line never matches a Unix socket
    let tcp_only = strict("host all all 0.0.0.0/0 trust\nhost all all ::/0 trust\n");
    assert_eq!(method(&tcp_only, ConnKind::Local, "db", "u"), None);
    assert_eq!(tcp_only.rules()[0].conn_type, ConnType::Host);
}

#[test]
fn database_and_user_lists() {
    let rules = strict("host d1,d2 ,d3 , d4 u1, u2,u3 0.0.0.0/0 md5\n");
    for db in ["d1", "d2", "d3", "d4"] {
        for user in ["u1", "u2", "u3"] {
            assert_eq!(method(&rules, tcp("1.2.3.4", false), db, user), Some(HbaMethod::Md5), "{db} {user}");
        }
    }
    assert_eq!(method(&rules, tcp("1.2.3.4", false), "d5", "u1"), None);
    assert_eq!(method(&rules, tcp("1.2.3.4", false), "d1", "u4"), None);
    // names compare byte for byte
    assert_eq!(method(&rules, tcp("1.2.3.4", false), "D1", "u1"), None);
}

#[test]
fn all_and_sameuser() {
    let rules = strict("local sameuser all trust\nlocal all all reject\n");
    assert_eq!(method(&rules, ConnKind::Local, "alice", "alice"), Some(HbaMethod::Trust));
    assert_eq!(method(&rules, ConnKind::Local, "bob", "alice"), Some(HbaMethod::Reject));
    // PgBouncer reads the user column with the same keywords: sameuser there also means db == user
    let users = strict("local all sameuser trust\n");
    assert_eq!(method(&users, ConnKind::Local, "alice", "alice"), Some(HbaMethod::Trust));
    assert_eq!(method(&users, ConnKind::Local, "bob", "alice"), None);
    // sameuser next to names in one list
    let mixed = strict("local sameuser,shared all trust\n");
    assert_eq!(method(&mixed, ConnKind::Local, "shared", "alice"), Some(HbaMethod::Trust));
}

#[test]
fn replication_keyword_as_pgbouncer() {
    let rules = strict(
        "local all all md5\n\
         host replication repl ::1/128 trust\n\
         host db2,replication admin ::1/128 scram-sha-256\n\
         host all all ::1/128 password\n",
    );
    let physical = |db, user| {
        rules
            .find(&HbaRequest { kind: tcp("::1", false), database: db, user, replication: Replication::Physical })
            .map(|r| r.line)
    };
    // physical replication: only the keyword matches, whatever the database name
    assert_eq!(physical("anything", "repl"), Some(2));
    assert_eq!(physical("replication", "admin"), Some(3));
    // `all` does not cover physical replication
    assert_eq!(physical("db", "nobody"), None);
    // a normal connection to a database called "replication" is not matched by the keyword
    assert_eq!(line_of(&rules, tcp("::1", false), "replication", "repl"), Some(4));
    assert_eq!(line_of(&rules, tcp("::1", false), "db2", "admin"), Some(3));
    // logical replication is matched by database name, like a normal connection
    let logical =
        HbaRequest { kind: tcp("::1", false), database: "db2", user: "admin", replication: Replication::Logical };
    assert_eq!(rules.find(&logical).map(|r| r.line), Some(3));
    // local physical replication with `all`: no line
    let local = HbaRequest { kind: ConnKind::Local, database: "db", user: "u", replication: Replication::Physical };
    assert_eq!(rules.find(&local), None);
    // a quoted "replication" is the database of that name
    let quoted = strict("local \"replication\" all trust\n");
    assert_eq!(method(&quoted, ConnKind::Local, "replication", "u"), Some(HbaMethod::Trust));
}

#[test]
fn quoting() {
    let rules = strict(
        "host \"all\" \"all\" 19.0.0.0/8 cert\n\
         host \"q1\"\"q2\" \"a , b\" 19.0.0.0/8 md5\n\
         host \"#x\",\"sp ace\" u 19.0.0.0/8 trust\n",
    );
    // quoted keywords are plain names
    assert_eq!(method(&rules, tcp("19.0.0.1", false), "all", "all"), Some(HbaMethod::Cert));
    assert_eq!(method(&rules, tcp("19.0.0.1", false), "db", "all"), None);
    assert_eq!(method(&rules, tcp("19.0.0.1", false), "q1\"q2", "a , b"), Some(HbaMethod::Md5));
    assert_eq!(method(&rules, tcp("19.0.0.1", false), "#x", "u"), Some(HbaMethod::Trust));
    assert_eq!(method(&rules, tcp("19.0.0.1", false), "sp ace", "u"), Some(HbaMethod::Trust));
    // a quoted '@' name is not an include
    let at = strict("local \"@file\" all trust\n");
    assert_eq!(method(&at, ConnKind::Local, "@file", "u"), Some(HbaMethod::Trust));
}

#[test]
fn comments_blank_lines_and_whitespace() {
    let rules = strict(
        "# a comment\n\
         \n\
         \t \x0b \t\n\
         \t\t# indented comment\n\
         local all all trust # trailing comment\n\
         host all all 0.0.0.0/0 md5#glued comment\r\n",
    );
    assert_eq!(rules.rules().len(), 2);
    assert_eq!(rules.rules()[0].line, 5);
    assert_eq!(rules.rules()[1].line, 6);
    assert_eq!(method(&rules, tcp("1.1.1.1", false), "d", "u"), Some(HbaMethod::Md5));
}

// ---- addresses ----

#[test]
fn ipv4_cidr_and_netmask_column() {
    let rules = strict(
        "host all all 199.199.199.199/32 cert\n\
         host all all 127.0.0.0 255.255.255.0 password\n\
         host all all 128.0.0.0/1 trust\n\
         host all all 10.0.0.0 255.0.255.0 md5\n",
    );
    let m = |ip| method(&rules, tcp(ip, false), "d", "u");
    assert_eq!(m("199.199.199.199"), Some(HbaMethod::Cert));
    assert_eq!(m("199.199.199.198"), Some(HbaMethod::Trust));
    assert_eq!(m("127.0.0.77"), Some(HbaMethod::Password));
    assert_eq!(m("127.0.1.77"), None);
    assert_eq!(m("254.1.1.1"), Some(HbaMethod::Trust));
    // a non-contiguous netmask is applied bit by bit, as PgBouncer does
    assert_eq!(m("10.9.0.9"), Some(HbaMethod::Md5));
    assert_eq!(m("10.9.1.9"), None);
    let any = strict("host all all 0.0.0.0/0 trust\n");
    assert_eq!(method(&any, tcp("8.8.8.8", false), "d", "u"), Some(HbaMethod::Trust));
    assert_eq!(method(&any, tcp("::1", false), "d", "u"), None);
}

#[test]
fn ipv6_cidr_and_netmask_column() {
    let rules = strict(
        "host all all ff11::0/16 md5\n\
         host all all ::1/128 trust\n\
         host all all fe80:: ffff:ffff:: password\n\
         host all all ::/0 reject\n",
    );
    let m = |ip| method(&rules, tcp(ip, false), "d", "u");
    assert_eq!(m("ff11:2::1"), Some(HbaMethod::Md5));
    assert_eq!(m("::1"), Some(HbaMethod::Trust));
    assert_eq!(m("fe80::1234"), Some(HbaMethod::Password));
    assert_eq!(m("::2"), Some(HbaMethod::Reject));
    // an IPv6 rule never matches an IPv4 client
    assert_eq!(m("1.2.3.4"), None);
}

#[test]
fn ipv4_mapped_ipv6_client_counts_as_ipv4() {
    let rules = strict("host all all 10.0.0.0/8 md5\nhost all all ::/0 trust\n");
    assert_eq!(method(&rules, tcp("::ffff:10.1.2.3", false), "d", "u"), Some(HbaMethod::Md5));
    assert_eq!(method(&rules, tcp("::ffff:11.1.2.3", false), "d", "u"), None);
    assert_eq!(method(&rules, tcp("2001:db8::1", false), "d", "u"), Some(HbaMethod::Trust));
}

#[test]
fn all_address() {
    let rules = strict("host mdb3 all all scram-sha-256\nhostssl all all all cert\n");
    assert_eq!(method(&rules, tcp("1.2.3.4", false), "mdb3", "u"), Some(HbaMethod::ScramSha256));
    assert_eq!(method(&rules, tcp("face::1", false), "mdb3", "u"), Some(HbaMethod::ScramSha256));
    assert_eq!(method(&rules, tcp("face::1", true), "x", "u"), Some(HbaMethod::Cert));
    assert_eq!(method(&rules, ConnKind::Local, "mdb3", "u"), None);
}

#[test]
fn address_errors() {
    let cases = [
        ("host all all localhost md5", "host name"),
        ("host all all .example.com md5", "host name"),
        ("host all all samehost md5", "samehost"),
        ("host all all samenet md5", "samenet"),
        ("host all all 10.0.0.0/33 md5", "CIDR mask"),
        ("host all all ::/129 md5", "CIDR mask"),
        ("host all all 10.0.0.0/ md5", "CIDR mask"),
        ("host all all 10.0.0.0/+8 md5", "CIDR mask"),
        ("host all all 10.0.0.0/x md5", "CIDR mask"),
        ("host all all 10.0.0.1 md5", "netmask 'md5'"),
        ("host all all 10.0.0.1", "expected a netmask"),
        ("host all all 10.0.0.0 ffff:: md5", "IPv4 netmask"),
        ("host all all ::1 255.0.0.0 md5", "IPv6 netmask"),
        ("host all all 10.0.0.1/8 md5", "outside its mask"),
        ("host all all 10.0.0.1 255.0.0.0 md5", "outside its mask"),
        ("host all all \"10.0.0.0/8\" md5", "must not be quoted"),
        ("host all all 300.1.1.1/8 md5", "invalid IP address"),
        ("host all all", "expected an address"),
    ];
    for (text, want) in cases {
        let (line, reason) = line_error(&format!("# first\n{text}\n"));
        assert_eq!(line, 2, "{text}");
        assert!(reason.contains(want), "{text}: {reason}");
    }
}

// ---- methods and options ----

#[test]
fn each_method() {
    let cases = [
        ("trust", HbaMethod::Trust),
        ("reject", HbaMethod::Reject),
        ("password", HbaMethod::Password),
        ("md5", HbaMethod::Md5),
        ("scram-sha-256", HbaMethod::ScramSha256),
        ("cert", HbaMethod::Cert),
        ("peer", HbaMethod::Peer),
        ("ldap", HbaMethod::Ldap),
    ];
    for (word, want) in cases {
        let rules = strict(&format!("local all all {word}\n"));
        assert_eq!(method(&rules, ConnKind::Local, "d", "u"), Some(want), "{word}");
    }
}

#[test]
fn ldap_keeps_the_rest_of_the_line() {
    let rules = strict("host all all 0.0.0.0/0 ldap ldapserver=ldap.example.net ldapprefix=\"cn=\" \n");
    let rule = &rules.rules()[0];
    assert_eq!(rule.method, HbaMethod::Ldap);
    assert_eq!(rule.ldap_options.as_deref(), Some("ldapserver=ldap.example.net ldapprefix=\"cn=\""));
    assert_eq!(rule.ident_map, None);
    let bare = strict("local all all ldap\n");
    assert_eq!(bare.rules()[0].ldap_options.as_deref(), Some(""));
}

#[test]
fn unsupported_methods() {
    for (word, want) in [
        ("ident", "use 'peer'"),
        ("pam", "global auth_type"),
        ("any", "global auth_type"),
        ("gss", "unsupported"),
        ("sspi", "unsupported"),
        ("radius", "unsupported"),
        ("MD5", "unsupported"),
        ("\"md5\"", "expected an authentication method"),
    ] {
        let (line, reason) = line_error(&format!("local all all {word}\n"));
        assert_eq!(line, 1);
        assert!(reason.contains(want), "{word}: {reason}");
    }
    let (_, reason) = line_error("local all all\n");
    assert!(reason.contains("expected an authentication method"), "{reason}");
}

fn ident_with(text: &str) -> IdentMap {
    IdentMap::parse(text).expect("ident").into_strict().expect("no ident line errors")
}

#[test]
fn map_option() {
    let ident = ident_with("certmap client.example.com alice\npeermap root postgres\n");
    let rules = strict_with(
        "hostssl all all 0.0.0.0/0 cert map=certmap\n\
         local all all peer map=peermap\n\
         local all all md5\n",
        &ident,
    );
    assert_eq!(rules.rules()[0].ident_map.as_deref(), Some("certmap"));
    assert_eq!(rules.rules()[1].ident_map.as_deref(), Some("peermap"));
    assert_eq!(rules.rules()[2].ident_map, None);
    let rule = rules.find(&req(tcp("1.2.3.4", true), "d", "alice")).expect("rule");
    let map = rule.ident_map.as_deref().expect("map");
    assert!(ident.allows(map, "client.example.com", "alice"));
    assert!(!ident.allows(map, "client.example.com", "bob"));
}

#[test]
fn map_option_errors() {
    let ident = ident_with("m1 sys user\n");
    let cases = [
        ("local all all peer map=nope", "no map 'nope'"),
        ("local all all peer map=", "no map ''"),
        ("local all all peer clientcert=verify-full", "unsupported option"),
        ("local all all peer map=m1 map=m1", "one option only"),
        ("local all all peer map=m1,x", "one option only"),
        ("local all all peer \"map=m1\"", "after the method"),
        ("local all all md5 \\", "continuing a line"),
    ];
    for (text, want) in cases {
        let (line, reason) = line_error_with(&format!("\n\n{text}\n"), Some(&ident), &no_include);
        assert_eq!(line, 3, "{text}");
        assert!(reason.contains(want), "{text}: {reason}");
    }
    let (_, reason) = line_error("local all all peer map=m1\n");
    assert!(reason.contains("no ident map file"), "{reason}");
    // map= on a password method is accepted, as PgBouncer does (it is only used by cert and peer)
    let rules = strict_with("local all all md5 map=m1\n", &ident);
    assert_eq!(rules.rules()[0].ident_map.as_deref(), Some("m1"));
}

// ---- line errors ----

#[test]
fn line_errors_name_the_line() {
    let long = "x".repeat(MAX_NAME_LEN + 1);
    let cases = [
        ("hosts all all 0.0.0.0/0 md5".to_string(), "unknown connection type 'hosts'"),
        ("Host all all 0.0.0.0/0 md5".to_string(), "unknown connection type"),
        ("\"host\" all all 0.0.0.0/0 md5".to_string(), "expected a connection type"),
        ("hostgssenc all all 0.0.0.0/0 md5".to_string(), "hostgssenc"),
        ("hostnogssenc all all 0.0.0.0/0 md5".to_string(), "hostnogssenc"),
        ("include other.conf".to_string(), "'include' directives"),
        ("include_dir conf.d".to_string(), "'include_dir' directives"),
        ("local all +admins trust".to_string(), "+admins"),
        ("local samerole all trust".to_string(), "samerole"),
        ("local samegroup all trust".to_string(), "samegroup"),
        ("local all samerole trust".to_string(), "samerole"),
        ("local all replication trust".to_string(), "quote it"),
        (format!("local {long} all trust"), "longer than 63"),
        (format!("local all \"{long}\" trust"), "longer than 63"),
        ("local \"unterminated all trust".to_string(), "unterminated"),
        ("local , all trust".to_string(), "expected a database name"),
        // a comma continues the list across spaces, so "trust" is a second database here
        ("local db, trust".to_string(), "expected a user name"),
        ("local db1,,db2 all trust".to_string(), "expected a database name"),
        ("local db".to_string(), "expected a user name"),
        ("local all all trust\0".to_string(), "NUL"),
        ("local @ all trust".to_string(), "without a file name"),
    ];
    for (text, want) in cases {
        let (line, reason) = line_error(&format!("local all all trust\n\n{text}\nlocal all all md5\n"));
        assert_eq!(line, 3, "{text}");
        assert!(reason.contains(want), "{text}: {reason}");
    }
}

#[test]
fn a_bad_line_is_skipped_like_pgbouncer_and_strict_refuses() {
    let text = "local all all reject-typo\nlocal all all md5\n";
    let rules = HbaRules::parse(text, None, &no_include).expect("parse");
    // PgBouncer skips the bad line: the next line applies
    assert_eq!(method(&rules, ConnKind::Local, "d", "u"), Some(HbaMethod::Md5));
    assert_eq!(rules.line_errors().len(), 1);
    let err = rules.into_strict().expect_err("strict");
    assert!(matches!(&err, HbaError::Line { line: 1, .. }), "{err}");
    assert!(err.to_string().starts_with("line 1: "), "{err}");
}

#[test]
fn size_bounds() {
    let big = "#".repeat(MAX_BYTES + 1);
    assert_eq!(HbaRules::parse(&big, None, &no_include).err(), Some(HbaError::TooLarge { max: MAX_BYTES }));
    let many = "\n".repeat(MAX_LINES + 1);
    assert_eq!(HbaRules::parse(&many, None, &no_include).err(), Some(HbaError::TooManyLines { max: MAX_LINES }));
    assert!(HbaRules::parse(&"\n".repeat(MAX_LINES), None, &no_include).is_ok());
    assert_eq!(IdentMap::parse(&big).err(), Some(HbaError::TooLarge { max: MAX_BYTES }));
    // includes count towards the same budget
    let half = format!("u\n{}", "#".repeat(MAX_BYTES / 2));
    let files = Files::new(&[("a", &half), ("b", &half), ("c", &half)]);
    let read = |p: &str| files.read(p);
    let err = HbaRules::parse("local @a,@b,@c all trust\n", None, &read).err();
    assert_eq!(err, Some(HbaError::TooLarge { max: MAX_BYTES }));
    let lines = format!("u{}", "\n".repeat(MAX_LINES - 5));
    let files = Files::new(&[("a", &lines), ("b", &lines)]);
    let read = |p: &str| files.read(p);
    let err = HbaRules::parse("local @a,@b all trust\n", None, &read).err();
    assert_eq!(err, Some(HbaError::TooManyLines { max: MAX_LINES }));
}

mod files;
