//! What went wrong, and the exit status it gives.

use std::process::ExitCode;

use pairgate_client::ClientError;
use pairgate_protocol::CloseCode;

/// The gateway answered `error` to a command (or sent something unreadable).
pub(super) const EXIT_REFUSED: u8 = 1;
/// Bad command line or input; nothing was sent for it.
pub(super) const EXIT_USAGE: u8 = 2;
/// Could not connect or authenticate, or the connection was lost.
pub(super) const EXIT_CONNECTION: u8 = 3;

/// What went wrong, sorted by exit status.
#[derive(Debug)]
pub(super) enum Failure {
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
    pub(super) fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Failure::Usage(_) => EXIT_USAGE,
            Failure::Refused { .. } | Failure::Output(_) => EXIT_REFUSED,
            Failure::Connection { .. } => EXIT_CONNECTION,
        })
    }

    /// Whether an interactive session can go on after this.
    pub(super) fn is_fatal(&self) -> bool {
        matches!(
            self,
            Failure::Output(_) | Failure::Connection { lost: true, .. }
        )
    }
}

/// Describes a close code of the contract for a person.
pub(super) fn describe_close(code: Option<u16>) -> String {
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

/// Names the URL in a connection failure, which otherwise says only "refused".
pub(super) fn with_context(f: Failure, url: &str) -> Failure {
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
