//! One worker process: its share of accounts, each a phone and its web
//! clients, driven through the phases the parent orders.
//!
//! Every socket is owned by one task for its whole life, from pairing to
//! `logout_all`, and that task always reads it (so the gateway's pings are
//! answered and nothing queues up between phases). The tasks follow a
//! `watch` channel holding the current phase; the worker counts the tasks
//! that finished a phase ("arrived") against those still alive, and only then
//! tells the parent the phase is done.
//!
//! Accounting that the loss checks rely on is kept per account (all of an
//! account's sockets live in one worker): acks a web client got for its sends
//! must equal messages its phone received, and the sum of `delivered` in the
//! phone's acks must equal messages its web clients received.
//!
//! - [`ctx`]: what a worker's tasks share: counters, histograms, accounts, the
//!   phase channel and its arrival count.
//! - [`connect`]: opening sockets: phone auth, web pairing, one task per socket.
//! - [`socket`]: a socket's task and what it does with each frame.
//! - [`writer`]: sending during the relay, flat out or on a schedule.
//! - [`timer`]: the precise timer scheduled sends wait on.
//! - [`phases`]: relay, churn, logout_one (soak), logout_all; one file each.
//! - [`results`]: the final numbers and the per-account loss checks.

mod connect;
mod ctx;
mod phases;
mod results;
mod socket;
mod timer;
mod writer;

use std::io::BufRead;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::wire::{Command, Event, WorkerConfig};

use connect::connect_all;
use ctx::{Account, Ctx, PhaseKind, Window, new_ctx};
use phases::logout::teardown_times;
use phases::relay::relay;
use results::finish;

/// Entry point of `loadtest worker`.
pub fn main() -> anyhow::Result<()> {
    crate::raise_nofile_limit();
    // Commands come from a plain thread reading stdin: when the parent goes
    // away (EOF), the worker exits at once instead of holding sockets.
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<Command>(16);
    let (cfg_tx, cfg_rx) = std::sync::mpsc::channel::<WorkerConfig>();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut lines = stdin.lock().lines();
        match lines.next() {
            Some(Ok(line)) => match serde_json::from_str(&line) {
                Ok(cfg) => {
                    let _ = cfg_tx.send(cfg);
                }
                Err(e) => {
                    eprintln!("loadtest worker: bad config: {e}");
                    std::process::exit(2);
                }
            },
            _ => std::process::exit(2),
        }
        for line in lines {
            let Ok(line) = line else { break };
            match serde_json::from_str::<Command>(&line) {
                Ok(cmd) => {
                    let finish = matches!(cmd, Command::Finish);
                    if cmd_tx.blocking_send(cmd).is_err() || finish {
                        return;
                    }
                }
                Err(e) => eprintln!("loadtest worker: bad command {line:?}: {e}"),
            }
        }
        // The parent is gone before `finish`.
        std::process::exit(3);
    });
    let cfg = cfg_rx.recv().context("no worker config on stdin")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (ev_tx, ev_rx) = mpsc::channel::<Event>(64);
        let writer = tokio::spawn(write_events(ev_rx));
        let ctx = Arc::new(new_ctx(cfg)?);
        let progress = tokio::spawn(report_progress(ctx.clone(), ev_tx.clone()));
        // This cycle's accounts, and every cycle's (a soak connects again
        // and again; the loss checks cover them all).
        let mut accounts: Vec<Arc<Account>> = Vec::new();
        let mut all_accounts: Vec<Arc<Account>> = Vec::new();
        while let Some(cmd) = cmd_rx.recv().await {
            let phase = match cmd {
                Command::Connect => {
                    accounts = connect_all(&ctx).await;
                    all_accounts.extend(accounts.iter().cloned());
                    "connect"
                }
                Command::Relay {
                    start_ns,
                    warm_ns,
                    end_ns,
                } => {
                    relay(
                        &ctx,
                        &accounts,
                        Window {
                            start_ns,
                            warm_ns,
                            end_ns,
                        },
                    )
                    .await;
                    "relay"
                }
                Command::Churn { rounds } => {
                    ctx.set_phase(PhaseKind::Churn(rounds));
                    ctx.all_arrived().await;
                    ctx.set_phase(PhaseKind::Idle);
                    "churn"
                }
                Command::LogoutOne => {
                    ctx.set_phase(PhaseKind::LogoutOne);
                    ctx.all_arrived().await;
                    ctx.set_phase(PhaseKind::Idle);
                    "logout_one"
                }
                Command::LogoutReady => {
                    ctx.set_phase(PhaseKind::LogoutReady);
                    ctx.all_arrived().await;
                    "logout_ready"
                }
                Command::Logout { release_ns } => {
                    ctx.set_phase(PhaseKind::Logout { release_ns });
                    ctx.all_arrived().await;
                    // A soak's next cycle spawns new socket tasks: they must
                    // not start in this phase.
                    ctx.set_phase(PhaseKind::Idle);
                    teardown_times(&ctx, &accounts);
                    "logout"
                }
                Command::Finish => {
                    progress.abort();
                    let result = finish(&ctx, &all_accounts);
                    let _ = ev_tx.send(Event::Result(Box::new(result))).await;
                    break;
                }
            };
            let _ = ev_tx.send(Event::Progress(ctx.snapshot())).await;
            let _ = ev_tx
                .send(Event::Done {
                    phase: phase.to_owned(),
                })
                .await;
        }
        drop(ev_tx);
        let _ = writer.await;
        anyhow::Ok(())
    })?;
    // Socket tasks may still be parked; the process ends here regardless.
    runtime.shutdown_background();
    Ok(())
}

/// The only writer of stdout: one JSON line per event.
async fn write_events(mut rx: mpsc::Receiver<Event>) {
    let mut out = tokio::io::stdout();
    while let Some(ev) = rx.recv().await {
        let Ok(mut line) = serde_json::to_vec(&ev) else {
            continue;
        };
        line.push(b'\n');
        if out.write_all(&line).await.is_err() || out.flush().await.is_err() {
            return;
        }
    }
}

async fn report_progress(ctx: Arc<Ctx>, tx: mpsc::Sender<Event>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        if tx.send(Event::Progress(ctx.snapshot())).await.is_err() {
            return;
        }
    }
}
