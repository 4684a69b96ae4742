//! Rotating the secret under live sessions (`--previous-secret`), the `kid`
//! of new tokens, and the options of secrets. Runs the real binary.

use pairgate::tokens::{key_id, session_key};
use serde_json::json;

use crate::support::*;

/// `auth` with a phone token on `/ws/phone` is refused: `invalid_token`, 4003.
async fn assert_phone_refused(g: &BinGateway, token: &str) {
    let c = Client::open(&g.ws_url("/ws/phone")).await;
    c.expect("hello").await;
    c.send_json(json!({"type": "auth", "token": token})).await;
    expect_error_and_close(&c, "invalid_token", 4003).await;
}

/// A session token refused as not ours: `invalid_token`, 4003.
async fn assert_session_refused(g: &BinGateway, token: &str) {
    let (web, r) = g.resume(token).await;
    assert_eq!(r["code"], "invalid_token", "{r}");
    assert_eq!(web.expect_close().await, 4003);
}

/// SIGTERM and wait for the exit.
async fn stop(mut g: BinGateway) {
    g.signal("TERM");
    let st = g.wait_exit(LONG).await.expect("exit after SIGTERM");
    assert!(st.success(), "exit status {st}; log:\n{}", g.log_text());
}

/// Secret A, then B with A as previous: everybody stays in, new tokens are
/// B's (with B's kid); then B alone: A's tokens are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_rotates_under_live_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = ("rotation-secret-a", "rotation-secret-b");
    let acc = account("rotate");

    // Secret A: a phone (its token from `pairgate token`, with A's kid, and
    // one from an identity service, without kid) and a remembered session.
    let g = BinGateway::serve(dir.path(), &["--secret", a], &[]).await;
    let phone_token_a = cli_token(&["--account", &acc, "--secret", a]).await;
    assert_eq!(jwt_kid(&phone_token_a), Some(key_id(a.as_bytes())));
    let integrator_a = mint(a, &phone_claims(&acc));
    assert_eq!(jwt_kid(&integrator_a), None);
    let phone = g.phone_with(&acc, &phone_token_a).await;
    let s = g.pair(&phone, &PairOpts::new().remember(true)).await;
    assert_eq!(jwt_kid(&s.token), Some(key_id(&session_key(a))));
    stop(g).await;
    drop((phone, s.web));

    // B signs, A still verifies: the web resumes with its old token, both
    // old phone tokens authenticate, new tokens are B's.
    let g = BinGateway::serve(dir.path(), &["--secret", b, "--previous-secret", a], &[]).await;
    let (web, ready) = g.resume(&s.token).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    assert_eq!(ready["session_id"], s.session_id.as_str(), "{ready}");
    // the old token is swapped for one of B's
    let renewed = ready["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no renewed token in {ready}"))
        .to_owned();
    assert_eq!(jwt_kid(&renewed), Some(key_id(&session_key(b))));
    assert!(jwt_verifies_key(&renewed, &session_key(b)));
    web.expect("phone_status").await;
    drop(web);
    let _integrator_phone = g.phone_with(&acc, &integrator_a).await;
    let phone = g.phone_with(&acc, &phone_token_a).await;
    let fresh = g.pair(&phone, &PairOpts::new().remember(true)).await;
    assert_eq!(jwt_kid(&fresh.token), Some(key_id(&session_key(b))));
    // a token of the current key is not renewed
    let (current, ready) = g.resume(&renewed).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    assert!(ready.get("token").is_none(), "{ready}");
    drop(current);
    assert!(jwt_verifies_key(&fresh.token, &session_key(b)));
    assert!(!jwt_verifies_key(&fresh.token, &session_key(a)));
    let phone_token_b = cli_token(&["--account", &acc, "--secret", b]).await;
    assert_eq!(jwt_kid(&phone_token_b), Some(key_id(b.as_bytes())));
    assert!(jwt_verifies(&phone_token_b, b));
    stop(g).await;
    drop((phone, fresh.web));

    // B alone: whatever A signed is refused; B's tokens work, the renewed
    // one too: the session that came back during the overlap lives on.
    let g = BinGateway::serve(dir.path(), &["--secret", b], &[]).await;
    assert_session_refused(&g, &s.token).await;
    let _renewed_web = g.resume_ok(&renewed, &s.session_id).await;
    assert_phone_refused(&g, &phone_token_a).await;
    assert_phone_refused(&g, &integrator_a).await;
    let phone = g.phone_with(&acc, &phone_token_b).await;
    let _fresh_web = g.resume_ok(&fresh.token, &fresh.session_id).await;
    stop(g).await;
    drop(phone);

    // The environment's form, comma-separated: A verifies again (nothing of
    // the refusal above was kept).
    let g = BinGateway::serve(
        dir.path(),
        &[],
        &[
            ("PAIRGATE_SECRET", b),
            ("PAIRGATE_PREVIOUS_SECRET", &format!("unrelated-secret,{a}")),
        ],
    )
    .await;
    let _web = g.resume_ok(&s.token, &s.session_id).await;
    let _phone = g.phone_with(&acc, &phone_token_a).await;
}

/// An empty previous secret, or more than eight, are start-up errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_previous_secrets_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let nine = (0..9)
        .map(|i| format!("s{i}"))
        .collect::<Vec<_>>()
        .join(",");
    for value in ["", &nine] {
        let (st, _, err) = run_cli(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &d,
            "--secret",
            "x",
            "--previous-secret",
            value,
        ])
        .await;
        assert!(!st.success(), "--previous-secret {value:?} accepted");
        assert!(err.contains("previous-secret"), "{value:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// `--session-idle-days` whose duration does not fit is refused with a
/// clear error (it used to panic at start-up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_idle_days_too_large_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    for value in ["1e300", "1e16", "36501"] {
        let (st, _, err) = run_cli(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &d,
            "--session-idle-days",
            value,
        ])
        .await;
        assert_eq!(st.code(), Some(2), "{value}: {err}");
        assert!(err.contains("session-idle-days"), "{value}: {err}");
        assert!(!err.contains("panicked"), "{value}: {err}");
    }
    // the largest accepted value starts
    let g = BinGateway::serve(dir.path(), &["--session-idle-days", "36500"], &[]).await;
    let _phone = g.phone(&account("idle-max")).await;
}
