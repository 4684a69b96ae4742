//! A full disk, or a store that fails its writes: the request that needed
//! the write is answered `internal`, nothing unwritten is acknowledged, the
//! gateway keeps serving what needs no write (relay, resume, lists, pages),
//! and the same requests succeed once space returns; after a `kill -9` and a
//! restart, exactly what was acknowledged is there.
//!
//! Two ways, one scenario: the built binary with its data dir on a small
//! tmpfs that the test fills up with a filler file and then frees (root
//! only: without `mount` the test says so loudly and runs the in-process
//! way instead), and an in-process gateway whose store backend (the redb
//! file, wrapped) refuses writes while the test says so.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pairgate::store::{Backend, RedbBackend, StoreOp, StoredSession};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::support::*;

/// What fills the disk and frees it again.
enum Disk {
    /// A tmpfs mounted for the test; filled with `filler`.
    Tmpfs { mount: PathBuf, filler: PathBuf },
    /// The in-process backend's switch.
    Switch(Arc<AtomicBool>),
}

impl Disk {
    fn fill(&self) {
        match self {
            Disk::Tmpfs { filler, .. } => {
                let mut f = std::fs::File::create(filler).expect("create filler");
                // Big chunks, then pages, until not one more byte fits.
                for chunk in [1 << 20, 4096, 1] {
                    let buf = vec![0u8; chunk];
                    while f.write_all(&buf).is_ok() {}
                }
                let err = f.write_all(&[0]).expect_err("the tmpfs is full");
                assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
            }
            Disk::Switch(full) => full.store(true, Ordering::SeqCst),
        }
    }

    fn free(&self) {
        match self {
            Disk::Tmpfs { filler, .. } => std::fs::remove_file(filler).expect("remove filler"),
            Disk::Switch(full) => full.store(false, Ordering::SeqCst),
        }
    }
}

/// What was acknowledged, to be found again after the restart.
struct Outcome {
    account: String,
    phone_token: String,
    /// (token, session id) of every session that must resume.
    alive: Vec<(String, String)>,
    /// Tokens of sessions whose ending was acknowledged.
    ended: Vec<String>,
}

/// The scenario on `g`, whose store lives on `disk`. With `strict`, every
/// write fails while the disk is full (the failing backend). A real full
/// disk may still take a write that fits in pages the store file already
/// holds (redb reuses freed pages): such a request succeeds, and then it must
/// be kept like any other; but the first link (a new record) is refused.
async fn fill_refuse_serve_recover(g: &impl Gateway, disk: &Disk, strict: bool) -> Outcome {
    let acc = account("full-disk");
    let phone_token = g.phone_token(&acc);
    let phone = g.phone_with(&acc, &phone_token).await;
    let a = g.pair(&phone, &PairOpts::new()).await;
    let mut alive = vec![(a.token.clone(), a.session_id.clone())];
    let mut ended = Vec::new();

    disk.fill();

    // A link needs a write: internal, no session, the web side starts over.
    let (b_web, qr) = g.pairing(&PairOpts::new()).await;
    let lr = phone.request_frame(&link_ref(&qr)).await;
    assert_eq!(lr["type"], "link_request", "{lr}");
    phone.request_frame_error(&confirm(&lr), "internal").await;
    b_web.expect("pair_rejected").await;
    let b_qr = b_web.expect("qr").await;
    b_web.assert_quiet("linked").await;
    phone.assert_quiet("device_linked").await;
    assert_eq!(
        session_ids(&list_sessions(&phone).await),
        vec![a.session_id.clone()]
    );

    // What needs no write goes on: relay both ways, a new phone socket, pages.
    let ack = a.web.send_body(&json!({"n": 1}), None).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    phone
        .expect_field("message", "from", &json!(a.session_id))
        .await;
    let ack = phone.send_body(&json!({"n": 2}), None).await;
    assert_eq!(ack["delivered"], 1, "{ack}");
    a.web.expect_field("message", "from", &json!("phone")).await;
    let phone = g.phone_with(&acc, &phone_token).await;
    assert_eq!(g.http_get("/healthz", &[]).await.status, 200);

    // Endings need a write: internal, and the session is still there (its
    // socket was torn down first: it resumes).
    for frame in [logout(&a.session_id), ClientFrame::LogoutAll] {
        let r = phone.request_frame(&frame).await;
        eprintln!("full disk: {} answered {r}", frame.frame_type().name());
        if r["type"] == "ok" && !strict {
            ended.push(a.token.clone());
            alive.clear();
            break;
        }
        assert_eq!(r["type"], "error", "{r}");
        assert_eq!(r["code"], "internal", "{r}");
        let _web = g.resume_ok(&a.token, &a.session_id).await;
        assert_eq!(
            session_ids(&list_sessions(&phone).await),
            vec![a.session_id.clone()]
        );
    }

    disk.free();

    // Space is back: the same requests succeed.
    let lr = phone.request_frame(&link_ref(&b_qr)).await;
    assert_eq!(lr["type"], "link_request", "{lr}");
    let dl = phone.request_frame(&confirm(&lr)).await;
    assert_eq!(dl["type"], "device_linked", "after space returned: {dl}");
    let linked = b_web.expect("linked").await;
    if alive.pop().is_some() {
        let ok = phone.request_frame(&logout(&a.session_id)).await;
        assert_eq!(ok["type"], "ok", "after space returned: {ok}");
        ended.push(a.token.clone());
    }
    alive.push((
        linked["token"].as_str().expect("token").to_owned(),
        linked["session_id"]
            .as_str()
            .expect("session_id")
            .to_owned(),
    ));
    Outcome {
        account: acc,
        phone_token,
        alive,
        ended,
    }
}

/// After a restart on the same store: what was acknowledged, nothing else.
async fn only_the_acknowledged_after_restart(g: &impl Gateway, o: &Outcome) {
    for (token, sid) in &o.alive {
        let _w = g.resume_ok(token, sid).await;
    }
    for token in &o.ended {
        g.assert_logged_out(token).await;
    }
    let phone = g.phone_with(&o.account, &o.phone_token).await;
    let alive: Vec<String> = o.alive.iter().map(|(_, sid)| sid.clone()).collect();
    assert_eq!(session_ids(&list_sessions(&phone).await), alive);
}

/// A tmpfs mounted on a fresh dir, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (and why) when mounting is not permitted here.
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_tmpfs_refuses_writes_with_internal_and_recovers() {
    if single_process_only("the data dir of one binary") {
        return;
    }
    let fs = match Tmpfs::mount("8m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!(
                "\n!!! FULL DISK NOT TESTED FOR REAL: cannot mount a tmpfs ({why}); \
                 running the scenario on the failing in-process backend instead !!!\n"
            );
            return on_a_backend_that_fails_on_demand().await;
        }
    };
    let disk = Disk::Tmpfs {
        mount: fs.path().to_path_buf(),
        filler: fs.path().join("filler"),
    };
    let mut g = BinGateway::serve(fs.path(), &[], &[]).await;
    let outcome = fill_refuse_serve_recover(&g, &disk, false).await;
    let log = g.log_text();
    assert!(
        log.contains("store commit failed") && log.contains("No space left on device"),
        "the refused writes are not logged as a full disk:\n{log}"
    );
    g.kill9().await;
    let g = BinGateway::serve(fs.path(), &[], &[]).await;
    only_the_acknowledged_after_restart(&g, &outcome).await;
    if let Disk::Tmpfs { mount, .. } = &disk {
        assert!(mount.join("pairgate.redb").is_file());
    }
}

/// The redb file of a data dir, refusing every write while `full` is set.
struct FailsOnDemand {
    inner: RedbBackend,
    full: Arc<AtomicBool>,
}

impl Backend for FailsOnDemand {
    fn load(&mut self) -> anyhow::Result<Vec<StoredSession>> {
        self.inner.load()
    }
    fn commit(&mut self, ops: &[StoreOp]) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.full.load(Ordering::SeqCst),
            "No space left on device (os error 28)"
        );
        self.inner.commit(ops)
    }
}

/// `pairgate::run_on_backend` in this runtime, on `data_dir`.
struct BackendGateway {
    addr: SocketAddr,
    secret: String,
    stop: Option<oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Gateway for BackendGateway {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn secret(&self) -> String {
        self.secret.clone()
    }
}

impl BackendGateway {
    async fn start(data_dir: &Path, secret: &str, full: Arc<AtomicBool>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let config = Config {
            listen: addr,
            data_dir: data_dir.to_path_buf(),
            secret: Some(secret.to_owned()),
            ..Config::default()
        };
        let backend = FailsOnDemand {
            inner: RedbBackend::open(data_dir).expect("open the store"),
            full,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(pairgate::run_on_backend(
            listener,
            config,
            backend,
            async move {
                let _ = stopped.await;
            },
        ));
        BackendGateway {
            addr,
            secret: secret.to_owned(),
            stop: Some(stop),
            handle,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(LONG, self.handle)
            .await
            .expect("gateway stopped in time")
            .expect("gateway task")
            .expect("gateway run");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_fails_on_demand_refuses_with_internal_and_recovers() {
    if single_process_only("an in-process store backend") {
        return;
    }
    on_a_backend_that_fails_on_demand().await;
}

async fn on_a_backend_that_fails_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let secret = format!("full-disk-{:016x}", rand::random::<u64>());
    let full = Arc::new(AtomicBool::new(false));
    let g = BackendGateway::start(dir.path(), &secret, full.clone()).await;
    let outcome = fill_refuse_serve_recover(&g, &Disk::Switch(full.clone()), true).await;
    g.stop().await;
    let g = BackendGateway::start(dir.path(), &secret, full).await;
    only_the_acknowledged_after_restart(&g, &outcome).await;
    g.stop().await;
}
