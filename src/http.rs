//! The HTTP side: the embedded pages, `/healthz`, `/readyz`, `/metrics`, the
//! demo token route, the operator API (in [`crate::admin`]), and the two
//! WebSocket upgrades behind the Origin check.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use dashmap::DashMap;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use rust_embed::RustEmbed;
use tokio_tungstenite::WebSocketStream;
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::Role as WsRole;

use crate::conn::{self, ClientInfo};
use crate::gateway::Gateway;
use crate::protocol::Role;

/// `static/`, compiled into the binary so it serves from any working directory.
#[derive(RustEmbed)]
#[folder = "static/"]
struct Assets;

#[derive(Clone)]
struct AppState {
    gw: Arc<Gateway>,
    demo_limits: Arc<DashMap<IpAddr, Mutex<(Instant, u32)>>>,
}

pub fn router(gw: Arc<Gateway>) -> Router {
    let demo = gw.config.demo;
    let admin = crate::admin::routes(&gw);
    let state = AppState {
        gw,
        demo_limits: Arc::default(),
    };
    let mut app = Router::new()
        .route("/", get(|| async { asset("index.html") }))
        .route("/phone", get(|| async { asset("phone.html") }))
        .route(
            "/static/{file}",
            get(|Path(file): Path<String>| async move { asset(&file) }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/ws/web", get(ws_web))
        .route("/ws/phone", get(ws_phone));
    if demo {
        app = app.route("/demo/phone", post(demo_phone));
    }
    if let Some(admin) = admin {
        app = app.merge(admin);
    }
    app.with_state(state)
}

fn asset(name: &str) -> Response {
    let Some(file) = Assets::get(name) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let mime = match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(mime)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        file.data,
    )
        .into_response()
}

/// `/readyz`: whether this node takes new sockets (a load balancer stops
/// sending it clients once it shuts down). `/healthz` only says the process runs.
async fn readyz(State(s): State<AppState>) -> Response {
    if s.gw.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        {
            let (accounts, requests) = s.gw.hub.census();
            s.gw.metrics.accounts_in_memory.set(accounts as i64);
            s.gw.metrics.link_requests_pending.set(requests as i64);
            s.gw.metrics.render()
        },
    )
        .into_response()
}

async fn ws_web(
    State(s): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    upgrade(s.gw, Role::Web, addr, req)
}

async fn ws_phone(
    State(s): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    upgrade(s.gw, Role::Phone, addr, req)
}

/// Whether a comma-separated header holds `token` (case-insensitively).
fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The WebSocket handshake (RFC 6455 section 4.2), done here rather than by
/// axum's extractor so the socket is a plain tokio-tungstenite stream: that
/// lets the gateway send a long frame in fragments and keep every socket's
/// write buffer small.
fn upgrade(gw: Arc<Gateway>, role: Role, addr: SocketAddr, mut req: Request) -> Response {
    let headers = req.headers();
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_ok = match origin {
        Some(origin) => origin_allowed(origin, host, gw.config.allowed_origins.as_deref()),
        // An Origin header that is not even text is not allowed.
        None => !headers.contains_key(header::ORIGIN),
    };
    if !origin_ok {
        gw.metrics.upgrade_refused("origin");
        tracing::debug!(?origin, "upgrade refused: origin not allowed");
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    let is_upgrade = req.method() == Method::GET
        && header_has(headers, header::CONNECTION, "upgrade")
        && header_has(headers, header::UPGRADE, "websocket");
    if !is_upgrade {
        return (
            StatusCode::UPGRADE_REQUIRED,
            [(header::UPGRADE, HeaderValue::from_static("websocket"))],
            "this endpoint speaks WebSocket",
        )
            .into_response();
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return (
            StatusCode::BAD_REQUEST,
            [(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            )],
            "unsupported WebSocket version",
        )
            .into_response();
    }
    let Some(accept) = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|key| crate::handshake::valid_websocket_key(key))
        // One key: with two, which one the client expects is anybody's guess.
        .filter(|_| {
            headers
                .get_all(header::SEC_WEBSOCKET_KEY)
                .iter()
                .nth(1)
                .is_none()
        })
        .map(|key| derive_accept_key(key.as_bytes()))
    else {
        return (
            StatusCode::BAD_REQUEST,
            "missing or malformed Sec-WebSocket-Key",
        )
            .into_response();
    };
    // Admission before the handshake: a refused upgrade costs no socket task.
    let ip = crate::client_ip::client_ip(addr.ip(), headers, &gw.config.trust_proxy);
    let place = match crate::admission::admit_upgrade(&gw, ip) {
        Ok(place) => place,
        Err(refused) => return refused.into_response(),
    };
    let client = ClientInfo {
        ip: ip.to_string(),
        place,
        // Only a pairing web socket shows its User-Agent to the phone.
        user_agent: match role {
            Role::Web => headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(crate::device::clean_user_agent)
                .unwrap_or_default(),
            Role::Phone => String::new(),
        },
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let config = conn::websocket_config(gw.config.max_frame_bytes as usize);
    let tasks = gw.tasks.clone();
    tasks.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    WsRole::Server,
                    Some(config),
                )
                .await;
                // The socket's life is a task of its own: this one, sized for
                // the handshake's states too, ends here.
                let tasks = gw.tasks.clone();
                tasks.spawn(conn::serve(gw, ws, role, client));
            }
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    response
}

/// `scheme://host[:port]` split into its parts, host lower-cased and the port
/// defaulted from the scheme.
fn parse_origin(origin: &str) -> Option<(String, String, u16)> {
    let (scheme, rest) = origin.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" | "ws" => 80,
        "https" | "wss" => 443,
        _ => 0,
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = split_host_port(rest, default_port)?;
    Some((scheme, host, port))
}

/// `host[:port]` (IPv6 in brackets) with the given default port.
fn split_host_port(s: &str, default_port: u16) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        (format!("[{h}]"), port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().ok()?),
            None => (s.to_owned(), default_port),
        }
    };
    (!host.is_empty()).then(|| (host.to_ascii_lowercase(), port))
}

/// The contract's Origin rule: with no list, the Origin's host and port must
/// equal the request's `Host`; a list replaces that; `*` allows any, `null` too.
fn origin_allowed(origin: &str, host: Option<&str>, allowed: Option<&[String]>) -> bool {
    if let Some(list) = allowed {
        if list.iter().any(|a| a.trim() == "*") {
            return true;
        }
        if origin == "null" {
            return false;
        }
        let Some(o) = parse_origin(origin) else {
            return false;
        };
        return list
            .iter()
            .any(|a| parse_origin(a.trim()).as_ref() == Some(&o));
    }
    if origin == "null" {
        return false;
    }
    let (Some((_, o_host, o_port)), Some(host)) = (parse_origin(origin), host) else {
        return false;
    };
    let default_port = if origin.to_ascii_lowercase().starts_with("https") {
        443
    } else {
        80
    };
    split_host_port(host, default_port) == Some((o_host, o_port))
}

/// Demo phone tokens per client IP per minute.
const DEMO_TOKENS_PER_MINUTE: u32 = 10;

/// `POST /demo/phone` (only with `--demo`): a phone token for a fresh
/// throw-away account, so a person can try pairing without an identity service.
async fn demo_phone(
    State(s): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
) -> Response {
    let ip = addr.ip().to_canonical();
    let allowed = {
        let entry = s
            .demo_limits
            .entry(ip)
            .or_insert_with(|| Mutex::new((Instant::now(), 0)));
        let mut window = entry.lock();
        if window.0.elapsed() >= Duration::from_secs(60) {
            *window = (Instant::now(), 0);
        }
        window.1 += 1;
        window.1 <= DEMO_TOKENS_PER_MINUTE
    };
    if !allowed {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many demo accounts; wait a minute",
        )
            .into_response();
    }
    let account = crate::ids::random_id::<5>("demo-");
    match s
        .gw
        .tokens
        .mint_phone(&account, Duration::from_secs(24 * 3600))
    {
        Ok(token) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            serde_json::json!({ "account": account, "token": token }).to_string(),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "demo token failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::origin_allowed;

    #[test]
    fn default_rule_compares_host_and_port() {
        let ok = |o, h| origin_allowed(o, Some(h), None);
        assert!(ok("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(ok("http://LOCALHOST:8080", "localhost:8080"));
        assert!(ok("http://example.com", "example.com:80"));
        assert!(ok("https://example.com", "example.com:443"));
        assert!(!ok("http://example.com", "example.com:8080"));
        assert!(!ok("http://evil.test:8080", "127.0.0.1:8080"));
        assert!(!ok("null", "127.0.0.1:8080"));
        assert!(ok("http://[::1]:8080", "[::1]:8080"));
    }

    #[test]
    fn list_replaces_default() {
        let list = vec!["https://app.example.com".to_owned()];
        assert!(origin_allowed(
            "https://APP.example.com:443",
            Some("x"),
            Some(&list)
        ));
        assert!(!origin_allowed("http://x:1", Some("x:1"), Some(&list)));
        assert!(!origin_allowed("null", None, Some(&list)));
        let any = vec!["*".to_owned()];
        assert!(origin_allowed("null", None, Some(&any)));
    }
}
