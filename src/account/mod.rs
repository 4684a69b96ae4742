//! The account domain: what the gateway decides per account, one use case per
//! file, all as methods on [`Gateway`] over the account table in [`hub`].
//!
//! - [`hub`]: the account table and its per-account locks.
//! - [`presence`]: the phone and each session's live socket going online and
//!   offline, and who may act (the current phone, a session's live socket).
//! - [`pairing`]: QR refs and codes, pairing attempts, link / confirm /
//!   reject / expiry of link requests, the link-miss limiter.
//! - [`sessions`]: restore, resume, list, logout(_all) by the phone or an
//!   operator, self-logout, removal.
//! - [`expiry`]: ephemeral grace timers and the idle sweep.
//! - [`relay`]: messages between the phone and its sessions.
//! - [`admin`]: what the operator API reads (an account's sessions and
//!   where their sockets are, the live nodes); its logout is `logout`'s.
//!
//! Every change that is announced is durable first: the store change is queued
//! under the account lock (so changes to one session reach the disk in the
//! order they were decided) and awaited before the reply goes out.

pub mod admin;
pub mod expiry;
pub mod hub;
pub mod pairing;
pub mod presence;
pub mod relay;
pub mod sessions;

#[cfg(test)]
pub(crate) mod testing;

use crate::protocol::ErrorCode;

#[cfg(doc)]
use crate::gateway::Gateway;

/// What a socket that is no longer its role's current one is told, should it
/// ever get a reply: it was ordered closed in the same critical section that
/// replaced or ended it, so its task stops before replying.
const SUPERSEDED: ErrorCode = ErrorCode::NotAuthenticated;

/// A store failure answered to the client: `unavailable` when the store
/// (cluster mode: Redis) could not be reached or this node no longer serves
/// the account, else `internal`.
fn internal(e: crate::store::StoreError) -> ErrorCode {
    let text = e.to_string();
    if e.is_unreachable() || text.contains("NOTHOME") {
        tracing::warn!(error = %text, "store change not made");
        return ErrorCode::Unavailable;
    }
    tracing::error!(error = %text, "store change failed");
    ErrorCode::Internal
}
