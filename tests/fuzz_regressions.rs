//! The fuzz targets' inputs replayed on stable: every file of the checked-in
//! seed corpus (`fuzz/corpus/<target>/`) and every input that once crashed a
//! target (`fuzz/regressions/<target>/`, kept when the crash was fixed) goes
//! through the same entry point the cargo-fuzz target calls
//! (`pairgate::fuzzing`). So a fixed crash stays fixed without nightly.
//!
//! `cargo test --release --test fuzz_regressions -- --ignored write_seed_corpus`
//! rewrites the seeds made from real frames and tokens.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pairgate::fuzzing::{SECRET, TARGETS};
use pairgate::protocol::{ClientFrame, LinkTarget};
use pairgate::tokens::Tokens;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir`, sorted (none if it does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.expect("read dir entry").path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// Runs every file under `fuzz/<kind>/<target>/` through its target; a
/// panic names the file.
fn replay(kind: &str) -> usize {
    let mut ran = 0;
    for (name, entry) in TARGETS {
        for file in files(&fuzz_dir().join(kind).join(name)) {
            let data = std::fs::read(&file).expect("read input");
            let outcome = std::panic::catch_unwind(|| entry(&data));
            assert!(
                outcome.is_ok(),
                "fuzz target {name} panics on {}",
                file.display()
            );
            ran += 1;
        }
    }
    ran
}

#[test]
fn every_target_has_a_seed_corpus_and_it_passes() {
    for (name, _) in TARGETS {
        assert!(
            !files(&fuzz_dir().join("corpus").join(name)).is_empty(),
            "no seed corpus for fuzz target {name}"
        );
        assert!(
            fuzz_dir()
                .join("fuzz_targets")
                .join(format!("{name}.rs"))
                .is_file(),
            "no fuzz_targets/{name}.rs"
        );
    }
    let ran = replay("corpus");
    eprintln!("replayed {ran} corpus inputs");
}

#[test]
fn crashes_found_by_fuzzing_stay_fixed() {
    let ran = replay("regressions");
    eprintln!("replayed {ran} kept crashing inputs");
}

/// Writes the seeds made from what real clients send.
#[test]
#[ignore = "writes fuzz/corpus; run by hand"]
fn write_seed_corpus() {
    let corpus = fuzz_dir().join("corpus");
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
    };

    let tokens = Tokens::new(SECRET);
    let century = Duration::from_secs(100 * 365 * 86_400);
    let phone = tokens.mint_phone("alice", century).unwrap();
    let session = tokens.mint_session("alice", "s-0123456789abcdef");
    let other_key = Tokens::new("another-secret")
        .mint_phone("alice", century)
        .unwrap();
    let body: Box<serde_json::value::RawValue> =
        serde_json::value::RawValue::from_string(r#"{"text":"hi","n":[1,2.5,null]}"#.into())
            .unwrap();
    let frames: Vec<(&str, ClientFrame<'_>)> = vec![
        (
            "auth_phone",
            ClientFrame::Auth {
                token: phone.clone(),
            },
        ),
        (
            "auth_session",
            ClientFrame::Auth {
                token: session.clone(),
            },
        ),
        (
            "pair",
            ClientFrame::Pair {
                remember: false,
                device_name: Some("Laptop \u{1F4BB}".into()),
            },
        ),
        (
            "link_ref",
            ClientFrame::Link(LinkTarget::Ref("Zx_9-AbCdEfGhIjKlMnOpQrSt".into())),
        ),
        (
            "link_code",
            ClientFrame::Link(LinkTarget::Code("ABCD-EFGH".into())),
        ),
        (
            "link_confirm",
            ClientFrame::LinkConfirm {
                request_id: "r-1".into(),
            },
        ),
        (
            "link_reject",
            ClientFrame::LinkReject {
                request_id: "r-2".into(),
            },
        ),
        ("list_sessions", ClientFrame::ListSessions),
        (
            "logout_phone",
            ClientFrame::Logout {
                session_id: Some("s-1".into()),
            },
        ),
        ("logout_web", ClientFrame::Logout { session_id: None }),
        ("logout_all", ClientFrame::LogoutAll),
        (
            "send_to",
            ClientFrame::Send {
                body: &body,
                to: Some("s-1".into()),
            },
        ),
        (
            "send",
            ClientFrame::Send {
                body: &body,
                to: None,
            },
        ),
    ];
    for (name, frame) in &frames {
        write("client_frame", name, frame.to_text(Some("c1")).as_bytes());
    }
    // The odd shapes the contract tests send.
    for (name, text) in [
        ("array", r#"[{"type":"auth"}]"#),
        ("null_id", r#"{"type":"list_sessions","id":null}"#),
        ("number_id", r#"{"type":"list_sessions","id":7}"#),
        (
            "long_id",
            &format!(r#"{{"type":"list_sessions","id":"{}"}}"#, "x".repeat(65)),
        ),
        ("dup_type", r#"{"type":"send","type":"auth","body":1}"#),
        ("escaped", r#"{"type":"l\u0069nk","ref":"a\"b\\c"}"#),
        ("remember_str", r#"{"type":"pair","remember":"yes"}"#),
        (
            "deep_body",
            &format!(
                r#"{{"type":"send","body":{}1{}}}"#,
                "[".repeat(100),
                "]".repeat(100)
            ),
        ),
    ] {
        write("client_frame", name, text.as_bytes());
    }

    for (name, text) in [
        ("phone", phone.as_str()),
        ("session", session.as_str()),
        ("other_key", other_key.as_str()),
        (
            "alg_none",
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSIsImF1ZCI6InBhaXJnYXRlLXBob25lIiwiZXhwIjo0MTAyNDQ0ODAwfQ.",
        ),
        ("two_dots", ".."),
    ] {
        write("token", name, text.as_bytes());
    }

    for (name, text) in [
        ("code", "ABCDEFGH"),
        ("code_shown", "abcd-efgh"),
        ("code_aliases", "oIl0-1LOi"),
        ("ref", "Zx_9-AbCdEfGhIjKlMnOpQrSt"),
        (
            "payload",
            "http://127.0.0.1:8080/phone#ref=Zx_9-AbCdEfGhIjKlMnOpQrSt",
        ),
        ("spaced", "  ABCD-EFGH \n"),
    ] {
        write("pairing_code", name, text.as_bytes());
    }

    for (name, text) in [
        (
            "chrome",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        ),
        (
            "firefox",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
        ),
        (
            "safari_ios",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
        ),
        ("curl", "curl/8.5.0"),
        ("bidi", "Laptop \u{202E}evil\u{2066}\r\nX-Forged: 1"),
    ] {
        write("device", name, text.as_bytes());
    }

    for (name, args) in [
        ("defaults", vec![]),
        (
            "listen",
            vec!["--listen", "0.0.0.0:9000", "--data-dir", "/tmp/x"],
        ),
        (
            "timers",
            vec![
                "--qr-ttl-ms",
                "20000",
                "--heartbeat-ms",
                "100",
                "--session-idle-days",
                "0.5",
            ],
        ),
        (
            "origins",
            vec!["--allowed-origins", "https://a.example,https://b.example"],
        ),
        (
            "cluster",
            vec![
                "--secret",
                "s",
                "--redis",
                "redis://127.0.0.1:6379/0",
                "--node-id",
                "n1",
                "--node-lease-ms",
                "1000",
            ],
        ),
        (
            "limits",
            vec![
                "--max-frame-bytes=65536",
                "--max-frames-per-sec",
                "10",
                "--max-queue-bytes",
                "4096",
                "--max-devices",
                "2",
            ],
        ),
        ("admin", vec!["--admin-token", "t0ken", "--demo"]),
    ] {
        write("config", name, args.join("\0").as_bytes());
    }
}
