//! The gateway under test, seen from outside: starting one for convenience
//! (`--spawn-gateway`), finding its pid by listening port, and sampling its
//! RSS and CPU time from /proc.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// A gateway this run started; stopped (SIGTERM, then SIGKILL) by `stop` or on drop.
pub struct Spawned {
    child: Child,
    pub addr: SocketAddr,
    pub pid: u32,
    pub secret: String,
    /// The last lines of its log, shown when something goes wrong.
    pub log_tail: Arc<Mutex<VecDeque<String>>>,
    // Removed with the gateway's store when the run ends.
    _data_dir: tempfile::TempDir,
}

/// Log lines kept from the spawned gateway.
const LOG_TAIL: usize = 50;

/// The lines `tail` holds now, oldest first.
pub fn log_lines(tail: &Mutex<VecDeque<String>>) -> Vec<String> {
    tail.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .cloned()
        .collect()
}

impl Spawned {
    /// Starts `bin serve` on 127.0.0.1:0 with a fresh data dir and limits
    /// opened up for a load test, and waits for its `listening on` line.
    ///
    /// `secret`: the HS256 key to start it with (so several spawned nodes
    /// accept the same tokens); `None` lets it generate one.
    pub async fn start(
        bin: &Path,
        max_devices: usize,
        extra: &[String],
        secret: Option<&str>,
    ) -> anyhow::Result<Spawned> {
        Self::start_logged(bin, max_devices, extra, secret, None).await
    }

    /// `start`, also writing every line the gateway logs to `log` (whole,
    /// where the tail keeps the last few).
    pub async fn start_logged(
        bin: &Path,
        max_devices: usize,
        extra: &[String],
        secret: Option<&str>,
        log: Option<&Path>,
    ) -> anyhow::Result<Spawned> {
        let mut log_file = match log {
            Some(path) => Some(
                tokio::fs::File::create(path)
                    .await
                    .with_context(|| format!("cannot create {}", path.display()))?,
            ),
            None => None,
        };
        let data_dir = tempfile::Builder::new()
            .prefix("pairgate-loadtest-")
            .tempdir()
            .context("cannot create a data dir for the gateway")?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir.path());
        // Defaults for a load test, unless the caller's extra arguments set
        // them (the gateway refuses an option given twice).
        let given = |name: &str| {
            extra
                .iter()
                .any(|a| a == name || a.starts_with(&format!("{name}=")))
        };
        if !given("--max-frames-per-sec") {
            // One client socket sends far more than a person would: the
            // per-socket frame limit would turn the test into a rate-limit test.
            cmd.args(["--max-frames-per-sec", "1000000"]);
        }
        if !given("--max-devices") {
            cmd.args(["--max-devices", &max_devices.max(4).to_string()]);
        }
        cmd.args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(secret) = secret {
            // In the environment, not on the command line (`ps` shows that).
            cmd.env("PAIRGATE_SECRET", secret);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            // The address comes from an info line; keep per-socket noise out.
            cmd.env("RUST_LOG", "info");
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let pid = child.id().context("gateway exited at once")?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let mut lines = BufReader::new(stderr).lines();
        let log_tail = Arc::new(Mutex::new(VecDeque::new()));
        let keep = |tail: &Mutex<VecDeque<String>>, line: &str| {
            let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
            if t.len() == LOG_TAIL {
                t.pop_front();
            }
            t.push_back(line.to_owned());
        };
        let addr = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                keep(&log_tail, &line);
                if let Some(f) = &mut log_file {
                    f.write_all(format!("{line}\n").as_bytes()).await?;
                }
                if let Some(addr) = listening_addr(&line) {
                    return Ok(addr);
                }
            }
            bail!("the gateway exited before listening")
        })
        .await
        .context("the gateway did not say where it listens within 60 s")?;
        let addr = match addr {
            Ok(a) => a,
            Err(e) => {
                return Err(e.context(log_lines(&log_tail).join("\n")));
            }
        };
        // Keep draining its log, or a full pipe would stall the gateway.
        let tail = log_tail.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                keep(&tail, &line);
                if let Some(f) = &mut log_file
                    && f.write_all(format!("{line}\n").as_bytes()).await.is_err()
                {
                    log_file = None;
                }
            }
        });
        // The gateway created the secret file before it started listening.
        let secret = pairgate::tokens::resolve_secret(None, data_dir.path())?;
        Ok(Spawned {
            child,
            addr,
            pid,
            secret,
            log_tail,
            _data_dir: data_dir,
        })
    }

    /// `kill -9`: the process dies at once, with whatever it held in memory
    /// (`loadtest chaos`). Reaped here; `stop` afterwards just reports it.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        self.child.start_kill().context("SIGKILL")?;
        self.child
            .wait()
            .await
            .context("reaping the killed gateway")?;
        Ok(())
    }

    /// SIGTERM, then SIGKILL after 8 s; the exit status as text.
    pub async fn stop(mut self) -> String {
        // Already dead and reaped (`kill9`): its pid may be someone else's now.
        if let Ok(Some(status)) = self.child.try_wait() {
            return status.to_string();
        }
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        match tokio::time::timeout(Duration::from_secs(8), self.child.wait()).await {
            Ok(Ok(status)) => status.to_string(),
            _ => {
                let _ = self.child.kill().await;
                "did not stop within 8 s of SIGTERM; killed".to_owned()
            }
        }
    }
}

/// `... listening on http://127.0.0.1:41234 (open ...` → the address.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.split("listening on http://").nth(1)?;
    let addr = rest.split(|c: char| c.is_whitespace() || c == '/').next()?;
    addr.parse().ok()
}

/// The pid of the process listening on TCP `port` on this machine, found
/// through /proc/net/tcp{,6} (socket inode) and /proc/*/fd.
pub fn find_listener_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEXIP:HEXPORT; state 0A is LISTEN.
            if f.len() > 9 && f[3] == "0A" {
                let local_port = f[1]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok());
                if local_port == Some(port) {
                    inodes.push(format!("socket:[{}]", f[9]));
                }
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| target.as_os_str() == i.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

/// One reading of a process from /proc.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ProcSample {
    pub rss_bytes: u64,
    /// Peak RSS so far (VmHWM).
    pub peak_rss_bytes: u64,
    /// utime + stime.
    pub cpu_secs: f64,
}

pub fn sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|v| v * 1024)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from field 3 on:
    // utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ProcSample {
        rss_bytes: kb("VmRSS:").unwrap_or(0),
        peak_rss_bytes: kb("VmHWM:").unwrap_or(0),
        cpu_secs: ticks as f64 / hz,
    })
}

/// Sums readings of several processes (gateway nodes, or the workers).
pub fn sample_all(pids: &[u32]) -> ProcSample {
    pids.iter()
        .filter_map(|&p| sample(p))
        .fold(ProcSample::default(), |a, s| ProcSample {
            rss_bytes: a.rss_bytes + s.rss_bytes,
            peak_rss_bytes: a.peak_rss_bytes + s.peak_rss_bytes,
            cpu_secs: a.cpu_secs + s.cpu_secs,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_listening_line() {
        let line = "2025-01-01T00:00:00Z  INFO pairgate: listening on http://127.0.0.1:43111 (open http://127.0.0.1:43111/ in a browser; data dir /tmp/x)";
        assert_eq!(
            listening_addr(line),
            Some("127.0.0.1:43111".parse().unwrap())
        );
        assert_eq!(listening_addr("nothing here"), None);
    }

    #[test]
    fn samples_itself() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_bytes > 0);
        assert!(s.peak_rss_bytes >= s.rss_bytes);
    }
}
