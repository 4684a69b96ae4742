//! The link-miss limiters: a phone whose `link`s name unknown refs or codes
//! too often (guessing codes) is refused for a while, per account
//! ([`LinkMisses`]); and failed `link`s by code of all accounts together
//! (`--max-link-misses-per-min`, [`GlobalMisses`]), against an attacker who
//! guesses with many accounts. In cluster mode the global count lives in
//! Redis (`cluster/misses.rs`).

use std::collections::VecDeque;
use std::time::Instant;

use parking_lot::Mutex;

use crate::contract::{LINK_MISS_WINDOW, LINK_MISSES_PER_WINDOW};

/// Times of failed `link`s within the last `LINK_MISS_WINDOW`.
#[derive(Default)]
pub struct LinkMisses(VecDeque<Instant>);

impl LinkMisses {
    /// Forgets misses older than the window; `false` if the account already
    /// missed as often as the window allows.
    pub fn allows(&mut self, now: Instant) -> bool {
        while self
            .0
            .front()
            .is_some_and(|t| now.duration_since(*t) >= LINK_MISS_WINDOW)
        {
            self.0.pop_front();
        }
        self.0.len() < LINK_MISSES_PER_WINDOW
    }

    pub fn note(&mut self, now: Instant) {
        self.0.push_back(now);
    }

    /// No miss within the window: the account need not be kept for them.
    pub fn is_quiet(&self) -> bool {
        self.0
            .back()
            .is_none_or(|t| t.elapsed() >= LINK_MISS_WINDOW)
    }
}

/// Seconds in the sliding window of [`GlobalMisses`].
const WINDOW_SECS: u64 = LINK_MISS_WINDOW.as_secs();

/// Failed `link`s by code per second over the last minute, all accounts
/// together: 60 counters, so its memory is fixed however many miss.
pub struct GlobalMisses {
    limit: u32,
    epoch: Instant,
    /// Per slot: the second (since `epoch`) it counts, and its misses.
    buckets: Mutex<[(u64, u32); WINDOW_SECS as usize]>,
}

impl GlobalMisses {
    /// `limit` 0: no limit.
    pub fn new(limit: u32) -> Self {
        GlobalMisses {
            limit,
            epoch: Instant::now(),
            buckets: Mutex::new([(u64::MAX, 0); WINDOW_SECS as usize]),
        }
    }

    fn sec(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    /// Misses within the sliding minute ending at `now`.
    pub fn count(&self, now: Instant) -> u64 {
        let sec = self.sec(now);
        self.buckets
            .lock()
            .iter()
            .filter(|(s, _)| *s != u64::MAX && *s <= sec && sec - *s < WINDOW_SECS)
            .map(|(_, n)| u64::from(*n))
            .sum()
    }

    /// Whether every `link` by code is refused now.
    pub fn is_full(&self, now: Instant) -> bool {
        self.limit != 0 && self.count(now) >= u64::from(self.limit)
    }

    pub fn note(&self, now: Instant) {
        if self.limit == 0 {
            return;
        }
        let sec = self.sec(now);
        let mut buckets = self.buckets.lock();
        let slot = &mut buckets[(sec % WINDOW_SECS) as usize];
        if slot.0 != sec {
            *slot = (sec, 0);
        }
        slot.1 = slot.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn misses_refuse_within_the_window_and_are_forgotten_after_it() {
        let mut misses = LinkMisses::default();
        let start = Instant::now();
        for _ in 0..LINK_MISSES_PER_WINDOW {
            assert!(misses.allows(start));
            misses.note(start);
        }
        assert!(!misses.allows(start));
        assert!(!misses.is_quiet());
        assert!(misses.allows(start + LINK_MISS_WINDOW));
    }

    #[test]
    fn global_misses_slide_over_a_minute() {
        let global = GlobalMisses::new(3);
        let t = Instant::now();
        global.note(t);
        global.note(t + Duration::from_secs(30));
        assert!(!global.is_full(t + Duration::from_secs(30)));
        global.note(t + Duration::from_secs(59));
        assert!(global.is_full(t + Duration::from_secs(59)));
        // the first miss left the window
        assert!(!global.is_full(t + Duration::from_secs(61)));
        assert_eq!(global.count(t + Duration::from_secs(200)), 0);
    }

    /// 100,000 misses: the count is fixed-size, and back to zero after the
    /// window.
    #[test]
    fn a_flood_of_misses_leaves_nothing_behind() {
        let global = GlobalMisses::new(600);
        let t = Instant::now();
        for i in 0..100_000u64 {
            global.note(t + Duration::from_millis(i / 2));
        }
        let end = t + Duration::from_millis(50_000);
        assert!(global.is_full(end));
        assert!(std::mem::size_of_val(&*global.buckets.lock()) <= 60 * 16);
        assert_eq!(global.count(end + LINK_MISS_WINDOW), 0);
        assert!(!GlobalMisses::new(0).is_full(end), "0 is off");
    }
}
