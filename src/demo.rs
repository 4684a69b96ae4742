//! The demo (`--demo`): `POST /demo/phone` mints a phone token for a fresh
//! throw-away account so a person can try pairing without an identity
//! service, and `/phone` serves the demo phone page. Without `--demo`,
//! `/phone` explains what stands in for a phone instead.
//!
//! Minting is limited per client address (IPv6 per /64) and for the whole
//! node per minute: 2,000 loopback addresses once minted 2,000 tokens in
//! 0.6 s, each the key to a new account.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::ip_rate::IpRate;

/// Demo tokens per client address per minute.
pub const TOKENS_PER_IP_PER_MINUTE: u32 = 10;
/// Demo tokens per node per minute, all addresses together.
pub const TOKENS_PER_MINUTE: u32 = 120;
/// How long a demo phone token lives.
pub const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
const MINUTE: Duration = Duration::from_secs(60);

/// Why a demo token was not minted.
#[derive(Debug, PartialEq, Eq)]
pub enum Limited {
    ThisAddress,
    Everyone,
}

pub struct DemoTokens {
    per_ip: IpRate,
    /// The node-wide window: when it started and the tokens in it.
    global: Mutex<(Instant, u32)>,
    global_limit: u32,
}

impl Default for DemoTokens {
    fn default() -> Self {
        Self::new(TOKENS_PER_IP_PER_MINUTE, TOKENS_PER_MINUTE)
    }
}

impl DemoTokens {
    pub fn new(per_ip: u32, global: u32) -> Self {
        DemoTokens {
            per_ip: IpRate::new(per_ip, MINUTE),
            global: Mutex::new((Instant::now(), 0)),
            global_limit: global,
        }
    }

    /// Counts one token for `ip`: the address's budget first (so one
    /// address cannot spend everybody's), then the node's.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> Result<(), Limited> {
        if !self.per_ip.allow(ip, now) {
            return Err(Limited::ThisAddress);
        }
        let mut g = self.global.lock();
        if now.saturating_duration_since(g.0) >= MINUTE {
            *g = (now, 0);
        }
        if g.1 >= self.global_limit {
            return Err(Limited::Everyone);
        }
        g.1 += 1;
        Ok(())
    }

    pub fn sweep(&self, now: Instant) {
        self.per_ip.sweep(now);
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.per_ip.len()
    }
}

#[cfg(test)]
mod tests {

    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn per_address_then_global() {
        let demo = DemoTokens::new(2, 5);
        let t = Instant::now();
        let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(demo.allow(a, t), Ok(()));
        assert_eq!(demo.allow(a, t), Ok(()));
        assert_eq!(demo.allow(a, t), Err(Limited::ThisAddress));
        for i in 2..5 {
            assert_eq!(
                demo.allow(IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)), t),
                Ok(())
            );
        }
        assert_eq!(
            demo.allow(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)), t),
            Err(Limited::Everyone)
        );
        assert_eq!(
            demo.allow(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)), t + MINUTE),
            Ok(())
        );
    }

    #[test]
    fn ipv6_addresses_of_one_64_share_a_budget() {
        let demo = DemoTokens::new(2, 1000);
        let t = Instant::now();
        for i in 0..2u16 {
            let ip = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, i, 0, 0, 1));
            assert_eq!(demo.allow(ip, t), Ok(()));
        }
        let other = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 7, 7, 7, 7));
        assert_eq!(demo.allow(other, t), Err(Limited::ThisAddress));
    }

    /// 100,000 addresses asking: bounded, and empty after the window.
    #[test]
    fn a_flood_of_addresses_drains_to_nothing() {
        let demo = DemoTokens::default();
        let t = Instant::now();
        for i in 0..100_000u32 {
            let _ = demo.allow(IpAddr::V4(Ipv4Addr::from(i)), t);
        }
        assert!(demo.tracked() <= crate::ip_rate::MAX_KEYS);
        demo.sweep(t + MINUTE);
        assert_eq!(demo.tracked(), 0);
    }
}
