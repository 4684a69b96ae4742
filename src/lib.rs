//! pairgate: a WebSocket gateway that links web sessions to an account's phone
//! by QR code, relays between them while the phone is online, and lets the
//! phone end any session.
//!
//! Module map:
//! - [`config`]: every option, its environment variable and validation.
//! - [`contract`]: every number the contract fixes (option defaults, limits).
//! - [`protocol`]: the wire contract's frames, error codes and close codes.
//! - [`http`]: pages, health and readiness, metrics, and the WebSocket upgrades.
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
//! - [`client`]: the client side of the protocol (CLI, tests, load test).
//! - [`tokens`]: phone and session JWTs and the secret.
//! - [`qr`], [`device`], [`ids`], [`metrics`], [`time`]: small helpers.
//! - `fuzzing` (hidden): the fuzz targets' entry points, shared by
//!   `fuzz/` (cargo-fuzz) and the stable test replaying their inputs.

pub mod account;
pub mod admin;
pub mod client;
pub mod cluster;
pub mod config;
mod conn;
pub mod contract;
pub mod device;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod http;
pub mod ids;
pub mod metrics;
pub mod peer;
pub mod protocol;
pub mod qr;
pub mod store;
pub mod time;
pub mod tokens;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
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
    let secret = tokens::resolve_secret(config.secret.as_deref(), &config.data_dir)?;
    let metrics = Arc::new(Metrics::new());
    let node_id = config
        .node_id
        .clone()
        .unwrap_or_else(|| ids::random_id::<6>("node-"));
    let cluster = match &config.redis {
        Some(url) => {
            anyhow::ensure!(
                config.secret.is_some(),
                "--redis needs --secret: every node signs and checks tokens with the same key"
            );
            Some(Cluster::connect(url, node_id.clone(), config.node_lease()).await?)
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
        .unwrap_or_else(|| format!("http://{addr}"))
        .trim_end_matches('/')
        .to_owned();
    let cancel = CancellationToken::new();
    let mut gw = Gateway::new(
        config,
        public_url,
        Tokens::new(&secret),
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

    let app = http::router(gw.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let listener = listener.tap_io(|tcp| {
        // Small frames should leave at once, not wait for Nagle.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    });
    let stop_http = cancel.clone();
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop_http.cancelled().await })
            .into_future(),
    );
    tracing::info!(
        "listening on http://{addr} (open http://{addr}/ in a browser; data dir {})",
        gw.config.data_dir.display()
    );

    shutdown.await;
    tracing::info!("shutting down: closing every socket with 1012");
    cancel.cancel();
    gw.tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, gw.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some sockets did not finish closing in time");
    }
    match tokio::time::timeout(Duration::from_secs(1), server).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "http server ended with an error"),
        Ok(_) => {}
        Err(_) => tracing::debug!("http connections still open at exit"),
    }
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
