//! The secret kept in the data dir, and the data dir itself: both private to
//! the user running pairgate. Anyone who can read the secret can mint a phone
//! token for every account, so the dir is created 0700, the secret 0600, and
//! an existing secret that others can read is reported at start.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use base64::Engine;

/// Name of the generated secret inside the data dir.
pub const SECRET_FILE: &str = "secret";

/// Creates `dir` (and its parents) if missing, the last part readable by its
/// owner only. An existing dir keeps its mode; one open to others is reported.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("cannot create the data dir {}", dir.display()))?;
    if open_to_others(dir) {
        tracing::warn!(
            dir = %dir.display(),
            "the data dir can be read by other users of this machine (chmod 700 it)"
        );
    }
    Ok(())
}

/// Whether group or others have any access to `path`.
pub fn open_to_others(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}

/// The secret in a file named by `--secret-file`: its contents, trimmed. One
/// that others can read is reported (and used), as the data dir's is.
pub fn read_secret_file(path: &Path) -> anyhow::Result<String> {
    read_key_file(path, "secret file")
}

/// A former secret in a file named by `--previous-secret-file`, read as
/// `--secret-file`'s is: what it verifies is accepted, so others must not
/// read it either.
pub fn read_previous_secret_file(path: &Path) -> anyhow::Result<String> {
    read_key_file(path, "previous secret file")
}

/// The trimmed contents of a file holding a key; `what` names it in errors
/// and the warning.
fn read_key_file(path: &Path, what: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} {}", path.display()))?;
    let secret = text.trim().to_owned();
    anyhow::ensure!(!secret.is_empty(), "the {what} {} is empty", path.display());
    if open_to_others(path) {
        tracing::warn!(
            file = %path.display(),
            "the {what} can be read by other users of this machine, who can then mint \
             phone tokens for every account: chmod 600 it (and rotate it if it leaked)"
        );
    }
    Ok(secret)
}

/// The secret in force: `--secret` if given (no file written), else the one kept
/// in `<data_dir>/secret`, generated on first use.
pub fn resolve_secret(explicit: Option<&str>, data_dir: &Path) -> anyhow::Result<String> {
    if let Some(s) = explicit {
        anyhow::ensure!(!s.is_empty(), "--secret must not be empty");
        return Ok(s.to_owned());
    }
    create_private_dir(data_dir)?;
    let path = data_dir.join(SECRET_FILE);
    if !path.exists() {
        write_new_secret(data_dir, &path)?;
    } else if open_to_others(&path) {
        tracing::warn!(
            file = %path.display(),
            "the secret can be read by other users of this machine, who can then mint \
             phone tokens for every account: chmod 600 it (and rotate it if it leaked)"
        );
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the secret {}", path.display()))?;
    let secret = text.trim().to_owned();
    anyhow::ensure!(!secret.is_empty(), "{} is empty", path.display());
    Ok(secret)
}

/// Writes a fresh secret aside (0600, never an existing file) and hard-links
/// it into place: if `serve` and `token` race on a new data dir, exactly one
/// secret wins, complete, and both read it.
fn write_new_secret(data_dir: &Path, path: &Path) -> anyhow::Result<()> {
    let mut fresh = [0u8; 32];
    rand::fill(&mut fresh);
    let generated = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(fresh);
    let aside = data_dir.join(format!(".{SECRET_FILE}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&aside);
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&aside).and_then(|mut file| {
        file.write_all(format!("{generated}\n").as_bytes())?;
        file.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&aside, path));
    let _ = std::fs::remove_file(&aside);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot write the secret {}", path.display())),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_fresh_data_dir_and_secret_are_private() {
        let root = tempfile::tempdir().unwrap();
        // Whatever the umask, the new dir and secret allow nobody else in.
        let dir = root.path().join("nested/data");
        let secret = resolve_secret(None, &dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(SECRET_FILE)), 0o600);
        assert!(!open_to_others(&dir.join(SECRET_FILE)));
        assert_eq!(
            resolve_secret(None, &dir).unwrap(),
            secret,
            "kept, not regenerated"
        );
    }

    #[test]
    fn a_secret_others_can_read_is_noticed_and_still_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SECRET_FILE);
        std::fs::write(&path, "old-secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(open_to_others(&path));
        assert_eq!(resolve_secret(None, dir.path()).unwrap(), "old-secret");
    }

    #[test]
    fn errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "x").unwrap();
        let err = resolve_secret(None, &file.join("data")).unwrap_err();
        assert!(format!("{err:#}").contains("not-a-dir/data"), "{err:#}");
    }
}
