//! The handles of one running gateway, handed to every socket task: config,
//! tokens, store, the account table, the pairing registry, metrics, and the
//! shutdown token and task tracker. What the gateway does with them lives in
//! [`crate::account`], one use case per file.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::account::hub::Hub;
use crate::account::pairing::{GlobalMisses, Pairing};
use crate::admission::Admission;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::drain::Drain;
use crate::ip_rate::IpRate;
use crate::metrics::Metrics;
use crate::origin::{HostRule, RefusalLog};
use crate::store::Store;
use crate::tokens::Tokens;

pub struct Gateway {
    pub config: Config,
    /// Base of QR payload links, without a trailing slash.
    pub public_url: String,
    pub tokens: Tokens,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub hub: Hub,
    pub pairing: Pairing,
    /// Cancelled when the gateway shuts down.
    pub shutdown: CancellationToken,
    /// Every socket task and timer, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// SIGTERM's drain: when each socket closes, whether upgrades are taken.
    pub drain: Drain,
    /// The socket caps (`--max-sockets`, `--max-sockets-per-ip`).
    pub admission: Arc<Admission>,
    /// The names an upgrade's `Host` may carry, worked out once from the
    /// options rather than at every upgrade.
    pub host_rule: HostRule,
    /// The `Host`/`Origin` refusals' log lines, throttled per reason.
    pub refusal_log: RefusalLog,
    /// Cluster mode: this node's membership (`None` on a single node).
    pub cluster: Option<Arc<Cluster>>,
    /// This node's name (`--node-id`, or generated at start).
    pub node_id: String,
    /// When this node started (Unix milliseconds).
    pub started_at_ms: i64,
    next_conn_id: AtomicU64,
    /// `--max-pairs-per-ip-per-min`: `pair` frames per client IP, this node.
    pub pair_rate: IpRate,
    /// `--max-link-misses-per-min` on a single node (a cluster counts in Redis).
    pub link_misses: GlobalMisses,
}

impl Gateway {
    pub fn new(
        config: Config,
        public_url: String,
        tokens: Tokens,
        store: Store,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        Gateway {
            public_url,
            tokens,
            store,
            metrics,
            hub: Hub::default(),
            pairing: Pairing::default(),
            tasks: TaskTracker::new(),
            drain: Drain::new(&shutdown),
            admission: Admission::new(config.max_sockets, config.max_sockets_per_ip),
            host_rule: HostRule::new(&config),
            refusal_log: RefusalLog::default(),
            cluster: None,
            node_id: config
                .node_id
                .clone()
                .unwrap_or_else(|| crate::ids::random_id::<6>("node-")),
            started_at_ms: crate::time::now_ms(),
            next_conn_id: AtomicU64::new(1),
            shutdown,
            pair_rate: IpRate::new(
                config.max_pairs_per_ip_per_min,
                std::time::Duration::from_secs(60),
            ),
            link_misses: GlobalMisses::new(config.max_link_misses_per_min),
            config,
        }
    }

    /// Whether this node takes new sockets: `/readyz`.
    pub fn is_ready(&self) -> bool {
        !self.drain.is_draining()
            && !self.shutdown.is_cancelled()
            && self.cluster.as_ref().is_none_or(|c| c.is_ready())
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }
}
