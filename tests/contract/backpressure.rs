//! Slow readers: what the gateway holds for a socket that stops reading is
//! bounded by `--max-queue-bytes` (plus one frame and what the kernel's socket
//! buffers hold); past it the socket is closed 4030 and senders are told
//! (`delivered` excludes it; a web's `send` gets `phone_offline`). Every
//! delivery that was counted reaches the socket, in order, before its 4030.

use std::collections::VecDeque;

use serde_json::json;
use tokio::sync::oneshot;

use crate::support::*;

/// The most the kernel may hold for one loopback connection whose reader
/// stopped: the sender's send buffer at its autotuning limit plus a small
/// receive buffer and some segments in flight.
fn kernel_allowance() -> usize {
    let wmem_max = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse::<usize>().ok())
        .unwrap_or(4 << 20);
    wmem_max + 256 * 1024
}

/// A phone floods an account with ~20 KB messages, 8 in flight, while one of
/// its two web sockets has stopped reading (the phone keeps within two
/// messages of the reading socket, so only the slow one can overflow). The bytes accepted for the slow
/// socket stay within the queue bound plus the kernel's buffers; it is closed
/// 4030 and excluded from `delivered` from then on; the reading socket gets
/// every acknowledged message in order; and the slow socket, once it reads
/// again, gets exactly the messages counted for it, in order, then its 4030.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_web_that_stops_reading_stays_bounded_and_gets_what_was_counted() {
    let gw = TestGateway::spawn(|c| {
        c.max_queue_bytes = FLOOD_MAX_QUEUE as u64;
        c.max_frames_per_sec = 100_000;
    })
    .await;
    let acc = account("flood");
    let phone = gw.phone(&acc).await;
    let fast = gw.pair(&phone, &PairOpts::new()).await;
    let slow = gw.pair(&phone, &PairOpts::new()).await;
    slow.web.close().await;
    let raw = raw_resume(gw.addr, &slow.token, Some(4096)).await;
    flood_while_one_web_stops_reading(&phone, &fast, raw).await;
}

/// The `--max-queue-bytes` of the flood tests.
pub const FLOOD_MAX_QUEUE: usize = 65_536;

/// The phone floods (see the test above) while `raw`, a web socket of the
/// account opened with a small receive buffer, does not read and `fast`
/// does; checks the bounds, the 4030, and that what was counted for the slow
/// socket is exactly what it gets. The gateway runs with `--max-queue-bytes`
/// [`FLOOD_MAX_QUEUE`].
pub async fn flood_while_one_web_stops_reading(phone: &Client, fast: &Session, mut raw: RawWs) {
    const MAX_QUEUE: usize = FLOOD_MAX_QUEUE;
    const IN_FLIGHT: usize = 8;
    const FAST_LAG: u64 = 2;
    let pad = "z".repeat(20_000);
    let frame_bytes = pad.len() + 100;
    let (excluded_tx, excluded_rx) = oneshot::channel::<()>();
    // The slow socket starts reading again only once it was excluded.
    let slow_reader = tokio::spawn(async move {
        let _ = excluded_rx.await;
        let mut seqs = Vec::new();
        loop {
            match raw.next_event(LONG).await {
                Some(RawEvent::Text(t)) => {
                    let m: serde_json::Value = serde_json::from_str(&t).expect("JSON");
                    assert_eq!(m["type"], "message", "{}", &t[..t.len().min(200)]);
                    seqs.push(m["body"]["seq"].as_u64().expect("seq"));
                }
                Some(RawEvent::Ping) | Some(RawEvent::Pong) => {}
                Some(RawEvent::Close(code)) => return (seqs, code),
                other => panic!("slow socket: {other:?} before its close frame"),
            }
        }
    });

    let mut excluded_tx = Some(excluded_tx);
    let mut in_flight = VecDeque::new();
    let mut counted_for_slow = Vec::new();
    let mut acked = 0u64;
    let mut after_exclusion = 0;
    let mut next_seq = 0u64;
    // Messages the reading socket has received, in order.
    let mut fast_seen = 0u64;
    while after_exclusion < 2 * IN_FLIGHT {
        while in_flight.len() < IN_FLIGHT && next_seq < 3_000 && next_seq < fast_seen + FAST_LAG {
            let id = format!("m{next_seq}");
            phone
                .send_json(json!({"type": "send", "id": id, "body": {"seq": next_seq, "pad": pad}}))
                .await;
            in_flight.push_back((id, next_seq));
            next_seq += 1;
        }
        let Some((id, seq)) = in_flight.pop_front() else {
            panic!("3,000 messages and the socket that does not read was never excluded");
        };
        let ack = phone.expect_id(&id).await;
        while fast_seen + FAST_LAG <= next_seq && fast_seen < next_seq {
            let m = fast.web.expect("message").await;
            assert_eq!(m["body"]["seq"], fast_seen, "the reading socket's order");
            fast_seen += 1;
        }
        assert_eq!(ack["type"], "ack", "{ack}");
        acked += 1;
        match ack["delivered"].as_u64() {
            Some(2) => {
                assert!(
                    excluded_tx.is_some(),
                    "delivered 2 after the slow socket was excluded: seq {seq}"
                );
                counted_for_slow.push(seq);
            }
            Some(1) => {
                if let Some(tx) = excluded_tx.take() {
                    let _ = tx.send(());
                }
                after_exclusion += 1;
            }
            _ => panic!("unexpected ack {ack}"),
        }
    }
    let accepted = counted_for_slow.len() * frame_bytes;
    assert!(
        accepted <= MAX_QUEUE + 2 * frame_bytes + kernel_allowance(),
        "{} messages ({accepted} bytes) counted as delivered to a socket that does not read",
        counted_for_slow.len()
    );

    // The reading session got every acknowledged message, in order.
    for seq in fast_seen..acked {
        let m = fast.web.expect("message").await;
        assert_eq!(m["body"]["seq"], seq, "the reading socket's order");
    }

    let (received, code) = tokio::time::timeout(LONG, slow_reader)
        .await
        .expect("slow socket read to its close")
        .expect("slow reader");
    assert_eq!(code, Some(4030), "slow socket's close code");
    assert!(
        received == counted_for_slow,
        "the slow socket must get exactly the messages counted for it, in order: \
         counted {} (last {:?}), received {} (last {:?})",
        counted_for_slow.len(),
        counted_for_slow.last(),
        received.len(),
        received.last()
    );
    assert!(!fast.web.is_closed());
}

/// A phone that stops reading while a web floods it (~20 KB messages, 8 in
/// flight): the sends acknowledged stay within the queue bound plus the
/// kernel's buffers, then senders get `phone_offline` (and `phone_status`
/// false), and the phone, once it reads again, gets exactly the acknowledged
/// messages, in order, then 4030.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_phone_that_stops_reading_stays_bounded_and_gets_what_was_acked() {
    let gw = TestGateway::spawn(|c| {
        c.max_queue_bytes = FLOOD_MAX_QUEUE as u64;
        c.max_frames_per_sec = 100_000;
        c.max_errors_per_sec = 100_000;
    })
    .await;
    let acc = account("floodphone");
    let phone = gw.phone(&acc).await;
    let s = gw.pair(&phone, &PairOpts::new()).await;
    phone.close().await;
    assert_eq!(s.web.expect("phone_status").await["online"], false);
    let raw = raw_phone(gw.addr, &gw.phone_token(&acc), Some(4096)).await;
    assert_eq!(s.web.expect("phone_status").await["online"], true);
    flood_a_phone_that_stops_reading(&s.web, raw).await;
}

/// `web` floods (see the test above) its account's phone `raw`, which was
/// opened with a small receive buffer and does not read; checks the bounds,
/// `phone_offline` and `phone_status` false, and that the phone gets
/// exactly what was acknowledged, then 4030. The gateway runs with
/// `--max-queue-bytes` [`FLOOD_MAX_QUEUE`].
pub async fn flood_a_phone_that_stops_reading(web: &Client, mut raw: RawWs) {
    const MAX_QUEUE: usize = FLOOD_MAX_QUEUE;
    const IN_FLIGHT: usize = 8;
    let pad = "z".repeat(20_000);
    let frame_bytes = pad.len() + 100;
    let mut in_flight = VecDeque::new();
    let mut acked = Vec::new();
    let mut offline = 0;
    let mut next_seq = 0u64;
    while offline < IN_FLIGHT {
        while in_flight.len() < IN_FLIGHT && next_seq < 3_000 {
            let id = format!("w{next_seq}");
            web.send_json(json!({"type": "send", "id": id, "body": {"seq": next_seq, "pad": pad}}))
                .await;
            in_flight.push_back((id, next_seq));
            next_seq += 1;
        }
        let Some((id, seq)) = in_flight.pop_front() else {
            panic!("3,000 messages and the phone that does not read never overflowed");
        };
        let reply = web.expect_id(&id).await;
        match (reply["type"].as_str(), reply["code"].as_str()) {
            (Some("ack"), _) => {
                assert_eq!(offline, 0, "ack after phone_offline: {reply}");
                acked.push(seq);
            }
            (Some("error"), Some("phone_offline")) => offline += 1,
            _ => panic!("unexpected reply {reply}"),
        }
    }
    let accepted = acked.len() * frame_bytes;
    assert!(
        accepted <= MAX_QUEUE + 2 * frame_bytes + kernel_allowance(),
        "{} messages ({accepted} bytes) acknowledged for a phone that does not read",
        acked.len()
    );
    assert_eq!(web.expect("phone_status").await["online"], false);

    let mut received = Vec::new();
    let code = loop {
        match raw.next_event(LONG).await {
            Some(RawEvent::Text(t)) => {
                let m: serde_json::Value = serde_json::from_str(&t).expect("JSON");
                assert_eq!(m["type"], "message", "{}", &t[..t.len().min(200)]);
                received.push(m["body"]["seq"].as_u64().expect("seq"));
            }
            Some(RawEvent::Ping) | Some(RawEvent::Pong) => {}
            Some(RawEvent::Close(code)) => break code,
            other => panic!("phone: {other:?} before its close frame"),
        }
    };
    assert_eq!(code, Some(4030), "phone's close code");
    assert!(
        received == acked,
        "the phone must get exactly the acknowledged messages, in order: acked {}, received {}",
        acked.len(),
        received.len()
    );
}

/// 4030 by frame count: with the byte bound far away (64 MiB), a web socket
/// that does not read is closed 4030 once 4096 frames (of 1 KB) wait in its
/// queue (PROTOCOL: "`--max-queue-bytes`, 1 MiB; or 4096 frames"). From
/// then on it is excluded from `delivered`; reading again, it gets exactly
/// the messages counted for it, in order, then the 4030.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_with_4096_frames_waiting_is_closed_4030() {
    const QUEUE_FRAMES: usize = 4096;
    const BATCH: usize = 256;
    // Messages of ~1 KB: the kernel's buffers fill after a few thousand, and
    // a full queue of them (4 MiB) is far below the byte bound.
    const PAD: usize = 1000;
    let (_gw, phone, _s, mut raw) = web_on_a_small_buffer("frames4030").await;

    let pad = "q".repeat(PAD);
    let mut counted = Vec::new();
    let mut seq = 0usize;
    let mut excluded = false;
    while !excluded {
        assert!(
            seq <= QUEUE_FRAMES + kernel_allowance() / PAD + BATCH,
            "{seq} messages for a socket that does not read, and it was never excluded"
        );
        let frames: Vec<_> = (seq..seq + BATCH)
            .map(|i| json!({"type": "send", "id": format!("q{i}"), "body": {"seq": i, "pad": pad}}))
            .collect();
        phone.send_many(frames).await;
        for i in seq..seq + BATCH {
            let ack = phone.expect_id(&format!("q{i}")).await;
            match ack["delivered"].as_u64() {
                Some(1) => {
                    assert!(!excluded, "delivered 1 after the exclusion: {ack}");
                    counted.push(i);
                }
                Some(0) => excluded = true,
                _ => panic!("unexpected ack {ack}"),
            }
        }
        seq += BATCH;
    }
    // At least a full queue was counted; past it only what the kernel's
    // buffers took.
    assert!(
        counted.len() >= QUEUE_FRAMES,
        "excluded after {} messages: fewer than a full queue",
        counted.len()
    );
    assert!(
        counted.len() <= QUEUE_FRAMES + kernel_allowance() / PAD,
        "{} messages counted for a socket that does not read",
        counted.len()
    );
    let mut received = Vec::new();
    let code = loop {
        match raw.next_event(LONG).await {
            Some(RawEvent::Text(t)) => {
                let m: serde_json::Value = serde_json::from_str(&t).expect("JSON");
                assert_eq!(m["type"], "message", "{m}");
                received.push(m["body"]["seq"].as_u64().expect("seq") as usize);
            }
            Some(RawEvent::Ping) | Some(RawEvent::Pong) => {}
            Some(RawEvent::Close(code)) => break code,
            other => panic!("after {} messages: {other:?}", received.len()),
        }
    };
    assert_eq!(code, Some(4030), "close code");
    eprintln!("excluded after {} messages of ~1 KB", counted.len());
    assert!(
        received == counted,
        "got {} messages (last {:?}), counted {} (last {:?})",
        received.len(),
        received.last(),
        counted.len(),
        counted.last()
    );
}
