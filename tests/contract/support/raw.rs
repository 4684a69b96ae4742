//! `RawWs`: RFC 6455 by hand, for what the recording client cannot play or
//! see. It reads only when told to and answers nothing (no pong, no close
//! reply), so it plays a silent or a slow socket; and it is as strict as a
//! browser about what it reads: a frame RFC 6455 forbids is a
//! `RawEvent::Violation`, never silently accepted.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::http::{find_head_end, parse_head};
use super::{
    CHROME_LINUX_UA, Client, Gateway, PairOpts, Session, T, TestGateway, account, assert_no_id,
    auth, next_id,
};

/// One event read by `RawWs`.
#[derive(Debug)]
pub enum RawEvent {
    Text(String),
    Binary(Vec<u8>),
    Ping,
    Pong,
    Close(Option<u16>),
    Eof,
    /// A frame a browser would fail the connection for (RFC 6455).
    Violation(String),
}

/// RFC 6455 by hand: sends masked frames, reads only when asked, answers
/// nothing (no pong, no close reply). Plays a silent or a slow socket.
pub struct RawWs {
    pub name: String,
    stream: TcpStream,
    buf: Vec<u8>,
    frag: Vec<u8>,
    /// The opcode of the fragmented message being assembled.
    frag_op: Option<u8>,
    /// JSON frames read but not yet taken by `expect`.
    backlog: VecDeque<Value>,
    pub pings: usize,
    /// `Some(code)` once a close frame (code) or the end (`None`) was read.
    pub closed: Option<Option<u16>>,
}

impl RawWs {
    /// Connects (optionally with a small receive buffer) and upgrades.
    pub async fn connect(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        recv_buffer: Option<u32>,
    ) -> RawWs {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        if let Some(n) = recv_buffer {
            sock.set_recv_buffer_size(n).expect("SO_RCVBUF");
        }
        let mut stream = sock.connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream
            .write_all(req.as_bytes())
            .await
            .expect("write upgrade");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = tokio::time::timeout(T, async {
            loop {
                if let Some(end) = find_head_end(&buf) {
                    return end;
                }
                let n = stream.read(&mut chunk).await.expect("read upgrade answer");
                assert!(n > 0, "closed during upgrade");
                buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .expect("upgrade answer within 5 s");
        let (status, _) = parse_head(&buf[..end]);
        assert_eq!(
            status,
            101,
            "upgrade refused: {}",
            String::from_utf8_lossy(&buf[..end])
        );
        let rest = buf[end..].to_vec();
        RawWs {
            name: format!("raw{path}#{}", next_id("")),
            stream,
            buf: rest,
            frag: Vec::new(),
            frag_op: None,
            backlog: VecDeque::new(),
            pings: 0,
            closed: None,
        }
    }

    /// Waits until the socket has something, then reads it.
    async fn read_some(&mut self, chunk: &mut [u8]) -> std::io::Result<usize> {
        loop {
            self.stream.readable().await?;
            match self.try_read_some(chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    /// Reads what the kernel already has, without waiting.
    fn try_read_some(&mut self, chunk: &mut [u8]) -> std::io::Result<usize> {
        self.stream.try_read(chunk)
    }

    pub async fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        let mut head = vec![0x80 | opcode];
        let n = payload.len();
        if n < 126 {
            head.push(0x80 | n as u8);
        } else if n < 65536 {
            head.push(0x80 | 126);
            head.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            head.push(0x80 | 127);
            head.extend_from_slice(&(n as u64).to_be_bytes());
        }
        let mask: [u8; 4] = rand::random();
        head.extend_from_slice(&mask);
        head.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&head).await.expect("raw write");
    }

    /// Writes `bytes` as they are (a frame built by hand, or a piece of one).
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send_frame(0x1, text.as_bytes()).await
    }

    pub async fn send_json(&mut self, v: Value) {
        self.send_text(&v.to_string()).await
    }

    /// A whole frame from the buffer, if there is one: (fin, opcode, payload,
    /// reserved bits).
    fn parse_frame(&mut self) -> Option<(bool, u8, Vec<u8>, u8)> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let rsv = b[0] & 0x70;
        let fin = b[0] & 0x80 != 0;
        let op = b[0] & 0x0f;
        let masked = b[1] & 0x80 != 0;
        let mut n = (b[1] & 0x7f) as usize;
        let mut at = 2;
        if n == 126 {
            if b.len() < 4 {
                return None;
            }
            n = u16::from_be_bytes([b[2], b[3]]) as usize;
            at = 4;
        } else if n == 127 {
            if b.len() < 10 {
                return None;
            }
            n = u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize;
            at = 10;
        }
        let mask = if masked {
            if b.len() < at + 4 {
                return None;
            }
            let m = [b[at], b[at + 1], b[at + 2], b[at + 3]];
            at += 4;
            Some(m)
        } else {
            None
        };
        if b.len() < at + n {
            return None;
        }
        let mut data = b[at..at + n].to_vec();
        if let Some(m) = mask {
            for (i, x) in data.iter_mut().enumerate() {
                *x ^= m[i % 4];
            }
        }
        self.buf.drain(..at + n);
        Some((fin, op, data, rsv))
    }

    /// Turns buffered bytes into an event, if a whole message is there. As
    /// strict as a browser: a frame RFC 6455 forbids is a `Violation`.
    fn buffered_event(&mut self) -> Option<RawEvent> {
        while let Some((fin, op, data, rsv)) = self.parse_frame() {
            if rsv != 0 {
                return Some(RawEvent::Violation(format!("reserved bits {rsv:#x}")));
            }
            if op >= 0x8 && (!fin || data.len() > 125) {
                return Some(RawEvent::Violation(format!(
                    "control frame {op:#x}: fin {fin}, {} bytes",
                    data.len()
                )));
            }
            match op {
                0x9 => {
                    self.pings += 1;
                    return Some(RawEvent::Ping);
                }
                0xA => return Some(RawEvent::Pong),
                0x8 => {
                    let code = (data.len() >= 2).then(|| u16::from_be_bytes([data[0], data[1]]));
                    self.closed = Some(code);
                    return Some(RawEvent::Close(code));
                }
                0x1 | 0x2 if self.frag_op.is_some() => {
                    return Some(RawEvent::Violation(format!(
                        "a new data frame ({op:#x}) inside a fragmented message"
                    )));
                }
                0x0 if self.frag_op.is_none() => {
                    return Some(RawEvent::Violation(
                        "a continuation frame outside a fragmented message".into(),
                    ));
                }
                0x0..=0x2 => {
                    let op = *self.frag_op.get_or_insert(op);
                    self.frag.extend_from_slice(&data);
                    if fin {
                        self.frag_op = None;
                        let all = std::mem::take(&mut self.frag);
                        return Some(if op == 0x2 {
                            RawEvent::Binary(all)
                        } else {
                            match String::from_utf8(all) {
                                Ok(text) => RawEvent::Text(text),
                                Err(_) => RawEvent::Violation("text that is not UTF-8".into()),
                            }
                        });
                    }
                }
                _ => return Some(RawEvent::Violation(format!("reserved opcode {op:#x}"))),
            }
        }
        None
    }

    /// The next event, or `None` if nothing complete arrived within `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<RawEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut chunk = vec![0u8; 65536];
        loop {
            if let Some(e) = self.buffered_event() {
                return Some(e);
            }
            if self.closed.is_some() {
                return Some(RawEvent::Eof);
            }
            match tokio::time::timeout_at(deadline, self.read_some(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => {
                    self.closed = Some(None);
                    return Some(RawEvent::Eof);
                }
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next JSON text message (pings counted, not answered); panics on
    /// close, end or timeout.
    pub async fn recv_json(&mut self) -> Value {
        if let Some(v) = self.backlog.pop_front() {
            return v;
        }
        self.recv_json_wire(T).await
    }

    async fn recv_json_wire(&mut self, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(RawEvent::Text(t)) => {
                    return serde_json::from_str(&t)
                        .unwrap_or_else(|_| panic!("{}: not JSON: {t:?}", self.name));
                }
                Some(RawEvent::Ping) | Some(RawEvent::Pong) => {}
                Some(RawEvent::Binary(b)) => {
                    panic!("{}: binary frame ({} bytes)", self.name, b.len())
                }
                Some(RawEvent::Close(c)) => panic!(
                    "{}: closed ({c:?}) while waiting for a frame; backlog {:?}",
                    self.name, self.backlog
                ),
                Some(RawEvent::Eof) => {
                    panic!("{}: connection ended while waiting for a frame", self.name)
                }
                Some(RawEvent::Violation(v)) => panic!("{}: protocol violation: {v}", self.name),
                None => panic!(
                    "{}: no frame within {timeout:?}; backlog {:?}",
                    self.name, self.backlog
                ),
            }
        }
    }

    /// Reads and drops everything until the close frame (its code) or the
    /// end of the connection (`None`); panics after `timeout`.
    pub async fn wait_closed(&mut self, timeout: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(c) = self.closed {
                return c;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(RawEvent::Text(t)) => {
                    if let Ok(v) = serde_json::from_str::<Value>(&t) {
                        self.backlog.push_back(v);
                        if self.backlog.len() > 64 {
                            self.backlog.pop_front();
                        }
                    }
                }
                Some(RawEvent::Violation(v)) => panic!("{}: protocol violation: {v}", self.name),
                Some(_) => {}
                None => panic!(
                    "{}: not closed within {timeout:?} (pings seen: {})",
                    self.name, self.pings
                ),
            }
        }
    }

    /// Frames read by `wait_closed` / `expect` and not taken.
    pub fn backlog(&self) -> Vec<Value> {
        self.backlog.iter().cloned().collect()
    }
}

/// Resumes `token` over a `RawWs` (which then reads nothing unless told to).
pub async fn raw_resume(addr: SocketAddr, token: &str, recv_buffer: Option<u32>) -> RawWs {
    let raw = RawWs::connect(
        addr,
        "/ws/web",
        &[("User-Agent", CHROME_LINUX_UA)],
        recv_buffer,
    )
    .await;
    resume_over(raw, token).await
}

async fn resume_over(raw: RawWs, token: &str) -> RawWs {
    let mut raw = auth_over(raw, token).await;
    let st = raw.recv_json().await;
    assert_eq!(st["type"], "phone_status", "{st}");
    raw
}

/// A phone over a `RawWs`: hello, auth, ready.
pub async fn raw_phone(addr: SocketAddr, token: &str, recv_buffer: Option<u32>) -> RawWs {
    let raw = RawWs::connect(addr, "/ws/phone", &[], recv_buffer).await;
    auth_over(raw, token).await
}

/// hello, `auth`, ready: a phone, or a web session before its `phone_status`.
async fn auth_over(mut raw: RawWs, token: &str) -> RawWs {
    let hello = raw.recv_json().await;
    assert_eq!(hello["type"], "hello", "{hello}");
    raw.send_text(&auth(token).to_text(None)).await;
    let ready = raw.recv_json().await;
    assert_eq!(ready["type"], "ready", "{ready}");
    raw
}

/// A gateway whose queues let a lot wait (64 MiB, 100,000 frames/s), a phone,
/// and one linked session resumed on a raw socket with a 4 KiB receive
/// buffer: the web that stops reading, with the phone told it is online.
pub async fn web_on_a_small_buffer(name: &str) -> (TestGateway, Client, Session, RawWs) {
    let gw = TestGateway::spawn(|c| {
        c.max_queue_bytes = 64 << 20;
        c.max_frames_per_sec = 100_000;
    })
    .await;
    let acc = account(name);
    let phone = gw.phone(&acc).await;
    let s = gw.pair(&phone, &PairOpts::new()).await;
    s.web.close().await;
    phone.expect("session_offline").await;
    let raw = raw_resume(gw.addr, &s.token, Some(4096)).await;
    phone.expect("session_online").await;
    (gw, phone, s, raw)
}

/// Asks each web socket, right after the answer to a logout (the phone's
/// `ok`, the operator API's 200), for a pong: a WebSocket ping. Then
/// [`assert_torn_down_before`] reads what came back.
pub async fn ping_after_ok(webs: &mut [&mut RawWs]) {
    for web in webs.iter_mut() {
        web.send_frame(0x9, b"after-ok").await;
    }
}

/// `web` reads `logged_out{reason}`, then close 4001, and no pong before the
/// close: the close was written before the logout's answer (given that
/// `ping_after_ok` pinged `web` once the answer was read).
///
/// Why this and not "already readable when the answer is read", nor a
/// tolerance: TCP orders bytes on one connection only. The close goes out on
/// the web's connection, the answer on the phone's (or the operator's HTTP
/// connection): another task, maybe another CPU; under load the kernel may
/// finish delivering the first after the second, so a check of what is
/// buffered when the answer is read could fail although the gateway wrote in
/// the right order, and a tolerance could pass although it wrote in the wrong
/// one. So the order is read off one connection: the ping was sent after the
/// answer arrived; a WebSocket endpoint answers no ping once it has sent its
/// close frame. If the gateway had answered first and written the close
/// later, a ping it read in between is answered, and the pong comes before
/// the close frame: this fails.
pub async fn assert_torn_down_before(web: &mut RawWs, reason: &str) {
    let mut before_close = Vec::new();
    loop {
        match web.next_event(T).await {
            Some(RawEvent::Text(t)) => {
                before_close.push(serde_json::from_str::<Value>(&t).unwrap())
            }
            Some(RawEvent::Ping) => {}
            Some(RawEvent::Pong) => panic!(
                "{}: the ping sent after the logout's answer was answered before the \
                 close: the gateway answered before it closed the socket",
                web.name
            ),
            Some(RawEvent::Close(code)) => {
                assert_eq!(code, Some(4001), "{}", web.name);
                break;
            }
            other => panic!("{}: before the close: {other:?}", web.name),
        }
    }
    let lo = before_close
        .iter()
        .chain(web.backlog().iter())
        .find(|m| m["type"] == "logged_out")
        .unwrap_or_else(|| panic!("{}: no logged_out before the close", web.name))
        .clone();
    assert_eq!(lo["reason"], reason, "{lo}");
    assert_no_id(&lo);
    assert_eq!(
        before_close.last().map(|m| m["type"].clone()),
        Some(serde_json::json!("logged_out")),
        "{}: logged_out is the last frame before the close: {before_close:?}",
        web.name
    );
}
