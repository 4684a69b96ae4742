//! The command line of `pairgate phone`: options, the gateway URL, the token.

use std::path::PathBuf;
use std::time::Duration;

use clap::ArgGroup;
use pairgate::tokens::{SECRET_FILE, Tokens, resolve_secret};

/// Lifetime of a token minted with `--account`: it only has to outlive `auth`,
/// but a generous one keeps a clock skew between hosts from mattering.
pub(super) const MINTED_TOKEN_TTL: Duration = Duration::from_secs(3600);

pub(super) const AFTER_HELP: &str = "\
commands:
  link <code|payload|ref>, confirm <request_id>, reject <request_id>, sessions,
  logout <session_id>, logout-all, send [--to SESSION] [--json-body] [--] <text>,
  help, quit (run `pairgate phone help` for details)

Options go before the command. A one-shot `link` needs --yes or --reject: nobody
is there to answer, and an unanswered request would stay pending.

Exit status: 0 done; 1 the gateway refused the command (its error code is
printed); 2 bad usage; 3 could not connect or authenticate, or the connection
was lost. Interactive mode exits 0 on `quit` or end of input.

Examples:
  pairgate phone --account alice --data-dir ./pairgate-data
  pairgate phone --token \"$(pairgate token --account alice)\" sessions
  pairgate phone --account alice --yes --json link ABCD-EFGH
  pairgate phone --account alice send --to SESSION hello
  pairgate phone --url https://gw.example --admin-token T --account alice sessions";

/// Options of `pairgate phone`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = AFTER_HELP,
    group(ArgGroup::new("credentials").required(true).args(["token", "account"]))
)]
pub struct PhoneArgs {
    /// The gateway: its base (`ws://host:port`, `http://host:port`, or
    /// `wss://`/`https://` for TLS) or its `/ws/phone` endpoint.
    #[arg(long, env = "PAIRGATE_URL", default_value = "ws://127.0.0.1:8080")]
    pub(super) url: String,
    /// Phone token, as `pairgate token` prints it.
    #[arg(long, env = "PAIRGATE_PHONE_TOKEN", hide_env_values = true)]
    pub(super) token: Option<String>,
    /// Mint a phone token for this account from the gateway's secret
    /// (`--data-dir` or `--secret`) instead of giving `--token`.
    #[arg(long, conflicts_with = "token")]
    pub(super) account: Option<String>,
    /// The gateway's data dir, whose secret `--account` signs with.
    #[arg(long, env = "PAIRGATE_DATA_DIR", default_value = "./pairgate-data")]
    pub(super) data_dir: PathBuf,
    /// The gateway's secret, for `--account`, instead of the data dir's.
    #[arg(long, env = "PAIRGATE_SECRET", hide_env_values = true)]
    pub(super) secret: Option<String>,
    /// Confirm link requests without asking.
    #[arg(long, short = 'y', conflicts_with = "reject")]
    pub(super) yes: bool,
    /// Reject link requests without asking.
    #[arg(long)]
    pub(super) reject: bool,
    /// Print one JSON object per line: events and replies as the raw frames,
    /// failures as `{"type":"error","code":..,"message":..}`.
    #[arg(long)]
    pub(super) json: bool,
    /// The operator API's token (the gateway's `--admin-token`): `sessions`,
    /// `logout ID` and `logout-all` for `--account` then go through `/admin/*`
    /// instead of a phone socket, so the user's running phone stays connected.
    #[arg(long, hide_env_values = true, conflicts_with = "token")]
    pub(super) admin_token: Option<String>,
    /// A PEM file of certificates to trust for `wss://`/`https://` besides the
    /// public CAs (a private CA, or the gateway's self-signed certificate).
    #[arg(long, value_name = "PATH")]
    pub(super) ca_cert: Option<PathBuf>,
    /// Seconds to wait for the connection and for each reply.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) timeout_secs: u64,
    /// A command to run before exiting; without one, commands are read from stdin.
    #[arg(trailing_var_arg = true, value_name = "COMMAND")]
    pub(super) command: Vec<String>,
}

/// The phone endpoint for `--url`: a gateway base gets `/ws/phone`, `http`
/// becomes `ws` and `https` becomes `wss`.
pub(super) fn phone_url(given: &str) -> Result<String, String> {
    let given = given.trim();
    let (scheme, rest) = match given.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => ("ws".to_owned(), given),
    };
    let scheme = match scheme.as_str() {
        "ws" | "http" => "ws",
        "wss" | "https" => "wss",
        other => {
            return Err(format!(
                "{given}: unsupported scheme `{other}`; use ws://, wss://, http:// or https://"
            ));
        }
    };
    // A fragment means nothing to a WebSocket handshake.
    let rest = rest.split('#').next().unwrap_or_default();
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    if authority.is_empty() {
        return Err(format!("{given}: no host"));
    }
    let (path, query) = tail.split_at(tail.find('?').unwrap_or(tail.len()));
    let path = path.trim_end_matches('/');
    if path.ends_with("/ws/web") {
        return Err(format!(
            "{given} is the web endpoint; give the gateway base or its /ws/phone"
        ));
    }
    let path = if path.ends_with("/ws/phone") {
        path.to_owned()
    } else {
        format!("{path}/ws/phone")
    };
    Ok(format!("{scheme}://{authority}{path}{query}"))
}

/// The phone token: `--token`, or one minted for `--account`.
pub(super) fn phone_token(args: &PhoneArgs) -> Result<String, String> {
    if let Some(token) = &args.token {
        return Ok(token.trim().to_owned());
    }
    let Some(account) = args.account.as_deref() else {
        return Err("give --token or --account".to_owned());
    };
    // `resolve_secret` would create a fresh secret in a wrong or mistyped data
    // dir, and the gateway would then refuse the token as invalid_token with no
    // hint why; say so here instead.
    let secret_file = args.data_dir.join(SECRET_FILE);
    if args.secret.is_none() && !secret_file.exists() {
        return Err(format!(
            "{} does not exist: give the gateway's --data-dir, or --secret",
            secret_file.display()
        ));
    }
    let secret =
        resolve_secret(args.secret.as_deref(), &args.data_dir).map_err(|e| format!("{e:#}"))?;
    Tokens::new(&secret)
        .mint_phone(account, MINTED_TOKEN_TTL)
        .map_err(|e| format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let ok = |s: &str| phone_url(s).unwrap();
        assert_eq!(ok("ws://h:1"), "ws://h:1/ws/phone");
        assert_eq!(ok("ws://h:1/"), "ws://h:1/ws/phone");
        assert_eq!(ok("http://h:1"), "ws://h:1/ws/phone");
        assert_eq!(ok("HTTP://h:1/ws/phone"), "ws://h:1/ws/phone");
        assert_eq!(ok("h:1"), "ws://h:1/ws/phone");
        assert_eq!(ok("http://h/gw/"), "ws://h/gw/ws/phone");
        assert_eq!(ok("ws://h:1?x=1#frag"), "ws://h:1/ws/phone?x=1");
        assert_eq!(ok("ws://[::1]:9/ws/phone/"), "ws://[::1]:9/ws/phone");
        assert_eq!(ok("https://h"), "wss://h/ws/phone");
        assert_eq!(ok("WSS://h:8443/ws/phone"), "wss://h:8443/ws/phone");
        assert!(phone_url("ws://h/ws/web").is_err());
        assert!(phone_url("ftp://h").is_err());
        assert!(phone_url("ws://").is_err());
    }
}
