//! What a hostile web page can try (docs/SECURITY.md, "Browsers"): DNS
//! rebinding (`Host`), foreign, odd and repeated `Origin`s, framing (the
//! security headers), the demo phone page without `--demo`, and minting demo
//! tokens from many addresses. Over real sockets, against the real gateway.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use crate::support::*;

const PATHS: [&str; 2] = ["/ws/web", "/ws/phone"];

async fn assert_upgrade(addr: SocketAddr, headers: &[(&str, &str)], expected: u16) {
    for path in PATHS {
        let got = upgrade_status(addr, path, headers).await;
        assert_eq!(got, expected, "{path} with {headers:?}");
    }
}

async fn refused(gw: &TestGateway, reason: &str) -> f64 {
    let body = gw.http_get("/metrics", &[]).await.text();
    metric_sample(
        &body,
        "pairgate_upgrades_refused_total",
        &[("reason", reason)],
    )
    .unwrap_or(0.0)
}

/// DNS rebinding: a page whose own name now points at the gateway sends its
/// name as `Host` and its origin as `Origin`, which agree. Refused: the Host
/// names nothing the gateway serves. The listen address and `localhost`
/// (listening on loopback) keep working, with and without a matching Origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebinding_host_is_refused_and_the_own_hosts_work() {
    if single_process_only("the Host rule is about the one node a test connects to") {
        return;
    }
    let gw = TestGateway::start().await;
    let port = gw.port();
    let ip_host = format!("127.0.0.1:{port}");
    let ip_origin = format!("http://127.0.0.1:{port}");
    let lh_host = format!("localhost:{port}");
    let lh_origin = format!("http://localhost:{port}");
    let evil_host = format!("rebind.evil:{port}");
    let evil_origin = format!("http://rebind.evil:{port}");

    assert_upgrade(gw.addr, &[("Host", &ip_host)], 101).await;
    assert_upgrade(gw.addr, &[("Host", &ip_host), ("Origin", &ip_origin)], 101).await;
    assert_upgrade(gw.addr, &[("Host", &lh_host)], 101).await;
    assert_upgrade(gw.addr, &[("Host", &lh_host), ("Origin", &lh_origin)], 101).await;

    let before = refused(&gw, "host").await;
    assert_upgrade(
        gw.addr,
        &[("Host", "rebind.evil"), ("Origin", "http://rebind.evil")],
        403,
    )
    .await;
    assert_upgrade(
        gw.addr,
        &[("Host", &evil_host), ("Origin", &evil_origin)],
        403,
    )
    .await;
    assert_upgrade(gw.addr, &[("Host", &evil_host)], 403).await;
    assert_eq!(refused(&gw, "host").await, before + 6.0);
}

/// `--public-url`'s host and `--allowed-hosts` name the gateway too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_url_and_allowed_hosts_are_served_hosts() {
    let gw = TestGateway::spawn(|c| {
        c.public_url = Some("https://chat.example.test/".into());
        c.allowed_hosts = Some(vec!["alt.example.test".into()]);
    })
    .await;
    assert_upgrade(
        gw.addr,
        &[
            ("Host", "chat.example.test"),
            ("Origin", "https://chat.example.test"),
        ],
        101,
    )
    .await;
    assert_upgrade(
        gw.addr,
        &[
            ("Host", "alt.example.test:8443"),
            ("Origin", "https://alt.example.test:8443"),
        ],
        101,
    )
    .await;
    assert_upgrade(
        gw.addr,
        &[("Host", "rebind.evil"), ("Origin", "http://rebind.evil")],
        403,
    )
    .await;
}

/// Listening on an unspecified address with no names given, the gateway
/// cannot tell its names: any Host is taken (the start-up log warns); given
/// `--allowed-hosts`, the rule applies again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unspecified_listener_takes_any_host_unless_names_are_given() {
    if single_process_only("a test cluster names its nodes with --public-url") {
        return;
    }
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind");
    let open = TestGateway::spawn_on(listener, |_| {}).await;
    let evil = [("Host", "rebind.evil"), ("Origin", "http://rebind.evil")];
    assert_upgrade(open.addr, &evil, 101).await;

    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind");
    let named = TestGateway::spawn_on(listener, |c| {
        c.allowed_hosts = Some(vec!["chat.example.test".into()])
    })
    .await;
    assert_upgrade(named.addr, &evil, 403).await;
    assert_upgrade(named.addr, &[("Host", "chat.example.test")], 101).await;
    let own = format!("127.0.0.1:{}", named.port());
    assert_upgrade(named.addr, &[("Host", own.as_str())], 101).await;
}

/// Origins: only `http` and `https`; `null` refused; a missing Origin (not a
/// browser) allowed; a repeated Origin header refused even when the first is
/// good. Each refusal is counted under `reason="origin"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_null_and_repeated_origins_are_refused() {
    if single_process_only("the Origin rule compares the Host of the one node a test connects to") {
        return;
    }
    let gw = TestGateway::start().await;
    let port = gw.port();
    let good = format!("http://127.0.0.1:{port}");
    let before = refused(&gw, "origin").await;
    assert_upgrade(gw.addr, &[], 101).await;
    assert_upgrade(gw.addr, &[("Origin", &good)], 101).await;
    let mut refusals = 0.0;
    for bad in [
        format!("ftp://127.0.0.1:{port}"),
        format!("ws://127.0.0.1:{port}"),
        format!("wss://127.0.0.1:{port}"),
        "null".to_owned(),
        format!("http://127.0.0.1:{port}/path"),
    ] {
        assert_upgrade(gw.addr, &[("Origin", &bad)], 403).await;
        refusals += 2.0;
    }
    assert_upgrade(
        gw.addr,
        &[("Origin", &good), ("Origin", "http://evil.example.test")],
        403,
    )
    .await;
    assert_upgrade(gw.addr, &[("Origin", &good), ("Origin", &good)], 403).await;
    refusals += 4.0;
    assert_eq!(refused(&gw, "origin").await, before + refusals);
}

fn assert_security_headers(what: &str, r: &HttpResponse) {
    assert_eq!(r.header("x-frame-options"), Some("DENY"), "{what}: {r:?}");
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{what}");
    let csp = r.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("frame-ancestors 'none'"),
        "{what}: CSP {csp:?}"
    );
    assert!(csp.contains("script-src 'self'"), "{what}: CSP {csp:?}");
}

/// Every HTTP answer carries the headers that forbid framing and sniffing:
/// pages, assets, health, metrics, demo tokens, 404s, refused upgrades.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_the_security_headers() {
    let gw = TestGateway::spawn(|c| c.demo = true).await;
    for path in [
        "/",
        "/phone",
        "/static/app.js",
        "/static/style.css",
        "/healthz",
        "/readyz",
        "/metrics",
        "/no-such-page",
        "/static/no-such-file.js",
        "/ws/web",
    ] {
        let r = gw.http_get(path, &[]).await;
        assert_security_headers(path, &r);
    }
    let r = http_post(gw.addr, "/demo/phone").await;
    assert_eq!(r.status, 200);
    assert_security_headers("POST /demo/phone", &r);
    let r = http_get(
        gw.addr,
        "/ws/web",
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
            ("Origin", "http://evil.example.test"),
        ],
    )
    .await;
    assert_eq!(r.status, 403);
    assert_security_headers("refused upgrade", &r);
}

/// Without `--demo`, `/phone` is a short page that points at real phones and
/// asks for no token (its one script only translates it), the demo phone's script and style are not served, and
/// `/` does not link to the demo phone. With `--demo` the demo phone is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_phone_is_served_only_with_demo() {
    let plain = TestGateway::start().await;
    let r = plain.http_get("/phone", &[]).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("text/html")
    );
    let page = r.text();
    assert!(page.contains("/ws/phone"), "{page}");
    assert!(page.contains("pairgate phone"), "{page}");
    for asks_token in ["<textarea", "<input", "<form", "phone.js"] {
        assert!(!page.contains(asks_token), "{asks_token} in {page}");
    }
    // Its one script puts its text in the browser's language.
    assert_eq!(page.matches("<script").count(), 1, "{page}");
    assert!(page.contains("src=\"static/no-demo.js\""), "{page}");
    assert_eq!(plain.http_get("/static/no-demo.js", &[]).await.status, 200);
    for asset in [
        "/static/phone.js",
        "/static/phone.css",
        "/static/phone.html",
    ] {
        assert_eq!(plain.http_get(asset, &[]).await.status, 404, "{asset}");
    }
    let index = plain.http_get("/", &[]).await.text();
    assert!(
        !index.contains("href=\"/phone\""),
        "/ links to the demo phone"
    );

    let demo = TestGateway::spawn(|c| c.demo = true).await;
    let page = demo.http_get("/phone", &[]).await.text();
    assert!(
        page.contains("token-input"),
        "the demo phone page with --demo"
    );
    assert_eq!(demo.http_get("/static/phone.js", &[]).await.status, 200);
}

/// `POST /demo/phone` from a given loopback source address.
async fn demo_post_from(addr: SocketAddr, from: IpAddr) -> u16 {
    let fut = async {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::new(from, 0)).expect("bind source");
        let mut s = socket.connect(addr).await.expect("connect");
        let req = format!(
            "POST /demo/phone HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read");
        let head = String::from_utf8_lossy(&buf).into_owned();
        head.split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"))
    };
    tokio::time::timeout(T, fut)
        .await
        .expect("demo token answer in time")
}

/// Many source addresses cannot mint without bound: past the node's cap per
/// minute every address gets 429, with the refusals counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_tokens_have_a_global_cap_across_addresses() {
    let gw = TestGateway::spawn(|c| c.demo = true).await;
    let per_ip = pairgate::demo::TOKENS_PER_IP_PER_MINUTE;
    let cap = pairgate::demo::TOKENS_PER_MINUTE;
    let mut minted = 0;
    let mut ip = 2u8;
    while minted < cap {
        let from = IpAddr::from([127, 0, 1, ip]);
        for _ in 0..per_ip.min(cap - minted) {
            assert_eq!(demo_post_from(gw.addr, from).await, 200, "from {from}");
            minted += 1;
        }
        ip += 1;
    }
    for fresh in [200u8, 201, 202] {
        assert_eq!(
            demo_post_from(gw.addr, IpAddr::from([127, 0, 1, fresh])).await,
            429
        );
    }
    let body = gw.http_get("/metrics", &[]).await.text();
    assert_eq!(
        metric_sample(
            &body,
            "pairgate_rate_limited_total",
            &[("what", "demo_tokens")]
        ),
        Some(3.0)
    );
}

/// The options of this file from the command line and the environment, in
/// the built binary; a bad value is a clear start-up error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_limit_options_from_flags_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let g = BinGateway::serve(
        dir.path(),
        &[
            "--allowed-hosts",
            "chat.example.test",
            "--max-pairs-per-ip-per-min",
            "1",
        ],
        &[("PAIRGATE_MAX_LINK_MISSES_PER_MIN", "1")],
    )
    .await;
    assert_upgrade(g.addr, &[("Host", "chat.example.test")], 101).await;
    assert_upgrade(g.addr, &[("Host", "rebind.evil")], 403).await;
    let (_web, _qr) = start_pairing(g.addr, &PairOpts::new()).await;
    let web = open_web(g.addr, None).await;
    web.request_error(serde_json::json!({"type": "pair"}), "rate_limited")
        .await;
    let wrong = || serde_json::json!({"type": "link", "code": "ZZZZ-ZZZZ"});
    let a = g.phone(&account("flags-a")).await;
    a.request_error(wrong(), "unknown_ref").await;
    let b = g.phone(&account("flags-b")).await;
    b.request_error(wrong(), "rate_limited").await;

    for bad in [
        ["--allowed-hosts", "https://chat.example.test"],
        ["--max-pairs-per-ip-per-min", "4294967296"],
        ["--max-link-misses-per-min", "many"],
    ] {
        let d = dir.path().display().to_string();
        let (status, _out, err) = run_cli(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &d,
            bad[0],
            bad[1],
        ])
        .await;
        assert!(!status.success(), "{bad:?} started");
        assert!(err.contains(bad[0]), "{bad:?}: {err}");
    }
}
