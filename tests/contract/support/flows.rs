//! What clients do, written once: open a phone (hello, auth, ready), open a
//! web socket, pair a session through a phone (pair, link, link_confirm),
//! resume one, check that a token is logged out, list sessions. Every frame
//! these flows send is encoded by `pairgate::protocol::ClientFrame::to_text`,
//! the crate's one client-frame encoder.

use std::net::SocketAddr;

use pairgate::protocol::{ClientFrame, LinkTarget};
use serde_json::Value;

use super::{CHROME_LINUX_UA, Client, LONG, Rx, T};

/// Asserts that `c` receives an `error` with `code` and is then closed with `close`.
pub async fn expect_error_and_close(c: &Client, code: &str, close: u16) {
    c.expect_error(code).await;
    assert_eq!(c.expect_close().await, close, "{}: close code", c.name);
}

pub fn ws_url(addr: SocketAddr, path: &str) -> String {
    format!("ws://{addr}{path}")
}

/// `auth` with `token`.
pub fn auth(token: &str) -> ClientFrame<'static> {
    ClientFrame::Auth {
        token: token.to_owned(),
    }
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// `link` by the ref of a `qr` frame.
pub fn link_ref(qr: &Value) -> ClientFrame<'static> {
    ClientFrame::Link(LinkTarget::Ref(text(&qr["ref"])))
}

/// `link` by the code of a `qr` frame.
pub fn link_code(qr: &Value) -> ClientFrame<'static> {
    ClientFrame::Link(LinkTarget::Code(text(&qr["code"])))
}

/// `link_confirm` of a `link_request`.
pub fn confirm(lr: &Value) -> ClientFrame<'static> {
    ClientFrame::LinkConfirm {
        request_id: text(&lr["request_id"]),
    }
}

/// `link_reject` of a `link_request`.
pub fn reject(lr: &Value) -> ClientFrame<'static> {
    ClientFrame::LinkReject {
        request_id: text(&lr["request_id"]),
    }
}

/// The phone's `logout` of one session.
pub fn logout(session_id: &str) -> ClientFrame<'static> {
    ClientFrame::Logout {
        session_id: Some(session_id.to_owned()),
    }
}

/// Waits for `ready` or `error`, the two answers to `auth`.
async fn auth_answer(c: &Client) -> Rx {
    c.expect_where("ready or error", T, |m| {
        m["type"] == "ready" || m["type"] == "error"
    })
    .await
}

/// Opens `/ws/phone`, checks `hello`, authenticates, checks `ready`.
pub async fn open_phone(addr: SocketAddr, account: &str, token: &str) -> Client {
    let c = Client::open(&ws_url(addr, "/ws/phone"))
        .await
        .named(format!("phone:{account}"));
    let hello = c.expect("hello").await;
    assert_eq!(hello["protocol"], 1, "{hello}");
    c.send_frame(&auth(token), None).await;
    let ready = auth_answer(&c).await.msg;
    assert_eq!(ready["type"], "ready", "phone auth failed: {ready}");
    assert_eq!(ready["role"], "phone", "{ready}");
    assert_eq!(ready["account"], account, "{ready}");
    c
}

/// Opens `/ws/web` with `user_agent` (none if `None`) and takes `hello`.
pub async fn open_web(addr: SocketAddr, user_agent: Option<&str>) -> Client {
    let c = Client::open_with(&ws_url(addr, "/ws/web"), user_agent, None).await;
    let hello = c.expect("hello").await;
    assert_eq!(hello["protocol"], 1, "{hello}");
    c
}

#[derive(Clone, Debug)]
pub struct PairOpts {
    /// (`remember` left out means true: `auth.rs` checks that literally.)
    pub remember: bool,
    pub device_name: Option<String>,
    /// `None`: no User-Agent header.
    pub user_agent: Option<String>,
    /// Link with the pairing code instead of the ref.
    pub by_code: bool,
}

impl Default for PairOpts {
    fn default() -> Self {
        PairOpts {
            remember: true,
            device_name: None,
            user_agent: Some(CHROME_LINUX_UA.to_string()),
            by_code: false,
        }
    }
}

impl PairOpts {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn remember(mut self, r: bool) -> Self {
        self.remember = r;
        self
    }
    pub fn device_name(mut self, n: &str) -> Self {
        self.device_name = Some(n.to_string());
        self
    }
    pub fn user_agent(mut self, ua: Option<&str>) -> Self {
        self.user_agent = ua.map(str::to_string);
        self
    }
    pub fn by_code(mut self) -> Self {
        self.by_code = true;
        self
    }
    pub fn pair_frame(&self) -> ClientFrame<'static> {
        ClientFrame::Pair {
            remember: self.remember,
            device_name: self.device_name.clone(),
        }
    }
}

/// Opens a web socket, sends `pair`, returns it with its first `qr`.
pub async fn start_pairing(addr: SocketAddr, opts: &PairOpts) -> (Client, Value) {
    let web = open_web(addr, opts.user_agent.as_deref()).await;
    web.send_frame(&opts.pair_frame(), None).await;
    let qr = web.expect("qr").await;
    (web, qr)
}

/// A linked web session.
pub struct Session {
    pub web: Client,
    pub session_id: String,
    pub token: String,
    pub link_request: Value,
    pub device_linked: Value,
    pub linked: Value,
}

/// The `created_at` of a session, as its `device_linked` told the phone.
pub fn created_at(s: &Session) -> time::OffsetDateTime {
    super::parse_time(
        s.device_linked["session"]["created_at"]
            .as_str()
            .unwrap_or_else(|| panic!("device_linked without created_at: {}", s.device_linked)),
    )
}

/// Pairs a new web session through `phone` (link + link_confirm).
pub async fn pair_session(addr: SocketAddr, phone: &Client, opts: &PairOpts) -> Session {
    let (web, qr) = start_pairing(addr, opts).await;
    let link = if opts.by_code {
        link_code(&qr)
    } else {
        link_ref(&qr)
    };
    let lr = phone.request_frame(&link).await;
    assert_eq!(lr["type"], "link_request", "link failed: {lr}");
    let dl = phone.request_frame(&confirm(&lr)).await;
    assert_eq!(dl["type"], "device_linked", "link_confirm failed: {dl}");
    let linked_rx = web.expect_rx("linked").await;
    let linked = linked_rx.msg.clone();
    let st = web.expect_after(&linked_rx, "phone_status").await;
    assert_eq!(st["online"], true, "{st}");
    let session_id = linked["session_id"]
        .as_str()
        .unwrap_or_else(|| panic!("linked without session_id: {linked}"))
        .to_string();
    let token = linked["token"]
        .as_str()
        .unwrap_or_else(|| panic!("linked without token: {linked}"))
        .to_string();
    Session {
        web: web.named(format!("web:{session_id}")),
        session_id,
        token,
        link_request: lr,
        device_linked: dl,
        linked,
    }
}

/// Opens `/ws/web` and sends `auth` with `token`: (client, `ready` or `error`).
pub async fn resume(addr: SocketAddr, token: &str) -> (Client, Value) {
    let web = open_web(addr, Some(CHROME_LINUX_UA)).await;
    web.send_frame(&auth(token), None).await;
    let reply = auth_answer(&web).await.msg;
    (web, reply)
}

/// Resumes and asserts `ready` for `session_id` followed by `phone_status`.
pub async fn resume_ok(addr: SocketAddr, token: &str, session_id: &str) -> Client {
    let web = open_web(addr, Some(CHROME_LINUX_UA)).await;
    web.send_frame(&auth(token), None).await;
    let rx = auth_answer(&web).await;
    assert_eq!(rx.msg["type"], "ready", "resume failed: {}", rx.msg);
    assert_eq!(rx.msg["role"], "web", "{}", rx.msg);
    assert_eq!(rx.msg["session_id"], session_id, "{}", rx.msg);
    web.expect_after(&rx, "phone_status").await;
    web.named(format!("web:{session_id}"))
}

/// A resume with `token` gets `error logged_out` and close 4001.
pub async fn assert_logged_out(addr: SocketAddr, token: &str) {
    let (web, reply) = resume(addr, token).await;
    assert_eq!(reply["type"], "error", "expected logged_out, got {reply}");
    assert_eq!(
        reply["code"], "logged_out",
        "expected logged_out, got {reply}"
    );
    assert_eq!(web.expect_close().await, 4001, "logged_out close code");
}

/// `list_sessions` through `phone`: the sessions array.
pub async fn list_sessions(phone: &Client) -> Vec<Value> {
    let r = phone.request_frame(&ClientFrame::ListSessions).await;
    assert_eq!(r["type"], "sessions", "list_sessions failed: {r}");
    r["sessions"]
        .as_array()
        .unwrap_or_else(|| panic!("sessions is not an array: {r}"))
        .clone()
}

pub fn session_ids(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|s| s["session_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The phone's next `session_removed` is `session_id`'s, for `expired`.
pub async fn expect_expired(phone: &Client, session_id: &str) {
    let removed = phone
        .expect_where("session_removed", LONG, |m| m["type"] == "session_removed")
        .await
        .msg;
    assert_eq!(removed["session_id"], session_id, "{removed}");
    assert_eq!(removed["reason"], "expired", "{removed}");
}

/// Moves session `s` from its client onto a raw socket at `addr`, which reads
/// nothing unless told to, so the order of what it got can be read off it;
/// waits for the phone to hear it go offline and come back.
pub async fn raw_session(addr: SocketAddr, phone: &Client, s: &Session) -> super::RawWs {
    s.web.close().await;
    phone
        .expect_field(
            "session_offline",
            "session_id",
            &serde_json::json!(s.session_id),
        )
        .await;
    let raw = super::raw_resume(addr, &s.token, None).await;
    phone
        .expect_field(
            "session_online",
            "session_id",
            &serde_json::json!(s.session_id),
        )
        .await;
    raw
}
