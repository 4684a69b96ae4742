//! Behind a real reverse proxy: Debian's nginx with the repository's
//! `deploy/nginx/pairgate.conf` in front of the built binary. Pages and both
//! sockets work through it, the phone sees the browser's address (with
//! `--trust-proxy`), and the default Origin rule holds.

use std::net::IpAddr;

use pairgate::client::ConnectOptions;
use serde_json::{Value, json};

use crate::support::*;

const BROWSER_IP: &str = "127.0.0.9";

async fn web_through(nginx: &Nginx, origin: Option<String>, headers: &[(&str, &str)]) -> Client {
    let opts = ConnectOptions {
        user_agent: Some(CHROME_LINUX_UA.to_owned()),
        origin,
        bind: Some(BROWSER_IP.parse::<IpAddr>().unwrap()),
        timeout: T,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..ConnectOptions::default()
    };
    try_open_opts(&nginx.url("/ws/web"), &opts)
        .await
        .unwrap_or_else(|e| panic!("web socket through nginx: {e}"))
}

/// Pairs a web socket opened through nginx with a phone opened through
/// nginx: the phone's `link_request`.
async fn link_request_through(nginx: &Nginx, g: &BinGateway, headers: &[(&str, &str)]) -> Value {
    let acc = account("proxied");
    let phone = Client::open(&nginx.url("/ws/phone")).await;
    phone.request_frame(&auth(&g.phone_token(&acc))).await;
    let origin = format!("http://{}", nginx.addr);
    let web = web_through(nginx, Some(origin), headers).await;
    web.send_frame(&PairOpts::new().pair_frame(), None).await;
    let qr = web.expect("qr").await;
    let lr = phone.request_frame(&link_ref(&qr)).await;
    assert_eq!(lr["type"], "link_request", "{lr}");
    let dl = phone.request_frame(&confirm(&lr)).await;
    assert_eq!(dl["type"], "device_linked", "{dl}");
    web.expect("linked").await;
    // Relay both ways through the proxy.
    let ack = web.send_body(&json!("from the browser"), None).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(phone.expect("message").await["body"], "from the browser");
    let ack = phone.send_body(&json!("from the phone"), None).await;
    assert_eq!(ack["delivered"], 1, "{ack}");
    assert_eq!(web.expect("message").await["body"], "from the phone");
    lr
}

/// The gateway behind nginx, as deploy/nginx/pairgate.conf says to run it.
async fn gateway_behind_nginx(dir: &std::path::Path, trust_proxy: bool) -> (BinGateway, Nginx) {
    let proxy_addr = Nginx::pick_addr();
    let public_url = format!("http://{proxy_addr}");
    let mut args = vec!["--public-url", public_url.as_str()];
    if trust_proxy {
        args.extend(["--trust-proxy", "127.0.0.1"]);
    }
    let g = BinGateway::serve(dir, &args, &[]).await;
    let nginx = Nginx::start(proxy_addr, g.addr).await;
    (g, nginx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_both_sockets_work_through_nginx_and_the_phone_sees_the_browser() {
    let dir = tempfile::tempdir().unwrap();
    let (g, nginx) = gateway_behind_nginx(dir.path(), true).await;
    for path in ["/", "/static/app.js", "/healthz", "/readyz"] {
        let r = http_get(nginx.addr, path, &[]).await;
        assert_eq!(r.status, 200, "GET {path} through nginx");
    }
    let lr = link_request_through(&nginx, &g, &[]).await;
    assert_eq!(lr["device"]["ip"], BROWSER_IP, "{lr}");
    // What a client claims is not believed: nginx appends the real address
    // and the gateway takes the right-most one it does not trust.
    let lr = link_request_through(&nginx, &g, &[("X-Forwarded-For", "203.0.113.7")]).await;
    assert_eq!(lr["device"]["ip"], BROWSER_IP, "{lr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_trust_proxy_the_address_is_the_proxys() {
    let dir = tempfile::tempdir().unwrap();
    let (g, nginx) = gateway_behind_nginx(dir.path(), false).await;
    let lr = link_request_through(&nginx, &g, &[("X-Forwarded-For", "203.0.113.7")]).await;
    assert_eq!(lr["device"]["ip"], "127.0.0.1", "{lr}");
}

/// The default Origin rule behind the proxy: the page's own origin (the
/// proxy's address) opens sockets, another site's does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_origin_rule_holds_behind_nginx() {
    let dir = tempfile::tempdir().unwrap();
    let (_g, nginx) = gateway_behind_nginx(dir.path(), true).await;
    let own = format!("http://{}", nginx.addr);
    drop(web_through(&nginx, Some(own.clone()), &[]).await);
    assert_eq!(
        upgrade_status(nginx.addr, "/ws/web", &[("Origin", &own)]).await,
        101
    );
    for evil in ["http://evil.example.test", "null"] {
        assert_eq!(
            upgrade_status(nginx.addr, "/ws/web", &[("Origin", evil)]).await,
            403,
            "Origin {evil} through nginx"
        );
    }
}
