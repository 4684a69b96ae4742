//! The gateway under test, launched two ways: in this test's runtime through
//! `pairgate::run` (`TestGateway`), or as the built binary in a child process
//! (`BinGateway`, for durability, signals and the command line). Whatever a
//! test does through a gateway (mint a token, open a phone, pair, resume,
//! fetch a page) is written once, in the `Gateway` trait; the two launchers
//! only say where the gateway listens and which secret it signs with.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{
    Client, Config, HttpResponse, PairOpts, Session, T, assert_logged_out, http_get, http_send,
    mint, open_phone, open_web, pair_session, phone_claims, resume, resume_ok, start_pairing,
};

/// What a test does through a gateway, however it was launched.
#[allow(async_fn_in_trait)]
pub trait Gateway {
    /// Where clients connect (always 127.0.0.1).
    fn addr(&self) -> SocketAddr;
    /// The HS256 key in force.
    fn secret(&self) -> String;

    fn port(&self) -> u16 {
        self.addr().port()
    }

    fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr(), path)
    }

    /// A valid phone token for `account`.
    fn phone_token(&self, account: &str) -> String {
        mint(&self.secret(), &phone_claims(account))
    }

    /// A JWT signed with this gateway's secret carrying exactly `claims`.
    fn mint(&self, claims: &Value) -> String {
        mint(&self.secret(), claims)
    }

    async fn http_get(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http_get(self.addr(), path, headers).await
    }

    /// `METHOD path` with `headers` and `body`.
    async fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpResponse {
        http_send(self.addr(), method, path, headers, body).await
    }

    /// A phone socket of `account`, authenticated with a fresh token.
    async fn phone(&self, account: &str) -> Client {
        open_phone(self.addr(), account, &self.phone_token(account)).await
    }

    /// A phone socket of `account`, authenticated with `token`.
    async fn phone_with(&self, account: &str, token: &str) -> Client {
        open_phone(self.addr(), account, token).await
    }

    async fn web(&self, user_agent: Option<&str>) -> Client {
        open_web(self.addr(), user_agent).await
    }

    async fn pairing(&self, opts: &PairOpts) -> (Client, Value) {
        start_pairing(self.addr(), opts).await
    }

    async fn pair(&self, phone: &Client, opts: &PairOpts) -> Session {
        pair_session(self.addr(), phone, opts).await
    }

    async fn resume(&self, token: &str) -> (Client, Value) {
        resume(self.addr(), token).await
    }

    async fn resume_ok(&self, token: &str, session_id: &str) -> Client {
        resume_ok(self.addr(), token, session_id).await
    }

    async fn assert_logged_out(&self, token: &str) {
        assert_logged_out(self.addr(), token).await
    }
}

impl Gateway for TestGateway {
    /// On one node its address; as a cluster (see `TestGateway`), the next
    /// node's in turn, so a test's sockets are spread round-robin.
    fn addr(&self) -> SocketAddr {
        if self.others.is_empty() {
            return self.addr;
        }
        let n = self.others.len() + 1;
        match self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % n {
            0 => self.addr,
            i => self.others[i - 1].addr,
        }
    }

    /// The configured secret, else the data dir's file.
    fn secret(&self) -> String {
        match &self.config.secret {
            Some(s) => s.clone(),
            None => read_secret_file(self.data_dir()),
        }
    }
}

impl Gateway for BinGateway {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `wss://` when the binary serves TLS (the trait's socket helpers
    /// speak plain `ws://` only; a TLS test brings its own client).
    fn ws_url(&self, path: &str) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}{}", self.addr, path)
    }

    /// The secret file of the data dir.
    fn secret(&self) -> String {
        read_secret_file(&self.data_dir)
    }
}

// ---------------------------------------------------------------------------
// in-process

/// One gateway served by `pairgate::run` in this test's runtime.
///
/// With `PAIRGATE_TEST_REDIS=redis://host:port` in the environment (the test
/// command sets it for its second run of this suite), it is a cluster of
/// [`CLUSTER_NODES`] in-process nodes sharing a database of that Redis of its
/// own, with the same configuration: the trait's helpers spread sockets over
/// the nodes round-robin, and `addr` (the field) is the first node.
pub struct TestGateway {
    /// Where clients connect (always 127.0.0.1); in cluster mode, node 0.
    pub addr: SocketAddr,
    pub config: Config,
    dir: Option<tempfile::TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    /// Cluster mode: the other nodes.
    others: Vec<TestGateway>,
    turn: std::sync::atomic::AtomicUsize,
}

/// Nodes of a test gateway in cluster mode.
pub const CLUSTER_NODES: usize = 3;

/// The Redis the suite runs its gateways as clusters on, if any.
pub fn cluster_redis() -> Option<String> {
    std::env::var("PAIRGATE_TEST_REDIS")
        .ok()
        .filter(|s| !s.is_empty())
}

/// A test about one process (its data dir, its metrics, its files): says so
/// and returns `true` when the suite runs its gateways as clusters.
pub fn single_process_only(why: &str) -> bool {
    if cluster_redis().is_some() {
        eprintln!("skipped on a cluster: {why}");
        return true;
    }
    false
}

/// Databases of the suite's Redis handed out so far: one per cluster.
static CLUSTER_DB: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

impl TestGateway {
    /// Contract defaults, a fresh data dir and an explicit secret.
    pub async fn start() -> Self {
        Self::spawn(|_| {}).await
    }

    /// Like `start`, with `tweak` applied to the configuration first.
    pub async fn spawn(tweak: impl FnOnce(&mut Config)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::spawn_on(listener, tweak).await
    }

    /// Serves on an already bound listener (clients still use 127.0.0.1).
    pub async fn spawn_on(listener: TcpListener, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let bound = listener.local_addr().expect("local addr");
        let addr = SocketAddr::from(([127, 0, 0, 1], bound.port()));
        let mut config = Config {
            listen: bound,
            data_dir: dir.path().to_path_buf(),
            secret: Some(format!("test-secret-{:016x}", rand::random::<u64>())),
            ..Config::default()
        };
        tweak(&mut config);
        let mut others = Vec::new();
        if let Some(redis) = cluster_redis() {
            let db = CLUSTER_DB.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            config.redis = Some(format!("{}/{db}", redis.trim_end_matches('/')));
            config.node_id = Some(format!("t{db}-0"));
            config.node_lease_ms = 1000;
            // As behind a load balancer: QR links name one address.
            config
                .public_url
                .get_or_insert_with(|| format!("http://{addr}"));
            for i in 1..CLUSTER_NODES {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let mut node = config.clone();
                node.listen = listener.local_addr().expect("local addr");
                node.node_id = Some(format!("t{db}-{i}"));
                others
                    .push(Self::serve(listener, node, tempfile::tempdir().expect("tempdir")).await);
            }
        }
        let mut first = Self::serve(listener, config, dir).await;
        first.others = others;
        first.addr = addr;
        first
    }

    /// Runs one node with `config` on `listener`, data in `dir`; returns
    /// once it answers `/readyz` (a cluster node has joined).
    async fn serve(listener: TcpListener, mut config: Config, dir: tempfile::TempDir) -> Self {
        config.data_dir = dir.path().to_path_buf();
        let bound = listener.local_addr().expect("local addr");
        let addr = SocketAddr::from(([127, 0, 0, 1], bound.port()));
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(pairgate::run(listener, config.clone(), async move {
            let _ = rx.await;
        }));
        if config.redis.is_some() {
            let deadline = tokio::time::Instant::now() + T;
            while http_get(addr, "/readyz", &[]).await.status != 200 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "cluster node {addr} not ready"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        TestGateway {
            addr,
            config,
            dir: Some(dir),
            shutdown: Some(tx),
            handle: Some(handle),
            others: Vec::new(),
            turn: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// Resolves the shutdown future and waits (5 s) for `run` to return.
    pub async fn shutdown(&mut self) -> anyhow::Result<()> {
        for other in &mut self.others {
            Box::pin(other.shutdown()).await?;
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let handle = self.handle.take().expect("gateway already stopped");
        match tokio::time::timeout(T, handle).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => panic!("gateway task failed: {e}"),
            Err(_) => panic!("pairgate::run did not return within {T:?} of shutdown"),
        }
    }

    /// Whether `run` has returned (it must not, before shutdown).
    pub fn finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // the runtime of the test ends right after; keep the data dir until then
        if let Some(dir) = self.dir.take() {
            std::mem::forget(dir.keep());
        }
    }
}

pub fn read_secret_file(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("secret"))
        .unwrap_or_else(|e| panic!("read {}/secret: {e}", dir.display()));
    text.trim().to_string()
}

// ---------------------------------------------------------------------------
// the real binary

/// `pairgate serve` as a child process; its port is read from its log.
pub struct BinGateway {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub log: Arc<Mutex<String>>,
    /// Whether it said `listening on https://` (`--tls-cert`).
    pub tls: bool,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_pairgate")
}

pub(super) fn clean_command(args: &[String]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin());
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("PAIRGATE_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd.stdin(std::process::Stdio::null());
    cmd
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// In a line containing `listening on http://127.0.0.1:PORT` (or
/// `https://`, with `--tls-cert`): whether it is TLS, and the port.
fn parse_listening(line: &str) -> Option<(bool, u16)> {
    let line = strip_ansi(line);
    let (tls, rest) = ["http://", "https://"].iter().find_map(|scheme| {
        let marker = format!("listening on {scheme}");
        let at = line.find(&marker)?;
        Some((*scheme == "https://", &line[at + marker.len()..]))
    })?;
    let host_port: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    let port = host_port.rsplit(':').next()?;
    Some((tls, port.parse().ok()?))
}

impl BinGateway {
    /// `pairgate serve --listen 127.0.0.1:0 --data-dir DIR ARGS...`.
    pub async fn serve(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut all = vec![
            "serve".to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        Self::start_args(data_dir, &all, env).await
    }

    /// The binary with exactly `args`; waits (20 s) for its `listening on` line.
    pub async fn start_args(data_dir: &Path, args: &[String], env: &[(&str, &str)]) -> Self {
        Self::start_args_in(None, data_dir, args, env).await
    }

    /// Like `serve`, under an open-files limit of `open_files` (soft and
    /// hard, so the binary cannot raise it).
    pub async fn serve_with_open_files(data_dir: &Path, args: &[&str], open_files: u64) -> Self {
        let mut all = vec![
            "serve".to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        Self::start(None, data_dir, &all, &[], Some(open_files)).await
    }

    /// Like `start_args`, in the working directory `cwd`.
    pub async fn start_args_in(
        cwd: Option<&Path>,
        data_dir: &Path,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Self {
        Self::start(cwd, data_dir, args, env, None).await
    }

    async fn start(
        cwd: Option<&Path>,
        data_dir: &Path,
        args: &[String],
        env: &[(&str, &str)],
        open_files: Option<u64>,
    ) -> Self {
        let mut cmd = clean_command(args);
        if let Some(n) = open_files {
            let limit = libc::rlimit {
                rlim_cur: n as libc::rlim_t,
                rlim_max: n as libc::rlim_t,
            };
            // SAFETY: setrlimit is async-signal-safe and only reads `limit`,
            // a copy owned by the closure.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(std::process::Stdio::null());
        cmd.stderr(std::process::Stdio::piped());
        cmd.kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn pairgate");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (port_tx, port_rx) = oneshot::channel::<(bool, u16)>();
        {
            let log = log.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncBufReadExt;
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                let mut port_tx = Some(port_tx);
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(p) = parse_listening(&line)
                        && let Some(tx) = port_tx.take()
                    {
                        let _ = tx.send(p);
                    }
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let (tls, port) = match tokio::time::timeout(Duration::from_secs(20), port_rx).await {
            Ok(Ok(p)) => p,
            _ => {
                let _ = child.start_kill();
                let _ = tokio::time::timeout(T, child.wait()).await;
                panic!(
                    "pairgate {args:?} logged no `listening on http(s)://127.0.0.1:PORT` line; log:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        BinGateway {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            data_dir: data_dir.to_path_buf(),
            log,
            tls,
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("child still running")
    }

    /// SIGKILL and reap.
    pub async fn kill9(&mut self) {
        self.child.start_kill().expect("kill -9");
        tokio::time::timeout(T, self.child.wait())
            .await
            .expect("killed child reaped")
            .expect("wait");
    }

    /// Sends `sig` (e.g. "TERM", "INT") with kill(1).
    pub fn signal(&self, sig: &str) {
        let st = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{sig} failed");
    }

    /// Waits for the process to exit; `None` if it did not within `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(r) => Some(r.expect("wait")),
            Err(_) => None,
        }
    }
}
