//! The phone's socket: auth with a phone token, then linking, session control
//! and relaying to the account's web sessions. Its peer takes no events.

use std::convert::Infallible;

use crate::account::sessions::Actor;
use crate::protocol::{ClientFrame, CloseCode, ErrorCode, LinkTarget, Request, ServerFrame, Stage};

use super::{Handler, Stop};

type Conn = super::Conn<Infallible>;

/// Queues the `ack` of a `send` on this socket once its deliveries on other
/// nodes are known (no `id`: nothing to answer, the send stands). Written in
/// queue order with everything else for the socket; a socket closed
/// meanwhile takes nothing.
fn ack_when_delivered(conn: &Conn, id: Option<&str>, delivery: crate::cluster::Delivery) {
    let Some(id) = id.map(str::to_owned) else {
        return;
    };
    let peer = conn.peer.clone();
    conn.gw.tasks.spawn(async move {
        let delivered = delivery.delivered().await;
        let ack = ServerFrame::Ack {
            id: Some(&id),
            delivered: Some(delivered),
        };
        peer.send(&ack.to_utf8_bytes());
    });
}

/// Where a phone socket stands.
#[derive(Default)]
pub enum Phone {
    /// After `hello`: waiting for `auth`.
    #[default]
    Opening,
    /// Authenticated as the phone of `account`.
    Live { account: String },
}

impl Handler for Phone {
    type Event = Infallible;

    fn stage(&self) -> Stage {
        match self {
            Phone::Opening => Stage::Opening,
            Phone::Live { .. } => Stage::Live,
        }
    }

    async fn on_frame(&mut self, conn: &mut Conn, req: Request<'_>) -> Result<(), Stop> {
        let id = req.id.as_deref();
        let Phone::Live { account } = self else {
            // Before auth the parser lets nothing but `auth` through.
            let ClientFrame::Auth { token } = req.frame else {
                return conn
                    .error(
                        id,
                        ErrorCode::NotAuthenticated,
                        ErrorCode::NotAuthenticated.describe(),
                    )
                    .await;
            };
            let Some(account) = conn.gw.tokens.verify_phone(&token) else {
                return Err(conn.refuse(id, ErrorCode::InvalidToken, CloseCode::InvalidToken));
            };
            conn.record_account(&account);
            let gw = conn.gw.clone();
            if let Err(code) = Box::pin(gw.phone_online_routed(&account, &conn.peer)).await {
                return conn.error(id, code, code.describe()).await;
            }
            tracing::debug!("phone online");
            let ready = ServerFrame::Ready {
                id,
                role: "phone",
                account: &account,
                session_id: None,
                token: None,
            }
            .to_text();
            *self = Phone::Live { account };
            return conn.write_text(ready).await;
        };
        let account = account.clone();
        let gw = conn.gw.clone();
        let me = conn.peer.conn_id();
        // The rare requests that wait on the store are boxed, so every phone
        // socket's task is not sized for them.
        let result = match req.frame {
            ClientFrame::Link(target) => {
                // Never a ref or code in the log, not even part of one: a
                // log reader could link with it while it lives.
                let by = match &target {
                    LinkTarget::Ref(_) => "ref",
                    LinkTarget::Code(_) => "code",
                };
                tracing::debug!(by, "link");
                Box::pin(gw.link_routed(&account, me, target))
                    .await
                    .map(|(request_id, device)| {
                        ServerFrame::LinkRequest {
                            id,
                            request_id: &request_id,
                            device: &device,
                        }
                        .to_text()
                    })
            }
            ClientFrame::LinkConfirm { request_id } => {
                Box::pin(gw.link_confirm_routed(&account, me, &request_id))
                    .await
                    .map(|session| {
                        ServerFrame::DeviceLinked {
                            id,
                            session: &session,
                        }
                        .to_text()
                    })
            }
            ClientFrame::LinkReject { request_id } => {
                Box::pin(gw.link_reject_routed(&account, me, &request_id))
                    .await
                    .map(|()| ServerFrame::Ok { id, closed: None }.to_text())
            }
            ClientFrame::ListSessions => {
                Box::pin(gw.list_sessions_routed(&account))
                    .await
                    .map(|sessions| {
                        ServerFrame::Sessions {
                            id,
                            sessions: &sessions,
                        }
                        .to_text()
                    })
            }
            ClientFrame::Logout { session_id } => Box::pin(gw.logout_routed(
                &account,
                Actor::Phone(me),
                Some(session_id.as_deref().unwrap_or_default()),
            ))
            .await
            .map(|closed| {
                tracing::info!(closed, "phone logged a session out");
                ServerFrame::Ok {
                    id,
                    closed: Some(closed),
                }
                .to_text()
            }),
            ClientFrame::LogoutAll => Box::pin(gw.logout_routed(&account, Actor::Phone(me), None))
                .await
                .map(|closed| {
                    tracing::info!(closed, "phone logged every session out");
                    ServerFrame::Ok {
                        id,
                        closed: Some(closed),
                    }
                    .to_text()
                }),
            ClientFrame::Send { body, to } => match &gw.cluster {
                // The hot path stays synchronous on a single node.
                None => gw.relay_to_webs(&account, me, to.as_deref(), body),
                Some(_) => {
                    match Box::pin(gw.relay_to_webs_routed(&account, me, to.as_deref(), body)).await
                    {
                        Ok(delivery) if !delivery.receipts.is_empty() => {
                            // Sockets on other nodes count once their
                            // receipts are in: the ack waits for them, this
                            // socket's next frames do not.
                            ack_when_delivered(conn, id, delivery);
                            return Ok(());
                        }
                        relayed => relayed.map(|delivery| delivery.here),
                    }
                }
            }
            .map(|delivered| {
                ServerFrame::Ack {
                    id,
                    delivered: Some(delivered),
                }
                .to_text()
            }),
            ClientFrame::Auth { .. } | ClientFrame::Pair { .. } => Err(ErrorCode::UnknownType),
        };
        match result {
            // A reply is owed only to a frame with an id.
            Ok(reply) if id.is_some() => conn.write_text(reply).await,
            Ok(_) => Ok(()),
            Err(code) => conn.error(id, code, code.describe()).await,
        }
    }

    async fn on_event(&mut self, _conn: &mut Conn, event: Infallible) -> Result<(), Stop> {
        match event {}
    }

    fn on_exit(&mut self, conn: &Conn) -> Option<super::Leaving> {
        match self {
            Phone::Live { account } => {
                conn.gw
                    .phone_leaving(account, conn.peer.conn_id(), conn.peer.is_close_ordered())
            }
            Phone::Opening => None,
        }
    }
}
