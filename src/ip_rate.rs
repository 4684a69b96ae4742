//! A per-client-IP rate limit over a fixed window (N per minute), shared by
//! the demo token route and `--max-pairs-per-ip-per-min`.
//!
//! The map is keyed by client input, so it is bounded and shrinks: an entry
//! lives one window after its first hit; expired entries are swept at most
//! once a window on use and by the gateway's sweeper when idle, so an idle
//! map comes back to empty. Past `max_keys` live addresses, a new address is
//! refused until entries expire: an attacker holding that many addresses
//! cannot grow the map, only deny the new ones for a window.
//!
//! IPv6 addresses count per /64: one host usually holds a whole /64, so
//! counting single addresses would let it mint 2^64 budgets.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Live addresses one limiter tracks at most.
pub const MAX_KEYS: usize = 65_536;

/// The key an address counts under: IPv4 (and IPv4-mapped) as is, IPv6 per /64.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

pub struct IpRate {
    limit: u32,
    window: Duration,
    max_keys: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    /// Per key: when its window started and the hits in it.
    map: HashMap<IpAddr, (Instant, u32)>,
    last_sweep: Instant,
    /// No entry's window started before this: a full map is swept only
    /// once something in it can have expired (a sweep per refused
    /// address would make a flood quadratic).
    oldest: Instant,
}

impl IpRate {
    /// `limit` hits per `window` per address; `limit` 0 allows everything
    /// and tracks nothing.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self::with_max_keys(limit, window, MAX_KEYS)
    }

    pub fn with_max_keys(limit: u32, window: Duration, max_keys: usize) -> Self {
        IpRate {
            limit,
            window,
            max_keys,
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                last_sweep: Instant::now(),
                oldest: Instant::now(),
            }),
        }
    }

    /// Counts one hit by `ip`; `false` when it is beyond the limit.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        if self.limit == 0 {
            return true;
        }
        let key = ip_key(ip);
        let mut inner = self.inner.lock();
        if now.saturating_duration_since(inner.last_sweep) >= self.window {
            inner.sweep(now, self.window);
        }
        if !inner.map.contains_key(&key) && inner.map.len() >= self.max_keys {
            if now.saturating_duration_since(inner.oldest) < self.window {
                return false;
            }
            inner.sweep(now, self.window);
            if inner.map.len() >= self.max_keys {
                return false;
            }
        }
        if inner.map.is_empty() {
            inner.oldest = now;
        }
        let entry = inner.map.entry(key).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1 <= self.limit
    }

    /// Drops the entries whose window is over.
    pub fn sweep(&self, now: Instant) {
        self.inner.lock().sweep(now, self.window);
    }

    /// Addresses tracked now.
    pub fn len(&self) -> usize {
        self.inner.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn sweep(&mut self, now: Instant, window: Duration) {
        self.map
            .retain(|_, (start, _)| now.saturating_duration_since(*start) < window);
        self.oldest = self
            .map
            .values()
            .map(|(start, _)| *start)
            .min()
            .unwrap_or(now);
        // Give the memory of a flood back once it is over.
        if self.map.capacity() > 4 * self.map.len().max(64) {
            self.map.shrink_to_fit();
        }
        self.last_sweep = now;
    }
}

/// Runs `sweep` every `every` until `shutdown`: limiters empty while idle.
pub fn spawn_sweeper(
    tasks: &TaskTracker,
    shutdown: CancellationToken,
    every: Duration,
    sweep: impl Fn(Instant) + Send + 'static,
) {
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => sweep(Instant::now()),
                _ = shutdown.cancelled() => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn limit_per_address_per_window() {
        let rate = IpRate::new(3, MINUTE);
        let t = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(rate.allow(a, t));
        }
        assert!(!rate.allow(a, t));
        assert!(rate.allow(b, t), "another address has its own budget");
        assert!(rate.allow(a, t + MINUTE), "a new window");
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let rate = IpRate::new(2, MINUTE);
        let t = Instant::now();
        assert!(rate.allow("2001:db8:1:2::1".parse().unwrap(), t));
        assert!(rate.allow("2001:db8:1:2:ffff::9".parse().unwrap(), t));
        assert!(!rate.allow("2001:db8:1:2:abcd::".parse().unwrap(), t));
        assert!(rate.allow("2001:db8:1:3::1".parse().unwrap(), t));
        assert_eq!(
            ip_key("::ffff:192.0.2.7".parse().unwrap()),
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))
        );
    }

    #[test]
    fn zero_is_off_and_tracks_nothing() {
        let rate = IpRate::new(0, MINUTE);
        for i in 0..1000u32 {
            assert!(rate.allow(IpAddr::V4(Ipv4Addr::from(i)), Instant::now()));
        }
        assert!(rate.is_empty());
    }

    /// 100,000 distinct addresses: the map never holds more than its bound,
    /// refuses new ones when full, and is empty again after the window.
    #[test]
    fn a_flood_of_addresses_is_bounded_and_drains() {
        let rate = IpRate::with_max_keys(5, MINUTE, 50_000);
        let t = Instant::now();
        let mut refused = 0;
        for i in 0..100_000u32 {
            if !rate.allow(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), t) {
                refused += 1;
            }
            assert!(rate.len() <= 50_000);
        }
        assert_eq!(rate.len(), 50_000);
        assert_eq!(refused, 50_000, "beyond the bound new addresses wait");
        rate.sweep(t + MINUTE);
        assert!(rate.is_empty());
        // and on use too, without the sweeper
        let rate = IpRate::new(5, MINUTE);
        for i in 0..100_000u32 {
            rate.allow(IpAddr::V4(Ipv4Addr::from(i)), t);
        }
        assert_eq!(rate.len(), MAX_KEYS);
        assert!(rate.allow("192.0.2.1".parse().unwrap(), t + MINUTE));
        assert_eq!(rate.len(), 1);
    }
}
