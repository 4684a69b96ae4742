//! One socket's life: the task that owns it, follows the phases, and what it
//! does with each frame the gateway sends (the accounting the checks use).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use futures::StreamExt;
use pairgate_client::Socket;
use serde::Deserialize;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;

use super::ctx::{
    Account, Counters, Ctx, Fail, H, Phase, PhaseKind, Res, Role, SAMPLE_BATCH, Window, fail,
};
use crate::clock::now_ns;

/// The fields of a server frame the load test looks at, borrowed from the
/// text: parsing this is much cheaper than building a `serde_json::Value`.
#[derive(Deserialize)]
pub struct In<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    #[serde(default)]
    pub id: Option<&'a str>,
    #[serde(default)]
    pub code: Option<&'a str>,
    #[serde(default)]
    pub delivered: Option<u64>,
    #[serde(default)]
    pub from: Option<&'a str>,
    #[serde(default)]
    pub body: Option<Body>,
    #[serde(default)]
    pub online: Option<bool>,
    #[serde(default)]
    pub closed: Option<u64>,
    #[serde(default)]
    pub reason: Option<&'a str>,
}

/// The load test's message body: send time (wall ns) and the sender's sequence number.
#[derive(Deserialize, Default)]
pub struct Body {
    #[serde(default)]
    pub t: u64,
    #[serde(default)]
    pub s: u64,
}

// ---- one socket's life -------------------------------------------------------

pub struct Sock {
    pub ctx: Arc<Ctx>,
    pub acct: Arc<Account>,
    pub role: Role,
    pub web_index: usize,
    /// `None` while the relay halves hold it, or once it is closed.
    pub ws: Option<Socket>,
    /// A web client's session token, for resuming.
    pub token: Option<String>,
    pub window: Option<Window>,
    pub samples: Vec<(H, u64)>,
    /// Last sequence number seen per sender, to check ordering.
    pub last_seq: Vec<(String, u64)>,
    /// The last phase this task counted as arrived at.
    pub arrived_seq: u64,
    /// The types of the last few frames other than `message` and `ack`, for
    /// failure reports.
    pub recent: Vec<String>,
    /// A `logged_out` frame arrived.
    pub logged_out: bool,
    /// The 4001 close after `logged_out` arrived (the socket is done).
    pub logout_closed: bool,
}

impl Sock {
    pub async fn run(&mut self, phase: &mut watch::Receiver<Phase>) -> Res<()> {
        loop {
            let p = phase.borrow_and_update().clone();
            match p.kind {
                PhaseKind::Idle => {}
                PhaseKind::Relay(w) => {
                    self.relay(w, phase).await?;
                    self.ctx.record_batch(&mut self.samples);
                    // The relay ended because the phase moved on: act on it.
                    continue;
                }
                PhaseKind::StopRelay => self.arrive(p.seq),
                PhaseKind::Churn(rounds) => {
                    if self.role == Role::Web {
                        self.churn(rounds).await?;
                    }
                    self.arrive(p.seq);
                }
                PhaseKind::LogoutOne => {
                    match self.role {
                        Role::Phone => self.logout_one_phone().await?,
                        Role::Web if self.web_index == 0 => {
                            self.logout_one_web().await?;
                            self.arrive(p.seq);
                            return Ok(());
                        }
                        Role::Web => {}
                    }
                    self.arrive(p.seq);
                }
                PhaseKind::LogoutReady => {
                    if self.role == Role::Phone {
                        self.logout_ready()?;
                    }
                    self.arrive(p.seq);
                }
                PhaseKind::Logout { release_ns } => {
                    match self.role {
                        Role::Phone => self.logout_phone(release_ns).await?,
                        Role::Web => self.logout_web().await?,
                    }
                    self.arrive(p.seq);
                    return Ok(());
                }
            }
            self.idle(phase).await?;
        }
    }

    pub fn arrive(&mut self, seq: u64) {
        if self.ctx.arrive(seq) {
            self.arrived_seq = seq;
        }
    }

    pub fn socket(&mut self) -> Res<&mut Socket> {
        self.ws.as_mut().ok_or_else(|| Fail {
            kind: "internal",
            msg: "socket missing".into(),
            code: None,
        })
    }

    /// Reads (and accounts for) whatever arrives until the phase changes.
    pub async fn idle(&mut self, phase: &mut watch::Receiver<Phase>) -> Res<()> {
        loop {
            if self.logout_closed {
                // Closed by a logout_all that came before this task saw the
                // logout phase: finish the close, then wait for the phase.
                self.finish_logout_close().await;
                return phase.changed().await.map_err(fail("internal"));
            }
            let ws = self.socket()?;
            tokio::select! {
                // The phase first: once it has moved on (say, to logout),
                // what the socket says belongs to the new phase.
                biased;
                changed = phase.changed() => return changed.map_err(fail("internal")),
                msg = ws.next() => self.on_message(msg, None)?,
            }
        }
    }

    /// Handles one read from the socket outside the logout phase: any close is
    /// unexpected.
    pub fn on_message(
        &mut self,
        msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
        permits: Option<&Semaphore>,
    ) -> Res<()> {
        match msg {
            Some(Ok(Message::Text(text))) => {
                self.on_text(text.as_str(), permits);
                Ok(())
            }
            Some(Ok(Message::Close(frame))) => {
                let code = frame.map(|f| u16::from(f.code));
                // Judged by what the socket saw, not by the phase this task
                // has noticed: the wake-up for a phase change and the frames
                // of that phase race (tokio may even defer the former).
                let logout_sent =
                    self.acct.logout_sent_ns.load(Relaxed) != 0 || self.is_logged_out_alone();
                if self.role == Role::Web && code == Some(4001) && self.logged_out && logout_sent {
                    self.on_logout_close();
                    return Ok(());
                }
                let key = code.map_or("close_none".to_owned(), |c| format!("close_{c}"));
                self.ctx.record_error(&key);
                Err(Fail {
                    kind: "unexpected_close",
                    msg: format!("closed by the gateway with {code:?}"),
                    code: None,
                })
            }
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(fail("socket_error")(e)),
            None => Err(Fail {
                kind: "unexpected_close",
                msg: "connection ended".into(),
                code: None,
            }),
        }
    }

    /// Accounting for one server frame.
    pub fn on_text(&mut self, text: &str, permits: Option<&Semaphore>) {
        let Ok(f) = serde_json::from_str::<In>(text) else {
            self.ctx.record_error("unparsed_frame");
            return;
        };
        let now = now_ns();
        let c = &self.ctx.c;
        let acct = &self.acct;
        if !matches!(f.kind, "message" | "ack") {
            if self.recent.len() == 6 {
                self.recent.remove(0);
            }
            self.recent.push(
                f.code
                    .map_or_else(|| f.kind.to_owned(), |code| format!("{}:{code}", f.kind)),
            );
        }
        match f.kind {
            "message" => {
                let body = f.body.unwrap_or_default();
                let from = f.from.unwrap_or_default();
                let (h, win) = match self.role {
                    Role::Phone => {
                        acct.phone_got.fetch_add(1, Relaxed);
                        c.recv_phone.fetch_add(1, Relaxed);
                        (H::RelayWebToPhone, &c.win_recv_phone)
                    }
                    Role::Web => {
                        acct.webs_got.fetch_add(1, Relaxed);
                        c.recv_web.fetch_add(1, Relaxed);
                        (H::RelayPhoneToWeb, &c.win_recv_web)
                    }
                };
                check_order(&mut self.last_seq, c, from, body.s);
                if let Some(w) = self.window {
                    if w.measures(body.t) {
                        sample(
                            &mut self.samples,
                            &self.ctx,
                            h,
                            now.saturating_sub(body.t) / 1000,
                        );
                    }
                    if w.measures(now) {
                        win.fetch_add(1, Relaxed);
                    }
                }
            }
            "ack" => {
                match self.role {
                    Role::Web => {
                        acct.web_acked.fetch_add(1, Relaxed);
                        c.acked_web.fetch_add(1, Relaxed);
                    }
                    Role::Phone => {
                        acct.phone_delivered
                            .fetch_add(f.delivered.unwrap_or(0), Relaxed);
                        c.acked_phone.fetch_add(1, Relaxed);
                    }
                }
                if let (Some(w), Some(t)) = (self.window, f.id.and_then(|i| i.parse::<u64>().ok()))
                    && w.measures(t)
                {
                    let h = match self.role {
                        Role::Web => H::AckWeb,
                        Role::Phone => H::AckPhone,
                    };
                    sample(
                        &mut self.samples,
                        &self.ctx,
                        h,
                        now.saturating_sub(t) / 1000,
                    );
                }
                if let Some(p) = permits {
                    p.add_permits(1);
                }
            }
            "error" => {
                self.ctx.record_error(f.code.unwrap_or("unknown"));
                // Our sends carry numeric ids: such an error refuses a send.
                if f.id.is_some_and(|i| i.parse::<u64>().is_ok()) {
                    match self.role {
                        Role::Web => c.err_web.fetch_add(1, Relaxed),
                        Role::Phone => c.err_phone.fetch_add(1, Relaxed),
                    };
                    if let Some(p) = permits {
                        p.add_permits(1);
                    }
                }
            }
            "phone_status" if f.online == Some(false) => {
                c.phone_status_offline.fetch_add(1, Relaxed);
            }
            "session_online" => {
                c.session_online.fetch_add(1, Relaxed);
            }
            "session_offline" => {
                c.session_offline.fetch_add(1, Relaxed);
            }
            "logged_out" => {
                self.logged_out = true;
                let expected = if self.is_logged_out_alone() {
                    "phone_logout"
                } else {
                    "phone_logout_all"
                };
                if f.reason != Some(expected) {
                    self.ctx.record_error("logged_out_wrong_reason");
                }
            }
            _ => {}
        }
    }
}

/// Messages from one sender must arrive in the order sent.
pub fn check_order(last_seq: &mut Vec<(String, u64)>, c: &Counters, from: &str, seq: u64) {
    let slot = match last_seq.iter().position(|(f, _)| f == from) {
        Some(i) => &mut last_seq[i].1,
        None => {
            last_seq.push((from.to_owned(), 0));
            &mut last_seq.last_mut().expect("just pushed").1
        }
    };
    if seq <= *slot {
        c.out_of_order.fetch_add(1, Relaxed);
    }
    *slot = seq;
}

/// Buffers one latency sample; the shared histograms are locked once per batch.
pub fn sample(samples: &mut Vec<(H, u64)>, ctx: &Ctx, h: H, micros: u64) {
    samples.push((h, micros));
    if samples.len() >= SAMPLE_BATCH {
        ctx.record_batch(samples);
    }
}
