//! The operator API (`/admin/*`), served only with `--admin-token`: bearer
//! authentication, routing and the JSON answers. What each request does is a
//! domain call ([`Gateway::account_sessions`], [`Gateway::logout`] with
//! [`Actor::Admin`], [`Gateway::nodes`]); this file only speaks HTTP.
//!
//! The routes are matched here by hand rather than by axum's router, so that
//! the token is checked before anything else (an unauthenticated caller learns
//! nothing, not even which paths exist) and every answer, 404 and 405
//! included, is the API's JSON.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::account::sessions::Actor;
use crate::gateway::Gateway;
use crate::protocol::ErrorCode;
use crate::tokens::valid_account_id;

/// The `/admin/*` routes, for [`crate::http::router`] to merge; `None`
/// without `--admin-token`, so every `/admin/*` path is the router's plain
/// 404, like any path that does not exist.
pub fn routes<S>(gw: &Arc<Gateway>) -> Option<Router<S>> {
    gw.config.admin_token.as_ref()?;
    Some(
        Router::new()
            .route("/admin", any(admin))
            .route("/admin/", any(admin))
            .route("/admin/{*rest}", any(admin))
            .with_state(gw.clone()),
    )
}

/// One JSON answer.
fn json(status: StatusCode, body: &impl Serialize) -> Response {
    // Serializing these shapes cannot fail: plain structs and strings.
    let text = serde_json::to_string(body).unwrap_or_else(|_| String::from("{}"));
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        text,
    )
        .into_response()
}

fn error(status: StatusCode, code: &str) -> Response {
    json(status, &serde_json::json!({ "error": code }))
}

/// Whether the request carries `Authorization: Bearer <the admin token>`.
fn authorized(headers: &HeaderMap, expected: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim_start_matches(' '))
    else {
        return false;
    };
    // Constant time, so the answer's timing does not tell how much of a
    // guess was right (only the length can show).
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// Every `/admin` request: the token first, then the route.
async fn admin(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let Some(expected) = gw.config.admin_token.as_deref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !authorized(req.headers(), expected) {
        tracing::debug!(path = %req.uri().path(), "operator API: not authorized");
        let mut answer = error(StatusCode::UNAUTHORIZED, "unauthorized");
        answer
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return answer;
    }
    // Raw segments, not percent-decoded: an account or session id never
    // needs escaping, so an escaped one is simply not valid.
    let path = req.uri().path();
    let rest = path.strip_prefix("/admin/").unwrap_or_default();
    let segments: Vec<&str> = rest.split('/').collect();
    let method = req.method().clone();
    match segments.as_slice() {
        ["accounts", account, "sessions"] => {
            with_method(&method, Method::GET, account, || async {
                let sessions = match Box::pin(gw.account_sessions_routed(account)).await {
                    Ok(s) => s,
                    Err(code) => return failed(code),
                };
                tracing::info!(
                    account,
                    sessions = sessions.sessions.len(),
                    "operator listed sessions"
                );
                json(StatusCode::OK, &sessions)
            })
            .await
        }
        ["accounts", account, "sessions", session_id] => {
            with_method(&method, Method::DELETE, account, || async {
                logout(&gw, account, Some(session_id)).await
            })
            .await
        }
        ["accounts", account, "logout_all"] => {
            with_method(&method, Method::POST, account, || async {
                logout(&gw, account, None).await
            })
            .await
        }
        ["nodes"] => {
            if method != Method::GET {
                return method_not_allowed(Method::GET);
            }
            let nodes = match gw.nodes_routed().await {
                Ok(n) => n,
                Err(code) => return failed(code),
            };
            tracing::info!(nodes = nodes.len(), "operator listed nodes");
            json(StatusCode::OK, &serde_json::json!({ "nodes": nodes }))
        }
        _ => error(StatusCode::NOT_FOUND, "not_found"),
    }
}

/// Runs `handle` when the request has the route's method and names a valid
/// account; else the 405 or 400.
async fn with_method<F: Future<Output = Response>>(
    method: &Method,
    allowed: Method,
    account: &str,
    handle: impl FnOnce() -> F,
) -> Response {
    if *method != allowed {
        return method_not_allowed(allowed);
    }
    if !valid_account_id(account) {
        return error(StatusCode::BAD_REQUEST, "bad_request");
    }
    handle().await
}

fn method_not_allowed(allowed: Method) -> Response {
    let mut answer = error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    if let Ok(v) = HeaderValue::from_str(allowed.as_str()) {
        answer.headers_mut().insert(header::ALLOW, v);
    }
    answer
}

/// `DELETE .../sessions/{id}` (one) or `POST .../logout_all` (`None`): the
/// phone's teardown, by an operator. Answers once the sockets were sent
/// `logged_out` and 4001 and the end is durable.
async fn logout(gw: &Arc<Gateway>, account: &str, session_id: Option<&str>) -> Response {
    match Box::pin(gw.logout_routed(account, Actor::Admin, session_id)).await {
        Ok(closed) => {
            tracing::info!(
                account,
                session_id = session_id.unwrap_or("*"),
                closed,
                "operator logout"
            );
            json(StatusCode::OK, &serde_json::json!({ "closed": closed }))
        }
        Err(ErrorCode::UnknownSession) => error(StatusCode::NOT_FOUND, "unknown_session"),
        Err(code) => {
            tracing::warn!(account, code = code.as_str(), "operator logout failed");
            failed(code)
        }
    }
}

/// A request the gateway could not carry out: `503 unavailable` when the
/// cluster's Redis or another node cannot be reached (retry), else `500`.
fn failed(code: ErrorCode) -> Response {
    match code {
        ErrorCode::Unavailable => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, header};

    use super::authorized;

    #[test]
    fn only_the_exact_bearer_token_is_authorized() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            authorized(&h, "s3cret")
        };
        assert!(with("Bearer s3cret"));
        assert!(with("bearer s3cret"));
        assert!(!with("Bearer s3cre"));
        assert!(!with("Bearer s3cret2"));
        assert!(!with("Basic s3cret"));
        assert!(!with("s3cret"));
        assert!(!with("Bearer "));
        assert!(!authorized(&HeaderMap::new(), "s3cret"));
    }
}
