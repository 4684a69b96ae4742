//! `wss://`: the client speaks TLS to a server whose certificate (made here
//! for 127.0.0.1, self-signed) it trusts through a CA file, and refuses it
//! without one. The server is a small WebSocket over tokio-rustls that says
//! `hello` and answers `auth` with `ready`: enough of a gateway for the
//! client's part.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pairgate_client::{Client, ClientError, ConnectOptions, tls};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(20);

struct TlsServer {
    url: String,
    ca_pem: tempfile::NamedTempFile,
}

/// Serves `wss://127.0.0.1:<port>/ws/phone` until the test ends.
async fn tls_server() -> TlsServer {
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let ca_pem = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_pem.path(), key.cert.pem()).unwrap();
    let cert = CertificateDer::from(key.cert.der().to_vec());
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], private)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("wss://{}/ws/phone", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                    return;
                };
                let hello = json!({"type":"hello","protocol":1,"heartbeat_ms":25000,"max_frame_bytes":65536});
                if ws.send(Message::text(hello.to_string())).await.is_err() {
                    return;
                }
                while let Some(Ok(Message::Text(t))) = ws.next().await {
                    let frame: Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                    let reply = match frame["type"].as_str() {
                        Some("auth") => {
                            json!({"type":"ready","id":frame["id"],"role":"phone","account":"alice"})
                        }
                        _ => {
                            json!({"type":"error","id":frame["id"],"code":"unknown_type","message":"test server"})
                        }
                    };
                    if ws.send(Message::text(reply.to_string())).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    TlsServer { url, ca_pem }
}

#[tokio::test]
async fn wss_with_the_servers_ca_file_connects_and_authenticates() {
    let server = tls_server().await;
    let opts = ConnectOptions {
        tls: Some(tls::config(Some(server.ca_pem.path())).unwrap()),
        timeout: T,
        ..ConnectOptions::default()
    };
    let mut phone = Client::phone(&server.url, "token", &opts).await.unwrap();
    assert_eq!(phone.hello["type"], "hello");
    // Requests and replies go over the TLS stream like over TCP.
    let err = phone
        .request(pairgate_client::protocol::ClientFrame::ListSessions)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("unknown_type"));
}

#[tokio::test]
async fn wss_without_the_ca_refuses_the_self_signed_certificate() {
    let server = tls_server().await;
    let opts = ConnectOptions {
        timeout: T,
        ..ConnectOptions::default()
    };
    // Only the webpki roots are trusted: the handshake fails on the certificate.
    match Client::connect(&server.url, &opts).await {
        Err(ClientError::Socket(e)) => {
            let text = e.to_string().to_lowercase();
            assert!(text.contains("certificate"), "{text}");
        }
        Err(e) => panic!("expected a TLS error, got {e}"),
        Ok(_) => panic!("connected to a self-signed server without trusting it"),
    }
}

#[test]
fn a_ca_file_without_a_certificate_is_refused_naming_it() {
    let empty = tempfile::NamedTempFile::new().unwrap();
    let err = tls::config(Some(empty.path())).unwrap_err();
    assert!(err.contains(&empty.path().display().to_string()), "{err}");
}
