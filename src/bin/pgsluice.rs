//! `pgsluice CONFIG` runs the proxy in the foreground (a `.toml` config, or a pgbouncer.ini as it is,
//! recognised by its name or its text);
//! `--check` validates a config; `pgsluice convert pgbouncer.ini` prints the equivalent TOML;
//! `--print-man` (hidden) prints the manual page.

#[path = "pgsluice/man.rs"]
mod man;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use pgsluice::config::Config;

/// What `--help` ends with: what clap does not know (the manual page has the same at length).
const AFTER_HELP: &str = "\
Signals:
  SIGHUP         reload the config and the files it names (as RELOAD); a broken config is refused
  SIGINT         safe shutdown: stop accepting, let open transactions finish, exit
  SIGTERM        shut down once every client has left; new logins are refused
  SIGUSR1/USR2   PAUSE / RESUME every pool
  A second SIGINT or SIGTERM exits at once.

Logging: to standard error, colours only on a terminal. --log-level sets the level; RUST_LOG takes a
tracing filter instead (e.g. RUST_LOG=pgsluice=debug,info) and wins when both are given.

Docs: README.md (Run it, Configuration, Watch it, Migrate from PgBouncer); every setting is commented in
conf/pgsluice.toml; `man pgsluice` once the Debian package is installed.";

#[derive(Parser)]
#[command(
    name = "pgsluice",
    version = pgsluice::VERSION,
    about = "A transaction-pooling PostgreSQL proxy",
    args_conflicts_with_subcommands = true,
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Validate the config file (and its auth file) and exit 0, or 1 with the reason.
    #[arg(long)]
    check: bool,
    /// Run from an existing pgbouncer.ini (and its auth file) instead of a TOML config.
    #[arg(long, value_name = "PGBOUNCER_INI", conflicts_with = "config")]
    pgbouncer_ini: Option<PathBuf>,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log level (RUST_LOG, when set, takes precedence).
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    log_level: LogLevel,
    /// Print the manual page (roff) and exit; the Debian package's pgsluice.1 is made with it.
    #[arg(long, hide = true)]
    print_man: bool,
    /// Path to the TOML config file (a name ending in .ini, or a file that reads as one, is a
    /// pgbouncer.ini, as with --pgbouncer-ini).
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the pgsluice TOML equivalent of a pgbouncer.ini, and what it cannot carry over.
    Convert { pgbouncer_ini: PathBuf },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn filter(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.print_man {
        return match man::print(Cli::command()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pgsluice: cannot write the manual page: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.log_level.filter()));
    // Colours only on a terminal: not in the journal (pgsluice.service) or a file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    if let Some(Command::Convert { pgbouncer_ini }) = &cli.command {
        return convert(pgbouncer_ini);
    }
    let loaded = match (&cli.pgbouncer_ini, &cli.config) {
        (Some(ini), _) => Config::load_pgbouncer_ini(ini),
        (None, Some(path)) => Config::load_any(path),
        (None, None) => {
            eprintln!("pgsluice: a config file is needed (pgsluice CONFIG, or --pgbouncer-ini FILE)");
            return ExitCode::FAILURE;
        }
    };
    let config = match loaded {
        Ok((c, unsupported)) => {
            for setting in unsupported {
                tracing::warn!(%setting, "pgbouncer.ini setting not supported by pgsluice, ignored");
            }
            for warning in c.warnings() {
                tracing::warn!(%warning, "configuration");
            }
            c
        }
        Err(e) => {
            eprintln!("pgsluice: {e}");
            return ExitCode::FAILURE;
        }
    };
    let files = match pgsluice::shared::Files::load(&config) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("pgsluice: {}: {e}", config.path.display());
            return ExitCode::FAILURE;
        }
    };
    if cli.check {
        for warning in config.check_warnings(&files.auth) {
            tracing::warn!(%warning, "configuration");
        }
        println!("{}: OK", config.path.display());
        return ExitCode::SUCCESS;
    }
    let workers = match config.general.workers {
        0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        n => n,
    };
    // Clients are served on `workers` threads, a runtime each (see `pgsluice::workers`); the supervisor,
    // the accept loops and /metrics run on this thread. Blocking work (PBKDF2, name lookups) runs on
    // threads named apart, so `ps -L` and the tests tell them apart.
    if let Err(e) = pgsluice::workers::start(workers) {
        eprintln!("pgsluice: cannot start {workers} worker threads: {e}");
        return ExitCode::FAILURE;
    }
    let runtime =
        match tokio::runtime::Builder::new_current_thread().enable_all().thread_name("pgsluice-blocking").build() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("pgsluice: cannot start runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
    match runtime.block_on(pgsluice::supervisor::run_until_signal(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgsluice: {e}");
            ExitCode::FAILURE
        }
    }
}

fn convert(path: &Path) -> ExitCode {
    match pgsluice::config::pgbouncer_ini::convert_file(path) {
        Ok(c) => {
            print!("{}", c.toml);
            for setting in c.unsupported {
                eprintln!("pgsluice: not supported, left out: {setting}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pgsluice: {e}");
            ExitCode::FAILURE
        }
    }
}
