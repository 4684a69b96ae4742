//! `pairgate phone`, the built binary, against an in-process gateway: one-shot
//! commands (link, sessions, send, logout, failures and their exit statuses) and
//! an interactive session driven through stdin while the web side pushes events.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use pairgate::Config;
use pairgate::client::{Client, ConnectOptions};
use pairgate::protocol::ClientFrame;
use pairgate::tokens::Tokens;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Deadline of every wait. Generous: each step may start a process on a busy
/// machine, and a passing run never waits this long.
const T: Duration = Duration::from_secs(30);
const SECRET: &str = "phone-cli-test-secret";
const CHROME_LINUX_UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";

struct Gateway {
    addr: SocketAddr,
    data_dir: PathBuf,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

/// A gateway on a free port; `secret: None` makes it generate one in its data dir.
async fn start(secret: Option<&str>) -> Gateway {
    start_with(secret, None).await
}

/// `start`, with the operator API on when `admin_token` is given.
async fn start_with(secret: Option<&str>, admin_token: Option<&str>) -> Gateway {
    start_configured(secret, |c| c.admin_token = admin_token.map(str::to_owned)).await
}

/// `start`, with `tweak` applied to the configuration.
async fn start_configured(secret: Option<&str>, tweak: impl FnOnce(&mut Config)) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        secret: secret.map(str::to_owned),
        ..Config::default()
    };
    tweak(&mut config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(pairgate::run(listener, config, async move {
        let _ = stopped.await;
    }));
    Gateway {
        addr,
        data_dir: dir.path().to_path_buf(),
        stop,
        task,
        _dir: dir,
    }
}

impl Gateway {
    /// The gateway's base as an operator would copy it from the log: the CLI
    /// turns it into `ws://.../ws/phone`.
    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn shutdown(self) {
        let _ = self.stop.send(());
        timeout(T, self.task)
            .await
            .expect("gateway stops in time")
            .unwrap()
            .unwrap();
    }
}

fn phone_token(account: &str) -> String {
    Tokens::new(SECRET)
        .mint_phone(account, Duration::from_secs(3600))
        .unwrap()
}

/// A web socket that is pairing, and its first `qr` frame.
async fn pair_web(addr: SocketAddr) -> (Client, Value) {
    let opts = ConnectOptions {
        user_agent: Some(CHROME_LINUX_UA.to_owned()),
        timeout: T,
        ..ConnectOptions::default()
    };
    let mut web = Client::connect(&format!("ws://{addr}/ws/web"), &opts)
        .await
        .unwrap();
    let qr = web
        .request(ClientFrame::Pair {
            remember: true,
            device_name: Some("Test browser".into()),
        })
        .await
        .unwrap();
    assert_eq!(qr["type"], "qr", "{qr}");
    (web, qr)
}

/// `pairgate phone ARGS`, with the environment cleared of anything that would
/// change its meaning.
fn phone_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pairgate"));
    cmd.arg("phone")
        .args(args)
        .env_remove("PAIRGATE_URL")
        .env_remove("PAIRGATE_PHONE_TOKEN")
        .env_remove("PAIRGATE_SECRET")
        .env_remove("PAIRGATE_DATA_DIR")
        .env_remove("PAIRGATE_ADMIN_TOKEN")
        .kill_on_drop(true);
    cmd
}

/// `pairgate phone ARGS` in interactive mode: the process, its stdin to type
/// into, and its stdout's lines.
fn interactive_phone(args: &[&str]) -> (Child, ChildStdin, Lines<BufReader<ChildStdout>>) {
    let mut child = phone_cmd(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, stdin, lines)
}

/// Runs a one-shot `pairgate phone ARGS` to completion.
async fn phone(args: &[&str]) -> Output {
    let mut cmd = phone_cmd(args);
    cmd.stdin(Stdio::null());
    timeout(T, cmd.output())
        .await
        .expect("pairgate phone finishes in time")
        .unwrap()
}

/// Runs `pairgate phone ARGS` reading commands from `input`.
async fn phone_with_input(args: &[&str], input: &str) -> Output {
    let mut cmd = phone_cmd(args);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    timeout(T, child.wait_with_output())
        .await
        .expect("pairgate phone finishes in time")
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Each stdout line parsed as JSON (which `--json` promises).
fn json_lines(o: &Output) -> Vec<Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

/// The next stdout line of a running CLI that matches `want`; the lines before it
/// are kept in `seen` for the failure message.
async fn line_matching(
    lines: &mut Lines<BufReader<ChildStdout>>,
    seen: &mut Vec<String>,
    want: impl Fn(&str) -> bool,
) -> String {
    let found = timeout(T, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push(line.clone());
            if want(&line) {
                return Some(line);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(line)) => line,
        Ok(None) => panic!("stdout ended; saw {seen:#?}"),
        Err(_) => panic!("no matching line in time; saw {seen:#?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_link_sessions_send_logout() {
    let gw = start(Some(SECRET)).await;
    let base = gw.base();
    let token = phone_token("alice");
    let (mut web, qr) = pair_web(gw.addr).await;
    let payload = qr["payload"].as_str().unwrap();

    // link by QR payload, confirmed by --yes
    let out = phone(&[
        "--url", &base, "--token", &token, "--yes", "--json", "link", payload,
    ])
    .await;
    assert_ok(&out);
    let frames = json_lines(&out);
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0]["type"], "link_request");
    assert_eq!(frames[0]["device"]["name"], "Test browser");
    assert_eq!(frames[0]["device"]["user_agent"], CHROME_LINUX_UA);
    assert_eq!(frames[0]["device"]["ip"], "127.0.0.1");
    assert_eq!(frames[1]["type"], "device_linked");
    let sid = frames[1]["session"]["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let linked = timeout(T, web.expect("linked")).await.unwrap().unwrap();
    assert_eq!(linked["session_id"], sid.as_str());
    assert_eq!(linked["account"], "alice");

    // sessions, JSON and as a table; the /ws/phone form of --url works as well
    let phone_url = format!("ws://{}/ws/phone", gw.addr);
    let out = phone(&["--url", &phone_url, "--token", &token, "--json", "sessions"]).await;
    assert_ok(&out);
    let frames = json_lines(&out);
    assert_eq!(frames.len(), 1, "{frames:?}");
    let sessions = frames[0]["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["session_id"], sid.as_str());
    assert_eq!(sessions[0]["device_name"], "Test browser");
    assert_eq!(sessions[0]["online"], true);
    let out = phone(&["--url", &base, "--token", &token, "sessions"]).await;
    assert_ok(&out);
    let table = stdout(&out);
    assert!(table.starts_with("SESSION"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&sid) && l.contains("Test browser")),
        "{table}"
    );

    // send: readable output, then a raw JSON body to one session
    let out = phone(&["--url", &base, "--token", &token, "send", "hello", "there"]).await;
    assert_ok(&out);
    assert_eq!(stdout(&out).trim(), "delivered 1");
    let msg = timeout(T, web.expect("message")).await.unwrap().unwrap();
    assert_eq!(msg["from"], "phone");
    assert_eq!(msg["body"], json!({"text": "hello there"}));
    let out = phone(&[
        "--url",
        &base,
        "--token",
        &token,
        "--json",
        "send",
        "--to",
        &sid,
        "--json-body",
        r#"{"n": [1, 2]}"#,
    ])
    .await;
    assert_ok(&out);
    let frames = json_lines(&out);
    assert_eq!(frames[0]["type"], "ack");
    assert_eq!(frames[0]["delivered"], 1);
    let msg = timeout(T, web.expect("message")).await.unwrap().unwrap();
    assert_eq!(msg["body"], json!({"n": [1, 2]}));

    // an error reply: exit 1, the code on stderr (readable) or stdout (JSON)
    let out = phone(&["--url", &base, "--token", &token, "logout", "nosuch"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("unknown_session"), "{}", stderr(&out));
    let out = phone(&[
        "--url", &base, "--token", &token, "--json", "logout", "nosuch",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    let frames = json_lines(&out);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["type"], "error");
    assert_eq!(frames[0]["code"], "unknown_session");

    // interactive JSON on piped stdin: `ready` first, every reply a line, a failed
    // command is reported and the session goes on, end of input exits 0
    let out = phone_with_input(
        &["--url", &base, "--token", &token, "--json"],
        "sessions\nlogout nosuch\nbogus\n",
    )
    .await;
    assert_ok(&out);
    let frames = json_lines(&out);
    let types: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["ready", "sessions", "error", "error"], "{frames:?}");
    assert_eq!(frames[0]["account"], "alice");
    assert_eq!(frames[2]["code"], "unknown_session");
    assert_eq!(frames[3]["code"], "usage");

    // logout ends the web session with 4001
    let out = phone(&["--url", &base, "--token", &token, "--json", "logout", &sid]).await;
    assert_ok(&out);
    let frames = json_lines(&out);
    assert_eq!(frames[0]["type"], "ok");
    assert_eq!(frames[0]["closed"], 1);
    let bye = timeout(T, web.expect("logged_out")).await.unwrap().unwrap();
    assert_eq!(bye["reason"], "phone_logout");
    assert_eq!(timeout(T, web.closed()).await.unwrap(), Some(4001));
    let out = phone(&["--url", &base, "--token", &token, "sessions"]).await;
    assert_ok(&out);
    assert_eq!(stdout(&out).trim(), "no linked sessions");

    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_and_minted_tokens() {
    let gw = start(Some(SECRET)).await;
    let base = gw.base();

    // a token signed with another key: invalid_token, exit 3
    let forged = Tokens::new("not-the-secret")
        .mint_phone("alice", Duration::from_secs(3600))
        .unwrap();
    let out = phone(&["--url", &base, "--token", &forged, "sessions"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("invalid_token"), "{}", stderr(&out));
    let out = phone(&["--url", &base, "--token", "garbage", "--json", "sessions"]).await;
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(json_lines(&out)[0]["code"], "invalid_token");

    // --account with --secret mints a token the gateway accepts
    let out = phone(&[
        "--url",
        &base,
        "--account",
        "bob",
        "--secret",
        SECRET,
        "--json",
        "sessions",
    ])
    .await;
    assert_ok(&out);
    assert_eq!(json_lines(&out)[0]["sessions"], json!([]));

    // a one-shot link that nobody would answer is refused before connecting
    let out = phone(&[
        "--url",
        &base,
        "--token",
        &phone_token("bob"),
        "link",
        "ABCD-EFGH",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));

    // --reject answers the request: the web side sees pair_rejected
    let (mut web, qr) = pair_web(gw.addr).await;
    let code = qr["code"].as_str().unwrap();
    let out = phone(&[
        "--url",
        &base,
        "--token",
        &phone_token("bob"),
        "--reject",
        "--json",
        "link",
        code,
    ])
    .await;
    assert_ok(&out);
    let types: Vec<Value> = json_lines(&out).iter().map(|f| f["type"].clone()).collect();
    assert_eq!(types, [json!("link_request"), json!("ok")]);
    timeout(T, web.expect("pair_rejected"))
        .await
        .unwrap()
        .unwrap();

    // nothing listening: exit 3
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("ws://{}", closed.local_addr().unwrap());
    drop(closed);
    let out = phone(&["--url", &dead, "--token", &phone_token("bob"), "sessions"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("connect_failed"), "{}", stderr(&out));

    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_session_over_stdin() {
    // A generated secret, so --account signs with the data dir's.
    let gw = start(None).await;
    let data_dir = gw.data_dir.to_str().unwrap().to_owned();
    let (mut web, qr) = pair_web(gw.addr).await;
    let code = qr["code"].as_str().unwrap().to_owned();

    let (mut child, mut stdin, mut lines) = interactive_phone(&[
        "--url",
        &gw.base(),
        "--account",
        "carol",
        "--data-dir",
        &data_dir,
    ]);
    let mut seen = Vec::new();

    // Not a terminal, so no prompt: the line after `link` is the answer.
    stdin
        .write_all(format!("link {code}\ny\n").as_bytes())
        .await
        .unwrap();
    line_matching(&mut lines, &mut seen, |l| l.starts_with("link request ")).await;
    line_matching(&mut lines, &mut seen, |l| {
        l.contains("device:     Test browser")
    })
    .await;
    let linked_line =
        line_matching(&mut lines, &mut seen, |l| l.starts_with("linked session ")).await;
    let linked = timeout(T, web.expect("linked")).await.unwrap().unwrap();
    let sid = linked["session_id"].as_str().unwrap().to_owned();
    assert!(linked_line.contains(&sid), "{linked_line}");
    // The CLI is this account's phone, and it is still connected.
    timeout(
        T,
        web.wait_for(|v| v["type"] == "phone_status" && v["online"] == true),
    )
    .await
    .unwrap()
    .unwrap();

    stdin.write_all(b"sessions\n").await.unwrap();
    let row = line_matching(&mut lines, &mut seen, |l| l.starts_with(&sid)).await;
    assert!(row.contains("Test browser") && row.contains("yes"), "{row}");

    stdin.write_all(b"send hi\n").await.unwrap();
    line_matching(&mut lines, &mut seen, |l| l == "delivered 1").await;
    let msg = timeout(T, web.expect("message")).await.unwrap().unwrap();
    assert_eq!(msg["body"], json!({"text": "hi"}));

    // An event pushed by the web side shows up while the CLI waits for input.
    let ack = web
        .request(ClientFrame::Send {
            body: &RawValue::from_string(r#"{"text":"from the web"}"#.into()).unwrap(),
            to: None,
        })
        .await
        .unwrap();
    assert_eq!(ack["type"], "ack");
    let expected = format!("message from {sid}: from the web");
    line_matching(&mut lines, &mut seen, |l| l == expected).await;

    stdin.write_all(b"quit\n").await.unwrap();
    let status = timeout(T, child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}; saw {seen:#?}");
    // The phone left: the web side is told.
    timeout(
        T,
        web.wait_for(|v| v["type"] == "phone_status" && v["online"] == false),
    )
    .await
    .unwrap()
    .unwrap();

    gw.shutdown().await;
}

/// A gateway on `listener` over `data_dir` with the tests' secret, stopped by
/// sending on the returned channel.
fn run_gateway(
    listener: TcpListener,
    data_dir: &std::path::Path,
) -> (oneshot::Sender<()>, JoinHandle<anyhow::Result<()>>) {
    let config = Config {
        data_dir: data_dir.to_path_buf(),
        secret: Some(SECRET.to_owned()),
        ..Config::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(pairgate::run(listener, config, async move {
        let _ = stopped.await;
    }));
    (stop, task)
}

/// Interactive mode outlives a gateway restart: the 1012 close is followed by
/// a reconnect with backoff and the same token (a second `ready` in JSON
/// mode), and commands work again on the new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_phone_reconnects_after_a_gateway_restart() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, task) = run_gateway(listener, dir.path());
    let token = phone_token("redial");
    let (mut child, mut stdin, mut lines) = interactive_phone(&[
        "--url",
        &format!("http://{addr}"),
        "--token",
        &token,
        "--json",
    ]);
    let mut seen = Vec::new();
    let is_ready = |l: &str| l.contains(r#""type":"ready""#);
    line_matching(&mut lines, &mut seen, is_ready).await;

    // The restart: every socket closed 1012, then a new process on the same
    // address and data dir.
    let _ = stop.send(());
    timeout(T, task)
        .await
        .expect("gateway stops")
        .unwrap()
        .unwrap();
    let listener = TcpListener::bind(addr).await.expect("the address again");
    let (stop, task) = run_gateway(listener, dir.path());

    line_matching(&mut lines, &mut seen, is_ready).await;
    stdin.write_all(b"sessions\n").await.unwrap();
    line_matching(&mut lines, &mut seen, |l| {
        l.contains(r#""type":"sessions""#)
    })
    .await;
    stdin.write_all(b"quit\n").await.unwrap();
    let status = timeout(T, child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}; saw {seen:#?}");
    let _ = stop.send(());
    timeout(T, task)
        .await
        .expect("gateway stops")
        .unwrap()
        .unwrap();
}

/// With `--admin-token`, the operator's `sessions`, `logout` and `logout-all`
/// go through the operator API: the user's running phone is not replaced
/// (no 4009), and hears of the logout as the contract says for an operator's
/// (`session_removed`, reason `admin`) while its socket stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_leave_the_users_phone_connected() {
    const ADMIN: &str = "operator-token";
    let gw = start_with(Some(SECRET), Some(ADMIN)).await;
    let base = gw.base();
    let opts = ConnectOptions {
        timeout: T,
        ..ConnectOptions::default()
    };
    let url = format!("ws://{}/ws/phone", gw.addr);
    let mut user_phone = Client::phone(&url, &phone_token("alice"), &opts)
        .await
        .unwrap();
    let (mut web, qr) = pair_web(gw.addr).await;
    let request = user_phone.link(qr["ref"].as_str().unwrap()).await.unwrap();
    let session = user_phone.confirm(&request.request_id).await.unwrap();
    web.expect("linked").await.unwrap();
    let sid = session.session_id.as_str();
    let op = |cmd: &'static [&'static str]| {
        let base = base.clone();
        async move {
            let mut args = vec![
                "--url",
                &base,
                "--admin-token",
                ADMIN,
                "--account",
                "alice",
                "--json",
            ];
            args.extend_from_slice(cmd);
            phone(&args).await
        }
    };

    let listed = op(&["sessions"]).await;
    assert_ok(&listed);
    let listed = json_lines(&listed);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["phone_online"], true, "{listed:?}");
    assert_eq!(listed[0]["sessions"][0]["session_id"], sid, "{listed:?}");

    // Readable output is the phone's session table.
    let mut args = vec![
        "--url",
        base.as_str(),
        "--admin-token",
        ADMIN,
        "--account",
        "alice",
        "sessions",
    ];
    let table = phone(&args).await;
    assert_ok(&table);
    assert!(stdout(&table).contains(sid), "{}", stdout(&table));

    args.pop();
    args.extend(["logout", sid]);
    let out = phone(&args).await;
    assert_ok(&out);
    assert_eq!(stdout(&out).trim(), "ended 1 session");

    let removed = user_phone.expect("session_removed").await.unwrap();
    assert_eq!(removed["session_id"], sid, "{removed}");
    assert_eq!(removed["reason"], "admin", "{removed}");
    let logged_out = web.expect("logged_out").await.unwrap();
    assert_eq!(logged_out["reason"], "admin", "{logged_out}");
    assert_eq!(web.closed().await, Some(4001));
    // The user's phone socket was never replaced: it still answers.
    let sessions = user_phone.request(ClientFrame::ListSessions).await.unwrap();
    assert_eq!(sessions["sessions"], json!([]), "{sessions}");

    let all = op(&["logout-all"]).await;
    assert_ok(&all);
    assert_eq!(json_lines(&all)[0]["closed"], 0);
    let again = op(&["logout", "no-such-session"]).await;
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert_eq!(json_lines(&again)[0]["code"], "unknown_session");
    user_phone.request(ClientFrame::ListSessions).await.unwrap();

    // A wrong admin token cannot get in (exit 3); a phone-only command with
    // an admin token is a usage error, and nothing connects for it (exit 2).
    let wrong = phone(&[
        "--url",
        &base,
        "--admin-token",
        "nope",
        "--account",
        "alice",
        "sessions",
    ])
    .await;
    assert_eq!(wrong.status.code(), Some(3), "{}", stderr(&wrong));
    let link = phone(&[
        "--url",
        &base,
        "--admin-token",
        ADMIN,
        "--account",
        "alice",
        "--yes",
        "link",
        "r",
    ])
    .await;
    assert_eq!(link.status.code(), Some(2), "{}", stderr(&link));
    assert!(stderr(&link).contains("--admin-token"), "{}", stderr(&link));
    user_phone.request(ClientFrame::ListSessions).await.unwrap();

    user_phone.close().await;
    gw.shutdown().await;
}

/// `pairgate phone` speaks TLS: `wss://` and `https://` URLs of a gateway
/// serving TLS itself (`--tls-cert`, a certificate for 127.0.0.1 made here,
/// self-signed) work when `--ca-cert` trusts the certificate, and fail to
/// connect (exit 3) without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_and_https_urls_with_a_ca_cert() {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let pem = tempfile::tempdir().unwrap();
    let (cert, key) = (pem.path().join("cert.pem"), pem.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let gw = start_configured(Some(SECRET), |c| {
        c.tls_cert = Some(cert.clone());
        c.tls_key = Some(key.clone());
    })
    .await;
    let ca = cert.to_str().unwrap();
    let token = phone_token("alice");
    let url = format!("wss://{}", gw.addr);
    let https = format!("https://{}", gw.addr);
    for given in [url.as_str(), https.as_str()] {
        let out = phone(&[
            "--url",
            given,
            "--ca-cert",
            ca,
            "--token",
            &token,
            "--json",
            "sessions",
        ])
        .await;
        assert_ok(&out);
        assert_eq!(json_lines(&out)[0]["sessions"], json!([]), "{given}");
    }
    let untrusted = phone(&["--url", &url, "--token", &token, "sessions"]).await;
    assert_eq!(untrusted.status.code(), Some(3), "{}", stderr(&untrusted));
    assert!(
        stderr(&untrusted).to_lowercase().contains("certificate"),
        "{}",
        stderr(&untrusted)
    );
    gw.shutdown().await;
}
