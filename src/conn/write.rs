//! The socket's write path: feeding frames into tungstenite's write buffer,
//! long messages as fragments, flushing, and the close.
//!
//! Two rules live here:
//! - **Bounded.** tungstenite's write buffer never holds more than
//!   `WRITE_BUFFER_BYTES` plus one frame of at most `FRAGMENT_BYTES`: text
//!   longer than that goes out as fragments, and a socket that pushes back is
//!   waited for before anything else is fed. Its hard limit
//!   (`max_write_buffer_size`) is set just above that, as a tripwire.
//! - **No data frame inside a fragmented message** (RFC 6455 section 5.4). A
//!   long message being written is kept in `Conn::unfinished`, so a close that
//!   interrupts it (a close order wins every wait) first writes the rest of
//!   it, then its farewell and close frame.
//!
//! After a close order, the socket writes nothing but what its close sends.

use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, Sink, SinkExt};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tungstenite::{Message, Utf8Bytes};

use crate::protocol::{CloseCode, ServerFrame};

use super::{Conn, Stop, WebSocket};

/// Per-socket read buffer: small, because most sockets sit idle (tungstenite
/// zero-fills all of it, so all of it is resident).
const READ_BUFFER_BYTES: usize = 512;
/// Bytes gathered before tungstenite writes to the socket mid-batch; the write
/// buffer keeps the largest size it reached, so this also bounds its memory.
const WRITE_BUFFER_BYTES: usize = 4096;
/// Text frames longer than this are sent in fragments of this size, each
/// flushed on its own, so the socket's write buffer never grows past
/// `WRITE_BUFFER_BYTES` plus one fragment.
pub(super) const FRAGMENT_BYTES: usize = 512;
/// tungstenite refuses to buffer past this (its default is unbounded). The
/// write path never gets there; if it ever did, the socket fails instead of
/// growing.
const MAX_WRITE_BUFFER_BYTES: usize = WRITE_BUFFER_BYTES + 4 * FRAGMENT_BYTES;

/// How long a socket being closed waits for a slow client to take what was
/// queued for it and its close frame.
const CLOSE_PATIENCE: Duration = Duration::from_secs(2);

/// tungstenite's settings for every accepted socket.
pub fn websocket_config(max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(MAX_WRITE_BUFFER_BYTES)
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
}

/// A long text message being written fragment by fragment.
pub(super) struct Unfinished {
    bytes: Bytes,
    /// Bytes already fed as fragments.
    sent: usize,
}

impl<E> Conn<E> {
    /// Puts `frame` into the socket's write buffer (tungstenite passes it to
    /// the kernel whenever it holds `WRITE_BUFFER_BYTES`); the loop flushes the
    /// rest once nothing else is ready, so a burst of replies and relayed
    /// frames costs one system call.
    ///
    /// The common case (the socket takes the frame at once) has no await in
    /// it, so this adds nothing to the size of every socket's task; a socket
    /// that pushes back, and a long frame, take the boxed slow path.
    pub(super) async fn feed(&mut self, frame: Message) -> Result<(), Stop> {
        // Ordered closed: nothing more goes out but the close.
        if self.peer.is_close_ordered() {
            return Err(self.take_close_order());
        }
        match frame {
            Message::Text(text) if text.len() > FRAGMENT_BYTES => {
                self.unfinished = Some(Unfinished {
                    bytes: text.into(),
                    sent: 0,
                });
                Box::pin(self.finish_message_unless_ordered()).await?;
            }
            frame => {
                if let Some(frame) = try_feed(&mut self.ws, frame).map_err(write_failed)? {
                    Box::pin(self.feed_unless_ordered(frame)).await?;
                }
            }
        }
        self.unflushed = true;
        Ok(())
    }

    /// Feeds a frame the socket may have to wait for; a close order cuts the
    /// wait short (a client that does not read must not hold up its teardown).
    async fn feed_unless_ordered(&mut self, frame: Message) -> Result<(), Stop> {
        let Conn { ws, peer, .. } = self;
        let fed = tokio::select! {
            biased;
            fed = ws.feed(frame) => Some(fed),
            _ = peer.close_ordered() => None,
        };
        match fed {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(write_failed(e)),
            None => Err(self.take_close_order()),
        }
    }

    /// Writes the fragments of `self.unfinished`; a close order cuts the wait
    /// short, and the close then writes the rest.
    async fn finish_message_unless_ordered(&mut self) -> Result<(), Stop> {
        let Conn {
            ws,
            peer,
            unfinished,
            ..
        } = self;
        let written = tokio::select! {
            biased;
            written = finish_message(ws, unfinished) => Some(written),
            _ = peer.close_ordered() => None,
        };
        match written {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(write_failed(e)),
            None => Err(self.take_close_order()),
        }
    }

    /// Sends what the write buffer holds, unless a close order arrives first.
    pub(super) async fn flush(&mut self) -> Result<(), Stop> {
        let Conn { ws, peer, .. } = self;
        let flushed = tokio::select! {
            biased;
            flushed = ws.flush() => Some(flushed),
            _ = peer.close_ordered() => None,
        };
        match flushed {
            Some(Ok(())) => {
                self.unflushed = false;
                Ok(())
            }
            Some(Err(e)) => Err(write_failed(e)),
            None => Err(self.take_close_order()),
        }
    }

    /// Sends one frame to this socket.
    pub async fn reply(&mut self, frame: &ServerFrame<'_>) -> Result<(), Stop> {
        self.write_text(frame.to_text()).await
    }

    /// Sends one already-serialized frame.
    pub async fn write_text(&mut self, text: String) -> Result<(), Stop> {
        self.feed(Message::Text(Utf8Bytes::from(text))).await
    }

    /// Sends already-serialized frames, in order.
    pub async fn write_texts<const N: usize>(&mut self, texts: [String; N]) -> Result<(), Stop> {
        for text in texts {
            self.write_text(text).await?;
        }
        Ok(())
    }

    /// Writes the rest of an interrupted message, `queued` frames, `farewell`
    /// (if any) and the close frame, all at once or not at all: for a close
    /// that somebody waits for, which must not wait on a slow client.
    pub(super) fn close_now(
        &mut self,
        code: CloseCode,
        farewell: Option<Utf8Bytes>,
    ) -> Option<Result<(), tungstenite::Error>> {
        send_close(
            &mut self.ws,
            &mut self.unfinished,
            Vec::new(),
            code,
            farewell,
        )
        .now_or_never()
    }

    /// Like `close_now`, but first writes what was still queued (it was
    /// counted as delivered), giving a slow client up to `CLOSE_PATIENCE`
    /// (shutdown cuts it short, except for its own 1012).
    pub(super) async fn close_patiently(
        &mut self,
        queued: Vec<Utf8Bytes>,
        code: CloseCode,
        farewell: Option<Utf8Bytes>,
    ) -> Option<Result<(), tungstenite::Error>> {
        let Conn {
            ws, gw, unfinished, ..
        } = self;
        tokio::select! {
            biased;
            sent = send_close(ws, unfinished, queued, code, farewell) => Some(sent),
            _ = gw.shutdown.cancelled(), if code != CloseCode::Restarting => None,
            _ = tokio::time::sleep(CLOSE_PATIENCE) => None,
        }
    }
}

/// Feeds `frame` if the socket can take it right now; gives it back if not.
fn try_feed(ws: &mut WebSocket, frame: Message) -> Result<Option<Message>, tungstenite::Error> {
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(&mut *ws).poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => Pin::new(ws).start_send(frame).map(|()| None),
        Poll::Ready(Err(e)) => Err(e),
        Poll::Pending => Ok(Some(frame)),
    }
}

fn write_failed(e: tungstenite::Error) -> Stop {
    tracing::debug!(error = %e, "socket write failed");
    Stop::Gone
}

/// Feeds the rest of `unfinished` as fragments, flushing each. Progress is
/// kept in `unfinished` after every fragment fed, so a wait cancelled here
/// can be resumed (by the close) without sending a byte twice.
async fn finish_message(
    ws: &mut WebSocket,
    unfinished: &mut Option<Unfinished>,
) -> Result<(), tungstenite::Error> {
    while let Some(message) = unfinished.as_ref() {
        let start = message.sent;
        let end = (start + FRAGMENT_BYTES).min(message.bytes.len());
        let last = end == message.bytes.len();
        let opcode = OpCode::Data(if start == 0 {
            Data::Text
        } else {
            Data::Continue
        });
        let fragment = Frame::message(message.bytes.slice(start..end), opcode, last);
        ws.feed(Message::Frame(fragment)).await?;
        // In the write buffer now.
        match unfinished {
            Some(message) if !last => message.sent = end,
            _ => *unfinished = None,
        }
        ws.flush().await?;
    }
    Ok(())
}

/// Finishes an interrupted message, writes `queued` and `farewell`, then the
/// close frame, and flushes.
async fn send_close(
    ws: &mut WebSocket,
    unfinished: &mut Option<Unfinished>,
    queued: Vec<Utf8Bytes>,
    code: CloseCode,
    farewell: Option<Utf8Bytes>,
) -> Result<(), tungstenite::Error> {
    finish_message(ws, unfinished).await?;
    for text in queued.into_iter().chain(farewell) {
        if text.len() > FRAGMENT_BYTES {
            *unfinished = Some(Unfinished {
                bytes: text.into(),
                sent: 0,
            });
            finish_message(ws, unfinished).await?;
        } else {
            ws.feed(Message::Text(text)).await?;
        }
    }
    let close = Message::Close(Some(CloseFrame {
        code: code.code().into(),
        reason: Utf8Bytes::from_static(code.reason()),
    }));
    ws.feed(close).await?;
    ws.flush().await
}
