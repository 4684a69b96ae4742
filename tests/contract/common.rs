//! Test machinery: an in-process gateway on port 0 (`TestGateway`), the real
//! binary as a child process (`BinGateway`), a WebSocket `Client` that records
//! every frame with its arrival time (so frames can be taken out of order and
//! compared across sockets), a hand-written `RawWs` that never answers pings
//! nor reads unless told to, a tiny HTTP/1.1 client, and protocol helpers
//! (open a phone, pair a session, resume one).
//!
//! Every wait has a deadline; a missed deadline fails the test with the frames
//! that were received but not consumed.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

pub use pairgate::Config;

/// Default deadline of every receive.
pub const T: Duration = Duration::from_secs(5);
/// A longer deadline for waits that include configured timers.
pub const LONG: Duration = Duration::from_secs(10);
/// How much later than the phone's `ok` a web socket's close frame may be
/// observed: both travel over loopback, but the two sockets are read by
/// different tasks, so their arrival stamps can differ a little.
pub const DELIVERY_TOLERANCE: Duration = Duration::from_millis(50);

pub const CHROME_LINUX_UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
pub const FIREFOX_WINDOWS_UA: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0";

/// The keys of a `SESSION` object.
pub const SESSION_KEYS: [&str; 8] = [
    "session_id",
    "device_name",
    "user_agent",
    "ip",
    "created_at",
    "last_active_at",
    "online",
    "remember",
];

static COUNTER: AtomicU64 = AtomicU64::new(1);

/// A fresh account id matching `^[A-Za-z0-9_.-]{1,64}$`, unique in this run.
pub fn account(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{:08x}",
        COUNTER.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    )
}

/// A fresh request id.
pub fn next_id(prefix: &str) -> String {
    format!("{prefix}{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

// ---------------------------------------------------------------------------
// tokens

/// Signs `claims` as an HS256 JWT over the UTF-8 bytes of `secret`.
pub fn mint(secret: &str, claims: &Value) -> String {
    mint_alg(secret, claims, jsonwebtoken::Algorithm::HS256)
}

pub fn mint_alg(secret: &str, claims: &Value, alg: jsonwebtoken::Algorithm) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign jwt")
}

/// Valid phone-token claims for `account` (one hour).
pub fn phone_claims(account: &str) -> Value {
    let now = now_secs();
    json!({"sub": account, "aud": "pairgate-phone", "iat": now, "exp": now + 3600})
}

/// The claims of a JWT (not verified).
pub fn jwt_claims(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("jwt has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .expect("jwt payload is base64url");
    serde_json::from_slice(&bytes).expect("jwt payload is json")
}

/// Whether `token` is an HS256 JWT that verifies with `secret` (aud not checked).
pub fn jwt_verifies(token: &str, secret: &str) -> bool {
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.validate_aud = false;
    v.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
        &v,
    )
    .is_ok()
}

// ---------------------------------------------------------------------------
// in-process gateway

/// One gateway served by `pairgate::run` in this test's runtime.
pub struct TestGateway {
    /// Where clients connect (always 127.0.0.1).
    pub addr: SocketAddr,
    pub config: Config,
    dir: Option<tempfile::TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

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
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(pairgate::run(listener, config.clone(), async move {
            let _ = rx.await;
        }));
        TestGateway {
            addr,
            config,
            dir: Some(dir),
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// The HS256 key in force: the configured secret, else the data dir's file.
    pub fn secret(&self) -> String {
        match &self.config.secret {
            Some(s) => s.clone(),
            None => read_secret_file(self.data_dir()),
        }
    }

    /// A valid phone token for `account`.
    pub fn phone_token(&self, account: &str) -> String {
        mint(&self.secret(), &phone_claims(account))
    }

    /// A JWT signed with this gateway's secret carrying exactly `claims`.
    pub fn mint(&self, claims: &Value) -> String {
        mint(&self.secret(), claims)
    }

    pub async fn http_get(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http_get(self.addr, path, headers).await
    }

    /// Resolves the shutdown future and waits (5 s) for `run` to return.
    pub async fn shutdown(&mut self) -> anyhow::Result<()> {
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

    // -- protocol helpers bound to this gateway

    pub async fn phone(&self, account: &str) -> Client {
        open_phone(self.addr, account, &self.phone_token(account)).await
    }

    pub async fn web(&self, user_agent: Option<&str>) -> Client {
        open_web(self.addr, user_agent).await
    }

    pub async fn pairing(&self, opts: &PairOpts) -> (Client, Value) {
        start_pairing(self.addr, opts).await
    }

    pub async fn pair(&self, phone: &Client, opts: &PairOpts) -> Session {
        pair_session(self.addr, phone, opts).await
    }

    pub async fn resume(&self, token: &str) -> (Client, Value) {
        resume(self.addr, token).await
    }

    pub async fn resume_ok(&self, token: &str, session_id: &str) -> Client {
        resume_ok(self.addr, token, session_id).await
    }

    pub async fn assert_logged_out(&self, token: &str) {
        assert_logged_out(self.addr, token).await
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
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_pairgate")
}

fn clean_command(args: &[String]) -> tokio::process::Command {
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

/// The port in a line containing `listening on http://127.0.0.1:PORT`.
fn parse_listening(line: &str) -> Option<u16> {
    let line = strip_ansi(line);
    let at = line.find("listening on http://")?;
    let rest = &line[at + "listening on http://".len()..];
    let host_port: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    let port = host_port.rsplit(':').next()?;
    port.parse().ok()
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

    /// Like `start_args`, in the working directory `cwd`.
    pub async fn start_args_in(
        cwd: Option<&Path>,
        data_dir: &Path,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Self {
        let mut cmd = clean_command(args);
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
        let (port_tx, port_rx) = oneshot::channel::<u16>();
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
        let port = match tokio::time::timeout(Duration::from_secs(20), port_rx).await {
            Ok(Ok(p)) => p,
            _ => {
                let _ = child.start_kill();
                let _ = tokio::time::timeout(T, child.wait()).await;
                panic!(
                    "pairgate {args:?} logged no `listening on http://127.0.0.1:PORT` line; log:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        BinGateway {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            data_dir: data_dir.to_path_buf(),
            log,
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

    pub fn secret(&self) -> String {
        read_secret_file(&self.data_dir)
    }

    /// A phone token minted with the secret file of the data dir.
    pub fn phone_token(&self, account: &str) -> String {
        mint(&self.secret(), &phone_claims(account))
    }

    pub async fn phone(&self, account: &str) -> Client {
        open_phone(self.addr, account, &self.phone_token(account)).await
    }

    pub async fn phone_with(&self, account: &str, token: &str) -> Client {
        open_phone(self.addr, account, token).await
    }

    pub async fn pair(&self, phone: &Client, opts: &PairOpts) -> Session {
        pair_session(self.addr, phone, opts).await
    }

    pub async fn resume(&self, token: &str) -> (Client, Value) {
        resume(self.addr, token).await
    }

    pub async fn resume_ok(&self, token: &str, session_id: &str) -> Client {
        resume_ok(self.addr, token, session_id).await
    }

    pub async fn assert_logged_out(&self, token: &str) {
        assert_logged_out(self.addr, token).await
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }
}

/// Runs `pairgate ARGS...` to completion (20 s): (exit status, stdout, stderr).
pub async fn run_cli(args: &[&str]) -> (std::process::ExitStatus, String, String) {
    run_cli_in(None, args).await
}

/// Like `run_cli`, in the working directory `cwd`.
pub async fn run_cli_in(
    cwd: Option<&Path>,
    args: &[&str],
) -> (std::process::ExitStatus, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut cmd = clean_command(&args);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("pairgate {args:?} did not finish in 20 s"))
        .expect("run pairgate");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `pairgate token ARGS...`: the one printed line.
pub async fn cli_token(args: &[&str]) -> String {
    let mut all = vec!["token"];
    all.extend_from_slice(args);
    let (st, out, err) = run_cli(&all).await;
    assert!(st.success(), "pairgate {all:?} failed ({st}): {err}");
    let lines: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "token must print exactly one line, got {out:?}"
    );
    lines[0].to_string()
}

// ---------------------------------------------------------------------------
// HTTP

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn parse_head(head: &[u8]) -> (u16, Vec<(String, String)>) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    (status, headers)
}

fn decode_chunked(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim().to_string();
        let Ok(size) = usize::from_str_radix(&size_text, 16) else {
            break;
        };
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            out.extend_from_slice(&data[..size.min(data.len())]);
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

/// `GET path` with `Connection: close`; `headers` may override `Host`.
pub async fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    http_request(addr, "GET", path, headers).await
}

/// `POST path` with an empty body and `Connection: close`.
pub async fn http_post(addr: SocketAddr, path: &str) -> HttpResponse {
    http_request(addr, "POST", path, &[("Content-Length", "0")]).await
}

/// `METHOD path` with `Connection: close`; `headers` may override `Host`.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    let fut = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(req.as_bytes()).await.expect("write request");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read response");
        buf
    };
    let buf = tokio::time::timeout(T, fut)
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no complete answer within {T:?}"));
    let end =
        find_head_end(&buf).unwrap_or_else(|| panic!("{method} {path}: no HTTP head in {buf:?}"));
    let (status, headers) = parse_head(&buf[..end]);
    let mut body = buf[end..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    if chunked {
        body = decode_chunked(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

/// Sends a WebSocket upgrade request for `path` with `headers` (which may set
/// `Host` and `Origin`) and returns the answer's status (101 = upgraded).
pub async fn upgrade_status(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> u16 {
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let fut = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(req.as_bytes()).await.expect("write request");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = find_head_end(&buf) {
                return parse_head(&buf[..end]).0;
            }
            let n = s.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed before an HTTP answer: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(T, fut)
        .await
        .unwrap_or_else(|_| panic!("upgrade {path} {headers:?}: no answer within {T:?}"))
}

// ---------------------------------------------------------------------------
// recording WebSocket client

type Ws = WebSocketStream<TcpStream>;

/// One received frame: its position among the socket's frames, its arrival
/// time and its JSON (`{"__text__":..}` / `{"__binary__":len}` if not JSON).
#[derive(Clone, Debug)]
pub struct Rx {
    pub idx: usize,
    pub t: Instant,
    pub msg: Value,
}

/// How a socket ended, as seen by the client.
#[derive(Clone, Debug)]
pub struct Closed {
    /// The close frame's code; `None` when the connection ended without one.
    pub code: Option<u16>,
    pub reason: String,
    /// Arrival of the close frame (or of the end of the connection).
    pub at: Instant,
}

struct Entry {
    t: Instant,
    msg: Value,
    consumed: bool,
}

#[derive(Default)]
struct Inner {
    frames: Vec<Entry>,
    closed: Option<Closed>,
}

/// A WebSocket client whose background task reads (and so answers pings)
/// all the time and records every frame with its arrival time.
pub struct Client {
    pub name: String,
    inner: Arc<Mutex<Inner>>,
    changed: watch::Receiver<u64>,
    sink: tokio::sync::Mutex<Option<SplitSink<Ws, Message>>>,
    reader: JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 300 {
        let mut end = 300;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s
    }
}

async fn read_loop(mut stream: SplitStream<Ws>, inner: Arc<Mutex<Inner>>, tx: watch::Sender<u64>) {
    let mut n = 0u64;
    let bump = |n: &mut u64| {
        *n += 1;
        let _ = tx.send(*n);
    };
    loop {
        let next = stream.next().await;
        let now = Instant::now();
        match next {
            Some(Ok(Message::Text(t))) => {
                let msg = serde_json::from_str::<Value>(t.as_str())
                    .unwrap_or_else(|_| json!({"__text__": t.as_str()}));
                inner.lock().unwrap().frames.push(Entry {
                    t: now,
                    msg,
                    consumed: false,
                });
                bump(&mut n);
            }
            Some(Ok(Message::Binary(b))) => {
                inner.lock().unwrap().frames.push(Entry {
                    t: now,
                    msg: json!({"__binary__": b.len()}),
                    consumed: false,
                });
                bump(&mut n);
            }
            Some(Ok(Message::Close(cf))) => {
                {
                    let mut g = inner.lock().unwrap();
                    if g.closed.is_none() {
                        g.closed = Some(Closed {
                            code: cf.as_ref().map(|c| u16::from(c.code)),
                            reason: cf.map(|c| c.reason.to_string()).unwrap_or_default(),
                            at: now,
                        });
                    }
                }
                bump(&mut n);
                // keep polling so that tungstenite sends its close reply
            }
            Some(Ok(_)) => {} // ping / pong: tungstenite answers pings itself
            Some(Err(e)) => {
                let mut g = inner.lock().unwrap();
                if g.closed.is_none() {
                    g.closed = Some(Closed {
                        code: None,
                        reason: format!("error: {e}"),
                        at: now,
                    });
                }
                drop(g);
                bump(&mut n);
                break;
            }
            None => {
                let mut g = inner.lock().unwrap();
                if g.closed.is_none() {
                    g.closed = Some(Closed {
                        code: None,
                        reason: "connection ended without a close frame".into(),
                        at: now,
                    });
                }
                drop(g);
                bump(&mut n);
                break;
            }
        }
    }
}

/// Opens `url` with optional `User-Agent` and `Origin` headers.
pub async fn try_open(url: &str, headers: &[(&str, &str)]) -> Result<Client, tungstenite::Error> {
    let mut req = url.into_client_request()?;
    for (k, v) in headers {
        req.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            tungstenite::http::HeaderValue::from_str(v).expect("header value"),
        );
    }
    let host = req.uri().host().expect("host").to_string();
    let port = req.uri().port_u16().unwrap_or(80);
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    let (ws, _resp) = tokio::time::timeout(
        T,
        tokio_tungstenite::client_async_with_config(req, tcp, None),
    )
    .await
    .map_err(|_| tungstenite::Error::Io(std::io::Error::other("handshake timed out")))??;
    let path = url.split_once("//").map(|x| x.1).unwrap_or(url);
    let path = path.find('/').map(|i| &path[i..]).unwrap_or("/");
    let name = format!("{path}#{}", COUNTER.fetch_add(1, Ordering::Relaxed));
    Ok(Client::from_ws(ws, name))
}

impl Client {
    fn from_ws(ws: Ws, name: String) -> Client {
        let (sink, stream) = ws.split();
        let inner = Arc::new(Mutex::new(Inner::default()));
        let (tx, rx) = watch::channel(0u64);
        let reader = tokio::spawn(read_loop(stream, inner.clone(), tx));
        Client {
            name,
            inner,
            changed: rx,
            sink: tokio::sync::Mutex::new(Some(sink)),
            reader,
        }
    }

    /// Opens `url` with no User-Agent and no Origin.
    pub async fn open(url: &str) -> Client {
        Self::open_with(url, None, None).await
    }

    pub async fn open_with(url: &str, user_agent: Option<&str>, origin: Option<&str>) -> Client {
        let mut headers = Vec::new();
        if let Some(ua) = user_agent {
            headers.push(("User-Agent", ua));
        }
        if let Some(o) = origin {
            headers.push(("Origin", o));
        }
        try_open(url, &headers)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"))
    }

    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    // -- sending

    pub async fn try_send_raw(&self, msg: Message) -> Result<(), tungstenite::Error> {
        let mut g = self.sink.lock().await;
        match g.as_mut() {
            Some(s) => s.send(msg).await,
            None => Err(tungstenite::Error::AlreadyClosed),
        }
    }

    pub async fn send_raw(&self, msg: Message) {
        if let Err(e) = self.try_send_raw(msg).await {
            panic!("{}: send failed: {e}; {}", self.name, self.describe());
        }
    }

    pub async fn send_text(&self, text: impl Into<String>) {
        self.send_raw(Message::text(text.into())).await
    }

    pub async fn send_json(&self, v: Value) {
        self.send_text(v.to_string()).await
    }

    /// Sends all frames, flushing once (pipelined).
    pub async fn send_many(&self, frames: impl IntoIterator<Item = Value>) {
        let mut g = self.sink.lock().await;
        let s = g.as_mut().expect("socket dropped");
        for f in frames {
            if let Err(e) = s.feed(Message::text(f.to_string())).await {
                panic!("{}: send failed: {e}", self.name);
            }
        }
        if let Err(e) = s.flush().await {
            panic!("{}: flush failed: {e}", self.name);
        }
    }

    /// Sends `frame` with an `id` (a fresh one unless it has one) and
    /// returns the one reply carrying that id.
    pub async fn request(&self, frame: Value) -> Value {
        self.request_within(frame, T).await
    }

    pub async fn request_within(&self, mut frame: Value, timeout: Duration) -> Value {
        let id = match frame.get("id") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                let id = next_id("r");
                frame["id"] = json!(id);
                id
            }
        };
        self.send_json(frame).await;
        self.expect_id_within(&id, timeout).await
    }

    /// Sends `frame` (with an id) and expects an `error` with `code` and that id.
    pub async fn request_error(&self, frame: Value, code: &str) -> Value {
        let r = self.request(frame).await;
        assert_eq!(
            r["type"], "error",
            "{}: expected error {code}, got {r}",
            self.name
        );
        assert_eq!(
            r["code"], code,
            "{}: expected error {code}, got {r}",
            self.name
        );
        assert!(
            r["message"].is_string(),
            "error without a string message: {r}"
        );
        r
    }

    // -- receiving

    fn describe(&self) -> String {
        let g = self.inner.lock().unwrap();
        let pending: Vec<String> = g
            .frames
            .iter()
            .filter(|f| !f.consumed)
            .map(|f| short(&f.msg))
            .collect();
        format!(
            "unconsumed frames of {}: {:?}; closed: {:?}",
            self.name,
            pending,
            g.closed.as_ref().map(|c| (c.code, c.reason.clone()))
        )
    }

    /// The first unconsumed frame matching `pred`, waiting up to `timeout`.
    pub async fn expect_where(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Rx {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.changed.clone();
        loop {
            changed.borrow_and_update();
            {
                let mut g = self.inner.lock().unwrap();
                if let Some(i) = g.frames.iter().position(|f| !f.consumed && pred(&f.msg)) {
                    g.frames[i].consumed = true;
                    return Rx {
                        idx: i,
                        t: g.frames[i].t,
                        msg: g.frames[i].msg.clone(),
                    };
                }
                if let Some(c) = &g.closed {
                    let c = c.clone();
                    drop(g);
                    panic!(
                        "{}: closed (code {:?}, {}) while waiting for {what}; {}",
                        self.name,
                        c.code,
                        c.reason,
                        self.describe()
                    );
                }
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{}: timed out after {timeout:?} waiting for {what}; {}",
                    self.name,
                    self.describe()
                );
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) | Err(_) => {}
                Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    /// The next unconsumed frame of type `ty` (others stay buffered).
    pub async fn expect(&self, ty: &str) -> Value {
        self.expect_within(ty, T).await
    }

    pub async fn expect_within(&self, ty: &str, timeout: Duration) -> Value {
        self.expect_rx_within(ty, timeout).await.msg
    }

    pub async fn expect_rx(&self, ty: &str) -> Rx {
        self.expect_rx_within(ty, T).await
    }

    pub async fn expect_rx_within(&self, ty: &str, timeout: Duration) -> Rx {
        self.expect_where(&format!("type={ty}"), timeout, |m| m["type"] == ty)
            .await
    }

    /// The next unconsumed frame of type `ty` whose `field` equals `value`.
    pub async fn expect_field(&self, ty: &str, field: &str, value: &Value) -> Value {
        self.expect_where(&format!("type={ty} {field}={value}"), T, |m| {
            m["type"] == ty && &m[field] == value
        })
        .await
        .msg
    }

    pub async fn expect_id(&self, id: &str) -> Value {
        self.expect_id_within(id, T).await
    }

    pub async fn expect_id_within(&self, id: &str, timeout: Duration) -> Value {
        self.expect_where(&format!("id={id}"), timeout, |m| m["id"] == id)
            .await
            .msg
    }

    pub async fn expect_id_rx(&self, id: &str) -> Rx {
        self.expect_where(&format!("id={id}"), T, |m| m["id"] == id)
            .await
    }

    /// The next unconsumed `error`; asserts its code and string message.
    pub async fn expect_error(&self, code: &str) -> Value {
        let m = self.expect("error").await;
        assert_eq!(
            m["code"], code,
            "{}: expected error {code}, got {m}",
            self.name
        );
        assert!(
            m["message"].is_string(),
            "error without a string message: {m}"
        );
        m
    }

    /// The next unconsumed frame of any type.
    pub async fn recv(&self) -> Value {
        self.expect_where("any frame", T, |_| true).await.msg
    }

    /// The frame right after `rx` in arrival order (waits for it); consumes it.
    pub async fn expect_after(&self, rx: &Rx, ty: &str) -> Value {
        let deadline = tokio::time::Instant::now() + T;
        let mut changed = self.changed.clone();
        loop {
            changed.borrow_and_update();
            {
                let mut g = self.inner.lock().unwrap();
                if let Some(f) = g.frames.get_mut(rx.idx + 1) {
                    let msg = f.msg.clone();
                    f.consumed = true;
                    drop(g);
                    assert_eq!(
                        msg["type"], ty,
                        "{}: the frame after {} must be {ty}, got {msg}",
                        self.name, rx.msg
                    );
                    return msg;
                }
                if g.closed.is_some() {
                    drop(g);
                    panic!(
                        "{}: closed while waiting for {ty} after {}; {}",
                        self.name,
                        rx.msg,
                        self.describe()
                    );
                }
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{}: no frame after {} within {T:?}; {}",
                    self.name,
                    rx.msg,
                    self.describe()
                );
            }
            let _ = tokio::time::timeout_at(deadline, changed.changed()).await;
        }
    }

    /// Unconsumed frames of type `ty` (not consumed by this call).
    pub fn pending(&self, ty: &str) -> Vec<Value> {
        let g = self.inner.lock().unwrap();
        g.frames
            .iter()
            .filter(|f| !f.consumed && f.msg["type"] == ty)
            .map(|f| f.msg.clone())
            .collect()
    }

    /// Every frame received so far of type `ty`, consumed or not.
    pub fn all_of(&self, ty: &str) -> Vec<Value> {
        let g = self.inner.lock().unwrap();
        g.frames
            .iter()
            .filter(|f| f.msg["type"] == ty)
            .map(|f| f.msg.clone())
            .collect()
    }

    /// Every frame received so far.
    pub fn all_frames(&self) -> Vec<Value> {
        let g = self.inner.lock().unwrap();
        g.frames.iter().map(|f| f.msg.clone()).collect()
    }

    /// Every client frame with an id gets exactly one reply: no id appears
    /// twice among the frames received so far.
    pub fn assert_one_reply_per_id(&self) {
        let g = self.inner.lock().unwrap();
        let mut seen = std::collections::HashSet::new();
        for f in &g.frames {
            if let Some(id) = f.msg.get("id") {
                assert!(
                    seen.insert(id.to_string()),
                    "{}: two replies carry id {id}: {}",
                    self.name,
                    short(&f.msg)
                );
            }
        }
    }

    /// Asserts that no unconsumed frame of type `ty` arrived.
    pub fn assert_none(&self, ty: &str) {
        let p = self.pending(ty);
        assert!(p.is_empty(), "{}: unexpected {ty}: {p:?}", self.name);
    }

    /// Absence over time: waits `quiet`, then asserts no unconsumed `ty`.
    pub async fn assert_quiet(&self, ty: &str, quiet: Duration) {
        tokio::time::sleep(quiet).await;
        self.assert_none(ty);
    }

    pub fn closed(&self) -> Option<Closed> {
        self.inner.lock().unwrap().closed.clone()
    }

    pub fn is_closed(&self) -> bool {
        self.closed().is_some()
    }

    /// Waits (default deadline) for the end of the socket.
    pub async fn wait_closed(&self) -> Closed {
        self.wait_closed_within(T).await
    }

    pub async fn wait_closed_within(&self, timeout: Duration) -> Closed {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.changed.clone();
        loop {
            changed.borrow_and_update();
            if let Some(c) = self.closed() {
                return c;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{}: not closed within {timeout:?}; {}",
                    self.name,
                    self.describe()
                );
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) | Err(_) => {}
                Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    /// Waits for the close frame and returns its code (fails without one).
    pub async fn expect_close(&self) -> u16 {
        self.expect_close_within(T).await
    }

    pub async fn expect_close_within(&self, timeout: Duration) -> u16 {
        let c = self.wait_closed_within(timeout).await;
        match c.code {
            Some(code) => code,
            None => panic!(
                "{}: ended without a close frame ({}); {}",
                self.name,
                c.reason,
                self.describe()
            ),
        }
    }

    /// A clean close from the client side (1000); waits for the end.
    pub async fn close(&self) {
        let _ = self
            .try_send_raw(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(3), self.wait_closed_quiet()).await;
        self.sink.lock().await.take();
    }

    async fn wait_closed_quiet(&self) {
        let mut changed = self.changed.clone();
        loop {
            changed.borrow_and_update();
            if self.is_closed() {
                return;
            }
            if changed.changed().await.is_err() {
                return;
            }
        }
    }

    /// Drops the TCP connection without a close frame.
    pub async fn abort(&self) {
        self.reader.abort();
        self.sink.lock().await.take();
    }
}

/// Asserts that `c` receives an `error` with `code` and is then closed with `close`.
pub async fn expect_error_and_close(c: &Client, code: &str, close: u16) {
    c.expect_error(code).await;
    assert_eq!(c.expect_close().await, close, "{}: close code", c.name);
}

// ---------------------------------------------------------------------------
// protocol helpers

pub fn ws_url(addr: SocketAddr, path: &str) -> String {
    format!("ws://{addr}{path}")
}

/// Opens `/ws/phone`, checks `hello`, authenticates, checks `ready`.
pub async fn open_phone(addr: SocketAddr, account: &str, token: &str) -> Client {
    let c = Client::open(&ws_url(addr, "/ws/phone"))
        .await
        .named(format!("phone:{account}"));
    let hello = c.expect("hello").await;
    assert_eq!(hello["protocol"], 1, "{hello}");
    c.send_json(json!({"type": "auth", "token": token})).await;
    let ready = c
        .expect_where("ready or error", T, |m| {
            m["type"] == "ready" || m["type"] == "error"
        })
        .await
        .msg;
    assert_eq!(ready["type"], "ready", "phone auth failed: {ready}");
    assert_eq!(ready["role"], "phone", "{ready}");
    assert_eq!(ready["account"], account, "{ready}");
    c
}

/// Opens `/ws/web` with `user_agent` (none if `None`) and takes `hello`.
pub async fn open_web(addr: SocketAddr, user_agent: Option<&str>) -> Client {
    let c = Client::open_with(&ws_url(addr, "/ws/web"), user_agent, None).await;
    let hello = c.expect("hello").await;
    assert_eq!(hello["protocol"], 1, "{hello}");
    c
}

#[derive(Clone, Debug)]
pub struct PairOpts {
    /// `None`: `remember` is left out of `pair`.
    pub remember: Option<bool>,
    pub device_name: Option<String>,
    /// `None`: no User-Agent header.
    pub user_agent: Option<String>,
    /// Link with the pairing code instead of the ref.
    pub by_code: bool,
}

impl Default for PairOpts {
    fn default() -> Self {
        PairOpts {
            remember: None,
            device_name: None,
            user_agent: Some(CHROME_LINUX_UA.to_string()),
            by_code: false,
        }
    }
}

impl PairOpts {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn remember(mut self, r: bool) -> Self {
        self.remember = Some(r);
        self
    }
    pub fn device_name(mut self, n: &str) -> Self {
        self.device_name = Some(n.to_string());
        self
    }
    pub fn user_agent(mut self, ua: Option<&str>) -> Self {
        self.user_agent = ua.map(str::to_string);
        self
    }
    pub fn by_code(mut self) -> Self {
        self.by_code = true;
        self
    }
    pub fn pair_frame(&self) -> Value {
        let mut f = json!({"type": "pair"});
        if let Some(r) = self.remember {
            f["remember"] = json!(r);
        }
        if let Some(n) = &self.device_name {
            f["device_name"] = json!(n);
        }
        f
    }
}

/// Opens a web socket, sends `pair`, returns it with its first `qr`.
pub async fn start_pairing(addr: SocketAddr, opts: &PairOpts) -> (Client, Value) {
    let web = open_web(addr, opts.user_agent.as_deref()).await;
    web.send_json(opts.pair_frame()).await;
    let qr = web.expect("qr").await;
    (web, qr)
}

/// A linked web session.
pub struct Session {
    pub web: Client,
    pub session_id: String,
    pub token: String,
    pub remember: bool,
    pub qr: Value,
    pub link_request: Value,
    pub device_linked: Value,
    pub linked: Value,
}

/// Pairs a new web session through `phone` (link + link_confirm).
pub async fn pair_session(addr: SocketAddr, phone: &Client, opts: &PairOpts) -> Session {
    let (web, qr) = start_pairing(addr, opts).await;
    let link = if opts.by_code {
        json!({"type": "link", "code": qr["code"]})
    } else {
        json!({"type": "link", "ref": qr["ref"]})
    };
    let lr = phone.request(link).await;
    assert_eq!(lr["type"], "link_request", "link failed: {lr}");
    let dl = phone
        .request(json!({"type": "link_confirm", "request_id": lr["request_id"]}))
        .await;
    assert_eq!(dl["type"], "device_linked", "link_confirm failed: {dl}");
    let linked_rx = web.expect_rx("linked").await;
    let linked = linked_rx.msg.clone();
    let st = web.expect_after(&linked_rx, "phone_status").await;
    assert_eq!(st["online"], true, "{st}");
    let session_id = linked["session_id"]
        .as_str()
        .unwrap_or_else(|| panic!("linked without session_id: {linked}"))
        .to_string();
    let token = linked["token"]
        .as_str()
        .unwrap_or_else(|| panic!("linked without token: {linked}"))
        .to_string();
    Session {
        web: web.named(format!("web:{session_id}")),
        remember: linked["remember"].as_bool().unwrap_or(true),
        session_id,
        token,
        qr,
        link_request: lr,
        device_linked: dl,
        linked,
    }
}

/// Opens `/ws/web` and sends `auth` with `token`: (client, `ready` or `error`).
pub async fn resume(addr: SocketAddr, token: &str) -> (Client, Value) {
    let web = open_web(addr, Some(CHROME_LINUX_UA)).await;
    web.send_json(json!({"type": "auth", "token": token})).await;
    let reply = web
        .expect_where("ready or error", T, |m| {
            m["type"] == "ready" || m["type"] == "error"
        })
        .await
        .msg;
    (web, reply)
}

/// Resumes and asserts `ready` for `session_id` followed by `phone_status`.
pub async fn resume_ok(addr: SocketAddr, token: &str, session_id: &str) -> Client {
    let web = open_web(addr, Some(CHROME_LINUX_UA)).await;
    web.send_json(json!({"type": "auth", "token": token})).await;
    let rx = web
        .expect_where("ready or error", T, |m| {
            m["type"] == "ready" || m["type"] == "error"
        })
        .await;
    assert_eq!(rx.msg["type"], "ready", "resume failed: {}", rx.msg);
    assert_eq!(rx.msg["role"], "web", "{}", rx.msg);
    assert_eq!(rx.msg["session_id"], session_id, "{}", rx.msg);
    web.expect_after(&rx, "phone_status").await;
    web.named(format!("web:{session_id}"))
}

/// A resume with `token` gets `error logged_out` and close 4001.
pub async fn assert_logged_out(addr: SocketAddr, token: &str) {
    let (web, reply) = resume(addr, token).await;
    assert_eq!(reply["type"], "error", "expected logged_out, got {reply}");
    assert_eq!(
        reply["code"], "logged_out",
        "expected logged_out, got {reply}"
    );
    assert_eq!(web.expect_close().await, 4001, "logged_out close code");
}

/// `list_sessions` through `phone`: the sessions array.
pub async fn list_sessions(phone: &Client) -> Vec<Value> {
    let r = phone.request(json!({"type": "list_sessions"})).await;
    assert_eq!(r["type"], "sessions", "list_sessions failed: {r}");
    r["sessions"]
        .as_array()
        .unwrap_or_else(|| panic!("sessions is not an array: {r}"))
        .clone()
}

pub fn session_ids(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|s| s["session_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// RFC 3339 with a UTC offset (`Z` or `+00:00`).
pub fn is_rfc3339_utc(s: &str) -> bool {
    match time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        Ok(t) => t.offset().is_utc() && (s.ends_with('Z') || s.ends_with("+00:00")),
        Err(_) => false,
    }
}

pub fn parse_time(s: &str) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("not RFC 3339: {s:?}: {e}"))
}

/// Checks every field of a `SESSION` object.
pub fn assert_session_shape(s: &Value) {
    for k in SESSION_KEYS {
        assert!(s.get(k).is_some(), "SESSION lacks {k}: {s}");
    }
    assert!(
        s["session_id"].as_str().is_some_and(|x| !x.is_empty()),
        "{s}"
    );
    assert!(s["device_name"].is_string(), "{s}");
    assert!(s["user_agent"].is_string(), "{s}");
    assert!(s["ip"].is_string(), "{s}");
    for k in ["created_at", "last_active_at"] {
        let t = s[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k} not a string: {s}"));
        assert!(is_rfc3339_utc(t), "{k} is not RFC 3339 UTC: {t:?}");
        // Fixed width (`2026-11-28T22:18:02.800Z`), so clients may sort the texts.
        assert!(
            t.len() == 24 && t.as_bytes()[19] == b'.' && t.ends_with('Z'),
            "{k} is not fixed-width with milliseconds: {t:?}"
        );
    }
    assert!(
        parse_time(s["created_at"].as_str().unwrap())
            <= parse_time(s["last_active_at"].as_str().unwrap()),
        "last_active_at before created_at: {s}"
    );
    assert!(s["online"].is_boolean(), "{s}");
    assert!(s["remember"].is_boolean(), "{s}");
}

/// Unsolicited events carry no `id`.
pub fn assert_no_id(m: &Value) {
    assert!(m.get("id").is_none(), "event carries an id: {m}");
}

/// The sum of every sample of metric `name` (any labels) in Prometheus text.
pub fn metric_sum(body: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in body.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let metric_end = line.find(['{', ' ']).unwrap_or(line.len());
        if &line[..metric_end] != name {
            continue;
        }
        let rest = if line[metric_end..].starts_with('{') {
            match line[metric_end..].find('}') {
                Some(i) => &line[metric_end + i + 1..],
                None => continue,
            }
        } else {
            &line[metric_end..]
        };
        let value = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = value {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

// ---------------------------------------------------------------------------
// a bare WebSocket client

/// One event read by `RawWs`.
#[derive(Debug)]
pub enum RawEvent {
    Text(String),
    Binary(Vec<u8>),
    Ping,
    Pong,
    Close(Option<u16>),
    Eof,
    /// A frame a browser would fail the connection for (RFC 6455).
    Violation(String),
}

/// RFC 6455 by hand: sends masked frames, reads only when asked, answers
/// nothing (no pong, no close reply). Plays a silent or a slow socket.
pub struct RawWs {
    pub name: String,
    stream: TcpStream,
    buf: Vec<u8>,
    frag: Vec<u8>,
    /// The opcode of the fragmented message being assembled.
    frag_op: Option<u8>,
    /// JSON frames read but not yet taken by `expect`.
    backlog: VecDeque<Value>,
    pub pings: usize,
    /// `Some(code)` once a close frame (code) or the end (`None`) was read.
    pub closed: Option<Option<u16>>,
}

impl RawWs {
    /// Connects (optionally with a small receive buffer) and upgrades.
    pub async fn connect(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        recv_buffer: Option<u32>,
    ) -> RawWs {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        if let Some(n) = recv_buffer {
            sock.set_recv_buffer_size(n).expect("SO_RCVBUF");
        }
        let mut stream = sock.connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream
            .write_all(req.as_bytes())
            .await
            .expect("write upgrade");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = tokio::time::timeout(T, async {
            loop {
                if let Some(end) = find_head_end(&buf) {
                    return end;
                }
                let n = stream.read(&mut chunk).await.expect("read upgrade answer");
                assert!(n > 0, "closed during upgrade");
                buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .expect("upgrade answer within 5 s");
        let (status, _) = parse_head(&buf[..end]);
        assert_eq!(
            status,
            101,
            "upgrade refused: {}",
            String::from_utf8_lossy(&buf[..end])
        );
        let rest = buf[end..].to_vec();
        RawWs {
            name: format!("raw{path}#{}", COUNTER.fetch_add(1, Ordering::Relaxed)),
            stream,
            buf: rest,
            frag: Vec::new(),
            frag_op: None,
            backlog: VecDeque::new(),
            pings: 0,
            closed: None,
        }
    }

    pub async fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        let mut head = vec![0x80 | opcode];
        let n = payload.len();
        if n < 126 {
            head.push(0x80 | n as u8);
        } else if n < 65536 {
            head.push(0x80 | 126);
            head.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            head.push(0x80 | 127);
            head.extend_from_slice(&(n as u64).to_be_bytes());
        }
        let mask: [u8; 4] = rand::random();
        head.extend_from_slice(&mask);
        head.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&head).await.expect("raw write");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send_frame(0x1, text.as_bytes()).await
    }

    pub async fn send_json(&mut self, v: Value) {
        self.send_text(&v.to_string()).await
    }

    /// A whole frame from the buffer, if there is one: (fin, opcode, payload,
    /// reserved bits).
    fn parse_frame(&mut self) -> Option<(bool, u8, Vec<u8>, u8)> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let rsv = b[0] & 0x70;
        let fin = b[0] & 0x80 != 0;
        let op = b[0] & 0x0f;
        let masked = b[1] & 0x80 != 0;
        let mut n = (b[1] & 0x7f) as usize;
        let mut at = 2;
        if n == 126 {
            if b.len() < 4 {
                return None;
            }
            n = u16::from_be_bytes([b[2], b[3]]) as usize;
            at = 4;
        } else if n == 127 {
            if b.len() < 10 {
                return None;
            }
            n = u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize;
            at = 10;
        }
        let mask = if masked {
            if b.len() < at + 4 {
                return None;
            }
            let m = [b[at], b[at + 1], b[at + 2], b[at + 3]];
            at += 4;
            Some(m)
        } else {
            None
        };
        if b.len() < at + n {
            return None;
        }
        let mut data = b[at..at + n].to_vec();
        if let Some(m) = mask {
            for (i, x) in data.iter_mut().enumerate() {
                *x ^= m[i % 4];
            }
        }
        self.buf.drain(..at + n);
        Some((fin, op, data, rsv))
    }

    /// Turns buffered bytes into an event, if a whole message is there. As
    /// strict as a browser: a frame RFC 6455 forbids is a `Violation`.
    fn buffered_event(&mut self) -> Option<RawEvent> {
        while let Some((fin, op, data, rsv)) = self.parse_frame() {
            if rsv != 0 {
                return Some(RawEvent::Violation(format!("reserved bits {rsv:#x}")));
            }
            if op >= 0x8 && (!fin || data.len() > 125) {
                return Some(RawEvent::Violation(format!(
                    "control frame {op:#x}: fin {fin}, {} bytes",
                    data.len()
                )));
            }
            match op {
                0x9 => {
                    self.pings += 1;
                    return Some(RawEvent::Ping);
                }
                0xA => return Some(RawEvent::Pong),
                0x8 => {
                    let code = (data.len() >= 2).then(|| u16::from_be_bytes([data[0], data[1]]));
                    self.closed = Some(code);
                    return Some(RawEvent::Close(code));
                }
                0x1 | 0x2 if self.frag_op.is_some() => {
                    return Some(RawEvent::Violation(format!(
                        "a new data frame ({op:#x}) inside a fragmented message"
                    )));
                }
                0x0 if self.frag_op.is_none() => {
                    return Some(RawEvent::Violation(
                        "a continuation frame outside a fragmented message".into(),
                    ));
                }
                0x0..=0x2 => {
                    let op = *self.frag_op.get_or_insert(op);
                    self.frag.extend_from_slice(&data);
                    if fin {
                        self.frag_op = None;
                        let all = std::mem::take(&mut self.frag);
                        return Some(if op == 0x2 {
                            RawEvent::Binary(all)
                        } else {
                            match String::from_utf8(all) {
                                Ok(text) => RawEvent::Text(text),
                                Err(_) => RawEvent::Violation("text that is not UTF-8".into()),
                            }
                        });
                    }
                }
                _ => return Some(RawEvent::Violation(format!("reserved opcode {op:#x}"))),
            }
        }
        None
    }

    /// The next event, or `None` if nothing complete arrived within `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<RawEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut chunk = vec![0u8; 65536];
        loop {
            if let Some(e) = self.buffered_event() {
                return Some(e);
            }
            if self.closed.is_some() {
                return Some(RawEvent::Eof);
            }
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => {
                    self.closed = Some(None);
                    return Some(RawEvent::Eof);
                }
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next JSON text message (pings counted, not answered); panics on
    /// close, end or timeout.
    pub async fn recv_json(&mut self) -> Value {
        if let Some(v) = self.backlog.pop_front() {
            return v;
        }
        self.recv_json_wire(T).await
    }

    async fn recv_json_wire(&mut self, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(RawEvent::Text(t)) => {
                    return serde_json::from_str(&t)
                        .unwrap_or_else(|_| panic!("{}: not JSON: {t:?}", self.name));
                }
                Some(RawEvent::Ping) | Some(RawEvent::Pong) => {}
                Some(RawEvent::Binary(b)) => {
                    panic!("{}: binary frame ({} bytes)", self.name, b.len())
                }
                Some(RawEvent::Close(c)) => panic!(
                    "{}: closed ({c:?}) while waiting for a frame; backlog {:?}",
                    self.name, self.backlog
                ),
                Some(RawEvent::Eof) => {
                    panic!("{}: connection ended while waiting for a frame", self.name)
                }
                Some(RawEvent::Violation(v)) => panic!("{}: protocol violation: {v}", self.name),
                None => panic!(
                    "{}: no frame within {timeout:?}; backlog {:?}",
                    self.name, self.backlog
                ),
            }
        }
    }

    /// The next JSON frame of type `ty`; frames of other types are kept.
    pub async fn expect(&mut self, ty: &str) -> Value {
        if let Some(i) = self.backlog.iter().position(|m| m["type"] == ty) {
            return self.backlog.remove(i).unwrap();
        }
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                panic!(
                    "{}: no {ty} within {T:?}; backlog {:?}",
                    self.name, self.backlog
                );
            }
            let m = self.recv_json_wire(left).await;
            if m["type"] == ty {
                return m;
            }
            self.backlog.push_back(m);
        }
    }

    /// Reads and drops everything until the close frame (its code) or the
    /// end of the connection (`None`); panics after `timeout`.
    pub async fn wait_closed(&mut self, timeout: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(c) = self.closed {
                return c;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(RawEvent::Text(t)) => {
                    if let Ok(v) = serde_json::from_str::<Value>(&t) {
                        self.backlog.push_back(v);
                        if self.backlog.len() > 64 {
                            self.backlog.pop_front();
                        }
                    }
                }
                Some(RawEvent::Violation(v)) => panic!("{}: protocol violation: {v}", self.name),
                Some(_) => {}
                None => panic!(
                    "{}: not closed within {timeout:?} (pings seen: {})",
                    self.name, self.pings
                ),
            }
        }
    }

    /// Reads what is readable right now (no waiting) into events.
    pub fn drain_now(&mut self) -> Vec<RawEvent> {
        let mut chunk = vec![0u8; 65536];
        loop {
            match self.stream.try_read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => break,
            }
        }
        let mut out = Vec::new();
        while let Some(e) = self.buffered_event() {
            out.push(e);
        }
        out
    }

    /// Frames read by `wait_closed` / `expect` and not taken.
    pub fn backlog(&self) -> Vec<Value> {
        self.backlog.iter().cloned().collect()
    }
}

/// Resumes `token` over a `RawWs` (which then reads nothing unless told to).
pub async fn raw_resume(addr: SocketAddr, token: &str, recv_buffer: Option<u32>) -> RawWs {
    let mut raw = RawWs::connect(
        addr,
        "/ws/web",
        &[("User-Agent", CHROME_LINUX_UA)],
        recv_buffer,
    )
    .await;
    let hello = raw.recv_json().await;
    assert_eq!(hello["type"], "hello", "{hello}");
    raw.send_json(json!({"type": "auth", "token": token})).await;
    let ready = raw.recv_json().await;
    assert_eq!(ready["type"], "ready", "{ready}");
    let st = raw.recv_json().await;
    assert_eq!(st["type"], "phone_status", "{st}");
    raw
}

/// A phone over a `RawWs`: hello, auth, ready.
pub async fn raw_phone(addr: SocketAddr, token: &str, recv_buffer: Option<u32>) -> RawWs {
    let mut raw = RawWs::connect(addr, "/ws/phone", &[], recv_buffer).await;
    let hello = raw.recv_json().await;
    assert_eq!(hello["type"], "hello", "{hello}");
    raw.send_json(json!({"type": "auth", "token": token})).await;
    let ready = raw.recv_json().await;
    assert_eq!(ready["type"], "ready", "{ready}");
    raw
}

/// The value of metric `name` (summed over its labels) in `/metrics` now.
pub async fn metric_now(addr: SocketAddr, name: &str) -> f64 {
    let body = http_get(addr, "/metrics", &[]).await.text();
    metric_sum(&body, name).unwrap_or_else(|| panic!("no metric {name} in /metrics"))
}

/// Polls `/metrics` until `name` satisfies `ok`; panics with the last value
/// after `timeout`.
pub async fn wait_for_metric(
    addr: SocketAddr,
    name: &str,
    timeout: Duration,
    ok: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = Instant::now() + timeout;
    loop {
        let v = metric_now(addr, name).await;
        if ok(v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is still {v} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}
