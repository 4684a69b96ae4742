//! Cluster mode: several pairgate nodes sharing one Redis behave as one
//! gateway.
//!
//! Every account has a **home**: the one node that decides for it, running
//! exactly the single-node rules of [`crate::account`] over the account's
//! state. The home is whichever node first needed the account; it is named in
//! Redis (`pg:{account}:home`) and holds as long as that node's lease in
//! `pg:nodes` is renewed. A socket on another node reaches its account through
//! the home: its requests travel as calls over the bus, and at the home it is
//! a [`Peer`](crate::peer::Peer) whose frames, events and close orders travel
//! back the same way. Sessions live in Redis, written by the home only (each
//! write checks the home key: a node declared dead cannot overwrite its
//! successor).
//!
//! - [`keys`]: every Redis key and channel.
//! - `bus.rs`: the bus: one channel per node, batched publishing, the
//!   subscriber and what it does with each message.
//! - `calls.rs`: the requests a socket sends to its account's home, and the
//!   home serving them.
//! - `homes.rs`: finding, claiming and taking over an account's home.
//! - `remote.rs`: a socket on another node as the home sees it.
//! - `refs.rs`: QR refs and pairing codes in Redis, so any node's phone can
//!   link any node's QR.
//! - `misses.rs`: `--max-link-misses-per-min` counted cluster-wide.
//! - `nodes.rs`: leases, the live-node table, node death and the resync after
//!   a lost lease or a Redis outage.
//! - `route.rs`: the account API the socket tasks call: here, or at the home.
//! - `reopening.rs`: a Redis Cluster's command connection, opened anew from
//!   the seed nodes, with a backoff, when redis-rs's own is lost for good.
//! - [`redis_conn`]: a single Redis or a Redis Cluster (`redis+cluster://`),
//!   behind one client and connection type. On a Redis Cluster every
//!   account's keys share a slot (the `{account}` hash tag), each node's bus
//!   channel is a sharded channel (SSUBSCRIBE/SPUBLISH) on the shard owning
//!   its slot, and nothing sends keys of different slots in one command or
//!   pipeline.

mod bus;
mod calls;
mod homes;
pub mod keys;
mod misses;
mod nodes;
pub mod redis_conn;
mod refs;
mod remote;
mod reopening;
mod route;

use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::RwLock;
use tokio::sync::{mpsc, oneshot};

use crate::account::pairing::Attempt;
use crate::account::presence::{PhonePeer, WebPeer};
use crate::peer::Receipt;

pub use self::bus::Msg;
pub use self::calls::{Call, Reply};
pub use self::homes::Home;
pub use self::redis_conn::{RedisClient, RedisConn};
pub use self::refs::RefRecord;
pub use self::route::Delivery;

/// How long a call to another node may take before it counts as unanswered.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a logout waits for another node's teardown confirmation.
pub const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(3);
/// What the publisher takes: a message, the node it is for, and who wants to
/// know whether Redis handed it to that node (see [`Cluster::post_receipted`]).
type Outgoing = (Arc<str>, Msg, Option<oneshot::Sender<bool>>);

/// A packet's receipts, in the order of its counted deliveries.
type PacketReceipts = (Arc<str>, Vec<oneshot::Sender<bool>>, std::time::Instant);

/// Messages waiting to be published; past that a send is refused.
const BUS_QUEUE: usize = 1 << 16;

/// A socket held by this node that the cluster may need to reach: frames and
/// close orders from its account's home, and a resync that re-attaches it.
#[derive(Clone)]
pub enum LocalSocket {
    Phone {
        account: String,
        peer: PhonePeer,
    },
    Web {
        account: String,
        session_id: String,
        peer: WebPeer,
    },
}

/// This node's membership of the cluster.
pub struct Cluster {
    client: RedisClient,
    /// Commands (claims, refs, leases); reconnects by itself.
    cmd: RedisConn,
    /// This node's name on the bus: `--node-id` and a generation (the start
    /// time in ms, bumped at every resync), so what was addressed to a
    /// previous one is never taken for this one.
    me: Arc<RwLock<Arc<str>>>,
    generation: AtomicU64,
    pub node_id: String,
    lease: Duration,
    /// Redis answered the last health check and the bus is subscribed.
    up: AtomicBool,
    subscribed: AtomicBool,
    /// Set while the node starts over after a loss (see `nodes.rs`).
    resyncing: AtomicBool,
    /// The current bus name holds a lease (written since the last rename).
    registered: AtomicBool,
    bus_tx: mpsc::Sender<Outgoing>,
    next_id: AtomicU64,
    /// Calls waiting for their reply, with the node they went to.
    replies: DashMap<u64, (Arc<str>, oneshot::Sender<Reply>)>,
    /// Close orders waiting for the other node's confirmation.
    acks: DashMap<u64, (Arc<str>, oneshot::Sender<()>, std::time::Instant)>,
    /// Published packets' counted deliveries waiting for their node's
    /// `Taken`, with the node and when they went out.
    receipts: DashMap<u64, PacketReceipts>,
    /// Nodes alive at the last look, by bus name, with their lease expiry.
    nodes: DashMap<Arc<str>, i64>,
    /// Where each account this node has dealt with lives.
    homes: DashMap<Arc<str>, Arc<homes::HomeSlot>>,
    /// Sockets of this node registered with their account's home.
    locals: DashMap<u64, LocalSocket>,
    /// Pairing attempts of this node's web sockets, by socket.
    attempts: DashMap<u64, Weak<Attempt>>,
    /// Asks the subscriber to move to this node's current channel.
    resubscribe: tokio::sync::Notify,
    /// This node's bus names given up at a loss (see `rename`), until a
    /// resync has told the others and dropped their leases.
    retired: parking_lot::Mutex<Vec<Arc<str>>>,
    /// Nodes already handled as dead, so a death is acted on once.
    gone: DashMap<Arc<str>, std::time::Instant>,
    /// Stops the bus and the lease once the node's sockets are gone.
    stop: tokio_util::sync::CancellationToken,
    /// The publisher's end of the bus queue, until the publisher starts.
    pending_bus: parking_lot::Mutex<Option<mpsc::Receiver<Outgoing>>>,
    /// The cluster's link misses of the last minute, as last read.
    seen_misses: misses::SeenMisses,
}

impl Cluster {
    /// Connects to Redis (failing start-up when it cannot be reached), and
    /// checks its persistence settings. `reconnects` counts the attempts at
    /// a new connection after one was lost.
    pub async fn connect(
        url: &str,
        node_id: String,
        lease: Duration,
        reconnects: prometheus_client::metrics::counter::Counter,
    ) -> anyhow::Result<Arc<Self>> {
        let client = RedisClient::open(url)?;
        let cmd = tokio::time::timeout(Duration::from_secs(10), client.connect(reconnects))
            .await
            .map_err(|_| anyhow::anyhow!("--redis {url}: no answer within 10 s"))?
            .map_err(|e| anyhow::anyhow!("--redis {url}: {e}"))?;
        let (bus_tx, bus_rx) = mpsc::channel(BUS_QUEUE);
        // The first generation is the start time: a node restarted under the
        // same `--node-id` is never taken for the one that died, whose
        // sockets the others must still see gone.
        let first_generation = crate::time::now_ms().max(1) as u64;
        let me: Arc<str> = Arc::from(format!("{node_id}#{first_generation}"));
        let cluster = Arc::new(Cluster {
            client,
            cmd,
            me: Arc::new(RwLock::new(me)),
            generation: AtomicU64::new(first_generation),
            node_id,
            lease,
            up: AtomicBool::new(false),
            subscribed: AtomicBool::new(false),
            resyncing: AtomicBool::new(false),
            registered: AtomicBool::new(false),
            bus_tx,
            next_id: AtomicU64::new(1),
            replies: DashMap::new(),
            acks: DashMap::new(),
            receipts: DashMap::new(),
            nodes: DashMap::new(),
            homes: DashMap::new(),
            locals: DashMap::new(),
            attempts: DashMap::new(),
            resubscribe: tokio::sync::Notify::new(),
            pending_bus: parking_lot::Mutex::new(None),
            gone: DashMap::new(),
            retired: parking_lot::Mutex::new(Vec::new()),
            stop: tokio_util::sync::CancellationToken::new(),
            seen_misses: Default::default(),
        });
        cluster.check_persistence().await;
        *cluster.pending_bus.lock() = Some(bus_rx);
        Ok(cluster)
    }

    /// This node's current bus name.
    pub fn me(&self) -> Arc<str> {
        self.me.read().clone()
    }

    /// A shared view of the bus name, for the store's fencing check.
    pub fn me_handle(&self) -> Arc<RwLock<Arc<str>>> {
        self.me.clone()
    }

    pub fn redis_client(&self) -> RedisClient {
        self.client.clone()
    }

    /// Whether Redis answers and the bus is subscribed: messages may go out.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire) && self.subscribed.load(Ordering::Acquire)
    }

    /// `/readyz`: up, and not in the middle of a resync.
    pub fn is_ready(&self) -> bool {
        self.is_up() && !self.resyncing.load(Ordering::Acquire)
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues `msg` for `node`. `false` when the bus is down or full: the
    /// caller answers `unavailable` rather than pretend.
    pub fn post(&self, node: &Arc<str>, msg: Msg) -> bool {
        self.is_up() && self.bus_tx.try_send((node.clone(), msg, None)).is_ok()
    }

    /// Queues `msg` (a counted `Deliver`) for `node`, with a receipt: `true`
    /// once that node has answered that a socket took it; `false` (or
    /// dropped) when the publish failed, nobody was subscribed (the node is
    /// gone, or it started over under a new name), the socket was gone or
    /// its queue full (closed 4030), or no answer came in time. `None` when
    /// the bus is down or full. What a socket's `ack` counts as delivered on
    /// another node waits for this, so no `ack` counts a message that a Redis
    /// outage swallowed or a slow socket refused.
    pub fn post_receipted(&self, node: &Arc<str>, msg: Msg) -> Option<Receipt> {
        if !self.is_up() {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.bus_tx
            .try_send((node.clone(), msg, Some(tx)))
            .ok()
            .map(|()| rx)
    }

    /// Warns when Redis keeps less than the durability promise needs; on a
    /// Redis Cluster, every master is asked (each holds some accounts).
    async fn check_persistence(&self) {
        let mut cmd = self.cmd.clone();
        let mut config_get = redis::cmd("CONFIG");
        config_get.arg("GET").arg("append*");
        let answers = match cmd.on_every_master(config_get).await {
            Ok(answers) => answers,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot read Redis's persistence settings (CONFIG GET): durability unchecked"
                );
                return;
            }
        };
        for (node, answer) in answers {
            let Ok(pairs) = redis::from_redis_value::<Vec<String>>(answer) else {
                tracing::warn!(
                    node = %node,
                    "cannot read Redis's persistence settings (CONFIG GET): durability unchecked"
                );
                continue;
            };
            let setting = |name: &str| {
                pairs
                    .chunks(2)
                    .find(|kv| kv[0] == name)
                    .and_then(|kv| kv.get(1).cloned())
                    .unwrap_or_default()
            };
            let (aof, fsync) = (setting("appendonly"), setting("appendfsync"));
            if aof != "yes" || fsync != "always" {
                tracing::warn!(
                    node = %node,
                    appendonly = %aof,
                    appendfsync = %fsync,
                    "Redis is configured weaker than the durability promise needs \
                     (appendonly yes, appendfsync always): a link or logout acknowledged \
                     just before Redis crashes may be lost"
                );
            }
        }
    }
}
