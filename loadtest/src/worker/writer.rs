//! The sending half of a socket during the relay: flat out (a window of
//! sends in flight) or at a fixed rate (sends on a schedule).
//!
//! Every send is a `ClientFrame::Send` encoded by `pairgate_protocol` (the
//! one client-frame encoder); its body is `{"t":T,"s":SEQ,"p":PADDING}` and
//! its id is T in decimal, so an ack's latency needs no lookup table and a
//! receiver in another process computes relay latency from T (both read
//! [`crate::clock`]).
//!
//! - **At a rate** (open loop): send k of a socket is *scheduled* at
//!   `first + k x period`, and T is that scheduled instant, not the moment
//!   the frame went out. A send held back (by the in-flight cap, a slow
//!   flush, a busy thread) goes out late, and its lateness counts in every
//!   latency measured from T: no coordinated omission. Sends that fell so
//!   far behind that the window closed before they went out are counted
//!   (`behind_schedule_*`) and shown beside sent/s. Sends wait on
//!   [`super::timer`] (not tokio's millisecond timer); how late the load test
//!   itself sent each frame is the `send_lag` histogram.
//! - **Flat out** (closed loop): each socket keeps `--in-flight` sends
//!   outstanding; T is when the batch went out. Latency is then what the
//!   queue depth makes it; the figure to read is throughput.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use futures::SinkExt;
use futures::stream::SplitSink;
use pairgate_client::Socket;
use pairgate_protocol::ClientFrame;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::time::sleep_until;
use tokio_tungstenite::tungstenite::Message;

use super::ctx::{Ctx, H, Res, Role, Window, fail};
use super::socket::sample;
use crate::clock::{instant_at, now_ns};

/// A send scheduled this close to the window's end may miss it by timer
/// granularity alone: it does not count as behind schedule.
const BEHIND_SLOP_NS: u64 = 10_000_000;

/// The body of every relayed message.
#[derive(Serialize)]
struct SendBody<'a> {
    /// Send time: scheduled (at a rate) or actual (flat out), [`crate::clock`] ns.
    t: u64,
    /// The sender's sequence number, for the order check.
    s: u64,
    /// Padding up to `--msg-size`.
    p: &'a str,
}

/// The sending half of one socket during the relay.
pub struct Writer<'a> {
    pub ctx: Arc<Ctx>,
    pub role: Role,
    pub window: Window,
    pub permits: &'a Semaphore,
    /// Sending on a schedule (`--rate`), not flat out.
    pub at_rate: bool,
    /// `send_lag` samples, recorded in batches.
    pub samples: Vec<(H, u64)>,
}

impl Writer<'_> {
    pub async fn run(&mut self, sink: &mut SplitSink<Socket, Message>) -> Res<()> {
        let rate = self.ctx.cfg.per_socket_rate;
        let result = if self.at_rate {
            self.at_rate(sink, rate).await
        } else {
            self.flat_out(sink).await
        };
        self.ctx.record_batch(&mut self.samples);
        result
    }

    /// Open loop: sends on a schedule, each stamped with its scheduled time.
    async fn at_rate(&mut self, sink: &mut SplitSink<Socket, Message>, rate: f64) -> Res<()> {
        let w = self.window;
        let end = instant_at(w.end_ns);
        let period = ((1e9 / rate) as u64).max(1);
        // A random phase keeps sockets from sending in lockstep.
        let mut next = w.start_ns + (period as f64 * rand::random::<f64>()) as u64;
        let mut seq = 0u64;
        let mut batch = Vec::new();
        while next < w.end_ns {
            self.ctx.timer.at(next).await;
            // The cap on sends in flight: waiting here makes the send late,
            // and its lateness is measured (its time stays `next`).
            let permit = tokio::select! {
                p = self.permits.acquire() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = sleep_until(end) => break,
            };
            permit.forget();
            // Every send already due goes out in this batch (one flush).
            batch.clear();
            batch.push(next);
            next += period;
            let now = now_ns();
            while next <= now && next < w.end_ns {
                let Ok(p) = self.permits.try_acquire() else {
                    break;
                };
                p.forget();
                batch.push(next);
                next += period;
            }
            if !self.send_batch(sink, &batch, &mut seq).await? {
                break;
            }
        }
        // Scheduled inside the measured window (up to the timer's slop
        // before its end) but never sent.
        let from = next.max(w.warm_ns);
        let until = w.end_ns.saturating_sub(BEHIND_SLOP_NS);
        if from < until {
            let missed = (until - from).div_ceil(period);
            let c = &self.ctx.c;
            match self.role {
                Role::Web => c.behind_web.fetch_add(missed, Relaxed),
                Role::Phone => c.behind_phone.fetch_add(missed, Relaxed),
            };
        }
        Ok(())
    }

    /// Closed loop: keep `in_flight` sends outstanding; whatever the acks
    /// freed goes out in one batch with one flush.
    async fn flat_out(&mut self, sink: &mut SplitSink<Socket, Message>) -> Res<()> {
        let end = instant_at(self.window.end_ns);
        sleep_until(instant_at(self.window.start_ns)).await;
        let mut seq = 0u64;
        let mut batch = Vec::new();
        loop {
            let permit = tokio::select! {
                p = self.permits.acquire() => match p {
                    Ok(p) => p,
                    Err(_) => return Ok(()),
                },
                _ = sleep_until(end) => return Ok(()),
            };
            permit.forget();
            let mut n = 1;
            while let Ok(p) = self.permits.try_acquire() {
                p.forget();
                n += 1;
            }
            // +i keeps the ids (send times) distinct within a batch.
            let t = now_ns();
            batch.clear();
            batch.extend((0..n).map(|i| t + i));
            if !self.send_batch(sink, &batch, &mut seq).await? {
                return Ok(());
            }
        }
    }

    /// Feeds one send per time in `times` and flushes once; `false` (and the
    /// permits back) once the window has closed.
    async fn send_batch(
        &mut self,
        sink: &mut SplitSink<Socket, Message>,
        times: &[u64],
        seq: &mut u64,
    ) -> Res<bool> {
        let n = times.len();
        let now = now_ns();
        if now >= self.window.end_ns {
            self.permits.add_permits(n);
            return Ok(false);
        }
        for &t in times {
            *seq += 1;
            let body = serde_json::value::to_raw_value(&SendBody {
                t,
                s: *seq,
                p: &self.ctx.pad,
            })
            .map_err(fail("internal"))?;
            let id = t.to_string();
            let frame = ClientFrame::Send {
                body: &body,
                to: None,
            }
            .to_text(Some(&id));
            sink.feed(Message::text(frame))
                .await
                .map_err(fail("send_failed"))?;
            if self.at_rate && self.window.measures(t) {
                // How late the load test itself sent it (timer granularity,
                // a busy thread, the in-flight cap): part of every latency
                // measured from the scheduled time.
                let lag = now.saturating_sub(t) / 1000;
                sample(&mut self.samples, &self.ctx, H::SendLag, lag);
            }
        }
        let c = &self.ctx.c;
        let (sent, win) = match self.role {
            Role::Web => (&c.sent_web, &c.win_sent_web),
            Role::Phone => (&c.sent_phone, &c.win_sent_phone),
        };
        sent.fetch_add(n as u64, Relaxed);
        // What went out inside the measured window, by when it went out (at a
        // rate, sends scheduled in the warm-up may go out in the window).
        if self.window.measures(now) {
            win.fetch_add(n as u64, Relaxed);
        }
        sink.flush().await.map_err(fail("send_failed"))?;
        Ok(true)
    }
}
