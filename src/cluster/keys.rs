//! Every Redis key and channel the cluster uses, in one place. An account's
//! keys share the hash tag `{account}`, so one account's changes are one
//! slot's business in a Redis Cluster and can be made atomically.

/// The node currently serving the account (its "home"): its bus name.
pub fn home(account: &str) -> String {
    format!("pg:{{{account}}}:home")
}

/// The account's sessions: a hash of session id to the stored record (JSON).
pub fn sessions(account: &str) -> String {
    format!("pg:{{{account}}}:sessions")
}

/// A QR ref on some pairing socket's screen, with what the phone needs to
/// link it (expires with the ref).
pub fn reference(reference: &str) -> String {
    format!("pg:ref:{{{reference}}}")
}

/// A pairing code: names its ref (expires with it).
pub fn code(code: &str) -> String {
    format!("pg:code:{{{code}}}")
}

/// Live nodes: a sorted set of bus name by lease expiry (Unix ms).
pub const NODES: &str = "pg:nodes";

/// What a live node tells the operator API: a hash (node_id, started_at,
/// sockets), expiring with its lease.
pub fn node_info(bus_name: &str) -> String {
    format!("pg:node:{{{bus_name}}}")
}

/// The channel a node listens on: everything sent to that node.
pub fn bus(bus_name: &str) -> String {
    format!("pg:bus:{{{bus_name}}}")
}

/// Failed `link`s by code in one Unix second, all accounts together; every
/// second's key shares the hash tag `{misses}`, so one `MGET` reads a minute.
pub fn link_misses(unix_sec: u64) -> String {
    format!("pg:{{misses}}:{unix_sec}")
}
