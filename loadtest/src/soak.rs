//! The soak's memory check: the gateway's RSS sampled over the whole soak,
//! a robust (Theil–Sen) slope through the per-cycle samples of the second half, and the verdict.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::gateway;

/// Samples the gateway's RSS (summed over its nodes) every `every`, from
/// the soak's start, on the parent's runtime.
pub struct RssSampler {
    task: tokio::task::JoinHandle<()>,
    samples: Arc<Mutex<Vec<(f64, u64)>>>,
    pids: Vec<u32>,
    started: Instant,
}

impl RssSampler {
    pub fn start(pids: Vec<u32>, every: Duration) -> RssSampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let (out, p) = (samples.clone(), pids.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
            loop {
                tick.tick().await;
                let rss = gateway::sample_all(&p).rss_bytes;
                out.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((started.elapsed().as_secs_f64(), rss / 1024));
            }
        });
        RssSampler {
            task,
            samples,
            pids,
            started,
        }
    }

    /// (seconds since the start, RSS KiB), with one last sample now.
    pub fn stop(self) -> Vec<(f64, u64)> {
        self.task.abort();
        let mut s = std::mem::take(&mut *self.samples.lock().unwrap_or_else(|e| e.into_inner()));
        s.push((
            self.started.elapsed().as_secs_f64(),
            gateway::sample_all(&self.pids).rss_bytes / 1024,
        ));
        s
    }
}

/// The soak's memory verdict.
#[derive(Serialize, Clone, Debug)]
pub struct SoakReport {
    pub cycles: usize,
    /// (seconds since the soak began, gateway RSS in KiB), every `--rss-every`.
    pub rss_kib: Vec<(f64, u64)>,
    /// The same, taken once per cycle at the end of its relay phase: every
    /// socket held, the same work done, so cycles compare like for like (a
    /// timed sample may fall while the sockets are being torn down).
    pub cycle_end_kib: Vec<(f64, u64)>,
    /// Least-squares slope of the per-cycle samples over the second half.
    pub slope_kib_per_min: Option<f64>,
    pub max_slope_kib_per_min: f64,
    /// Why the soak failed, if it did.
    pub problem: Option<String>,
}

/// The soak's verdict: a Theil–Sen slope through the per-cycle samples
/// (`cycle_end_kib`) of the second half of the soak (the first half lets
/// caches and the allocator settle); a slope above `max_slope` KiB/min fails
/// the run. The timed samples go to the CSV, the per-cycle ones too (marked).
pub fn verdict(
    rss_kib: Vec<(f64, u64)>,
    cycle_end_kib: Vec<(f64, u64)>,
    cycles: usize,
    max_slope: f64,
    csv: Option<&Path>,
) -> anyhow::Result<SoakReport> {
    if let Some(path) = csv {
        let mut text = String::from("seconds,rss_kib,when\n");
        for (t, kib) in &rss_kib {
            let _ = writeln!(text, "{t:.1},{kib},timer");
        }
        for (t, kib) in &cycle_end_kib {
            let _ = writeln!(text, "{t:.1},{kib},relay_end");
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let end = rss_kib
        .iter()
        .chain(&cycle_end_kib)
        .map(|s| s.0)
        .fold(0.0, f64::max);
    let half: Vec<(f64, f64)> = cycle_end_kib
        .iter()
        .filter(|s| s.0 >= end / 2.0 && s.1 > 0)
        .map(|s| (s.0, s.1 as f64))
        .collect();
    let slope = robust_slope(&half).map(|per_sec| per_sec * 60.0);
    let problem = match slope {
        None if cycle_end_kib.iter().all(|s| s.1 == 0) => {
            Some("soak: no gateway RSS samples (give --gateway-pid)".to_owned())
        }
        None => Some(format!(
            "soak: {} cycles in the second half, at least 3 needed (a longer --soak or a shorter --duration)",
            half.len()
        )),
        Some(s) if s > max_slope => Some(format!(
            "soak: gateway RSS rising {s:.1} KiB/min over the second half (limit {max_slope} KiB/min, --max-rss-slope)"
        )),
        Some(_) => None,
    };
    Ok(SoakReport {
        cycles,
        rss_kib,
        cycle_end_kib,
        slope_kib_per_min: slope,
        max_slope_kib_per_min: max_slope,
        problem,
    })
}

/// The Theil–Sen slope through `points` (x, y): the median of the slopes
/// between every two points. Unlike a least-squares line it is not bent by
/// the odd sample taken just after the allocator gave memory back (RSS at
/// the end of a cycle's relay is ~41 MiB, or ~33 MiB when the trimmer has
/// just run). `None` for fewer than 3 points or no spread in x.
pub fn robust_slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let mut slopes: Vec<f64> = Vec::with_capacity(points.len() * (points.len() - 1) / 2);
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            if b.0 != a.0 {
                slopes.push((b.1 - a.1) / (b.0 - a.0));
            }
        }
    }
    if slopes.is_empty() {
        return None;
    }
    slopes.sort_by(f64::total_cmp);
    let mid = slopes.len() / 2;
    Some(if slopes.len() % 2 == 1 {
        slopes[mid]
    } else {
        (slopes[mid - 1] + slopes[mid]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_and_verdict() {
        assert_eq!(robust_slope(&[(0.0, 1.0), (1.0, 2.0)]), None);
        let s = robust_slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]).unwrap();
        assert!((s - 2.0).abs() < 1e-9);
        // Flat with a few low samples early on (the trimmer just ran): flat.
        let dips: Vec<(f64, f64)> = (0..40)
            .map(|i| {
                (
                    i as f64,
                    if i % 9 == 0 && i < 30 {
                        33_000.0
                    } else {
                        41_000.0
                    },
                )
            })
            .collect();
        assert_eq!(robust_slope(&dips), Some(0.0));
        // 1 KiB/s rising = 60 KiB/min: fails at 10, passes at 100.
        let rising: Vec<(f64, u64)> = (0..20).map(|i| (i as f64, 1000 + i)).collect();
        let r = verdict(vec![], rising.clone(), 1, 10.0, None).unwrap();
        assert!((r.slope_kib_per_min.unwrap() - 60.0).abs() < 1e-6);
        assert!(r.problem.is_some());
        assert!(
            verdict(vec![], rising, 1, 100.0, None)
                .unwrap()
                .problem
                .is_none()
        );
        // Flat in the second half passes, whatever the first half did.
        let settles: Vec<(f64, u64)> = (0..20)
            .map(|i| (i as f64, if i < 10 { 500 + 50 * i } else { 2000 }))
            .collect();
        assert!(
            verdict(vec![], settles.clone(), 1, 1.0, None)
                .unwrap()
                .problem
                .is_none()
        );
        // A timed sample taken during a teardown does not bend the line.
        let torn_down = vec![(19.5, 10)];
        assert!(
            verdict(torn_down, settles, 1, 1.0, None)
                .unwrap()
                .problem
                .is_none()
        );
    }
}
