//! Configuration and secrets, through the real binary: `--config FILE`
//! (TOML, below `PAIRGATE_*` and flags), `pairgate config`, `--secret-file`,
//! errors that name where a bad value came from, boolean environment values.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::support::*;

/// Writes `text` to `name` in `dir`, private to its owner.
fn write_private(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    set_mode(&path, 0o600);
    path
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `pairgate config ARGS...` with `env`: (exit code, stdout, stderr).
async fn config(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut all = vec!["config"];
    all.extend_from_slice(args);
    let (st, out, err) = run_cli_env(None, &all, env).await;
    (st.code(), out, err)
}

/// The value of `key = value` in `pairgate config`'s output.
fn setting<'a>(toml: &'a str, key: &str) -> Option<&'a str> {
    toml.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
}

const FILE: &str = r#"
heartbeat-ms = 7777
max-devices = 3
qr-rotations = 2
allowed-origins = ["http://file-origin.example.test", "http://other.example.test"]
demo = true
session-idle-days = 0.5
"#;

/// A file sets several options (a list and a bool among them) that the
/// gateway then runs with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_sets_serve_options() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_private(dir.path(), "pairgate.toml", FILE);
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let g = BinGateway::serve(&data, &["--config", file.to_str().unwrap()], &[]).await;
    let c = Client::open(&g.ws_url("/ws/web")).await;
    let hello = c.expect("hello").await;
    assert_eq!(hello["heartbeat_ms"], 7777, "{hello}");
    c.send_json(json!({"type": "pair"})).await;
    let qr = c.expect("qr").await;
    assert_eq!(qr["remaining"], 1, "{qr}");
    for origin in [
        "http://file-origin.example.test",
        "http://other.example.test",
    ] {
        assert_eq!(
            upgrade_status(g.addr, "/ws/web", &[("Origin", origin)]).await,
            101,
            "{origin}"
        );
    }
    assert_eq!(
        upgrade_status(g.addr, "/ws/web", &[("Origin", "http://evil.example.test")]).await,
        403
    );
    assert_eq!(http_post(g.addr, "/demo/phone").await.status, 200);
}

/// Flags > `PAIRGATE_*` > file > defaults, on one option; the file may also
/// come from `PAIRGATE_CONFIG`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_beat_the_environment_which_beats_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_private(dir.path(), "pairgate.toml", FILE);
    let f = file.to_str().unwrap();
    let (code, out, err) = config(&["--config", f], &[]).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(setting(&out, "heartbeat-ms"), Some("7777"), "{out}");
    assert_eq!(setting(&out, "demo"), Some("true"), "{out}");
    let (_, out, _) = config(&[], &[("PAIRGATE_CONFIG", f)]).await;
    assert_eq!(setting(&out, "heartbeat-ms"), Some("7777"), "{out}");
    let env = [("PAIRGATE_HEARTBEAT_MS", "8888")];
    let (_, out, _) = config(&["--config", f], &env).await;
    assert_eq!(setting(&out, "heartbeat-ms"), Some("8888"), "{out}");
    assert_eq!(setting(&out, "max-devices"), Some("3"), "{out}");
    let (_, out, _) = config(&["--config", f, "--heartbeat-ms", "9999"], &env).await;
    assert_eq!(setting(&out, "heartbeat-ms"), Some("9999"), "{out}");
    let (_, out, _) = config(&[], &[]).await;
    assert_eq!(setting(&out, "heartbeat-ms"), Some("25000"), "{out}");
}

/// A key that is no option, or a value of the wrong type, exits 2 naming the
/// key and the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_and_values_in_the_file_are_refused_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (text, key)) in [
        ("max_devices = 3", "max_devices"),
        (
            "heartbeat-ms = 5000\nno-such-option = true",
            "no-such-option",
        ),
        ("max-devices = \"eight\"", "max-devices"),
        ("max-devices = [1, 2]", "max-devices"),
        ("demo = 1", "demo"),
        ("listen = 8080", "listen"),
    ]
    .into_iter()
    .enumerate()
    {
        let file = write_private(dir.path(), &format!("bad-{i}.toml"), text);
        let f = file.to_str().unwrap();
        // (Each is refused before `serve` would listen.)
        for sub in ["config", "serve"] {
            let (st, _, err) = run_cli(&[sub, "--config", f]).await;
            assert_eq!(st.code(), Some(2), "{sub} {text:?}: {err}");
            assert!(
                err.contains(key) && err.contains(f),
                "{sub} {text:?}: {err}"
            );
        }
    }
    let missing = dir.path().join("missing.toml");
    let (code, _, err) = config(&["--config", missing.to_str().unwrap()], &[]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("missing.toml"), "{err}");
}

/// `pairgate config` prints no secret, and what it prints is a config file
/// that gives the same configuration back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_configuration_reads_back_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--secret",
        "printed-s3cret",
        "--admin-token",
        "printed-t0ken",
        "--previous-secret",
        "printed-0ld",
        "--redis",
        "redis://user:printed-pa55@redis.internal:6379/0",
        "--trust-proxy",
        "10.0.0.0/8,192.168.1.1",
        "--allowed-origins",
        "https://a.example",
        "--max-devices",
        "4",
        "--demo",
    ];
    let (code, out, err) = config(&args, &[]).await;
    assert_eq!(code, Some(0), "{err}");
    for secret in [
        "printed-s3cret",
        "printed-t0ken",
        "printed-0ld",
        "printed-pa55",
    ] {
        assert!(!out.contains(secret), "{secret} shown:\n{out}");
    }
    assert!(out.contains("redis.internal:6379/0"), "{out}");
    let file = write_private(dir.path(), "printed.toml", &out);
    let (code, again, err) = config(&["--config", file.to_str().unwrap()], &[]).await;
    assert_eq!(code, Some(0), "{err}");
    // The same, but for the secrets it could not carry.
    let (_, without_secrets, _) = config(&args[8..], &[]).await;
    assert_eq!(again, without_secrets);
    assert_eq!(setting(&again, "max-devices"), Some("4"));
    assert_eq!(
        setting(&again, "trust-proxy"),
        Some(r#"["10.0.0.0/8", "192.168.1.1/32"]"#)
    );
    // An invalid configuration is an error, exit 2.
    let (code, _, err) = config(&["--previous-secret", "1,2,3,4,5,6,7,8,9"], &[]).await;
    assert_eq!(code, Some(2), "{err}");
}

/// `--secret-file` for `serve` and `token`: the token it signs is one the
/// gateway takes; no secret is generated in the data dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_file_signs_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let secret = write_private(dir.path(), "secret.txt", "  file-secret-value\n");
    let s = secret.to_str().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let g = BinGateway::serve(&data, &["--secret-file", s], &[]).await;
    assert!(!data.join("secret").exists(), "a secret was generated");
    let acc = account("secretfile");
    let token = cli_token(&["--account", &acc, "--secret-file", s]).await;
    assert!(jwt_verifies(&token, "file-secret-value"));
    let _phone = g.phone_with(&acc, &token).await;
    let integrator = mint("file-secret-value", &phone_claims(&acc));
    let _again = g.phone_with(&acc, &integrator).await;

    // From the environment too.
    let (st, out, err) = run_cli_env(
        None,
        &["token", "--account", &acc],
        &[("PAIRGATE_SECRET_FILE", s)],
    )
    .await;
    assert!(st.success(), "{err}");
    assert!(jwt_verifies(out.trim(), "file-secret-value"));

    // It conflicts with --secret; a missing one is named.
    let (st, _, err) = run_cli(&["config", "--secret", "x", "--secret-file", s]).await;
    assert_eq!(st.code(), Some(2), "{err}");
    let missing = dir.path().join("no-such-secret");
    let m = missing.to_str().unwrap();
    for args in [
        vec!["token", "--account", "a", "--secret-file", m],
        vec!["config", "--secret-file", m],
    ] {
        let (st, _, err) = run_cli(&args).await;
        assert!(!st.success(), "{args:?}");
        assert!(err.contains("no-such-secret"), "{args:?}: {err}");
    }
    // A flag's --secret-file beats the file's `secret`; both in the file
    // is an error.
    let file = write_private(
        dir.path(),
        "with-secret.toml",
        "secret = \"from-the-file\"\n",
    );
    let f = file.to_str().unwrap();
    let (code, out, err) = config(&["--config", f, "--secret-file", s], &[]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(setting(&out, "secret-file").is_some(), "{out}");
    assert!(!out.contains("# secret ="), "{out}");
    let both = format!("secret = \"x\"\nsecret-file = {s:?}\n");
    let file = write_private(dir.path(), "both.toml", &both);
    let (code, _, err) = config(&["--config", file.to_str().unwrap()], &[]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--secret-file"), "{err}");

    // One others can read works, with a warning.
    set_mode(&secret, 0o644);
    let (st, _, err) = run_cli(&["token", "--account", "a", "--secret-file", s]).await;
    assert!(st.success(), "{err}");
    assert!(err.contains("other users"), "{err}");
}

/// `--previous-secret-file` (flag, `PAIRGATE_PREVIOUS_SECRET_FILE`, config
/// key): tokens of the secret in the file are accepted, none is signed
/// with it; `pairgate config` shows the path, never the contents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previous_secret_files_verify_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let old = write_private(dir.path(), "old.txt", "\n  0ld-file-secret \n");
    let older = write_private(dir.path(), "older.txt", "0lder-file-secret\n");
    let (o, oo) = (old.to_str().unwrap(), older.to_str().unwrap());
    // A data dir per start: a killed gateway's lock on its store may
    // outlive the drop.
    let data = |n: &str| {
        let d = dir.path().join(n);
        std::fs::create_dir(&d).unwrap();
        d
    };
    let acc = account("prevfile");
    let of_old = mint("0ld-file-secret", &phone_claims(&acc));
    let of_older = mint("0lder-file-secret", &phone_claims(&acc));

    // The flag.
    let g = BinGateway::serve(
        &data("flag"),
        &["--secret", "current", "--previous-secret-file", o],
        &[],
    )
    .await;
    let phone = g.phone_with(&acc, &of_old).await;
    let s = g.pair(&phone, &PairOpts::new().remember(true)).await;
    assert!(jwt_verifies_key(
        &s.token,
        &pairgate::tokens::session_key("current")
    ));
    assert!(
        !g.log_text().contains("secret file can be read"),
        "{}",
        g.log_text()
    );
    drop(g);

    // The environment, two files (one that others can read: used, with a
    // warning naming it), beside --previous-secret.
    set_mode(&older, 0o644);
    let both = format!("{o},{oo}");
    let g = BinGateway::serve(
        &data("env"),
        &["--previous-secret", "yet-another"],
        &[
            ("PAIRGATE_SECRET", "current"),
            ("PAIRGATE_PREVIOUS_SECRET_FILE", &both),
        ],
    )
    .await;
    let _phone = g.phone_with(&acc, &of_older).await;
    let _replaced = g.phone_with(&acc, &of_old).await;
    let log = g.log_text();
    assert!(
        log.contains("previous secret file can be read by other users") && log.contains(oo),
        "{log}"
    );
    drop(g);
    set_mode(&older, 0o600);

    // The config file's key; `pairgate config` names the file, not the secret.
    let toml = format!("secret = \"current\"\nprevious-secret-file = [{o:?}]\n");
    let file = write_private(dir.path(), "prev.toml", &toml);
    let f = file.to_str().unwrap();
    let g = BinGateway::serve(&data("file"), &["--config", f], &[]).await;
    let _phone = g.phone_with(&acc, &of_old).await;
    drop(g);
    let (code, out, err) = config(&["--config", f], &[]).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        setting(&out, "previous-secret-file"),
        Some(&*format!("[{o:?}]")),
        "{out}"
    );
    assert!(!out.contains("0ld-file-secret"), "{out}");

    // A missing or empty file is named; more than 8 in all is refused.
    let missing = dir.path().join("no-such-previous");
    let empty = write_private(dir.path(), "empty.txt", " \n");
    for path in [&missing, &empty] {
        let (code, _, err) = config(&["--previous-secret-file", path.to_str().unwrap()], &[]).await;
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains(path.to_str().unwrap()), "{err}");
    }
    let eight = [o; 8].join(",");
    let (code, _, err) = config(
        &[
            "--previous-secret",
            "ninth",
            "--previous-secret-file",
            &eight,
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("at most 8"), "{err}");
}

/// A config file is `serve`'s: `pairgate phone` never reads it (a broken one
/// does not stop it); `pairgate token` takes the keys it shares with `serve`
/// (`data-dir`, `secret`, `secret-file`; below flags and `PAIRGATE_*`) and
/// leaves the others to `serve`; a file it cannot use is an error naming
/// the file (and the key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_phone_with_a_config_file_meant_for_serve() {
    let dir = tempfile::tempdir().unwrap();
    let secret = write_private(dir.path(), "secret.txt", "file-secret-value\n");
    let s = secret.to_str().unwrap();
    let data = dir.path().join("data");
    let acc = account("cfgtoken");
    // A value `serve` would refuse, in a key `token` has no use for.
    let text = format!("secret-file = {s:?}\nmax-devices = \"eight\"\ndata-dir = {data:?}\n");
    let file = write_private(dir.path(), "serve.toml", &text);
    let f = file.to_str().unwrap();
    let (st, out, err) = run_cli_env(
        None,
        &["token", "--account", &acc],
        &[("PAIRGATE_CONFIG", f)],
    )
    .await;
    assert!(st.success(), "{err}");
    assert!(jwt_verifies(out.trim(), "file-secret-value"), "{out}");
    assert!(
        !data.exists(),
        "the data dir was used despite the secret file"
    );
    // --config too; a flag beats the file.
    let (st, out, err) = run_cli(&[
        "token",
        "--config",
        f,
        "--account",
        &acc,
        "--secret",
        "flag-secret",
    ])
    .await;
    assert!(st.success(), "{err}");
    assert!(jwt_verifies(out.trim(), "flag-secret"), "{out}");
    // The file's data dir: its secret (created there) signs.
    let only_dir = write_private(dir.path(), "dir.toml", &format!("data-dir = {data:?}\n"));
    let (st, out, err) = run_cli(&[
        "token",
        "--config",
        only_dir.to_str().unwrap(),
        "--account",
        &acc,
    ])
    .await;
    assert!(st.success(), "{err}");
    assert!(jwt_verifies(out.trim(), &read_secret_file(&data)));

    // What token cannot use stops it, naming the file (and the key).
    let broken = write_private(dir.path(), "broken.toml", "not toml [");
    let b = broken.to_str().unwrap();
    let typo = write_private(dir.path(), "typo.toml", &format!("secret_file = {s:?}\n"));
    for (env, named) in [
        (b, "broken.toml"),
        (typo.to_str().unwrap(), "`secret_file`"),
    ] {
        let (st, _, err) = run_cli_env(
            None,
            &["token", "--account", &acc],
            &[("PAIRGATE_CONFIG", env)],
        )
        .await;
        assert_eq!(st.code(), Some(2), "{err}");
        assert!(err.contains(named) && err.contains(env), "{err}");
        // With `token`'s usage, not the top level's.
        assert!(err.contains("Usage: pairgate token"), "{err}");
    }

    // The phone CLI is a client: the file is not its business.
    let g = TestGateway::start().await;
    let url = format!("http://{}", g.addr);
    let token = g.phone_token(&acc);
    let (st, out, err) = run_cli_env(
        None,
        &[
            "phone", "--url", &url, "--token", &token, "--json", "sessions",
        ],
        &[("PAIRGATE_CONFIG", b)],
    )
    .await;
    assert!(st.success(), "{err}");
    assert!(out.contains("\"sessions\""), "{out}");
    // Nor is it `pairgate help`'s.
    let (st, _, err) = run_cli_env(None, &["help"], &[("PAIRGATE_CONFIG", b)]).await;
    assert!(st.success(), "{err}");
}

/// `--redis` is satisfied by `--secret-file` (its "needs a secret" rule).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_takes_a_secret_file() {
    let dir = tempfile::tempdir().unwrap();
    let secret = write_private(dir.path(), "secret.txt", "cluster-secret\n");
    let redis = ["--redis", "redis://127.0.0.1:1/0"];
    let (code, _, err) = config(&redis, &[]).await;
    assert_eq!(code, Some(2), "--redis alone accepted: {err}");
    let mut args = redis.to_vec();
    args.extend(["--secret-file", secret.to_str().unwrap()]);
    let (code, out, err) = config(&args, &[]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(!out.contains("cluster-secret"), "{out}");
}

/// A bad value from the environment names the variable, not the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_errors_name_the_variable() {
    for (var, value) in [
        ("PAIRGATE_LISTEN", "nonsense"),
        ("PAIRGATE_MAX_DEVICES", "many"),
        ("PAIRGATE_LOG_FORMAT", "xml"),
        ("PAIRGATE_DEMO", "perhaps"),
    ] {
        for sub in [&["config"][..], &["serve"][..], &[][..]] {
            let (st, _, err) = run_cli_env(None, sub, &[(var, value)]).await;
            assert_eq!(st.code(), Some(2), "{var}={value} {sub:?}: {err}");
            assert!(err.contains(var), "{var}={value} {sub:?}: {err}");
        }
    }
    // On the command line, the flag is named.
    let (st, _, err) = run_cli(&["config", "--listen", "nonsense"]).await;
    assert_eq!(st.code(), Some(2));
    assert!(
        err.contains("--listen") && !err.contains("PAIRGATE_LISTEN"),
        "{err}"
    );
}

/// `PAIRGATE_DEMO` takes the usual spellings of a boolean, and `=1` turns
/// the demo phone on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boolean_environment_values() {
    for (value, on) in [
        ("1", "true"),
        ("true", "true"),
        ("yes", "true"),
        ("0", "false"),
        ("false", "false"),
        ("no", "false"),
    ] {
        let (code, out, err) = config(&[], &[("PAIRGATE_DEMO", value)]).await;
        assert_eq!(code, Some(0), "PAIRGATE_DEMO={value}: {err}");
        assert_eq!(setting(&out, "demo"), Some(on), "PAIRGATE_DEMO={value}");
    }
    let dir = tempfile::tempdir().unwrap();
    let g = BinGateway::serve(dir.path(), &[], &[("PAIRGATE_DEMO", "1")]).await;
    assert_eq!(http_post(g.addr, "/demo/phone").await.status, 200);
}

/// `token` on a data dir without a secret makes one, and says that a gateway
/// elsewhere will refuse the token; with the secret there, it says nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_on_a_new_data_dir_warns() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("new-data");
    let d = data.to_str().unwrap();
    let (st, out, err) = run_cli(&["token", "--account", "a", "--data-dir", d]).await;
    assert!(st.success(), "{err}");
    assert!(
        err.contains("no secret") && err.contains("new-data"),
        "{err}"
    );
    assert!(jwt_verifies(out.trim(), &read_secret_file(&data)));
    let (st, _, err) = run_cli(&["token", "--account", "a", "--data-dir", d]).await;
    assert!(st.success());
    assert!(err.trim().is_empty(), "{err}");
}

/// The example in `deploy/` is a config file the binary takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_config_file_parses() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/pairgate.toml");
    let (code, out, err) = config(&["--config", example.to_str().unwrap()], &[]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(setting(&out, "listen").is_some(), "{out}");
}
