//! A log line that a flood would repeat (a refused upgrade, a failed accept)
//! is written at most once per interval, and carries how many events it
//! stands for: none is dropped without being counted. Shared by whoever logs
//! per request; lock-free, so a flood of requests on many threads does not
//! queue on it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// At most one line per `every`; each line carries the events since the
/// previous one.
pub struct LogThrottle {
    every_ms: u64,
    /// When the throttle was made: the times below count from it.
    epoch: Instant,
    /// Milliseconds after `epoch` of the last line, plus one (0: no line yet).
    last: AtomicU64,
    /// Events not carried by a line yet.
    unlogged: AtomicU64,
}

impl LogThrottle {
    pub fn new(every: Duration) -> Self {
        LogThrottle {
            every_ms: every.as_millis().max(1) as u64,
            epoch: Instant::now(),
            last: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
        }
    }

    /// Counts one event. `Some(n)` when a line is due now: it stands for
    /// `n` events (this one and those since the last line); `None` when not,
    /// and the event is carried by the next line.
    pub fn note(&self) -> Option<u64> {
        self.note_at(Instant::now())
    }

    fn note_at(&self, now: Instant) -> Option<u64> {
        self.unlogged.fetch_add(1, Ordering::Relaxed);
        let at = now.saturating_duration_since(self.epoch).as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && at.saturating_sub(last) < self.every_ms {
            return None;
        }
        // One thread wins the line; the others' events stay counted for it
        // (if they were added before its swap) or for the next.
        self.last
            .compare_exchange(last, at, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        Some(self.unlogged.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn one_line_per_interval_carrying_the_events_in_between() {
        let t = LogThrottle::new(SEC);
        let t0 = t.epoch;
        assert_eq!(t.note_at(t0), Some(1), "the first event is logged at once");
        for ms in [1, 10, 500, 999] {
            assert_eq!(t.note_at(t0 + Duration::from_millis(ms)), None);
        }
        // The line a second later stands for the four held back, and itself.
        assert_eq!(t.note_at(t0 + SEC), Some(5));
        assert_eq!(t.note_at(t0 + SEC + Duration::from_millis(1)), None);
        // After a quiet spell, the next event is logged at once and carries
        // the one held back before it.
        assert_eq!(t.note_at(t0 + 60 * SEC), Some(2));
        assert_eq!(t.note_at(t0 + 61 * SEC), Some(1));
    }

    #[test]
    fn no_event_is_lost_between_threads() {
        let t = Arc::new(LogThrottle::new(Duration::from_millis(5)));
        let t0 = t.epoch;
        let (threads, each) = (4u64, 5_000u64);
        let logged: u64 = (0..threads)
            .map(|i| {
                let t = t.clone();
                std::thread::spawn(move || {
                    (0..each)
                        .filter_map(|n| t.note_at(t0 + Duration::from_millis(n / 100 + i)))
                        .sum::<u64>()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        // Whatever no line carried yet, the next line does.
        let last = t.note_at(t0 + 3600 * SEC).expect("a line after an hour");
        assert_eq!(logged + last, threads * each + 1);
    }
}
