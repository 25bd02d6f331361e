//! The `confab` binary: command line, configuration, logging, and the wiring of transports, the
//! protocol core and storage (`server`).

mod cli;
mod config;
mod media;
mod server;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::config::{ConfigError, LogFormat};

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            if let Some(config_error) = error.downcast_ref::<ConfigError>() {
                // The context says which file; the problems follow one per line.
                eprintln!("error: {error}:");
                for line in config_error.lines() {
                    eprintln!("  {line}");
                }
                ExitCode::from(cli::EXIT_INVALID_CONFIG)
            } else {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        }
    }
}

/// Sets up `tracing` output on standard error: the filter comes from `RUST_LOG` when set, else
/// from `level` (config `log.level`); `format` picks human-readable text or JSON lines.
fn init_logging(level: &str, format: LogFormat) {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = match from_env.as_deref().map(|v| EnvFilter::builder().parse(v)) {
        Some(Ok(filter)) => filter,
        Some(Err(e)) => {
            eprintln!("warning: ignoring RUST_LOG ({e}); using log level {level:?}");
            EnvFilter::builder().parse_lossy(level)
        }
        // `Config::validate` has checked `level` already; lossy parsing keeps what is valid.
        None => EnvFilter::builder().parse_lossy(level),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // `try_init` fails only if a subscriber is already set, which then keeps logging.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
