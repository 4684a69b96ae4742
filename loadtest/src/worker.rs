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

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use pairgate::client::{Client, ClientError, ConnectOptions, Socket};
use pairgate::protocol::ClientFrame;
use pairgate::tokens::Tokens;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;

use crate::wire::{
    Command, Event, Progress, WorkerConfig, WorkerResult, encode_histogram, new_histogram,
};

/// Wall clock in ns since the UNIX epoch: the one clock every process shares,
/// so a timestamp put in a body by one process can be read by another.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The tokio instant at which the wall clock reads `ns`.
fn instant_at(ns: u64) -> Instant {
    Instant::now() + Duration::from_nanos(ns.saturating_sub(now_ns()))
}

/// Histograms a worker keeps; names are the report's keys.
#[derive(Clone, Copy, Debug)]
#[repr(usize)]
enum H {
    Connect,
    Pair,
    RelayWebToPhone,
    RelayPhoneToWeb,
    AckWeb,
    AckPhone,
    Resume,
    LogoutOk,
    LogoutLastClose,
}

const HIST_NAMES: [&str; 9] = [
    "connect",
    "pair",
    "relay_web_to_phone",
    "relay_phone_to_web",
    "ack_web",
    "ack_phone",
    "resume",
    "logout_all_ok",
    "logout_all_last_close",
];

/// Samples a socket collects before taking the shared histogram lock once.
const SAMPLE_BATCH: usize = 256;
/// The id of the phone's `logout_all`.
const LOGOUT_ID: &str = "lo";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Phone,
    Web,
}

#[derive(Clone, Copy, Debug, Default)]
struct Window {
    start_ns: u64,
    warm_ns: u64,
    end_ns: u64,
}

impl Window {
    fn measures(&self, t: u64) -> bool {
        t >= self.warm_ns && t < self.end_ns
    }
}

#[derive(Clone, Debug)]
enum PhaseKind {
    Idle,
    Relay(Window),
    StopRelay,
    Churn(usize),
    Logout,
}

#[derive(Clone, Debug)]
struct Phase {
    seq: u64,
    kind: PhaseKind,
}

/// Worker-wide counters; snapshots go to the parent as `Progress`.
#[derive(Default)]
struct Counters {
    phones_ready: AtomicU64,
    webs_paired: AtomicU64,
    sockets_open: AtomicI64,
    sockets_peak: AtomicI64,
    sent_web: AtomicU64,
    sent_phone: AtomicU64,
    acked_web: AtomicU64,
    acked_phone: AtomicU64,
    err_web: AtomicU64,
    err_phone: AtomicU64,
    recv_phone: AtomicU64,
    recv_web: AtomicU64,
    resumed: AtomicU64,
    logout_ok: AtomicU64,
    logged_out_webs: AtomicU64,
    failures: AtomicU64,
    errors: AtomicU64,
    // Inside the measured window.
    win_sent_web: AtomicU64,
    win_sent_phone: AtomicU64,
    win_recv_phone: AtomicU64,
    win_recv_web: AtomicU64,
    out_of_order: AtomicU64,
    session_online: AtomicU64,
    session_offline: AtomicU64,
    phone_status_offline: AtomicU64,
}

/// One account's phone and web clients, and the numbers its checks compare.
struct Account {
    index: usize,
    name: String,
    webs: AtomicUsize,
    web_acked: AtomicU64,
    phone_got: AtomicU64,
    phone_delivered: AtomicU64,
    webs_got: AtomicU64,
    logout_sent_ns: AtomicU64,
    logout_ok_ns: AtomicU64,
    last_close_ns: AtomicU64,
    webs_closed: AtomicU64,
}

struct Sync {
    seq: u64,
    arrived: usize,
    alive: usize,
}

struct Ctx {
    cfg: WorkerConfig,
    tokens: Tokens,
    c: Counters,
    hists: Mutex<Vec<Histogram<u64>>>,
    errors: Mutex<BTreeMap<String, u64>>,
    failures: Mutex<(BTreeMap<String, u64>, Vec<String>)>,
    phase: watch::Sender<Phase>,
    /// Bounds handshakes in progress (pairing, resume, logout_all).
    handshakes: Semaphore,
    sync: Mutex<Sync>,
    sync_changed: Notify,
    /// Body padding, built once.
    pad: String,
}

/// A failure of one socket: its kind (a report key), what happened, and the
/// contract's error code when the gateway refused something.
#[derive(Debug)]
struct Fail {
    kind: &'static str,
    msg: String,
    code: Option<String>,
}

fn fail<E: std::fmt::Display>(kind: &'static str) -> impl FnOnce(E) -> Fail {
    move |e| Fail {
        kind,
        msg: e.to_string(),
        code: None,
    }
}

/// Like `fail`, keeping the error code of an `error` reply for the report.
fn refused(kind: &'static str) -> impl FnOnce(ClientError) -> Fail {
    move |e| Fail {
        kind,
        code: e.code().map(str::to_owned),
        msg: e.to_string(),
    }
}

type Res<T> = Result<T, Fail>;

impl Ctx {
    fn record_fail(&self, f: Fail, who: &str) {
        if let Some(code) = &f.code {
            self.record_error(code);
        }
        self.record_failure(f.kind, format!("{who}: {}", f.msg));
    }

    fn record_failure(&self, kind: &str, msg: String) {
        self.c.failures.fetch_add(1, Relaxed);
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        *f.0.entry(kind.to_owned()).or_default() += 1;
        if f.1.len() < 12 {
            f.1.push(format!("{kind}: {msg}"));
        }
    }

    fn record_error(&self, code: &str) {
        self.c.errors.fetch_add(1, Relaxed);
        let mut e = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        *e.entry(code.to_owned()).or_default() += 1;
    }

    fn record(&self, h: H, micros: u64) {
        let mut hs = self.hists.lock().unwrap_or_else(|e| e.into_inner());
        hs[h as usize].saturating_record(micros.max(1));
    }

    fn record_batch(&self, samples: &mut Vec<(H, u64)>) {
        if samples.is_empty() {
            return;
        }
        let mut hs = self.hists.lock().unwrap_or_else(|e| e.into_inner());
        for (h, v) in samples.drain(..) {
            hs[h as usize].saturating_record(v.max(1));
        }
    }

    fn socket_opened(&self) {
        let now = self.c.sockets_open.fetch_add(1, Relaxed) + 1;
        self.c.sockets_peak.fetch_max(now, Relaxed);
    }

    fn socket_closed(&self) {
        self.c.sockets_open.fetch_sub(1, Relaxed);
    }

    /// Starts a phase: nobody has arrived at it yet.
    fn set_phase(&self, kind: PhaseKind) {
        let seq = {
            let mut s = self.sync.lock().unwrap_or_else(|e| e.into_inner());
            s.seq += 1;
            s.arrived = 0;
            s.seq
        };
        self.phase.send_replace(Phase { seq, kind });
    }

    /// Returns whether the arrival counted (it was for the current phase).
    fn arrive(&self, seq: u64) -> bool {
        let mut s = self.sync.lock().unwrap_or_else(|e| e.into_inner());
        let current = s.seq == seq;
        if current {
            s.arrived += 1;
        }
        drop(s);
        self.sync_changed.notify_waiters();
        current
    }

    fn join(&self) {
        self.sync.lock().unwrap_or_else(|e| e.into_inner()).alive += 1;
    }

    /// A socket task ends; `arrived_seq` is the last phase it arrived at, so
    /// that a task which arrived and then ended is not counted twice.
    fn leave(&self, arrived_seq: u64) {
        let mut s = self.sync.lock().unwrap_or_else(|e| e.into_inner());
        s.alive -= 1;
        if s.seq == arrived_seq {
            s.arrived -= 1;
        }
        drop(s);
        self.sync_changed.notify_waiters();
    }

    /// Waits until every live socket task has finished the current phase.
    async fn all_arrived(&self) {
        loop {
            let notified = self.sync_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let s = self.sync.lock().unwrap_or_else(|e| e.into_inner());
                if s.arrived >= s.alive {
                    return;
                }
            }
            notified.await;
        }
    }

    /// The node URL for socket `slot` of `account` (0 = phone, 1.. = webs,
    /// higher on each churn round so resumes move between nodes).
    fn url(&self, account: usize, slot: usize, role: Role) -> String {
        let n = self.cfg.urls.len();
        let node = if self.cfg.pin_accounts {
            account % n
        } else {
            (account + slot) % n
        };
        let path = match role {
            Role::Phone => "/ws/phone",
            Role::Web => "/ws/web",
        };
        format!("{}{path}", self.cfg.urls[node].trim_end_matches('/'))
    }

    fn connect_options(&self, account: usize, slot: usize) -> ConnectOptions {
        let ips = &self.cfg.source_ips;
        let global = account * (self.cfg.webs_per_phone + 1) + slot;
        ConnectOptions {
            user_agent: Some(format!("pairgate-loadtest/{}", env!("CARGO_PKG_VERSION"))),
            origin: None,
            bind: (!ips.is_empty()).then(|| ips[global % ips.len()]),
            timeout: Duration::from_millis(self.cfg.timeout_ms),
            recv_buffer: None,
        }
    }

    fn snapshot(&self) -> Progress {
        let c = &self.c;
        let g = |a: &AtomicU64| a.load(Relaxed);
        Progress {
            phones_ready: g(&c.phones_ready),
            webs_paired: g(&c.webs_paired),
            sockets_open: c.sockets_open.load(Relaxed),
            sockets_peak: c.sockets_peak.load(Relaxed),
            sent_web: g(&c.sent_web),
            sent_phone: g(&c.sent_phone),
            acked_web: g(&c.acked_web),
            acked_phone: g(&c.acked_phone),
            recv_phone: g(&c.recv_phone),
            recv_web: g(&c.recv_web),
            resumed: g(&c.resumed),
            logout_ok: g(&c.logout_ok),
            logged_out_webs: g(&c.logged_out_webs),
            failures: g(&c.failures),
            errors: g(&c.errors),
        }
    }
}

/// The fields of a server frame the load test looks at, borrowed from the
/// text: parsing this is much cheaper than building a `serde_json::Value`.
#[derive(Deserialize)]
struct In<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(default)]
    id: Option<&'a str>,
    #[serde(default)]
    code: Option<&'a str>,
    #[serde(default)]
    delivered: Option<u64>,
    #[serde(default)]
    from: Option<&'a str>,
    #[serde(default)]
    body: Option<Body>,
    #[serde(default)]
    online: Option<bool>,
    #[serde(default)]
    closed: Option<u64>,
    #[serde(default)]
    reason: Option<&'a str>,
}

/// The load test's message body: send time (wall ns) and the sender's sequence number.
#[derive(Deserialize, Default)]
struct Body {
    #[serde(default)]
    t: u64,
    #[serde(default)]
    s: u64,
}

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
        let mut accounts: Vec<Arc<Account>> = Vec::new();
        while let Some(cmd) = cmd_rx.recv().await {
            let phase = match cmd {
                Command::Connect => {
                    accounts = connect_all(&ctx).await;
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
                Command::Logout => {
                    ctx.set_phase(PhaseKind::Logout);
                    ctx.all_arrived().await;
                    teardown_times(&ctx, &accounts);
                    "logout"
                }
                Command::Finish => {
                    progress.abort();
                    let result = finish(&ctx, &accounts);
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

fn new_ctx(cfg: WorkerConfig) -> anyhow::Result<Ctx> {
    anyhow::ensure!(!cfg.urls.is_empty(), "no gateway url");
    let (phase, _) = watch::channel(Phase {
        seq: 0,
        kind: PhaseKind::Idle,
    });
    Ok(Ctx {
        tokens: Tokens::new(&cfg.secret),
        pad: "x".repeat(cfg.msg_size.saturating_sub(48)),
        handshakes: Semaphore::new(cfg.connect_concurrency.max(1)),
        cfg,
        c: Counters::default(),
        hists: Mutex::new(HIST_NAMES.iter().map(|_| new_histogram()).collect()),
        errors: Mutex::default(),
        failures: Mutex::default(),
        phase,
        sync: Mutex::new(Sync {
            seq: 0,
            arrived: 0,
            alive: 0,
        }),
        sync_changed: Notify::new(),
    })
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

// ---- connect: phones authenticate, web clients pair --------------------------

async fn connect_all(ctx: &Arc<Ctx>) -> Vec<Arc<Account>> {
    let accounts: Vec<Arc<Account>> = (ctx.cfg.first_account..ctx.cfg.end_account)
        .map(|index| {
            Arc::new(Account {
                index,
                name: format!("{}-{index}", ctx.cfg.run_id),
                webs: AtomicUsize::new(0),
                web_acked: AtomicU64::new(0),
                phone_got: AtomicU64::new(0),
                phone_delivered: AtomicU64::new(0),
                webs_got: AtomicU64::new(0),
                logout_sent_ns: AtomicU64::new(0),
                logout_ok_ns: AtomicU64::new(0),
                last_close_ns: AtomicU64::new(0),
                webs_closed: AtomicU64::new(0),
            })
        })
        .collect();
    let mut set = tokio::task::JoinSet::new();
    for acct in &accounts {
        let (ctx, acct) = (ctx.clone(), acct.clone());
        set.spawn(async move {
            if let Err(f) = setup_account(&ctx, &acct).await {
                ctx.record_fail(f, &acct.name);
            }
        });
    }
    while set.join_next().await.is_some() {}
    accounts
}

async fn setup_account(ctx: &Arc<Ctx>, acct: &Arc<Account>) -> Res<()> {
    let _permit = ctx.handshakes.acquire().await.map_err(fail("internal"))?;
    let token = ctx
        .tokens
        .mint_phone(&acct.name, Duration::from_secs(24 * 3600))
        .map_err(fail("mint_token"))?;
    let t0 = now_ns();
    let mut phone = Client::connect(
        &ctx.url(acct.index, 0, Role::Phone),
        &ctx.connect_options(acct.index, 0),
    )
    .await
    .map_err(refused("phone_connect"))?;
    ctx.socket_opened();
    ctx.record(H::Connect, (now_ns() - t0) / 1000);
    if let Err(e) = phone
        .request(ClientFrame::Auth {
            token: token.clone(),
        })
        .await
    {
        ctx.socket_closed();
        return Err(refused("phone_auth")(e));
    }
    ctx.c.phones_ready.fetch_add(1, Relaxed);
    for j in 0..ctx.cfg.webs_per_phone {
        match pair_web(ctx, acct, &mut phone, j).await {
            Ok((ws, token)) => {
                acct.webs.fetch_add(1, Relaxed);
                spawn_socket(ctx, acct, Role::Web, j, ws, Some(token));
            }
            Err(f) => ctx.record_fail(f, &format!("{} web {j}", acct.name)),
        }
    }
    spawn_socket(ctx, acct, Role::Phone, 0, phone.into_socket(), None);
    Ok(())
}

/// One web client through the QR handshake: `pair` → `qr{ref}`, the phone's
/// `link` → `link_request`, `link_confirm` → `device_linked`, and the web
/// client's `linked{token}` + `phone_status`.
async fn pair_web(
    ctx: &Arc<Ctx>,
    acct: &Account,
    phone: &mut Client,
    j: usize,
) -> Res<(Socket, String)> {
    let slot = 1 + j;
    let t0 = now_ns();
    let mut web = Client::connect(
        &ctx.url(acct.index, slot, Role::Web),
        &ctx.connect_options(acct.index, slot),
    )
    .await
    .map_err(refused("web_connect"))?;
    ctx.socket_opened();
    ctx.record(H::Connect, (now_ns() - t0) / 1000);
    let result = async {
        let t0 = now_ns();
        let qr = web
            .request(ClientFrame::Pair {
                remember: true,
                device_name: Some(format!("loadtest web {j}")),
            })
            .await
            .map_err(refused("pair"))?;
        let reference = qr["ref"].as_str().ok_or_else(|| Fail {
            kind: "pair",
            msg: format!("qr without ref: {qr}"),
            code: None,
        })?;
        let request = phone.link(reference).await.map_err(refused("link"))?;
        let (confirmed, linked) = tokio::join!(phone.confirm(&request.request_id), async {
            let linked = web.expect("linked").await;
            (linked, now_ns())
        });
        confirmed.map_err(refused("link_confirm"))?;
        let (linked, t1) = linked;
        let linked = linked.map_err(refused("linked"))?;
        let status = web
            .expect("phone_status")
            .await
            .map_err(refused("linked"))?;
        if status["online"] != true {
            ctx.c.phone_status_offline.fetch_add(1, Relaxed);
        }
        ctx.record(H::Pair, (t1 - t0) / 1000);
        let token = linked["token"].as_str().ok_or_else(|| Fail {
            kind: "linked",
            msg: format!("linked without token: {linked}"),
            code: None,
        })?;
        Ok(token.to_owned())
    }
    .await;
    match result {
        Ok(token) => {
            ctx.c.webs_paired.fetch_add(1, Relaxed);
            Ok((web.into_socket(), token))
        }
        Err(f) => {
            ctx.socket_closed();
            Err(f)
        }
    }
}

fn spawn_socket(
    ctx: &Arc<Ctx>,
    acct: &Arc<Account>,
    role: Role,
    web_index: usize,
    ws: Socket,
    token: Option<String>,
) {
    ctx.join();
    let mut sock = Sock {
        ctx: ctx.clone(),
        acct: acct.clone(),
        role,
        web_index,
        ws: Some(ws),
        token,
        window: None,
        samples: Vec::with_capacity(SAMPLE_BATCH),
        last_seq: Vec::new(),
        arrived_seq: 0,
        recent: Vec::new(),
        logged_out: false,
        logout_closed: false,
    };
    let mut phase = ctx.phase.subscribe();
    tokio::spawn(async move {
        let result = sock.run(&mut phase).await;
        sock.ctx.record_batch(&mut sock.samples);
        if let Err(f) = result {
            let who = match role {
                Role::Phone => format!("{} phone", sock.acct.name),
                Role::Web => format!("{} web {web_index}", sock.acct.name),
            };
            let who = format!("{who} (last frames: {})", sock.recent.join(","));
            sock.ctx.record_fail(f, &who);
            if sock.ws.is_some() {
                sock.ctx.socket_closed();
            }
        }
        sock.ctx.leave(sock.arrived_seq);
    });
}

// ---- one socket's life -------------------------------------------------------

struct Sock {
    ctx: Arc<Ctx>,
    acct: Arc<Account>,
    role: Role,
    web_index: usize,
    /// `None` while the relay halves hold it, or once it is closed.
    ws: Option<Socket>,
    /// A web client's session token, for resuming.
    token: Option<String>,
    window: Option<Window>,
    samples: Vec<(H, u64)>,
    /// Last sequence number seen per sender, to check ordering.
    last_seq: Vec<(String, u64)>,
    /// The last phase this task counted as arrived at.
    arrived_seq: u64,
    /// The types of the last few frames other than `message` and `ack`, for
    /// failure reports.
    recent: Vec<String>,
    /// A `logged_out` frame arrived.
    logged_out: bool,
    /// The 4001 close after `logged_out` arrived (the socket is done).
    logout_closed: bool,
}

impl Sock {
    async fn run(&mut self, phase: &mut watch::Receiver<Phase>) -> Res<()> {
        loop {
            let p = phase.borrow_and_update().clone();
            match p.kind {
                PhaseKind::Idle => {}
                PhaseKind::Relay(w) => {
                    self.relay(w, phase).await?;
                    self.ctx.record_batch(&mut self.samples);
                    // The relay ended because the phase moved on: act on it.
                    continue;
                }
                PhaseKind::StopRelay => self.arrive(p.seq),
                PhaseKind::Churn(rounds) => {
                    if self.role == Role::Web {
                        self.churn(rounds).await?;
                    }
                    self.arrive(p.seq);
                }
                PhaseKind::Logout => {
                    match self.role {
                        Role::Phone => self.logout_phone().await?,
                        Role::Web => self.logout_web().await?,
                    }
                    self.arrive(p.seq);
                    return Ok(());
                }
            }
            self.idle(phase).await?;
        }
    }

    fn arrive(&mut self, seq: u64) {
        if self.ctx.arrive(seq) {
            self.arrived_seq = seq;
        }
    }

    fn socket(&mut self) -> Res<&mut Socket> {
        self.ws.as_mut().ok_or_else(|| Fail {
            kind: "internal",
            msg: "socket missing".into(),
            code: None,
        })
    }

    /// Reads (and accounts for) whatever arrives until the phase changes.
    async fn idle(&mut self, phase: &mut watch::Receiver<Phase>) -> Res<()> {
        loop {
            if self.logout_closed {
                // Closed by a logout_all that came before this task saw the
                // logout phase: finish the close, then wait for the phase.
                self.finish_logout_close().await;
                return phase.changed().await.map_err(fail("internal"));
            }
            let ws = self.socket()?;
            tokio::select! {
                // The phase first: once it has moved on (say, to logout),
                // what the socket says belongs to the new phase.
                biased;
                changed = phase.changed() => return changed.map_err(fail("internal")),
                msg = ws.next() => self.on_message(msg, None)?,
            }
        }
    }

    /// Handles one read from the socket outside the logout phase: any close is
    /// unexpected.
    fn on_message(
        &mut self,
        msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
        permits: Option<&Semaphore>,
    ) -> Res<()> {
        match msg {
            Some(Ok(Message::Text(text))) => {
                self.on_text(text.as_str(), permits);
                Ok(())
            }
            Some(Ok(Message::Close(frame))) => {
                let code = frame.map(|f| u16::from(f.code));
                // Judged by what the socket saw, not by the phase this task
                // has noticed: the wake-up for a phase change and the frames
                // of that phase race (tokio may even defer the former).
                let logout_sent = self.acct.logout_sent_ns.load(Relaxed) != 0;
                if self.role == Role::Web && code == Some(4001) && self.logged_out && logout_sent {
                    self.on_logout_close();
                    return Ok(());
                }
                let key = code.map_or("close_none".to_owned(), |c| format!("close_{c}"));
                self.ctx.record_error(&key);
                Err(Fail {
                    kind: "unexpected_close",
                    msg: format!("closed by the gateway with {code:?}"),
                    code: None,
                })
            }
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(fail("socket_error")(e)),
            None => Err(Fail {
                kind: "unexpected_close",
                msg: "connection ended".into(),
                code: None,
            }),
        }
    }

    /// Accounting for one server frame.
    fn on_text(&mut self, text: &str, permits: Option<&Semaphore>) {
        let Ok(f) = serde_json::from_str::<In>(text) else {
            self.ctx.record_error("unparsed_frame");
            return;
        };
        let now = now_ns();
        let c = &self.ctx.c;
        let acct = &self.acct;
        if !matches!(f.kind, "message" | "ack") {
            if self.recent.len() == 6 {
                self.recent.remove(0);
            }
            self.recent.push(
                f.code
                    .map_or_else(|| f.kind.to_owned(), |code| format!("{}:{code}", f.kind)),
            );
        }
        match f.kind {
            "message" => {
                let body = f.body.unwrap_or_default();
                let from = f.from.unwrap_or_default();
                let (h, win) = match self.role {
                    Role::Phone => {
                        acct.phone_got.fetch_add(1, Relaxed);
                        c.recv_phone.fetch_add(1, Relaxed);
                        (H::RelayWebToPhone, &c.win_recv_phone)
                    }
                    Role::Web => {
                        acct.webs_got.fetch_add(1, Relaxed);
                        c.recv_web.fetch_add(1, Relaxed);
                        (H::RelayPhoneToWeb, &c.win_recv_web)
                    }
                };
                check_order(&mut self.last_seq, c, from, body.s);
                if let Some(w) = self.window {
                    if w.measures(body.t) {
                        sample(
                            &mut self.samples,
                            &self.ctx,
                            h,
                            now.saturating_sub(body.t) / 1000,
                        );
                    }
                    if w.measures(now) {
                        win.fetch_add(1, Relaxed);
                    }
                }
            }
            "ack" => {
                match self.role {
                    Role::Web => {
                        acct.web_acked.fetch_add(1, Relaxed);
                        c.acked_web.fetch_add(1, Relaxed);
                    }
                    Role::Phone => {
                        acct.phone_delivered
                            .fetch_add(f.delivered.unwrap_or(0), Relaxed);
                        c.acked_phone.fetch_add(1, Relaxed);
                    }
                }
                if let (Some(w), Some(t)) = (self.window, f.id.and_then(|i| i.parse::<u64>().ok()))
                    && w.measures(t)
                {
                    let h = match self.role {
                        Role::Web => H::AckWeb,
                        Role::Phone => H::AckPhone,
                    };
                    sample(
                        &mut self.samples,
                        &self.ctx,
                        h,
                        now.saturating_sub(t) / 1000,
                    );
                }
                if let Some(p) = permits {
                    p.add_permits(1);
                }
            }
            "error" => {
                self.ctx.record_error(f.code.unwrap_or("unknown"));
                // Our sends carry numeric ids: such an error refuses a send.
                if f.id.is_some_and(|i| i.parse::<u64>().is_ok()) {
                    match self.role {
                        Role::Web => c.err_web.fetch_add(1, Relaxed),
                        Role::Phone => c.err_phone.fetch_add(1, Relaxed),
                    };
                    if let Some(p) = permits {
                        p.add_permits(1);
                    }
                }
            }
            "phone_status" if f.online == Some(false) => {
                c.phone_status_offline.fetch_add(1, Relaxed);
            }
            "session_online" => {
                c.session_online.fetch_add(1, Relaxed);
            }
            "session_offline" => {
                c.session_offline.fetch_add(1, Relaxed);
            }
            "logged_out" => {
                self.logged_out = true;
                if f.reason != Some("phone_logout_all") {
                    self.ctx.record_error("logged_out_wrong_reason");
                }
            }
            _ => {}
        }
    }

    // ---- relay -----------------------------------------------------------

    /// Sends (if this role sends) from `start` to `end`, and reads until the
    /// phase moves on: the worker moves it on once everything has drained.
    async fn relay(&mut self, w: Window, phase: &mut watch::Receiver<Phase>) -> Res<()> {
        self.window = Some(w);
        self.last_seq.clear();
        let sends = match self.role {
            Role::Web => self.ctx.cfg.direction.web_sends(),
            Role::Phone => self.ctx.cfg.direction.phone_sends(),
        };
        let ws = self.ws.take().ok_or_else(|| Fail {
            kind: "internal",
            msg: "socket missing".into(),
            code: None,
        })?;
        let (sink, mut stream) = ws.split();
        let permits = Semaphore::new(self.ctx.cfg.in_flight.max(1));
        let writer = Writer {
            ctx: self.ctx.clone(),
            role: self.role,
            window: w,
            permits: &permits,
        };
        let write = async move {
            let mut sink = sink;
            let result = if sends {
                writer.run(&mut sink).await
            } else {
                Ok(())
            };
            (sink, result)
        };
        let read = async {
            let result = loop {
                tokio::select! {
                    biased;
                    changed = phase.changed() => break changed.map_err(fail("internal")),
                    msg = stream.next() => {
                        if let Err(f) = self.on_message(msg, Some(&permits)) {
                            break Err(f);
                        }
                    }
                }
            };
            // A reader that stops early stops the writer too.
            permits.close();
            result
        };
        let ((sink, written), read) = tokio::join!(write, read);
        let ws = stream.reunite(sink).map_err(fail("internal"))?;
        self.ws = Some(ws);
        read?;
        written
    }

    // ---- churn -----------------------------------------------------------

    /// Disconnects and resumes with the session token, `rounds` times.
    async fn churn(&mut self, rounds: usize) -> Res<()> {
        let ctx = self.ctx.clone();
        let token = self.token.clone().unwrap_or_default();
        for round in 1..=rounds {
            let _permit = ctx.handshakes.acquire().await.map_err(fail("internal"))?;
            if let Some(mut ws) = self.ws.take() {
                // A clean close: the gateway answers and closes the TCP
                // connection first, so our ports do not pile up in TIME_WAIT.
                let wait = Duration::from_millis(ctx.cfg.timeout_ms);
                let _ = timeout(wait, async {
                    let _ = ws.close(None).await;
                    while let Some(Ok(msg)) = ws.next().await {
                        if let Message::Text(t) = msg {
                            self.on_text(t.as_str(), None);
                        }
                    }
                })
                .await;
                ctx.socket_closed();
            }
            let slot = 1 + self.web_index;
            let t0 = now_ns();
            let mut c = Client::connect(
                &ctx.url(self.acct.index, slot + round, Role::Web),
                &ctx.connect_options(self.acct.index, slot),
            )
            .await
            .map_err(refused("churn_connect"))?;
            ctx.socket_opened();
            let resumed = async {
                c.request(ClientFrame::Auth {
                    token: token.clone(),
                })
                .await
                .map_err(refused("churn_auth"))?;
                let status = c
                    .expect("phone_status")
                    .await
                    .map_err(refused("churn_auth"))?;
                if status["online"] != true {
                    ctx.c.phone_status_offline.fetch_add(1, Relaxed);
                }
                Ok(())
            }
            .await;
            if let Err(f) = resumed {
                ctx.socket_closed();
                return Err(f);
            }
            ctx.record(H::Resume, (now_ns() - t0) / 1000);
            ctx.c.resumed.fetch_add(1, Relaxed);
            self.ws = Some(c.into_socket());
        }
        Ok(())
    }

    // ---- logout_all ------------------------------------------------------

    async fn logout_phone(&mut self) -> Res<()> {
        let ctx = self.ctx.clone();
        let _permit = ctx.handshakes.acquire().await.map_err(fail("internal"))?;
        let wait = Duration::from_millis(ctx.cfg.timeout_ms);
        let t0 = now_ns();
        self.acct.logout_sent_ns.store(t0, Relaxed);
        let frame = format!(r#"{{"type":"logout_all","id":"{LOGOUT_ID}"}}"#);
        self.socket()?
            .send(Message::text(frame))
            .await
            .map_err(fail("logout_send"))?;
        let deadline = Instant::now() + wait;
        loop {
            let ws = self.socket()?;
            let msg = timeout(
                deadline.saturating_duration_since(Instant::now()),
                ws.next(),
            )
            .await
            .map_err(|_| Fail {
                kind: "logout_no_ok",
                msg: "no reply to logout_all".into(),
                code: None,
            })?;
            let Some(Ok(Message::Text(text))) = &msg else {
                self.on_message(msg, None)?;
                continue;
            };
            let reply = serde_json::from_str::<In>(text.as_str()).ok();
            match reply {
                Some(r) if r.id == Some(LOGOUT_ID) && r.kind == "ok" => {
                    let t1 = now_ns();
                    self.acct.logout_ok_ns.store(t1, Relaxed);
                    ctx.record(H::LogoutOk, (t1 - t0) / 1000);
                    ctx.c.logout_ok.fetch_add(1, Relaxed);
                    let webs = self.acct.webs.load(Relaxed) as u64;
                    if r.closed != Some(webs) {
                        ctx.record_failure(
                            "logout_closed_mismatch",
                            format!(
                                "{}: ok.closed {:?}, {webs} sessions linked",
                                self.acct.name, r.closed
                            ),
                        );
                    }
                    break;
                }
                Some(r) if r.id == Some(LOGOUT_ID) => {
                    ctx.record_error(r.code.unwrap_or("unknown"));
                    return Err(Fail {
                        kind: "logout_refused",
                        msg: text.to_string(),
                        code: None,
                    });
                }
                _ => self.on_text(text.as_str(), None),
            }
        }
        // The phone leaves too, so the run ends with nothing open.
        if let Some(mut ws) = self.ws.take() {
            let _ = timeout(Duration::from_secs(2), async {
                let _ = ws.close(None).await;
                while let Some(Ok(_)) = ws.next().await {}
            })
            .await;
            ctx.socket_closed();
        }
        Ok(())
    }

    /// Waits for `logged_out` and the 4001 close. The deadline counts from the
    /// phone's `ok` (which the gateway sends only after the teardown), so
    /// queueing behind other accounts' logouts is not mistaken for a leak.
    async fn logout_web(&mut self) -> Res<()> {
        let grace = Duration::from_millis(self.ctx.cfg.timeout_ms);
        let hard_deadline = Instant::now() + grace * 4;
        while !self.logout_closed {
            let ws = self.socket()?;
            let msg = tokio::select! {
                msg = ws.next() => msg,
                _ = sleep(Duration::from_millis(200)) => {
                    let ok = self.acct.logout_ok_ns.load(Relaxed);
                    let late = ok != 0 && now_ns().saturating_sub(ok) > grace.as_nanos() as u64;
                    if late || Instant::now() > hard_deadline {
                        return Err(Fail {
                            kind: "left_open_after_logout_all",
                            msg: format!("no 4001 close (logged_out seen: {})", self.logged_out),
                            code: None,
                        });
                    }
                    continue;
                }
            };
            if let Err(mut f) = self.on_message(msg, None) {
                f.kind = "logout_bad_close";
                f.msg = format!("{} (logged_out seen: {})", f.msg, self.logged_out);
                return Err(f);
            }
        }
        self.finish_logout_close().await;
        Ok(())
    }

    /// The 4001 close after `logged_out`: the end of this web socket.
    fn on_logout_close(&mut self) {
        self.logout_closed = true;
        self.acct.last_close_ns.fetch_max(now_ns(), Relaxed);
        self.acct.webs_closed.fetch_add(1, Relaxed);
        self.ctx.c.logged_out_webs.fetch_add(1, Relaxed);
    }

    /// tungstenite queued the reply to the close; let it go out, and the
    /// gateway closes the connection.
    async fn finish_logout_close(&mut self) {
        if let Some(mut ws) = self.ws.take() {
            let _ = timeout(Duration::from_secs(2), async {
                while let Some(Ok(_)) = ws.next().await {}
            })
            .await;
            self.ctx.socket_closed();
        }
    }
}

/// Messages from one sender must arrive in the order sent.
fn check_order(last_seq: &mut Vec<(String, u64)>, c: &Counters, from: &str, seq: u64) {
    let slot = match last_seq.iter().position(|(f, _)| f == from) {
        Some(i) => &mut last_seq[i].1,
        None => {
            last_seq.push((from.to_owned(), 0));
            &mut last_seq.last_mut().expect("just pushed").1
        }
    };
    if seq <= *slot {
        c.out_of_order.fetch_add(1, Relaxed);
    }
    *slot = seq;
}

/// Buffers one latency sample; the shared histograms are locked once per batch.
fn sample(samples: &mut Vec<(H, u64)>, ctx: &Ctx, h: H, micros: u64) {
    samples.push((h, micros));
    if samples.len() >= SAMPLE_BATCH {
        ctx.record_batch(samples);
    }
}

/// The sending half of one socket during the relay.
struct Writer<'a> {
    ctx: Arc<Ctx>,
    role: Role,
    window: Window,
    permits: &'a Semaphore,
}

impl Writer<'_> {
    async fn run(&self, sink: &mut SplitSink<Socket, Message>) -> Res<()> {
        let start = instant_at(self.window.start_ns);
        let end = instant_at(self.window.end_ns);
        let rate = self.ctx.cfg.per_socket_rate;
        let mut seq = 0u64;
        if rate > 0.0 {
            // Open loop: sends are scheduled, not triggered by acks; the
            // in-flight cap only stops a hopeless backlog. A random phase
            // keeps sockets from sending in lockstep.
            let period = Duration::from_secs_f64(1.0 / rate);
            let first = start + period.mul_f64(rand::random::<f64>());
            let mut tick = interval_at(first, period);
            tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = sleep_until(end) => return Ok(()),
                }
                let permit = tokio::select! {
                    p = self.permits.acquire() => match p {
                        Ok(p) => p,
                        Err(_) => return Ok(()),
                    },
                    _ = sleep_until(end) => return Ok(()),
                };
                permit.forget();
                if !self.send_batch(sink, 1, &mut seq).await? {
                    return Ok(());
                }
            }
        }
        sleep_until(start).await;
        loop {
            // Flat out: keep `in_flight` sends outstanding; whatever the acks
            // freed goes out in one batch with one flush.
            let permit = tokio::select! {
                p = self.permits.acquire() => match p {
                    Ok(p) => p,
                    Err(_) => return Ok(()),
                },
                _ = sleep_until(end) => return Ok(()),
            };
            permit.forget();
            let mut n = 1;
            while let Ok(p) = self.permits.try_acquire() {
                p.forget();
                n += 1;
            }
            if !self.send_batch(sink, n, &mut seq).await? {
                return Ok(());
            }
        }
    }

    /// Feeds `n` sends and flushes once; `false` once the window has closed.
    async fn send_batch(
        &self,
        sink: &mut SplitSink<Socket, Message>,
        n: usize,
        seq: &mut u64,
    ) -> Res<bool> {
        let t = now_ns();
        if t >= self.window.end_ns {
            self.permits.add_permits(n);
            return Ok(false);
        }
        for i in 0..n as u64 {
            *seq += 1;
            // Each send's id is its own send time, so the ack's latency needs
            // no lookup table; +i keeps ids distinct within a batch.
            let ti = t + i;
            let frame = format!(
                r#"{{"type":"send","id":"{ti}","body":{{"t":{ti},"s":{},"p":"{}"}}}}"#,
                *seq, self.ctx.pad
            );
            sink.feed(Message::text(frame))
                .await
                .map_err(fail("send_failed"))?;
        }
        let c = &self.ctx.c;
        let (sent, win) = match self.role {
            Role::Web => (&c.sent_web, &c.win_sent_web),
            Role::Phone => (&c.sent_phone, &c.win_sent_phone),
        };
        sent.fetch_add(n as u64, Relaxed);
        if self.window.measures(t) {
            win.fetch_add(n as u64, Relaxed);
        }
        sink.flush().await.map_err(fail("send_failed"))?;
        Ok(true)
    }
}

/// The relay phase in this worker: start, wait for the window to close, let
/// every ack and message land (or the drain timeout pass), then stop readers.
async fn relay(ctx: &Arc<Ctx>, accounts: &[Arc<Account>], w: Window) {
    ctx.set_phase(PhaseKind::Relay(w));
    sleep_until(instant_at(w.end_ns)).await;
    let deadline = Instant::now() + Duration::from_millis(ctx.cfg.drain_timeout_ms);
    let c = &ctx.c;
    loop {
        let settled = c.sent_web.load(Relaxed)
            <= c.acked_web.load(Relaxed) + c.err_web.load(Relaxed)
            && c.sent_phone.load(Relaxed)
                <= c.acked_phone.load(Relaxed) + c.err_phone.load(Relaxed)
            && accounts.iter().all(|a| {
                a.phone_got.load(Relaxed) >= a.web_acked.load(Relaxed)
                    && a.webs_got.load(Relaxed) >= a.phone_delivered.load(Relaxed)
            });
        if settled || Instant::now() >= deadline {
            break;
        }
        sleep(Duration::from_millis(20)).await;
    }
    ctx.set_phase(PhaseKind::StopRelay);
    ctx.all_arrived().await;
    ctx.set_phase(PhaseKind::Idle);
}

/// After `logout_all`: per account, request → last web socket's 4001 close.
fn teardown_times(ctx: &Ctx, accounts: &[Arc<Account>]) {
    for a in accounts {
        let webs = a.webs.load(Relaxed) as u64;
        let sent = a.logout_sent_ns.load(Relaxed);
        if webs > 0 && sent > 0 && a.webs_closed.load(Relaxed) == webs {
            let last = a.last_close_ns.load(Relaxed);
            ctx.record(H::LogoutLastClose, last.saturating_sub(sent) / 1000);
        }
    }
}

/// The final numbers and the loss checks.
fn finish(ctx: &Ctx, accounts: &[Arc<Account>]) -> WorkerResult {
    let c = &ctx.c;
    let g = |a: &AtomicU64| a.load(Relaxed);
    let mut counts = BTreeMap::new();
    let mut put = |k: &str, v: u64| {
        counts.insert(k.to_owned(), v);
    };
    put("send_errors_web", g(&c.err_web));
    put("send_errors_phone", g(&c.err_phone));
    put(
        "unacked_web",
        g(&c.sent_web).saturating_sub(g(&c.acked_web) + g(&c.err_web)),
    );
    put(
        "unacked_phone",
        g(&c.sent_phone).saturating_sub(g(&c.acked_phone) + g(&c.err_phone)),
    );
    put("window_sent_web", g(&c.win_sent_web));
    put("window_sent_phone", g(&c.win_sent_phone));
    put("window_recv_phone", g(&c.win_recv_phone));
    put("window_recv_web", g(&c.win_recv_web));
    put("out_of_order", g(&c.out_of_order));
    put("session_online_events", g(&c.session_online));
    put("session_offline_events", g(&c.session_offline));
    put("phone_status_offline", g(&c.phone_status_offline));
    let (mut lost_w2p, mut extra_w2p, mut lost_p2w, mut extra_p2w, mut bad) = (0, 0, 0, 0, 0);
    let mut delivered = 0;
    let mut webs_linked = 0;
    for a in accounts {
        let (acked, got) = (g(&a.web_acked), g(&a.phone_got));
        let (deliv, webs_got) = (g(&a.phone_delivered), g(&a.webs_got));
        lost_w2p += acked.saturating_sub(got);
        extra_w2p += got.saturating_sub(acked);
        lost_p2w += deliv.saturating_sub(webs_got);
        extra_p2w += webs_got.saturating_sub(deliv);
        bad += u64::from(acked != got || deliv != webs_got);
        delivered += deliv;
        webs_linked += a.webs.load(Relaxed) as u64;
    }
    put("lost_web_to_phone", lost_w2p);
    put("unexpected_web_to_phone", extra_w2p);
    put("lost_phone_to_web", lost_p2w);
    put("unexpected_phone_to_web", extra_p2w);
    put("unbalanced_accounts", bad);
    put("phone_delivered_total", delivered);
    put("webs_linked", webs_linked);
    let histograms = ctx
        .hists
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .zip(HIST_NAMES)
        .map(|(h, name)| (name.to_owned(), encode_histogram(h)))
        .collect();
    let (failures, failure_samples) = ctx
        .failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    WorkerResult {
        totals: ctx.snapshot(),
        counts,
        errors: ctx.errors.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        failures,
        failure_samples,
        histograms,
    }
}
