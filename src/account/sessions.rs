//! The sessions of an account: restored at start-up, resumed with a token,
//! listed for the phone, ended by the phone (`logout`, `logout_all`) or an
//! operator (the same teardown), or by themselves (`logout` from the web), and
//! the removal every ending shares, undone when it does not reach the disk.

use std::sync::Arc;

use super::hub::{AccountState, SessionState};
use super::pairing::LinkRequest;
use super::presence::WebPeer;
use super::{SUPERSEDED, internal};
use crate::gateway::Gateway;
use crate::metrics::LogoutKind;
use crate::protocol::{
    CloseCode, ErrorCode, LogoutReason, RemovedReason, ServerFrame, SessionInfo,
};
use crate::store::{Durable, Store, StoreError, StoreOp, StoredSession};
use crate::time::now_ms;

/// Marks a session active now and queues that to the store (bookkeeping:
/// nobody waits for it). Called under the account lock, so it reaches the disk
/// before any later removal of the session.
pub(super) fn touch(store: &Store, session: &mut SessionState) {
    session.record.last_active_at_ms = now_ms();
    store.submit(vec![StoreOp::Put(session.record.clone())]);
}

/// A session taken out of the hub, with its delete queued to the store.
pub(super) type Removal = (SessionState, Result<Durable, StoreError>);

/// Takes a session out of the hub and queues its delete (under the account lock).
pub(super) fn remove(store: &Store, state: &mut AccountState, session_id: &str) -> Option<Removal> {
    let session = state.sessions.remove(session_id)?;
    let durable = store.enqueue(vec![StoreOp::Delete {
        account: session.record.account.clone(),
        session_id: session_id.to_owned(),
    }]);
    Some((session, durable))
}

/// Who ends sessions with [`Gateway::logout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Actor {
    /// The account's phone socket with this connection id: it acts only while
    /// it is the current one.
    Phone(u64),
    /// An operator, through the operator API: always allowed.
    Admin,
}

/// What a web socket learns when it resumes its session.
pub struct Resumed {
    pub phone_online: bool,
}

impl AccountState {
    /// Sessions oldest first.
    pub fn list(&self, now_ms: i64) -> Vec<SessionInfo> {
        self.oldest_first()
            .into_iter()
            .map(|s| s.info(now_ms))
            .collect()
    }

    /// The sessions' states oldest first (ties by id), the order every
    /// listing uses.
    pub fn oldest_first(&self) -> Vec<&SessionState> {
        let mut all: Vec<&SessionState> = self.sessions.values().collect();
        all.sort_by(|a, b| {
            (a.record.created_at_ms, &a.record.session_id)
                .cmp(&(b.record.created_at_ms, &b.record.session_id))
        });
        all
    }
}

impl Gateway {
    /// Installs the sessions read from the store at start-up; ephemeral ones
    /// get a full grace from now.
    pub fn restore(self: &Arc<Self>, stored: Vec<StoredSession>) {
        self.metrics.sessions.set(stored.len() as i64);
        let ephemeral: Vec<(String, String)> = stored
            .iter()
            .filter(|s| !s.remember)
            .map(|s| (s.account.clone(), s.session_id.clone()))
            .collect();
        tracing::info!(sessions = stored.len(), "sessions restored");
        self.hub.restore(stored);
        for (account, session_id) in ephemeral {
            self.start_grace(&account, &session_id, 0, self.config.ephemeral_grace());
        }
    }

    /// Cluster mode: this node became the account's home; installs its
    /// sessions as loaded from the store (those already held stay). Ephemeral
    /// ones get a full grace from now: their socket, if any, registers anew.
    pub fn adopt(self: &Arc<Self>, account: &str, stored: Vec<StoredSession>) {
        let ephemeral: Vec<String> = self.hub.with(account, |state| {
            let mut ephemeral = Vec::new();
            for record in stored {
                let (session_id, remember) = (record.session_id.clone(), record.remember);
                if state.insert_stored(record) {
                    self.metrics.sessions.inc();
                    if !remember {
                        ephemeral.push(session_id);
                    }
                }
            }
            ephemeral
        });
        for session_id in ephemeral {
            self.start_grace(account, &session_id, 0, self.config.ephemeral_grace());
        }
    }

    /// Cluster mode: this node no longer serves the account; its sessions
    /// stay in the store for the next node that does.
    pub fn release_account(&self, account: &str) {
        let sessions = self.hub.drop_account(account);
        self.metrics.sessions.dec_by(sessions as i64);
    }

    /// Makes `peer` the live socket of the session; an older one is replaced
    /// (4009). `logged_out` if the session no longer exists.
    pub fn resume(
        &self,
        account: &str,
        session_id: &str,
        peer: &WebPeer,
    ) -> Result<Resumed, ErrorCode> {
        self.make_live(account, session_id, peer, false)
    }

    /// Cluster mode: a socket that was live already registers again with
    /// its account's home (after a resync, or its home's death). Like
    /// `resume`, and the phone's state is queued to the socket in the same
    /// critical section, so it comes before any later `phone_status` the
    /// home sends it. (The answer to its node's call travels separately and
    /// could overtake those.)
    pub fn rejoin(&self, account: &str, session_id: &str, peer: &WebPeer) -> Result<(), ErrorCode> {
        self.make_live(account, session_id, peer, true).map(|_| ())
    }

    fn make_live(
        &self,
        account: &str,
        session_id: &str,
        peer: &WebPeer,
        tell_phone_state: bool,
    ) -> Result<Resumed, ErrorCode> {
        self.hub
            .with_existing(account, |state| {
                let phone_online = state.phone.is_some();
                let session = state.sessions.get_mut(session_id)?;
                // After a crash, the stored time says when the session last
                // had a socket, not when it last went offline.
                touch(&self.store, session);
                state.session_online(session_id, peer);
                if tell_phone_state {
                    let status = ServerFrame::PhoneStatus {
                        online: phone_online,
                    };
                    peer.send(&status.to_utf8_bytes());
                }
                Some(Resumed { phone_online })
            })
            .flatten()
            .ok_or(ErrorCode::LoggedOut)
    }

    pub fn list_sessions(&self, account: &str) -> Vec<SessionInfo> {
        let now = now_ms();
        self.hub
            .with_existing(account, |state| state.list(now))
            .unwrap_or_default()
    }

    /// `logout` (one session) or `logout_all` (`session_id` `None`), by the
    /// account's phone socket or by an operator: one teardown for both.
    /// Resolves once every socket of the ended sessions was sent `logged_out`
    /// and its 4001 close (or dropped), and the end is durable. Returns how
    /// many ended.
    ///
    /// `logout_all` also ends the account's links being written right now
    /// (their confirm then fails) and its pending link requests (their web
    /// sockets start over).
    ///
    /// An operator's logout is announced to the account's phone, if online
    /// (`session_removed`, reason `admin`); the phone hears nothing of its own.
    pub async fn logout(
        &self,
        account: &str,
        by: Actor,
        session_id: Option<&str>,
    ) -> Result<usize, ErrorCode> {
        let reason = match (by, session_id) {
            (Actor::Admin, _) => LogoutReason::Admin,
            (Actor::Phone(_), Some(_)) => LogoutReason::PhoneLogout,
            (Actor::Phone(_), None) => LogoutReason::PhoneLogoutAll,
        };
        let farewell = ServerFrame::LoggedOut { id: None, reason }.to_utf8_bytes();
        let taken = self.hub.with(account, |state| {
            if let Actor::Phone(phone) = by
                && !state.is_phone(phone)
            {
                return Err(SUPERSEDED);
            }
            let (ids, cancelled_links): (Vec<String>, Vec<String>) = match session_id {
                Some(sid) if state.sessions.contains_key(sid) => (vec![sid.to_owned()], Vec::new()),
                Some(_) => return Err(ErrorCode::UnknownSession),
                // Links being written are queued after their put: deleted after it.
                None => (
                    state.sessions.keys().cloned().collect(),
                    state.linking.iter().cloned().collect(),
                ),
            };
            let ops = ids
                .iter()
                .chain(&cancelled_links)
                .map(|sid| StoreOp::Delete {
                    account: account.to_owned(),
                    session_id: sid.clone(),
                })
                .collect();
            let durable = self.store.enqueue(ops).map_err(internal)?;
            let mut ended: Vec<SessionState> = ids
                .iter()
                .filter_map(|sid| state.sessions.remove(sid))
                .collect();
            // Only once their deletes are queued: the links being written are
            // ended, and pending requests die.
            let requests: Vec<LinkRequest> = match session_id {
                Some(_) => Vec::new(),
                None => {
                    state.linking.clear();
                    state.requests.drain().map(|(_, req)| req).collect()
                }
            };
            // Ordered closed in the same critical section that ended the
            // sessions: from here on nothing those sockets send has an effect.
            let teardowns: Vec<_> = ended
                .iter_mut()
                .filter_map(|session| session.live.take())
                .map(|peer| peer.close(CloseCode::LoggedOut, Some(farewell.clone())))
                .collect();
            Ok((ended, teardowns, requests, durable))
        });
        // An operator may name an account the hub did not hold (`with` made
        // it) or end the last session of an account whose phone is offline:
        // nothing else would drop it then.
        self.hub.release_if_idle(account);
        let (ended, teardowns, requests, durable) = taken?;
        self.end_requests(requests);
        let closed = ended.len();
        // Another node's teardown is waited for only so long: a node that
        // does not confirm in time is treated as gone (the end is durable, so
        // its sockets are torn down when it is back).
        let torn_down = tokio::time::timeout(
            crate::cluster::TEARDOWN_TIMEOUT,
            futures::future::join_all(teardowns),
        );
        let (written, _) = tokio::join!(durable.wait(), torn_down);
        if let Err(e) = written {
            // The caller can try again; the sockets are gone either way.
            self.undo_removal(account, ended);
            return Err(internal(e));
        }
        self.metrics.sessions.dec_by(closed as i64);
        self.metrics.logouts(reason.into(), closed);
        if by == Actor::Admin {
            self.hub.with_existing(account, |state| {
                for session in &ended {
                    state.to_phone(&ServerFrame::SessionRemoved {
                        session_id: &session.record.session_id,
                        reason: RemovedReason::Admin,
                    });
                }
            });
        }
        Ok(closed)
    }

    /// A web session ends itself through its live socket `web`. Durable
    /// before it returns.
    pub async fn self_logout(
        &self,
        account: &str,
        session_id: &str,
        web: u64,
    ) -> Result<(), ErrorCode> {
        let removal = self
            .hub
            .with_existing(account, |state| {
                if !state.is_live_socket(session_id, web) {
                    return None;
                }
                remove(&self.store, state, session_id)
            })
            .flatten()
            .ok_or(ErrorCode::LoggedOut)?;
        self.finish_removal(account, removal, RemovedReason::SelfLogout)
            .await
    }

    /// Completes the removal of `session`, already taken out of the hub: once
    /// it is durable, the phone is told. A removal that does not reach the
    /// disk is undone, so memory and disk agree and nothing is half-ended.
    pub(super) async fn finish_removal(
        &self,
        account: &str,
        (session, durable): Removal,
        reason: RemovedReason,
    ) -> Result<(), ErrorCode> {
        let written = match durable {
            Ok(durable) => durable.wait().await,
            Err(e) => Err(e),
        };
        let session_id = session.record.session_id.clone();
        if let Err(e) = written {
            self.undo_removal(account, [session]);
            return Err(internal(e));
        }
        self.metrics.sessions.dec();
        self.metrics.logouts(
            match reason {
                RemovedReason::SelfLogout => LogoutKind::SelfLogout,
                RemovedReason::Expired => LogoutKind::Expired,
                RemovedReason::Admin => LogoutKind::Admin,
            },
            1,
        );
        self.hub.with_existing(account, |state| {
            state.to_phone(&ServerFrame::SessionRemoved {
                session_id: &session_id,
                reason,
            })
        });
        self.hub.release_if_idle(account);
        Ok(())
    }

    /// Puts back sessions whose removal did not reach the disk (offline), so
    /// memory and disk agree and the removal can be tried again.
    pub(super) fn undo_removal(
        &self,
        account: &str,
        sessions: impl IntoIterator<Item = SessionState>,
    ) {
        self.hub.with(account, |state| {
            for session in sessions {
                state
                    .sessions
                    .entry(session.record.session_id.clone())
                    .or_insert(session);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::Actor;
    use crate::config::Config;
    use crate::peer::Out;
    use crate::peer::Peer;
    use crate::protocol::{CloseCode, ErrorCode, LinkTarget};
    use crate::store::{StoreOp, StoredSession};

    /// A logout (or self-logout) whose end does not reach the disk is answered
    /// `internal` and undone: the session is still listed, as it is on disk.
    #[tokio::test]
    async fn a_failed_logout_commit_is_internal_and_keeps_the_session() {
        let gw = gateway_on(OneSessionFailingDisk);
        let _phone = phone_online(&gw);
        assert_eq!(
            gw.logout("alice", Actor::Phone(PHONE), Some("s1"))
                .await
                .unwrap_err(),
            ErrorCode::Internal
        );
        assert_eq!(gw.list_sessions("alice").len(), 1);
        assert_eq!(
            gw.logout("alice", Actor::Phone(PHONE), None)
                .await
                .unwrap_err(),
            ErrorCode::Internal
        );
        let (web, _web_queue) = Peer::new(1, 1 << 20);
        gw.resume("alice", "s1", &web).unwrap();
        assert_eq!(
            gw.self_logout("alice", "s1", web.conn_id())
                .await
                .unwrap_err(),
            ErrorCode::Internal
        );
        assert_eq!(gw.list_sessions("alice")[0].session_id, "s1");
    }

    /// `logout_all` while a confirmed link is still being written: the link
    /// fails (`unknown_request`, the web side starts over), `logout_all`
    /// answers only once its delete, queued after the link's put, is on
    /// disk, and the account is left with no session in memory or on disk.
    #[tokio::test]
    async fn logout_all_ends_a_link_still_being_written() {
        let (gw, permit, committed) = held_gateway(Config::default());
        let _phone = phone_online(&gw);
        let (mut web, reference) = pairing_web(&gw, 1);
        let (request_id, _) = gw.link("alice", PHONE, LinkTarget::Ref(reference)).unwrap();
        // The link's put is queued (and held) before logout_all starts.
        let confirming = start_confirm(&gw, request_id).await;
        let logging_out = tokio::spawn({
            let gw = gw.clone();
            async move { gw.logout("alice", Actor::Phone(PHONE), None).await }
        });
        // logout_all has ended the link in memory and queued its delete.
        while !gw.hub.with("alice", |s| s.linking.is_empty()) {
            tokio::task::yield_now().await;
        }
        // One permit per batch: the put and the delete, together or apart.
        for _ in 0..2 {
            let _ = permit.send(());
        }
        assert_eq!(
            confirming.await.unwrap().unwrap_err(),
            ErrorCode::UnknownRequest
        );
        assert_eq!(logging_out.await.unwrap(), Ok(0));
        assert!(gw.list_sessions("alice").is_empty());
        let ops = committed.lock().clone();
        assert!(
            matches!(ops.as_slice(), [StoreOp::Put(put), StoreOp::Delete { session_id, .. }] if put.session_id == *session_id),
            "{ops:?}"
        );
        assert_scanned_then_rejected(&mut web);
    }

    fn stored(session_id: &str, created_at_ms: i64) -> StoredSession {
        StoredSession {
            account: "alice".into(),
            session_id: session_id.into(),
            device_name: "curl".into(),
            user_agent: "curl/8".into(),
            ip: "127.0.0.1".into(),
            created_at_ms,
            last_active_at_ms: created_at_ms,
            remember: true,
        }
    }

    /// An operator's logout is the phone's teardown: the live socket is
    /// ordered closed 4001 with `logged_out` reason `admin`, the delete is
    /// committed, and the phone (which did not ask) is told `session_removed`
    /// reason `admin`. It needs no phone socket, and leaves no trace of an
    /// account it emptied or never knew.
    #[tokio::test]
    async fn an_operator_logout_tears_down_like_the_phones_and_tells_the_phone() {
        let (gw, permit, committed) = held_gateway(Config::default());
        gw.hub.restore(vec![stored("s1", 1), stored("s2", 2)]);
        // Every batch commits (the resume's touch, the deletes).
        for _ in 0..8 {
            let _ = permit.send(());
        }
        let mut phone = phone_online(&gw);
        let (web, _web_queue) = Peer::new(1, 1 << 20);
        gw.resume("alice", "s1", &web).unwrap();

        let logging_out = tokio::spawn({
            let gw = gw.clone();
            async move { gw.logout("alice", Actor::Admin, Some("s1")).await }
        });
        // The web socket's task: carry out the close order.
        web.close_ordered().await;
        let (order, waiters) = web.take_order();
        let order = order.unwrap();
        assert_eq!(order.code, CloseCode::LoggedOut);
        assert_eq!(
            order.farewell.as_deref(),
            Some(r#"{"type":"logged_out","reason":"admin"}"#)
        );
        // Durable, yet no answer while the socket has not been torn down.
        let deleted = || {
            committed
                .lock()
                .iter()
                .any(|op| matches!(op, StoreOp::Delete { session_id, .. } if session_id == "s1"))
        };
        while !deleted() {
            tokio::task::yield_now().await;
        }
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!logging_out.is_finished());
        drop(waiters);
        assert_eq!(logging_out.await.unwrap(), Ok(1));
        let to_phone: Vec<String> = std::iter::from_fn(|| phone.try_recv())
            .map(|out| match out {
                Out::Text(t) => t.as_str().to_owned(),
                Out::Event(never) => match never {},
            })
            .collect();
        assert_eq!(
            to_phone,
            [
                r#"{"type":"session_online","session_id":"s1"}"#,
                r#"{"type":"session_removed","session_id":"s1","reason":"admin"}"#,
            ]
        );
        assert_eq!(gw.list_sessions("alice")[0].session_id, "s2");
        assert_eq!(
            gw.logout("alice", Actor::Admin, Some("s1")).await,
            Err(ErrorCode::UnknownSession)
        );

        // With the phone gone, logout_all empties the account: it is dropped.
        gw.phone_offline("alice", PHONE);
        assert_eq!(gw.logout("alice", Actor::Admin, None).await, Ok(1));
        assert!(gw.list_sessions("alice").is_empty());
        assert_eq!(gw.logout("nobody", Actor::Admin, None).await, Ok(0));
        assert_eq!(
            gw.logout("nobody", Actor::Admin, Some("s1")).await,
            Err(ErrorCode::UnknownSession)
        );
        assert!(gw.hub.account_ids().is_empty());
    }
}
