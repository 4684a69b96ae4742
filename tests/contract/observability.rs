//! What an operator watches: the process's own series and the build in
//! `/metrics`. Runs the real binary, so the numbers are the gateway's alone.

use crate::support::*;

fn sample(body: &str, name: &str) -> f64 {
    metric_sum(body, name).unwrap_or_else(|| panic!("{name} missing from /metrics:\n{body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_process_series_and_build_info() {
    let dir = tempfile::tempdir().unwrap();
    let g = BinGateway::serve(dir.path(), &[], &[]).await;
    let before = g.http_get("/metrics", &[]).await.text();
    assert_eq!(
        metric_sample(
            &before,
            "pairgate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert!(sample(&before, "process_resident_memory_bytes") > 1_000_000.0);
    assert!(sample(&before, "process_cpu_seconds_total") >= 0.0);
    assert!(sample(&before, "process_start_time_seconds") > 1.6e9);
    let max_fds = sample(&before, "process_max_fds");
    let fds_before = sample(&before, "process_open_fds");
    assert!(
        fds_before >= 3.0 && fds_before < max_fds,
        "{fds_before} of {max_fds}"
    );

    // Every socket is a file of the gateway's: the count follows them.
    const SOCKETS: usize = 20;
    let mut webs = Vec::new();
    for _ in 0..SOCKETS {
        webs.push(g.web(None).await);
    }
    let during = g.http_get("/metrics", &[]).await.text();
    let fds_during = sample(&during, "process_open_fds");
    assert!(
        fds_during >= fds_before + SOCKETS as f64,
        "{fds_before} -> {fds_during} with {SOCKETS} more sockets"
    );
}
