//! Prometheus metrics. Every series the hot paths touch is created once up
//! front and kept as a handle (an `Arc`'d atomic), so counting a relayed
//! message is one atomic add, not a label lookup.

use std::collections::HashMap;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::protocol::{CloseCode, ErrorCode, LogoutReason, Role};

type Labels = Vec<(&'static str, &'static str)>;

/// Pairing attempts by how they ended.
#[derive(Clone, Copy, Debug)]
pub enum PairingOutcome {
    Linked,
    Rejected,
    TimedOut,
}

/// How a session ended.
#[derive(Clone, Copy, Debug)]
pub enum LogoutKind {
    PhoneLogout,
    PhoneLogoutAll,
    SelfLogout,
    Expired,
    Admin,
}

impl From<LogoutReason> for LogoutKind {
    fn from(r: LogoutReason) -> Self {
        match r {
            LogoutReason::PhoneLogout => LogoutKind::PhoneLogout,
            LogoutReason::PhoneLogoutAll => LogoutKind::PhoneLogoutAll,
            LogoutReason::SelfLogout => LogoutKind::SelfLogout,
            LogoutReason::Admin => LogoutKind::Admin,
        }
    }
}

pub struct Metrics {
    registry: Registry,
    sockets_phone: Gauge,
    sockets_web: Gauge,
    pub sessions: Gauge,
    /// Set when scraped: accounts the hub holds in memory.
    pub accounts_in_memory: Gauge,
    /// Set when scraped: link requests waiting for the phone's answer.
    pub link_requests_pending: Gauge,
    pairings: [Counter; 3],
    pub relayed_web_to_phone: Counter,
    pub relayed_phone_to_web: Counter,
    errors: HashMap<ErrorCode, Counter>,
    closes: HashMap<u16, Counter>,
    logouts: [Counter; 5],
    /// `pairgate_upgrades_refused_total{reason}`: see `upgrade_refused`.
    upgrades_refused: Family<Labels, Counter>,
    rate_limited: Family<Labels, Counter>,
    pub store_commit_seconds: Histogram,
    /// Cluster mode: bus messages published to other nodes.
    pub cluster_bus_published: Counter,
    /// Cluster mode: bus messages received from other nodes.
    pub cluster_bus_received: Counter,
    /// Cluster mode: bus subscriptions re-established after a loss.
    pub cluster_resyncs: Counter,
    pub cluster_lease_renewals: Counter,
    /// Cluster mode: other nodes handled as dead (lease ran out or left).
    pub cluster_nodes_gone: Counter,
    /// Cluster mode: attempts at a new connection to Redis after one was lost.
    pub cluster_redis_reconnects: Counter,
}

fn family_member<M: Clone + Default + prometheus_client::metrics::TypedMetric>(
    family: &Family<Labels, M>,
    key: &'static str,
    value: &'static str,
) -> M
where
    Family<Labels, M>: Clone,
{
    family.get_or_create(&vec![(key, value)]).clone()
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();

        let sockets = Family::<Labels, Gauge>::default();
        registry.register(
            "pairgate_sockets",
            "Live WebSocket connections by role",
            sockets.clone(),
        );
        let sessions = Gauge::default();
        registry.register("pairgate_sessions", "Linked web sessions", sessions.clone());
        let accounts_in_memory = Gauge::default();
        registry.register(
            "pairgate_accounts_in_memory",
            "Accounts held in memory (a phone, a session or pairing in progress)",
            accounts_in_memory.clone(),
        );
        let link_requests_pending = Gauge::default();
        registry.register(
            "pairgate_link_requests_pending",
            "Link requests waiting for the phone's answer",
            link_requests_pending.clone(),
        );
        let pairings = Family::<Labels, Counter>::default();
        registry.register(
            "pairgate_pairings",
            "Pairing attempts by outcome",
            pairings.clone(),
        );
        let relayed = Family::<Labels, Counter>::default();
        registry.register(
            "pairgate_messages_relayed",
            "Relayed message frames by direction",
            relayed.clone(),
        );
        let errors = Family::<Labels, Counter>::default();
        registry.register("pairgate_errors", "Error replies by code", errors.clone());
        let closes = Family::<Labels, Counter>::default();
        registry.register(
            "pairgate_closes",
            "Sockets closed by the gateway, by close code",
            closes.clone(),
        );
        let logouts = Family::<Labels, Counter>::default();
        registry.register(
            "pairgate_logouts",
            "Ended sessions by kind",
            logouts.clone(),
        );
        let refused = Family::<Labels, Counter>::default();
        registry.register(
            "pairgate_upgrades_refused",
            "WebSocket upgrades refused before upgrading, by reason",
            refused.clone(),
        );
        // Shown at 0 before the first refusal.
        for reason in ["origin", "host"] {
            family_member(&refused, "reason", reason);
        }
        let rate_limited = Family::<Labels, Counter>::default();
        registry.register(
            "pairgate_rate_limited",
            "Requests refused by a rate limit beyond the per-socket ones, by what was limited",
            rate_limited.clone(),
        );
        let store_commit_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "pairgate_store_commit_seconds",
            "Time to make one batch of store changes durable",
            store_commit_seconds.clone(),
        );

        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let cluster_bus_published = counter(
            &mut registry,
            "pairgate_cluster_bus_published",
            "Cluster mode: messages published on the bus to other nodes",
        );
        let cluster_bus_received = counter(
            &mut registry,
            "pairgate_cluster_bus_received",
            "Cluster mode: messages received on the bus from other nodes",
        );
        let cluster_resyncs = counter(
            &mut registry,
            "pairgate_cluster_resyncs",
            "Cluster mode: resyncs after a lost bus subscription or lease",
        );
        let cluster_lease_renewals = counter(
            &mut registry,
            "pairgate_cluster_lease_renewals",
            "Cluster mode: lease renewals of this node",
        );
        let cluster_nodes_gone = counter(
            &mut registry,
            "pairgate_cluster_nodes_gone",
            "Cluster mode: other nodes handled as dead or gone",
        );
        let cluster_redis_reconnects = counter(
            &mut registry,
            "pairgate_cluster_redis_reconnects",
            "Cluster mode: attempts at a new connection to Redis after one was lost \
             (the bus subscriber's; on a Redis Cluster, the commands' too)",
        );

        registry.register_collector(Box::new(crate::process_metrics::ProcessCollector));

        Metrics {
            cluster_bus_published,
            cluster_bus_received,
            cluster_resyncs,
            cluster_lease_renewals,
            cluster_nodes_gone,
            cluster_redis_reconnects,
            sockets_phone: family_member(&sockets, "role", "phone"),
            sockets_web: family_member(&sockets, "role", "web"),
            sessions,
            accounts_in_memory,
            link_requests_pending,
            pairings: [
                family_member(&pairings, "outcome", "linked"),
                family_member(&pairings, "outcome", "rejected"),
                family_member(&pairings, "outcome", "timed_out"),
            ],
            relayed_web_to_phone: family_member(&relayed, "direction", "web_to_phone"),
            relayed_phone_to_web: family_member(&relayed, "direction", "phone_to_web"),
            errors: ErrorCode::ALL
                .iter()
                .map(|c| (*c, family_member(&errors, "code", c.as_str())))
                .collect(),
            closes: CloseCode::ALL
                .iter()
                .map(|c| (c.code(), family_member(&closes, "code", c.label())))
                .collect(),
            logouts: [
                family_member(&logouts, "kind", "phone_logout"),
                family_member(&logouts, "kind", "phone_logout_all"),
                family_member(&logouts, "kind", "self_logout"),
                family_member(&logouts, "kind", "expired"),
                family_member(&logouts, "kind", "admin"),
            ],
            upgrades_refused: {
                // Shown at 0 before the first refusal.
                for reason in ["origin", "host", "cap", "per_ip", "draining"] {
                    family_member(&refused, "reason", reason);
                }
                refused
            },
            rate_limited,
            store_commit_seconds,
            registry,
        }
    }

    pub fn sockets(&self, role: Role) -> &Gauge {
        match role {
            Role::Phone => &self.sockets_phone,
            Role::Web => &self.sockets_web,
        }
    }

    pub fn pairing(&self, outcome: PairingOutcome) {
        self.pairings[outcome as usize].inc();
    }

    pub fn error(&self, code: ErrorCode) {
        if let Some(c) = self.errors.get(&code) {
            c.inc();
        }
    }

    pub fn close(&self, code: CloseCode) {
        if let Some(c) = self.closes.get(&code.code()) {
            c.inc();
        }
    }

    pub fn logouts(&self, kind: LogoutKind, n: usize) {
        self.logouts[kind as usize].inc_by(n as u64);
    }

    /// Sockets closed by the gateway so far, by close code label (those
    /// never used left out): for the log's periodic summary.
    pub fn closes_by_code(&self) -> Vec<(&'static str, u64)> {
        CloseCode::ALL
            .iter()
            .filter_map(|c| {
                let n = self.closes.get(&c.code())?.get();
                (n > 0).then(|| (c.label(), n))
            })
            .collect()
    }

    /// Counts an upgrade refused before the handshake, by `reason` (a fixed
    /// word: "origin", "cap", "per_ip", "draining"...). Refusals are rare, so
    /// the label lookup is fine here.
    pub fn upgrade_refused(&self, reason: &'static str) {
        self.upgrades_refused
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }

    /// A request refused by a limit beyond the per-socket ones
    /// (`pair_per_ip`, `link_misses_account`, `link_misses_global`,
    /// `demo_tokens`).
    pub fn rate_limited(&self, what: &'static str) {
        self.rate_limited.get_or_create(&vec![("what", what)]).inc();
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
