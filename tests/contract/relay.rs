//! "Relay": web -> phone and phone -> web(s) with `ack`, `to`, `delivered`,
//! `phone_offline`, `unknown_session`, order, arbitrary bodies, `too_large`,
//! missing `body`, and `phone_status` events.

use serde_json::{Value, json};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_send_is_relayed_to_the_phone_and_acked() {
    let gw = TestGateway::start().await;
    let acc = account("w2p");
    let phone = gw.phone(&acc).await;
    let s = gw.pair(&phone, &PairOpts::new()).await;
    let body = json!({"text": "hello phone", "n": [1, 2, 3], "nested": {"ok": true, "none": null}});
    let ack = s
        .web
        .request(json!({"type": "send", "id": "s1", "body": body}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["id"], "s1");
    let m = phone.expect("message").await;
    assert_eq!(m["from"], s.session_id.as_str(), "{m}");
    assert_eq!(m["body"], body, "{m}");
    assert_no_id(&m);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_send_without_to_reaches_every_live_web_socket() {
    let gw = TestGateway::start().await;
    let acc = account("p2all");
    let phone = gw.phone(&acc).await;
    let a = gw.pair(&phone, &PairOpts::new()).await;
    let b = gw.pair(&phone, &PairOpts::new()).await;
    let off = gw.pair(&phone, &PairOpts::new()).await;
    off.web.close().await;
    phone
        .expect_field("session_offline", "session_id", &json!(off.session_id))
        .await;
    // a web of another account
    let stranger_phone = gw.phone(&account("stranger")).await;
    let stranger = gw.pair(&stranger_phone, &PairOpts::new()).await;

    let ack = phone
        .request(json!({"type": "send", "id": "b1", "body": {"hi": "all"}}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["id"], "b1");
    assert_eq!(ack["delivered"], 2, "{ack}");
    for s in [&a, &b] {
        let m = s.web.expect("message").await;
        assert_eq!(m["from"], "phone", "{m}");
        assert_eq!(m["body"], json!({"hi": "all"}), "{m}");
        assert_no_id(&m);
    }
    // a resumed socket of the offline session gets the next one
    let off_web = gw.resume_ok(&off.token, &off.session_id).await;
    let ack = phone.send_body(&json!(2), None).await;
    assert_eq!(ack["delivered"], 3, "{ack}");
    assert_eq!(off_web.expect("message").await["body"], 2);
    stranger.web.assert_quiet("message").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_send_to_one_session() {
    let gw = TestGateway::start().await;
    let acc = account("p2one");
    let phone = gw.phone(&acc).await;
    let a = gw.pair(&phone, &PairOpts::new()).await;
    let b = gw.pair(&phone, &PairOpts::new()).await;
    let ack = phone.send_body(&json!("for b"), Some(&b.session_id)).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["delivered"], 1, "{ack}");
    let m = b.web.expect("message").await;
    assert_eq!(m["body"], "for b");
    assert_eq!(m["from"], "phone");
    // a sentinel to everyone: a must see it without seeing "for b" first
    let ack = phone.send_body(&json!("all"), None).await;
    assert_eq!(ack["delivered"], 2, "{ack}");
    let m = a.web.expect("message").await;
    assert_eq!(m["body"], "all", "a got a message addressed to b: {m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_send_to_an_offline_session_delivers_zero() {
    let gw = TestGateway::start().await;
    let acc = account("p2off");
    let phone = gw.phone(&acc).await;
    let s = gw.pair(&phone, &PairOpts::new()).await;
    s.web.close().await;
    phone
        .expect_field("session_offline", "session_id", &json!(s.session_id))
        .await;
    let ack = phone
        .request(json!({"type": "send", "id": "o1", "body": "anyone?", "to": s.session_id}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["id"], "o1");
    assert_eq!(ack["delivered"], 0, "{ack}");
    // without `to` and nobody online
    let ack = phone.send_body(&json!("x"), None).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["delivered"], 0, "{ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_send_to_no_session_of_the_account_is_unknown_session() {
    let gw = TestGateway::start().await;
    let acc = account("p2none");
    let phone = gw.phone(&acc).await;
    let mine = gw.pair(&phone, &PairOpts::new()).await;
    let other_phone = gw.phone(&account("p2none-other")).await;
    let theirs = gw.pair(&other_phone, &PairOpts::new()).await;

    phone
        .request_error(
            json!({"type": "send", "body": 1, "to": "no-such-session"}),
            "unknown_session",
        )
        .await;
    phone
        .request_error(
            json!({"type": "send", "body": 1, "to": theirs.session_id}),
            "unknown_session",
        )
        .await;
    theirs.web.assert_quiet("message").await;
    // an ended session is no session of the account
    let ok = phone.request_frame(&logout(&mine.session_id)).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    phone
        .request_error(
            json!({"type": "send", "body": 1, "to": mine.session_id}),
            "unknown_session",
        )
        .await;
    assert!(!phone.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_send_while_phone_offline_is_phone_offline() {
    let gw = TestGateway::start().await;
    let acc = account("offline");
    let phone = gw.phone(&acc).await;
    let s = gw.pair(&phone, &PairOpts::new()).await;
    phone.close().await;
    let st = s.web.expect("phone_status").await;
    assert_eq!(st["online"], false, "{st}");
    s.web
        .request_error(
            json!({"type": "send", "id": "po", "body": "anyone?"}),
            "phone_offline",
        )
        .await;
    assert!(!s.web.is_closed());

    // back online: relayed again, and nothing queued from before
    let phone = gw.phone(&acc).await;
    let st = s.web.expect("phone_status").await;
    assert_eq!(st["online"], true, "{st}");
    let ack = s.web.send_body(&json!("back"), None).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let m = phone.expect("message").await;
    assert_eq!(m["body"], "back", "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_without_id_is_relayed_without_a_reply() {
    let gw = TestGateway::start().await;
    let acc = account("noid");
    let phone = gw.phone(&acc).await;
    let s = gw.pair(&phone, &PairOpts::new()).await;
    s.web.send_json(json!({"type": "send", "body": "w"})).await;
    assert_eq!(phone.expect("message").await["body"], "w");
    phone.send_json(json!({"type": "send", "body": "p"})).await;
    assert_eq!(s.web.expect("message").await["body"], "p");
    // a request after them: its reply is the only reply
    let ack = s.web.send_body(&json!("w2"), None).await;
    assert_eq!(ack["type"], "ack");
    let ack = phone.send_body(&json!("p2"), None).await;
    assert_eq!(ack["type"], "ack");
    s.web.assert_none("ack");
    phone.assert_none("ack");
    s.web.assert_none("error");
    phone.assert_none("error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_keep_their_order_both_ways() {
    let gw = TestGateway::start().await;
    let acc = account("order");
    let phone = gw.phone(&acc).await;
    let a = gw.pair(&phone, &PairOpts::new()).await;
    let b = gw.pair(&phone, &PairOpts::new()).await;
    let n = 300;

    // web -> phone, two senders interleaved, pipelined
    let ids_a: Vec<String> = (0..n).map(|i| format!("a{i}")).collect();
    let ids_b: Vec<String> = (0..n).map(|i| format!("b{i}")).collect();
    let fa = a.web.send_many(
        ids_a
            .iter()
            .enumerate()
            .map(|(i, id)| json!({"type": "send", "id": id, "body": {"seq": i}})),
    );
    let fb = b.web.send_many(
        ids_b
            .iter()
            .enumerate()
            .map(|(i, id)| json!({"type": "send", "id": id, "body": {"seq": i}})),
    );
    tokio::join!(fa, fb);
    let mut next_a = 0;
    let mut next_b = 0;
    for _ in 0..2 * n {
        let m = phone.expect("message").await;
        let seq = m["body"]["seq"].as_u64().unwrap();
        if m["from"] == a.session_id.as_str() {
            assert_eq!(seq, next_a, "out of order from a");
            next_a += 1;
        } else {
            assert_eq!(m["from"], b.session_id.as_str(), "{m}");
            assert_eq!(seq, next_b, "out of order from b");
            next_b += 1;
        }
    }
    for id in &ids_a {
        assert_eq!(a.web.expect_id(id).await["type"], "ack");
    }
    for id in &ids_b {
        assert_eq!(b.web.expect_id(id).await["type"], "ack");
    }

    // phone -> webs
    let ids: Vec<String> = (0..n).map(|i| format!("p{i}")).collect();
    phone
        .send_many(
            ids.iter()
                .enumerate()
                .map(|(i, id)| json!({"type": "send", "id": id, "body": i})),
        )
        .await;
    for id in &ids {
        let ack = phone.expect_id(id).await;
        assert_eq!(ack["type"], "ack", "{ack}");
        assert_eq!(ack["delivered"], 2, "{ack}");
    }
    for web in [&a.web, &b.web] {
        for i in 0..n {
            let m = web.expect("message").await;
            assert_eq!(m["body"], i, "out of order to {}", web.name);
        }
    }
    for c in [&phone, &a.web, &b.web] {
        c.assert_one_reply_per_id();
    }
}

fn bodies() -> Vec<Value> {
    let mut deep = json!("bottom");
    for i in 0..30 {
        deep = json!({"level": i, "inner": [deep]});
    }
    vec![
        json!({"a": 1}),
        json!({}),
        json!([]),
        json!([1, "two", 3.5, null, true, {"x": []}]),
        json!("plain string"),
        json!(""),
        json!("unicode: \u{e9}\u{4e2d}\u{1f600} \"quotes\" \\ \n\t"),
        json!(0),
        json!(-42),
        json!(12345678901234567890u64),
        json!(1.5),
        json!(true),
        json!(false),
        Value::Null,
        deep,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_json_body_is_relayed_unchanged() {
    let gw = TestGateway::start().await;
    let acc = account("bodies");
    let phone = gw.phone(&acc).await;
    let s = gw.pair(&phone, &PairOpts::new()).await;
    for body in bodies() {
        let ack = s.web.send_body(&json!(body.clone()), None).await;
        assert_eq!(ack["type"], "ack", "web send of {body}: {ack}");
        let m = phone.expect("message").await;
        assert!(m.get("body").is_some(), "message without body: {m}");
        assert_eq!(m["body"], body, "web -> phone");

        let ack = phone.send_body(&json!(body.clone()), None).await;
        assert_eq!(ack["type"], "ack", "phone send of {body}: {ack}");
        assert_eq!(ack["delivered"], 1, "{ack}");
        let m = s.web.expect("message").await;
        assert!(m.get("body").is_some(), "message without body: {m}");
        assert_eq!(m["body"], body, "phone -> web");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_larger_than_max_frame_minus_1024_is_too_large() {
    let gw = TestGateway::spawn(|c| c.max_frame_bytes = 4096).await;
    let acc = account("toolarge");
    let phone = gw.phone(&acc).await;
    let s = gw.pair(&phone, &PairOpts::new()).await;
    // serialized body of exactly 3072 bytes (4096 - 1024): accepted
    let fits = "a".repeat(3070);
    let over = "a".repeat(3071);

    let ack = s.web.send_body(&json!(fits.clone()), None).await;
    assert_eq!(ack["type"], "ack", "body at the limit: {ack}");
    assert_eq!(phone.expect("message").await["body"], fits.as_str());
    let ack = phone.send_body(&json!(fits.clone()), None).await;
    assert_eq!(ack["type"], "ack", "body at the limit: {ack}");
    assert_eq!(s.web.expect("message").await["body"], fits.as_str());

    s.web
        .request_error(
            json!({"type": "send", "id": "big-w", "body": over.clone()}),
            "too_large",
        )
        .await;
    phone
        .request_error(
            json!({"type": "send", "id": "big-p", "body": over.clone()}),
            "too_large",
        )
        .await;
    let big_obj = json!({"k": "b".repeat(3500)});
    s.web
        .request_error(json!({"type": "send", "body": big_obj}), "too_large")
        .await;
    // nothing was relayed, and both sockets stay usable
    let ack = s.web.send_body(&json!("small"), None).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(phone.expect("message").await["body"], "small");
    let ack = phone.send_body(&json!("small"), None).await;
    assert_eq!(ack["delivered"], 1, "{ack}");
    assert_eq!(s.web.expect("message").await["body"], "small");
    assert!(!s.web.is_closed() && !phone.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_without_body_is_bad_frame() {
    let gw = TestGateway::start().await;
    let acc = account("nobody");
    let phone = gw.phone(&acc).await;
    let s = gw.pair(&phone, &PairOpts::new()).await;
    s.web
        .request_error(json!({"type": "send", "id": "nb-w"}), "bad_frame")
        .await;
    phone
        .request_error(json!({"type": "send", "id": "nb-p"}), "bad_frame")
        .await;
    phone
        .request_error(
            json!({"type": "send", "id": "nb-p2", "to": s.session_id}),
            "bad_frame",
        )
        .await;
    // nothing relayed
    let ack = s.web.send_body(&json!("after"), None).await;
    assert_eq!(ack["type"], "ack");
    assert_eq!(phone.expect("message").await["body"], "after");
    let ack = phone.send_body(&json!("after"), None).await;
    assert_eq!(ack["type"], "ack");
    assert_eq!(s.web.expect("message").await["body"], "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_status_follows_the_phone_going_offline_and_online() {
    let gw = TestGateway::start().await;
    let acc = account("status");
    let phone = gw.phone(&acc).await;
    let a = gw.pair(&phone, &PairOpts::new()).await;
    let b = gw.pair(&phone, &PairOpts::new()).await;

    phone.close().await;
    for s in [&a, &b] {
        let st = s.web.expect("phone_status").await;
        assert_eq!(st["online"], false, "{st}");
        assert_no_id(&st);
    }
    let phone = gw.phone(&acc).await;
    for s in [&a, &b] {
        let st = s.web.expect("phone_status").await;
        assert_eq!(st["online"], true, "{st}");
    }
    // an abrupt end of the phone's connection is a change too
    phone.abort().await;
    for s in [&a, &b] {
        let st = s.web.expect("phone_status").await;
        assert_eq!(st["online"], false, "{st}");
    }
    let phone = gw.phone(&acc).await;
    for s in [&a, &b] {
        assert_eq!(s.web.expect("phone_status").await["online"], true);
    }
    // exactly one event per change
    let ack = phone.send_body(&json!("sentinel"), None).await;
    assert_eq!(ack["delivered"], 2);
    for s in [&a, &b] {
        s.web.expect("message").await;
        s.web.assert_none("phone_status");
        // linked (1) + 4 changes
        assert_eq!(
            s.web.all_of("phone_status").len(),
            5,
            "{:?}",
            s.web.all_frames()
        );
    }
}
