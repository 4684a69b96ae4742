//! Property tests of what parses client input: the frame codec (every client
//! frame encodes and parses back to itself; every server frame encodes to
//! JSON carrying exactly its fields; no text at all makes the parser or the
//! token checks panic), and the pairing code and ref formats.

use pairgate::protocol::{
    ClientFrame, DeviceInfo, ErrorCode, LinkTarget, Role, ServerFrame, SessionInfo, Stage,
    parse_frame,
};
use pairgate::qr::{display_code, new_code, new_ref, normalize_code, payload};
use pairgate::tokens::Tokens;
use proptest::prelude::*;
use serde_json::value::RawValue;
use serde_json::{Value, json};

const CROCKFORD: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        // fractions a float holds exactly, so text and value agree both ways
        (any::<i32>(), 1u32..8).prop_map(|(m, e)| json!(f64::from(m) / f64::from(1u32 << e))),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An `id` the contract accepts: at most 64 characters.
fn id() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop::collection::vec(any::<char>(), 0..=64).prop_map(String::from_iter))
}

/// A client frame as owned parts (`Send`'s body as JSON text), with the
/// role and stage that may send it.
#[derive(Clone, Debug)]
enum Owned {
    Auth(String, Role),
    Pair(bool, Option<String>),
    LinkRef(String),
    LinkCode(String),
    Confirm(String),
    Reject(String),
    List,
    Logout(Option<String>),
    LogoutAll,
    Send(String, Option<String>),
}

fn owned_frame() -> impl Strategy<Value = Owned> {
    let s = any::<String>;
    prop_oneof![
        (s(), prop_oneof![Just(Role::Web), Just(Role::Phone)]).prop_map(|(t, r)| Owned::Auth(t, r)),
        (any::<bool>(), prop::option::of(s())).prop_map(|(r, n)| Owned::Pair(r, n)),
        s().prop_map(Owned::LinkRef),
        s().prop_map(Owned::LinkCode),
        s().prop_map(Owned::Confirm),
        s().prop_map(Owned::Reject),
        Just(Owned::List),
        prop::option::of(s()).prop_map(Owned::Logout),
        Just(Owned::LogoutAll),
        (json_value(), prop::option::of(s())).prop_map(|(b, to)| Owned::Send(b.to_string(), to)),
    ]
}

impl Owned {
    /// Who sends it, and when.
    fn sender(&self) -> (Role, Stage) {
        match self {
            Owned::Auth(_, role) => (*role, Stage::Opening),
            Owned::Pair(..) => (Role::Web, Stage::Opening),
            // a web's `logout` names no session, a web's `send` no `to`
            Owned::Logout(None) => (Role::Web, Stage::Live),
            Owned::Send(_, None) => (Role::Web, Stage::Live),
            _ => (Role::Phone, Stage::Live),
        }
    }
}

/// Encodes `owned` with `id`, parses it back as its sender, and compares.
fn round_trip(owned: &Owned, id: Option<&str>) -> Result<(), TestCaseError> {
    let body = match owned {
        Owned::Send(b, _) => Some(RawValue::from_string(b.clone()).expect("valid JSON")),
        _ => None,
    };
    let frame = match owned.clone() {
        Owned::Auth(token, _) => ClientFrame::Auth { token },
        Owned::Pair(remember, device_name) => ClientFrame::Pair {
            remember,
            device_name,
        },
        Owned::LinkRef(r) => ClientFrame::Link(LinkTarget::Ref(r)),
        Owned::LinkCode(c) => ClientFrame::Link(LinkTarget::Code(c)),
        Owned::Confirm(request_id) => ClientFrame::LinkConfirm { request_id },
        Owned::Reject(request_id) => ClientFrame::LinkReject { request_id },
        Owned::List => ClientFrame::ListSessions,
        Owned::Logout(session_id) => ClientFrame::Logout { session_id },
        Owned::LogoutAll => ClientFrame::LogoutAll,
        Owned::Send(_, to) => ClientFrame::Send {
            body: body.as_deref().expect("a body"),
            to,
        },
    };
    let text = frame.to_text(id);
    let (role, stage) = owned.sender();
    let parsed = parse_frame(&text, role, stage)
        .map_err(|r| TestCaseError::fail(format!("{text}: {:?} {}", r.code, r.message)))?;
    prop_assert_eq!(parsed.id.as_deref(), id);
    let same = match (&frame, &parsed.frame) {
        (ClientFrame::Auth { token: a }, ClientFrame::Auth { token: b }) => a == b,
        (
            ClientFrame::Pair {
                remember: r1,
                device_name: n1,
            },
            ClientFrame::Pair {
                remember: r2,
                device_name: n2,
            },
        ) => r1 == r2 && n1 == n2,
        (ClientFrame::Link(a), ClientFrame::Link(b)) => a == b,
        (
            ClientFrame::LinkConfirm { request_id: a },
            ClientFrame::LinkConfirm { request_id: b },
        ) => a == b,
        (ClientFrame::LinkReject { request_id: a }, ClientFrame::LinkReject { request_id: b }) => {
            a == b
        }
        (ClientFrame::ListSessions, ClientFrame::ListSessions) => true,
        (ClientFrame::Logout { session_id: a }, ClientFrame::Logout { session_id: b }) => a == b,
        (ClientFrame::LogoutAll, ClientFrame::LogoutAll) => true,
        (ClientFrame::Send { body: b1, to: t1 }, ClientFrame::Send { body: b2, to: t2 }) => {
            b1.get() == b2.get() && t1 == t2
        }
        _ => false,
    };
    prop_assert!(same, "{} parsed as {:?}", text, parsed.frame);
    Ok(())
}

fn any_role_stage() -> impl Strategy<Value = (Role, Stage)> {
    (
        prop_oneof![Just(Role::Web), Just(Role::Phone)],
        prop_oneof![
            Just(Stage::Opening),
            Just(Stage::Pairing),
            Just(Stage::Live)
        ],
    )
}

/// Text that looks like a frame: JSON punctuation, the field names, and
/// escapes, so the parser's deeper paths are reached too.
fn frameish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just(",".to_owned()),
        Just(":".to_owned()),
        Just("\"type\"".to_owned()),
        Just("\"id\"".to_owned()),
        Just("\"body\"".to_owned()),
        Just("\"token\"".to_owned()),
        Just("\"ref\"".to_owned()),
        Just("\"code\"".to_owned()),
        Just("\"remember\"".to_owned()),
        Just("\"send\"".to_owned()),
        Just("\"auth\"".to_owned()),
        Just("\"link\"".to_owned()),
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("1e999".to_owned()),
        Just("\"\\ud800\"".to_owned()),
        any::<String>().prop_map(|s| format!("{s:?}")),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn every_client_frame_parses_back_to_itself(owned in owned_frame(), id in id()) {
        round_trip(&owned, id.as_deref())?;
    }

    #[test]
    fn arbitrary_text_never_panics_the_parser(
        text in prop_oneof![any::<String>(), frameish()],
        (role, stage) in any_role_stage(),
    ) {
        let _ = parse_frame(&text, role, stage);
        let _ = pairgate::protocol::peek_id(&text);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_parser(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        (role, stage) in any_role_stage(),
    ) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_frame(&text, role, stage);
    }

    #[test]
    fn arbitrary_tokens_never_panic_and_never_pass(
        token in prop_oneof![
            any::<String>(),
            (any::<String>(), any::<String>(), any::<String>())
                .prop_map(|(a, b, c)| format!("{a}.{b}.{c}")),
            ("[A-Za-z0-9_-]{0,40}", "[A-Za-z0-9_-]{0,80}", "[A-Za-z0-9_-]{0,43}")
                .prop_map(|(a, b, c)| format!("{a}.{b}.{c}")),
        ],
    ) {
        let t = Tokens::new("property-secret");
        prop_assert!(t.verify_phone(&token).is_none());
        prop_assert!(t.verify_session(&token).is_none());
    }

    #[test]
    fn server_frames_encode_to_exactly_their_fields(
        id in id(),
        text in any::<String>(),
        other in any::<String>(),
        n in any::<u32>(),
        flag in any::<bool>(),
        body in json_value(),
    ) {
        let body_text = body.to_string();
        let raw = RawValue::from_string(body_text).expect("valid JSON");
        let device = DeviceInfo { name: text.clone(), user_agent: other.clone(), ip: "192.0.2.1".into() };
        let session = SessionInfo {
            session_id: text.clone(),
            device_name: other.clone(),
            user_agent: text.clone(),
            ip: "2001:db8::1".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            last_active_at: "2026-01-02T00:00:00Z".into(),
            online: flag,
            remember: !flag,
        };
        let id = id.as_deref();
        let with_id = |mut v: Value| {
            if let Some(id) = id {
                v["id"] = json!(id);
            }
            v
        };
        let n64 = u64::from(n);
        let cases: Vec<(ServerFrame<'_>, Value)> = vec![
            (
                ServerFrame::Hello { protocol: 1, heartbeat_ms: n64, max_frame_bytes: n64 },
                json!({"type": "hello", "protocol": 1, "heartbeat_ms": n64, "max_frame_bytes": n64}),
            ),
            (
                ServerFrame::Ready { id, role: "web", account: &text, session_id: Some(&other), token: None },
                with_id(json!({"type": "ready", "role": "web", "account": text, "session_id": other})),
            ),
            (
                ServerFrame::Error { id, code: ErrorCode::BadFrame, message: &text },
                with_id(json!({"type": "error", "code": "bad_frame", "message": text})),
            ),
            (
                ServerFrame::Ok { id, closed: Some(n as usize) },
                with_id(json!({"type": "ok", "closed": n})),
            ),
            (
                ServerFrame::Qr {
                    id, reference: &text, code: &other, payload: &text, svg: &other,
                    expires_in_ms: n64, remaining: n,
                },
                with_id(json!({
                    "type": "qr", "ref": text, "code": other, "payload": text, "svg": other,
                    "expires_in_ms": n64, "remaining": n,
                })),
            ),
            (ServerFrame::Scanned, json!({"type": "scanned"})),
            (ServerFrame::PairRejected, json!({"type": "pair_rejected"})),
            (ServerFrame::PairTimeout, json!({"type": "pair_timeout"})),
            (
                ServerFrame::Linked { account: &text, session_id: &other, token: &text, remember: flag },
                json!({"type": "linked", "account": text, "session_id": other, "token": text, "remember": flag}),
            ),
            (ServerFrame::PhoneStatus { online: flag }, json!({"type": "phone_status", "online": flag})),
            (
                ServerFrame::LinkRequest { id, request_id: &other, device: &device },
                with_id(json!({
                    "type": "link_request", "request_id": other,
                    "device": {"name": text, "user_agent": other, "ip": "192.0.2.1"},
                })),
            ),
            (
                ServerFrame::DeviceLinked { id, session: &session },
                with_id(json!({"type": "device_linked", "session": serde_json::to_value(&session).unwrap()})),
            ),
            (
                ServerFrame::Sessions { id, sessions: std::slice::from_ref(&session) },
                with_id(json!({"type": "sessions", "sessions": [serde_json::to_value(&session).unwrap()]})),
            ),
            (
                ServerFrame::SessionOnline { session_id: &text },
                json!({"type": "session_online", "session_id": text}),
            ),
            (
                ServerFrame::SessionOffline { session_id: &text },
                json!({"type": "session_offline", "session_id": text}),
            ),
            (
                ServerFrame::Message { from: &text, body: &raw },
                json!({"type": "message", "from": text, "body": body}),
            ),
            (
                ServerFrame::Ack { id, delivered: Some(n as usize) },
                with_id(json!({"type": "ack", "delivered": n})),
            ),
        ];
        for (frame, want) in cases {
            let encoded = frame.to_text();
            let got: Value = serde_json::from_str(&encoded)
                .map_err(|e| TestCaseError::fail(format!("{encoded}: {e}")))?;
            prop_assert_eq!(got, want);
        }
        // a relayed body goes out byte for byte as it came in
        let message = ServerFrame::Message { from: "phone", body: &raw }.to_text();
        prop_assert!(message.contains(raw.get()));
    }

    #[test]
    fn a_code_is_read_back_however_it_is_typed(
        bytes in any::<[u8; 5]>(),
        lower in prop::collection::vec(any::<bool>(), 8),
        hyphen in any::<bool>(),
    ) {
        // what the gateway issues: 8 Crockford symbols
        let code = {
            let mut spec = data_encoding::Specification::new();
            spec.symbols.push_str(CROCKFORD);
            spec.encoding().unwrap().encode(&bytes)
        };
        prop_assert_eq!(code.len(), 8);
        prop_assert_eq!(normalize_code(&code), Some(code.clone()));
        prop_assert_eq!(normalize_code(&display_code(&code)), Some(code.clone()));
        // any case, hyphen or not
        let typed: String = code
            .chars()
            .zip(&lower)
            .map(|(c, l)| if *l { c.to_ascii_lowercase() } else { c })
            .collect();
        let typed = if hyphen { display_code(&typed) } else { typed };
        prop_assert_eq!(normalize_code(&typed), Some(code.clone()));
        // Crockford's aliases: O is 0, I and L are 1
        let aliased: String = code
            .chars()
            .map(|c| match c { '0' => 'o', '1' => 'L', c => c })
            .collect();
        prop_assert_eq!(normalize_code(&aliased), Some(code.clone()));
    }

    #[test]
    fn a_normalized_code_is_always_eight_crockford_symbols(typed in ".{0,20}") {
        if let Some(code) = normalize_code(&typed) {
            prop_assert_eq!(code.len(), 8);
            prop_assert!(code.chars().all(|c| CROCKFORD.contains(c)));
            // normalizing is idempotent
            prop_assert_eq!(normalize_code(&code), Some(code.clone()));
            // only hyphens are dropped: the typed text held 8 symbols or aliases
            let kept = typed.chars().filter(|c| *c != '-').count();
            prop_assert_eq!(kept, 8);
        }
    }

    #[test]
    fn a_code_with_u_or_a_foreign_symbol_is_refused(
        bytes in any::<[u8; 5]>(),
        at in 0usize..8,
        bad in prop_oneof![Just('U'), Just('u'), Just(' '), Just('_'), Just('*'), Just('é'), Just('Ⅰ')],
    ) {
        let code = {
            let mut spec = data_encoding::Specification::new();
            spec.symbols.push_str(CROCKFORD);
            spec.encoding().unwrap().encode(&bytes)
        };
        let mut chars: Vec<char> = code.chars().collect();
        chars[at] = bad;
        let typed: String = chars.into_iter().collect();
        prop_assert_eq!(normalize_code(&typed), None);
    }

    #[test]
    fn a_qr_payload_names_its_ref(base in "https?://[a-z0-9.]{1,20}(:[0-9]{1,5})?/{0,2}") {
        let reference = new_ref();
        let p = payload(&base, &reference);
        let suffix = format!("/phone#ref={reference}");
        prop_assert!(p.ends_with(&suffix), "{}", p);
        prop_assert!(!p.contains("//phone"), "{}", p);
    }
}

/// Refs: 144 random bits as 24 base64url characters; codes: 8 Crockford
/// symbols; each fresh one different.
#[test]
fn fresh_refs_and_codes_have_their_format() {
    use base64::Engine as _;
    let mut refs = std::collections::HashSet::new();
    for _ in 0..1000 {
        let r = new_ref();
        assert_eq!(r.len(), 24, "{r}");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&r)
            .expect("base64url");
        assert_eq!(raw.len(), 18);
        assert!(refs.insert(r));
        let c = new_code();
        assert_eq!(c.len(), 8);
        assert!(c.chars().all(|ch| CROCKFORD.contains(ch)), "{c}");
        assert_eq!(normalize_code(&c.to_lowercase()), Some(c));
    }
}
