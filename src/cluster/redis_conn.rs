//! The Redis cluster mode talks to: a single Redis (`redis://…`, anything
//! the redis crate opens) or a Redis Cluster (`redis+cluster://h1:p1,h2:p2,…`,
//! any reachable masters as seeds), behind one kind of client and connection
//! so the rest of the cluster code does not care which.
//!
//! - [`RedisClient`]: what `--redis` names; opens the command connection, a
//!   bus subscription, and the store's blocking connection.
//! - [`RedisConn`]: the command connection; a [`redis::aio::ConnectionLike`]
//!   by delegation, so `query_async` and `Script::invoke_async` work on it
//!   as on the single Redis's `ConnectionManager`. On a Redis Cluster each
//!   command goes to the master of its key's slot; a pipeline must keep to
//!   one slot (redis-rs refuses a cross-slot pipeline), so callers split
//!   theirs per slot. The cluster's connection is opened anew from the seed
//!   nodes when redis-rs's own is lost for good (see `reopening.rs`).
//! - [`Subscriber`], [`Subscription`]: this node's bus channel. On a single Redis,
//!   SUBSCRIBE; on a Redis Cluster, SSUBSCRIBE (sharded pub/sub, Redis 7),
//!   so each node's traffic stays on the shard owning its channel's slot
//!   instead of being broadcast to every shard.
//! - [`SyncConn`]: the store writer thread's blocking connection.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use redis::aio::ConnectionLike;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};
use tokio::sync::mpsc;

use super::reopening::ReopeningConn;

/// How long connecting to one Redis node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one answer may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a command may take on a Redis Cluster, redirections (MOVED/ASK)
/// and reconnections included: a little over one answer's timeout, so a
/// redirect still fits but an outage is reported about as fast as on a
/// single Redis.
const CLUSTER_OVERALL_TIMEOUT: Duration = Duration::from_secs(4);
/// Retries on a Redis Cluster (redirections count as retries), kept few
/// and short for the same reason.
const CLUSTER_RETRIES: u32 = 3;

/// Where `--redis` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One Redis: the URL as given.
    Single(String),
    /// A Redis Cluster: one `redis://host:port` URL per seed node.
    Cluster(Vec<String>),
}

impl Target {
    /// Reads `--redis`: `redis+cluster://h1:p1,h2:p2,…` (an optional
    /// `user:password@` before the first node applies to all of them) names
    /// a Redis Cluster; anything else is a single Redis's URL.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("rediss+cluster://") {
            anyhow::bail!(
                "--redis {url}: TLS to a Redis Cluster (rediss+cluster://) is not supported; \
                 use redis+cluster://"
            );
        }
        let Some(rest) = url.strip_prefix("redis+cluster://") else {
            return Ok(Target::Single(url.to_owned()));
        };
        let (auth, hosts) = match rest.rsplit_once('@') {
            Some((auth, hosts)) => (format!("{auth}@"), hosts),
            None => (String::new(), rest),
        };
        // A cluster has database 0 only: no path beyond a trailing slash.
        let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
        anyhow::ensure!(
            !hosts.contains(['/', '?', '#']),
            "--redis {url}: a Redis Cluster URL names nodes only \
             (redis+cluster://host:port,host:port,…)"
        );
        let mut nodes = Vec::new();
        for node in hosts.split(',') {
            let node = node.trim();
            anyhow::ensure!(
                !node.is_empty(),
                "--redis {url}: empty node in the list (redis+cluster://host:port,host:port,…)"
            );
            let with_port = if node
                .rsplit_once(':')
                .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                && !node.ends_with(']')
            {
                node.to_owned()
            } else {
                format!("{node}:6379")
            };
            nodes.push(format!("redis://{auth}{with_port}"));
        }
        Ok(Target::Cluster(nodes))
    }
}

/// What `--redis` names, ready to connect.
#[derive(Clone)]
pub enum RedisClient {
    Single(redis::Client),
    Cluster {
        /// Commands and the store (RESP2, no pushes). Boxed: much larger
        /// than a single Redis's client.
        client: Box<redis::cluster::ClusterClient>,
        /// The seed nodes, for the subscriber's own client (RESP3 with a
        /// push sender, built per subscription).
        nodes: Vec<String>,
    },
}

impl RedisClient {
    pub fn open(url: &str) -> anyhow::Result<Self> {
        match Target::parse(url)? {
            Target::Single(url) => Ok(RedisClient::Single(
                redis::Client::open(url.as_str())
                    .map_err(|e| anyhow::anyhow!("--redis {url}: {e}"))?,
            )),
            Target::Cluster(nodes) => {
                let client = cluster_builder(&nodes)
                    .build()
                    .map_err(|e| anyhow::anyhow!("--redis {url}: {e}"))?;
                Ok(RedisClient::Cluster {
                    client: Box::new(client),
                    nodes,
                })
            }
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisClient::Cluster { .. })
    }

    /// The connection commands go over; it reconnects by itself (on a Redis
    /// Cluster, each attempt at a new connection counts in `reconnects`).
    pub async fn connect(&self, reconnects: Counter) -> RedisResult<RedisConn> {
        match self {
            RedisClient::Single(client) => {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(1);
                let cm =
                    redis::aio::ConnectionManager::new_with_config(client.clone(), config).await?;
                Ok(RedisConn::Single(cm))
            }
            RedisClient::Cluster { client, .. } => {
                let conn = client.get_async_connection().await?;
                Ok(RedisConn::Cluster(ReopeningConn::new(
                    (**client).clone(),
                    conn,
                    reconnects,
                )))
            }
        }
    }

    /// A connection of its own for the bus subscriber, not subscribed yet.
    pub async fn subscriber(&self) -> RedisResult<Subscriber> {
        match self {
            RedisClient::Single(client) => Ok(Subscriber::Single(client.get_async_pubsub().await?)),
            RedisClient::Cluster { nodes, .. } => {
                let (tx, rx) = mpsc::unbounded_channel();
                let client = cluster_builder(nodes)
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .push_sender(tx)
                    .build()?;
                let conn = client.get_async_connection().await?;
                Ok(Subscriber::Cluster { conn, rx })
            }
        }
    }

    /// A blocking connection for the store's writer thread, each request
    /// bounded by `timeout`.
    pub fn sync_connection(&self, timeout: Duration) -> RedisResult<SyncConn> {
        match self {
            RedisClient::Single(client) => {
                let conn = client.get_connection_with_timeout(timeout)?;
                conn.set_read_timeout(Some(timeout))?;
                conn.set_write_timeout(Some(timeout))?;
                Ok(SyncConn::Single(conn))
            }
            RedisClient::Cluster { client, .. } => {
                let conn = client.get_connection()?;
                conn.set_read_timeout(Some(timeout))?;
                conn.set_write_timeout(Some(timeout))?;
                Ok(SyncConn::Cluster(Box::new(conn)))
            }
        }
    }
}

/// A cluster client's settings, the same for every connection to it.
fn cluster_builder(nodes: &[String]) -> redis::cluster::ClusterClientBuilder {
    redis::cluster::ClusterClientBuilder::new(nodes.to_vec())
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .overall_response_timeout(Some(CLUSTER_OVERALL_TIMEOUT))
        .retries(CLUSTER_RETRIES)
        .min_retry_wait(10)
        .max_retry_wait(250)
}

/// The command connection (see the module docs).
#[derive(Clone)]
pub enum RedisConn {
    Single(redis::aio::ConnectionManager),
    Cluster(ReopeningConn),
}

impl RedisConn {
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConn::Cluster(_))
    }

    /// `cmd` (a keyless server command such as CONFIG GET) on every master:
    /// each one's answer, by node.
    pub async fn on_every_master(&mut self, cmd: Cmd) -> RedisResult<Vec<(String, Value)>> {
        match self {
            RedisConn::Single(cm) => Ok(vec![(String::new(), cmd.query_async(cm).await?)]),
            RedisConn::Cluster(cc) => {
                let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                // Without a response policy the answers come back as a map
                // of node address to that node's answer.
                match cc.route_command(cmd, routing).await? {
                    Value::Map(answers) => Ok(answers
                        .into_iter()
                        .map(|(node, answer)| {
                            let node = redis::from_redis_value::<String>(node).unwrap_or_default();
                            (node, answer)
                        })
                        .collect()),
                    other => Ok(vec![(String::new(), other)]),
                }
            }
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => Box::pin(c.command(cmd)),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            RedisConn::Cluster(c) => Box::pin(c.pipeline(cmd, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            // A Redis Cluster has database 0 only.
            RedisConn::Cluster(_) => 0,
        }
    }
}

/// The bus subscriber's connection, before it subscribes.
pub enum Subscriber {
    Single(redis::aio::PubSub),
    Cluster {
        conn: redis::cluster_async::ClusterConnection,
        rx: mpsc::UnboundedReceiver<redis::PushInfo>,
    },
}

impl Subscriber {
    /// Subscribes to `channel`. The subscription ends (`next` answers
    /// `None`) at the first sign that a message may have been missed; it is
    /// never silently restored.
    pub async fn subscribe(self, channel: &str) -> RedisResult<Subscription> {
        match self {
            Subscriber::Single(mut pubsub) => {
                pubsub.subscribe(channel).await?;
                // Split rather than consumed: the sink is kept, or the
                // connection would close with it.
                let (sink, stream) = pubsub.split();
                Ok(Subscription::Single {
                    _sink: sink,
                    stream,
                })
            }
            Subscriber::Cluster { mut conn, rx } => {
                conn.ssubscribe(channel).await?;
                Ok(Subscription::Cluster { _conn: conn, rx })
            }
        }
    }
}

/// A bus subscription (see [`Subscriber::subscribe`]).
pub enum Subscription {
    Single {
        _sink: redis::aio::PubSubSink,
        stream: redis::aio::PubSubStream,
    },
    Cluster {
        /// Owns the subscriber's connections: dropped, they close.
        _conn: redis::cluster_async::ClusterConnection,
        rx: mpsc::UnboundedReceiver<redis::PushInfo>,
    },
}

impl Subscription {
    /// The next message's payload; `None` once the subscription is lost.
    pub async fn next(&mut self) -> Option<Vec<u8>> {
        match self {
            Subscription::Single { stream, .. } => {
                use futures::StreamExt;
                let msg = stream.next().await?;
                Some(msg.get_payload_bytes().to_vec())
            }
            Subscription::Cluster { rx, .. } => loop {
                let push = rx.recv().await?;
                match push.kind {
                    redis::PushKind::SMessage | redis::PushKind::Message => {
                        // [channel, payload]
                        match push.data.into_iter().nth(1) {
                            Some(Value::BulkString(payload)) => return Some(payload),
                            _ => continue,
                        }
                    }
                    // A dropped connection to any node (redis-rs reconnects
                    // and re-subscribes on its own, but what was published
                    // meanwhile is gone), or the server taking the
                    // subscription away (its slot moved to another shard):
                    // messages may have been missed. Any node's loss counts,
                    // as the push does not say whose it was: a resync too
                    // many is harmless, one too few is not.
                    redis::PushKind::Disconnection | redis::PushKind::SUnsubscribe => return None,
                    // Confirmations (also of redis-rs's re-subscriptions).
                    _ => continue,
                }
            },
        }
    }
}

/// The store writer thread's blocking connection.
pub enum SyncConn {
    Single(redis::Connection),
    /// Boxed: much larger than a single Redis's connection.
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl SyncConn {
    pub fn as_dyn(&mut self) -> &mut dyn redis::ConnectionLike {
        match self {
            SyncConn::Single(c) => c,
            SyncConn::Cluster(c) => &mut **c,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Target;

    #[test]
    fn a_cluster_url_names_its_nodes() {
        assert_eq!(
            Target::parse("redis+cluster://127.0.0.1:7000,127.0.0.1:7001,h3").unwrap(),
            Target::Cluster(vec![
                "redis://127.0.0.1:7000".into(),
                "redis://127.0.0.1:7001".into(),
                "redis://h3:6379".into(),
            ])
        );
        assert_eq!(
            Target::parse("redis+cluster://u:p@a:1,b:2/").unwrap(),
            Target::Cluster(vec!["redis://u:p@a:1".into(), "redis://u:p@b:2".into()])
        );
    }

    #[test]
    fn anything_else_is_one_redis() {
        assert_eq!(
            Target::parse("redis://127.0.0.1:6379/0").unwrap(),
            Target::Single("redis://127.0.0.1:6379/0".into())
        );
    }

    #[test]
    fn refused_cluster_urls_say_why() {
        let tls = Target::parse("rediss+cluster://a:1")
            .unwrap_err()
            .to_string();
        assert!(tls.contains("not supported"), "{tls}");
        assert!(Target::parse("redis+cluster://a:1,,b:2").is_err());
        assert!(Target::parse("redis+cluster://a:1/3").is_err());
    }
}
