//! `pairgate phone`: a phone client for operators and scripts.
//!
//! With a command on its command line it runs that one command and exits; without
//! one it reads commands from stdin, line by line, while printing the events the
//! gateway pushes. Readable text by default; with `--json` every line on stdout is
//! one JSON object (events and replies as the raw frames, failures as
//! `{"type":"error",...}`), so scripts never have to parse prose.

use std::cell::Cell;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::ArgGroup;
use pairgate::client::{Client, ClientError, ConnectOptions, link_target};
use pairgate::protocol::ClientFrame;
use pairgate::protocol::{CloseCode, SessionInfo};
use pairgate::tokens::{SECRET_FILE, Tokens, resolve_secret};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Lifetime of a token minted with `--account`: it only has to outlive `auth`,
/// but a generous one keeps a clock skew between hosts from mattering.
const MINTED_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// The gateway answered `error` to a command (or sent something unreadable).
const EXIT_REFUSED: u8 = 1;
/// Bad command line or input; nothing was sent for it.
const EXIT_USAGE: u8 = 2;
/// Could not connect or authenticate, or the connection was lost.
const EXIT_CONNECTION: u8 = 3;

const COMMANDS_HELP: &str = "\
commands:
  link <code|payload|ref>   ask to link the web session showing that QR code or pairing
                            code; prints the device, then confirms (--yes), rejects
                            (--reject), or takes the next input line as the answer
                            (y or yes confirms, anything else rejects)
  confirm <request_id>      confirm a pending link request
  reject <request_id>       reject a pending link request
  sessions                  list the linked sessions
  logout <session_id>       end one session
  logout-all                end every session
  send [--to SESSION] [--json-body] [--] <text>
                            send {\"text\": <text>} to the web sessions (all of them, or
                            SESSION); with --json-body, <text> is the JSON body itself
  help                      this text
  quit                      close the connection and exit (so does end of input)";

const AFTER_HELP: &str = "\
commands:
  link <code|payload|ref>, confirm <request_id>, reject <request_id>, sessions,
  logout <session_id>, logout-all, send [--to SESSION] [--json-body] [--] <text>,
  help, quit (run `pairgate phone help` for details)

Options go before the command. A one-shot `link` needs --yes or --reject: nobody
is there to answer, and an unanswered request would stay pending.

Exit status: 0 done; 1 the gateway refused the command (its error code is
printed); 2 bad usage; 3 could not connect or authenticate, or the connection
was lost. Interactive mode exits 0 on `quit` or end of input.

Examples:
  pairgate phone --account alice --data-dir ./pairgate-data
  pairgate phone --token \"$(pairgate token --account alice)\" sessions
  pairgate phone --account alice --yes --json link ABCD-EFGH
  pairgate phone --account alice send --to SESSION hello";

/// Options of `pairgate phone`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = AFTER_HELP,
    group(ArgGroup::new("credentials").required(true).args(["token", "account"]))
)]
pub struct PhoneArgs {
    /// The gateway: its base (`ws://host:port`, `http://host:port`) or its
    /// `/ws/phone` endpoint.
    #[arg(long, env = "PAIRGATE_URL", default_value = "ws://127.0.0.1:8080")]
    url: String,
    /// Phone token, as `pairgate token` prints it.
    #[arg(long, env = "PAIRGATE_PHONE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Mint a phone token for this account from the gateway's secret
    /// (`--data-dir` or `--secret`) instead of giving `--token`.
    #[arg(long, conflicts_with = "token")]
    account: Option<String>,
    /// The gateway's data dir, whose secret `--account` signs with.
    #[arg(long, env = "PAIRGATE_DATA_DIR", default_value = "./pairgate-data")]
    data_dir: PathBuf,
    /// The gateway's secret, for `--account`, instead of the data dir's.
    #[arg(long, env = "PAIRGATE_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Confirm link requests without asking.
    #[arg(long, short = 'y', conflicts_with = "reject")]
    yes: bool,
    /// Reject link requests without asking.
    #[arg(long)]
    reject: bool,
    /// Print one JSON object per line: events and replies as the raw frames,
    /// failures as `{"type":"error","code":..,"message":..}`.
    #[arg(long)]
    json: bool,
    /// Seconds to wait for the connection and for each reply.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_secs: u64,
    /// A command to run before exiting; without one, commands are read from stdin.
    #[arg(trailing_var_arg = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// What went wrong, sorted by exit status.
#[derive(Debug)]
enum Failure {
    /// Bad command line or input; nothing was sent for it.
    Usage(String),
    /// The gateway answered `error`, or something this client cannot read.
    Refused { code: String, message: String },
    /// Could not connect or authenticate, or the connection failed.
    Connection {
        code: String,
        message: String,
        close_code: Option<u16>,
        /// Whether the socket is gone (as opposed to a reply that was late).
        lost: bool,
    },
    /// Stdout or stderr could not be written (a closed pipe): nothing left to say.
    Output(std::io::Error),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let connection = |code: &str, message: String, close_code, lost| Failure::Connection {
            code: code.to_owned(),
            message,
            close_code,
            lost,
        };
        match e {
            ClientError::Reply { code, message } => Failure::Refused { code, message },
            ClientError::Unexpected(v) => Failure::Refused {
                code: "unexpected".to_owned(),
                message: format!("unexpected frame: {v}"),
            },
            ClientError::Closed(code) => connection("closed", describe_close(code), code, true),
            ClientError::Timeout(what) => connection(
                "timeout",
                format!("timed out waiting for {what}"),
                None,
                false,
            ),
            ClientError::Connect(m) => connection("connect_failed", m, None, true),
            ClientError::Socket(e) => connection("socket", e.to_string(), None, true),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Output(e)
    }
}

impl Failure {
    fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Failure::Usage(_) => EXIT_USAGE,
            Failure::Refused { .. } | Failure::Output(_) => EXIT_REFUSED,
            Failure::Connection { .. } => EXIT_CONNECTION,
        })
    }

    /// Whether an interactive session can go on after this.
    fn is_fatal(&self) -> bool {
        matches!(
            self,
            Failure::Output(_) | Failure::Connection { lost: true, .. }
        )
    }
}

/// Describes a close code of the contract for a person.
fn describe_close(code: Option<u16>) -> String {
    let Some(code) = code else {
        return "connection closed".to_owned();
    };
    let why = match code {
        1000 => "normal closure",
        code => CloseCode::from_code(code).map_or("", CloseCode::reason),
    };
    if why.is_empty() {
        format!("connection closed with {code}")
    } else {
        format!("connection closed with {code} ({why})")
    }
}

// ---- commands ----------------------------------------------------------------

#[derive(Debug, PartialEq)]
enum Cmd {
    Link(String),
    Confirm(String),
    Reject(String),
    Sessions,
    Logout(String),
    LogoutAll,
    Send { to: Option<String>, body: Value },
    Help,
    Quit,
}

/// The first whitespace-separated word of `s`, and the rest with its leading
/// white space removed (so `send` keeps the inner spacing of its text).
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

/// Parses one command line; `None` for a blank one.
fn parse_command(line: &str) -> Result<Option<Cmd>, String> {
    let (word, rest) = split_word(line.trim());
    let one = |what: &str| -> Result<String, String> {
        let (arg, extra) = split_word(rest);
        if arg.is_empty() || !extra.is_empty() {
            return Err(format!("usage: {word} {what}"));
        }
        Ok(arg.to_owned())
    };
    let none = |cmd: Cmd| -> Result<Cmd, String> {
        if rest.is_empty() {
            Ok(cmd)
        } else {
            Err(format!("`{word}` takes no arguments"))
        }
    };
    let cmd = match word {
        "" => return Ok(None),
        "link" => Cmd::Link(one("<code|payload|ref>")?),
        "confirm" => Cmd::Confirm(one("<request_id>")?),
        "reject" => Cmd::Reject(one("<request_id>")?),
        "sessions" => none(Cmd::Sessions)?,
        "logout" => Cmd::Logout(one("<session_id>")?),
        "logout-all" => none(Cmd::LogoutAll)?,
        "send" => parse_send(rest)?,
        "help" => none(Cmd::Help)?,
        "quit" | "exit" => none(Cmd::Quit)?,
        other => return Err(format!("unknown command `{other}` (try `help`)")),
    };
    Ok(Some(cmd))
}

fn parse_send(mut rest: &str) -> Result<Cmd, String> {
    const USAGE: &str = "usage: send [--to SESSION] [--json-body] [--] <text>";
    let mut to = None;
    let mut raw = false;
    loop {
        let (word, after) = split_word(rest);
        match word {
            "--to" => {
                let (sid, after) = split_word(after);
                if sid.is_empty() {
                    return Err(USAGE.to_owned());
                }
                to = Some(sid.to_owned());
                rest = after;
            }
            w if w.starts_with("--to=") => {
                to = Some(w["--to=".len()..].to_owned());
                rest = after;
            }
            "--json-body" => {
                raw = true;
                rest = after;
            }
            "--" => {
                rest = after;
                break;
            }
            _ => break,
        }
    }
    if rest.is_empty() {
        return Err(USAGE.to_owned());
    }
    let body = if raw {
        serde_json::from_str(rest).map_err(|e| format!("--json-body: not JSON: {e}"))?
    } else {
        json!({ "text": rest })
    };
    Ok(Cmd::Send { to, body })
}

/// The phone endpoint for `--url`: a gateway base gets `/ws/phone`, and
/// `http` becomes `ws`.
fn phone_url(given: &str) -> Result<String, String> {
    let given = given.trim();
    let (scheme, rest) = match given.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => ("ws".to_owned(), given),
    };
    match scheme.as_str() {
        "ws" | "http" => {}
        // The client speaks plain TCP only; sending a wss:// handshake in clear
        // text to port 80 would fail in a far more confusing way.
        "wss" | "https" => {
            return Err(format!(
                "{given}: TLS is not supported by `pairgate phone`; connect over ws:// (e.g. to the gateway's own listener)"
            ));
        }
        other => {
            return Err(format!(
                "{given}: unsupported scheme `{other}`; use ws:// or http://"
            ));
        }
    }
    // A fragment means nothing to a WebSocket handshake.
    let rest = rest.split('#').next().unwrap_or_default();
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    if authority.is_empty() {
        return Err(format!("{given}: no host"));
    }
    let (path, query) = tail.split_at(tail.find('?').unwrap_or(tail.len()));
    let path = path.trim_end_matches('/');
    if path.ends_with("/ws/web") {
        return Err(format!(
            "{given} is the web endpoint; give the gateway base or its /ws/phone"
        ));
    }
    let path = if path.ends_with("/ws/phone") {
        path.to_owned()
    } else {
        format!("{path}/ws/phone")
    };
    Ok(format!("ws://{authority}{path}{query}"))
}

/// The phone token: `--token`, or one minted for `--account`.
fn phone_token(args: &PhoneArgs) -> Result<String, String> {
    if let Some(token) = &args.token {
        return Ok(token.trim().to_owned());
    }
    let Some(account) = args.account.as_deref() else {
        return Err("give --token or --account".to_owned());
    };
    // `resolve_secret` would create a fresh secret in a wrong or mistyped data
    // dir, and the gateway would then refuse the token as invalid_token with no
    // hint why; say so here instead.
    let secret_file = args.data_dir.join(SECRET_FILE);
    if args.secret.is_none() && !secret_file.exists() {
        return Err(format!(
            "{} does not exist: give the gateway's --data-dir, or --secret",
            secret_file.display()
        ));
    }
    let secret =
        resolve_secret(args.secret.as_deref(), &args.data_dir).map_err(|e| format!("{e:#}"))?;
    Tokens::new(&secret)
        .mint_phone(account, MINTED_TOKEN_TTL)
        .map_err(|e| format!("{e:#}"))
}

// ---- output ------------------------------------------------------------------

/// Everything the CLI prints goes through here, so `--json` and the prompt are
/// handled in one place.
struct Output {
    json: bool,
    /// Prompts are shown only to a person: stdin and stderr are terminals.
    prompts: bool,
    prompt_visible: Cell<bool>,
}

impl Output {
    fn new(json: bool) -> Self {
        Output {
            json,
            prompts: false,
            prompt_visible: Cell::new(false),
        }
    }

    /// Wipes a prompt left on the terminal line, so output does not run into it.
    fn clear_prompt(&self) -> std::io::Result<()> {
        if self.prompt_visible.replace(false) {
            let mut err = std::io::stderr().lock();
            err.write_all(b"\r\x1b[K")?;
            err.flush()?;
        }
        Ok(())
    }

    fn prompt(&self, text: &str) -> std::io::Result<()> {
        if !self.prompts || self.prompt_visible.get() {
            return Ok(());
        }
        let mut err = std::io::stderr().lock();
        err.write_all(text.as_bytes())?;
        err.flush()?;
        self.prompt_visible.set(true);
        Ok(())
    }

    /// The user pressed enter: the prompt line is history.
    fn input_taken(&self) {
        self.prompt_visible.set(false);
    }

    fn stdout(&self, text: &str) -> std::io::Result<()> {
        self.clear_prompt()?;
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        if !text.ends_with('\n') {
            out.write_all(b"\n")?;
        }
        out.flush()
    }

    /// Human notes (banners): stderr, and only in readable mode.
    fn note(&self, text: &str) -> std::io::Result<()> {
        if self.json {
            return Ok(());
        }
        self.clear_prompt()?;
        let mut err = std::io::stderr().lock();
        writeln!(err, "{text}")?;
        err.flush()
    }

    /// A reply or event: the raw frame with `--json`, else `readable` of it.
    fn frame(&self, frame: &Value, readable: impl FnOnce(&Value) -> String) -> std::io::Result<()> {
        if self.json {
            self.stdout(&frame.to_string())
        } else {
            self.stdout(&readable(frame))
        }
    }

    fn failure(&self, f: &Failure) -> std::io::Result<()> {
        let (code, message, close_code) = match f {
            Failure::Usage(m) => ("usage", m.as_str(), None),
            Failure::Refused { code, message } => (code.as_str(), message.as_str(), None),
            Failure::Connection {
                code,
                message,
                close_code,
                ..
            } => (code.as_str(), message.as_str(), *close_code),
            Failure::Output(e) => {
                // Stdout is what failed; stderr is the only place left.
                let _ = writeln!(std::io::stderr(), "error: cannot write output: {e}");
                return Ok(());
            }
        };
        if self.json {
            let mut v = json!({"type": "error", "code": code, "message": message});
            if let Some(c) = close_code {
                v["close_code"] = json!(c);
            }
            return self.stdout(&v.to_string());
        }
        self.clear_prompt()?;
        let mut err = std::io::stderr().lock();
        if matches!(f, Failure::Usage(_)) {
            writeln!(err, "error: {message}")?;
        } else {
            writeln!(err, "error: {code}: {}", clean(message))?;
        }
        err.flush()
    }

    fn help(&self) -> std::io::Result<()> {
        if self.json {
            self.stdout(&json!({"type": "help", "text": COMMANDS_HELP}).to_string())
        } else {
            self.stdout(COMMANDS_HELP)
        }
    }
}

/// Text from the network, made safe for a terminal: a web client chooses its
/// messages and user agent, and must not be able to send escape sequences to the
/// operator's terminal. Control characters are shown escaped.
fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A string field of a frame, cleaned for the terminal.
fn field(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => clean(s),
        Value::Null => "?".to_owned(),
        other => clean(&other.to_string()),
    }
}

/// A message body for a person: the text of a `{"text": ...}` body (what `send`
/// produces), anything else as compact JSON.
fn body_text(body: &Value) -> String {
    if let Some(obj) = body.as_object()
        && obj.len() == 1
        && let Some(Value::String(text)) = obj.get("text")
    {
        return clean(text);
    }
    clean(&body.to_string())
}

fn describe_event(v: &Value) -> String {
    match v["type"].as_str() {
        Some("message") => format!(
            "message from {}: {}",
            field(v, "from"),
            body_text(&v["body"])
        ),
        Some("session_online") => format!("session {} is online", field(v, "session_id")),
        Some("session_offline") => format!("session {} is offline", field(v, "session_id")),
        Some("session_removed") => format!(
            "session {} was removed ({})",
            field(v, "session_id"),
            field(v, "reason")
        ),
        // An error without an id (e.g. a rate limit) answers no command.
        Some("error") => format!("error: {}: {}", field(v, "code"), field(v, "message")),
        _ => format!("event: {}", clean(&v.to_string())),
    }
}

fn describe_link_request(v: &Value) -> String {
    let device = &v["device"];
    format!(
        "link request {}\n  device:     {}\n  user agent: {}\n  ip:         {}",
        field(v, "request_id"),
        field(device, "name"),
        field(device, "user_agent"),
        field(device, "ip"),
    )
}

fn describe_linked(v: &Value) -> String {
    let s = &v["session"];
    format!(
        "linked session {} ({})",
        field(s, "session_id"),
        field(s, "device_name")
    )
}

fn sessions_table(reply: &Value) -> String {
    let Ok(list) = serde_json::from_value::<Vec<SessionInfo>>(reply["sessions"].clone()) else {
        return format!("sessions: {}", clean(&reply["sessions"].to_string()));
    };
    if list.is_empty() {
        return "no linked sessions".to_owned();
    }
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
    let mut rows = vec![
        [
            "SESSION",
            "DEVICE",
            "IP",
            "LAST ACTIVE",
            "ONLINE",
            "REMEMBER",
        ]
        .map(str::to_owned),
    ];
    rows.extend(list.iter().map(|s| {
        [
            clean(&s.session_id),
            clean(&s.device_name),
            clean(&s.ip),
            clean(&s.last_active_at),
            yes_no(s.online),
            yes_no(s.remember),
        ]
    }));
    let mut widths = [0usize; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                line.extend(std::iter::repeat_n(' ', w - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn plural(n: u64, one: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {one}s")
    }
}

// ---- running -------------------------------------------------------------------

/// How a `link` request gets its answer.
#[derive(Clone, Copy, PartialEq)]
enum Answer {
    Yes,
    Reject,
    /// The next input line (interactive mode only).
    Ask,
}

struct Phone {
    client: Client,
    out: Output,
    answer: Answer,
}

impl Phone {
    /// Runs one command; for a `link` left to the user, the request id to ask about.
    async fn execute(&mut self, cmd: Cmd) -> Result<Option<String>, Failure> {
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

    async fn confirm(&mut self, rid: &str) -> Result<(), Failure> {
        let reply = self
            .client
            .request(ClientFrame::LinkConfirm {
                request_id: rid.to_owned(),
            })
            .await?;
        self.out.frame(&reply, describe_linked)?;
        Ok(())
    }

    async fn reject(&mut self, rid: &str) -> Result<(), Failure> {
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
    async fn close(self, wait: Duration) {
        let _ = tokio::time::timeout(wait, self.client.close()).await;
    }
}

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
    let url = match phone_url(&args.url) {
        Ok(u) => u,
        Err(m) => fail!(Failure::Usage(m)),
    };
    let token = match phone_token(&args) {
        Ok(t) => t,
        Err(m) => fail!(Failure::Usage(m)),
    };
    let timeout = Duration::from_secs(args.timeout_secs);
    let opts = ConnectOptions {
        user_agent: Some(format!("pairgate-phone/{}", env!("CARGO_PKG_VERSION"))),
        timeout,
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
    match interactive(&mut phone, &ready, &url).await {
        Ok(code) => {
            phone.close(timeout).await;
            Ok(code)
        }
        Err(f) => Err((phone.out, f)),
    }
}

/// Names the URL in a connection failure, which otherwise says only "refused".
fn with_context(f: Failure, url: &str) -> Failure {
    match f {
        Failure::Connection {
            code,
            message,
            close_code,
            lost,
        } => Failure::Connection {
            code,
            message: format!("{url}: {message}"),
            close_code,
            lost,
        },
        other => other,
    }
}

/// Reads stdin on a plain thread. Tokio's stdin reads on its blocking pool, and
/// a read there cannot be cancelled: the runtime could not shut down (when the
/// gateway closes the socket, say) until the user pressed enter. A detached
/// thread dies with the process.
fn stdin_lines() -> mpsc::Receiver<std::io::Result<String>> {
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
async fn interactive(phone: &mut Phone, ready: &Value, url: &str) -> Result<ExitCode, Failure> {
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
fn report(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let ok = |s: &str| phone_url(s).unwrap();
        assert_eq!(ok("ws://h:1"), "ws://h:1/ws/phone");
        assert_eq!(ok("ws://h:1/"), "ws://h:1/ws/phone");
        assert_eq!(ok("http://h:1"), "ws://h:1/ws/phone");
        assert_eq!(ok("HTTP://h:1/ws/phone"), "ws://h:1/ws/phone");
        assert_eq!(ok("h:1"), "ws://h:1/ws/phone");
        assert_eq!(ok("http://h/gw/"), "ws://h/gw/ws/phone");
        assert_eq!(ok("ws://h:1?x=1#frag"), "ws://h:1/ws/phone?x=1");
        assert_eq!(ok("ws://[::1]:9/ws/phone/"), "ws://[::1]:9/ws/phone");
        assert!(phone_url("https://h").is_err());
        assert!(phone_url("ws://h/ws/web").is_err());
        assert!(phone_url("ftp://h").is_err());
        assert!(phone_url("ws://").is_err());
    }

    #[test]
    fn commands() {
        let p = |s: &str| parse_command(s).unwrap().unwrap();
        assert_eq!(p(" link  ABCD-EFGH "), Cmd::Link("ABCD-EFGH".into()));
        assert_eq!(p("sessions"), Cmd::Sessions);
        assert_eq!(p("logout s1"), Cmd::Logout("s1".into()));
        assert_eq!(p("logout-all"), Cmd::LogoutAll);
        assert_eq!(
            p("send hello   world"),
            Cmd::Send {
                to: None,
                body: json!({"text": "hello   world"})
            }
        );
        assert_eq!(
            p("send --to s1 --json-body {\"a\": [1]}"),
            Cmd::Send {
                to: Some("s1".into()),
                body: json!({"a": [1]})
            }
        );
        assert_eq!(
            p("send --to=s2 -- --to"),
            Cmd::Send {
                to: Some("s2".into()),
                body: json!({"text": "--to"})
            }
        );
        assert_eq!(p("quit"), Cmd::Quit);
        assert!(parse_command("   ").unwrap().is_none());
        assert!(parse_command("send").is_err());
        assert!(parse_command("send --to").is_err());
        assert!(parse_command("send --json-body {nope").is_err());
        assert!(parse_command("link").is_err());
        assert!(parse_command("link a b").is_err());
        assert!(parse_command("sessions --json").is_err());
        assert!(parse_command("frobnicate").is_err());
    }

    #[test]
    fn readable_output_is_terminal_safe() {
        let ev = json!({"type": "message", "from": "s1", "body": {"text": "hi\u{1b}[2J"}});
        assert_eq!(describe_event(&ev), "message from s1: hi\\u{1b}[2J");
        let ev = json!({"type": "message", "from": "s1", "body": [1, 2]});
        assert_eq!(describe_event(&ev), "message from s1: [1,2]");
    }

    #[test]
    fn table() {
        let reply = json!({"type": "sessions", "sessions": [{
            "session_id": "abc", "device_name": "Chrome on Linux", "user_agent": "UA",
            "ip": "127.0.0.1", "created_at": "t0", "last_active_at": "t1",
            "online": true, "remember": false
        }]});
        let t = sessions_table(&reply);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("SESSION  DEVICE"));
        assert!(lines[1].starts_with("abc      Chrome on Linux  127.0.0.1"));
        assert!(lines[1].ends_with("yes     no"));
        assert_eq!(
            sessions_table(&json!({"sessions": []})),
            "no linked sessions"
        );
    }
}
