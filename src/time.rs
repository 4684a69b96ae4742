//! Wall-clock helpers: Unix milliseconds and RFC 3339 UTC text.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// `2026-11-24T14:37:39.123Z`.
pub fn rfc3339_ms(unix_ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(unix_ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| String::from("1970-01-01T00:00:00Z"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc_with_z() {
        assert_eq!(super::rfc3339_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339_ms(1_500), "1970-01-01T00:00:01.5Z");
    }
}
