//! `--config FILE` (or `PAIRGATE_CONFIG`): a TOML file setting `serve`'s
//! options by their command-line names (`max-devices = 8`,
//! `allowed-origins = ["https://a.example"]`; kebab-case only).
//!
//! The file's values become the options' clap defaults, so precedence is
//! clap's own (command line > `PAIRGATE_*` > file > built-in defaults) and
//! every value is validated by the option's own parser: nothing about an
//! option is defined twice. What this adds is the errors: a key that is no
//! option, a value of the wrong shape, and a value clap refuses name the key
//! and the file; a refused `PAIRGATE_*` value names the variable.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Arg, ArgAction, Command};

/// The option naming the file, and its environment variable.
pub const OPTION: &str = "config";
pub const ENV: &str = "PAIRGATE_CONFIG";

/// A parsed config file and where it came from.
pub struct ConfigFile {
    pub path: PathBuf,
    table: toml::Table,
}

/// The `--config` option, for the commands that take `serve`'s options.
pub fn config_arg() -> Arg {
    Arg::new(OPTION)
        .long(OPTION)
        .env(ENV)
        .value_name("FILE")
        .value_parser(clap::value_parser!(PathBuf))
        .help("TOML file of options by their long names (`max-devices = 8`); flags and PAIRGATE_* override it")
}

/// The file `args` (or the environment) names, before clap parses: its
/// values must be in place as defaults by then.
pub fn path_from(args: &[OsString]) -> Option<PathBuf> {
    let flag = format!("--{OPTION}");
    let prefix = format!("--{OPTION}=");
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let Some(a) = a.to_str() else { continue };
        if a == "--" {
            break;
        }
        if a == flag {
            return it.next().map(PathBuf::from);
        }
        if let Some(p) = a.strip_prefix(&prefix) {
            return Some(PathBuf::from(p));
        }
    }
    std::env::var_os(ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

impl ConfigFile {
    /// Reads and parses `path`; errors name it.
    pub fn load(path: &Path) -> Result<ConfigFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
        let table = text
            .parse::<toml::Table>()
            .map_err(|e| format!("{} is not valid TOML: {e}", path.display()))?;
        Ok(ConfigFile {
            path: path.to_owned(),
            table,
        })
    }

    /// `cmd` with every key of the file as the default of the option of
    /// that long name. A key that is no option of `cmd`, or a value of a
    /// shape the option cannot take, is an error naming the key and file.
    pub fn apply(&self, mut cmd: Command) -> Result<Command, String> {
        for (key, value) in &self.table {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(key.as_str()) && !is_meta(a))
                .ok_or_else(|| {
                    format!(
                        "unknown key `{key}` in the config file {} (keys are `serve`'s long \
                         option names, e.g. `max-devices`)",
                        self.path.display()
                    )
                })?;
            let values = self.values(arg, value).map_err(|why| {
                format!("`{key}` in the config file {}: {why}", self.path.display())
            })?;
            // An empty list sets nothing (`pairgate config` prints unset
            // lists as `[]`).
            if values.is_empty() {
                continue;
            }
            let id = arg.get_id().clone();
            cmd = cmd.mut_arg(id, |a| a.default_values(values));
        }
        Ok(cmd)
    }

    /// The option's values as clap takes them from a command line. The
    /// TOML type must fit: a number for a numeric option, a string for any
    /// other (`data-dir = 5` is a mistake, not the directory `5`).
    fn values(&self, arg: &Arg, value: &toml::Value) -> Result<Vec<String>, String> {
        let many = matches!(arg.get_action(), ArgAction::Append);
        let flag = matches!(arg.get_action(), ArgAction::SetTrue);
        let numeric = takes_a_number(arg);
        let one = |v: &toml::Value| match v {
            toml::Value::Integer(_) | toml::Value::Float(_) if !numeric => {
                Err("expected a string (in quotes), not a number".to_owned())
            }
            toml::Value::String(_) if numeric => Err("expected a number, not a string".to_owned()),
            toml::Value::Boolean(_) => Err("expected a value, not true or false".to_owned()),
            v => scalar(v),
        };
        match value {
            toml::Value::Boolean(b) if flag => Ok(vec![b.to_string()]),
            _ if flag => Err("expected true or false".into()),
            toml::Value::Array(items) if many => items.iter().map(one).collect(),
            toml::Value::Array(_) => Err("expected one value, not a list".into()),
            v => Ok(vec![one(v)?]),
        }
    }

    /// `cmd` (a command sharing some of `serve`'s options, as `token` does)
    /// with the file's values of the options it has. The file is meant for
    /// `serve`: its other `serve` keys are not this command's business and
    /// are left alone; a key that is no option of either is an error, as
    /// for `serve`, since a misspelt key might have been meant for `cmd`.
    pub fn apply_shared(&self, cmd: Command, serve: &Command) -> Result<Command, String> {
        let shared = ConfigFile {
            path: self.path.clone(),
            table: self
                .table
                .iter()
                .filter(|(key, _)| {
                    let of = |c: &Command| {
                        c.get_arguments()
                            .any(|a| a.get_long() == Some(key.as_str()) && !is_meta(a))
                    };
                    of(&cmd) || !of(serve)
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        shared.apply(cmd)
    }

    /// Whether the file sets the option of this long name.
    fn sets(&self, long: &str) -> bool {
        self.table.contains_key(long)
    }
}

fn scalar(v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Datetime(_) => Err("a date is no option value".into()),
        toml::Value::Array(_) => Err("expected a value, not a nested list".into()),
        toml::Value::Table(_) => Err("expected a value, not a table".into()),
    }
}

/// Whether the option's value parser yields a number.
fn takes_a_number(arg: &Arg) -> bool {
    use std::any::TypeId;
    let parsed = arg.get_value_parser().type_id();
    [
        TypeId::of::<u8>(),
        TypeId::of::<u16>(),
        TypeId::of::<u32>(),
        TypeId::of::<u64>(),
        TypeId::of::<usize>(),
        TypeId::of::<i32>(),
        TypeId::of::<i64>(),
        TypeId::of::<f32>(),
        TypeId::of::<f64>(),
    ]
    .into_iter()
    .any(|number| parsed == number)
}

/// `--config`, `--help`, `--version`: options that are no setting.
fn is_meta(arg: &Arg) -> bool {
    arg.get_id() == OPTION
        || matches!(
            arg.get_action(),
            ArgAction::Help | ArgAction::HelpLong | ArgAction::HelpShort | ArgAction::Version
        )
}

/// Where a value clap refused came from, so its error can say so: clap
/// names the option (`--listen`) wherever the value was written.
pub fn name_the_source(
    err: clap::Error,
    cmd: &mut Command,
    args: &[OsString],
    file: Option<&ConfigFile>,
) -> clap::Error {
    if !matches!(
        err.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return err;
    }
    let Some(ContextValue::String(shown)) = err.get(ContextKind::InvalidArg) else {
        return err;
    };
    // `--listen <LISTEN>`: the long name is the first word.
    let Some(long) = shown
        .split_whitespace()
        .next()
        .and_then(|w| w.strip_prefix("--"))
    else {
        return err;
    };
    let on_command_line = args.iter().skip(1).any(|a| {
        a.to_str()
            .is_some_and(|a| a == format!("--{long}") || a.starts_with(&format!("--{long}=")))
    });
    if on_command_line {
        return err;
    }
    let env = all_args(cmd)
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env().map(|e| e.to_owned()));
    let source = match env {
        Some(var) if std::env::var_os(&var).is_some() => {
            format!("{} (--{long})", var.to_string_lossy())
        }
        _ => match file {
            Some(f) if f.sets(long) => {
                format!("`{long}` in the config file {}", f.path.display())
            }
            _ => return err,
        },
    };
    let rendered = err.to_string();
    let message = rendered
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .replace(&format!("'{shown}'"), &source);
    clap::Error::raw(err.kind(), message).format(cmd)
}

/// Every option of `cmd` and of its subcommands.
fn all_args(cmd: &Command) -> impl Iterator<Item = &Arg> {
    cmd.get_arguments()
        .chain(cmd.get_subcommands().flat_map(|s| s.get_arguments()))
}

/// `config` as `pairgate config` prints it: TOML that `--config` takes,
/// with every secret left out (a commented line says it is set).
pub fn render(config: &crate::Config) -> Result<String, toml::ser::Error> {
    let text = toml::to_string(&config.redacted())?;
    let mut out = String::from(
        "# pairgate's effective configuration (command line > PAIRGATE_* > config file > defaults).\n\
         # Secrets are not shown: their lines are commented out.\n",
    );
    for line in text.lines() {
        if line.contains("<redacted>") {
            out.push_str("# ");
        }
        out.push_str(line);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches, Parser};

    use super::*;
    use crate::Config;

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        config: Config,
    }

    fn file(text: &str) -> ConfigFile {
        ConfigFile {
            path: PathBuf::from("/etc/pairgate.toml"),
            table: text.parse().expect("TOML"),
        }
    }

    fn parse(f: &ConfigFile, args: &[&str]) -> Result<Config, String> {
        let cmd = f.apply(Serve::command())?;
        let m = cmd
            .try_get_matches_from(std::iter::once("serve").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        Ok(Serve::from_arg_matches(&m).expect("matches").config)
    }

    #[test]
    fn file_values_are_defaults_below_flags() {
        let f = file(
            "max-devices = 3\nallowed-origins = [\"https://a.example\", \"https://b.example\"]\n\
             demo = true\nsession-idle-days = 0.5\ntrust-proxy = [\"10.0.0.0/8\"]\n",
        );
        let c = parse(&f, &[]).unwrap();
        assert_eq!(c.max_devices, 3);
        assert_eq!(
            c.allowed_origins.as_deref(),
            Some(
                &[
                    "https://a.example".to_owned(),
                    "https://b.example".to_owned()
                ][..]
            )
        );
        assert!(c.demo);
        assert_eq!(c.session_idle_days, 0.5);
        assert_eq!(c.trust_proxy.len(), 1);
        assert_eq!(parse(&f, &["--max-devices", "9"]).unwrap().max_devices, 9);
    }

    #[test]
    fn unknown_keys_and_wrong_shapes_name_the_key_and_file() {
        for (text, key) in [
            ("max_devices = 3", "max_devices"),
            ("no-such-option = 1", "no-such-option"),
            ("config = \"x.toml\"", "config"),
            ("help = true", "help"),
            ("max-devices = [1, 2]", "max-devices"),
            ("demo = \"yes\"", "demo"),
            ("[serve]\nmax-devices = 3", "serve"),
        ] {
            let err = file(text).apply(Serve::command()).expect_err(text);
            assert!(
                err.contains(&format!("`{key}`")) && err.contains("/etc/pairgate.toml"),
                "{text}: {err}"
            );
        }
        // The TOML type must fit the option.
        for (text, why) in [
            ("data-dir = 5", "expected a string"),
            ("listen = 8080", "expected a string"),
            ("max-devices = \"8\"", "expected a number"),
            ("max-devices = true", "not true or false"),
            ("trust-proxy = [\"10.0.0.0/8\", 7]", "expected a string"),
        ] {
            let err = file(text).apply(Serve::command()).expect_err(text);
            assert!(err.contains(why), "{text}: {err}");
        }
        // The value's own parser still judges it.
        assert!(parse(&file("qr-ttl-ms = 0"), &[]).is_err());
    }

    #[test]
    fn the_rendered_configuration_reads_back_without_its_secrets() {
        let c = parse(
            &file("secret = \"s3cret\"\nadmin-token = \"t0ken\"\nmax-devices = 4\ndemo = true"),
            &["--trust-proxy", "10.0.0.0/8"],
        )
        .unwrap();
        let text = render(&c).unwrap();
        assert!(
            !text.contains("s3cret") && !text.contains("t0ken"),
            "{text}"
        );
        let back = parse(&file(&text), &[]).unwrap();
        assert_eq!(back.secret, None);
        assert_eq!(
            format!("{:?}", back.redacted()),
            format!(
                "{:?}",
                Config {
                    secret: None,
                    admin_token: None,
                    ..c
                }
                .redacted()
            )
        );
    }
}
