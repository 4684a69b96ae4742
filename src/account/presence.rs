//! Presence: whether the account's phone and each session have a live socket,
//! who may act (only the current phone socket, only a session's live socket),
//! and the `phone_status` / `session_online` / `session_offline` events that
//! announce a change.
//!
//! A replacement (a newer socket for the same phone or session) is no change
//! of presence: the old socket is ordered closed (4009) in the same critical
//! section, and nobody is told.

use std::convert::Infallible;
use std::sync::Arc;

use tungstenite::Utf8Bytes;

use super::hub::AccountState;
use super::pairing::PairingEvent;
use super::sessions::touch;

use crate::gateway::Gateway;
use crate::peer::{Peer, Receipt};
use crate::protocol::{CloseCode, ServerFrame};

/// A phone socket's handle: it takes frames only.
pub type PhonePeer = Peer<Infallible>;
/// A web socket's handle: frames, and what the phone did to its pairing.
pub type WebPeer = Peer<PairingEvent>;

impl AccountState {
    /// Whether `conn_id` is the account's phone socket: one that was replaced
    /// (and ordered closed) has no say any more.
    pub fn is_phone(&self, conn_id: u64) -> bool {
        self.phone.as_ref().map(Peer::conn_id) == Some(conn_id)
    }

    /// Whether `conn_id` is the live socket of session `session_id`.
    pub fn is_live_socket(&self, session_id: &str, conn_id: u64) -> bool {
        self.sessions
            .get(session_id)
            .and_then(|s| s.live.as_ref())
            .map(Peer::conn_id)
            == Some(conn_id)
    }

    /// Sends `frame` to the phone, if it is online.
    pub fn to_phone(&self, frame: &ServerFrame<'_>) {
        if let Some(phone) = &self.phone {
            phone.send(&frame.to_utf8_bytes());
        }
    }

    /// Sends one serialized frame to every live web socket.
    pub fn to_webs(&self, text: &Utf8Bytes) {
        for peer in self.sessions.values().filter_map(|s| s.live.as_ref()) {
            peer.send(text);
        }
    }

    /// Sends one serialized frame to every live web socket; returns how many
    /// of this node's took it (see `Peer::send_counted` for the others).
    pub fn to_webs_counted(&self, text: &Utf8Bytes, receipts: &mut Vec<Receipt>) -> usize {
        self.sessions
            .values()
            .filter_map(|s| s.live.as_ref())
            .map(|peer| peer.send_counted(text, receipts))
            .sum()
    }

    /// Makes `peer` the live socket of session `session_id` (which exists);
    /// an older one is replaced (4009), else the phone hears it came online.
    pub(super) fn session_online(&mut self, session_id: &str, peer: &WebPeer) {
        let Some(session) = self.sessions.get_mut(session_id) else {
            return;
        };
        session.epoch += 1;
        match session.live.replace(peer.clone()) {
            // The same socket registering again (cluster mode: after its
            // account moved to another node): nothing changes.
            Some(old) if old.conn_id() == peer.conn_id() => {}
            Some(old) => old.order_close(CloseCode::Replaced),
            None => self.to_phone(&ServerFrame::SessionOnline { session_id }),
        }
    }
}

impl Gateway {
    /// Makes `peer` the account's phone socket; an older one is replaced (4009).
    pub fn phone_online(&self, account: &str, peer: &PhonePeer) {
        self.hub
            .with(account, |state| match state.phone.replace(peer.clone()) {
                // The same socket registering again (cluster mode: after its
                // account moved to another node): nothing changes.
                Some(old) if old.conn_id() == peer.conn_id() => {}
                // A replacement is no change of online state: nobody is told.
                Some(old) => {
                    old.order_close(CloseCode::Replaced);
                }
                None => {
                    state.to_webs(&ServerFrame::PhoneStatus { online: true }.to_utf8_bytes());
                }
            });
    }

    /// Forgets the phone socket `conn_id`, unless a newer one already replaced it.
    pub fn phone_offline(&self, account: &str, conn_id: u64) {
        self.hub.with_existing(account, |state| {
            if state.is_phone(conn_id) {
                state.phone = None;
                state.to_webs(&ServerFrame::PhoneStatus { online: false }.to_utf8_bytes());
            }
        });
        self.hub.release_if_idle(account);
    }

    /// Cluster mode: node `node` is gone, and with it its sockets of the
    /// accounts homed here: its phone goes offline, its sessions' sockets
    /// too (ephemeral ones start their grace now), and link requests for its
    /// pairing sockets die.
    pub fn sockets_gone_on(self: &Arc<Self>, node: &str) {
        for account in self.hub.account_ids() {
            let on_node = |peer: &WebPeer| peer.remote_node() == Some(node);
            let gone = self.hub.with_existing(&account, |state| {
                let phone = state
                    .phone
                    .as_ref()
                    .filter(|p| p.remote_node() == Some(node))
                    .map(Peer::conn_id);
                let webs: Vec<(String, u64)> = state
                    .sessions
                    .iter()
                    .filter_map(|(sid, s)| {
                        s.live
                            .as_ref()
                            .filter(|p| on_node(p))
                            .map(|p| (sid.clone(), p.conn_id()))
                    })
                    .collect();
                state.requests.retain(|_, req| !on_node(&req.attempt.peer));
                (phone, webs)
            });
            let Some((phone, webs)) = gone else { continue };
            if let Some(conn) = phone {
                self.phone_offline(&account, conn);
            }
            for (session_id, conn) in webs {
                self.web_offline(&account, &session_id, conn);
            }
            self.hub.release_if_idle(&account);
        }
    }

    /// The socket `conn_id` of a session closed: the session goes offline
    /// (unless a newer socket replaced it or the session has ended), and an
    /// ephemeral one starts its grace.
    pub fn web_offline(self: &Arc<Self>, account: &str, session_id: &str, conn_id: u64) {
        let grace = self.hub.with_existing(account, |state| {
            let session = state.sessions.get_mut(session_id)?;
            if session.live.as_ref().map(Peer::conn_id) != Some(conn_id) {
                return None;
            }
            session.live = None;
            session.epoch += 1;
            touch(&self.store, session);
            let grace = (!session.record.remember).then_some(session.epoch);
            state.to_phone(&ServerFrame::SessionOffline { session_id });
            grace
        });
        if let Some(Some(epoch)) = grace {
            self.start_grace(account, session_id, epoch, self.config.ephemeral_grace());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::peer::Peer;
    use crate::protocol::ErrorCode;

    /// Only the account's current phone socket and a session's live socket
    /// act: a replaced phone, a replaced web socket and a web socket whose
    /// session ended are refused, whatever they ask.
    #[tokio::test]
    async fn replaced_and_ended_sockets_have_no_say() {
        let gw = gateway_on(OneSessionFailingDisk);
        let _old_phone = phone_online(&gw);
        let (new_phone, _new_queue) = Peer::new(PHONE + 1, 1 << 20);
        gw.phone_online("alice", &new_phone);
        let body = serde_json::value::RawValue::from_string("1".into()).unwrap();
        assert!(gw.relay_to_webs("alice", PHONE, None, &body).is_err());
        assert!(
            gw.logout("alice", crate::account::sessions::Actor::Phone(PHONE), None)
                .await
                .is_err()
        );
        assert_eq!(gw.list_sessions("alice").len(), 1);

        let (old_web, _old_web_queue) = Peer::new(1, 1 << 20);
        let (new_web, _new_web_queue) = Peer::new(2, 1 << 20);
        gw.resume("alice", "s1", &old_web).unwrap();
        gw.resume("alice", "s1", &new_web).unwrap();
        assert!(old_web.is_close_ordered());
        assert_eq!(
            gw.relay_to_phone("alice", "s1", 1, &body),
            Err(ErrorCode::LoggedOut)
        );
        assert_eq!(
            gw.self_logout("alice", "s1", 1).await,
            Err(ErrorCode::LoggedOut)
        );
        assert_eq!(gw.relay_to_phone("alice", "s1", 2, &body), Ok(()));
        assert_eq!(
            gw.relay_to_phone("alice", "gone", 2, &body),
            Err(ErrorCode::LoggedOut)
        );
    }
}
