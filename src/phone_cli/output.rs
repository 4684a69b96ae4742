//! Everything printed, readable or `--json`, made safe for a terminal.

use std::cell::Cell;
use std::io::Write;

use pairgate_protocol::SessionInfo;
use serde_json::{Value, json};

use super::commands::COMMANDS_HELP;
use super::failure::Failure;

/// Everything the CLI prints goes through here, so `--json` and the prompt are
/// handled in one place.
pub(super) struct Output {
    pub(super) json: bool,
    /// Prompts are shown only to a person: stdin and stderr are terminals.
    pub(super) prompts: bool,
    pub(super) prompt_visible: Cell<bool>,
}

impl Output {
    pub(super) fn new(json: bool) -> Self {
        Output {
            json,
            prompts: false,
            prompt_visible: Cell::new(false),
        }
    }

    /// Wipes a prompt left on the terminal line, so output does not run into it.
    pub(super) fn clear_prompt(&self) -> std::io::Result<()> {
        if self.prompt_visible.replace(false) {
            let mut err = std::io::stderr().lock();
            err.write_all(b"\r\x1b[K")?;
            err.flush()?;
        }
        Ok(())
    }

    pub(super) fn prompt(&self, text: &str) -> std::io::Result<()> {
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
    pub(super) fn input_taken(&self) {
        self.prompt_visible.set(false);
    }

    pub(super) fn stdout(&self, text: &str) -> std::io::Result<()> {
        self.clear_prompt()?;
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        if !text.ends_with('\n') {
            out.write_all(b"\n")?;
        }
        out.flush()
    }

    /// Human notes (banners): stderr, and only in readable mode.
    pub(super) fn note(&self, text: &str) -> std::io::Result<()> {
        if self.json {
            return Ok(());
        }
        self.clear_prompt()?;
        let mut err = std::io::stderr().lock();
        writeln!(err, "{text}")?;
        err.flush()
    }

    /// A reply or event: the raw frame with `--json`, else `readable` of it.
    pub(super) fn frame(
        &self,
        frame: &Value,
        readable: impl FnOnce(&Value) -> String,
    ) -> std::io::Result<()> {
        if self.json {
            self.stdout(&frame.to_string())
        } else {
            self.stdout(&readable(frame))
        }
    }

    pub(super) fn failure(&self, f: &Failure) -> std::io::Result<()> {
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

    pub(super) fn help(&self) -> std::io::Result<()> {
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
pub(super) fn clean(s: &str) -> String {
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
pub(super) fn field(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => clean(s),
        Value::Null => "?".to_owned(),
        other => clean(&other.to_string()),
    }
}

/// A message body for a person: the text of a `{"text": ...}` body (what `send`
/// produces), anything else as compact JSON.
pub(super) fn body_text(body: &Value) -> String {
    if let Some(obj) = body.as_object()
        && obj.len() == 1
        && let Some(Value::String(text)) = obj.get("text")
    {
        return clean(text);
    }
    clean(&body.to_string())
}

pub(super) fn describe_event(v: &Value) -> String {
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

pub(super) fn describe_link_request(v: &Value) -> String {
    let device = &v["device"];
    format!(
        "link request {}\n  device:     {}\n  user agent: {}\n  ip:         {}",
        field(v, "request_id"),
        field(device, "name"),
        field(device, "user_agent"),
        field(device, "ip"),
    )
}

pub(super) fn describe_linked(v: &Value) -> String {
    let s = &v["session"];
    format!(
        "linked session {} ({})",
        field(s, "session_id"),
        field(s, "device_name")
    )
}

pub(super) fn sessions_table(reply: &Value) -> String {
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

pub(super) fn plural(n: u64, one: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {one}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_output_is_terminal_safe() {
        let ev = json!({"type": "message", "from": "s1", "body": {"text": "hi\u{1b}[2J"}});
        assert_eq!(describe_event(&ev), "message from s1: hi\\u{1b}[2J");
        let ev = json!({"type": "message", "from": "s1", "body": [1, 2]});
        assert_eq!(describe_event(&ev), "message from s1: [1,2]");
    }

    /// Before confirming, the person sees who asks: the device's name and
    /// the address it asks from (QR login jacking, docs/SECURITY.md).
    #[test]
    fn a_link_request_shows_the_device_name_and_address() {
        let lr = json!({"type": "link_request", "request_id": "r_1", "device": {
            "name": "Firefox on Windows", "user_agent": "UA", "ip": "203.0.113.9"
        }});
        let text = describe_link_request(&lr);
        assert!(text.contains("device:     Firefox on Windows"), "{text}");
        assert!(text.contains("ip:         203.0.113.9"), "{text}");
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
