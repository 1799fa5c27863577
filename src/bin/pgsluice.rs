//! `pgsluice CONFIG` runs the proxy in the foreground; `--check` validates a config.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use pgsluice::config::Config;

#[derive(Parser)]
#[command(name = "pgsluice", version, about = "A transaction-pooling PostgreSQL proxy")]
struct Cli {
    /// Validate the config file (and its auth file) and exit 0, or 1 with the reason.
    #[arg(long)]
    check: bool,
    /// Path to the TOML config file.
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgsluice: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = config.load_auth_file() {
        eprintln!("pgsluice: {e}");
        return ExitCode::FAILURE;
    }
    if cli.check {
        println!("{}: OK", cli.config.display());
        return ExitCode::SUCCESS;
    }
    let workers = match config.general.workers {
        0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        n => n,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build() {
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
