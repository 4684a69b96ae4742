//! Hostile bytes: WebSocket frames that break RFC 6455, written by hand on a
//! raw TCP socket after a real handshake. Each gets the protocol close that
//! fits (1002 protocol error, 1007 text that is not UTF-8, 1009 too large) in
//! bounded time, and the gateway lets go of the socket: its socket gauge
//! comes back to where it was, so no task is stuck and no socket leaked.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

/// One frame as a client could write it: the first byte (FIN, RSV, opcode)
/// as given, masked unless `masked` is false, the length in the shortest form.
fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mask_bit = if masked { 0x80 } else { 0 };
    let mut out = vec![first];
    let n = payload.len();
    if n < 126 {
        out.push(mask_bit | n as u8);
    } else if n < 65536 {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    if masked {
        let mask: [u8; 4] = rand::random();
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

const FIN: u8 = 0x80;
const TEXT: u8 = 0x1;
const CONT: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;

/// Web sockets (phone and web) the gateway holds now.
async fn sockets(gw: &TestGateway) -> f64 {
    metric_now(gw.addr, "pairgate_sockets").await
}

/// A raw web socket past its handshake and `hello`.
async fn opened(gw: &TestGateway) -> RawWs {
    let mut raw = RawWs::connect(gw.addr, "/ws/web", &[], None).await;
    let hello = raw.recv_json().await;
    assert_eq!(hello["type"], "hello", "{hello}");
    raw
}

/// Writes `bytes` on a fresh socket and expects the close `code` within
/// `LONG`, then the socket gauge back where it was. The gateway serves on.
async fn expect_close_after(gw: &TestGateway, what: &str, bytes: &[u8], code: u16) {
    let before = sockets(gw).await;
    let mut raw = opened(gw).await;
    raw.send_bytes(bytes).await.expect("write");
    assert_eq!(raw.wait_closed(LONG).await, Some(code), "{what}");
    wait_for_metric(gw.addr, "pairgate_sockets", LONG, |v| v == before).await;
}

/// The gateway counted `n` closes with `code` (it is the one that closed).
async fn closes_counted(gw: &TestGateway, code: &str, n: f64) {
    wait_for_sample(gw.addr, "pairgate_closes_total", &[("code", code)], n, LONG).await;
}

/// A gateway whose frames stay small, so the limits are near.
async fn gateway() -> TestGateway {
    TestGateway::spawn(|c| c.max_frame_bytes = 4096).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserved_opcode_is_closed_1002() {
    let gw = gateway().await;
    for (what, op) in [("data opcode 0x3", 0x3), ("control opcode 0xB", 0xB)] {
        expect_close_after(&gw, what, &frame(FIN | op, b"{}", true), 1002).await;
    }
    closes_counted(&gw, "1002", 2.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_bits_are_closed_1002() {
    let gw = gateway().await;
    for rsv in [0x40, 0x20, 0x10] {
        let bytes = frame(FIN | rsv | TEXT, br#"{"type":"pair"}"#, true);
        expect_close_after(&gw, &format!("rsv {rsv:#x}"), &bytes, 1002).await;
    }
    closes_counted(&gw, "1002", 3.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmasked_client_frame_is_closed_1002() {
    let gw = gateway().await;
    let bytes = frame(FIN | TEXT, br#"{"type":"pair"}"#, false);
    expect_close_after(&gw, "unmasked text", &bytes, 1002).await;
    closes_counted(&gw, "1002", 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragmented_control_frame_is_closed_1002() {
    let gw = gateway().await;
    let bytes = frame(PING, b"x", true);
    expect_close_after(&gw, "ping without FIN", &bytes, 1002).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_frame_over_125_bytes_is_closed_1002() {
    let gw = gateway().await;
    let bytes = frame(FIN | PING, &[b'p'; 126], true);
    expect_close_after(&gw, "ping of 126 bytes", &bytes, 1002).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_without_a_start_is_closed_1002() {
    let gw = gateway().await;
    let bytes = frame(FIN | CONT, br#"{"type":"pair"}"#, true);
    expect_close_after(&gw, "lone continuation", &bytes, 1002).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_data_frame_inside_a_fragmented_message_is_closed_1002() {
    let gw = gateway().await;
    let mut bytes = frame(TEXT, br#"{"type":"#, true);
    bytes.extend(frame(FIN | TEXT, br#""pair"}"#, true));
    expect_close_after(&gw, "text inside a fragmented text", &bytes, 1002).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_that_is_not_utf8_is_closed_1007() {
    let gw = gateway().await;
    let whole = frame(FIN | TEXT, b"{\"type\":\"\xff\xfe\"}", true);
    expect_close_after(&gw, "invalid UTF-8 in one frame", &whole, 1007).await;
    // a character split over two fragments is fine; a broken one is not
    let mut split = frame(TEXT, b"{\"type\":\"\xc3", true);
    split.extend(frame(FIN | CONT, b"(\"}", true));
    expect_close_after(&gw, "invalid UTF-8 across fragments", &split, 1007).await;
    closes_counted(&gw, "1007", 2.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_reason_that_is_not_utf8_is_closed_1007() {
    let gw = gateway().await;
    let bytes = frame(FIN | CLOSE, b"\x03\xe8bye \xff", true);
    expect_close_after(&gw, "close reason not UTF-8", &bytes, 1007).await;
    closes_counted(&gw, "1007", 1.0).await;
}

/// Codes a close frame may not carry (RFC 6455 section 7.4): the gateway
/// answers with 1002 instead of echoing them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_with_a_forbidden_code_is_answered_1002() {
    let gw = gateway().await;
    for code in [1004u16, 1005, 1006, 1015, 999, 0, 2999, 5000, 65535] {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        let bytes = frame(FIN | CLOSE, &payload, true);
        expect_close_after(&gw, &format!("close {code}"), &bytes, 1002).await;
    }
    // a one-byte close payload has no code at all
    expect_close_after(
        &gw,
        "close of 1 byte",
        &frame(FIN | CLOSE, b"\x03", true),
        1002,
    )
    .await;
    // allowed codes are echoed, as ever
    expect_close_after(
        &gw,
        "close 4000",
        &frame(FIN | CLOSE, b"\x0f\xa0", true),
        4000,
    )
    .await;
}

/// A length header of 2^63 (and 2^64 - 1): refused from the header alone,
/// with the contract's 1009, before a byte of it is buffered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_length_header_is_closed_1009_at_once() {
    let gw = gateway().await;
    for len in [1u64 << 63, u64::MAX, 1 << 32] {
        let mut bytes = vec![FIN | TEXT, 0x80 | 127];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(&rand::random::<[u8; 4]>());
        expect_close_after(&gw, &format!("length {len}"), &bytes, 1009).await;
    }
    closes_counted(&gw, "1009", 3.0).await;
}

/// A message over `max_frame_bytes` made of small fragments is as large as
/// one big frame: 1009.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_too_large_in_small_fragments_is_closed_1009() {
    let gw = gateway().await;
    let mut bytes = frame(TEXT, &[b' '; 1000], true);
    for _ in 0..5 {
        bytes.extend(frame(CONT, &[b' '; 1000], true));
    }
    bytes.extend(frame(FIN | CONT, b"{}", true));
    expect_close_after(&gw, "6000 bytes in fragments", &bytes, 1009).await;
}

/// A frame trickled a byte at a time is still a frame: handled when it is
/// whole, like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_trickled_byte_by_byte_is_handled() {
    let gw = gateway().await;
    let mut raw = opened(&gw).await;
    let bytes = frame(
        FIN | TEXT,
        json!({"type": "pair"}).to_string().as_bytes(),
        true,
    );
    for b in &bytes {
        raw.send_bytes(&[*b]).await.expect("write");
        // the pace of the trickle is what is tested
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let qr = raw.recv_json().await;
    assert_eq!(qr["type"], "qr", "{qr}");
}

/// A frame that never ends, trickled slower than it could ever finish: bytes
/// keep coming, but no frame does, so the socket is silent as the contract
/// counts it ("no frame, no pong") and is closed 4008 after two heartbeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_that_never_ends_is_cut_off_by_the_heartbeat() {
    let gw = TestGateway::spawn(|c| {
        c.max_frame_bytes = 4096;
        c.heartbeat_ms = 300;
    })
    .await;
    let before = sockets(&gw).await;
    let mut raw = opened(&gw).await;
    // a text frame announcing 4000 bytes, of which a byte comes every 20 ms
    let bytes = frame(FIN | TEXT, &[b' '; 4000], true);
    let deadline = tokio::time::Instant::now() + LONG;
    let mut sent = 0;
    let code = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still open after {sent} bytes"
        );
        if raw.send_bytes(&bytes[sent..sent + 1]).await.is_err() {
            break raw.wait_closed(T).await;
        }
        sent += 1;
        match raw.next_event(Duration::from_millis(20)).await {
            Some(RawEvent::Close(code)) => break code,
            Some(RawEvent::Eof) => break None,
            _ => {}
        }
    };
    assert_eq!(code, Some(4008), "after {sent} trickled bytes");
    assert!(sent < bytes.len(), "the frame was finished ({sent} bytes)");
    wait_for_metric(gw.addr, "pairgate_sockets", LONG, |v| v == before).await;
}

/// A violation on a live socket takes only that socket: the phone and its
/// other sessions go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_violation_on_a_live_socket_ends_only_that_socket() {
    let gw = gateway().await;
    let acc = account("wire");
    let phone = gw.phone(&acc).await;
    let s = gw.pair(&phone, &PairOpts::new()).await;
    s.web.close().await;
    phone.expect("session_offline").await;
    let mut raw = raw_resume(gw.addr, &s.token, None).await;
    phone.expect("session_online").await;
    raw.send_bytes(&frame(FIN | 0x40 | TEXT, b"{}", true))
        .await
        .expect("write");
    assert_eq!(raw.wait_closed(LONG).await, Some(1002));
    phone.expect("session_offline").await;
    // the session is intact: it resumes
    let _web = gw.resume_ok(&s.token, &s.session_id).await;
    phone.expect("session_online").await;
}

/// `Sec-WebSocket-Key` must be the base64 of 16 bytes (RFC 6455 4.1), and
/// given once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_with_a_malformed_key_is_refused_400() {
    let gw = gateway().await;
    for key in [
        "x",
        "",
        "dGhlIHNhbXBsZSBub25jZQ",
        "dGhlIHNhbXBsZSBub25jZSE=",
    ] {
        let r = http_send(
            gw.addr,
            "GET",
            "/ws/web",
            &[
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", key),
                ("Sec-WebSocket-Version", "13"),
            ],
            b"",
        )
        .await;
        assert_eq!(r.status, 400, "key {key:?}");
    }
    // two keys, each well formed
    let r = http_send(
        gw.addr,
        "GET",
        "/ws/web",
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA=="),
            ("Sec-WebSocket-Version", "13"),
        ],
        b"",
    )
    .await;
    assert_eq!(r.status, 400, "two keys");
    // a good key still upgrades
    assert_eq!(upgrade_status(gw.addr, "/ws/web", &[]).await, 101);
}
