//! The `pairgate` binary: `serve` (the default), `config`, `token` and `phone`.

mod phone_cli;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use pairgate::Config;
use pairgate::config::LogFormat;
use pairgate::config_file::{self, ConfigFile};
use pairgate::secret::read_secret_file;
use pairgate::tokens::{SECRET_FILE, Tokens, resolve_secret};
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
    /// Print the configuration `serve` would run with (the same options),
    /// as TOML that `--config` takes, secrets left out.
    Config(Box<Config>),
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
    /// Read the secret from this file (trimmed) instead.
    #[arg(long, env = "PAIRGATE_SECRET_FILE", conflicts_with = "secret")]
    secret_file: Option<PathBuf>,
    /// Token lifetime in seconds.
    #[arg(long, default_value_t = 86_400)]
    ttl_secs: u64,
}

/// The subcommands that take `serve`'s options, and so `--config`; `""`
/// is the top level (`serve` without its name).
const TAKES_SERVE_OPTIONS: [&str; 3] = ["", "serve", "config"];

/// The subcommands that take some of `serve`'s options (`token`: the data
/// dir and the secret), and so `--config`, for those keys only. The others
/// (`phone`, a client of the gateway) never read the file: a config file
/// meant for `serve` cannot stop them.
const SHARES_SERVE_OPTIONS: [&str; 1] = ["token"];

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let (cli, matches) = parse(&args);
    let serve_matches = match matches.subcommand() {
        Some((_, m)) => m,
        None => &matches,
    };
    let outcome = match cli.command {
        Some(Command::Token(mut args)) => {
            one_of(&mut args.secret, &mut args.secret_file, serve_matches)
                .and_then(|()| token(args))
                .map(|()| ExitCode::SUCCESS)
        }
        Some(Command::Serve(config)) => one_secret(*config, serve_matches)
            .and_then(serve)
            .map(|()| ExitCode::SUCCESS),
        Some(Command::Config(config)) => Ok(print_config(*config, serve_matches)),
        Some(Command::Phone(args)) => phone(args),
        None => one_secret(cli.serve, serve_matches)
            .and_then(serve)
            .map(|()| ExitCode::SUCCESS),
    };
    // What failed and why, on one line: an operator's error (a path, a lock,
    // a bad option), not a programmer's backtrace.
    outcome.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}

/// The command line, with `--config`'s file as the defaults of the options
/// it sets. A bad file or value exits 2, as a bad flag does, naming where
/// the value came from.
fn parse(args: &[OsString]) -> (Cli, ArgMatches) {
    let mut cmd = Cli::command();
    for name in TAKES_SERVE_OPTIONS.iter().chain(&SHARES_SERVE_OPTIONS) {
        cmd = on_command(cmd, name, |c| c.arg(config_file::config_arg()));
    }
    // A subcommand comes first (`args_conflicts_with_subcommands`); an
    // option or nothing there is `serve`'s top level (`""`), another word
    // (`help`) is no command that reads the file.
    let named = args.get(1).and_then(|a| a.to_str()).unwrap_or_default();
    let sub = if named.is_empty() || named.starts_with('-') {
        ""
    } else {
        named
    };
    let shares = SHARES_SERVE_OPTIONS.contains(&sub);
    let reads_file = TAKES_SERVE_OPTIONS.contains(&sub) || shares;
    let file = config_file::path_from(args)
        .filter(|_| reads_file)
        .map(|path| ConfigFile::load(&path).unwrap_or_else(|e| usage_error(&cmd, sub, e)));
    if let Some(f) = &file {
        let serve = Cli::command();
        let mut failed = None;
        cmd = on_command(cmd, sub, |c| {
            let applied = if shares {
                f.apply_shared(c.clone(), &serve)
            } else {
                f.apply(c.clone())
            };
            applied.unwrap_or_else(|e| {
                failed = Some(e);
                c
            })
        });
        if let Some(e) = failed {
            usage_error(&cmd, sub, e);
        }
    }
    let matches = cmd
        .clone()
        .try_get_matches_from(args)
        .unwrap_or_else(|e| config_file::name_the_source(e, &mut cmd, args, file.as_ref()).exit());
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut cmd).exit());
    (cli, matches)
}

/// `cmd` with `f` applied to the subcommand `name` (`""`: to `cmd` itself).
fn on_command(
    cmd: clap::Command,
    name: &str,
    f: impl FnOnce(clap::Command) -> clap::Command,
) -> clap::Command {
    if name.is_empty() {
        f(cmd)
    } else {
        cmd.mut_subcommand(name, f)
    }
}

/// Exits 2 with `message` and the usage of the command that read the file
/// (`sub`; `""`: `serve`'s top level), as clap does for a bad flag.
fn usage_error(cmd: &clap::Command, sub: &str, message: String) -> ! {
    let mut cmd = cmd.clone();
    // Built, so a subcommand's usage names the binary (`pairgate token`).
    cmd.build();
    let error = clap::Error::raw(clap::error::ErrorKind::ValueValidation, message);
    match cmd.find_subcommand_mut(sub) {
        Some(command) if !sub.is_empty() => error.format(command).exit(),
        _ => error.format(&mut cmd).exit(),
    }
}

/// `--secret` and `--secret-file` given at once: clap refuses it on the
/// command line and in the environment; with the config file (whose values
/// are defaults, which clap lets through) the one from the stronger source
/// wins, and both in the file is an error.
fn one_secret(mut config: Config, m: &ArgMatches) -> anyhow::Result<Config> {
    one_of(&mut config.secret, &mut config.secret_file, m)?;
    Ok(config)
}

/// `--secret` or `--secret-file`, whichever came from the stronger source
/// (see `one_secret`), for any command that takes both.
fn one_of(
    secret: &mut Option<String>,
    secret_file: &mut Option<PathBuf>,
    m: &ArgMatches,
) -> anyhow::Result<()> {
    if secret.is_some() && secret_file.is_some() {
        let from_secret = m.value_source("secret");
        let from_file = m.value_source("secret_file");
        anyhow::ensure!(
            from_secret != from_file,
            "--secret and --secret-file are both set (only one may be)"
        );
        if from_secret > from_file {
            *secret_file = None;
        } else {
            *secret = None;
        }
    }
    Ok(())
}

/// `pairgate config`: the configuration in force, checked as `serve` would
/// check it (without touching the data dir), or the error and exit code 2.
fn print_config(config: Config, m: &ArgMatches) -> ExitCode {
    init_cli_logging();
    let checked = one_secret(config, m).and_then(|config| {
        config.explicit_secret()?;
        config.previous_secrets()?;
        anyhow::ensure!(
            config.redis.is_none() || config.secret.is_some() || config.secret_file.is_some(),
            "--redis needs --secret or --secret-file"
        );
        Ok(config_file::render(&config)?)
    });
    match checked {
        Ok(text) => {
            use std::io::Write;
            match std::io::stdout().write_all(text.as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Warnings of a one-shot command on stderr (its output is stdout).
fn init_cli_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn phone(args: phone_cli::PhoneArgs) -> anyhow::Result<ExitCode> {
    // Stdout is the command's output; only warnings go to stderr.
    init_cli_logging();
    // One socket and one stdin: a single thread is plenty.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(phone_cli::run(args))
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    init_cli_logging();
    let explicit = match (&args.secret, &args.secret_file) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(path)) => Some(read_secret_file(path)?),
        (None, None) => None,
    };
    if explicit.is_none() && !args.data_dir.join(SECRET_FILE).exists() {
        // The contract has `token` create the secret as `serve` would; but
        // a mistyped --data-dir makes a secret no gateway uses.
        tracing::warn!(
            data_dir = %args.data_dir.display(),
            "no secret in this data dir: creating one; a gateway on another data dir \
             (or with its own --secret) will refuse this token"
        );
    }
    let secret = resolve_secret(explicit.as_deref(), &args.data_dir)?;
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
