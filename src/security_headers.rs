//! Headers on every HTTP answer that keep other sites' pages from framing
//! ours (clickjacking the demo phone's Confirm), sniffing types, or reading
//! where a user came from. The pages load only their own scripts, styles and
//! sockets (no inline code), so the Content-Security-Policy allows just that.

use axum::http::{HeaderValue, header};
use axum::response::Response;

/// `frame-ancestors 'none'` refuses framing everywhere; the rest lists what
/// the pages use: same-origin scripts, styles, `fetch` and WebSockets
/// (`'self'` covers `ws:`/`wss:` to the same host), and the `data:` favicon.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Adds the security headers to `response` (axum `map_response`).
pub async fn add(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}
