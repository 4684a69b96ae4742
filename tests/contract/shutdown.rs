//! "server shutting down": every socket gets close 1012, the store is
//! flushed, the process exits 0 within 5 s (SIGTERM, Ctrl-C), and `run`
//! returns once its shutdown future resolves.

use std::time::Duration;

use crate::support::*;

/// One socket in each state: live phone, live web, pairing web, unauthenticated.
struct Sockets {
    phone: Client,
    session: Session,
    pairing: Client,
    fresh: Client,
}

async fn open_everything(addr: std::net::SocketAddr, account_id: &str, token: &str) -> Sockets {
    let phone = open_phone(addr, account_id, token).await;
    let session = pair_session(addr, &phone, &PairOpts::new()).await;
    let (pairing, _qr) = start_pairing(addr, &PairOpts::new()).await;
    let fresh = Client::open(&ws_url(addr, "/ws/phone")).await;
    fresh.expect("hello").await;
    Sockets {
        phone,
        session,
        pairing,
        fresh,
    }
}

async fn assert_all_1012(s: &Sockets) {
    for c in [&s.phone, &s.session.web, &s.pairing, &s.fresh] {
        assert_eq!(c.expect_close().await, 1012, "{}", c.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_closes_every_socket_1012_and_returns() {
    let mut gw = TestGateway::start().await;
    let acc = account("inproc");
    let s = open_everything(gw.addr, &acc, &gw.phone_token(&acc)).await;
    assert!(
        !gw.finished(),
        "run returned before its shutdown future resolved"
    );
    gw.shutdown().await.expect("run returns Ok");
    assert_all_1012(&s).await;
    // no more connections
    assert!(
        upgrade_status_or_err(gw.addr).await,
        "the listener still serves after run returned"
    );
}

/// True if a request to the gateway fails (as it should once it stopped).
async fn upgrade_status_or_err(addr: std::net::SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return true;
    };
    let _ = s
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    match tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await {
        Ok(Ok(_)) => !buf.starts_with(b"HTTP/1.1 200"),
        _ => true,
    }
}

async fn signal_test(sig: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = BinGateway::serve(dir.path(), &[], &[]).await;
    let acc = account(&format!("sig{}", sig.to_lowercase()));
    let s = open_everything(g.addr, &acc, &g.phone_token(&acc)).await;
    // and one that neither reads nor answers the close
    let deaf_acc = account("deaf");
    let mut deaf = raw_phone(g.addr, &g.phone_token(&deaf_acc), None).await;

    g.signal(sig);
    let status = g.wait_exit(Duration::from_secs(5)).await;
    let status = status.unwrap_or_else(|| panic!("still running 5 s after SIG{sig}"));
    assert!(
        status.success(),
        "exit status after SIG{sig}: {status}; log:\n{}",
        g.log_text()
    );
    for c in [&s.phone, &s.session.web, &s.pairing, &s.fresh] {
        assert_eq!(c.expect_close().await, 1012, "{} after SIG{sig}", c.name);
    }
    assert_eq!(
        deaf.wait_closed(T).await,
        Some(1012),
        "raw socket after SIG{sig}"
    );

    // the store was flushed: the session is still there
    let g = BinGateway::serve(dir.path(), &[], &[]).await;
    let _w = g.resume_ok(&s.session.token, &s.session.session_id).await;
    let phone = g.phone(&acc).await;
    assert_eq!(list_sessions(&phone).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_every_socket_1012_and_exits_0_within_5s() {
    signal_test("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_closes_every_socket_1012_and_exits_0_within_5s() {
    signal_test("INT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_right_after_a_link_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let g = BinGateway::serve(dir.path(), &[], &[]).await;
    let acc = account("sigtermlink");
    let phone = g.phone(&acc).await;
    let s = g.pair(&phone, &PairOpts::new()).await;
    let ok = phone.request_frame(&ClientFrame::LogoutAll).await;
    assert_eq!(ok["closed"], 1);
    let kept = g.pair(&phone, &PairOpts::new()).await;
    g.signal("TERM");
    let mut g = g;
    assert!(g.wait_exit(Duration::from_secs(5)).await.is_some());
    let g = BinGateway::serve(dir.path(), &[], &[]).await;
    g.assert_logged_out(&s.token).await;
    let _w = g.resume_ok(&kept.token, &kept.session_id).await;
}

/// SIGTERM flushes the store: the last-active times written as the sockets
/// close at shutdown survive the restart. Those writes are bookkeeping that
/// nobody waits for, queued as the 1012 closes take the sessions offline, a
/// moment before the process exits: without the flush they are lost, and
/// the restarted gateway shows the times stored before (the link).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_the_last_active_times_of_the_closes() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = BinGateway::serve(dir.path(), &[], &[]).await;
    let acc = account("sigterm-flush");
    let phone = g.phone(&acc).await;
    // as many as an account may have: the more writes at shutdown, the
    // likelier a missing flush loses one
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(g.pair(&phone, &PairOpts::new()).await);
    }
    // The closes at shutdown come in a later millisecond than anything
    // stored before.
    let latest = sessions.iter().map(created_at).max().unwrap();
    until_next_millisecond(latest).await;
    let before_term = time::OffsetDateTime::now_utc();
    g.signal("TERM");
    let status = g.wait_exit(Duration::from_secs(5)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "exit after SIGTERM: {status:?}; log:\n{}",
        g.log_text()
    );
    for s in &sessions {
        assert_eq!(s.web.expect_close().await, 1012);
    }

    let g = BinGateway::serve(dir.path(), &[], &[]).await;
    let phone = g.phone(&acc).await;
    let list = list_sessions(&phone).await;
    assert_eq!(list.len(), 4, "{list:?}");
    for s in &list {
        assert_eq!(s["online"], false, "{s}");
        let last = parse_time(s["last_active_at"].as_str().unwrap());
        assert!(
            last >= before_term
                .replace_millisecond(before_term.millisecond())
                .unwrap(),
            "last_active_at {last} is from before the SIGTERM at {before_term}: \
             the offline times written at shutdown were not flushed ({s})"
        );
    }
}

/// An upgrade request answered with `Connection: close`: its status and
/// `Retry-After` (it must not upgrade: the answer is read to its end).
async fn refused_upgrade(addr: std::net::SocketAddr) -> (u16, Option<String>) {
    let r = http_get(
        addr,
        "/ws/phone",
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ],
    )
    .await;
    (r.status, r.header("retry-after").map(str::to_owned))
}

/// `--drain-ms 3000`: on SIGTERM `/readyz` turns 503 and new upgrades get
/// 503 with Retry-After at once; the live sockets are closed 1012 spread
/// over the drain (30 sockets: the first and last close are more than a
/// second apart, where without a drain they all close at once); the
/// process exits 0 within drain + 5 s, the store flushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_drain_refuses_new_sockets_and_spreads_the_closes() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = BinGateway::serve(
        dir.path(),
        &["--drain-ms", "3000", "--auth-timeout-ms", "60000"],
        &[],
    )
    .await;
    let acc = account("drain");
    let phone = g.phone(&acc).await;
    let s = g.pair(&phone, &PairOpts::new()).await;
    let mut closes = Vec::new();
    for _ in 0..30 {
        let c = Client::open(&ws_url(g.addr, "/ws/phone")).await;
        closes.push(tokio::spawn(async move {
            let code = c.expect_close_within(Duration::from_secs(20)).await;
            (std::time::Instant::now(), code)
        }));
    }
    assert_eq!(g.http_get("/readyz", &[]).await.status, 200);

    let term = std::time::Instant::now();
    g.signal("TERM");
    let deadline = term + T;
    while g.http_get("/readyz", &[]).await.status != 503 {
        assert!(std::time::Instant::now() < deadline, "/readyz still 200");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, retry_after) = refused_upgrade(g.addr).await;
    assert_eq!(status, 503, "a new upgrade while draining");
    assert!(retry_after.is_some(), "503 without Retry-After");
    let refused = g.http_get("/metrics", &[]).await.text();
    assert_eq!(
        metric_sample(
            &refused,
            "pairgate_upgrades_refused_total",
            &[("reason", "draining")]
        ),
        Some(1.0)
    );

    let mut times = Vec::new();
    for c in closes {
        let (at, code) = c.await.unwrap();
        assert_eq!(code, 1012);
        times.push(at);
    }
    assert_eq!(phone.expect_close_within(LONG).await, 1012);
    assert_eq!(s.web.expect_close_within(LONG).await, 1012);
    let first = *times.iter().min().unwrap();
    let last = *times.iter().max().unwrap();
    assert!(
        last - first >= Duration::from_millis(1000),
        "30 sockets closed within {:?} of each other: not spread over the 3 s drain",
        last - first
    );
    let left = Duration::from_millis(3000 + 5000).saturating_sub(term.elapsed());
    let status = g.wait_exit(left).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "exit within drain + 5 s: {status:?}; log:\n{}",
        g.log_text()
    );
    let g = BinGateway::serve(dir.path(), &[], &[]).await;
    let _w = g.resume_ok(&s.token, &s.session_id).await;
}

/// Sends `send` frames with ids `{prefix}{n}` and bodies `{"seq":n,"by":prefix}`
/// in pipelined bursts until the socket is closed.
async fn flood(c: std::sync::Arc<Client>, prefix: String) {
    let mut n = 0u64;
    while !c.is_closed() {
        for _ in 0..32 {
            let body =
                serde_json::value::to_raw_value(&serde_json::json!({"seq": n, "by": prefix}))
                    .unwrap();
            let text = ClientFrame::Send {
                body: &body,
                to: None,
            }
            .to_text(Some(&format!("{prefix}{n}")));
            if c.try_send_raw(tungstenite::Message::text(text))
                .await
                .is_err()
            {
                return;
            }
            n += 1;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Shutdown under load: a phone and three web sessions relay at full speed
/// both ways when SIGTERM comes. Every socket gets 1012; every `send` the
/// gateway acknowledged reached its receivers (a phone's `ack` counts
/// `delivered` webs: at least that many got it; a web's `ack` means the
/// phone got it); every session resumes after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_nothing_acknowledged() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let mut g = BinGateway::serve(
        dir.path(),
        &[
            "--max-frames-per-sec",
            "1000000",
            "--max-errors-per-sec",
            "1000000",
        ],
        &[],
    )
    .await;
    let acc = account("termload");
    let phone = Arc::new(g.phone(&acc).await);
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(g.pair(&phone, &PairOpts::new()).await);
    }
    let (webs, keys): (Vec<Arc<Client>>, Vec<(String, String)>) = sessions
        .into_iter()
        .map(|s| (Arc::new(s.web), (s.token, s.session_id)))
        .unzip();
    let mut floods = vec![tokio::spawn(flood(phone.clone(), "p".into()))];
    for (i, w) in webs.iter().enumerate() {
        floods.push(tokio::spawn(flood(w.clone(), format!("w{i}-"))));
    }
    // under way: every sender has had hundreds of sends acknowledged
    let deadline = std::time::Instant::now() + LONG;
    for c in webs.iter().chain([&phone]) {
        while c.all_of("ack").len() < 300 {
            assert!(
                std::time::Instant::now() < deadline,
                "{}: the load did not get going",
                c.name
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    g.signal("TERM");
    for c in webs.iter().chain([&phone]) {
        assert_eq!(c.expect_close_within(LONG).await, 1012, "{}", c.name);
    }
    assert!(g.wait_exit(LONG).await.is_some_and(|s| s.success()));
    for f in floods {
        f.await.unwrap();
    }

    let received = |c: &Client, by: &str| -> std::collections::HashSet<u64> {
        c.all_of("message")
            .iter()
            .filter(|m| m["body"]["by"] == by)
            .filter_map(|m| m["body"]["seq"].as_u64())
            .collect()
    };
    let seq_of = |ack: &serde_json::Value, prefix: &str| -> Option<u64> {
        ack["id"].as_str()?.strip_prefix(prefix)?.parse().ok()
    };
    // the phone's sends
    let at_webs: Vec<_> = webs.iter().map(|w| received(w, "p")).collect();
    let mut checked = 0;
    for ack in phone.all_of("ack") {
        let Some(seq) = seq_of(&ack, "p") else {
            continue;
        };
        let delivered = ack["delivered"].as_u64().unwrap_or(0) as usize;
        let got = at_webs.iter().filter(|s| s.contains(&seq)).count();
        assert!(
            got >= delivered,
            "phone send {seq}: ack {ack}, {got} webs got it"
        );
        checked += 1;
    }
    assert!(checked > 0, "no phone send was acknowledged");
    // the webs' sends
    for (i, w) in webs.iter().enumerate() {
        let prefix = format!("w{i}-");
        let at_phone = received(&phone, &prefix);
        for ack in w.all_of("ack") {
            let Some(seq) = seq_of(&ack, &prefix) else {
                continue;
            };
            assert!(
                at_phone.contains(&seq),
                "web {i} send {seq} acked, never reached the phone"
            );
        }
    }

    let g = BinGateway::serve(dir.path(), &[], &[]).await;
    for (token, session_id) in &keys {
        let _w = g.resume_ok(token, session_id).await;
    }
}
