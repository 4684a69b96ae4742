//! The churn phase: web sockets disconnect and resume with their session token.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures::StreamExt;
use pairgate_client::Client;
use pairgate_protocol::ClientFrame;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use crate::clock::now_ns;
use crate::worker::ctx::{H, Res, Role, fail, refused};
use crate::worker::socket::Sock;

impl Sock {
    // ---- churn -----------------------------------------------------------

    /// Disconnects and resumes with the session token, `rounds` times.
    pub async fn churn(&mut self, rounds: usize) -> Res<()> {
        let ctx = self.ctx.clone();
        let token = self.token.clone().unwrap_or_default();
        for round in 1..=rounds {
            let _permit = ctx.handshakes.acquire().await.map_err(fail("internal"))?;
            if let Some(mut ws) = self.ws.take() {
                // A clean close: the gateway answers and closes the TCP
                // connection first, so our ports do not pile up in TIME_WAIT.
                let wait = Duration::from_millis(ctx.cfg.timeout_ms);
                let _ = timeout(wait, async {
                    let _ = ws.close(None).await;
                    while let Some(Ok(msg)) = ws.next().await {
                        if let Message::Text(t) = msg {
                            self.on_text(t.as_str(), None);
                        }
                    }
                })
                .await;
                ctx.socket_closed();
            }
            let slot = 1 + self.web_index;
            let t0 = now_ns();
            let mut c = Client::connect(
                &ctx.url(self.acct.index, slot + round, Role::Web),
                &ctx.connect_options(self.acct.index, slot),
            )
            .await
            .map_err(refused("churn_connect"))?;
            ctx.socket_opened();
            let resumed = async {
                c.request(ClientFrame::Auth {
                    token: token.clone(),
                })
                .await
                .map_err(refused("churn_auth"))?;
                let status = c
                    .expect("phone_status")
                    .await
                    .map_err(refused("churn_auth"))?;
                if status["online"] != true {
                    ctx.c.phone_status_offline.fetch_add(1, Relaxed);
                }
                Ok(())
            }
            .await;
            if let Err(f) = resumed {
                ctx.socket_closed();
                return Err(f);
            }
            ctx.record(H::Resume, (now_ns() - t0) / 1000);
            ctx.c.resumed.fetch_add(1, Relaxed);
            self.ws = Some(c.into_socket());
        }
        Ok(())
    }
}
