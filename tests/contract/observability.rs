//! What an operator watches: the process's own series and the build in
//! `/metrics`. Runs the real binary, so the numbers are the gateway's alone.

use std::time::Duration;

use crate::support::*;

fn sample(body: &str, name: &str) -> f64 {
    metric_sum(body, name).unwrap_or_else(|| panic!("{name} missing from /metrics:\n{body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_process_series_and_build_info() {
    let dir = tempfile::tempdir().unwrap();
    let g = BinGateway::serve(dir.path(), &[], &[]).await;
    let before = g.http_get("/metrics", &[]).await.text();
    assert_eq!(
        metric_sample(
            &before,
            "pairgate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert!(sample(&before, "process_resident_memory_bytes") > 1_000_000.0);
    assert!(sample(&before, "process_cpu_seconds_total") >= 0.0);
    assert!(sample(&before, "process_start_time_seconds") > 1.6e9);
    let max_fds = sample(&before, "process_max_fds");
    let fds_before = sample(&before, "process_open_fds");
    assert!(
        fds_before >= 3.0 && fds_before < max_fds,
        "{fds_before} of {max_fds}"
    );

    // Every socket is a file of the gateway's: the count follows them.
    const SOCKETS: usize = 20;
    let mut webs = Vec::new();
    for _ in 0..SOCKETS {
        webs.push(g.web(None).await);
    }
    let during = g.http_get("/metrics", &[]).await.text();
    let fds_during = sample(&during, "process_open_fds");
    assert!(
        fds_during >= fds_before + SOCKETS as f64,
        "{fds_before} -> {fds_during} with {SOCKETS} more sockets"
    );
}

/// `--log-format json`: every line a JSON object a log pipeline can take,
/// the first saying which version starts with which options, no secret in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_and_name_the_version_and_options() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = BinGateway::serve(
        dir.path(),
        &[
            "--log-format",
            "json",
            "--secret",
            "a-secret-never-logged",
            "--admin-token",
            "an-admin-token-never-logged",
        ],
        &[],
    )
    .await;
    let acc = account("jsonlog");
    let token = mint("a-secret-never-logged", &phone_claims(&acc));
    drop(g.phone_with(&acc, &token).await);
    g.signal("TERM");
    assert!(
        g.wait_exit(std::time::Duration::from_secs(20))
            .await
            .is_some()
    );
    let log = g.log_text();
    assert!(!log.contains("never-logged"), "a secret in the log:\n{log}");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let start = &lines[0];
    assert_eq!(start["level"], "INFO");
    assert_eq!(start["fields"]["message"], "pairgate starting");
    assert_eq!(start["fields"]["version"], env!("CARGO_PKG_VERSION"));
    let options = start["fields"]["config"].as_str().unwrap();
    assert!(options.contains("log_format: Json") && options.contains("<redacted>"));
    assert!(lines.iter().all(|l| l["timestamp"].is_string()));
}

/// Links, resumes and logouts are at info with the socket's account; closes
/// are counted by code at info (here in the shutdown summary); and no pairing
/// code, ref or token shows in the log, not in part, not even at debug.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_tells_links_resumes_logouts_and_closes_but_never_a_code_or_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = BinGateway::serve(dir.path(), &[], &[("RUST_LOG", "pairgate=debug")]).await;
    let acc = account("infolog");
    let phone = g.phone(&acc).await;
    let (web, qr) = start_pairing(g.addr, &PairOpts::new()).await;
    let lr = phone.request_frame(&link_code(&qr)).await;
    assert_eq!(lr["type"], "link_request", "{lr}");
    let dl = phone.request_frame(&confirm(&lr)).await;
    assert_eq!(dl["type"], "device_linked", "{dl}");
    let linked = web.expect("linked").await;
    let token = linked["token"].as_str().unwrap().to_owned();
    drop(web);
    let resumed = g
        .resume_ok(&token, linked["session_id"].as_str().unwrap())
        .await;
    let ok = phone.request_frame(&ClientFrame::LogoutAll).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(resumed.expect_close().await, 4001);
    g.signal("TERM");
    assert!(
        g.wait_exit(std::time::Duration::from_secs(20))
            .await
            .is_some()
    );

    let log = g.log_text();
    let info_lines = |what: &str| {
        log.lines()
            .filter(|l| l.contains(" INFO ") && l.contains(what))
            .collect::<Vec<_>>()
    };
    for what in [
        "web session linked",
        "web session resumed",
        "phone logged every session out",
    ] {
        let lines = info_lines(what);
        assert!(
            lines.iter().any(|l| l.contains(&acc)),
            "no info line {what:?} naming the account:\n{log}"
        );
    }
    assert!(
        info_lines("sockets closed")
            .iter()
            .any(|l| l.contains("4001=1")),
        "no close count at info:\n{log}"
    );
    let code: String = qr["code"].as_str().unwrap().replace('-', "");
    let r#ref = qr["ref"].as_str().unwrap();
    for secret in [
        &code[..4],
        &code[4..],
        r#ref,
        &token,
        &token[token.len() - 20..],
    ] {
        assert!(!log.contains(secret), "{secret:?} in the log:\n{log}");
    }
}

/// `--metrics-listen` (here through its variable): `/metrics` only on that
/// listener, 404 on the main one, which keeps serving everything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_serves_metrics_apart_and_the_main_listener_hides_them() {
    let dir = tempfile::tempdir().unwrap();
    let g = BinGateway::serve(
        dir.path(),
        &[],
        &[("PAIRGATE_METRICS_LISTEN", "127.0.0.1:0")],
    )
    .await;
    // Logged before the main listener's line, which `serve` waited for.
    let log = g.log_text();
    let at: std::net::SocketAddr = log
        .lines()
        .find_map(|l| l.split("metrics on http://").nth(1))
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no `metrics on http://ADDR/metrics` line:\n{log}"));
    assert_ne!(at.port(), g.port());

    let acc = account("mlisten");
    let _phone = g.phone(&acc).await;
    let apart = http_get(at, "/metrics", &[]).await;
    assert_eq!(apart.status, 200);
    assert_eq!(
        metric_sample(&apart.text(), "pairgate_sockets", &[("role", "phone")]),
        Some(1.0),
        "{}",
        apart.text()
    );
    assert_eq!(g.http_get("/metrics", &[]).await.status, 404);
    assert_eq!(g.http_get("/healthz", &[]).await.status, 200);
    // The metrics listener serves nothing else.
    assert_eq!(http_get(at, "/", &[]).await.status, 404);
    assert_eq!(http_get(at, "/healthz", &[]).await.status, 404);
}

/// Without `--metrics-listen`, `/metrics` stays on the main listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_metrics_listen_the_main_listener_serves_metrics() {
    let g = TestGateway::start().await;
    let r = g.http_get("/metrics", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("pairgate_build_info"), "{}", r.text());
}

/// The `refused=N` counts of the log's `upgrade refused: {why}` lines.
fn refusal_counts(log: &str, why: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains(&format!("upgrade refused: {why}")))
        .map(|l| {
            let n = l
                .split_whitespace()
                .find_map(|w| w.strip_prefix("refused="))
                .unwrap_or_else(|| panic!("no refused= in {l}"));
            n.parse().unwrap_or_else(|_| panic!("refused={n} in {l}"))
        })
        .collect()
}

/// A flood of upgrades another site's page makes: at most one log line per
/// reason per second, each carrying how many refusals it stands for, so the
/// lines add up to every refusal (those held back come with the next line).
/// A refusal of another reason has its own line meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_lines_are_throttled_and_carry_their_count() {
    const FLOOD: u64 = 60;
    let dir = tempfile::tempdir().unwrap();
    let g = BinGateway::serve(dir.path(), &[], &[]).await;
    let evil = [("Origin", "http://evil.example.test")];
    let started = std::time::Instant::now();
    for _ in 0..FLOOD {
        assert_eq!(g.http_get("/ws/web", &evil).await.status, 403);
    }
    let flooded = started.elapsed();
    let host = [("Host", "rebind.example.test")];
    assert_eq!(g.http_get("/ws/web", &host).await.status, 403);
    // A second after the flood (so after its last line), one more refusal
    // is logged at once, with what was held back.
    until_elapsed(started + flooded, Duration::from_millis(1100)).await;
    assert_eq!(g.http_get("/ws/web", &evil).await.status, 403);
    // The log is read from the child's stderr by a task of ours: poll it.
    let deadline = std::time::Instant::now() + LONG;
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    let log = loop {
        poll.tick().await;
        let log = g.log_text();
        let logged: u64 = refusal_counts(&log, "origin not allowed").iter().sum();
        if logged == FLOOD + 1 && log.contains("upgrade refused: host not served here") {
            break log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the refusals do not add up in the log:\n{log}"
        );
    };
    let lines = refusal_counts(&log, "origin not allowed");
    assert_eq!(
        lines[0], 1,
        "the first refusal is logged at once: {lines:?}"
    );
    assert!(
        (lines.len() as u64) <= flooded.as_secs() + 2,
        "{} lines for {FLOOD} refusals in {flooded:?}",
        lines.len()
    );
    assert_eq!(refusal_counts(&log, "host not served here"), [1]);
}
