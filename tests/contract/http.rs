//! "HTTP": `/healthz`, the two pages, `/metrics`, the Origin check on both
//! upgrade paths, and `POST /demo/phone` (pairgate's, with `--demo`).

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_200_ok() {
    let gw = TestGateway::start().await;
    let r = gw.http_get("/healthz", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text().trim(), "ok", "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_and_phone_pages_are_html() {
    let gw = TestGateway::start().await;
    for path in ["/", "/phone"] {
        let r = gw.http_get(path, &[]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.status);
        let ct = r
            .header("content-type")
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(ct.starts_with("text/html"), "{path}: content-type {ct:?}");
        let body = r.text().to_ascii_lowercase();
        assert!(
            body.contains("<html") || body.contains("<!doctype html"),
            "{path}: not an HTML page: {}",
            &body[..body.len().min(200)]
        );
    }
    // the two pages are different pages
    let web = gw.http_get("/", &[]).await.text();
    let phone = gw.http_get("/phone", &[]).await.text();
    assert_ne!(web, phone, "/ and /phone serve the same document");
}

const METRICS: [&str; 8] = [
    "pairgate_sockets",
    "pairgate_sessions",
    "pairgate_pairings_total",
    "pairgate_messages_relayed_total",
    "pairgate_errors_total",
    "pairgate_closes_total",
    "pairgate_logouts_total",
    "pairgate_upgrades_refused_total",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_and_move() {
    if single_process_only("a node's metrics count what happened on it") {
        return;
    }
    let gw = TestGateway::start().await;
    // some of everything
    let acc = account("metrics");
    let phone = gw.phone(&acc).await;
    let a = gw.pair(&phone, &PairOpts::new()).await;
    let b = gw.pair(&phone, &PairOpts::new()).await;
    let ack = a.web.send_body(&json!(1), None).await;
    assert_eq!(ack["type"], "ack");
    phone.expect("message").await;
    let ack = phone.send_body(&json!(2), None).await;
    assert_eq!(ack["delivered"], 2);
    phone
        .request_error(json!({"type": "nonsense"}), "unknown_type")
        .await;
    let ok = phone.request_frame(&logout(&b.session_id)).await;
    assert_eq!(ok["type"], "ok");
    assert_eq!(
        upgrade_status(
            gw.addr,
            "/ws/web",
            &[("Origin", "http://evil.example.test")]
        )
        .await,
        403
    );

    let r = gw.http_get("/metrics", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let ct = r.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("text/plain") || ct.starts_with("application/openmetrics-text"),
        "content-type {ct:?}"
    );
    let body = r.text();
    // well-formed: every sample line is `name[{labels}] value [timestamp]`
    for line in body.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let name = &line[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        let rest = if line[name_end..].starts_with('{') {
            let close = line
                .rfind('}')
                .unwrap_or_else(|| panic!("bad labels {line:?}"));
            &line[close + 1..]
        } else {
            &line[name_end..]
        };
        let value = rest.split_whitespace().next().unwrap_or_default();
        assert!(
            value.parse::<f64>().is_ok() || ["NaN", "+Inf", "-Inf"].contains(&value),
            "bad sample value in {line:?}"
        );
    }
    for m in METRICS {
        assert!(
            metric_sum(&body, m).is_some(),
            "metric {m} missing:\n{body}"
        );
    }
    assert!(
        body.contains("pairgate_store_commit_seconds_bucket")
            && body.contains("pairgate_store_commit_seconds_count"),
        "no store commit histogram:\n{body}"
    );
    let v = |m: &str| metric_sum(&body, m).unwrap_or(0.0);
    assert!(
        v("pairgate_sockets") >= 2.0,
        "sockets: {}",
        v("pairgate_sockets")
    );
    assert!(v("pairgate_sessions") >= 1.0);
    assert!(v("pairgate_pairings_total") >= 2.0);
    assert!(v("pairgate_messages_relayed_total") >= 2.0);
    assert!(v("pairgate_errors_total") >= 1.0);
    assert!(v("pairgate_closes_total") >= 1.0);
    assert!(v("pairgate_logouts_total") >= 1.0);
    assert!(v("pairgate_upgrades_refused_total") >= 1.0);
    assert!(v("pairgate_store_commit_seconds_count") >= 2.0);

    // counters move
    let before = v("pairgate_messages_relayed_total");
    for i in 0..3 {
        let ack = a.web.send_body(&json!(i), None).await;
        assert_eq!(ack["type"], "ack");
    }
    let body2 = gw.http_get("/metrics", &[]).await.text();
    let after = metric_sum(&body2, "pairgate_messages_relayed_total").unwrap_or(0.0);
    assert!(after >= before + 3.0, "relayed {before} -> {after}");
}

/// The contract's error codes and close codes, as `/metrics` labels them.
const ERROR_CODES: [&str; 13] = [
    "bad_frame",
    "unknown_type",
    "not_authenticated",
    "invalid_token",
    "logged_out",
    "unknown_ref",
    "unknown_request",
    "unknown_session",
    "too_many_devices",
    "phone_offline",
    "too_large",
    "rate_limited",
    "internal",
];
const CLOSE_CODES: [&str; 8] = [
    "1009", "1012", "4001", "4003", "4008", "4009", "4029", "4030",
];

/// `pairgate_errors_total` and `pairgate_closes_total` carry one sample per
/// code, labelled `code`, from the start (at 0); an error reply and a close
/// move exactly their own sample.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_labels_are_the_error_and_close_codes() {
    if single_process_only("a node's metrics count what happened on it") {
        return;
    }
    let gw = TestGateway::start().await;
    let samples = |body: &str| {
        let errors: Vec<(&str, Option<f64>)> = ERROR_CODES
            .iter()
            .map(|c| {
                (
                    *c,
                    metric_sample(body, "pairgate_errors_total", &[("code", c)]),
                )
            })
            .collect();
        let closes: Vec<(&str, Option<f64>)> = CLOSE_CODES
            .iter()
            .map(|c| {
                (
                    *c,
                    metric_sample(body, "pairgate_closes_total", &[("code", c)]),
                )
            })
            .collect();
        (errors, closes)
    };
    let body = gw.http_get("/metrics", &[]).await.text();
    let (errors, closes) = samples(&body);
    for (code, v) in errors.iter().chain(&closes) {
        assert_eq!(*v, Some(0.0), "no sample for code {code} at start:\n{body}");
    }

    // one unknown_type reply and one 4001 close
    let acc = account("labels");
    let phone = gw.phone(&acc).await;
    phone
        .request_error(json!({"type": "nonsense"}), "unknown_type")
        .await;
    let s = gw.pair(&phone, &PairOpts::new()).await;
    let ok = phone
        .request_frame(&ClientFrame::Logout {
            session_id: Some(s.session_id.clone()),
        })
        .await;
    assert_eq!(ok["closed"], 1, "{ok}");
    assert_eq!(s.web.expect_close().await, 4001);

    let body = gw.http_get("/metrics", &[]).await.text();
    let (errors, closes) = samples(&body);
    for (code, v) in errors {
        let want = if code == "unknown_type" { 1.0 } else { 0.0 };
        assert_eq!(v, Some(want), "errors{{code={code}}}:\n{body}");
    }
    for (code, v) in closes {
        let want = if code == "4001" { 1.0 } else { 0.0 };
        assert_eq!(v, Some(want), "closes{{code={code}}}:\n{body}");
    }
}

const PATHS: [&str; 2] = ["/ws/web", "/ws/phone"];

async fn assert_upgrade(gw: &TestGateway, headers: &[(&str, &str)], expected: u16) {
    for path in PATHS {
        let got = upgrade_status(gw.addr, path, headers).await;
        assert_eq!(got, expected, "{path} with {headers:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_origin_check_compares_host_and_port() {
    if single_process_only("the Origin rule compares the Host of the one node a test connects to") {
        return;
    }
    let gw = TestGateway::start().await;
    let own = format!("http://{}", gw.addr);
    let other_port = format!("http://127.0.0.1:{}", gw.port().wrapping_add(1).max(1));
    let localhost = format!("http://localhost:{}", gw.port());

    assert_upgrade(&gw, &[], 101).await;
    assert_upgrade(&gw, &[("Origin", own.as_str())], 101).await;
    assert_upgrade(&gw, &[("Origin", "http://evil.example.test")], 403).await;
    assert_upgrade(&gw, &[("Origin", other_port.as_str())], 403).await;
    assert_upgrade(&gw, &[("Origin", localhost.as_str())], 403).await;
    assert_upgrade(&gw, &[("Origin", "null")], 403).await;

    // Hosts other than the listen address need naming (DNS rebinding).
    let named = TestGateway::spawn(|c| c.allowed_hosts = Some(vec!["example.test".into()])).await;
    let cases: [(&str, &str, u16); 12] = [
        // case-insensitive host
        ("Example.TEST:8080", "http://example.test:8080", 101),
        ("example.test:8080", "http://EXAMPLE.test:8080", 101),
        // a missing port is the scheme's default
        ("example.test", "http://example.test", 101),
        ("example.test", "http://example.test:80", 101),
        ("example.test:80", "http://example.test", 101),
        ("example.test:443", "https://example.test", 101),
        ("example.test:443", "https://example.test:443", 101),
        ("example.test", "http://example.test:8080", 403),
        ("example.test:8080", "http://example.test", 403),
        ("example.test:443", "http://example.test", 403),
        ("example.test:80", "https://example.test", 403),
        ("example.test", "http://other.test", 403),
    ];
    for (host, origin, expected) in cases {
        assert_upgrade(&named, &[("Host", host), ("Origin", origin)], expected).await;
    }

    // a real client with its own origin gets a working socket
    let c = Client::open_with(&gw.ws_url("/ws/phone"), None, Some(&own)).await;
    assert_eq!(c.expect("hello").await["type"], "hello");
    // and a refused one never gets one
    let err = try_open(
        &gw.ws_url("/ws/web"),
        None,
        Some("http://evil.example.test"),
    )
    .await;
    match err {
        Err(pairgate::client::ClientError::Socket(
            tokio_tungstenite::tungstenite::Error::Http(resp),
        )) => {
            assert_eq!(resp.status().as_u16(), 403)
        }
        Err(e) => panic!("expected HTTP 403, got {e}"),
        Ok(_) => panic!("a disallowed Origin was upgraded"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_origins_replaces_the_default() {
    let gw = TestGateway::spawn(|c| {
        c.allowed_origins = Some(vec![
            "http://allowed.example.test".into(),
            "https://also-allowed.example.test".into(),
        ])
    })
    .await;
    let own = format!("http://{}", gw.addr);
    assert_upgrade(&gw, &[("Origin", "http://allowed.example.test")], 101).await;
    assert_upgrade(&gw, &[("Origin", "https://also-allowed.example.test")], 101).await;
    assert_upgrade(&gw, &[], 101).await;
    assert_upgrade(&gw, &[("Origin", own.as_str())], 403).await;
    assert_upgrade(&gw, &[("Origin", "http://evil.example.test")], 403).await;
    assert_upgrade(&gw, &[("Origin", "https://allowed.example.test")], 403).await;
    assert_upgrade(&gw, &[("Origin", "null")], 403).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_allows_any_origin_including_null() {
    let gw = TestGateway::spawn(|c| c.allowed_origins = Some(vec!["*".into()])).await;
    let own = format!("http://{}", gw.addr);
    for origin in [
        "http://evil.example.test",
        "null",
        "https://anything.test:1234",
        own.as_str(),
    ] {
        assert_upgrade(&gw, &[("Origin", origin)], 101).await;
    }
    assert_upgrade(&gw, &[], 101).await;
}

/// `POST /demo/phone` exists only with `--demo`: it mints a working phone
/// token for a fresh account, 10 per client IP per minute, then 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_phone_tokens_only_with_demo_and_rate_limited_per_ip() {
    let plain = TestGateway::start().await;
    assert_eq!(http_post(plain.addr, "/demo/phone").await.status, 404);

    let gw = TestGateway::spawn(|c| c.demo = true).await;
    let mut accounts = std::collections::HashSet::new();
    for _ in 0..10 {
        let r = http_post(gw.addr, "/demo/phone").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v: serde_json::Value = serde_json::from_str(&r.text()).expect("JSON");
        let account = v["account"].as_str().expect("account").to_owned();
        let phone = open_phone(gw.addr, &account, v["token"].as_str().expect("token")).await;
        assert!(!phone.is_closed());
        accounts.insert(account);
    }
    assert_eq!(accounts.len(), 10, "every demo account is fresh");
    let r = http_post(gw.addr, "/demo/phone").await;
    assert_eq!(r.status, 429, "{}", r.text());
}
