//! The link-miss limiter: a phone whose `link`s name unknown refs or codes
//! too often (guessing codes) is refused for a while, per account.

use std::collections::VecDeque;
use std::time::Instant;

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

#[cfg(test)]
mod tests {
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
}
