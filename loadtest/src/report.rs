//! The end of a run: workers' results merged exactly, the loss checks, and the
//! three outputs (table on stdout, JSON report, SVG percentile plot).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde::Serialize;

use crate::wire::{Progress, WorkerResult, decode_histogram, new_histogram};

/// Every worker's result added together. Counts add; histograms add bucket by
/// bucket, so percentiles are those of all samples, never averages of
/// per-worker percentiles.
#[derive(Default)]
pub struct Merged {
    pub totals: Progress,
    pub counts: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    pub failures: BTreeMap<String, u64>,
    pub failure_samples: Vec<String>,
    pub hists: BTreeMap<String, Histogram<u64>>,
    pub logout_intervals: Vec<[u64; 2]>,
}

impl Merged {
    pub fn add(&mut self, r: WorkerResult) -> anyhow::Result<()> {
        self.totals.add(&r.totals);
        let add_map = |into: &mut BTreeMap<String, u64>, from: BTreeMap<String, u64>| {
            for (k, v) in from {
                *into.entry(k).or_default() += v;
            }
        };
        add_map(&mut self.counts, r.counts);
        add_map(&mut self.errors, r.errors);
        add_map(&mut self.failures, r.failures);
        for s in r.failure_samples {
            if self.failure_samples.len() < 20 {
                self.failure_samples.push(s);
            }
        }
        self.logout_intervals.extend(r.logout_intervals);
        for (name, text) in r.histograms {
            let h = decode_histogram(&text).with_context(|| format!("histogram {name}"))?;
            self.hists
                .entry(name)
                .or_insert_with(new_histogram)
                .add(h)
                .map_err(|e| anyhow::anyhow!("merging histograms: {e:?}"))?;
        }
        Ok(())
    }

    pub fn count(&self, key: &str) -> u64 {
        self.counts.get(key).copied().unwrap_or(0)
    }
}

/// One phase's cost (a soak's cycles summed).
#[derive(Serialize, Clone, Debug)]
pub struct PhaseReport {
    pub name: String,
    pub wall_secs: f64,
    pub gateway_cpu_secs: f64,
    /// Of one core.
    pub gateway_cpu_pct: f64,
    pub loadgen_cpu_secs: f64,
    pub loadgen_cpu_pct: f64,
    pub gateway_rss_bytes_after: u64,
}

impl PhaseReport {
    /// Adds another run of the same phase (the next soak cycle).
    pub fn add(&mut self, o: &PhaseReport) {
        self.wall_secs += o.wall_secs;
        self.gateway_cpu_secs += o.gateway_cpu_secs;
        self.loadgen_cpu_secs += o.loadgen_cpu_secs;
        let pct = |secs: f64, wall: f64| if wall > 0.0 { secs / wall * 100.0 } else { 0.0 };
        self.gateway_cpu_pct = pct(self.gateway_cpu_secs, self.wall_secs);
        self.loadgen_cpu_pct = pct(self.loadgen_cpu_secs, self.wall_secs);
        self.gateway_rss_bytes_after = o.gateway_rss_bytes_after;
    }
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct GatewayReport {
    pub pids: Vec<u32>,
    pub rss_before_connect_bytes: u64,
    pub rss_after_connect_bytes: u64,
    pub rss_end_bytes: u64,
    pub peak_rss_bytes: u64,
    /// (after connect − before connect) / sockets held.
    pub rss_per_socket_bytes: Option<f64>,
    /// How the spawned gateway exited, when this run started it.
    pub exit: Option<String>,
}

#[derive(Serialize, Clone, Debug)]
pub struct RunInfo {
    pub urls: Vec<String>,
    pub phones: usize,
    pub webs_per_phone: usize,
    pub msg_size: usize,
    pub rate: f64,
    pub in_flight: usize,
    pub direction: String,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    pub churn_rounds: usize,
    pub processes: usize,
    pub threads_per_process: usize,
    pub source_ips: usize,
    pub pin_accounts: bool,
    /// Times the whole plan ran (1, or a soak's cycles).
    pub cycles: usize,
}

#[derive(Serialize, Clone, Debug)]
pub struct Latency {
    pub count: u64,
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

#[derive(Serialize, Clone, Debug)]
pub struct Throughput {
    pub window_secs: f64,
    /// `--rate`: sends per second scheduled (0 = flat out).
    pub scheduled_per_sec: f64,
    /// Sends written inside the measured window, per second.
    pub sent_per_sec: f64,
    /// At a rate: sends scheduled inside the measured window that had not gone
    /// out when it closed (the in-flight cap held them): the rate was not met.
    pub behind_schedule: u64,
    pub received_per_sec: f64,
    pub web_to_phone_received_per_sec: f64,
    pub phone_to_web_received_per_sec: f64,
}

/// How simultaneous the `logout_all` phase really was.
#[derive(Serialize, Clone, Debug, Default)]
pub struct LogoutAllReport {
    /// Phones that sent `logout_all` and got their `ok`.
    pub phones: usize,
    /// Most `logout_all` requests outstanding (written, `ok` not yet
    /// received) at the same instant, over every worker process.
    pub max_outstanding: usize,
    /// From the shared release instant to the last phone's frame written.
    pub last_written_after_release_ms: f64,
    /// From the first phone's frame written to the last one's (in a soak,
    /// the widest such spread of any cycle is at most this).
    pub written_spread_ms: f64,
}

#[derive(Serialize, Clone, Debug)]
pub struct Report {
    pub ok: bool,
    /// Why the run failed (empty when ok).
    pub problems: Vec<String>,
    pub run: RunInfo,
    pub phases: Vec<PhaseReport>,
    pub gateway: GatewayReport,
    pub sockets_held: i64,
    pub throughput: Throughput,
    /// Milliseconds.
    pub latency_ms: BTreeMap<String, Latency>,
    pub logout_all: LogoutAllReport,
    /// `--soak`: the gateway's RSS over time and its slope.
    pub soak: Option<crate::soak::SoakReport>,
    pub totals: Progress,
    pub counts: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    pub failures: BTreeMap<String, u64>,
    pub failure_samples: Vec<String>,
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn latency(h: &Histogram<u64>) -> Latency {
    Latency {
        count: h.len(),
        min: ms(h.min()),
        mean: h.mean() / 1000.0,
        p50: ms(h.value_at_quantile(0.50)),
        p90: ms(h.value_at_quantile(0.90)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
    }
}

/// What went wrong, if anything: every loss, leak, failure and (unless
/// allowed) error reply.
pub fn problems(m: &Merged, run: &RunInfo, allow_errors: bool, crashed: &[String]) -> Vec<String> {
    let mut p: Vec<String> = crashed.to_vec();
    let mut check = |n: u64, what: &str| {
        if n > 0 {
            p.push(format!("{n} {what}"));
        }
    };
    check(
        m.count("unacked_web"),
        "web sends neither acked nor refused",
    );
    check(
        m.count("unacked_phone"),
        "phone sends neither acked nor refused",
    );
    check(
        m.count("lost_web_to_phone"),
        "acked web→phone messages never reached the phone",
    );
    check(
        m.count("lost_phone_to_web"),
        "phone→web deliveries (ack.delivered) never reached a web socket",
    );
    check(
        m.count("unexpected_web_to_phone"),
        "web→phone messages received that were never acked",
    );
    check(
        m.count("unexpected_phone_to_web"),
        "phone→web messages received beyond ack.delivered",
    );
    check(m.count("out_of_order"), "messages out of order");
    let t = &m.totals;
    let phones = (run.phones * run.cycles.max(1)) as u64;
    let webs = phones * run.webs_per_phone as u64;
    check(
        phones.saturating_sub(t.phones_ready),
        "phones never got ready",
    );
    check(
        webs.saturating_sub(t.webs_paired),
        "web clients never paired",
    );
    check(
        t.webs_paired.saturating_sub(t.logged_out_webs),
        "web sockets without logged_out + 4001 after logout_all",
    );
    check(
        t.phones_ready.saturating_sub(t.logout_ok),
        "phones without an ok to logout_all",
    );
    if t.sockets_open != 0 {
        p.push(format!("{} sockets still open at the end", t.sockets_open));
    }
    if !m.failures.is_empty() {
        p.push(format!("failures: {}", kv(&m.failures)));
    }
    if !allow_errors && !m.errors.is_empty() {
        p.push(format!("error replies / closes: {}", kv(&m.errors)));
    }
    p
}

fn kv(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn throughput(m: &Merged, window_secs: f64, rate: f64) -> Throughput {
    let per = |n: u64| {
        if window_secs > 0.0 {
            n as f64 / window_secs
        } else {
            0.0
        }
    };
    let w2p = m.count("window_recv_phone");
    let p2w = m.count("window_recv_web");
    Throughput {
        window_secs,
        scheduled_per_sec: rate,
        sent_per_sec: per(m.count("window_sent_web") + m.count("window_sent_phone")),
        behind_schedule: m.count("behind_schedule_web") + m.count("behind_schedule_phone"),
        received_per_sec: per(w2p + p2w),
        web_to_phone_received_per_sec: per(w2p),
        phone_to_web_received_per_sec: per(p2w),
    }
}

/// Sweeps the (written, ok) intervals of every phone's `logout_all`.
pub fn logout_all(m: &Merged) -> LogoutAllReport {
    let iv = &m.logout_intervals;
    if iv.is_empty() {
        return LogoutAllReport::default();
    }
    let written = m.hists.get("logout_all_written");
    LogoutAllReport {
        phones: iv.len(),
        max_outstanding: max_overlap(iv),
        last_written_after_release_ms: written.map_or(0.0, |h| ms(h.max())),
        written_spread_ms: written.map_or(0.0, |h| ms(h.max() - h.min())),
    }
}

/// The most intervals [start, end] that hold one instant (an end at the same
/// instant as a start does not overlap it).
pub fn max_overlap(intervals: &[[u64; 2]]) -> usize {
    let mut edges: Vec<(u64, i32)> = intervals
        .iter()
        .flat_map(|i| [(i[0], 1), (i[1], -1)])
        .collect();
    // Ends before starts at the same instant.
    edges.sort_unstable();
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        max = max.max(now);
    }
    max as usize
}

pub fn latencies(m: &Merged) -> BTreeMap<String, Latency> {
    m.hists
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(k, h)| (k.clone(), latency(h)))
        .collect()
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1_048_576.0)
}

/// The human summary.
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    let run = &r.run;
    let rate = if run.rate > 0.0 {
        format!(
            "{} msgs/s total (cap {} in flight per socket)",
            run.rate, run.in_flight
        )
    } else {
        format!("flat out, {} in flight per socket", run.in_flight)
    };
    let _ = writeln!(
        s,
        "pairgate load test: {} phones x {} webs ({} sockets held) on {} node(s); {} process(es); {} B bodies; {}; direction {}",
        run.phones,
        run.webs_per_phone,
        r.sockets_held,
        run.urls.len(),
        run.processes,
        run.msg_size,
        rate,
        run.direction
    );
    let _ = writeln!(
        s,
        "\n{:<10} {:>9} {:>20} {:>20}",
        "phase", "wall", "gateway CPU", "load test CPU"
    );
    for p in &r.phases {
        let _ = writeln!(
            s,
            "{:<10} {:>7.2} s {:>9.2} s ({:>4.0}%) {:>9.2} s ({:>4.0}%)",
            p.name,
            p.wall_secs,
            p.gateway_cpu_secs,
            p.gateway_cpu_pct,
            p.loadgen_cpu_secs,
            p.loadgen_cpu_pct
        );
    }
    let g = &r.gateway;
    if g.pids.is_empty() {
        let _ = writeln!(
            s,
            "\ngateway: pid unknown (give --gateway-pid for RSS and CPU)"
        );
    } else {
        let per = g
            .rss_per_socket_bytes
            .map(|b| format!(" ({:+.1} KiB per socket)", b / 1024.0))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "\ngateway pid {:?}: RSS before connect {}, after connect {}{per}, at end {}, peak {}",
            g.pids,
            mib(g.rss_before_connect_bytes),
            mib(g.rss_after_connect_bytes),
            mib(g.rss_end_bytes),
            mib(g.peak_rss_bytes)
        );
    }
    let t = &r.throughput;
    let scheduled = if t.scheduled_per_sec > 0.0 {
        format!(" of {:.0}/s scheduled", t.scheduled_per_sec)
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        "throughput over {:.1} s after warm-up: sent {:.0}/s{scheduled}, received {:.0}/s (web→phone {:.0}/s, phone→web {:.0}/s)",
        t.window_secs,
        t.sent_per_sec,
        t.received_per_sec,
        t.web_to_phone_received_per_sec,
        t.phone_to_web_received_per_sec
    );
    if t.scheduled_per_sec > 0.0 {
        let _ = writeln!(
            s,
            "at a rate: relay_* and ack_* count from each send's scheduled time (send_lag: how late the load test sent)"
        );
        if t.behind_schedule > 0 {
            let _ = writeln!(
                s,
                "RATE NOT MET: {} sends scheduled in the measured window never went out (in-flight cap {}); latencies cover only those that did",
                t.behind_schedule, run.in_flight
            );
        }
    } else {
        let _ = writeln!(
            s,
            "flat out (closed loop): latency is what {} in flight per socket makes it; read throughput",
            run.in_flight
        );
    }
    let _ = writeln!(
        s,
        "\n{:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency (ms)", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    for (name, l) in &r.latency_ms {
        let _ = writeln!(
            s,
            "{:<22} {:>9} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            name, l.count, l.p50, l.p90, l.p99, l.p999, l.max
        );
    }
    let la = &r.logout_all;
    if la.phones > 0 {
        let _ = writeln!(
            s,
            "logout_all at once: {} phones released at one instant{}; frames written {:.3}..{:.3} ms after it; at most {} outstanding at the same time",
            la.phones / r.run.cycles.max(1),
            if r.run.cycles > 1 {
                format!(" (x {} cycles)", r.run.cycles)
            } else {
                String::new()
            },
            la.last_written_after_release_ms - la.written_spread_ms,
            la.last_written_after_release_ms,
            la.max_outstanding
        );
    }
    if let Some(soak) = &r.soak {
        let at_relay_end = |i: usize| soak.cycle_end_kib.get(i).map_or(0, |s| s.1);
        let _ = writeln!(
            s,
            "soak: {} cycles (pair, relay, resume, logout one, logout_all) over {:.0} s; RSS at the end of each cycle's relay: first {} KiB, last {} KiB; slope over the second half {} (limit {} KiB/min); {} timed samples in the CSV",
            soak.cycles,
            soak.rss_kib.last().map_or(0.0, |s| s.0),
            at_relay_end(0),
            at_relay_end(soak.cycle_end_kib.len().saturating_sub(1)),
            soak.slope_kib_per_min
                .map_or("unknown".to_owned(), |v| format!("{v:+.1} KiB/min")),
            soak.max_slope_kib_per_min,
            soak.rss_kib.len(),
        );
    }
    let tt = &r.totals;
    let _ = writeln!(
        s,
        "\nsends: web {} (acked {}), phone {} (acked {}, delivered to {} web sockets); received: phone {}, web {}",
        tt.sent_web,
        tt.acked_web,
        tt.sent_phone,
        tt.acked_phone,
        r.counts.get("phone_delivered_total").copied().unwrap_or(0),
        tt.recv_phone,
        tt.recv_web
    );
    let _ = writeln!(
        s,
        "paired {}; resumed {}; {}logout_all ok {} of {} phones; {} web sockets got logged_out + 4001",
        tt.webs_paired,
        tt.resumed,
        if r.soak.is_some() {
            format!("logout (one session) ok {}; ", tt.logout_one_ok)
        } else {
            String::new()
        },
        tt.logout_ok,
        tt.phones_ready,
        tt.logged_out_webs
    );
    let _ = writeln!(
        s,
        "errors: {}",
        if r.errors.is_empty() {
            "none".to_owned()
        } else {
            kv(&r.errors)
        }
    );
    for f in &r.failure_samples {
        let _ = writeln!(s, "  {f}");
    }
    if r.ok {
        let _ = writeln!(s, "\nresult: OK (nothing lost)");
    } else {
        let _ = writeln!(s, "\nresult: FAILED");
        for p in &r.problems {
            let _ = writeln!(s, "  - {p}");
        }
    }
    s
}

/// A percentile distribution per histogram: x is 1/(1−q) on a log axis (so
/// 90%, 99%, 99.9% are evenly spaced), y the latency in ms on a log axis.
pub fn plot(
    path: &Path,
    hists: &BTreeMap<String, Histogram<u64>>,
    title: &str,
) -> anyhow::Result<()> {
    let series: Vec<(&String, Vec<(f64, f64)>)> = hists
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(name, h)| {
            // Points log-spaced in 1/(1−q), up to where the samples run out.
            let top = (h.len() as f64).clamp(1.0, 1e6);
            let mut pts = Vec::new();
            let mut x: f64 = 1.0;
            while x <= top {
                let q = 1.0 - 1.0 / x;
                pts.push((x, ms(h.value_at_quantile(q)).max(0.001)));
                x *= 1.05;
            }
            pts.push((top, ms(h.max()).max(0.001)));
            (name, pts)
        })
        .collect();
    anyhow::ensure!(!series.is_empty(), "no latency samples to plot");
    let x_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|v| v.0))
        .fold(10.0, f64::max);
    let y_min = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|v| v.1))
        .fold(f64::MAX, f64::min);
    let y_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|v| v.1))
        .fold(0.0, f64::max);
    let root = SVGBackend::new(path, (1100, 700)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(
                (1.0..x_max * 1.2).log_scale(),
                (y_min * 0.8..y_max * 1.25).log_scale(),
            )?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (ms)")
            .x_label_formatter(&|x| percentile_label(*x))
            .y_label_formatter(&|y| format!("{y}"))
            .draw()?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("plot: {e}"))
}

/// 1/(1−q) → "99.9%".
fn percentile_label(x: f64) -> String {
    let q = (1.0 - 1.0 / x) * 100.0;
    let text = format!("{q:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(1000.0), "99.9%");
    }

    #[test]
    fn overlap_sweep() {
        assert_eq!(max_overlap(&[]), 0);
        assert_eq!(max_overlap(&[[1, 5], [2, 6], [3, 4]]), 3);
        assert_eq!(max_overlap(&[[1, 2], [2, 3], [3, 4]]), 1);
        assert_eq!(max_overlap(&[[1, 10], [20, 30], [25, 26]]), 2);
    }

    #[test]
    fn merge_adds_counts_and_histograms() {
        let mut h = new_histogram();
        h.record(100).unwrap();
        let r = WorkerResult {
            counts: [("lost_web_to_phone".to_owned(), 2)].into(),
            histograms: [("pair".to_owned(), crate::wire::encode_histogram(&h))].into(),
            ..Default::default()
        };
        let mut m = Merged::default();
        m.add(r.clone()).unwrap();
        m.add(r).unwrap();
        assert_eq!(m.count("lost_web_to_phone"), 4);
        assert_eq!(m.hists["pair"].len(), 2);
    }
}
