//! `/metrics` read the way a scraper reads it: samples by name and labels,
//! polled with a deadline; and a process's resident memory.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::http_get;

/// The sum of every sample of metric `name` (any labels) in Prometheus text.
pub fn metric_sum(body: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in body.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let metric_end = line.find(['{', ' ']).unwrap_or(line.len());
        if &line[..metric_end] != name {
            continue;
        }
        let rest = if line[metric_end..].starts_with('{') {
            match line[metric_end..].find('}') {
                Some(i) => &line[metric_end + i + 1..],
                None => continue,
            }
        } else {
            &line[metric_end..]
        };
        let value = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = value {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// The one sample of `name` whose labels are exactly `labels`, if any.
pub fn metric_sample(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    want.sort();
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once('}')?,
                None => ("", rest),
            };
            let mut got: Vec<String> = labels
                .split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect();
            got.sort();
            (got == want).then(|| value.split_whitespace().next()?.parse().ok())?
        })
}

/// The value of metric `name` (summed over its labels) in `/metrics` now.
pub async fn metric_now(addr: SocketAddr, name: &str) -> f64 {
    let body = http_get(addr, "/metrics", &[]).await.text();
    metric_sum(&body, name).unwrap_or_else(|| panic!("no metric {name} in /metrics"))
}

/// Polls `/metrics` until `name` satisfies `ok`; panics with the last value
/// after `timeout`.
pub async fn wait_for_metric(
    addr: SocketAddr,
    name: &str,
    timeout: Duration,
    ok: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = Instant::now() + timeout;
    // a poll of the gateway's own counters, with a deadline
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    loop {
        poll.tick().await;
        let v = metric_now(addr, name).await;
        if ok(v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is still {v} after {timeout:?}"
        );
    }
}

/// Resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// Polls `/metrics` until the sample of `name` with exactly `labels` equals
/// `want`; panics with the last value after `timeout`.
pub async fn wait_for_sample(
    addr: SocketAddr,
    name: &str,
    labels: &[(&str, &str)],
    want: f64,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    loop {
        poll.tick().await;
        let body = http_get(addr, "/metrics", &[]).await.text();
        let v = metric_sample(&body, name, labels);
        if v == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{labels:?} is still {v:?}, not {want}, after {timeout:?}"
        );
    }
}

/// Waits until the gateway counts `n` live web sockets: a socket leaves the
/// count only once the gateway has finished with it (its refs and link
/// requests ended), which a client seeing its close reply does not tell.
pub async fn wait_for_web_sockets(addr: SocketAddr, n: usize) {
    wait_for_sample(
        addr,
        "pairgate_sockets",
        &[("role", "web")],
        n as f64,
        super::LONG,
    )
    .await
}
