//! A web client's socket: pairing (QR rotation, scanned, rejected, linked) or
//! resuming a session with its token, then relaying to the phone.
//!
//! The socket's state is [`Web`]: opening, pairing (with its attempt and what
//! its screen shows) or live (with its session). Each stage carries only what
//! it needs, and the parser's [`Stage`] is derived from it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tungstenite::Utf8Bytes;

use crate::account::pairing::{Abandoned, Attempt, AttemptState, Issued, LinkedWeb, PairingEvent};
use crate::device::{clean_device_name, device_name};
use crate::gateway::Gateway;
use crate::metrics::PairingOutcome;
use crate::protocol::{
    ClientFrame, CloseCode, ErrorCode, LogoutReason, Request, ServerFrame, Stage,
};
use crate::qr;

use super::{Handler, Stop};

type Conn = super::Conn<PairingEvent>;

/// Where a web socket stands.
#[derive(Default)]
pub enum Web {
    /// After `hello`: waiting for `auth` or `pair`.
    #[default]
    Opening,
    /// After `pair`: showing QRs until the phone links or it times out.
    Pairing(Pairing),
    /// After `ready` or `linked`: the socket carries a live session.
    Live(Live),
}

/// The live session this socket carries.
pub struct Live {
    account: String,
    session_id: String,
}

/// A pairing in progress.
pub struct Pairing {
    attempt: Arc<Attempt>,
    /// Refs still to come after the current one.
    remaining: u32,
    step: Step,
}

/// What a pairing socket's screen stands at.
enum Step {
    /// A ref is on screen until `expires`.
    Showing { issued: Issued, expires: Instant },
    /// The phone took the ref; its link request runs until `expires`, and
    /// rotation pauses while it decides.
    Scanned { expires: Instant },
    /// The request's time ran out but somebody (a confirm, a reject, a
    /// `logout_all`) took it first: its outcome comes as an event, by
    /// `gives_up` at the latest. If none came by then (a commit that hangs;
    /// in a cluster, a home that died with the request, or a call or an
    /// answer lost), the socket times out (4008): a pairing socket is never
    /// left waiting with no deadline.
    Settling { gives_up: Instant },
    /// Nothing on screen and no deadline: an outcome's event is queued, or
    /// the pairing is ending.
    Waiting,
}

/// How long a pairing socket whose request ran out waits at least for the
/// outcome of whoever took the request (with the request's own time, if
/// longer): beyond a cluster call's timeout and a commit under load.
const SETTLE_AT_LEAST: Duration = Duration::from_secs(5);

impl Pairing {
    /// Moves to `step`; a ref that was on screen is withdrawn.
    fn set_step(&mut self, gw: &Arc<Gateway>, step: Step) {
        if let Step::Showing { issued, .. } = std::mem::replace(&mut self.step, step) {
            gw.retire_ref(&issued);
        }
    }

    /// When the ref on screen or the pending request expires, or the wait
    /// for another's outcome ends.
    fn deadline(&self) -> Option<Instant> {
        match self.step {
            Step::Showing { expires, .. } | Step::Scanned { expires } => Some(expires),
            Step::Settling { gives_up } => Some(gives_up),
            Step::Waiting => None,
        }
    }

    /// The request ran out, but somebody else took it: wait for their
    /// outcome, `grace` at most.
    fn settle(&mut self, grace: Duration) {
        self.step = Step::Settling {
            gives_up: Instant::now() + grace,
        };
    }

    /// No outcome came while settling: `true` if the request is still
    /// pending (nobody will finish it), else its outcome's event is queued
    /// and the socket just waits for it.
    fn gave_up(&mut self) -> bool {
        if matches!(self.attempt.lock().state, AttemptState::Requested { .. }) {
            return true;
        }
        self.step = Step::Waiting;
        false
    }

    /// Ends pairing on this socket: its ref dies, and nothing may link it
    /// now. Returns what the attempt left behind.
    fn end(mut self, gw: &Arc<Gateway>) -> Abandoned {
        self.set_step(gw, Step::Waiting);
        gw.forget_attempt(self.attempt.peer.conn_id());
        self.attempt.lock().state.abandon()
    }
}

/// A fresh ref for `attempt` and its `qr` frame; `id` is the reply id of the
/// `pair` that asked.
async fn issue_qr(
    gw: &Arc<Gateway>,
    attempt: &Arc<Attempt>,
    remaining: u32,
    id: Option<&str>,
) -> Result<(Step, String), ErrorCode> {
    let issued = gw.issue_ref(attempt).await?;
    let ttl = gw.config.qr_ttl();
    let payload = qr::payload(&gw.public_url, &issued.reference);
    let svg = qr::render_svg(&payload);
    let frame = ServerFrame::Qr {
        id,
        reference: &issued.reference,
        code: &qr::display_code(&issued.code),
        payload: &payload,
        svg: &svg,
        expires_in_ms: ttl.as_millis() as u64,
        remaining,
    }
    .to_text();
    let expires = Instant::now() + ttl;
    Ok((Step::Showing { issued, expires }, frame))
}

/// Shows a fresh ref in place of whatever the screen showed.
async fn show_qr(conn: &mut Conn, p: &mut Pairing) -> Result<(), Stop> {
    match Box::pin(issue_qr(&conn.gw.clone(), &p.attempt, p.remaining, None)).await {
        Ok((step, frame)) => {
            p.set_step(&conn.gw, step);
            conn.write_text(frame).await
        }
        // Cluster mode, Redis unreachable: no QR can be shown; the client
        // starts over elsewhere or later.
        Err(code) => {
            tracing::info!(?code, "no fresh QR: closing the pairing socket 1012");
            p.set_step(&conn.gw, Step::Waiting);
            Err(Stop::close(CloseCode::Restarting, None))
        }
    }
}

/// Back to a fresh QR (and a full set of rotations) after a rejection or an
/// unanswered request.
async fn restart_pairing(conn: &mut Conn, p: &mut Pairing) -> Result<(), Stop> {
    p.remaining = conn.gw.config.qr_rotations - 1;
    conn.reply(&ServerFrame::PairRejected).await?;
    show_qr(conn, p).await
}

/// The socket gives its pairing up (it resumes a session, or it is gone):
/// a pending request dies with it, and a session linked meanwhile goes
/// offline. Called outside the attempt's lock: an account lock is never taken
/// under it.
fn leave_pairing(conn: &Conn, p: Pairing) {
    match p.end(&conn.gw) {
        Abandoned::Nothing => {}
        Abandoned::Request {
            account,
            request_id,
        } => match &conn.gw.cluster {
            None => conn.gw.drop_request(&account, &request_id),
            Some(_) => {
                let gw = conn.gw.clone();
                conn.gw.tasks.spawn(async move {
                    let _ = gw.drop_request_routed(&account, &request_id).await;
                });
            }
        },
        Abandoned::Session {
            account,
            session_id,
        } => conn
            .gw
            .web_offline_told(&account, &session_id, conn.peer.conn_id()),
    }
}

impl Web {
    async fn resume(&mut self, conn: &mut Conn, id: Option<&str>, token: &str) -> Result<(), Stop> {
        if let Web::Pairing(p) = std::mem::take(self) {
            leave_pairing(conn, p);
        }
        let Some(claim) = conn.gw.tokens.verify_session(token) else {
            return Err(conn.refuse(id, ErrorCode::InvalidToken, CloseCode::InvalidToken));
        };
        conn.record_account(&claim.account);
        conn.record_session(&claim.session_id);
        let gw = conn.gw.clone();
        let resumed =
            match Box::pin(gw.resume_routed(&claim.account, &claim.session_id, &conn.peer)).await {
                Ok(r) => r,
                Err(code) => return Err(conn.refuse(id, code, CloseCode::LoggedOut)),
            };
        conn.forget_user_agent();
        // A token of a previous secret (or of the old form) is swapped for
        // one of the current key, so the old secret can be dropped later
        // without logging out the sessions that came back meanwhile.
        let renewed = claim.renew.then(|| {
            conn.gw
                .tokens
                .mint_session(&claim.account, &claim.session_id)
        });
        let ready = ServerFrame::Ready {
            id,
            role: "web",
            account: &claim.account,
            session_id: Some(&claim.session_id),
            token: renewed.as_deref(),
        }
        .to_text();
        let status = ServerFrame::PhoneStatus {
            online: resumed.phone_online,
        }
        .to_text();
        *self = Web::Live(Live {
            account: claim.account,
            session_id: claim.session_id,
        });
        tracing::info!("web session resumed");
        conn.write_texts([ready, status]).await
    }

    async fn start_pairing(
        &mut self,
        conn: &mut Conn,
        id: Option<&str>,
        remember: bool,
        name: Option<String>,
    ) -> Result<(), Stop> {
        // Every `pair` counts, a repeated one too: each may publish a ref.
        if !conn
            .gw
            .pair_rate
            .allow(client_ip(&conn.client), Instant::now())
        {
            conn.gw.metrics.rate_limited("pair_per_ip");
            tracing::info!("pair refused: --max-pairs-per-ip-per-min reached for this address");
            let code = ErrorCode::RateLimited;
            return conn.error(id, code, code.describe()).await;
        }
        if let Web::Pairing(p) = self {
            // A repeated `pair` updates the options; the rotation goes on.
            {
                let mut a = p.attempt.lock();
                a.remember = remember;
                if let Some(name) = name.as_deref().map(clean_device_name)
                    && !name.is_empty()
                {
                    a.device_name = name;
                }
            }
            // In a cluster, the ref on screen says what a phone elsewhere sees.
            if let Step::Showing { issued, .. } = &p.step {
                let (gw, issued, attempt) = (conn.gw.clone(), issued.clone(), p.attempt.clone());
                if let Err(code) = Box::pin(gw.republish_ref(&issued, &attempt)).await {
                    return conn.error(id, code, code.describe()).await;
                }
            }
            return match id {
                Some(_) => conn.reply(&ServerFrame::Ok { id, closed: None }).await,
                None => Ok(()),
            };
        }
        let attempt = Arc::new(Attempt::new(
            conn.peer.clone(),
            conn.client.user_agent.clone(),
            conn.client.ip.clone(),
            name.as_deref()
                .map(clean_device_name)
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| device_name(&conn.client.user_agent)),
            remember,
        ));
        let remaining = conn.gw.config.qr_rotations - 1;
        let (step, frame) =
            match Box::pin(issue_qr(&conn.gw.clone(), &attempt, remaining, id)).await {
                Ok(shown) => shown,
                Err(code) => return conn.error(id, code, code.describe()).await,
            };
        *self = Web::Pairing(Pairing {
            attempt,
            remaining,
            step,
        });
        conn.write_text(frame).await
    }

    async fn linked(&mut self, conn: &mut Conn, linked: LinkedWeb) -> Result<(), Stop> {
        let live = Live {
            account: linked.account.clone(),
            session_id: linked.session_id.clone(),
        };
        match std::mem::replace(self, Web::Live(live)) {
            // The attempt is done: its `Linked` mark was for an exit before this.
            Web::Pairing(p) => {
                p.end(&conn.gw);
            }
            // An attempt abandoned meanwhile (the socket resumed another
            // session) already handed its new session back to go offline.
            other => {
                *self = other;
                return Ok(());
            }
        }
        conn.forget_user_agent();
        conn.record_account(&linked.account);
        conn.record_session(&linked.session_id);
        conn.gw
            .session_socket_here(&linked.account, &linked.session_id, &conn.peer);
        let frames = [
            ServerFrame::Linked {
                account: &linked.account,
                session_id: &linked.session_id,
                token: &linked.token,
                remember: linked.remember,
            }
            .to_text(),
            ServerFrame::PhoneStatus {
                online: linked.phone_online,
            }
            .to_text(),
        ];
        tracing::info!("web session linked");
        conn.write_texts(frames).await
    }
}

/// The client's address for per-IP limits (unspecified if it does not
/// parse, so such clients share one budget rather than escape it).
fn client_ip(client: &super::ClientInfo) -> std::net::IpAddr {
    client
        .ip
        .parse()
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

impl Handler for Web {
    type Event = PairingEvent;

    fn stage(&self) -> Stage {
        match self {
            Web::Opening => Stage::Opening,
            Web::Pairing(_) => Stage::Pairing,
            Web::Live(_) => Stage::Live,
        }
    }

    async fn on_frame(&mut self, conn: &mut Conn, req: Request<'_>) -> Result<(), Stop> {
        let id = req.id.as_deref();
        match (req.frame, &*self) {
            (ClientFrame::Auth { token }, Web::Opening | Web::Pairing(_)) => {
                Box::pin(self.resume(conn, id, &token)).await
            }
            (
                ClientFrame::Pair {
                    remember,
                    device_name,
                },
                Web::Opening | Web::Pairing(_),
            ) => Box::pin(self.start_pairing(conn, id, remember, device_name)).await,
            (ClientFrame::Send { body, .. }, Web::Live(live)) => {
                let web = conn.peer.conn_id();
                let result = match &conn.gw.cluster {
                    // The hot path stays synchronous on a single node.
                    None => conn
                        .gw
                        .relay_to_phone(&live.account, &live.session_id, web, body),
                    Some(_) => {
                        let gw = conn.gw.clone();
                        Box::pin(gw.relay_to_phone_routed(
                            &live.account,
                            &live.session_id,
                            web,
                            body,
                        ))
                        .await
                    }
                };
                match result {
                    Ok(()) if id.is_some() => {
                        conn.reply(&ServerFrame::Ack {
                            id,
                            delivered: None,
                        })
                        .await
                    }
                    Ok(()) => Ok(()),
                    Err(code) => conn.error(id, code, code.describe()).await,
                }
            }
            (ClientFrame::Logout { .. }, Web::Live(live)) => {
                let gw = conn.gw.clone();
                let ended = Box::pin(gw.self_logout_routed(
                    &live.account,
                    &live.session_id,
                    conn.peer.conn_id(),
                ))
                .await;
                match ended {
                    Ok(()) => {}
                    // Replaced or ended meanwhile: its close order says how it ends.
                    Err(_) if conn.peer.is_close_ordered() => return Err(conn.take_close_order()),
                    // Already ended some other way: logged out all the same.
                    Err(ErrorCode::LoggedOut) => {}
                    Err(code) => return conn.error(id, code, code.describe()).await,
                }
                tracing::info!("web session logged itself out");
                let farewell = ServerFrame::LoggedOut {
                    id,
                    reason: LogoutReason::SelfLogout,
                }
                .to_text();
                Err(Stop::close(
                    CloseCode::LoggedOut,
                    Some(Utf8Bytes::from(farewell)),
                ))
            }
            // The parser only lets role- and stage-appropriate frames through.
            _ => {
                conn.error(
                    id,
                    ErrorCode::UnknownType,
                    ErrorCode::UnknownType.describe(),
                )
                .await
            }
        }
    }

    async fn on_event(&mut self, conn: &mut Conn, event: PairingEvent) -> Result<(), Stop> {
        match event {
            PairingEvent::Scanned { .. } => {
                // Only a pairing socket has a screen to pause.
                let Web::Pairing(p) = self else {
                    return Ok(());
                };
                let expires = Instant::now() + conn.gw.config.request_ttl();
                p.set_step(&conn.gw, Step::Scanned { expires });
                conn.reply(&ServerFrame::Scanned).await
            }
            PairingEvent::Rejected => match self {
                Web::Pairing(p) => restart_pairing(conn, p).await,
                _ => Ok(()),
            },
            PairingEvent::Linked(linked) => self.linked(conn, *linked).await,
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match self {
            Web::Pairing(p) => p.deadline(),
            _ => None,
        }
    }

    async fn on_deadline(&mut self, conn: &mut Conn) -> Result<(), Stop> {
        let Web::Pairing(p) = self else {
            return Ok(());
        };
        match p.step {
            Step::Waiting => Ok(()),
            Step::Scanned { .. } => {
                // The link request was never answered: it counts as rejected,
                // unless the phone is confirming it right now.
                let state = p.attempt.lock().state.clone();
                if let AttemptState::Requested {
                    account,
                    request_id,
                } = state
                    && Box::pin(conn.gw.clone().expire_request_routed(&account, &request_id)).await
                {
                    p.attempt.lock().state.end_request();
                    return restart_pairing(conn, p).await;
                }
                p.settle(conn.gw.config.request_ttl().max(SETTLE_AT_LEAST));
                Ok(())
            }
            Step::Settling { .. } => {
                if !p.gave_up() {
                    return Ok(());
                }
                // The socket times out; leaving, it drops the request, and a
                // confirm that lands later leaves its session offline, as for
                // any pairing socket that left. (Starting over on the same
                // attempt instead could let that late confirm link a newer
                // request's screen.)
                tracing::info!("no outcome for an expired link request: closing 4008");
                conn.gw.metrics.pairing(PairingOutcome::TimedOut);
                Err(Stop::close(CloseCode::TimedOut, None))
            }
            Step::Showing { .. } => {
                if p.remaining == 0 {
                    p.set_step(&conn.gw, Step::Waiting);
                    conn.gw.metrics.pairing(PairingOutcome::TimedOut);
                    let farewell = ServerFrame::PairTimeout.to_utf8_bytes();
                    return Err(Stop::close(CloseCode::TimedOut, Some(farewell)));
                }
                p.remaining -= 1;
                show_qr(conn, p).await
            }
        }
    }

    fn on_exit(&mut self, conn: &Conn) -> Option<super::Leaving> {
        match std::mem::take(self) {
            Web::Opening => None,
            Web::Pairing(p) => {
                leave_pairing(conn, p);
                None
            }
            Web::Live(live) => conn.gw.web_leaving(
                &live.account,
                &live.session_id,
                conn.peer.conn_id(),
                conn.peer.is_close_ordered(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::presence::WebPeer;
    use crate::account::testing::{FailingDisk, gateway_on};
    use crate::peer::Peer;

    /// Whatever replaces a ref on screen (the phone's scan, a newer ref, the
    /// end of pairing) withdraws it, and an ended pairing's attempt is dead.
    #[tokio::test]
    async fn a_ref_leaves_the_registry_with_the_screen() {
        let gw = gateway_on(FailingDisk);
        let (peer, _queue): (WebPeer, _) = Peer::new(1, 1 << 20);
        let attempt = Arc::new(Attempt::new(
            peer,
            "curl/8".into(),
            "127.0.0.1".into(),
            "curl".into(),
            true,
        ));
        let showing = |gw: &Gateway| {
            let issued = gw.pairing.issue(&attempt);
            let reference = issued.reference.clone();
            let step = Step::Showing {
                issued,
                expires: Instant::now(),
            };
            (step, reference)
        };
        let (step, first) = showing(&gw);
        let mut p = Pairing {
            attempt: attempt.clone(),
            remaining: 0,
            step,
        };
        let (step, second) = showing(&gw);
        p.set_step(&gw, step);
        assert!(!gw.pairing.is_valid(&first));
        p.set_step(
            &gw,
            Step::Scanned {
                expires: Instant::now(),
            },
        );
        assert!(!gw.pairing.is_valid(&second));
        let (step, third) = showing(&gw);
        p.set_step(&gw, step);
        assert_eq!(p.end(&gw), Abandoned::Nothing);
        assert!(!gw.pairing.is_valid(&third));
        assert!(!attempt.lock().state.is_alive());
    }

    /// A scanned socket whose request ran out while somebody else held it
    /// (a confirm being written) keeps a deadline: if no outcome comes, it
    /// gives up; if one came, its event is queued.
    #[tokio::test]
    async fn a_request_taken_by_another_at_expiry_leaves_a_deadline() {
        let (peer, _queue): (WebPeer, _) = Peer::new(1, 1 << 20);
        let attempt = Arc::new(Attempt::new(
            peer,
            "curl/8".into(),
            "127.0.0.1".into(),
            "curl".into(),
            true,
        ));
        assert!(attempt.lock().state.request("alice", "r1"));
        let mut p = Pairing {
            attempt: attempt.clone(),
            remaining: 0,
            step: Step::Scanned {
                expires: Instant::now(),
            },
        };
        p.settle(Duration::from_secs(5));
        assert!(p.deadline().is_some(), "settling without a deadline");
        // no outcome came: the socket gives up (and times out)
        assert!(p.gave_up());
        // an outcome came (linked): its event is queued, nothing to give up
        assert!(attempt.lock().state.link("alice", "s1"));
        p.settle(Duration::from_secs(5));
        assert!(!p.gave_up());
        assert!(p.deadline().is_none());
    }
}
