//! The Debian package (docker/debian/, Cargo.toml's [package.metadata.deb]): built with cargo deb from the
//! binary the tests use, installed with apt, its binary, config, unit and man page checked, then purged.
//! Needs root and cargo-deb (.ci/run installs it); it is the only test that touches the package database
//! (.config/nextest.toml runs it in a group of its own).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const UNIT: &str = "/usr/lib/systemd/system/pgsluice.service";

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// Runs `cmd`, panics with its output unless it exits 0; returns stdout.
fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

fn installed() -> bool {
    run(Command::new("dpkg-query").args(["-W", "-f", "${Status}", "pgsluice"])).stdout.starts_with(b"install ok")
}

fn apt_get(args: &[&str]) -> String {
    ok(Command::new("apt-get").args(args).env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Purges the package if the test stops half way, so no run leaves it installed.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        if installed() {
            let _ = Command::new("apt-get").args(["purge", "-y", "-q", "pgsluice"]).status();
        }
    }
}

/// The binary the tests run: its directory is the profile's output directory, its grandparent the
/// target directory.
fn built_binary() -> (PathBuf, String) {
    let bin = Path::new(env!("CARGO_BIN_EXE_pgsluice"));
    let profile_dir = bin.parent().expect("profile dir");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_string(),
        Some(other) => other.to_string(),
    };
    (profile_dir.parent().expect("target dir").to_path_buf(), profile)
}

/// docker/debian/build-deb.sh on the binary already built: the .deb's path.
fn build_deb(out: &Path) -> PathBuf {
    let (target_dir, profile) = built_binary();
    let log = ok(Command::new("sh")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/debian/build-deb.sh"))
        .arg("--output")
        .arg(out)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("PROFILE", profile)
        .env("NO_BUILD", "1"));
    let debs: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "one .deb in {}: {debs:?}\n{log}", out.display());
    let name = debs[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with(&format!("pgsluice_{}-1_", env!("CARGO_PKG_VERSION"))), "{name}");
    debs[0].clone()
}

#[test]
fn the_debian_package_installs_checks_and_purges() {
    assert!(is_root(), "tests/debian_package.rs installs a package with apt-get: run it as root (CI does)");
    assert!(
        run(Command::new("cargo").args(["deb", "--version"])).status.success(),
        "cargo-deb is missing: cargo install --locked cargo-deb --version 3.8.0 (.ci/run does)"
    );
    assert!(!installed(), "pgsluice is installed on this machine already: this test installs and purges its own");
    let dir = tempfile::tempdir().unwrap();
    let deb = build_deb(dir.path());
    let _purge = Purge;
    apt_get(&["install", "-y", "-q", deb.to_str().unwrap()]);
    assert!(installed());

    let version = ok(Command::new("/usr/bin/pgsluice").arg("--version"));
    assert_eq!(version.split_whitespace().nth(1), Some(env!("CARGO_PKG_VERSION")), "{version}");
    let check = ok(Command::new("/usr/bin/pgsluice").args(["--check", "/etc/pgsluice/pgsluice.toml"]));
    assert!(check.contains("OK"), "{check}");
    // As ExecStartPre runs it: the user pgsluice reads the config and the auth file it may not change.
    ok(Command::new("runuser")
        .args(["-u", "pgsluice", "--", "/usr/bin/pgsluice", "--check"])
        .arg("/etc/pgsluice/pgsluice.toml"));
    let owner = ok(Command::new("stat").args(["-c", "%U:%G %a", "/etc/pgsluice/userlist.txt"]));
    assert_eq!(owner.trim(), "root:pgsluice 640");
    let conffiles = std::fs::read_to_string("/var/lib/dpkg/info/pgsluice.conffiles").unwrap_or_default();
    for f in ["/etc/pgsluice/pgsluice.toml", "/etc/pgsluice/userlist.txt", "/etc/logrotate.d/pgsluice"] {
        assert!(conffiles.lines().any(|l| l == f), "{f} is not a conffile: {conffiles}");
    }

    check_unit();
    let man = ok(Command::new("gzip").args(["-dc", "/usr/share/man/man1/pgsluice.1.gz"]));
    assert!(man.lines().any(|l| l.starts_with(".TH PGSLUICE 1 ")), "{}", &man[..man.len().min(300)]);

    apt_get(&["purge", "-y", "-q", "pgsluice"]);
    assert!(!installed(), "still installed after purge");
    for gone in ["/usr/bin/pgsluice", "/etc/pgsluice/pgsluice.toml", UNIT, "/usr/share/man/man1/pgsluice.1.gz"] {
        assert!(!Path::new(gone).exists(), "{gone} is left after the purge");
    }
}

/// The installed unit passes `systemd-analyze verify` (no systemd needed as PID 1) and says what the
/// package relies on.
fn check_unit() {
    let unit = std::fs::read_to_string(UNIT).expect("the unit is installed");
    for line in [
        "Type=notify",
        "User=pgsluice",
        "ExecStartPre=/usr/bin/pgsluice --check /etc/pgsluice/pgsluice.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillSignal=SIGINT",
        "RuntimeDirectory=pgsluice",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line:?} missing from {UNIT}");
    }
    let out = run(Command::new("systemd-analyze").args(["verify", "--man=no", UNIT]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify {UNIT}: {}\n{stderr}", out.status);
    let about_ours: Vec<&str> = stderr.lines().filter(|l| l.contains("pgsluice")).collect();
    assert!(about_ours.is_empty(), "systemd-analyze verify complains: {about_ours:?}");
}

/// The packaged config keeps every key of conf/pgsluice.toml (it is derived from it) and passes --check.
#[test]
fn the_packaged_config_follows_the_reference_and_passes_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let reference = std::fs::read_to_string(root.join("conf/pgsluice.toml")).unwrap();
    let packaged = std::fs::read_to_string(root.join("docker/debian/pgsluice.toml")).unwrap();
    let keys = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| l.trim_start_matches('#').trim_start())
            .filter_map(|l| l.split_once(" = ").map(|(k, _)| k.trim().to_string()))
            .filter(|k| k.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .collect()
    };
    let (want, have) = (keys(&reference), keys(&packaged));
    assert!(want.len() > 60, "{want:?}");
    let missing: Vec<&String> = want.iter().filter(|k| !have.contains(k)).collect();
    assert!(missing.is_empty(), "docker/debian/pgsluice.toml lacks {missing:?} of conf/pgsluice.toml");

    let dir = tempfile::tempdir().unwrap();
    let userlist = dir.path().join("userlist.txt");
    std::fs::copy(root.join("docker/debian/userlist.txt"), &userlist).unwrap();
    let config = dir.path().join("pgsluice.toml");
    assert!(packaged.contains("\"/etc/pgsluice/userlist.txt\""));
    std::fs::write(&config, packaged.replace("/etc/pgsluice/userlist.txt", userlist.to_str().unwrap())).unwrap();
    let out = ok(Command::new(env!("CARGO_BIN_EXE_pgsluice")).arg("--check").arg(&config));
    assert!(out.contains("OK"), "{out}");
}
