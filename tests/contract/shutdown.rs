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
