//! `--tls-cert` / `--tls-key`: the gateway speaks HTTPS and WSS itself. A CA
//! and a certificate for `localhost` and `127.0.0.1` are made here (rcgen);
//! the clients trust that CA only. Pages over `https://`, a phone and a web
//! socket over `wss://` pairing and relaying, the Origin rule with https
//! Origins, a plain HTTP request on the TLS port, a connection that never
//! sends a ClientHello, and files that cannot be loaded; the built binary
//! over TLS, with the operator's `pairgate phone --admin-token --ca-cert`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use pairgate::protocol::{ClientFrame, LinkTarget};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::support::*;

/// A CA, a server certificate it signed (in PEM files for the gateway), and
/// a connector that trusts that CA alone.
struct Pki {
    _dir: tempfile::TempDir,
    /// The CA's certificate (PEM), for clients told to trust it.
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    connector: TlsConnector,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pairgate test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");
    let leaf_key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&leaf_key, &ca)
        .expect("certificate");
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let ca_pem = dir.path().join("ca.pem");
    std::fs::write(&ca_pem, ca.pem()).expect("write CA");
    std::fs::write(&cert, leaf.pem()).expect("write cert");
    std::fs::write(&key, leaf_key.serialize_pem()).expect("write key");

    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone()).expect("trust the CA");
    let mut client = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    Pki {
        _dir: dir,
        ca: ca_pem,
        cert,
        key,
        connector: TlsConnector::from(Arc::new(client)),
    }
}

/// TLS is the listener's concern, not the cluster's, and the cluster harness
/// checks its nodes' readiness over plain HTTP: these run on one process.
fn in_a_cluster_run() -> bool {
    single_process_only("TLS is tested on one process; the cluster harness speaks plain HTTP")
}

impl Pki {
    async fn gateway(&self, tweak: impl FnOnce(&mut Config)) -> TestGateway {
        let (cert, key) = (self.cert.clone(), self.key.clone());
        TestGateway::spawn(move |c| {
            c.tls_cert = Some(cert);
            c.tls_key = Some(key);
            tweak(c);
        })
        .await
    }

    /// A TLS connection to `addr`, checking the certificate for `name`.
    async fn connect(&self, addr: SocketAddr, name: &str) -> TlsStream<TcpStream> {
        let fut = async {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            let name = ServerName::try_from(name.to_owned()).expect("server name");
            self.connector
                .connect(name, tcp)
                .await
                .expect("TLS handshake")
        };
        tokio::time::timeout(T, fut)
            .await
            .expect("TLS handshake within the deadline")
    }

    /// `GET path` over TLS with `Connection: close`: status and body.
    async fn get(&self, addr: SocketAddr, name: &str, path: &str) -> (u16, String) {
        let mut tls = self.connect(addr, name).await;
        assert_eq!(
            tls.get_ref().1.alpn_protocol(),
            Some(&b"http/1.1"[..]),
            "ALPN"
        );
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {name}:{}\r\nConnection: close\r\n\r\n",
            addr.port()
        );
        let fut = async {
            tls.write_all(req.as_bytes()).await.expect("write");
            let mut buf = Vec::new();
            tls.read_to_end(&mut buf).await.expect("read to the end");
            buf
        };
        let buf = tokio::time::timeout(T, fut).await.expect("an answer");
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP head");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("status line in {head:?}"));
        (status, body.to_owned())
    }

    /// A `wss://` socket on `path`, by host `name`, with `origin` if given.
    async fn wss(&self, addr: SocketAddr, name: &str, path: &str, origin: Option<&str>) -> Wss {
        let tls = self.connect(addr, name).await;
        let mut req = format!("wss://{name}:{}{path}", addr.port())
            .into_client_request()
            .expect("request");
        if let Some(o) = origin {
            req.headers_mut()
                .insert("origin", HeaderValue::from_str(o).expect("origin"));
        }
        let (ws, _) = tokio::time::timeout(T, tokio_tungstenite::client_async(req, tls))
            .await
            .expect("upgrade within the deadline")
            .expect("upgraded");
        let mut wss = Wss { ws };
        assert_eq!(wss.expect("hello").await["protocol"], 1);
        wss
    }
}

/// A WebSocket over the test's TLS stream: typed frames out, JSON in.
struct Wss {
    ws: WebSocketStream<TlsStream<TcpStream>>,
}

impl Wss {
    async fn send(&mut self, frame: &ClientFrame<'_>, id: Option<&str>) {
        self.ws
            .send(Message::text(frame.to_text(id)))
            .await
            .expect("send");
    }

    /// The next frame of type `ty` (pings are answered by tungstenite;
    /// other frames before it are skipped).
    async fn expect(&mut self, ty: &str) -> Value {
        let fut = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
                        if v["type"] == ty {
                            return v;
                        }
                    }
                    Some(Ok(_)) => {}
                    other => panic!("socket ended waiting for {ty}: {other:?}"),
                }
            }
        };
        tokio::time::timeout(T, fut)
            .await
            .unwrap_or_else(|_| panic!("no {ty} within {T:?}"))
    }
}

/// A phone and a web page paired over `wss://`.
struct Paired {
    phone: Wss,
    web: Wss,
    /// The web's `linked` frame.
    linked: Value,
}

impl Pki {
    /// A `wss://` phone of `acc` (by address) and a web page with the Origin
    /// a browser on `https://localhost:PORT` sends, paired by QR; the QR
    /// link names the TLS listener.
    async fn pair(&self, addr: SocketAddr, acc: &str, token: &str) -> Paired {
        let mut phone = self.wss(addr, "127.0.0.1", "/ws/phone", None).await;
        phone
            .send(
                &ClientFrame::Auth {
                    token: token.to_owned(),
                },
                None,
            )
            .await;
        assert_eq!(phone.expect("ready").await["account"], acc);

        let origin = format!("https://localhost:{}", addr.port());
        let mut web = self.wss(addr, "localhost", "/ws/web", Some(&origin)).await;
        web.send(
            &ClientFrame::Pair {
                remember: true,
                device_name: Some("tls test".into()),
            },
            None,
        )
        .await;
        let qr = web.expect("qr").await;
        // Without --public-url, the QR link names the TLS listener.
        let payload = qr["payload"].as_str().expect("payload");
        assert!(
            payload.starts_with(&format!("https://127.0.0.1:{}/phone#ref=", addr.port())),
            "{payload}"
        );
        let reference = qr["ref"].as_str().expect("ref").to_owned();
        phone
            .send(&ClientFrame::Link(LinkTarget::Ref(reference)), Some("l1"))
            .await;
        let lr = phone.expect("link_request").await;
        phone
            .send(
                &ClientFrame::LinkConfirm {
                    request_id: lr["request_id"].as_str().expect("request_id").into(),
                },
                Some("c1"),
            )
            .await;
        phone.expect("device_linked").await;
        let linked = web.expect("linked").await;
        assert_eq!(web.expect("phone_status").await["online"], true);
        Paired { phone, web, linked }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_served_over_https() {
    if in_a_cluster_run() {
        return;
    }
    let pki = pki();
    let g = pki.gateway(|_| {}).await;
    let (status, body) = pki.get(g.addr, "127.0.0.1", "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    let (status, body) = pki.get(g.addr, "localhost", "/").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("<html") || body.contains("<!doctype"),
        "{body}"
    );
    let (status, metrics) = pki.get(g.addr, "localhost", "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("pairgate_sockets"), "{metrics}");
}

/// A phone and a web page over `wss://`, the page with the Origin a browser
/// on `https://localhost:PORT` sends: pairing, the QR link on `https://`,
/// and messages both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_and_a_web_socket_pair_and_relay_over_wss() {
    if in_a_cluster_run() {
        return;
    }
    let pki = pki();
    let g = pki.gateway(|_| {}).await;
    let acc = account("wss");
    let Paired {
        mut phone,
        mut web,
        linked,
    } = pki.pair(g.addr, &acc, &g.phone_token(&acc)).await;
    let body = serde_json::value::to_raw_value(&json!({"over": "tls"})).expect("body");
    web.send(
        &ClientFrame::Send {
            body: &body,
            to: None,
        },
        Some("s1"),
    )
    .await;
    let m = phone.expect("message").await;
    assert_eq!(m["from"], linked["session_id"], "{m}");
    assert_eq!(m["body"], json!({"over": "tls"}));
    web.expect("ack").await;

    let body = serde_json::value::to_raw_value(&json!([1, 2, 3])).expect("body");
    phone
        .send(
            &ClientFrame::Send {
                body: &body,
                to: None,
            },
            Some("s2"),
        )
        .await;
    assert_eq!(web.expect("message").await["body"], json!([1, 2, 3]));
    assert_eq!(phone.expect("ack").await["delivered"], 1);
}

/// The Origin rule is unchanged: another site's https page is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_sites_origin_is_refused_over_wss() {
    if in_a_cluster_run() {
        return;
    }
    let pki = pki();
    let g = pki.gateway(|_| {}).await;
    let mut tls = pki.connect(g.addr, "localhost").await;
    let req = format!(
        "GET /ws/web HTTP/1.1\r\nHost: localhost:{port}\r\nOrigin: https://evil.test:{port}\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        port = g.port()
    );
    let fut = async {
        tls.write_all(req.as_bytes()).await.expect("write");
        let mut buf = vec![0u8; 1024];
        let n = tls.read(&mut buf).await.expect("read");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let answer = tokio::time::timeout(T, fut).await.expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
}

/// `http://` to the TLS port: a readable 400, then the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_request_to_the_tls_port_gets_a_clear_400() {
    if in_a_cluster_run() {
        return;
    }
    let pki = pki();
    let g = pki.gateway(|_| {}).await;
    let r = http_get(g.addr, "/healthz", &[]).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.text().contains("HTTPS"), "{}", r.text());
    // The listener still serves TLS afterwards.
    assert_eq!(pki.get(g.addr, "localhost", "/healthz").await.0, 200);
}

/// A client that opens TCP and never finishes (or never starts) a TLS
/// handshake is cut off after the header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_completes_a_handshake_is_cut_off() {
    if in_a_cluster_run() {
        return;
    }
    let pki = pki();
    let g = pki
        .gateway(|c| {
            c.http_header_timeout_ms = 300;
        })
        .await;
    for sent in [&b""[..], &[0x16, 0x03, 0x01][..]] {
        let mut tcp = TcpStream::connect(g.addr).await.expect("connect");
        tcp.write_all(sent).await.expect("write");
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(LONG, tcp.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("after {sent:?}: still open after {LONG:?}"))
            .unwrap_or(0);
        assert_eq!(n, 0, "after {sent:?}: got {:?}", &buf[..n]);
    }
}

/// Files that cannot be used stop the start with a message naming them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_certificate_or_key_files_stop_the_start_naming_the_file() {
    let pki = pki();
    let data = tempfile::tempdir().expect("tempdir");
    let missing = data.path().join("no-such-cert.pem");
    let not_pem = data.path().join("not-pem.txt");
    std::fs::write(&not_pem, "not a PEM file\n").expect("write");
    let s = |p: &std::path::Path| p.display().to_string();
    for (cert, key, named) in [
        (s(&missing), s(&pki.key), s(&missing)),
        (s(&not_pem), s(&pki.key), s(&not_pem)),
        (s(&pki.cert), s(&not_pem), s(&not_pem)),
        // The certificate as its key: readable files, not a pair.
        (s(&pki.cert), s(&pki.cert), s(&pki.cert)),
    ] {
        let (st, _, err) = run_cli(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &s(data.path()),
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ])
        .await;
        assert!(!st.success(), "started with {cert} / {key}");
        assert!(err.contains(&named), "{cert} / {key}: {err}");
    }
    // One without the other is a usage error.
    let (st, _, err) = run_cli(&["serve", "--tls-cert", &s(&pki.cert)]).await;
    assert!(!st.success() && err.contains("--tls-key"), "{err}");
}

/// The built binary with `--tls-cert`/`--tls-key`: it says `listening on
/// https://`, a `wss://` phone pairs a web page, and the operator's `pairgate
/// phone --admin-token` lists and ends that session over `https://`,
/// trusting the test's CA through `--ca-cert` (and refusing the gateway
/// without it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_binary_serves_wss_and_the_operator_cli_over_https() {
    if in_a_cluster_run() {
        return;
    }
    const SECRET: &str = "tls-binary-secret";
    const ADMIN: &str = "tls-operator-token";
    let pki = pki();
    let data = tempfile::tempdir().expect("tempdir");
    let s = |p: &std::path::Path| p.display().to_string();
    let (cert, key, ca) = (s(&pki.cert), s(&pki.key), s(&pki.ca));
    let g = BinGateway::serve(
        data.path(),
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--secret",
            SECRET,
            "--admin-token",
            ADMIN,
        ],
        &[],
    )
    .await;
    assert!(g.tls, "{}", g.log_text());
    assert!(g.ws_url("/ws/phone").starts_with("wss://"));
    let acc = account("tlsbin");
    let Paired {
        phone: _phone,
        mut web,
        linked,
    } = pki
        .pair(g.addr, &acc, &mint(SECRET, &phone_claims(&acc)))
        .await;
    let sid = linked["session_id"].as_str().expect("session_id");

    let url = format!("https://127.0.0.1:{}", g.port());
    let operator = |with_ca: bool, cmd: &[&str]| {
        let mut args = vec![
            "phone",
            "--url",
            &url,
            "--admin-token",
            ADMIN,
            "--account",
            &acc,
            "--json",
        ];
        if with_ca {
            args.extend(["--ca-cert", &ca]);
        }
        args.extend_from_slice(cmd);
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_cli(&args).await
        }
    };
    let (st, out, err) = operator(true, &["sessions"]).await;
    assert!(st.success(), "{err}");
    let listed: Value = serde_json::from_str(out.lines().next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(listed["sessions"][0]["session_id"], sid, "{listed}");

    // Without --ca-cert the test's CA is not trusted: no connection.
    let (st, _, err) = operator(false, &["sessions"]).await;
    assert!(
        !st.success(),
        "trusted a certificate of an unknown CA: {err}"
    );

    let (st, out, err) = operator(true, &["logout", sid]).await;
    assert!(st.success(), "{err}");
    assert!(out.contains("\"closed\":1"), "{out}");
    assert_eq!(web.expect("logged_out").await["reason"], "admin");
}
