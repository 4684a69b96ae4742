//! The handle other tasks hold to a socket: a bounded outbound queue plus a
//! close order. Only the socket's own task touches the socket; everybody else
//! queues through a `Peer` without waiting.
//!
//! A socket's mailbox knows no domain: `Peer<E>` carries serialized frames and
//! events of whatever type `E` the socket's role takes (a web socket takes
//! pairing events; a phone socket takes none).
//!
//! The queue is a `VecDeque` behind a short lock rather than a channel: an idle
//! socket's queue holds no allocation at all (a channel keeps its first block
//! of slots), and one `Notify` wakes the socket's task for both queued frames
//! and close orders. The task is the only one that waits on it, and it always
//! looks at the state before waiting, so a wake-up is never lost.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};
use tungstenite::Utf8Bytes;

use crate::protocol::CloseCode;

/// How many frames may wait in one socket's queue (bytes are bounded separately).
const QUEUE_FRAMES: usize = 4096;
/// A drained queue keeps at most this many slots allocated.
const IDLE_SLOTS: usize = 8;

/// Whether a frame sent to a socket on another node got there: `true` once
/// the bus handed it to that node (cluster mode, `Cluster::post_receipted`).
pub type Receipt = oneshot::Receiver<bool>;

/// Something for a socket's task to write or act on, in queue order.
#[derive(Debug)]
pub enum Out<E> {
    /// A serialized frame, shared between every receiver of a fan-out.
    Text(Utf8Bytes),
    /// An event for the socket's role to act on (it may change its state).
    Event(E),
}

/// Why and how a socket is to be closed, set once by whoever orders it first.
#[derive(Debug)]
pub struct CloseOrder {
    pub code: CloseCode,
    /// A frame to send just before the close frame (`logged_out`).
    pub farewell: Option<Utf8Bytes>,
}

struct State<E> {
    queue: VecDeque<Out<E>>,
    /// Bytes queued plus the bytes of the frame the socket's task is writing:
    /// what this socket holds in user space, bounded by `max_queue_bytes`.
    queued_bytes: usize,
    /// The socket's task has ended: nothing more is taken.
    shut: bool,
    order: Option<CloseOrder>,
    /// Who waits for the close order to be carried out.
    waiters: Vec<oneshot::Sender<()>>,
}

struct Inner<E> {
    conn_id: u64,
    max_queue_bytes: usize,
    state: Mutex<State<E>>,
    notify: Notify,
    /// Mirrors `state.order.is_some()` once set (it is never unset while the
    /// task runs): the socket's task checks it before every frame it handles
    /// or writes, without taking the lock.
    ordered: AtomicBool,
}

/// Cheap to clone; identifies one socket by `conn_id`. `E` is the type of
/// event the socket takes besides frames.
///
/// In cluster mode a socket held by another node is reached through a
/// [`RemoteSocket`]: the account's rules treat it like any other socket, and
/// what is queued for it travels over the cluster's bus instead.
pub struct Peer<E>(Kind<E>);

enum Kind<E> {
    Local(Arc<Inner<E>>),
    /// Boxed inside the `Arc` so both variants are one thin pointer: a
    /// `Peer` stays 16 bytes, and every socket's handles stay small.
    Remote(Arc<Box<dyn RemoteSocket<E>>>),
}

/// A socket on another node, as the node deciding for its account sees it.
/// Sends never wait: they are queued for the bus, bounded there.
pub trait RemoteSocket<E>: Send + Sync {
    fn conn_id(&self) -> u64;
    /// The node holding the socket (its bus name).
    fn node(&self) -> &str;
    fn send(&self, text: &Utf8Bytes) -> bool;
    /// Sends with a receipt that says whether the frame reached the
    /// socket's node (`None`: not sent).
    fn send_receipted(&self, text: &Utf8Bytes) -> Option<Receipt>;
    fn send_event(&self, event: E) -> bool;
    /// Orders the socket closed; `done` is released once its node confirms
    /// (or is gone).
    fn place_order(
        &self,
        code: CloseCode,
        farewell: Option<Utf8Bytes>,
        done: Option<oneshot::Sender<()>>,
    );
    fn is_close_ordered(&self) -> bool;
    /// Whether the socket's node can be reached now (the bus is up).
    fn reachable(&self) -> bool;
}

impl<E> Clone for Peer<E> {
    fn clone(&self) -> Self {
        Peer(match &self.0 {
            Kind::Local(inner) => Kind::Local(inner.clone()),
            Kind::Remote(remote) => Kind::Remote(remote.clone()),
        })
    }
}

impl<E> std::fmt::Debug for Peer<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Kind::Local(inner) => write!(f, "Peer({})", inner.conn_id),
            Kind::Remote(r) => write!(f, "Peer({}@{})", r.conn_id(), r.node()),
        }
    }
}

/// The receiving side, owned by the socket's task.
pub struct PeerQueue<E> {
    peer: Arc<Inner<E>>,
    /// Bytes of the last frame taken: they still count against the bound
    /// until the task comes back for the next item (by then it has handed the
    /// frame to the socket's write buffer).
    in_hand: usize,
}

/// What woke the socket's task.
pub enum Wake<E> {
    /// A close order is waiting: carry it out before anything else.
    CloseOrdered,
    Out(Out<E>),
}

impl<E> Peer<E> {
    pub fn new(conn_id: u64, max_queue_bytes: usize) -> (Peer<E>, PeerQueue<E>) {
        let inner = Arc::new(Inner {
            conn_id,
            max_queue_bytes,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                queued_bytes: 0,
                shut: false,
                order: None,
                waiters: Vec::new(),
            }),
            notify: Notify::new(),
            ordered: AtomicBool::new(false),
        });
        (
            Peer(Kind::Local(inner.clone())),
            PeerQueue {
                peer: inner,
                in_hand: 0,
            },
        )
    }

    /// A handle to a socket held by another node.
    pub fn remote(socket: Box<dyn RemoteSocket<E>>) -> Peer<E> {
        Peer(Kind::Remote(Arc::new(socket)))
    }

    pub fn conn_id(&self) -> u64 {
        match &self.0 {
            Kind::Local(inner) => inner.conn_id,
            Kind::Remote(r) => r.conn_id(),
        }
    }

    /// The node holding the socket (its bus name), when it is another node.
    pub fn remote_node(&self) -> Option<&str> {
        match &self.0 {
            Kind::Local(_) => None,
            Kind::Remote(r) => Some(r.node()),
        }
    }

    /// Whether a send can reach the socket now: always for a local one; for
    /// one on another node, while the bus is up. A send that cannot is
    /// answered `unavailable`, never counted as delivered nor as offline.
    pub fn reachable(&self) -> bool {
        match &self.0 {
            Kind::Local(_) => true,
            Kind::Remote(r) => r.reachable(),
        }
    }

    /// Whether both handles are the same socket handle.
    pub fn same(&self, other: &Peer<E>) -> bool {
        match (&self.0, &other.0) {
            (Kind::Local(a), Kind::Local(b)) => Arc::ptr_eq(a, b),
            (Kind::Remote(a), Kind::Remote(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Queues a frame. `false` if the socket is gone or could not take it; in
    /// the latter case it is ordered closed with 4030.
    pub fn send(&self, text: &Utf8Bytes) -> bool {
        match &self.0 {
            Kind::Local(inner) => inner.push(Out::Text(text.clone()), text.len()),
            Kind::Remote(r) => r.send(text),
        }
    }

    /// Like `send`, for a frame whose delivery a sender's `ack` counts: `1`
    /// if this node's socket took it. A socket on another node counts only
    /// once the bus has handed the frame over: its receipt is added to
    /// `receipts` and `0` returned for now (also when it cannot be sent).
    pub fn send_counted(&self, text: &Utf8Bytes, receipts: &mut Vec<Receipt>) -> usize {
        match &self.0 {
            Kind::Local(_) => usize::from(self.send(text)),
            Kind::Remote(r) => {
                receipts.extend(r.send_receipted(text));
                0
            }
        }
    }

    /// Queues an event (tiny; counted as a frame, not in bytes).
    pub fn send_event(&self, event: E) -> bool {
        match &self.0 {
            Kind::Local(inner) => inner.push(Out::Event(event), 0),
            Kind::Remote(r) => r.send_event(event),
        }
    }
}

impl<E> Inner<E> {
    fn push(&self, out: Out<E>, len: usize) -> bool {
        let this = self;
        let mut state = this.state.lock();
        if state.shut || state.order.is_some() {
            return false;
        }
        if state.queued_bytes + len > this.max_queue_bytes || state.queue.len() >= QUEUE_FRAMES {
            state.order = Some(CloseOrder {
                code: CloseCode::TooSlow,
                farewell: None,
            });
            this.ordered.store(true, Ordering::Release);
            drop(state);
            this.notify.notify_one();
            return false;
        }
        let was_empty = state.queue.is_empty();
        state.queue.push_back(out);
        state.queued_bytes += len;
        drop(state);
        // The task drains the whole queue per wake-up: only the first frame
        // after it went empty needs to wake it.
        if was_empty {
            this.notify.notify_one();
        }
        true
    }
}

impl<E> Peer<E> {
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
        let inner = match &self.0 {
            Kind::Local(inner) => inner,
            Kind::Remote(r) => return r.place_order(code, farewell, done),
        };
        {
            let mut state = inner.state.lock();
            // A socket whose task ended drops `done` here: already torn down.
            if state.shut {
                return;
            }
            if state.order.is_none() {
                state.order = Some(CloseOrder { code, farewell });
                inner.ordered.store(true, Ordering::Release);
            }
            state.waiters.extend(done);
        }
        inner.notify.notify_one();
    }

    /// Whether the socket was ordered closed: from then on, nothing it
    /// receives may have any effect.
    pub fn is_close_ordered(&self) -> bool {
        match &self.0 {
            Kind::Local(inner) => inner.ordered.load(Ordering::Acquire),
            Kind::Remote(r) => r.is_close_ordered(),
        }
    }

    /// Resolves once a close order is waiting (for the socket's own task,
    /// which is always local).
    pub async fn close_ordered(&self) {
        let Kind::Local(inner) = &self.0 else {
            return std::future::pending().await;
        };
        loop {
            if inner.ordered.load(Ordering::Acquire) {
                return;
            }
            inner.notify.notified().await;
        }
    }

    /// Takes the close order, if any, and the waiters to release once done
    /// (for the socket's own task).
    pub fn take_order(&self) -> (Option<CloseOrder>, Vec<oneshot::Sender<()>>) {
        let Kind::Local(inner) = &self.0 else {
            return (None, Vec::new());
        };
        let mut state = inner.state.lock();
        let order = state.order.take();
        (order, std::mem::take(&mut state.waiters))
    }
}

impl<E> PeerQueue<E> {
    /// The next thing to do: a close order first, else the next queued item.
    pub async fn next(&mut self) -> Wake<E> {
        loop {
            if let Some(wake) = self.poll_state() {
                return wake;
            }
            self.peer.notify.notified().await;
        }
    }

    /// The next queued item if one is waiting (a close order stops the drain).
    pub fn try_recv(&mut self) -> Option<Out<E>> {
        match self.poll_state()? {
            Wake::Out(out) => Some(out),
            Wake::CloseOrdered => None,
        }
    }

    fn poll_state(&mut self) -> Option<Wake<E>> {
        let mut state = self.peer.state.lock();
        if state.order.is_some() {
            return Some(Wake::CloseOrdered);
        }
        // The frame taken last time has been written by now.
        state.queued_bytes -= std::mem::take(&mut self.in_hand);
        let out = state.queue.pop_front()?;
        if let Out::Text(t) = &out {
            self.in_hand = t.len();
        }
        if state.queue.is_empty() && state.queue.capacity() > IDLE_SLOTS {
            state.queue.shrink_to(IDLE_SLOTS);
        }
        Some(Wake::Out(out))
    }

    /// Stops taking frames: later sends fail, and waiters of close orders
    /// not taken (and of later ones) are released. Returns the frames still queued, for a
    /// close that writes them before its close frame.
    pub fn shut(&mut self) -> Vec<Utf8Bytes> {
        let (queue, waiters) = {
            let mut state = self.peer.state.lock();
            state.shut = true;
            state.queued_bytes = 0;
            self.in_hand = 0;
            (
                std::mem::take(&mut state.queue),
                std::mem::take(&mut state.waiters),
            )
        };
        drop(waiters);
        queue
            .into_iter()
            .filter_map(|out| match out {
                Out::Text(text) => Some(text),
                // Events mean nothing to a socket that is closing.
                Out::Event(_) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests' sockets take no events.
    type Peer = super::Peer<std::convert::Infallible>;

    fn text(n: usize) -> Utf8Bytes {
        Utf8Bytes::from("x".repeat(n))
    }

    /// A frame the task has taken still counts against the bound until the
    /// task comes back for the next one: queue plus frame in hand never pass
    /// `max_queue_bytes`.
    #[test]
    fn the_frame_in_hand_counts_until_the_next_is_taken() {
        let (peer, mut queue) = Peer::new(1, 100);
        assert!(peer.send(&text(60)));
        assert!(matches!(queue.try_recv(), Some(Out::Text(_))));
        // 60 in hand: 40 more fit, 41 do not.
        assert!(peer.send(&text(40)));
        assert!(queue.try_recv().is_some());
        assert!(!peer.send(&text(61)));
        assert!(peer.is_close_ordered());
    }

    /// The queue is bounded in frames as well as bytes: tiny frames overflow
    /// it (4030) at `QUEUE_FRAMES`.
    #[test]
    fn the_queue_is_bounded_in_frames_too() {
        let (peer, _queue) = Peer::new(1, 1 << 30);
        for _ in 0..QUEUE_FRAMES {
            assert!(peer.send(&text(1)));
        }
        assert!(!peer.send(&text(1)));
        assert_eq!(
            peer.take_order().0.map(|o| o.code),
            Some(CloseCode::TooSlow)
        );
    }

    /// An overflow orders the socket closed 4030; later frames are refused,
    /// and what was queued before is handed back for the close to write.
    #[test]
    fn an_overflow_orders_4030_and_keeps_what_was_counted() {
        let (peer, mut queue) = Peer::new(1, 100);
        assert!(peer.send(&text(50)));
        assert!(peer.send(&text(50)));
        assert!(!peer.send(&text(1)));
        assert!(!peer.send(&text(1)));
        let (order, _) = peer.take_order();
        assert_eq!(order.map(|o| o.code), Some(CloseCode::TooSlow));
        let queued = queue.shut();
        assert_eq!(queued.len(), 2);
        assert!(!peer.send(&text(1)));
    }

    /// A close order beats frames already queued, and its waiters are
    /// released when the queue is shut without carrying it out.
    #[tokio::test]
    async fn a_close_order_beats_queued_frames_and_waiters_are_released() {
        let (peer, mut queue) = Peer::new(1, 1 << 20);
        assert!(peer.send(&text(10)));
        let done = peer.close(CloseCode::LoggedOut, None);
        assert!(matches!(queue.next().await, Wake::CloseOrdered));
        assert!(queue.try_recv().is_none());
        queue.shut();
        // Released (a closed channel also means done).
        let _ = done.await;
    }
}
