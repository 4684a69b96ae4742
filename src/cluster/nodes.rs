//! Membership: every node renews a lease in `pg:nodes` (a sorted set of bus
//! name by expiry) and looks at the others'. A node whose lease ran out is
//! removed (by whoever sees it first, with a compare-and-remove) and handled
//! as dead by every node: its sockets are gone, and the accounts it was home
//! for are claimed again by the next node that needs them.
//!
//! A node that finds itself removed (it could not renew in time), or whose bus
//! subscription was lost, **resyncs**: it takes a new bus name, drops the
//! accounts it was home for, and registers its sockets with their homes anew.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::account::admin::NodeInfo;
use redis::Script;
use tungstenite::Utf8Bytes;

use super::bus::{self, Msg};
use super::{Cluster, LocalSocket, keys};
use crate::account::pairing::PairingEvent;
use crate::gateway::Gateway;
use crate::protocol::{CloseCode, LogoutReason, ServerFrame};
use crate::time::{now_ms, rfc3339_ms};

/// Removes a node from `pg:nodes` only if its lease has indeed run out.
const REMOVE_EXPIRED: &str = r#"
local expires = redis.call('ZSCORE', KEYS[1], ARGV[1])
if expires and tonumber(expires) < tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0
"#;

impl Cluster {
    /// Registers this node and starts the bus, the lease and the death
    /// watch. Returns once the bus is subscribed (or start-up fails).
    pub async fn start(self: &Arc<Self>, gw: &Arc<Gateway>) -> anyhow::Result<()> {
        let rx = self
            .pending_bus
            .lock()
            .take()
            .ok_or_else(|| anyhow::anyhow!("cluster started twice"))?;
        tokio::spawn(bus::publish_loop(self.clone(), gw.metrics.clone(), rx));
        tokio::spawn(bus::subscribe_loop(gw.clone(), self.clone()));
        // Subscribed before the lease is written: a node with a lease and no
        // subscriber is taken for dead (see `scan`).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.subscribed.load(Ordering::Acquire) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the bus did not subscribe within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.register(gw)
            .await
            .map_err(|e| anyhow::anyhow!("cannot register this node in Redis: {e}"))?;
        tokio::spawn(lease_loop(gw.clone(), self.clone()));
        tracing::info!(node = %self.me(), lease_ms = self.lease.as_millis() as u64, "joined the cluster");
        Ok(())
    }

    /// Writes this node's lease and what the operator API shows of it.
    async fn register(&self, gw: &Gateway) -> redis::RedisResult<()> {
        let me = self.me();
        let result = self.write_lease(gw, &me).await;
        if result.is_ok() {
            // Redis answers: messages may go out again.
            self.up.store(true, Ordering::Release);
            // The lease is this name's only if it did not change meanwhile.
            if *self.me() == *me {
                self.registered.store(true, Ordering::Release);
            }
        }
        result
    }

    /// Writes the lease (`pg:nodes`) and the node's info (its own key): two
    /// pipelines, as on a Redis Cluster the two keys live in different slots
    /// and a pipeline may not span slots; both go out at once.
    async fn write_lease(&self, gw: &Gateway, me: &Arc<str>) -> redis::RedisResult<()> {
        let expires = now_ms() + self.lease.as_millis() as i64;
        let (mut cmd, mut lease_cmd) = (self.cmd.clone(), self.cmd.clone());
        let lease = async {
            redis::cmd("ZADD")
                .arg(keys::NODES)
                .arg(expires)
                .arg(&**me)
                .query_async::<()>(&mut lease_cmd)
                .await
        };
        let (lease, info) = tokio::join!(lease, self.write_info(gw, me, &mut cmd));
        lease.and(info)
    }

    /// What the operator API shows of this node, expiring with its lease.
    async fn write_info(
        &self,
        gw: &Gateway,
        me: &str,
        cmd: &mut super::RedisConn,
    ) -> redis::RedisResult<()> {
        redis::pipe()
            .cmd("HSET")
            .arg(keys::node_info(me))
            .arg("node_id")
            .arg(&self.node_id)
            .arg("started_at")
            .arg(gw.started_at_ms)
            .arg("sockets")
            .arg(sockets(gw))
            .ignore()
            .cmd("PEXPIRE")
            .arg(keys::node_info(me))
            .arg(2 * self.lease.as_millis() as u64)
            .ignore()
            .query_async(cmd)
            .await
    }

    /// Renews the lease; `Ok(false)` when this node was found removed
    /// (declared dead) meanwhile.
    async fn renew(&self, gw: &Gateway) -> redis::RedisResult<bool> {
        if !self.registered.load(Ordering::Acquire) {
            // A new name not written yet: the resync writes it once its
            // channel is subscribed (a lease with nobody listening is taken
            // for a dead node); written here only if that resync gave up.
            if self.subscribed.load(Ordering::Acquire) && !self.resyncing.load(Ordering::Acquire) {
                self.register(gw).await?;
            } else {
                let mut cmd = self.cmd.clone();
                redis::cmd("PING").query_async::<()>(&mut cmd).await?;
            }
            return Ok(true);
        }
        let me = self.me();
        let expires = now_ms() + self.lease.as_millis() as i64;
        let mut cmd = self.cmd.clone();
        // `pg:nodes` in one pipeline, the info key in another (see
        // `write_lease`).
        let mut lease_cmd = cmd.clone();
        let name = me.clone();
        let lease = async move {
            redis::pipe()
                .cmd("ZADD")
                .arg(keys::NODES)
                .arg("XX")
                .arg(expires)
                .arg(&*me)
                .ignore()
                .cmd("ZSCORE")
                .arg(keys::NODES)
                .arg(&*me)
                .query_async::<(Option<f64>,)>(&mut lease_cmd)
                .await
        };
        let (lease, info) = tokio::join!(lease, self.write_info(gw, &name, &mut cmd));
        let (still,) = lease?;
        info?;
        // Renamed while this ran (a resync removes the old name's lease): not
        // a sign that the new name was taken away.
        Ok(still.is_some() || *self.me() != *name)
    }

    /// Looks at every lease: expired ones are removed and handled as dead,
    /// live ones remembered.
    async fn scan(self: &Arc<Self>, gw: &Arc<Gateway>) -> redis::RedisResult<()> {
        let mut cmd = self.cmd.clone();
        let all: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(keys::NODES)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut cmd)
            .await?;
        let now = now_ms();
        let me = self.me();
        let remove = Script::new(REMOVE_EXPIRED);
        let mut alive = std::collections::HashSet::new();
        for (node, expires) in all {
            let node: Arc<str> = Arc::from(node);
            if (expires as i64) < now && node != me {
                let _: i64 = remove
                    .key(keys::NODES)
                    .arg(&*node)
                    .arg(now)
                    .invoke_async(&mut cmd)
                    .await?;
                self.node_gone(gw, &node);
            } else {
                self.nodes.insert(node.clone(), expires as i64);
                alive.insert(node);
            }
        }
        // Removed by someone else (or gone by its own word) since the last look.
        let vanished: Vec<Arc<str>> = self
            .nodes
            .iter()
            .map(|e| e.key().clone())
            .filter(|n| !alive.contains(n))
            .collect();
        for node in vanished {
            self.node_gone(gw, &node);
        }
        Ok(())
    }

    /// Handles `node` as dead, once: its sockets are gone, calls to it are
    /// unanswered, and accounts it was home for are re-homed.
    pub(super) fn node_gone(self: &Arc<Self>, gw: &Arc<Gateway>, node: &Arc<str>) {
        if **node == *self.me() {
            return;
        }
        // The accounts homed there, taken before anything below wakes a
        // request that would re-home one of them (a dropped call waiter
        // forgets the home and claims it anew): an account re-homed first
        // would be missed here, and its sockets on this node never
        // registered with the new home (sends `logged_out`, no
        // `phone_status`).
        let orphaned: std::collections::HashSet<Arc<str>> =
            self.forget_homes_at(node).into_iter().collect();
        self.nodes.remove(node);
        if self.gone.insert(node.clone(), Instant::now()).is_none() {
            tracing::info!(node = %node, "node gone");
            gw.metrics.cluster_nodes_gone.inc();
            // Dropped waiters read as unanswered (calls) or done (teardowns).
            self.replies.retain(|_, (n, _)| n != node);
            self.acks.retain(|_, (n, _, _)| n != node);
            self.receipts.retain(|_, (n, _, _)| n != node);
            // Its sockets of the accounts homed here go offline.
            gw.sockets_gone_on(node);
        }
        // This node's sockets whose home it was register with a new one.
        if !orphaned.is_empty() {
            let reattached = self.reattach(gw, |account| orphaned.contains(account));
            gw.tasks.spawn(reattached);
        }
    }

    /// Registers this node's sockets of the accounts `which` selects with
    /// their homes anew; pairing sockets waiting on a request there start
    /// over. Returns what completes once every socket is registered (or closed).
    fn reattach(
        self: &Arc<Self>,
        gw: &Arc<Gateway>,
        which: impl Fn(&str) -> bool,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let sockets: Vec<LocalSocket> = self
            .locals
            .iter()
            .filter(|e| match e.value() {
                LocalSocket::Phone { account, .. } | LocalSocket::Web { account, .. } => {
                    which(account)
                }
            })
            .map(|e| e.value().clone())
            .collect();
        for attempt in self.attempts.iter().filter_map(|e| e.value().upgrade()) {
            let mut a = attempt.lock();
            let waiting_there = matches!(&a.state,
                crate::account::pairing::AttemptState::Requested { account, .. } if which(account));
            if waiting_there && a.state.end_request() {
                attempt.peer.send_event(PairingEvent::Rejected);
            }
        }
        let gw = gw.clone();
        async move {
            futures::future::join_all(sockets.into_iter().map(|s| reattach_one(&gw, s))).await;
        }
    }

    /// Takes the next bus name; returns the old one.
    pub(super) fn rename(&self) -> Arc<str> {
        let old = self.me();
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        *self.me.write() = Arc::from(format!("{}#{generation}", self.node_id));
        self.registered.store(false, Ordering::Release);
        self.retired.lock().push(old.clone());
        old
    }

    /// Starts over under the new bus name `rename` gave (see the module
    /// docs), `new`; the bus is subscribed under it already. Returns early,
    /// leaving the rest to the next resync, if the node lost its bus again
    /// meanwhile (it is no longer `new`).
    pub(super) async fn resync(self: Arc<Self>, gw: &Arc<Gateway>, old: Arc<str>, new: Arc<str>) {
        tracing::warn!(old = %old, new = %new, "resync: this node starts over under a new name");
        gw.metrics.cluster_resyncs.inc();
        // Every name given up since the last resync (more than one when
        // losses came in a row): its sockets are gone, its lease too. Best
        // effort: a lease not dropped now runs out.
        let retired: Vec<Arc<str>> = std::mem::take(&mut *self.retired.lock());
        let peers: Vec<Arc<str>> = self.nodes.iter().map(|e| e.key().clone()).collect();
        let mut cmd = self.cmd.clone();
        for name in &retired {
            for node in &peers {
                self.post(
                    node,
                    Msg::Gone {
                        node: name.to_string(),
                    },
                );
            }
            let _: redis::RedisResult<()> = redis::cmd("ZREM")
                .arg(keys::NODES)
                .arg(&**name)
                .query_async(&mut cmd)
                .await;
        }
        // Redis may take the subscription before it takes writes (a Redis
        // Cluster whose masters are still coming back answers CLUSTERDOWN
        // until all of them are): registering the sockets anew then would
        // fail and close them. Wait a while for the lease to be written.
        let deadline = Instant::now() + 2 * super::CALL_TIMEOUT;
        loop {
            if *self.me() != *new || self.stop.is_cancelled() {
                // Lost again (renamed): that loss's resync takes over.
                return;
            }
            match self.register(gw).await {
                Ok(()) => break,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "resync: cannot register yet; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "resync: cannot register yet");
                    break;
                }
            }
        }
        // Other nodes may have started over too: look at the leases afresh.
        self.nodes.clear();
        if let Err(e) = self.scan(gw).await {
            tracing::debug!(error = %e, "resync: lease scan failed");
        }
        self.homes.clear();
        self.replies.clear();
        self.acks.clear();
        self.receipts.clear();
        gw.hub.clear();
        // Counted again as accounts are loaded anew.
        gw.metrics.sessions.set(0);
        // Ready again only once this node's sockets are registered anew.
        let reattached = self.reattach(gw, |_| true);
        if tokio::time::timeout(REATTACH_FOR + super::CALL_TIMEOUT, reattached)
            .await
            .is_err()
        {
            tracing::warn!("resync: some sockets were not registered anew in time");
        }
    }

    /// Clean leave (SIGTERM): the lease is dropped and every live node told,
    /// after this node's sockets have closed; then the bus stops.
    pub async fn leave(&self) {
        let me = self.me();
        let peers: Vec<Arc<str>> = self.nodes.iter().map(|e| e.key().clone()).collect();
        for node in &peers {
            self.post(
                node,
                Msg::Gone {
                    node: me.to_string(),
                },
            );
        }
        // Two commands, not one pipeline: different slots on a Redis Cluster.
        let (mut cmd, mut lease_cmd) = (self.cmd.clone(), self.cmd.clone());
        let _ = tokio::join!(
            async {
                redis::cmd("ZREM")
                    .arg(keys::NODES)
                    .arg(&*me)
                    .query_async::<()>(&mut lease_cmd)
                    .await
            },
            async {
                redis::cmd("DEL")
                    .arg(keys::node_info(&me))
                    .query_async::<()>(&mut cmd)
                    .await
            },
        );
        // Let the publisher send what is queued.
        for _ in 0..50 {
            if self.bus_tx.capacity() == self.bus_tx.max_capacity() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.stop.cancel();
    }

    /// Every live node, for the operator API.
    pub async fn live_nodes(&self) -> Result<Vec<NodeInfo>, crate::protocol::ErrorCode> {
        use crate::protocol::ErrorCode;
        let mut cmd = self.cmd.clone();
        let names: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(keys::NODES)
            .arg(now_ms())
            .arg("+inf")
            .query_async(&mut cmd)
            .await
            .map_err(|_| ErrorCode::Unavailable)?;
        // One HGETALL per node, all at once: each node's info key is in a
        // slot of its own on a Redis Cluster, so no pipeline.
        let infos: Vec<std::collections::HashMap<String, String>> =
            futures::future::try_join_all(names.iter().map(|name| {
                let mut cmd = cmd.clone();
                let key = keys::node_info(name);
                async move { redis::cmd("HGETALL").arg(key).query_async(&mut cmd).await }
            }))
            .await
            .map_err(|_| ErrorCode::Unavailable)?;
        Ok(infos
            .into_iter()
            .filter(|i| i.contains_key("node_id"))
            .map(|i| NodeInfo {
                node_id: i.get("node_id").cloned().unwrap_or_default(),
                sockets: i.get("sockets").and_then(|s| s.parse().ok()).unwrap_or(0),
                started_at: rfc3339_ms(
                    i.get("started_at")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0),
                ),
            })
            .collect())
    }
}

fn sockets(gw: &Gateway) -> i64 {
    gw.metrics.sockets(crate::protocol::Role::Phone).get()
        + gw.metrics.sockets(crate::protocol::Role::Web).get()
}

/// How long a socket's registering anew is tried again while its account's
/// home cannot answer yet (it may be starting over after the same outage):
/// the socket stays open meanwhile, and only a home still unreachable after
/// this closes it 1012 (its client resumes elsewhere). Inside the contract's
/// 10 s for recovering from a Redis outage.
pub(super) const REATTACH_FOR: Duration = Duration::from_secs(6);
/// Pause between two tries.
const REATTACH_PAUSE: Duration = Duration::from_millis(200);

/// Registers one of this node's sockets with its account's home again. The
/// socket stays in this node's table of its sockets throughout (the home may
/// have taken a try whose answer was lost, and sends it deliveries already);
/// it leaves the table only when it closes.
async fn reattach_one(gw: &Arc<Gateway>, socket: LocalSocket) {
    let Some(cluster) = gw.cluster.clone() else {
        return;
    };
    let name = cluster.me();
    let until = Instant::now() + REATTACH_FOR;
    loop {
        let registered = match &socket {
            LocalSocket::Phone { account, peer } => gw.phone_online_at_home(account, peer).await,
            LocalSocket::Web {
                account,
                session_id,
                peer,
            } => gw.rejoin_at_home(account, session_id, peer).await,
        };
        if *cluster.me() != *name || cluster.stop.is_cancelled() {
            // Lost again meanwhile: that loss's resync registers it under
            // the new name (an answer to this one is stale).
            tracing::debug!(
                "socket registered under a name given up meanwhile; the next resync takes it"
            );
            return;
        }
        let (conn, closing) = match &socket {
            LocalSocket::Phone { peer, .. } => (peer.conn_id(), peer.is_close_ordered()),
            LocalSocket::Web { peer, .. } => (peer.conn_id(), peer.is_close_ordered()),
        };
        if closing || !cluster.locals.contains_key(&conn) {
            // Closed meanwhile: its leaving told the home, perhaps before
            // the home took this try (calls are served side by side), so
            // a try that registered it is taken back.
            if registered.is_ok() {
                match &socket {
                    LocalSocket::Phone { account, .. } => gw.phone_offline_routed(account, conn),
                    LocalSocket::Web {
                        account,
                        session_id,
                        ..
                    } => gw.web_offline_told(account, session_id, conn),
                }
            }
            return;
        }
        let again = registered == Err(crate::protocol::ErrorCode::Unavailable)
            && Instant::now() + REATTACH_PAUSE < until;
        if !again {
            return reattached(socket, registered);
        }
        tracing::debug!("socket's home cannot answer yet; registering it again shortly");
        tokio::time::sleep(REATTACH_PAUSE).await;
    }
}

/// Carries out what registering `socket` anew came to (a web socket
/// registered again was sent the phone's state by its home).
fn reattached(socket: LocalSocket, registered: Result<(), crate::protocol::ErrorCode>) {
    match (socket, registered) {
        (_, Ok(())) => {}
        (LocalSocket::Web { peer, .. }, Err(crate::protocol::ErrorCode::LoggedOut)) => {
            // Ended on another node meanwhile.
            let farewell: Utf8Bytes = ServerFrame::LoggedOut {
                id: None,
                reason: LogoutReason::PhoneLogout,
            }
            .to_utf8_bytes();
            peer.close(CloseCode::LoggedOut, Some(farewell));
        }
        (LocalSocket::Web { account, peer, .. }, Err(code)) => {
            tracing::info!(%account, ?code, "web socket not re-registered; closing it 1012");
            peer.order_close(CloseCode::Restarting);
        }
        (LocalSocket::Phone { account, peer }, Err(code)) => {
            tracing::info!(%account, ?code, "phone not re-registered; closing it 1012");
            peer.order_close(CloseCode::Restarting);
        }
    }
}

/// Renews the lease, watches the others', and says whether Redis answers.
async fn lease_loop(gw: Arc<Gateway>, cluster: Arc<Cluster>) {
    let tick = (cluster.lease / 3).min(Duration::from_secs(1));
    let mut resyncing = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = cluster.stop.cancelled() => return,
        }
        // Unanswered receipts: the node took too long or lost the packet
        // (not counted as delivered). Also while Redis is unreachable, so
        // no `ack` waits on them longer.
        let late = Instant::now() - super::CALL_TIMEOUT;
        cluster.receipts.retain(|_, (_, _, at)| *at > late);
        match cluster.renew(&gw).await {
            Ok(true) => {
                cluster.up.store(true, Ordering::Release);
                gw.metrics.cluster_lease_renewals.inc();
                resyncing = false;
            }
            Ok(false) => {
                cluster.up.store(true, Ordering::Release);
                if !resyncing {
                    resyncing = true;
                    tracing::warn!("this node's lease was taken away (declared dead)");
                    // The subscriber moves to the new name and resyncs.
                    cluster.resubscribe.notify_one();
                }
            }
            Err(e) => {
                if cluster.up.swap(false, Ordering::AcqRel) {
                    tracing::warn!(error = %e, "Redis unreachable: not ready");
                }
                continue;
            }
        }
        if let Err(e) = cluster.scan(&gw).await {
            tracing::debug!(error = %e, "lease scan failed");
        }
        cluster.release_idle_homes(&gw).await;
        let stale = Instant::now() - Duration::from_secs(60);
        cluster.gone.retain(|_, at| *at > stale);
        let old = Instant::now() - 3 * super::TEARDOWN_TIMEOUT;
        cluster.acks.retain(|_, (_, _, at)| *at > old);
    }
}
