//! The lifecycle of linked web sessions and of the phone's presence: link,
//! resume, go offline, logout, logout_all, self-logout, ephemeral grace and
//! idle expiry; plus relaying, which is only allowed while the phone is online.
//!
//! Every change that is announced is durable first: the store change is queued
//! under the account lock (so changes to one session reach the disk in the
//! order they were decided) and awaited before the reply goes out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use tungstenite::Utf8Bytes;

use crate::contract::{LINK_MISS_WINDOW, LINK_MISSES_PER_WINDOW, MAX_PENDING_REQUESTS};
use crate::gateway::Gateway;
use crate::hub::{AccountState, SessionState};
use crate::ids::random_id;
use crate::metrics::{LogoutKind, PairingOutcome};
use crate::pairing::{LinkRequest, LinkedWeb};
use crate::peer::{PairingEvent, Peer};
use crate::protocol::{
    CloseCode, DeviceInfo, ErrorCode, LinkTarget, LogoutReason, RemovedReason, ServerFrame,
    SessionInfo,
};
use crate::store::{Durable, StoreOp, StoredSession};
use crate::time::now_ms;

/// How stale the stored last-active time of an online session may get (at
/// most a quarter of the idle limit).
const ACTIVE_REFRESH: Duration = Duration::from_secs(3600);

/// What a socket that is no longer its role's current one is told, should it
/// ever get a reply: it was ordered closed in the same critical section that
/// replaced or ended it, so its task stops before replying.
const SUPERSEDED: ErrorCode = ErrorCode::NotAuthenticated;

/// A link request ends unconfirmed: its web socket, unless gone, starts over
/// with a fresh QR. `false` if the web socket was gone.
fn end_request(req: LinkRequest) -> bool {
    let mut a = req.attempt.lock();
    a.request = None;
    if a.dead {
        return false;
    }
    req.attempt.peer.send_pairing(PairingEvent::Rejected);
    true
}

fn text(frame: &ServerFrame<'_>) -> Utf8Bytes {
    Utf8Bytes::from(frame.to_text())
}

fn new_session_id() -> String {
    random_id::<12>("s_")
}

fn new_request_id() -> String {
    random_id::<9>("r_")
}

/// A store failure answered to the client as `internal`.
fn internal(e: impl std::fmt::Display) -> ErrorCode {
    tracing::error!(error = %e, "store change failed");
    ErrorCode::Internal
}

/// Marks a session active now and queues that to the store (bookkeeping:
/// nobody waits for it). Called under the account lock, so it reaches the disk
/// before any later removal of the session.
fn touch(store: &crate::store::Store, session: &mut SessionState) {
    session.record.last_active_at_ms = now_ms();
    store.submit(vec![StoreOp::Put(session.record.clone())]);
}

/// A session taken out of the hub, with its delete queued to the store.
type Removal = (SessionState, Result<Durable, crate::store::StoreError>);

/// Takes a session out of the hub and queues its delete (under the account lock).
fn remove(
    store: &crate::store::Store,
    state: &mut AccountState,
    session_id: &str,
) -> Option<Removal> {
    let session = state.sessions.remove(session_id)?;
    let durable = store.enqueue(vec![StoreOp::Delete {
        session_id: session_id.to_owned(),
    }]);
    Some((session, durable))
}

/// What a web socket learns when it resumes its session.
pub struct Resumed {
    pub phone_online: bool,
}

impl Gateway {
    // ---- the phone -------------------------------------------------------

    /// Makes `peer` the account's phone socket; an older one is replaced (4009).
    pub fn phone_online(&self, account: &str, peer: &Peer) {
        self.hub
            .with(account, |state| match state.phone.replace(peer.clone()) {
                // A replacement is no change of online state: nobody is told.
                Some(old) => {
                    old.order_close(CloseCode::Replaced);
                }
                None => {
                    state.to_webs(&text(&ServerFrame::PhoneStatus { online: true }));
                }
            });
    }

    /// Forgets the phone socket `conn_id`, unless a newer one already replaced it.
    pub fn phone_offline(&self, account: &str, conn_id: u64) {
        self.hub.with_existing(account, |state| {
            if state.phone.as_ref().map(Peer::conn_id) == Some(conn_id) {
                state.phone = None;
                state.to_webs(&text(&ServerFrame::PhoneStatus { online: false }));
            }
        });
        self.hub.release_if_idle(account);
    }

    // ---- linking (phone side) ---------------------------------------------

    /// `link`: takes the ref (or code), tells the web socket it was scanned, and
    /// returns the new request's id and the device asking. `phone` is the
    /// asking socket: a phone socket that was replaced has no say any more.
    pub fn link(
        &self,
        account: &str,
        phone: u64,
        target: LinkTarget,
    ) -> Result<(String, DeviceInfo), ErrorCode> {
        let max_devices = self.config.max_devices;
        let request_ttl = self.config.request_ttl();
        let result = self.hub.with(account, |state| {
            if !state.is_phone(phone) {
                return Err(SUPERSEDED);
            }
            let now = Instant::now();
            while state
                .misses
                .front()
                .is_some_and(|t| now.duration_since(*t) >= LINK_MISS_WINDOW)
            {
                state.misses.pop_front();
            }
            if state.misses.len() >= LINK_MISSES_PER_WINDOW {
                return Err(ErrorCode::RateLimited);
            }
            // Requests nobody answered in time count as rejected.
            for expired in state.take_expired_requests(now) {
                end_request(expired);
                self.metrics.pairing(PairingOutcome::Rejected);
            }
            let reference = match &target {
                LinkTarget::Ref(r) => Some(r.clone()),
                LinkTarget::Code(c) => self.pairing.ref_for_code(c),
            };
            let Some(reference) = reference.filter(|r| self.pairing.is_valid(r)) else {
                state.misses.push_back(now);
                return Err(ErrorCode::UnknownRef);
            };
            // Checked before taking the ref, so the ref stays valid.
            if state.sessions.len() + state.linking.len() >= max_devices {
                return Err(ErrorCode::TooManyDevices);
            }
            if state.requests.len() >= MAX_PENDING_REQUESTS {
                return Err(ErrorCode::RateLimited);
            }
            let Some(attempt) = self.pairing.take(&reference) else {
                state.misses.push_back(now);
                return Err(ErrorCode::UnknownRef);
            };
            let request_id = new_request_id();
            {
                let mut a = attempt.lock();
                if a.dead || a.request.is_some() {
                    return Err(ErrorCode::UnknownRef);
                }
                a.request = Some((account.to_owned(), request_id.clone()));
            }
            attempt.peer.send_pairing(PairingEvent::Scanned);
            let device = attempt.device();
            state.requests.insert(
                request_id.clone(),
                LinkRequest {
                    attempt,
                    expires_at: now + request_ttl,
                },
            );
            Ok((request_id, device))
        });
        if result.is_err() {
            self.hub.release_if_idle(account);
        }
        result
    }

    /// `link_confirm`: makes the link durable, then hands the web socket its
    /// session. Returns the new session as the phone sees it.
    pub async fn link_confirm(
        self: &Arc<Self>,
        account: &str,
        phone: u64,
        request_id: &str,
    ) -> Result<SessionInfo, ErrorCode> {
        let max_devices = self.config.max_devices;
        let (record, attempt, durable) = self.hub.with(account, |state| {
            if !state.is_phone(phone) {
                return Err(SUPERSEDED);
            }
            let Some(req) = state.requests.get(request_id) else {
                return Err(ErrorCode::UnknownRequest);
            };
            if req.expires_at <= Instant::now() || req.attempt.lock().dead {
                // Counts as rejected: the web socket (if still there) starts over.
                if let Some(req) = state.requests.remove(request_id) {
                    end_request(req);
                }
                return Err(ErrorCode::UnknownRequest);
            }
            // Links still being written count: they will be sessions. The
            // request stays pending.
            if state.sessions.len() + state.linking.len() >= max_devices {
                return Err(ErrorCode::TooManyDevices);
            }
            let attempt = req.attempt.clone();
            let (device_name, remember) = {
                let a = attempt.lock();
                (a.device_name.clone(), a.remember)
            };
            let now = now_ms();
            let record = StoredSession {
                account: account.to_owned(),
                session_id: new_session_id(),
                device_name,
                user_agent: attempt.user_agent.clone(),
                ip: attempt.ip.clone(),
                created_at_ms: now,
                last_active_at_ms: now,
                remember,
            };
            // A store that cannot take the change leaves everything as it was,
            // the request still pending.
            let durable = self
                .store
                .enqueue(vec![StoreOp::Put(record.clone())])
                .map_err(internal)?;
            state.requests.remove(request_id);
            state.linking.insert(record.session_id.clone());
            Ok((record, attempt, durable))
        })?;

        let written = durable.wait().await;
        let session_id = record.session_id.clone();
        let token = self.tokens.mint_session(account, &session_id);
        let outcome = self.hub.with(account, |state| {
            // Gone from `linking` if a `logout_all` ended the link while it was
            // being written (its delete reaches the disk after this put).
            let ended_meanwhile = !state.linking.remove(&session_id);
            let mut a = attempt.lock();
            a.request = None;
            let refused = match written {
                Err(e) => Some(internal(e)),
                Ok(()) if ended_meanwhile => Some(ErrorCode::UnknownRequest),
                Ok(()) => None,
            };
            if let Some(code) = refused {
                if !a.dead {
                    attempt.peer.send_pairing(PairingEvent::Rejected);
                }
                return Err(code);
            }
            let live = (!a.dead).then(|| {
                a.linked = Some((account.to_owned(), session_id.clone()));
                attempt.peer.clone()
            });
            drop(a);
            if let Some(peer) = &live {
                peer.send_pairing(PairingEvent::Linked(Box::new(LinkedWeb {
                    account: account.to_owned(),
                    session_id: session_id.clone(),
                    token: token.clone(),
                    remember: record.remember,
                    phone_online: state.phone.is_some(),
                })));
            }
            let offline_ephemeral = live.is_none() && !record.remember;
            let session = SessionState {
                record: record.clone(),
                live,
                epoch: 0,
            };
            let info = session.info(now_ms());
            state.sessions.insert(session_id.clone(), session);
            Ok((info, offline_ephemeral))
        });
        let (info, offline_ephemeral) = outcome?;
        self.metrics.sessions.inc();
        self.metrics.pairing(PairingOutcome::Linked);
        if offline_ephemeral {
            self.start_grace(account, &session_id, 0, self.config.ephemeral_grace());
        }
        Ok(info)
    }

    /// `link_reject`: the web socket starts over with a fresh QR.
    pub fn link_reject(
        &self,
        account: &str,
        phone: u64,
        request_id: &str,
    ) -> Result<(), ErrorCode> {
        let req = self.hub.with(account, |state| {
            if !state.is_phone(phone) {
                return Err(SUPERSEDED);
            }
            state
                .requests
                .remove(request_id)
                .ok_or(ErrorCode::UnknownRequest)
        })?;
        // A request dies with its web socket.
        if !end_request(req) {
            return Err(ErrorCode::UnknownRequest);
        }
        self.metrics.pairing(PairingOutcome::Rejected);
        Ok(())
    }

    /// Called by a scanned web socket whose request was never answered: it
    /// counts as rejected. `false` if somebody else already took the request
    /// (a confirm, a reject, a `logout_all`): their outcome reaches the socket
    /// as a pairing event.
    pub fn expire_request(&self, account: &str, request_id: &str) -> bool {
        let expired = self
            .hub
            .with_existing(account, |state| state.requests.remove(request_id).is_some())
            .unwrap_or(false);
        if expired {
            self.metrics.pairing(PairingOutcome::Rejected);
            self.hub.release_if_idle(account);
        }
        expired
    }

    /// A pairing web socket went away: its pending request dies with it.
    pub fn drop_request(&self, account: &str, request_id: &str) {
        self.hub
            .with_existing(account, |state| state.requests.remove(request_id));
        self.hub.release_if_idle(account);
    }

    // ---- session control (phone side) ---------------------------------------

    pub fn list_sessions(&self, account: &str) -> Vec<SessionInfo> {
        let now = now_ms();
        self.hub
            .with_existing(account, |state| state.list(now))
            .unwrap_or_default()
    }

    /// `logout` (one session) or `logout_all` (`session_id` `None`). Resolves
    /// once every socket of the ended sessions was sent `logged_out` and its
    /// 4001 close (or dropped), and the end is durable. Returns how many ended.
    ///
    /// `logout_all` also ends the account's links being written right now
    /// (their confirm then fails) and its pending link requests (their web
    /// sockets start over).
    pub async fn logout(
        &self,
        account: &str,
        phone: u64,
        session_id: Option<&str>,
    ) -> Result<usize, ErrorCode> {
        let reason = match session_id {
            Some(_) => LogoutReason::PhoneLogout,
            None => LogoutReason::PhoneLogoutAll,
        };
        let farewell = text(&ServerFrame::LoggedOut { id: None, reason });
        let (ended, teardowns, requests, durable) = self.hub.with(account, |state| {
            if !state.is_phone(phone) {
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
        })?;
        for req in requests {
            end_request(req);
        }
        let closed = ended.len();
        let (written, _) = tokio::join!(durable.wait(), futures::future::join_all(teardowns));
        if let Err(e) = written {
            // The phone can try again; the sockets are gone either way.
            self.undo_removal(account, ended);
            return Err(internal(e));
        }
        self.metrics.sessions.dec_by(closed as i64);
        self.metrics.logouts(reason.into(), closed);
        Ok(closed)
    }

    // ---- web sessions -----------------------------------------------------

    /// Makes `peer` the live socket of the session; an older one is replaced
    /// (4009). `logged_out` if the session no longer exists.
    pub fn resume(
        &self,
        account: &str,
        session_id: &str,
        peer: &Peer,
    ) -> Result<Resumed, ErrorCode> {
        self.hub
            .with_existing(account, |state| {
                let phone_online = state.phone.is_some();
                let session = state.sessions.get_mut(session_id)?;
                session.epoch += 1;
                // After a crash, the stored time says when the session last
                // had a socket, not when it last went offline.
                touch(&self.store, session);
                match session.live.replace(peer.clone()) {
                    Some(old) => {
                        old.order_close(CloseCode::Replaced);
                    }
                    None => state.to_phone(&ServerFrame::SessionOnline { session_id }),
                }
                Some(Resumed { phone_online })
            })
            .flatten()
            .ok_or(ErrorCode::LoggedOut)
    }

    /// The socket `conn_id` of a session closed: the session goes offline
    /// (unless a newer socket replaced it or the session has ended).
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
    async fn finish_removal(
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
    fn undo_removal(&self, account: &str, sessions: impl IntoIterator<Item = SessionState>) {
        self.hub.with(account, |state| {
            for session in sessions {
                state
                    .sessions
                    .entry(session.record.session_id.clone())
                    .or_insert(session);
            }
        });
    }

    // ---- expiry -------------------------------------------------------------

    /// Ends an ephemeral session `after` from now, unless it was resumed
    /// (its epoch moved on) in the meantime.
    pub fn start_grace(
        self: &Arc<Self>,
        account: &str,
        session_id: &str,
        epoch: u64,
        after: Duration,
    ) {
        let gw = self.clone();
        let (account, session_id) = (account.to_owned(), session_id.to_owned());
        self.tasks.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(after) => {}
                _ = gw.shutdown.cancelled() => return,
            }
            let removal = gw.hub.with_existing(&account, |state| {
                let s = state.sessions.get(&session_id)?;
                if s.live.is_some() || s.epoch != epoch {
                    return None;
                }
                remove(&gw.store, state, &session_id)
            });
            if let Some(Some(removal)) = removal {
                tracing::debug!(%account, %session_id, "ephemeral session expired");
                let _ = gw
                    .finish_removal(&account, removal, RemovedReason::Expired)
                    .await;
            }
        });
    }

    /// Removes sessions without a live socket that were last active longer
    /// than the idle limit ago.
    ///
    /// Also re-stores the last-active time of sessions that have been online
    /// for a while, so that after a crash a session that was online then is
    /// not taken for one idle since it came online.
    pub async fn sweep_idle(&self, idle: Duration) {
        let now = now_ms();
        let cutoff = now - idle.as_millis() as i64;
        let refresh_before = now - (idle / 4).min(ACTIVE_REFRESH).as_millis() as i64;
        for account in self.hub.account_ids() {
            let removed = self.hub.with_existing(&account, |state| {
                for s in state.sessions.values_mut() {
                    if s.live.is_some() && s.record.last_active_at_ms < refresh_before {
                        touch(&self.store, s);
                    }
                }
                let stale: Vec<String> = state
                    .sessions
                    .values()
                    .filter(|s| s.live.is_none() && s.record.last_active_at_ms < cutoff)
                    .map(|s| s.record.session_id.clone())
                    .collect();
                stale
                    .iter()
                    .filter_map(|sid| remove(&self.store, state, sid))
                    .collect::<Vec<_>>()
            });
            for removal in removed.unwrap_or_default() {
                tracing::debug!(%account, session_id = %removal.0.record.session_id, "idle session expired");
                let _ = self
                    .finish_removal(&account, removal, RemovedReason::Expired)
                    .await;
            }
        }
    }

    // ---- relay ------------------------------------------------------------

    /// A `send`'s body fits the contract's bound (`too_large` if not).
    fn check_body(&self, body: &RawValue) -> Result<(), ErrorCode> {
        if body.get().len() > self.config.max_body_bytes() {
            return Err(ErrorCode::TooLarge);
        }
        Ok(())
    }

    /// A web session's `send` through its live socket `web`: to the phone, if
    /// it is online and keeps up.
    pub fn relay_to_phone(
        &self,
        account: &str,
        session_id: &str,
        web: u64,
        body: &RawValue,
    ) -> Result<(), ErrorCode> {
        self.check_body(body)?;
        let phone = self
            .hub
            .with_existing(account, |state| {
                // A session that ended, or a socket that was replaced, relays nothing.
                if !state.is_live_socket(session_id, web) {
                    return Err(ErrorCode::LoggedOut);
                }
                state.phone.clone().ok_or(ErrorCode::PhoneOffline)
            })
            .unwrap_or(Err(ErrorCode::LoggedOut))?;
        let frame = text(&ServerFrame::Message {
            from: session_id,
            body,
        });
        // A full phone queue closes the phone (4030): for the sender it is offline.
        if !phone.send(&frame) {
            return Err(ErrorCode::PhoneOffline);
        }
        self.metrics.relayed_web_to_phone.inc();
        Ok(())
    }

    /// The phone's `send`: to one session's socket or every live one. Returns
    /// how many sockets took it.
    pub fn relay_to_webs(
        &self,
        account: &str,
        phone: u64,
        to: Option<&str>,
        body: &RawValue,
    ) -> Result<usize, ErrorCode> {
        self.check_body(body)?;
        let frame = text(&ServerFrame::Message {
            from: "phone",
            body,
        });
        let delivered = self
            .hub
            .with_existing(account, |state| {
                if !state.is_phone(phone) {
                    return Err(SUPERSEDED);
                }
                match to {
                    None => Ok(state.to_webs(&frame)),
                    Some(sid) => match state.sessions.get(sid) {
                        None => Err(ErrorCode::UnknownSession),
                        Some(s) => Ok(s.live.as_ref().is_some_and(|p| p.send(&frame)) as usize),
                    },
                }
            })
            .unwrap_or(Err(SUPERSEDED))?;
        self.metrics.relayed_phone_to_web.inc_by(delivered as u64);
        Ok(delivered)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio_util::sync::CancellationToken;

    use crate::config::Config;
    use crate::gateway::Gateway;
    use crate::metrics::Metrics;
    use crate::pairing::Attempt;
    use crate::peer::{Out, PairingEvent, Peer};
    use crate::protocol::{ErrorCode, LinkTarget, SessionInfo};
    use crate::store::{Backend, Store, StoreOp, StoredSession};
    use crate::tokens::Tokens;

    /// A disk that refuses every write.
    struct FailingDisk;

    impl Backend for FailingDisk {
        fn load(&mut self) -> anyhow::Result<Vec<StoredSession>> {
            Ok(Vec::new())
        }
        fn commit(&mut self, _ops: &[StoreOp]) -> anyhow::Result<()> {
            anyhow::bail!("disk full")
        }
    }

    fn gateway_on(disk: impl Backend) -> Arc<Gateway> {
        gateway_on_with(disk, Config::default())
    }

    fn gateway_on_with(disk: impl Backend, config: Config) -> Arc<Gateway> {
        let metrics = Arc::new(Metrics::new());
        let (store, stored, _writer) = Store::start(disk, metrics.clone()).unwrap();
        let gw = Arc::new(Gateway::new(
            config,
            "http://127.0.0.1:8080".into(),
            Tokens::new("k"),
            store,
            metrics,
            CancellationToken::new(),
        ));
        gw.hub.restore(stored);
        gw
    }

    /// A disk that holds one session and refuses every write.
    struct OneSessionFailingDisk;

    impl Backend for OneSessionFailingDisk {
        fn load(&mut self) -> anyhow::Result<Vec<StoredSession>> {
            Ok(vec![StoredSession {
                account: "alice".into(),
                session_id: "s1".into(),
                device_name: "curl".into(),
                user_agent: "curl/8".into(),
                ip: "127.0.0.1".into(),
                created_at_ms: 0,
                last_active_at_ms: 0,
                remember: true,
            }])
        }
        fn commit(&mut self, _ops: &[StoreOp]) -> anyhow::Result<()> {
            anyhow::bail!("disk full")
        }
    }

    /// The phone socket of the tests' account; its queue is kept so the
    /// peer stays open.
    const PHONE: u64 = 100;

    fn phone_online(gw: &Arc<Gateway>) -> crate::peer::PeerQueue {
        let (phone, queue) = Peer::new(PHONE, 1 << 20);
        gw.phone_online("alice", &phone);
        queue
    }

    /// A logout (or self-logout) whose end does not reach the disk is answered
    /// `internal` and undone: the session is still listed, as it is on disk.
    #[tokio::test]
    async fn a_failed_logout_commit_is_internal_and_keeps_the_session() {
        let gw = gateway_on(OneSessionFailingDisk);
        let _phone = phone_online(&gw);
        assert_eq!(
            gw.logout("alice", PHONE, Some("s1")).await.unwrap_err(),
            ErrorCode::Internal
        );
        assert_eq!(gw.list_sessions("alice").len(), 1);
        assert_eq!(
            gw.logout("alice", PHONE, None).await.unwrap_err(),
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

    /// A link whose store commit fails is answered `internal` and changes
    /// nothing: no session, and the web side starts over with a fresh QR.
    #[tokio::test]
    async fn a_failed_link_commit_is_internal_and_leaves_no_session() {
        let gw = gateway_on(FailingDisk);
        let (mut web_queue, reference) = pairing_web(&gw, 1);
        let _phone = phone_online(&gw);
        let (request_id, _) = gw.link("alice", PHONE, LinkTarget::Ref(reference)).unwrap();

        let confirmed = gw.link_confirm("alice", PHONE, &request_id).await;
        assert_eq!(confirmed.unwrap_err(), ErrorCode::Internal);
        assert!(gw.list_sessions("alice").is_empty());
        assert_scanned_then_rejected(&mut web_queue);
        // The request is gone too: nothing is left half-linked.
        assert_eq!(
            gw.link_confirm("alice", PHONE, &request_id)
                .await
                .unwrap_err(),
            ErrorCode::UnknownRequest
        );
        assert!(web_queue.try_recv().is_none());
    }

    /// A disk that commits only when the test lets it, one permit per batch,
    /// and remembers what it committed.
    struct HeldDisk {
        permits: std::sync::mpsc::Receiver<()>,
        committed: Arc<parking_lot::Mutex<Vec<StoreOp>>>,
    }

    impl Backend for HeldDisk {
        fn load(&mut self) -> anyhow::Result<Vec<StoredSession>> {
            Ok(Vec::new())
        }
        fn commit(&mut self, ops: &[StoreOp]) -> anyhow::Result<()> {
            self.permits.recv()?;
            self.committed.lock().extend(ops.iter().cloned());
            Ok(())
        }
    }

    /// A pairing web socket's peer and its attempt, with a ref issued.
    fn pairing_web(gw: &Arc<Gateway>, conn_id: u64) -> (crate::peer::PeerQueue, String) {
        let (web, queue) = Peer::new(conn_id, 1 << 20);
        let attempt = Arc::new(Attempt::new(
            web,
            "curl/8".into(),
            "127.0.0.1".into(),
            "curl".into(),
            true,
        ));
        (queue, gw.pairing.issue(&attempt).reference)
    }

    /// The pairing web socket was told it was scanned, then to start over.
    fn assert_scanned_then_rejected(queue: &mut crate::peer::PeerQueue) {
        let events: Vec<Out> = std::iter::from_fn(|| queue.try_recv()).collect();
        assert!(
            matches!(
                events.as_slice(),
                [
                    Out::Pairing(PairingEvent::Scanned),
                    Out::Pairing(PairingEvent::Rejected)
                ]
            ),
            "{events:?}"
        );
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
            async move { gw.logout("alice", PHONE, None).await }
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
            matches!(ops.as_slice(), [StoreOp::Put(put), StoreOp::Delete { session_id }] if put.session_id == *session_id),
            "{ops:?}"
        );
        assert_scanned_then_rejected(&mut web);
    }

    /// Requests that expired unanswered are swept by the next `link`, and
    /// their web sockets told to start over.
    #[tokio::test]
    async fn expired_link_requests_are_swept() {
        let config = Config {
            qr_ttl_ms: 1,
            ..Config::default()
        };
        let gw = gateway_on_with(FailingDisk, config);
        let _phone = phone_online(&gw);
        let (mut web, reference) = pairing_web(&gw, 1);
        gw.link("alice", PHONE, LinkTarget::Ref(reference)).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let (_other, fresh) = pairing_web(&gw, 2);
        gw.link("alice", PHONE, LinkTarget::Ref(fresh)).unwrap();
        assert_eq!(gw.hub.census().1, 1);
        assert_scanned_then_rejected(&mut web);
    }

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
        assert!(gw.logout("alice", PHONE, None).await.is_err());
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

    /// A held disk, its permits and what it committed.
    fn held_gateway(
        config: Config,
    ) -> (
        Arc<Gateway>,
        std::sync::mpsc::Sender<()>,
        Arc<parking_lot::Mutex<Vec<StoreOp>>>,
    ) {
        let (permit, permits) = std::sync::mpsc::channel();
        let committed = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let gw = gateway_on_with(
            HeldDisk {
                permits,
                committed: committed.clone(),
            },
            config,
        );
        (gw, permit, committed)
    }

    /// Starts `link_confirm` of `request_id` and returns once its put is
    /// queued (the link is being written).
    async fn start_confirm(
        gw: &Arc<Gateway>,
        request_id: String,
    ) -> tokio::task::JoinHandle<Result<SessionInfo, ErrorCode>> {
        let confirming = tokio::spawn({
            let gw = gw.clone();
            async move { gw.link_confirm("alice", PHONE, &request_id).await }
        });
        while gw.hub.with("alice", |s| s.linking.is_empty()) {
            tokio::task::yield_now().await;
        }
        confirming
    }

    /// Links still being written count toward `max_devices`: with one device
    /// allowed and one link held on its way to the disk, a second confirm is
    /// `too_many_devices` (and its request stays pending).
    #[tokio::test]
    async fn links_being_written_count_toward_max_devices() {
        let (gw, permit, _) = held_gateway(Config {
            max_devices: 1,
            ..Config::default()
        });
        let _phone = phone_online(&gw);
        let (_web1, ref1) = pairing_web(&gw, 1);
        let (_web2, ref2) = pairing_web(&gw, 2);
        let (first, _) = gw.link("alice", PHONE, LinkTarget::Ref(ref1)).unwrap();
        let (second, _) = gw.link("alice", PHONE, LinkTarget::Ref(ref2)).unwrap();
        let confirming = start_confirm(&gw, first).await;
        assert_eq!(
            gw.link_confirm("alice", PHONE, &second).await.unwrap_err(),
            ErrorCode::TooManyDevices
        );
        assert_eq!(gw.hub.census().1, 1, "the refused request stays pending");
        permit.send(()).unwrap();
        assert!(confirming.await.unwrap().is_ok());
        assert_eq!(gw.list_sessions("alice").len(), 1);
    }

    /// A link is durable before anybody hears of it: while its commit is
    /// held, the web socket has been told only `scanned`, the confirm has not
    /// answered and no session is listed.
    #[tokio::test]
    async fn a_link_is_durable_before_it_is_announced() {
        let (gw, permit, committed) = held_gateway(Config::default());
        let _phone = phone_online(&gw);
        let (mut web, reference) = pairing_web(&gw, 1);
        let (request_id, _) = gw.link("alice", PHONE, LinkTarget::Ref(reference)).unwrap();
        let confirming = start_confirm(&gw, request_id).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!confirming.is_finished());
        assert!(gw.list_sessions("alice").is_empty());
        assert!(matches!(
            web.try_recv(),
            Some(Out::Pairing(PairingEvent::Scanned))
        ));
        assert!(web.try_recv().is_none(), "announced before it was durable");
        permit.send(()).unwrap();
        let session = confirming.await.unwrap().unwrap();
        assert!(
            matches!(committed.lock().as_slice(), [StoreOp::Put(p)] if p.session_id == session.session_id)
        );
        assert!(matches!(
            web.try_recv(),
            Some(Out::Pairing(PairingEvent::Linked(_)))
        ));
    }

    /// A store whose queue is full refuses at once: the confirm is answered
    /// `internal` and nothing changes (the request stays pending, the web
    /// side still shows `scanned`).
    #[tokio::test]
    async fn a_full_store_queue_is_internal() {
        let (gw, _permit, _) = held_gateway(Config::default());
        let _phone = phone_online(&gw);
        let (mut web, reference) = pairing_web(&gw, 1);
        let (request_id, _) = gw.link("alice", PHONE, LinkTarget::Ref(reference)).unwrap();
        // The writer holds the first batch; the rest fill the queue.
        while gw.store.enqueue(Vec::new()).is_ok() {}
        assert_eq!(
            gw.link_confirm("alice", PHONE, &request_id)
                .await
                .unwrap_err(),
            ErrorCode::Internal
        );
        assert!(gw.list_sessions("alice").is_empty());
        assert_eq!(gw.hub.census().1, 1, "the request stays pending");
        assert!(matches!(
            web.try_recv(),
            Some(Out::Pairing(PairingEvent::Scanned))
        ));
        assert!(web.try_recv().is_none());
    }
}
