//! A socket held by another node, as its account's home sees it: a
//! [`RemoteSocket`] whose frames, pairing events and close orders are queued
//! for the bus. And the other side: a pairing socket of this node taking the
//! events its account's home sends it.

use std::convert::Infallible;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tungstenite::Utf8Bytes;

use super::bus::Msg;
use super::{Cluster, LocalSocket};
use crate::account::pairing::{LinkedWeb, PairingEvent};
use crate::gateway::Gateway;
use crate::peer::{Peer, Receipt, RemoteSocket};
use crate::protocol::CloseCode;

/// A pairing event on the wire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "e", rename_all = "snake_case")]
pub enum WireEvent {
    Scanned {
        account: String,
        request_id: String,
    },
    Rejected,
    Linked {
        account: String,
        session_id: String,
        token: String,
        remember: bool,
        phone_online: bool,
    },
}

/// The id a socket of another node goes by at the home: its own id mixed
/// with its node's bus name, so sockets of two nodes (or of two generations
/// of one node) never share one.
pub fn remote_conn_id(node: &str, conn: u64) -> u64 {
    let mut h = DefaultHasher::new();
    node.hash(&mut h);
    conn.hash(&mut h);
    // The top bit marks a remote id; local ids count up from 1.
    h.finish() | (1 << 63)
}

/// A socket on `node` known there as `conn`.
pub struct RemotePeer {
    cluster: Arc<Cluster>,
    node: Arc<str>,
    conn: u64,
    id: u64,
    ordered: AtomicBool,
}

impl RemotePeer {
    pub fn peer<E>(cluster: &Arc<Cluster>, node: &Arc<str>, conn: u64) -> Peer<E>
    where
        RemotePeer: RemoteSocket<E>,
    {
        Peer::remote(Box::new(RemotePeer {
            cluster: cluster.clone(),
            node: node.clone(),
            conn,
            id: remote_conn_id(node, conn),
            ordered: AtomicBool::new(false),
        }))
    }

    fn deliver(&self, text: &Utf8Bytes) -> bool {
        !self.ordered.load(Ordering::Acquire)
            && self.cluster.post(
                &self.node,
                Msg::Deliver {
                    conn: self.conn,
                    text: text.as_str().to_owned(),
                    counted: false,
                },
            )
    }

    fn deliver_receipted(&self, text: &Utf8Bytes) -> Option<Receipt> {
        if self.ordered.load(Ordering::Acquire) {
            return None;
        }
        self.cluster.post_receipted(
            &self.node,
            Msg::Deliver {
                conn: self.conn,
                text: text.as_str().to_owned(),
                counted: true,
            },
        )
    }

    fn event(&self, event: WireEvent) -> bool {
        self.cluster.post(
            &self.node,
            Msg::Event {
                conn: self.conn,
                event,
            },
        )
    }

    fn order(
        &self,
        code: CloseCode,
        farewell: Option<Utf8Bytes>,
        done: Option<oneshot::Sender<()>>,
    ) {
        self.ordered.store(true, Ordering::Release);
        let ack = done.map(|done| {
            let ack = self.cluster.next_id();
            self.cluster
                .acks
                .insert(ack, (self.node.clone(), done, Instant::now()));
            ack
        });
        let sent = self.cluster.post(
            &self.node,
            Msg::Close {
                conn: self.conn,
                code: code.code(),
                farewell: farewell.map(|f| f.as_str().to_owned()),
                ack,
            },
        );
        if !sent && let Some(ack) = ack {
            // Nobody will confirm: release the waiter now.
            self.cluster.acks.remove(&ack);
        }
    }
}

/// What a remote socket does alike whatever events its role takes.
macro_rules! remote_socket_common {
    () => {
        fn conn_id(&self) -> u64 {
            self.id
        }
        fn node(&self) -> &str {
            &self.node
        }
        fn send(&self, text: &Utf8Bytes) -> bool {
            self.deliver(text)
        }
        fn send_receipted(&self, text: &Utf8Bytes) -> Option<Receipt> {
            self.deliver_receipted(text)
        }
        fn place_order(
            &self,
            code: CloseCode,
            farewell: Option<Utf8Bytes>,
            done: Option<oneshot::Sender<()>>,
        ) {
            self.order(code, farewell, done)
        }
        fn is_close_ordered(&self) -> bool {
            self.ordered.load(Ordering::Acquire)
        }
        fn reachable(&self) -> bool {
            self.cluster.is_up()
        }
    };
}

impl RemoteSocket<Infallible> for RemotePeer {
    remote_socket_common!();
    fn send_event(&self, event: Infallible) -> bool {
        match event {}
    }
}

impl RemoteSocket<PairingEvent> for RemotePeer {
    remote_socket_common!();
    fn send_event(&self, event: PairingEvent) -> bool {
        self.event(match event {
            PairingEvent::Scanned {
                account,
                request_id,
            } => WireEvent::Scanned {
                account,
                request_id,
            },
            PairingEvent::Rejected => WireEvent::Rejected,
            PairingEvent::Linked(l) => WireEvent::Linked {
                account: l.account,
                session_id: l.session_id,
                token: l.token,
                remember: l.remember,
                phone_online: l.phone_online,
            },
        })
    }
}

impl Cluster {
    /// A pairing socket of this node takes what the phone did to its
    /// attempt, with the same transitions a single node makes (under the
    /// attempt's lock); what a socket that is gone left behind goes back to
    /// the home.
    pub(super) fn apply_event(
        self: &Arc<Self>,
        gw: &Arc<Gateway>,
        from: &Arc<str>,
        conn: u64,
        event: WireEvent,
    ) {
        let attempt = self.attempts.get(&conn).and_then(|w| w.upgrade());
        match event {
            WireEvent::Scanned {
                account,
                request_id,
            } => {
                let taken = attempt.as_ref().is_some_and(|attempt| {
                    let mut a = attempt.lock();
                    a.state.request(&account, &request_id)
                        && attempt.peer.send_event(PairingEvent::Scanned {
                            account: account.clone(),
                            request_id: request_id.clone(),
                        })
                });
                if !taken {
                    let gw = gw.clone();
                    gw.tasks.clone().spawn(async move {
                        let _ = gw.drop_request_routed(&account, &request_id).await;
                    });
                }
            }
            WireEvent::Rejected => {
                if let Some(attempt) = attempt {
                    let mut a = attempt.lock();
                    if a.state.end_request() {
                        attempt.peer.send_event(PairingEvent::Rejected);
                    }
                }
            }
            WireEvent::Linked {
                account,
                session_id,
                token,
                remember,
                phone_online,
            } => {
                let taken = attempt.as_ref().is_some_and(|attempt| {
                    let mut a = attempt.lock();
                    if !a.state.link(&account, &session_id) {
                        return false;
                    }
                    // From now on the home reaches this socket as the session's.
                    self.learn_home(&account, from);
                    self.locals.insert(
                        conn,
                        LocalSocket::Web {
                            account: account.clone(),
                            session_id: session_id.clone(),
                            peer: attempt.peer.clone(),
                        },
                    );
                    attempt
                        .peer
                        .send_event(PairingEvent::Linked(Box::new(LinkedWeb {
                            account: account.clone(),
                            session_id: session_id.clone(),
                            token,
                            remember,
                            phone_online,
                        })))
                });
                if !taken {
                    // Gone before it took its session: the session goes offline.
                    self.locals.remove(&conn);
                    let gw = gw.clone();
                    gw.tasks.clone().spawn(async move {
                        let _ = gw.web_offline_routed(&account, &session_id, conn).await;
                    });
                }
            }
        }
    }
}
