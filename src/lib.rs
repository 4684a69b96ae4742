//! pairgate: a WebSocket gateway that links web sessions to an account's phone
//! by QR code, relays between them while the phone is online, and lets the
//! phone end any session.
//!
//! Module map:
//! - [`config`]: every option, its environment variable and validation;
//!   [`config_file`]: `--config FILE` (TOML) turned into those options' defaults.
//! - [`contract`]: every number the contract fixes (option defaults, limits).
//! - [`protocol`]: the wire contract's frames, error codes and close codes
//!   (the `pairgate-protocol` crate, shared with clients).
//! - [`serve`]: the accept loop and HTTP/1.1 connections (timeouts, accept
//!   errors); [`http`]: pages, health and readiness, metrics, and the
//!   WebSocket upgrades.
//! - [`admission`]: the socket caps (per node, per client IP) checked before
//!   a handshake; [`client_ip`]: the client's address behind trusted proxies;
//!   [`drain`]: SIGTERM's spread 1012 closes.
//! - [`handshake`]: what an upgrade request must look like (its key).
//! - [`origin`]: who may upgrade: the Host rule (DNS rebinding) and the
//!   Origin rule; [`security_headers`]: the headers on every answer.
//! - [`demo`]: `--demo`'s token limits and what `/phone` is without it;
//!   [`ip_rate`]: the bounded per-client-IP limiter (demo tokens, `pair`s).
//! - [`admin`]: the operator API (`/admin/*`, with `--admin-token`): its
//!   authentication, routes and JSON; what it does is in [`account`].
//! - `conn`: one task per socket (`phone.rs`, `web.rs`: each role's state as
//!   an enum), its write path (`write.rs`), limits and heartbeats.
//! - [`peer`]: the bounded mailbox through which others reach a socket,
//!   generic over the events the socket takes.
//! - [`gateway`]: the handles (config, store, hub, pairing, metrics) handed
//!   to every socket task.
//! - [`account`]: what the gateway decides, one use case per file:
//!   [`account::hub`] (the account table and its locks),
//!   [`account::presence`] (phone and session online/offline, who may act),
//!   [`account::pairing`] (refs and codes, the attempt's state machine,
//!   link / confirm / reject / expiry, the link-miss limiter),
//!   [`account::sessions`] (restore, resume, list, logout, removal),
//!   [`account::expiry`] (grace timers, the idle sweep),
//!   [`account::relay`] (relay rules, body size),
//!   [`account::admin`] (what the operator API reads).
//! - [`store`]: durable session records behind a batching writer (redb).
//! - [`client`]: the client side of the protocol (CLI, tests, load test): the
//!   `pairgate-client` crate, re-exported.
//! - [`tokens`]: phone and session JWTs.
//! - [`secret`]: the generated secret and the data dir, private to their owner.
//! - [`process_metrics`]: the process's own series (memory, files, CPU) and build info.
//! - [`qr`], [`device`], [`ids`], [`metrics`], [`time`]: small helpers.
//! - `fuzzing` (hidden): the fuzz targets' entry points, shared by
//!   `fuzz/` (cargo-fuzz) and the stable test replaying their inputs.

pub mod account;
pub mod admin;
pub mod admission;
pub use pairgate_client as client;
pub mod client_ip;
mod close_summary;
pub mod cluster;
pub mod config;
pub mod config_file;
mod conn;
pub mod contract;
pub mod demo;
pub mod device;
pub mod drain;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod handshake;
pub mod http;
pub mod ids;
pub mod ip_rate;
pub mod log_throttle;
pub mod metrics;
pub mod origin;
pub mod peer;
pub mod process_metrics;
pub use pairgate_protocol as protocol;
pub mod qr;
pub mod secret;
pub mod security_headers;
pub mod serve;
pub mod store;
pub mod time;
pub mod tls;
pub mod tokens;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

use cluster::Cluster;
use gateway::Gateway;
use metrics::Metrics;
use store::{RedbBackend, RedisBackend, Store};
use tokens::Tokens;

/// How long shutdown waits for sockets to say goodbye before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Serves the gateway on `listener` until `shutdown` resolves; then closes every
/// socket with 1012, flushes the store, and returns.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve(listener, config, None::<RedbBackend>, shutdown).await
}

/// `run` with the store on `backend` instead of the data dir's file (or
/// Redis): for tests of the gateway on a disk that fails on demand.
#[doc(hidden)]
pub async fn run_on_backend(
    listener: TcpListener,
    config: Config,
    backend: impl store::Backend,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve(listener, config, Some(backend), shutdown).await
}

async fn serve<B: store::Backend>(
    listener: TcpListener,
    config: Config,
    backend: Option<B>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        %addr,
        config = ?config.redacted(),
        "pairgate starting"
    );
    // First, so a wrong path fails the start before anything is created.
    let tls = tls::from_config(&config)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let metrics_listener = match config.metrics_listen {
        Some(at) => Some(
            TcpListener::bind(at)
                .await
                .with_context(|| format!("cannot listen on {at} (--metrics-listen)"))?,
        ),
        None => None,
    };
    let explicit = config.explicit_secret()?;
    let secret = tokens::resolve_secret(explicit.as_deref(), &config.data_dir)?;
    let tokens = Tokens::with_previous(&secret, &config.previous_secrets()?);
    let metrics = Arc::new(Metrics::new());
    let node_id = config
        .node_id
        .clone()
        .unwrap_or_else(|| ids::random_id::<6>("node-"));
    let cluster = match &config.redis {
        Some(url) => {
            anyhow::ensure!(
                explicit.is_some(),
                "--redis needs --secret or --secret-file: every node signs and checks tokens with the same key"
            );
            Some(
                Cluster::connect(
                    url,
                    node_id.clone(),
                    config.node_lease(),
                    metrics.cluster_redis_reconnects.clone(),
                )
                .await?,
            )
        }
        None => None,
    };
    let (store, stored, writer) = match (&cluster, backend) {
        (_, Some(b)) => Store::start(b, metrics.clone())?,
        (Some(c), None) => Store::start(
            RedisBackend::new(c.redis_client(), c.me_handle()),
            metrics.clone(),
        )?,
        (None, None) => Store::start(RedbBackend::open(&config.data_dir)?, metrics.clone())?,
    };
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{addr}"))
        .trim_end_matches('/')
        .to_owned();
    let cancel = CancellationToken::new();
    let mut gw = Gateway::new(
        config,
        public_url,
        tokens,
        store,
        metrics.clone(),
        cancel.clone(),
    );
    gw.node_id = node_id;
    gw.cluster = cluster.clone();
    let gw = Arc::new(gw);
    if let Some(c) = &cluster {
        c.start(&gw).await?;
    }

    gw.restore(stored);
    if let Some(idle) = gw.config.session_idle() {
        gw.spawn_idle_sweeper(idle);
    }
    spawn_memory_trimmer(&gw);
    let close_summary = close_summary::spawn(&gw);
    origin::warn_if_unprotected(&gw.config);
    let limits = gw.clone();
    ip_rate::spawn_sweeper(&gw.tasks, gw.shutdown.clone(), LIMIT_SWEEP, move |now| {
        limits.pair_rate.sweep(now)
    });

    let app = http::router(gw.clone());
    let timers = serve::HttpTimers {
        header_timeout: gw.config.http_header_timeout(),
    };
    if let Some(metrics_listener) = metrics_listener {
        let at = metrics_listener.local_addr()?;
        // Plain HTTP: it is meant for a private network, and scrapers
        // rarely carry a client certificate store for it.
        tokio::spawn(serve::serve(
            metrics_listener,
            http::metrics_router(gw.clone()),
            None,
            timers,
            cancel.clone(),
        ));
        tracing::info!("metrics on http://{at}/metrics (not on the main listener)");
    }
    let server = tokio::spawn(serve::serve(listener, app, tls, timers, cancel.clone()));
    tracing::info!(
        "listening on {scheme}://{addr} (open {scheme}://{addr}/ in a browser; data dir {})",
        gw.config.data_dir.display()
    );

    shutdown.await;
    let sockets = gw.admission.open();
    let drain = gw.config.drain();
    tracing::info!(
        sockets,
        drain_ms = drain.as_millis() as u64,
        "shutting down: taking no new sockets; closing every socket with 1012"
    );
    // New upgrades and `/readyz` get 503 from here on; the sockets close in
    // waves over the drain time (at once without one).
    gw.drain.run(drain).await;
    cancel.cancel();
    gw.tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, gw.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some sockets did not finish closing in time");
    }
    if tokio::time::timeout(Duration::from_secs(1), server)
        .await
        .is_err()
    {
        tracing::debug!("http connections still open at exit");
    }
    close_summary.log(&gw.metrics, "since the last summary (shutdown)");
    if let Some(c) = &cluster {
        c.leave().await;
    }
    gw.store.flush_and_stop().await;
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    tracing::info!("stopped");
    Ok(())
}

/// Every socket is a file: lifts the soft open-files limit to the hard one, so
/// a process holds as many sockets as the machine allows (the gateway, and
/// the load test's workers).
pub fn raise_open_files_limit() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if limit.rlim_cur < limit.rlim_max {
                limit.rlim_cur = limit.rlim_max;
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
    }
    Ok(())
}

/// How often the per-IP limiters drop expired entries, so they empty when idle.
const LIMIT_SWEEP: Duration = Duration::from_secs(10);

/// How often the memory trimmer looks at the socket count.
const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Gives freed memory back to the system after sockets went away. glibc's
/// allocator keeps what freed sockets and their queues used in its per-thread
/// arenas; after a wave of closes (a flood of slow readers closed 4030, a
/// mass logout) that would stay resident for good. `malloc_trim` returns it;
/// it runs only when the socket count fell since the last look.
fn spawn_memory_trimmer(gw: &Arc<Gateway>) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let gw2 = gw.clone();
        gw.tasks.spawn(async move {
            let sockets = |gw: &Gateway| {
                gw.metrics.sockets(protocol::Role::Phone).get()
                    + gw.metrics.sockets(protocol::Role::Web).get()
            };
            let mut last = sockets(&gw2);
            let mut tick = tokio::time::interval(TRIM_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = gw2.shutdown.cancelled() => return,
                }
                let now = sockets(&gw2);
                if now < last {
                    // SAFETY: malloc_trim has no preconditions.
                    tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) });
                }
                last = now;
            }
        });
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = gw;
}
