//! A connected phone running commands, one-shot or interactive.

use std::io::BufRead;
use std::process::ExitCode;
use std::time::Duration;

use pairgate_client::{Client, ClientError, link_target};
use pairgate_protocol::ClientFrame;
use serde_json::Value;
use tokio::sync::mpsc;

use super::commands::{Cmd, parse_command};
use super::failure::Failure;
use super::output::{
    Output, clean, describe_event, describe_link_request, describe_linked, field, plural,
    sessions_table,
};
use super::redial::{Redial, worth_redialling};

/// How a `link` request gets its answer.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Answer {
    Yes,
    Reject,
    /// The next input line (interactive mode only).
    Ask,
}

pub(super) struct Phone {
    pub(super) client: Client,
    pub(super) out: Output,
    pub(super) answer: Answer,
}

impl Phone {
    /// Runs one command; for a `link` left to the user, the request id to ask about.
    pub(super) async fn execute(&mut self, cmd: Cmd) -> Result<Option<String>, Failure> {
        match cmd {
            Cmd::Link(target) => {
                let reply = self
                    .client
                    .request(ClientFrame::Link(link_target(&target)))
                    .await?;
                self.out.frame(&reply, describe_link_request)?;
                let Some(rid) = reply["request_id"].as_str().map(str::to_owned) else {
                    return Err(ClientError::Unexpected(reply).into());
                };
                match self.answer {
                    Answer::Yes => self.confirm(&rid).await?,
                    Answer::Reject => self.reject(&rid).await?,
                    Answer::Ask => return Ok(Some(rid)),
                }
            }
            Cmd::Confirm(rid) => self.confirm(&rid).await?,
            Cmd::Reject(rid) => self.reject(&rid).await?,
            Cmd::Sessions => {
                let reply = self.client.request(ClientFrame::ListSessions).await?;
                self.out.frame(&reply, sessions_table)?;
            }
            Cmd::Logout(sid) => {
                let reply = self
                    .client
                    .request(ClientFrame::Logout {
                        session_id: Some(sid),
                    })
                    .await?;
                self.out.frame(&reply, |r| {
                    format!(
                        "ended {}",
                        plural(r["closed"].as_u64().unwrap_or(0), "session")
                    )
                })?;
            }
            Cmd::LogoutAll => {
                let reply = self.client.request(ClientFrame::LogoutAll).await?;
                self.out.frame(&reply, |r| {
                    format!(
                        "ended {}",
                        plural(r["closed"].as_u64().unwrap_or(0), "session")
                    )
                })?;
            }
            Cmd::Send { to, body } => {
                let body = serde_json::value::to_raw_value(&body)
                    .map_err(|e| ClientError::Unexpected(Value::String(e.to_string())))?;
                let reply = self
                    .client
                    .request(ClientFrame::Send { body: &body, to })
                    .await?;
                self.out.frame(&reply, |r| {
                    format!("delivered {}", r["delivered"].as_u64().unwrap_or(0))
                })?;
            }
            Cmd::Help => self.out.help()?,
            Cmd::Quit => {}
        }
        Ok(None)
    }

    pub(super) async fn confirm(&mut self, rid: &str) -> Result<(), Failure> {
        let reply = self
            .client
            .request(ClientFrame::LinkConfirm {
                request_id: rid.to_owned(),
            })
            .await?;
        self.out.frame(&reply, describe_linked)?;
        Ok(())
    }

    pub(super) async fn reject(&mut self, rid: &str) -> Result<(), Failure> {
        let reply = self
            .client
            .request(ClientFrame::LinkReject {
                request_id: rid.to_owned(),
            })
            .await?;
        self.out
            .frame(&reply, |_| format!("rejected link request {}", clean(rid)))?;
        Ok(())
    }

    /// Closes the socket politely; the exit does not depend on the gateway's answer.
    pub(super) async fn close(self, wait: Duration) {
        let _ = tokio::time::timeout(wait, self.client.close()).await;
    }
}

/// Reads stdin on a plain thread. Tokio's stdin reads on its blocking pool, and
/// a read there cannot be cancelled: the runtime could not shut down (when the
/// gateway closes the socket, say) until the user pressed enter. A detached
/// thread dies with the process.
pub(super) fn stdin_lines() -> mpsc::Receiver<std::io::Result<String>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            // Invalid UTF-8 is consumed and reported, and reading goes on; any
            // other read error ends the input.
            let go_on = match &line {
                Ok(_) => true,
                Err(e) => e.kind() == std::io::ErrorKind::InvalidData,
            };
            if tx.blocking_send(line).is_err() || !go_on {
                return;
            }
        }
    });
    rx
}

/// Commands from stdin and events from the gateway, as they come.
pub(super) async fn interactive(
    phone: &mut Phone,
    ready: &Value,
    url: &str,
    redial: &Redial,
) -> Result<ExitCode, Failure> {
    let mut lines = stdin_lines();
    if phone.out.json {
        phone.out.stdout(&ready.to_string())?;
    } else {
        phone.out.note(&format!(
            "connected to {url} as the phone of account {}; type `help` for commands",
            field(ready, "account")
        ))?;
    }
    // A link request waiting for its y/N answer on the next line.
    let mut pending: Option<String> = None;
    loop {
        phone.out.prompt(if pending.is_some() {
            "Confirm? [y/N] "
        } else {
            "> "
        })?;
        tokio::select! {
            line = lines.recv() => {
                phone.out.input_taken();
                let line = match line {
                    Some(Ok(line)) => line,
                    Some(Err(e)) => {
                        phone.out.failure(&Failure::Usage(format!("cannot read input: {e}")))?;
                        continue;
                    }
                    None => break,
                };
                if let Some(rid) = pending.take() {
                    let yes = matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes");
                    let result = if yes {
                        phone.confirm(&rid).await
                    } else {
                        phone.reject(&rid).await
                    };
                    report(phone, result.map(|()| None), &mut pending)?;
                    continue;
                }
                match parse_command(&line) {
                    Ok(None) => {}
                    Ok(Some(Cmd::Quit)) => break,
                    Ok(Some(cmd)) => {
                        let result = phone.execute(cmd).await;
                        report(phone, result, &mut pending)?;
                    }
                    Err(m) => phone.out.failure(&Failure::Usage(m))?,
                }
            }
            frame = phone.client.next() => match frame {
                Ok(v) => phone.out.frame(&v, describe_event)?,
                // The client's reads time out so that requests cannot hang; an
                // idle socket is no failure here.
                Err(ClientError::Timeout(_)) => {}
                // The gateway restarted or the network dropped: back with
                // backoff and the same token, as the page does.
                Err(e) if worth_redialling(&e) => {
                    let (client, ready) = redial.connect(&phone.out).await?;
                    phone.client = client;
                    if let Some(rid) = pending.take() {
                        phone.out.note(&format!("link request {rid} was lost with the connection"))?;
                    }
                    if phone.out.json {
                        phone.out.stdout(&ready.to_string())?;
                    } else {
                        phone.out.note(&format!("reconnected to {url}"))?;
                    }
                }
                Err(e) => return Err(e.into()),
            },
        }
    }
    // Nobody is left to answer: say no rather than leave the request pending.
    if let Some(rid) = pending.take() {
        let result = phone.reject(&rid).await;
        report(phone, result.map(|()| None), &mut pending)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a failed command and carries on, unless the connection is gone.
pub(super) fn report(
    phone: &Phone,
    result: Result<Option<String>, Failure>,
    pending: &mut Option<String>,
) -> Result<(), Failure> {
    match result {
        Ok(p) => {
            *pending = p;
            Ok(())
        }
        Err(f) if f.is_fatal() => Err(f),
        Err(f) => Ok(phone.out.failure(&f)?),
    }
}
