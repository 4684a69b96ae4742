//! Waiting for the wall clock. A few rules of the contract are about time
//! itself (a grace that passes while no gateway runs, a rate budget that
//! refills, two records that must get distinct millisecond stamps): there is
//! no event to wait for, only the clock to reach an instant computed from
//! what was observed. This is the one place that waits for it.

use std::time::Duration;

use time::OffsetDateTime;

/// Returns once the wall clock reads `t` or later (never more than `t` minus
/// now plus one millisecond); panics if `t` is more than a minute away.
pub async fn until_wall_clock(t: OffsetDateTime) {
    loop {
        let left = t - OffsetDateTime::now_utc();
        if left <= time::Duration::ZERO {
            return;
        }
        assert!(
            left < time::Duration::minutes(1),
            "waiting {left} for the clock: a test bug"
        );
        let left = Duration::try_from(left).unwrap_or_default();
        // Timers may fire a little early against the wall clock: loop.
        tokio::time::sleep(left.max(Duration::from_millis(1))).await;
    }
}

/// Returns once the wall clock is past the millisecond of `t` (a stamp the
/// gateway wrote), so a record made now gets a later millisecond stamp.
pub async fn until_next_millisecond(t: OffsetDateTime) {
    until_wall_clock(
        t.replace_millisecond(t.millisecond()).unwrap_or(t) + time::Duration::milliseconds(1),
    )
    .await
}

/// Returns once `d` has passed since `since` (a rate budget refilling).
pub async fn until_elapsed(since: std::time::Instant, d: Duration) {
    tokio::time::sleep_until((since + d).into()).await;
}
