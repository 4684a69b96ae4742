//! `loadtest chaos`: a cluster under load loses a part. It starts its own
//! cluster (one `redis-server` with `appendonly yes`, `appendfsync always` in
//! a temp dir, and `--nodes` gateway nodes of the built binary with
//! `--redis`, `--secret` and `--node-lease-ms`), links `--phones` accounts
//! with `--webs-per-phone` web clients each, spread over the nodes as the
//! load test does (phone on node a, web j on node a+1+j), and relays at a
//! fixed `--rate` in both directions. After `--before` it either
//!
//! - `--kill node`: `kill -9` of node `--victim`. The clients of that node
//!   reconnect with jittered backoff (100 ms doubling to 2 s), trying the
//!   next URL each time, and resume (`auth` with their token). Measured:
//!   from the kill to `phone_status` `{"online":false}` at every web on a
//!   surviving node whose phone was on the killed node, and to
//!   `session_offline` at every surviving phone for its webs on the killed
//!   node; from the kill to each of the killed node's clients resumed on
//!   another node and to its first `ack` there.
//! - `--kill redis`: `kill -9` of `redis-server` and its restart at once on
//!   the same port and directory (its AOF). Measured: from the restart to
//!   every node's `/readyz` answering 200 for good, and to every socket's
//!   sends being acknowledged again (see [`recovered_at`]).
//!
//! Then the sends stop, every outstanding send is answered (or its socket
//! was lost), and the loss check runs (see [`check_losses`]); last, every
//! web session linked at the start is resumed on a live node (a lost link is
//! a 4001 or a refusal). The run fails (exit 1) on anything acknowledged and
//! lost, a lost link, or a client that never resumed or recovered; a
//! timing target missed is printed, not failed.
//!
//! The clients are `pairgate_client::Client`s, one task each (a send on a
//! timer, every frame read as it comes); the nodes are started with
//! [`Spawned`], as `--spawn-gateway` does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::ValueEnum;
use pairgate::tokens::Tokens;
use pairgate_client::{Client, ClientError, ConnectOptions};
use pairgate_protocol::ClientFrame;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::{Semaphore, watch};
use tokio::time::MissedTickBehavior;

use crate::clock::now_ns;
use crate::gateway::Spawned;

/// What is killed mid-run.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kill {
    /// `kill -9` of one gateway node (`--victim`).
    Node,
    /// `kill -9` of redis-server, restarted at once on its AOF.
    Redis,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ChaosOpts {
    /// What to kill mid-run.
    #[arg(long, value_enum)]
    pub kill: Kill,
    /// The pairgate binary to start the nodes from.
    #[arg(long, value_name = "PATH", default_value = "target/release/pairgate")]
    pub gateway: PathBuf,
    /// The redis-server binary.
    #[arg(long, value_name = "PATH", default_value = "redis-server")]
    pub redis_server: PathBuf,
    /// Gateway nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// `--kill node`: which node (0-based; accounts a with a % nodes ==
    /// victim have their phone there).
    #[arg(long, default_value_t = 0)]
    pub victim: usize,
    /// Phones (one per account).
    #[arg(long, default_value_t = 500)]
    pub phones: usize,
    /// Web clients linked to each phone.
    #[arg(long, default_value_t = 3)]
    pub webs_per_phone: usize,
    /// Sends per second over every socket together (each socket on its own
    /// timer; a refused send is followed by another 200 ms later).
    #[arg(long, default_value_t = 5000.0)]
    pub rate: f64,
    /// Size of each message body, in bytes (about).
    #[arg(long, default_value_t = 256)]
    pub msg_size: usize,
    /// Unanswered sends per socket at most (a tick with this many is skipped).
    #[arg(long, default_value_t = 16)]
    pub in_flight: usize,
    /// The nodes' `--node-lease-ms`.
    #[arg(long, default_value_t = 2000)]
    pub node_lease_ms: u64,
    /// Relay this long before the kill.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub before: Duration,
    /// Relay this long after everything recovered.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    pub after: Duration,
    /// Stop waiting for the recovery after this long from the kill.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub give_up: Duration,
    /// Accounts being set up at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Write each node's whole log here (`node-N.log`) and Redis's
    /// (`redis.log`); default: only the last lines of each node's, shown
    /// when the run fails.
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// Write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

/// A send counts as failed (for the recovery) when its ack took longer.
const SLOW_ACK_NS: u64 = 1_000_000_000;
/// After a refused send the socket sends again this soon (a client retries).
/// (The gateway allows a socket 10 errors per second before `rate_limited`.)
const RETRY_AFTER_REFUSAL: Duration = Duration::from_millis(200);

// ---- the report ----------------------------------------------------------------

/// Milliseconds: p50 and max over some clients, and how many there were.
#[derive(Debug, Default, serde::Serialize)]
pub struct Spread {
    pub count: usize,
    pub p50_ms: f64,
    pub max_ms: f64,
}

fn spread(mut ns: Vec<u64>) -> Spread {
    ns.sort_unstable();
    let ms = |v: u64| v as f64 / 1e6;
    Spread {
        count: ns.len(),
        p50_ms: ns
            .get(ns.len().saturating_sub(1) / 2)
            .map_or(0.0, |&v| ms(v)),
        max_ms: ns.last().map_or(0.0, |&v| ms(v)),
    }
}

/// Acknowledged deliveries that never arrived, by where they were.
#[derive(Debug, Default, serde::Serialize)]
pub struct Losses {
    /// Deliveries the acks promised (a web's ack: 1; a phone's: `delivered`).
    pub acked_deliveries: u64,
    /// Of those, received.
    pub received: u64,
    /// Acked before the kill, for a receiver on the killed node: the frame
    /// was in the dying node's memory or socket buffers.
    pub held_by_killed_node: u64,
    /// The oldest such ack, in ms before the kill.
    pub held_by_killed_node_max_age_ms: f64,
    /// Acked before the kill for a receiver elsewhere, on an account whose
    /// home was the killed node (its phone's node): the ack left the home
    /// before the delivery was published.
    pub through_killed_home: u64,
    pub through_killed_home_max_age_ms: f64,
    /// Acked after the kill, counting a socket of the killed node (`delivered`
    /// counts it until the node is declared dead): not a promise it could keep.
    pub counted_dead_socket: u64,
    /// The latest such ack, in ms after the kill.
    pub counted_dead_socket_last_ms: f64,
    /// Anything else: lost (the run fails).
    pub lost: u64,
    /// Of those, sent by phones (to webs) and by webs (to phones).
    pub lost_phone_to_web: u64,
    pub lost_web_to_phone: u64,
    /// When their acks arrived, in ms from the kill (first, last).
    pub lost_acked_from_ms: f64,
    pub lost_acked_to_ms: f64,
    /// Received more often than `delivered` said (not a failure).
    pub extra: u64,
    pub duplicates: u64,
    /// A message older than one already received from the same sender.
    pub out_of_order: u64,
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Refusals {
    pub count: u64,
    pub first_ms: f64,
    pub last_ms: f64,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct ChaosReport {
    pub kill: Option<Kill>,
    pub nodes: usize,
    pub phones: usize,
    pub webs_per_phone: usize,
    pub sockets: usize,
    pub rate: f64,
    pub node_lease_ms: u64,
    pub setup_secs: f64,
    pub sent: u64,
    pub acked: u64,
    /// `error` replies by sender and code: count, first and last (ms from the kill).
    pub refused: BTreeMap<String, Refusals>,
    /// Sends whose socket was lost before their answer (no promise made).
    pub unanswered: u64,
    /// Sockets the gateway closed or lost, by reason (the killed node's, in
    /// a node kill).
    pub disconnected: usize,
    // --kill node
    /// Webs on surviving nodes whose phone was on the killed node: kill →
    /// `phone_status` false.
    pub phone_offline: Option<Spread>,
    pub phone_offline_missing: usize,
    /// Surviving phones: kill → `session_offline` for each web on the killed node.
    pub session_offline: Option<Spread>,
    pub session_offline_missing: usize,
    /// The killed node's clients whose account's home lived on (its phone
    /// elsewhere): kill → resumed on another node.
    pub resumed: Option<Spread>,
    /// The same: kill → first ack on the new node.
    pub relaying_again: Option<Spread>,
    /// The killed node's clients whose account's home was the killed node
    /// (its phone there): they wait for the death to be known.
    pub resumed_home_killed: Option<Spread>,
    pub relaying_again_home_killed: Option<Spread>,
    pub not_resumed: usize,
    pub target_presence_ms: Option<u64>,
    // --kill redis
    pub restart_to_ping_ms: Option<f64>,
    /// Restart → each node's `/readyz` 200 for good.
    pub readyz: Option<Spread>,
    /// Restart → each interrupted socket's sends acked again.
    pub sockets_recovered: Option<Spread>,
    pub sockets_interrupted: usize,
    pub sockets_never_recovered: usize,
    /// Restart → the last of both.
    pub recovery_ms: Option<f64>,
    pub target_recovery_ms: Option<u64>,
    pub losses: Losses,
    pub links: usize,
    pub links_resumed: usize,
    pub failures: Vec<String>,
    pub targets_missed: Vec<String>,
    pub pass: bool,
    /// The last lines each node logged (shown on stderr when the run fails).
    #[serde(skip)]
    pub log_tails: Vec<String>,
}

pub fn main(opts: ChaosOpts) -> anyhow::Result<bool> {
    crate::raise_nofile_limit();
    if opts.nodes < 2 || opts.victim >= opts.nodes {
        bail!("--nodes must be at least 2 and --victim one of them");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(opts.clone()))?;
    print(&report);
    if !report.pass {
        for tail in &report.log_tails {
            eprintln!("{tail}");
        }
    }
    if let Some(path) = &opts.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(report.pass)
}

// ---- redis-server ---------------------------------------------------------------

/// The cluster's Redis: a child process on a fixed port and directory, so a
/// restart finds its AOF.
struct Redis {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Child,
}

impl Redis {
    async fn start(bin: &Path, dir: PathBuf, port: u16) -> anyhow::Result<Redis> {
        std::fs::create_dir_all(&dir)?;
        let child = Self::spawn(bin, &dir, port)?;
        let redis = Redis {
            bin: bin.to_owned(),
            dir,
            port,
            child,
        };
        redis.wait_up(Duration::from_secs(20)).await?;
        Ok(redis)
    }

    fn spawn(bin: &Path, dir: &Path, port: u16) -> anyhow::Result<Child> {
        Command::new(bin)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))
    }

    /// Until PING answers PONG (not LOADING).
    async fn wait_up(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if ping(self.port).await {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("redis-server on port {} did not answer PING", self.port);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn kill9(&mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }

    fn restart(&mut self) -> anyhow::Result<()> {
        self.child = Self::spawn(&self.bin, &self.dir, self.port)?;
        Ok(())
    }
}

async fn ping(port: u16) -> bool {
    let attempt = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        s.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).await.ok()?;
        Some(buf[..n].starts_with(b"+PONG"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Some(true))
    )
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The status code of `GET path`, or 0 when there was no answer within 1 s.
async fn http_status(addr: SocketAddr, path: &str) -> u16 {
    let attempt = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = [0u8; 32];
        let mut n = 0;
        while n < 12 {
            let r = s.read(&mut buf[n..]).await.ok()?;
            if r == 0 {
                break;
            }
            n += r;
        }
        std::str::from_utf8(&buf[..n])
            .ok()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    tokio::time::timeout(Duration::from_secs(1), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

// ---- the clients ----------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Phone,
    Web(usize),
}

/// One socket lost and what followed.
#[derive(Clone, Debug)]
struct Loss {
    lost_ns: u64,
    node: usize,
    why: String,
    resumed_ns: Option<u64>,
    relayed_ns: Option<u64>,
}

/// A node's `/readyz` answers: (when, status; 0 for none).
type Statuses = Vec<(u64, u16)>;

/// One send's outcome: (sent, answered, acked with everything delivered).
type Outcome = (u64, u64, bool);

/// Everything one client saw; owned by its task, handed back at the end.
struct Log {
    acct: usize,
    role: Role,
    /// High half of every message key this client sends.
    id: u64,
    first_node: usize,
    token: String,
    session_id: String,
    sent: u64,
    /// (key, ack received, deliveries promised).
    acked: Vec<(u64, u64, u32)>,
    outcomes: Vec<Outcome>,
    /// By code: count, first and last (ns).
    refused: BTreeMap<String, (u64, u64, u64)>,
    unanswered: u64,
    received: HashSet<u64>,
    duplicates: u64,
    out_of_order: u64,
    last_seq: HashMap<u64, u64>,
    losses: Vec<Loss>,
    /// Web: first `phone_status` false after the kill.
    phone_offline_ns: Option<u64>,
    /// Phone: first `session_offline` after the kill, per session.
    session_offline: HashMap<String, u64>,
    /// Resuming failed for good (4001): the link is gone.
    link_lost: Option<String>,
    /// `--kill node`: on the killed node and staying away until the
    /// presence was measured (see [`is_away`]).
    away: bool,
    /// A web whose phone is away: it must see `phone_status` false.
    phone_away: bool,
}

/// What every client task shares with the run.
struct Shared {
    /// `ws://host:port` of each node.
    urls: Vec<String>,
    webs: usize,
    period: Duration,
    in_flight: usize,
    pad: String,
    sending: AtomicBool,
    /// Sends not yet answered, over every client.
    outstanding: AtomicI64,
    /// When the kill happened (0: not yet).
    kill_ns: AtomicU64,
    /// `--kill node`: the killed node's clients resumed and acked again.
    relaying_again: AtomicUsize,
    /// `--kill node`: webs that saw their phone (on the killed node) go offline.
    offline_seen: AtomicUsize,
    /// `--kill node`: the away webs' sessions, and how many of them their
    /// phones saw go offline.
    away_sessions: std::sync::OnceLock<HashSet<String>>,
    session_offline_seen: AtomicUsize,
    /// `--kill node`: the presence was measured; the away clients come back.
    presence_done: AtomicBool,
    /// `--kill node`: the node killed (`usize::MAX` with `--kill redis`).
    victim: usize,
    /// `--kill redis`: every node answered `/readyz` 200 after the restart (0: not yet).
    ready_ns: AtomicU64,
    /// `--kill redis`: clients with a good ack for a send made after `ready_ns`.
    good_after_ready: AtomicUsize,
    options: ConnectOptions,
}

impl Shared {
    fn url(&self, node: usize, role: Role) -> String {
        let path = match role {
            Role::Phone => "/ws/phone",
            Role::Web(_) => "/ws/web",
        };
        format!("{}{path}", self.urls[node])
    }
}

/// An account's phone and its webs, linked through the QR handshake, each
/// on its node.
async fn setup_account(
    sh: &Shared,
    tokens: &Tokens,
    run: &str,
    acct: usize,
) -> anyhow::Result<Vec<(Client, Log)>> {
    let n = sh.urls.len();
    let token = tokens.mint_phone(&format!("{run}-{acct}"), Duration::from_secs(24 * 3600))?;
    let node = acct % n;
    let mut phone = Client::phone(&sh.url(node, Role::Phone), &token, &sh.options).await?;
    let ids = sh.webs as u64 + 1;
    let mut out = Vec::new();
    for j in 0..sh.webs {
        let node = (acct + 1 + j) % n;
        let role = Role::Web(j);
        let mut web = Client::connect(&sh.url(node, role), &sh.options).await?;
        let linked = phone.pair_web(&mut web).await?;
        let mut log = Log::new(acct, role, acct as u64 * ids + 1 + j as u64, node);
        log.away = is_away(acct, node, n, sh.victim);
        log.phone_away = node != sh.victim && is_away(acct, acct % n, n, sh.victim);
        log.token = linked["token"].as_str().context("no token")?.to_owned();
        log.session_id = linked["session_id"]
            .as_str()
            .context("no session_id")?
            .to_owned();
        out.push((web, log));
    }
    let mut log = Log::new(acct, Role::Phone, acct as u64 * ids, node);
    log.away = is_away(acct, node, n, sh.victim);
    log.token = token;
    out.insert(0, (phone, log));
    Ok(out)
}

impl Log {
    fn refusal(&mut self, code: &str) {
        let now = now_ns();
        let kind = if self.role == Role::Phone {
            "phone"
        } else {
            "web"
        };
        let e = self
            .refused
            .entry(format!("{kind} {code}"))
            .or_insert((0, now, now));
        e.0 += 1;
        e.2 = now;
    }

    fn new(acct: usize, role: Role, id: u64, first_node: usize) -> Log {
        Log {
            acct,
            role,
            id,
            first_node,
            token: String::new(),
            session_id: String::new(),
            sent: 0,
            acked: Vec::new(),
            outcomes: Vec::new(),
            refused: BTreeMap::new(),
            unanswered: 0,
            received: HashSet::new(),
            duplicates: 0,
            out_of_order: 0,
            last_seq: HashMap::new(),
            losses: Vec::new(),
            phone_offline_ns: None,
            session_offline: HashMap::new(),
            link_lost: None,
            away: false,
            phone_away: false,
        }
    }
}

/// One client's whole run: sends on its timer, reads every frame, resumes
/// on another node when its socket is lost.
async fn drive(
    sh: Arc<Shared>,
    mut c: Client,
    mut log: Log,
    mut quit: watch::Receiver<bool>,
) -> Log {
    let mut node = log.first_node;
    let start = tokio::time::Instant::now() + sh.period.mul_f64(rand::random::<f64>());
    let mut tick = tokio::time::interval_at(start, sh.period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    // Sends awaiting their answer: key → sent.
    let mut pending: HashMap<u64, u64> = HashMap::new();
    let mut seq = 0u64;
    let mut counted_good_after_ready = false;
    loop {
        let sending = sh.sending.load(Relaxed);
        let lost = tokio::select! {
            frame = c.next() => match frame {
                Ok(v) => {
                    let refused = on_frame(&sh, &mut log, &mut pending, &v, &mut counted_good_after_ready);
                    if refused && sh.sending.load(Relaxed) {
                        tick.reset_after(RETRY_AFTER_REFUSAL);
                    }
                    None
                }
                // Quiet for the client's timeout: nothing wrong.
                Err(ClientError::Timeout(_)) => None,
                Err(e) => Some(e.to_string()),
            },
            _ = tick.tick(), if sending && pending.len() < sh.in_flight => {
                seq += 1;
                let key = (log.id << 32) | seq;
                match send(&sh, &mut c, key).await {
                    Ok(()) => {
                        pending.insert(key, now_ns());
                        sh.outstanding.fetch_add(1, Relaxed);
                        log.sent += 1;
                        None
                    }
                    Err(e) => Some(e.to_string()),
                }
            }
            _ = quit.changed() => break,
        };
        let Some(why) = lost else { continue };
        log.unanswered += pending.len() as u64;
        sh.outstanding.fetch_sub(pending.len() as i64, Relaxed);
        pending.clear();
        log.losses.push(Loss {
            lost_ns: now_ns(),
            node,
            why,
            resumed_ns: None,
            relayed_ns: None,
        });
        match reconnect(&sh, &mut log, &mut node, &mut quit).await {
            Some(again) => {
                c = again;
                if let Some(l) = log.losses.last_mut() {
                    l.resumed_ns = Some(now_ns());
                }
                // Send at once: the time to the first ack is the figure.
                tick.reset_immediately();
            }
            None => return log,
        }
    }
    c.close().await;
    log
}

async fn send(sh: &Shared, c: &mut Client, key: u64) -> Result<(), ClientError> {
    let body = RawValue::from_string(format!("{{\"k\":{key},\"p\":\"{}\"}}", sh.pad))
        .map_err(|e| ClientError::Connect(e.to_string()))?;
    c.send(
        &ClientFrame::Send {
            body: &body,
            to: None,
        },
        Some(&key.to_string()),
    )
    .await
}

/// Resumes on the next node, then the next, with jittered backoff; `None`
/// when the run ends first or the link is gone (4001).
async fn reconnect(
    sh: &Shared,
    log: &mut Log,
    node: &mut usize,
    quit: &mut watch::Receiver<bool>,
) -> Option<Client> {
    while log.away && !sh.presence_done.load(Relaxed) {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            _ = quit.changed() => return None,
        }
    }
    let mut backoff = Duration::from_millis(100);
    loop {
        if *quit.borrow() {
            return None;
        }
        *node = (*node + 1) % sh.urls.len();
        let attempt = async {
            let mut c = Client::connect(&sh.url(*node, log.role), &sh.options).await?;
            c.request(ClientFrame::Auth {
                token: log.token.clone(),
            })
            .await?;
            Ok::<_, ClientError>(c)
        };
        match attempt.await {
            Ok(c) => return Some(c),
            Err(ClientError::Closed(Some(4001))) => {
                log.link_lost = Some("resume closed 4001".to_owned());
                return None;
            }
            Err(e) => {
                let code = e.code().map_or_else(|| "connect".to_owned(), str::to_owned);
                log.refusal(&format!("resume {code}"));
            }
        }
        let wait = backoff.mul_f64(0.5 + rand::random::<f64>());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = quit.changed() => return None,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Takes one frame into the log; true when it refused a send.
fn on_frame(
    sh: &Shared,
    log: &mut Log,
    pending: &mut HashMap<u64, u64>,
    v: &Value,
    counted_good_after_ready: &mut bool,
) -> bool {
    let now = now_ns();
    let kill_ns = sh.kill_ns.load(Relaxed);
    let after_kill = kill_ns != 0 && now >= kill_ns;
    let key_of = |v: &Value| v["id"].as_str().and_then(|s| s.parse::<u64>().ok());
    match v["type"].as_str().unwrap_or_default() {
        "ack" => {
            let Some((key, sent)) = key_of(v).and_then(|k| pending.remove(&k).map(|s| (k, s)))
            else {
                return false;
            };
            sh.outstanding.fetch_sub(1, Relaxed);
            let delivered = v["delivered"].as_u64().unwrap_or(1) as u32;
            log.acked.push((key, now, delivered));
            // A phone's ack short of its webs, or a slow one, is not "working".
            let full = log.role != Role::Phone || delivered as usize >= sh.webs;
            let good = full && now - sent < SLOW_ACK_NS;
            log.outcomes.push((sent, now, good));
            if let Some(l) = log.losses.last_mut()
                && l.resumed_ns.is_some()
                && l.relayed_ns.is_none()
            {
                l.relayed_ns = Some(now);
                if l.lost_ns >= kill_ns && kill_ns != 0 {
                    sh.relaying_again.fetch_add(1, Relaxed);
                }
            }
            let ready = sh.ready_ns.load(Relaxed);
            if good && !*counted_good_after_ready && ready != 0 && sent >= ready {
                *counted_good_after_ready = true;
                sh.good_after_ready.fetch_add(1, Relaxed);
            }
            false
        }
        "error" => {
            let code = v["code"].as_str().unwrap_or("?").to_owned();
            log.refusal(&code);
            match key_of(v).and_then(|k| pending.remove(&k)) {
                Some(sent) => {
                    sh.outstanding.fetch_sub(1, Relaxed);
                    log.outcomes.push((sent, now, false));
                    true
                }
                None => false,
            }
        }
        "message" => {
            let Some(key) = v["body"]["k"].as_u64() else {
                return false;
            };
            if !log.received.insert(key) {
                log.duplicates += 1;
            }
            let (sender, s) = (key >> 32, key & 0xffff_ffff);
            let last = log.last_seq.entry(sender).or_default();
            if s < *last {
                log.out_of_order += 1;
            }
            *last = (*last).max(s);
            false
        }
        "phone_status" => {
            if after_kill && v["online"] == false && log.phone_offline_ns.is_none() {
                log.phone_offline_ns = Some(now);
                if log.phone_away {
                    sh.offline_seen.fetch_add(1, Relaxed);
                }
            }
            false
        }
        "session_offline" => {
            if after_kill
                && let Some(sid) = v["session_id"].as_str()
                && !log.session_offline.contains_key(sid)
            {
                log.session_offline.insert(sid.to_owned(), now);
                if sh.away_sessions.get().is_some_and(|a| a.contains(sid)) {
                    sh.session_offline_seen.fetch_add(1, Relaxed);
                }
            }
            false
        }
        _ => false,
    }
}

/// `--kill redis`: when a socket's sends work again. Of its sends answered
/// after the kill, take the last that failed (refused, a phone's `delivered`
/// short of its webs, or acked after more than 1 s); the socket has
/// recovered when the first send made after that one is acked in full. A
/// socket none of whose sends failed was not interrupted (`None`, false);
/// one that never recovered is (`None`, true).
fn recovered_at(outcomes: &[Outcome], kill_ns: u64) -> (Option<u64>, bool) {
    let last_bad = outcomes
        .iter()
        .filter(|o| o.1 >= kill_ns && !o.2)
        .map(|o| o.0)
        .max();
    let Some(bad_sent) = last_bad else {
        return (None, false);
    };
    let back = outcomes
        .iter()
        .filter(|o| o.0 > bad_sent && o.2)
        .map(|o| o.1)
        .min();
    (back, true)
}

// ---- the run --------------------------------------------------------------------

async fn run(opts: ChaosOpts) -> anyhow::Result<ChaosReport> {
    let dir = tempfile::Builder::new()
        .prefix("pairgate-chaos-")
        .tempdir()
        .context("cannot create a temp dir")?;
    let redis_port = free_port()?;
    if let Some(d) = &opts.log_dir {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let redis_dir = match &opts.log_dir {
        Some(d) => d.join("redis"),
        None => dir.path().join("redis"),
    };
    let mut redis = Redis::start(&opts.redis_server, redis_dir, redis_port).await?;
    let secret = format!(
        "chaos-{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    );
    let mut nodes = Vec::new();
    for i in 0..opts.nodes {
        let extra = [
            "--redis".to_owned(),
            format!("redis://127.0.0.1:{redis_port}"),
            "--node-id".to_owned(),
            format!("node-{i}"),
            "--node-lease-ms".to_owned(),
            opts.node_lease_ms.to_string(),
        ];
        let log = opts
            .log_dir
            .as_ref()
            .map(|d| d.join(format!("node-{i}.log")));
        let node = Spawned::start_logged(
            &opts.gateway,
            opts.webs_per_phone,
            &extra,
            Some(&secret),
            log.as_deref(),
        )
        .await
        .with_context(|| format!("starting node {i}"))?;
        nodes.push(node);
    }
    for node in &nodes {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while http_status(node.addr, "/readyz").await != 200 {
            if tokio::time::Instant::now() > deadline {
                bail!("node {} not ready within 30 s", node.addr);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();

    let sockets = opts.phones * (opts.webs_per_phone + 1);
    let sh = Arc::new(Shared {
        urls: addrs.iter().map(|a| format!("ws://{a}")).collect(),
        webs: opts.webs_per_phone,
        period: Duration::from_secs_f64(sockets as f64 / opts.rate.max(1.0)),
        in_flight: opts.in_flight.max(1),
        pad: "x".repeat(opts.msg_size.saturating_sub(40)),
        sending: AtomicBool::new(false),
        outstanding: AtomicI64::new(0),
        kill_ns: AtomicU64::new(0),
        relaying_again: AtomicUsize::new(0),
        offline_seen: AtomicUsize::new(0),
        away_sessions: std::sync::OnceLock::new(),
        session_offline_seen: AtomicUsize::new(0),
        presence_done: AtomicBool::new(false),
        victim: match opts.kill {
            Kill::Node => opts.victim,
            Kill::Redis => usize::MAX,
        },
        ready_ns: AtomicU64::new(0),
        good_after_ready: AtomicUsize::new(0),
        options: ConnectOptions {
            timeout: Duration::from_secs(10),
            ..ConnectOptions::default()
        },
    });

    // Set-up: every account linked, its sockets spread over the nodes.
    let tokens = Arc::new(Tokens::new(&secret));
    let run_id = format!("chaos{:08x}", rand::random::<u32>());
    let gate = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let setup_started = now_ns();
    let mut setups = Vec::new();
    for acct in 0..opts.phones {
        let (sh, tokens, gate, run_id) = (sh.clone(), tokens.clone(), gate.clone(), run_id.clone());
        setups.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            setup_account(&sh, &tokens, &run_id, acct).await
        }));
    }
    let mut clients = Vec::new();
    for (acct, s) in setups.into_iter().enumerate() {
        clients.extend(
            s.await?
                .with_context(|| format!("setting up account {acct}"))?,
        );
    }
    let setup_secs = (now_ns() - setup_started) as f64 / 1e9;
    let count = |f: &dyn Fn(&Log) -> bool| clients.iter().filter(|(_, l)| f(l)).count();
    let victims = count(&|l| l.first_node == sh.victim);
    let watchers = count(&|l| l.phone_away);
    let away_webs_phone_elsewhere =
        count(&|l| l.away && l.role != Role::Phone && l.acct % opts.nodes != sh.victim);
    let _ = sh.away_sessions.set(
        clients
            .iter()
            .filter(|(_, l)| l.away && l.role != Role::Phone)
            .map(|(_, l)| l.session_id.clone())
            .collect(),
    );

    // Relay.
    let (quit_tx, quit_rx) = watch::channel(false);
    sh.sending.store(true, Relaxed);
    let mut tasks = Vec::new();
    for (c, log) in clients {
        tasks.push(tokio::spawn(drive(sh.clone(), c, log, quit_rx.clone())));
    }
    tokio::time::sleep(opts.before).await;

    // Every live node's /readyz, polled from the kill to the end.
    let live: Vec<usize> = (0..opts.nodes)
        .filter(|&i| opts.kill == Kill::Redis || i != opts.victim)
        .collect();
    let readyz: Arc<Mutex<Vec<Statuses>>> = Arc::new(Mutex::new(vec![Vec::new(); opts.nodes]));
    let polling = Arc::new(AtomicBool::new(true));
    let mut pollers = Vec::new();
    for &i in &live {
        let (readyz, polling, addr) = (readyz.clone(), polling.clone(), addrs[i]);
        pollers.push(tokio::spawn(async move {
            while polling.load(Relaxed) {
                let status = http_status(addr, "/readyz").await;
                readyz.lock().unwrap_or_else(|e| e.into_inner())[i].push((now_ns(), status));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }

    let mut report = ChaosReport {
        kill: Some(opts.kill),
        nodes: opts.nodes,
        phones: opts.phones,
        webs_per_phone: opts.webs_per_phone,
        sockets,
        rate: opts.rate,
        node_lease_ms: opts.node_lease_ms,
        setup_secs,
        ..ChaosReport::default()
    };

    // The kill.
    let kill_ns = now_ns();
    sh.kill_ns.store(kill_ns, Relaxed);
    let mut restart_ns = 0;
    match opts.kill {
        Kill::Node => nodes[opts.victim].kill9().await?,
        Kill::Redis => {
            redis.kill9().await?;
            restart_ns = now_ns();
            redis.restart()?;
            redis.wait_up(Duration::from_secs(30)).await?;
            report.restart_to_ping_ms = Some((now_ns() - restart_ns) as f64 / 1e6);
        }
    }

    // Wait for the recovery (or give up), then relay a little longer.
    let presence_give_up = tokio::time::Instant::now()
        + Duration::from_millis(2 * opts.node_lease_ms)
        + Duration::from_secs(5);
    let give_up = tokio::time::Instant::now() + opts.give_up;
    loop {
        let done = match opts.kill {
            Kill::Node => {
                // The away clients come back once the presence was seen
                // everywhere (or could not be in time).
                if !sh.presence_done.load(Relaxed)
                    && ((sh.offline_seen.load(Relaxed) >= watchers
                        && sh.session_offline_seen.load(Relaxed) >= away_webs_phone_elsewhere)
                        || tokio::time::Instant::now() > presence_give_up)
                {
                    sh.presence_done.store(true, Relaxed);
                }
                sh.presence_done.load(Relaxed) && sh.relaying_again.load(Relaxed) >= victims
            }
            Kill::Redis => {
                if sh.ready_ns.load(Relaxed) == 0 {
                    let statuses = readyz.lock().unwrap_or_else(|e| e.into_inner());
                    let all = live.iter().all(|&i| {
                        statuses[i]
                            .last()
                            .is_some_and(|&(t, s)| s == 200 && t > restart_ns)
                    });
                    drop(statuses);
                    if all {
                        sh.ready_ns.store(now_ns(), Relaxed);
                    }
                }
                sh.good_after_ready.load(Relaxed) >= sockets
            }
        };
        if done || tokio::time::Instant::now() > give_up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(opts.after).await;

    // Stop sending; every outstanding send answered; messages land.
    sh.sending.store(false, Relaxed);
    let drain = tokio::time::Instant::now() + Duration::from_secs(10);
    while sh.outstanding.load(Relaxed) > 0 && tokio::time::Instant::now() < drain {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    polling.store(false, Relaxed);
    let _ = quit_tx.send(true);
    let mut logs = Vec::new();
    for t in tasks {
        logs.push(t.await?);
    }
    for p in pollers {
        let _ = p.await;
    }

    // Every link acknowledged at the start resumes on a live node.
    report.links = logs.iter().filter(|l| l.role != Role::Phone).count();
    let mut resumes = Vec::new();
    for (i, l) in logs.iter().enumerate() {
        if l.role == Role::Phone {
            continue;
        }
        let node = live[(l.first_node + 1) % live.len()];
        let (url, token, gate, options) = (
            sh.url(node, l.role),
            l.token.clone(),
            gate.clone(),
            sh.options.clone(),
        );
        resumes.push((
            i,
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await;
                let mut c = Client::connect(&url, &options).await?;
                c.request(ClientFrame::Auth { token }).await?;
                c.close().await;
                Ok::<_, ClientError>(())
            }),
        ));
    }
    for (i, r) in resumes {
        match r.await? {
            Ok(()) => report.links_resumed += 1,
            Err(e) => {
                if report.failures.len() < 20 {
                    report.failures.push(format!(
                        "link lost: account {} web {:?}: {e}",
                        logs[i].acct, logs[i].role
                    ));
                }
            }
        }
    }

    for (i, node) in nodes.into_iter().enumerate() {
        let tail = crate::gateway::log_lines(&node.log_tail);
        report
            .log_tails
            .push(format!("node {i}:\n{}", tail.join("\n")));
        let _ = node.stop().await;
    }
    let _ = redis.child.kill().await;

    let statuses = readyz.lock().unwrap_or_else(|e| e.into_inner()).clone();
    analyse(
        &opts,
        &logs,
        kill_ns,
        restart_ns,
        &statuses,
        &live,
        &mut report,
    );
    Ok(report)
}

/// `--kill node`: whether account `acct`'s socket on `node` stays away after
/// the kill until the presence was measured. Half the accounts (by `acct /
/// n`, so each socket position gets its share): a client that is back on
/// another node within milliseconds is, rightly, never shown offline, so the
/// presence is measured on the away half and the resume on the other.
fn is_away(acct: usize, node: usize, n: usize, victim: usize) -> bool {
    node == victim && (acct / n).is_multiple_of(2)
}

fn analyse(
    opts: &ChaosOpts,
    logs: &[Log],
    kill_ns: u64,
    restart_ns: u64,
    readyz: &[Statuses],
    live: &[usize],
    r: &mut ChaosReport,
) {
    for l in logs {
        r.sent += l.sent;
        r.acked += l.acked.len() as u64;
        r.unanswered += l.unanswered;
        for (code, &(n, first, last)) in &l.refused {
            let ms = |t: u64| (t as f64 - kill_ns as f64) / 1e6;
            let e = r.refused.entry(code.clone()).or_insert(Refusals {
                count: 0,
                first_ms: f64::MAX,
                last_ms: f64::MIN,
            });
            e.count += n;
            e.first_ms = e.first_ms.min(ms(first));
            e.last_ms = e.last_ms.max(ms(last));
        }
        r.disconnected += l.losses.len();
        if let Some(why) = &l.link_lost
            && r.failures.len() < 20
        {
            r.failures
                .push(format!("account {} {:?}: {why}", l.acct, l.role));
        }
        // Only the killed node's sockets may go, and only after the kill.
        for x in &l.losses {
            let expected = opts.kill == Kill::Node && x.node == opts.victim && x.lost_ns >= kill_ns;
            if !expected && r.failures.len() < 20 {
                r.failures.push(format!(
                    "account {} {:?}: socket on node {} lost {:.0} ms after the kill: {}",
                    l.acct,
                    l.role,
                    x.node,
                    (x.lost_ns as f64 - kill_ns as f64) / 1e6,
                    x.why
                ));
            }
        }
    }
    let on_victim = |l: &Log| opts.kill == Kill::Node && l.first_node == opts.victim;
    match opts.kill {
        Kill::Node => {
            let target = 2 * opts.node_lease_ms;
            r.target_presence_ms = Some(target);
            // Webs elsewhere whose phone was on the killed node and stayed away.
            let mut offline = Vec::new();
            for l in logs.iter().filter(|l| l.phone_away) {
                match l.phone_offline_ns {
                    Some(t) => offline.push(t - kill_ns),
                    None => r.phone_offline_missing += 1,
                }
            }
            // Surviving phones, for their webs on the killed node that stayed away.
            let phones: HashMap<usize, &Log> = logs
                .iter()
                .filter(|l| l.role == Role::Phone && !on_victim(l))
                .map(|l| (l.acct, l))
                .collect();
            let mut session_offline = Vec::new();
            for l in logs.iter().filter(|l| l.role != Role::Phone && l.away) {
                if let Some(p) = phones.get(&l.acct) {
                    match p.session_offline.get(&l.session_id) {
                        Some(&t) => session_offline.push(t - kill_ns),
                        None => r.session_offline_missing += 1,
                    }
                }
            }
            let home_killed: HashSet<usize> = logs
                .iter()
                .filter(|l| l.role == Role::Phone && on_victim(l))
                .map(|l| l.acct)
                .collect();
            // [home lived on, home killed]
            let mut resumed = [Vec::new(), Vec::new()];
            let mut relaying = [Vec::new(), Vec::new()];
            for l in logs.iter().filter(|l| on_victim(l)) {
                let k = usize::from(home_killed.contains(&l.acct));
                match l.losses.iter().find(|x| x.lost_ns >= kill_ns) {
                    Some(Loss {
                        resumed_ns: Some(res),
                        relayed_ns: Some(rel),
                        ..
                    }) => {
                        // The away half came back on purpose later.
                        if !l.away {
                            resumed[k].push(res - kill_ns);
                            relaying[k].push(rel - kill_ns);
                        }
                    }
                    _ => r.not_resumed += 1,
                }
            }
            let (off, so) = (spread(offline), spread(session_offline));
            for (what, s, missing) in [
                (
                    "phone_status false at every web",
                    &off,
                    r.phone_offline_missing,
                ),
                (
                    "session_offline at every phone",
                    &so,
                    r.session_offline_missing,
                ),
            ] {
                if missing > 0 {
                    r.failures.push(format!("{what}: {missing} never saw it"));
                } else if s.max_ms > target as f64 {
                    r.targets_missed.push(format!(
                        "{what}: {:.0} ms after the kill (target {target} ms)",
                        s.max_ms
                    ));
                }
            }
            if r.not_resumed > 0 {
                r.failures.push(format!(
                    "{} clients of the killed node did not resume and relay",
                    r.not_resumed
                ));
            }
            r.phone_offline = Some(off);
            r.session_offline = Some(so);
            let [resumed, resumed_home_killed] = resumed;
            let [relaying, relaying_home_killed] = relaying;
            r.resumed = Some(spread(resumed));
            r.relaying_again = Some(spread(relaying));
            r.resumed_home_killed = Some(spread(resumed_home_killed));
            r.relaying_again_home_killed = Some(spread(relaying_home_killed));
        }
        Kill::Redis => {
            let target = 10_000;
            r.target_recovery_ms = Some(target);
            let mut ready = Vec::new();
            for &i in live {
                // The last turn to 200: 200 from then on.
                let series = &readyz[i];
                let last_bad = series.iter().rposition(|&(_, s)| s != 200);
                let back = match last_bad {
                    Some(k) => series.get(k + 1).map(|&(t, _)| t),
                    None => series.first().map(|&(t, _)| t),
                };
                match back {
                    Some(t) => ready.push(t.saturating_sub(restart_ns)),
                    None => r
                        .failures
                        .push(format!("node {i}: /readyz not 200 at the end")),
                }
            }
            let mut back = Vec::new();
            for l in logs {
                match recovered_at(&l.outcomes, kill_ns) {
                    (_, false) => {}
                    (Some(t), true) => back.push(t.saturating_sub(restart_ns)),
                    (None, true) => r.sockets_never_recovered += 1,
                }
            }
            r.sockets_interrupted = back.len() + r.sockets_never_recovered;
            if r.sockets_never_recovered > 0 {
                r.failures.push(format!(
                    "{} sockets' sends never worked again",
                    r.sockets_never_recovered
                ));
            }
            if r.disconnected > 0 {
                r.failures.push(format!(
                    "{} sockets were closed (they must stay open through a Redis outage)",
                    r.disconnected
                ));
            }
            let (ready, back) = (spread(ready), spread(back));
            let recovery = ready.max_ms.max(back.max_ms);
            if recovery > target as f64 {
                r.targets_missed.push(format!(
                    "recovery {recovery:.0} ms after the restart (target {target} ms)"
                ));
            }
            r.recovery_ms = Some(recovery);
            r.readyz = Some(ready);
            r.sockets_recovered = Some(back);
        }
    }
    r.losses = check_losses(opts, logs, kill_ns);
    if r.losses.lost > 0 {
        r.failures
            .push(format!("{} acknowledged deliveries lost", r.losses.lost));
    }
    if r.links_resumed < r.links {
        r.failures.push(format!(
            "{} of {} links did not resume",
            r.links - r.links_resumed,
            r.links
        ));
    }
    r.pass = r.failures.is_empty();
}

/// Every acknowledged send against what arrived. A web's `ack` promises one
/// delivery (to its phone), a phone's `ack` `delivered` deliveries (to its
/// webs). Receipts count per client, over its reconnects. For each ack, the
/// deliveries missing are explained, in this order, only by:
///
/// 1. a receiver on the killed node that did not get it: acked before the
///    kill, the frame was held by the dying node (`held_by_killed_node`);
///    acked after the kill, `delivered` counted a socket of a node not yet
///    declared dead (`counted_dead_socket`);
/// 2. acked before the kill on an account whose home was the killed node
///    (its phone's node, where the account was first claimed): the home
///    answers before its publisher has sent the frame on (`through_killed_home`);
///
/// and whatever remains is `lost`. With `--kill redis` nothing is explained:
/// every missing delivery is lost.
fn check_losses(opts: &ChaosOpts, logs: &[Log], kill_ns: u64) -> Losses {
    let node_kill = opts.kill == Kill::Node;
    let mut by_acct: HashMap<usize, Vec<&Log>> = HashMap::new();
    for l in logs {
        by_acct.entry(l.acct).or_default().push(l);
    }
    let mut out = Losses::default();
    let (mut held_age, mut home_age, mut dead_last) = (0u64, 0u64, 0u64);
    let (mut lost_from, mut lost_to) = (i64::MAX, i64::MIN);
    for l in logs {
        out.duplicates += l.duplicates;
        out.out_of_order += l.out_of_order;
        let account = &by_acct[&l.acct];
        let home_killed = node_kill
            && account
                .iter()
                .any(|x| x.role == Role::Phone && x.first_node == opts.victim);
        let receivers: Vec<&&Log> = account
            .iter()
            .filter(|x| (l.role == Role::Phone) != (x.role == Role::Phone))
            .collect();
        for &(key, ack_ns, delivered) in &l.acked {
            let delivered = delivered as u64;
            let got = receivers
                .iter()
                .filter(|x| x.received.contains(&key))
                .count() as u64;
            out.acked_deliveries += delivered;
            out.received += got.min(delivered);
            if got > delivered {
                out.extra += got - delivered;
                continue;
            }
            let mut missing = delivered - got;
            if missing == 0 {
                continue;
            }
            if node_kill {
                let on_killed = receivers
                    .iter()
                    .filter(|x| x.first_node == opts.victim && !x.received.contains(&key))
                    .count() as u64;
                let explained = missing.min(on_killed);
                missing -= explained;
                if ack_ns < kill_ns {
                    out.held_by_killed_node += explained;
                    if explained > 0 {
                        held_age = held_age.max(kill_ns - ack_ns);
                    }
                } else {
                    out.counted_dead_socket += explained;
                    if explained > 0 {
                        dead_last = dead_last.max(ack_ns - kill_ns);
                    }
                }
                if missing > 0 && home_killed && ack_ns < kill_ns {
                    out.through_killed_home += missing;
                    home_age = home_age.max(kill_ns - ack_ns);
                    missing = 0;
                }
            }
            if missing > 0 {
                out.lost += missing;
                if l.role == Role::Phone {
                    out.lost_phone_to_web += missing;
                } else {
                    out.lost_web_to_phone += missing;
                }
                let at = ack_ns as i64 - kill_ns as i64;
                lost_from = lost_from.min(at);
                lost_to = lost_to.max(at);
            }
        }
    }
    out.held_by_killed_node_max_age_ms = held_age as f64 / 1e6;
    out.through_killed_home_max_age_ms = home_age as f64 / 1e6;
    out.counted_dead_socket_last_ms = dead_last as f64 / 1e6;
    if out.lost > 0 {
        out.lost_acked_from_ms = lost_from as f64 / 1e6;
        out.lost_acked_to_ms = lost_to as f64 / 1e6;
    }
    out
}

fn print(r: &ChaosReport) {
    let s = |x: &Option<Spread>| {
        x.as_ref().map_or_else(String::new, |s| {
            format!(
                "p50 {:.0} ms, max {:.0} ms (of {})",
                s.p50_ms, s.max_ms, s.count
            )
        })
    };
    println!(
        "chaos: kill {:?}; {} nodes, {} phones x {} webs ({} sockets), {} sends/s, lease {} ms; set-up {:.1} s",
        r.kill.unwrap_or(Kill::Node),
        r.nodes,
        r.phones,
        r.webs_per_phone,
        r.sockets,
        r.rate,
        r.node_lease_ms,
        r.setup_secs
    );
    println!(
        "sends: {} sent, {} acked, {} unanswered (socket lost first); {} sockets lost",
        r.sent, r.acked, r.unanswered, r.disconnected
    );
    for (code, x) in &r.refused {
        println!(
            "  error {code}: {} from {:.0} to {:.0} ms after the kill",
            x.count, x.first_ms, x.last_ms
        );
    }
    if r.kill == Some(Kill::Node) {
        println!(
            "kill -> phone_status false at the webs elsewhere: {} (target {} ms)",
            s(&r.phone_offline),
            r.target_presence_ms.unwrap_or(0)
        );
        println!(
            "kill -> session_offline at the phones elsewhere: {}",
            s(&r.session_offline)
        );
        println!(
            "kill -> the killed node's clients resumed elsewhere, home alive: {}; acked again: {}",
            s(&r.resumed),
            s(&r.relaying_again),
        );
        println!(
            "kill -> the killed node's clients resumed elsewhere, home killed: {}; acked again: {}; not resumed {}",
            s(&r.resumed_home_killed),
            s(&r.relaying_again_home_killed),
            r.not_resumed
        );
    } else {
        println!(
            "restart -> PING {:.0} ms; -> /readyz 200 for good: {}",
            r.restart_to_ping_ms.unwrap_or(0.0),
            s(&r.readyz)
        );
        println!(
            "restart -> sends acked again: {} interrupted sockets: {}; never recovered {}; recovery {:.0} ms (target {} ms)",
            r.sockets_interrupted,
            s(&r.sockets_recovered),
            r.sockets_never_recovered,
            r.recovery_ms.unwrap_or(0.0),
            r.target_recovery_ms.unwrap_or(0)
        );
    }
    let l = &r.losses;
    println!(
        "deliveries: {} acked, {} received; held by the killed node {} (acked <= {:.1} ms before the kill), \
         through the killed home {} (<= {:.1} ms), counted a dead socket {} (<= {:.0} ms after), LOST {}; \
         extra {}, duplicates {}, out of order {}",
        l.acked_deliveries,
        l.received,
        l.held_by_killed_node,
        l.held_by_killed_node_max_age_ms,
        l.through_killed_home,
        l.through_killed_home_max_age_ms,
        l.counted_dead_socket,
        l.counted_dead_socket_last_ms,
        l.lost,
        l.extra,
        l.duplicates,
        l.out_of_order
    );
    if l.lost > 0 {
        println!(
            "LOST: {} phone->web, {} web->phone, acked from {:.1} to {:.1} ms after the kill",
            l.lost_phone_to_web, l.lost_web_to_phone, l.lost_acked_from_ms, l.lost_acked_to_ms
        );
    }
    println!(
        "links resumed at the end: {} of {}",
        r.links_resumed, r.links
    );
    for t in &r.targets_missed {
        println!("TARGET MISSED: {t}");
    }
    for f in &r.failures {
        println!("FAIL: {f}");
    }
    println!("{}", if r.pass { "PASS" } else { "FAIL" });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_the_killed_nodes_accounts_stay_away() {
        // 3 nodes, node 0 killed: accounts 0-2 stay away, 3-5 come back at once
        assert!(is_away(0, 0, 3, 0) && is_away(2, 0, 3, 0));
        assert!(!is_away(3, 0, 3, 0) && !is_away(5, 0, 3, 0));
        assert!(is_away(6, 0, 3, 0));
        // only sockets on the killed node
        assert!(!is_away(0, 1, 3, 0));
        assert!(!is_away(0, 0, 3, usize::MAX));
    }

    #[test]
    fn recovery_is_the_first_full_ack_after_the_last_failure() {
        let k = 100;
        // good, bad (refused), bad (slow), then good twice
        let o = [
            (90, 95, true),
            (101, 150, false),
            (120, 300, false),
            (130, 310, true),
            (301, 305, true),
        ];
        assert_eq!(recovered_at(&o, k), (Some(305), true));
        assert_eq!(recovered_at(&o[..1], k), (None, false));
        assert_eq!(recovered_at(&o[..3], k), (None, true));
    }
}
