//! Every option of the contract: its default, its `PAIRGATE_<NAME>` environment
//! variable and its validation. `Config::default()` equals `pairgate serve` with
//! no options, so tests start from the same values an operator gets.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::contract::{self, defaults};

/// How log lines are written (`--log-format`).
#[derive(clap::ValueEnum, serde::Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields`, `target`, `spans`.
    Json,
}

/// Options of `pairgate serve`. Serialized (by `pairgate config`) with the
/// command line's kebab-case names, which is what a config file takes.
#[derive(clap::Args, serde::Serialize, Clone, Debug)]
#[serde(rename_all = "kebab-case")]
pub struct Config {
    /// HTTP + WebSocket listener.
    #[arg(long, env = "PAIRGATE_LISTEN", default_value = defaults::LISTEN)]
    pub listen: SocketAddr,
    /// PEM certificate chain: with `--tls-key`, the listener speaks HTTPS and
    /// WSS itself (no proxy needed).
    #[arg(long, env = "PAIRGATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert` (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "PAIRGATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve `/metrics` only on this separate plain-HTTP listener (the main
    /// listener then answers 404 there), so it need not be public.
    #[arg(long, env = "PAIRGATE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Embedded store and the generated secret.
    #[arg(long, env = "PAIRGATE_DATA_DIR", default_value = defaults::DATA_DIR)]
    pub data_dir: PathBuf,
    /// Log lines as text for people or as JSON objects for a log pipeline.
    #[arg(long, env = "PAIRGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// HS256 key for every token (default: generated once, kept in the data dir).
    #[arg(
        long,
        env = "PAIRGATE_SECRET",
        hide_env_values = true,
        group = "secret_source"
    )]
    pub secret: Option<String>,
    /// Read `--secret` from this file (trimmed), so it shows in no `ps`.
    #[arg(long, env = "PAIRGATE_SECRET_FILE", group = "secret_source")]
    pub secret_file: Option<PathBuf>,
    /// Base of the link put in QR payloads (default: http:// and the listen
    /// address, https:// with `--tls-cert`).
    #[arg(long, env = "PAIRGATE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Comma-separated Origins allowed to open sockets; `*` allows any
    /// (default: the request's own host).
    #[arg(long, env = "PAIRGATE_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// Life of one QR ref / pairing code.
    #[arg(long, env = "PAIRGATE_QR_TTL_MS", default_value_t = defaults::QR_TTL_MS, value_parser = clap::value_parser!(u64).range(1..=contract::MAX_OPTION_MS))]
    pub qr_ttl_ms: u64,
    /// QR refs issued per pairing attempt before `pair_timeout`.
    #[arg(long, env = "PAIRGATE_QR_ROTATIONS", default_value_t = defaults::QR_ROTATIONS, value_parser = clap::value_parser!(u32).range(1..))]
    pub qr_rotations: u32,
    /// Time after `hello` to send `auth` or `pair`.
    #[arg(long, env = "PAIRGATE_AUTH_TIMEOUT_MS", default_value_t = defaults::AUTH_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..=contract::MAX_OPTION_MS))]
    pub auth_timeout_ms: u64,
    /// Server ping interval; a socket silent for 2 intervals is closed.
    #[arg(long, env = "PAIRGATE_HEARTBEAT_MS", default_value_t = defaults::HEARTBEAT_MS, value_parser = clap::value_parser!(u64).range(1..=contract::MAX_OPTION_MS))]
    pub heartbeat_ms: u64,
    /// Linked web sessions per account.
    #[arg(long, env = "PAIRGATE_MAX_DEVICES", default_value_t = defaults::MAX_DEVICES)]
    pub max_devices: usize,
    /// How long a `remember:false` session survives with no live socket.
    #[arg(long, env = "PAIRGATE_EPHEMERAL_GRACE_MS", default_value_t = defaults::EPHEMERAL_GRACE_MS, value_parser = clap::value_parser!(u64).range(..=contract::MAX_OPTION_MS))]
    pub ephemeral_grace_ms: u64,
    /// A session not seen for this long is removed (fractions allowed; 0 turns it off).
    #[arg(long, env = "PAIRGATE_SESSION_IDLE_DAYS", default_value_t = defaults::SESSION_IDLE_DAYS, value_parser = parse_idle_days)]
    pub session_idle_days: f64,
    /// Largest accepted frame, in bytes.
    #[arg(long, env = "PAIRGATE_MAX_FRAME_BYTES", default_value_t = defaults::MAX_FRAME_BYTES, value_parser = clap::value_parser!(u64).range(2048..=16_777_216))]
    pub max_frame_bytes: u64,
    /// Client frames per socket per second (bursts of 2 x N).
    #[arg(long, env = "PAIRGATE_MAX_FRAMES_PER_SEC", default_value_t = defaults::MAX_FRAMES_PER_SEC, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_frames_per_sec: u32,
    /// `error` replies per socket per second (bursts of 10 x N).
    #[arg(long, env = "PAIRGATE_MAX_ERRORS_PER_SEC", default_value_t = defaults::MAX_ERRORS_PER_SEC, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_errors_per_sec: u32,
    /// Outbound bytes queued for one socket before it is closed 4030.
    #[arg(long, env = "PAIRGATE_MAX_QUEUE_BYTES", default_value_t = defaults::MAX_QUEUE_BYTES, value_parser = clap::value_parser!(u64).range(1024..))]
    pub max_queue_bytes: u64,
    /// WebSocket sockets this node holds; an upgrade beyond gets 503 (0: what
    /// the open-files limit allows, with headroom).
    #[arg(long, env = "PAIRGATE_MAX_SOCKETS", default_value_t = defaults::MAX_SOCKETS)]
    pub max_sockets: usize,
    /// WebSocket sockets one client IP (IPv6: one /64) holds on this node; an
    /// upgrade beyond gets 429 (0: off).
    #[arg(long, env = "PAIRGATE_MAX_SOCKETS_PER_IP", default_value_t = defaults::MAX_SOCKETS_PER_IP)]
    pub max_sockets_per_ip: usize,
    /// Comma-separated IPs or CIDRs of reverse proxies whose
    /// `X-Forwarded-For` names the client.
    #[arg(long, env = "PAIRGATE_TRUST_PROXY", value_delimiter = ',', value_parser = crate::client_ip::parse_trusted)]
    #[serde(serialize_with = "as_strings")]
    pub trust_proxy: Vec<crate::client_ip::TrustedNet>,
    /// On SIGTERM, spread the 1012 closes of live sockets over this long.
    #[arg(long, env = "PAIRGATE_DRAIN_MS", default_value_t = defaults::DRAIN_MS, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub drain_ms: u64,
    /// Time a client has to send a request's head, and an idle keep-alive
    /// connection's life (for tests; the default suits production).
    #[arg(long, env = "PAIRGATE_HTTP_HEADER_TIMEOUT_MS", default_value_t = defaults::HTTP_HEADER_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(100..=600_000), hide = true)]
    pub http_header_timeout_ms: u64,
    /// Serve `POST /demo/phone`, which mints phone tokens for throw-away
    /// accounts: for trying pairgate, never for production.
    #[arg(long, env = "PAIRGATE_DEMO", default_value_t = false, value_parser = clap::builder::BoolishValueParser::new())]
    pub demo: bool,
    /// Comma-separated host names an upgrade's `Host` may carry besides the
    /// listen address (and `localhost` on loopback) and `--public-url`'s
    /// host: DNS rebinding protection. `*` accepts any.
    #[arg(long, env = "PAIRGATE_ALLOWED_HOSTS", value_delimiter = ',', value_parser = parse_allowed_host)]
    pub allowed_hosts: Option<Vec<String>>,
    /// `pair` frames per client IP per minute, on this node (0: no limit).
    #[arg(long, env = "PAIRGATE_MAX_PAIRS_PER_IP_PER_MIN", default_value_t = defaults::MAX_PAIRS_PER_IP_PER_MIN)]
    pub max_pairs_per_ip_per_min: u32,
    /// Failed `link`s by code per sliding minute, all accounts together (the
    /// whole cluster in cluster mode); beyond it every `link` by code is
    /// `rate_limited` (0: no limit).
    #[arg(long, env = "PAIRGATE_MAX_LINK_MISSES_PER_MIN", default_value_t = defaults::MAX_LINK_MISSES_PER_MIN)]
    pub max_link_misses_per_min: u32,
    /// Join the cluster that shares this Redis (`redis://host:port/db`), or
    /// this Redis Cluster (`redis+cluster://host:port,host:port,...`: some
    /// of its masters, the rest are found).
    /// Requires `--secret` (or `--secret-file`): every node signs and checks
    /// tokens with it.
    #[arg(long, env = "PAIRGATE_REDIS", requires = "secret_source")]
    pub redis: Option<String>,
    /// This node's name in logs, metrics and the operator API (default:
    /// generated at each start).
    #[arg(long, env = "PAIRGATE_NODE_ID", value_parser = parse_node_id)]
    pub node_id: Option<String>,
    /// A node that has not renewed its lease for this long is dead.
    #[arg(long, env = "PAIRGATE_NODE_LEASE_MS", default_value_t = defaults::NODE_LEASE_MS, value_parser = clap::value_parser!(u64).range(300..=3_600_000))]
    pub node_lease_ms: u64,
    /// Serve the operator API (`/admin/*`) to requests carrying
    /// `Authorization: Bearer <token>`; without it every `/admin/*` path is 404.
    #[arg(long, env = "PAIRGATE_ADMIN_TOKEN", hide_env_values = true, value_parser = parse_admin_token)]
    pub admin_token: Option<String>,
    /// Secrets that verify tokens but sign none, for rotating `--secret`
    /// without logging anybody out (repeatable or comma-separated; at most 8).
    #[arg(long, env = "PAIRGATE_PREVIOUS_SECRET", hide_env_values = true, value_delimiter = ',', value_parser = parse_previous_secret)]
    pub previous_secret: Vec<String>,
    /// Read previous secrets from these files (one secret each, trimmed;
    /// repeatable or comma-separated), so they show in no `ps`; they join
    /// `--previous-secret`'s, at most 8 in all.
    #[arg(long, env = "PAIRGATE_PREVIOUS_SECRET_FILE", value_delimiter = ',')]
    pub previous_secret_file: Vec<PathBuf>,
}

/// Lists whose items print as their option values (`10.0.0.0/8`).
fn as_strings<T: std::fmt::Display, S: serde::Serializer>(
    items: &[T],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(items.iter().map(ToString::to_string))
}

fn parse_node_id(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !ok {
        return Err("must match ^[A-Za-z0-9_.-]{1,64}$".into());
    }
    Ok(s.to_owned())
}

/// A host name (or IP literal, IPv6 in brackets) without scheme, port or
/// path, lower-cased; or `*`.
fn parse_allowed_host(s: &str) -> Result<String, String> {
    let host = s.trim().to_ascii_lowercase();
    let bad = host.is_empty()
        || host.contains(['/', '?', '#', '@', ' '])
        || (host.contains(':') && !(host.starts_with('[') && host.ends_with(']')));
    if bad {
        return Err("must be a host name without scheme, port or path (or `*`)".into());
    }
    Ok(host)
}

fn parse_admin_token(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("must not be empty".into());
    }
    Ok(s.to_owned())
}

fn parse_previous_secret(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(s.to_owned())
}

fn parse_idle_days(s: &str) -> Result<f64, String> {
    let days: f64 = s.parse().map_err(|e| format!("{e}"))?;
    // (A day count whose time cannot be a deadline would panic later.)
    let max_days = contract::MAX_OPTION_MS as f64 / 86_400_000.0;
    if !days.is_finite() || !(0.0..=max_days).contains(&days) {
        return Err(format!("must be a number of days from 0 to {max_days}"));
    }
    Ok(days)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: defaults::LISTEN
                .parse()
                .expect("the default listen address parses"),
            tls_cert: None,
            tls_key: None,
            metrics_listen: None,
            data_dir: PathBuf::from(defaults::DATA_DIR),
            log_format: LogFormat::Text,
            secret: None,
            secret_file: None,
            public_url: None,
            allowed_origins: None,
            qr_ttl_ms: defaults::QR_TTL_MS,
            qr_rotations: defaults::QR_ROTATIONS,
            auth_timeout_ms: defaults::AUTH_TIMEOUT_MS,
            heartbeat_ms: defaults::HEARTBEAT_MS,
            max_devices: defaults::MAX_DEVICES,
            ephemeral_grace_ms: defaults::EPHEMERAL_GRACE_MS,
            session_idle_days: defaults::SESSION_IDLE_DAYS,
            max_frame_bytes: defaults::MAX_FRAME_BYTES,
            max_frames_per_sec: defaults::MAX_FRAMES_PER_SEC,
            max_errors_per_sec: defaults::MAX_ERRORS_PER_SEC,
            max_queue_bytes: defaults::MAX_QUEUE_BYTES,
            max_sockets: defaults::MAX_SOCKETS,
            max_sockets_per_ip: defaults::MAX_SOCKETS_PER_IP,
            trust_proxy: Vec::new(),
            drain_ms: defaults::DRAIN_MS,
            http_header_timeout_ms: defaults::HTTP_HEADER_TIMEOUT_MS,
            demo: false,
            allowed_hosts: None,
            max_pairs_per_ip_per_min: defaults::MAX_PAIRS_PER_IP_PER_MIN,
            max_link_misses_per_min: defaults::MAX_LINK_MISSES_PER_MIN,
            redis: None,
            node_id: None,
            node_lease_ms: defaults::NODE_LEASE_MS,
            admin_token: None,
            previous_secret: Vec::new(),
            previous_secret_file: Vec::new(),
        }
    }
}

impl Config {
    /// This configuration with every secret replaced, for logs and `pairgate
    /// config`: what is set shows, never what it is set to.
    pub fn redacted(&self) -> Config {
        let hide = |s: &Option<String>| s.as_ref().map(|_| "<redacted>".to_owned());
        // A Redis URL may carry a password (`redis://user:pass@host`).
        let redis = self.redis.as_ref().map(|url| match url.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once("://") {
                Some((scheme, _)) => format!("{scheme}://<redacted>@{host}"),
                None => format!("<redacted>@{host}"),
            },
            None => url.clone(),
        });
        Config {
            secret: hide(&self.secret),
            admin_token: hide(&self.admin_token),
            previous_secret: vec!["<redacted>".to_owned(); self.previous_secret.len()],
            redis,
            ..self.clone()
        }
    }

    /// The secret given for this gateway: `--secret`, or `--secret-file`'s
    /// contents; `None` when the data dir's is to be used.
    pub fn explicit_secret(&self) -> anyhow::Result<Option<String>> {
        match (&self.secret, &self.secret_file) {
            (Some(s), _) => Ok(Some(s.clone())),
            (None, Some(path)) => crate::secret::read_secret_file(path).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The secrets that verify but sign none: `--previous-secret`'s, then
    /// each `--previous-secret-file`'s contents; at most
    /// [`MAX_PREVIOUS_SECRETS`](crate::tokens::MAX_PREVIOUS_SECRETS).
    pub fn previous_secrets(&self) -> anyhow::Result<Vec<String>> {
        let mut all = self.previous_secret.clone();
        for path in &self.previous_secret_file {
            all.push(crate::secret::read_previous_secret_file(path)?);
        }
        anyhow::ensure!(
            all.len() <= crate::tokens::MAX_PREVIOUS_SECRETS,
            "--previous-secret and --previous-secret-file: at most {} secrets in all",
            crate::tokens::MAX_PREVIOUS_SECRETS
        );
        Ok(all)
    }

    pub fn qr_ttl(&self) -> Duration {
        Duration::from_millis(self.qr_ttl_ms)
    }
    /// How long a link request waits for the phone's answer.
    pub fn request_ttl(&self) -> Duration {
        self.qr_ttl() * contract::REQUEST_TTL_IN_QR_TTLS
    }
    pub fn auth_timeout(&self) -> Duration {
        Duration::from_millis(self.auth_timeout_ms)
    }
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }
    pub fn ephemeral_grace(&self) -> Duration {
        Duration::from_millis(self.ephemeral_grace_ms)
    }
    /// `None` when idle expiry is off.
    pub fn session_idle(&self) -> Option<Duration> {
        (self.session_idle_days > 0.0)
            .then(|| Duration::from_secs_f64(self.session_idle_days * 86_400.0))
    }
    pub fn drain(&self) -> Duration {
        Duration::from_millis(self.drain_ms)
    }
    pub fn http_header_timeout(&self) -> Duration {
        Duration::from_millis(self.http_header_timeout_ms)
    }
    pub fn node_lease(&self) -> Duration {
        Duration::from_millis(self.node_lease_ms)
    }
    /// Largest serialized `body` a `send` may carry.
    pub fn max_body_bytes(&self) -> usize {
        (self.max_frame_bytes as usize).saturating_sub(contract::BODY_HEADROOM_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Config;

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn redacted_hides_every_secret_and_keeps_the_rest() {
        let config = Serve::try_parse_from([
            "serve",
            "--secret",
            "s3cret-value",
            "--admin-token",
            "t0ken-value",
            "--max-devices",
            "7",
            "--redis",
            "redis://user:pa55word@redis.internal:6379/0",
            "--previous-secret",
            "0ld-secret-value",
        ])
        .expect("parses")
        .config;
        let shown = format!("{:?}", config.redacted());
        assert!(!shown.contains("s3cret-value") && !shown.contains("t0ken-value"));
        assert!(!shown.contains("pa55word") && shown.contains("redis.internal:6379/0"));
        assert!(!shown.contains("0ld-secret-value"));
        assert!(shown.contains("<redacted>") && shown.contains("max_devices: 7"));
    }

    #[test]
    fn allowed_hosts_are_bare_names() {
        let parsed =
            Serve::try_parse_from(["serve", "--allowed-hosts", "Chat.Example.com,[::1],*"])
                .expect("parses")
                .config;
        assert_eq!(
            parsed.allowed_hosts,
            Some(vec!["chat.example.com".into(), "[::1]".into(), "*".into()])
        );
        for bad in [
            "https://chat.example.com",
            "chat.example.com:443",
            "a/b",
            "",
        ] {
            assert!(
                Serve::try_parse_from(["serve", "--allowed-hosts", bad]).is_err(),
                "{bad:?}"
            );
        }
    }

    /// Kept as fuzz regressions too (`fuzz/regressions/config/`): times
    /// that cannot be a deadline (`1e300` days, `u64::MAX` ms) panicked once
    /// used; now they are a start-up error, and 100 years still parses.
    #[test]
    fn times_too_long_to_be_deadlines_are_refused() {
        for args in [
            ["--session-idle-days", "1e300"],
            ["--session-idle-days", "36501"],
            ["--qr-ttl-ms", "18446744073709551615"],
            ["--heartbeat-ms", "18446744073709551615"],
            ["--auth-timeout-ms", "18446744073709551615"],
            ["--ephemeral-grace-ms", "18446744073709551615"],
        ] {
            let err = Serve::try_parse_from(["serve", args[0], args[1]])
                .err()
                .unwrap_or_else(|| panic!("{args:?} accepted"));
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        }
        let c = Serve::try_parse_from(["serve", "--session-idle-days", "36500"])
            .expect("100 years parses")
            .config;
        assert!(
            std::time::Instant::now()
                .checked_add(c.session_idle().expect("on"))
                .is_some()
        );
    }

    /// `Config::default()` is what `pairgate serve` gets with no options: both
    /// take their numbers from `contract::defaults`.
    #[test]
    fn defaults_equal_an_empty_command_line() {
        let parsed = Serve::try_parse_from(["serve"]).expect("parses").config;
        assert_eq!(format!("{parsed:?}"), format!("{:?}", Config::default()));
    }

    /// A number of days whose duration does not fit is a clear error, never
    /// a panic when the duration is made.
    #[test]
    fn idle_days_that_do_not_fit_are_refused() {
        for bad in ["1e300", "1e20", "36501", "inf", "NaN", "-1"] {
            let r = Serve::try_parse_from(["serve", "--session-idle-days", bad]);
            assert!(r.is_err(), "{bad} accepted");
        }
        for ok in ["0", "0.5", "14", "36500"] {
            let c = Serve::try_parse_from(["serve", "--session-idle-days", ok])
                .expect("parses")
                .config;
            let _ = c.session_idle();
        }
    }

    #[test]
    fn previous_secrets_are_repeatable_or_comma_separated() {
        let c = Serve::try_parse_from([
            "serve",
            "--previous-secret",
            "a,b",
            "--previous-secret",
            "c",
        ])
        .expect("parses")
        .config;
        assert_eq!(c.previous_secret, ["a", "b", "c"]);
        assert!(Serve::try_parse_from(["serve", "--previous-secret", ""]).is_err());
    }
}
