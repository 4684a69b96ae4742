//! `deploy/grafana/pairgate.json` cannot drift from the code: every series
//! its PromQL names is one the gateway exposes on `/metrics`, and it picks
//! its Prometheus through a datasource variable, so it imports anywhere.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::support::*;

fn dashboard() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/pairgate.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON: {e}"))
}

/// Every PromQL text in the dashboard: panel targets' `expr` and query
/// variables' queries, wherever they nest.
fn queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    ("query", Value::String(s)) if map.get("type") == Some(&json!("query")) => {
                        out.push(s.clone())
                    }
                    ("query", Value::Object(q)) => {
                        if let Some(Value::String(s)) = q.get("query") {
                            out.push(s.clone());
                        }
                    }
                    _ => queries(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

/// The metric names in a PromQL expression: identifiers outside string
/// literals that start like the gateway's series.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = expr.chars().peekable();
    let mut word = String::new();
    let mut flush = |word: &mut String| {
        if word.starts_with("pairgate_") || word.starts_with("process_") {
            names.push(word.clone());
        }
        word.clear();
    };
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                flush(&mut word);
                // Label values and regexes are not names.
                for d in chars.by_ref() {
                    if d == c {
                        break;
                    }
                }
            }
            c if c.is_ascii_alphanumeric() || c == '_' || c == ':' => word.push(c),
            // `$instance`, `$__rate_interval`: Grafana's, not a metric.
            '$' => {
                flush(&mut word);
                while chars
                    .peek()
                    .is_some_and(|d| d.is_ascii_alphanumeric() || *d == '_')
                {
                    chars.next();
                }
            }
            _ => flush(&mut word),
        }
    }
    flush(&mut word);
    names
}

/// Every series name a scrape of `body` can show: the samples' names, and
/// for families without a sample yet (labelled ones nothing counted), the
/// names their `# TYPE` line promises.
fn exposed(body: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

#[test]
fn metric_names_are_read_from_promql() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.9, sum by (le) (rate(pairgate_store_commit_seconds_bucket{instance=~"$instance",x="pairgate_not_a_name"}[$__rate_interval])))"#
        ),
        vec!["pairgate_store_commit_seconds_bucket"]
    );
    assert_eq!(
        metric_names("process_open_fds / process_max_fds"),
        vec!["process_open_fds", "process_max_fds"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_the_grafana_dashboard_queries_is_exposed() {
    if single_process_only("the activity must land on the one node whose /metrics is read") {
        return;
    }
    let dash = dashboard();
    let vars = dash["templating"]["list"].as_array().expect("templating");
    assert!(
        vars.iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "no Prometheus datasource variable: {vars:?}"
    );
    let mut exprs = Vec::new();
    queries(&dash, &mut exprs);
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    // The dashboard covers what the brief and docs/OPERATIONS.md watch.
    for want in [
        "pairgate_sockets",
        "pairgate_sessions",
        "pairgate_messages_relayed_total",
        "pairgate_errors_total",
        "pairgate_closes_total",
        "pairgate_logouts_total",
        "pairgate_upgrades_refused_total",
        "pairgate_rate_limited_total",
        "pairgate_store_commit_seconds_bucket",
        "pairgate_cluster_bus_published_total",
        "process_open_fds",
        "process_max_fds",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "pairgate_build_info",
    ] {
        assert!(used.contains(want), "the dashboard does not show {want}");
    }

    // Some activity, so the labelled families have samples too (a family
    // nothing counted yet is left out of /metrics altogether).
    let g = TestGateway::spawn(|c| c.max_pairs_per_ip_per_min = 1).await;
    let acc = account("dash");
    let phone = g.phone(&acc).await;
    let s = pair_session(g.addr, &phone, &PairOpts::new()).await;
    assert_eq!(s.web.send_body(&json!("hi"), None).await["type"], "ack");
    phone.expect("message").await;
    let limited = open_web(g.addr, None).await;
    limited
        .send_frame(&PairOpts::new().pair_frame(), None)
        .await;
    limited.expect_error("rate_limited").await;
    let refused = upgrade_status(g.addr, "/ws/web", &[("Origin", "http://evil.test")]).await;
    assert_eq!(refused, 403);
    let body = g.http_get("/metrics", &[]).await.text();
    let exposed = exposed(&body);
    let missing: Vec<&String> = used.iter().filter(|n| !exposed.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries series /metrics does not have: {missing:?}\n/metrics:\n{body}"
    );
}
