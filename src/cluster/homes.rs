//! Finding an account's home: the node named in `pg:{account}:home`, as long
//! as its lease holds. A node that needs an account nobody serves (or whose
//! home is dead) claims it with one script on that single key, loads the
//! account's sessions from Redis, and serves it from then on.

use std::sync::Arc;

use parking_lot::Mutex;
use redis::Script;

use super::{Cluster, keys};
use crate::gateway::Gateway;
use crate::protocol::ErrorCode;
use crate::time::now_ms;

/// Where an account is decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Home {
    /// This node: the account's state is in this node's hub.
    Here,
    /// Another node, by bus name.
    Remote(Arc<str>),
}

/// What this node knows of one account's home; `claiming` lets one task at a
/// time look it up in Redis, and `serving` keeps an account this node is home
/// for from being released while a request about it runs.
#[derive(Default)]
pub struct HomeSlot {
    known: Mutex<Option<Home>>,
    claiming: tokio::sync::Mutex<()>,
    serving: Arc<tokio::sync::RwLock<()>>,
}

/// The account's home as a request sees it: here (held for the request, see
/// `HomeSlot::serving`) or on another node.
pub enum Homed {
    Here(#[allow(dead_code)] tokio::sync::OwnedRwLockReadGuard<()>),
    Remote(Arc<str>),
}

/// Releases the home key if this node holds it.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#;

/// Claims the home key: for this node (ARGV[1]) when nobody holds it, when it
/// already does, or when it is held by ARGV[2], a node found dead. Returns the
/// holder after the call.
const CLAIM: &str = r#"
local holder = redis.call('GET', KEYS[1])
if (not holder) or holder == ARGV[1] or holder == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1])
  return ARGV[1]
end
return holder
"#;

impl Cluster {
    /// The account's home, claiming it for this node when nobody live holds
    /// it (then its sessions are loaded before this returns).
    pub async fn home_of(
        self: &Arc<Self>,
        gw: &Arc<Gateway>,
        account: &str,
    ) -> Result<Homed, ErrorCode> {
        loop {
            let slot = match self.homes.get(account) {
                Some(slot) => slot.clone(),
                None => self.homes.entry(Arc::from(account)).or_default().clone(),
            };
            let home = match self.usable(&slot) {
                Some(home) => home,
                None => {
                    let _claiming = slot.claiming.lock().await;
                    match self.usable(&slot) {
                        Some(home) => home,
                        None => {
                            let home = self.claim(gw, account).await?;
                            *slot.known.lock() = Some(home.clone());
                            home
                        }
                    }
                }
            };
            match home {
                Home::Remote(node) => return Ok(Homed::Remote(node)),
                Home::Here => {
                    let serving = slot.serving.clone().read_owned().await;
                    // Released while this request waited: look again.
                    if *slot.known.lock() == Some(Home::Here) {
                        return Ok(Homed::Here(serving));
                    }
                }
            }
        }
    }

    /// Releases the accounts this node is home for that need nothing from
    /// it now (no socket anywhere, nothing pending, no grace running): their
    /// state leaves this node's memory and the home key is freed, so the next
    /// node that needs one claims it. A request in flight keeps its account.
    pub(super) async fn release_idle_homes(&self, gw: &Gateway) {
        let candidates: Vec<(Arc<str>, Arc<HomeSlot>)> = self
            .homes
            .iter()
            .filter(|e| *e.value().known.lock() == Some(Home::Here))
            .filter(|e| gw.hub.is_settled(e.key()))
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        let me = self.me();
        let script = Script::new(RELEASE);
        let mut cmd = self.cmd.clone();
        for (account, slot) in candidates {
            let Ok(_serving) = slot.serving.clone().try_write_owned() else {
                continue;
            };
            if !gw.hub.is_settled(&account) {
                continue;
            }
            // Freed in Redis first: until then this node still serves it.
            let released: redis::RedisResult<i64> = script
                .key(keys::home(&account))
                .arg(&*me)
                .invoke_async(&mut cmd)
                .await;
            match released {
                Ok(_) => {
                    gw.release_account(&account);
                    *slot.known.lock() = None;
                    self.homes.remove_if(&account, |_, s| Arc::ptr_eq(s, &slot));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "home not released (Redis)");
                    return;
                }
            }
        }
    }

    /// The known home, unless it is a node no longer alive.
    fn usable(&self, slot: &HomeSlot) -> Option<Home> {
        match &*slot.known.lock() {
            Some(Home::Here) => Some(Home::Here),
            Some(Home::Remote(node)) if self.nodes.contains_key(node) => {
                Some(Home::Remote(node.clone()))
            }
            _ => None,
        }
    }

    /// Where the account lives, as far as this node knows without asking.
    pub fn homes_known(&self, account: &str) -> Option<Home> {
        self.homes
            .get(account)
            .and_then(|slot| slot.known.lock().clone())
    }

    /// Learns the account's home from a message it sent (a link made there).
    pub(super) fn learn_home(&self, account: &str, node: &Arc<str>) {
        let slot = self.homes.entry(Arc::from(account)).or_default().clone();
        let mut known = slot.known.lock();
        if known.is_none() {
            *known = Some(Home::Remote(node.clone()));
        }
    }

    /// Forgets where the account lives (the home said it is not, or went away).
    pub fn forget_home(&self, account: &str) {
        if let Some(slot) = self.homes.get(account) {
            *slot.known.lock() = None;
        }
    }

    /// Forgets every account homed at `node`; returns them.
    pub(super) fn forget_homes_at(&self, node: &str) -> Vec<Arc<str>> {
        let mut orphaned = Vec::new();
        for entry in self.homes.iter() {
            let mut known = entry.value().known.lock();
            if matches!(&*known, Some(Home::Remote(n)) if &**n == node) {
                *known = None;
                orphaned.push(entry.key().clone());
            }
        }
        orphaned
    }

    async fn claim(self: &Arc<Self>, gw: &Arc<Gateway>, account: &str) -> Result<Home, ErrorCode> {
        let me = self.me();
        let script = Script::new(CLAIM);
        let mut dead = String::new();
        let mut cmd = self.cmd.clone();
        for _ in 0..3 {
            let holder: String = script
                .key(keys::home(account))
                .arg(&*me)
                .arg(&dead)
                .invoke_async(&mut cmd)
                .await
                .map_err(|e| {
                    tracing::debug!(error = %e, "home claim failed");
                    ErrorCode::Unavailable
                })?;
            if *holder == *me {
                self.load_here(gw, account).await?;
                return Ok(Home::Here);
            }
            let holder: Arc<str> = Arc::from(holder);
            if self.is_alive(&holder).await? {
                return Ok(Home::Remote(holder));
            }
            dead = holder.to_string();
        }
        Err(ErrorCode::Unavailable)
    }

    /// After a call went unanswered: whether `node` still holds its lease
    /// (asked of Redis). One that does not is handled as dead at once, as a
    /// scan would: the lease may already be gone from Redis (removed by
    /// another node), and then no scan here would ever see it go.
    pub async fn still_alive(self: &Arc<Self>, gw: &Arc<Gateway>, node: &Arc<str>) -> bool {
        if !self.nodes.contains_key(node) {
            return false;
        }
        match self.is_alive(node).await {
            Ok(true) => true,
            Ok(false) => {
                self.node_gone(gw, node);
                false
            }
            // Redis cannot say either: the caller answers `unavailable`.
            Err(_) => true,
        }
    }

    /// Whether `node` holds a live lease, asked of Redis: a claim must not
    /// trust a stale look.
    async fn is_alive(&self, node: &Arc<str>) -> Result<bool, ErrorCode> {
        let mut cmd = self.cmd.clone();
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(keys::NODES)
            .arg(&**node)
            .query_async(&mut cmd)
            .await
            .map_err(|_| ErrorCode::Unavailable)?;
        let alive = score.is_some_and(|expires| expires as i64 > now_ms());
        if alive && let Some(expires) = score {
            self.nodes.insert(node.clone(), expires as i64);
        }
        Ok(alive)
    }

    /// Loads the account's sessions into this node's hub: it is home now.
    async fn load_here(&self, gw: &Arc<Gateway>, account: &str) -> Result<(), ErrorCode> {
        let sessions = gw.store.load_account(account).await.map_err(|e| {
            tracing::warn!(error = %e, account, "cannot load the account's sessions");
            ErrorCode::Unavailable
        })?;
        tracing::debug!(account, sessions = sessions.len(), "account homed here");
        gw.adopt(account, sessions);
        Ok(())
    }
}
