//! Criterion benchmarks of the gateway's hot paths: parsing a client frame,
//! serializing a relayed frame, routing a phone message to an account's web
//! sockets, rendering a QR code, and verifying tokens.
//!
//! `cargo bench --bench hot_paths`; numbers go to docs/BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use pairgate::account::hub::{Hub, SessionState};
use pairgate::peer::Peer;
use pairgate::protocol::{Role, ServerFrame, Stage, parse_frame};
use pairgate::store::StoredSession;
use pairgate::tokens::Tokens;
use pairgate::{qr, time};
use tungstenite::Utf8Bytes;

fn body_of(len: usize) -> String {
    format!(
        "{{\"text\":\"{}\",\"ts\":1732459123456789}}",
        "x".repeat(len)
    )
}

fn frames(c: &mut Criterion) {
    let send = format!(
        "{{\"type\":\"send\",\"id\":\"m123456\",\"body\":{}}}",
        body_of(200)
    );
    c.bench_function("parse web send (256 B body)", |b| {
        b.iter(|| parse_frame(black_box(&send), Role::Web, Stage::Live).map(|r| r.id))
    });
    let raw = serde_json::value::RawValue::from_string(body_of(200)).expect("valid JSON");
    c.bench_function("serialize message frame", |b| {
        b.iter(|| {
            ServerFrame::Message {
                from: black_box("s_0123456789abcdefghij"),
                body: &raw,
            }
            .to_text()
        })
    });
}

fn routing(c: &mut Criterion) {
    let hub = Hub::default();
    let mut queues = Vec::new();
    hub.with("alice", |state| {
        for i in 0..3 {
            let (peer, queue) = Peer::new(i, 1 << 30);
            queues.push(queue);
            let now = time::now_ms();
            state.sessions.insert(
                format!("s{i}"),
                SessionState {
                    record: StoredSession {
                        account: "alice".into(),
                        session_id: format!("s{i}"),
                        device_name: "Chrome on Linux".into(),
                        user_agent: String::new(),
                        ip: "127.0.0.1".into(),
                        created_at_ms: now,
                        last_active_at_ms: now,
                        remember: true,
                    },
                    live: Some(peer),
                    epoch: 0,
                },
            );
        }
    });
    let frame = Utf8Bytes::from(body_of(200));
    c.bench_function("route phone message to 3 web sockets", |b| {
        b.iter(|| {
            // The relay's own path (one node: no receipts are taken).
            let mut receipts = Vec::new();
            let n = hub.with("alice", |state| {
                state.to_webs_counted(black_box(&frame), &mut receipts)
            });
            for q in &mut queues {
                while q.try_recv().is_some() {}
            }
            n
        })
    });
}

fn qr_render(c: &mut Criterion) {
    let payload = qr::payload("http://127.0.0.1:8080", &qr::new_ref());
    c.bench_function("render QR svg", |b| {
        b.iter(|| qr::render_svg(black_box(&payload)))
    });
    c.bench_function("qrcode crate default encode (scores 8 masks)", |b| {
        b.iter(|| {
            qrcode::QrCode::with_error_correction_level(black_box(&payload), qrcode::EcLevel::M)
        })
    });
}

fn tokens(c: &mut Criterion) {
    let tokens = Tokens::new("bench-secret");
    let phone = tokens
        .mint_phone("alice", Duration::from_secs(3600))
        .expect("mint");
    let session = tokens.mint_session("alice", "s_0123456789abcdefghij");
    c.bench_function("verify phone token", |b| {
        b.iter(|| tokens.verify_phone(black_box(&phone)))
    });
    c.bench_function("verify session token", |b| {
        b.iter(|| tokens.verify_session(black_box(&session)))
    });
}

criterion_group!(benches, frames, routing, qr_render, tokens);
criterion_main!(benches);
