//! The entry points of the fuzz targets, one per parser of client input.
//!
//! Each takes the fuzzer's bytes, feeds them to the parser the gateway runs
//! on that input, and panics only when the parser breaks a rule it promises
//! (or panics itself). They live in the library so that the cargo-fuzz
//! targets (`fuzz/fuzz_targets/<name>.rs`, nightly) and the stable test that
//! replays the checked-in corpus and every crashing input kept
//! (`tests/fuzz_regressions.rs`) run the same code.
//!
//! A target is added in three places: a function here and its row in
//! [`TARGETS`], a file in `fuzz/fuzz_targets/` calling it (and its
//! `[[bin]]` in `fuzz/Cargo.toml`), and a seed corpus in `fuzz/corpus/<name>/`.

use clap::Parser;

use crate::config::Config;
use crate::protocol::{self, ClientFrame, LinkTarget, Role, Stage};
use crate::qr;
use crate::tokens::{self, Tokens};

/// A target's entry point: the fuzzer's bytes in, a panic on a broken rule.
pub type Target = fn(&[u8]);

/// Every target: its name (the file in `fuzz/fuzz_targets/`, the directories
/// in `fuzz/corpus/` and `fuzz/regressions/`) and its entry point.
pub const TARGETS: &[(&str, Target)] = &[
    ("client_frame", client_frame),
    ("token", token),
    ("pairing_code", pairing_code),
    ("device", device),
    ("config", config),
    ("upgrade_headers", upgrade_headers),
];

/// The key every token target verifies with; the corpus's real tokens are
/// signed with it (`tests/fuzz_regressions.rs`'s `write_seed_corpus`
/// made them).
pub const SECRET: &str = "pairgate-fuzz-secret";

const ROLES: [Role; 2] = [Role::Phone, Role::Web];
const STAGES: [Stage; 3] = [Stage::Opening, Stage::Pairing, Stage::Live];

/// A client's text frame (the socket hands the parser only valid UTF-8), as
/// each role at each stage reads it. A frame that parses encodes back
/// (`ClientFrame::to_text`) to text that parses to the same frame.
pub fn client_frame(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = protocol::peek_id(text);
    for role in ROLES {
        for stage in STAGES {
            let Ok(req) = protocol::parse_frame(text, role, stage) else {
                continue;
            };
            if let Some(id) = &req.id {
                assert!(id.chars().count() <= crate::contract::MAX_ID_CHARS);
            }
            let encoded = req.frame.to_text(req.id.as_deref());
            let again = protocol::parse_frame(&encoded, role, stage)
                .unwrap_or_else(|e| panic!("re-encoded frame refused: {encoded} ({e:?})"));
            assert_eq!(again.id, req.id, "{encoded}");
            assert_eq!(again.frame.to_text(again.id.as_deref()), encoded);
        }
    }
}

/// A token sent in `auth`, checked as a phone token and as a session token
/// with a fixed key. What is accepted names a valid account, and no text is
/// ever both kinds.
pub fn token(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    thread_local! {
        static TOKENS: Tokens = Tokens::new(SECRET);
    }
    TOKENS.with(|t| {
        let phone = t.verify_phone(text);
        let session = t.verify_session(text);
        if let Some(account) = &phone {
            assert!(tokens::valid_account_id(account), "{account:?}");
        }
        if let Some(claim) = &session {
            assert!(tokens::valid_account_id(&claim.account), "{claim:?}");
        }
        assert!(
            phone.is_none() || session.is_none(),
            "one token accepted as both kinds: {text}"
        );
    });
}

/// What a phone names in `link`: a typed pairing code, a ref, or a scanned QR
/// payload (the CLI's `link_target`). A code normalises to 8 Crockford
/// symbols, is its own normal form, and survives being shown as `ABCD-EFGH`.
pub fn pairing_code(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(code) = qr::normalize_code(text) {
        assert_eq!(code.len(), 8, "{code:?}");
        assert!(
            code.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
        );
        assert_eq!(qr::normalize_code(&code).as_deref(), Some(code.as_str()));
        let shown = qr::display_code(&code);
        assert_eq!(qr::normalize_code(&shown).as_deref(), Some(code.as_str()));
    }
    match crate::client::link_target(text) {
        LinkTarget::Code(c) => assert!(qr::normalize_code(&c).is_some(), "{c:?}"),
        LinkTarget::Ref(r) => {
            // A ref goes on the wire as it is: the frame carrying it parses.
            let frame = ClientFrame::Link(LinkTarget::Ref(r)).to_text(None);
            assert!(protocol::parse_frame(&frame, Role::Phone, Stage::Live).is_ok());
        }
    }
}

/// A User-Agent header and a `device_name` as the gateway keeps and shows
/// them: bounded, without control characters or bidi overrides.
pub fn device(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let ua = crate::device::clean_user_agent(&text);
    assert!(ua.len() <= crate::contract::MAX_USER_AGENT_BYTES);
    assert!(!ua.chars().any(char::is_control), "{ua:?}");
    let name = crate::device::clean_device_name(&text);
    assert!(name.chars().count() <= crate::contract::MAX_DEVICE_NAME_CHARS);
    assert!(!name.chars().any(char::is_control), "{name:?}");
    let derived = crate::device::device_name(&ua);
    assert!(!derived.is_empty());
    assert!(!derived.chars().any(char::is_control), "{derived:?}");
}

/// `pairgate serve`'s options, as the command line gives them.
#[derive(Parser)]
#[command(name = "pairgate")]
struct Serve {
    #[command(flatten)]
    config: Config,
}

/// A command line of `pairgate serve` (arguments separated by NUL bytes, as
/// `argv` is): it parses or is refused with an error, and what parses can be
/// used: every duration the gateway derives from it exists and can be a
/// deadline (now plus it does not overflow).
pub fn config(data: &[u8]) {
    let args = data
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned());
    let argv = std::iter::once("serve".to_owned()).chain(args);
    let Ok(serve) = Serve::try_parse_from(argv) else {
        return;
    };
    let c = serve.config;
    let now = std::time::Instant::now();
    for d in [
        c.qr_ttl(),
        c.request_ttl(),
        c.auth_timeout(),
        c.heartbeat() * 2,
        c.ephemeral_grace(),
        c.session_idle().unwrap_or_default(),
        c.node_lease(),
    ] {
        assert!(now.checked_add(d).is_some(), "{d:?} cannot be a deadline");
    }
    let _ = c.max_body_bytes();
}

/// An upgrade request's headers (`Name: value` lines; lines that are not a
/// valid header are skipped, as hyper would refuse them), through the Host and
/// Origin rules under a few configurations and the client-address rule behind
/// a trusted proxy. No panic; an Origin check that passes saw at most one
/// Origin; the client address is the peer or an address the headers carry.
pub fn upgrade_headers(data: &[u8]) {
    use std::net::IpAddr;

    use axum::http::{HeaderMap, HeaderName, HeaderValue};

    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim_ascii()),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    thread_local! {
        static CONFIGS: Vec<(Config, crate::origin::HostRule)> = {
            let plain = Config::default();
            let listed = Serve::try_parse_from([
                "serve",
                "--allowed-origins",
                "https://app.example.com,http://[::1]:8080",
                "--allowed-hosts",
                "app.example.com,[::1]",
                "--public-url",
                "https://pair.example.com/pairgate",
            ])
            .expect("fuzz configuration parses")
            .config;
            let open = Serve::try_parse_from(["serve", "--listen", "0.0.0.0:8080", "--allowed-origins", "*"])
                .expect("fuzz configuration parses")
                .config;
            [plain, listed, open]
                .into_iter()
                .map(|c| {
                    let hosts = crate::origin::HostRule::new(&c);
                    (c, hosts)
                })
                .collect()
        };
    }
    CONFIGS.with(|configs| {
        for (config, hosts) in configs {
            if crate::origin::check(config, hosts, &headers).is_ok() {
                assert!(
                    headers
                        .get_all(axum::http::header::ORIGIN)
                        .iter()
                        .nth(1)
                        .is_none()
                );
            }
        }
    });
    let peer: IpAddr = [127, 0, 0, 1].into();
    let trusted: Vec<crate::client_ip::TrustedNet> = ["127.0.0.0/8", "10.0.0.0/8", "::1"]
        .iter()
        .map(|t| crate::client_ip::parse_trusted(t).expect("fuzz trusted nets parse"))
        .collect();
    let ip = crate::client_ip::client_ip(peer, &headers, &trusted);
    let carried = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter_map(|e| {
            std::str::from_utf8(e.trim_ascii())
                .ok()?
                .parse::<IpAddr>()
                .ok()
        })
        .any(|e| e.to_canonical() == ip);
    assert!(
        ip == peer || carried,
        "{ip} is neither the peer nor forwarded"
    );
    for text in headers.get_all(axum::http::header::HOST).iter() {
        if let Ok(text) = text.to_str() {
            let _ = crate::origin::split_host_port(text, 80);
        }
    }
    for text in headers.get_all(axum::http::header::ORIGIN).iter() {
        if let Ok(text) = text.to_str() {
            let _ = crate::origin::parse_origin(text);
        }
    }
}
