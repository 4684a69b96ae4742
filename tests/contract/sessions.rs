//! "Session control (phone)" and "Keeping sessions": `list_sessions`,
//! `logout`, `logout_all` (teardown before `ok`), session events, web self
//! logout, the `remember:false` grace and idle expiry.

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_sessions_oldest_first_with_every_field() {
    let gw = TestGateway::start().await;
    let acc = account("list");
    let phone = gw.phone(&acc).await;
    let r = phone
        .request(json!({"type": "list_sessions", "id": "empty"}))
        .await;
    assert_eq!(r["type"], "sessions", "{r}");
    assert_eq!(r["id"], "empty");
    assert_eq!(r["sessions"], json!([]), "{r}");

    let s1 = gw
        .pair(&phone, &PairOpts::new().device_name("one").remember(true))
        .await;
    // distinct created_at: the next link comes in a later millisecond
    until_next_millisecond(created_at(&s1)).await;
    let s2 = gw
        .pair(
            &phone,
            &PairOpts::new()
                .device_name("two")
                .remember(false)
                .user_agent(Some(FIREFOX_WINDOWS_UA)),
        )
        .await;
    until_next_millisecond(created_at(&s2)).await;
    let s3 = gw.pair(&phone, &PairOpts::new()).await;
    s2.web.close().await;
    phone
        .expect_field("session_offline", "session_id", &json!(s2.session_id))
        .await;

    let r = phone
        .request(json!({"type": "list_sessions", "id": "ls"}))
        .await;
    assert_eq!(r["type"], "sessions", "{r}");
    assert_eq!(r["id"], "ls");
    let list = r["sessions"].as_array().unwrap().clone();
    assert_eq!(
        session_ids(&list),
        vec![
            s1.session_id.clone(),
            s2.session_id.clone(),
            s3.session_id.clone()
        ]
    );
    for s in &list {
        assert_session_shape(s);
        assert_eq!(s["ip"], "127.0.0.1", "{s}");
    }
    let names: Vec<_> = list.iter().map(|s| s["device_name"].clone()).collect();
    assert_eq!(
        names,
        vec![json!("one"), json!("two"), json!("Chrome on Linux")]
    );
    let uas: Vec<_> = list.iter().map(|s| s["user_agent"].clone()).collect();
    assert_eq!(
        uas,
        vec![
            json!(CHROME_LINUX_UA),
            json!(FIREFOX_WINDOWS_UA),
            json!(CHROME_LINUX_UA)
        ]
    );
    let online: Vec<_> = list.iter().map(|s| s["online"].clone()).collect();
    assert_eq!(online, vec![json!(true), json!(false), json!(true)]);
    let remember: Vec<_> = list.iter().map(|s| s["remember"].clone()).collect();
    assert_eq!(remember, vec![json!(true), json!(false), json!(true)]);
    let created: Vec<_> = list
        .iter()
        .map(|s| parse_time(s["created_at"].as_str().unwrap()))
        .collect();
    assert!(
        created.windows(2).all(|w| w[0] < w[1]),
        "not oldest first: {created:?}"
    );
    // times are now-ish
    let now = time::OffsetDateTime::now_utc();
    for c in &created {
        assert!(
            (now - *c).whole_seconds().abs() < 60,
            "created_at far from now: {c}"
        );
    }
    // device_linked's SESSION is the same record
    assert_eq!(
        s1.device_linked["session"]["created_at"], list[0]["created_at"],
        "{}",
        s1.device_linked
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_mapped_peer_address_is_shown_as_ipv4() {
    let Ok(listener) = tokio::net::TcpListener::bind("[::]:0").await else {
        eprintln!("no IPv6 here: skipped");
        return;
    };
    let gw = TestGateway::spawn_on(listener, |_| {}).await;
    let acc = account("mapped");
    let phone = gw.phone(&acc).await;
    let s = gw.pair(&phone, &PairOpts::new()).await;
    assert_eq!(
        s.link_request["device"]["ip"], "127.0.0.1",
        "{}",
        s.link_request
    );
    assert_eq!(s.device_linked["session"]["ip"], "127.0.0.1");
    let list = list_sessions(&phone).await;
    assert_eq!(list[0]["ip"], "127.0.0.1", "{list:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_tears_the_web_down_before_ok_and_ends_the_token() {
    let gw = TestGateway::start().await;
    let acc = account("logout1");
    let phone = gw.phone(&acc).await;
    let a = gw.pair(&phone, &PairOpts::new()).await;
    let b = gw.pair(&phone, &PairOpts::new()).await;
    // a's web on a raw socket, which shows the order of what it reads
    let mut web_a = raw_session(gw.addr, &phone, &a).await;

    let logout = ClientFrame::Logout {
        session_id: Some(a.session_id.clone()),
    };
    phone.send_frame(&logout, Some("lo1")).await;
    let ok = phone.expect_id("lo1").await;
    ping_after_ok(&mut [&mut web_a]).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(ok["closed"], 1, "{ok}");
    assert_torn_down_before(&mut web_a, "phone_logout").await;

    gw.assert_logged_out(&a.token).await;
    // the other session is untouched
    assert!(!b.web.is_closed());
    let ack = phone
        .send_body(&json!("still here"), Some(&b.session_id))
        .await;
    assert_eq!(ack["delivered"], 1, "{ack}");
    b.web.expect("message").await;
    b.web.assert_none("logged_out");
    assert_eq!(
        session_ids(&list_sessions(&phone).await),
        vec![b.session_id.clone()]
    );
    // the phone hears nothing about its own logout
    phone.assert_quiet("session_removed").await;
    phone.assert_none("session_offline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_of_an_offline_session_and_unknown_sessions() {
    let gw = TestGateway::start().await;
    let acc = account("logout2");
    let phone = gw.phone(&acc).await;
    let s = gw.pair(&phone, &PairOpts::new()).await;
    s.web.close().await;
    phone
        .expect_field("session_offline", "session_id", &json!(s.session_id))
        .await;
    let ok = phone.request_frame(&logout(&s.session_id)).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(ok["closed"], 1, "{ok}");
    gw.assert_logged_out(&s.token).await;

    // twice: no such session any more
    phone
        .request_frame_error(&logout(&s.session_id), "unknown_session")
        .await;
    phone
        .request_error(
            json!({"type": "logout", "session_id": "nope"}),
            "unknown_session",
        )
        .await;
    // another account's session
    let other_phone = gw.phone(&account("logout2-other")).await;
    let theirs = gw.pair(&other_phone, &PairOpts::new()).await;
    phone
        .request_frame_error(&logout(&theirs.session_id), "unknown_session")
        .await;
    theirs.web.assert_quiet("logged_out").await;
    assert!(!theirs.web.is_closed());
    let _ = gw.resume_ok(&theirs.token, &theirs.session_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_all_closes_every_web_before_ok() {
    let gw = TestGateway::start().await;
    let acc = account("logoutall");
    let phone = gw.phone(&acc).await;
    let mut live = Vec::new();
    for _ in 0..3 {
        live.push(gw.pair(&phone, &PairOpts::new()).await);
    }
    let off = gw.pair(&phone, &PairOpts::new()).await;
    for s in live.iter().chain([&off]) {
        s.web.close().await;
        phone
            .expect_field("session_offline", "session_id", &json!(s.session_id))
            .await;
    }
    // the live ones on raw sockets, which show the order of what they read
    let mut webs = Vec::new();
    for s in &live {
        webs.push(raw_resume(gw.addr, &s.token, None).await);
        phone
            .expect_field("session_online", "session_id", &json!(s.session_id))
            .await;
    }
    // another account is untouched
    let other_phone = gw.phone(&account("logoutall-other")).await;
    let theirs = gw.pair(&other_phone, &PairOpts::new()).await;

    phone.send_frame(&ClientFrame::LogoutAll, Some("la")).await;
    let ok = phone.expect_id("la").await;
    ping_after_ok(&mut webs.iter_mut().collect::<Vec<_>>()).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(ok["closed"], 4, "{ok}");
    for web in &mut webs {
        assert_torn_down_before(web, "phone_logout_all").await;
    }
    for s in live.iter().chain([&off]) {
        gw.assert_logged_out(&s.token).await;
    }
    assert!(list_sessions(&phone).await.is_empty());
    phone.assert_quiet("session_removed").await;
    phone.assert_none("session_offline");
    assert!(!theirs.web.is_closed());
    assert_eq!(list_sessions(&other_phone).await.len(), 1);

    // nothing left
    let ok = phone.request_frame(&ClientFrame::LogoutAll).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(ok["closed"], 0, "{ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_all_does_not_wait_for_webs_that_do_not_read() {
    let gw = TestGateway::start().await;
    let acc = account("deaf");
    let phone = gw.phone(&acc).await;
    let a = gw.pair(&phone, &PairOpts::new()).await;
    let b = gw.pair(&phone, &PairOpts::new()).await;
    a.web.close().await;
    b.web.close().await;
    // sockets that read nothing until the ok and never answer the close
    let mut raw_a = raw_resume(gw.addr, &a.token, None).await;
    let mut raw_b = raw_resume(gw.addr, &b.token, None).await;
    phone
        .expect_field("session_online", "session_id", &json!(b.session_id))
        .await;

    let ok = phone.request_frame(&ClientFrame::LogoutAll).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(ok["closed"], 2, "{ok}");
    ping_after_ok(&mut [&mut raw_a, &mut raw_b]).await;
    // logged_out and the close were written before the ok, without waiting
    // for the (never coming) close replies
    for raw in [&mut raw_a, &mut raw_b] {
        assert_torn_down_before(raw, "phone_logout_all").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_online_and_offline_events_on_change_only() {
    let gw = TestGateway::start().await;
    let acc = account("events");
    let phone = gw.phone(&acc).await;
    let s = gw.pair(&phone, &PairOpts::new()).await;

    s.web.close().await;
    let off = phone.expect("session_offline").await;
    assert_eq!(off["session_id"], s.session_id.as_str(), "{off}");
    assert_no_id(&off);

    let web = gw.resume_ok(&s.token, &s.session_id).await;
    let on = phone.expect("session_online").await;
    assert_eq!(on["session_id"], s.session_id.as_str(), "{on}");
    assert_no_id(&on);

    // replacement: no change
    let web2 = gw.resume_ok(&s.token, &s.session_id).await;
    assert_eq!(web.expect_close().await, 4009);

    // an abrupt end is a change
    web2.abort().await;
    let off = phone.expect("session_offline").await;
    assert_eq!(off["session_id"], s.session_id.as_str(), "{off}");

    let web3 = gw.resume_ok(&s.token, &s.session_id).await;
    phone.expect("session_online").await;
    // sentinel, then count
    let ack = web3.send_body(&json!("sentinel"), None).await;
    assert_eq!(ack["type"], "ack");
    phone.expect("message").await;
    phone.assert_quiet("session_online").await;
    phone.assert_none("session_offline");
    assert_eq!(
        phone.all_of("session_online").len(),
        2,
        "link sends none; two resumes"
    );
    assert_eq!(phone.all_of("session_offline").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_events_are_not_replayed_to_a_reconnecting_phone() {
    let gw = TestGateway::start().await;
    let acc = account("events2");
    let phone = gw.phone(&acc).await;
    let s = gw.pair(&phone, &PairOpts::new()).await;
    phone.close().await;
    s.web.expect("phone_status").await;
    let phone = gw.phone(&acc).await;
    let list = list_sessions(&phone).await;
    assert_eq!(list[0]["online"], true, "{list:?}");
    phone.assert_none("session_online");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_self_logout() {
    let gw = TestGateway::start().await;
    let acc = account("selfout");
    let phone = gw.phone(&acc).await;
    let s = gw.pair(&phone, &PairOpts::new()).await;
    let keep = gw.pair(&phone, &PairOpts::new()).await;

    let lo = s.web.request(json!({"type": "logout", "id": "me"})).await;
    assert_eq!(lo["type"], "logged_out", "{lo}");
    assert_eq!(lo["id"], "me");
    assert_eq!(lo["reason"], "self_logout", "{lo}");
    assert_eq!(s.web.expect_close().await, 4001);

    let removed = phone.expect("session_removed").await;
    assert_eq!(removed["session_id"], s.session_id.as_str(), "{removed}");
    assert_eq!(removed["reason"], "self_logout", "{removed}");
    assert_no_id(&removed);
    gw.assert_logged_out(&s.token).await;
    assert_eq!(
        session_ids(&list_sessions(&phone).await),
        vec![keep.session_id.clone()]
    );
    // without an id
    keep.web.send_json(json!({"type": "logout"})).await;
    let lo = keep.web.expect("logged_out").await;
    assert_eq!(lo["reason"], "self_logout", "{lo}");
    assert_no_id(&lo);
    assert_eq!(keep.web.expect_close().await, 4001);
    let removed = phone.expect("session_removed").await;
    assert_eq!(removed["session_id"], keep.session_id.as_str());
    assert!(list_sessions(&phone).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remember_false_session_ends_after_the_grace_without_a_socket() {
    let gw = TestGateway::spawn(|c| c.ephemeral_grace_ms = 300).await;
    let acc = account("ephemeral");
    let phone = gw.phone(&acc).await;
    let eph = gw.pair(&phone, &PairOpts::new().remember(false)).await;
    let kept = gw.pair(&phone, &PairOpts::new().remember(true)).await;
    assert_eq!(eph.linked["remember"], false);
    eph.web.close().await;
    kept.web.close().await;

    expect_expired(&phone, &eph.session_id).await;
    gw.assert_logged_out(&eph.token).await;
    // remember:true is not subject to the grace
    assert_eq!(
        session_ids(&list_sessions(&phone).await),
        vec![kept.session_id.clone()]
    );
    let _web = gw.resume_ok(&kept.token, &kept.session_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remember_false_session_survives_when_resumed_in_time() {
    let gw = TestGateway::spawn(|c| c.ephemeral_grace_ms = 800).await;
    let acc = account("ephemeral2");
    let phone = gw.phone(&acc).await;
    let eph = gw.pair(&phone, &PairOpts::new().remember(false)).await;
    eph.web.close().await;
    phone
        .expect_field("session_offline", "session_id", &json!(eph.session_id))
        .await;
    let web = gw.resume_ok(&eph.token, &eph.session_id).await;
    // Past the grace, with a live socket. The clock to read is a witness: a
    // session of the same kind that goes offline after eph's close; when its
    // grace ends, eph's (started earlier) would have ended too, and its
    // removal would have come first.
    let expired_witness = || async {
        let w = gw.pair(&phone, &PairOpts::new().remember(false)).await;
        w.web.close().await;
        expect_expired(&phone, &w.session_id).await;
    };
    expired_witness().await;
    assert!(!web.is_closed(), "{:?}", web.closed());
    assert_eq!(
        session_ids(&list_sessions(&phone).await),
        vec![eph.session_id.clone()]
    );

    // a replacement (4009) does not start the grace either
    let web2 = gw.resume_ok(&eph.token, &eph.session_id).await;
    assert_eq!(web.expect_close().await, 4009);
    expired_witness().await;
    assert_eq!(
        session_ids(&list_sessions(&phone).await),
        vec![eph.session_id.clone()]
    );
    let ack = web2.send_body(&json!("alive"), None).await;
    assert_eq!(ack["type"], "ack", "{ack}");

    // the grace counts from the last close
    web2.close().await;
    expect_expired(&phone, &eph.session_id).await;
    gw.assert_logged_out(&eph.token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_expire_but_live_ones_never_do() {
    // 0.00001 days = 864 ms
    let gw = TestGateway::spawn(|c| c.session_idle_days = 0.00001).await;
    let acc = account("idle");
    let phone = gw.phone(&acc).await;
    let idle = gw.pair(&phone, &PairOpts::new()).await;
    let live = gw.pair(&phone, &PairOpts::new()).await;
    idle.web.close().await;

    expect_expired(&phone, &idle.session_id).await;
    gw.assert_logged_out(&idle.token).await;

    // Keep the live one for more than two idle periods, as measured by
    // witnesses: sessions that go offline one after the other and idle out.
    // A sweep that removed the live one would remove it with a witness, in
    // the same pass, before the witness's removal is told.
    for _ in 0..2 {
        let w = gw.pair(&phone, &PairOpts::new()).await;
        w.web.close().await;
        expect_expired(&phone, &w.session_id).await;
    }
    assert!(!live.web.is_closed(), "{:?}", live.web.closed());
    assert_eq!(
        session_ids(&list_sessions(&phone).await),
        vec![live.session_id.clone()]
    );
    let ack = live.web.send_body(&json!(1), None).await;
    assert_eq!(ack["type"], "ack", "{ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_active_at_is_the_last_time_the_session_had_a_socket() {
    let gw = TestGateway::start().await;
    let acc = account("lastactive");
    let phone = gw.phone(&acc).await;
    let s = gw.pair(&phone, &PairOpts::new()).await;
    let last_active =
        |list: &[serde_json::Value]| parse_time(list[0]["last_active_at"].as_str().unwrap());
    // Millisecond stamps: compare with the clock read around the event.
    let ms = |t: time::OffsetDateTime| t.replace_millisecond(t.millisecond()).unwrap();
    let before_close = ms(time::OffsetDateTime::now_utc());
    s.web.close().await;
    phone
        .expect_field("session_offline", "session_id", &json!(s.session_id))
        .await;
    let after_offline = time::OffsetDateTime::now_utc();
    let at_close = last_active(&list_sessions(&phone).await);
    assert!(
        before_close <= at_close && at_close <= after_offline,
        "last_active_at {at_close} is not the close ({before_close} .. {after_offline})"
    );
    // not touched while offline: listed again in a later millisecond, the same
    until_next_millisecond(time::OffsetDateTime::now_utc()).await;
    let later = last_active(&list_sessions(&phone).await);
    assert_eq!(
        later, at_close,
        "last_active_at moved while the session had no socket"
    );
    // set again by a resume
    let resumed_at = ms(time::OffsetDateTime::now_utc());
    let _web = gw.resume_ok(&s.token, &s.session_id).await;
    phone.expect("session_online").await;
    let list = list_sessions(&phone).await;
    let last = last_active(&list);
    assert!(
        last >= resumed_at,
        "last_active_at {last} not updated by a resume at {resumed_at}"
    );
    assert_eq!(list[0]["online"], true);
}

/// `logout_all` from a second phone socket races a `link_confirm` whose link
/// is being written: whichever way it falls, once `logout_all` is answered
/// the account has no session, and the web side is either logged out (it
/// was linked first) or back at a fresh QR (the link or its request died
/// with the `logout_all`). Never a session that survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_all_ends_a_link_being_written() {
    let gw = TestGateway::start().await;
    for trial in 0..30 {
        let acc = account("linkrace");
        let a = gw.phone(&acc).await.named(format!("phone A #{trial}"));
        let (web, qr) = gw.pairing(&PairOpts::new()).await;
        let lr = a.request_frame(&link_ref(&qr)).await;
        assert_eq!(lr["type"], "link_request", "{lr}");
        web.expect("scanned").await;
        let b = Client::open(&gw.ws_url("/ws/phone")).await;
        b.expect("hello").await;

        let confirm = json!({"type": "link_confirm", "id": "c", "request_id": lr["request_id"]});
        let auth_and_logout_all = [
            json!({"type": "auth", "token": gw.phone_token(&acc)}),
            json!({"type": "logout_all", "id": "all"}),
        ];
        tokio::join!(a.send_json(confirm), b.send_many(auth_and_logout_all));
        let ok = b.expect_id("all").await;
        assert_eq!(ok["type"], "ok", "{ok}");
        assert!(
            list_sessions(&b).await.is_empty(),
            "trial {trial}: a session survived logout_all ({ok})"
        );
        // The web side: linked then logged out, or a fresh QR; or, when the
        // end reaches the web's node before its socket took its `linked`
        // (cluster mode widens that window), logged out at once.
        let outcome = web
            .expect_where("linked, pair_rejected or logged_out", T, |m| {
                m["type"] == "linked" || m["type"] == "pair_rejected" || m["type"] == "logged_out"
            })
            .await;
        if outcome.msg["type"] == "logged_out" {
            assert_eq!(outcome.msg["reason"], "phone_logout_all", "{}", outcome.msg);
            assert_eq!(web.expect_close().await, 4001);
            assert_eq!(ok["closed"], 1, "{ok}");
        } else if outcome.msg["type"] == "linked" {
            let lo = web.expect("logged_out").await;
            assert_eq!(lo["reason"], "phone_logout_all", "{lo}");
            assert_eq!(web.expect_close().await, 4001);
            assert_eq!(ok["closed"], 1, "{ok}");
            gw.assert_logged_out(outcome.msg["token"].as_str().unwrap())
                .await;
        } else {
            web.expect_after(&outcome, "qr").await;
            assert_eq!(ok["closed"], 0, "{ok}");
        }
    }
}

/// `logout_all` with a web socket whose buffers are full (it stopped reading
/// while messages kept coming): the gateway cannot hand it `logged_out` and
/// its close frame, so it drops the socket at once and answers `ok` without
/// waiting; the socket then reads what was already in its buffers and the
/// end of the connection, never a close frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_all_drops_a_web_whose_buffers_are_full() {
    let (gw, phone, s, mut raw) = web_on_a_small_buffer("fullbuf").await;

    // 4 MB for a socket that does not read: the kernel's buffers fill, the
    // rest waits in its (large) queue.
    let pad = "f".repeat(16_000);
    for chunk in 0..25 {
        let frames: Vec<_> = (0..10)
            .map(|i| json!({"type": "send", "id": format!("f{chunk}-{i}"), "body": pad}))
            .collect();
        phone.send_many(frames).await;
        for i in 0..10 {
            let ack = phone.expect_id(&format!("f{chunk}-{i}")).await;
            assert_eq!(ack["delivered"], 1, "{ack}");
        }
    }

    let ok = phone.request_frame(&ClientFrame::LogoutAll).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(ok["closed"], 1, "{ok}");
    let mut messages = 0;
    loop {
        match raw.next_event(LONG).await {
            Some(RawEvent::Text(t)) => {
                assert!(
                    t.starts_with(r#"{"type":"message""#),
                    "{}",
                    &t[..t.len().min(80)]
                );
                messages += 1;
            }
            Some(RawEvent::Ping) | Some(RawEvent::Pong) => {}
            Some(RawEvent::Eof) => break,
            other => panic!("after {messages} messages: {other:?} from a socket that was dropped"),
        }
    }
    assert!(
        messages < 250,
        "every message got through: the buffers were never full"
    );
    gw.assert_logged_out(&s.token).await;
}
