//! Helpers for tests/deploy.rs: the files under docker/, external tools (failing with the Debian package
//! to install when one is missing), YAML read through PyYAML, the Prometheus text format, and the metric
//! selectors of a PromQL expression.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Runs `program` in the repository root; a missing program fails the test naming its Debian package.
pub fn tool(program: &str, package: &str, args: &[&str]) -> Output {
    match Command::new(program).args(args).current_dir(repo()).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("{program} not found: apt-get install {package} (README, \"Test it\"; .ci/run installs it)")
        }
        Err(e) => panic!("{program}: {e}"),
    }
}

/// Every document of a YAML text as JSON, parsed by PyYAML (Debian's python3-yaml, under the system
/// python3, which docker-compose also runs on).
pub fn yaml_docs(text: &str) -> Vec<Value> {
    let script =
        "import sys, json, yaml\njson.dump([d for d in yaml.safe_load_all(sys.stdin) if d is not None], sys.stdout)";
    let spawned = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => panic!("/usr/bin/python3: {e}: apt-get install python3-yaml"),
    };
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write YAML");
    let out = child.wait_with_output().expect("python3");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("No module named 'yaml'"), "PyYAML missing: apt-get install python3-yaml");
    assert!(out.status.success(), "YAML does not parse: {err}");
    serde_json::from_slice(&out.stdout).expect("JSON from PyYAML")
}

pub fn yaml(text: &str) -> Value {
    let mut docs = yaml_docs(text);
    assert_eq!(docs.len(), 1, "one YAML document expected");
    docs.remove(0)
}

/// A `[pgsluice]` setting of a TOML config.
pub fn general<'a>(config: &'a toml::Table, key: &str) -> &'a toml::Value {
    config.get("pgsluice").and_then(|g| g.get(key)).unwrap_or_else(|| panic!("[pgsluice] {key} is not set"))
}

pub fn int_setting(config: &toml::Table, key: &str) -> i64 {
    general(config, key).as_integer().unwrap_or_else(|| panic!("{key} is not an integer"))
}

/// The port of an "address:port" setting.
pub fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or_else(|| panic!("no port in {addr:?}"))
}

/// The samples of a Prometheus text page: sample name (`_bucket`, `_sum` and `_count` of histograms
/// included, as they are written) -> the label sets it has.
pub fn exposition(page: &str) -> BTreeMap<String, Vec<BTreeMap<String, String>>> {
    let mut out: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
    for line in page.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, _value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("malformed sample {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, matchers(&format!("{{{rest}")).0.into_iter().map(|(l, _, v)| (l, v)).collect()),
            None => (series, BTreeMap::new()),
        };
        out.entry(name.to_string()).or_default().push(labels);
    }
    out
}

/// A metric a PromQL expression selects, with its label matchers (label, operator, value).
#[derive(Debug)]
pub struct Selector {
    pub metric: String,
    pub matchers: Vec<(String, String, String)>,
}

/// Words of PromQL that are not metrics: those taking a label list, then operators, aggregations
/// (which may be followed by `by (...)` rather than their parenthesis) and literals.
const LABEL_LIST_KEYWORDS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
const OTHER_KEYWORDS: &[&str] = &[
    "offset",
    "bool",
    "and",
    "or",
    "unless",
    "atan2",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "inf",
    "nan",
];

/// The metric selectors of `expr`: every name that is not a function, keyword, label list, string,
/// number, duration or Grafana variable.
pub fn promql_selectors(expr: &str) -> Vec<Selector> {
    let c: Vec<char> = expr.chars().collect();
    let ident = |ch: char| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':';
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '"' | '\'' | '`' => i = skip_string(&c, i),
            '[' => i = skip_past(&c, i, ']'),
            '{' => panic!("a selector without a metric name in {expr:?}"),
            '$' => i = skip_while(&c, i + 1, ident),
            ch if ch.is_ascii_digit() => i = skip_while(&c, i, |x| ident(x) || x == '.'),
            ch if ident(ch) => {
                let end = skip_while(&c, i, ident);
                let word: String = c[i..end].iter().collect();
                let next = skip_while(&c, end, char::is_whitespace);
                i = end;
                let at = |ch: char| c.get(next) == Some(&ch);
                if LABEL_LIST_KEYWORDS.contains(&word.as_str()) {
                    if at('(') {
                        i = skip_past(&c, next, ')');
                    }
                } else if OTHER_KEYWORDS.contains(&word.as_str()) || at('(') {
                    // a keyword, or a function
                } else if at('{') {
                    let (m, after) = matchers(&c[next..].iter().collect::<String>());
                    out.push(Selector { metric: word, matchers: m });
                    i = next + after;
                } else {
                    out.push(Selector { metric: word, matchers: Vec::new() });
                }
            }
            _ => i += 1,
        }
    }
    out
}

fn skip_while(c: &[char], mut i: usize, f: impl Fn(char) -> bool) -> usize {
    while i < c.len() && f(c[i]) {
        i += 1;
    }
    i
}

fn skip_string(c: &[char], start: usize) -> usize {
    let quote = c[start];
    let mut i = start + 1;
    while i < c.len() && c[i] != quote {
        i += if c[i] == '\\' { 2 } else { 1 };
    }
    i + 1
}

fn skip_past(c: &[char], start: usize, close: char) -> usize {
    let mut i = start;
    while i < c.len() && c[i] != close {
        i += 1;
    }
    i + 1
}

/// Parses `{label op "value", ...}` at the start of `text`: the matchers, and the length consumed.
pub fn matchers(text: &str) -> (Vec<(String, String, String)>, usize) {
    let c: Vec<char> = text.chars().collect();
    assert_eq!(c.first(), Some(&'{'), "matchers expected in {text:?}");
    let mut out = Vec::new();
    let mut i = 1;
    loop {
        i = skip_while(&c, i, |x| x.is_whitespace() || x == ',');
        if c.get(i) == Some(&'}') || i >= c.len() {
            return (out, i + 1);
        }
        let label_end = skip_while(&c, i, |x| x.is_ascii_alphanumeric() || x == '_');
        let label: String = c[i..label_end].iter().collect();
        let op_start = skip_while(&c, label_end, char::is_whitespace);
        let op_end = skip_while(&c, op_start, |x| "=!~".contains(x));
        let op: String = c[op_start..op_end].iter().collect();
        let value_start = skip_while(&c, op_end, char::is_whitespace);
        assert_eq!(c.get(value_start), Some(&'"'), "quoted label value expected in {text:?}");
        let value_end = skip_string(&c, value_start);
        let raw: String = c[value_start + 1..value_end - 1].iter().collect();
        out.push((label, op, raw.replace("\\\"", "\"").replace("\\\\", "\\")));
        i = value_end;
    }
}
