//! The commands a phone runs, parsed from a line of text.

use serde_json::{Value, json};

pub(super) const COMMANDS_HELP: &str = "\
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

#[derive(Debug, PartialEq)]
pub(super) enum Cmd {
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
pub(super) fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

/// Parses one command line; `None` for a blank one.
pub(super) fn parse_command(line: &str) -> Result<Option<Cmd>, String> {
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

pub(super) fn parse_send(mut rest: &str) -> Result<Cmd, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
