//! The account API the socket tasks call. On a single node (no `--redis`)
//! each call goes straight to the account rules; in a cluster it goes to the
//! account's home: this node's hub when it is home, else a call over the bus.

use std::sync::Arc;

use serde_json::value::RawValue;

use super::LocalSocket;
use super::calls::{Call, Reply};
use super::homes::{Home, Homed};
use crate::account::admin::{AccountSessions, NodeInfo};
use crate::account::pairing::{Attempt, Issued};
use crate::account::presence::{PhonePeer, WebPeer};
use crate::account::sessions::{Actor, Resumed};
use crate::conn::Leaving;
use crate::gateway::Gateway;
use crate::protocol::{DeviceInfo, ErrorCode, LinkTarget, SessionInfo};

/// A phone's `send` relayed: the sockets that took it here, and the
/// receipts of those on other nodes (`count_delivered` adds them up).
pub struct Delivery {
    pub here: usize,
    pub receipts: Vec<crate::peer::Receipt>,
}

impl Delivery {
    /// The `ack`'s `delivered`, once every receipt is in.
    pub async fn delivered(self) -> usize {
        self.here + super::bus::count_delivered(self.receipts).await
    }
}

/// How often a call is tried again after its home moved.
const ROUTE_TRIES: usize = 3;

impl Gateway {
    /// Runs `here` when this node is the account's home (or no cluster);
    /// otherwise sends `call()` to the home and reads the answer with `read`.
    async fn routed<T, F: Future<Output = Result<T, ErrorCode>>>(
        self: &Arc<Self>,
        account: &str,
        here: impl FnOnce() -> F,
        call: impl Fn() -> Call,
        read: impl Fn(Reply) -> Option<Result<T, ErrorCode>>,
    ) -> Result<T, ErrorCode> {
        let Some(cluster) = &self.cluster else {
            return here().await;
        };
        let mut here = Some(here);
        for _ in 0..ROUTE_TRIES {
            match cluster.home_of(self, account).await? {
                Homed::Here(_serving) => match here.take() {
                    Some(here) => return here().await,
                    None => break,
                },
                Homed::Remote(node) => match cluster.call(&node, account, call()).await {
                    // Unanswered because that node is gone: its accounts are
                    // claimed anew, so ask again.
                    Err(ErrorCode::Unavailable) if !cluster.still_alive(self, &node).await => {
                        cluster.forget_home(account)
                    }
                    Err(code) => return Err(code),
                    Ok(Reply::NotHome) => cluster.forget_home(account),
                    Ok(Reply::Failed(code)) => return Err(code),
                    Ok(reply) => return read(reply).unwrap_or(Err(ErrorCode::Internal)),
                },
            }
        }
        Err(ErrorCode::Unavailable)
    }

    /// Like `routed`, for a socket that has left: nobody waits for the answer.
    fn told(self: &Arc<Self>, account: &str, here: impl FnOnce(), call: Call) {
        let Some(cluster) = &self.cluster else {
            return here();
        };
        match cluster.homes_known(account) {
            Some(Home::Here) => here(),
            Some(Home::Remote(node)) => {
                cluster.tell(&node, account, call);
            }
            // Not known here (or its home went away): looked up first.
            None => {
                let gw = self.clone();
                let cluster = cluster.clone();
                let account = account.to_owned();
                self.tasks.spawn(async move {
                    if let Ok(Homed::Remote(node)) = cluster.home_of(&gw, &account).await {
                        cluster.tell(&node, &account, call);
                    }
                });
            }
        }
    }

    pub async fn phone_online_routed(
        self: &Arc<Self>,
        account: &str,
        peer: &PhonePeer,
    ) -> Result<(), ErrorCode> {
        let local = || LocalSocket::Phone {
            account: account.to_owned(),
            peer: peer.clone(),
        };
        self.registering(
            peer.conn_id(),
            local,
            self.phone_online_at_home(account, peer),
        )
        .await
    }

    /// Runs `register` (a socket of this node registering with its home)
    /// with the socket in this node's table of its sockets, as the home may
    /// send it frames before answering; takes it out again if refused.
    async fn registering<T>(
        &self,
        conn: u64,
        local: impl FnOnce() -> LocalSocket,
        register: impl Future<Output = Result<T, ErrorCode>>,
    ) -> Result<T, ErrorCode> {
        let Some(cluster) = &self.cluster else {
            return register.await;
        };
        cluster.locals.insert(conn, local());
        let result = register.await;
        if result.is_err() {
            cluster.locals.remove(&conn);
        }
        result
    }

    /// Registers the phone socket with its account's home, leaving this
    /// node's table of its sockets alone: a socket registered anew in a
    /// resync stays in it while a try fails (deliveries the home already
    /// sends it must find it), until it leaves.
    pub(super) async fn phone_online_at_home(
        self: &Arc<Self>,
        account: &str,
        peer: &PhonePeer,
    ) -> Result<(), ErrorCode> {
        let conn = peer.conn_id();
        self.routed(
            account,
            || async {
                self.phone_online(account, peer);
                Ok(())
            },
            || Call::PhoneOnline { conn },
            Reply::done,
        )
        .await
    }

    /// The phone socket `conn` leaves. A socket that left by itself waits
    /// for its home to take it offline, so whatever its client does next
    /// (through any node) comes after; one ordered closed (by its home, or for
    /// being slow) only tells.
    pub fn phone_leaving(
        self: &Arc<Self>,
        account: &str,
        conn: u64,
        ordered: bool,
    ) -> Option<Leaving> {
        if self.cluster.is_none() || ordered {
            self.phone_offline_routed(account, conn);
            return None;
        }
        if let Some(cluster) = &self.cluster {
            cluster.locals.remove(&conn);
        }
        let (gw, account) = (self.clone(), account.to_owned());
        Some(Box::pin(async move {
            let _ = gw
                .routed(
                    &account,
                    || async {
                        gw.phone_offline(&account, conn);
                        Ok(())
                    },
                    || Call::PhoneOffline { conn },
                    Reply::done,
                )
                .await;
        }))
    }

    /// Like `phone_leaving`, for a session's live socket.
    pub fn web_leaving(
        self: &Arc<Self>,
        account: &str,
        session_id: &str,
        conn: u64,
        ordered: bool,
    ) -> Option<Leaving> {
        if self.cluster.is_none() || ordered {
            self.web_offline_told(account, session_id, conn);
            return None;
        }
        if let Some(cluster) = &self.cluster {
            cluster.locals.remove(&conn);
        }
        let (gw, account, session_id) = (self.clone(), account.to_owned(), session_id.to_owned());
        Some(Box::pin(async move {
            let _ = gw.web_offline_routed(&account, &session_id, conn).await;
        }))
    }

    pub fn phone_offline_routed(self: &Arc<Self>, account: &str, conn: u64) {
        if let Some(cluster) = &self.cluster {
            cluster.locals.remove(&conn);
        }
        self.told(
            account,
            || self.phone_offline(account, conn),
            Call::PhoneOffline { conn },
        );
    }

    pub async fn link_routed(
        self: &Arc<Self>,
        account: &str,
        phone: u64,
        target: LinkTarget,
    ) -> Result<(String, DeviceInfo), ErrorCode> {
        let target = Arc::new(target);
        self.routed(
            account,
            || async { self.link_here(account, phone, clone_target(&target)).await },
            || Call::Link {
                conn: phone,
                target: clone_target(&target),
            },
            Reply::link,
        )
        .await
    }

    /// `link` at the account's home: with refs in Redis in a cluster.
    pub async fn link_here(
        self: &Arc<Self>,
        account: &str,
        phone: u64,
        target: LinkTarget,
    ) -> Result<(String, DeviceInfo), ErrorCode> {
        let Some(cluster) = &self.cluster else {
            return self.link(account, phone, target);
        };
        let by_code = matches!(target, LinkTarget::Code(_));
        let limit = self.config.max_link_misses_per_min;
        if by_code && limit > 0 && cluster.link_misses_full(limit).await? {
            return Err(self.global_misses_full());
        }
        // Refused before the ref is taken, so it stays valid.
        let reference = cluster.find_ref(&target).await?;
        let checked = self.link_precheck(account, phone, reference.is_some());
        if checked == Err(ErrorCode::UnknownRef) && by_code && limit > 0 {
            cluster.note_link_miss().await?;
        }
        checked?;
        let attempt = match reference {
            Some(reference) => cluster.take_ref(self, &reference).await?,
            None => None,
        };
        let linked = self.link_taken(account, phone, attempt);
        if matches!(linked, Err(ErrorCode::UnknownRef)) && by_code && limit > 0 {
            cluster.note_link_miss().await?;
        }
        linked
    }

    pub async fn link_confirm_routed(
        self: &Arc<Self>,
        account: &str,
        phone: u64,
        request_id: &str,
    ) -> Result<SessionInfo, ErrorCode> {
        self.routed(
            account,
            || async { self.link_confirm(account, phone, request_id).await },
            || Call::LinkConfirm {
                conn: phone,
                request_id: request_id.to_owned(),
            },
            Reply::session,
        )
        .await
    }

    pub async fn link_reject_routed(
        self: &Arc<Self>,
        account: &str,
        phone: u64,
        request_id: &str,
    ) -> Result<(), ErrorCode> {
        self.routed(
            account,
            || async { self.link_reject(account, phone, request_id) },
            || Call::LinkReject {
                conn: phone,
                request_id: request_id.to_owned(),
            },
            Reply::done,
        )
        .await
    }

    pub async fn list_sessions_routed(
        self: &Arc<Self>,
        account: &str,
    ) -> Result<Vec<SessionInfo>, ErrorCode> {
        self.routed(
            account,
            || async { Ok(self.list_sessions(account)) },
            || Call::ListSessions,
            Reply::sessions,
        )
        .await
    }

    pub async fn logout_routed(
        self: &Arc<Self>,
        account: &str,
        by: Actor,
        session_id: Option<&str>,
    ) -> Result<usize, ErrorCode> {
        self.routed(
            account,
            || async { self.logout(account, by, session_id).await },
            || match by {
                Actor::Phone(conn) => Call::Logout {
                    conn,
                    session_id: session_id.map(str::to_owned),
                },
                Actor::Admin => Call::AdminLogout {
                    session_id: session_id.map(str::to_owned),
                },
            },
            Reply::count,
        )
        .await
    }

    /// The operator API's view of an account, from its home.
    pub async fn account_sessions_routed(
        self: &Arc<Self>,
        account: &str,
    ) -> Result<AccountSessions, ErrorCode> {
        self.routed(
            account,
            || async { Ok(self.account_sessions(account)) },
            || Call::AdminSessions,
            Reply::admin,
        )
        .await
    }

    /// The live nodes: this one, or every node holding a lease.
    pub async fn nodes_routed(&self) -> Result<Vec<NodeInfo>, ErrorCode> {
        match &self.cluster {
            None => Ok(self.nodes()),
            Some(cluster) => cluster.live_nodes().await,
        }
    }

    /// `relay_to_webs` at the account's home: what counts now, and the
    /// receipts of web sockets on other nodes, which count once their node
    /// has the frame (so an `ack` never counts a message a Redis outage
    /// swallowed).
    pub(super) fn relay_to_webs_here(
        &self,
        account: &str,
        phone: u64,
        to: Option<&str>,
        body: &RawValue,
    ) -> Result<Delivery, ErrorCode> {
        let mut receipts = Vec::new();
        let here = self.relay_to_webs_receipted(account, phone, to, body, &mut receipts)?;
        Ok(Delivery { here, receipts })
    }

    /// `relay_to_phone` at the account's home: a phone on another node has
    /// the message once its node says its queue took it; until then the
    /// web's `send` is not acknowledged. Refused there (the phone left, or
    /// its queue was full and it is being closed 4030): `phone_offline`, as
    /// on one node; no answer: `unavailable`.
    pub(super) async fn relay_to_phone_confirmed(
        &self,
        account: &str,
        session_id: &str,
        web: u64,
        body: &RawValue,
    ) -> Result<(), ErrorCode> {
        let mut receipts = Vec::new();
        self.relay_to_phone_receipted(account, session_id, web, body, &mut receipts)?;
        for receipt in receipts {
            match receipt.await {
                Ok(true) => {}
                Ok(false) => return Err(ErrorCode::PhoneOffline),
                Err(_) => return Err(ErrorCode::Unavailable),
            }
        }
        Ok(())
    }

    /// The phone's `send` in a cluster: what counts now, and the receipts
    /// of sockets on other nodes still to come (when this node is the
    /// account's home; from another home the count is final). The phone's
    /// socket writes its `ack` once they are in, without waiting for them
    /// before its next frame.
    pub async fn relay_to_webs_routed(
        self: &Arc<Self>,
        account: &str,
        phone: u64,
        to: Option<&str>,
        body: &RawValue,
    ) -> Result<Delivery, ErrorCode> {
        self.routed(
            account,
            || async { self.relay_to_webs_here(account, phone, to, body) },
            || Call::RelayToWebs {
                conn: phone,
                to: to.map(str::to_owned),
                body: body.to_owned(),
            },
            |reply| {
                Reply::count(reply).map(|counted| {
                    counted.map(|here| Delivery {
                        here,
                        receipts: Vec::new(),
                    })
                })
            },
        )
        .await
    }

    pub async fn resume_routed(
        self: &Arc<Self>,
        account: &str,
        session_id: &str,
        peer: &WebPeer,
    ) -> Result<Resumed, ErrorCode> {
        let local = || LocalSocket::Web {
            account: account.to_owned(),
            session_id: session_id.to_owned(),
            peer: peer.clone(),
        };
        let register = self.resume_at_home(account, session_id, peer);
        self.registering(peer.conn_id(), local, register).await
    }

    async fn resume_at_home(
        self: &Arc<Self>,
        account: &str,
        session_id: &str,
        peer: &WebPeer,
    ) -> Result<Resumed, ErrorCode> {
        let conn = peer.conn_id();
        self.routed(
            account,
            || async { self.resume(account, session_id, peer) },
            || Call::Resume {
                conn,
                session_id: session_id.to_owned(),
            },
            |r| match r {
                Reply::Resumed(r) => Some(r.map(|phone_online| Resumed { phone_online })),
                _ => None,
            },
        )
        .await
    }

    /// Like `phone_online_at_home`, for a session's socket live already: the
    /// home queues it the phone's state (`Gateway::rejoin`).
    pub(super) async fn rejoin_at_home(
        self: &Arc<Self>,
        account: &str,
        session_id: &str,
        peer: &WebPeer,
    ) -> Result<(), ErrorCode> {
        let conn = peer.conn_id();
        self.routed(
            account,
            || async { self.rejoin(account, session_id, peer) },
            || Call::Rejoin {
                conn,
                session_id: session_id.to_owned(),
            },
            Reply::done,
        )
        .await
    }

    pub fn web_offline_told(self: &Arc<Self>, account: &str, session_id: &str, conn: u64) {
        if let Some(cluster) = &self.cluster {
            cluster.locals.remove(&conn);
        }
        self.told(
            account,
            || self.web_offline(account, session_id, conn),
            Call::WebOffline {
                conn,
                session_id: session_id.to_owned(),
            },
        );
    }

    /// A session handed to a socket that had gone: it goes offline at the home.
    pub async fn web_offline_routed(
        self: &Arc<Self>,
        account: &str,
        session_id: &str,
        conn: u64,
    ) -> Result<(), ErrorCode> {
        self.routed(
            account,
            || async {
                self.web_offline(account, session_id, conn);
                Ok(())
            },
            || Call::WebOffline {
                conn,
                session_id: session_id.to_owned(),
            },
            Reply::done,
        )
        .await
    }

    pub async fn relay_to_phone_routed(
        self: &Arc<Self>,
        account: &str,
        session_id: &str,
        web: u64,
        body: &RawValue,
    ) -> Result<(), ErrorCode> {
        self.routed(
            account,
            || self.relay_to_phone_confirmed(account, session_id, web, body),
            || Call::RelayToPhone {
                conn: web,
                session_id: session_id.to_owned(),
                body: body.to_owned(),
            },
            Reply::done,
        )
        .await
    }

    pub async fn self_logout_routed(
        self: &Arc<Self>,
        account: &str,
        session_id: &str,
        web: u64,
    ) -> Result<(), ErrorCode> {
        self.routed(
            account,
            || async { self.self_logout(account, session_id, web).await },
            || Call::SelfLogout {
                conn: web,
                session_id: session_id.to_owned(),
            },
            Reply::done,
        )
        .await
    }

    pub async fn expire_request_routed(self: &Arc<Self>, account: &str, request_id: &str) -> bool {
        self.routed(
            account,
            || async { Ok(self.expire_request(account, request_id)) },
            || Call::ExpireRequest {
                request_id: request_id.to_owned(),
            },
            Reply::expired,
        )
        .await
        .unwrap_or(false)
    }

    pub async fn drop_request_routed(
        self: &Arc<Self>,
        account: &str,
        request_id: &str,
    ) -> Result<(), ErrorCode> {
        self.routed(
            account,
            || async {
                self.drop_request(account, request_id);
                Ok(())
            },
            || Call::DropRequest {
                request_id: request_id.to_owned(),
            },
            Reply::done,
        )
        .await
    }

    /// Shows a fresh ref for `attempt`: registered locally, and in a cluster
    /// in Redis too (drawing again if its code is taken elsewhere).
    pub async fn issue_ref(self: &Arc<Self>, attempt: &Arc<Attempt>) -> Result<Issued, ErrorCode> {
        let Some(cluster) = &self.cluster else {
            return Ok(self.pairing.issue(attempt));
        };
        for _ in 0..4 {
            let issued = self.pairing.issue(attempt);
            match cluster
                .publish_ref(&issued, attempt, self.config.qr_ttl())
                .await
            {
                Ok(true) => return Ok(issued),
                Ok(false) => self.pairing.retire(&issued),
                Err(code) => {
                    self.pairing.retire(&issued);
                    return Err(code);
                }
            }
        }
        Err(ErrorCode::Unavailable)
    }

    /// A repeated `pair` changed what the attempt asks to be linked as: in a
    /// cluster, the ref on screen is rewritten so a phone on any node sees it.
    pub async fn republish_ref(
        self: &Arc<Self>,
        issued: &Issued,
        attempt: &Arc<Attempt>,
    ) -> Result<(), ErrorCode> {
        match &self.cluster {
            None => Ok(()),
            Some(cluster) => cluster.rewrite_ref(issued, attempt).await,
        }
    }

    /// Withdraws a ref from the screen (and, in a cluster, from Redis).
    pub fn retire_ref(self: &Arc<Self>, issued: &Issued) {
        self.pairing.retire(issued);
        if let Some(cluster) = &self.cluster {
            cluster.withdraw_ref(self, issued);
        }
    }

    /// A socket of this node took its newly linked session: in a cluster it
    /// is registered anew with the home after a resync, like a resumed one.
    pub fn session_socket_here(&self, account: &str, session_id: &str, peer: &WebPeer) {
        if let Some(cluster) = &self.cluster {
            cluster.locals.insert(
                peer.conn_id(),
                LocalSocket::Web {
                    account: account.to_owned(),
                    session_id: session_id.to_owned(),
                    peer: peer.clone(),
                },
            );
        }
    }

    /// A pairing socket stopped pairing.
    pub fn forget_attempt(&self, conn: u64) {
        if let Some(cluster) = &self.cluster {
            cluster.forget_attempt(conn);
        }
    }
}

fn clone_target(t: &LinkTarget) -> LinkTarget {
    match t {
        LinkTarget::Ref(r) => LinkTarget::Ref(r.clone()),
        LinkTarget::Code(c) => LinkTarget::Code(c.clone()),
    }
}
