//! The requests a socket sends to its account's home when that is another
//! node, and the home serving them with the same account rules a single node
//! runs. A socket of another node goes by [`remote_conn_id`] at the home.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use super::bus::Msg;
use super::homes::Homed;
use super::remote::{RemotePeer, remote_conn_id};
use super::{CALL_TIMEOUT, Cluster};
use crate::account::admin::AccountSessions;
use crate::account::presence::{PhonePeer, WebPeer};
use crate::account::sessions::Actor;
use crate::gateway::Gateway;
use crate::protocol::{DeviceInfo, ErrorCode, LinkTarget, SessionInfo};

/// One request to an account's home. `conn` is the socket's id on its node.
// Externally tagged: a raw `body` cannot go through serde's buffering of
// internally tagged enums.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    PhoneOnline {
        conn: u64,
    },
    PhoneOffline {
        conn: u64,
    },
    Link {
        conn: u64,
        target: LinkTarget,
    },
    LinkConfirm {
        conn: u64,
        request_id: String,
    },
    LinkReject {
        conn: u64,
        request_id: String,
    },
    ListSessions,
    Logout {
        conn: u64,
        session_id: Option<String>,
    },
    RelayToWebs {
        conn: u64,
        to: Option<String>,
        body: Box<RawValue>,
    },
    Resume {
        conn: u64,
        session_id: String,
    },
    WebOffline {
        conn: u64,
        session_id: String,
    },
    RelayToPhone {
        conn: u64,
        session_id: String,
        body: Box<RawValue>,
    },
    SelfLogout {
        conn: u64,
        session_id: String,
    },
    ExpireRequest {
        request_id: String,
    },
    DropRequest {
        request_id: String,
    },
    AdminSessions,
    AdminLogout {
        session_id: Option<String>,
    },
    /// A socket live already registers again (see `Gateway::rejoin`).
    Rejoin {
        conn: u64,
        session_id: String,
    },
}

/// The home's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "r", content = "v", rename_all = "snake_case")]
pub enum Reply {
    /// The receiving node is not the account's home (any more): ask again.
    NotHome,
    Failed(ErrorCode),
    Done(Result<(), ErrorCode>),
    Link(Result<(String, DeviceInfo), ErrorCode>),
    Session(Result<SessionInfo, ErrorCode>),
    Sessions(Vec<SessionInfo>),
    Count(Result<usize, ErrorCode>),
    Resumed(Result<bool, ErrorCode>),
    Expired(bool),
    Admin(AccountSessions),
}

/// Reading an answer of the kind a call expects (`None`: another kind).
impl Reply {
    pub fn done(self) -> Option<Result<(), ErrorCode>> {
        match self {
            Reply::Done(r) => Some(r),
            _ => None,
        }
    }
    pub fn link(self) -> Option<Result<(String, DeviceInfo), ErrorCode>> {
        match self {
            Reply::Link(r) => Some(r),
            _ => None,
        }
    }
    pub fn session(self) -> Option<Result<SessionInfo, ErrorCode>> {
        match self {
            Reply::Session(r) => Some(r),
            _ => None,
        }
    }
    pub fn sessions(self) -> Option<Result<Vec<SessionInfo>, ErrorCode>> {
        match self {
            Reply::Sessions(s) => Some(Ok(s)),
            _ => None,
        }
    }
    pub fn count(self) -> Option<Result<usize, ErrorCode>> {
        match self {
            Reply::Count(r) => Some(r),
            _ => None,
        }
    }
    pub fn admin(self) -> Option<Result<AccountSessions, ErrorCode>> {
        match self {
            Reply::Admin(a) => Some(Ok(a)),
            _ => None,
        }
    }
    pub fn expired(self) -> Option<Result<bool, ErrorCode>> {
        match self {
            Reply::Expired(b) => Some(Ok(b)),
            _ => None,
        }
    }
}

impl Cluster {
    /// Sends `call` about `account` to `node` and waits for the answer.
    /// `unavailable` when the bus is down or the node does not answer in time.
    pub async fn call(
        &self,
        node: &Arc<str>,
        account: &str,
        call: Call,
    ) -> Result<Reply, ErrorCode> {
        let id = self.next_id();
        let (tx, rx) = oneshot::channel();
        self.replies.insert(id, (node.clone(), tx));
        let msg = Msg::Call {
            id,
            account: account.to_owned(),
            call,
        };
        if !self.post(node, msg) {
            self.replies.remove(&id);
            return Err(ErrorCode::Unavailable);
        }
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            // Dropped: the node was declared dead meanwhile.
            Ok(Err(_)) => Err(ErrorCode::Unavailable),
            Err(_) => {
                self.replies.remove(&id);
                Err(ErrorCode::Unavailable)
            }
        }
    }

    /// Sends `call` without waiting for an answer (a socket that left tells
    /// its home; nothing depends on the answer).
    pub fn tell(&self, node: &Arc<str>, account: &str, call: Call) -> bool {
        self.post(
            node,
            Msg::Call {
                id: 0,
                account: account.to_owned(),
                call,
            },
        )
    }

    /// Serves a call from a socket of node `from`, if this node is the
    /// account's home.
    pub(super) async fn serve(
        self: &Arc<Self>,
        gw: &Arc<Gateway>,
        from: &Arc<str>,
        account: &str,
        call: Call,
    ) -> Reply {
        let _serving = match self.home_of(gw, account).await {
            Ok(Homed::Here(serving)) => serving,
            Ok(Homed::Remote(_)) => return Reply::NotHome,
            Err(code) => return Reply::Failed(code),
        };
        let remote = |conn| remote_conn_id(from, conn);
        match call {
            Call::PhoneOnline { conn } => {
                let peer: PhonePeer = RemotePeer::peer(self, from, conn);
                gw.phone_online(account, &peer);
                Reply::Done(Ok(()))
            }
            Call::PhoneOffline { conn } => {
                gw.phone_offline(account, remote(conn));
                Reply::Done(Ok(()))
            }
            Call::Link { conn, target } => {
                Reply::Link(gw.link_here(account, remote(conn), target).await)
            }
            Call::LinkConfirm { conn, request_id } => {
                Reply::Session(gw.link_confirm(account, remote(conn), &request_id).await)
            }
            Call::LinkReject { conn, request_id } => {
                Reply::Done(gw.link_reject(account, remote(conn), &request_id))
            }
            Call::ListSessions => Reply::Sessions(gw.list_sessions(account)),
            Call::Logout { conn, session_id } => Reply::Count(
                gw.logout(account, Actor::Phone(remote(conn)), session_id.as_deref())
                    .await,
            ),
            Call::RelayToWebs { conn, to, body } => Reply::Count(
                match gw.relay_to_webs_here(account, remote(conn), to.as_deref(), &body) {
                    Ok(delivery) => Ok(delivery.delivered().await),
                    Err(code) => Err(code),
                },
            ),
            Call::Resume { conn, session_id } => {
                let peer: WebPeer = RemotePeer::peer(self, from, conn);
                Reply::Resumed(
                    gw.resume(account, &session_id, &peer)
                        .map(|r| r.phone_online),
                )
            }
            Call::WebOffline { conn, session_id } => {
                gw.web_offline(account, &session_id, remote(conn));
                Reply::Done(Ok(()))
            }
            Call::RelayToPhone {
                conn,
                session_id,
                body,
            } => Reply::Done(
                gw.relay_to_phone_confirmed(account, &session_id, remote(conn), &body)
                    .await,
            ),
            Call::SelfLogout { conn, session_id } => {
                Reply::Done(gw.self_logout(account, &session_id, remote(conn)).await)
            }
            Call::ExpireRequest { request_id } => {
                Reply::Expired(gw.expire_request(account, &request_id))
            }
            Call::DropRequest { request_id } => {
                gw.drop_request(account, &request_id);
                Reply::Done(Ok(()))
            }
            Call::AdminSessions => Reply::Admin(gw.account_sessions(account)),
            Call::AdminLogout { session_id } => Reply::Count(
                gw.logout(account, Actor::Admin, session_id.as_deref())
                    .await,
            ),
            Call::Rejoin { conn, session_id } => {
                let peer: WebPeer = RemotePeer::peer(self, from, conn);
                Reply::Done(gw.rejoin(account, &session_id, &peer))
            }
        }
    }
}
