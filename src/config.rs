//! Every option of the contract: its default, its `PAIRGATE_<NAME>` environment
//! variable and its validation. `Config::default()` equals `pairgate serve` with
//! no options, so tests start from the same values an operator gets.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Options of `pairgate serve`.
#[derive(clap::Args, Clone, Debug)]
pub struct Config {
    /// HTTP + WebSocket listener.
    #[arg(long, env = "PAIRGATE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Embedded store and the generated secret.
    #[arg(long, env = "PAIRGATE_DATA_DIR", default_value = "./pairgate-data")]
    pub data_dir: PathBuf,
    /// HS256 key for every token (default: generated once, kept in the data dir).
    #[arg(long, env = "PAIRGATE_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Base of the link put in QR payloads (default: http://<listen>).
    #[arg(long, env = "PAIRGATE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Comma-separated Origins allowed to open sockets; `*` allows any
    /// (default: the request's own host).
    #[arg(long, env = "PAIRGATE_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// Life of one QR ref / pairing code.
    #[arg(long, env = "PAIRGATE_QR_TTL_MS", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub qr_ttl_ms: u64,
    /// QR refs issued per pairing attempt before `pair_timeout`.
    #[arg(long, env = "PAIRGATE_QR_ROTATIONS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub qr_rotations: u32,
    /// Time after `hello` to send `auth` or `pair`.
    #[arg(long, env = "PAIRGATE_AUTH_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub auth_timeout_ms: u64,
    /// Server ping interval; a socket silent for 2 intervals is closed.
    #[arg(long, env = "PAIRGATE_HEARTBEAT_MS", default_value_t = 25_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_ms: u64,
    /// Linked web sessions per account.
    #[arg(long, env = "PAIRGATE_MAX_DEVICES", default_value_t = 4)]
    pub max_devices: usize,
    /// How long a `remember:false` session survives with no live socket.
    #[arg(long, env = "PAIRGATE_EPHEMERAL_GRACE_MS", default_value_t = 60_000)]
    pub ephemeral_grace_ms: u64,
    /// A session not seen for this long is removed (fractions allowed; 0 turns it off).
    #[arg(long, env = "PAIRGATE_SESSION_IDLE_DAYS", default_value_t = 14.0, value_parser = parse_idle_days)]
    pub session_idle_days: f64,
    /// Largest accepted frame, in bytes.
    #[arg(long, env = "PAIRGATE_MAX_FRAME_BYTES", default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(2048..=16_777_216))]
    pub max_frame_bytes: u64,
    /// Client frames per socket per second (bursts of 2 x N).
    #[arg(long, env = "PAIRGATE_MAX_FRAMES_PER_SEC", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_frames_per_sec: u32,
    /// `error` replies per socket per second (bursts of 10 x N).
    #[arg(long, env = "PAIRGATE_MAX_ERRORS_PER_SEC", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_errors_per_sec: u32,
    /// Outbound bytes queued for one socket before it is closed 4030.
    #[arg(long, env = "PAIRGATE_MAX_QUEUE_BYTES", default_value_t = 1_048_576, value_parser = clap::value_parser!(u64).range(1024..))]
    pub max_queue_bytes: u64,
    /// Serve `POST /demo/phone`, which mints phone tokens for throw-away
    /// accounts: for trying pairgate, never for production.
    #[arg(long, env = "PAIRGATE_DEMO", default_value_t = false)]
    pub demo: bool,
}

fn parse_idle_days(s: &str) -> Result<f64, String> {
    let days: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if !days.is_finite() || days < 0.0 {
        return Err("must be a number of days >= 0".into());
    }
    Ok(days)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./pairgate-data"),
            secret: None,
            public_url: None,
            allowed_origins: None,
            qr_ttl_ms: 20_000,
            qr_rotations: 5,
            auth_timeout_ms: 10_000,
            heartbeat_ms: 25_000,
            max_devices: 4,
            ephemeral_grace_ms: 60_000,
            session_idle_days: 14.0,
            max_frame_bytes: 65_536,
            max_frames_per_sec: 1000,
            max_errors_per_sec: 10,
            max_queue_bytes: 1_048_576,
            demo: false,
        }
    }
}

impl Config {
    pub fn qr_ttl(&self) -> Duration {
        Duration::from_millis(self.qr_ttl_ms)
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
    /// Largest serialized `body` a `send` may carry.
    pub fn max_body_bytes(&self) -> usize {
        (self.max_frame_bytes as usize).saturating_sub(1024)
    }
}
