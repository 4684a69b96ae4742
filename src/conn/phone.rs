//! The phone's socket: auth with a phone token, then linking, session control
//! and relaying to the account's web sessions.

use crate::peer::PairingEvent;
use crate::protocol::{ClientFrame, CloseCode, ErrorCode, LinkTarget, Request, ServerFrame, Stage};

use super::{Conn, Handler, Stop};

#[derive(Default)]
pub struct Phone {
    /// Set once authenticated.
    account: Option<String>,
}

impl Handler for Phone {
    async fn on_frame(&mut self, conn: &mut Conn, req: Request<'_>) -> Result<(), Stop> {
        let id = req.id.as_deref();
        let Some(account) = self.account.clone() else {
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
            conn.gw.phone_online(&account, &conn.peer);
            conn.stage = Stage::Live;
            self.account = Some(account);
            let account = self.account.as_deref().unwrap_or_default();
            tracing::debug!("phone online");
            return conn
                .reply(&ServerFrame::Ready {
                    id,
                    role: "phone",
                    account,
                    session_id: None,
                })
                .await;
        };
        let gw = conn.gw.clone();
        let me = conn.peer.conn_id();
        // The rare requests that wait on the store are boxed, so every phone
        // socket's task is not sized for them.
        let result = match req.frame {
            ClientFrame::Link(target) => {
                let (LinkTarget::Ref(r) | LinkTarget::Code(r)) = &target;
                tracing::debug!(prefix = %r.chars().take(6).collect::<String>(), "link");
                gw.link(&account, me, target).map(|(request_id, device)| {
                    ServerFrame::LinkRequest {
                        id,
                        request_id: &request_id,
                        device: &device,
                    }
                    .to_text()
                })
            }
            ClientFrame::LinkConfirm { request_id } => {
                Box::pin(gw.link_confirm(&account, me, &request_id))
                    .await
                    .map(|session| {
                        ServerFrame::DeviceLinked {
                            id,
                            session: &session,
                        }
                        .to_text()
                    })
            }
            ClientFrame::LinkReject { request_id } => gw
                .link_reject(&account, me, &request_id)
                .map(|()| ServerFrame::Ok { id, closed: None }.to_text()),
            ClientFrame::ListSessions => {
                let sessions = gw.list_sessions(&account);
                Ok(ServerFrame::Sessions {
                    id,
                    sessions: &sessions,
                }
                .to_text())
            }
            ClientFrame::Logout { session_id } => Box::pin(gw.logout(
                &account,
                me,
                Some(session_id.as_deref().unwrap_or_default()),
            ))
            .await
            .map(|closed| {
                ServerFrame::Ok {
                    id,
                    closed: Some(closed),
                }
                .to_text()
            }),
            ClientFrame::LogoutAll => Box::pin(gw.logout(&account, me, None)).await.map(|closed| {
                ServerFrame::Ok {
                    id,
                    closed: Some(closed),
                }
                .to_text()
            }),
            ClientFrame::Send { body, to } => gw
                .relay_to_webs(&account, me, to.as_deref(), body)
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

    async fn on_pairing(&mut self, _conn: &mut Conn, _event: PairingEvent) -> Result<(), Stop> {
        Ok(())
    }

    fn deadline(&self) -> Option<std::time::Instant> {
        None
    }

    async fn on_deadline(&mut self, _conn: &mut Conn) -> Result<(), Stop> {
        Ok(())
    }

    fn on_exit(&mut self, conn: &Conn) {
        if let Some(account) = &self.account {
            conn.gw.phone_offline(account, conn.peer.conn_id());
        }
    }
}
