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
mod redis;

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

pub use self::redb::RedbBackend;
pub use self::redis::RedisBackend;

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
    Delete { account: String, session_id: String },
}

impl StoreOp {
    pub fn account(&self) -> &str {
        match self {
            StoreOp::Put(s) => &s.account,
            StoreOp::Delete { account, .. } => account,
        }
    }
}

/// What a storage engine must do; the writer thread owns it.
pub trait Backend: Send + 'static {
    /// Every stored session, read once at start-up (a backend whose
    /// sessions are loaded per account, as accounts are needed, returns none).
    fn load(&mut self) -> anyhow::Result<Vec<StoredSession>>;
    /// One account's stored sessions.
    fn load_account(&mut self, account: &str) -> anyhow::Result<Vec<StoredSession>> {
        let mut all = self.load()?;
        all.retain(|s| s.account == account);
        Ok(all)
    }
    /// Applies `ops` in order, atomically and durably.
    fn commit(&mut self, ops: &[StoreOp]) -> anyhow::Result<()>;
    /// Applies each batch (one account's changes, in order) and says how each
    /// went. By default all in one commit, which succeeds or fails as one.
    fn commit_each(&mut self, batches: &[&[StoreOp]]) -> Vec<Result<(), String>> {
        let all: Vec<StoreOp> = batches.iter().flat_map(|b| b.iter().cloned()).collect();
        let result = if all.is_empty() {
            Ok(())
        } else {
            self.commit(&all).map_err(|e| format!("{e:#}"))
        };
        vec![result; batches.len()]
    }
}

/// Work for the writer thread.
enum Job {
    Commit(Batch),
    /// Read one account's sessions, after every change queued before it.
    Load {
        account: String,
        reply: oneshot::Sender<Result<Vec<StoredSession>, String>>,
    },
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
    tx: mpsc::Sender<Job>,
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

impl StoreError {
    /// Whether the store could not be reached (cluster mode: Redis), as
    /// opposed to a failure of the change itself.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, StoreError::Commit(e) if e.starts_with(UNREACHABLE))
    }
}

/// How a backend's error text starts when the store could not be reached.
pub const UNREACHABLE: &str = "unreachable: ";

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
            .try_send(Job::Commit(Batch {
                ops,
                done: Some(done),
                stop: false,
            }))
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
        if let Err(e) = self.tx.try_send(Job::Commit(batch)) {
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
        if self.tx.send(Job::Commit(batch)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// One account's stored sessions, as of every change queued before.
    pub async fn load_account(&self, account: &str) -> Result<Vec<StoredSession>, StoreError> {
        let (reply, wait) = oneshot::channel();
        let job = Job::Load {
            account: account.to_owned(),
            reply,
        };
        self.tx.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StoreError::Busy,
            mpsc::error::TrySendError::Closed(_) => StoreError::Stopped,
        })?;
        match wait.await {
            Ok(Ok(sessions)) => Ok(sessions),
            Ok(Err(e)) => Err(StoreError::Commit(e)),
            Err(_) => Err(StoreError::Stopped),
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

/// Gathers every batch that is waiting into one write, commits, answers;
/// a load waits for the changes queued before it.
fn write_loop<B: Backend>(mut backend: B, mut rx: mpsc::Receiver<Job>, metrics: &Metrics) {
    let mut batches: Vec<Batch> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        let mut stop = false;
        while let Some(job) = next.take() {
            match job {
                Job::Commit(b) => {
                    stop |= b.stop;
                    batches.push(b);
                }
                Job::Load { account, reply } => {
                    commit(&mut backend, &mut batches, metrics);
                    let loaded = backend.load_account(&account).map_err(|e| format!("{e:#}"));
                    let _ = reply.send(loaded);
                }
            }
            if !stop {
                next = rx.try_recv().ok();
            }
        }
        commit(&mut backend, &mut batches, metrics);
        if stop {
            break;
        }
    }
    tracing::debug!("store writer stopped");
}

/// Commits the gathered batches and tells each waiter how its batch went.
fn commit<B: Backend>(backend: &mut B, batches: &mut Vec<Batch>, metrics: &Metrics) {
    if batches.is_empty() {
        return;
    }
    let started = Instant::now();
    let ops: Vec<&[StoreOp]> = batches
        .iter()
        .filter(|b| !b.ops.is_empty())
        .map(|b| b.ops.as_slice())
        .collect();
    let mut results = if ops.is_empty() {
        Vec::new()
    } else {
        backend.commit_each(&ops)
    }
    .into_iter();
    metrics
        .store_commit_seconds
        .observe(started.elapsed().as_secs_f64());
    for b in batches.drain(..) {
        let result = if b.ops.is_empty() {
            Ok(())
        } else {
            results
                .next()
                .unwrap_or_else(|| Err("backend gave no result".to_owned()))
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, ops = b.ops.len(), "store commit failed");
        }
        if let Some(w) = b.done {
            let _ = w.send(result);
        }
    }
}
