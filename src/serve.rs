//! The HTTP listener: our own accept loop and one hyper HTTP/1.1 connection
//! per accepted socket, instead of `axum::serve`, which sets no timers and
//! spins on accept errors.
//!
//! - A client has `header_timeout` to send a request's head, counted from the
//!   moment the connection waits for one: the first request (a bare TCP
//!   connection that sends nothing is cut off too), a trickled head
//!   (slowloris), and the wait for the next request on a keep-alive
//!   connection (hyper restarts the same timer there), so this is also the
//!   idle keep-alive timeout.
//! - A connection still speaking HTTP after six header timeouts (60 s by
//!   default: a body or a response trickled at the pace of a slow client) is
//!   asked to finish, and dropped half a header timeout later. An upgraded WebSocket leaves this loop at
//!   the upgrade: its life is its socket task's.
//! - Accept errors are logged (rate-limited); when the process is out of
//!   file descriptors (EMFILE, ENFILE) or memory, the loop pauses instead of
//!   spinning on an accept that fails at once.
//! - Connections are tracked, so shutdown can ask each to finish and wait.
//! - With TLS ([`crate::tls`]), each connection's handshake runs in its own
//!   task and must finish within the header timeout too, so a client that
//!   opens TCP and never sends a ClientHello is cut off like a silent one.
//!   A plain HTTP request on the TLS port gets a readable 400.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::log_throttle::LogThrottle;

/// An HTTP connection (not yet upgraded) lives this many header timeouts
/// before it is asked to finish: pages, health checks and handshakes take
/// far less.
const LIFE_IN_HEADER_TIMEOUTS: u32 = 6;
/// Pause after an accept failed for lack of descriptors or memory: long
/// enough not to spin, short enough that a freed descriptor is used soon.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one accept-error line per this long (with the count since the last).
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(1);

/// Most a plain HTTP client on the TLS port may send after its 400 before
/// the connection is closed anyway.
const PLAIN_DRAIN_BYTES: usize = 64 * 1024;

/// Timers of the HTTP side.
#[derive(Clone, Copy, Debug)]
pub struct HttpTimers {
    /// See the module docs: header read and idle keep-alive (and the TLS
    /// handshake).
    pub header_timeout: Duration,
}

impl HttpTimers {
    /// Longest life of a connection before it is asked to finish.
    fn life(&self) -> Duration {
        self.header_timeout * LIFE_IN_HEADER_TIMEOUTS
    }
    /// How long a connection asked to finish (life over, or shutdown) may
    /// take to end its request in flight.
    fn finish_grace(&self) -> Duration {
        self.header_timeout / 2
    }
}

/// Serves `app` on `listener` until `stop` is cancelled; then asks every
/// connection still speaking HTTP to finish and returns once they did.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    timers: HttpTimers,
    stop: CancellationToken,
) {
    let conns = TaskTracker::new();
    let mut errors = AcceptErrors::default();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                conns.spawn(connection(
                    tcp,
                    peer,
                    app.clone(),
                    tls.clone(),
                    timers,
                    stop.clone(),
                ));
            }
            Err(e) => {
                let pause = errors.note(&e);
                if !pause.is_zero() {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }
    drop(listener);
    conns.close();
    conns.wait().await;
}

/// One connection: its TLS handshake, if any, then HTTP/1.1.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    tls: Option<TlsAcceptor>,
    timers: HttpTimers,
    stop: CancellationToken,
) {
    // Small frames should leave at once, not wait for Nagle.
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set");
    }
    let Some(acceptor) = tls else {
        return http(tcp, peer, app, timers, stop).await;
    };
    let handshake = async {
        let mut first = [0u8; 1];
        // Peeked, not read: the byte stays for rustls.
        match tcp.peek(&mut first).await {
            Ok(1) if first[0] == crate::tls::HANDSHAKE_RECORD => {}
            Ok(1) => return Err(Some(tcp)),
            _ => return Err(None),
        }
        acceptor.accept(tcp).await.map_err(|e| {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        })
    };
    let stream = tokio::select! {
        done = tokio::time::timeout(timers.header_timeout, handshake) => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(Some(mut plain))) => {
                // Most likely `http://` to an `https://` port: say so once.
                let answer = crate::tls::plain_http_answer();
                let _ = tokio::time::timeout(timers.finish_grace(), async {
                    plain.write_all(&answer).await?;
                    plain.shutdown().await?;
                    // Read what the client sent before closing: closing with
                    // unread bytes resets the connection, and a reset can
                    // discard the answer before the client reads it.
                    let mut sink = [0u8; 1024];
                    let mut left = PLAIN_DRAIN_BYTES;
                    while left > 0 {
                        let n = plain.read(&mut sink).await?;
                        if n == 0 {
                            break;
                        }
                        left = left.saturating_sub(n);
                    }
                    io::Result::Ok(())
                })
                .await;
                tracing::debug!(%peer, "not TLS: answered 400");
                return;
            }
            Ok(Err(None)) => return,
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
        _ = stop.cancelled() => return,
    };
    http(stream, peer, app, timers, stop).await
}

/// One HTTP/1.1 connection, up to its end or its upgrade.
async fn http<IO>(
    io: IO,
    peer: SocketAddr,
    app: Router,
    timers: HttpTimers,
    stop: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |mut req: hyper::Request<Incoming>| {
        // What axum's `ConnectInfo` extractor reads.
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut app = app.clone();
        async move { Ok::<_, Infallible>(app.call(req).await.unwrap_or_else(|e| match e {})) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timers.header_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let ended = tokio::select! {
        ended = conn.as_mut() => Some(ended),
        _ = stop.cancelled() => None,
        _ = tokio::time::sleep(timers.life()) => None,
    };
    let ended = match ended {
        Some(ended) => ended,
        None => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(timers.finish_grace(), conn).await {
                Ok(ended) => ended,
                Err(_) => {
                    tracing::debug!(%peer, "http connection did not finish: dropped");
                    return;
                }
            }
        }
    };
    if let Err(e) = ended {
        // Timeouts, resets and garbage: the client's problem, not an event.
        tracing::debug!(%peer, error = %e, "http connection ended");
    }
}

/// Accept errors: how long to pause after one, and a rate-limited log.
struct AcceptErrors {
    log: LogThrottle,
}

impl Default for AcceptErrors {
    fn default() -> Self {
        AcceptErrors {
            log: LogThrottle::new(ACCEPT_LOG_EVERY),
        }
    }
}

impl AcceptErrors {
    fn note(&mut self, e: &io::Error) -> Duration {
        let pause = if is_resource_exhaustion(e) {
            ACCEPT_BACKOFF
        } else {
            // Per-connection failures (the client reset before we took it):
            // the next accept may well succeed.
            Duration::ZERO
        };
        if let Some(errors) = self.log.note() {
            tracing::warn!(
                error = %e,
                errors,
                pause_ms = pause.as_millis() as u64,
                "accept failed"
            );
        }
        pause
    }
}

/// Out of file descriptors or kernel memory: retrying at once cannot help.
fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_descriptors_pauses_other_errors_do_not() {
        let mut errors = AcceptErrors::default();
        assert_eq!(
            errors.note(&io::Error::from_raw_os_error(libc::EMFILE)),
            ACCEPT_BACKOFF
        );
        assert_eq!(
            errors.note(&io::Error::from_raw_os_error(libc::ENFILE)),
            ACCEPT_BACKOFF
        );
        assert_eq!(
            errors.note(&io::Error::from_raw_os_error(libc::ECONNABORTED)),
            Duration::ZERO
        );
    }
}
