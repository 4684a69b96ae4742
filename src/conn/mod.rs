//! One task per socket. The task owns its WebSocket: it reads client frames,
//! writes what others queued for it through its [`Peer`], sends heartbeats,
//! enforces limits and deadlines, and obeys close orders. The role-specific
//! parts live in `phone.rs` and `web.rs`.
//!
//! Every write is raced against the socket's close order, so a client that
//! stops reading can never hold up a teardown: the order wins and the socket
//! is dropped.

mod limits;
mod phone;
mod web;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::{FutureExt, SinkExt, StreamExt};
use tokio::sync::oneshot;
use tokio::time::{MissedTickBehavior, interval_at, sleep_until};
use tracing::Instrument;

use crate::gateway::Gateway;
use crate::peer::{Out, PairingEvent, Peer, PeerQueue};
use crate::protocol::{
    CloseCode, ErrorCode, PROTOCOL_VERSION, Rejection, Request, Role, ServerFrame, Stage,
    parse_frame,
};

use self::limits::Limits;

/// Who is on the other end, as the HTTP upgrade saw it.
#[derive(Clone, Debug)]
pub struct ClientInfo {
    /// IPv4-mapped IPv6 addresses shown as IPv4.
    pub ip: String,
    pub user_agent: String,
}

/// Why a socket task's loop ended.
#[derive(Debug)]
pub enum Stop {
    /// Close with `code` (after `farewell`), once the socket has left every
    /// registry. `waiters` are released when that is done.
    Close {
        code: CloseCode,
        farewell: Option<Utf8Bytes>,
        waiters: Vec<oneshot::Sender<()>>,
    },
    /// The client left or the socket failed: nothing more to send.
    Gone,
}

impl Stop {
    /// A close that nobody waits for.
    pub fn close(code: CloseCode, farewell: Option<Utf8Bytes>) -> Stop {
        Stop::Close {
            code,
            farewell,
            waiters: Vec::new(),
        }
    }
}

/// Frames written in one batch before flushing.
const WRITE_BATCH: usize = 64;
/// How long a socket being closed waits for a slow client to take its close frame.
const CLOSE_PATIENCE: Duration = Duration::from_secs(2);
/// How long a closed socket waits for the client's close reply.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// The socket and everything its task keeps.
pub struct Conn {
    pub gw: Arc<Gateway>,
    ws: WebSocket,
    queue: PeerQueue,
    pub peer: Peer,
    pub role: Role,
    pub client: ClientInfo,
    pub stage: Stage,
    limits: Limits,
    opened: Instant,
    last_seen: Instant,
}

/// What the phone and web roles do with the socket.
pub(crate) trait Handler {
    /// Handles one parsed client frame.
    async fn on_frame(&mut self, conn: &mut Conn, req: Request<'_>) -> Result<(), Stop>;
    /// Handles a pairing event queued by the phone (web sockets only).
    async fn on_pairing(&mut self, conn: &mut Conn, event: PairingEvent) -> Result<(), Stop>;
    /// The role's next deadline, if any.
    fn deadline(&self) -> Option<Instant>;
    async fn on_deadline(&mut self, conn: &mut Conn) -> Result<(), Stop>;
    /// Unregisters the socket; runs exactly once, however the task ended.
    fn on_exit(&mut self, conn: &Conn);
}

/// Runs one upgraded socket to its end.
pub async fn serve(gw: Arc<Gateway>, ws: WebSocket, role: Role, client: ClientInfo) {
    let conn_id = gw.next_conn_id();
    let span = tracing::info_span!(
        "socket",
        role = role.as_str(),
        conn = conn_id,
        ip = %client.ip,
        account = tracing::field::Empty,
        session = tracing::field::Empty,
    );
    let (peer, queue) = Peer::new(conn_id, gw.config.max_queue_bytes as usize);
    let limits = Limits::new(gw.config.max_frames_per_sec, gw.config.max_errors_per_sec);
    let now = Instant::now();
    let mut conn = Conn {
        gw: gw.clone(),
        ws,
        queue,
        peer,
        role,
        client,
        stage: Stage::Opening,
        limits,
        opened: now,
        last_seen: now,
    };
    gw.metrics.sockets(role).inc();
    async move {
        tracing::debug!("socket opened");
        match role {
            Role::Phone => conn.run(phone::Phone::default()).await,
            Role::Web => conn.run(web::Web::default()).await,
        };
        gw.metrics.sockets(role).dec();
    }
    .instrument(span)
    .await
}

impl Conn {
    async fn run<H: Handler>(&mut self, mut handler: H) {
        let stop = self.drive(&mut handler).await;
        // Whatever ended the loop: nothing more may be queued, and the socket
        // leaves every registry before its close frame goes out, so a socket
        // that is closing is never counted live.
        self.queue.shut();
        handler.on_exit(self);
        match stop {
            Ok(()) | Err(Stop::Gone) => tracing::debug!("socket gone"),
            Err(Stop::Close {
                code,
                farewell,
                waiters,
            }) => {
                self.gw.metrics.close(code);
                let sent = if waiters.iter().any(|w| !w.is_closed()) {
                    // Somebody waits (a logout): no waiting on a slow client.
                    send_close(&mut self.ws, code, farewell).now_or_never()
                } else {
                    self.send_close_patiently(code, farewell).await
                };
                // Written, or being dropped: whoever waits may go on.
                drop(waiters);
                match sent {
                    Some(Ok(())) => {
                        tracing::debug!(code = code.code(), "socket closed");
                        self.linger().await;
                    }
                    _ => tracing::debug!(code = code.code(), "client not reading; socket dropped"),
                }
            }
        }
    }

    async fn drive<H: Handler>(&mut self, handler: &mut H) -> Result<(), Stop> {
        let cfg = &self.gw.config;
        let hello = ServerFrame::Hello {
            protocol: PROTOCOL_VERSION,
            heartbeat_ms: cfg.heartbeat_ms,
            max_frame_bytes: cfg.max_frame_bytes,
        };
        let heartbeat_every = cfg.heartbeat();
        let auth_deadline = self.opened + cfg.auth_timeout();
        self.reply(&hello).await?;

        // A random phase spreads every socket's pings over the interval.
        let phase = heartbeat_every.mul_f64(rand::random::<f64>());
        let mut heartbeat = interval_at((Instant::now() + phase).into(), heartbeat_every);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);

        loop {
            let deadline = match self.stage {
                Stage::Opening => Some(auth_deadline),
                _ => handler.deadline(),
            };
            tokio::select! {
                biased;
                _ = self.peer.close_ordered() => return Err(self.take_close_order()),
                _ = self.gw.shutdown.cancelled() => {
                    return Err(Stop::close(CloseCode::Restarting, None));
                }
                out = self.queue.recv() => match out {
                    Some(out) => self.write_out(out, handler).await?,
                    None => return Err(Stop::Gone),
                },
                incoming = self.ws.next() => self.on_incoming(incoming, handler).await?,
                _ = heartbeat.tick() => {
                    if self.last_seen.elapsed() >= heartbeat_every * 2 {
                        return Err(Stop::close(CloseCode::TimedOut, None));
                    }
                    self.write(Message::Ping(Default::default())).await?;
                }
                _ = sleep_until(deadline.unwrap_or(self.opened).into()), if deadline.is_some() => {
                    if self.stage == Stage::Opening {
                        return Err(Stop::close(CloseCode::TimedOut, None));
                    }
                    handler.on_deadline(self).await?;
                }
            }
        }
    }

    /// Writes one queued item and whatever else is waiting, then flushes once.
    async fn write_out<H: Handler>(&mut self, first: Out, handler: &mut H) -> Result<(), Stop> {
        let mut next = Some(first);
        let mut batch = Vec::new();
        while let Some(out) = next.take() {
            match out {
                Out::Text(text) => batch.push(Message::Text(text)),
                Out::Pairing(event) => {
                    // Events change the socket's state: write what came
                    // before them first, in order.
                    self.write_all(std::mem::take(&mut batch)).await?;
                    handler.on_pairing(self, event).await?;
                }
            }
            if batch.len() < WRITE_BATCH {
                next = self.queue.try_recv();
            }
        }
        self.write_all(batch).await
    }

    async fn on_incoming<H: Handler>(
        &mut self,
        incoming: Option<Result<Message, axum::Error>>,
        handler: &mut H,
    ) -> Result<(), Stop> {
        let msg = match incoming {
            None => return Err(Stop::Gone),
            Some(Ok(msg)) => msg,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "socket read failed");
                if is_too_large(e) {
                    return Err(Stop::close(CloseCode::TooLarge, None));
                }
                return Err(Stop::Gone);
            }
        };
        let now = Instant::now();
        self.last_seen = now;
        match msg {
            Message::Text(text) => {
                if !self.limits.frames.take(now) {
                    let id = crate::protocol::peek_id(text.as_str());
                    return self
                        .error(id.as_deref(), ErrorCode::RateLimited, "too many frames")
                        .await;
                }
                match parse_frame(text.as_str(), self.role, self.stage) {
                    Ok(req) => handler.on_frame(self, req).await,
                    Err(Rejection { code, id, message }) => {
                        self.error(id.as_deref(), code, &message).await
                    }
                }
            }
            Message::Binary(_) => {
                if !self.limits.frames.take(now) {
                    return self
                        .error(None, ErrorCode::RateLimited, "too many frames")
                        .await;
                }
                self.error(None, ErrorCode::BadFrame, "binary frames are not accepted")
                    .await
            }
            Message::Ping(_) | Message::Pong(_) => Ok(()),
            Message::Close(_) => {
                // tungstenite queued the close reply; send it on its way.
                let _ = self.ws.flush().now_or_never();
                Err(Stop::Gone)
            }
        }
    }

    // ---- writing ----------------------------------------------------------

    /// Writes and flushes `frames`, unless a close order arrives first.
    async fn write_all(&mut self, frames: Vec<Message>) -> Result<(), Stop> {
        if frames.is_empty() {
            return Ok(());
        }
        let Conn { ws, peer, .. } = self;
        let work = async {
            for frame in frames {
                ws.feed(frame).await?;
            }
            ws.flush().await
        };
        tokio::select! {
            biased;
            written = work => {
                return written.map_err(|e| {
                    tracing::debug!(error = %e, "socket write failed");
                    Stop::Gone
                });
            }
            // A client that does not read must not hold up its teardown.
            _ = peer.close_ordered() => {}
        }
        Err(self.take_close_order())
    }

    async fn write(&mut self, frame: Message) -> Result<(), Stop> {
        self.write_all(vec![frame]).await
    }

    /// Sends one frame to this socket.
    pub async fn reply(&mut self, frame: &ServerFrame<'_>) -> Result<(), Stop> {
        self.write(Message::Text(Utf8Bytes::from(frame.to_text())))
            .await
    }

    /// Sends an `error`, subject to the error-rate limit; closes 4029 on the
    /// 20th `rate_limited` within 10 s.
    pub async fn error(
        &mut self,
        id: Option<&str>,
        code: ErrorCode,
        message: &str,
    ) -> Result<(), Stop> {
        let now = Instant::now();
        let (code, message) = if code != ErrorCode::RateLimited && !self.limits.errors.take(now) {
            (ErrorCode::RateLimited, "too many errors")
        } else {
            (code, message)
        };
        self.gw.metrics.error(code);
        self.reply(&ServerFrame::Error { id, code, message })
            .await?;
        if code == ErrorCode::RateLimited && self.limits.note_rate_limited(now) {
            return Err(Stop::close(CloseCode::RateLimited, None));
        }
        Ok(())
    }

    /// Sends an error and then closes: for invalid tokens and ended sessions.
    pub fn refuse(&self, id: Option<&str>, code: ErrorCode, close: CloseCode) -> Stop {
        let message = match code {
            ErrorCode::InvalidToken => "the token is not valid",
            ErrorCode::LoggedOut => "this session was logged out; pair again",
            _ => "refused",
        };
        self.gw.metrics.error(code);
        let frame = Utf8Bytes::from(ServerFrame::Error { id, code, message }.to_text());
        Stop::close(close, Some(frame))
    }

    // ---- closing ----------------------------------------------------------

    /// Writes `farewell` (if any) and the close frame, giving a client that
    /// reads slowly up to `CLOSE_PATIENCE` (shutdown cuts it short).
    async fn send_close_patiently(
        &mut self,
        code: CloseCode,
        farewell: Option<Utf8Bytes>,
    ) -> Option<Result<(), axum::Error>> {
        let Conn { ws, gw, .. } = self;
        tokio::select! {
            biased;
            sent = send_close(ws, code, farewell) => Some(sent),
            _ = gw.shutdown.cancelled(), if code != CloseCode::Restarting => None,
            _ = tokio::time::sleep(CLOSE_PATIENCE) => None,
        }
    }

    fn take_close_order(&mut self) -> Stop {
        match self.peer.take_order() {
            (Some(order), waiters) => Stop::Close {
                code: order.code,
                farewell: order.farewell,
                waiters,
            },
            (None, _) => Stop::Gone,
        }
    }

    /// After our close frame: read until the client's reply, briefly.
    async fn linger(&mut self) {
        let drain = async { while let Some(Ok(_)) = self.ws.next().await {} };
        let _ = tokio::time::timeout(CLOSE_LINGER, drain).await;
    }

    // ---- helpers for the roles -----------------------------------------------

    pub fn record_account(&self, account: &str) {
        tracing::Span::current().record("account", account);
    }

    pub fn record_session(&self, session_id: &str) {
        tracing::Span::current().record("session", session_id);
    }
}

async fn send_close(
    ws: &mut WebSocket,
    code: CloseCode,
    farewell: Option<Utf8Bytes>,
) -> Result<(), axum::Error> {
    if let Some(f) = farewell {
        ws.feed(Message::Text(f)).await?;
    }
    let close = Message::Close(Some(CloseFrame {
        code: code.code(),
        reason: Utf8Bytes::from_static(code.reason()),
    }));
    ws.feed(close).await?;
    ws.flush().await
}

/// Whether a read failed because the client's frame exceeded `max_frame_bytes`.
fn is_too_large(e: axum::Error) -> bool {
    matches!(
        e.into_inner().downcast_ref::<tungstenite::Error>(),
        Some(tungstenite::Error::Capacity(_))
    )
}

impl Conn {
    /// Sends one already-serialized frame.
    pub async fn write_text(&mut self, text: String) -> Result<(), Stop> {
        self.write(Message::Text(Utf8Bytes::from(text))).await
    }

    /// Sends already-serialized frames in order, flushing once.
    pub async fn write_texts<const N: usize>(&mut self, texts: [String; N]) -> Result<(), Stop> {
        self.write_all(texts.map(|t| Message::Text(Utf8Bytes::from(t))).into())
            .await
    }
}
