//! Short-lived pairing state: the refs and codes a pairing web socket shows,
//! and the attempt each one belongs to.
//!
//! A ref (and its code) is valid for one QR ttl and is single use: the phone's
//! `link` takes it out of the registry. The web socket's task owns the rotation;
//! this module only holds the lookup tables and the attempt shared between the
//! web socket and the phone that scanned it.

use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;
use parking_lot::Mutex;

use crate::peer::Peer;
use crate::protocol::DeviceInfo;
use crate::qr;

/// What a pairing web socket asks to be linked as; shared with the phone.
pub struct Attempt {
    pub peer: Peer,
    pub user_agent: String,
    pub ip: String,
    state: Mutex<AttemptState>,
}

#[derive(Default)]
pub struct AttemptState {
    /// The web socket is gone or stopped pairing: nothing may link it now.
    pub dead: bool,
    pub device_name: String,
    pub remember: bool,
    /// The account and request id of the `link_request` pending for it.
    pub request: Option<(String, String)>,
    /// Set under the account lock when the link became durable, so the web
    /// socket's exit path knows it has a session to go offline from.
    pub linked: Option<(String, String)>,
}

impl Attempt {
    pub fn new(
        peer: Peer,
        user_agent: String,
        ip: String,
        device_name: String,
        remember: bool,
    ) -> Self {
        Attempt {
            peer,
            user_agent,
            ip,
            state: Mutex::new(AttemptState {
                device_name,
                remember,
                ..AttemptState::default()
            }),
        }
    }

    pub fn lock(&self) -> parking_lot::MutexGuard<'_, AttemptState> {
        self.state.lock()
    }

    pub fn device(&self) -> DeviceInfo {
        DeviceInfo {
            name: self.state.lock().device_name.clone(),
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

/// Told to a web socket when its link is durable.
#[derive(Debug)]
pub struct LinkedWeb {
    pub account: String,
    pub session_id: String,
    pub token: String,
    pub remember: bool,
    pub phone_online: bool,
}

/// One QR's worth of identifiers.
#[derive(Clone, Debug)]
pub struct Issued {
    pub reference: String,
    /// Canonical, without hyphen.
    pub code: String,
}

/// Refs and codes currently on some screen.
#[derive(Default)]
pub struct Pairing {
    /// ref -> (its attempt, its code)
    refs: DashMap<String, (Arc<Attempt>, String)>,
    codes: DashMap<String, String>,
}

impl Pairing {
    /// Registers a fresh ref and code for `attempt`.
    pub fn issue(&self, attempt: &Arc<Attempt>) -> Issued {
        let reference = qr::new_ref();
        // 40-bit codes collide rarely; draw again when one does.
        let code = loop {
            let code = qr::new_code();
            if let dashmap::Entry::Vacant(v) = self.codes.entry(code.clone()) {
                v.insert(reference.clone());
                break code;
            }
        };
        self.refs
            .insert(reference.clone(), (attempt.clone(), code.clone()));
        Issued { reference, code }
    }

    /// Withdraws an issued ref and its code (expired, or the socket left).
    pub fn retire(&self, issued: &Issued) {
        self.refs.remove(&issued.reference);
        self.codes
            .remove_if(&issued.code, |_, r| *r == issued.reference);
    }

    /// The ref a typed code stands for.
    pub fn ref_for_code(&self, typed: &str) -> Option<String> {
        let code = qr::normalize_code(typed)?;
        self.codes.get(&code).map(|r| r.clone())
    }

    /// Whether `reference` is currently valid.
    pub fn is_valid(&self, reference: &str) -> bool {
        self.refs.contains_key(reference)
    }

    /// Takes `reference` out of circulation (single use); `None` if it was not
    /// valid or somebody else took it first.
    pub fn take(&self, reference: &str) -> Option<Arc<Attempt>> {
        let (_, (attempt, code)) = self.refs.remove(reference)?;
        self.codes.remove_if(&code, |_, r| r == reference);
        Some(attempt)
    }
}
