//! `--tls-cert` / `--tls-key`: the listener speaks HTTPS and WSS itself, with
//! rustls (ring provider: builds with a C compiler only). The certificate
//! and key are read once at start; errors name the file. The handshake of
//! each connection runs in its own task in [`crate::serve`], bounded by the
//! header timeout.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;

/// The first byte of a TLS handshake record (a ClientHello).
pub const HANDSHAKE_RECORD: u8 = 0x16;

/// The acceptor for `config`'s certificate and key; `None` without them.
pub fn from_config(config: &Config) -> anyhow::Result<Option<TlsAcceptor>> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => load(cert, key).map(Some),
        (None, None) => Ok(None),
        _ => anyhow::bail!("--tls-cert and --tls-key go together: give both or neither"),
    }
}

/// Reads a PEM certificate chain and its private key into an acceptor that
/// offers HTTP/1.1 by ALPN (the only protocol served).
pub fn load(cert_path: &Path, key_path: &Path) -> anyhow::Result<TlsAcceptor> {
    let certs = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("--tls-cert {}: cannot read", cert_path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "--tls-cert {}: no PEM certificate in it",
        cert_path.display()
    );
    let key = PrivateKeyDer::from_pem_file(key_path).with_context(|| {
        format!(
            "--tls-key {}: cannot read a PEM private key",
            key_path.display()
        )
    })?;
    let mut server = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "--tls-cert {} with --tls-key {}: not a usable certificate and key pair",
                cert_path.display(),
                key_path.display()
            )
        })?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// What a plain HTTP request to the TLS port gets before the connection
/// closes: a readable answer instead of TLS alert bytes.
pub fn plain_http_answer() -> Vec<u8> {
    const BODY: &str = "This port speaks HTTPS: use https:// or wss://\n";
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    )
    .into_bytes()
}
