//! The relay phase: every sending socket sends from the window's start to
//! its end while reading; then the worker waits for everything to land.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, sleep, sleep_until};

use crate::clock::instant_at;
use crate::worker::ctx::{Account, Ctx, Fail, Phase, PhaseKind, Res, Role, Window, fail};
use crate::worker::socket::Sock;
use crate::worker::writer::Writer;

impl Sock {
    // ---- relay -----------------------------------------------------------

    /// Sends (if this role sends) from `start` to `end`, and reads until the
    /// phase moves on: the worker moves it on once everything has drained.
    pub async fn relay(&mut self, w: Window, phase: &mut watch::Receiver<Phase>) -> Res<()> {
        self.window = Some(w);
        self.last_seq.clear();
        let sends = match self.role {
            Role::Web => self.ctx.cfg.direction.web_sends(),
            Role::Phone => self.ctx.cfg.direction.phone_sends(),
        };
        let ws = self.ws.take().ok_or_else(|| Fail {
            kind: "internal",
            msg: "socket missing".into(),
            code: None,
        })?;
        let (sink, mut stream) = ws.split();
        let permits = Semaphore::new(self.ctx.cfg.in_flight.max(1));
        let mut writer = Writer {
            ctx: self.ctx.clone(),
            role: self.role,
            window: w,
            permits: &permits,
            at_rate: self.ctx.cfg.per_socket_rate > 0.0,
            samples: Vec::new(),
        };
        let write = async move {
            let mut sink = sink;
            let result = if sends {
                writer.run(&mut sink).await
            } else {
                Ok(())
            };
            (sink, result)
        };
        let read = async {
            let result = loop {
                tokio::select! {
                    biased;
                    changed = phase.changed() => break changed.map_err(fail("internal")),
                    msg = stream.next() => {
                        if let Err(f) = self.on_message(msg, Some(&permits)) {
                            break Err(f);
                        }
                    }
                }
            };
            // A reader that stops early stops the writer too.
            permits.close();
            result
        };
        let ((sink, written), read) = tokio::join!(write, read);
        let ws = stream.reunite(sink).map_err(fail("internal"))?;
        self.ws = Some(ws);
        read?;
        written
    }
}

/// The relay phase in this worker: start, wait for the window to close, let
/// every ack and message land (or the drain timeout pass), then stop readers.
pub async fn relay(ctx: &Arc<Ctx>, accounts: &[Arc<Account>], w: Window) {
    ctx.set_phase(PhaseKind::Relay(w));
    sleep_until(instant_at(w.end_ns)).await;
    let deadline = Instant::now() + Duration::from_millis(ctx.cfg.drain_timeout_ms);
    let c = &ctx.c;
    loop {
        let settled = c.sent_web.load(Relaxed)
            <= c.acked_web.load(Relaxed) + c.err_web.load(Relaxed)
            && c.sent_phone.load(Relaxed)
                <= c.acked_phone.load(Relaxed) + c.err_phone.load(Relaxed)
            && accounts.iter().all(|a| {
                a.phone_got.load(Relaxed) >= a.web_acked.load(Relaxed)
                    && a.webs_got.load(Relaxed) >= a.phone_delivered.load(Relaxed)
            });
        if settled || Instant::now() >= deadline {
            break;
        }
        sleep(Duration::from_millis(20)).await;
    }
    ctx.set_phase(PhaseKind::StopRelay);
    ctx.all_arrived().await;
    ctx.set_phase(PhaseKind::Idle);
}
