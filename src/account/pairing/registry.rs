//! The refs and codes on some pairing web socket's screen, and the attempt
//! each one belongs to.
//!
//! A ref (and its code) is valid for one QR ttl and is single use: the phone's
//! `link` takes it out of the registry. The web socket's task owns the
//! rotation; this file only holds the lookup tables.

use std::sync::Arc;

use dashmap::DashMap;

use super::Attempt;
use crate::qr;

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
