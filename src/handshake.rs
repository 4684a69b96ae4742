//! What the WebSocket handshake checks of the client's request beyond what
//! [`crate::http`] routes on: here, the form of `Sec-WebSocket-Key`.

use axum::http::HeaderValue;
use base64::Engine as _;

/// Whether `key` is what RFC 6455 (section 4.1) makes a client send: the
/// base64 of 16 random bytes (24 characters, padded). A client that sends
/// anything else is not a WebSocket client, so its upgrade is refused (400)
/// rather than answered with an accept key derived from junk.
pub fn valid_websocket_key(key: &HeaderValue) -> bool {
    let bytes = key.as_bytes();
    bytes.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode(bytes)
            .is_ok_and(|raw| raw.len() == 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_base64_of_16_bytes_is_a_key() {
        let ok = |s: &str| valid_websocket_key(&HeaderValue::from_str(s).unwrap());
        // RFC 6455's own example
        assert!(ok("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(ok("AAAAAAAAAAAAAAAAAAAAAA=="));
        for bad in [
            "x",
            "",
            "dGhlIHNhbXBsZSBub25jZQ",    // unpadded
            "dGhlIHNhbXBsZSBub25jZQ===", // over-padded
            "dGhlIHNhbXBsZSBub25jZQ==dGhlIHNhbXBsZSBub25jZQ==",
            "dGhlIHNhbXBsZSBub25jZSE=", // 17 bytes
            "dGhlIHNhbXBsZSBub25j",     // 15 bytes
            "dGhlIHNhbXBsZSBub25jZQ-_", // base64url alphabet
            "dGhlIHNhbXBsZSBub25jZR==", // non-canonical last bits
            " dGhlIHNhbXBsZSBub25jZQ==",
        ] {
            assert!(!ok(bad), "{bad:?} accepted");
        }
    }
}
