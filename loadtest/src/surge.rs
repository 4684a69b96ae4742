//! `loadtest surge`: a reconnect surge, as after a restart or a node's drain:
//! `--clients` phones (one account each) open their sockets and authenticate
//! at the same instant against a freshly started gateway. A refused upgrade
//! (503 at `--max-sockets`, with `Retry-After`) is retried the way the page
//! and the phone CLI do: jittered exponential backoff from 100 ms, capped at
//! 2 s. Measures, per client, the time from the surge's start to
//! authenticated (retries included) and of its last attempt alone, and how
//! many attempts were refused. Fails if a client was never admitted.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pairgate::tokens::Tokens;
use pairgate_client::{Client, ConnectOptions};

use crate::gateway::Spawned;

#[derive(clap::Args, Debug, Clone)]
pub struct SurgeOpts {
    /// The pairgate binary to start for the run (on 127.0.0.1:0, fresh data dir).
    #[arg(long, value_name = "PATH")]
    pub spawn_gateway: PathBuf,
    /// Phones that connect at once.
    #[arg(long, default_value_t = 5000)]
    pub clients: usize,
    /// The gateway's `--max-sockets` (0: its default, from the open-files limit).
    #[arg(long, default_value_t = 0)]
    pub max_sockets: usize,
    /// A client that is not authenticated by then counts as refused for good.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub give_up: Duration,
}

#[derive(Debug, serde::Serialize)]
pub struct SurgeReport {
    pub clients: usize,
    pub max_sockets: usize,
    pub authenticated: usize,
    pub never_admitted: usize,
    pub refused_attempts: u64,
    /// From the surge's start to authenticated, retries included (ms).
    pub total_p50_ms: f64,
    pub total_p99_ms: f64,
    pub total_max_ms: f64,
    /// The last (successful) attempt alone: connect, upgrade, hello, auth (ms).
    pub attempt_p50_ms: f64,
    pub attempt_p99_ms: f64,
    pub attempt_max_ms: f64,
    pub surge_secs: f64,
}

pub fn main(opts: SurgeOpts) -> anyhow::Result<bool> {
    crate::raise_nofile_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(opts))?;
    println!(
        "surge: {} phones at once (gateway --max-sockets {}): {} authenticated, {} never admitted, \
         {} refused attempts (503, retried)",
        report.clients,
        report.max_sockets,
        report.authenticated,
        report.never_admitted,
        report.refused_attempts
    );
    println!(
        "start to authenticated (retries included): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; \
         one handshake + auth: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; all in {:.2} s",
        report.total_p50_ms,
        report.total_p99_ms,
        report.total_max_ms,
        report.attempt_p50_ms,
        report.attempt_p99_ms,
        report.attempt_max_ms,
        report.surge_secs
    );
    println!("{}", serde_json::to_string(&report)?);
    Ok(report.never_admitted == 0)
}

/// One client's outcome: (start to authenticated, last attempt, refusals),
/// or `None` when it gave up; its socket is kept open until the end.
type Outcome = (Option<(Duration, Duration, Client)>, u64);

async fn run(opts: SurgeOpts) -> anyhow::Result<SurgeReport> {
    let mut extra = vec![];
    if opts.max_sockets > 0 {
        extra = vec!["--max-sockets".to_owned(), opts.max_sockets.to_string()];
    }
    let gateway = Spawned::start(&opts.spawn_gateway, 1, &extra, None).await?;
    let url = format!("ws://{}/ws/phone", gateway.addr);
    let tokens = Tokens::new(&gateway.secret);
    let mut tokens_by_client = Vec::with_capacity(opts.clients);
    for i in 0..opts.clients {
        tokens_by_client.push(tokens.mint_phone(&format!("surge-{i}"), Duration::from_secs(3600))?);
    }
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(opts.clients);
    for token in tokens_by_client {
        let url = url.clone();
        let give_up = opts.give_up;
        tasks.push(tokio::spawn(async move {
            client(&url, &token, start, give_up).await
        }));
    }
    let mut totals = Vec::new();
    let mut attempts = Vec::new();
    let mut refused_attempts = 0;
    let mut never_admitted = 0;
    let mut held = Vec::new();
    for t in tasks {
        let (done, refused): Outcome = t.await?;
        refused_attempts += refused;
        match done {
            Some((total, attempt, socket)) => {
                totals.push(total);
                attempts.push(attempt);
                held.push(socket);
            }
            None => never_admitted += 1,
        }
    }
    let surge_secs = start.elapsed().as_secs_f64();
    drop(held);
    let _ = gateway.stop().await;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pct = |v: &mut Vec<Duration>, p: f64| -> f64 {
        if v.is_empty() {
            return 0.0;
        }
        v.sort_unstable();
        let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
        ms(v[i])
    };
    Ok(SurgeReport {
        clients: opts.clients,
        max_sockets: opts.max_sockets,
        authenticated: totals.len(),
        never_admitted,
        refused_attempts,
        total_p50_ms: pct(&mut totals, 0.50),
        total_p99_ms: pct(&mut totals, 0.99),
        total_max_ms: pct(&mut totals, 1.0),
        attempt_p50_ms: pct(&mut attempts, 0.50),
        attempt_p99_ms: pct(&mut attempts, 0.99),
        attempt_max_ms: pct(&mut attempts, 1.0),
        surge_secs,
    })
}

/// Connects and authenticates, retrying refusals with jittered backoff.
async fn client(url: &str, token: &str, start: Instant, give_up: Duration) -> Outcome {
    let opts = ConnectOptions {
        timeout: Duration::from_secs(30),
        ..ConnectOptions::default()
    };
    let mut backoff = Duration::from_millis(100);
    let mut refused = 0;
    loop {
        let attempt = Instant::now();
        match Client::phone(url, token, &opts).await {
            Ok(c) => return (Some((start.elapsed(), attempt.elapsed(), c)), refused),
            Err(_) => {
                refused += 1;
                if start.elapsed() >= give_up {
                    return (None, refused);
                }
                let jittered = backoff.mul_f64(0.5 + rand::random::<f64>());
                tokio::time::sleep(jittered).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}
