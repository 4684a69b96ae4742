//! The `pairgate` binary: `serve` (the default), `token` and `phone`.

mod phone_cli;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pairgate::Config;
use pairgate::config::LogFormat;
use pairgate::tokens::{Tokens, resolve_secret};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "pairgate",
    version,
    about = "WebSocket pairing gateway: link web sessions to a phone by QR code",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `serve` options, accepted without the subcommand too.
    #[command(flatten)]
    serve: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Start the gateway (the default).
    Serve(Box<Config>),
    /// Print a phone token for an account, signed with the gateway's secret.
    Token(TokenArgs),
    /// An interactive phone client for operators and scripts.
    Phone(phone_cli::PhoneArgs),
}

#[derive(clap::Args)]
struct TokenArgs {
    /// Account id (`^[A-Za-z0-9_.-]{1,64}$`).
    #[arg(long)]
    account: String,
    /// Data dir whose secret to use (created as `serve` would when missing).
    #[arg(long, env = "PAIRGATE_DATA_DIR", default_value = "./pairgate-data")]
    data_dir: PathBuf,
    /// Use this secret instead of the data dir's.
    #[arg(long, env = "PAIRGATE_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Token lifetime in seconds.
    #[arg(long, default_value_t = 86_400)]
    ttl_secs: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Some(Command::Token(args)) => token(args).map(|()| ExitCode::SUCCESS),
        Some(Command::Serve(config)) => serve(*config).map(|()| ExitCode::SUCCESS),
        Some(Command::Phone(args)) => phone(args),
        None => serve(cli.serve).map(|()| ExitCode::SUCCESS),
    };
    // What failed and why, on one line: an operator's error (a path, a lock,
    // a bad option), not a programmer's backtrace.
    outcome.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}

fn phone(args: phone_cli::PhoneArgs) -> anyhow::Result<ExitCode> {
    // Stdout is the command's output; only warnings go to stderr.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // One socket and one stdin: a single thread is plenty.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(phone_cli::run(args))
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let secret = resolve_secret(args.secret.as_deref(), &args.data_dir)?;
    let token =
        Tokens::new(&secret).mint_phone(&args.account, Duration::from_secs(args.ttl_secs))?;
    // The token is the command's output, for scripts: stdout, one line.
    use std::io::Write;
    writeln!(std::io::stdout(), "{token}")?;
    Ok(())
}

fn serve(config: Config) -> anyhow::Result<()> {
    init_logging(config.log_format);
    if let Err(e) = pairgate::raise_open_files_limit() {
        tracing::warn!(error = %e, "could not raise the open-files limit");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        pairgate::run(listener, config, shutdown_signal()).await
    })
}

/// The gateway's log on stderr: `RUST_LOG` filters (default `info`), in
/// the format asked for.
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().with_current_span(false).init(),
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
