//! The clock every load-test process shares.

use std::time::Duration;

use tokio::time::Instant;

/// Wall clock in ns since the UNIX epoch: the one clock every process shares,
/// so a timestamp put in a body by one process can be read by another.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The tokio instant at which the wall clock reads `ns`.
pub fn instant_at(ns: u64) -> Instant {
    Instant::now() + Duration::from_nanos(ns.saturating_sub(now_ns()))
}
