//! The binary's command line, run to completion.

use std::path::Path;
use std::time::Duration;

use super::gateway::clean_command;

/// Runs `pairgate ARGS...` to completion (20 s): (exit status, stdout, stderr).
pub async fn run_cli(args: &[&str]) -> (std::process::ExitStatus, String, String) {
    run_cli_in(None, args).await
}

/// Like `run_cli`, in the working directory `cwd`.
pub async fn run_cli_in(
    cwd: Option<&Path>,
    args: &[&str],
) -> (std::process::ExitStatus, String, String) {
    run_cli_env(cwd, args, &[]).await
}

/// Like `run_cli_in`, with `env` set (on top of no `PAIRGATE_*`).
pub async fn run_cli_env(
    cwd: Option<&Path>,
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::process::ExitStatus, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut cmd = clean_command(&args);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("pairgate {args:?} did not finish in 20 s"))
        .expect("run pairgate");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `pairgate token ARGS...`: the one printed line.
pub async fn cli_token(args: &[&str]) -> String {
    let mut all = vec!["token"];
    all.extend_from_slice(args);
    let (st, out, err) = run_cli(&all).await;
    assert!(st.success(), "pairgate {all:?} failed ({st}): {err}");
    let lines: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "token must print exactly one line, got {out:?}"
    );
    lines[0].to_string()
}
