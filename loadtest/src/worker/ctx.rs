//! What every socket task of a worker shares: configuration, counters,
//! histograms, failures, per-account accounting, and the phase channel with
//! its arrival count.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use hdrhistogram::Histogram;
use pairgate::tokens::Tokens;
use pairgate_client::{ClientError, ConnectOptions};
use tokio::sync::{Notify, Semaphore, watch};

use super::timer::PreciseTimer;
use crate::wire::{Progress, WorkerConfig, new_histogram};

/// Histograms a worker keeps; names are the report's keys.
#[derive(Clone, Copy, Debug)]
#[repr(usize)]
pub enum H {
    Connect,
    Pair,
    RelayWebToPhone,
    RelayPhoneToWeb,
    AckWeb,
    AckPhone,
    Resume,
    LogoutOk,
    LogoutLastClose,
    SendLag,
    LogoutWritten,
    LogoutOneOk,
}

pub const HIST_NAMES: [&str; 12] = [
    "connect",
    "pair",
    "relay_web_to_phone",
    "relay_phone_to_web",
    "ack_web",
    "ack_phone",
    "resume",
    "logout_all_ok",
    "logout_all_last_close",
    "send_lag",
    "logout_all_written",
    "logout_ok",
];

/// Samples a socket collects before taking the shared histogram lock once.
pub const SAMPLE_BATCH: usize = 256;
/// The id of the phone's `logout` of one session.
pub const LOGOUT_ONE_ID: &str = "l1";
/// The id of the phone's `logout_all`.
pub const LOGOUT_ID: &str = "lo";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Phone,
    Web,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Window {
    pub start_ns: u64,
    pub warm_ns: u64,
    pub end_ns: u64,
}

impl Window {
    pub fn measures(&self, t: u64) -> bool {
        t >= self.warm_ns && t < self.end_ns
    }
}

#[derive(Clone, Debug)]
pub enum PhaseKind {
    Idle,
    Relay(Window),
    StopRelay,
    Churn(usize),
    /// Each phone ends web 0's session with `logout` (the soak).
    LogoutOne,
    /// Sockets check in, parked, before the release.
    LogoutReady,
    /// Phones send `logout_all` at this instant ([`crate::clock`] ns).
    Logout {
        release_ns: u64,
    },
}

#[derive(Clone, Debug)]
pub struct Phase {
    pub seq: u64,
    pub kind: PhaseKind,
}

/// Worker-wide counters; snapshots go to the parent as `Progress`.
#[derive(Default)]
pub struct Counters {
    pub phones_ready: AtomicU64,
    pub webs_paired: AtomicU64,
    pub sockets_open: AtomicI64,
    pub sockets_peak: AtomicI64,
    pub sent_web: AtomicU64,
    pub sent_phone: AtomicU64,
    pub acked_web: AtomicU64,
    pub acked_phone: AtomicU64,
    pub err_web: AtomicU64,
    pub err_phone: AtomicU64,
    pub recv_phone: AtomicU64,
    pub recv_web: AtomicU64,
    pub resumed: AtomicU64,
    pub logout_ok: AtomicU64,
    pub logout_one_ok: AtomicU64,
    pub logged_out_webs: AtomicU64,
    pub failures: AtomicU64,
    pub errors: AtomicU64,
    // Inside the measured window.
    pub win_sent_web: AtomicU64,
    pub win_sent_phone: AtomicU64,
    pub win_recv_phone: AtomicU64,
    pub win_recv_web: AtomicU64,
    /// At a rate: sends scheduled inside the measured window that had not
    /// gone out when it closed (held by the in-flight cap).
    pub behind_web: AtomicU64,
    pub behind_phone: AtomicU64,
    pub out_of_order: AtomicU64,
    pub session_online: AtomicU64,
    pub session_offline: AtomicU64,
    pub phone_status_offline: AtomicU64,
}

/// One account's phone and web clients, and the numbers its checks compare.
#[derive(Default)]
pub struct Account {
    pub index: usize,
    pub name: String,
    pub webs: AtomicUsize,
    pub web_acked: AtomicU64,
    pub phone_got: AtomicU64,
    pub phone_delivered: AtomicU64,
    pub webs_got: AtomicU64,
    pub logout_sent_ns: AtomicU64,
    pub logout_ok_ns: AtomicU64,
    pub last_close_ns: AtomicU64,
    pub webs_closed: AtomicU64,
    /// Web client 0's session, which the soak's single `logout` ends.
    pub first_session: Mutex<Option<String>>,
    /// The phone sent that `logout` (web 0 then expects its 4001).
    pub logout_one_sent: AtomicBool,
}

pub struct Sync {
    pub seq: u64,
    pub arrived: usize,
    pub alive: usize,
}

pub struct Ctx {
    pub cfg: WorkerConfig,
    pub tokens: Tokens,
    pub c: Counters,
    pub hists: Mutex<Vec<Histogram<u64>>>,
    pub errors: Mutex<BTreeMap<String, u64>>,
    pub failures: Mutex<(BTreeMap<String, u64>, Vec<String>)>,
    pub phase: watch::Sender<Phase>,
    /// (written, `ok` received) of each phone's `logout_all`.
    pub logout_intervals: Mutex<Vec<[u64; 2]>>,
    /// Bounds handshakes in progress (pairing, resume; not logout_all).
    pub handshakes: Semaphore,
    pub sync: Mutex<Sync>,
    pub sync_changed: Notify,
    /// Wakes scheduled sends (`--rate`) on time.
    pub timer: PreciseTimer,
    /// Body padding, built once.
    pub pad: String,
}

/// A failure of one socket: its kind (a report key), what happened, and the
/// contract's error code when the gateway refused something.
#[derive(Debug)]
pub struct Fail {
    pub kind: &'static str,
    pub msg: String,
    pub code: Option<String>,
}

pub fn fail<E: std::fmt::Display>(kind: &'static str) -> impl FnOnce(E) -> Fail {
    move |e| Fail {
        kind,
        msg: e.to_string(),
        code: None,
    }
}

/// Like `fail`, keeping the error code of an `error` reply for the report.
pub fn refused(kind: &'static str) -> impl FnOnce(ClientError) -> Fail {
    move |e| Fail {
        kind,
        code: e.code().map(str::to_owned),
        msg: e.to_string(),
    }
}

pub type Res<T> = Result<T, Fail>;

impl Ctx {
    pub fn record_fail(&self, f: Fail, who: &str) {
        if let Some(code) = &f.code {
            self.record_error(code);
        }
        self.record_failure(f.kind, format!("{who}: {}", f.msg));
    }

    pub fn record_failure(&self, kind: &str, msg: String) {
        self.c.failures.fetch_add(1, Relaxed);
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        *f.0.entry(kind.to_owned()).or_default() += 1;
        if f.1.len() < 12 {
            f.1.push(format!("{kind}: {msg}"));
        }
    }

    pub fn record_error(&self, code: &str) {
        self.c.errors.fetch_add(1, Relaxed);
        let mut e = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        *e.entry(code.to_owned()).or_default() += 1;
    }

    pub fn record(&self, h: H, micros: u64) {
        let mut hs = self.hists.lock().unwrap_or_else(|e| e.into_inner());
        hs[h as usize].saturating_record(micros.max(1));
    }

    pub fn record_batch(&self, samples: &mut Vec<(H, u64)>) {
        if samples.is_empty() {
            return;
        }
        let mut hs = self.hists.lock().unwrap_or_else(|e| e.into_inner());
        for (h, v) in samples.drain(..) {
            hs[h as usize].saturating_record(v.max(1));
        }
    }

    pub fn socket_opened(&self) {
        let now = self.c.sockets_open.fetch_add(1, Relaxed) + 1;
        self.c.sockets_peak.fetch_max(now, Relaxed);
    }

    pub fn socket_closed(&self) {
        self.c.sockets_open.fetch_sub(1, Relaxed);
    }

    /// Starts a phase: nobody has arrived at it yet.
    pub fn set_phase(&self, kind: PhaseKind) {
        let seq = {
            let mut s = self.sync.lock().unwrap_or_else(|e| e.into_inner());
            s.seq += 1;
            s.arrived = 0;
            s.seq
        };
        self.phase.send_replace(Phase { seq, kind });
    }

    /// Returns whether the arrival counted (it was for the current phase).
    pub fn arrive(&self, seq: u64) -> bool {
        let mut s = self.sync.lock().unwrap_or_else(|e| e.into_inner());
        let current = s.seq == seq;
        if current {
            s.arrived += 1;
        }
        drop(s);
        self.sync_changed.notify_waiters();
        current
    }

    pub fn join(&self) {
        self.sync.lock().unwrap_or_else(|e| e.into_inner()).alive += 1;
    }

    /// A socket task ends; `arrived_seq` is the last phase it arrived at, so
    /// that a task which arrived and then ended is not counted twice.
    pub fn leave(&self, arrived_seq: u64) {
        let mut s = self.sync.lock().unwrap_or_else(|e| e.into_inner());
        s.alive -= 1;
        if s.seq == arrived_seq {
            s.arrived -= 1;
        }
        drop(s);
        self.sync_changed.notify_waiters();
    }

    /// Waits until every live socket task has finished the current phase.
    pub async fn all_arrived(&self) {
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
    pub fn url(&self, account: usize, slot: usize, role: Role) -> String {
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

    pub fn connect_options(&self, account: usize, slot: usize) -> ConnectOptions {
        let ips = &self.cfg.source_ips;
        let global = account * (self.cfg.webs_per_phone + 1) + slot;
        ConnectOptions {
            user_agent: Some(format!("pairgate-loadtest/{}", env!("CARGO_PKG_VERSION"))),
            origin: None,
            bind: (!ips.is_empty()).then(|| ips[global % ips.len()]),
            timeout: Duration::from_millis(self.cfg.timeout_ms),
            ..ConnectOptions::default()
        }
    }

    pub fn snapshot(&self) -> Progress {
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
            logout_one_ok: g(&c.logout_one_ok),
            logged_out_webs: g(&c.logged_out_webs),
            failures: g(&c.failures),
            errors: g(&c.errors),
        }
    }
}

pub fn new_ctx(cfg: WorkerConfig) -> anyhow::Result<Ctx> {
    anyhow::ensure!(!cfg.urls.is_empty(), "no gateway url");
    let (phase, _) = watch::channel(Phase {
        seq: 0,
        kind: PhaseKind::Idle,
    });
    Ok(Ctx {
        tokens: Tokens::new(&cfg.secret),
        timer: PreciseTimer::start(),
        pad: "x".repeat(cfg.msg_size.saturating_sub(48)),
        handshakes: Semaphore::new(cfg.connect_concurrency.max(1)),
        cfg,
        c: Counters::default(),
        hists: Mutex::new(HIST_NAMES.iter().map(|_| new_histogram()).collect()),
        errors: Mutex::default(),
        failures: Mutex::default(),
        logout_intervals: Mutex::default(),
        phase,
        sync: Mutex::new(Sync {
            seq: 0,
            arrived: 0,
            alive: 0,
        }),
        sync_changed: Notify::new(),
    })
}
