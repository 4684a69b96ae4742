//! `loadtest stalled`: web sockets that stop reading while their phones flood
//! them. Measures what the gateway holds for them: its RSS before, at the
//! peak of the flood, and after the stalled sockets were closed 4030 and
//! dropped. The gateway's bound is one `--max-queue-bytes` (plus one frame
//! and a few KiB of buffers) per stalled socket; the kernel's socket buffers
//! are not part of its RSS.
//!
//! Each account: a phone and one linked web session. The web session is
//! resumed on a socket with a 4 KiB receive buffer that, after `ready` and
//! `phone_status`, is never read again. The phone sends `--msg-size` bodies,
//! `--in-flight` at a time, until an `ack` says `delivered: 0` (its web was
//! excluded); every acknowledged delivery is counted. "After" is the lowest
//! RSS within 12 s of the stalled sockets' file descriptors closing (the
//! gateway returns freed memory to the system every 5 s after closes), with
//! the phones still connected, and again once the phones left too.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use pairgate::tokens::Tokens;
use pairgate_client::{Client, ConnectOptions};
use pairgate_protocol::ClientFrame;
use serde_json::value::RawValue;
use tokio::sync::Semaphore;

use crate::gateway::{Spawned, sample};

#[derive(clap::Args, Debug, Clone)]
pub struct StalledOpts {
    /// The pairgate binary to start for the run (on 127.0.0.1:0, fresh data dir).
    #[arg(long, value_name = "PATH")]
    pub spawn_gateway: PathBuf,
    /// Accounts, each with one web socket that stops reading.
    #[arg(long, default_value_t = 1000)]
    pub webs: usize,
    /// The gateway's `--max-queue-bytes`.
    #[arg(long, default_value_t = 65_536)]
    pub max_queue_bytes: u64,
    /// Size of each message body, in bytes.
    #[arg(long, default_value_t = 16_000)]
    pub msg_size: usize,
    /// Sends each phone keeps unacknowledged.
    #[arg(long, default_value_t = 4)]
    pub in_flight: usize,
    /// Accounts set up (or flooding) at once.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
}

/// What one run measured.
#[derive(Debug, serde::Serialize)]
pub struct StalledReport {
    pub webs: usize,
    pub max_queue_bytes: u64,
    pub msg_size: usize,
    pub rss_before: u64,
    pub rss_peak: u64,
    pub rss_after: u64,
    pub rss_after_phones_left: u64,
    /// Deliveries to the stalled sockets the gateway acknowledged, in bytes.
    pub acked_bytes: u64,
    pub flood_secs: f64,
}

pub fn main(opts: StalledOpts) -> anyhow::Result<bool> {
    crate::raise_nofile_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(opts))?;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let bound = report.webs as u64 * report.max_queue_bytes;
    println!(
        "stalled webs: {} x --max-queue-bytes {} ({:.1} MiB), bodies of {} bytes",
        report.webs,
        report.max_queue_bytes,
        mib(bound),
        report.msg_size
    );
    println!(
        "gateway RSS: before {:.1} MiB, peak {:.1} MiB (+{:.1} MiB, {:.2} x the queue bound), \
         after the 4030 closes {:.1} MiB, after the phones left too {:.1} MiB",
        mib(report.rss_before),
        mib(report.rss_peak),
        mib(report.rss_peak.saturating_sub(report.rss_before)),
        report.rss_peak.saturating_sub(report.rss_before) as f64 / bound as f64,
        mib(report.rss_after),
        mib(report.rss_after_phones_left)
    );
    println!(
        "acknowledged to the stalled sockets: {:.1} MiB (the rest of it sat in kernel buffers); flood {:.1} s",
        mib(report.acked_bytes),
        report.flood_secs
    );
    println!("{}", serde_json::to_string(&report)?);
    Ok(true)
}

async fn run(opts: StalledOpts) -> anyhow::Result<StalledReport> {
    let gateway = Spawned::start(
        &opts.spawn_gateway,
        1,
        &["--max-queue-bytes".into(), opts.max_queue_bytes.to_string()],
        None,
    )
    .await?;
    let base = format!("ws://{}", gateway.addr);
    let tokens = Tokens::new(&gateway.secret);
    let gate = Arc::new(Semaphore::new(opts.concurrency));

    // Set-up: every account's phone, and its web session on a stalled socket.
    let mut setups = Vec::new();
    for i in 0..opts.webs {
        let token = tokens.mint_phone(&format!("stalled-{i}"), Duration::from_secs(3600))?;
        let (base, gate) = (base.clone(), gate.clone());
        setups.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            setup(&base, &token).await
        }));
    }
    let mut accounts = Vec::new();
    for s in setups {
        accounts.push(s.await??);
    }
    let pid = gateway.pid;
    let rss = move || sample(pid).map(|s| s.rss_bytes).unwrap_or(0);
    let rss_before = rss();
    let fds_before = open_fds(pid);

    // The flood, with the gateway's RSS sampled throughout.
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampling = tokio::spawn({
        let peak = peak.clone();
        async move {
            loop {
                peak.fetch_max(rss(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let started = Instant::now();
    // A JSON string of `msg_size` bytes (quotes included in the count).
    let body: Arc<RawValue> = RawValue::from_string(format!(
        "\"{}\"",
        "z".repeat(opts.msg_size.saturating_sub(2))
    ))?
    .into();
    let mut floods = Vec::new();
    let mut stalled = Vec::new();
    for (phone, web) in accounts {
        stalled.push(web);
        let (gate, body) = (gate.clone(), body.clone());
        let in_flight = opts.in_flight;
        floods.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            flood(phone, &body, in_flight).await
        }));
    }
    let mut acked = 0u64;
    let mut phones = Vec::new();
    for f in floods {
        let (phone, n) = f.await??;
        acked += n;
        phones.push(phone);
    }
    let flood_secs = started.elapsed().as_secs_f64();

    // The stalled sockets are closed 4030 and, never reading, dropped after
    // the gateway's patience: wait for their file descriptors to go.
    let deadline = Instant::now() + Duration::from_secs(60);
    while open_fds(pid) > fds_before.saturating_sub(opts.webs) {
        if Instant::now() > deadline {
            bail!("the stalled sockets were not closed within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sampling.abort();
    let rss_peak = peak.load(Ordering::Relaxed);
    let rss_after = settled_rss(pid).await;
    // The phones still hold read buffers grown by the flood's long frames;
    // once they leave too, the gateway is back to its sessions alone.
    drop(stalled);
    drop(phones);
    let deadline = Instant::now() + Duration::from_secs(60);
    while open_fds(pid) > fds_before.saturating_sub(2 * opts.webs) {
        if Instant::now() > deadline {
            bail!("the phones' sockets were not closed within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_after_phones_left = settled_rss(pid).await;
    gateway.stop().await;
    Ok(StalledReport {
        webs: opts.webs,
        max_queue_bytes: opts.max_queue_bytes,
        msg_size: opts.msg_size,
        rss_before,
        rss_peak,
        rss_after,
        rss_after_phones_left,
        acked_bytes: acked * opts.msg_size as u64,
        flood_secs,
    })
}

/// A phone and one linked web session resumed on a socket that stops
/// reading after `ready` and `phone_status`.
async fn setup(base: &str, phone_token: &str) -> anyhow::Result<(Client, Client)> {
    let opts = ConnectOptions::default();
    let mut phone = Client::phone(&format!("{base}/ws/phone"), phone_token, &opts).await?;
    let mut web = Client::connect(&format!("{base}/ws/web"), &opts).await?;
    let linked = phone.pair_web(&mut web).await?;
    let token = linked["token"].as_str().context("linked without token")?;
    web.close().await;
    phone.expect("session_offline").await?;
    let stalled_opts = ConnectOptions {
        recv_buffer: Some(4096),
        ..ConnectOptions::default()
    };
    let mut stalled = Client::connect(&format!("{base}/ws/web"), &stalled_opts).await?;
    stalled
        .request(ClientFrame::Auth {
            token: token.to_owned(),
        })
        .await?;
    stalled.expect("phone_status").await?;
    phone.expect("session_online").await?;
    Ok((phone, stalled))
}

/// Sends until the web is excluded; how many deliveries were acknowledged.
async fn flood(
    mut phone: Client,
    body: &RawValue,
    in_flight: usize,
) -> anyhow::Result<(Client, u64)> {
    let mut pending = std::collections::VecDeque::new();
    let mut acked = 0;
    loop {
        while pending.len() < in_flight {
            let id = phone.fresh_id();
            phone
                .send(&ClientFrame::Send { body, to: None }, Some(&id))
                .await?;
            pending.push_back(id);
        }
        let id = pending.pop_front().context("nothing in flight")?;
        let ack = phone.wait_for(|m| m["id"] == id.as_str()).await?;
        match ack["delivered"].as_u64() {
            Some(1) => acked += 1,
            Some(0) => break,
            _ => bail!("unexpected reply {ack}"),
        }
    }
    // Take the replies still owed, so the phone's socket is quiet.
    for id in pending {
        phone.wait_for(|m| m["id"] == id.as_str()).await?;
    }
    Ok((phone, acked))
}

/// The gateway hands freed memory back within its trim period (5 s): the
/// lowest RSS over the next 12 s.
async fn settled_rss(pid: u32) -> u64 {
    let rss = || sample(pid).map(|s| s.rss_bytes).unwrap_or(0);
    let mut lowest = rss();
    let settle = Instant::now() + Duration::from_secs(12);
    while Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(250)).await;
        lowest = lowest.min(rss());
    }
    lowest
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}
