//! Every number the wire contract (`protocol.md`) fixes, and the few pairgate
//! adds, in one table: the defaults of `pairgate serve`'s options (used by
//! clap and by `Config::default`) and the fixed limits. A number changes here
//! and nowhere else.

use std::time::Duration;

/// Defaults of `pairgate serve`'s options.
pub mod defaults {
    pub const LISTEN: &str = "127.0.0.1:8080";
    pub const DATA_DIR: &str = "./pairgate-data";
    pub const QR_TTL_MS: u64 = 20_000;
    pub const QR_ROTATIONS: u32 = 5;
    pub const AUTH_TIMEOUT_MS: u64 = 10_000;
    pub const HEARTBEAT_MS: u64 = 25_000;
    pub const MAX_DEVICES: usize = 4;
    pub const EPHEMERAL_GRACE_MS: u64 = 60_000;
    pub const SESSION_IDLE_DAYS: f64 = 14.0;
    pub const MAX_FRAME_BYTES: u64 = 65_536;
    pub const MAX_FRAMES_PER_SEC: u32 = 1000;
    pub const MAX_ERRORS_PER_SEC: u32 = 10;
    pub const MAX_QUEUE_BYTES: u64 = 1_048_576;
    /// 0: what the open-files limit allows, with headroom.
    pub const MAX_SOCKETS: usize = 0;
    /// 0: off.
    pub const MAX_SOCKETS_PER_IP: usize = 0;
    pub const DRAIN_MS: u64 = 0;
    /// pairgate's own: a request head's deadline, and an idle keep-alive
    /// connection's life.
    pub const HTTP_HEADER_TIMEOUT_MS: u64 = 10_000;
    pub const NODE_LEASE_MS: u64 = 10_000;
    pub const MAX_PAIRS_PER_IP_PER_MIN: u32 = 0;
    pub const MAX_LINK_MISSES_PER_MIN: u32 = 600;
}

/// The `protocol` field of `hello`, and the longest `id` a client frame may
/// carry (in characters): the wire crate's, where the parser uses them.
pub use pairgate_protocol::{MAX_ID_CHARS, PROTOCOL_VERSION};
/// Room a `send` frame needs beside its `body`: a `body` may serialize to at
/// most `max_frame_bytes` minus this.
pub const BODY_HEADROOM_BYTES: usize = 1024;

/// A link request unanswered for this many QR ttls counts as rejected.
pub const REQUEST_TTL_IN_QR_TTLS: u32 = 3;
/// Failed `link`s (`unknown_ref`) allowed per account per window...
pub const LINK_MISSES_PER_WINDOW: usize = 5;
/// ...a sliding minute.
pub const LINK_MISS_WINDOW: Duration = Duration::from_secs(60);

/// Client frames may come in bursts of this many seconds' worth.
pub const FRAME_BURST_SECONDS: u32 = 2;
/// Error replies may come in bursts of this many seconds' worth.
pub const ERROR_BURST_SECONDS: u32 = 10;
/// This many `rate_limited` replies within the window close a socket 4029.
pub const RATE_LIMITED_TO_CLOSE: usize = 20;
pub const RATE_LIMITED_WINDOW: Duration = Duration::from_secs(10);

// pairgate's own (docs/PROTOCOL.md marks them).

/// Longest time any option may set (100 years, in ms): a deadline this far
/// from now still exists; a larger one would overflow and panic.
pub const MAX_OPTION_MS: u64 = 100 * 365 * 86_400_000;

/// Link requests one account may have waiting for its phone's answer.
pub const MAX_PENDING_REQUESTS: usize = 8;
/// Longest `device_name` kept, in characters.
pub const MAX_DEVICE_NAME_CHARS: usize = 100;
/// Longest User-Agent kept, in bytes.
pub const MAX_USER_AGENT_BYTES: usize = 512;
/// `Retry-After` (seconds) of an upgrade refused for the node's socket cap
/// or a drain: another node, or this one a moment later, will take it.
pub const RETRY_AFTER_FULL_SECS: u32 = 5;
/// `Retry-After` (seconds) of an upgrade refused for the per-IP cap.
pub const RETRY_AFTER_PER_IP_SECS: u32 = 30;
