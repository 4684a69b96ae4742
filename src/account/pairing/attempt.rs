//! A pairing attempt: what a pairing web socket asks to be linked as, shared
//! between that socket and the phone that scans it, and where the attempt
//! stands ([`AttemptState`]).

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use crate::account::presence::WebPeer;
use crate::protocol::DeviceInfo;

/// What a pairing web socket asks to be linked as; shared with the phone.
pub struct Attempt {
    pub peer: WebPeer,
    pub user_agent: String,
    pub ip: String,
    shared: Mutex<Shared>,
}

/// The mutable part of an attempt, behind its lock.
pub struct Shared {
    /// A repeated `pair` may change these until the link is made.
    pub device_name: String,
    pub remember: bool,
    pub state: AttemptState,
}

/// Where a pairing attempt stands. Each transition is a method that checks
/// the state it starts from, so a dead attempt cannot be linked and an
/// attempt cannot carry two requests.
///
/// ```text
/// Waiting --link--> Requested --confirm, durable--> Linked --socket took it--> Dead
///    ^                  |
///    +-- reject/expiry -+        (any) --socket gone or stopped pairing--> Dead
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptState {
    /// Its QR is (or is about to be) on screen: a phone may link it.
    Waiting,
    /// A phone's `link` made link request `request_id` of `account` for it.
    Requested { account: String, request_id: String },
    /// The link is durable and the `Linked` event queued to the web socket.
    /// Set under the account lock, so a socket that exits before taking the
    /// event knows it has a session to take offline.
    Linked { account: String, session_id: String },
    /// The web socket is gone, stopped pairing, or took its session: nothing
    /// may link it now.
    Dead,
}

/// What an attempt left behind when its web socket gave it up.
#[derive(Debug, PartialEq, Eq)]
pub enum Abandoned {
    Nothing,
    /// A link request still pending: it dies with the socket.
    Request {
        account: String,
        request_id: String,
    },
    /// A session linked for it that the socket never took: it goes offline.
    Session {
        account: String,
        session_id: String,
    },
}

impl AttemptState {
    /// `link`: only a waiting attempt takes a request.
    pub fn request(&mut self, account: &str, request_id: &str) -> bool {
        if *self != AttemptState::Waiting {
            return false;
        }
        *self = AttemptState::Requested {
            account: account.to_owned(),
            request_id: request_id.to_owned(),
        };
        true
    }

    /// The request ended unconfirmed (rejected, expired, failed, or ended by a
    /// `logout_all`): a live attempt waits again. `false` if its web socket
    /// is gone, so nobody needs telling.
    pub fn end_request(&mut self) -> bool {
        match self {
            AttemptState::Requested { .. } => {
                *self = AttemptState::Waiting;
                true
            }
            AttemptState::Waiting => true,
            AttemptState::Linked { .. } | AttemptState::Dead => false,
        }
    }

    /// Whether the web socket still wants a link.
    pub fn is_alive(&self) -> bool {
        *self != AttemptState::Dead
    }

    /// A confirmed link became durable: the requested attempt is linked to
    /// `session_id`. `false` if its web socket gave it up meanwhile.
    pub fn link(&mut self, account: &str, session_id: &str) -> bool {
        if !matches!(self, AttemptState::Requested { .. }) {
            return false;
        }
        *self = AttemptState::Linked {
            account: account.to_owned(),
            session_id: session_id.to_owned(),
        };
        true
    }

    /// The web socket gives the attempt up (it left, resumed a session, or
    /// took its linked session): dead, whatever it was.
    pub fn abandon(&mut self) -> Abandoned {
        match std::mem::replace(self, AttemptState::Dead) {
            AttemptState::Requested {
                account,
                request_id,
            } => Abandoned::Request {
                account,
                request_id,
            },
            AttemptState::Linked {
                account,
                session_id,
            } => Abandoned::Session {
                account,
                session_id,
            },
            AttemptState::Waiting | AttemptState::Dead => Abandoned::Nothing,
        }
    }
}

impl Attempt {
    pub fn new(
        peer: WebPeer,
        user_agent: String,
        ip: String,
        device_name: String,
        remember: bool,
    ) -> Self {
        Attempt {
            peer,
            user_agent,
            ip,
            shared: Mutex::new(Shared {
                device_name,
                remember,
                state: AttemptState::Waiting,
            }),
        }
    }

    pub fn lock(&self) -> parking_lot::MutexGuard<'_, Shared> {
        self.shared.lock()
    }

    pub fn device(&self) -> DeviceInfo {
        DeviceInfo {
            name: self.shared.lock().device_name.clone(),
            user_agent: self.user_agent.clone(),
            ip: self.ip.clone(),
        }
    }
}

/// A `link_request` waiting for the phone's answer. It belongs to the account,
/// so a newer phone socket may answer it.
pub struct LinkRequest {
    pub attempt: Arc<Attempt>,
    pub expires_at: Instant,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requested() -> AttemptState {
        let mut state = AttemptState::Waiting;
        assert!(state.request("alice", "r1"));
        state
    }

    /// An attempt carries one request at a time, and a dead one none.
    #[test]
    fn only_a_waiting_attempt_takes_a_request() {
        let mut state = requested();
        assert!(!state.request("alice", "r2"));
        assert_eq!(
            state,
            AttemptState::Requested {
                account: "alice".into(),
                request_id: "r1".into()
            }
        );
        let mut dead = AttemptState::Dead;
        assert!(!dead.request("alice", "r1"));
        assert_eq!(dead, AttemptState::Dead);
    }

    /// An ended request leaves a live attempt waiting (to be told to start
    /// over), a dead one dead (nobody to tell).
    #[test]
    fn an_ended_request_waits_again_unless_dead() {
        let mut state = requested();
        assert!(state.end_request());
        assert_eq!(state, AttemptState::Waiting);
        let mut dead = AttemptState::Dead;
        assert!(!dead.end_request());
        assert_eq!(dead, AttemptState::Dead);
    }

    /// Only a requested attempt is linked: one given up meanwhile is not.
    #[test]
    fn only_a_requested_attempt_is_linked() {
        let mut state = requested();
        assert!(state.link("alice", "s1"));
        assert!(!AttemptState::Dead.link("alice", "s1"));
        assert!(!AttemptState::Waiting.link("alice", "s1"));
        // A linked attempt cannot be requested or ended again.
        assert!(!state.request("alice", "r2"));
        assert!(!state.end_request());
    }

    /// Giving up an attempt hands back what it left behind, and it stays dead.
    #[test]
    fn abandoning_hands_back_the_request_or_the_session() {
        let mut state = requested();
        assert_eq!(
            state.abandon(),
            Abandoned::Request {
                account: "alice".into(),
                request_id: "r1".into()
            }
        );
        assert!(!state.is_alive());
        let mut state = requested();
        state.link("alice", "s1");
        assert_eq!(
            state.abandon(),
            Abandoned::Session {
                account: "alice".into(),
                session_id: "s1".into()
            }
        );
        assert_eq!(state.abandon(), Abandoned::Nothing);
        assert_eq!(AttemptState::Waiting.abandon(), Abandoned::Nothing);
    }
}
