//! `txoutbox`: the outbox relay daemon and operator tool. See `txoutbox --help` and
//! docs/operations.md.

// No panic on data (why these lints are here and not in Cargo.toml: clippy.toml).
#![warn(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod cli;
mod commands;
mod console_settings;
mod console_store;
mod database;
mod environment;
mod error;
mod inbox_table;
mod settings;
mod sink_settings;
mod target;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, LogFormat};
use crate::error::CliError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.global.log_format);
    // The NATS, RabbitMQ and Redis clients speak TLS through rustls and ask for different crypto
    // providers (ring, aws-lc-rs); with both in one build rustls cannot pick one by itself and a
    // TLS connection would panic. This process uses ring. (An error means one is installed.)
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code)
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let file = settings::file_config(&cli.global)?;
    if let Command::Probe(args) = &cli.command {
        // A probe needs no database: it asks the running relay.
        return commands::probe::run(args, &settings::http_listen(&file)).await;
    }
    let target = settings::target(&cli.global, &file)?;
    match &cli.command {
        Command::Probe(_) => Ok(()), // answered above
        Command::Migrate(args) => commands::migrate::run(&target, args).await,
        Command::Relay(args) => commands::relay::run(&target, settings::relay(args, &file, &target)?).await,
        Command::Status(args) => {
            let relay_url = args
                .relay_url
                .clone()
                .unwrap_or_else(|| settings::http_listen(&file));
            commands::status::run(&target, args, relay_url).await
        }
        Command::DeadLetters(command) => commands::dead_letters::run(&target, command).await,
        Command::Cleanup(args) => {
            commands::cleanup::run(&target, args, settings::keep_published_for(&file)).await
        }
        Command::Wal(command) => commands::wal::run(&target, command).await,
        Command::Inbox(command) => commands::inbox::run(&target, command).await,
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // Colours only for a person at a terminal, and never under NO_COLOR (https://no-color.org).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
