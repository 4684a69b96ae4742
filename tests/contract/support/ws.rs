//! The recording WebSocket client the tests talk through. It opens with the
//! crate's typed client (`pairgate::client::Client`: headers, `hello`), then
//! a background task reads all the time (so pings are answered) and records
//! every frame in arrival order, so frames can be taken out of order. Every wait has a deadline; a missed deadline
//! fails the test with the frames received but not consumed.
//!
//! Typed frames go out through `ClientFrame::to_text` (`send_frame`,
//! `request_frame`); `send_json` / `send_text` / `request` send literal JSON,
//! for the tests that check the wire itself (malformed, unknown or extra
//! fields, ids of odd types): that literal text is the point of those tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use pairgate::client::{ClientError, ConnectOptions};
use pairgate::protocol::ClientFrame;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

use super::{T, next_id};

type Ws = pairgate::client::Socket;

/// One received frame: its position among the socket's frames and its JSON
/// (`{"__text__":..}` / `{"__binary__":len}` if not JSON).
#[derive(Clone, Debug)]
pub struct Rx {
    pub idx: usize,
    pub msg: Value,
}

/// How a socket ended, as seen by the client.
#[derive(Clone, Debug)]
pub struct Closed {
    /// The close frame's code; `None` when the connection ended without one.
    pub code: Option<u16>,
    pub reason: String,
}

struct Entry {
    msg: Value,
    consumed: bool,
}

#[derive(Default)]
struct Inner {
    frames: Vec<Entry>,
    closed: Option<Closed>,
}

/// A WebSocket client whose background task reads (and so answers pings)
/// all the time and records every frame in arrival order.
pub struct Client {
    pub name: String,
    inner: Arc<Mutex<Inner>>,
    changed: watch::Receiver<u64>,
    sink: tokio::sync::Mutex<Option<SplitSink<Ws, Message>>>,
    reader: JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 300 {
        let mut end = 300;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s
    }
}

async fn read_loop(mut stream: SplitStream<Ws>, inner: Arc<Mutex<Inner>>, tx: watch::Sender<u64>) {
    let mut n = 0u64;
    let bump = |n: &mut u64| {
        *n += 1;
        let _ = tx.send(*n);
    };
    loop {
        let next = stream.next().await;
        match next {
            Some(Ok(Message::Text(t))) => {
                let msg = serde_json::from_str::<Value>(t.as_str())
                    .unwrap_or_else(|_| json!({"__text__": t.as_str()}));
                inner.lock().unwrap().frames.push(Entry {
                    msg,
                    consumed: false,
                });
                bump(&mut n);
            }
            Some(Ok(Message::Binary(b))) => {
                inner.lock().unwrap().frames.push(Entry {
                    msg: json!({"__binary__": b.len()}),
                    consumed: false,
                });
                bump(&mut n);
            }
            Some(Ok(Message::Close(cf))) => {
                {
                    let mut g = inner.lock().unwrap();
                    if g.closed.is_none() {
                        g.closed = Some(Closed {
                            code: cf.as_ref().map(|c| u16::from(c.code)),
                            reason: cf.map(|c| c.reason.to_string()).unwrap_or_default(),
                        });
                    }
                }
                bump(&mut n);
                // keep polling so that tungstenite sends its close reply
            }
            // The answer to `settle`'s ping, recorded (never a protocol frame).
            Some(Ok(Message::Pong(p))) => {
                inner.lock().unwrap().frames.push(Entry {
                    msg: json!({"__pong__": String::from_utf8_lossy(&p)}),
                    consumed: false,
                });
                bump(&mut n);
            }
            Some(Ok(_)) => {} // ping: tungstenite answers pings itself
            Some(Err(e)) => {
                let mut g = inner.lock().unwrap();
                if g.closed.is_none() {
                    g.closed = Some(Closed {
                        code: None,
                        reason: format!("error: {e}"),
                    });
                }
                drop(g);
                bump(&mut n);
                break;
            }
            None => {
                let mut g = inner.lock().unwrap();
                if g.closed.is_none() {
                    g.closed = Some(Closed {
                        code: None,
                        reason: "connection ended without a close frame".into(),
                    });
                }
                drop(g);
                bump(&mut n);
                break;
            }
        }
    }
}

/// Opens `url` with the crate's client (`pairgate::client::Client`, which
/// takes `hello`), then hands its socket to a recording reader; `hello` is
/// the first recorded frame.
pub async fn try_open(
    url: &str,
    user_agent: Option<&str>,
    origin: Option<&str>,
) -> Result<Client, ClientError> {
    let opts = ConnectOptions {
        user_agent: user_agent.map(str::to_owned),
        origin: origin.map(str::to_owned),
        timeout: T,
        ..ConnectOptions::default()
    };
    try_open_opts(url, &opts).await
}

/// Like `try_open`, with every connect option (a source address, say).
pub async fn try_open_opts(url: &str, opts: &ConnectOptions) -> Result<Client, ClientError> {
    let typed = pairgate::client::Client::connect(url, opts).await?;
    let hello = typed.hello.clone();
    let path = url.split_once("//").map(|x| x.1).unwrap_or(url);
    let path = path.find('/').map(|i| &path[i..]).unwrap_or("/");
    let name = format!("{path}#{}", next_id(""));
    Ok(Client::from_ws(typed.into_socket(), name, hello))
}

impl Client {
    fn from_ws(ws: Ws, name: String, hello: Value) -> Client {
        let (sink, stream) = ws.split();
        let inner = Arc::new(Mutex::new(Inner::default()));
        inner.lock().unwrap().frames.push(Entry {
            msg: hello,
            consumed: false,
        });
        let (tx, rx) = watch::channel(0u64);
        let reader = tokio::spawn(read_loop(stream, inner.clone(), tx));
        Client {
            name,
            inner,
            changed: rx,
            sink: tokio::sync::Mutex::new(Some(sink)),
            reader,
        }
    }

    /// Opens `url` with no User-Agent and no Origin.
    pub async fn open(url: &str) -> Client {
        Self::open_with(url, None, None).await
    }

    pub async fn open_with(url: &str, user_agent: Option<&str>, origin: Option<&str>) -> Client {
        try_open(url, user_agent, origin)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"))
    }

    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    // -- sending

    pub async fn try_send_raw(&self, msg: Message) -> Result<(), tungstenite::Error> {
        let mut g = self.sink.lock().await;
        match g.as_mut() {
            Some(s) => s.send(msg).await,
            None => Err(tungstenite::Error::AlreadyClosed),
        }
    }

    pub async fn send_raw(&self, msg: Message) {
        if let Err(e) = self.try_send_raw(msg).await {
            panic!("{}: send failed: {e}; {}", self.name, self.describe());
        }
    }

    pub async fn send_text(&self, text: impl Into<String>) {
        self.send_raw(Message::text(text.into())).await
    }

    pub async fn send_json(&self, v: Value) {
        self.send_text(v.to_string()).await
    }

    /// Sends a typed client frame (`ClientFrame::to_text`), with `id` if given.
    pub async fn send_frame(&self, frame: &ClientFrame<'_>, id: Option<&str>) {
        self.send_text(frame.to_text(id)).await
    }

    /// Sends a typed client frame with a fresh id; its one reply.
    pub async fn request_frame(&self, frame: &ClientFrame<'_>) -> Value {
        let id = next_id("r");
        self.send_frame(frame, Some(&id)).await;
        self.expect_id(&id).await
    }

    /// `send` of `body` (to one session, with `to`) as a typed frame; its reply.
    pub async fn send_body(&self, body: &Value, to: Option<&str>) -> Value {
        let body = serde_json::value::to_raw_value(body).expect("a JSON body");
        self.request_frame(&ClientFrame::Send {
            body: &body,
            to: to.map(str::to_owned),
        })
        .await
    }

    /// Sends a typed frame (fresh id) and expects an `error` with `code`.
    pub async fn request_frame_error(&self, frame: &ClientFrame<'_>, code: &str) -> Value {
        let r = self.request_frame(frame).await;
        self.assert_error(&r, code);
        r
    }

    /// Sends all frames, flushing once (pipelined).
    pub async fn send_many(&self, frames: impl IntoIterator<Item = Value>) {
        let mut g = self.sink.lock().await;
        let s = g.as_mut().expect("socket dropped");
        for f in frames {
            if let Err(e) = s.feed(Message::text(f.to_string())).await {
                panic!("{}: send failed: {e}", self.name);
            }
        }
        if let Err(e) = s.flush().await {
            panic!("{}: flush failed: {e}", self.name);
        }
    }

    /// Sends `frame` with an `id` (a fresh one unless it has one) and
    /// returns the one reply carrying that id.
    pub async fn request(&self, frame: Value) -> Value {
        self.request_within(frame, T).await
    }

    pub async fn request_within(&self, mut frame: Value, timeout: Duration) -> Value {
        let id = match frame.get("id") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                let id = next_id("r");
                frame["id"] = json!(id);
                id
            }
        };
        self.send_json(frame).await;
        self.expect_id_within(&id, timeout).await
    }

    /// Sends `frame` (with an id) and expects an `error` with `code` and that id.
    pub async fn request_error(&self, frame: Value, code: &str) -> Value {
        let r = self.request(frame).await;
        self.assert_error(&r, code);
        r
    }

    /// `r` is an `error` with `code` and a string message.
    fn assert_error(&self, r: &Value, code: &str) {
        assert_eq!(
            r["type"], "error",
            "{}: expected error {code}, got {r}",
            self.name
        );
        assert_eq!(
            r["code"], code,
            "{}: expected error {code}, got {r}",
            self.name
        );
        assert!(
            r["message"].is_string(),
            "error without a string message: {r}"
        );
    }

    // -- receiving

    fn describe(&self) -> String {
        let g = self.inner.lock().unwrap();
        let pending: Vec<String> = g
            .frames
            .iter()
            .filter(|f| !f.consumed)
            .map(|f| short(&f.msg))
            .collect();
        format!(
            "unconsumed frames of {}: {:?}; closed: {:?}",
            self.name,
            pending,
            g.closed.as_ref().map(|c| (c.code, c.reason.clone()))
        )
    }

    /// The first unconsumed frame matching `pred`, waiting up to `timeout`.
    pub async fn expect_where(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Rx {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.changed.clone();
        loop {
            changed.borrow_and_update();
            {
                let mut g = self.inner.lock().unwrap();
                if let Some(i) = g.frames.iter().position(|f| !f.consumed && pred(&f.msg)) {
                    g.frames[i].consumed = true;
                    return Rx {
                        idx: i,
                        msg: g.frames[i].msg.clone(),
                    };
                }
                if let Some(c) = &g.closed {
                    let c = c.clone();
                    drop(g);
                    panic!(
                        "{}: closed (code {:?}, {}) while waiting for {what}; {}",
                        self.name,
                        c.code,
                        c.reason,
                        self.describe()
                    );
                }
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{}: timed out after {timeout:?} waiting for {what}; {}",
                    self.name,
                    self.describe()
                );
            }
            // The reader records the end before it drops the sender, so a
            // closed channel is seen as `closed` on the next turn.
            let _ = tokio::time::timeout_at(deadline, changed.changed()).await;
        }
    }

    /// The next unconsumed frame of type `ty` (others stay buffered).
    pub async fn expect(&self, ty: &str) -> Value {
        self.expect_within(ty, T).await
    }

    pub async fn expect_within(&self, ty: &str, timeout: Duration) -> Value {
        self.expect_rx_within(ty, timeout).await.msg
    }

    pub async fn expect_rx(&self, ty: &str) -> Rx {
        self.expect_rx_within(ty, T).await
    }

    pub async fn expect_rx_within(&self, ty: &str, timeout: Duration) -> Rx {
        self.expect_where(&format!("type={ty}"), timeout, |m| m["type"] == ty)
            .await
    }

    /// The next unconsumed frame of type `ty` whose `field` equals `value`.
    pub async fn expect_field(&self, ty: &str, field: &str, value: &Value) -> Value {
        self.expect_where(&format!("type={ty} {field}={value}"), T, |m| {
            m["type"] == ty && &m[field] == value
        })
        .await
        .msg
    }

    pub async fn expect_id(&self, id: &str) -> Value {
        self.expect_id_within(id, T).await
    }

    pub async fn expect_id_within(&self, id: &str, timeout: Duration) -> Value {
        self.expect_where(&format!("id={id}"), timeout, |m| m["id"] == id)
            .await
            .msg
    }

    /// The next unconsumed `error`; asserts its code and string message.
    pub async fn expect_error(&self, code: &str) -> Value {
        let m = self.expect("error").await;
        assert_eq!(
            m["code"], code,
            "{}: expected error {code}, got {m}",
            self.name
        );
        assert!(
            m["message"].is_string(),
            "error without a string message: {m}"
        );
        m
    }

    /// The next unconsumed frame of any type.
    pub async fn recv(&self) -> Value {
        self.expect_where("any frame", T, |_| true).await.msg
    }

    /// The frame right after `rx` in arrival order (waits for it); consumes it.
    pub async fn expect_after(&self, rx: &Rx, ty: &str) -> Value {
        let deadline = tokio::time::Instant::now() + T;
        let mut changed = self.changed.clone();
        loop {
            changed.borrow_and_update();
            {
                let mut g = self.inner.lock().unwrap();
                if let Some(f) = g.frames.get_mut(rx.idx + 1) {
                    let msg = f.msg.clone();
                    f.consumed = true;
                    drop(g);
                    assert_eq!(
                        msg["type"], ty,
                        "{}: the frame after {} must be {ty}, got {msg}",
                        self.name, rx.msg
                    );
                    return msg;
                }
                if g.closed.is_some() {
                    drop(g);
                    panic!(
                        "{}: closed while waiting for {ty} after {}; {}",
                        self.name,
                        rx.msg,
                        self.describe()
                    );
                }
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{}: no frame after {} within {T:?}; {}",
                    self.name,
                    rx.msg,
                    self.describe()
                );
            }
            let _ = tokio::time::timeout_at(deadline, changed.changed()).await;
        }
    }

    /// Unconsumed frames of type `ty` (not consumed by this call).
    pub fn pending(&self, ty: &str) -> Vec<Value> {
        let g = self.inner.lock().unwrap();
        g.frames
            .iter()
            .filter(|f| !f.consumed && f.msg["type"] == ty)
            .map(|f| f.msg.clone())
            .collect()
    }

    /// Every frame received so far of type `ty`, consumed or not.
    pub fn all_of(&self, ty: &str) -> Vec<Value> {
        let g = self.inner.lock().unwrap();
        g.frames
            .iter()
            .filter(|f| f.msg["type"] == ty)
            .map(|f| f.msg.clone())
            .collect()
    }

    /// Every frame received so far.
    pub fn all_frames(&self) -> Vec<Value> {
        let g = self.inner.lock().unwrap();
        g.frames.iter().map(|f| f.msg.clone()).collect()
    }

    /// Every client frame with an id gets exactly one reply: no id appears
    /// twice among the frames received so far.
    pub fn assert_one_reply_per_id(&self) {
        let g = self.inner.lock().unwrap();
        let mut seen = std::collections::HashSet::new();
        for f in &g.frames {
            if let Some(id) = f.msg.get("id") {
                assert!(
                    seen.insert(id.to_string()),
                    "{}: two replies carry id {id}: {}",
                    self.name,
                    short(&f.msg)
                );
            }
        }
    }

    /// Asserts that no unconsumed frame of type `ty` arrived.
    pub fn assert_none(&self, ty: &str) {
        let p = self.pending(ty);
        assert!(p.is_empty(), "{}: unexpected {ty}: {p:?}", self.name);
    }

    /// Sends a ping and waits for its pong. The gateway writes what it
    /// queued for a socket before it reads the socket's next frame, and its
    /// pong goes out after that: so once the pong is here, every frame the
    /// gateway meant for this socket before the ping arrived is here too.
    pub async fn settle(&self) {
        let token = next_id("settle-");
        self.send_raw(Message::Ping(token.clone().into_bytes().into()))
            .await;
        self.expect_where(&format!("the pong of {token}"), T, |m| {
            m["__pong__"] == token.as_str()
        })
        .await;
    }

    /// Pings without waiting for the pong (a failed send is fine: the
    /// socket may be closing already).
    pub async fn ping_now(&self) {
        let _ = self
            .try_send_raw(Message::Ping(b"now".to_vec().into()))
            .await;
    }

    /// How many pongs arrived so far (to `settle` or `ping_now`).
    pub fn pongs(&self) -> usize {
        let g = self.inner.lock().unwrap();
        g.frames
            .iter()
            .filter(|f| f.msg.get("__pong__").is_some())
            .count()
    }

    /// Absence, without waiting a guessed while: after `settle`, no
    /// unconsumed frame of type `ty` arrived. What is checked absent is the
    /// effect of an action that was already answered, so the gateway had
    /// queued it before the settling ping, if it sent it at all.
    pub async fn assert_quiet(&self, ty: &str) {
        self.settle().await;
        self.assert_none(ty);
    }

    pub fn closed(&self) -> Option<Closed> {
        self.inner.lock().unwrap().closed.clone()
    }

    pub fn is_closed(&self) -> bool {
        self.closed().is_some()
    }

    /// Waits (default deadline) for the end of the socket.
    pub async fn wait_closed(&self) -> Closed {
        self.wait_closed_within(T).await
    }

    pub async fn wait_closed_within(&self, timeout: Duration) -> Closed {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.changed.clone();
        loop {
            changed.borrow_and_update();
            if let Some(c) = self.closed() {
                return c;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{}: not closed within {timeout:?}; {}",
                    self.name,
                    self.describe()
                );
            }
            // The reader records the end before it drops the sender, so a
            // closed channel is seen as `closed` on the next turn.
            let _ = tokio::time::timeout_at(deadline, changed.changed()).await;
        }
    }

    /// Waits for the close frame and returns its code (fails without one).
    pub async fn expect_close(&self) -> u16 {
        self.expect_close_within(T).await
    }

    pub async fn expect_close_within(&self, timeout: Duration) -> u16 {
        let c = self.wait_closed_within(timeout).await;
        match c.code {
            Some(code) => code,
            None => panic!(
                "{}: ended without a close frame ({}); {}",
                self.name,
                c.reason,
                self.describe()
            ),
        }
    }

    /// A clean close from the client side (1000); waits for the end.
    pub async fn close(&self) {
        let _ = self
            .try_send_raw(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(3), self.wait_closed_quiet()).await;
        self.sink.lock().await.take();
    }

    async fn wait_closed_quiet(&self) {
        let mut changed = self.changed.clone();
        loop {
            changed.borrow_and_update();
            if self.is_closed() {
                return;
            }
            if changed.changed().await.is_err() {
                return;
            }
        }
    }

    /// Drops the TCP connection without a close frame.
    pub async fn abort(&self) {
        self.reader.abort();
        self.sink.lock().await.take();
    }
}
