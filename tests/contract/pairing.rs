//! "Pairing, web side" and "Pairing, phone side": the `qr` frame, rotation
//! and `pair_timeout`, codes and their aliases, device names, `scanned`,
//! confirm / reject / expiry of link requests, `too_many_devices` and the
//! failed-link rate limit.

use serde_json::{Value, json};

use crate::support::*;

const CROCKFORD: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

fn is_b64url(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty()
        && s.len() - body.len() <= 2
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn is_code(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 9
        && b[4] == b'-'
        && s.chars()
            .enumerate()
            .all(|(i, c)| i == 4 || CROCKFORD.contains(c))
}

fn assert_qr_shape(qr: &Value, public_url: &str, ttl_ms: u64) {
    assert_eq!(qr["type"], "qr");
    let r = qr["ref"].as_str().unwrap_or_else(|| panic!("ref: {qr}"));
    assert!(is_b64url(r), "ref is not base64url: {r:?}");
    assert!(
        r.trim_end_matches('=').len() * 6 >= 128,
        "ref carries fewer than 128 bits: {r:?}"
    );
    let code = qr["code"].as_str().unwrap_or_else(|| panic!("code: {qr}"));
    assert!(
        is_code(code),
        "code is not upper-case Crockford XXXX-XXXX: {code:?}"
    );
    assert_eq!(
        qr["payload"].as_str(),
        Some(format!("{public_url}/phone#ref={r}").as_str()),
        "{qr}"
    );
    let svg = qr["svg"].as_str().unwrap_or_else(|| panic!("svg: {qr}"));
    let t = svg.trim();
    assert!(
        (t.starts_with("<svg") || t.starts_with("<?xml"))
            && t.contains("<svg")
            && t.ends_with("</svg>"),
        "svg is not an SVG document: {}",
        &svg[..svg.len().min(200)]
    );
    let exp = qr["expires_in_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("expires_in_ms: {qr}"));
    assert!(
        exp > 0 && exp <= ttl_ms,
        "expires_in_ms {exp} not in (0, {ttl_ms}]"
    );
    assert!(qr["remaining"].is_u64(), "{qr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qr_frame_has_every_field() {
    let gw = TestGateway::spawn(|c| {
        c.public_url = Some("https://pair.example.test".into());
        c.qr_ttl_ms = 10_000;
        c.qr_rotations = 5;
    })
    .await;
    let web = gw.web(Some(CHROME_LINUX_UA)).await;
    web.send_json(json!({"type": "pair", "id": "p-1", "remember": true}))
        .await;
    let qr = web.expect("qr").await;
    assert_eq!(qr["id"], "p-1", "the first qr answers pair's id: {qr}");
    assert_qr_shape(&qr, "https://pair.example.test", 10_000);
    assert_eq!(qr["remaining"], 4, "{qr}");

    // without an id, the first qr carries none
    let (_web2, qr2) = gw.pairing(&PairOpts::new()).await;
    assert_no_id(&qr2);
    assert_qr_shape(&qr2, "https://pair.example.test", 10_000);
    assert_ne!(qr["ref"], qr2["ref"]);
    assert_ne!(qr["code"], qr2["code"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_public_url_is_the_listen_address() {
    let gw = TestGateway::start().await;
    let (_web, qr) = gw.pairing(&PairOpts::new()).await;
    assert_qr_shape(&qr, &format!("http://{}", gw.addr), 20_000);
    assert_eq!(qr["remaining"], 4, "default qr_rotations is 5: {qr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qr_rotates_then_pair_timeout_and_4008() {
    let ttl = 300;
    let gw = TestGateway::spawn(|c| {
        c.qr_ttl_ms = ttl;
        c.qr_rotations = 3;
    })
    .await;
    let acc = account("rotate");
    let phone = gw.phone(&acc).await;
    let (web, q0) = gw.pairing(&PairOpts::new()).await;
    assert_eq!(q0["remaining"], 2, "{q0}");
    let q1 = web.expect("qr").await;
    assert_no_id(&q1);
    assert_qr_shape(&q1, &format!("http://{}", gw.addr), ttl);
    assert_eq!(q1["remaining"], 1, "{q1}");
    assert_ne!(q1["ref"], q0["ref"]);
    assert_ne!(q1["code"], q0["code"]);

    // the rotated-out ref and code are dead
    phone
        .request_frame_error(&link_ref(&q0), "unknown_ref")
        .await;
    phone
        .request_frame_error(&link_code(&q0), "unknown_ref")
        .await;

    let q2 = web.expect("qr").await;
    assert_eq!(q2["remaining"], 0, "{q2}");
    assert_ne!(q2["ref"], q1["ref"]);
    assert_ne!(q2["ref"], q0["ref"]);
    let timeout = web.expect("pair_timeout").await;
    assert_no_id(&timeout);
    assert_eq!(web.expect_close().await, 4008);
    assert_eq!(web.all_of("qr").len(), 3, "exactly qr_rotations refs");
    phone
        .request_frame_error(&link_ref(&q2), "unknown_ref")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_pair_does_not_restart_the_rotation() {
    let gw = TestGateway::spawn(|c| {
        c.qr_ttl_ms = 400;
        c.qr_rotations = 4;
    })
    .await;
    let (web, q0) = gw.pairing(&PairOpts::new()).await;
    assert_eq!(q0["remaining"], 3);
    let ok = web
        .request(json!({"type": "pair", "remember": false}))
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let q1 = web.expect("qr").await;
    assert_eq!(
        q1["remaining"], 2,
        "rotation restarted by a repeated pair: {q1}"
    );
}

/// Opens pairing sockets until a code contains `ch`.
async fn pairing_with_code_char(gw: &TestGateway, ch: char) -> (Client, Value) {
    for _ in 0..80 {
        let (web, qr) = gw.pairing(&PairOpts::new()).await;
        if qr["code"].as_str().unwrap_or_default().contains(ch) {
            return (web, qr);
        }
        web.close().await;
    }
    panic!("no pairing code with {ch:?} in 80 tries");
}

async fn assert_code_links(
    gw: &TestGateway,
    phone: &Client,
    web: &Client,
    typed: &str,
    what: &str,
) {
    let lr = phone.request(json!({"type": "link", "code": typed})).await;
    assert_eq!(lr["type"], "link_request", "{what} ({typed}): {lr}");
    web.expect("scanned").await;
    let dl = phone.request_frame(&confirm(&lr)).await;
    assert_eq!(dl["type"], "device_linked", "{dl}");
    web.expect("linked").await;
    let _ = gw;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_is_case_insensitive_and_hyphen_optional() {
    let gw = TestGateway::start().await;
    let acc = account("codes");
    let phone = gw.phone(&acc).await;
    type Variant = fn(&str) -> String;
    let variants: [(&str, Variant); 4] = [
        ("as shown", |c| c.to_string()),
        ("lower-case", |c| c.to_lowercase()),
        ("no hyphen", |c| c.replace('-', "")),
        ("lower-case, no hyphen", |c| {
            c.replace('-', "").to_lowercase()
        }),
    ];
    for (what, f) in variants {
        let (web, qr) = gw.pairing(&PairOpts::new()).await;
        let typed = f(qr["code"].as_str().unwrap());
        assert_code_links(&gw, &phone, &web, &typed, what).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_accepts_crockford_aliases() {
    let gw = TestGateway::start().await;
    let acc = account("alias");
    let phone = gw.phone(&acc).await;

    let (web, qr) = pairing_with_code_char(&gw, '0').await;
    let typed = qr["code"].as_str().unwrap().replace('0', "O");
    assert_code_links(&gw, &phone, &web, &typed, "O read as 0").await;

    let (web, qr) = pairing_with_code_char(&gw, '0').await;
    let typed = qr["code"].as_str().unwrap().replace('0', "o");
    assert_code_links(&gw, &phone, &web, &typed, "o read as 0").await;

    let (web, qr) = pairing_with_code_char(&gw, '1').await;
    let typed = qr["code"].as_str().unwrap().replace('1', "I");
    assert_code_links(&gw, &phone, &web, &typed, "I read as 1").await;

    let (web, qr) = pairing_with_code_char(&gw, '1').await;
    let typed = qr["code"]
        .as_str()
        .unwrap()
        .replace('1', "l")
        .replace('-', "");
    assert_code_links(&gw, &phone, &web, &typed, "l read as 1, no hyphen").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_request_device_name_is_derived_from_user_agent() {
    let gw = TestGateway::start().await;
    let acc = account("uas");
    let phone = gw.phone(&acc).await;
    let cases: [(Option<&str>, &str); 16] = [
        (Some(CHROME_LINUX_UA), "Chrome on Linux"),
        (Some(FIREFOX_WINDOWS_UA), "Firefox on Windows"),
        (
            Some(
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.0.0 Safari/537.36",
            ),
            "Chrome on Linux",
        ),
        (
            Some(
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chromium/120.0.0.0 Chrome/120.0.0.0 Safari/537.36",
            ),
            "Chrome on Linux",
        ),
        (
            Some(
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80",
            ),
            "Edge on Windows",
        ),
        (
            Some(
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 OPR/110.0.0.0",
            ),
            "Opera on Windows",
        ),
        (
            Some(
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
            ),
            "Safari on iOS",
        ),
        (
            Some(
                "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
            ),
            "Safari on iOS",
        ),
        (
            Some(
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
            ),
            "Safari on macOS",
        ),
        (
            Some(
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.4; rv:125.0) Gecko/20100101 Firefox/125.0",
            ),
            "Firefox on macOS",
        ),
        (
            Some(
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
            ),
            "Chrome on Android",
        ),
        (
            Some(
                "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
            ),
            "Chrome on ChromeOS",
        ),
        (
            Some("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"),
            "Firefox on Linux",
        ),
        (Some("SuperBrowser"), "SuperBrowser"),
        (
            Some("SuperBrowser (Windows NT 10.0)"),
            "SuperBrowser on Windows",
        ),
        (None, "Unknown device"),
    ];
    for (ua, expected) in cases {
        let (web, qr) = gw.pairing(&PairOpts::new().user_agent(ua)).await;
        let lr = phone.request_frame(&link_ref(&qr)).await;
        assert_eq!(lr["type"], "link_request", "{ua:?}: {lr}");
        assert_eq!(lr["device"]["name"], expected, "User-Agent {ua:?}: {lr}");
        if let Some(ua) = ua {
            assert_eq!(lr["device"]["user_agent"], ua, "{lr}");
        } else {
            assert!(lr["device"]["user_agent"].is_string(), "{lr}");
        }
        assert_eq!(lr["device"]["ip"], "127.0.0.1", "{lr}");
        let ok = phone.request_frame(&reject(&lr)).await;
        assert_eq!(ok["type"], "ok", "{ok}");
        web.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_device_name_wins_over_user_agent() {
    let gw = TestGateway::start().await;
    let acc = account("devname");
    let phone = gw.phone(&acc).await;
    let s = gw
        .pair(&phone, &PairOpts::new().device_name("Kitchen laptop"))
        .await;
    assert_eq!(s.link_request["device"]["name"], "Kitchen laptop");
    assert_eq!(s.link_request["device"]["user_agent"], CHROME_LINUX_UA);
    assert_eq!(s.device_linked["session"]["device_name"], "Kitchen laptop");
    assert_eq!(
        s.device_linked["session"]["user_agent"], CHROME_LINUX_UA,
        "{}",
        s.device_linked
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_then_confirm_links_the_web_session() {
    let gw = TestGateway::start().await;
    let acc = account("confirm");
    let phone = gw.phone(&acc).await;
    let web = gw.web(Some(CHROME_LINUX_UA)).await;
    web.send_json(json!({"type": "pair", "id": "pair-1"})).await;
    let qr = web.expect("qr").await;
    assert_eq!(qr["id"], "pair-1");

    let lr = phone
        .request(json!({"type": "link", "id": "l1", "ref": qr["ref"]}))
        .await;
    assert_eq!(lr["type"], "link_request", "{lr}");
    assert_eq!(lr["id"], "l1");
    assert!(
        lr["request_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{lr}"
    );
    assert_eq!(lr["device"]["name"], "Chrome on Linux", "{lr}");
    assert_eq!(lr["device"]["user_agent"], CHROME_LINUX_UA, "{lr}");
    assert_eq!(lr["device"]["ip"], "127.0.0.1", "{lr}");
    let scanned = web.expect("scanned").await;
    assert_no_id(&scanned);

    let dl = phone
        .request(json!({"type": "link_confirm", "id": "c1", "request_id": lr["request_id"]}))
        .await;
    assert_eq!(dl["type"], "device_linked", "{dl}");
    assert_eq!(dl["id"], "c1");
    let session = &dl["session"];
    assert_session_shape(session);
    assert_eq!(session["online"], true, "{dl}");
    assert_eq!(session["remember"], true, "{dl}");
    assert_eq!(session["device_name"], "Chrome on Linux", "{dl}");
    assert_eq!(session["user_agent"], CHROME_LINUX_UA, "{dl}");
    assert_eq!(session["ip"], "127.0.0.1", "{dl}");

    let linked = web.expect_rx("linked").await;
    assert_no_id(&linked.msg);
    assert_eq!(linked.msg["account"], acc.as_str());
    assert_eq!(linked.msg["session_id"], session["session_id"]);
    assert!(
        linked.msg["token"].as_str().is_some_and(|t| !t.is_empty()),
        "{}",
        linked.msg
    );
    assert_eq!(linked.msg["remember"], true);
    let st = web.expect_after(&linked, "phone_status").await;
    assert_eq!(st["online"], true, "{st}");
    assert_no_id(&st);

    // the socket is now a live web session
    let ack = web.send_body(&json!("hi"), None).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let m = phone.expect("message").await;
    assert_eq!(m["from"], session["session_id"]);
    // and the token resumes it
    let sid = session["session_id"].as_str().unwrap();
    let _web2 = gw
        .resume_ok(linked.msg["token"].as_str().unwrap(), sid)
        .await;
    // linking sends no session_online (device_linked says online)
    phone.assert_none("session_online");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_by_code_confirms_like_ref() {
    let gw = TestGateway::start().await;
    let acc = account("bycode");
    let phone = gw.phone(&acc).await;
    let s = gw.pair(&phone, &PairOpts::new().by_code()).await;
    assert_eq!(s.linked["account"], acc.as_str());
    assert_eq!(list_sessions(&phone).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refs_and_codes_are_single_use() {
    let gw = TestGateway::start().await;
    let acc = account("used");
    let phone = gw.phone(&acc).await;
    let (web, qr) = gw.pairing(&PairOpts::new()).await;
    let lr = phone.request_frame(&link_ref(&qr)).await;
    assert_eq!(lr["type"], "link_request", "{lr}");
    // submitted once: a second submission is refused, by ref or by code
    phone
        .request_frame_error(&link_ref(&qr), "unknown_ref")
        .await;
    phone
        .request_frame_error(&link_code(&qr), "unknown_ref")
        .await;
    let dl = phone.request_frame(&confirm(&lr)).await;
    assert_eq!(dl["type"], "device_linked", "{dl}");
    web.expect("linked").await;
    // a second confirm of the same request
    phone
        .request_frame_error(&confirm(&lr), "unknown_request")
        .await;
    // another account's phone cannot use it either
    let other = gw.phone(&account("other")).await;
    other
        .request_frame_error(&link_ref(&qr), "unknown_ref")
        .await;
    assert_eq!(web.all_of("scanned").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ref_code_and_request_are_refused() {
    let gw = TestGateway::start().await;
    let acc = account("unknown");
    let phone = gw.phone(&acc).await;
    phone
        .request_error(
            json!({"type": "link", "ref": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}),
            "unknown_ref",
        )
        .await;
    phone
        .request_error(json!({"type": "link", "code": "ZZZZ-ZZZZ"}), "unknown_ref")
        .await;
    phone
        .request_error(
            json!({"type": "link_confirm", "request_id": "no-such-request"}),
            "unknown_request",
        )
        .await;
    phone
        .request_error(
            json!({"type": "link_reject", "request_id": "no-such-request"}),
            "unknown_request",
        )
        .await;
    assert!(!phone.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_reject_gives_pair_rejected_then_a_fresh_attempt() {
    let gw = TestGateway::spawn(|c| {
        c.qr_ttl_ms = 600;
        c.qr_rotations = 4;
    })
    .await;
    let acc = account("reject");
    let phone = gw.phone(&acc).await;
    let (web, q0) = gw.pairing(&PairOpts::new()).await;
    assert_eq!(q0["remaining"], 3);
    // let the attempt advance, so that a restart is visible
    let q1 = web.expect("qr").await;
    assert_eq!(q1["remaining"], 2);
    let lr = phone.request_frame(&link_ref(&q1)).await;
    assert_eq!(lr["type"], "link_request", "{lr}");
    web.expect("scanned").await;
    let ok = phone
        .request(json!({"type": "link_reject", "id": "rj", "request_id": lr["request_id"]}))
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(ok["id"], "rj");
    let rej = web.expect_rx("pair_rejected").await;
    assert_no_id(&rej.msg);
    let fresh = web.expect_after(&rej, "qr").await;
    assert_eq!(fresh["remaining"], 3, "a new attempt starts: {fresh}");
    assert_no_id(&fresh);
    assert_ne!(fresh["ref"], q1["ref"]);
    assert_ne!(fresh["ref"], q0["ref"]);
    // the rejected request is gone, the old ref too
    phone
        .request_frame_error(&confirm(&lr), "unknown_request")
        .await;
    phone
        .request_frame_error(&link_ref(&q1), "unknown_ref")
        .await;
    // the fresh ref links
    let lr2 = phone.request_frame(&link_ref(&fresh)).await;
    assert_eq!(lr2["type"], "link_request", "{lr2}");
    let dl = phone.request_frame(&confirm(&lr2)).await;
    assert_eq!(dl["type"], "device_linked", "{dl}");
    web.expect("linked").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scanned_pauses_rotation_and_an_unanswered_request_counts_as_rejected() {
    let ttl = 300u64;
    let gw = TestGateway::spawn(|c| {
        c.qr_ttl_ms = ttl;
        c.qr_rotations = 2;
    })
    .await;
    let acc = account("expire");
    let phone = gw.phone(&acc).await;
    let (web, q0) = gw.pairing(&PairOpts::new()).await;
    let lr = phone.request_frame(&link_ref(&q0)).await;
    assert_eq!(lr["type"], "link_request", "{lr}");
    let scanned = web.expect_rx("scanned").await;
    // rotation pauses: without the pause, the second ref and pair_timeout
    // (after 2 x ttl) would come before the request expires (3 x ttl)
    let next = web.expect_after(&scanned, "pair_rejected").await;
    assert_no_id(&next);
    let fresh = web.expect("qr").await;
    assert_eq!(fresh["remaining"], 1, "{fresh}");
    assert!(!web.is_closed());
    phone
        .request_frame_error(&confirm(&lr), "unknown_request")
        .await;
    web.assert_none("linked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_closing_while_pairing_kills_its_refs_and_requests() {
    let gw = TestGateway::start().await;
    let acc = account("webgone");
    let phone = gw.phone(&acc).await;

    let (web, qr) = gw.pairing(&PairOpts::new()).await;
    let lr = phone.request_frame(&link_ref(&qr)).await;
    assert_eq!(lr["type"], "link_request", "{lr}");
    web.close().await;
    // the close reply is sent before the gateway is done with the socket
    wait_for_web_sockets(gw.addr, 0).await;
    phone
        .request_frame_error(&confirm(&lr), "unknown_request")
        .await;

    let (web2, qr2) = gw.pairing(&PairOpts::new()).await;
    let lr2 = phone.request_frame(&link_ref(&qr2)).await;
    web2.abort().await;
    // an abrupt end too: the request dies once the gateway has noticed
    wait_for_metric(gw.addr, "pairgate_link_requests_pending", LONG, |v| {
        v == 0.0
    })
    .await;
    phone
        .request_error(
            json!({"type": "link_reject", "request_id": lr2["request_id"]}),
            "unknown_request",
        )
        .await;

    let (web3, qr3) = gw.pairing(&PairOpts::new()).await;
    web3.close().await;
    wait_for_web_sockets(gw.addr, 0).await;
    phone
        .request_frame_error(&link_ref(&qr3), "unknown_ref")
        .await;
    assert!(list_sessions(&phone).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_phone_socket_may_answer_a_pending_request() {
    let gw = TestGateway::start().await;
    let acc = account("newerphone");
    let phone1 = gw.phone(&acc).await;
    let (web, qr) = gw.pairing(&PairOpts::new()).await;
    let lr = phone1.request_frame(&link_ref(&qr)).await;
    assert_eq!(lr["type"], "link_request", "{lr}");

    let phone2 = gw.phone(&acc).await;
    assert_eq!(phone1.expect_close().await, 4009);
    let dl = phone2.request_frame(&confirm(&lr)).await;
    assert_eq!(dl["type"], "device_linked", "{dl}");
    web.expect("linked").await;

    // and a reject from a newer socket
    let (webb, qrb) = gw.pairing(&PairOpts::new()).await;
    let lrb = phone2.request_frame(&link_ref(&qrb)).await;
    let phone3 = gw.phone(&acc).await;
    assert_eq!(phone2.expect_close().await, 4009);
    let ok = phone3.request_frame(&reject(&lrb)).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    webb.expect("pair_rejected").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_belongs_to_its_account() {
    let gw = TestGateway::start().await;
    let phone_a = gw.phone(&account("owner")).await;
    let phone_b = gw.phone(&account("stranger")).await;
    let (web, qr) = gw.pairing(&PairOpts::new()).await;
    let lr = phone_a.request_frame(&link_ref(&qr)).await;
    assert_eq!(lr["type"], "link_request", "{lr}");
    phone_b
        .request_frame_error(&confirm(&lr), "unknown_request")
        .await;
    phone_b
        .request_error(
            json!({"type": "link_reject", "request_id": lr["request_id"]}),
            "unknown_request",
        )
        .await;
    let dl = phone_a.request_frame(&confirm(&lr)).await;
    assert_eq!(dl["type"], "device_linked", "{dl}");
    web.expect("linked").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_devices_at_link_leaves_the_ref_valid_and_no_scanned() {
    let gw = TestGateway::spawn(|c| c.max_devices = 1).await;
    let acc = account("toomany");
    let phone = gw.phone(&acc).await;
    let a = gw.pair(&phone, &PairOpts::new()).await;

    let (web, qr) = gw.pairing(&PairOpts::new()).await;
    phone
        .request_frame_error(&link_ref(&qr), "too_many_devices")
        .await;
    phone
        .request_frame_error(&link_code(&qr), "too_many_devices")
        .await;
    web.assert_quiet("scanned").await;

    let ok = phone.request_frame(&logout(&a.session_id)).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    // the same ref still links
    let lr = phone.request_frame(&link_ref(&qr)).await;
    assert_eq!(lr["type"], "link_request", "{lr}");
    web.expect("scanned").await;
    let dl = phone.request_frame(&confirm(&lr)).await;
    assert_eq!(dl["type"], "device_linked", "{dl}");
    web.expect("linked").await;
    assert_eq!(web.all_of("scanned").len(), 1, "{:?}", web.all_frames());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_devices_at_confirm_leaves_the_request_pending() {
    let gw = TestGateway::spawn(|c| c.max_devices = 1).await;
    let acc = account("toomany2");
    let phone = gw.phone(&acc).await;
    let (web_a, qr_a) = gw.pairing(&PairOpts::new()).await;
    let (web_b, qr_b) = gw.pairing(&PairOpts::new()).await;
    let lr_a = phone.request_frame(&link_ref(&qr_a)).await;
    let lr_b = phone.request_frame(&link_ref(&qr_b)).await;
    assert_eq!(lr_a["type"], "link_request", "{lr_a}");
    assert_eq!(lr_b["type"], "link_request", "{lr_b}");

    let dl = phone.request_frame(&confirm(&lr_a)).await;
    assert_eq!(dl["type"], "device_linked", "{dl}");
    let linked_a = web_a.expect("linked").await;
    phone
        .request_frame_error(&confirm(&lr_b), "too_many_devices")
        .await;
    web_b.assert_quiet("pair_rejected").await;
    web_b.assert_none("linked");

    let ok = phone
        .request(json!({"type": "logout", "session_id": linked_a["session_id"]}))
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let dl = phone.request_frame(&confirm(&lr_b)).await;
    assert_eq!(
        dl["type"], "device_linked",
        "pending request should confirm now: {dl}"
    );
    web_b.expect("linked").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_confirms_respect_max_devices() {
    let gw = TestGateway::spawn(|c| c.max_devices = 1).await;
    let acc = account("race");
    let phone = gw.phone(&acc).await;
    let mut webs = Vec::new();
    let mut requests = Vec::new();
    for _ in 0..3 {
        let (web, qr) = gw.pairing(&PairOpts::new()).await;
        let lr = phone.request_frame(&link_ref(&qr)).await;
        assert_eq!(lr["type"], "link_request", "{lr}");
        requests.push(lr["request_id"].clone());
        webs.push(web);
    }
    // All confirms in one burst. The phone's frames are handled one at a
    // time, so this checks the count, not the race: links still being
    // written are provoked by the unit test
    // `sessions::tests::links_being_written_count_toward_max_devices`.
    let ids: Vec<String> = (0..3).map(|i| format!("race-{i}")).collect();
    phone
        .send_many(
            ids.iter()
                .zip(&requests)
                .map(|(id, rid)| json!({"type": "link_confirm", "id": id, "request_id": rid})),
        )
        .await;
    let mut linked = 0;
    let mut refused = 0;
    for id in &ids {
        let r = phone.expect_id(id).await;
        match (r["type"].as_str(), r["code"].as_str()) {
            (Some("device_linked"), _) => linked += 1,
            (Some("error"), Some("too_many_devices")) => refused += 1,
            _ => panic!("unexpected reply {r}"),
        }
    }
    assert_eq!((linked, refused), (1, 2));
    assert_eq!(list_sessions(&phone).await.len(), 1);
    phone.assert_one_reply_per_id();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_misses_then_the_sixth_link_is_rate_limited() {
    let gw = TestGateway::start().await;
    let acc = account("misses");
    let phone = gw.phone(&acc).await;
    let (web, qr) = gw.pairing(&PairOpts::new()).await;
    for i in 0..5 {
        let f = if i % 2 == 0 {
            json!({"type": "link", "ref": format!("no-such-ref-{i}-AAAAAAAAAAAAAAAAAAAAAA")})
        } else {
            json!({"type": "link", "code": "ZZZZ-ZZZZ"})
        };
        phone.request_error(f, "unknown_ref").await;
    }
    // the 6th attempt within the minute is refused, even with a valid ref
    phone
        .request_frame_error(&link_ref(&qr), "rate_limited")
        .await;
    web.assert_quiet("scanned").await;
    // per account: a new phone socket of the account is still limited
    let phone2 = gw.phone(&acc).await;
    phone2
        .request_frame_error(&link_code(&qr), "rate_limited")
        .await;
    // another account is not
    let other = gw.phone(&account("notlimited")).await;
    let lr = other.request_frame(&link_ref(&qr)).await;
    assert_eq!(lr["type"], "link_request", "{lr}");
    assert!(!phone2.is_closed());
    if !single_process_only("/metrics counts one node's refusals") {
        let body = gw.http_get("/metrics", &[]).await.text();
        assert_eq!(
            metric_sample(
                &body,
                "pairgate_rate_limited_total",
                &[("what", "link_misses_account")]
            ),
            Some(2.0)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_unknown_ref_counts_as_a_miss() {
    let gw = TestGateway::spawn(|c| c.max_devices = 1).await;
    let acc = account("onlymiss");
    let phone = gw.phone(&acc).await;
    let a = gw.pair(&phone, &PairOpts::new()).await;
    for _ in 0..4 {
        phone
            .request_error(json!({"type": "link", "code": "ZZZZ-ZZZZ"}), "unknown_ref")
            .await;
    }
    let (web, qr) = gw.pairing(&PairOpts::new()).await;
    for _ in 0..3 {
        phone
            .request_frame_error(&link_ref(&qr), "too_many_devices")
            .await;
    }
    let ok = phone.request_frame(&logout(&a.session_id)).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    // 4 misses, 3 refusals that are not misses: still allowed
    let lr = phone.request_frame(&link_ref(&qr)).await;
    assert_eq!(lr["type"], "link_request", "{lr}");
    web.expect("scanned").await;
    // the 5th miss, then the limit
    phone
        .request_error(json!({"type": "link", "code": "ZZZZ-ZZZZ"}), "unknown_ref")
        .await;
    let (_web2, qr2) = gw.pairing(&PairOpts::new()).await;
    phone
        .request_frame_error(&link_ref(&qr2), "rate_limited")
        .await;
}

/// One round of an abandoned link: a web socket pairs (under a long name and
/// User-Agent), the phone takes its ref, the web socket leaves.
async fn abandon_one_link(addr: std::net::SocketAddr, phone: &Client, name: &str, ua: &str) {
    let opts = PairOpts::new().device_name(name).user_agent(Some(ua));
    let (web, qr) = start_pairing(addr, &opts).await;
    let lr = phone.request_frame(&link_ref(&qr)).await;
    assert_eq!(lr["type"], "link_request", "{lr}");
    web.abort().await;
}

/// Link requests whose web socket left die with it: after 1,000 abandoned
/// links (each with a 60 KB device name and an 8 KB User-Agent), no request
/// is pending, the gateway's memory is back near where it was after the
/// first 100, and the account leaves memory once its phone is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_link_requests_are_freed() {
    let dir = tempfile::tempdir().unwrap();
    let gw = BinGateway::serve(dir.path(), &[], &[]).await;
    let acc = account("abandon");
    let phone = gw.phone(&acc).await;
    let name = "n".repeat(60_000);
    let ua = format!("Mozilla/5.0 {}", "u".repeat(8_000));
    for _ in 0..100 {
        abandon_one_link(gw.addr, &phone, &name, &ua).await;
    }
    wait_for_metric(gw.addr, "pairgate_link_requests_pending", LONG, |v| {
        v == 0.0
    })
    .await;
    let baseline = rss_kib(gw.pid());
    for _ in 0..900 {
        abandon_one_link(gw.addr, &phone, &name, &ua).await;
    }
    wait_for_metric(gw.addr, "pairgate_link_requests_pending", LONG, |v| {
        v == 0.0
    })
    .await;
    let after = rss_kib(gw.pid());
    assert!(
        after < baseline + 8 * 1024,
        "RSS grew from {baseline} KiB to {after} KiB over 900 abandoned link requests"
    );
    phone.close().await;
    wait_for_metric(gw.addr, "pairgate_accounts_in_memory", LONG, |v| v == 0.0).await;
}

/// A device name and User-Agent are shown to the phone (and kept) cleaned:
/// control and bidirectional-override characters removed, the name cut to
/// 100 characters, the User-Agent to 512 bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_names_and_user_agents_are_cleaned_and_capped() {
    let gw = TestGateway::start().await;
    let acc = account("clean");
    let phone = gw.phone(&acc).await;
    let name = format!("Anna\u{202E}gpj.exe\n\t{}", "é".repeat(300));
    let ua = format!(
        "Mozilla/5.0 (X11; Linux x86_64) Chrome/124.0 {}",
        "a".repeat(2_000)
    );
    let opts = PairOpts::new().device_name(&name).user_agent(Some(&ua));
    let (_web, qr) = gw.pairing(&opts).await;
    let lr = phone.request_frame(&link_ref(&qr)).await;
    let shown = lr["device"]["name"].as_str().unwrap();
    assert!(shown.starts_with("Annagpj.exe"), "{shown:?}");
    assert_eq!(shown.chars().count(), 100, "{shown:?}");
    assert!(!shown.contains(['\u{202E}', '\n', '\t']), "{shown:?}");
    let shown_ua = lr["device"]["user_agent"].as_str().unwrap();
    assert_eq!(shown_ua.len(), 512);
    assert!(ua.starts_with(shown_ua));
    let dl = phone.request_frame(&confirm(&lr)).await;
    assert_eq!(dl["session"]["device_name"], shown, "{dl}");
    assert_eq!(dl["session"]["user_agent"], shown_ua, "{dl}");
}

/// An account has at most 8 link requests waiting for its phone's answer:
/// a 9th `link` is `rate_limited` and leaves its ref valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_link_requests_are_capped_per_account() {
    let gw = TestGateway::start().await;
    let acc = account("capreq");
    let phone = gw.phone(&acc).await;
    let mut webs = Vec::new();
    let mut requests = Vec::new();
    for _ in 0..8 {
        let (web, qr) = gw.pairing(&PairOpts::new()).await;
        let lr = phone.request_frame(&link_ref(&qr)).await;
        assert_eq!(lr["type"], "link_request", "{lr}");
        requests.push(lr["request_id"].clone());
        webs.push(web);
    }
    let (ninth, qr) = gw.pairing(&PairOpts::new()).await;
    phone
        .request_frame_error(&link_ref(&qr), "rate_limited")
        .await;
    ninth.assert_none("scanned");
    let r = phone
        .request(json!({"type": "link_reject", "request_id": requests[0]}))
        .await;
    assert_eq!(r["type"], "ok", "{r}");
    let lr = phone.request_frame(&link_ref(&qr)).await;
    assert_eq!(lr["type"], "link_request", "the ref stayed valid: {lr}");
    ninth.expect("scanned").await;
}

/// `--max-link-misses-per-min`: failed `link`s by code of all accounts
/// together (each under its own limit of 5). Misses by ref do not count.
/// Once the minute holds N, every `link` by code is `rate_limited`, the right
/// code too, for an account that never missed; `link` by ref still works.
/// With `PAIRGATE_TEST_REDIS` the phones are spread over a cluster's nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_misses_by_code_of_all_accounts_together_are_limited() {
    let gw = TestGateway::spawn(|c| c.max_link_misses_per_min = 2).await;
    let wrong = || json!({"type": "link", "code": "ZZZZ-ZZZZ"});
    let (web, qr) = gw.pairing(&PairOpts::new()).await;

    let a = gw.phone(&account("guess-a")).await;
    a.request_error(wrong(), "unknown_ref").await;
    let c = gw.phone(&account("guess-ref")).await;
    c.request_error(
        json!({"type": "link", "ref": "no-such-ref-AAAAAAAAAAAAAAAAAAAAAAAA"}),
        "unknown_ref",
    )
    .await;
    // one miss by code so far: a right code still links
    let victim = gw.phone(&account("fresh")).await;
    let lr = victim.request_frame(&link_code(&qr)).await;
    assert_eq!(lr["type"], "link_request", "{lr}");
    web.expect("scanned").await;
    let ok = victim.request_frame(&reject(&lr)).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    web.expect("pair_rejected").await;
    let qr = web.expect("qr").await;

    let b = gw.phone(&account("guess-b")).await;
    b.request_error(wrong(), "unknown_ref").await;
    // two misses by code within the minute: every link by code is refused
    victim
        .request_frame_error(&link_code(&qr), "rate_limited")
        .await;
    a.request_error(wrong(), "rate_limited").await;
    web.assert_quiet("scanned").await;
    // link by ref is not affected
    let lr = victim.request_frame(&link_ref(&qr)).await;
    assert_eq!(lr["type"], "link_request", "{lr}");
    web.expect("scanned").await;
    if !single_process_only("/metrics counts one node's refusals") {
        let body = gw.http_get("/metrics", &[]).await.text();
        assert_eq!(
            metric_sample(
                &body,
                "pairgate_rate_limited_total",
                &[("what", "link_misses_global")]
            ),
            Some(2.0)
        );
    }
}

/// The default is 600 misses by code per minute: a handful of guessing
/// accounts is not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_misses_by_code_default_allows_a_few_guessing_accounts() {
    let gw = TestGateway::start().await;
    for i in 0..4 {
        let p = gw.phone(&account(&format!("guess{i}"))).await;
        for _ in 0..5 {
            p.request_error(json!({"type": "link", "code": "ZZZZ-ZZZZ"}), "unknown_ref")
                .await;
        }
    }
    let (_web, qr) = gw.pairing(&PairOpts::new()).await;
    let phone = gw.phone(&account("fresh")).await;
    let lr = phone.request_frame(&link_code(&qr)).await;
    assert_eq!(lr["type"], "link_request", "{lr}");
}
