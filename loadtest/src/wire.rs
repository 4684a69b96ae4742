//! What the parent and its workers say to each other: one JSON object per
//! line, parent → worker on the worker's stdin, worker → parent on its stdout.
//!
//! Phases are lock-step: the parent sends a command to every worker and waits
//! for every worker's `Done` before the next one, so no process starts
//! relaying while another is still pairing.

use std::collections::BTreeMap;
use std::net::IpAddr;

use base64::Engine;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};

use crate::cli::Direction;

/// Everything a worker needs; sent as the first line on its stdin (so the
/// secret never shows up in `ps`).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct WorkerConfig {
    pub index: usize,
    /// Prefix of every account id, unique per run.
    pub run_id: String,
    pub secret: String,
    /// Node base URLs (`ws://host:port`).
    pub urls: Vec<String>,
    pub pin_accounts: bool,
    /// Global account indices `first..end` this worker drives.
    pub first_account: usize,
    pub end_account: usize,
    pub webs_per_phone: usize,
    pub msg_size: usize,
    pub in_flight: usize,
    /// Sends per second of each sending socket; 0 = flat out.
    pub per_socket_rate: f64,
    pub direction: Direction,
    pub source_ips: Vec<IpAddr>,
    pub threads: usize,
    pub connect_concurrency: usize,
    pub timeout_ms: u64,
    pub drain_timeout_ms: u64,
}

/// Parent → worker.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Phones authenticate, web clients pair through the QR handshake (again
    /// on each soak cycle: the same accounts, newly linked web clients).
    Connect,
    /// Relay from `start_ns` to `end_ns` (wall clock, ns since the UNIX epoch,
    /// so every process agrees); only what is sent from `warm_ns` on is measured.
    Relay {
        start_ns: u64,
        warm_ns: u64,
        end_ns: u64,
    },
    /// Every web socket disconnects and resumes with its token, `rounds` times.
    Churn { rounds: usize },
    /// Every phone ends one session (web client 0's) with `logout` (the soak).
    LogoutOne,
    /// Every socket checks in, parked: phones connected and idle.
    LogoutReady,
    /// Every phone sends `logout_all` at `release_ns` (shared clock), all at once.
    Logout { release_ns: u64 },
    /// Report results and exit.
    Finish,
}

/// Worker → parent.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    /// Cumulative counters, a few times a second.
    Progress(Progress),
    /// The phase named by the last command is over in this worker.
    Done { phase: String },
    /// The answer to `Finish`.
    Result(Box<WorkerResult>),
}

/// Cumulative counters of one worker, summed by the parent.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Progress {
    pub phones_ready: u64,
    pub webs_paired: u64,
    pub sockets_open: i64,
    pub sockets_peak: i64,
    pub sent_web: u64,
    pub sent_phone: u64,
    pub acked_web: u64,
    pub acked_phone: u64,
    /// `message` frames from web clients, received by phones.
    pub recv_phone: u64,
    /// `message` frames from phones, received by web clients.
    pub recv_web: u64,
    pub resumed: u64,
    pub logout_ok: u64,
    /// The soak's single-session `logout`s answered `ok`.
    #[serde(default)]
    pub logout_one_ok: u64,
    pub logged_out_webs: u64,
    pub failures: u64,
    pub errors: u64,
}

impl Progress {
    pub fn add(&mut self, o: &Progress) {
        self.phones_ready += o.phones_ready;
        self.webs_paired += o.webs_paired;
        self.sockets_open += o.sockets_open;
        self.sockets_peak += o.sockets_peak;
        self.sent_web += o.sent_web;
        self.sent_phone += o.sent_phone;
        self.acked_web += o.acked_web;
        self.acked_phone += o.acked_phone;
        self.recv_phone += o.recv_phone;
        self.recv_web += o.recv_web;
        self.resumed += o.resumed;
        self.logout_ok += o.logout_ok;
        self.logout_one_ok += o.logout_one_ok;
        self.logged_out_webs += o.logged_out_webs;
        self.failures += o.failures;
        self.errors += o.errors;
    }
}

/// A worker's final numbers. Every field is a count or a histogram, so the
/// parent's merge is exact: counts add, histograms add bucket by bucket.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct WorkerResult {
    pub totals: Progress,
    /// Named counters (window counts, losses, checks); summed by name.
    pub counts: BTreeMap<String, u64>,
    /// `error` replies by code, and unexpected closes as `close_<code>`.
    pub errors: BTreeMap<String, u64>,
    /// Setup or protocol failures by kind.
    pub failures: BTreeMap<String, u64>,
    /// A few failure messages, for the report.
    pub failure_samples: Vec<String>,
    /// Histograms (µs), V2-serialized, base64.
    pub histograms: BTreeMap<String, String>,
    /// Each phone's `logout_all`: [written, `ok` received], shared clock ns.
    #[serde(default)]
    pub logout_intervals: Vec<[u64; 2]>,
}

/// Every histogram records microseconds from 1 µs to one hour at 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

pub fn encode_histogram(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    // Serializing into a Vec cannot fail for a histogram we built.
    if V2Serializer::new().serialize(h, &mut buf).is_err() {
        buf.clear();
    }
    base64::engine::general_purpose::STANDARD.encode(buf)
}

pub fn decode_histogram(text: &str) -> anyhow::Result<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text)?;
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| anyhow::anyhow!("bad histogram: {e:?}"))?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_survive_the_wire_and_merge_exactly() {
        let mut a = new_histogram();
        let mut b = new_histogram();
        for v in 1..=1000u64 {
            a.record(v).unwrap();
        }
        for v in 1..=1000u64 {
            b.record(v * 1000).unwrap();
        }
        let mut merged = decode_histogram(&encode_histogram(&a)).unwrap();
        merged
            .add(decode_histogram(&encode_histogram(&b)).unwrap())
            .unwrap();
        let mut direct = new_histogram();
        direct.add(&a).unwrap();
        direct.add(&b).unwrap();
        assert_eq!(merged.len(), 2000);
        assert_eq!(
            merged.value_at_quantile(0.99),
            direct.value_at_quantile(0.99)
        );
        assert_eq!(merged.max(), direct.max());
    }

    #[test]
    fn commands_are_tagged() {
        let line = serde_json::to_string(&Command::Churn { rounds: 2 }).unwrap();
        assert_eq!(line, r#"{"cmd":"churn","rounds":2}"#);
        let ev: Event = serde_json::from_str(r#"{"ev":"done","phase":"relay"}"#).unwrap();
        assert!(matches!(ev, Event::Done { phase } if phase == "relay"));
    }
}
