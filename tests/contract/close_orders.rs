//! Close orders (a logout, a replacement, an overflow): once a socket is
//! ordered closed, nothing it sends has any effect and nothing more but its
//! close goes out; and a close that interrupts a long (fragmented) message
//! never puts a new data frame inside it (RFC 6455 section 5.4), so strict
//! clients see the farewell and the close code.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

/// A phone socket replaced (4009) while it is busy with a `logout` has a
/// `send` waiting behind it: the send must not be relayed. The new phone's
/// marker, sent after its `ready`, is queued to the web only after the
/// replacement, so any message of the old phone that follows the marker was
/// relayed by a socket already ordered closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_waiting_behind_a_replaced_phones_request_have_no_effect() {
    let gw = TestGateway::start().await;
    for trial in 0..10 {
        let acc = account("busyphone");
        let old = gw.phone(&acc).await.named(format!("old phone #{trial}"));
        let first = gw.pair(&old, &PairOpts::new()).await;
        let second = gw.pair(&old, &PairOpts::new()).await;
        // The new phone is connected, ready to authenticate.
        let new = Client::open(&gw.ws_url("/ws/phone")).await;
        new.expect("hello").await;

        // The old phone's task waits on the store for the logout while the
        // send waits in its socket; the new phone replaces it meanwhile.
        old.send_many([
            json!({"type": "logout", "id": "l1", "session_id": first.session_id}),
            json!({"type": "send", "id": "late", "body": "late"}),
        ])
        .await;
        new.send_json(json!({"type": "auth", "token": gw.phone_token(&acc)}))
            .await;
        new.expect("ready").await;
        let ack = new.send_body(&json!("marker"), None).await;
        assert_eq!(ack["type"], "ack", "{ack}");
        assert_eq!(old.expect_close().await, 4009);
        // Everything the old phone did is done once it is closed.
        new.send_body(&json!("end"), None).await;
        let mut after_marker = false;
        loop {
            let m = second.web.expect("message").await;
            match m["body"].as_str() {
                Some("marker") => after_marker = true,
                Some("end") => break,
                Some("late") => assert!(
                    !after_marker,
                    "trial {trial}: the replaced phone's send was relayed after its replacement"
                ),
                _ => panic!("unexpected {m}"),
            }
        }
    }
}

/// A web session that reads slowly is logged out while long messages (sent
/// as fragments) are on their way to it: whatever it reads is well-formed
/// (no frame starts inside a message), then `logged_out` and 4001, or the end
/// of the connection if it could not take them at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_that_interrupts_a_long_message_keeps_the_stream_well_formed() {
    let gw = TestGateway::spawn(|c| {
        c.max_queue_bytes = 16 << 20;
        c.max_frames_per_sec = 100_000;
    })
    .await;
    let pad = "y".repeat(6_000);
    let mut farewells = 0;
    for trial in 0..40 {
        // Half the readers are paced (a message per 200 µs), half read flat out.
        let mut pace = (trial % 2 == 0).then(|| {
            let mut i = tokio::time::interval(Duration::from_micros(200));
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        let acc = account("midmessage");
        let phone = gw.phone(&acc).await;
        let s = gw.pair(&phone, &PairOpts::new()).await;
        s.web.close().await;
        let mut raw = raw_resume(gw.addr, &s.token, Some(2048)).await;
        // Enough long messages to fill the kernel's buffers.
        let frames: Vec<_> = (0..1_000)
            .map(|seq| json!({"type": "send", "body": {"seq": seq, "pad": pad}}))
            .collect();
        phone.send_many(frames).await;
        // A slow, steady reader: the gateway is always part-way through a
        // message when the logout lands.
        let reader = tokio::spawn(async move {
            let mut seqs = Vec::new();
            loop {
                match raw.next_event(LONG).await {
                    Some(RawEvent::Text(t)) => {
                        let m: serde_json::Value = serde_json::from_str(&t).expect("JSON");
                        match m["type"].as_str() {
                            Some("message") => seqs.push(m["body"]["seq"].as_u64().unwrap()),
                            Some("logged_out") => {
                                assert_eq!(m["reason"], "phone_logout", "{m}");
                                return (seqs, Some(m));
                            }
                            _ => panic!("unexpected {m}"),
                        }
                        if let Some(pace) = pace.as_mut() {
                            pace.tick().await;
                        }
                    }
                    Some(RawEvent::Ping) | Some(RawEvent::Pong) => {}
                    Some(RawEvent::Eof) => return (seqs, None),
                    Some(RawEvent::Close(code)) => {
                        panic!("trial {trial}: close {code:?} without logged_out")
                    }
                    Some(RawEvent::Violation(v)) => {
                        panic!("trial {trial}: protocol violation: {v}")
                    }
                    Some(RawEvent::Binary(_)) => panic!("binary frame"),
                    None => panic!("trial {trial}: stalled"),
                }
            }
        });
        let ok = phone.request_frame(&logout(&s.session_id)).await;
        assert_eq!(ok["closed"], 1, "{ok}");
        let (seqs, farewell) = tokio::time::timeout(LONG, reader)
            .await
            .expect("reader ends")
            .expect("reader");
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "messages out of order"
        );
        if farewell.is_some() {
            farewells += 1;
        }
        gw.assert_logged_out(&s.token).await;
    }
    eprintln!("{farewells} of 40 slow readers took their farewell at once");
}
