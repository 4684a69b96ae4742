//! The bus: how nodes talk. Each node listens on its own channel
//! (`pg:bus:{node}`); whatever is for a node is published there, so a message
//! costs one publish to the one node that needs it, never a broadcast.
//!
//! Messages queued for the same node are gathered into one packet per publish
//! (one JSON array), in the order they were queued; packets to one node are
//! published in order over one connection, and Redis delivers them in order on
//! the node's one subscription: per-pair order holds across nodes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tungstenite::Utf8Bytes;

use super::calls::{Call, Reply};
use super::redis_conn::RedisConn;
use super::remote::WireEvent;
use super::{CALL_TIMEOUT, Cluster, LocalSocket, Outgoing, keys};
use crate::gateway::Gateway;
use crate::peer::Receipt;
use crate::protocol::CloseCode;

/// One message between nodes.
// Externally tagged, like `Call`, which it carries.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Msg {
    /// A socket's request to its account's home.
    Call {
        id: u64,
        account: String,
        call: Call,
    },
    Reply {
        id: u64,
        reply: Reply,
    },
    /// A frame for a socket of the receiving node. `counted`: its sender
    /// counts it as delivered if the socket takes it, and waits to hear
    /// (the packet's `Taken`).
    Deliver {
        conn: u64,
        text: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        counted: bool,
    },
    /// What the phone did to a pairing socket's attempt.
    Event {
        conn: u64,
        event: WireEvent,
    },
    /// Close a socket; confirm with `Closed { ack }` once it was sent its
    /// farewell and close frame.
    Close {
        conn: u64,
        code: u16,
        farewell: Option<String>,
        ack: Option<u64>,
    },
    Closed {
        ack: u64,
    },
    /// The answer to a packet's counted deliveries (its `receipt`): which of
    /// them, by position among the counted ones, no socket took (it was
    /// gone, or its queue was full and it is being closed 4030).
    Taken {
        receipt: u64,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        refused: Vec<u32>,
    },
    /// Node `node` (the sender, or its previous generation) is leaving
    /// (shutdown or resync): its sockets are gone as of now.
    Gone {
        node: String,
    },
}

/// What goes over the wire: every message for one node from one flush.
/// `receipt`: the packet has counted deliveries, to be answered by a
/// `Taken` with this id.
#[derive(Serialize, Deserialize)]
struct Packet {
    from: Arc<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    receipt: Option<u64>,
    msgs: Vec<Msg>,
}

/// Messages gathered per flush at most; more wait for the next.
const FLUSH_MAX: usize = 4096;

/// One flush's messages for one node, and the receipts waiting on them.
type ForNode = (Arc<str>, Vec<Msg>, Vec<oneshot::Sender<bool>>);

/// Publishes what is queued, gathering per destination node, and answers
/// the receipts of what it published.
pub(super) async fn publish_loop(
    cluster: Arc<Cluster>,
    metrics: Arc<crate::metrics::Metrics>,
    mut rx: mpsc::Receiver<Outgoing>,
) {
    let mut conn = cluster.cmd.clone();
    let mut batch: Vec<Outgoing> = Vec::new();
    loop {
        if rx.recv_many(&mut batch, FLUSH_MAX).await == 0 {
            return;
        }
        let from = cluster.me();
        let messages = batch.len() as u64;
        let mut per_node: Vec<ForNode> = Vec::new();
        let mut index: HashMap<Arc<str>, usize> = HashMap::new();
        for (node, msg, receipt) in batch.drain(..) {
            let i = *index.entry(node.clone()).or_insert_with(|| {
                per_node.push((node, Vec::new(), Vec::new()));
                per_node.len() - 1
            });
            per_node[i].1.push(msg);
            per_node[i].2.extend(receipt);
        }
        let mut packets: Vec<(String, String)> = Vec::with_capacity(per_node.len());
        let mut receipts: Vec<Option<u64>> = Vec::with_capacity(per_node.len());
        for (node, msgs, waiting) in per_node {
            // Waiting before the publish: the answer may come back before
            // the publish returns.
            let receipt = (!waiting.is_empty()).then(|| {
                let id = cluster.next_id();
                cluster
                    .receipts
                    .insert(id, (node.clone(), waiting, Instant::now()));
                id
            });
            let packet = Packet {
                from: from.clone(),
                receipt,
                msgs,
            };
            match serde_json::to_string(&packet) {
                Ok(json) => {
                    packets.push((keys::bus(&node), json));
                    receipts.push(receipt);
                }
                Err(e) => {
                    tracing::error!(error = %e, "bus packet not encodable");
                    // Its receipts dropped: not delivered.
                    forget_receipt(&cluster, receipt);
                }
            }
        }
        // Bounded, so every receipt is answered: a Redis that hangs
        // (rather than refusing) counts as down for these packets.
        let count = packets.len();
        let taken = tokio::time::timeout(CALL_TIMEOUT, publish(&mut conn, packets))
            .await
            .unwrap_or_else(|_| vec![None; count]);
        if taken.iter().all(Option::is_some) {
            metrics.cluster_bus_published.inc_by(messages);
        } else {
            // Lost: whoever waits for an answer times out and says
            // `unavailable`; the health check notices the outage.
            tracing::warn!("bus publish failed");
        }
        for (subscribers, receipt) in taken.into_iter().zip(receipts) {
            // Not taken by Redis, or nobody subscribed (the node is gone or
            // has started over): nobody will answer, so not delivered.
            // Otherwise the node answers with a `Taken`.
            if subscribers.is_none_or(|n| n <= 0) {
                forget_receipt(&cluster, receipt);
            }
        }
    }
}

/// Drops a packet's receipts unanswered: each reads as not delivered.
fn forget_receipt(cluster: &Cluster, receipt: Option<u64>) {
    if let Some(id) = receipt {
        cluster.receipts.remove(&id);
    }
}

/// Answers a packet's receipts from its node's `Taken`: delivered unless
/// its position is among the `refused` (ascending).
fn answer_receipts(cluster: &Cluster, receipt: u64, refused: &[u32]) {
    let Some((_, (_, waiting, _))) = cluster.receipts.remove(&receipt) else {
        // Given up on meanwhile (its node was declared gone, or too late).
        return;
    };
    let mut refused = refused.iter().copied().peekable();
    for (position, waiter) in (0u32..).zip(waiting) {
        let taken = refused.next_if_eq(&position).is_none();
        let _ = waiter.send(taken);
    }
}

/// How many of `receipts` say delivered. Each is answered within about
/// `CALL_TIMEOUT` and a lease tick: the publisher bounds every publish by it
/// and drops what it could not publish; the receiving node answers what its
/// sockets took; one unanswered is dropped by the lease loop, or when its
/// node is declared gone (a dropped receipt counts as not delivered).
/// Awaited one by one: they are answered together, packet by packet, so
/// this costs no timer and no allocation per `ack`.
pub async fn count_delivered(receipts: Vec<Receipt>) -> usize {
    let mut delivered = 0;
    for receipt in receipts {
        delivered += usize::from(receipt.await == Ok(true));
    }
    delivered
}

/// Publishes one flush's packets, each to its channel; for each, how many
/// subscribers Redis handed it to (`None`: not published). One Redis: one
/// pipeline of PUBLISHes. A Redis Cluster: one SPUBLISH per channel, to the
/// shard owning the channel's slot (a pipeline may not span slots), all at
/// once; this flush completes before the next starts, so packets to one node
/// still go out in order.
async fn publish(conn: &mut RedisConn, packets: Vec<(String, String)>) -> Vec<Option<i64>> {
    let count = packets.len();
    if !conn.is_cluster() {
        let mut pipe = redis::pipe();
        for (channel, json) in packets {
            pipe.cmd("PUBLISH").arg(channel).arg(json);
        }
        return match pipe.query_async::<Vec<i64>>(conn).await {
            Ok(counts) if counts.len() == count => counts.into_iter().map(Some).collect(),
            Ok(_) => vec![None; count],
            Err(e) => {
                tracing::debug!(error = %e, "bus publish failed");
                vec![None; count]
            }
        };
    }
    let sends = packets.into_iter().map(|(channel, json)| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("SPUBLISH")
                .arg(channel)
                .arg(json)
                .query_async::<i64>(&mut conn)
                .await
                .inspect_err(|e| tracing::debug!(error = %e, "bus publish failed"))
                .ok()
        }
    });
    futures::future::join_all(sends).await
}

/// Listens on this node's channel, reconnecting after every loss; after a
/// reconnect (messages may have been missed) the node resyncs.
pub(super) async fn subscribe_loop(gw: Arc<Gateway>, cluster: Arc<Cluster>) {
    let mut first = true;
    // The name given up at the last loss, until the new one is subscribed:
    // failed tries in between keep the one new name.
    let mut given_up: Option<Arc<str>> = None;
    loop {
        if cluster.stop.is_cancelled() {
            return;
        }
        if !first {
            gw.metrics.cluster_redis_reconnects.inc();
        }
        let subscriber = match cluster.client.subscriber().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "bus: cannot connect");
                cluster.subscribed.store(false, Ordering::Release);
                retry_pause(&cluster).await;
                continue;
            }
        };
        // After a loss, messages may have been missed: start over under a
        // new name, so nothing meant for the old one is taken for ours.
        if !first && given_up.is_none() {
            cluster.resyncing.store(true, Ordering::Release);
            given_up = Some(cluster.rename());
        }
        // The channel of this node's current name (renamed after a loss or
        // when its lease was taken away).
        let channel = keys::bus(&cluster.me());
        let mut subscription = match subscriber.subscribe(&channel).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "bus: cannot subscribe");
                retry_pause(&cluster).await;
                continue;
            }
        };
        first = false;
        cluster.subscribed.store(true, Ordering::Release);
        if let Some(old) = given_up.take() {
            // In a task of its own: its calls' replies come through this loop.
            let (gw, cluster) = (gw.clone(), cluster.clone());
            let name = cluster.me();
            tokio::spawn(async move {
                cluster.clone().resync(&gw, old, name.clone()).await;
                // Lost again meanwhile: the newer resync says when it is done.
                if *cluster.me() == *name {
                    cluster.resyncing.store(false, Ordering::Release);
                }
            });
        }
        tracing::info!(%channel, "bus subscribed");
        loop {
            tokio::select! {
                payload = subscription.next() => {
                    let Some(payload) = payload else { break };
                    match serde_json::from_slice::<Packet>(&payload) {
                        Ok(packet) => dispatch(&gw, &cluster, packet),
                        Err(e) => tracing::warn!(error = %e, "bus: unreadable packet"),
                    }
                }
                _ = cluster.resubscribe.notified() => break,
                _ = cluster.stop.cancelled() => return,
            }
        }
        cluster.subscribed.store(false, Ordering::Release);
        tracing::warn!("bus subscription lost; reconnecting");
    }
}

async fn retry_pause(cluster: &Cluster) {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        _ = cluster.stop.cancelled() => {}
    }
}

/// Acts on one packet's messages, in order.
fn dispatch(gw: &Arc<Gateway>, cluster: &Arc<Cluster>, packet: Packet) {
    let from = packet.from;
    // The counted deliveries no socket took, by position among them.
    let (mut position, mut not_taken) = (0u32, Vec::new());
    // A node heard from is one whose death must be noticed, even if it
    // joined and died between two looks at the leases (the next look finds
    // it gone and handles it).
    if !cluster.nodes.contains_key(&from) && !cluster.gone.contains_key(&from) {
        let until = crate::time::now_ms() + cluster.lease.as_millis() as i64;
        cluster.nodes.insert(from.clone(), until);
    }
    gw.metrics
        .cluster_bus_received
        .inc_by(packet.msgs.len() as u64);
    for msg in packet.msgs {
        match msg {
            Msg::Call { id, account, call } => {
                let gw = gw.clone();
                let cluster = cluster.clone();
                let from = from.clone();
                gw.tasks.clone().spawn(async move {
                    let reply = cluster.serve(&gw, &from, &account, call).await;
                    // Id 0: the caller wants no answer.
                    if id != 0 {
                        cluster.post(&from, Msg::Reply { id, reply });
                    }
                });
            }
            Msg::Reply { id, reply } => {
                if let Some((_, (_, waiter))) = cluster.replies.remove(&id) {
                    let _ = waiter.send(reply);
                }
            }
            Msg::Deliver {
                conn,
                text,
                counted,
            } => {
                let text = Utf8Bytes::from(text);
                let taken = match cluster.locals.get(&conn).map(|l| l.clone()) {
                    Some(LocalSocket::Phone { peer, .. }) => peer.send(&text),
                    Some(LocalSocket::Web { peer, .. }) => peer.send(&text),
                    None => false,
                };
                if counted {
                    if !taken {
                        not_taken.push(position);
                    }
                    position += 1;
                }
            }
            Msg::Event { conn, event } => cluster.apply_event(gw, &from, conn, event),
            Msg::Close {
                conn,
                code,
                farewell,
                ack,
            } => {
                let code = CloseCode::from_code(code).unwrap_or(CloseCode::Restarting);
                let farewell = farewell.map(Utf8Bytes::from);
                let done = match cluster.locals.get(&conn).map(|l| l.clone()) {
                    Some(LocalSocket::Phone { peer, .. }) => Some(peer.close(code, farewell)),
                    Some(LocalSocket::Web { peer, .. }) => Some(peer.close(code, farewell)),
                    None => None,
                };
                if let Some(ack) = ack {
                    let cluster = cluster.clone();
                    let from = from.clone();
                    gw.tasks.spawn(async move {
                        if let Some(done) = done {
                            let _ = done.await;
                        }
                        cluster.post(&from, Msg::Closed { ack });
                    });
                }
            }
            Msg::Closed { ack } => {
                if let Some((_, (_, done, _))) = cluster.acks.remove(&ack) {
                    let _ = done.send(());
                }
            }
            Msg::Taken { receipt, refused } => answer_receipts(cluster, receipt, &refused),
            Msg::Gone { node } => cluster.node_gone(gw, &Arc::from(node)),
        }
    }
    if let Some(receipt) = packet.receipt {
        if !not_taken.is_empty() {
            tracing::debug!(refused = not_taken.len(), from = %from, "bus: counted deliveries no socket took");
        }
        cluster.post(
            &from,
            Msg::Taken {
                receipt,
                refused: not_taken,
            },
        );
    }
}
