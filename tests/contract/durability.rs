//! "Keeping sessions" across `kill -9`, the generated secret in the data dir,
//! the `token` command, and the binary's options (flags, environment,
//! default subcommand). Runs the real binary.

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_keeps_links_and_endings() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = BinGateway::serve(dir.path(), &[], &[]).await;
    let acc = account("durable");
    let phone_token = g.phone_token(&acc);
    let phone = g.phone_with(&acc, &phone_token).await;
    let live = g.pair(&phone, &PairOpts::new()).await;
    let ended = g.pair(&phone, &PairOpts::new()).await;
    let selfout = g.pair(&phone, &PairOpts::new()).await;
    let lo = selfout.web.request(json!({"type": "logout"})).await;
    assert_eq!(lo["type"], "logged_out", "{lo}");

    let acc2 = account("durable-all");
    let phone2 = g.phone(&acc2).await;
    let all1 = g.pair(&phone2, &PairOpts::new()).await;
    let all2 = g.pair(&phone2, &PairOpts::new()).await;
    let ok = phone2.request_frame(&ClientFrame::LogoutAll).await;
    assert_eq!(ok["closed"], 2, "{ok}");

    let ok = phone.request_frame(&logout(&ended.session_id)).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    // right after the ok: the ending must already be durable
    g.kill9().await;

    let mut g = BinGateway::serve(dir.path(), &[], &[]).await;
    let _live_web = g.resume_ok(&live.token, &live.session_id).await;
    for s in [&ended, &selfout, &all1, &all2] {
        g.assert_logged_out(&s.token).await;
    }
    // the phone token minted before still works (same secret)
    let phone = g.phone_with(&acc, &phone_token).await;
    assert_eq!(
        session_ids(&list_sessions(&phone).await),
        vec![live.session_id.clone()]
    );
    let phone2 = g.phone(&acc2).await;
    assert!(list_sessions(&phone2).await.is_empty());

    // a link is durable before device_linked / linked
    let last = g.pair(&phone, &PairOpts::new().remember(true)).await;
    g.kill9().await;
    let g = BinGateway::serve(dir.path(), &[], &[]).await;
    let _w = g.resume_ok(&last.token, &last.session_id).await;
    let phone = g.phone_with(&acc, &phone_token).await;
    assert_eq!(
        session_ids(&list_sessions(&phone).await),
        vec![live.session_id.clone(), last.session_id.clone()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remember_false_sessions_get_a_full_grace_after_a_restart() {
    let grace_ms = 1500u64;
    let grace = grace_ms.to_string();
    let args = ["--ephemeral-grace-ms", grace.as_str()];
    let dir = tempfile::tempdir().unwrap();
    let mut g = BinGateway::serve(dir.path(), &args, &[]).await;
    let acc = account("eph-restart");
    let phone = g.phone(&acc).await;
    let resumed = g.pair(&phone, &PairOpts::new().remember(false)).await;
    let abandoned = g.pair(&phone, &PairOpts::new().remember(false)).await;
    let online_at_kill = g.pair(&phone, &PairOpts::new().remember(false)).await;
    resumed.web.close().await;
    abandoned.web.close().await;
    for s in [&resumed, &abandoned] {
        phone
            .expect_field("session_offline", "session_id", &json!(s.session_id))
            .await;
    }
    let closed_by = time::OffsetDateTime::now_utc();
    g.kill9().await;
    // No gateway runs, so only the clock can say it: wait until the grace
    // counted from the close is over.
    until_wall_clock(closed_by + time::Duration::milliseconds(grace_ms as i64)).await;

    let g = BinGateway::serve(dir.path(), &args, &[]).await;
    // a full grace from start-up: still resumable
    let _w1 = g.resume_ok(&resumed.token, &resumed.session_id).await;
    let _w3 = g
        .resume_ok(&online_at_kill.token, &online_at_kill.session_id)
        .await;
    let phone = g.phone(&acc).await;
    // the one nobody resumed ends after the grace
    expect_expired(&phone, &abandoned.session_id).await;
    g.assert_logged_out(&abandoned.token).await;
    let mut ids = session_ids(&list_sessions(&phone).await);
    ids.sort();
    let mut expected = vec![
        resumed.session_id.clone(),
        online_at_kill.session_id.clone(),
    ];
    expected.sort();
    assert_eq!(ids, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_before_serve_creates_the_secret_and_serve_reuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let acc = account("cli");
    let token = cli_token(&["--account", &acc, "--data-dir", &d]).await;
    let secret = read_secret_file(dir.path());
    assert!(!secret.is_empty(), "empty generated secret");
    assert!(
        jwt_verifies(&token, &secret),
        "token not signed with <data-dir>/secret"
    );
    let claims = jwt_claims(&token);
    assert_eq!(claims["sub"], acc.as_str(), "{claims}");
    assert_eq!(claims["aud"], "pairgate-phone", "{claims}");
    let iat = claims["iat"].as_i64().expect("iat");
    let exp = claims["exp"].as_i64().expect("exp");
    assert!(
        (exp - iat - 86_400).abs() <= 2,
        "default lifetime is 24 h: {claims}"
    );
    assert!((iat - now_secs()).abs() <= 60, "{claims}");

    // created once, reused
    let raw_before = std::fs::read(dir.path().join("secret")).unwrap();
    let token2 = cli_token(&["--account", &acc, "--data-dir", &d]).await;
    assert!(jwt_verifies(&token2, &secret));
    let mut g = BinGateway::serve(dir.path(), &[], &[]).await;
    let _phone = g.phone_with(&acc, &token).await;
    g.kill9().await;
    let g = BinGateway::serve(dir.path(), &[], &[]).await;
    let _phone = g.phone_with(&acc, &token2).await;
    assert_eq!(
        std::fs::read(dir.path().join("secret")).unwrap(),
        raw_before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_generates_the_secret_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = BinGateway::serve(dir.path(), &[], &[]).await;
    let secret = read_secret_file(dir.path());
    assert!(!secret.is_empty());
    let acc = account("gen");
    // anything holding the secret can mint a phone token
    let _phone = g
        .phone_with(&acc, &mint(&secret, &phone_claims(&acc)))
        .await;
    g.kill9().await;
    let g = BinGateway::serve(dir.path(), &[], &[]).await;
    assert_eq!(read_secret_file(dir.path()), secret);
    let _phone = g
        .phone_with(&acc, &mint(&secret, &phone_claims(&acc)))
        .await;
}

/// Anyone who can read the secret mints phone tokens for every account: the
/// data dir and the secret `serve` creates are its user's alone.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_and_secret_serve_creates_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let _g = BinGateway::serve(&dir, &[], &[]).await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("secret")), 0o600);
}

/// A second gateway on a data dir in use says so, naming the dir, and exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_on_the_same_data_dir_names_the_dir_in_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let _first = BinGateway::serve(dir.path(), &[], &[]).await;
    let data_dir = dir.path().to_str().unwrap();
    let (status, _, err) =
        run_cli(&["serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir]).await;
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("another pairgate") && err.contains(data_dir),
        "{err}"
    );
    assert!(
        !err.contains("backtrace"),
        "an operator's error, not a backtrace: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_file_white_space_is_not_part_of_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "  spaced-secret-value \n").unwrap();
    let g = BinGateway::serve(dir.path(), &[], &[]).await;
    let acc = account("spaced");
    let _phone = g
        .phone_with(&acc, &mint("spaced-secret-value", &phone_claims(&acc)))
        .await;
    let d = dir.path().display().to_string();
    let token = cli_token(&["--account", &acc, "--data-dir", &d]).await;
    assert!(jwt_verifies(&token, "spaced-secret-value"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_secret_writes_no_file_and_token_accepts_it() {
    let dir = tempfile::tempdir().unwrap();
    let g = BinGateway::serve(dir.path(), &["--secret", "flag-secret"], &[]).await;
    assert!(
        !dir.path().join("secret").exists(),
        "serve --secret wrote <data-dir>/secret"
    );
    let acc = account("flag");
    let token = cli_token(&[
        "--account",
        &acc,
        "--secret",
        "flag-secret",
        "--ttl-secs",
        "60",
    ])
    .await;
    assert!(jwt_verifies(&token, "flag-secret"));
    let claims = jwt_claims(&token);
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert!((lifetime - 60).abs() <= 1, "--ttl-secs 60: {claims}");
    assert_eq!(claims["aud"], "pairgate-phone");
    let _phone = g.phone_with(&acc, &token).await;
    // a token of the data dir's (other) secret is refused
    let other = mint("not-the-flag-secret", &phone_claims(&acc));
    let c = Client::open(&g.ws_url("/ws/phone")).await;
    c.expect("hello").await;
    c.send_json(json!({"type": "auth", "token": other})).await;
    expect_error_and_close(&c, "invalid_token", 4003).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_from_flags() {
    let dir = tempfile::tempdir().unwrap();
    let g = BinGateway::serve(
        dir.path(),
        &[
            "--public-url",
            "https://flags.example.test",
            "--allowed-origins",
            "http://a.example.test,http://b.example.test",
            "--qr-ttl-ms",
            "7000",
            "--qr-rotations",
            "3",
            "--heartbeat-ms",
            "9000",
            "--max-frame-bytes",
            "6000",
        ],
        &[],
    )
    .await;
    let c = Client::open(&g.ws_url("/ws/web")).await;
    let hello = c.expect("hello").await;
    assert_eq!(hello["heartbeat_ms"], 9000, "{hello}");
    assert_eq!(hello["max_frame_bytes"], 6000, "{hello}");
    c.send_json(json!({"type": "pair"})).await;
    let qr = c.expect("qr").await;
    assert_eq!(qr["remaining"], 2, "{qr}");
    assert!(qr["expires_in_ms"].as_u64().unwrap() <= 7000, "{qr}");
    assert_eq!(
        qr["payload"],
        format!(
            "https://flags.example.test/phone#ref={}",
            qr["ref"].as_str().unwrap()
        )
    );
    for (origin, expected) in [
        ("http://a.example.test", 101),
        ("http://b.example.test", 101),
        ("http://c.example.test", 403),
    ] {
        assert_eq!(
            upgrade_status(g.addr, "/ws/phone", &[("Origin", origin)]).await,
            expected,
            "{origin}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let g = BinGateway::start_args(
        dir.path(),
        &["serve".to_string()],
        &[
            ("PAIRGATE_LISTEN", "127.0.0.1:0"),
            ("PAIRGATE_DATA_DIR", d.as_str()),
            ("PAIRGATE_HEARTBEAT_MS", "7777"),
            ("PAIRGATE_MAX_FRAME_BYTES", "5000"),
            ("PAIRGATE_QR_ROTATIONS", "2"),
            ("PAIRGATE_PUBLIC_URL", "https://env.example.test"),
            ("PAIRGATE_ALLOWED_ORIGINS", "http://env-origin.example.test"),
            ("PAIRGATE_DEMO", "1"),
        ],
    )
    .await;
    // PAIRGATE_DEMO=1, as a boolean
    assert_eq!(http_post(g.addr, "/demo/phone").await.status, 200);
    let c = Client::open(&g.ws_url("/ws/web")).await;
    let hello = c.expect("hello").await;
    assert_eq!(hello["heartbeat_ms"], 7777, "{hello}");
    assert_eq!(hello["max_frame_bytes"], 5000, "{hello}");
    c.send_json(json!({"type": "pair"})).await;
    let qr = c.expect("qr").await;
    assert_eq!(qr["remaining"], 1, "{qr}");
    assert!(
        qr["payload"]
            .as_str()
            .unwrap()
            .starts_with("https://env.example.test/phone#ref="),
        "{qr}"
    );
    assert_eq!(
        upgrade_status(
            g.addr,
            "/ws/web",
            &[("Origin", "http://env-origin.example.test")]
        )
        .await,
        101
    );
    // PAIRGATE_DATA_DIR was used: the secret is there
    assert!(
        dir.path().join("secret").exists(),
        "no secret in PAIRGATE_DATA_DIR"
    );
    let acc = account("env");
    let _phone = g.phone(&acc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_is_the_default_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let g = BinGateway::start_args(
        dir.path(),
        &[
            "--listen".to_string(),
            "127.0.0.1:0".to_string(),
            "--data-dir".to_string(),
            d,
        ],
        &[],
    )
    .await;
    let r = http_get(g.addr, "/healthz", &[]).await;
    assert_eq!(r.status, 200);
    let acc = account("default-sub");
    let _phone = g.phone(&acc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_data_dir_is_pairgate_data_in_the_working_directory() {
    let cwd = tempfile::tempdir().unwrap();
    let acc = account("cwd");
    let (st, out, err) = run_cli_in(Some(cwd.path()), &["token", "--account", &acc]).await;
    assert!(st.success(), "token without --data-dir failed: {err}");
    let token = out.trim().to_string();
    let data_dir = cwd.path().join("pairgate-data");
    let secret = read_secret_file(&data_dir);
    assert!(
        jwt_verifies(&token, &secret),
        "token not signed with ./pairgate-data/secret"
    );
    // serve without --data-dir uses the same directory
    let g = BinGateway::start_args_in(
        Some(cwd.path()),
        &data_dir,
        &[
            "serve".to_string(),
            "--listen".to_string(),
            "127.0.0.1:0".to_string(),
        ],
        &[],
    )
    .await;
    let _phone = g.phone_with(&acc, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_option_is_accepted_as_a_flag() {
    let dir = tempfile::tempdir().unwrap();
    let g = BinGateway::serve(
        dir.path(),
        &[
            "--secret",
            "all-flags-secret",
            "--public-url",
            "http://all.example.test",
            "--allowed-origins",
            "*",
            "--qr-ttl-ms",
            "5000",
            "--qr-rotations",
            "2",
            "--auth-timeout-ms",
            "300",
            "--heartbeat-ms",
            "20000",
            "--max-devices",
            "1",
            "--ephemeral-grace-ms",
            "5000",
            "--session-idle-days",
            "0.5",
            "--max-frame-bytes",
            "8192",
            "--max-frames-per-sec",
            "500",
            "--max-errors-per-sec",
            "5",
            "--max-queue-bytes",
            "65536",
            "--demo",
        ],
        &[],
    )
    .await;
    // --demo
    assert_eq!(http_post(g.addr, "/demo/phone").await.status, 200);
    // --auth-timeout-ms
    let c = Client::open(&g.ws_url("/ws/web")).await;
    c.expect("hello").await;
    assert_eq!(c.expect_close().await, 4008);
    // --secret and --max-devices
    let acc = account("allflags");
    let phone = g
        .phone_with(&acc, &mint("all-flags-secret", &phone_claims(&acc)))
        .await;
    let _s = g.pair(&phone, &PairOpts::new()).await;
    let (_web, qr) = start_pairing(g.addr, &PairOpts::new()).await;
    assert_eq!(qr["remaining"], 1, "{qr}");
    phone
        .request_frame_error(&link_ref(&qr), "too_many_devices")
        .await;
    // --allowed-origins *
    assert_eq!(
        upgrade_status(g.addr, "/ws/web", &[("Origin", "null")]).await,
        101
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let g = BinGateway::serve(dir.path(), &[], &[("PAIRGATE_SECRET", "env-secret-value")]).await;
    assert!(
        !dir.path().join("secret").exists(),
        "PAIRGATE_SECRET given, yet <data-dir>/secret was written"
    );
    let acc = account("envsecret");
    let _phone = g
        .phone_with(&acc, &mint("env-secret-value", &phone_claims(&acc)))
        .await;
}

/// "A session with a live socket never idles out", also across a crash: a
/// session that was online for longer than the idle limit when the gateway
/// was killed resumes after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_online_longer_than_the_idle_limit_survives_kill9() {
    // 0.0001 days = 8.64 s idle limit; the sweep runs every 4.32 s.
    let args = ["--session-idle-days", "0.0001"];
    let dir = tempfile::tempdir().unwrap();
    let mut g = BinGateway::serve(dir.path(), &args, &[]).await;
    let acc = account("online-crash");
    let phone = g.phone(&acc).await;
    let s = g.pair(&phone, &PairOpts::new()).await;
    // Stay online past the idle limit, as measured by a witness that goes
    // offline after s came online and idles out. The sweep that removes it
    // also re-stores s's last-active time, and the removal is told only
    // once it (queued after that) is on disk.
    let w = g.pair(&phone, &PairOpts::new()).await;
    w.web.close().await;
    let removed = phone
        .expect_where("session_removed", 3 * LONG, |m| {
            m["type"] == "session_removed"
        })
        .await
        .msg;
    assert_eq!(removed["session_id"], w.session_id.as_str(), "{removed}");
    assert!(!s.web.is_closed(), "a live session idled out");
    g.kill9().await;

    let g = BinGateway::serve(dir.path(), &args, &[]).await;
    let _web = g.resume_ok(&s.token, &s.session_id).await;
}
