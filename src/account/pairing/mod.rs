//! Linking a web socket to an account: the phone's `link` (by ref or code)
//! makes a link request, `link_confirm` makes the link durable and hands the
//! web socket its session, `link_reject` and expiry send the web socket back
//! to a fresh QR; a pairing web socket that goes away drops its request.
//!
//! - `attempt.rs`: a pairing attempt and its state machine.
//! - `registry.rs`: the refs and codes on screen.
//! - `misses.rs`: the link-miss limiter.

mod attempt;
mod misses;
mod registry;

pub use attempt::{Abandoned, Attempt, AttemptState, LinkRequest};
pub use misses::{GlobalMisses, LinkMisses};
pub use registry::{Issued, Pairing};

use std::sync::Arc;
use std::time::Instant;

use super::hub::{AccountState, SessionState};
use super::{SUPERSEDED, internal};
use crate::contract::MAX_PENDING_REQUESTS;
use crate::gateway::Gateway;
use crate::ids::random_id;
use crate::metrics::PairingOutcome;
use crate::protocol::{DeviceInfo, ErrorCode, LinkTarget, SessionInfo};
use crate::store::{StoreOp, StoredSession};
use crate::time::now_ms;

/// What the phone did to a pairing web socket's attempt, queued to that
/// socket in order with its frames.
#[derive(Debug)]
pub enum PairingEvent {
    /// The phone submitted this socket's ref: pause rotation. Names the
    /// request, for a socket on another node to take its part in it.
    Scanned { account: String, request_id: String },
    /// The phone rejected (or let expire) the link request: start over.
    Rejected,
    /// The link is durable: the socket is now this live session.
    Linked(Box<LinkedWeb>),
}

/// Told to a web socket when its link is durable.
#[derive(Debug)]
pub struct LinkedWeb {
    pub account: String,
    pub session_id: String,
    pub token: String,
    pub remember: bool,
    pub phone_online: bool,
}

/// A link request ends unconfirmed: its web socket, unless gone, starts over
/// with a fresh QR. `false` if the web socket was gone.
fn end_request(req: LinkRequest) -> bool {
    let mut a = req.attempt.lock();
    if !a.state.end_request() {
        return false;
    }
    // Told under the attempt's lock, so a newer `link` of the same attempt
    // queues its `Scanned` after this.
    req.attempt.peer.send_event(PairingEvent::Rejected);
    true
}

fn new_session_id() -> String {
    random_id::<12>("s_")
}

fn new_request_id() -> String {
    random_id::<9>("r_")
}

impl AccountState {
    /// Takes out the link requests that expired unanswered.
    fn take_expired_requests(&mut self, now: Instant) -> Vec<LinkRequest> {
        let expired: Vec<String> = self
            .requests
            .iter()
            .filter(|(_, r)| r.expires_at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        expired
            .iter()
            .filter_map(|id| self.requests.remove(id))
            .collect()
    }
}

impl Gateway {
    /// `link`: takes the ref (or code), tells the web socket it was scanned, and
    /// returns the new request's id and the device asking. `phone` is the
    /// asking socket: a phone socket that was replaced has no say any more.
    pub fn link(
        &self,
        account: &str,
        phone: u64,
        target: LinkTarget,
    ) -> Result<(String, DeviceInfo), ErrorCode> {
        let by_code = matches!(target, LinkTarget::Code(_));
        let result = self.hub.with(account, |state| {
            let now = Instant::now();
            self.may_link(state, phone, now)?;
            if by_code && self.link_misses.is_full(now) {
                return Err(self.global_misses_full());
            }
            let miss = |state: &mut AccountState| {
                state.misses.note(now);
                if by_code {
                    self.link_misses.note(now);
                }
                ErrorCode::UnknownRef
            };
            let reference = match &target {
                LinkTarget::Ref(r) => Some(r.clone()),
                LinkTarget::Code(c) => self.pairing.ref_for_code(c),
            };
            let Some(reference) = reference.filter(|r| self.pairing.is_valid(r)) else {
                return Err(miss(state));
            };
            // Checked before taking the ref, so the ref stays valid.
            self.has_room_for_request(state)?;
            let Some(attempt) = self.pairing.take(&reference) else {
                return Err(miss(state));
            };
            self.request_link(state, account, attempt, now)
        });
        if result.is_err() {
            self.hub.release_if_idle(account);
        }
        result
    }

    /// Cluster mode, before the ref is taken out of Redis: the checks of
    /// `link` in its order, given whether the ref (or code) names a ref on
    /// screen, so a refused link leaves a valid ref valid.
    pub fn link_precheck(
        &self,
        account: &str,
        phone: u64,
        ref_found: bool,
    ) -> Result<(), ErrorCode> {
        let result = self.hub.with(account, |state| {
            let now = Instant::now();
            self.may_link(state, phone, now)?;
            if !ref_found {
                state.misses.note(now);
                return Err(ErrorCode::UnknownRef);
            }
            self.has_room_for_request(state)
        });
        if result.is_err() {
            self.hub.release_if_idle(account);
        }
        result
    }

    /// Cluster mode: `link` with its ref already taken (`None`: there was
    /// none). The checks run again, as the account may have changed meanwhile.
    pub fn link_taken(
        &self,
        account: &str,
        phone: u64,
        attempt: Option<Arc<Attempt>>,
    ) -> Result<(String, DeviceInfo), ErrorCode> {
        let result = self.hub.with(account, |state| {
            let now = Instant::now();
            self.may_link(state, phone, now)?;
            let Some(attempt) = attempt else {
                state.misses.note(now);
                return Err(ErrorCode::UnknownRef);
            };
            self.has_room_for_request(state)?;
            self.request_link(state, account, attempt, now)
        });
        if result.is_err() {
            self.hub.release_if_idle(account);
        }
        result
    }

    /// `--max-link-misses-per-min` is reached: this `link` by code is refused.
    pub fn global_misses_full(&self) -> ErrorCode {
        self.metrics.rate_limited("link_misses_global");
        tracing::info!(
            "link by code refused: the gateway's link misses of the last minute reached the limit"
        );
        ErrorCode::RateLimited
    }

    /// Whether the asking phone socket may link now: it is the current one
    /// and not rate limited. Sweeps requests nobody answered in time (they
    /// count as rejected).
    fn may_link(
        &self,
        state: &mut AccountState,
        phone: u64,
        now: Instant,
    ) -> Result<(), ErrorCode> {
        if !state.is_phone(phone) {
            return Err(SUPERSEDED);
        }
        if !state.misses.allows(now) {
            self.metrics.rate_limited("link_misses_account");
            return Err(ErrorCode::RateLimited);
        }
        for expired in state.take_expired_requests(now) {
            end_request(expired);
            self.metrics.pairing(PairingOutcome::Rejected);
        }
        Ok(())
    }

    /// Room for one more request: devices (links being written count) and
    /// pending requests.
    fn has_room_for_request(&self, state: &AccountState) -> Result<(), ErrorCode> {
        if state.sessions.len() + state.linking.len() >= self.config.max_devices {
            return Err(ErrorCode::TooManyDevices);
        }
        if state.requests.len() >= MAX_PENDING_REQUESTS {
            return Err(ErrorCode::RateLimited);
        }
        Ok(())
    }

    /// Makes the link request for a taken ref's attempt and tells its web
    /// socket it was scanned.
    fn request_link(
        &self,
        state: &mut AccountState,
        account: &str,
        attempt: Arc<Attempt>,
        now: Instant,
    ) -> Result<(String, DeviceInfo), ErrorCode> {
        let request_id = new_request_id();
        if !attempt.lock().state.request(account, &request_id) {
            return Err(ErrorCode::UnknownRef);
        }
        attempt.peer.send_event(PairingEvent::Scanned {
            account: account.to_owned(),
            request_id: request_id.clone(),
        });
        let device = attempt.device();
        state.requests.insert(
            request_id.clone(),
            LinkRequest {
                attempt,
                expires_at: now + self.config.request_ttl(),
            },
        );
        Ok((request_id, device))
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
            if req.expires_at <= Instant::now() || !req.attempt.lock().state.is_alive() {
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
            let refused = match written {
                Err(e) => Some(internal(e)),
                Ok(()) if ended_meanwhile => Some(ErrorCode::UnknownRequest),
                Ok(()) => None,
            };
            if let Some(code) = refused {
                if a.state.end_request() {
                    attempt.peer.send_event(PairingEvent::Rejected);
                }
                return Err(code);
            }
            // A web socket that gave its attempt up meanwhile gets no session
            // handed: the session starts offline.
            let live = a
                .state
                .link(account, &session_id)
                .then(|| attempt.peer.clone());
            drop(a);
            if let Some(peer) = &live {
                peer.send_event(PairingEvent::Linked(Box::new(LinkedWeb {
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

    /// Ends the account's pending link requests (`logout_all`): their web
    /// sockets start over. Called with the requests taken out under the lock.
    pub(in crate::account) fn end_requests(&self, requests: Vec<LinkRequest>) {
        for req in requests {
            end_request(req);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::config::Config;
    use crate::peer::Out;
    use crate::protocol::{ErrorCode, LinkTarget};
    use crate::store::StoreOp;

    use super::PairingEvent;

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
            Some(Out::Event(PairingEvent::Scanned { .. }))
        ));
        assert!(web.try_recv().is_none(), "announced before it was durable");
        permit.send(()).unwrap();
        let session = confirming.await.unwrap().unwrap();
        assert!(
            matches!(committed.lock().as_slice(), [StoreOp::Put(p)] if p.session_id == session.session_id)
        );
        assert!(matches!(
            web.try_recv(),
            Some(Out::Event(PairingEvent::Linked(_)))
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
            Some(Out::Event(PairingEvent::Scanned { .. }))
        ));
        assert!(web.try_recv().is_none());
    }
}
