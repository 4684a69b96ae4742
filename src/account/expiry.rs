//! Sessions ending by time: an ephemeral session's grace after its socket
//! left, and the idle sweep over every account.

use std::sync::Arc;
use std::time::Duration;

use super::sessions::{remove, touch};
use crate::gateway::Gateway;
use crate::protocol::RemovedReason;
use crate::time::now_ms;

/// How stale the stored last-active time of an online session may get (at
/// most a quarter of the idle limit).
const ACTIVE_REFRESH: Duration = Duration::from_secs(3600);
/// Idle expiry runs at least this often.
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

impl Gateway {
    /// Ends an ephemeral session `after` from now, unless it was resumed
    /// (its epoch moved on) in the meantime.
    pub fn start_grace(
        self: &Arc<Self>,
        account: &str,
        session_id: &str,
        epoch: u64,
        after: Duration,
    ) {
        let gw = self.clone();
        let (account, session_id) = (account.to_owned(), session_id.to_owned());
        self.tasks.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(after) => {}
                _ = gw.shutdown.cancelled() => return,
            }
            let removal = gw.hub.with_existing(&account, |state| {
                let s = state.sessions.get(&session_id)?;
                if s.live.is_some() || s.epoch != epoch {
                    return None;
                }
                remove(&gw.store, state, &session_id)
            });
            if let Some(Some(removal)) = removal {
                tracing::info!(%account, %session_id, "ephemeral session expired");
                let _ = gw
                    .finish_removal(&account, removal, RemovedReason::Expired)
                    .await;
            }
        });
    }

    /// Removes sessions without a live socket that were last active longer
    /// than the idle limit ago.
    ///
    /// Also re-stores the last-active time of sessions that have been online
    /// for a while, so that after a crash a session that was online then is
    /// not taken for one idle since it came online.
    pub async fn sweep_idle(&self, idle: Duration) {
        let now = now_ms();
        let cutoff = now - idle.as_millis() as i64;
        let refresh_before = now - (idle / 4).min(ACTIVE_REFRESH).as_millis() as i64;
        for account in self.hub.account_ids() {
            let removed = self.hub.with_existing(&account, |state| {
                for s in state.sessions.values_mut() {
                    if s.live.is_some() && s.record.last_active_at_ms < refresh_before {
                        touch(&self.store, s);
                    }
                }
                let stale: Vec<String> = state
                    .sessions
                    .values()
                    .filter(|s| s.live.is_none() && s.record.last_active_at_ms < cutoff)
                    .map(|s| s.record.session_id.clone())
                    .collect();
                stale
                    .iter()
                    .filter_map(|sid| remove(&self.store, state, sid))
                    .collect::<Vec<_>>()
            });
            for removal in removed.unwrap_or_default() {
                tracing::info!(%account, session_id = %removal.0.record.session_id, "idle session expired");
                let _ = self
                    .finish_removal(&account, removal, RemovedReason::Expired)
                    .await;
            }
        }
    }

    /// Runs `sweep_idle` at least every half of the idle time (and every
    /// minute) until shutdown.
    pub fn spawn_idle_sweeper(self: &Arc<Self>, idle: Duration) {
        let every = (idle / 2)
            .min(MAX_SWEEP_INTERVAL)
            .max(Duration::from_millis(10));
        let gw = self.clone();
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => gw.sweep_idle(idle).await,
                    _ = gw.shutdown.cancelled() => return,
                }
            }
        });
    }
}
