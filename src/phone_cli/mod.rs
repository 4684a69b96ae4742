//! `pairgate phone`: a phone client for operators and scripts.
//!
//! With a command on its command line it runs that one command and exits; without
//! one it reads commands from stdin, line by line, while printing the events the
//! gateway pushes. Readable text by default; with `--json` every line on stdout is
//! one JSON object (events and replies as the raw frames, failures as
//! `{"type":"error",...}`), so scripts never have to parse prose.

//! One file per job: `args` (the command line), `commands` (a line of input),
//! `phone` (running them over a connected socket), `output` (what is printed)
//! and `failure` (what went wrong, and the exit status); `operator` runs the
//! operator's commands through the operator API when given `--admin-token`.

mod args;
mod commands;
mod failure;
mod operator;
mod output;
mod phone;
mod redial;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use pairgate_client::{Client, ClientError, ConnectOptions, tls};
use pairgate_protocol::ClientFrame;

pub use args::PhoneArgs;
use args::{phone_token, phone_url};
use commands::{Cmd, parse_command};
use failure::{Failure, with_context};
use output::Output;
use phone::{Answer, Phone, interactive};
use redial::Redial;

/// Runs `pairgate phone`; the exit status is documented in `--help`.
pub async fn run(args: PhoneArgs) -> anyhow::Result<ExitCode> {
    let out = Output::new(args.json);
    match run_inner(args, out).await {
        Ok(code) => Ok(code),
        Err((out, failure)) => {
            out.failure(&failure)?;
            Ok(failure.exit_code())
        }
    }
}

async fn run_inner(args: PhoneArgs, mut out: Output) -> Result<ExitCode, (Output, Failure)> {
    macro_rules! fail {
        ($f:expr) => {
            return Err((out, $f))
        };
    }
    let one_shot = if args.command.is_empty() {
        None
    } else {
        match parse_command(&args.command.join(" ")) {
            Ok(cmd) => cmd,
            Err(mut msg) => {
                let misplaced = [
                    "--json",
                    "--yes",
                    "--reject",
                    "--url",
                    "--token",
                    "--account",
                    "--admin-token",
                    "--ca-cert",
                ];
                if args.command.iter().any(|w| misplaced.contains(&w.as_str())) {
                    msg.push_str(" (options of `pairgate phone` go before the command)");
                }
                fail!(Failure::Usage(msg))
            }
        }
    };
    let answer = if args.yes {
        Answer::Yes
    } else if args.reject {
        Answer::Reject
    } else {
        Answer::Ask
    };
    match &one_shot {
        Some(Cmd::Help) => {
            return match out.help() {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) => Err((out, e.into())),
            };
        }
        Some(Cmd::Quit) => return Ok(ExitCode::SUCCESS),
        Some(Cmd::Link(_)) if answer == Answer::Ask => fail!(Failure::Usage(
            "a one-shot `link` needs --yes (confirm) or --reject: nobody is there to answer, \
             and an unanswered request would stay pending (or run `pairgate phone` without a \
             command to be asked)"
                .to_owned()
        )),
        _ => {}
    }
    let timeout = Duration::from_secs(args.timeout_secs);
    // An operator's one-shot command goes through the operator API: a phone
    // socket would replace (4009) the user's own phone.
    if let (Some(admin_token), Some(cmd)) = (&args.admin_token, &one_shot) {
        let Some(account) = args.account.as_deref() else {
            fail!(Failure::Usage(
                "--admin-token needs --account: the account whose sessions to act on".to_owned()
            ))
        };
        let base = match operator::http_base(&args.url) {
            Ok(b) => b,
            Err(m) => fail!(Failure::Usage(m)),
        };
        let ca = args.ca_cert.as_deref();
        return match operator::run(&out, cmd, &base, account, admin_token, ca, timeout).await {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(f) => Err((out, f)),
        };
    }
    if args.admin_token.is_some() {
        fail!(Failure::Usage(
            "--admin-token runs one command (sessions, logout <session_id>, logout-all); \
             interactive mode is the phone's and needs --token or --account without it"
                .to_owned()
        ))
    }
    let url = match phone_url(&args.url) {
        Ok(u) => u,
        Err(m) => fail!(Failure::Usage(m)),
    };
    let token = match phone_token(&args) {
        Ok(t) => t,
        Err(m) => fail!(Failure::Usage(m)),
    };
    let tls = match args.ca_cert.as_deref().map(|p| tls::config(Some(p))) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(m)) => fail!(Failure::Usage(format!("--ca-cert {m}"))),
    };
    let opts = ConnectOptions {
        user_agent: Some(format!("pairgate-phone/{}", env!("CARGO_PKG_VERSION"))),
        timeout,
        tls,
        ..ConnectOptions::default()
    };

    let mut client = match Client::connect(&url, &opts).await {
        Ok(c) => c,
        Err(e) => fail!(with_context(e.into(), &url)),
    };
    // Not `Client::phone`: interactive mode shows the `ready` frame.
    let ready = match client
        .request(ClientFrame::Auth {
            token: token.clone(),
        })
        .await
    {
        Ok(r) => r,
        // A refused `auth` (invalid_token) is a failure to get connected, not a
        // refused command.
        Err(ClientError::Reply { code, message }) => fail!(Failure::Connection {
            code,
            message,
            close_code: None,
            lost: true,
        }),
        Err(e) => fail!(with_context(e.into(), &url)),
    };

    if let Some(cmd) = one_shot {
        let mut phone = Phone {
            client,
            out,
            answer,
        };
        let result = phone.execute(cmd).await;
        let Phone { client, out, .. } = phone;
        let _ = tokio::time::timeout(timeout, client.close()).await;
        return match result {
            Ok(_) => Ok(ExitCode::SUCCESS),
            Err(f) => Err((out, f)),
        };
    }

    out.prompts = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    let mut phone = Phone {
        client,
        out,
        answer,
    };
    let redial = Redial {
        url: url.clone(),
        opts: opts.clone(),
        token: token.clone(),
    };
    match interactive(&mut phone, &ready, &url, &redial).await {
        Ok(code) => {
            phone.close(timeout).await;
            Ok(code)
        }
        Err(f) => Err((phone.out, f)),
    }
}
