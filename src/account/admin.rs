//! What an operator reads through the operator API: an account's sessions
//! with the node holding each live socket, and the live nodes. An operator's
//! logout is not here: it is [`Gateway::logout`] with [`Actor::Admin`], the
//! same teardown as the phone's.
//!
//! These are the calls the HTTP layer makes, so cluster mode can answer them
//! for the whole cluster in one place; on a single node every live socket is
//! on this node.
//!
//! [`Actor::Admin`]: super::sessions::Actor::Admin

use serde::{Deserialize, Serialize};

use super::hub::SessionState;
use crate::gateway::Gateway;
use crate::protocol::{Role, SessionInfo};
use crate::time::{now_ms, rfc3339_ms};

/// One session as an operator sees it: the phone's `SESSION`, and where its
/// live socket is.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OperatorSession {
    #[serde(flatten)]
    pub session: SessionInfo,
    /// The node holding the session's live socket; `None` when offline.
    pub node: Option<String>,
}

/// An account as an operator sees it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AccountSessions {
    pub account: String,
    pub phone_online: bool,
    /// Oldest first, like `list_sessions`.
    pub sessions: Vec<OperatorSession>,
}

/// A live node of the gateway.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodeInfo {
    pub node_id: String,
    /// Phone and web sockets open on the node.
    pub sockets: i64,
    pub started_at: String,
}

impl Gateway {
    /// The account's phone presence and sessions; an account the gateway does
    /// not hold has none (that is no error: accounts are not registered).
    pub fn account_sessions(&self, account: &str) -> AccountSessions {
        let now = now_ms();
        let (phone_online, sessions) = self
            .hub
            .with_existing(account, |state| {
                let sessions = state
                    .oldest_first()
                    .into_iter()
                    .map(|s| OperatorSession {
                        session: s.info(now),
                        node: self.node_of(s),
                    })
                    .collect();
                (state.phone.is_some(), sessions)
            })
            .unwrap_or_default();
        AccountSessions {
            account: account.to_owned(),
            phone_online,
            sessions,
        }
    }

    /// The node holding `session`'s live socket, if it has one. The one place
    /// that decides it: on a single node, a live socket is on this node.
    fn node_of(&self, session: &SessionState) -> Option<String> {
        session.live.as_ref().map(|peer| match peer.remote_node() {
            // A bus name is the node id and a generation: `node-1#2`.
            Some(bus_name) => bus_name.split('#').next().unwrap_or(bus_name).to_owned(),
            None => self.node_id.clone(),
        })
    }

    /// The live nodes: on a single node, this one.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        vec![self.this_node()]
    }

    /// This node's entry in [`Gateway::nodes`].
    pub fn this_node(&self) -> NodeInfo {
        NodeInfo {
            node_id: self.node_id.clone(),
            sockets: self.metrics.sockets(Role::Phone).get()
                + self.metrics.sockets(Role::Web).get(),
            started_at: rfc3339_ms(self.started_at_ms),
        }
    }
}
