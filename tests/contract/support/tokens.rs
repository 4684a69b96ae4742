//! Tokens: HS256 JWTs minted and read the way a phone's backend would.

use base64::Engine as _;
use serde_json::{Value, json};

use super::now_secs;

/// Signs `claims` as an HS256 JWT over the UTF-8 bytes of `secret`.
pub fn mint(secret: &str, claims: &Value) -> String {
    mint_alg(secret, claims, jsonwebtoken::Algorithm::HS256)
}

pub fn mint_alg(secret: &str, claims: &Value, alg: jsonwebtoken::Algorithm) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign jwt")
}

/// A JWT with exactly `header` and `claims`, its signature HMAC-SHA256 over
/// `key` whatever `alg` the header names (for forged and confused tokens).
pub fn mint_with_header(key: &[u8], header: &Value, claims: &Value) -> String {
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let input = format!("{}.{}", b64(header), b64(claims));
    let sig = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(key),
        jsonwebtoken::Algorithm::HS256,
    )
    .expect("sign jwt");
    format!("{input}.{sig}")
}

/// The `kid` of a JWT's header, if any.
pub fn jwt_kid(token: &str) -> Option<String> {
    jsonwebtoken::decode_header(token).expect("jwt header").kid
}

/// Whether `token` is an HS256 JWT that verifies with the key `key`.
pub fn jwt_verifies_key(token: &str, key: &[u8]) -> bool {
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.validate_aud = false;
    v.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(token, &jsonwebtoken::DecodingKey::from_secret(key), &v).is_ok()
}

/// Valid phone-token claims for `account` (one hour).
pub fn phone_claims(account: &str) -> Value {
    let now = now_secs();
    json!({"sub": account, "aud": "pairgate-phone", "iat": now, "exp": now + 3600})
}

/// The claims of a JWT (not verified).
pub fn jwt_claims(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("jwt has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .expect("jwt payload is base64url");
    serde_json::from_slice(&bytes).expect("jwt payload is json")
}

/// Whether `token` is an HS256 JWT that verifies with `secret` (aud not checked).
pub fn jwt_verifies(token: &str, secret: &str) -> bool {
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.validate_aud = false;
    v.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
        &v,
    )
    .is_ok()
}
