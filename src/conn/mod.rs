//! One task per socket. The task owns its WebSocket: it reads client frames,
//! writes what others queued for it through its [`Peer`], sends heartbeats,
//! enforces limits and deadlines, and obeys close orders. The role-specific
//! parts live in `phone.rs` and `web.rs`.
//!
//! Every write that has to wait is raced against the socket's close order, so
//! a client that stops reading can never hold up a teardown: the order wins.
//! Whatever ends the loop, the socket leaves every registry before its close
//! frame is written. Rare and bursty work runs in boxed futures, so the state a
//! socket's task keeps while it waits stays small (see docs/ARCHITECTURE.md).

mod limits;
mod phone;
mod web;
mod write;

pub use write::websocket_config;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{Either, OptionFuture};
use futures::{FutureExt, SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use tokio::time::{MissedTickBehavior, interval_at, sleep_until};
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument;
use tungstenite::{Message, Utf8Bytes};

use crate::gateway::Gateway;
use crate::peer::{Out, Peer, PeerQueue, Wake};
use crate::protocol::{
    CloseCode, ErrorCode, PROTOCOL_VERSION, Rejection, Request, Role, ServerFrame, Stage,
    parse_frame,
};

use self::limits::Limits;

/// Who is on the other end, as the HTTP upgrade saw it.
#[derive(Debug)]
pub struct ClientInfo {
    /// The client IP (`client_ip.rs`); IPv4-mapped IPv6 addresses shown as IPv4.
    pub ip: String,
    pub user_agent: String,
    /// The socket's place under the caps (`admission.rs`), given back when
    /// its task ends.
    #[expect(dead_code, reason = "held only to be dropped with the socket")]
    pub place: crate::admission::Admitted,
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

/// Queued items fed in one go before the loop looks at incoming frames.
const WRITE_BATCH: usize = 64;
/// Ready frames and events handled before buffered output is flushed.
const READY_BUDGET: u32 = 32;
/// How long a closed socket waits for the client's close reply.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// A socket's unregistering that is still under way when it exits (cluster
/// mode: its account's home has not confirmed yet).
pub type Leaving = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// An upgraded WebSocket connection.
pub type WebSocket = WebSocketStream<TokioIo<Upgraded>>;

/// The socket and everything its task keeps except the role's state, which
/// is the handler. `E` is the type of event its peer takes.
pub struct Conn<E> {
    pub gw: Arc<Gateway>,
    ws: WebSocket,
    queue: PeerQueue<E>,
    pub peer: Peer<E>,
    pub role: Role,
    pub client: ClientInfo,
    limits: Limits,
    opened: Instant,
    last_seen: Instant,
    /// Frames sit in the write buffer: flush before waiting.
    unflushed: bool,
    /// A long message whose fragments are being written (see `write.rs`).
    unfinished: Option<write::Unfinished>,
}

/// What the phone and web roles do with the socket. The handler is the
/// role's state.
pub(crate) trait Handler {
    /// What others queue for this role's socket besides frames.
    type Event;
    /// Where the socket stands; decides which frames the parser lets through.
    fn stage(&self) -> Stage;
    /// Handles one parsed client frame.
    async fn on_frame(
        &mut self,
        conn: &mut Conn<Self::Event>,
        req: Request<'_>,
    ) -> Result<(), Stop>;
    /// Handles an event queued for the socket, in order with its frames.
    async fn on_event(
        &mut self,
        conn: &mut Conn<Self::Event>,
        event: Self::Event,
    ) -> Result<(), Stop>;
    /// The role's next deadline past opening, if any.
    fn deadline(&self) -> Option<Instant> {
        None
    }
    async fn on_deadline(&mut self, _conn: &mut Conn<Self::Event>) -> Result<(), Stop> {
        Ok(())
    }
    /// Unregisters the socket; runs exactly once, however the task ended.
    /// What it returns (cluster mode: the account's home confirming) is
    /// awaited before the close frame goes out.
    fn on_exit(&mut self, conn: &Conn<Self::Event>) -> Option<Leaving>;
}

/// Runs one upgraded socket to its end.
///
/// Not an `async fn`: the socket is moved into its `Conn` before the future
/// exists, so the task holds one copy of it (an async fn's arguments, and an
/// async block's captures, keep their own slots in the future beside the
/// `Conn` they were moved into: about 0.3 KiB per idle socket).
pub fn serve(
    gw: Arc<Gateway>,
    ws: WebSocket,
    role: Role,
    client: ClientInfo,
) -> impl Future<Output = ()> + Send {
    let conn_id = gw.next_conn_id();
    let span = tracing::info_span!(
        "socket",
        role = role.as_str(),
        conn = conn_id,
        ip = %client.ip,
        account = tracing::field::Empty,
        session = tracing::field::Empty,
    );
    gw.metrics.sockets(role).inc();
    // Each role's socket takes its own kind of event.
    match role {
        Role::Phone => Either::Left(run(
            Conn::open(&gw, conn_id, ws, role, client),
            phone::Phone::default(),
        )),
        Role::Web => Either::Right(run(
            Conn::open(&gw, conn_id, ws, role, client),
            web::Web::default(),
        )),
    }
    .instrument(span)
}

/// Not an `async fn` either, for the same reason: an async fn moves its
/// arguments out of their slots into locals of its own, so the `Conn` (about
/// 0.6 KiB) and the handler would sit in every socket's task twice. The
/// block below uses its captures where they are.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would hold its arguments twice (above)"
)]
fn run<H: Handler>(mut conn: Conn<H::Event>, mut handler: H) -> impl Future<Output = ()> {
    async move {
        tracing::debug!("socket opened");
        conn.run(&mut handler).await;
        conn.gw.metrics.sockets(conn.role).dec();
    }
}

impl<E> Conn<E> {
    fn open(
        gw: &Arc<Gateway>,
        conn_id: u64,
        ws: WebSocket,
        role: Role,
        client: ClientInfo,
    ) -> Self {
        let (peer, queue) = Peer::new(conn_id, gw.config.max_queue_bytes as usize);
        let limits = Limits::new(gw.config.max_frames_per_sec, gw.config.max_errors_per_sec);
        let now = Instant::now();
        Conn {
            gw: gw.clone(),
            ws,
            queue,
            peer,
            role,
            client,
            limits,
            opened: now,
            last_seen: now,
            unflushed: false,
            unfinished: None,
        }
    }

    async fn run<H: Handler<Event = E>>(&mut self, handler: &mut H) {
        let stop = self.drive(handler).await;
        // Boxed: the ending's states would otherwise widen the state every
        // socket keeps for its whole life.
        Box::pin(self.end(handler, stop)).await;
    }

    /// Unregisters the socket and carries out how it ended.
    async fn end<H: Handler<Event = E>>(&mut self, handler: &mut H, stop: Result<(), Stop>) {
        // Whatever ended the loop: nothing more may be queued, and the socket
        // leaves every registry before its close frame goes out, so a socket
        // that is closing is never counted live.
        let queued = self.queue.shut();
        if let Some(leaving) = handler.on_exit(self) {
            // Bounded: a home that does not answer is handled as gone. Boxed,
            // so every socket's task is not sized for a timer it rarely needs.
            let _ = Box::pin(tokio::time::timeout(crate::cluster::CALL_TIMEOUT, leaving)).await;
        }
        match stop {
            Ok(()) | Err(Stop::Gone) => {
                // A client's close is answered only now, so whatever it does
                // next (through any node) comes after its socket left.
                let _ = self.ws.flush().now_or_never();
                tracing::debug!("socket gone");
            }
            Err(Stop::Close {
                code,
                farewell,
                waiters,
            }) => {
                self.gw.metrics.close(code);
                // Why the gateway closed it (the span names the socket, its
                // IP and account): detail at debug, since a logout_all of a
                // big account base would be a line per socket; the counts by
                // code are at info once a minute (`close_summary.rs`).
                tracing::debug!(
                    code = code.code(),
                    why = code.reason(),
                    "closing the socket"
                );
                let sent = if waiters.iter().any(|w| !w.is_closed()) {
                    // Somebody waits (a logout): no waiting on a slow client,
                    // and what was queued for an ended session is dropped.
                    self.close_now(code, farewell)
                } else {
                    // What was queued was counted as delivered: it goes first.
                    Box::pin(self.close_patiently(queued, code, farewell)).await
                };
                // Written, or being dropped: whoever waits may go on.
                drop(waiters);
                match sent {
                    Some(Ok(())) => {
                        tracing::debug!(code = code.code(), "socket closed");
                        Box::pin(self.linger()).await;
                    }
                    _ => tracing::debug!(code = code.code(), "client not reading; socket dropped"),
                }
            }
        }
    }

    async fn drive<H: Handler<Event = E>>(&mut self, handler: &mut H) -> Result<(), Stop> {
        let cfg = &self.gw.config;
        // Serialized at once: the frame itself is not kept in the state the
        // socket holds while it waits.
        let hello = ServerFrame::Hello {
            protocol: PROTOCOL_VERSION,
            heartbeat_ms: cfg.heartbeat_ms,
            max_frame_bytes: cfg.max_frame_bytes,
        }
        .to_text();
        let heartbeat_every = cfg.heartbeat();
        let auth_deadline = self.opened + cfg.auth_timeout();
        // Once per socket: boxed, like the other rare paths, so the state the
        // socket keeps while it waits stays small.
        Box::pin(self.write_text(hello)).await?;

        // A random phase spreads every socket's pings over the interval.
        let phase = heartbeat_every.mul_f64(rand::random::<f64>());
        let mut heartbeat = interval_at((Instant::now() + phase).into(), heartbeat_every);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);

        let mut ready_budget = READY_BUDGET;
        loop {
            if self.unflushed {
                // Handle whatever is ready right now first, so that one flush
                // carries all of its replies; flush before waiting.
                if ready_budget > 0 {
                    ready_budget -= 1;
                    if let Some(out) = self.queue.try_recv() {
                        Box::pin(self.write_out(out, handler)).await?;
                        continue;
                    }
                    if let Some(incoming) = self.ws.next().now_or_never() {
                        Box::pin(self.on_incoming(incoming, handler)).await?;
                        continue;
                    }
                }
                self.flush().await?;
                ready_budget = READY_BUDGET;
            }
            let opening = handler.stage() == Stage::Opening;
            let deadline = if opening {
                Some(auth_deadline)
            } else {
                handler.deadline()
            };
            // Boxed, and only while there is one (opening, pairing): a live
            // socket keeps no timer of its own beside the heartbeat.
            let mut deadline_timer = deadline.map(|at| Box::pin(sleep_until(at.into())));
            tokio::select! {
                biased;
                // Shutdown, or this socket's turn in a drain (`drain.rs`).
                _ = self.gw.drain.turn(self.peer.conn_id()) => {
                    // One line per socket would flood the log of a big
                    // node at every deploy: `run` logs the drain once.
                    tracing::debug!("closing 1012: the node is shutting down");
                    return Err(Stop::close(CloseCode::Restarting, None));
                }
                wake = self.queue.next() => match wake {
                    Wake::CloseOrdered => return Err(self.take_close_order()),
                    Wake::Out(out) => Box::pin(self.write_out(out, handler)).await?,
                },
                // Boxed: a frame's handling is the largest state of the
                // socket's loop, and sockets spend their lives waiting, not in it.
                incoming = self.ws.next() => Box::pin(self.on_incoming(incoming, handler)).await?,
                _ = heartbeat.tick() => {
                    if self.last_seen.elapsed() >= heartbeat_every * 2 {
                        return Err(Stop::close(CloseCode::TimedOut, None));
                    }
                    self.feed(Message::Ping(Default::default())).await?;
                }
                _ = OptionFuture::from(deadline_timer.as_mut()), if deadline_timer.is_some() => {
                    if opening {
                        return Err(Stop::close(CloseCode::TimedOut, None));
                    }
                    // Rare (QR rotation): boxed so the socket's task stays small.
                    Box::pin(handler.on_deadline(self)).await?;
                }
            }
        }
    }

    /// Feeds one queued item and up to `WRITE_BATCH` more that are waiting;
    /// the loop flushes them together.
    async fn write_out<H: Handler<Event = E>>(
        &mut self,
        first: Out<E>,
        handler: &mut H,
    ) -> Result<(), Stop> {
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(out) = next.take() {
            match out {
                Out::Text(text) => self.feed(Message::Text(text)).await?,
                // Events change the socket's state; they come in queue order.
                Out::Event(event) => Box::pin(handler.on_event(self, event)).await?,
            }
            taken += 1;
            if taken < WRITE_BATCH {
                next = self.queue.try_recv();
            }
        }
        Ok(())
    }

    async fn on_incoming<H: Handler<Event = E>>(
        &mut self,
        incoming: Option<Result<Message, tungstenite::Error>>,
        handler: &mut H,
    ) -> Result<(), Stop> {
        // Ordered closed while this frame waited: it has no effect.
        if self.peer.is_close_ordered() {
            return Err(self.take_close_order());
        }
        let msg = match incoming {
            None => return Err(Stop::Gone),
            Some(Ok(msg)) => msg,
            Some(Err(e)) => return Err(read_failed(&e)),
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
                match parse_frame(text.as_str(), self.role, handler.stage()) {
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
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(()),
            // tungstenite queued the close reply: it goes out once the
            // socket has left every registry (see `run`).
            Message::Close(_) => Err(Stop::Gone),
        }
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
        self.reply(&ServerFrame::Error { id, code, message })
            .await?;
        // Counted once written: a socket ordered closed replies nothing.
        self.gw.metrics.error(code);
        if code == ErrorCode::RateLimited && self.limits.note_rate_limited(now) {
            return Err(Stop::close(CloseCode::RateLimited, None));
        }
        Ok(())
    }

    /// Sends an error and then closes: for invalid tokens and ended sessions.
    pub fn refuse(&self, id: Option<&str>, code: ErrorCode, close: CloseCode) -> Stop {
        self.gw.metrics.error(code);
        let message = code.describe();
        let frame = ServerFrame::Error { id, code, message }.to_utf8_bytes();
        Stop::close(close, Some(frame))
    }

    // ---- closing ----------------------------------------------------------

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

    /// A live socket no longer needs its User-Agent (the session keeps its own copy).
    pub fn forget_user_agent(&mut self) {
        self.client.user_agent = String::new();
    }

    pub fn record_account(&self, account: &str) {
        tracing::Span::current().record("account", account);
    }

    pub fn record_session(&self, session_id: &str) {
        tracing::Span::current().record("session", session_id);
    }
}

/// How a socket whose read failed ends. A client that broke the framing rules
/// is told why before it is dropped (RFC 6455 section 7.1.7: fail the
/// connection with a close frame): 1009 for a frame or message larger than
/// `max_frame_bytes` (a 2^63 length too), 1007 for text or a close reason that
/// is not UTF-8, 1002 for any other violation. tungstenite stops reading after
/// the error but can still write, so the close goes out the usual way, with
/// the usual bounds (`close_patiently`). A connection that failed or ended
/// has nobody to tell.
fn read_failed(e: &tungstenite::Error) -> Stop {
    use tungstenite::error::ProtocolError as P;
    let code = match e {
        tungstenite::Error::Capacity(_) => Some(CloseCode::TooLarge),
        tungstenite::Error::Utf8(_) => Some(CloseCode::InvalidData),
        tungstenite::Error::Protocol(
            P::ResetWithoutClosingHandshake | P::ReceivedAfterClosing | P::SendAfterClosing,
        ) => None,
        tungstenite::Error::Protocol(_) => Some(CloseCode::ProtocolError),
        _ => None,
    };
    match code {
        Some(code) => {
            tracing::debug!(error = %e, code = code.code(), "client broke the WebSocket framing");
            Stop::close(code, None)
        }
        None => {
            tracing::debug!(error = %e, "socket read failed");
            Stop::Gone
        }
    }
}
