//! Redis for the cluster-mode tests: Debian's `redis-server` (on PATH;
//! `tests/run.sh` installs it) as a child process on a free loopback port, in
//! its own temp dir, durable the way the contract asks (`appendonly yes`,
//! `appendfsync always`, no RDB snapshots), so that `kill9` + `restart` keeps
//! every acknowledged write. `RedisClusterServers` is three such servers as
//! the masters of one Redis Cluster (no replicas).
//!
//! Every wait polls with a deadline (`PING`, `CLUSTER INFO`, the child's
//! exit); nothing sleeps a guessed while.

use std::net::TcpListener as StdTcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::{Instant, timeout};

/// How long a server gets to answer `PING` after it was started (AOF replay
/// included), and a cluster to reach `cluster_state:ok`.
const START: Duration = Duration::from_secs(20);
/// Between two polls of a condition that has a deadline.
const POLL: Duration = Duration::from_millis(20);
/// Attempts at a fresh port when another process took the one picked.
const PORT_ATTEMPTS: usize = 10;

/// A port that was free a moment ago on 127.0.0.1 (and, for a cluster node,
/// whose cluster bus port, +10000, was free too).
fn free_port(with_bus: bool) -> u16 {
    for _ in 0..1000 {
        let l = StdTcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local addr").port();
        if !with_bus {
            return port;
        }
        if port < 55_535 && StdTcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair (port, port + 10000) on 127.0.0.1");
}

/// `PING` over a fresh connection, each step bounded: whether it answered `PONG`.
pub async fn ping(url: &str) -> bool {
    let attempt = async {
        let client = redis::Client::open(url).ok()?;
        let mut con = client.get_multiplexed_async_connection().await.ok()?;
        let pong: String = redis::cmd("PING").query_async(&mut con).await.ok()?;
        Some(pong == "PONG")
    };
    matches!(
        timeout(Duration::from_secs(1), attempt).await,
        Ok(Some(true))
    )
}

/// One `redis-server` child process. Dropping it kills the process (SIGKILL)
/// and removes its dir.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    /// Options after the common ones (the cluster's, for a cluster node).
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// A standalone server on a free port in a fresh temp dir; returns once it
    /// answers `PING`.
    pub async fn start() -> Self {
        Self::start_with(&[], false).await
    }

    /// Like `start`, with `extra` options; `cluster_bus`: keep port + 10000 free too.
    async fn start_with(extra: &[&str], cluster_bus: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pairgate-redis-")
            .tempdir()
            .expect("tempdir");
        let mut server = RedisServer {
            port: 0,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        let mut last_log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            server.port = free_port(cluster_bus);
            match server.launch().await {
                Ok(()) => return server,
                // lost a race for the port: another one
                Err(log) => last_log = log,
            }
        }
        panic!("redis-server did not start in {PORT_ATTEMPTS} attempts; last log:\n{last_log}");
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where its AOF (and, for a cluster node, `nodes.conf`) and its log are.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// The server's log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether the process is alive (started and not yet exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Starts the process on `self.port` and waits for `PING`. `Err(log)` if it
    /// exited first (the port was taken) or did not answer by the deadline.
    async fn launch(&mut self) -> Result<(), String> {
        let dir = self.dir.path();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "yes"])
            .args(["--appendfsync", "always"])
            .args(["--dir", &dir.display().to_string()])
            .args(["--logfile", &self.log_path().display().to_string()])
            .args(["--daemonize", "no"])
            .args(&self.extra)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => panic!(
                "cannot run redis-server ({e}); install it: apt-get install -y redis-server \
                 (tests/run.sh does)"
            ),
        };
        let url = self.url();
        let deadline = Instant::now() + START;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("exited {status}:\n{}", self.log_text()));
            }
            if ping(&url).await {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.start_kill();
                let _ = timeout(Duration::from_secs(5), child.wait()).await;
                return Err(format!(
                    "no PONG on {url} within {START:?}:\n{}",
                    self.log_text()
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `kill -9` and reap. What was acknowledged is in the AOF (fsync always).
    pub async fn kill9(&mut self) {
        let mut child = self.child.take().expect("redis-server is not running");
        child.start_kill().expect("kill -9 redis-server");
        timeout(Duration::from_secs(5), child.wait())
            .await
            .expect("killed redis-server reaped within 5 s")
            .expect("wait");
    }

    /// A clean stop (SIGTERM: Redis flushes and exits) and reap.
    pub async fn stop(&mut self) {
        let mut child = self.child.take().expect("redis-server is not running");
        let pid = child.id().expect("redis-server pid") as libc::pid_t;
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill -TERM redis-server");
        match timeout(Duration::from_secs(10), child.wait()).await {
            Ok(r) => {
                r.expect("wait");
            }
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                panic!(
                    "redis-server did not exit within 10 s of SIGTERM:\n{}",
                    self.log_text()
                );
            }
        }
    }

    /// Starts it again on the same port and dir (the AOF is replayed); waits
    /// for `PING`. The port may be briefly held by another process: retried
    /// until the start deadline.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running redis-server");
        let deadline = Instant::now() + START;
        loop {
            match self.launch().await {
                Ok(()) => return,
                Err(log) if Instant::now() >= deadline => {
                    panic!("redis-server did not restart on port {}:\n{log}", self.port)
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

// ---------------------------------------------------------------------------
// Redis Cluster

/// Three `redis-server`s, each a master of one Redis Cluster (no replicas),
/// joined with `redis-cli --cluster create`.
pub struct RedisClusterServers {
    pub servers: Vec<RedisServer>,
}

/// The value of `field` in `CLUSTER INFO` (or `INFO`) text.
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

/// `CLUSTER INFO`'s `cluster_state` of the node at `url`, if it answers.
pub async fn cluster_state(url: &str) -> Option<String> {
    let attempt = async {
        let client = redis::Client::open(url).ok()?;
        let mut con = client.get_multiplexed_async_connection().await.ok()?;
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut con)
            .await
            .ok()?;
        info_field(&info, "cluster_state").map(str::to_string)
    };
    timeout(Duration::from_secs(1), attempt)
        .await
        .ok()
        .flatten()
}

impl RedisClusterServers {
    /// Three masters, joined; returns once every one says `cluster_state:ok`.
    pub async fn start() -> Self {
        let mut servers = Vec::new();
        for _ in 0..3 {
            servers.push(
                RedisServer::start_with(
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "5000",
                    ],
                    true,
                )
                .await,
            );
        }
        let cluster = RedisClusterServers { servers };
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        for s in &cluster.servers {
            cmd.arg(format!("127.0.0.1:{}", s.port()));
        }
        cmd.args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = timeout(Duration::from_secs(30), cmd.output())
            .await
            .expect("redis-cli --cluster create within 30 s")
            .expect("run redis-cli (Debian's redis-tools, with redis-server)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_state_ok().await;
        cluster
    }

    /// Polls `CLUSTER INFO` on every node until each says `cluster_state:ok`.
    pub async fn wait_state_ok(&self) {
        let deadline = Instant::now() + START;
        for s in &self.servers {
            loop {
                let state = cluster_state(&s.url()).await;
                if state.as_deref() == Some("ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{}: cluster_state {state:?}, not ok within {START:?}:\n{}",
                    s.url(),
                    s.log_text()
                );
                tokio::time::sleep(POLL).await;
            }
        }
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// The masters' `redis://` URLs (what `ClusterClient::new` takes).
    pub fn node_urls(&self) -> Vec<String> {
        self.servers.iter().map(RedisServer::url).collect()
    }

    /// `kill -9` of every master.
    pub async fn kill9_all(&mut self) {
        for s in &mut self.servers {
            s.kill9().await;
        }
    }

    /// Every master started again on its port and dir (AOF and `nodes.conf`
    /// kept); returns once the cluster is `ok` again.
    pub async fn restart_all(&mut self) {
        for s in &mut self.servers {
            s.restart().await;
        }
        self.wait_state_ok().await;
    }
}

#[cfg(test)]
mod tests {
    use super::info_field;

    #[test]
    fn reads_a_field_of_cluster_info() {
        let info = "cluster_state:ok\r\ncluster_slots_assigned:16384\r\n";
        assert_eq!(info_field(info, "cluster_state"), Some("ok"));
        assert_eq!(info_field(info, "cluster_slots_assigned"), Some("16384"));
        assert_eq!(info_field(info, "cluster"), None);
    }
}
