#![doc = include_str!("../README.md")]
//!
//! # Design
//!
//! A [`Client`] buffers frames it was not asked for, so waiting for one reply
//! never loses an event that arrived first. Every wait has a timeout
//! ([`ConnectOptions::timeout`]).
//!
//! The frames are encoded by [`protocol::ClientFrame::to_text`], from the
//! `pairgate-protocol` crate (re-exported here as [`protocol`]): the same
//! types the gateway parses with, so client and server cannot disagree on a
//! field name. That crate is small (serde, tungstenite) on purpose: a client
//! does not depend on the gateway (`pairgate`), which would drag in its
//! storage, HTTP server and Redis client; the gateway depends on this crate
//! instead and re-exports it as `pairgate::client` for its CLI and tests.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream, lookup_host};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

pub use pairgate_protocol as protocol;
use protocol::{ClientFrame, LinkTarget, SessionInfo};

/// TLS settings for `wss://` (the system-independent webpki roots, plus a CA
/// of your own): see [`tls::config`].
pub mod tls;
pub use rustls;

/// The socket under a [`Client`]: plain TCP for `ws://`, TLS for `wss://`.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect failed: {0}")]
    Connect(String),
    #[error("socket error: {0}")]
    Socket(#[from] tungstenite::Error),
    #[error("socket closed (code {0:?})")]
    Closed(Option<u16>),
    #[error("timed out waiting for {0}")]
    Timeout(String),
    #[error("{code}: {message}")]
    Reply { code: String, message: String },
    #[error("unexpected frame: {0}")]
    Unexpected(Value),
}

impl ClientError {
    /// The `error` reply's code as the server wrote it.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Reply { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// How to open a socket.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    pub user_agent: Option<String>,
    pub origin: Option<String>,
    /// Local address to connect from (spreads ports over 127.0.0.x).
    pub bind: Option<IpAddr>,
    /// How long each wait for a frame may take.
    pub timeout: Duration,
    /// The socket's receive buffer (`SO_RCVBUF`), set before connecting: a
    /// small one plays a client that reads slowly or not at all.
    pub recv_buffer: Option<u32>,
    /// More request headers for the upgrade (a proxy's, an API gateway's).
    pub headers: Vec<(String, String)>,
    /// TLS for `wss://` URLs: `None` trusts the webpki roots (public CAs);
    /// [`tls::config`] with a CA file trusts a private or self-signed one too.
    /// Unused for `ws://`.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            user_agent: Some(format!("pairgate-client/{}", env!("CARGO_PKG_VERSION"))),
            origin: None,
            bind: None,
            timeout: Duration::from_secs(10),
            recv_buffer: None,
            headers: Vec::new(),
            tls: None,
        }
    }
}

/// The phone's view of a pending link.
#[derive(Clone, Debug)]
pub struct LinkRequest {
    pub request_id: String,
    pub device_name: String,
    pub user_agent: String,
    pub ip: String,
}

pub struct Client {
    ws: Socket,
    buffered: VecDeque<Value>,
    next_id: u64,
    closed: Option<Option<u16>>,
    timeout: Duration,
    /// The server's `hello`.
    pub hello: Value,
}

impl Client {
    /// Opens `url` (`ws://host:port/ws/phone` or `/ws/web`, or `wss://` for
    /// TLS) and reads `hello`.
    pub async fn connect(url: &str, opts: &ConnectOptions) -> Result<Client, ClientError> {
        let mut request = url
            .into_client_request()
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let headers = request.headers_mut();
        for (name, value) in [("user-agent", &opts.user_agent), ("origin", &opts.origin)] {
            if let Some(v) = value {
                let v =
                    HeaderValue::from_str(v).map_err(|e| ClientError::Connect(e.to_string()))?;
                headers.insert(name, v);
            }
        }
        for (name, value) in &opts.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| ClientError::Connect(format!("header {name:?}: {e}")))?;
            let value =
                HeaderValue::from_str(value).map_err(|e| ClientError::Connect(e.to_string()))?;
            headers.append(name, value);
        }
        let host = request
            .uri()
            .host()
            .unwrap_or("127.0.0.1")
            .trim_matches(['[', ']']);
        let secure = match request.uri().scheme_str() {
            Some("wss") => true,
            Some("ws") => false,
            other => {
                return Err(ClientError::Connect(format!(
                    "unsupported scheme {other:?}: use ws:// or wss://"
                )));
            }
        };
        let port = request
            .uri()
            .port_u16()
            .unwrap_or(if secure { 443 } else { 80 });
        let addr: SocketAddr = lookup_host((host, port))
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?
            .next()
            .ok_or_else(|| ClientError::Connect(format!("no address for {host}")))?;
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| ClientError::Connect(e.to_string()))?;
        if let Some(bytes) = opts.recv_buffer {
            socket
                .set_recv_buffer_size(bytes)
                .map_err(|e| ClientError::Connect(format!("SO_RCVBUF: {e}")))?;
        }
        if let Some(ip) = opts.bind {
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|e| ClientError::Connect(format!("bind {ip}: {e}")))?;
        }
        let stream = tokio::time::timeout(opts.timeout, socket.connect(addr))
            .await
            .map_err(|_| ClientError::Timeout("connect".into()))?
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        stream.set_nodelay(true).ok();
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(8192);
        let connector = if secure {
            let tls = match &opts.tls {
                Some(c) => c.clone(),
                None => tls::default_config(),
            };
            Connector::Rustls(tls)
        } else {
            Connector::Plain
        };
        // The TLS handshake and the upgrade share one deadline.
        let (ws, _) = tokio::time::timeout(
            opts.timeout,
            tokio_tungstenite::client_async_tls_with_config(
                request,
                stream,
                Some(config),
                Some(connector),
            ),
        )
        .await
        .map_err(|_| ClientError::Timeout("upgrade".into()))??;
        let mut client = Client {
            ws,
            buffered: VecDeque::new(),
            next_id: 0,
            closed: None,
            timeout: opts.timeout,
            hello: Value::Null,
        };
        client.hello = client.expect("hello").await?;
        Ok(client)
    }

    /// A phone socket, authenticated.
    pub async fn phone(
        url: &str,
        token: &str,
        opts: &ConnectOptions,
    ) -> Result<Client, ClientError> {
        let mut c = Client::connect(url, opts).await?;
        c.request(ClientFrame::Auth {
            token: token.to_owned(),
        })
        .await?;
        Ok(c)
    }

    /// The underlying socket, for callers that drive it themselves.
    pub fn into_socket(self) -> Socket {
        self.ws
    }

    /// An `id` this client has not used yet.
    pub fn fresh_id(&mut self) -> String {
        self.next_id += 1;
        format!("c{}", self.next_id)
    }

    /// Sends `frame` (with `id` when given) without waiting for a reply.
    pub async fn send(
        &mut self,
        frame: &ClientFrame<'_>,
        id: Option<&str>,
    ) -> Result<(), ClientError> {
        self.send_text(frame.to_text(id)).await
    }

    /// Sends a text frame as given: for frames the typed ones cannot say
    /// (tests of malformed input).
    pub async fn send_text(&mut self, text: String) -> Result<(), ClientError> {
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    /// The next frame from the wire, ignoring buffered ones.
    async fn read(&mut self) -> Result<Value, ClientError> {
        if let Some(code) = self.closed {
            return Err(ClientError::Closed(code));
        }
        loop {
            let msg = tokio::time::timeout(self.timeout, self.ws.next())
                .await
                .map_err(|_| ClientError::Timeout("a frame".into()))?;
            match msg {
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str(t.as_str())
                        .map_err(|_| ClientError::Unexpected(Value::String(t.to_string())));
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map(|f| u16::from(f.code));
                    self.closed = Some(code);
                    return Err(ClientError::Closed(code));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    self.closed = Some(None);
                    return Err(e.into());
                }
                None => {
                    self.closed = Some(None);
                    return Err(ClientError::Closed(None));
                }
            }
        }
    }

    /// The next frame, buffered or new.
    pub async fn next(&mut self) -> Result<Value, ClientError> {
        match self.buffered.pop_front() {
            Some(v) => Ok(v),
            None => self.read().await,
        }
    }

    /// The first frame matching `want`; others are kept for later.
    pub async fn wait_for(&mut self, want: impl Fn(&Value) -> bool) -> Result<Value, ClientError> {
        if let Some(i) = self.buffered.iter().position(&want) {
            return Ok(self.buffered.remove(i).unwrap_or_default());
        }
        loop {
            let v = self.read().await?;
            if want(&v) {
                return Ok(v);
            }
            self.buffered.push_back(v);
        }
    }

    /// The first frame of `kind`.
    pub async fn expect(&mut self, kind: &str) -> Result<Value, ClientError> {
        self.wait_for(|v| v["type"] == kind).await
    }

    /// Sends `frame` with a fresh `id` and returns its reply; an `error` reply
    /// becomes `ClientError::Reply`.
    pub async fn request(&mut self, frame: ClientFrame<'_>) -> Result<Value, ClientError> {
        let id = self.fresh_id();
        self.send(&frame, Some(&id)).await?;
        let reply = self.wait_for(|v| v["id"] == id.as_str()).await?;
        if reply["type"] == "error" {
            return Err(ClientError::Reply {
                code: reply["code"].as_str().unwrap_or_default().to_owned(),
                message: reply["message"].as_str().unwrap_or_default().to_owned(),
            });
        }
        Ok(reply)
    }

    /// Waits for the close frame; its code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            match self.read().await {
                Err(ClientError::Closed(code)) => return code,
                Err(_) => return None,
                Ok(v) => self.buffered.push_back(v),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    // ---- what a phone does ---------------------------------------------------

    /// `link` by a ref, a typed code, or a QR payload (`.../phone#ref=REF`).
    pub async fn link(&mut self, target: &str) -> Result<LinkRequest, ClientError> {
        let r = self.request(ClientFrame::Link(link_target(target))).await?;
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        Ok(LinkRequest {
            request_id: text(&r["request_id"]),
            device_name: text(&r["device"]["name"]),
            user_agent: text(&r["device"]["user_agent"]),
            ip: text(&r["device"]["ip"]),
        })
    }

    /// Links `web`, a fresh web socket, to this phone the way a person does:
    /// `web` asks to `pair` (remembered), this phone links its ref and
    /// confirms. Returns the web's `linked` frame (its session id and token).
    pub async fn pair_web(&mut self, web: &mut Client) -> Result<Value, ClientError> {
        let qr = web
            .request(ClientFrame::Pair {
                remember: true,
                device_name: None,
            })
            .await?;
        let Some(reference) = qr["ref"].as_str() else {
            return Err(ClientError::Unexpected(qr));
        };
        let request = self.link(reference).await?;
        self.confirm(&request.request_id).await?;
        web.expect("linked").await
    }

    pub async fn confirm(&mut self, request_id: &str) -> Result<SessionInfo, ClientError> {
        let r = self
            .request(ClientFrame::LinkConfirm {
                request_id: request_id.to_owned(),
            })
            .await?;
        serde_json::from_value(r["session"].clone()).map_err(|_| ClientError::Unexpected(r))
    }
}

/// What a phone's `link` names: a QR payload (`.../phone#ref=REF`) or a bare
/// ref is a ref; 8 Crockford symbols (hyphen optional) are a typed code.
pub fn link_target(target: &str) -> LinkTarget {
    let target = target.trim();
    if let Some((_, r)) = target.split_once("#ref=") {
        return LinkTarget::Ref(r.to_owned());
    }
    if protocol::normalize_code(target).is_some() {
        return LinkTarget::Code(target.to_owned());
    }
    LinkTarget::Ref(target.to_owned())
}

#[cfg(test)]
mod tests {
    use super::{LinkTarget, link_target};

    #[test]
    fn payloads_refs_and_codes() {
        assert_eq!(
            link_target("http://h/phone#ref=abc"),
            LinkTarget::Ref("abc".into())
        );
        assert!(matches!(link_target("abcd-efgh"), LinkTarget::Code(_)));
        assert!(matches!(
            link_target("Zx_9-longrefvalue1234567"),
            LinkTarget::Ref(_)
        ));
    }
}
