//! Debian's nginx in front of a gateway, with the repository's own
//! `deploy/nginx/pairgate.conf` (only its listen address and upstream
//! changed), in a temp dir of its own.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

pub struct Nginx {
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// An address for nginx to listen on, picked before the gateway starts
    /// (whose `--public-url` names it).
    pub fn pick_addr() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
    }

    /// nginx on `addr` (from `pick_addr`), proxying to `upstream`.
    pub async fn start(addr: SocketAddr, upstream: SocketAddr) -> Nginx {
        let conf_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx/pairgate.conf");
        let site = std::fs::read_to_string(&conf_path).expect("read deploy/nginx/pairgate.conf");
        let site = site
            .replace("listen 80;", &format!("listen {addr};"))
            .replace("server 127.0.0.1:8080;", &format!("server {upstream};"));
        assert!(site.contains(&format!("listen {addr};")) && site.contains(&upstream.to_string()));
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        std::fs::write(dir.path().join("pairgate.conf"), site).unwrap();
        std::fs::write(
            dir.path().join("nginx.conf"),
            format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log stderr warn;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  \
                 proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
                 uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
                 include {d}/pairgate.conf;\n}}\n"
            ),
        )
        .unwrap();
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            // One process (master_process off): killing it leaves no worker
            // holding the test's output open.
            .kill_on_drop(true)
            .spawn()
            .expect("start nginx (Debian package nginx; tests/run.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not listen on {addr} in 20 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Nginx {
            addr,
            child,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn nginx_binary() -> &'static str {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("nginx")
}
