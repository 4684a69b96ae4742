//! The sending half of a socket during the relay: flat out (a window of
//! sends in flight) or at a fixed rate (sends on a schedule).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures::SinkExt;
use futures::stream::SplitSink;
use pairgate::client::Socket;
use tokio::sync::Semaphore;
use tokio::time::{MissedTickBehavior, interval_at, sleep_until};
use tokio_tungstenite::tungstenite::Message;

use super::clock::{instant_at, now_ns};
use super::ctx::{Ctx, Res, Role, Window, fail};

/// The sending half of one socket during the relay.
pub struct Writer<'a> {
    pub ctx: Arc<Ctx>,
    pub role: Role,
    pub window: Window,
    pub permits: &'a Semaphore,
}

impl Writer<'_> {
    pub async fn run(&self, sink: &mut SplitSink<Socket, Message>) -> Res<()> {
        let start = instant_at(self.window.start_ns);
        let end = instant_at(self.window.end_ns);
        let rate = self.ctx.cfg.per_socket_rate;
        let mut seq = 0u64;
        if rate > 0.0 {
            // Open loop: sends are scheduled, not triggered by acks; the
            // in-flight cap only stops a hopeless backlog. A random phase
            // keeps sockets from sending in lockstep.
            let period = Duration::from_secs_f64(1.0 / rate);
            let first = start + period.mul_f64(rand::random::<f64>());
            let mut tick = interval_at(first, period);
            tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = sleep_until(end) => return Ok(()),
                }
                let permit = tokio::select! {
                    p = self.permits.acquire() => match p {
                        Ok(p) => p,
                        Err(_) => return Ok(()),
                    },
                    _ = sleep_until(end) => return Ok(()),
                };
                permit.forget();
                if !self.send_batch(sink, 1, &mut seq).await? {
                    return Ok(());
                }
            }
        }
        sleep_until(start).await;
        loop {
            // Flat out: keep `in_flight` sends outstanding; whatever the acks
            // freed goes out in one batch with one flush.
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
            if !self.send_batch(sink, n, &mut seq).await? {
                return Ok(());
            }
        }
    }

    /// Feeds `n` sends and flushes once; `false` once the window has closed.
    pub async fn send_batch(
        &self,
        sink: &mut SplitSink<Socket, Message>,
        n: usize,
        seq: &mut u64,
    ) -> Res<bool> {
        let t = now_ns();
        if t >= self.window.end_ns {
            self.permits.add_permits(n);
            return Ok(false);
        }
        for i in 0..n as u64 {
            *seq += 1;
            // Each send's id is its own send time, so the ack's latency needs
            // no lookup table; +i keeps ids distinct within a batch.
            let ti = t + i;
            let frame = format!(
                r#"{{"type":"send","id":"{ti}","body":{{"t":{ti},"s":{},"p":"{}"}}}}"#,
                *seq, self.ctx.pad
            );
            sink.feed(Message::text(frame))
                .await
                .map_err(fail("send_failed"))?;
        }
        let c = &self.ctx.c;
        let (sent, win) = match self.role {
            Role::Web => (&c.sent_web, &c.win_sent_web),
            Role::Phone => (&c.sent_phone, &c.win_sent_phone),
        };
        sent.fetch_add(n as u64, Relaxed);
        if self.window.measures(t) {
            win.fetch_add(n as u64, Relaxed);
        }
        sink.flush().await.map_err(fail("send_failed"))?;
        Ok(true)
    }
}
