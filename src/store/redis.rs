//! The cluster's backend: sessions in Redis, one hash per account
//! (`pg:{account}:sessions`), written only by the account's home node.
//!
//! Each account's changes are applied by one script that first checks that
//! this node is still the account's home (`pg:{account}:home`): a node that
//! was declared dead and replaced cannot overwrite what the new home decided
//! (a fencing check). The batches of one write go out as one pipeline, one
//! round trip; with `appendfsync always`, Redis answers only once the change
//! is on its disk.
//!
//! On a Redis Cluster an account's two keys share a slot (`{account}`), so
//! the script runs on that slot's master as on a single Redis; batches of
//! different accounts may live on different masters, so each goes as its own
//! request there (a plain pipeline may not span slots).

use std::time::Duration;

use std::sync::Arc;

use parking_lot::RwLock;
use redis::ConnectionLike;

use super::{Backend, StoreOp, StoredSession, UNREACHABLE};
use crate::cluster::keys;
use crate::cluster::redis_conn::{RedisClient, SyncConn};

/// Applies one account's changes if this node is its home.
/// KEYS: home, sessions. ARGV: this node, then pairs (`P`, json) / (`D`, id).
const COMMIT: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('NOTHOME this node does not serve the account')
end
for i = 2, #ARGV, 2 do
  if ARGV[i] == 'P' then
    local record = cjson.decode(ARGV[i + 1])
    redis.call('HSET', KEYS[2], record['session_id'], ARGV[i + 1])
  else
    redis.call('HDEL', KEYS[2], ARGV[i + 1])
  end
end
return 1
"#;

/// How long one Redis request may take before the store says it is unreachable.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

pub struct RedisBackend {
    client: RedisClient,
    conn: Option<SyncConn>,
    /// This node's bus name (it changes at a resync): what the home key
    /// holds when this node is home.
    me: Arc<RwLock<Arc<str>>>,
    /// The commit script's SHA1, loaded on every new connection (a Redis
    /// that restarted has forgotten it, and dropped the connection too).
    commit_sha: String,
}

impl RedisBackend {
    pub fn new(client: RedisClient, me: Arc<RwLock<Arc<str>>>) -> Self {
        RedisBackend {
            client,
            conn: None,
            me,
            commit_sha: String::new(),
        }
    }

    /// The connection, opened again after a failure.
    fn conn(&mut self) -> anyhow::Result<&mut dyn ConnectionLike> {
        if self.conn.is_none() {
            let mut conn = self
                .client
                .sync_connection(IO_TIMEOUT)
                .map_err(unreachable)?;
            // On a Redis Cluster, SCRIPT LOAD goes to every node.
            self.commit_sha = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(COMMIT)
                .query(conn.as_dyn())
                .map_err(unreachable)?;
            self.conn = Some(conn);
        }
        self.conn
            .as_mut()
            .map(SyncConn::as_dyn)
            .ok_or_else(|| anyhow::anyhow!("{UNREACHABLE}no connection"))
    }
}

impl RedisBackend {
    /// Runs `f` on the connection; after a connection error, once more on a
    /// fresh one (a Redis that restarted dropped the old connection).
    fn with_retry<T>(
        &mut self,
        mut f: impl FnMut(&mut dyn ConnectionLike) -> redis::RedisResult<T>,
    ) -> anyhow::Result<T> {
        for attempt in 0..2 {
            let conn = self.conn()?;
            match f(conn) {
                Ok(v) => return Ok(v),
                Err(e) if is_connection_error(&e) => {
                    self.conn = None;
                    if attempt == 1 {
                        return Err(unreachable(e));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(anyhow::anyhow!("{UNREACHABLE}retries exhausted"))
    }
}

/// A Redis error that means the store could not be reached.
fn unreachable(e: redis::RedisError) -> anyhow::Error {
    anyhow::anyhow!("{UNREACHABLE}{e}")
}

fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_connection_refusal()
}

impl Backend for RedisBackend {
    /// Sessions are loaded per account, when a node becomes its home.
    fn load(&mut self) -> anyhow::Result<Vec<StoredSession>> {
        Ok(Vec::new())
    }

    fn load_account(&mut self, account: &str) -> anyhow::Result<Vec<StoredSession>> {
        let stored: Vec<(String, String)> = self.with_retry(|conn| {
            redis::cmd("HGETALL")
                .arg(keys::sessions(account))
                .query(conn)
        })?;
        let mut out = Vec::with_capacity(stored.len());
        for (session_id, json) in stored {
            match serde_json::from_str::<StoredSession>(&json) {
                Ok(s) => out.push(s),
                Err(e) => {
                    tracing::warn!(error = %e, %session_id, "skipping unreadable stored session")
                }
            }
        }
        Ok(out)
    }

    fn commit(&mut self, ops: &[StoreOp]) -> anyhow::Result<()> {
        match self.commit_each(&[ops]).pop() {
            Some(Ok(())) | None => Ok(()),
            Some(Err(e)) => Err(anyhow::anyhow!(e)),
        }
    }

    fn commit_each(&mut self, batches: &[&[StoreOp]]) -> Vec<Result<(), String>> {
        let me = self.me.read().clone();
        // One script call per non-empty batch (one account each).
        let calls: Vec<Option<redis::Cmd>> = batches
            .iter()
            .map(|batch| {
                let account = batch.first()?.account();
                let mut cmd = redis::cmd("EVALSHA");
                cmd.arg(&self.commit_sha)
                    .arg(2)
                    .arg(keys::home(account))
                    .arg(keys::sessions(account))
                    .arg(&*me);
                for op in batch.iter() {
                    debug_assert_eq!(op.account(), account, "one batch, one account");
                    match op {
                        StoreOp::Put(s) => {
                            let json = serde_json::to_string(s).unwrap_or_default();
                            cmd.arg("P").arg(json);
                        }
                        StoreOp::Delete { session_id, .. } => {
                            cmd.arg("D").arg(session_id);
                        }
                    }
                }
                Some(cmd)
            })
            .collect();
        if self.client.is_cluster() {
            return self.commit_on_cluster(calls);
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut groups = 0;
        for call in calls.into_iter().flatten() {
            pipe.add_command(call);
            groups += 1;
        }
        if groups == 0 {
            return vec![Ok(()); batches.len()];
        }
        // Each script's own answer, errors included, one per account batch.
        // Applying a batch twice (a retry after a lost answer) changes nothing.
        let mut answers: Vec<redis::Value> = Vec::new();
        for _ in 0..2 {
            answers = match self.with_retry(|conn| pipe.query(conn)) {
                Ok(v) => v,
                Err(e) => return vec![Err(format!("{e:#}")); batches.len()],
            };
            // A Redis restarted without dropping this connection's socket
            // (rare) has forgotten the script: load it again and retry.
            let forgotten = answers
                .iter()
                .any(|a| matches!(a, redis::Value::ServerError(e) if e.code() == "NOSCRIPT"));
            if !forgotten {
                break;
            }
            self.conn = None;
            if let Err(e) = self.conn() {
                return vec![Err(format!("{e:#}")); batches.len()];
            }
            // The script's SHA1 is the same: the pipeline stands as built.
        }
        let mut answers = answers.into_iter();
        batches
            .iter()
            .map(|batch| {
                if batch.is_empty() {
                    return Ok(());
                }
                match answers.next() {
                    Some(redis::Value::ServerError(e)) => Err(e.to_string()),
                    Some(_) => Ok(()),
                    None => Err("no answer from redis".to_owned()),
                }
            })
            .collect()
    }
}

impl RedisBackend {
    /// A Redis Cluster: each account's script call on its own, to the master
    /// of the account's slot. Once Redis is found unreachable, the batches
    /// left are answered so at once rather than each waiting out its timeout.
    fn commit_on_cluster(&mut self, calls: Vec<Option<redis::Cmd>>) -> Vec<Result<(), String>> {
        let mut unreachable: Option<String> = None;
        calls
            .into_iter()
            .map(|call| {
                let Some(call) = call else { return Ok(()) };
                if let Some(e) = &unreachable {
                    return Err(e.clone());
                }
                let result = self.eval_on_cluster(&call);
                if let Err(e) = &result
                    && e.starts_with(UNREACHABLE)
                {
                    unreachable = Some(e.clone());
                }
                result
            })
            .collect()
    }

    fn eval_on_cluster(&mut self, call: &redis::Cmd) -> Result<(), String> {
        for _ in 0..2 {
            match self.with_retry(|conn| call.query::<redis::Value>(conn)) {
                Ok(_) => return Ok(()),
                Err(e) => {
                    // A master that restarted has forgotten the script: load
                    // it again (everywhere) and retry; the SHA1 is the same.
                    let forgotten = e
                        .downcast_ref::<redis::RedisError>()
                        .is_some_and(|e| e.code() == Some("NOSCRIPT"));
                    if !forgotten {
                        return Err(format!("{e:#}"));
                    }
                    self.conn = None;
                    self.conn().map_err(|e| format!("{e:#}"))?;
                }
            }
        }
        Err("the commit script could not be loaded".to_owned())
    }
}
