//! The clock every load-test process reads: `CLOCK_MONOTONIC`, in ns.
//!
//! On Linux this clock is one for the whole machine (it counts from boot and
//! is never stepped by NTP), so a send time one worker process puts in a
//! message body can be subtracted from the receipt time another worker
//! process reads: relay latency is computed in the receiving process. The
//! parent fixes the phases' instants (relay window, logout_all release) on it
//! too. All load-test processes must run on the same machine.

use std::time::Duration;

use tokio::time::Instant;

/// `CLOCK_MONOTONIC` in ns: shared by every process on this machine.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC
    // is always available on Linux.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The tokio instant at which the shared clock reads `ns` (now, if it is past).
pub fn instant_at(ns: u64) -> Instant {
    Instant::now() + Duration::from_nanos(ns.saturating_sub(now_ns()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_forward_and_maps_to_instants() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
        let at = instant_at(a + 50_000_000);
        assert!(at > Instant::now() + Duration::from_millis(10));
    }
}
