//! Test helpers shared by the account domain's unit tests: gateways on disks
//! that fail or hold their commits, a phone online, a pairing web socket.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::pairing::{Attempt, PairingEvent};
use super::presence::WebPeer;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::peer::{Out, Peer, PeerQueue};
use crate::protocol::{ErrorCode, SessionInfo};
use crate::store::{Backend, Store, StoreOp, StoredSession};
use crate::tokens::Tokens;

/// A disk that refuses every write.
pub struct FailingDisk;

impl Backend for FailingDisk {
    fn load(&mut self) -> anyhow::Result<Vec<StoredSession>> {
        Ok(Vec::new())
    }
    fn commit(&mut self, _ops: &[StoreOp]) -> anyhow::Result<()> {
        anyhow::bail!("disk full")
    }
}

/// A disk that holds one session and refuses every write.
pub struct OneSessionFailingDisk;

impl Backend for OneSessionFailingDisk {
    fn load(&mut self) -> anyhow::Result<Vec<StoredSession>> {
        Ok(vec![StoredSession {
            account: "alice".into(),
            session_id: "s1".into(),
            device_name: "curl".into(),
            user_agent: "curl/8".into(),
            ip: "127.0.0.1".into(),
            created_at_ms: 0,
            last_active_at_ms: 0,
            remember: true,
        }])
    }
    fn commit(&mut self, _ops: &[StoreOp]) -> anyhow::Result<()> {
        anyhow::bail!("disk full")
    }
}

/// A disk that commits only when the test lets it, one permit per batch,
/// and remembers what it committed.
pub struct HeldDisk {
    permits: std::sync::mpsc::Receiver<()>,
    committed: Arc<parking_lot::Mutex<Vec<StoreOp>>>,
}

impl Backend for HeldDisk {
    fn load(&mut self) -> anyhow::Result<Vec<StoredSession>> {
        Ok(Vec::new())
    }
    fn commit(&mut self, ops: &[StoreOp]) -> anyhow::Result<()> {
        self.permits.recv()?;
        self.committed.lock().extend(ops.iter().cloned());
        Ok(())
    }
}

pub fn gateway_on(disk: impl Backend) -> Arc<Gateway> {
    gateway_on_with(disk, Config::default())
}

pub fn gateway_on_with(disk: impl Backend, config: Config) -> Arc<Gateway> {
    let metrics = Arc::new(Metrics::new());
    let (store, stored, _writer) = Store::start(disk, metrics.clone()).unwrap();
    let gw = Arc::new(Gateway::new(
        config,
        "http://127.0.0.1:8080".into(),
        Tokens::new("k"),
        store,
        metrics,
        CancellationToken::new(),
    ));
    gw.hub.restore(stored);
    gw
}

/// A held disk, its permits and what it committed.
pub fn held_gateway(
    config: Config,
) -> (
    Arc<Gateway>,
    std::sync::mpsc::Sender<()>,
    Arc<parking_lot::Mutex<Vec<StoreOp>>>,
) {
    let (permit, permits) = std::sync::mpsc::channel();
    let committed = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let gw = gateway_on_with(
        HeldDisk {
            permits,
            committed: committed.clone(),
        },
        config,
    );
    (gw, permit, committed)
}

/// The phone socket of the tests' account; its queue is kept so the
/// peer stays open.
pub const PHONE: u64 = 100;

pub fn phone_online(gw: &Arc<Gateway>) -> PeerQueue<std::convert::Infallible> {
    let (phone, queue) = Peer::new(PHONE, 1 << 20);
    gw.phone_online("alice", &phone);
    queue
}

/// A web socket's queue.
pub type WebQueue = PeerQueue<PairingEvent>;

/// A pairing web socket's peer and its attempt, with a ref issued.
pub fn pairing_web(gw: &Arc<Gateway>, conn_id: u64) -> (WebQueue, String) {
    let (web, queue): (WebPeer, _) = Peer::new(conn_id, 1 << 20);
    let attempt = Arc::new(Attempt::new(
        web,
        "curl/8".into(),
        "127.0.0.1".into(),
        "curl".into(),
        true,
    ));
    (queue, gw.pairing.issue(&attempt).reference)
}

/// The pairing web socket was told it was scanned, then to start over.
pub fn assert_scanned_then_rejected(queue: &mut WebQueue) {
    let events: Vec<Out<PairingEvent>> = std::iter::from_fn(|| queue.try_recv()).collect();
    assert!(
        matches!(
            events.as_slice(),
            [
                Out::Event(PairingEvent::Scanned { .. }),
                Out::Event(PairingEvent::Rejected)
            ]
        ),
        "{events:?}"
    );
}

/// Starts `link_confirm` of `request_id` and returns once its put is
/// queued (the link is being written).
pub async fn start_confirm(
    gw: &Arc<Gateway>,
    request_id: String,
) -> tokio::task::JoinHandle<Result<SessionInfo, ErrorCode>> {
    let confirming = tokio::spawn({
        let gw = gw.clone();
        async move { gw.link_confirm("alice", PHONE, &request_id).await }
    });
    while gw.hub.with("alice", |s| s.linking.is_empty()) {
        tokio::task::yield_now().await;
    }
    confirming
}
