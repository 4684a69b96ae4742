//! `pairgate phone --admin-token`: the operator's `sessions`, `logout` and
//! `logout-all`, through the operator API (`/admin/*`) rather than a phone
//! socket, so the user's running phone is not replaced (4009) by the
//! operator's.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::commands::Cmd;
use super::failure::Failure;
use super::output::{Output, plural, sessions_table};

/// What the operator API's paths accept for an account or a session id (the
/// account pattern of the contract); anything else would change the path.
fn path_safe(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The gateway's HTTP base for `--url`: `ws`/`http` become `http`,
/// `wss`/`https` become `https`, and a `/ws/phone` path is dropped.
pub(super) fn http_base(given: &str) -> Result<String, String> {
    let given = given.trim();
    let (scheme, rest) = match given.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => ("http".to_owned(), given),
    };
    let scheme = match scheme.as_str() {
        "ws" | "http" => "http",
        "wss" | "https" => "https",
        other => return Err(format!("{given}: unsupported scheme `{other}`")),
    };
    let rest = rest.split(['#', '?']).next().unwrap_or_default();
    let rest = rest.trim_end_matches('/');
    let rest = rest.strip_suffix("/ws/phone").unwrap_or(rest);
    if rest.is_empty() {
        return Err(format!("{given}: no host"));
    }
    Ok(format!("{scheme}://{rest}"))
}

/// The request for an operator command: method and path.
pub(super) fn request_for(cmd: &Cmd, account: &str) -> Result<(&'static str, String), String> {
    if !path_safe(account) {
        return Err(format!(
            "--account {account:?}: not an account name (letters, digits, `_.-`, at most 64)"
        ));
    }
    let base = format!("/admin/accounts/{account}");
    Ok(match cmd {
        Cmd::Sessions => ("GET", format!("{base}/sessions")),
        Cmd::Logout(sid) if path_safe(sid) => ("DELETE", format!("{base}/sessions/{sid}")),
        Cmd::Logout(sid) => return Err(format!("{sid:?} is not a session id")),
        Cmd::LogoutAll => ("POST", format!("{base}/logout_all")),
        _ => {
            return Err(
                "with --admin-token only `sessions`, `logout <session_id>` and `logout-all` run \
                 (through the operator API); the other commands need the phone's --token"
                    .to_owned(),
            );
        }
    })
}

/// Runs one operator command and prints its answer like the phone's reply.
pub(super) async fn run(
    out: &Output,
    cmd: &Cmd,
    base: &str,
    account: &str,
    admin_token: &str,
    ca_cert: Option<&Path>,
    timeout: Duration,
) -> Result<(), Failure> {
    let (method, path) = request_for(cmd, account).map_err(Failure::Usage)?;
    let url = format!("{base}{path}");
    let agent = agent(ca_cert, timeout)?;
    let auth = format!("Bearer {admin_token}");
    let target = url.clone();
    // ureq blocks; one request on a blocking thread keeps the runtime free.
    let answer = tokio::task::spawn_blocking(move || {
        let response = match method {
            "GET" => agent.get(&target).header("authorization", &auth).call(),
            "DELETE" => agent.delete(&target).header("authorization", &auth).call(),
            _ => agent
                .post(&target)
                .header("authorization", &auth)
                .send_empty(),
        };
        let mut response = response.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok::<_, String>((status, body))
    })
    .await
    .map_err(|e| connection(&url, e.to_string()))?
    .map_err(|e| connection(&url, e))?;
    let (status, body) = answer;
    let code = body["error"].as_str().unwrap_or("unexpected").to_owned();
    match status {
        200 => {}
        // A wrong admin token is a failure to get in, like an invalid phone token.
        401 => {
            return Err(Failure::Connection {
                code,
                message: format!("{url}: the gateway refused the admin token"),
                close_code: None,
                lost: true,
            });
        }
        404 if code == "not_found" || body.is_null() => {
            return Err(connection(
                &url,
                "404: is the gateway started with --admin-token?".to_owned(),
            ));
        }
        _ => {
            return Err(Failure::Refused {
                message: format!("{method} {path}: {status}"),
                code,
            });
        }
    }
    let ended = |r: &Value| {
        format!(
            "ended {}",
            plural(r["closed"].as_u64().unwrap_or(0), "session")
        )
    };
    match cmd {
        Cmd::Sessions => out.frame(&body, sessions_table)?,
        _ => out.frame(&body, ended)?,
    }
    Ok(())
}

fn connection(url: &str, message: String) -> Failure {
    Failure::Connection {
        code: "connect_failed".to_owned(),
        message: format!("{url}: {message}"),
        close_code: None,
        lost: true,
    }
}

/// An HTTP agent: answers of every status are read (not errors), and TLS
/// trusts `ca_cert` when given, else the webpki roots.
fn agent(ca_cert: Option<&Path>, timeout: Duration) -> Result<ureq::Agent, Failure> {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path)
            .map_err(|e| Failure::Usage(format!("--ca-cert {}: {e}", path.display())))?;
        let certs = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect::<Vec<_>>();
        if certs.is_empty() {
            return Err(Failure::Usage(format!(
                "--ca-cert {}: no PEM certificate in it",
                path.display()
            )));
        }
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
    }
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .tls_config(tls.build())
        .build();
    Ok(config.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_and_paths() {
        assert_eq!(http_base("ws://h:1").unwrap(), "http://h:1");
        assert_eq!(http_base("wss://h:1/ws/phone/").unwrap(), "https://h:1");
        assert_eq!(http_base("https://h/gw").unwrap(), "https://h/gw");
        assert_eq!(http_base("h:1").unwrap(), "http://h:1");
        assert!(http_base("ftp://h").is_err());
        assert_eq!(
            request_for(&Cmd::Logout("s1".into()), "alice").unwrap(),
            ("DELETE", "/admin/accounts/alice/sessions/s1".to_owned())
        );
        assert!(request_for(&Cmd::Sessions, "a/b").is_err());
        assert!(request_for(&Cmd::Logout("../x".into()), "alice").is_err());
        assert!(request_for(&Cmd::Link("r".into()), "alice").is_err());
    }
}
