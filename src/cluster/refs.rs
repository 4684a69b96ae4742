//! QR refs and pairing codes in Redis, so a phone on any node links a QR
//! shown through any other. A ref's record says which node's socket shows it
//! and what the phone is shown; both keys expire with the ref, and `link`
//! takes the ref with `GETDEL`, so it is used once, cluster-wide.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::remote::RemotePeer;
use super::{Cluster, keys};
use crate::account::pairing::{Attempt, Issued};
use crate::account::presence::WebPeer;
use crate::gateway::Gateway;
use crate::protocol::{ErrorCode, LinkTarget};
use crate::qr;

/// What a ref stands for, as kept in Redis.
#[derive(Debug, Serialize, Deserialize)]
pub struct RefRecord {
    /// The node whose socket shows the ref (bus name), and that socket.
    pub node: String,
    pub conn: u64,
    pub code: String,
    pub device_name: String,
    pub user_agent: String,
    pub ip: String,
    pub remember: bool,
}

impl Cluster {
    fn record(&self, issued: &Issued, attempt: &Arc<Attempt>) -> Result<String, ErrorCode> {
        let (device_name, remember) = {
            let a = attempt.lock();
            (a.device_name.clone(), a.remember)
        };
        let record = RefRecord {
            node: self.me().to_string(),
            conn: attempt.peer.conn_id(),
            code: issued.code.clone(),
            device_name,
            user_agent: attempt.user_agent.clone(),
            ip: attempt.ip.clone(),
            remember,
        };
        serde_json::to_string(&record).map_err(|_| ErrorCode::Internal)
    }

    /// Rewrites a ref still on screen with what its attempt now asks (a
    /// repeated `pair`); a ref already taken or expired is left alone.
    pub async fn rewrite_ref(
        &self,
        issued: &Issued,
        attempt: &Arc<Attempt>,
    ) -> Result<(), ErrorCode> {
        let json = self.record(issued, attempt)?;
        let mut cmd = self.cmd.clone();
        redis::cmd("SET")
            .arg(keys::reference(&issued.reference))
            .arg(json)
            .arg("XX")
            .arg("KEEPTTL")
            .query_async::<Option<String>>(&mut cmd)
            .await
            .map_err(|_| ErrorCode::Unavailable)?;
        Ok(())
    }

    /// Makes a ref issued on this node valid cluster-wide for `ttl`. `false`
    /// when its code is already taken elsewhere (the caller draws again).
    pub async fn publish_ref(
        &self,
        issued: &Issued,
        attempt: &Arc<Attempt>,
        ttl: Duration,
    ) -> Result<bool, ErrorCode> {
        let json = self.record(issued, attempt)?;
        let ttl_ms = ttl.as_millis() as u64;
        let mut cmd = self.cmd.clone();
        let code_free: bool = redis::cmd("SET")
            .arg(keys::code(&issued.code))
            .arg(&issued.reference)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async::<Option<String>>(&mut cmd)
            .await
            .map_err(|_| ErrorCode::Unavailable)?
            .is_some();
        if !code_free {
            return Ok(false);
        }
        redis::cmd("SET")
            .arg(keys::reference(&issued.reference))
            .arg(json)
            .arg("PX")
            .arg(ttl_ms)
            .query_async::<()>(&mut cmd)
            .await
            .map_err(|_| ErrorCode::Unavailable)?;
        self.attempts
            .insert(attempt.peer.conn_id(), Arc::downgrade(attempt));
        Ok(true)
    }

    /// Withdraws a ref (expired, scanned, or its socket left); best effort,
    /// as both keys expire anyway.
    pub fn withdraw_ref(self: &Arc<Self>, gw: &Gateway, issued: &Issued) {
        let cmd = self.cmd.clone();
        let keys = [keys::reference(&issued.reference), keys::code(&issued.code)];
        gw.tasks.spawn(async move {
            // One DEL each, not one pipeline: the ref and the code are in
            // different slots on a Redis Cluster.
            let dels = keys.map(|key| {
                let mut cmd = cmd.clone();
                async move { redis::cmd("DEL").arg(key).query_async::<()>(&mut cmd).await }
            });
            let [a, b] = dels;
            let (a, b) = tokio::join!(a, b);
            if let Err(e) = a.and(b) {
                tracing::debug!(error = %e, "ref not withdrawn (it expires anyway)");
            }
        });
    }

    /// The pairing socket `conn` of this node stopped pairing.
    pub fn forget_attempt(&self, conn: u64) {
        self.attempts.remove(&conn);
    }

    /// The ref a `link` names (by ref or code), if it is on some screen now.
    pub async fn find_ref(&self, target: &LinkTarget) -> Result<Option<String>, ErrorCode> {
        let mut cmd = self.cmd.clone();
        let reference = match target {
            LinkTarget::Ref(r) => r.clone(),
            LinkTarget::Code(typed) => {
                let Some(code) = qr::normalize_code(typed) else {
                    return Ok(None);
                };
                let found: Option<String> = redis::cmd("GET")
                    .arg(keys::code(&code))
                    .query_async(&mut cmd)
                    .await
                    .map_err(|_| ErrorCode::Unavailable)?;
                match found {
                    Some(r) => r,
                    None => return Ok(None),
                }
            }
        };
        let exists: bool = redis::cmd("EXISTS")
            .arg(keys::reference(&reference))
            .query_async(&mut cmd)
            .await
            .map_err(|_| ErrorCode::Unavailable)?;
        Ok(exists.then_some(reference))
    }

    /// Takes `reference` out of circulation and returns its attempt: this
    /// node's own, or a stand-in for another node's socket. `None`: somebody
    /// took it first, or it expired.
    pub async fn take_ref(
        self: &Arc<Self>,
        gw: &Gateway,
        reference: &str,
    ) -> Result<Option<Arc<Attempt>>, ErrorCode> {
        let mut cmd = self.cmd.clone();
        let json: Option<String> = redis::cmd("GETDEL")
            .arg(keys::reference(reference))
            .query_async(&mut cmd)
            .await
            .map_err(|_| ErrorCode::Unavailable)?;
        let Some(json) = json else { return Ok(None) };
        let Ok(record) = serde_json::from_str::<RefRecord>(&json) else {
            return Ok(None);
        };
        let _ = redis::cmd("DEL")
            .arg(keys::code(&record.code))
            .query_async::<()>(&mut cmd)
            .await;
        if *record.node == *self.me() {
            return Ok(gw.pairing.take(reference));
        }
        let node: Arc<str> = Arc::from(record.node);
        let peer: WebPeer = RemotePeer::peer(self, &node, record.conn);
        Ok(Some(Arc::new(Attempt::new(
            peer,
            record.user_agent,
            record.ip,
            record.device_name,
            record.remember,
        ))))
    }
}
