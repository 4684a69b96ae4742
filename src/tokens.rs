//! Phone and session tokens: HS256 JWTs, and the secret they come from.
//!
//! Phone tokens come from outside (the identity service; here `pairgate token`)
//! and are signed with the secret itself, as the contract fixes. They are
//! checked strictly: audience, `exp` required, `exp`/`nbf` with no leeway, `sub`
//! matching the account pattern. Session tokens are minted only by the gateway
//! and carry no expiry: a session token is valid exactly as long as its session
//! exists, which the caller checks against the store. They are signed with a
//! key derived from the secret ([`session_key`]), so the two kinds never share
//! a key.
//!
//! Every token is refused unless its header says HS256 and names no `crit`
//! (no extension is understood here, so none may be required). New tokens carry
//! a `kid`, a fingerprint of their key ([`key_id`]); secrets given with
//! `--previous-secret` verify tokens but sign none, so a secret can be rotated
//! without logging anybody out.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

pub const PHONE_AUDIENCE: &str = "pairgate-phone";
pub const SESSION_AUDIENCE: &str = "pairgate-session";
pub use crate::secret::{SECRET_FILE, resolve_secret};
/// Previous secrets accepted at most: every one is a signature check more for
/// a token that names no key of ours.
pub const MAX_PREVIOUS_SECRETS: usize = 8;
/// What the session-token key is derived for (HMAC-SHA256 of the secret).
const SESSION_KEY_LABEL: &[u8] = b"pairgate session token v1";
/// What a key's `kid` is derived for.
const KEY_ID_LABEL: &[u8] = b"pairgate key id v1";

/// True when `id` matches `^[A-Za-z0-9_.-]{1,64}$`.
pub fn valid_account_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length: `new_from_slice` cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The key session tokens of `secret` are signed with:
/// HMAC-SHA256(secret, "pairgate session token v1").
pub fn session_key(secret: &str) -> [u8; 32] {
    hmac_sha256(secret.as_bytes(), SESSION_KEY_LABEL)
}

/// The `kid` of tokens signed with `key`: 48 bits of HMAC-SHA256(key,
/// "pairgate key id v1"), base64url (8 characters). It names the key without
/// telling anything about it.
pub fn key_id(key: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&hmac_sha256(key, KEY_ID_LABEL)[..6])
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
    /// Signed with a key the gateway no longer signs with (a previous
    /// secret's, or the secret itself in the old form): worth replacing.
    pub renew: bool,
}

/// One key a token may be verified with.
#[derive(Clone)]
struct Verifier {
    kid: String,
    key: DecodingKey,
}

impl Verifier {
    fn new(key: &[u8]) -> Self {
        Verifier {
            kid: key_id(key),
            key: DecodingKey::from_secret(key),
        }
    }
}

/// The keys of one kind of token: the current one signs, every one verifies.
#[derive(Clone)]
struct KeyRing {
    signing: EncodingKey,
    /// The current key's `kid`, put in every token signed.
    kid: String,
    /// The current key first, then the previous ones.
    verifiers: Vec<Verifier>,
}

impl KeyRing {
    fn new(keys: &[&[u8]]) -> Self {
        KeyRing {
            signing: EncodingKey::from_secret(keys[0]),
            kid: key_id(keys[0]),
            verifiers: keys.iter().map(|k| Verifier::new(k)).collect(),
        }
    }

    fn sign<T: Serialize>(&self, claims: &T) -> jsonwebtoken::errors::Result<String> {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.signing)
    }

    /// The claims of `token` if one of the keys verifies it, and whether
    /// that key is the current one. A `kid` naming one of them picks it; any
    /// other (none, or an identity service's own) tries each, current first.
    fn verify<T: DeserializeOwned>(
        &self,
        token: &str,
        kid: Option<&str>,
        validation: &Validation,
    ) -> Option<(T, bool)> {
        let decode = |(i, v): (usize, &Verifier)| {
            let data = jsonwebtoken::decode::<T>(token, &v.key, validation).ok()?;
            Some((data.claims, i == 0))
        };
        let mut keys = self.verifiers.iter().enumerate();
        match kid.and_then(|kid| keys.clone().find(|(_, v)| v.kid == kid)) {
            Some(named) => decode(named),
            None => keys.find_map(decode),
        }
    }
}

/// What the gateway reads of a token's header before verifying it.
struct HeaderCheck {
    kid: Option<String>,
}

/// The header of `token`, unless it names `crit`: a token may require the
/// reader to understand header fields, and this reader understands none, so
/// such a token is refused whatever `crit` lists (RFC 7515 section 4.1.11).
/// The `alg` is checked by the verification (HS256 only).
fn check_header(token: &str) -> Option<HeaderCheck> {
    let encoded = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes).ok()?;
    if header.contains_key("crit") {
        tracing::debug!("token refused: its header names crit");
        return None;
    }
    let kid = match header.get("kid") {
        None => None,
        Some(serde_json::Value::String(kid)) => Some(kid.clone()),
        Some(_) => return None,
    };
    Some(HeaderCheck { kid })
}

/// Signs and verifies tokens: phone tokens with the secret itself, session
/// tokens with the key derived from it; previous secrets verify only.
#[derive(Clone)]
pub struct Tokens {
    phone: KeyRing,
    session: KeyRing,
    /// The secrets themselves, for session tokens signed before session keys
    /// were derived (no `kid`): accepted so that an upgrade logs nobody out.
    legacy_session: Vec<DecodingKey>,
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
    /// Tokens of one secret.
    pub fn new(secret: &str) -> Self {
        Self::with_previous(secret, &[])
    }

    /// Tokens of `secret`, also accepting (never signing) tokens of each of
    /// `previous`.
    pub fn with_previous(secret: &str, previous: &[String]) -> Self {
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

        let secrets: Vec<&str> = std::iter::once(secret)
            .chain(previous.iter().map(String::as_str))
            .collect();
        let raw: Vec<&[u8]> = secrets.iter().map(|s| s.as_bytes()).collect();
        let derived: Vec<[u8; 32]> = secrets.iter().map(|s| session_key(s)).collect();
        let derived: Vec<&[u8]> = derived.iter().map(|k| k.as_slice()).collect();
        Tokens {
            phone: KeyRing::new(&raw),
            session: KeyRing::new(&derived),
            legacy_session: raw.iter().map(|k| DecodingKey::from_secret(k)).collect(),
            phone_validation,
            session_validation,
        }
    }

    /// The `kid` new phone tokens carry.
    pub fn phone_kid(&self) -> &str {
        &self.phone.kid
    }

    /// The `kid` new session tokens carry.
    pub fn session_kid(&self) -> &str {
        &self.session.kid
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
        Ok(self.phone.sign(&claims)?)
    }

    /// The account a phone token speaks for, or `None` when it is not valid.
    pub fn verify_phone(&self, token: &str) -> Option<String> {
        let header = check_header(token)?;
        let (claims, _) = self.phone.verify::<PhoneClaims>(
            token,
            header.kid.as_deref(),
            &self.phone_validation,
        )?;
        valid_account_id(&claims.sub).then_some(claims.sub)
    }

    pub fn mint_session(&self, account: &str, session_id: &str) -> String {
        let claims = SessionClaims {
            sub: account.to_owned(),
            sid: session_id.to_owned(),
            aud: SESSION_AUDIENCE.to_owned(),
            iat: now_secs(),
        };
        // HS256 signing of plain claims has no failure mode once the key exists.
        self.session.sign(&claims).unwrap_or_default()
    }

    /// The session a session token names; whether that session still exists
    /// is the caller's question.
    pub fn verify_session(&self, token: &str) -> Option<SessionClaim> {
        let header = check_header(token)?;
        let verified = self.session.verify::<SessionClaims>(
            token,
            header.kid.as_deref(),
            &self.session_validation,
        );
        let (claims, current) = match verified {
            Some(verified) => verified,
            // Only the old form (no `kid`) may be signed with a secret itself.
            None if header.kid.is_none() => {
                let data = self.legacy_session.iter().find_map(|key| {
                    jsonwebtoken::decode::<SessionClaims>(token, key, &self.session_validation).ok()
                })?;
                tracing::debug!("session token of the old form (signed with the secret itself)");
                (data.claims, false)
            }
            None => return None,
        };
        valid_account_id(&claims.sub).then_some(SessionClaim {
            account: claims.sub,
            session_id: claims.sid,
            renew: !current,
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

    /// A JWT with exactly this header and these claims, HMAC-SHA256-signed
    /// with `key` whatever the header's `alg` says.
    fn forge(header: serde_json::Value, claims: serde_json::Value, key: &[u8]) -> String {
        let b64 = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let input = format!("{}.{}", b64(&header), b64(&claims));
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(hmac_sha256(key, input.as_bytes()));
        format!("{input}.{sig}")
    }

    fn phone_claims(account: &str) -> serde_json::Value {
        let now = now_secs();
        serde_json::json!({"sub": account, "aud": PHONE_AUDIENCE, "iat": now, "exp": now + 60})
    }

    fn session_claims(account: &str, sid: &str) -> serde_json::Value {
        serde_json::json!({"sub": account, "sid": sid, "aud": SESSION_AUDIENCE, "iat": now_secs()})
    }

    #[test]
    fn forged_hs256_is_what_the_gateway_signs() {
        let t = Tokens::new("k");
        let header = serde_json::json!({"alg": "HS256", "typ": "JWT"});
        let tok = forge(header, phone_claims("alice"), b"k");
        assert_eq!(t.verify_phone(&tok).as_deref(), Some("alice"));
    }

    #[test]
    fn a_crit_header_is_refused_whatever_it_lists() {
        let t = Tokens::new("k");
        for crit in [
            serde_json::json!(["exp"]),
            serde_json::json!(["x-unknown"]),
            serde_json::json!([]),
            serde_json::Value::Null,
        ] {
            let header = serde_json::json!({"alg": "HS256", "typ": "JWT", "crit": crit});
            let phone = forge(header.clone(), phone_claims("alice"), b"k");
            assert!(t.verify_phone(&phone).is_none(), "crit {crit}");
            let session = forge(header, session_claims("alice", "s1"), &session_key("k"));
            assert!(t.verify_session(&session).is_none(), "crit {crit}");
        }
    }

    #[test]
    fn alg_is_pinned_to_hs256() {
        let t = Tokens::new("k");
        for alg in [
            "none", "HS384", "HS512", "RS256", "ES256", "PS256", "EdDSA", "hs256",
        ] {
            let header = serde_json::json!({"alg": alg, "typ": "JWT"});
            // RS/HS confusion: an RS256 header over an HMAC of the key.
            let tok = forge(header.clone(), phone_claims("alice"), b"k");
            assert!(t.verify_phone(&tok).is_none(), "alg {alg}");
            let sess = forge(header, session_claims("alice", "s1"), &session_key("k"));
            assert!(t.verify_session(&sess).is_none(), "alg {alg}");
        }
        let no_alg = forge(serde_json::json!({"typ": "JWT"}), phone_claims("a"), b"k");
        assert!(t.verify_phone(&no_alg).is_none());
    }

    #[test]
    fn session_tokens_use_a_derived_key_and_carry_its_kid() {
        let t = Tokens::new("k");
        let s = t.mint_session("alice", "s1");
        let header = jsonwebtoken::decode_header(&s).unwrap();
        assert_eq!(
            header.kid.as_deref(),
            Some(key_id(&session_key("k")).as_str())
        );
        assert_ne!(t.session_kid(), t.phone_kid());
        // not verifiable with the secret itself
        let mut v = Validation::new(Algorithm::HS256);
        v.validate_aud = false;
        v.required_spec_claims.clear();
        assert!(
            jsonwebtoken::decode::<SessionClaims>(&s, &DecodingKey::from_secret(b"k"), &v).is_err()
        );
        let p = t.mint_phone("alice", Duration::from_secs(60)).unwrap();
        let header = jsonwebtoken::decode_header(&p).unwrap();
        assert_eq!(header.kid.as_deref(), Some(key_id(b"k").as_str()));
    }

    #[test]
    fn old_session_tokens_are_accepted_only_without_kid() {
        let t = Tokens::new("k");
        let header = serde_json::json!({"alg": "HS256", "typ": "JWT"});
        let old = forge(header, session_claims("alice", "s1"), b"k");
        assert_eq!(t.verify_session(&old).unwrap().session_id, "s1");
        assert!(t.verify_session(&old).unwrap().renew);
        let with_kid = serde_json::json!({"alg": "HS256", "kid": t.session_kid()});
        let forged = forge(with_kid, session_claims("alice", "s1"), b"k");
        assert!(t.verify_session(&forged).is_none());
        // a phone-keyed token is never a session token, old form or not
        let phone = t.mint_phone("alice", Duration::from_secs(60)).unwrap();
        assert!(t.verify_session(&phone).is_none());
    }

    #[test]
    fn previous_secrets_verify_but_never_sign() {
        let old = Tokens::new("a");
        let phone = old.mint_phone("alice", Duration::from_secs(60)).unwrap();
        let session = old.mint_session("alice", "s1");
        let rotated = Tokens::with_previous("b", &["a".to_owned()]);
        assert_eq!(rotated.verify_phone(&phone).as_deref(), Some("alice"));
        assert_eq!(rotated.verify_session(&session).unwrap().session_id, "s1");
        assert!(rotated.verify_session(&session).unwrap().renew);
        assert!(!old.verify_session(&session).unwrap().renew);
        assert_eq!(rotated.phone_kid(), Tokens::new("b").phone_kid());
        let fresh = rotated.mint_session("alice", "s2");
        assert!(Tokens::new("b").verify_session(&fresh).is_some());
        assert!(old.verify_session(&fresh).is_none());
        // an integrator's token without kid, signed with the previous secret
        let header = serde_json::json!({"alg": "HS256", "typ": "JWT"});
        let kidless = forge(header, phone_claims("bob"), b"a");
        assert_eq!(rotated.verify_phone(&kidless).as_deref(), Some("bob"));
        // a kid naming one key is checked against that key only
        let lying = serde_json::json!({"alg": "HS256", "kid": rotated.phone_kid()});
        let lying = forge(lying, phone_claims("bob"), b"a");
        assert!(rotated.verify_phone(&lying).is_none());
        // once the previous secret is dropped, its tokens are refused
        let after = Tokens::new("b");
        assert!(after.verify_phone(&phone).is_none());
        assert!(after.verify_session(&session).is_none());
    }

    #[test]
    fn one_accounts_token_names_only_that_account() {
        let t = Tokens::new("k");
        let p = t.mint_phone("alice", Duration::from_secs(60)).unwrap();
        assert_eq!(t.verify_phone(&p).as_deref(), Some("alice"));
        let s = t.mint_session("alice", "s1");
        assert_eq!(t.verify_session(&s).unwrap().account, "alice");
    }

    #[test]
    fn account_pattern() {
        assert!(valid_account_id("a.b-c_9"));
        assert!(!valid_account_id(""));
        assert!(!valid_account_id("a b"));
        assert!(!valid_account_id(&"x".repeat(65)));
    }
}
