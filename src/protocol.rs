//! The wire contract's shapes: every client frame, server frame, error code and
//! close code. This is the only place JSON field names live; the rest of the
//! gateway works with the typed values parsed here.
//!
//! Parsing is two-step so that bad input gets the contract's exact answer: first
//! every known field is captured as raw JSON (so `null`, wrong types and
//! duplicates are visible), then the frame for the socket's role is built and
//! each field it needs is type-checked.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::contract::MAX_ID_CHARS;
pub use crate::contract::PROTOCOL_VERSION;

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

/// The contract's error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
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
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 13] = [
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
        }
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
        }
    }
}

/// The contract's close codes, with the reason text sent in the close frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseCode {
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
    pub const ALL: [CloseCode; 8] = [
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

    pub fn reason(self) -> &'static str {
        match self {
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
}

/// Why a session was removed, as sent to the phone in `session_removed.reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovedReason {
    SelfLogout,
    Expired,
}

/// A rejected client frame: the error to answer with and the `id` to echo.
#[derive(Debug, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub id: Option<String>,
    pub message: Cow<'static, str>,
}

/// A `link` names the pairing attempt by its ref or by its typed code.
#[derive(Debug, PartialEq, Eq)]
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

    let known = match role {
        Role::Phone => matches!(
            &*kind,
            "auth"
                | "link"
                | "link_confirm"
                | "link_reject"
                | "list_sessions"
                | "logout"
                | "logout_all"
                | "send"
        ),
        Role::Web => matches!(&*kind, "auth" | "pair" | "send" | "logout"),
    };
    let opening_kind = matches!(&*kind, "auth") || (role == Role::Web && kind == "pair");
    match stage {
        Stage::Opening | Stage::Pairing if !opening_kind => {
            return Err(Rejection {
                code: ErrorCode::NotAuthenticated,
                id,
                message: "authenticate first: send `auth` or `pair`".into(),
            });
        }
        Stage::Live if opening_kind || !known => {
            return Err(Rejection {
                code: ErrorCode::UnknownType,
                message: format!("unknown frame type `{kind}` for a {} socket", role.as_str())
                    .into(),
                id,
            });
        }
        _ => {}
    }

    let frame = match &*kind {
        "auth" => ClientFrame::Auth {
            token: required_string(raw.token, "token", &id)?,
        },
        "pair" => {
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
        "link" => match (
            string_field(raw.reference, "ref", &id)?,
            string_field(raw.code, "code", &id)?,
        ) {
            (Some(r), _) => ClientFrame::Link(LinkTarget::Ref(r)),
            (None, Some(c)) => ClientFrame::Link(LinkTarget::Code(c)),
            (None, None) => return Err(bad(id, "`link` needs `ref` or `code`")),
        },
        "link_confirm" => ClientFrame::LinkConfirm {
            request_id: required_string(raw.request_id, "request_id", &id)?,
        },
        "link_reject" => ClientFrame::LinkReject {
            request_id: required_string(raw.request_id, "request_id", &id)?,
        },
        "list_sessions" => ClientFrame::ListSessions,
        "logout" => ClientFrame::Logout {
            session_id: match role {
                Role::Phone => Some(required_string(raw.session_id, "session_id", &id)?),
                Role::Web => None,
            },
        },
        "logout_all" => ClientFrame::LogoutAll,
        "send" => ClientFrame::Send {
            body: raw
                .body
                .ok_or_else(|| bad(id.clone(), "`body` is required"))?,
            to: match role {
                Role::Phone => string_field(raw.to, "to", &id)?,
                Role::Web => None,
            },
        },
        _ => unreachable!("unknown kinds were refused above"),
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
#[derive(Clone, Debug, Serialize)]
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
