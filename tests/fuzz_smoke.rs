//! Fuzz smoke: builds the cargo-fuzz targets in fuzz/ once (nightly, no sanitizer: the crate is safe
//! Rust, and libFuzzer's coverage plus debug assertions are what a short run needs) and runs each for
//! FUZZ_SMOKE_SECONDS (default 20) on a temporary copy of its seed corpus, so the committed corpus does
//! not grow. Each must exit 0. Needs a nightly toolchain and cargo-fuzz (`rustup toolchain install
//! nightly`, `cargo install --locked cargo-fuzz`); without them this fails and says so. Longer runs:
//! `cd fuzz && cargo +nightly fuzz run <target> -- -max_total_time=600`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Two targets at a time: the 2-core CI machine keeps both cores busy and the smoke under 5 minutes.
const AT_ONCE: usize = 2;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The nightly cargo through rustup, without what the outer `cargo test` set for its own build.
fn nightly_cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg("+nightly").current_dir(fuzz_dir());
    for var in ["CARGO", "RUSTC", "RUSTC_WRAPPER", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_TARGET_DIR"] {
        cmd.env_remove(var);
    }
    cmd.env_remove("RUSTUP_TOOLCHAIN");
    cmd
}

fn output(mut cmd: Command) -> std::io::Result<Output> {
    cmd.stdin(Stdio::null()).output()
}

fn require_cargo_fuzz() {
    let ok = |out: std::io::Result<Output>| out.is_ok_and(|o| o.status.success());
    let mut nightly = nightly_cargo();
    nightly.arg("--version");
    assert!(
        ok(output(nightly)),
        "the fuzz smoke needs a nightly toolchain: `rustup toolchain install nightly` (then `cargo install --locked cargo-fuzz`)"
    );
    let mut fuzz = nightly_cargo();
    fuzz.args(["fuzz", "--version"]);
    assert!(ok(output(fuzz)), "the fuzz smoke needs cargo-fuzz: `cargo install --locked cargo-fuzz`");
}

fn target_dir() -> PathBuf {
    fuzz_dir().join("target").join("smoke")
}

/// Builds every target; returns where the binaries are.
fn build() -> PathBuf {
    let started = Instant::now();
    let mut cmd = nightly_cargo();
    cmd.args(["fuzz", "build", "--sanitizer", "none", "--target-dir"]).arg(target_dir());
    let out = output(cmd).expect("cargo fuzz build runs");
    assert!(out.status.success(), "cargo fuzz build failed:\n{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("fuzz targets built in {:.0?}", started.elapsed());
    let triple = host_triple();
    target_dir().join(triple).join("release")
}

fn host_triple() -> String {
    let out = output({
        let mut c = Command::new("rustc");
        c.arg("-vV");
        c
    })
    .expect("rustc -vV runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().find_map(|l| l.strip_prefix("host: ")).expect("rustc names its host").to_string()
}

fn targets() -> Vec<String> {
    let mut cmd = nightly_cargo();
    cmd.args(["fuzz", "list"]);
    let out = output(cmd).expect("cargo fuzz list runs");
    assert!(out.status.success(), "cargo fuzz list failed");
    String::from_utf8_lossy(&out.stdout).lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
}

/// Runs one target on a copy of its seed corpus; returns its failure, if any, with libFuzzer's summary.
fn run(bin: &Path, target: &str, seconds: u64) -> Result<String, String> {
    let corpus = tempfile::tempdir().expect("a temp dir");
    let artifacts = tempfile::tempdir().expect("a temp dir");
    let seeds = fuzz_dir().join("corpus").join(target);
    for seed in std::fs::read_dir(&seeds).map_err(|e| format!("{target}: no seed corpus at {seeds:?}: {e}"))? {
        let seed = seed.map_err(|e| e.to_string())?.path();
        std::fs::copy(&seed, corpus.path().join(seed.file_name().unwrap_or_default())).map_err(|e| e.to_string())?;
    }
    let out = Command::new(bin.join(target))
        .arg(format!("-max_total_time={seconds}"))
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg(format!("-artifact_prefix={}/", artifacts.path().display()))
        .arg(corpus.path())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{target}: cannot run {:?}: {e}", bin.join(target)))?;
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let summary = log.lines().rev().find(|l| l.contains("DONE")).unwrap_or("(no summary)").to_string();
    if out.status.success() {
        return Ok(format!("{target}: {summary}"));
    }
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines.get(lines.len().saturating_sub(40)..).unwrap_or_default();
    Err(format!("{target} failed ({}):\n{}", out.status, tail.join("\n")))
}

#[test]
fn every_fuzz_target_runs_clean_on_its_seeds() {
    require_cargo_fuzz();
    let seconds = std::env::var("FUZZ_SMOKE_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let bin = build();
    let targets = targets();
    assert!(targets.len() >= 9, "expected at least 9 fuzz targets, found {targets:?}");
    let started = Instant::now();
    let mut results = Vec::new();
    for group in targets.chunks(AT_ONCE) {
        std::thread::scope(|s| {
            let running: Vec<_> = group.iter().map(|t| s.spawn(|| run(&bin, t, seconds))).collect();
            results.extend(running.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("panicked".into()))));
        });
    }
    for r in results.iter().flatten() {
        eprintln!("{r}");
    }
    eprintln!("{} targets ran in {:.0?}", targets.len(), started.elapsed());
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "fuzz targets failed:\n{}",
        failures.iter().map(|f| f.as_str()).collect::<Vec<_>>().join("\n\n")
    );
    assert!(started.elapsed() < Duration::from_secs(seconds * 10 + 120), "the runs took far longer than asked");
}
