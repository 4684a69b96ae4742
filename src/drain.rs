//! Graceful drain (`--drain-ms`): on SIGTERM the node stops taking sockets at
//! once (`/readyz` 503, upgrades 503) and closes its live sockets 1012 spread
//! over the drain time, so their clients do not all reconnect elsewhere in
//! the same instant.
//!
//! Sockets are split into `WAVES` waves by connection id; each socket waits
//! on its wave's token, which costs it no more than waiting on the shutdown
//! token did. The drain cancels one wave per `drain_ms / WAVES`, in
//! bit-reversed order, so sockets opened one after another (consecutive ids)
//! land far apart in time. Every wave is a child of the shutdown token:
//! cancelling that closes whatever is left at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// A power of two, for the bit-reversed order.
const WAVES: usize = 64;
const WAVE_BITS: u32 = WAVES.trailing_zeros();

pub struct Drain {
    draining: AtomicBool,
    waves: Box<[CancellationToken]>,
}

impl Drain {
    pub fn new(shutdown: &CancellationToken) -> Self {
        Drain {
            draining: AtomicBool::new(false),
            waves: (0..WAVES).map(|_| shutdown.child_token()).collect(),
        }
    }

    /// Whether the node is draining (or shut down): it takes no new sockets.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Resolves when the socket `conn_id` is to close 1012.
    pub fn turn(&self, conn_id: u64) -> WaitForCancellationFuture<'_> {
        self.waves[conn_id as usize % WAVES].cancelled()
    }

    /// Marks the node draining at once, then closes the waves one by one
    /// over `over` (all at once when it is zero). Returns when the last
    /// wave's turn came.
    pub async fn run(&self, over: Duration) {
        self.draining.store(true, Ordering::Relaxed);
        let step = over / WAVES as u32;
        let start = tokio::time::Instant::now();
        for k in 0..WAVES {
            if !step.is_zero() {
                tokio::time::sleep_until(start + step * k as u32).await;
            }
            self.waves[wave_at(k)].cancel();
        }
    }
}

/// The wave closed at step `k`: `k` with its bits reversed.
fn wave_at(k: usize) -> usize {
    (k as u32)
        .reverse_bits()
        .wrapping_shr(u32::BITS - WAVE_BITS) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wave_closes_once_and_neighbours_far_apart() {
        let mut order: Vec<usize> = (0..WAVES).map(wave_at).collect();
        // consecutive ids (waves 0 and 1) close half the drain apart
        let step_of = |w: usize| order.iter().position(|&x| x == w).unwrap();
        assert_eq!(step_of(1).abs_diff(step_of(0)), WAVES / 2);
        order.sort_unstable();
        assert_eq!(order, (0..WAVES).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn draining_is_set_at_once_and_waves_close_in_their_turn() {
        let shutdown = CancellationToken::new();
        let drain = std::sync::Arc::new(Drain::new(&shutdown));
        let d = drain.clone();
        let start = tokio::time::Instant::now();
        let run = tokio::spawn(async move { d.run(Duration::from_millis(640)).await });
        tokio::task::yield_now().await;
        assert!(drain.is_draining());
        // wave 0 goes first; wave 1 (the next id) at step 32 of 64: never before
        drain.turn(0).await;
        drain.turn(1).await;
        assert!(start.elapsed() >= Duration::from_millis(320));
        run.await.unwrap();
        assert!(drain.waves.iter().all(|w| w.is_cancelled()));
    }

    #[test]
    fn shutdown_closes_every_wave() {
        let shutdown = CancellationToken::new();
        let drain = Drain::new(&shutdown);
        shutdown.cancel();
        assert!(drain.waves.iter().all(|w| w.is_cancelled()));
    }
}
