//! The HTTP side: the embedded pages, `/healthz`, `/readyz`, `/metrics` (here
//! or on `--metrics-listen`'s own listener), the demo token route, the
//! operator API (in [`crate::admin`]), and the two WebSocket upgrades behind
//! the Host and Origin checks ([`crate::origin`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::TokioIo;
use rust_embed::RustEmbed;
use tokio_tungstenite::WebSocketStream;
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::Role as WsRole;

use crate::conn::{self, ClientInfo};
use crate::demo::DemoTokens;
use crate::gateway::Gateway;
use crate::protocol::Role;

/// `static/`, compiled into the binary so it serves from any working directory.
#[derive(RustEmbed)]
#[folder = "static/"]
struct Assets;

/// The JavaScript client library, served as `/static/pairgate.js`: the page
/// imports the very file integrators use, so the two cannot drift apart.
const CLIENT_JS: &[u8] = include_bytes!("../clients/js/pairgate.js");

#[derive(Clone)]
struct AppState {
    gw: Arc<Gateway>,
    demo: Arc<DemoTokens>,
}

pub fn router(gw: Arc<Gateway>) -> Router {
    let demo = gw.config.demo;
    let admin = crate::admin::routes(&gw);
    let state = AppState {
        demo: Arc::default(),
        gw,
    };
    if demo {
        let limiter = state.demo.clone();
        crate::ip_rate::spawn_sweeper(
            &state.gw.tasks,
            state.gw.shutdown.clone(),
            Duration::from_secs(10),
            move |now| limiter.sweep(now),
        );
    }
    let mut app = Router::new()
        .route("/", get(|| async { asset("index.html") }))
        .route(
            "/phone",
            get(move || async move {
                if demo {
                    asset("phone.html")
                } else {
                    asset("no-demo.html")
                }
            }),
        )
        .route(
            "/static/{file}",
            get(move |Path(file): Path<String>| async move {
                // The demo phone's parts exist only with --demo.
                if !demo && file.starts_with("phone.") {
                    return (StatusCode::NOT_FOUND, "not found").into_response();
                }
                asset(&file)
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/ws/web", get(ws_web))
        .route("/ws/phone", get(ws_phone));
    // With --metrics-listen, `/metrics` is that listener's alone (the
    // fallback answers 404 here), so the main one may face the internet.
    if state.gw.config.metrics_listen.is_none() {
        app = app.route("/metrics", get(metrics));
    }
    if demo {
        app = app.route("/demo/phone", post(demo_phone));
    }
    if let Some(admin) = admin {
        app = app.merge(admin);
    }
    app.fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
        .layer(axum::middleware::map_response(crate::security_headers::add))
        .with_state(state)
}

/// `--metrics-listen`'s router: `/metrics` only.
pub fn metrics_router(gw: Arc<Gateway>) -> Router {
    let state = AppState {
        demo: Arc::default(),
        gw,
    };
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
        .layer(axum::middleware::map_response(crate::security_headers::add))
        .with_state(state)
}

fn asset(name: &str) -> Response {
    let data = match Assets::get(name) {
        Some(file) => file.data,
        None if name == "pairgate.js" => CLIENT_JS.into(),
        None => return (StatusCode::NOT_FOUND, "not found").into_response(),
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
        data,
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
    if let Err((refusal, why)) = crate::origin::check(&gw.config, &gw.host_rule, headers) {
        gw.metrics.upgrade_refused(refusal.as_str());
        // The headers and address are this refusal's; `refused` counts the
        // ones of its reason since the last line, this one included.
        if let Some(refused) = gw.refusal_log.note(refusal) {
            tracing::info!(
                reason = refusal.as_str(),
                refused,
                host = ?headers.get(header::HOST),
                origin = ?headers.get(header::ORIGIN),
                ip = %addr.ip(),
                "upgrade refused: {why}"
            );
        }
        return (StatusCode::FORBIDDEN, why).into_response();
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

/// `POST /demo/phone` (only with `--demo`): a phone token for a fresh
/// throw-away account; limits in [`crate::demo`].
async fn demo_phone(
    State(s): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    // Behind a trusted proxy every browser shares the proxy's address.
    let ip = crate::client_ip::client_ip(addr.ip(), &headers, &s.gw.config.trust_proxy);
    if let Err(limited) = s.demo.allow(ip, Instant::now()) {
        s.gw.metrics.rate_limited("demo_tokens");
        tracing::info!(%ip, ?limited, "demo token refused: rate limited");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, HeaderValue::from_static("60"))],
            "too many demo accounts; wait a minute",
        )
            .into_response();
    }
    let account = crate::ids::random_id::<5>("demo-");
    match s.gw.tokens.mint_phone(&account, crate::demo::TOKEN_TTL) {
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
    use super::Assets;

    /// The pages are served under a path prefix too (`--public-url
    /// https://host/pairgate`): every link in them is relative.
    #[test]
    fn no_page_has_an_absolute_path() {
        let pages: Vec<_> = Assets::iter().filter(|f| f.ends_with(".html")).collect();
        assert!(pages.iter().any(|p| p == "no-demo.html"), "{pages:?}");
        for page in pages {
            let html = Assets::get(&page).expect("listed").data;
            let html = String::from_utf8_lossy(&html);
            for absolute in ["href=\"/", "src=\"/", "action=\"/"] {
                assert!(!html.contains(absolute), "{page}: {absolute}");
            }
        }
    }
}
