//! Appending to a tool's `service.log`, where tool owners read what the
//! monitor did to their web service.
//!
//! The monitor runs privileged and the tool controls its home directory, so
//! the file is opened with `O_NOFOLLOW` (a symlink planted as `service.log` is
//! refused, never followed), `O_NONBLOCK` (a FIFO can't stall the pass) and
//! `O_APPEND`. After opening, the file must be a regular file with one link
//! (no hard link to someone else's file) owned by the tool's uid; a file the
//! monitor just created is `fchown`ed to the tool. Anything else is refused and
//! the line only goes to the monitor's own log.

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Why a line could not be appended.
#[derive(Debug, thiserror::Error)]
pub enum ServiceLogError {
    /// `service.log` is a symbolic link.
    #[error("{0} is a symbolic link; not written")]
    Symlink(String),
    /// Not a regular file, or more than one link.
    #[error("{0} is not a regular file with a single link; not written")]
    NotPlain(String),
    /// Owned by someone other than the tool.
    #[error("{path} is owned by uid {owner}, not the tool's uid {uid}; not written")]
    WrongOwner {
        /// The file.
        path: String,
        /// Its owner.
        owner: u32,
        /// The tool's uid.
        uid: u32,
    },
    /// Open, chown or write failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Appends `line` (a newline is added) to `path` as described in the module docs.
pub fn append(path: &Path, uid: u32, gid: Option<u32>, line: &str) -> Result<(), ServiceLogError> {
    let shown = path.display().to_string();
    let io = |source| ServiceLogError::Io {
        path: shown.clone(),
        source,
    };
    let existed = std::fs::symlink_metadata(path).is_ok();
    let mut file = match std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(ServiceLogError::Symlink(shown));
        }
        Err(e) => return Err(io(e)),
    };
    let meta = file.metadata().map_err(io)?;
    if !meta.file_type().is_file() || meta.nlink() != 1 {
        return Err(ServiceLogError::NotPlain(shown));
    }
    if meta.uid() != uid {
        let we_created = !existed && meta.uid() == nix::unistd::geteuid().as_raw();
        if !we_created {
            return Err(ServiceLogError::WrongOwner {
                path: shown,
                owner: meta.uid(),
                uid,
            });
        }
        nix::unistd::fchown(
            file.as_fd(),
            Some(nix::unistd::Uid::from_raw(uid)),
            gid.map(nix::unistd::Gid::from_raw),
        )
        .map_err(|e| io(std::io::Error::from(e)))?;
    }
    let mut text = line.trim_end().to_owned();
    text.push('\n');
    file.write_all(text.as_bytes()).map_err(io)
}

/// A log line prefix: the UTC time like today's monitor writes it.
pub fn timestamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    now.format(&fmt).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_and_refuses_symlinks_and_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let log = dir.path().join("service.log");
        append(&log, me, None, "one").unwrap();
        append(&log, me, None, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "one\ntwo\n");

        let target = dir.path().join("target");
        std::fs::write(&target, "secret\n").unwrap();
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            append(&link, me, None, "x"),
            Err(ServiceLogError::Symlink(_))
        ));
        let hard = dir.path().join("hard.log");
        std::fs::hard_link(&target, &hard).unwrap();
        assert!(matches!(
            append(&hard, me, None, "x"),
            Err(ServiceLogError::NotPlain(_))
        ));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "secret\n");
    }
}
