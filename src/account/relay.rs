//! Relaying: a web session's `send` to the phone and the phone's `send` to
//! one session or all, allowed only through the current sockets and within
//! the body-size bound.

use serde_json::value::RawValue;

use super::SUPERSEDED;
use crate::gateway::Gateway;
use crate::peer::Receipt;
use crate::protocol::{ErrorCode, ServerFrame};

impl Gateway {
    /// A `send`'s body fits the contract's bound (`too_large` if not).
    fn check_body(&self, body: &RawValue) -> Result<(), ErrorCode> {
        if body.get().len() > self.config.max_body_bytes() {
            return Err(ErrorCode::TooLarge);
        }
        Ok(())
    }

    /// What a web socket that is not its session's live socket here is told.
    /// On one node: its session ended (`logged_out`; a replaced socket is
    /// being closed 4009 and never reads the answer). In a cluster the home
    /// may not know the socket yet although its session lives (the account
    /// just moved here, or this node is registering its sockets anew after
    /// an outage): `unavailable`, which a client retries, where `logged_out`
    /// would make it forget a live session. Only a session the home's loaded
    /// account does not have (it ended) is `logged_out` there too.
    fn not_registered(&self, session_may_live: bool) -> ErrorCode {
        if self.cluster.is_some() && session_may_live {
            ErrorCode::Unavailable
        } else {
            ErrorCode::LoggedOut
        }
    }

    /// What a phone socket that is not its account's phone here is told: on
    /// one node it was replaced (and is being closed 4009); in a cluster the
    /// home may not know it yet (see `not_registered`): `unavailable`.
    fn phone_not_registered(&self) -> ErrorCode {
        if self.cluster.is_some() {
            ErrorCode::Unavailable
        } else {
            SUPERSEDED
        }
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
        let mut receipts = Vec::new();
        self.relay_to_phone_receipted(account, session_id, web, body, &mut receipts)?;
        // One node: no socket is elsewhere, so nothing waits for a receipt.
        debug_assert!(receipts.is_empty());
        Ok(())
    }

    /// `relay_to_phone`, where a phone on another node (cluster mode) is
    /// reached once its receipt, added to `receipts`, says so: the caller
    /// waits for it before answering.
    pub fn relay_to_phone_receipted(
        &self,
        account: &str,
        session_id: &str,
        web: u64,
        body: &RawValue,
        receipts: &mut Vec<Receipt>,
    ) -> Result<(), ErrorCode> {
        self.check_body(body)?;
        let phone = self
            .hub
            .with_existing(account, |state| {
                // A session that ended, or a socket that was replaced, relays nothing.
                if !state.is_live_socket(session_id, web) {
                    return Err(self.not_registered(state.sessions.contains_key(session_id)));
                }
                let phone = state.phone.clone().ok_or(ErrorCode::PhoneOffline)?;
                if !phone.reachable() {
                    return Err(ErrorCode::Unavailable);
                }
                Ok(phone)
            })
            // Not loaded here: its sockets are not registered yet.
            .unwrap_or_else(|| Err(self.not_registered(true)))?;
        let frame = ServerFrame::Message {
            from: session_id,
            body,
        }
        .to_utf8_bytes();
        // A full phone queue closes the phone (4030): for the sender it is offline.
        let waiting = receipts.len();
        if phone.send_counted(&frame, receipts) == 0 && receipts.len() == waiting {
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
        let mut receipts = Vec::new();
        let delivered = self.relay_to_webs_receipted(account, phone, to, body, &mut receipts)?;
        // One node: no socket is elsewhere, so nothing waits for a receipt.
        debug_assert!(receipts.is_empty());
        Ok(delivered)
    }

    /// `relay_to_webs`, where sockets on other nodes (cluster mode) are not
    /// counted in the result but by their receipts, added to `receipts`.
    pub fn relay_to_webs_receipted(
        &self,
        account: &str,
        phone: u64,
        to: Option<&str>,
        body: &RawValue,
        receipts: &mut Vec<Receipt>,
    ) -> Result<usize, ErrorCode> {
        self.check_body(body)?;
        let frame = ServerFrame::Message {
            from: "phone",
            body,
        }
        .to_utf8_bytes();
        let delivered = self
            .hub
            .with_existing(account, |state| {
                if !state.is_phone(phone) {
                    return Err(self.phone_not_registered());
                }
                // Nothing is delivered unless every target can be reached:
                // a send is never half done for want of the bus.
                // (Cluster mode only: on one node every socket is reachable.)
                let unreachable = self.cluster.is_some()
                    && match to {
                        None => state
                            .sessions
                            .values()
                            .any(|s| s.live.as_ref().is_some_and(|p| !p.reachable())),
                        Some(sid) => state
                            .sessions
                            .get(sid)
                            .and_then(|s| s.live.as_ref())
                            .is_some_and(|p| !p.reachable()),
                    };
                if unreachable {
                    return Err(ErrorCode::Unavailable);
                }
                match to {
                    None => Ok(state.to_webs_counted(&frame, receipts)),
                    Some(sid) => match state.sessions.get(sid) {
                        None => Err(ErrorCode::UnknownSession),
                        Some(s) => Ok(s
                            .live
                            .as_ref()
                            .map_or(0, |p| p.send_counted(&frame, receipts))),
                    },
                }
            })
            .unwrap_or_else(|| Err(self.phone_not_registered()))?;
        // Counted as sent here; a receipt that says otherwise does not
        // count towards the `ack`'s `delivered`.
        self.metrics
            .relayed_phone_to_web
            .inc_by((delivered + receipts.len()) as u64);
        Ok(delivered)
    }
}
