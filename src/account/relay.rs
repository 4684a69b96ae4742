//! Relaying: a web session's `send` to the phone and the phone's `send` to
//! one session or all, allowed only through the current sockets and within
//! the body-size bound.

use serde_json::value::RawValue;

use super::SUPERSEDED;
use crate::gateway::Gateway;
use crate::protocol::{ErrorCode, ServerFrame};

impl Gateway {
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
                let phone = state.phone.clone().ok_or(ErrorCode::PhoneOffline)?;
                if !phone.reachable() {
                    return Err(ErrorCode::Unavailable);
                }
                Ok(phone)
            })
            .unwrap_or(Err(ErrorCode::LoggedOut))?;
        let frame = ServerFrame::Message {
            from: session_id,
            body,
        }
        .to_utf8_bytes();
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
        let frame = ServerFrame::Message {
            from: "phone",
            body,
        }
        .to_utf8_bytes();
        let delivered = self
            .hub
            .with_existing(account, |state| {
                if !state.is_phone(phone) {
                    return Err(SUPERSEDED);
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
