//! The edge: connections that never finish their request head, socket caps
//! (`--max-sockets`, `--max-sockets-per-ip`, the open-files limit), and the
//! client IP behind trusted proxies (`--trust-proxy`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// An upgrade's answer: status and headers, and the connection (held open
/// when it upgraded).
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    _held: TcpStream,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A refusal carries a `Retry-After` of whole seconds.
    fn assert_refused(&self, status: u16) {
        assert_eq!(self.status, status, "{:?}", self.headers);
        let retry: u32 = self
            .header("retry-after")
            .unwrap_or_else(|| panic!("{status} without Retry-After: {:?}", self.headers))
            .parse()
            .expect("Retry-After in seconds");
        assert!(retry >= 1, "Retry-After {retry}");
    }
}

/// Sends an upgrade for `/ws/phone` with `headers`; reads the answer's head.
async fn upgrade(addr: SocketAddr, headers: &[(&str, &str)]) -> Answer {
    let mut req = format!(
        "GET /ws/phone HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let fut = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(req.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        let end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed before an answer: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        };
        let text = String::from_utf8_lossy(&buf[..end]).into_owned();
        let mut lines = text.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad answer {text:?}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Answer {
            status,
            headers,
            _held: stream,
        }
    };
    tokio::time::timeout(T, fut)
        .await
        .expect("an upgrade answer within 5 s")
}

/// Polls until an upgrade is taken again (101), within `LONG`.
async fn until_upgraded(addr: SocketAddr, headers: &[(&str, &str)]) -> Answer {
    let deadline = Instant::now() + LONG;
    loop {
        let a = upgrade(addr, headers).await;
        if a.status == 101 {
            return a;
        }
        assert!(
            Instant::now() < deadline,
            "still refused ({}) after {LONG:?}",
            a.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for the server to end `stream` (EOF or reset); false if it is still
/// open after `within`.
async fn ended_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // an answer (the 408 hyper may send): keep reading to the end
            Ok(Ok(_)) => {}
        }
    }
}

/// `/healthz` answered `200` within `within`.
async fn healthz_ok(addr: SocketAddr, within: Duration) -> bool {
    let fut = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        Some(buf.starts_with(b"HTTP/1.1 200"))
    };
    matches!(tokio::time::timeout(within, fut).await, Ok(Some(true)))
}

/// A bare TCP connection that sends nothing, a request head sent in part,
/// one trickled a byte at a time, and a keep-alive connection idle after
/// its first answer: each is cut off in bounded time (header-read timer
/// 1 s here); plain `axum::serve` kept them all open for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_send_no_full_request_are_cut_off() {
    let gw = TestGateway::spawn(|c| c.http_header_timeout_ms = 1000).await;
    let addr = gw.addr;
    let mut bare = TcpStream::connect(addr).await.unwrap();
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow:")
        .await
        .unwrap();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 512];
    let n = tokio::time::timeout(T, idle.read(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        &answer[..n]
    );
    let mut trickle = TcpStream::connect(addr).await.unwrap();
    let trickler = tokio::spawn(async move {
        // a byte every 100 ms would take 3 s for this head
        for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\n".iter() {
            if trickle.write_all(&[*b]).await.is_err() {
                return Some(trickle);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    });

    for (name, s) in [
        ("bare", &mut bare),
        ("half-sent head", &mut half),
        ("idle keep-alive", &mut idle),
    ] {
        assert!(
            ended_within(s, LONG).await,
            "{name} connection still open after {LONG:?}"
        );
    }
    let trickle = tokio::time::timeout(LONG, trickler)
        .await
        .expect("the trickled head is cut off before it is complete")
        .unwrap();
    assert!(trickle.is_some(), "the whole head went through");
    // and the listener still serves
    assert!(healthz_ok(addr, T).await);
}

/// A client that asks for a page again and again and never reads the answers
/// holds its connection only for the connection's life (six header timeouts:
/// 6 s here), not until it has taken every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_its_answers_is_cut_off() {
    let gw = TestGateway::spawn(|c| c.http_header_timeout_ms = 1000).await;
    const REQUESTS: usize = 3000;
    let page = http_get(gw.addr, "/static/app.js", &[]).await;
    assert_eq!(page.status, 200, "a page served without --demo");
    let page = page.body.len();
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(gw.addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let one = b"GET /static/app.js HTTP/1.1\r\nHost: x\r\n\r\n";
        for _ in 0..REQUESTS {
            if wr.write_all(one).await.is_err() {
                return;
            }
        }
        // keep the write side open: the server is not told we are done
        std::future::pending::<()>().await;
    });
    // the contract here is about time: past the connection's life and grace
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let ended = tokio::time::timeout(LONG, async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    })
    .await;
    writer.abort();
    assert!(ended.is_ok(), "the connection is still open");
    assert!(
        total < REQUESTS * page,
        "every answer went out ({total} bytes): the slow reader was not cut off"
    );
}

/// `--max-sockets 3`: the fourth upgrade gets 503 with Retry-After and is
/// not upgraded; the sockets already open keep relaying; once one leaves,
/// upgrades are taken again; refusals are counted by reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_beyond_max_sockets_get_503_and_open_sockets_keep_working() {
    let gw = TestGateway::spawn(|c| c.max_sockets = 3).await;
    if single_process_only("the cap is per node") {
        return;
    }
    let acc = account("cap");
    let phone = gw.phone(&acc).await;
    let s = gw.pair(&phone, &PairOpts::new()).await;
    let third = upgrade(gw.addr, &[]).await;
    assert_eq!(third.status, 101);

    let refused = upgrade(gw.addr, &[]).await;
    refused.assert_refused(503);
    wait_for_sample(
        gw.addr,
        "pairgate_upgrades_refused_total",
        &[("reason", "cap")],
        1.0,
        T,
    )
    .await;

    // the open ones still relay both ways
    let ack = s.web.send_body(&json!({"n": 1}), None).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    phone.expect("message").await;
    let ack = phone.send_body(&json!({"n": 2}), None).await;
    assert_eq!(ack["delivered"], 1, "{ack}");
    s.web.expect("message").await;
    assert!(healthz_ok(gw.addr, T).await);

    // a socket leaves: its place is taken again
    drop(third);
    let again = until_upgraded(gw.addr, &[]).await;
    assert_eq!(again.status, 101);
}

/// `--max-sockets-per-ip 2` with `--trust-proxy 127.0.0.1`: the third
/// socket of one client IP gets 429 with Retry-After; another client IP is
/// not affected; a socket that leaves frees its IP's place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_ip_cap_counts_the_client_ip_and_gives_429() {
    let gw = TestGateway::spawn(|c| {
        c.max_sockets_per_ip = 2;
        c.trust_proxy = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    if single_process_only("the cap is per node") {
        return;
    }
    let a = [("X-Forwarded-For", "198.51.100.1")];
    let b = [("X-Forwarded-For", "198.51.100.2")];
    let a1 = upgrade(gw.addr, &a).await;
    let a2 = upgrade(gw.addr, &a).await;
    assert_eq!((a1.status, a2.status), (101, 101));
    upgrade(gw.addr, &a).await.assert_refused(429);
    let b1 = upgrade(gw.addr, &b).await;
    assert_eq!(b1.status, 101, "another client IP has its own count");
    wait_for_sample(
        gw.addr,
        "pairgate_upgrades_refused_total",
        &[("reason", "per_ip")],
        1.0,
        T,
    )
    .await;
    drop(a1);
    until_upgraded(gw.addr, &a).await;
}

/// Pairs a web socket opened with `headers`; the phone's `link_request`.
async fn link_request_seen_with(
    gw: &TestGateway,
    phone: &Client,
    headers: &[(&str, &str)],
) -> (serde_json::Value, serde_json::Value) {
    let mut web = RawWs::connect(gw.addr, "/ws/web", headers, None).await;
    web.recv_json().await; // hello
    web.send_text(&PairOpts::new().pair_frame().to_text(None))
        .await;
    let qr = web.recv_json().await;
    assert_eq!(qr["type"], "qr", "{qr}");
    let lr = phone.request_frame(&link_ref(&qr)).await;
    assert_eq!(lr["type"], "link_request", "{lr}");
    let dl = phone.request_frame(&confirm(&lr)).await;
    assert_eq!(dl["type"], "device_linked", "{dl}");
    (lr, dl)
}

/// The phone sees (and the session keeps) the forwarded client IP when the
/// peer is a trusted proxy, and the peer's own address when it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_phone_sees_the_forwarded_ip_only_from_a_trusted_proxy() {
    let xff = [("X-Forwarded-For", "203.0.113.50, 203.0.113.7")];
    let trusting = TestGateway::spawn(|c| {
        c.trust_proxy = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let acc = account("xff");
    let phone = trusting.phone(&acc).await;
    let (lr, dl) = link_request_seen_with(&trusting, &phone, &xff).await;
    assert_eq!(lr["device"]["ip"], "203.0.113.7", "{lr}");
    assert_eq!(dl["session"]["ip"], "203.0.113.7", "{dl}");
    let list = list_sessions(&phone).await;
    assert_eq!(list[0]["ip"], "203.0.113.7", "{list:?}");

    let plain = TestGateway::start().await;
    let acc = account("noxff");
    let phone = plain.phone(&acc).await;
    let (lr, dl) = link_request_seen_with(&plain, &phone, &xff).await;
    assert_eq!(lr["device"]["ip"], "127.0.0.1", "{lr}");
    assert_eq!(dl["session"]["ip"], "127.0.0.1", "{dl}");
}

/// CPU time (user + system) of process `pid` so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // fields after the command name (which may hold spaces) in parentheses
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// The built binary under an open-files limit of 64 with the default
/// `--max-sockets` (derived from that limit): upgrades beyond get 503 before
/// the process runs out of descriptors; with more connections than
/// descriptors waiting (accept fails with EMFILE) it does not spin; the
/// session already open keeps relaying, `/healthz` answers, and once
/// sockets leave, upgrades are taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_low_open_files_limit_upgrades_get_503_and_nothing_spins() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = BinGateway::serve_with_open_files(
        dir.path(),
        &[
            "--auth-timeout-ms",
            "600000",
            "--http-header-timeout-ms",
            "2000",
        ],
        64,
    )
    .await;
    let acc = account("fdlimit");
    let phone = g.phone(&acc).await;
    let s = g.pair(&phone, &PairOpts::new()).await;

    // sockets until refusal
    let mut held = Vec::new();
    let refused = loop {
        let a = upgrade(g.addr, &[]).await;
        if a.status != 101 {
            break a;
        }
        held.push(a);
        assert!(held.len() < 64, "no refusal under a 64-file limit");
    };
    refused.assert_refused(503);
    assert!(
        held.len() >= 8,
        "only {} sockets before the cap: too much headroom",
        held.len()
    );

    // more connections than descriptors: most wait in the backlog while
    // accept fails with EMFILE
    let mut flood = Vec::new();
    for _ in 0..80 {
        if let Ok(Ok(c)) =
            tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(g.addr)).await
        {
            flood.push(c);
        }
    }
    let pid = g.pid();
    let cpu_before = cpu_time(pid);
    let wall = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu = cpu_time(pid) - cpu_before;
    let elapsed = wall.elapsed();
    assert!(
        cpu < elapsed / 2,
        "{cpu:?} of CPU in {elapsed:?} while held at the descriptor limit: spinning; log:\n{}",
        g.log_text()
    );
    assert!(
        g.wait_exit(Duration::ZERO).await.is_none(),
        "the process exited"
    );

    // the idle flood is cut off (header timer): /healthz answers again
    let deadline = Instant::now() + Duration::from_secs(30);
    while !healthz_ok(g.addr, Duration::from_secs(2)).await {
        assert!(
            Instant::now() < deadline,
            "/healthz does not answer; log:\n{}",
            g.log_text()
        );
    }
    drop(flood);
    // the session opened before still relays both ways
    let ack = s.web.send_body(&json!({"still": "here"}), None).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    phone.expect("message").await;
    let ack = phone.send_body(&json!({"and": "back"}), None).await;
    assert_eq!(ack["delivered"], 1, "{ack}");

    // sockets freed: upgrades are taken again
    held.truncate(held.len() - 4);
    until_upgraded(g.addr, &[]).await;
}
