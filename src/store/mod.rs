//! Durable session records behind one batching writer.
//!
//! Every change that the contract says must be durable before it is announced
//! (a link, a logout, a logout_all, a self-logout, an expiry) is queued with
//! [`Store::enqueue`] (under the account's lock, so one session's changes reach
//! the disk in the order they were decided) and its [`Durable`] awaited, which
//! resolves only once the change is on disk. Changes from many sockets are
//! gathered into one transaction per write, so a burst of links or logouts
//! costs one fsync, not one each.
//!
//! The writer runs on its own OS thread because the backends block.

mod redb;

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

pub use self::redb::RedbBackend;

/// One linked web session as it is kept on disk.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StoredSession {
    pub account: String,
    pub session_id: String,
    pub device_name: String,
    pub user_agent: String,
    pub ip: String,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// Unix milliseconds: the last time the session had a live socket.
    pub last_active_at_ms: i64,
    pub remember: bool,
}

/// One change to the stored sessions.
#[derive(Clone, Debug)]
pub enum StoreOp {
    Put(StoredSession),
    Delete { session_id: String },
}

/// What a storage engine must do; the writer thread owns it.
pub trait Backend: Send + 'static {
    /// Every stored session, read once at start-up.
    fn load(&mut self) -> anyhow::Result<Vec<StoredSession>>;
    /// Applies `ops` in order, atomically and durably.
    fn commit(&mut self, ops: &[StoreOp]) -> anyhow::Result<()>;
}

struct Batch {
    ops: Vec<StoreOp>,
    done: Option<oneshot::Sender<Result<(), String>>>,
    /// Set by `flush_and_stop`: the writer ends after this batch.
    stop: bool,
}

/// Handle to the writer; cloning is cheap.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Batch>,
}

/// Error of a commit that did not reach the disk.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store commit failed: {0}")]
    Commit(String),
    #[error("store writer has stopped")]
    Stopped,
    #[error("store queue is full")]
    Busy,
}

/// How many batches may wait for the writer; past that, a change is refused
/// at once (`StoreError::Busy`, answered `internal`), never waited for.
const QUEUE_DEPTH: usize = 8192;

impl Store {
    /// Starts the writer thread over `backend`, returning the handle, the
    /// sessions already stored, and the thread to join at shutdown.
    pub fn start<B: Backend>(
        mut backend: B,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<(Store, Vec<StoredSession>, std::thread::JoinHandle<()>)> {
        let loaded = backend.load()?;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let thread = std::thread::Builder::new()
            .name("pairgate-store".into())
            .spawn(move || write_loop(backend, rx, &metrics))?;
        Ok((Store { tx }, loaded, thread))
    }

    /// Queues `ops` and returns what to await for their durability. Never
    /// waits, so callers may queue while holding an account's lock: changes to
    /// one session reach the disk in the order they were decided.
    pub fn enqueue(&self, ops: Vec<StoreOp>) -> Result<Durable, StoreError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .try_send(Batch {
                ops,
                done: Some(done),
                stop: false,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => StoreError::Busy,
                mpsc::error::TrySendError::Closed(_) => StoreError::Stopped,
            })?;
        Ok(Durable(wait))
    }

    /// Queues `ops` without a waiter: for bookkeeping (last-active times) that
    /// nobody is told about.
    pub fn submit(&self, ops: Vec<StoreOp>) {
        let batch = Batch {
            ops,
            done: None,
            stop: false,
        };
        if let Err(e) = self.tx.try_send(batch) {
            tracing::warn!(error = %e, "store queue full; bookkeeping write dropped");
        }
    }

    /// Commits what is queued, then stops the writer thread.
    pub async fn flush_and_stop(&self) {
        let (done, wait) = oneshot::channel();
        let batch = Batch {
            ops: Vec::new(),
            done: Some(done),
            stop: true,
        };
        if self.tx.send(batch).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// Resolves once a queued change is durable.
pub struct Durable(oneshot::Receiver<Result<(), String>>);

impl Durable {
    pub async fn wait(self) -> Result<(), StoreError> {
        match self.0.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Commit(e)),
            Err(_) => Err(StoreError::Stopped),
        }
    }
}

/// Gathers every batch that is waiting into one transaction, commits, answers.
fn write_loop<B: Backend>(mut backend: B, mut rx: mpsc::Receiver<Batch>, metrics: &Metrics) {
    let mut ops = Vec::new();
    let mut waiters = Vec::new();
    let mut stop = false;
    while let Some(first) = rx.blocking_recv() {
        let mut take = |b: Batch| {
            ops.extend(b.ops);
            waiters.extend(b.done);
            stop |= b.stop;
        };
        take(first);
        while let Ok(more) = rx.try_recv() {
            take(more);
        }
        let started = Instant::now();
        let result = if ops.is_empty() {
            Ok(())
        } else {
            backend.commit(&ops).map_err(|e| format!("{e:#}"))
        };
        metrics
            .store_commit_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            tracing::error!(error = %e, ops = ops.len(), "store commit failed");
        }
        for w in waiters.drain(..) {
            let _ = w.send(result.clone());
        }
        ops.clear();
        if stop {
            break;
        }
    }
    tracing::debug!("store writer stopped");
}
