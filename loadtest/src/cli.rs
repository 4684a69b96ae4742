//! Command-line options, the `--smoke` preset, and parsing of the option
//! values that are more than a number (durations, source address ranges).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

#[derive(Parser, Debug)]
#[command(
    name = "loadtest",
    about = "Load test for pairgate: phones and web clients through the real QR handshake, \
             relay in both directions, reconnect churn, then logout_all from every phone at \
             once (--soak: in cycles, failing on a rising gateway RSS)",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub opts: Opts,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Internal: one worker process, driven by the parent over stdin/stdout.
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        index: usize,
    },
    /// Web sockets that stop reading while their phones flood them: the
    /// gateway's memory before, at the peak and after the 4030 closes.
    Stalled(crate::stalled::StalledOpts),
    /// A reconnect surge: phones connecting at the same instant to a fresh
    /// gateway, refusals (503) retried with backoff; handshake latency.
    Surge(crate::surge::SurgeOpts),
    /// A cluster under load loses a part: `kill -9` of a node, or of Redis
    /// (restarted at once on its AOF); presence, recovery and losses.
    Chaos(crate::chaos::ChaosOpts),
}

/// Which sockets send during the relay phase.
#[derive(ValueEnum, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Web clients send to the phone and phones send to every web client.
    Both,
    /// Only web clients send (web → phone).
    Web,
    /// Only phones send (phone → every web client of the account).
    Phone,
}

impl Direction {
    pub fn web_sends(self) -> bool {
        matches!(self, Direction::Both | Direction::Web)
    }
    pub fn phone_sends(self) -> bool {
        matches!(self, Direction::Both | Direction::Phone)
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// Gateway node to connect to (repeatable); an account's sockets are
    /// spread over the nodes.
    #[arg(
        long = "url",
        value_name = "ws://HOST:PORT",
        default_value = "ws://127.0.0.1:8080"
    )]
    pub urls: Vec<String>,
    /// Keep each account's sockets on one node instead of spreading them
    /// (for nodes that do not share routing).
    #[arg(long)]
    pub pin_accounts: bool,
    /// Phones (one per account).
    #[arg(long, default_value_t = 100)]
    pub phones: usize,
    /// Web clients linked to each phone (the gateway's --max-devices must allow it).
    #[arg(long, default_value_t = 2)]
    pub webs_per_phone: usize,
    /// Size of each relayed message body, in bytes (at least ~48).
    #[arg(long, default_value_t = 100)]
    pub msg_size: usize,
    /// Total sends per second over all sending sockets, on a schedule
    /// (latency counts from each send's scheduled time); 0 = flat out.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Sends awaiting their ack per socket (the window when flat out, a cap
    /// when rate-limited).
    #[arg(long, default_value_t = 16)]
    pub in_flight: usize,
    /// Who sends during the relay phase.
    #[arg(long, value_enum, default_value_t = Direction::Both)]
    pub direction: Direction,
    /// Measured relay time (after the warm-up).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Relay time before measuring starts.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub warmup: Duration,
    /// Rounds of disconnect + resume per web client in the churn phase (0 skips it).
    #[arg(long, default_value_t = 3)]
    pub churn_rounds: usize,
    /// Local addresses to connect from, to get past one address's ephemeral
    /// ports: `127.0.0.2-127.0.0.40`, a comma list, or a count N (127.0.0.1..N).
    #[arg(long, value_name = "SPEC")]
    pub source_ips: Option<String>,
    /// Worker processes (default: enough that none holds more than ~18,000 sockets).
    #[arg(long)]
    pub processes: Option<usize>,
    /// Runtime threads per worker process.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Handshakes (pairing, resume) in progress at once per worker
    /// (logout_all is never held back: every phone sends it at one instant).
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Longest wait for any single reply during the handshakes.
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    pub timeout: Duration,
    /// After the relay, how long to wait for every ack and message to land.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub drain_timeout: Duration,
    /// HS256 secret of the gateway (default: read from <data-dir>/secret).
    #[arg(long, env = "PAIRGATE_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// The gateway's data dir, whose `secret` file is read when --secret is absent.
    #[arg(long, default_value = "./pairgate-data")]
    pub data_dir: PathBuf,
    /// Gateway process to sample RSS and CPU of (repeatable; default: found by
    /// the listening port of each --url on this machine).
    #[arg(long = "gateway-pid", value_name = "PID")]
    pub gateway_pids: Vec<u32>,
    /// Start this gateway binary on 127.0.0.1:0 with a temporary data dir, use
    /// it, and stop it at the end.
    #[arg(long, value_name = "PATH")]
    pub spawn_gateway: Option<PathBuf>,
    /// With --spawn-gateway: start this many gateway nodes (one secret, no
    /// shared routing, so each account stays on one node). Each process may
    /// hold 20,000 files here: use 2 for 5,000 phones x 3 webs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub spawn_gateways: usize,
    /// Extra argument for the spawned gateway's `serve` (repeatable).
    #[arg(long = "gateway-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub gateway_args: Vec<String>,
    /// Soak: run the whole plan (pair, relay, churn, logout of one session,
    /// logout_all) in cycles until this much time has passed, sampling the
    /// gateway's RSS; fail on a rising slope (--max-rss-slope).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub soak: Option<Duration>,
    /// Soak: how often to sample the gateway's RSS.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub rss_every: Duration,
    /// Soak: fail when the slope (Theil–Sen) of the gateway's RSS, sampled at
    /// the end of each cycle's relay, over the second half of the soak exceeds
    /// this, in KiB per minute.
    #[arg(long, value_name = "KIB_PER_MIN", default_value_t = 256.0)]
    pub max_rss_slope: f64,
    /// Soak: write the RSS samples here (CSV: seconds,rss_kib,when; `when` is
    /// `timer` or `relay_end`).
    #[arg(long, value_name = "FILE")]
    pub rss_csv: Option<PathBuf>,
    /// Write the full report as JSON here.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write the latency percentile plot as SVG here.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Do not fail the run on `error` replies (they are still reported).
    #[arg(long)]
    pub allow_errors: bool,
    /// No progress bars.
    #[arg(long, short)]
    pub quiet: bool,
    /// CI preset: 5 phones x 2 webs, 2 s relay, 1 churn round (explicit
    /// options still win); fails unless nothing was lost.
    #[arg(long)]
    pub smoke: bool,
}

/// Parses the command line; `--smoke` fills in every option not given.
pub fn parse() -> anyhow::Result<Cli> {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches)?;
    if cli.opts.smoke {
        apply_smoke(&mut cli.opts, &matches);
    }
    Ok(cli)
}

fn apply_smoke(o: &mut Opts, m: &ArgMatches) {
    let defaulted = |id: &str| {
        !matches!(
            m.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    if defaulted("phones") {
        o.phones = 5;
    }
    if defaulted("webs_per_phone") {
        o.webs_per_phone = 2;
    }
    if defaulted("duration") {
        o.duration = Duration::from_secs(2);
    }
    if defaulted("warmup") {
        o.warmup = Duration::from_millis(500);
    }
    if defaulted("churn_rounds") {
        o.churn_rounds = 1;
    }
    if defaulted("in_flight") {
        o.in_flight = 4;
    }
    if defaulted("drain_timeout") {
        o.drain_timeout = Duration::from_secs(5);
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// `127.0.0.2-127.0.0.40` (IPv4 range, inclusive), `a,b,c`, or a count `N`
/// meaning 127.0.0.1 .. 127.0.0.N.
pub fn parse_source_ips(spec: &str) -> anyhow::Result<Vec<IpAddr>> {
    let spec = spec.trim();
    if let Ok(n) = spec.parse::<u32>() {
        if n == 0 || n > 65_000 {
            bail!("--source-ips count must be 1..65000");
        }
        let base = u32::from(Ipv4Addr::new(127, 0, 0, 1));
        return Ok((0..n)
            .map(|i| IpAddr::V4(Ipv4Addr::from(base + i)))
            .collect());
    }
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: Ipv4Addr = a
                .trim()
                .parse()
                .with_context(|| format!("bad address {a}"))?;
            let b: Ipv4Addr = b
                .trim()
                .parse()
                .with_context(|| format!("bad address {b}"))?;
            let (a, b) = (u32::from(a), u32::from(b));
            if b < a || b - a > 65_000 {
                bail!("bad range {part}");
            }
            out.extend((a..=b).map(|i| IpAddr::V4(Ipv4Addr::from(i))));
        } else {
            out.push(
                part.parse()
                    .with_context(|| format!("bad address {part}"))?,
            );
        }
    }
    if out.is_empty() {
        bail!("--source-ips names no address");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ip_specs() {
        let r = parse_source_ips("127.0.0.2-127.0.0.4").unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[2].to_string(), "127.0.0.4");
        let c = parse_source_ips("3").unwrap();
        assert_eq!(c[0].to_string(), "127.0.0.1");
        assert_eq!(c[2].to_string(), "127.0.0.3");
        assert_eq!(parse_source_ips("127.0.0.9, ::1").unwrap().len(), 2);
        assert!(parse_source_ips("127.0.0.5-127.0.0.4").is_err());
    }

    #[test]
    fn smoke_keeps_explicit_values() {
        let m = Cli::command().get_matches_from(["loadtest", "--smoke", "--phones", "7"]);
        let mut cli = Cli::from_arg_matches(&m).unwrap();
        apply_smoke(&mut cli.opts, &m);
        assert_eq!(cli.opts.phones, 7);
        assert_eq!(cli.opts.webs_per_phone, 2);
        assert_eq!(cli.opts.churn_rounds, 1);
    }
}
