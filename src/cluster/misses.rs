//! `--max-link-misses-per-min` across the cluster: failed `link`s by code
//! counted per second in Redis (`INCR` on `pg:{misses}:<unix second>`, which
//! expires after the minute), summed over the last 60 seconds with one `MGET`
//! (the keys share a hash tag, so one slot on a Redis Cluster).
//!
//! A hit far under the limit stays off Redis: each node keeps the last sum
//! it read (after each miss it counts, and at most once a second otherwise)
//! and, while that is below half the limit, trusts it for a second. From half
//! the limit on, every `link` by code reads the sum (one `MGET`), so the
//! limit holds exactly once it matters; a hit then costs one round trip.

use std::time::{Duration, Instant};

use super::{Cluster, keys};
use crate::contract::LINK_MISS_WINDOW;
use crate::protocol::ErrorCode;

/// How old the last read sum may be before a `link` by code reads again.
const FRESH_FOR: Duration = Duration::from_secs(1);

fn window_keys(now_sec: u64) -> Vec<String> {
    let secs = LINK_MISS_WINDOW.as_secs();
    (0..secs)
        .map(|i| keys::link_misses(now_sec.saturating_sub(i)))
        .collect()
}

fn unix_secs() -> u64 {
    (crate::time::now_ms().max(0) / 1000) as u64
}

/// The last sum this node read, and when.
#[derive(Default)]
pub struct SeenMisses(parking_lot::Mutex<Option<(Instant, u64)>>);

impl Cluster {
    /// Whether the cluster's misses of the last minute reached `limit`.
    pub async fn link_misses_full(&self, limit: u32) -> Result<bool, ErrorCode> {
        let cached = *self.seen_misses.0.lock();
        // Far below the limit a second-old sum is good enough; nearer it,
        // every `link` by code reads the cluster's count.
        let sum = match cached {
            Some((at, sum)) if at.elapsed() < FRESH_FOR && sum * 2 < u64::from(limit) => sum,
            _ => self.read_misses().await?,
        };
        Ok(sum >= u64::from(limit))
    }

    /// Counts one failed `link` by code, cluster-wide.
    pub async fn note_link_miss(&self) -> Result<(), ErrorCode> {
        let now = unix_secs();
        let key = keys::link_misses(now);
        let mut cmd = self.cmd.clone();
        redis::cmd("INCR")
            .arg(&key)
            .query_async::<u64>(&mut cmd)
            .await
            .map_err(|_| ErrorCode::Unavailable)?;
        // Outlives the window by a margin for clocks a little apart.
        redis::cmd("EXPIRE")
            .arg(&key)
            .arg(LINK_MISS_WINDOW.as_secs() * 2)
            .query_async::<()>(&mut cmd)
            .await
            .map_err(|_| ErrorCode::Unavailable)?;
        self.read_misses().await.map(|_| ())
    }

    async fn read_misses(&self) -> Result<u64, ErrorCode> {
        let mut cmd = self.cmd.clone();
        let counts: Vec<Option<u64>> = redis::cmd("MGET")
            .arg(window_keys(unix_secs()))
            .query_async(&mut cmd)
            .await
            .map_err(|_| ErrorCode::Unavailable)?;
        let sum = counts.into_iter().flatten().sum();
        *self.seen_misses.0.lock() = Some((Instant::now(), sum));
        Ok(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_the_last_sixty_seconds_in_one_slot() {
        let keys = window_keys(1_000);
        assert_eq!(keys.len(), 60);
        assert_eq!(keys[0], "pg:{misses}:1000");
        assert_eq!(keys[59], "pg:{misses}:941");
    }
}
