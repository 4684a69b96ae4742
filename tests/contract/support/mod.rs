//! Test support, one job per file:
//!
//! - `gateway`: the gateway under test, in-process (`TestGateway`) or the
//!   built binary (`BinGateway`), behind one `Gateway` trait;
//! - `cli`: the binary's other subcommands, run to completion;
//! - `ws`: the recording WebSocket client (`Client`), opened with the crate's
//!   typed client;
//! - `raw`: `RawWs`, a byte-level, browser-strict socket that reads only
//!   when told to;
//! - `flows`: what clients do (open a phone, pair, resume, list), encoded by
//!   `ClientFrame::to_text`;
//! - `shapes`: checks of `SESSION` objects and events;
//! - `http`: a tiny HTTP/1.1 client and bare upgrade requests;
//! - `metrics`: `/metrics` samples by name and label;
//! - `tokens`: JWTs;
//! - `clock`: waiting for the wall clock, where the contract is about time;
//! - `redis`: `redis-server` child processes (one, or three as a Redis
//!   Cluster) in temp dirs, durable (AOF, fsync always);
//! - `cluster`: a Redis and N gateway nodes (the built binary) sharing it,
//!   behind the same `Gateway` trait, sockets spread round-robin.
//!
//! Every wait has a deadline; a missed deadline fails the test with what was
//! received but not consumed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod cli;
mod clock;
mod cluster;
mod flows;
mod gateway;
mod http;
mod metrics;
mod nginx;
mod raw;
mod redis;
mod shapes;
mod tokens;
mod ws;

pub use self::redis::*;
pub use cli::*;
pub use clock::*;
pub use cluster::*;
pub use flows::*;
pub use gateway::*;
pub use http::*;
pub use metrics::*;
pub use nginx::*;
pub use raw::*;
pub use shapes::*;
pub use tokens::*;
pub use ws::*;

pub use pairgate::Config;
pub use pairgate::protocol::ClientFrame;

/// Default deadline of every receive.
pub const T: Duration = Duration::from_secs(5);
/// A longer deadline for waits that include configured timers.
pub const LONG: Duration = Duration::from_secs(10);

pub const CHROME_LINUX_UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
pub const FIREFOX_WINDOWS_UA: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0";

static COUNTER: AtomicU64 = AtomicU64::new(1);

/// A fresh account id matching `^[A-Za-z0-9_.-]{1,64}$`, unique in this run.
pub fn account(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{:08x}",
        COUNTER.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    )
}

/// A fresh request id.
pub fn next_id(prefix: &str) -> String {
    format!("{prefix}{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}
