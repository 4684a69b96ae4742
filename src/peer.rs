//! The handle other tasks hold to a socket: a bounded outbound queue plus a
//! close order. Only the socket's own task touches the socket; everybody else
//! `try_send`s through a `Peer` and never waits on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::pairing::LinkedWeb;
use crate::protocol::CloseCode;

/// How many frames may wait in one socket's queue (bytes are bounded separately).
const QUEUE_FRAMES: usize = 4096;

/// Something for a socket's task to write or act on, in queue order.
#[derive(Debug)]
pub enum Out {
    /// A serialized frame, shared between every receiver of a fan-out.
    Text(Utf8Bytes),
    /// For a web socket that is pairing: what the phone did.
    Pairing(PairingEvent),
}

#[derive(Debug)]
pub enum PairingEvent {
    /// The phone submitted this socket's ref: pause rotation.
    Scanned,
    /// The phone rejected (or let expire) the link request: start over.
    Rejected,
    /// The link is durable: the socket is now this live session.
    Linked(Box<LinkedWeb>),
}

/// Why and how a socket is to be closed, set once by whoever orders it first.
#[derive(Debug)]
pub struct CloseOrder {
    pub code: CloseCode,
    /// A frame to send just before the close frame (`logged_out`).
    pub farewell: Option<Utf8Bytes>,
}

struct Inner {
    conn_id: u64,
    tx: mpsc::Sender<Out>,
    queued_bytes: AtomicUsize,
    max_queue_bytes: usize,
    order: Mutex<(Option<CloseOrder>, Vec<oneshot::Sender<()>>)>,
    notify: Notify,
}

/// Cheap to clone; identifies one socket by `conn_id`.
#[derive(Clone)]
pub struct Peer(Arc<Inner>);

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Peer({})", self.0.conn_id)
    }
}

/// The receiving side, owned by the socket's task.
pub struct PeerQueue {
    rx: mpsc::Receiver<Out>,
    peer: Peer,
}

impl Peer {
    pub fn new(conn_id: u64, max_queue_bytes: usize) -> (Peer, PeerQueue) {
        let (tx, rx) = mpsc::channel(QUEUE_FRAMES);
        let peer = Peer(Arc::new(Inner {
            conn_id,
            tx,
            queued_bytes: AtomicUsize::new(0),
            max_queue_bytes,
            order: Mutex::new((None, Vec::new())),
            notify: Notify::new(),
        }));
        (peer.clone(), PeerQueue { rx, peer })
    }

    pub fn conn_id(&self) -> u64 {
        self.0.conn_id
    }

    /// Queues a frame. `false` if the socket is gone or could not take it; in
    /// the latter case it is ordered closed with 4030.
    pub fn send(&self, text: &Utf8Bytes) -> bool {
        let len = text.len();
        let before = self.0.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if before + len > self.0.max_queue_bytes {
            self.0.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            self.order_close(CloseCode::TooSlow);
            return false;
        }
        self.push(Out::Text(text.clone()), len)
    }

    /// Queues a pairing event (tiny; counted as frames, not bytes).
    pub fn send_pairing(&self, event: PairingEvent) -> bool {
        self.push(Out::Pairing(event), 0)
    }

    fn push(&self, out: Out, len: usize) -> bool {
        match self.0.tx.try_send(out) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.0.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                self.order_close(CloseCode::TooSlow);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.0.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                false
            }
        }
    }

    /// Orders the socket closed (the first order wins) and returns a receiver
    /// that resolves (with a value or a closed-channel error, both mean done)
    /// once the socket was sent its farewell and close frame, or was dropped.
    /// A socket with somebody waiting is dropped rather than waited for.
    pub fn close(&self, code: CloseCode, farewell: Option<Utf8Bytes>) -> oneshot::Receiver<()> {
        let (done, wait) = oneshot::channel();
        self.place_order(code, farewell, Some(done));
        wait
    }

    /// Orders the socket closed without waiting for it: a slow client gets a
    /// little time to take its close frame.
    pub fn order_close(&self, code: CloseCode) {
        self.place_order(code, None, None);
    }

    fn place_order(
        &self,
        code: CloseCode,
        farewell: Option<Utf8Bytes>,
        done: Option<oneshot::Sender<()>>,
    ) {
        {
            let mut order = self.0.order.lock();
            // Checked under the lock that `shut` drains under, so no waiter is
            // left behind by a task that already ended (dropping `done` here
            // tells its waiter the socket is gone).
            if !self.0.tx.is_closed() {
                if order.0.is_none() {
                    order.0 = Some(CloseOrder { code, farewell });
                }
                order.1.extend(done);
            }
        }
        self.0.notify.notify_one();
    }

    /// Resolves once somebody waits for this socket to close.
    pub async fn close_awaited(&self) {
        loop {
            if self.0.order.lock().1.iter().any(|w| !w.is_closed()) {
                return;
            }
            self.0.notify.notified().await;
        }
    }

    /// Resolves once a close order is waiting.
    pub async fn close_ordered(&self) {
        loop {
            if self.0.order.lock().0.is_some() {
                return;
            }
            self.0.notify.notified().await;
        }
    }

    /// Takes the close order, if any, and the waiters to signal once done.
    pub fn take_order(&self) -> (Option<CloseOrder>, Vec<oneshot::Sender<()>>) {
        let mut order = self.0.order.lock();
        (order.0.take(), std::mem::take(&mut order.1))
    }
}

impl PeerQueue {
    pub async fn recv(&mut self) -> Option<Out> {
        let out = self.rx.recv().await?;
        self.account(&out);
        Some(out)
    }

    pub fn try_recv(&mut self) -> Option<Out> {
        let out = self.rx.try_recv().ok()?;
        self.account(&out);
        Some(out)
    }

    fn account(&self, out: &Out) {
        if let Out::Text(t) = out {
            self.peer
                .0
                .queued_bytes
                .fetch_sub(t.len(), Ordering::AcqRel);
        }
    }

    /// Stops taking frames: later `send`s fail and later close orders resolve at once.
    pub fn shut(&mut self) {
        self.rx.close();
        let waiters = std::mem::take(&mut self.peer.0.order.lock().1);
        drop(waiters);
    }
}
