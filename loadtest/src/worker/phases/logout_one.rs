//! The soak's single-session logout: each phone ends web client 0's session
//! with `logout{session_id}`; that web socket must get `logged_out`
//! (`phone_logout`) and the 4001 close, and the account's other web clients
//! stay linked for the `logout_all` that follows.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures::SinkExt;
use pairgate_protocol::ClientFrame;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::clock::now_ns;
use crate::worker::ctx::{H, LOGOUT_ONE_ID, Res, Role, fail};
use crate::worker::socket::Sock;

impl Sock {
    /// This web socket is the one the phone's single `logout` ends.
    pub fn is_logged_out_alone(&self) -> bool {
        self.role == Role::Web && self.web_index == 0 && self.acct.logout_one_sent.load(Relaxed)
    }

    /// The phone: `logout` of web 0's session, and its `ok{closed:1}`.
    pub async fn logout_one_phone(&mut self) -> Res<()> {
        let session = self
            .acct
            .first_session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        // Web 0 never paired (already reported): nothing to end.
        let Some(session_id) = session else {
            return Ok(());
        };
        let ctx = self.ctx.clone();
        let t0 = now_ns();
        self.acct.logout_one_sent.store(true, Relaxed);
        let frame = ClientFrame::Logout {
            session_id: Some(session_id),
        }
        .to_text(Some(LOGOUT_ONE_ID));
        self.socket()?
            .send(Message::text(frame))
            .await
            .map_err(fail("logout_send"))?;
        let deadline = Instant::now() + Duration::from_millis(ctx.cfg.timeout_ms);
        let closed = self
            .await_reply(
                LOGOUT_ONE_ID,
                deadline,
                "logout_one_no_ok",
                "logout_one_refused",
            )
            .await?;
        ctx.record(H::LogoutOneOk, (now_ns() - t0) / 1000);
        ctx.c.logout_one_ok.fetch_add(1, Relaxed);
        if closed != Some(1) {
            ctx.record_failure(
                "logout_one_closed_mismatch",
                format!("{}: ok.closed {closed:?}, want 1", self.acct.name),
            );
        }
        self.acct.webs.fetch_sub(1, Relaxed);
        Ok(())
    }

    /// Web 0: `logged_out` and the 4001 close; then this socket is done.
    pub async fn logout_one_web(&mut self) -> Res<()> {
        let deadline = Instant::now() + Duration::from_millis(self.ctx.cfg.timeout_ms) * 2;
        self.await_logout_close(
            move || Instant::now() > deadline,
            "left_open_after_logout",
            "logout_one_bad_close",
        )
        .await
    }
}
