//! A cluster under test: one Redis (a `RedisServer`, or three masters of a
//! Redis Cluster) and N gateway nodes, each the built binary as a child
//! process (`BinGateway`) started with
//! `--redis URL --secret S --node-id node-I --node-lease-ms L`, its own data
//! dir, and the test's extra options.
//!
//! `Cluster` implements `Gateway`, so every helper (phone, web, pair,
//! resume, ...) runs against it unchanged: each call of `addr()` answers the
//! next live node's address (round-robin), and every provided method of the
//! trait calls `addr()` exactly once per socket it opens. So `phone()` then
//! `pair()`, `pair()` with three nodes puts the phone on one node and its two
//! webs on the two others. A test that needs a socket on a given node uses
//! `on(i)`, a `Gateway` pinned to node `i` (with the shared secret; the
//! nodes' `BinGateway`s read a secret file that `--secret` never writes).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use super::http::{find_head_end, parse_head};
use super::{BinGateway, Gateway, RedisClusterServers, RedisServer};

/// How long a node gets to answer `/readyz` 200 after it started.
pub const READY: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);

/// The Redis a cluster shares.
pub enum Redis {
    Single(RedisServer),
    Cluster(RedisClusterServers),
}

impl Redis {
    pub fn url(&self) -> String {
        match self {
            Redis::Single(s) => s.url(),
            Redis::Cluster(c) => c.url(),
        }
    }

    /// `kill -9` of Redis (every master of a Redis Cluster).
    pub async fn kill9(&mut self) {
        match self {
            Redis::Single(s) => s.kill9().await,
            Redis::Cluster(c) => c.kill9_all().await,
        }
    }

    /// A clean stop of Redis (every master of a Redis Cluster).
    pub async fn stop(&mut self) {
        match self {
            Redis::Single(s) => s.stop().await,
            Redis::Cluster(c) => {
                for s in &mut c.servers {
                    s.stop().await;
                }
            }
        }
    }

    /// Redis back on the same port(s) and dir(s), data kept.
    pub async fn restart(&mut self) {
        match self {
            Redis::Single(s) => s.restart().await,
            Redis::Cluster(c) => c.restart_all().await,
        }
    }
}

/// One gateway node and what it takes to start it again.
struct Node {
    id: String,
    dir: tempfile::TempDir,
    /// `None` while killed or stopped.
    gw: Option<BinGateway>,
    /// Where it listened last (kept across a kill, for the restart).
    addr: SocketAddr,
}

/// A Redis and N gateway nodes sharing it.
pub struct Cluster {
    pub redis: Redis,
    nodes: Vec<Node>,
    secret: String,
    lease_ms: u64,
    extra: Vec<String>,
    next: AtomicUsize,
}

/// `GET path` on `addr`: the status, or `None` if nothing answered within 2 s
/// (refused, reset, no complete head). Never panics: what readiness polls.
pub async fn try_http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let fut = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            if let Some(end) = find_head_end(&buf) {
                return Some(parse_head(&buf[..end]).0);
            }
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    timeout(Duration::from_secs(2), fut).await.ok().flatten()
}

/// Polls `GET /readyz` on `addr` until it answers `want`; panics with the
/// last answer after `within`. Returns how long it took.
pub async fn wait_readyz(addr: SocketAddr, want: u16, within: Duration) -> Duration {
    let start = Instant::now();
    let deadline = start + within;
    loop {
        let got = try_http_status(addr, "/readyz").await;
        if got == Some(want) {
            return start.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{addr}: /readyz answered {got:?}, not {want}, within {within:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

impl Cluster {
    /// A fresh standalone Redis and `n` nodes with `--node-lease-ms lease_ms`
    /// and `extra_args`; returns once every node's `/readyz` answers 200.
    pub async fn start(n: usize, lease_ms: u64, extra_args: &[&str]) -> Self {
        let redis = Redis::Single(RedisServer::start().await);
        Self::start_on(redis, n, lease_ms, extra_args).await
    }

    /// Like `start`, on a three-master Redis Cluster (`redis+cluster://`).
    pub async fn start_on_redis_cluster(n: usize, lease_ms: u64, extra_args: &[&str]) -> Self {
        let redis = Redis::Cluster(RedisClusterServers::start().await);
        Self::start_on(redis, n, lease_ms, extra_args).await
    }

    /// `n` nodes on `redis`.
    pub async fn start_on(redis: Redis, n: usize, lease_ms: u64, extra_args: &[&str]) -> Self {
        let mut cluster = Cluster {
            redis,
            nodes: Vec::new(),
            secret: format!("cluster-secret-{:016x}", rand::random::<u64>()),
            lease_ms,
            extra: extra_args.iter().map(|s| s.to_string()).collect(),
            next: AtomicUsize::new(0),
        };
        for i in 0..n {
            let dir = tempfile::Builder::new()
                .prefix("pairgate-node-")
                .tempdir()
                .expect("tempdir");
            let id = format!("node-{}", i + 1);
            let gw = cluster.launch(&id, dir.path(), "127.0.0.1:0").await;
            let addr = gw.addr;
            cluster.nodes.push(Node {
                id,
                dir,
                gw: Some(gw),
                addr,
            });
        }
        for i in 0..n {
            cluster.wait_ready(i).await;
        }
        cluster
    }

    /// The command line of one node.
    fn args(&self, id: &str, dir: &std::path::Path, listen: &str) -> Vec<String> {
        let mut args: Vec<String> = [
            "serve",
            "--listen",
            listen,
            "--data-dir",
            &dir.display().to_string(),
            "--redis",
            &self.redis.url(),
            "--secret",
            &self.secret,
            "--node-id",
            id,
            "--node-lease-ms",
            &self.lease_ms.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(self.extra.iter().cloned());
        args
    }

    async fn launch(&self, id: &str, dir: &std::path::Path, listen: &str) -> BinGateway {
        BinGateway::start_args(dir, &self.args(id, dir, listen), &[]).await
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Node `i` (0-based; its id is `node-{i+1}`); panics if it is down.
    pub fn node(&self, i: usize) -> &BinGateway {
        self.nodes[i]
            .gw
            .as_ref()
            .unwrap_or_else(|| panic!("{} is down", self.nodes[i].id))
    }

    /// `node-{i+1}`.
    pub fn node_id(&self, i: usize) -> &str {
        &self.nodes[i].id
    }

    /// Node `i`'s address (its last one, if it is down).
    pub fn node_addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].addr
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].gw.is_some()
    }

    /// A `Gateway` whose sockets all go to node `i`.
    pub fn on(&self, i: usize) -> On<'_> {
        On { cluster: self, i }
    }

    /// The configured lease.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    /// `kill -9` of node `i`, reaped.
    pub async fn kill9(&mut self, i: usize) {
        let mut gw = self.nodes[i]
            .gw
            .take()
            .unwrap_or_else(|| panic!("{} is already down", self.nodes[i].id));
        gw.kill9().await;
    }

    /// SIGTERM to node `i`; waits (10 s) for its exit and returns the status.
    pub async fn terminate(&mut self, i: usize) -> std::process::ExitStatus {
        let mut gw = self.nodes[i]
            .gw
            .take()
            .unwrap_or_else(|| panic!("{} is already down", self.nodes[i].id));
        gw.signal("TERM");
        gw.wait_exit(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("{} did not exit within 10 s of SIGTERM", self.nodes[i].id))
    }

    /// Starts node `i` again, same node id, data dir and options, on its old
    /// port if that can be bound again (else a fresh one), and waits for its
    /// `/readyz` 200.
    pub async fn restart(&mut self, i: usize) {
        assert!(
            self.nodes[i].gw.is_none(),
            "{} is still running",
            self.nodes[i].id
        );
        let id = self.nodes[i].id.clone();
        let dir = self.nodes[i].dir.path().to_path_buf();
        let old = self.nodes[i].addr;
        // `start_args` panics when the binary logs no `listening on` line (the
        // old port was taken meanwhile): caught in its own task, then port 0.
        let same_port = {
            let args = self.args(&id, &dir, &old.to_string());
            let dir = dir.clone();
            tokio::spawn(async move { BinGateway::start_args(&dir, &args, &[]).await }).await
        };
        let gw = match same_port {
            Ok(gw) => gw,
            Err(_) => {
                eprintln!(
                    "{id}: port {} not free again: restarted on a fresh port",
                    old.port()
                );
                self.launch(&id, &dir, "127.0.0.1:0").await
            }
        };
        self.nodes[i].addr = gw.addr;
        self.nodes[i].gw = Some(gw);
        self.wait_ready(i).await;
    }

    /// Polls node `i`'s `/readyz` until it answers 200 (deadline `READY`).
    pub async fn wait_ready(&self, i: usize) {
        let addr = self.node_addr(i);
        let deadline = Instant::now() + READY;
        loop {
            let got = self.readyz(i).await;
            if got == Some(200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} ({addr}): /readyz answered {got:?}, not 200, within {READY:?}; log:\n{}",
                self.node_id(i),
                self.node(i).log_text()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Node `i`'s `/readyz` status now (`None`: no answer).
    pub async fn readyz(&self, i: usize) -> Option<u16> {
        try_http_status(self.node_addr(i), "/readyz").await
    }

    /// Every node's log (for failure messages).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            out.push_str(&format!("--- {} ({})\n", n.id, n.addr));
            match &n.gw {
                Some(gw) => out.push_str(&gw.log_text()),
                None => out.push_str("(down)\n"),
            }
        }
        out
    }
}

impl Drop for Cluster {
    /// A failing test shows what every node logged (the nodes and Redis are
    /// killed by their own `Drop`s); so does every test with
    /// `PAIRGATE_TEST_CLUSTER_LOGS=1` (and `--nocapture`).
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("PAIRGATE_TEST_CLUSTER_LOGS").is_some() {
            eprintln!("cluster logs:\n{}", self.logs());
        }
    }
}

impl Gateway for Cluster {
    /// The next live node's address, round-robin.
    fn addr(&self) -> SocketAddr {
        let n = self.nodes.len();
        assert!(n > 0, "a cluster without nodes");
        for _ in 0..n {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
            if self.nodes[i].gw.is_some() {
                return self.nodes[i].addr;
            }
        }
        panic!("every node of the cluster is down");
    }

    /// The shared `--secret`.
    fn secret(&self) -> String {
        self.secret.clone()
    }
}

/// A `Gateway` pinned to one node of a cluster (`Cluster::on`).
pub struct On<'a> {
    cluster: &'a Cluster,
    i: usize,
}

impl Gateway for On<'_> {
    fn addr(&self) -> SocketAddr {
        assert!(
            self.cluster.is_up(self.i),
            "{} is down",
            self.cluster.node_id(self.i)
        );
        self.cluster.node_addr(self.i)
    }

    fn secret(&self) -> String {
        self.cluster.secret.clone()
    }
}
