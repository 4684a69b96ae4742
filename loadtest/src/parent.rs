//! The parent process: works out the plan, starts the gateway if asked, runs
//! the worker processes through the phases in lock-step, samples the
//! gateway between phases, shows progress, and merges and reports the results.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::http::Uri;

use crate::cli::{Opts, parse_source_ips};
use crate::clock::now_ns;
use crate::gateway::{self, ProcSample, Spawned};
use crate::report::{self, GatewayReport, Merged, PhaseReport, Report, RunInfo};
use crate::soak;
use crate::wire::{Command, Event, Progress, WorkerConfig, WorkerResult};

/// Sockets per worker process the default `--processes` aims at: below the
/// 20,000 fds a process may hold, with room for churn's overlap and the rest.
const SOCKETS_PER_PROCESS: usize = 18_000;
/// How far ahead of "now" the parent puts the logout_all release instant.
const LOGOUT_RELEASE_AHEAD_NS: u64 = 200_000_000;
/// Sockets per source address before `--source-ips` is picked automatically.
const SOCKETS_PER_SOURCE_IP: usize = 25_000;

pub async fn run(opts: Opts) -> anyhow::Result<bool> {
    anyhow::ensure!(opts.phones > 0, "--phones must be at least 1");
    anyhow::ensure!(opts.in_flight > 0, "--in-flight must be at least 1");
    anyhow::ensure!(
        opts.rate >= 0.0 && opts.rate.is_finite(),
        "--rate must be >= 0"
    );
    let mut spawned = Vec::new();
    if let Some(bin) = &opts.spawn_gateway {
        for k in 0..opts.spawn_gateways.max(1) {
            // Every node takes the first one's secret, so one token works on all.
            let secret = spawned.first().map(|g: &Spawned| g.secret.clone());
            match Spawned::start(
                bin,
                opts.webs_per_phone,
                &opts.gateway_args,
                secret.as_deref(),
            )
            .await
            {
                Ok(g) => spawned.push(g),
                Err(e) => {
                    stop_all(spawned, false).await;
                    return Err(e.context(format!("starting gateway node {k}")));
                }
            }
        }
    }
    let result = run_with(&opts, &spawned).await;
    let exit = stop_all(spawned, result.is_err()).await;
    let (mut report, text) = result?;
    report.gateway.exit = exit;
    if let Some(e) = &report.gateway.exit
        && e.split("; ").any(|one| !one.contains("exit status: 0"))
    {
        report.ok = false;
        report
            .problems
            .push(format!("spawned gateway did not exit cleanly: {e}"));
    }
    print!("{text}");
    if let Some(e) = &report.gateway.exit {
        println!("spawned gateway stopped: {e}");
    }
    if let Some(path) = &opts.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report.ok)
}

/// Stops the spawned nodes; how they exited (`None` when none was spawned).
async fn stop_all(spawned: Vec<Spawned>, show_log: bool) -> Option<String> {
    if spawned.is_empty() {
        return None;
    }
    let mut exits = Vec::new();
    for (k, g) in spawned.into_iter().enumerate() {
        let tail = crate::gateway::log_lines(&g.log_tail);
        exits.push(g.stop().await);
        if show_log {
            eprintln!("gateway node {k} log (last lines):\n{}", tail.join("\n"));
        }
    }
    exits.dedup();
    Some(exits.join("; "))
}

async fn run_with(opts: &Opts, spawned: &[Spawned]) -> anyhow::Result<(Report, String)> {
    let (urls, secret) = match spawned.first() {
        Some(g) => (
            spawned.iter().map(|g| format!("ws://{}", g.addr)).collect(),
            g.secret.clone(),
        ),
        None => (opts.urls.clone(), secret(opts)?),
    };
    // Spawned nodes share nothing but the secret: keep each account on one.
    let pin_accounts = opts.pin_accounts || spawned.len() > 1;
    let mut gateway_pids = opts.gateway_pids.clone();
    if !spawned.is_empty() {
        gateway_pids.extend(spawned.iter().map(|g| g.pid));
    } else if gateway_pids.is_empty() {
        gateway_pids = find_gateways(&urls);
    }
    let webs = opts.phones * opts.webs_per_phone;
    let sockets = opts.phones + webs;
    let processes = opts
        .processes
        .unwrap_or(sockets.div_ceil(SOCKETS_PER_PROCESS))
        .clamp(1, opts.phones);
    let source_ips = match &opts.source_ips {
        Some(spec) => parse_source_ips(spec)?,
        None if sockets / urls.len() > SOCKETS_PER_SOURCE_IP => {
            let n = sockets.div_ceil(SOCKETS_PER_SOURCE_IP);
            eprintln!(
                "note: {sockets} sockets: spreading them over source addresses 127.0.0.1..{n}"
            );
            parse_source_ips(&n.to_string())?
        }
        None => Vec::new(),
    };
    if spawned.is_empty() && opts.webs_per_phone > 4 {
        eprintln!(
            "note: {} web clients per phone: the gateway's --max-devices must be at least that",
            opts.webs_per_phone
        );
    }
    let direction = opts.direction;
    let senders = opts.phones * usize::from(direction.phone_sends())
        + webs * usize::from(direction.web_sends());
    let per_socket_rate = if opts.rate > 0.0 && senders > 0 {
        opts.rate / senders as f64
    } else {
        0.0
    };
    // Unique across runs against one gateway (its store keeps accounts).
    let wall_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let run_id = format!("lt{:x}", wall_ms % 0xff_ffff_ffff);
    let configs: Vec<WorkerConfig> = (0..processes)
        .map(|k| WorkerConfig {
            index: k,
            run_id: run_id.clone(),
            secret: secret.clone(),
            urls: urls.clone(),
            pin_accounts,
            first_account: opts.phones * k / processes,
            end_account: opts.phones * (k + 1) / processes,
            webs_per_phone: opts.webs_per_phone,
            msg_size: opts.msg_size,
            in_flight: opts.in_flight,
            per_socket_rate,
            direction,
            source_ips: source_ips.clone(),
            threads: opts.threads,
            connect_concurrency: opts.connect_concurrency,
            timeout_ms: opts.timeout.as_millis() as u64,
            drain_timeout_ms: opts.drain_timeout.as_millis() as u64,
        })
        .collect();
    let run = RunInfo {
        urls: urls.clone(),
        phones: opts.phones,
        webs_per_phone: opts.webs_per_phone,
        msg_size: opts.msg_size,
        rate: opts.rate,
        in_flight: opts.in_flight,
        direction: format!("{direction:?}").to_lowercase(),
        warmup_secs: opts.warmup.as_secs_f64(),
        duration_secs: opts.duration.as_secs_f64(),
        churn_rounds: opts.churn_rounds,
        processes,
        threads_per_process: opts.threads,
        source_ips: source_ips.len(),
        pin_accounts,
        cycles: 1,
    };

    let soak = opts.soak.filter(|d| !d.is_zero());
    // A soak runs hundreds of cycles: no bars, one line per cycle instead.
    let bars = Bars::new(opts.quiet || soak.is_some());
    let mut workers = Workers::spawn(configs).await?;
    let mut gw = GatewayReport {
        pids: gateway_pids.clone(),
        ..Default::default()
    };
    let mut phases: Vec<PhaseReport> = Vec::new();
    let mut crashed = Vec::new();
    let before = gateway::sample_all(&gateway_pids);
    gw.rss_before_connect_bytes = before.rss_bytes;

    let mut sockets_held = 0;
    let plan: Vec<(&str, Command, u64)> = {
        let mut plan = vec![("connect", Command::Connect, sockets as u64)];
        // The relay's instants are fixed when the phase begins (below).
        plan.push((
            "relay",
            Command::Relay {
                start_ns: 0,
                warm_ns: 0,
                end_ns: 0,
            },
            0,
        ));
        if opts.churn_rounds > 0 && webs > 0 {
            plan.push((
                "churn",
                Command::Churn {
                    rounds: opts.churn_rounds,
                },
                (webs * opts.churn_rounds) as u64,
            ));
        }
        if soak.is_some() && webs > 0 {
            plan.push(("logout_one", Command::LogoutOne, opts.phones as u64));
        }
        // Every phone parked first, then all released at one instant.
        plan.push(("logout_ready", Command::LogoutReady, opts.phones as u64));
        plan.push((
            "logout",
            Command::Logout { release_ns: 0 },
            opts.phones as u64,
        ));
        plan
    };
    let started = Instant::now();
    let sampler = soak.map(|_| soak::RssSampler::start(gateway_pids.clone(), opts.rss_every));
    let mut cycles = 0;
    let mut cycle_end_kib = Vec::new();
    'cycles: loop {
        for (name, cmd, len) in &plan {
            let mut cmd = cmd.clone();
            if let Command::Relay {
                start_ns,
                warm_ns,
                end_ns,
            } = &mut cmd
            {
                // Every process starts, leaves warm-up and stops at the same instants.
                *start_ns = now_ns() + 300_000_000;
                *warm_ns = *start_ns + opts.warmup.as_nanos() as u64;
                *end_ns = *warm_ns + opts.duration.as_nanos() as u64;
            }
            if let Command::Logout { release_ns } = &mut cmd {
                // Far enough ahead that every worker has the command and every
                // phone sleeps on its timer when the instant comes.
                *release_ns = now_ns() + LOGOUT_RELEASE_AHEAD_NS;
            }
            let g0 = gateway::sample_all(&gateway_pids);
            let l0 = gateway::sample_all(&workers.pids);
            let t0 = Instant::now();
            let bar = bars.phase(name, *len, opts);
            let outcome = workers.phase(&cmd, name, &bar, opts).await;
            bar.finish();
            let wall = t0.elapsed().as_secs_f64();
            let g1 = gateway::sample_all(&gateway_pids);
            let l1 = gateway::sample_all(&workers.pids);
            if soak.is_some() && *name == "relay" {
                cycle_end_kib.push((started.elapsed().as_secs_f64(), g1.rss_bytes / 1024));
            }
            let report = phase_report(name, wall, g0, g1, l0, l1);
            // A soak's cycles add up per phase.
            match phases.iter_mut().find(|p| p.name == *name) {
                Some(p) => p.add(&report),
                None => phases.push(report),
            }
            if *name == "connect" && cycles == 0 {
                gw.rss_after_connect_bytes = g1.rss_bytes;
                sockets_held = workers.sum().sockets_open;
                if sockets_held > 0 && !gateway_pids.is_empty() {
                    gw.rss_per_socket_bytes =
                        Some((g1.rss_bytes as f64 - before.rss_bytes as f64) / sockets_held as f64);
                }
            }
            if let Err(e) = outcome {
                crashed.push(format!("cycle {cycles}, phase {name}: {e:#}"));
                break 'cycles;
            }
        }
        cycles += 1;
        let Some(soak) = soak else { break };
        if !opts.quiet {
            let p = workers.sum();
            eprintln!(
                "soak: cycle {cycles} done at {:.0} s of {:.0} s; gateway RSS {:.1} MiB; failures {}",
                started.elapsed().as_secs_f64(),
                soak.as_secs_f64(),
                gateway::sample_all(&gateway_pids).rss_bytes as f64 / 1_048_576.0,
                p.failures
            );
        }
        if started.elapsed() >= soak {
            break;
        }
    }
    let soak_report = match sampler {
        Some(s) => Some(soak::verdict(
            s.stop(),
            cycle_end_kib,
            cycles,
            opts.max_rss_slope,
            opts.rss_csv.as_deref(),
        )?),
        None => None,
    };
    let mut merged = Merged::default();
    if crashed.is_empty() {
        match workers.finish().await {
            Ok(results) => {
                for r in results {
                    merged.add(r)?;
                }
            }
            Err(e) => crashed.push(format!("collecting results: {e:#}")),
        }
    }
    if !crashed.is_empty() {
        // Whatever the workers said last is all there is.
        merged.totals = workers.sum();
    }
    let end = gateway::sample_all(&gateway_pids);
    gw.rss_end_bytes = end.rss_bytes;
    gw.peak_rss_bytes = end.peak_rss_bytes;
    workers.reap().await;
    drop(bars);

    let mut run = run;
    run.cycles = cycles;
    let mut problems = report::problems(&merged, &run, opts.allow_errors, &crashed);
    if let Some(soak) = &soak_report {
        problems.extend(soak.problem.clone());
    }
    let report = Report {
        ok: problems.is_empty(),
        problems,
        throughput: report::throughput(
            &merged,
            opts.duration.as_secs_f64() * cycles as f64,
            opts.rate,
        ),
        latency_ms: report::latencies(&merged),
        logout_all: report::logout_all(&merged),
        soak: soak_report,
        run,
        phases,
        gateway: gw,
        sockets_held,
        totals: merged.totals.clone(),
        counts: merged.counts.clone(),
        errors: merged.errors.clone(),
        failures: merged.failures.clone(),
        failure_samples: merged.failure_samples.clone(),
    };
    if let Some(path) = &opts.plot {
        let title = format!(
            "pairgate: {} phones x {} webs, {} B, {}",
            opts.phones,
            opts.webs_per_phone,
            opts.msg_size,
            if opts.rate > 0.0 {
                format!("{} msgs/s", opts.rate)
            } else {
                format!("flat out ({} in flight)", opts.in_flight)
            }
        );
        if let Err(e) = report::plot(path, &merged.hists, &title) {
            eprintln!("no plot: {e:#}");
        }
    }
    let text = report::table(&report);
    Ok((report, text))
}

fn phase_report(
    name: &str,
    wall: f64,
    g0: ProcSample,
    g1: ProcSample,
    l0: ProcSample,
    l1: ProcSample,
) -> PhaseReport {
    let pct = |secs: f64| if wall > 0.0 { secs / wall * 100.0 } else { 0.0 };
    let g = (g1.cpu_secs - g0.cpu_secs).max(0.0);
    let l = (l1.cpu_secs - l0.cpu_secs).max(0.0);
    PhaseReport {
        name: name.to_owned(),
        wall_secs: wall,
        gateway_cpu_secs: g,
        gateway_cpu_pct: pct(g),
        loadgen_cpu_secs: l,
        loadgen_cpu_pct: pct(l),
        gateway_rss_bytes_after: g1.rss_bytes,
    }
}

/// `--secret`, or the gateway's `<data-dir>/secret` (which must exist: a
/// load test must not invent a secret the gateway does not know).
fn secret(opts: &Opts) -> anyhow::Result<String> {
    if let Some(s) = &opts.secret {
        return pairgate::tokens::resolve_secret(Some(s), &opts.data_dir);
    }
    let file: PathBuf = opts.data_dir.join(pairgate::tokens::SECRET_FILE);
    if !file.exists() {
        bail!(
            "no secret: {} does not exist; give --secret, the gateway's --data-dir, or --spawn-gateway",
            file.display()
        );
    }
    pairgate::tokens::resolve_secret(None, &opts.data_dir)
}

/// The pids listening on the ports of the local URLs.
fn find_gateways(urls: &[String]) -> Vec<u32> {
    let mut pids = Vec::new();
    for url in urls {
        let Ok(uri) = url.parse::<Uri>() else {
            continue;
        };
        let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
        let local = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified());
        if !local {
            continue;
        }
        let port = uri.port_u16().unwrap_or(80);
        if let Some(pid) = gateway::find_listener_pid(port)
            && !pids.contains(&pid)
        {
            pids.push(pid);
        }
    }
    pids
}

// ---- worker processes --------------------------------------------------------

struct Workers {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    pids: Vec<u32>,
    events: mpsc::Receiver<(usize, Option<Event>)>,
    latest: Vec<Progress>,
}

impl Workers {
    /// Re-executes this binary as `loadtest worker` once per config; each
    /// gets its config as the first line on stdin.
    async fn spawn(configs: Vec<WorkerConfig>) -> anyhow::Result<Workers> {
        let exe = std::env::current_exe().context("cannot find my own executable")?;
        let (tx, events) = mpsc::channel(1024);
        let mut w = Workers {
            children: Vec::new(),
            stdins: Vec::new(),
            pids: Vec::new(),
            events,
            latest: vec![Progress::default(); configs.len()],
        };
        for cfg in configs {
            let k = cfg.index;
            let mut child = tokio::process::Command::new(&exe)
                .args(["worker", "--index", &k.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("cannot start a worker process")?;
            w.pids.push(child.id().unwrap_or(0));
            let mut stdin = child.stdin.take().context("worker stdin")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            let mut line = serde_json::to_vec(&cfg)?;
            line.push(b'\n');
            stdin.write_all(&line).await?;
            stdin.flush().await?;
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<Event>(&line) {
                        Ok(ev) => {
                            if tx.send((k, Some(ev))).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => eprintln!("worker {k}: unreadable line ({e}): {line:.200}"),
                    }
                }
                let _ = tx.send((k, None)).await;
            });
            w.children.push(child);
            w.stdins.push(stdin);
        }
        Ok(w)
    }

    fn sum(&self) -> Progress {
        let mut p = Progress::default();
        for l in &self.latest {
            p.add(l);
        }
        p
    }

    async fn send(&mut self, cmd: &Command) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(cmd)?;
        line.push(b'\n');
        for (k, stdin) in self.stdins.iter_mut().enumerate() {
            stdin
                .write_all(&line)
                .await
                .with_context(|| format!("worker {k} is gone"))?;
            stdin.flush().await?;
        }
        Ok(())
    }

    /// Orders a phase and waits until every worker says it is done.
    async fn phase(
        &mut self,
        cmd: &Command,
        name: &str,
        bar: &PhaseBar,
        opts: &Opts,
    ) -> anyhow::Result<()> {
        self.send(cmd).await?;
        let mut done = vec![false; self.stdins.len()];
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let started = Instant::now();
        // Generous: pairing thousands of sockets takes a while, but a hung
        // worker must not hang the run.
        let mut limit = opts.timeout * 8 + opts.warmup + opts.duration + opts.drain_timeout;
        if name == "churn" {
            // A soak runs thousands of rounds; each may take up to a reply's timeout.
            limit += opts.timeout * opts.churn_rounds as u32;
        }
        loop {
            tokio::select! {
                ev = self.events.recv() => match ev {
                    Some((k, Some(Event::Progress(p)))) => self.latest[k] = p,
                    Some((k, Some(Event::Done { phase }))) if phase == name => {
                        done[k] = true;
                        if done.iter().all(|d| *d) {
                            bar.update(&self.sum(), started.elapsed());
                            return Ok(());
                        }
                    }
                    Some((k, Some(other))) => bail!("worker {k}: unexpected {other:?}"),
                    Some((k, None)) => bail!("worker {k} exited during {name}"),
                    None => bail!("every worker is gone"),
                },
                _ = tick.tick() => {
                    bar.update(&self.sum(), started.elapsed());
                    if started.elapsed() > limit {
                        bail!("phase {name} did not end within {limit:?}");
                    }
                }
            }
        }
    }

    async fn finish(&mut self) -> anyhow::Result<Vec<WorkerResult>> {
        self.send(&Command::Finish).await?;
        let mut results: Vec<Option<WorkerResult>> = vec![None; self.stdins.len()];
        let deadline = tokio::time::sleep(Duration::from_secs(30));
        tokio::pin!(deadline);
        while results.iter().any(Option::is_none) {
            tokio::select! {
                ev = self.events.recv() => match ev {
                    Some((k, Some(Event::Result(r)))) => results[k] = Some(*r),
                    Some((_, Some(_))) => {}
                    Some((k, None)) if results[k].is_none() => bail!("worker {k} exited without results"),
                    Some((_, None)) => {}
                    None => bail!("every worker is gone"),
                },
                _ = &mut deadline => bail!("workers did not report within 30 s"),
            }
        }
        Ok(results.into_iter().flatten().collect())
    }

    /// Waits briefly for the workers to exit, then kills any that did not.
    async fn reap(&mut self) {
        self.stdins.clear();
        for child in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

// ---- progress bars -------------------------------------------------------------

struct Bars {
    multi: MultiProgress,
}

struct PhaseBar {
    bar: ProgressBar,
    name: String,
    /// Relay: (warm-up + duration) in ms; the bar shows time, the message rates.
    relay_ms: Option<u64>,
    last: std::sync::Mutex<(Progress, Instant)>,
}

impl Bars {
    fn new(quiet: bool) -> Bars {
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        Bars {
            multi: MultiProgress::with_draw_target(target),
        }
    }

    fn phase(&self, name: &str, len: u64, opts: &Opts) -> PhaseBar {
        let relay_ms =
            (name == "relay").then(|| (opts.warmup + opts.duration).as_millis() as u64 + 300);
        let bar = self.multi.add(ProgressBar::new(relay_ms.unwrap_or(len)));
        let template = "{prefix:>8} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}";
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.set_prefix(name.to_owned());
        PhaseBar {
            bar,
            name: name.to_owned(),
            relay_ms,
            last: std::sync::Mutex::new((Progress::default(), Instant::now())),
        }
    }
}

impl PhaseBar {
    fn update(&self, p: &Progress, elapsed: Duration) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let dt = last.1.elapsed().as_secs_f64().max(0.001);
        match self.name.as_str() {
            "connect" => {
                self.bar.set_position(p.phones_ready + p.webs_paired);
                self.bar
                    .set_message(format!("open {} failures {}", p.sockets_open, p.failures));
            }
            "relay" => {
                let ms = (elapsed.as_millis() as u64).min(self.relay_ms.unwrap_or(0));
                self.bar.set_position(ms);
                let sent =
                    (p.sent_web + p.sent_phone).saturating_sub(last.0.sent_web + last.0.sent_phone);
                let recv =
                    (p.recv_web + p.recv_phone).saturating_sub(last.0.recv_web + last.0.recv_phone);
                self.bar.set_message(format!(
                    "ms  sent {:.0}/s recv {:.0}/s errors {} failures {}",
                    sent as f64 / dt,
                    recv as f64 / dt,
                    p.errors,
                    p.failures
                ));
            }
            "churn" => {
                self.bar.set_position(p.resumed);
                self.bar.set_message(format!("failures {}", p.failures));
            }
            _ => {
                self.bar.set_position(p.logout_ok);
                self.bar
                    .set_message(format!("web sockets closed {}", p.logged_out_webs));
            }
        }
        *last = (p.clone(), Instant::now());
    }

    fn finish(&self) {
        self.bar.finish();
    }
}
