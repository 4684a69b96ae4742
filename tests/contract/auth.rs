//! "Opening a socket": `hello`, `auth` with phone and session tokens, token
//! validation, `not_authenticated`, the auth timeout, 4009 replacement, and
//! what a pairing web socket accepts.

use serde_json::{Value, json};

use crate::support::*;

/// The first frame on `path`, read byte by byte (the typed client would
/// look past other frames for `hello`).
async fn hello_of(gw: &TestGateway, path: &str) -> Value {
    let mut raw = RawWs::connect(gw.addr, path, &[], None).await;
    let first = raw.recv_json().await;
    assert_eq!(
        first["type"], "hello",
        "first frame on {path} is not hello: {first}"
    );
    assert_no_id(&first);
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_is_first_frame_with_contract_defaults() {
    let gw = TestGateway::start().await;
    for path in ["/ws/web", "/ws/phone"] {
        let h = hello_of(&gw, path).await;
        assert_eq!(h["protocol"], 1, "{path}: {h}");
        assert_eq!(h["heartbeat_ms"], 25000, "{path}: {h}");
        assert_eq!(h["max_frame_bytes"], 65536, "{path}: {h}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_reports_the_configured_values() {
    let gw = TestGateway::spawn(|c| {
        c.heartbeat_ms = 12_345;
        c.max_frame_bytes = 5_000;
    })
    .await;
    for path in ["/ws/web", "/ws/phone"] {
        let h = hello_of(&gw, path).await;
        assert_eq!(h["protocol"], 1, "{path}: {h}");
        assert_eq!(h["heartbeat_ms"], 12345, "{path}: {h}");
        assert_eq!(h["max_frame_bytes"], 5000, "{path}: {h}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_auth_gets_ready_with_role_and_account() {
    let gw = TestGateway::start().await;
    let acc = account("ready");
    let c = Client::open(&gw.ws_url("/ws/phone")).await;
    c.expect("hello").await;
    c.send_json(json!({"type": "auth", "token": gw.phone_token(&acc)}))
        .await;
    let ready = c.recv().await;
    assert_eq!(ready["type"], "ready", "{ready}");
    assert_eq!(ready["role"], "phone", "{ready}");
    assert_eq!(ready["account"], acc.as_str(), "{ready}");
    assert_no_id(&ready);
    // usable afterwards
    assert!(list_sessions(&c).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_with_id_is_answered_with_that_id() {
    let gw = TestGateway::start().await;
    let acc = account("authid");
    let phone = Client::open(&gw.ws_url("/ws/phone")).await;
    phone.expect("hello").await;
    let ready = phone
        .request(json!({"type": "auth", "id": "a-1", "token": gw.phone_token(&acc)}))
        .await;
    assert_eq!(ready["type"], "ready", "{ready}");
    assert_eq!(ready["id"], "a-1");

    let s = gw.pair(&phone, &PairOpts::new()).await;
    let web = gw.web(Some(CHROME_LINUX_UA)).await;
    let ready = web
        .request(json!({"type": "auth", "id": "w-1", "token": s.token}))
        .await;
    assert_eq!(ready["type"], "ready", "{ready}");
    assert_eq!(ready["session_id"], s.session_id.as_str(), "{ready}");

    let bad = Client::open(&gw.ws_url("/ws/phone")).await;
    bad.expect("hello").await;
    let err = bad
        .request(json!({"type": "auth", "id": "b-1", "token": "nope"}))
        .await;
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["code"], "invalid_token", "{err}");
    assert_eq!(bad.expect_close().await, 4003);
    phone.assert_one_reply_per_id();
    web.assert_one_reply_per_id();
}

async fn phone_auth_reply(gw: &TestGateway, token: &str) -> (Client, Value) {
    let c = Client::open(&gw.ws_url("/ws/phone")).await;
    c.expect("hello").await;
    c.send_json(json!({"type": "auth", "token": token})).await;
    let r = c
        .expect_where("ready or error", T, |m| {
            m["type"] == "ready" || m["type"] == "error"
        })
        .await
        .msg;
    (c, r)
}

async fn assert_phone_token_invalid(gw: &TestGateway, what: &str, token: &str) {
    let (c, r) = phone_auth_reply(gw, token).await;
    assert_eq!(
        r["type"], "error",
        "{what}: expected invalid_token, got {r}"
    );
    assert_eq!(
        r["code"], "invalid_token",
        "{what}: expected invalid_token, got {r}"
    );
    assert!(r["message"].is_string(), "{r}");
    assert_eq!(c.expect_close().await, 4003, "{what}: close code");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_phone_tokens_get_invalid_token_and_4003() {
    let gw = TestGateway::start().await;
    let secret = gw.secret();
    let acc = account("badtok");
    let now = now_secs();
    let b64 = |v: &Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let cases: Vec<(&str, String)> = vec![
        ("garbage", "this.is-not-a.token".into()),
        ("empty", "".into()),
        (
            "wrong secret",
            mint("some-other-secret", &phone_claims(&acc)),
        ),
        (
            "expired",
            mint(
                &secret,
                &json!({"sub": acc, "aud": "pairgate-phone", "iat": now - 3600, "exp": now - 30}),
            ),
        ),
        (
            "expired a few seconds ago (no leeway)",
            mint(
                &secret,
                &json!({"sub": acc, "aud": "pairgate-phone", "iat": now - 60, "exp": now - 5}),
            ),
        ),
        (
            "wrong audience",
            mint(
                &secret,
                &json!({"sub": acc, "aud": "pairgate-web", "iat": now, "exp": now + 600}),
            ),
        ),
        (
            "no audience",
            mint(&secret, &json!({"sub": acc, "iat": now, "exp": now + 600})),
        ),
        (
            "no exp",
            mint(
                &secret,
                &json!({"sub": acc, "aud": "pairgate-phone", "iat": now}),
            ),
        ),
        (
            "nbf in the future",
            mint(
                &secret,
                &json!({"sub": acc, "aud": "pairgate-phone", "iat": now, "nbf": now + 3600, "exp": now + 7200}),
            ),
        ),
        (
            "nbf a few seconds ahead (no leeway)",
            mint(
                &secret,
                &json!({"sub": acc, "aud": "pairgate-phone", "iat": now, "nbf": now + 20, "exp": now + 600}),
            ),
        ),
        (
            "no sub",
            mint(
                &secret,
                &json!({"aud": "pairgate-phone", "iat": now, "exp": now + 600}),
            ),
        ),
        (
            "sub with a space",
            mint(
                &secret,
                &json!({"sub": "bad sub", "aud": "pairgate-phone", "iat": now, "exp": now + 600}),
            ),
        ),
        (
            "sub with a slash",
            mint(
                &secret,
                &json!({"sub": "a/b", "aud": "pairgate-phone", "iat": now, "exp": now + 600}),
            ),
        ),
        (
            "empty sub",
            mint(
                &secret,
                &json!({"sub": "", "aud": "pairgate-phone", "iat": now, "exp": now + 600}),
            ),
        ),
        (
            "sub of 65 characters",
            mint(
                &secret,
                &json!({"sub": "a".repeat(65), "aud": "pairgate-phone", "iat": now, "exp": now + 600}),
            ),
        ),
        (
            "numeric sub",
            mint(
                &secret,
                &json!({"sub": 42, "aud": "pairgate-phone", "iat": now, "exp": now + 600}),
            ),
        ),
        (
            "HS512 instead of HS256",
            mint_alg(&secret, &phone_claims(&acc), jsonwebtoken::Algorithm::HS512),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                b64(&phone_claims(&acc))
            ),
        ),
        (
            "RS256 header over an HMAC of the secret (RS/HS confusion)",
            mint_with_header(
                secret.as_bytes(),
                &json!({"alg": "RS256", "typ": "JWT"}),
                &phone_claims(&acc),
            ),
        ),
        (
            "a crit header naming an unknown extension",
            mint_with_header(
                secret.as_bytes(),
                &json!({"alg": "HS256", "typ": "JWT", "crit": ["x-pairgate-unknown"]}),
                &phone_claims(&acc),
            ),
        ),
        (
            "a crit header naming a registered claim",
            mint_with_header(
                secret.as_bytes(),
                &json!({"alg": "HS256", "typ": "JWT", "crit": ["exp"], "exp": now + 600}),
                &phone_claims(&acc),
            ),
        ),
        (
            "signed with the session-token key",
            mint_with_header(
                &pairgate::tokens::session_key(&secret),
                &json!({"alg": "HS256", "typ": "JWT"}),
                &phone_claims(&acc),
            ),
        ),
        (
            "a kid naming the secret's key over another key's signature",
            mint_with_header(
                b"some-other-secret",
                &json!({"alg": "HS256", "typ": "JWT", "kid": pairgate::tokens::key_id(secret.as_bytes())}),
                &phone_claims(&acc),
            ),
        ),
    ];
    for (what, token) in &cases {
        assert_phone_token_invalid(&gw, what, token).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_phone_token_edge_cases_are_accepted() {
    let gw = TestGateway::start().await;
    let now = now_secs();
    // the longest account id, every allowed character class
    let long: String = format!("A-z_0.9{}", "x".repeat(57));
    assert_eq!(long.len(), 64);
    for (what, sub, claims) in [
        (
            "64-character sub",
            long.clone(),
            json!({"sub": long, "aud": "pairgate-phone", "iat": now, "exp": now + 600}),
        ),
        (
            "nbf in the past",
            "nbf-past".to_string(),
            json!({"sub": "nbf-past", "aud": "pairgate-phone", "iat": now - 10, "nbf": now - 10, "exp": now + 600}),
        ),
    ] {
        let (_c, r) = phone_auth_reply(&gw, &gw.mint(&claims)).await;
        assert_eq!(r["type"], "ready", "{what}: {r}");
        assert_eq!(r["account"], sub.as_str(), "{what}: {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_of_the_wrong_kind_gets_invalid_token_and_4003() {
    let gw = TestGateway::start().await;
    let acc = account("kind");
    let phone = gw.phone(&acc).await;
    let s = gw.pair(&phone, &PairOpts::new()).await;

    // session token on /ws/phone
    assert_phone_token_invalid(&gw, "session token on /ws/phone", &s.token).await;

    // phone token, garbage and a mangled session token on /ws/web
    let cases = [
        ("phone token on /ws/web", gw.phone_token(&acc)),
        ("garbage session token", "garbage-session-token".to_string()),
        ("mangled session token", format!("{}x", s.token)),
        ("session token with its middle replaced", {
            let mut t = s.token.clone().into_bytes();
            let mid = t.len() / 2;
            t[mid] = if t[mid] == b'A' { b'B' } else { b'A' };
            String::from_utf8(t).unwrap()
        }),
    ];
    for (what, token) in cases {
        let (web, r) = gw.resume(&token).await;
        assert_eq!(r["type"], "error", "{what}: {r}");
        assert_eq!(r["code"], "invalid_token", "{what}: {r}");
        assert_eq!(web.expect_close().await, 4003, "{what}");
    }
    // the real session is unaffected
    assert!(!s.web.is_closed());
}

/// Session tokens: the gateway's own carry a `kid` and are signed with the
/// key derived for session tokens, not the secret; a `crit` header, a
/// session-audience token signed with the phone's key under a `kid`, and an
/// account swapped into a real token are all refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_tokens_are_signed_with_their_own_key_and_checked_strictly() {
    let gw = TestGateway::start().await;
    let secret = gw.secret();
    let session_key = pairgate::tokens::session_key(&secret);
    let acc = account("sesskey");
    let phone = gw.phone(&acc).await;
    let s = gw.pair(&phone, &PairOpts::new()).await;
    assert!(jwt_verifies_key(&s.token, &session_key));
    assert!(
        !jwt_verifies(&s.token, &secret),
        "signed with the secret itself"
    );
    assert_eq!(
        jwt_kid(&s.token),
        Some(pairgate::tokens::key_id(&session_key))
    );
    let claims = jwt_claims(&s.token);
    let hs = json!({"alg": "HS256", "typ": "JWT"});
    let cases = [
        (
            "crit header",
            mint_with_header(
                &session_key,
                &json!({"alg": "HS256", "typ": "JWT", "crit": ["x-unknown"]}),
                &claims,
            ),
        ),
        (
            "RS256 header",
            mint_with_header(&session_key, &json!({"alg": "RS256"}), &claims),
        ),
        (
            "the phone's key under the session key's kid",
            mint_with_header(
                secret.as_bytes(),
                &json!({"alg": "HS256", "kid": pairgate::tokens::key_id(&session_key)}),
                &claims,
            ),
        ),
        ("another account swapped in, signature kept", {
            let mut other = claims.clone();
            other["sub"] = json!(account("someone-else"));
            let forged = mint_with_header(&session_key, &hs, &other);
            let sig = s.token.rsplit('.').next().unwrap();
            let (head, _) = forged.rsplit_once('.').unwrap();
            format!("{head}.{sig}")
        }),
    ];
    for (what, token) in cases {
        let (web, r) = gw.resume(&token).await;
        assert_eq!(r["code"], "invalid_token", "{what}: {r}");
        assert_eq!(web.expect_close().await, 4003, "{what}");
    }
    // Correctly signed but naming this session under another account: no
    // such session there, so it is an ended one (the contract's 4001); the
    // real session is untouched.
    let mut other = claims.clone();
    other["sub"] = json!(account("someone-else"));
    let (web, r) = gw
        .resume(&mint_with_header(&session_key, &hs, &other))
        .await;
    assert_eq!(r["code"], "logged_out", "{r}");
    assert_eq!(web.expect_close().await, 4001);
    assert!(!s.web.is_closed());
    // The form before session keys were derived (no kid, signed with the
    // secret itself) still resumes its session: an upgrade logs nobody out.
    // It is swapped for a token of the derived key in `ready`.
    let old_form = mint_with_header(secret.as_bytes(), &hs, &claims);
    s.web.close().await;
    phone.expect("session_offline").await;
    let (web, ready) = gw.resume(&old_form).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    let renewed = ready["token"].as_str().expect("a renewed token");
    assert!(jwt_verifies_key(renewed, &session_key));
    web.close().await;
    phone.expect("session_offline").await;
    // A current token's `ready` carries none.
    let (_web, ready) = gw.resume(renewed).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    assert!(ready.get("token").is_none(), "{ready}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_before_auth_get_not_authenticated_and_socket_stays_open() {
    let gw = TestGateway::start().await;
    let acc = account("preauth");

    let phone = Client::open(&gw.ws_url("/ws/phone")).await;
    phone.expect("hello").await;
    for f in [
        json!({"type": "list_sessions", "id": "p1"}),
        json!({"type": "send", "id": "p2", "body": 1}),
        json!({"type": "logout_all", "id": "p3"}),
        json!({"type": "link", "id": "p4", "ref": "x"}),
    ] {
        let r = phone.request(f.clone()).await;
        assert_eq!(r["type"], "error", "{f}: {r}");
        assert_eq!(r["code"], "not_authenticated", "{f}: {r}");
    }
    // without an id: answered without one
    phone.send_json(json!({"type": "list_sessions"})).await;
    let e = phone.expect_error("not_authenticated").await;
    assert_no_id(&e);
    assert!(!phone.is_closed());
    let ready = phone
        .request(json!({"type": "auth", "token": gw.phone_token(&acc)}))
        .await;
    assert_eq!(ready["type"], "ready", "{ready}");

    let web = gw.web(Some(CHROME_LINUX_UA)).await;
    for f in [
        json!({"type": "send", "id": "w1", "body": "x"}),
        json!({"type": "logout", "id": "w2"}),
    ] {
        let r = web.request(f.clone()).await;
        assert_eq!(r["type"], "error", "{f}: {r}");
        assert_eq!(r["code"], "not_authenticated", "{f}: {r}");
    }
    assert!(!web.is_closed());
    web.send_json(json!({"type": "pair"})).await;
    web.expect("qr").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_auth_in_time_is_closed_4008() {
    let gw = TestGateway::spawn(|c| c.auth_timeout_ms = 300).await;
    for path in ["/ws/web", "/ws/phone"] {
        let c = Client::open(&gw.ws_url(path)).await;
        c.expect("hello").await;
        assert_eq!(c.expect_close().await, 4008, "{path}");
    }
    // a frame that is not auth does not count as authenticating
    let c = Client::open(&gw.ws_url("/ws/phone")).await;
    c.expect("hello").await;
    c.send_json(json!({"type": "list_sessions", "id": "x"}))
        .await;
    c.expect_error("not_authenticated").await;
    assert_eq!(c.expect_close().await, 4008);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_in_time_is_not_closed_by_the_auth_timeout() {
    let gw = TestGateway::spawn(|c| c.auth_timeout_ms = 300).await;
    let acc = account("intime");
    let phone = gw.phone(&acc).await;
    let (web, qr) = gw.pairing(&PairOpts::new()).await;
    // The clock to read is a witness opened after both that never
    // authenticates: once its auth timer closed it (4008), theirs, started
    // earlier, have run out too.
    let witness = Client::open(&gw.ws_url("/ws/phone")).await;
    witness.expect("hello").await;
    assert_eq!(witness.expect_close().await, 4008);
    // both are still served: a round trip each
    assert!(list_sessions(&phone).await.is_empty());
    let lr = phone.request_frame(&link_ref(&qr)).await;
    assert_eq!(lr["type"], "link_request", "{lr}");
    web.expect("scanned").await;
    assert!(!phone.is_closed(), "{:?}", phone.closed());
    assert!(!web.is_closed(), "{:?}", web.closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_phone_socket_replaces_the_first_with_4009_and_no_status_change() {
    let gw = TestGateway::start().await;
    let acc = account("phone4009");
    let phone1 = gw.phone(&acc).await;
    let s = gw.pair(&phone1, &PairOpts::new()).await;

    let phone2 = gw.phone(&acc).await;
    assert_eq!(phone1.expect_close().await, 4009);

    // the web sees no phone_status change: a message relayed after the
    // replacement arrives with no phone_status before it
    let ack = phone2.send_body(&json!("after replacement"), None).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["delivered"], 1, "{ack}");
    s.web.expect("message").await;
    s.web.assert_none("phone_status");
    // and the new phone is fully usable
    let ack = s.web.send_body(&json!("to the new phone"), None).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let m = phone2.expect("message").await;
    assert_eq!(m["body"], "to the new phone");
    s.web.assert_quiet("phone_status").await;
    // no session events went to the new phone for the replacement either
    phone2.assert_none("session_online");
    phone2.assert_none("session_offline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_socket_of_a_web_session_replaces_the_older_with_4009() {
    let gw = TestGateway::start().await;
    let acc = account("web4009");
    let phone = gw.phone(&acc).await;
    let s = gw.pair(&phone, &PairOpts::new()).await;

    let web2 = gw.resume_ok(&s.token, &s.session_id).await;
    assert_eq!(s.web.expect_close().await, 4009);

    // the newer socket is the live one
    let ack = web2.send_body(&json!("from web2"), None).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let m = phone.expect("message").await;
    assert_eq!(m["from"], s.session_id.as_str());
    let ack = phone
        .send_body(&json!("to web2"), Some(&s.session_id))
        .await;
    assert_eq!(ack["delivered"], 1, "{ack}");
    web2.expect("message").await;

    // a 4009 replacement changes nothing for the phone
    phone.assert_quiet("session_offline").await;
    phone.assert_none("session_online");
    let list = list_sessions(&phone).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["online"], true, "{list:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_resume_gets_ready_then_phone_status_false_when_phone_offline() {
    let gw = TestGateway::start().await;
    let acc = account("resumeoff");
    let phone = gw.phone(&acc).await;
    let s = gw.pair(&phone, &PairOpts::new()).await;
    s.web.close().await;
    phone.close().await;

    let web = gw.web(Some(CHROME_LINUX_UA)).await;
    web.send_json(json!({"type": "auth", "token": s.token}))
        .await;
    let ready = web.expect_rx("ready").await;
    assert_eq!(ready.msg["role"], "web");
    assert_eq!(ready.msg["account"], acc.as_str());
    assert_eq!(ready.msg["session_id"], s.session_id.as_str());
    let st = web.expect_after(&ready, "phone_status").await;
    assert_eq!(st["online"], false, "{st}");
    assert_no_id(&st);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_and_pair_on_a_live_socket_are_unknown_type() {
    let gw = TestGateway::start().await;
    let acc = account("liveauth");
    let phone = gw.phone(&acc).await;
    let tok = gw.phone_token(&acc);
    phone
        .request_error(json!({"type": "auth", "token": tok}), "unknown_type")
        .await;
    phone
        .request_error(json!({"type": "pair", "remember": true}), "unknown_type")
        .await;

    // the socket that was just linked
    let s = gw.pair(&phone, &PairOpts::new()).await;
    s.web
        .request_error(json!({"type": "pair", "remember": true}), "unknown_type")
        .await;
    s.web
        .request_error(json!({"type": "auth", "token": s.token}), "unknown_type")
        .await;

    // a resumed socket
    s.web.close().await;
    let web = gw.resume_ok(&s.token, &s.session_id).await;
    web.request_error(json!({"type": "auth", "token": s.token}), "unknown_type")
        .await;
    web.request_error(json!({"type": "pair"}), "unknown_type")
        .await;
    assert!(!web.is_closed());
    assert!(!phone.is_closed());
    let ack = web.send_body(&json!(1), None).await;
    assert_eq!(ack["type"], "ack", "{ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_socket_refuses_other_frames_with_not_authenticated() {
    let gw = TestGateway::start().await;
    let acc = account("pairingonly");
    let phone = gw.phone(&acc).await;
    let (web, qr) = gw.pairing(&PairOpts::new()).await;
    for f in [
        json!({"type": "send", "id": "s", "body": "x"}),
        json!({"type": "logout", "id": "l"}),
        json!({"type": "list_sessions", "id": "ls"}),
    ] {
        let r = web.request(f.clone()).await;
        assert_eq!(r["type"], "error", "{f}: {r}");
        assert_eq!(r["code"], "not_authenticated", "{f}: {r}");
    }
    assert!(!web.is_closed());
    // still pairing: the ref links
    let lr = phone.request_frame(&link_ref(&qr)).await;
    assert_eq!(lr["type"], "link_request", "{lr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_pair_is_ok_and_updates_remember_and_device_name() {
    let gw = TestGateway::start().await;
    let acc = account("repair");
    let phone = gw.phone(&acc).await;
    let (web, qr) = gw
        .pairing(&PairOpts::new().remember(true).device_name("first name"))
        .await;
    let ok = web
        .request(
            json!({"type": "pair", "id": "again", "remember": false, "device_name": "second name"}),
        )
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(ok["id"], "again", "{ok}");

    let lr = phone.request_frame(&link_ref(&qr)).await;
    assert_eq!(lr["type"], "link_request", "{lr}");
    assert_eq!(lr["device"]["name"], "second name", "{lr}");
    let dl = phone.request_frame(&confirm(&lr)).await;
    assert_eq!(dl["type"], "device_linked", "{dl}");
    assert_eq!(dl["session"]["remember"], false, "{dl}");
    assert_eq!(dl["session"]["device_name"], "second name", "{dl}");
    let linked = web.expect("linked").await;
    assert_eq!(linked["remember"], false, "{linked}");
    let list = list_sessions(&phone).await;
    assert_eq!(list[0]["remember"], false, "{list:?}");
    assert_eq!(list[0]["device_name"], "second name", "{list:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_pair_can_turn_remember_back_on() {
    let gw = TestGateway::start().await;
    let acc = account("repair2");
    let phone = gw.phone(&acc).await;
    let (web, qr) = gw.pairing(&PairOpts::new().remember(false)).await;
    // `remember` missing is true
    let ok = web.request(json!({"type": "pair"})).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let lr = phone.request_frame(&link_ref(&qr)).await;
    let dl = phone.request_frame(&confirm(&lr)).await;
    assert_eq!(dl["session"]["remember"], true, "{dl}");
    let linked = web.expect("linked").await;
    assert_eq!(linked["remember"], true, "{linked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_while_pairing_ends_pairing_and_resumes_the_session() {
    let gw = TestGateway::start().await;
    let acc = account("pairauth");
    let phone = gw.phone(&acc).await;
    let s = gw.pair(&phone, &PairOpts::new()).await;

    let (web2, qr) = gw.pairing(&PairOpts::new()).await;
    web2.send_json(json!({"type": "auth", "token": s.token}))
        .await;
    let ready = web2.expect_rx("ready").await;
    assert_eq!(
        ready.msg["session_id"],
        s.session_id.as_str(),
        "{}",
        ready.msg
    );
    assert_eq!(ready.msg["account"], acc.as_str());
    let st = web2.expect_after(&ready, "phone_status").await;
    assert_eq!(st["online"], true);
    // the older socket of that session is replaced
    assert_eq!(s.web.expect_close().await, 4009);
    // the pairing ended: its ref is gone
    phone
        .request_frame_error(&link_ref(&qr), "unknown_ref")
        .await;
    // and the socket is live
    let ack = web2.send_body(&json!("resumed"), None).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(phone.expect("message").await["from"], s.session_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_while_pairing_with_a_bad_token_is_invalid_token_4003() {
    let gw = TestGateway::start().await;
    let (web, _qr) = gw.pairing(&PairOpts::new()).await;
    web.send_json(json!({"type": "auth", "token": "not-a-session-token"}))
        .await;
    expect_error_and_close(&web, "invalid_token", 4003).await;
}
