//! `loadtest`: drives a pairgate gateway the way real phones and browsers do,
//! from several worker processes, and fails when anything was lost.
//!
//! - [`cli`]: options and the `--smoke` preset.
//! - [`clock`]: the clock every process shares (send times, phase instants).
//! - [`parent`]: the plan, the phases in lock-step, sampling, progress.
//! - [`worker`]: one process's sockets through pairing, relay, churn, logout_all
//!   (one module per job: connect, socket, writer, phases; see its docs).
//! - [`wire`]: parent ↔ worker messages (JSON lines; histograms V2 + base64).
//! - [`gateway`]: spawning the gateway, finding its pid, /proc sampling.
//! - [`report`]: exact merge, loss checks, table, JSON, SVG.
//! - [`soak`]: `--soak`: the gateway's RSS over time, its slope, the verdict.
//! - [`stalled`]: `loadtest stalled`, web sockets that stop reading under a flood.
//! - [`surge`]: `loadtest surge`, a reconnect surge against a fresh node.
//! - [`chaos`]: `loadtest chaos`, a node or Redis killed under load.

mod chaos;
mod cli;
mod clock;
mod gateway;
mod parent;
mod report;
mod soak;
mod stalled;
mod surge;
mod wire;
mod worker;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match cli::parse() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Some(cli::Command::Worker { index: _ }) => worker::main().map(|()| true),
        Some(cli::Command::Stalled(opts)) => stalled::main(opts),
        Some(cli::Command::Surge(opts)) => surge::main(opts),
        Some(cli::Command::Chaos(opts)) => chaos::main(opts),
        None => parent_main(cli.opts),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn parent_main(opts: cli::Opts) -> anyhow::Result<bool> {
    raise_nofile_limit();
    // The parent only orchestrates; the sockets live in the workers.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(parent::run(opts))
}

/// Lifts the soft open-files limit to the hard one (20,000 here): each
/// socket is a file descriptor.
pub fn raise_nofile_limit() {
    if let Err(e) = pairgate::raise_open_files_limit() {
        eprintln!("loadtest: could not raise the open-files limit: {e}");
    }
}
