//! Phone and session tokens: HS256 JWTs over one secret.
//!
//! Phone tokens come from outside (the identity service; here `pairgate token`)
//! and are checked strictly: audience, `exp` required, `exp`/`nbf` with no
//! leeway, `sub` matching the account pattern. Session tokens are minted only by
//! the gateway and carry no expiry: a session token is valid exactly as long as
//! its session exists, which the caller checks against the store.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

pub const PHONE_AUDIENCE: &str = "pairgate-phone";
pub const SESSION_AUDIENCE: &str = "pairgate-session";
pub use crate::secret::{SECRET_FILE, resolve_secret};

/// True when `id` matches `^[A-Za-z0-9_.-]{1,64}$`.
pub fn valid_account_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[derive(Debug, Serialize, Deserialize)]
struct PhoneClaims {
    sub: String,
    aud: String,
    iat: u64,
    exp: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct SessionClaims {
    sub: String,
    sid: String,
    aud: String,
    iat: u64,
}

/// What a valid session token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionClaim {
    pub account: String,
    pub session_id: String,
}

/// Signs and verifies every token with one HS256 key.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    phone_validation: Validation,
    session_validation: Validation,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Tokens {
    pub fn new(secret: &str) -> Self {
        let mut phone_validation = Validation::new(Algorithm::HS256);
        phone_validation.leeway = 0;
        phone_validation.validate_nbf = true;
        phone_validation.set_audience(&[PHONE_AUDIENCE]);
        phone_validation.set_required_spec_claims(&["exp", "sub", "aud"]);

        let mut session_validation = Validation::new(Algorithm::HS256);
        session_validation.leeway = 0;
        session_validation.validate_exp = false;
        session_validation.set_audience(&[SESSION_AUDIENCE]);
        session_validation.set_required_spec_claims(&["sub", "aud"]);

        Tokens {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            phone_validation,
            session_validation,
        }
    }

    /// A phone token for `account`, as `pairgate token` prints it.
    pub fn mint_phone(&self, account: &str, ttl: Duration) -> anyhow::Result<String> {
        anyhow::ensure!(
            valid_account_id(account),
            "account id must match ^[A-Za-z0-9_.-]{{1,64}}$"
        );
        let iat = now_secs();
        let claims = PhoneClaims {
            sub: account.to_owned(),
            aud: PHONE_AUDIENCE.to_owned(),
            iat,
            exp: iat + ttl.as_secs(),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// The account a phone token speaks for, or `None` when it is not valid.
    pub fn verify_phone(&self, token: &str) -> Option<String> {
        let data =
            jsonwebtoken::decode::<PhoneClaims>(token, &self.decoding, &self.phone_validation)
                .ok()?;
        valid_account_id(&data.claims.sub).then_some(data.claims.sub)
    }

    pub fn mint_session(&self, account: &str, session_id: &str) -> String {
        let claims = SessionClaims {
            sub: account.to_owned(),
            sid: session_id.to_owned(),
            aud: SESSION_AUDIENCE.to_owned(),
            iat: now_secs(),
        };
        // HS256 signing of plain claims has no failure mode once the key exists.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .unwrap_or_default()
    }

    /// The session a session token names; whether that session still exists
    /// is the caller's question.
    pub fn verify_session(&self, token: &str) -> Option<SessionClaim> {
        let data =
            jsonwebtoken::decode::<SessionClaims>(token, &self.decoding, &self.session_validation)
                .ok()?;
        valid_account_id(&data.claims.sub).then_some(SessionClaim {
            account: data.claims.sub,
            session_id: data.claims.sid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_token_round_trip_and_audience() {
        let t = Tokens::new("k");
        let tok = t.mint_phone("alice", Duration::from_secs(60)).unwrap();
        assert_eq!(t.verify_phone(&tok).as_deref(), Some("alice"));
        assert!(t.verify_session(&tok).is_none());
        let s = t.mint_session("alice", "s1");
        assert!(t.verify_phone(&s).is_none());
        assert_eq!(t.verify_session(&s).unwrap().session_id, "s1");
        assert!(Tokens::new("other").verify_phone(&tok).is_none());
    }

    #[test]
    fn account_pattern() {
        assert!(valid_account_id("a.b-c_9"));
        assert!(!valid_account_id(""));
        assert!(!valid_account_id("a b"));
        assert!(!valid_account_id(&"x".repeat(65)));
    }
}
