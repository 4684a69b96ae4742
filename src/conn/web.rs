//! A web client's socket: pairing (QR rotation, scanned, rejected, linked) or
//! resuming a session with its token, then relaying to the phone.

use std::sync::Arc;
use std::time::Instant;

use tungstenite::Utf8Bytes;

use crate::device::{clean_device_name, device_name};
use crate::metrics::PairingOutcome;
use crate::pairing::{Attempt, Issued, LinkedWeb};
use crate::peer::PairingEvent;
use crate::protocol::{
    ClientFrame, CloseCode, ErrorCode, LogoutReason, Request, ServerFrame, Stage,
};
use crate::qr;

use super::{Conn, Handler, Stop};

/// The live session this socket carries.
struct Live {
    account: String,
    session_id: String,
}

/// A pairing in progress.
struct Pairing {
    attempt: Arc<Attempt>,
    /// The ref on screen; `None` once the phone took it.
    issued: Option<Issued>,
    /// Refs still to come after the current one.
    remaining: u32,
    /// When the current ref expires, or when the pending link request does.
    deadline: Option<Instant>,
    scanned: bool,
}

#[derive(Default)]
pub struct Web {
    pairing: Option<Pairing>,
    live: Option<Live>,
}

impl Web {
    /// Shows a fresh ref; `id` is the reply id of the `pair` that asked.
    async fn show_qr(&mut self, conn: &mut Conn, id: Option<&str>) -> Result<(), Stop> {
        let Some(p) = self.pairing.as_mut() else {
            return Ok(());
        };
        let issued = conn.gw.pairing.issue(&p.attempt);
        let ttl = conn.gw.config.qr_ttl();
        let payload = qr::payload(&conn.gw.public_url, &issued.reference);
        let svg = qr::render_svg(&payload);
        let frame = ServerFrame::Qr {
            id,
            reference: &issued.reference,
            code: &qr::display_code(&issued.code),
            payload: &payload,
            svg: &svg,
            expires_in_ms: ttl.as_millis() as u64,
            remaining: p.remaining,
        }
        .to_text();
        p.issued = Some(issued);
        p.deadline = Some(Instant::now() + ttl);
        p.scanned = false;
        conn.write_text(frame).await
    }

    /// Ends pairing on this socket: its ref dies, and nothing may link it now.
    /// Returns the session a confirm made durable meanwhile, if any.
    fn abandon_pairing(&mut self, conn: &Conn) -> Option<(String, String)> {
        let p = self.pairing.take()?;
        if let Some(issued) = &p.issued {
            conn.gw.pairing.retire(issued);
        }
        let (request, linked) = {
            let mut a = p.attempt.lock();
            a.dead = true;
            (a.request.take(), a.linked.take())
        };
        // Its pending link request dies with it (taken outside the attempt's
        // lock: an account lock is never taken under it).
        if let Some((account, request_id)) = request {
            conn.gw.drop_request(&account, &request_id);
        }
        linked
    }

    async fn resume(&mut self, conn: &mut Conn, id: Option<&str>, token: &str) -> Result<(), Stop> {
        if let Some((account, session_id)) = self.abandon_pairing(conn) {
            conn.gw
                .web_offline(&account, &session_id, conn.peer.conn_id());
        }
        let Some(claim) = conn.gw.tokens.verify_session(token) else {
            return Err(conn.refuse(id, ErrorCode::InvalidToken, CloseCode::InvalidToken));
        };
        conn.record_account(&claim.account);
        conn.record_session(&claim.session_id);
        let resumed = match conn
            .gw
            .resume(&claim.account, &claim.session_id, &conn.peer)
        {
            Ok(r) => r,
            Err(code) => return Err(conn.refuse(id, code, CloseCode::LoggedOut)),
        };
        conn.stage = Stage::Live;
        conn.forget_user_agent();
        let ready = ServerFrame::Ready {
            id,
            role: "web",
            account: &claim.account,
            session_id: Some(&claim.session_id),
        }
        .to_text();
        let status = ServerFrame::PhoneStatus {
            online: resumed.phone_online,
        }
        .to_text();
        self.live = Some(Live {
            account: claim.account,
            session_id: claim.session_id,
        });
        tracing::debug!("web session resumed");
        conn.write_texts([ready, status]).await
    }

    async fn start_pairing(
        &mut self,
        conn: &mut Conn,
        id: Option<&str>,
        remember: bool,
        name: Option<String>,
    ) -> Result<(), Stop> {
        if let Some(p) = &self.pairing {
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
        self.pairing = Some(Pairing {
            attempt,
            issued: None,
            remaining: conn.gw.config.qr_rotations - 1,
            deadline: None,
            scanned: false,
        });
        conn.stage = Stage::Pairing;
        self.show_qr(conn, id).await
    }

    /// Back to a fresh QR after a rejection (or an unanswered request).
    async fn restart_pairing(&mut self, conn: &mut Conn) -> Result<(), Stop> {
        let Some(p) = self.pairing.as_mut() else {
            return Ok(());
        };
        p.remaining = conn.gw.config.qr_rotations - 1;
        conn.reply(&ServerFrame::PairRejected).await?;
        self.show_qr(conn, None).await
    }

    async fn linked(&mut self, conn: &mut Conn, linked: LinkedWeb) -> Result<(), Stop> {
        // An attempt abandoned meanwhile (the socket resumed another session)
        // already handed its new session back to be taken offline.
        let Some(p) = self.pairing.take() else {
            return Ok(());
        };
        // The attempt is done; its `linked` mark was for an exit before this.
        p.attempt.lock().linked = None;
        conn.stage = Stage::Live;
        conn.forget_user_agent();
        conn.record_account(&linked.account);
        conn.record_session(&linked.session_id);
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
        self.live = Some(Live {
            account: linked.account,
            session_id: linked.session_id,
        });
        tracing::debug!("web session linked");
        conn.write_texts(frames).await
    }
}

impl Handler for Web {
    async fn on_frame(&mut self, conn: &mut Conn, req: Request<'_>) -> Result<(), Stop> {
        let id = req.id.as_deref();
        match (req.frame, &self.live) {
            (ClientFrame::Auth { token }, None) => Box::pin(self.resume(conn, id, &token)).await,
            (
                ClientFrame::Pair {
                    remember,
                    device_name,
                },
                None,
            ) => Box::pin(self.start_pairing(conn, id, remember, device_name)).await,
            (ClientFrame::Send { body, .. }, Some(live)) => {
                let result = conn.gw.relay_to_phone(
                    &live.account,
                    &live.session_id,
                    conn.peer.conn_id(),
                    body,
                );
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
            (ClientFrame::Logout { .. }, Some(live)) => {
                let ended = Box::pin(conn.gw.self_logout(
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
                tracing::debug!("web session logged itself out");
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

    async fn on_pairing(&mut self, conn: &mut Conn, event: PairingEvent) -> Result<(), Stop> {
        match event {
            PairingEvent::Scanned => {
                let request_ttl = conn.gw.config.request_ttl();
                if let Some(p) = self.pairing.as_mut() {
                    // The phone took the ref; rotation pauses while it decides.
                    p.issued = None;
                    p.scanned = true;
                    p.deadline = Some(Instant::now() + request_ttl);
                }
                conn.reply(&ServerFrame::Scanned).await
            }
            PairingEvent::Rejected => self.restart_pairing(conn).await,
            PairingEvent::Linked(linked) => self.linked(conn, *linked).await,
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.pairing.as_ref().and_then(|p| p.deadline)
    }

    async fn on_deadline(&mut self, conn: &mut Conn) -> Result<(), Stop> {
        let Some(p) = self.pairing.as_mut() else {
            return Ok(());
        };
        p.deadline = None;
        if p.scanned {
            // The link request was never answered: it counts as rejected,
            // unless the phone is confirming it right now.
            let request = p.attempt.lock().request.clone();
            if let Some((account, request_id)) = request
                && conn.gw.expire_request(&account, &request_id)
            {
                p.attempt.lock().request = None;
                return self.restart_pairing(conn).await;
            }
            return Ok(());
        }
        if let Some(issued) = p.issued.take() {
            conn.gw.pairing.retire(&issued);
        }
        if p.remaining == 0 {
            conn.gw.metrics.pairing(PairingOutcome::TimedOut);
            let farewell = Utf8Bytes::from(ServerFrame::PairTimeout.to_text());
            return Err(Stop::close(CloseCode::TimedOut, Some(farewell)));
        }
        p.remaining -= 1;
        self.show_qr(conn, None).await
    }

    fn on_exit(&mut self, conn: &Conn) {
        let id = conn.peer.conn_id();
        if let Some((account, session_id)) = self.abandon_pairing(conn) {
            conn.gw.web_offline(&account, &session_id, id);
        }
        if let Some(live) = self.live.take() {
            conn.gw.web_offline(&live.account, &live.session_id, id);
        }
    }
}
