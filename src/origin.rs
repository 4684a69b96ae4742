//! Who may open a socket from a browser: the `Host` rule against DNS
//! rebinding and the contract's `Origin` rule against other sites' pages.
//! Both are plain functions over header text so a fuzz target can call them.
//!
//! DNS rebinding: a hostile page at `rebind.evil` points its name at the
//! gateway's address; the browser then sends `Host: rebind.evil` and
//! `Origin: http://rebind.evil`, which passes an Origin-equals-Host rule. So
//! an upgrade must also name the gateway: its listen address, `localhost`
//! when it listens on loopback, the host of `--public-url`, or one of
//! `--allowed-hosts`. Listening on an unspecified address (0.0.0.0, ::) with
//! neither option set, any `Host` is taken (the gateway cannot know its
//! names) and a warning says so at start.

use std::net::IpAddr;
use std::time::Duration;

use axum::http::{HeaderMap, header};

use crate::config::Config;
use crate::log_throttle::LogThrottle;

/// Why an upgrade was refused before it was upgraded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `Host` names nothing this gateway serves (DNS rebinding).
    Host,
    /// `Origin` not allowed, not text, or repeated.
    Origin,
}

impl Refusal {
    /// The metric label and log reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Host => "host",
            Refusal::Origin => "origin",
        }
    }
}

/// How often a refusal of one reason is logged: a flood of forged requests
/// must not flood the log.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(1);

/// The refusals' log lines, at most one per reason per second, each
/// carrying how many refusals of its reason it stands for.
pub struct RefusalLog {
    host: LogThrottle,
    origin: LogThrottle,
}

impl Default for RefusalLog {
    fn default() -> Self {
        RefusalLog {
            host: LogThrottle::new(REFUSAL_LOG_EVERY),
            origin: LogThrottle::new(REFUSAL_LOG_EVERY),
        }
    }
}

impl RefusalLog {
    /// Counts one refusal; `Some(n)` when its line is due, standing for `n`
    /// refusals of that reason (see [`LogThrottle::note`]).
    pub fn note(&self, refusal: Refusal) -> Option<u64> {
        match refusal {
            Refusal::Host => self.host.note(),
            Refusal::Origin => self.origin.note(),
        }
    }
}

/// The `Host` and `Origin` checks of one upgrade request; `rule` is
/// `HostRule::new` of the same `config`.
pub fn check(
    config: &Config,
    rule: &HostRule,
    headers: &HeaderMap,
) -> Result<(), (Refusal, &'static str)> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(h), None) => h.to_str().ok(),
        _ => None,
    };
    if !rule.allows(host) {
        return Err((Refusal::Host, "host not served here"));
    }
    let mut origins = headers.get_all(header::ORIGIN).iter();
    let origin = match (origins.next(), origins.next()) {
        (None, _) => return Ok(()),
        // A browser sends one; two are a forgery that a proxy might read
        // differently than we do.
        (Some(_), Some(_)) => return Err((Refusal::Origin, "repeated Origin header")),
        (Some(o), None) => o,
    };
    let Ok(origin) = origin.to_str() else {
        return Err((Refusal::Origin, "Origin is not text"));
    };
    if origin_allowed(origin, host, config.allowed_origins.as_deref()) {
        Ok(())
    } else {
        Err((Refusal::Origin, "origin not allowed"))
    }
}

/// Logs at start when the Host rule cannot protect against DNS rebinding.
pub fn warn_if_unprotected(config: &Config) {
    if HostRule::new(config).any {
        tracing::warn!(
            listen = %config.listen,
            "listening on an unspecified address without --public-url or --allowed-hosts: \
             any Host is accepted, so DNS rebinding protection is off"
        );
    }
}

/// The names an upgrade's `Host` may carry.
#[derive(Debug)]
pub struct HostRule {
    listen: IpAddr,
    /// Lower-cased host names (or bracketed IPv6 literals) from
    /// `--public-url` and `--allowed-hosts`.
    names: Vec<String>,
    /// Any `Host` is taken.
    any: bool,
}

impl HostRule {
    pub fn new(config: &Config) -> Self {
        let listen = config.listen.ip().to_canonical();
        let mut names: Vec<String> = config
            .allowed_hosts
            .iter()
            .flatten()
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        let star = names.iter().any(|h| h == "*");
        if let Some(host) = config.public_url.as_deref().and_then(url_host) {
            names.push(host);
        }
        let any = star || (listen.is_unspecified() && names.is_empty());
        HostRule { listen, names, any }
    }

    /// Whether `host` (a `Host` header: `name[:port]`, IPv6 in brackets)
    /// names this gateway. The port is not compared: a rebinding page's
    /// `Host` differs by name, and proxies may change ports.
    pub fn allows(&self, host: Option<&str>) -> bool {
        if self.any {
            return true;
        }
        let Some((name, _)) = host.and_then(|h| split_host_port(h.trim(), 0)) else {
            return false;
        };
        if self.names.contains(&name) {
            return true;
        }
        let ip = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(&name)
            .parse::<IpAddr>()
            .ok()
            .map(|ip| ip.to_canonical());
        match ip {
            // An unspecified listen address is every address of the machine.
            Some(ip) => {
                ip == self.listen
                    || self.listen.is_unspecified()
                    || (ip.is_loopback() && self.listen.is_loopback())
            }
            None => {
                name == "localhost" && (self.listen.is_loopback() || self.listen.is_unspecified())
            }
        }
    }
}

/// The host of `scheme://host[:port]/...`, lower-cased (IPv6 in brackets).
fn url_host(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    split_host_port(authority, 0).map(|(h, _)| h)
}

/// `scheme://host[:port]` split into its parts, host lower-cased and the port
/// defaulted from the scheme. Only `http` and `https`: a browser's Origin for
/// a page that may open sockets has no other scheme.
pub fn parse_origin(origin: &str) -> Option<(String, String, u16)> {
    let (scheme, rest) = origin.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    // An Origin is scheme, host and port only.
    if rest.contains(['/', '?', '#', '@']) {
        return None;
    }
    let (host, port) = split_host_port(rest, default_port)?;
    Some((scheme, host, port))
}

/// `host[:port]` (IPv6 in brackets) with the given default port.
pub fn split_host_port(s: &str, default_port: u16) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        (format!("[{h}]"), port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().ok()?),
            None => (s.to_owned(), default_port),
        }
    };
    (!host.is_empty()).then(|| (host.to_ascii_lowercase(), port))
}

/// The contract's Origin rule: with no list, the Origin's scheme-defaulted
/// host and port must equal the request's `Host`; a list replaces that (scheme
/// compared too); `*` allows any, `null` too. Schemes other than `http` and
/// `https` are refused unless `*`.
pub fn origin_allowed(origin: &str, host: Option<&str>, allowed: Option<&[String]>) -> bool {
    if let Some(list) = allowed {
        if list.iter().any(|a| a.trim() == "*") {
            return true;
        }
        let Some(o) = parse_origin(origin) else {
            return false;
        };
        return list
            .iter()
            .any(|a| parse_origin(a.trim()).as_ref() == Some(&o));
    }
    let (Some((scheme, o_host, o_port)), Some(host)) = (parse_origin(origin), host) else {
        return false;
    };
    let default_port = if scheme == "https" { 443 } else { 80 };
    split_host_port(host.trim(), default_port) == Some((o_host, o_port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(listen: &str, public_url: Option<&str>, hosts: Option<&[&str]>) -> Config {
        Config {
            listen: listen.parse().expect("addr"),
            public_url: public_url.map(str::to_owned),
            allowed_hosts: hosts.map(|h| h.iter().map(|s| s.to_string()).collect()),
            ..Config::default()
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                header::HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn default_rule_compares_host_and_port() {
        let ok = |o, h| origin_allowed(o, Some(h), None);
        assert!(ok("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(ok("http://LOCALHOST:8080", "localhost:8080"));
        assert!(ok("http://example.com", "example.com:80"));
        assert!(ok("https://example.com", "example.com:443"));
        assert!(!ok("http://example.com", "example.com:8080"));
        assert!(!ok("http://evil.test:8080", "127.0.0.1:8080"));
        assert!(!ok("null", "127.0.0.1:8080"));
        assert!(ok("http://[::1]:8080", "[::1]:8080"));
    }

    #[test]
    fn only_http_and_https_origins() {
        let ok = |o, h| origin_allowed(o, Some(h), None);
        assert!(!ok("ftp://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(!ok("ws://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(!ok("wss://example.com", "example.com:443"));
        assert!(!ok("file://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(!ok("http://127.0.0.1:8080/path", "127.0.0.1:8080"));
        assert!(!ok("http://u@127.0.0.1:8080", "127.0.0.1:8080"));
        let list = vec!["ws://app.example.com".to_owned()];
        assert!(!origin_allowed("ws://app.example.com", None, Some(&list)));
    }

    #[test]
    fn list_replaces_default() {
        let list = vec!["https://app.example.com".to_owned()];
        assert!(origin_allowed(
            "https://APP.example.com:443",
            Some("x"),
            Some(&list)
        ));
        assert!(!origin_allowed("http://x:1", Some("x:1"), Some(&list)));
        assert!(!origin_allowed("http://app.example.com", None, Some(&list)));
        assert!(!origin_allowed("null", None, Some(&list)));
        let any = vec!["*".to_owned()];
        assert!(origin_allowed("null", None, Some(&any)));
        assert!(origin_allowed("ftp://x", None, Some(&any)));
    }

    #[test]
    fn loopback_listener_takes_its_address_and_localhost_only() {
        let rule = HostRule::new(&config("127.0.0.1:8080", None, None));
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:8080",
        ] {
            assert!(rule.allows(Some(ok)), "{ok}");
        }
        for bad in [
            "rebind.evil",
            "rebind.evil:8080",
            "10.0.0.1:8080",
            "",
            "[::1",
        ] {
            assert!(!rule.allows(Some(bad)), "{bad}");
        }
        assert!(!rule.allows(None));
    }

    #[test]
    fn public_url_and_allowed_hosts_name_the_gateway() {
        let rule = HostRule::new(&config(
            "10.0.0.5:8080",
            Some("https://Chat.Example.com/base"),
            Some(&["alt.example.com"]),
        ));
        assert!(rule.allows(Some("chat.example.com")));
        assert!(rule.allows(Some("alt.example.com:8443")));
        assert!(rule.allows(Some("10.0.0.5:8080")));
        assert!(!rule.allows(Some("localhost:8080")));
        assert!(!rule.allows(Some("10.0.0.6:8080")));
        assert!(!rule.allows(Some("rebind.evil")));
        let star = HostRule::new(&config("127.0.0.1:1", None, Some(&["*"])));
        assert!(star.allows(Some("anything.test")));
    }

    #[test]
    fn unspecified_listener_takes_any_host_unless_told_its_names() {
        let open = HostRule::new(&config("0.0.0.0:8080", None, None));
        assert!(open.any);
        assert!(open.allows(Some("rebind.evil")));
        let named = HostRule::new(&config("[::]:8080", Some("https://chat.example.com"), None));
        assert!(!named.any);
        assert!(named.allows(Some("chat.example.com")));
        assert!(named.allows(Some("192.168.1.20:8080")));
        assert!(named.allows(Some("localhost:8080")));
        assert!(!named.allows(Some("rebind.evil")));
    }

    #[test]
    fn check_refuses_rebinding_repeated_and_foreign_origins() {
        let c = config("127.0.0.1:8080", None, None);
        let rule = HostRule::new(&c);
        let check = |h: &[(&str, &str)]| check(&c, &rule, &headers(h)).map_err(|(r, _)| r);
        assert_eq!(check(&[("host", "127.0.0.1:8080")]), Ok(()));
        assert_eq!(
            check(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://127.0.0.1:8080")
            ]),
            Ok(())
        );
        assert_eq!(
            check(&[("host", "rebind.evil"), ("origin", "http://rebind.evil")]),
            Err(Refusal::Host)
        );
        assert_eq!(check(&[]), Err(Refusal::Host));
        assert_eq!(
            check(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://127.0.0.1:8080"),
                ("origin", "http://evil.test"),
            ]),
            Err(Refusal::Origin)
        );
        assert_eq!(
            check(&[("host", "127.0.0.1:8080"), ("origin", "null")]),
            Err(Refusal::Origin)
        );
        assert_eq!(
            check(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "ws://127.0.0.1:8080")
            ]),
            Err(Refusal::Origin)
        );
    }
}
