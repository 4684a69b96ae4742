//! The logout_all phase, truly at once: first every socket of every worker
//! process is connected and parked (`logout_ready`), then the parent names
//! one release instant on the shared clock and every phone sends
//! `logout_all` at it (`logout`), with no handshake permit in the way. Each
//! phone's latency counts from that instant, so load-test lateness is
//! included. Every web socket must get `logged_out` and the 4001 close.
//!
//! To check "at once": `logout_all_written` is how long after the release each
//! phone's frame went out, and each phone's (written, `ok`) interval goes to
//! the parent, which computes how many were outstanding at the same time.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pairgate_protocol::ClientFrame;
use tokio::time::{Instant, sleep, timeout};
use tokio_tungstenite::tungstenite::Message;

use crate::clock::{instant_at, now_ns};
use crate::worker::ctx::{Account, Ctx, Fail, H, LOGOUT_ID, Res, fail};
use crate::worker::socket::{In, Sock};

impl Sock {
    /// `logout_ready`: a phone is ready when its socket is open and idle.
    pub fn logout_ready(&mut self) -> Res<()> {
        self.socket().map(drop)
    }

    /// Keeps reading until the shared release instant, then sends
    /// `logout_all` and waits for its `ok`.
    pub async fn logout_phone(&mut self, release_ns: u64) -> Res<()> {
        let ctx = self.ctx.clone();
        let release = instant_at(release_ns);
        // The precise timer: tokio's would release up to 1 ms late.
        let released = ctx.timer.at(release_ns);
        tokio::pin!(released);
        loop {
            let ws = self.socket()?;
            tokio::select! {
                biased;
                _ = &mut released => break,
                msg = ws.next() => self.on_message(msg, None)?,
            }
        }
        // Before the frame goes out: the web sockets judge their 4001 by it.
        self.acct.logout_sent_ns.store(release_ns, Relaxed);
        let frame = ClientFrame::LogoutAll.to_text(Some(LOGOUT_ID));
        self.socket()?
            .send(Message::text(frame))
            .await
            .map_err(fail("logout_send"))?;
        let written = now_ns();
        ctx.record(H::LogoutWritten, written.saturating_sub(release_ns) / 1000);
        let deadline = release + Duration::from_millis(ctx.cfg.timeout_ms);
        let closed = self
            .await_reply(LOGOUT_ID, deadline, "logout_no_ok", "logout_refused")
            .await?;
        let t1 = now_ns();
        self.acct.logout_ok_ns.store(t1, Relaxed);
        ctx.record(H::LogoutOk, t1.saturating_sub(release_ns) / 1000);
        ctx.logout_intervals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push([written, t1]);
        ctx.c.logout_ok.fetch_add(1, Relaxed);
        let webs = self.acct.webs.load(Relaxed) as u64;
        if closed != Some(webs) {
            ctx.record_failure(
                "logout_closed_mismatch",
                format!(
                    "{}: ok.closed {closed:?}, {webs} sessions linked",
                    self.acct.name
                ),
            );
        }
        // The phone leaves too, so the run ends with nothing open.
        if let Some(mut ws) = self.ws.take() {
            let _ = timeout(Duration::from_secs(2), async {
                let _ = ws.close(None).await;
                while let Some(Ok(_)) = ws.next().await {}
            })
            .await;
            ctx.socket_closed();
        }
        Ok(())
    }

    /// Reads until the reply to the phone's request `id`: its `closed` when
    /// `ok`; a failure of kind `silent` at the deadline, `refused` on `error`.
    pub async fn await_reply(
        &mut self,
        id: &str,
        deadline: Instant,
        silent: &'static str,
        refused: &'static str,
    ) -> Res<Option<u64>> {
        loop {
            let ws = self.socket()?;
            let msg = timeout(
                deadline.saturating_duration_since(Instant::now()),
                ws.next(),
            )
            .await
            .map_err(|_| Fail {
                kind: silent,
                msg: format!("no reply to {id}"),
                code: None,
            })?;
            let Some(Ok(Message::Text(text))) = &msg else {
                self.on_message(msg, None)?;
                continue;
            };
            match serde_json::from_str::<In>(text.as_str()).ok() {
                Some(r) if r.id == Some(id) && r.kind == "ok" => return Ok(r.closed),
                Some(r) if r.id == Some(id) => {
                    self.ctx.record_error(r.code.unwrap_or("unknown"));
                    return Err(Fail {
                        kind: refused,
                        msg: text.to_string(),
                        code: None,
                    });
                }
                _ => self.on_text(text.as_str(), None),
            }
        }
    }

    /// Waits for `logged_out` and the 4001 close. The deadline counts from the
    /// phone's `ok` (which the gateway sends only after the teardown), so
    /// queueing behind other accounts' logouts is not mistaken for a leak.
    pub async fn logout_web(&mut self) -> Res<()> {
        let grace = Duration::from_millis(self.ctx.cfg.timeout_ms);
        let hard_deadline = Instant::now() + grace * 4;
        let acct = self.acct.clone();
        let late = move || {
            let ok = acct.logout_ok_ns.load(Relaxed);
            (ok != 0 && now_ns().saturating_sub(ok) > grace.as_nanos() as u64)
                || Instant::now() > hard_deadline
        };
        self.await_logout_close(late, "left_open_after_logout_all", "logout_bad_close")
            .await
    }

    /// Reads until the 4001 close that follows `logged_out`, checking `late`
    /// every 200 ms while nothing comes; fails as `open_kind` when it is late,
    /// as `bad_kind` on anything else than the expected frames.
    pub async fn await_logout_close(
        &mut self,
        late: impl Fn() -> bool,
        open_kind: &'static str,
        bad_kind: &'static str,
    ) -> Res<()> {
        while !self.logout_closed {
            let ws = self.socket()?;
            let msg = tokio::select! {
                msg = ws.next() => msg,
                _ = sleep(Duration::from_millis(200)) => {
                    if late() {
                        return Err(Fail {
                            kind: open_kind,
                            msg: format!("no 4001 close (logged_out seen: {})", self.logged_out),
                            code: None,
                        });
                    }
                    continue;
                }
            };
            if let Err(mut f) = self.on_message(msg, None) {
                f.kind = bad_kind;
                f.msg = format!("{} (logged_out seen: {})", f.msg, self.logged_out);
                return Err(f);
            }
        }
        self.finish_logout_close().await;
        Ok(())
    }

    /// The 4001 close after `logged_out`: the end of this web socket.
    pub fn on_logout_close(&mut self) {
        self.logout_closed = true;
        self.ctx.c.logged_out_webs.fetch_add(1, Relaxed);
        if self.is_logged_out_alone() {
            // The soak's single `logout`: not part of the logout_all teardown.
            return;
        }
        self.acct.last_close_ns.fetch_max(now_ns(), Relaxed);
        self.acct.webs_closed.fetch_add(1, Relaxed);
    }

    /// tungstenite queued the reply to the close; let it go out, and the
    /// gateway closes the connection.
    pub async fn finish_logout_close(&mut self) {
        if let Some(mut ws) = self.ws.take() {
            let _ = timeout(Duration::from_secs(2), async {
                while let Some(Ok(_)) = ws.next().await {}
            })
            .await;
            self.ctx.socket_closed();
        }
    }
}

/// After `logout_all`: per account, release → last web socket's 4001 close.
pub fn teardown_times(ctx: &Ctx, accounts: &[Arc<Account>]) {
    for a in accounts {
        let webs = a.webs.load(Relaxed) as u64;
        let sent = a.logout_sent_ns.load(Relaxed);
        if webs > 0 && sent > 0 && a.webs_closed.load(Relaxed) == webs {
            let last = a.last_close_ns.load(Relaxed);
            ctx.record(H::LogoutLastClose, last.saturating_sub(sent) / 1000);
        }
    }
}
