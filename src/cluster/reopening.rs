//! The command connection to a Redis Cluster, opened anew from the seed
//! nodes when redis-rs's own can no longer recover.
//!
//! Why: redis-rs (1.8) refreshes its slot map after a connection error. If
//! that refresh reads the map from a master that dies right after (every
//! master `kill -9`ed one after the other), it keeps no connection at all,
//! and from then on each refresh fails at once on its empty connection list
//! and is retried at once: one core spins (millions of failed refreshes in
//! ten seconds) and the connection never comes back, even once every master
//! is up again, since it never goes back to the seeds. Every command it is
//! given fails with `ClusterConnectionNotFound` ("No connections found").
//!
//! redis-rs may also keep refreshing its slot map at once, over and over,
//! while every node refuses: then commands fail with refused connections.
//!
//! So: a command failing with `ClusterConnectionNotFound`, or a few in a
//! row failing for want of a node with none going through between them,
//! drop the connection (the last handle dropped stops its task, and any
//! spin with it), and a new one is opened from the seeds in the background,
//! the attempts spaced by a backoff (`RECONNECT_MIN` doubling to
//! `RECONNECT_MAX`, back to the minimum once a command succeeds) so that an
//! outage never makes this loop either. Meanwhile commands fail at once
//! (callers answer `unavailable`). Each attempt counts in
//! `pairgate_cluster_redis_reconnects`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use prometheus_client::metrics::counter::Counter;
use redis::aio::ConnectionLike;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::RoutingInfo;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisResult, Value};

/// The first wait between two attempts at a new connection.
pub const RECONNECT_MIN: Duration = Duration::from_millis(100);
/// The longest: a cluster back from an outage is reached within about this.
pub const RECONNECT_MAX: Duration = Duration::from_secs(1);
/// How long one attempt (every seed, then the slot map) may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Commands failing in a row for want of a node (refused, dropped) before
/// the connection is given up: one such failure may be a single master
/// restarting, which redis-rs rides out by itself.
const FAILURES_IN_A_ROW: u32 = 3;

/// When attempts at a new connection may start: never two closer than the
/// current delay, which doubles at each attempt and is reset by a success.
#[derive(Debug)]
pub struct Backoff {
    delay: Duration,
    last: Option<Instant>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            delay: RECONNECT_MIN,
            last: None,
        }
    }
}

impl Backoff {
    /// How long to wait before the next attempt, as of `now`; records that
    /// attempt and doubles the delay for the one after.
    pub fn next_attempt(&mut self, now: Instant) -> Duration {
        let wait = match self.last {
            Some(last) => (last + self.delay).saturating_duration_since(now),
            None => Duration::ZERO,
        };
        if self.last.is_some() {
            self.delay = (self.delay * 2).min(RECONNECT_MAX);
        }
        self.last = Some(now + wait);
        wait
    }

    /// A command went through: the next loss is retried at the shortest delay.
    pub fn reset(&mut self) {
        self.delay = RECONNECT_MIN;
    }
}

/// The connection in use, and its number (counts connections opened, so
/// a failure is blamed on its own one only); `None` while a new one is
/// being opened.
type Current = (u64, Option<ClusterConnection>);

/// See the module docs. Clones share the connection.
#[derive(Clone)]
pub struct ReopeningConn {
    client: Arc<ClusterClient>,
    current: Arc<RwLock<Current>>,
    /// Whether a task is opening a new connection, and when it may try.
    reopening: Arc<Mutex<(bool, Backoff)>>,
    /// The backoff's delay is above the minimum: a success resets it.
    raised: Arc<AtomicBool>,
    /// Commands failed in a row for want of a node (see `outcome`).
    failures: Arc<AtomicU32>,
    reconnects: Counter,
}

impl ReopeningConn {
    /// Starts with `conn`, opened from `client`.
    pub fn new(client: ClusterClient, conn: ClusterConnection, reconnects: Counter) -> Self {
        ReopeningConn {
            client: Arc::new(client),
            current: Arc::new(RwLock::new((0, Some(conn)))),
            reopening: Arc::new(Mutex::new((false, Backoff::default()))),
            raised: Arc::new(AtomicBool::new(false)),
            failures: Arc::new(AtomicU32::new(0)),
            reconnects,
        }
    }

    /// The connection in use, or an error at once while a new one is being
    /// opened.
    fn get(&self) -> RedisResult<(u64, ClusterConnection)> {
        if let (generation, Some(conn)) = &*self.current.read() {
            return Ok((*generation, conn.clone()));
        }
        self.start_reopening();
        Err(RedisError::from((
            ErrorKind::Io,
            "Redis Cluster unreachable",
            "opening a new connection from the seed nodes".to_owned(),
        )))
    }

    /// Looks at a command's outcome on connection `generation`.
    fn outcome<T>(&self, generation: u64, result: &RedisResult<T>) {
        let e = match result {
            Ok(_) => {
                // Loads first: the common case writes nothing shared.
                if self.failures.load(Ordering::Relaxed) != 0 {
                    self.failures.store(0, Ordering::Relaxed);
                }
                if self.raised.load(Ordering::Relaxed) && self.raised.swap(false, Ordering::Relaxed)
                {
                    self.reopening.lock().1.reset();
                }
                return;
            }
            Err(e) => e,
        };
        let why = if e.kind() == ErrorKind::ClusterConnectionNotFound {
            "the connection has no node left"
        } else if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
            // redis-rs may also be stuck refreshing its slot map against
            // nodes that all refuse, retrying at once: a few commands in a
            // row failing so (none going through between them) end that too.
            if self.failures.fetch_add(1, Ordering::Relaxed) + 1 < FAILURES_IN_A_ROW {
                return;
            }
            "commands in a row could reach no node"
        } else {
            return;
        };
        self.failures.store(0, Ordering::Relaxed);
        let dropped = {
            let mut current = self.current.write();
            if current.0 != generation {
                // Already replaced.
                return;
            }
            current.1.take()
        };
        if dropped.is_some() {
            tracing::warn!("Redis Cluster: {why}; opening a new connection from the seed nodes");
        }
        drop(dropped);
        self.start_reopening();
    }

    /// Spawns the task opening a new connection, unless one runs.
    fn start_reopening(&self) {
        {
            let mut reopening = self.reopening.lock();
            if reopening.0 {
                return;
            }
            reopening.0 = true;
        }
        let this = self.clone();
        tokio::spawn(async move { this.reopen().await });
    }

    /// Opens a new connection from the seeds, attempt after attempt (spaced
    /// by the backoff) until one is made.
    async fn reopen(self) {
        loop {
            let wait = self.reopening.lock().1.next_attempt(Instant::now());
            self.raised.store(true, Ordering::Relaxed);
            tokio::time::sleep(wait).await;
            self.reconnects.inc();
            match tokio::time::timeout(ATTEMPT_TIMEOUT, self.client.get_async_connection()).await {
                Ok(Ok(conn)) => {
                    {
                        let mut current = self.current.write();
                        current.0 += 1;
                        current.1 = Some(conn);
                    }
                    self.reopening.lock().0 = false;
                    tracing::info!("Redis Cluster: new connection open");
                    return;
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "Redis Cluster: cannot connect yet"),
                Err(_) => tracing::debug!("Redis Cluster: no connection within the timeout"),
            }
        }
    }

    /// `cmd` sent along `routing`.
    pub async fn route_command(&self, cmd: Cmd, routing: RoutingInfo) -> RedisResult<Value> {
        let (generation, mut conn) = self.get()?;
        let result = conn.route_command(cmd, routing).await;
        self.outcome(generation, &result);
        result
    }

    pub async fn command(&self, cmd: &Cmd) -> RedisResult<Value> {
        let (generation, mut conn) = self.get()?;
        let result = conn.req_packed_command(cmd).await;
        self.outcome(generation, &result);
        result
    }

    pub async fn pipeline(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let (generation, mut conn) = self.get()?;
        let result = conn.req_packed_commands(pipeline, offset, count).await;
        self.outcome(generation, &result);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_attempt_is_at_once_then_spaced_by_a_doubling_delay() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        assert_eq!(b.next_attempt(t0), Duration::ZERO);
        // asked again at once: waits the shortest delay, then twice it, ...
        let first = b.next_attempt(t0);
        assert_eq!(first, RECONNECT_MIN);
        let second = b.next_attempt(t0 + first);
        assert_eq!(second, RECONNECT_MIN * 2);
        // ... never beyond the longest
        let mut at = t0 + first + second;
        for _ in 0..20 {
            let wait = b.next_attempt(at);
            assert!(wait <= RECONNECT_MAX, "{wait:?}");
            at += wait;
        }
        assert_eq!(b.next_attempt(at), RECONNECT_MAX);
    }

    #[test]
    fn attempts_are_never_closer_than_the_shortest_delay() {
        // However often a reconnect is asked for (a loop of failing
        // commands), attempts over a second are at most 1 + 1 s / minimum.
        let mut b = Backoff::default();
        let t0 = Instant::now();
        let mut attempts = 0;
        let mut at = t0;
        while at < t0 + Duration::from_secs(1) {
            at += b.next_attempt(at);
            attempts += 1;
            b.reset(); // even reset after every attempt
        }
        assert!(
            attempts <= 1 + (1000 / RECONNECT_MIN.as_millis() as usize) + 1,
            "{attempts}"
        );
    }

    #[test]
    fn a_success_brings_the_delay_back_to_the_shortest() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        let mut at = t0;
        for _ in 0..6 {
            at += b.next_attempt(at);
        }
        b.reset();
        // the next one waits the shortest delay after the last attempt
        assert_eq!(b.next_attempt(at), RECONNECT_MIN);
    }
}
