//! The name a linking device is shown under: `<browser> on <OS>`, derived from
//! its User-Agent when the client gives none; and the cleaning of both before
//! they are kept or shown to the phone.

use crate::contract::{MAX_DEVICE_NAME_CHARS, MAX_USER_AGENT_BYTES};

/// Characters never kept in text a client chose: control characters (which
/// could forge lines in a log or a terminal) and bidirectional overrides and
/// isolates (which could make a name read as something else on the phone).
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{061C}' | '\u{200E}' | '\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}'
            | '\u{2028}' | '\u{2029}')
}

/// A client-chosen device name as it is kept and shown: unsafe characters
/// removed, at most `MAX_DEVICE_NAME_CHARS` characters, trimmed.
pub fn clean_device_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .filter(|c| !is_unsafe(*c))
        .take(MAX_DEVICE_NAME_CHARS)
        .collect();
    cleaned.trim().to_owned()
}

/// A User-Agent as it is kept and shown: unsafe characters removed, at most
/// `MAX_USER_AGENT_BYTES` bytes (cut at a character boundary).
pub fn clean_user_agent(user_agent: &str) -> String {
    let mut cleaned = String::with_capacity(user_agent.len().min(MAX_USER_AGENT_BYTES));
    for c in user_agent.chars().filter(|c| !is_unsafe(*c)) {
        if cleaned.len() + c.len_utf8() > MAX_USER_AGENT_BYTES {
            break;
        }
        cleaned.push(c);
    }
    cleaned
}

/// `Chrome on Linux`, `Safari on iOS`, `curl`, `Unknown device`, ...
pub fn device_name(user_agent: &str) -> String {
    let ua = user_agent.trim();
    if ua.is_empty() {
        return "Unknown device".to_owned();
    }
    let browser = browser(ua);
    match os(ua) {
        Some(os) => format!("{browser} on {os}"),
        None => browser.to_owned(),
    }
}

fn browser(ua: &str) -> &str {
    // Order matters: Edge and Opera also say Chrome; Chrome also says Safari.
    if ua.contains("Edg/") || ua.contains("Edge/") || ua.contains("EdgA/") || ua.contains("EdgiOS/")
    {
        "Edge"
    } else if ua.contains("OPR/") || ua.contains("Opera") {
        "Opera"
    } else if ua.contains("Firefox/") || ua.contains("FxiOS/") {
        "Firefox"
    } else if ua.contains("Chrome/")
        || ua.contains("Chromium/")
        || ua.contains("HeadlessChrome")
        || ua.contains("CriOS/")
    {
        "Chrome"
    } else if ua.contains("Safari/") {
        "Safari"
    } else {
        // The product token's name: `curl/8.0` -> `curl`; the whole first
        // word when that name is empty (`/x`), so a name is never blank.
        let first = ua.split_whitespace().next().unwrap_or(ua);
        first
            .split('/')
            .next()
            .filter(|name| !name.is_empty())
            .unwrap_or(first)
    }
}

fn os(ua: &str) -> Option<&'static str> {
    // Order matters: Android says Linux; iOS says "like Mac OS X"; ChromeOS says X11.
    if ua.contains("Windows") {
        Some("Windows")
    } else if ua.contains("iPhone") || ua.contains("iPad") || ua.contains("iPod") {
        Some("iOS")
    } else if ua.contains("Android") {
        Some("Android")
    } else if ua.contains("CrOS") {
        Some("ChromeOS")
    } else if ua.contains("Mac OS X") || ua.contains("Macintosh") {
        Some("macOS")
    } else if ua.contains("Linux") || ua.contains("X11") {
        Some("Linux")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::{clean_device_name, clean_user_agent, device_name};
    use crate::contract::{MAX_DEVICE_NAME_CHARS, MAX_USER_AGENT_BYTES};

    /// Found by fuzzing (`fuzz/regressions/device/`): a User-Agent whose
    /// first word starts with `/` gave a blank name.
    #[test]
    fn a_product_token_without_a_name_is_shown_whole() {
        assert_eq!(device_name("  / cu.6.0"), "/");
        assert_eq!(device_name("/8.0 (X11)"), "/8.0 on Linux");
    }

    #[test]
    fn names_lose_control_and_bidi_characters_and_are_capped() {
        assert_eq!(
            clean_device_name("  Anna's\u{202E}txt.exe\n "),
            "Anna'stxt.exe"
        );
        assert_eq!(clean_device_name("a\u{2066}b\u{0007}c\u{200F}"), "abc");
        assert_eq!(clean_device_name("Zoë's Pixel"), "Zoë's Pixel");
        let long = "é".repeat(5 * MAX_DEVICE_NAME_CHARS);
        assert_eq!(
            clean_device_name(&long).chars().count(),
            MAX_DEVICE_NAME_CHARS
        );
    }

    #[test]
    fn user_agents_are_capped_in_bytes_at_a_character_boundary() {
        let long = format!("Mozilla/5.0 {}", "€".repeat(400));
        let cleaned = clean_user_agent(&long);
        assert!(cleaned.len() <= MAX_USER_AGENT_BYTES);
        assert!(cleaned.len() > MAX_USER_AGENT_BYTES - 3);
        assert!(long.starts_with(&cleaned));
        assert_eq!(clean_user_agent("curl/8\r\nX-Evil: 1"), "curl/8X-Evil: 1");
    }

    #[test]
    fn common_user_agents() {
        let cases = [
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
                "Chrome on Linux",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
                "Firefox on Windows",
            ),
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.0.0 Safari/537.36",
                "Chrome on Linux",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36 Edg/124.0",
                "Edge on Windows",
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
                "Safari on iOS",
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
                "Safari on macOS",
            ),
            (
                "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Mobile Safari/537.36",
                "Chrome on Android",
            ),
            (
                "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
                "Chrome on ChromeOS",
            ),
            ("curl/8.5.0", "curl"),
            ("Python/3.11 websockets/12.0", "Python"),
            ("", "Unknown device"),
        ];
        for (ua, want) in cases {
            assert_eq!(device_name(ua), want, "{ua}");
        }
    }
}
