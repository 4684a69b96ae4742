//! The account table: every account with a live phone, a session, or pairing
//! in progress, each behind its own short-lived lock.
//!
//! Everything here is synchronous. Callers reach an account's state only
//! through closures (`with`, `with_existing`), copy out what they need and
//! never hold the lock (or a DashMap ref) across an `.await`. Lock order: the
//! accounts map is never touched while an account lock is held; an account
//! lock may be held while taking a pairing attempt's lock, never the other way
//! round.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;

use super::pairing::{LinkMisses, LinkRequest};
use super::presence::{PhonePeer, WebPeer};
use crate::protocol::SessionInfo;
use crate::store::StoredSession;
use crate::time::rfc3339_ms;

/// One linked web session in memory.
pub struct SessionState {
    pub record: StoredSession,
    /// The session's live socket; at most one.
    pub live: Option<WebPeer>,
    /// Bumped whenever `live` changes, so a grace timer started for one
    /// offline spell does nothing after a resume.
    pub epoch: u64,
}

impl SessionState {
    pub fn info(&self, now_ms: i64) -> SessionInfo {
        let r = &self.record;
        let online = self.live.is_some();
        SessionInfo {
            session_id: r.session_id.clone(),
            device_name: r.device_name.clone(),
            user_agent: r.user_agent.clone(),
            ip: r.ip.clone(),
            created_at: rfc3339_ms(r.created_at_ms),
            // A session with a live socket is active now.
            last_active_at: rfc3339_ms(if online { now_ms } else { r.last_active_at_ms }),
            online,
            remember: r.remember,
        }
    }
}

/// An account's live state. The logic over it lives with its use case:
/// presence, pairing, sessions, expiry, relay.
#[derive(Default)]
pub struct AccountState {
    /// Set when the account was dropped from the map; whoever locks a retired
    /// account fetches the current one instead.
    retired: bool,
    pub phone: Option<PhonePeer>,
    pub sessions: HashMap<String, SessionState>,
    /// Session ids of links confirmed but not yet durable: they count toward
    /// `max_devices`, and `logout_all` ends them too.
    pub linking: HashSet<String>,
    pub requests: HashMap<String, LinkRequest>,
    /// Failed `link`s within the last minute.
    pub misses: LinkMisses,
}

impl AccountState {
    /// A session read from the store, offline; `false` if it is held already.
    pub fn insert_stored(&mut self, record: StoredSession) -> bool {
        match self.sessions.entry(record.session_id.clone()) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(SessionState {
                    record,
                    live: None,
                    epoch: 0,
                });
                true
            }
        }
    }

    fn is_idle(&self) -> bool {
        self.phone.is_none()
            && self.sessions.is_empty()
            && self.linking.is_empty()
            && self.requests.is_empty()
            && self.misses.is_quiet()
    }
}

struct Account {
    state: Mutex<AccountState>,
}

/// Every account with a live phone, a session, or pairing in progress.
#[derive(Default)]
pub struct Hub {
    accounts: DashMap<Arc<str>, Arc<Account>>,
}

impl Hub {
    /// Runs `f` on the account's state under its lock, creating the account
    /// if needed. `f` must not block.
    pub fn with<R>(&self, account: &str, f: impl FnOnce(&mut AccountState) -> R) -> R {
        loop {
            let acc = match self.accounts.get(account) {
                Some(a) => a.clone(),
                None => self
                    .accounts
                    .entry(Arc::from(account))
                    .or_insert_with(|| {
                        Arc::new(Account {
                            state: Mutex::new(AccountState::default()),
                        })
                    })
                    .clone(),
            };
            let mut state = acc.state.lock();
            if !state.retired {
                return f(&mut state);
            }
        }
    }

    /// Like `with`, but only for an account that exists.
    pub fn with_existing<R>(
        &self,
        account: &str,
        f: impl FnOnce(&mut AccountState) -> R,
    ) -> Option<R> {
        let acc = self.accounts.get(account)?.clone();
        let mut state = acc.state.lock();
        (!state.retired).then(|| f(&mut state))
    }

    /// Drops the account from the map when nothing refers to it any more.
    pub fn release_if_idle(&self, account: &str) {
        self.accounts.remove_if(account, |_, acc| {
            let mut state = acc.state.lock();
            if state.is_idle() {
                state.retired = true;
                true
            } else {
                false
            }
        });
    }

    /// How many accounts are held, and how many link requests they have
    /// pending (each account locked in turn, briefly): for `/metrics`.
    pub fn census(&self) -> (usize, usize) {
        let accounts: Vec<Arc<Account>> = self.accounts.iter().map(|e| e.value().clone()).collect();
        let requests = accounts
            .iter()
            .map(|acc| acc.state.lock().requests.len())
            .sum();
        (accounts.len(), requests)
    }

    /// Cluster mode: whether the account needs nothing from the node serving
    /// it (no phone, no live or ephemeral session, nothing pending), so it
    /// may be released; an account not held is settled.
    pub fn is_settled(&self, account: &str) -> bool {
        let Some(acc) = self.accounts.get(account).map(|a| a.clone()) else {
            return true;
        };
        let state = acc.state.lock();
        state.phone.is_none()
            && state.linking.is_empty()
            && state.requests.is_empty()
            && state.misses.is_quiet()
            && state
                .sessions
                .values()
                .all(|s| s.live.is_none() && s.record.remember)
    }

    /// Drops the account, whatever it holds (cluster mode: released by this
    /// node); returns how many sessions it held.
    pub fn drop_account(&self, account: &str) -> usize {
        match self.accounts.remove(account) {
            Some((_, acc)) => {
                let mut state = acc.state.lock();
                state.retired = true;
                state.sessions.len()
            }
            None => 0,
        }
    }

    /// Drops every account (cluster mode: this node is no longer home for
    /// any). Timers that come later find nothing.
    pub fn clear(&self) {
        self.accounts.retain(|_, acc| {
            acc.state.lock().retired = true;
            false
        });
    }

    /// A snapshot of the account ids, for sweeps.
    pub fn account_ids(&self) -> Vec<Arc<str>> {
        self.accounts.iter().map(|e| e.key().clone()).collect()
    }

    /// Installs sessions read from the store at start-up.
    pub fn restore(&self, sessions: Vec<StoredSession>) {
        for record in sessions {
            let account = record.account.clone();
            self.with(&account, |state| {
                state.insert_stored(record);
            });
        }
    }
}
