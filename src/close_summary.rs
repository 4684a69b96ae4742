//! One info line a minute, and one at shutdown, counting the sockets the
//! gateway closed by close code: enough to see a wave of 4030s or 4029s in the
//! log without a line per socket (each close is at debug, with its account,
//! session and role).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::gateway::Gateway;
use crate::metrics::Metrics;

const EVERY: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct CloseSummary {
    /// The counts at the last line written.
    logged: Mutex<HashMap<&'static str, u64>>,
}

impl CloseSummary {
    /// Logs the closes since the last line, if there were any.
    pub fn log(&self, metrics: &Metrics, period: &str) {
        let now = metrics.closes_by_code();
        let mut logged = self.logged.lock();
        let since: Vec<String> = now
            .iter()
            .filter_map(|(code, n)| {
                let new = n - logged.get(code).copied().unwrap_or(0);
                (new > 0).then(|| format!("{code}={new}"))
            })
            .collect();
        *logged = now.into_iter().collect();
        drop(logged);
        if !since.is_empty() {
            tracing::info!(closes = %since.join(" "), "sockets closed {period}");
        }
    }
}

/// The minute-by-minute lines, until shutdown; the caller writes the last.
pub fn spawn(gw: &Arc<Gateway>) -> Arc<CloseSummary> {
    let summary = Arc::new(CloseSummary::default());
    let (gw2, summary2) = (gw.clone(), summary.clone());
    gw.tasks.spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = gw2.shutdown.cancelled() => return,
            }
            summary2.log(&gw2.metrics, "in the last minute");
        }
    });
    summary
}
