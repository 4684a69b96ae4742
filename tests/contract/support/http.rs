//! A tiny HTTP/1.1 client (`Connection: close`, chunked bodies) and a bare
//! WebSocket upgrade request, for the pages, `/healthz`, `/readyz`,
//! `/metrics`, the operator API and the upgrade checks (Host, Origin).

use std::net::SocketAddr;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::T;

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body as JSON (a failure names the status and the text).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{}: body is not JSON ({e}): {:?}", self.status, self.text())
        })
    }
}

pub(super) fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

pub(super) fn parse_head(head: &[u8]) -> (u16, Vec<(String, String)>) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    (status, headers)
}

fn decode_chunked(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim().to_string();
        let Ok(size) = usize::from_str_radix(&size_text, 16) else {
            break;
        };
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            out.extend_from_slice(&data[..size.min(data.len())]);
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

/// `GET path` with `Connection: close`; `headers` may override `Host`.
pub async fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    http_request(addr, "GET", path, headers).await
}

/// `POST path` with an empty body and `Connection: close`.
pub async fn http_post(addr: SocketAddr, path: &str) -> HttpResponse {
    http_request(addr, "POST", path, &[("Content-Length", "0")]).await
}

/// `METHOD path` with `Connection: close`; `headers` may override `Host`.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    http_send(addr, method, path, headers, b"").await
}

/// `METHOD path` with `headers` and `body` (with its `Content-Length`, when
/// there is one) and `Connection: close`.
pub async fn http_send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut req = request_head(addr, &format!("{method} {path} HTTP/1.1"), headers);
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("Connection: close\r\n\r\n");
    let mut req = req.into_bytes();
    req.extend_from_slice(body);
    let fut = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(&req).await.expect("write request");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read response");
        buf
    };
    let buf = tokio::time::timeout(T, fut)
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no complete answer within {T:?}"));
    let end =
        find_head_end(&buf).unwrap_or_else(|| panic!("{method} {path}: no HTTP head in {buf:?}"));
    let (status, headers) = parse_head(&buf[..end]);
    let mut body = buf[end..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    if chunked {
        body = decode_chunked(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

/// `first` (the request line, perhaps with fixed headers), then `headers`,
/// with a `Host` naming `addr` unless `headers` set one; not yet ended.
fn request_head(addr: SocketAddr, first: &str, headers: &[(&str, &str)]) -> String {
    let mut req = format!("{first}\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req
}

/// Sends a WebSocket upgrade request for `path` with `headers` (which may set
/// `Host` and `Origin`) and returns the answer's status (101 = upgraded).
pub async fn upgrade_status(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> u16 {
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
    let mut req = request_head(
        addr,
        &format!(
            "GET {path} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13"
        ),
        headers,
    );
    req.push_str("\r\n");
    let fut = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(req.as_bytes()).await.expect("write request");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = find_head_end(&buf) {
                return parse_head(&buf[..end]).0;
            }
            let n = s.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed before an HTTP answer: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(T, fut)
        .await
        .unwrap_or_else(|_| panic!("upgrade {path} {headers:?}: no answer within {T:?}"))
}
