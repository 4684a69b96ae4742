//! The name a linking device is shown under: `<browser> on <OS>`, derived from
//! its User-Agent when the client gives none.

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
        // The product token's name: `curl/8.0` -> `curl`.
        let first = ua.split_whitespace().next().unwrap_or(ua);
        first.split('/').next().unwrap_or(first)
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
    use super::device_name;

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
