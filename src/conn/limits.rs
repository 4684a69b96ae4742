//! Per-socket rate limits: frames per second, error replies per second, and
//! the rate_limited count that ends a socket (4029).

use std::collections::VecDeque;
use std::time::Instant;

use crate::contract::{
    ERROR_BURST_SECONDS, FRAME_BURST_SECONDS, RATE_LIMITED_TO_CLOSE, RATE_LIMITED_WINDOW,
};

/// A token bucket: `rate` tokens a second, holding at most `burst`.
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    pub fn new(rate: u32, burst: u32) -> Self {
        Bucket {
            rate: f64::from(rate),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            refilled: Instant::now(),
        }
    }

    /// Takes one token; `false` when the bucket is empty.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub struct Limits {
    pub frames: Bucket,
    pub errors: Bucket,
    rate_limited: VecDeque<Instant>,
}

impl Limits {
    pub fn new(frames_per_sec: u32, errors_per_sec: u32) -> Self {
        Limits {
            frames: Bucket::new(
                frames_per_sec,
                frames_per_sec.saturating_mul(FRAME_BURST_SECONDS),
            ),
            errors: Bucket::new(
                errors_per_sec,
                errors_per_sec.saturating_mul(ERROR_BURST_SECONDS),
            ),
            // Allocated only if the socket is ever rate limited.
            rate_limited: VecDeque::new(),
        }
    }

    /// Records one `rate_limited` reply; `true` when the socket must now close.
    pub fn note_rate_limited(&mut self, now: Instant) -> bool {
        while self
            .rate_limited
            .front()
            .is_some_and(|t| now.duration_since(*t) >= RATE_LIMITED_WINDOW)
        {
            self.rate_limited.pop_front();
        }
        self.rate_limited.push_back(now);
        self.rate_limited.len() >= RATE_LIMITED_TO_CLOSE
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10, 20);
        assert!((0..20).all(|_| b.take(t0)));
        assert!(!b.take(t0));
        assert!(b.take(t0 + Duration::from_millis(150)));
    }

    #[test]
    fn twentieth_rate_limited_closes() {
        let t0 = Instant::now();
        let mut l = Limits::new(1, 1);
        assert!(!(0..19).any(|_| l.note_rate_limited(t0)));
        assert!(l.note_rate_limited(t0));
        let mut l = Limits::new(1, 1);
        for i in 0..19 {
            l.note_rate_limited(t0 + Duration::from_secs(i));
        }
        assert!(!l.note_rate_limited(t0 + Duration::from_secs(30)));
    }
}
