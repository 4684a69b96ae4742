//! Every option of the contract: its default, its `PAIRGATE_<NAME>` environment
//! variable and its validation. `Config::default()` equals `pairgate serve` with
//! no options, so tests start from the same values an operator gets.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::contract::{self, defaults};

/// Options of `pairgate serve`.
#[derive(clap::Args, Clone, Debug)]
pub struct Config {
    /// HTTP + WebSocket listener.
    #[arg(long, env = "PAIRGATE_LISTEN", default_value = defaults::LISTEN)]
    pub listen: SocketAddr,
    /// Embedded store and the generated secret.
    #[arg(long, env = "PAIRGATE_DATA_DIR", default_value = defaults::DATA_DIR)]
    pub data_dir: PathBuf,
    /// HS256 key for every token (default: generated once, kept in the data dir).
    #[arg(long, env = "PAIRGATE_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Base of the link put in QR payloads (default: http:// and the listen address).
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
    /// Serve `POST /demo/phone`, which mints phone tokens for throw-away
    /// accounts: for trying pairgate, never for production.
    #[arg(long, env = "PAIRGATE_DEMO", default_value_t = false)]
    pub demo: bool,
    /// Join the cluster that shares this Redis (`redis://host:port/db`), or
    /// this Redis Cluster (`redis+cluster://host:port,host:port,...`: some
    /// of its masters, the rest are found).
    /// Requires `--secret`: every node signs and checks tokens with it.
    #[arg(long, env = "PAIRGATE_REDIS", requires = "secret")]
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

fn parse_admin_token(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
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
            data_dir: PathBuf::from(defaults::DATA_DIR),
            secret: None,
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
            demo: false,
            redis: None,
            node_id: None,
            node_lease_ms: defaults::NODE_LEASE_MS,
            admin_token: None,
        }
    }
}

impl Config {
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
}
