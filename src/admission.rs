//! Admission of WebSocket upgrades: how many sockets this node holds
//! (`--max-sockets`, by default what the open-files limit allows with
//! headroom) and how many one client IP holds (`--max-sockets-per-ip`).
//! Checked before the handshake, so a refused upgrade costs no socket task.
//!
//! An admitted socket holds an [`Admitted`] guard for its whole life (it sits
//! in the socket's `Conn`): dropping it gives the place back. The per-IP
//! table holds only IPs with a socket open: an entry leaves with its last
//! socket, so the table is bounded by `max_sockets` and shrinks to nothing.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;

use crate::contract::{RETRY_AFTER_FULL_SECS, RETRY_AFTER_PER_IP_SECS};
use crate::gateway::Gateway;
use crate::log_throttle::LogThrottle;

/// Descriptors kept free beside the sockets when `--max-sockets` is 0: the
/// store, the listener, the runtime, Redis, and HTTP requests (`/healthz`,
/// `/metrics`, handshakes) must still find one.
const MIN_HEADROOM_FDS: u64 = 32;
/// ...or this fraction of the limit (2%: 400 of 20,000), whichever is more.
/// Plain HTTP connections are short (the header timeout bounds them), so a
/// small share is enough; a tenth kept 2,000 descriptors idle here.
const HEADROOM_DIVISOR: u64 = 50;

/// Whether an upgrade from `ip` may go on: its place, or why not (counted
/// and logged; its answer is [`Refusal`]'s `IntoResponse`).
pub fn admit_upgrade(gw: &Gateway, ip: IpAddr) -> Result<Admitted, Refusal> {
    let refusal = if gw.drain.is_draining() {
        Refusal::Draining
    } else {
        match gw.admission.admit(ip) {
            Ok(place) => return Ok(place),
            Err(refusal) => refusal,
        }
    };
    gw.metrics.upgrade_refused(refusal.as_str());
    // `refused`: the refusals since the last line, this one included.
    if let Some(refused) = gw.admission.refusal_log.note() {
        tracing::info!(
            %ip,
            reason = refusal.as_str(),
            refused,
            open = gw.admission.open(),
            max = gw.admission.max(),
            "upgrade refused"
        );
    }
    Err(refusal)
}

/// `503` while draining or at the node's cap, `429` at the per-IP cap, each
/// with `Retry-After`.
impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, retry_after, text) = match self {
            Refusal::Draining => (
                StatusCode::SERVICE_UNAVAILABLE,
                RETRY_AFTER_FULL_SECS,
                "this node is shutting down",
            ),
            Refusal::Cap => (
                StatusCode::SERVICE_UNAVAILABLE,
                RETRY_AFTER_FULL_SECS,
                "this node holds all the sockets it can",
            ),
            Refusal::PerIp => (
                StatusCode::TOO_MANY_REQUESTS,
                RETRY_AFTER_PER_IP_SECS,
                "too many sockets from this address",
            ),
        };
        (
            status,
            [(header::RETRY_AFTER, HeaderValue::from(retry_after))],
            text,
        )
            .into_response()
    }
}

/// Why an upgrade was refused; also the `reason` label of
/// `pairgate_upgrades_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The node is draining (SIGTERM).
    Draining,
    /// The node holds `max_sockets`.
    Cap,
    /// The client IP holds `max_sockets_per_ip`.
    PerIp,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Draining => "draining",
            Refusal::Cap => "cap",
            Refusal::PerIp => "per_ip",
        }
    }
}

pub struct Admission {
    max: usize,
    /// 0: off.
    per_ip: usize,
    open: AtomicUsize,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Refusals come in floods: one log line per second tells enough.
    refusal_log: LogThrottle,
}

/// One admitted socket's place; given back on drop.
pub struct Admitted {
    admission: Arc<Admission>,
    /// The per-IP key, when per-IP caps are on.
    ip: Option<IpAddr>,
}

impl Admission {
    /// `max_sockets` 0 means: derived from the open-files limit.
    pub fn new(max_sockets: usize, max_sockets_per_ip: usize) -> Arc<Self> {
        let max = if max_sockets == 0 {
            sockets_the_fd_limit_allows()
        } else {
            max_sockets
        };
        Arc::new(Admission {
            max,
            per_ip: max_sockets_per_ip,
            open: AtomicUsize::new(0),
            by_ip: Mutex::new(HashMap::new()),
            refusal_log: LogThrottle::new(Duration::from_secs(1)),
        })
    }

    /// The node's cap in effect.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Sockets admitted and not yet ended.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Takes a place for a socket from `ip`, or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refusal> {
        // Optimistic: take the place, give it back if over.
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Cap);
        }
        let key = (self.per_ip > 0).then(|| ip_key(ip));
        if let Some(key) = key {
            let mut by_ip = self.by_ip.lock();
            let n = by_ip.entry(key).or_insert(0);
            if *n >= self.per_ip {
                // Not a new entry: `per_ip` is at least 1.
                drop(by_ip);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::PerIp);
            }
            *n += 1;
        }
        Ok(Admitted {
            admission: self.clone(),
            ip: key,
        })
    }

    /// IPs holding at least one socket (for tests).
    pub fn ips(&self) -> usize {
        self.by_ip.lock().len()
    }
}

impl std::fmt::Debug for Admitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Admitted({:?})", self.ip)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut by_ip = self.admission.by_ip.lock();
            if let Some(n) = by_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    by_ip.remove(&ip);
                }
            }
        }
        self.admission.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What counts as one client for per-IP caps: an IPv4 address, or an IPv6
/// /64 (one subscriber's network: an attacker gets 2^64 addresses at once).
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// The soft open-files limit minus headroom (at least 1).
fn sockets_the_fd_limit_allows() -> usize {
    let limit = open_files_limit().unwrap_or(1024);
    let headroom = MIN_HEADROOM_FDS.max(limit / HEADROOM_DIVISOR);
    limit.saturating_sub(headroom).max(1) as usize
}

fn open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit with a valid pointer to a local struct.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return None;
        }
        // RLIM_INFINITY and other huge values: no practical bound.
        Some(limit.rlim_cur.min(u32::MAX.into()))
    }
    #[cfg(not(unix))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_node_cap_refuses_beyond_max_and_frees_on_drop() {
        let a = Admission::new(2, 0);
        let one = a.admit(ip("10.0.0.1")).unwrap();
        let _two = a.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(a.admit(ip("10.0.0.3")).err(), Some(Refusal::Cap));
        assert_eq!(a.open(), 2);
        drop(one);
        assert!(a.admit(ip("10.0.0.3")).is_ok());
    }

    #[test]
    fn the_per_ip_cap_counts_each_ip_and_the_table_empties() {
        let a = Admission::new(100, 2);
        let x1 = a.admit(ip("10.0.0.1")).unwrap();
        let x2 = a.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(a.admit(ip("10.0.0.1")).err(), Some(Refusal::PerIp));
        // another IP is not affected; a refusal takes no place
        let y = a.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(a.open(), 3);
        assert_eq!(a.ips(), 2);
        drop((x1, x2, y));
        assert_eq!(a.open(), 0);
        assert_eq!(a.ips(), 0, "the per-IP table shrinks to nothing");
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_v4_as_v4() {
        let a = Admission::new(100, 1);
        let _x = a.admit(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            a.admit(ip("2001:db8:1:2::ffff")).err(),
            Some(Refusal::PerIp)
        );
        assert!(a.admit(ip("2001:db8:1:3::1")).is_ok());
        let _v4 = a.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(a.admit(ip("::ffff:192.0.2.1")).err(), Some(Refusal::PerIp));
    }

    #[test]
    fn zero_means_the_fd_limit_with_headroom() {
        let a = Admission::new(0, 0);
        let limit = open_files_limit().unwrap_or(1024);
        assert!(a.max() >= 1 && (a.max() as u64) < limit.max(2));
    }
}
