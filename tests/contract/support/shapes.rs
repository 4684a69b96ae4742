//! Shape checks of what the gateway sends: the `SESSION` object, its times,
//! events without ids.

use serde_json::Value;

/// The keys of a `SESSION` object.
pub const SESSION_KEYS: [&str; 8] = [
    "session_id",
    "device_name",
    "user_agent",
    "ip",
    "created_at",
    "last_active_at",
    "online",
    "remember",
];

/// RFC 3339 with a UTC offset (`Z` or `+00:00`).
pub fn is_rfc3339_utc(s: &str) -> bool {
    match time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        Ok(t) => t.offset().is_utc() && (s.ends_with('Z') || s.ends_with("+00:00")),
        Err(_) => false,
    }
}

pub fn parse_time(s: &str) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("not RFC 3339: {s:?}: {e}"))
}

/// Checks every field of a `SESSION` object.
pub fn assert_session_shape(s: &Value) {
    for k in SESSION_KEYS {
        assert!(s.get(k).is_some(), "SESSION lacks {k}: {s}");
    }
    assert!(
        s["session_id"].as_str().is_some_and(|x| !x.is_empty()),
        "{s}"
    );
    assert!(s["device_name"].is_string(), "{s}");
    assert!(s["user_agent"].is_string(), "{s}");
    assert!(s["ip"].is_string(), "{s}");
    for k in ["created_at", "last_active_at"] {
        let t = s[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k} not a string: {s}"));
        assert!(is_rfc3339_utc(t), "{k} is not RFC 3339 UTC: {t:?}");
        // Fixed width (`2026-11-28T22:18:02.800Z`), so clients may sort the texts.
        assert!(
            t.len() == 24 && t.as_bytes()[19] == b'.' && t.ends_with('Z'),
            "{k} is not fixed-width with milliseconds: {t:?}"
        );
    }
    assert!(
        parse_time(s["created_at"].as_str().unwrap())
            <= parse_time(s["last_active_at"].as_str().unwrap()),
        "last_active_at before created_at: {s}"
    );
    assert!(s["online"].is_boolean(), "{s}");
    assert!(s["remember"].is_boolean(), "{s}");
}

/// Unsolicited events carry no `id`.
pub fn assert_no_id(m: &Value) {
    assert!(m.get("id").is_none(), "event carries an id: {m}");
}
