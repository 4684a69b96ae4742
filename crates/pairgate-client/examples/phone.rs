//! A phone: authenticates with a phone token, links the web session whose
//! ref, code or QR payload is given, confirms, and prints what it receives.
//!
//! ```sh
//! cargo run -p pairgate-client --example phone -- GATEWAY TOKEN REF [CA_PEM]
//! ```
//! GATEWAY is `ws://host:port` or `wss://host:port`; CA_PEM trusts a private
//! or self-signed certificate for `wss://`.

use std::process::ExitCode;

use pairgate_client::{Client, ClientError, ConnectOptions, tls};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [gateway, token, target, rest @ ..] = args.as_slice() else {
        eprintln!("usage: phone GATEWAY TOKEN REF [CA_PEM]");
        return ExitCode::from(2);
    };
    match run(gateway, token, target, rest.first()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("phone: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    gateway: &str,
    token: &str,
    target: &str,
    ca: Option<&String>,
) -> Result<(), Box<dyn std::error::Error>> {
    let opts = ConnectOptions {
        tls: ca.map(|p| tls::config(Some(p.as_ref()))).transpose()?,
        ..ConnectOptions::default()
    };
    let url = format!("{}/ws/phone", gateway.trim_end_matches('/'));
    let mut phone = Client::phone(&url, token, &opts).await?;
    let request = phone.link(target).await?;
    println!(
        "{} ({}) asks to link: confirming",
        request.device_name, request.ip
    );
    let session = phone.confirm(&request.request_id).await?;
    println!("linked {}", session.session_id);
    loop {
        match phone.next().await {
            Ok(event) if event["type"] == "message" => {
                println!("{}: {}", event["from"], event["body"]);
            }
            Ok(event) => println!("{event}"),
            // Nothing for a while: keep listening.
            Err(ClientError::Timeout(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
