//! Many accounts at once: 100 phones, 300 web sessions paired, relaying and
//! logged out concurrently. Every message is delivered and acked, and every
//! web socket is closed before its phone's `ok`.

use futures::future::join_all;
use serde_json::json;

use crate::support::*;

const PHONES: usize = 100;
const SESSIONS_PER_PHONE: usize = 3;
const MESSAGES: usize = 5;

async fn one_account(addr: std::net::SocketAddr, acc: String, token: String) {
    let phone = open_phone(addr, &acc, &token).await;
    let sessions = join_all((0..SESSIONS_PER_PHONE).map(|i| {
        let opts = PairOpts::new()
            .device_name(&format!("{acc}-{i}"))
            .remember(i % 2 == 0);
        let phone = &phone;
        async move { pair_session(addr, phone, &opts).await }
    }))
    .await;

    // web -> phone
    join_all(sessions.iter().map(|s| async move {
        for k in 0..MESSAGES {
            let ack = s
                .web
                .send_body(&json!({"sid": s.session_id, "k": k}), None)
                .await;
            assert_eq!(ack["type"], "ack", "{ack}");
        }
    }))
    .await;
    let mut next = std::collections::HashMap::new();
    for _ in 0..SESSIONS_PER_PHONE * MESSAGES {
        let m = phone.expect("message").await;
        assert_eq!(m["from"], m["body"]["sid"], "{m}");
        let sid = m["from"].as_str().unwrap().to_string();
        let k = next.entry(sid).or_insert(0u64);
        assert_eq!(m["body"]["k"], *k, "order from one session");
        *k += 1;
    }
    assert_eq!(next.len(), SESSIONS_PER_PHONE);

    // phone -> webs
    for k in 0..MESSAGES {
        let ack = phone.send_body(&json!({"acc": acc, "k": k}), None).await;
        assert_eq!(ack["type"], "ack", "{ack}");
        assert_eq!(ack["delivered"], SESSIONS_PER_PHONE, "{ack}");
    }
    for s in &sessions {
        for k in 0..MESSAGES {
            let m = s.web.expect("message").await;
            assert_eq!(m["body"], json!({"acc": acc, "k": k}), "{m}");
        }
    }

    // logout_all: every web torn down before the ok. Read off each web's own
    // connection, not by comparing arrival times across sockets (see
    // `assert_torn_down_before` in sessions.rs): a ping sent once the ok is
    // here is never answered, since the close went out before it.
    let ok = phone.request_frame(&ClientFrame::LogoutAll).await;
    for s in &sessions {
        s.web.ping_now().await;
    }
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(ok["closed"], SESSIONS_PER_PHONE, "{ok}");
    for s in &sessions {
        let lo = s.web.expect("logged_out").await;
        assert_eq!(lo["reason"], "phone_logout_all", "{lo}");
        let c = s.web.wait_closed().await;
        assert_eq!(c.code, Some(4001), "{c:?}");
        assert_eq!(
            s.web.pongs(),
            0,
            "{}: a ping sent after the ok was answered: the gateway acked before it closed",
            s.web.name
        );
    }
    assert!(list_sessions(&phone).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_sockets_pair_relay_and_log_out_at_once() {
    let gw = TestGateway::start().await;
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..PHONES {
        let acc = account(&format!("many{p}"));
        let token = gw.phone_token(&acc);
        tasks.spawn(one_account(gw.addr, acc, token));
    }
    let mut failures = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r {
            failures.push(e.to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {PHONES} accounts failed; first: {}",
        failures.len(),
        failures[0]
    );
    // the gateway is still healthy
    assert_eq!(gw.http_get("/healthz", &[]).await.status, 200);
}
