//! "Frames" and "Limits and bad input": `bad_frame`, ids, `unknown_type`,
//! 1009, frame and error rate limits, 4029 and heartbeats (4008). Slow
//! readers (4030) are in `backpressure.rs`.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// `c` answers `text` with `bad_frame` (carrying `id`, or none) and stays usable.
async fn assert_bad_frame_text(c: &Client, text: &str, id: Option<&str>, probe: Value) {
    c.send_text(text.to_string()).await;
    let e = c.expect("error").await;
    assert_eq!(e["code"], "bad_frame", "{text}: {e}");
    assert!(e["message"].is_string(), "{e}");
    match id {
        Some(id) => assert_eq!(e["id"], id, "{text}: {e}"),
        None => assert_no_id(&e),
    }
    assert!(!c.is_closed(), "{text}: socket closed: {:?}", c.closed());
    let r = c.request(probe).await;
    assert_ne!(r["type"], "error", "socket not usable after {text}: {r}");
}

async fn live_pair(gw: &TestGateway, prefix: &str) -> (Client, Session) {
    let acc = account(prefix);
    let phone = gw.phone(&acc).await;
    let s = gw.pair(&phone, &PairOpts::new()).await;
    (phone, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frames_are_bad_frame() {
    let gw = TestGateway::start().await;
    let (phone, s) = live_pair(&gw, "binary").await;
    for c in [&phone, &s.web] {
        c.send_raw(Message::binary(
            br#"{"type":"send","id":"bin","body":1}"#.to_vec(),
        ))
        .await;
        let e = c.expect_error("bad_frame").await;
        assert!(e.get("id").is_none() || e["id"] == "bin", "{e}");
        assert!(!c.is_closed());
    }
    phone.assert_none("message");
    s.web.assert_none("message");
    let ack = s.web.request(json!({"type": "send", "body": 1})).await;
    assert_eq!(ack["type"], "ack", "{ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_that_is_not_a_json_object_with_a_string_type_is_bad_frame() {
    let gw = TestGateway::start().await;
    let (phone, s) = live_pair(&gw, "notjson").await;
    let cases = [
        "this is {not json",
        "",
        "[]",
        r#"[{"type":"list_sessions"}]"#,
        r#""list_sessions""#,
        "42",
        "null",
        "true",
        "{}",
        r#"{"type": 1}"#,
        r#"{"type": null}"#,
        r#"{"type": {"name": "send"}}"#,
        r#"{"type": ["send"]}"#,
        r#"{"type":"send","body":1"#,
    ];
    for text in cases {
        assert_bad_frame_text(&phone, text, None, json!({"type": "list_sessions"})).await;
        assert_bad_frame_text(&s.web, text, None, json!({"type": "send", "body": 0})).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_non_string_type_with_an_id_is_answered_with_the_id() {
    let gw = TestGateway::start().await;
    let (phone, _s) = live_pair(&gw, "typeid").await;
    for (text, id) in [
        (r#"{"id":"m1"}"#, "m1"),
        (r#"{"id":"m2","type":7}"#, "m2"),
        (r#"{"id":"m3","type":false,"session_id":"x"}"#, "m3"),
    ] {
        assert_bad_frame_text(&phone, text, Some(id), json!({"type": "list_sessions"})).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_rules() {
    let gw = TestGateway::start().await;
    let (phone, s) = live_pair(&gw, "ids").await;
    // non-string ids: bad_frame without an id
    for id in [
        json!(5),
        json!(true),
        json!({"a": 1}),
        json!(["x"]),
        json!(1.5),
        Value::Null,
    ] {
        let text = json!({"type": "list_sessions", "id": id}).to_string();
        assert_bad_frame_text(&phone, &text, None, json!({"type": "list_sessions"})).await;
    }
    // 65 characters: bad_frame carrying it
    let long = "i".repeat(65);
    let text = json!({"type": "list_sessions", "id": long}).to_string();
    assert_bad_frame_text(&phone, &text, Some(&long), json!({"type": "list_sessions"})).await;
    let text = json!({"type": "send", "id": long, "body": "x"}).to_string();
    assert_bad_frame_text(
        &s.web,
        &text,
        Some(&long),
        json!({"type": "send", "body": 0}),
    )
    .await;
    // a rejected frame was not processed
    let m = phone.expect("message").await;
    assert_eq!(
        m["body"], 0,
        "the send with a 65-character id was relayed: {m}"
    );

    // 64 characters, 64 non-ASCII characters, and the empty string are ids
    for id in ["j".repeat(64), "\u{e9}".repeat(64), String::new()] {
        let r = phone
            .request(json!({"type": "list_sessions", "id": id}))
            .await;
        assert_eq!(r["type"], "sessions", "id {id:?}: {r}");
        assert_eq!(r["id"], id.as_str());
    }
    phone.assert_one_reply_per_id();
    s.web.assert_one_reply_per_id();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_of_the_wrong_type_or_missing_are_bad_frame() {
    let gw = TestGateway::start().await;
    let (phone, s) = live_pair(&gw, "fields").await;
    let phone_cases = [
        json!({"type": "link", "ref": 1}),
        json!({"type": "link", "code": true}),
        json!({"type": "link"}),
        json!({"type": "link_confirm", "request_id": 5}),
        json!({"type": "link_confirm"}),
        json!({"type": "link_reject", "request_id": []}),
        json!({"type": "link_reject"}),
        json!({"type": "logout", "session_id": 7}),
        json!({"type": "logout"}),
        json!({"type": "send", "body": 1, "to": 9}),
    ];
    for (i, f) in phone_cases.into_iter().enumerate() {
        let mut f = f;
        let id = format!("pf{i}");
        f["id"] = json!(id);
        let r = phone.request(f.clone()).await;
        assert_eq!(r["type"], "error", "{f}: {r}");
        assert_eq!(r["code"], "bad_frame", "{f}: {r}");
    }
    assert!(!phone.is_closed());
    assert_eq!(
        list_sessions(&phone).await.len(),
        1,
        "a bad logout was processed"
    );

    // a pairing socket
    let (web, _qr) = gw.pairing(&PairOpts::new()).await;
    for f in [
        json!({"type": "pair", "remember": "yes"}),
        json!({"type": "pair", "remember": 1}),
        json!({"type": "pair", "device_name": 5}),
        json!({"type": "auth", "token": 5}),
        json!({"type": "auth"}),
    ] {
        web.request_error(f, "bad_frame").await;
    }
    assert!(!web.is_closed());
    // a socket before auth
    let fresh = Client::open(&gw.ws_url("/ws/phone")).await;
    fresh.expect("hello").await;
    fresh
        .request_error(json!({"type": "auth", "token": null}), "bad_frame")
        .await;
    fresh
        .request_error(json!({"type": "auth"}), "bad_frame")
        .await;
    let web_fresh = gw.web(None).await;
    web_fresh
        .request_error(json!({"type": "pair", "remember": "no"}), "bad_frame")
        .await;
    assert!(!fresh.is_closed() && !web_fresh.is_closed());
    let _ = s;
    phone.assert_one_reply_per_id();
    web.assert_one_reply_per_id();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_types_per_role() {
    let gw = TestGateway::start().await;
    let (phone, s) = live_pair(&gw, "types").await;
    for t in [
        "foo",
        "SEND",
        "List_Sessions",
        "pair",
        "hello",
        "ready",
        "message",
    ] {
        phone
            .request_error(json!({"type": t}), "unknown_type")
            .await;
    }
    for t in [
        "foo",
        "list_sessions",
        "link",
        "link_confirm",
        "link_reject",
        "logout_all",
        "pair",
    ] {
        s.web
            .request_error(json!({"type": t}), "unknown_type")
            .await;
    }
    // without an id
    phone.send_json(json!({"type": "nope"})).await;
    let e = phone.expect_error("unknown_type").await;
    assert_no_id(&e);
    assert!(!phone.is_closed() && !s.web.is_closed());
    let ack = s.web.request(json!({"type": "send", "body": 1})).await;
    assert_eq!(ack["type"], "ack", "{ack}");
}

fn padded(frame: Value, total: usize) -> String {
    let mut t = frame.to_string();
    assert!(t.len() <= total);
    t.pop(); // the closing brace
    let pad = total - t.len() - 1;
    t.push_str(&" ".repeat(pad));
    t.push('}');
    assert_eq!(t.len(), total);
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_larger_than_max_frame_bytes_is_closed_1009() {
    let gw = TestGateway::spawn(|c| c.max_frame_bytes = 4096).await;
    let (phone, s) = live_pair(&gw, "big").await;

    // exactly max_frame_bytes: accepted
    let at_limit = padded(json!({"type": "list_sessions", "id": "at-limit"}), 4096);
    phone.send_text(at_limit).await;
    let r = phone.expect_id("at-limit").await;
    assert_eq!(r["type"], "sessions", "{r}");

    // one byte more: closed 1009
    phone
        .send_text(padded(json!({"type": "list_sessions", "id": "over"}), 4097))
        .await;
    assert_eq!(phone.expect_close().await, 1009);

    s.web
        .send_text(padded(json!({"type": "send", "body": "x"}), 20_000))
        .await;
    assert_eq!(s.web.expect_close().await, 1009);

    // before auth too
    let c = Client::open(&gw.ws_url("/ws/web")).await;
    c.expect("hello").await;
    c.send_text(padded(json!({"type": "pair"}), 5000)).await;
    assert_eq!(c.expect_close().await, 1009);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_beyond_the_rate_are_rate_limited_and_not_processed() {
    let gw = TestGateway::spawn(|c| c.max_frames_per_sec = 5).await;
    let (phone, s) = live_pair(&gw, "frames").await;
    let n = 20;
    let ids: Vec<String> = (0..n).map(|i| format!("f{i}")).collect();
    // 20 with ids, then 3 without: fewer than 20 rate_limited replies in
    // all, so no 4029
    s.web
        .send_many(
            ids.iter()
                .enumerate()
                .map(|(i, id)| json!({"type": "send", "id": id, "body": i}))
                .chain((0..3).map(|_| json!({"type": "send", "body": "noid"}))),
        )
        .await;
    let mut acked = Vec::new();
    let mut limited = 0;
    for (i, id) in ids.iter().enumerate() {
        let r = s.web.expect_id(id).await;
        match r["type"].as_str() {
            Some("ack") => acked.push(i),
            Some("error") => {
                assert_eq!(r["code"], "rate_limited", "{r}");
                limited += 1;
            }
            _ => panic!("unexpected reply {r}"),
        }
    }
    let replies_in = std::time::Instant::now();
    assert!(
        limited >= 5,
        "only {limited} of {n} frames were limited (burst is 2 x 5)"
    );
    assert!(
        acked.len() >= 5,
        "the burst of 2 x N was not allowed: {acked:?}"
    );
    // frames without an id are refused without one
    let e = s
        .web
        .expect_where("rate_limited without id", T, |m| {
            m["type"] == "error" && m["code"] == "rate_limited" && m.get("id").is_none()
        })
        .await
        .msg;
    assert!(e["message"].is_string(), "{e}");
    // exactly the acked ones were relayed, in order
    for i in &acked {
        let m = phone.expect("message").await;
        assert_eq!(m["body"], *i, "{m}");
    }
    phone.assert_quiet("message").await;
    assert!(
        !s.web.is_closed(),
        "fewer than 20 rate_limited must not close"
    );

    // The budget refills with time (5 a second): one frame's worth is back
    // a fifth of a second after the last frame was taken, which was before
    // its reply arrived.
    until_elapsed(replies_in, Duration::from_millis(210)).await;
    let r = s
        .web
        .request(json!({"type": "send", "body": "later"}))
        .await;
    assert_eq!(r["type"], "ack", "{r}");
    s.web.assert_one_reply_per_id();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_replies_beyond_the_rate_are_sent_as_rate_limited() {
    let gw = TestGateway::spawn(|c| c.max_errors_per_sec = 1).await;
    let acc = account("errors");
    let phone = gw.phone(&acc).await;
    let n = 15;
    let ids: Vec<String> = (0..n).map(|i| format!("e{i}")).collect();
    phone
        .send_many(ids.iter().map(|id| json!({"type": "nonsense", "id": id})))
        .await;
    let mut unknown = 0;
    let mut limited = 0;
    for id in &ids {
        let r = phone.expect_id(id).await;
        assert_eq!(r["type"], "error", "{r}");
        assert!(r["message"].is_string(), "{r}");
        match r["code"].as_str() {
            Some("unknown_type") => unknown += 1,
            Some("rate_limited") => limited += 1,
            _ => panic!("unexpected {r}"),
        }
    }
    assert!(
        (10..=11).contains(&unknown),
        "burst of 10 x 1 error replies expected, got {unknown} unknown_type"
    );
    assert!(limited >= 4, "{limited} rate_limited");
    // success replies are not limited
    let r = phone.request_frame(&ClientFrame::ListSessions).await;
    assert_eq!(r["type"], "sessions", "{r}");
    assert!(!phone.is_closed());
    phone.assert_one_reply_per_id();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_rate_limited_replies_close_4029() {
    let gw = TestGateway::spawn(|c| c.max_frames_per_sec = 1).await;
    let acc = account("flood");
    let phone = gw.phone(&acc).await;
    phone
        .send_many((0..40).map(|i| json!({"type": "list_sessions", "id": format!("x{i}")})))
        .await;
    assert_eq!(phone.expect_close().await, 4029);
    let limited = phone
        .all_frames()
        .into_iter()
        .filter(|m| m["type"] == "error" && m["code"] == "rate_limited")
        .count();
    assert_eq!(limited, 20, "{:?}", phone.all_frames());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_replies_sent_as_rate_limited_count_towards_4029() {
    let gw = TestGateway::spawn(|c| c.max_errors_per_sec = 1).await;
    let acc = account("errflood");
    let phone = gw.phone(&acc).await;
    phone
        .send_many((0..45).map(|i| json!({"type": "nonsense", "id": format!("y{i}")})))
        .await;
    assert_eq!(phone.expect_close().await, 4029);
    let frames = phone.all_frames();
    let limited = frames
        .iter()
        .filter(|m| m["type"] == "error" && m["code"] == "rate_limited")
        .count();
    assert_eq!(limited, 20, "{frames:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_are_closed_4008_and_active_ones_stay() {
    let gw = TestGateway::spawn(|c| c.heartbeat_ms = 300).await;
    let acc = account("active");
    // opened first: if pongs did not count, it would be closed first
    let active = gw.phone(&acc).await;
    let active_s = gw.pair(&active, &PairOpts::new()).await;

    let silent_acc = account("silent");
    let mut silent_phone = raw_phone(gw.addr, &gw.phone_token(&silent_acc), None).await;
    let mut silent_web = RawWs::connect(gw.addr, "/ws/web", &[], None).await;
    assert_eq!(silent_web.recv_json().await["type"], "hello");
    silent_web.send_json(json!({"type": "pair"})).await;
    assert_eq!(silent_web.recv_json().await["type"], "qr");

    assert_eq!(
        silent_phone.wait_closed(LONG).await,
        Some(4008),
        "silent phone"
    );
    assert!(silent_phone.pings >= 1, "no ping seen before the close");
    assert_eq!(
        silent_web.wait_closed(LONG).await,
        Some(4008),
        "silent pairing web"
    );

    assert!(!active.is_closed(), "{:?}", active.closed());
    assert!(!active_s.web.is_closed(), "{:?}", active_s.web.closed());
    assert!(list_sessions(&active).await.len() == 1);
    let ack = active_s
        .web
        .request(json!({"type": "send", "body": 1}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_without_pongs_keep_a_socket_alive() {
    let gw = TestGateway::spawn(|c| c.heartbeat_ms = 300).await;
    let acc = account("talker");
    let mut raw = raw_phone(gw.addr, &gw.phone_token(&acc), None).await;
    // Six heartbeats, the gateway's pings being the clock: each answered by
    // a frame, never by a pong. Two intervals without either would close.
    let mut pings = 0;
    while pings < 6 {
        match raw.next_event(LONG).await {
            Some(RawEvent::Ping) => {
                pings += 1;
                raw.send_text(&ClientFrame::ListSessions.to_text(Some(&format!("t{pings}"))))
                    .await;
            }
            Some(RawEvent::Text(t)) => assert!(t.contains(r#""type":"sessions""#), "{t}"),
            other => panic!("after {pings} pings, a socket sending frames got {other:?}"),
        }
    }
    raw.send_text(&ClientFrame::ListSessions.to_text(Some("last")))
        .await;
    loop {
        let m = raw.recv_json().await;
        if m["id"] == "last" {
            assert_eq!(m["type"], "sessions", "{m}");
            break;
        }
    }
}

/// "Fields a frame's type does not use are ignored": each frame below
/// carries fields of other types (and one no type has); each is served as if
/// they were not there. Literal JSON on purpose: this is about the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_a_frame_type_does_not_use_are_ignored() {
    let gw = TestGateway::start().await;
    let acc = account("extra");
    // auth with a session_id and a body
    let phone = Client::open(&gw.ws_url("/ws/phone")).await;
    phone.expect("hello").await;
    let ready = phone
        .request(
            json!({"type": "auth", "token": gw.phone_token(&acc), "session_id": "x", "body": [1]}),
        )
        .await;
    assert_eq!(ready["type"], "ready", "{ready}");
    // the issue's example
    let r = phone
        .request(json!({"type": "list_sessions", "token": "x", "body": 1}))
        .await;
    assert_eq!(r["type"], "sessions", "{r}");
    assert_eq!(r["sessions"], json!([]), "{r}");
    // pair with a ref and a request_id
    let web = gw.web(Some(CHROME_LINUX_UA)).await;
    web.send_json(json!({"type": "pair", "ref": "nope", "request_id": 7, "colour": "blue"}))
        .await;
    let qr = web.expect("qr").await;
    // link with a token and a to
    let lr = phone
        .request(json!({"type": "link", "ref": qr["ref"], "token": 5, "to": null}))
        .await;
    assert_eq!(lr["type"], "link_request", "{lr}");
    // link_confirm with a remember and a body
    let dl = phone
        .request(json!({"type": "link_confirm", "request_id": lr["request_id"], "remember": "no", "body": {}}))
        .await;
    assert_eq!(dl["type"], "device_linked", "{dl}");
    let linked = web.expect("linked").await;
    // send from the web with a to and a device_name
    let ack = web
        .request(json!({"type": "send", "body": "hi", "device_name": 1, "code": "x"}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(phone.expect("message").await["body"], "hi");
    // logout_all with a session_id: still all of them
    let ok = phone
        .request(json!({"type": "logout_all", "session_id": "nope", "ref": 1}))
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(ok["closed"], 1, "{ok}");
    assert_eq!(web.expect_close().await, 4001);
    gw.assert_logged_out(linked["token"].as_str().unwrap())
        .await;
}

/// `--max-pairs-per-ip-per-min`: every `pair` from one client IP counts, a
/// repeated one on the same socket too; beyond the limit `pair` gets
/// `rate_limited` (the socket stays open), counted in `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairs_beyond_the_per_ip_limit_are_rate_limited() {
    if single_process_only("the limit is per node and /metrics is one node's") {
        return;
    }
    let gw = TestGateway::spawn(|c| c.max_pairs_per_ip_per_min = 3).await;
    let (first, _qr) = start_pairing(gw.addr, &PairOpts::new()).await;
    let ok = first.request(json!({"type": "pair"})).await;
    assert_eq!(ok["type"], "ok", "a repeated pair within the limit: {ok}");
    let (_second, _qr) = start_pairing(gw.addr, &PairOpts::new()).await;
    // the 4th pair from this address, on a fresh socket and on a pairing one
    let third = open_web(gw.addr, None).await;
    third
        .request_error(json!({"type": "pair"}), "rate_limited")
        .await;
    first
        .request_error(json!({"type": "pair"}), "rate_limited")
        .await;
    assert!(!third.is_closed() && !first.is_closed());
    let body = gw.http_get("/metrics", &[]).await.text();
    assert_eq!(
        metric_sample(
            &body,
            "pairgate_rate_limited_total",
            &[("what", "pair_per_ip")]
        ),
        Some(2.0)
    );
}

/// Off by default: many `pair`s from one address are all served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairs_per_ip_are_unlimited_by_default() {
    let gw = TestGateway::start().await;
    let (web, _qr) = start_pairing(gw.addr, &PairOpts::new()).await;
    for _ in 0..30 {
        let ok = web.request(json!({"type": "pair"})).await;
        assert_eq!(ok["type"], "ok", "{ok}");
    }
}
