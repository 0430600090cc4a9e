//! The session `mlflow-descope-auth login` stores for one tracking server: a JSON file, 0600 in a
//! 0700 directory, replaced atomically, renewed by one process at a time under an exclusive lock on
//! a sidecar file (`<name>.lock` next to it), so that two notebooks never both spend one rotating
//! refresh token: the second finds the first one's result in the file.
//!
//! Where the file lives (the user's config directory, one name per normalised tracking URI) is the
//! caller's business; this module only reads, writes, locks and deletes the path it is given.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The file's content. The tokens are stored as Descope issued them: anyone who can read the
/// user's files can use them, exactly as with a browser's cookies.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredLogin {
    pub tracking_uri: String,
    pub project_id: String,
    pub base_url: String,
    pub session_token: String,
    pub refresh_token: Option<String>,
    /// Who signed in, for display.
    pub user: String,
}

impl fmt::Debug for StoredLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoredLogin({:?}, user={:?}, <tokens hidden>)", self.tracking_uri, self.user)
    }
}

/// The error a script sees when the stored session cannot be used: it names the server and the
/// command that fixes it.
pub fn sign_in_again(tracking_uri: &str, why: impl fmt::Display) -> Error {
    Error::StoredLogin { tracking_uri: tracking_uri.to_string(), why: why.to_string() }
}

/// The login in `path`: `Ok(None)` when there is no file, an error when it is not one this package
/// wrote (unreadable, not our JSON).
pub fn load(path: &Path) -> io::Result<Option<StoredLogin>> {
    let text = match fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    serde_json::from_slice(&text).map(Some).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The login in `path` if it is `tracking_uri`'s; else the error that says to sign in again,
/// `missing` saying why when there is no file.
pub fn load_for(path: &Path, tracking_uri: &str, missing: &str) -> Result<StoredLogin> {
    match load(path) {
        Ok(Some(login)) if login.tracking_uri == tracking_uri => Ok(login),
        Ok(None) => Err(sign_in_again(tracking_uri, missing)),
        Ok(Some(_)) | Err(_) => Err(sign_in_again(tracking_uri, "cannot be read")),
    }
}

/// Writes `login` to `path` atomically: a new 0600 file in the same (0700) directory, renamed over
/// the old one, so a reader sees the old login or the new one, never half of one.
pub fn save(path: &Path, login: &StoredLogin) -> io::Result<()> {
    let dir = private_dir(path)?;
    let name = path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut suffix = [0u8; 8];
    aws_lc_rs::rand::fill(&mut suffix).map_err(|_| io::Error::other("no randomness for a file name"))?;
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let temp = dir.join(format!(".{}.{}-{suffix}", name.to_string_lossy(), std::process::id()));
    let written = (|| {
        let mut file = private_options().write(true).create_new(true).open(&temp)?;
        file.write_all(&serde_json::to_vec(login).map_err(io::Error::other)?)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

/// Deletes the login; `false` when there was none.
pub fn delete(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Held while a process renews (or deletes) the login in `path`; released on drop.
pub struct Lock {
    file: File,
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// Waits for the exclusive lock of the login in `path` (a `flock` on `<stem>.lock` beside it, the
/// sidecar every process that renews this login takes).
pub fn lock(path: &Path) -> io::Result<Lock> {
    let file = private_options().read(true).write(true).create(true).truncate(false).open(lock_path(path)?)?;
    file.lock()?;
    Ok(Lock { file })
}

fn lock_path(path: &Path) -> io::Result<PathBuf> {
    let dir = private_dir(path)?;
    let stem = path.file_stem().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    Ok(dir.join(format!("{}.lock", stem.to_string_lossy())))
}

/// The directory of `path`, created 0700 if missing and made 0700 if it was created looser.
fn private_dir(path: &Path) -> io::Result<PathBuf> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700);
        builder.create(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
    }
    #[cfg(not(unix))]
    builder.create(&dir)?;
    Ok(dir)
}

fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(session: &str) -> StoredLogin {
        StoredLogin {
            tracking_uri: "https://mlflow.example.com".into(),
            project_id: "P2x".into(),
            base_url: "https://api.descope.com".into(),
            session_token: session.into(),
            refresh_token: Some("r".into()),
            user: "ada".into(),
        }
    }

    fn scratch() -> PathBuf {
        let mut n = [0u8; 8];
        aws_lc_rs::rand::fill(&mut n).unwrap();
        let name: String = n.iter().map(|b| format!("{b:02x}")).collect();
        std::env::temp_dir().join(format!("mda-stored-login-{name}"))
    }

    #[test]
    fn saved_logins_load_back_private_and_leave_no_temp_file() {
        let dir = scratch();
        let path = dir.join("sessions").join("abc.json");
        assert_eq!(load(&path).unwrap(), None);
        save(&path, &login("s1")).unwrap();
        save(&path, &login("s2")).unwrap();
        assert_eq!(load(&path).unwrap(), Some(login("s2")));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            assert_eq!(fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        }
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["abc.json"]);
        assert!(delete(&path).unwrap());
        assert!(!delete(&path).unwrap());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_file_this_package_did_not_write_is_an_error_not_a_login() {
        let dir = scratch();
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.json");
        fs::write(&path, br#"{"tracking_uri": "https://a"}"#).unwrap();
        assert_eq!(load(&path).unwrap_err().kind(), io::ErrorKind::InvalidData);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn debug_hides_the_tokens() {
        let shown = format!("{:?}", login("secret-session"));
        assert!(!shown.contains("secret-session") && shown.contains("ada"), "{shown}");
    }
}
