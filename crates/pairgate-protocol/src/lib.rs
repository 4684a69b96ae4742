//! pairgate's wire contract as types: every client frame, server frame, error
//! code and close code. This is the only place JSON field names live: the
//! gateway parses with it, and clients (`pairgate-client`, the load test, the
//! tests) encode with it, so the two cannot drift apart.
//!
//! It is its own crate so that a client needs neither the gateway nor its
//! dependencies (storage, HTTP server, Redis): only serde and tungstenite.
//!
//! Parsing is two-step so that bad input gets the contract's exact answer: first
//! every known field is captured as raw JSON (so `null`, wrong types and
//! duplicates are visible), then the frame for the socket's role is built and
//! each field it needs is type-checked.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

/// The `protocol` field of `hello`.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest `id` a client frame may carry, in characters.
pub const MAX_ID_CHARS: usize = 64;

/// The pairing code's alphabet: Crockford base32 without check symbol (no I,
/// L, O or U).
pub const CODE_ALPHABET: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The canonical form of a typed code: upper-case, hyphens dropped, Crockford's
/// aliases resolved (`O` is `0`; `I` and `L` are `1`). `None` if it cannot be one.
pub fn normalize_code(typed: &str) -> Option<String> {
    let mut out = String::with_capacity(8);
    for c in typed.chars() {
        let c = match c.to_ascii_uppercase() {
            '-' => continue,
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        };
        if !CODE_ALPHABET.contains(c) {
            return None;
        }
        out.push(c);
    }
    (out.len() == 8).then_some(out)
}

/// Which endpoint a socket was opened on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Phone,
    Web,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Phone => "phone",
            Role::Web => "web",
        }
    }
}

/// The contract's error codes. Their wire names live in [`ErrorCode::as_str`]
/// only; serialization and [`ErrorCode::from_name`] go through it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadFrame,
    UnknownType,
    NotAuthenticated,
    InvalidToken,
    LoggedOut,
    UnknownRef,
    UnknownRequest,
    UnknownSession,
    TooManyDevices,
    PhoneOffline,
    TooLarge,
    RateLimited,
    Internal,
    Unavailable,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::BadFrame,
        ErrorCode::UnknownType,
        ErrorCode::NotAuthenticated,
        ErrorCode::InvalidToken,
        ErrorCode::LoggedOut,
        ErrorCode::UnknownRef,
        ErrorCode::UnknownRequest,
        ErrorCode::UnknownSession,
        ErrorCode::TooManyDevices,
        ErrorCode::PhoneOffline,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::Internal,
        ErrorCode::Unavailable,
    ];

    /// The human text sent in an `error` frame's `message` when the code
    /// says it all (parse errors carry their own, more specific text).
    pub fn describe(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "malformed frame",
            ErrorCode::UnknownType => "unknown frame type for this socket",
            ErrorCode::NotAuthenticated => "authenticate first: send `auth` or `pair`",
            ErrorCode::InvalidToken => "the token is not valid",
            ErrorCode::LoggedOut => "this session was logged out; pair again",
            ErrorCode::UnknownRef => "unknown, expired or used QR ref or code",
            ErrorCode::UnknownRequest => "no such pending link request",
            ErrorCode::UnknownSession => "no such session on this account",
            ErrorCode::TooManyDevices => "the account already has the most linked devices allowed",
            ErrorCode::PhoneOffline => "the phone is not connected",
            ErrorCode::TooLarge => "body is larger than allowed",
            ErrorCode::RateLimited => {
                "rate limited (too many frames, errors or failed links); slow down"
            }
            ErrorCode::Internal => "internal error; nothing was changed",
            ErrorCode::Unavailable => {
                "the cluster's Redis or another node cannot be reached now; nothing was done; retry"
            }
        }
    }

    /// The code with this wire name (what a client reads in `error.code`).
    pub fn from_name(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::NotAuthenticated => "not_authenticated",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::LoggedOut => "logged_out",
            ErrorCode::UnknownRef => "unknown_ref",
            ErrorCode::UnknownRequest => "unknown_request",
            ErrorCode::UnknownSession => "unknown_session",
            ErrorCode::TooManyDevices => "too_many_devices",
            ErrorCode::PhoneOffline => "phone_offline",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ErrorCode::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown error code {name}")))
    }
}

/// The contract's close codes, and RFC 6455's for broken framing, with the
/// reason text sent in the close frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// RFC 6455's 1002: the client broke the WebSocket framing rules.
    ProtocolError,
    /// RFC 6455's 1007: text (or a close reason) that is not UTF-8.
    InvalidData,
    TooLarge,
    Restarting,
    LoggedOut,
    InvalidToken,
    TimedOut,
    Replaced,
    RateLimited,
    TooSlow,
}

impl CloseCode {
    pub const ALL: [CloseCode; 10] = [
        CloseCode::ProtocolError,
        CloseCode::InvalidData,
        CloseCode::TooLarge,
        CloseCode::Restarting,
        CloseCode::LoggedOut,
        CloseCode::InvalidToken,
        CloseCode::TimedOut,
        CloseCode::Replaced,
        CloseCode::RateLimited,
        CloseCode::TooSlow,
    ];

    pub fn code(self) -> u16 {
        match self {
            CloseCode::ProtocolError => 1002,
            CloseCode::InvalidData => 1007,
            CloseCode::TooLarge => 1009,
            CloseCode::Restarting => 1012,
            CloseCode::LoggedOut => 4001,
            CloseCode::InvalidToken => 4003,
            CloseCode::TimedOut => 4008,
            CloseCode::Replaced => 4009,
            CloseCode::RateLimited => 4029,
            CloseCode::TooSlow => 4030,
        }
    }

    /// The contract's close code with this number.
    pub fn from_code(code: u16) -> Option<CloseCode> {
        CloseCode::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The code as text, for metric labels.
    pub fn label(self) -> &'static str {
        match self {
            CloseCode::ProtocolError => "1002",
            CloseCode::InvalidData => "1007",
            CloseCode::TooLarge => "1009",
            CloseCode::Restarting => "1012",
            CloseCode::LoggedOut => "4001",
            CloseCode::InvalidToken => "4003",
            CloseCode::TimedOut => "4008",
            CloseCode::Replaced => "4009",
            CloseCode::RateLimited => "4029",
            CloseCode::TooSlow => "4030",
        }
    }

    /// What it means, for a person (also sent as the close frame's reason).
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::ProtocolError => "protocol error",
            CloseCode::InvalidData => "invalid UTF-8",
            CloseCode::TooLarge => "frame too large",
            CloseCode::Restarting => "gateway restarting",
            CloseCode::LoggedOut => "logged out",
            CloseCode::InvalidToken => "invalid token",
            CloseCode::TimedOut => "timed out",
            CloseCode::Replaced => "replaced by a newer socket",
            CloseCode::RateLimited => "rate limited",
            CloseCode::TooSlow => "too slow",
        }
    }
}

/// Why a session was logged out, as sent in `logged_out.reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogoutReason {
    PhoneLogout,
    PhoneLogoutAll,
    SelfLogout,
    /// Ended through the operator API.
    Admin,
}

/// Why a session was removed, as sent to the phone in `session_removed.reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovedReason {
    SelfLogout,
    Expired,
    /// Ended through the operator API.
    Admin,
}

/// A rejected client frame: the error to answer with and the `id` to echo.
#[derive(Debug, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub id: Option<String>,
    pub message: Cow<'static, str>,
}

/// A `link` names the pairing attempt by its ref or by its typed code.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkTarget {
    Ref(String),
    Code(String),
}

/// A parsed client frame. `body` stays raw JSON so relaying never re-encodes it.
#[derive(Debug)]
pub enum ClientFrame<'a> {
    Auth {
        token: String,
    },
    Pair {
        remember: bool,
        device_name: Option<String>,
    },
    Link(LinkTarget),
    LinkConfirm {
        request_id: String,
    },
    LinkReject {
        request_id: String,
    },
    ListSessions,
    /// `session_id` is required from the phone and absent on a web self-logout.
    Logout {
        session_id: Option<String>,
    },
    LogoutAll,
    Send {
        body: &'a RawValue,
        to: Option<String>,
    },
}

impl ClientFrame<'_> {
    pub fn frame_type(&self) -> FrameType {
        match self {
            ClientFrame::Auth { .. } => FrameType::Auth,
            ClientFrame::Pair { .. } => FrameType::Pair,
            ClientFrame::Link(_) => FrameType::Link,
            ClientFrame::LinkConfirm { .. } => FrameType::LinkConfirm,
            ClientFrame::LinkReject { .. } => FrameType::LinkReject,
            ClientFrame::ListSessions => FrameType::ListSessions,
            ClientFrame::Logout { .. } => FrameType::Logout,
            ClientFrame::LogoutAll => FrameType::LogoutAll,
            ClientFrame::Send { .. } => FrameType::Send,
        }
    }

    /// The JSON text a client sends for this frame, with `id` when given: the
    /// encoding every client in this repository uses (`client.rs`, the load
    /// test, the contract tests' helpers), so the field names live here only.
    pub fn to_text(&self, id: Option<&str>) -> String {
        let mut out = OutgoingFields {
            kind: self.frame_type().name(),
            id,
            ..OutgoingFields::default()
        };
        match self {
            ClientFrame::Auth { token } => out.token = Some(token),
            ClientFrame::Pair {
                remember,
                device_name,
            } => {
                out.remember = Some(*remember);
                out.device_name = device_name.as_deref();
            }
            ClientFrame::Link(LinkTarget::Ref(r)) => out.reference = Some(r),
            ClientFrame::Link(LinkTarget::Code(c)) => out.code = Some(c),
            ClientFrame::LinkConfirm { request_id } | ClientFrame::LinkReject { request_id } => {
                out.request_id = Some(request_id)
            }
            ClientFrame::ListSessions | ClientFrame::LogoutAll => {}
            ClientFrame::Logout { session_id } => out.session_id = session_id.as_deref(),
            ClientFrame::Send { body, to } => {
                out.body = Some(body);
                out.to = to.as_deref();
            }
        }
        // Strings, booleans and already-valid raw JSON cannot fail to encode.
        serde_json::to_string(&out).unwrap_or_default()
    }
}

/// The fields of an outgoing client frame, mirroring [`RawFields`].
#[derive(Serialize, Default)]
struct OutgoingFields<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remember: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_name: Option<&'a str>,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'a str>,
}

/// A parsed frame with its echoed `id`.
#[derive(Debug)]
pub struct Request<'a> {
    pub id: Option<String>,
    pub frame: ClientFrame<'a>,
}

/// Every field any client frame may carry, captured raw.
#[derive(Deserialize)]
struct RawFields<'a> {
    #[serde(rename = "type", default, borrow, deserialize_with = "present")]
    kind: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    token: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    remember: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    device_name: Option<&'a RawValue>,
    #[serde(rename = "ref", default, borrow, deserialize_with = "present")]
    reference: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    code: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    request_id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    session_id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    body: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    to: Option<&'a RawValue>,
}

/// Keeps an explicit `null` distinguishable from a missing field.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

/// Where a socket stands in its life; decides which types are accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// After `hello`, before `auth`/`pair`.
    Opening,
    /// A web socket that sent `pair` and is not linked yet.
    Pairing,
    /// After `ready` or `linked`.
    Live,
}

fn bad(id: Option<String>, message: impl Into<Cow<'static, str>>) -> Rejection {
    Rejection {
        code: ErrorCode::BadFrame,
        id,
        message: message.into(),
    }
}

fn string_field(
    raw: Option<&RawValue>,
    name: &'static str,
    id: &Option<String>,
) -> Result<Option<String>, Rejection> {
    match raw {
        None => Ok(None),
        Some(raw) => serde_json::from_str::<String>(raw.get())
            .map(Some)
            .map_err(|_| bad(id.clone(), format!("`{name}` must be a string"))),
    }
}

fn required_string(
    raw: Option<&RawValue>,
    name: &'static str,
    id: &Option<String>,
) -> Result<String, Rejection> {
    string_field(raw, name, id)?.ok_or_else(|| bad(id.clone(), format!("`{name}` is required")))
}

/// The `id` of a frame that will not be processed (rate limited), if it has a
/// valid one.
pub fn peek_id(text: &str) -> Option<String> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let raw: RawFields<'_> = serde_json::from_str(text).ok()?;
    serde_json::from_str::<String>(raw.id?.get())
        .ok()
        .filter(|id| id.chars().count() <= MAX_ID_CHARS)
}

/// The `type`s a client may send: the one list both the parser and the
/// encoder ([`ClientFrame::to_text`]) know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameType {
    Auth,
    Pair,
    Link,
    LinkConfirm,
    LinkReject,
    ListSessions,
    Logout,
    LogoutAll,
    Send,
}

impl FrameType {
    pub const ALL: [FrameType; 9] = [
        FrameType::Auth,
        FrameType::Pair,
        FrameType::Link,
        FrameType::LinkConfirm,
        FrameType::LinkReject,
        FrameType::ListSessions,
        FrameType::Logout,
        FrameType::LogoutAll,
        FrameType::Send,
    ];

    /// The wire name, as in `"type":"link_confirm"`.
    pub fn name(self) -> &'static str {
        match self {
            FrameType::Auth => "auth",
            FrameType::Pair => "pair",
            FrameType::Link => "link",
            FrameType::LinkConfirm => "link_confirm",
            FrameType::LinkReject => "link_reject",
            FrameType::ListSessions => "list_sessions",
            FrameType::Logout => "logout",
            FrameType::LogoutAll => "logout_all",
            FrameType::Send => "send",
        }
    }

    fn parse(kind: &str) -> Option<FrameType> {
        FrameType::ALL.into_iter().find(|t| t.name() == kind)
    }

    /// Whether a socket of `role` may send it at all.
    fn known_to(self, role: Role) -> bool {
        match self {
            FrameType::Auth | FrameType::Send | FrameType::Logout => true,
            FrameType::Pair => role == Role::Web,
            FrameType::Link
            | FrameType::LinkConfirm
            | FrameType::LinkReject
            | FrameType::ListSessions
            | FrameType::LogoutAll => role == Role::Phone,
        }
    }

    /// Whether it is how a socket starts (`auth`, `pair`): the only types
    /// before that step, and `unknown_type` after it.
    fn opens(self) -> bool {
        matches!(self, FrameType::Auth | FrameType::Pair)
    }
}

/// Parses one text frame for a socket of `role` at `stage`.
pub fn parse_frame(text: &str, role: Role, stage: Stage) -> Result<Request<'_>, Rejection> {
    // serde would also read a JSON array into the struct, positionally.
    if !text.trim_start().starts_with('{') {
        return Err(bad(None, "a frame must be a JSON object"));
    }
    let raw: RawFields<'_> = serde_json::from_str(text)
        .map_err(|e| bad(None, format!("not a valid JSON object: {e}")))?;

    let id = match raw.id {
        None => None,
        Some(v) => match serde_json::from_str::<String>(v.get()) {
            Ok(id) if id.chars().count() > MAX_ID_CHARS => {
                return Err(bad(Some(id), "`id` is longer than 64 characters"));
            }
            Ok(id) => Some(id),
            Err(_) => return Err(bad(None, "`id` must be a string")),
        },
    };
    let kind: Cow<'_, str> = match raw.kind {
        Some(v) => {
            serde_json::from_str(v.get()).map_err(|_| bad(id.clone(), "`type` must be a string"))?
        }
        None => return Err(bad(id, "missing string field `type`")),
    };

    // Before `auth`/`pair` only those; after, anything the role knows but them.
    let ty = match (stage, FrameType::parse(&kind).filter(|t| t.known_to(role))) {
        (Stage::Live, Some(ty)) if !ty.opens() => ty,
        (Stage::Opening | Stage::Pairing, Some(ty)) if ty.opens() => ty,
        (Stage::Live, _) => {
            return Err(Rejection {
                code: ErrorCode::UnknownType,
                message: format!("unknown frame type `{kind}` for a {} socket", role.as_str())
                    .into(),
                id,
            });
        }
        (Stage::Opening | Stage::Pairing, _) => {
            return Err(Rejection {
                code: ErrorCode::NotAuthenticated,
                id,
                message: "authenticate first: send `auth` or `pair`".into(),
            });
        }
    };

    let frame = match ty {
        FrameType::Auth => ClientFrame::Auth {
            token: required_string(raw.token, "token", &id)?,
        },
        FrameType::Pair => {
            let remember = match raw.remember {
                None => true,
                Some(v) => serde_json::from_str::<bool>(v.get())
                    .map_err(|_| bad(id.clone(), "`remember` must be a boolean"))?,
            };
            let device_name = string_field(raw.device_name, "device_name", &id)?;
            ClientFrame::Pair {
                remember,
                device_name,
            }
        }
        FrameType::Link => match (
            string_field(raw.reference, "ref", &id)?,
            string_field(raw.code, "code", &id)?,
        ) {
            (Some(r), _) => ClientFrame::Link(LinkTarget::Ref(r)),
            (None, Some(c)) => ClientFrame::Link(LinkTarget::Code(c)),
            (None, None) => return Err(bad(id, "`link` needs `ref` or `code`")),
        },
        FrameType::LinkConfirm => ClientFrame::LinkConfirm {
            request_id: required_string(raw.request_id, "request_id", &id)?,
        },
        FrameType::LinkReject => ClientFrame::LinkReject {
            request_id: required_string(raw.request_id, "request_id", &id)?,
        },
        FrameType::ListSessions => ClientFrame::ListSessions,
        FrameType::Logout => ClientFrame::Logout {
            session_id: match role {
                Role::Phone => Some(required_string(raw.session_id, "session_id", &id)?),
                Role::Web => None,
            },
        },
        FrameType::LogoutAll => ClientFrame::LogoutAll,
        FrameType::Send => ClientFrame::Send {
            body: raw
                .body
                .ok_or_else(|| bad(id.clone(), "`body` is required"))?,
            to: match role {
                Role::Phone => string_field(raw.to, "to", &id)?,
                Role::Web => None,
            },
        },
    };
    Ok(Request { id, frame })
}

/// A linked web session as the phone sees it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SessionInfo {
    pub session_id: String,
    pub device_name: String,
    pub user_agent: String,
    pub ip: String,
    pub created_at: String,
    pub last_active_at: String,
    pub online: bool,
    pub remember: bool,
}

/// The device asking to be linked, shown to the phone in `link_request`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub name: String,
    pub user_agent: String,
    pub ip: String,
}

/// Every frame the server sends. Serialized once per send (or once per fan-out).
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Hello {
        protocol: u32,
        heartbeat_ms: u64,
        max_frame_bytes: u64,
    },
    Ready {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        role: &'static str,
        account: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        session_id: Option<&'a str>,
        /// (pairgate) A fresh session token, when the one given was signed
        /// with a key the gateway no longer signs with (a previous secret):
        /// the client keeps this one instead.
        #[serde(skip_serializing_if = "Option::is_none")]
        token: Option<&'a str>,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        code: ErrorCode,
        message: &'a str,
    },
    Ok {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        closed: Option<usize>,
    },
    Qr {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        #[serde(rename = "ref")]
        reference: &'a str,
        code: &'a str,
        payload: &'a str,
        svg: &'a str,
        expires_in_ms: u64,
        remaining: u32,
    },
    Scanned,
    PairRejected,
    PairTimeout,
    Linked {
        account: &'a str,
        session_id: &'a str,
        token: &'a str,
        remember: bool,
    },
    PhoneStatus {
        online: bool,
    },
    LinkRequest {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        request_id: &'a str,
        device: &'a DeviceInfo,
    },
    DeviceLinked {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        session: &'a SessionInfo,
    },
    Sessions {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        sessions: &'a [SessionInfo],
    },
    LoggedOut {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        reason: LogoutReason,
    },
    SessionOnline {
        session_id: &'a str,
    },
    SessionOffline {
        session_id: &'a str,
    },
    SessionRemoved {
        session_id: &'a str,
        reason: RemovedReason,
    },
    Message {
        from: &'a str,
        body: &'a RawValue,
    },
    Ack {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        delivered: Option<usize>,
    },
}

impl ServerFrame<'_> {
    /// The frame as the text a socket's queue and writer take: serialized
    /// once, then shared (cloning `Utf8Bytes` is a reference count).
    pub fn to_utf8_bytes(&self) -> tungstenite::Utf8Bytes {
        tungstenite::Utf8Bytes::from(self.to_text())
    }

    /// The JSON text of this frame.
    pub fn to_text(&self) -> String {
        // Serializing these shapes cannot fail: every key is a string and
        // every value a plain type or already-valid raw JSON.
        serde_json::to_string(self).unwrap_or_else(|_| {
            String::from(
                "{\"type\":\"error\",\"code\":\"internal\",\"message\":\"serialization failed\"}",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str, role: Role, stage: Stage) -> Request<'_> {
        parse_frame(text, role, stage).unwrap_or_else(|r| panic!("{text}: {r:?}"))
    }

    fn refused(text: &str, role: Role, stage: Stage) -> (ErrorCode, Option<String>) {
        let r = parse_frame(text, role, stage).expect_err(text);
        (r.code, r.id)
    }

    /// Every frame type, for the role that sends it, with its fields.
    #[test]
    fn every_frame_type_parses_for_its_role() {
        use ClientFrame as F;
        let live = Stage::Live;
        let r = parsed(
            r#"{"type":"auth","id":"a","token":"t"}"#,
            Role::Phone,
            Stage::Opening,
        );
        assert_eq!(r.id.as_deref(), Some("a"));
        assert!(matches!(r.frame, F::Auth { token } if token == "t"));
        assert!(matches!(
            parsed(r#"{"type":"auth","token":"t"}"#, Role::Web, Stage::Pairing).frame,
            F::Auth { .. }
        ));
        assert!(matches!(
            parsed(r#"{"type":"pair"}"#, Role::Web, Stage::Opening).frame,
            F::Pair {
                remember: true,
                device_name: None
            }
        ));
        assert!(matches!(
            parsed(r#"{"type":"pair","remember":false,"device_name":"d"}"#, Role::Web, Stage::Pairing).frame,
            F::Pair { remember: false, device_name: Some(n) } if n == "d"
        ));
        assert!(matches!(
            parsed(r#"{"type":"link","ref":"R","code":"C"}"#, Role::Phone, live).frame,
            F::Link(LinkTarget::Ref(r)) if r == "R"
        ));
        assert!(matches!(
            parsed(r#"{"type":"link","code":"C"}"#, Role::Phone, live).frame,
            F::Link(LinkTarget::Code(c)) if c == "C"
        ));
        assert!(matches!(
            parsed(r#"{"type":"link_confirm","request_id":"q"}"#, Role::Phone, live).frame,
            F::LinkConfirm { request_id } if request_id == "q"
        ));
        assert!(matches!(
            parsed(
                r#"{"type":"link_reject","request_id":"q"}"#,
                Role::Phone,
                live
            )
            .frame,
            F::LinkReject { .. }
        ));
        assert!(matches!(
            parsed(r#"{"type":"list_sessions"}"#, Role::Phone, live).frame,
            F::ListSessions
        ));
        assert!(matches!(
            parsed(r#"{"type":"logout","session_id":"s"}"#, Role::Phone, live).frame,
            F::Logout { session_id: Some(s) } if s == "s"
        ));
        assert!(matches!(
            parsed(r#"{"type":"logout","session_id":"s"}"#, Role::Web, live).frame,
            F::Logout { session_id: None }
        ));
        assert!(matches!(
            parsed(r#"{"type":"logout_all"}"#, Role::Phone, live).frame,
            F::LogoutAll
        ));
        let send = parsed(
            r#"{"type":"send","body":{"a":[1, 2]},"to":"s"}"#,
            Role::Phone,
            live,
        );
        assert!(
            matches!(send.frame, F::Send { body, to: Some(t) } if body.get() == r#"{"a":[1, 2]}"# && t == "s")
        );
        // A web `send` has no `to`; fields a type does not use are ignored.
        assert!(matches!(
            parsed(
                r#"{"type":"send","body":1,"to":"s","extra":true}"#,
                Role::Web,
                live
            )
            .frame,
            F::Send { to: None, .. }
        ));
    }

    /// Every way a frame is refused, and which `id` the refusal carries.
    #[test]
    fn every_refusal_has_its_code_and_id() {
        let (p, w, live) = (Role::Phone, Role::Web, Stage::Live);
        let bad = ErrorCode::BadFrame;
        let cases: &[(&str, Role, Stage, ErrorCode, Option<&str>)] = &[
            ("not json", p, live, bad, None),
            ("[1,2]", p, live, bad, None),
            (r#"{"type":"send""#, p, live, bad, None),
            (r#"{"id":"i"}"#, p, live, bad, Some("i")),
            (r#"{"type":7,"id":"i"}"#, p, live, bad, Some("i")),
            (r#"{"type":"list_sessions","id":5}"#, p, live, bad, None),
            (r#"{"type":"send","body":1,"id":null}"#, p, live, bad, None),
            (r#"{"type":"send","id":"i"}"#, p, live, bad, Some("i")),
            (
                r#"{"type":"send","body":1,"to":3,"id":"i"}"#,
                p,
                live,
                bad,
                Some("i"),
            ),
            (
                r#"{"type":"auth","id":"i"}"#,
                p,
                Stage::Opening,
                bad,
                Some("i"),
            ),
            (
                r#"{"type":"auth","token":null,"id":"i"}"#,
                p,
                Stage::Opening,
                bad,
                Some("i"),
            ),
            (
                r#"{"type":"pair","remember":"yes","id":"i"}"#,
                w,
                Stage::Opening,
                bad,
                Some("i"),
            ),
            (
                r#"{"type":"pair","device_name":1,"id":"i"}"#,
                w,
                Stage::Opening,
                bad,
                Some("i"),
            ),
            (r#"{"type":"link","id":"i"}"#, p, live, bad, Some("i")),
            (
                r#"{"type":"link","ref":1,"id":"i"}"#,
                p,
                live,
                bad,
                Some("i"),
            ),
            (
                r#"{"type":"link_confirm","id":"i"}"#,
                p,
                live,
                bad,
                Some("i"),
            ),
            (r#"{"type":"logout","id":"i"}"#, p, live, bad, Some("i")),
            // Before `auth`/`pair`: anything else is not_authenticated.
            (
                r#"{"type":"send","body":1,"id":"i"}"#,
                p,
                Stage::Opening,
                ErrorCode::NotAuthenticated,
                Some("i"),
            ),
            (
                r#"{"type":"nope","id":"i"}"#,
                w,
                Stage::Opening,
                ErrorCode::NotAuthenticated,
                Some("i"),
            ),
            (
                r#"{"type":"logout","id":"i"}"#,
                w,
                Stage::Pairing,
                ErrorCode::NotAuthenticated,
                Some("i"),
            ),
            (
                r#"{"type":"pair","id":"i"}"#,
                p,
                Stage::Opening,
                ErrorCode::NotAuthenticated,
                Some("i"),
            ),
            // Once live: `auth`, `pair` and types of the other role are unknown.
            (
                r#"{"type":"auth","token":"t","id":"i"}"#,
                p,
                live,
                ErrorCode::UnknownType,
                Some("i"),
            ),
            (
                r#"{"type":"pair","id":"i"}"#,
                w,
                live,
                ErrorCode::UnknownType,
                Some("i"),
            ),
            (
                r#"{"type":"link","ref":"r","id":"i"}"#,
                w,
                live,
                ErrorCode::UnknownType,
                Some("i"),
            ),
            (
                r#"{"type":"list_sessions"}"#,
                w,
                live,
                ErrorCode::UnknownType,
                None,
            ),
            (r#"{"type":"nope"}"#, p, live, ErrorCode::UnknownType, None),
        ];
        for (text, role, stage, code, id) in cases {
            assert_eq!(
                refused(text, *role, *stage),
                (*code, id.map(str::to_owned)),
                "{text} ({role:?}, {stage:?})"
            );
        }
        // An `id` over 64 characters is refused, and echoed.
        let long = "x".repeat(MAX_ID_CHARS + 1);
        let text = format!(r#"{{"type":"list_sessions","id":"{long}"}}"#);
        assert_eq!(refused(&text, p, live), (bad, Some(long)));
    }

    #[test]
    fn peek_id_finds_only_a_valid_id() {
        assert_eq!(peek_id(r#"{"type":"x","id":"i"}"#).as_deref(), Some("i"));
        assert_eq!(peek_id(r#"{"id":5}"#), None);
        assert_eq!(peek_id("[]"), None);
        assert_eq!(peek_id(&format!(r#"{{"id":"{}"}}"#, "x".repeat(65))), None);
    }

    #[test]
    fn close_codes_and_labels_agree() {
        for code in CloseCode::ALL {
            assert_eq!(code.label(), code.code().to_string());
            assert_eq!(CloseCode::from_code(code.code()), Some(code));
        }
        assert_eq!(CloseCode::from_code(1000), None);
    }

    /// The encoder writes the contract's literal texts (names pinned here, not
    /// derived from the parser), and the parser reads back what it wrote.
    #[test]
    fn client_frames_encode_to_the_contract_text_and_parse_back() {
        use ClientFrame as F;
        let body = RawValue::from_string(r#"{"n":[1,"x"]}"#.to_owned()).unwrap();
        let cases: Vec<(F<'_>, Option<&str>, &str, Role, Stage)> = vec![
            (
                F::Auth { token: "t".into() },
                Some("1"),
                r#"{"type":"auth","id":"1","token":"t"}"#,
                Role::Phone,
                Stage::Opening,
            ),
            (
                F::Pair {
                    remember: false,
                    device_name: Some("d".into()),
                },
                None,
                r#"{"type":"pair","remember":false,"device_name":"d"}"#,
                Role::Web,
                Stage::Opening,
            ),
            (
                F::Pair {
                    remember: true,
                    device_name: None,
                },
                None,
                r#"{"type":"pair","remember":true}"#,
                Role::Web,
                Stage::Opening,
            ),
            (
                F::Link(LinkTarget::Ref("r".into())),
                Some("2"),
                r#"{"type":"link","id":"2","ref":"r"}"#,
                Role::Phone,
                Stage::Live,
            ),
            (
                F::Link(LinkTarget::Code("ABCD-EFGH".into())),
                None,
                r#"{"type":"link","code":"ABCD-EFGH"}"#,
                Role::Phone,
                Stage::Live,
            ),
            (
                F::LinkConfirm {
                    request_id: "q".into(),
                },
                None,
                r#"{"type":"link_confirm","request_id":"q"}"#,
                Role::Phone,
                Stage::Live,
            ),
            (
                F::LinkReject {
                    request_id: "q".into(),
                },
                None,
                r#"{"type":"link_reject","request_id":"q"}"#,
                Role::Phone,
                Stage::Live,
            ),
            (
                F::ListSessions,
                Some("3"),
                r#"{"type":"list_sessions","id":"3"}"#,
                Role::Phone,
                Stage::Live,
            ),
            (
                F::Logout {
                    session_id: Some("s".into()),
                },
                None,
                r#"{"type":"logout","session_id":"s"}"#,
                Role::Phone,
                Stage::Live,
            ),
            (
                F::Logout { session_id: None },
                None,
                r#"{"type":"logout"}"#,
                Role::Web,
                Stage::Live,
            ),
            (
                F::LogoutAll,
                None,
                r#"{"type":"logout_all"}"#,
                Role::Phone,
                Stage::Live,
            ),
            (
                F::Send {
                    body: &body,
                    to: Some("s".into()),
                },
                Some("4"),
                r#"{"type":"send","id":"4","body":{"n":[1,"x"]},"to":"s"}"#,
                Role::Phone,
                Stage::Live,
            ),
            (
                F::Send {
                    body: &body,
                    to: None,
                },
                None,
                r#"{"type":"send","body":{"n":[1,"x"]}}"#,
                Role::Web,
                Stage::Live,
            ),
        ];
        let mut seen = std::collections::HashSet::new();
        for (frame, id, text, role, stage) in &cases {
            assert_eq!(frame.to_text(*id), *text);
            let back = parsed(text, *role, *stage);
            assert_eq!(back.id.as_deref(), *id, "{text}");
            assert_eq!(back.frame.to_text(*id), *text, "{text} did not read back");
            seen.insert(frame.frame_type().name());
        }
        assert_eq!(seen.len(), FrameType::ALL.len(), "a frame type has no case");
    }

    #[test]
    fn error_names_serialize_and_read_back() {
        for code in ErrorCode::ALL {
            let text = serde_json::to_string(&code).unwrap();
            assert_eq!(text, format!("\"{}\"", code.as_str()));
            assert_eq!(ErrorCode::from_name(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::from_name("nope"), None);
        assert_eq!(FrameType::parse("logout_all"), Some(FrameType::LogoutAll));
        assert_eq!(FrameType::parse("hello"), None);
    }
}
