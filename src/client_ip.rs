//! The client's IP address behind reverse proxies (`--trust-proxy`): the one
//! shown to the phone in `link_request`, kept in the session, and used for
//! per-IP limits.
//!
//! The peer address is the client, unless the peer is a trusted proxy: then
//! `X-Forwarded-For` is read from the right (each proxy appends the address
//! it got the request from), skipping trusted proxies; the first address
//! that is not one is the client. When every entry is trusted, the left-most
//! is used. An entry that is not an IP address ends the walk: the last
//! trusted address seen (or the peer) is used, since nothing left of a
//! forged or broken entry can be believed. From any other peer the header is
//! ignored: anybody can send one. Several `X-Forwarded-For` headers are one
//! list, joined in order.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use axum::http::HeaderMap;

/// A trusted proxy: an address or a CIDR block.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TrustedNet {
    /// Host bits cleared.
    net: IpAddr,
    prefix: u8,
}

impl TrustedNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u32::from(ip) as u128, 32, self.prefix) == u32::from(net) as u128
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask(u128::from(ip), 128, self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// `bits` (an address of `width` bits) with all but the first `prefix` cleared.
fn mask(bits: u128, width: u32, prefix: u8) -> u128 {
    let host_bits = width - u32::from(prefix);
    if host_bits >= 128 {
        0
    } else {
        bits >> host_bits << host_bits
    }
}

impl FromStr for TrustedNet {
    type Err = String;

    /// `ADDR` or `ADDR/PREFIX` (IPv4 or IPv6).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR"))?;
        let addr = addr.to_canonical();
        let width: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0..={width}"))?,
        };
        let net = match addr {
            IpAddr::V4(a) => IpAddr::V4((mask(u32::from(a) as u128, 32, prefix) as u32).into()),
            IpAddr::V6(a) => IpAddr::V6(mask(u128::from(a), 128, prefix).into()),
        };
        Ok(TrustedNet { net, prefix })
    }
}

impl fmt::Display for TrustedNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

impl fmt::Debug for TrustedNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// clap's parser of one `--trust-proxy` item.
pub fn parse_trusted(s: &str) -> Result<TrustedNet, String> {
    s.parse()
}

fn is_trusted(ip: IpAddr, trusted: &[TrustedNet]) -> bool {
    trusted.iter().any(|t| t.contains(ip))
}

/// The client's address (IPv4-mapped IPv6 as IPv4) by the rules in the
/// module docs, for a request from `peer` carrying `headers`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[TrustedNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let mut last_trusted = peer;
    let entries = headers
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        .flat_map(|v| v.as_bytes().rsplit(|b| *b == b','));
    for entry in entries {
        let Some(ip) = parse_entry(entry) else {
            return last_trusted;
        };
        if !is_trusted(ip, trusted) {
            return ip;
        }
        last_trusted = ip;
    }
    last_trusted
}

fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry.trim_ascii()).ok()?;
    text.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<TrustedNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const PROXY: &str = "10.0.0.1";

    fn client(peer: &str, values: &[&str], trusted: &[&str]) -> IpAddr {
        client_ip(ip(peer), &xff(values), &nets(trusted))
    }

    #[test]
    fn an_untrusted_peer_is_the_client_and_its_header_is_ignored() {
        assert_eq!(
            client("203.0.113.9", &["198.51.100.1"], &[]),
            ip("203.0.113.9")
        );
        assert_eq!(
            client("203.0.113.9", &["198.51.100.1"], &[PROXY]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn a_trusted_peer_without_the_header_is_the_client() {
        assert_eq!(client(PROXY, &[], &[PROXY]), ip(PROXY));
    }

    #[test]
    fn a_trusted_peer_gives_the_right_most_untrusted_entry() {
        assert_eq!(
            client(PROXY, &["1.1.1.1, 2.2.2.2"], &[PROXY]),
            ip("2.2.2.2"),
            "the left-most entry is the client's claim; the right-most, the proxy's"
        );
    }

    #[test]
    fn trusted_entries_are_skipped_from_the_right() {
        let trusted = ["10.0.0.0/8", "192.168.1.7"];
        assert_eq!(
            client(
                PROXY,
                &["6.6.6.6, 1.1.1.1, 192.168.1.7, 10.2.3.4"],
                &trusted
            ),
            ip("1.1.1.1")
        );
    }

    #[test]
    fn all_trusted_gives_the_left_most() {
        assert_eq!(
            client(PROXY, &["10.9.9.9, 10.8.8.8"], &["10.0.0.0/8"]),
            ip("10.9.9.9")
        );
    }

    #[test]
    fn an_entry_that_is_not_an_ip_ends_the_walk() {
        let trusted = ["10.0.0.0/8"];
        // the last trusted address seen
        assert_eq!(
            client(PROXY, &["1.1.1.1, unknown, 10.2.2.2"], &trusted),
            ip("10.2.2.2")
        );
        // none seen yet: the peer
        assert_eq!(client(PROXY, &["1.1.1.1, garbage"], &trusted), ip(PROXY));
        assert_eq!(client(PROXY, &["1.1.1.1,"], &trusted), ip(PROXY));
        assert_eq!(client(PROXY, &[""], &trusted), ip(PROXY));
        assert_eq!(client(PROXY, &["1.1.1.1:443"], &trusted), ip(PROXY));
    }

    #[test]
    fn several_headers_are_one_list_in_order() {
        let trusted = ["10.0.0.0/8"];
        assert_eq!(
            client(PROXY, &["1.1.1.1", "2.2.2.2, 10.1.1.1"], &trusted),
            ip("2.2.2.2")
        );
        assert_eq!(
            client(PROXY, &["1.1.1.1", "10.3.3.3", "10.1.1.1"], &trusted),
            ip("1.1.1.1")
        );
        assert_eq!(
            client(PROXY, &["1.1.1.1, junk", "10.1.1.1"], &trusted),
            ip("10.1.1.1")
        );
    }

    #[test]
    fn ipv6_and_mapped_addresses() {
        let trusted = ["fd00::/8", "10.0.0.0/8"];
        assert_eq!(
            client("fd00::1", &["2001:db8::1, fd12::3"], &trusted),
            ip("2001:db8::1")
        );
        // an IPv4-mapped peer counts as its IPv4 address, and so does an entry
        assert_eq!(
            client("::ffff:10.0.0.1", &["::ffff:203.0.113.5"], &trusted),
            ip("203.0.113.5")
        );
        assert_eq!(client("::ffff:203.0.113.5", &[], &[]), ip("203.0.113.5"));
    }

    #[test]
    fn whitespace_around_entries_is_ignored() {
        assert_eq!(
            client(PROXY, &[" 1.1.1.1 ,\t2.2.2.2 "], &[PROXY]),
            ip("2.2.2.2")
        );
    }

    #[test]
    fn trusted_nets_parse_and_match() {
        let n: TrustedNet = "10.1.2.3/8".parse().unwrap();
        assert_eq!(n.to_string(), "10.0.0.0/8");
        assert!(n.contains(ip("10.255.0.1")));
        assert!(!n.contains(ip("11.0.0.1")));
        assert!(n.contains(ip("::ffff:10.0.0.5")));
        let all: TrustedNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("1.2.3.4")));
        assert!(!all.contains(ip("::1")));
        let one: TrustedNet = "::1".parse().unwrap();
        assert!(one.contains(ip("::1")) && !one.contains(ip("::2")));
        for bad in ["", "10.0.0.0/33", "::/129", "x", "10.0.0.0/-1", "10.0.0.0/"] {
            assert!(bad.parse::<TrustedNet>().is_err(), "{bad:?}");
        }
    }
}
