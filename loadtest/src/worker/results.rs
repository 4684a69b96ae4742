//! The worker's final numbers and the per-account loss checks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::ctx::{Account, Ctx, HIST_NAMES};
use crate::wire::{WorkerResult, encode_histogram};

/// The final numbers and the loss checks.
pub fn finish(ctx: &Ctx, accounts: &[Arc<Account>]) -> WorkerResult {
    let c = &ctx.c;
    let g = |a: &AtomicU64| a.load(Relaxed);
    let mut counts = BTreeMap::new();
    let mut put = |k: &str, v: u64| {
        counts.insert(k.to_owned(), v);
    };
    put("send_errors_web", g(&c.err_web));
    put("send_errors_phone", g(&c.err_phone));
    put(
        "unacked_web",
        g(&c.sent_web).saturating_sub(g(&c.acked_web) + g(&c.err_web)),
    );
    put(
        "unacked_phone",
        g(&c.sent_phone).saturating_sub(g(&c.acked_phone) + g(&c.err_phone)),
    );
    put("window_sent_web", g(&c.win_sent_web));
    put("window_sent_phone", g(&c.win_sent_phone));
    put("window_recv_phone", g(&c.win_recv_phone));
    put("window_recv_web", g(&c.win_recv_web));
    put("behind_schedule_web", g(&c.behind_web));
    put("behind_schedule_phone", g(&c.behind_phone));
    put("out_of_order", g(&c.out_of_order));
    put("session_online_events", g(&c.session_online));
    put("session_offline_events", g(&c.session_offline));
    put("phone_status_offline", g(&c.phone_status_offline));
    let (mut lost_w2p, mut extra_w2p, mut lost_p2w, mut extra_p2w, mut bad) = (0, 0, 0, 0, 0);
    let mut delivered = 0;
    let mut webs_linked = 0;
    for a in accounts {
        let (acked, got) = (g(&a.web_acked), g(&a.phone_got));
        let (deliv, webs_got) = (g(&a.phone_delivered), g(&a.webs_got));
        lost_w2p += acked.saturating_sub(got);
        extra_w2p += got.saturating_sub(acked);
        lost_p2w += deliv.saturating_sub(webs_got);
        extra_p2w += webs_got.saturating_sub(deliv);
        bad += u64::from(acked != got || deliv != webs_got);
        delivered += deliv;
        webs_linked += a.webs.load(Relaxed) as u64;
    }
    put("lost_web_to_phone", lost_w2p);
    put("unexpected_web_to_phone", extra_w2p);
    put("lost_phone_to_web", lost_p2w);
    put("unexpected_phone_to_web", extra_p2w);
    put("unbalanced_accounts", bad);
    put("phone_delivered_total", delivered);
    put("webs_linked", webs_linked);
    let histograms = ctx
        .hists
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .zip(HIST_NAMES)
        .map(|(h, name)| (name.to_owned(), encode_histogram(h)))
        .collect();
    let (failures, failure_samples) = ctx
        .failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    WorkerResult {
        totals: ctx.snapshot(),
        counts,
        errors: ctx.errors.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        failures,
        failure_samples,
        histograms,
        logout_intervals: std::mem::take(
            &mut *ctx
                .logout_intervals
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        ),
    }
}
