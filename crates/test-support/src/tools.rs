//! [`ToolAccount`]: a real Unix account of a tool (`tools.<name>`) with a
//! home directory, removed when dropped.
//!
//! Web services run as their tool's user: lighttpd refuses to run as root,
//! the registration daemon asks the identd who owns a connection, and Grid
//! Engine refuses jobs of root. Tests therefore create real accounts with
//! `useradd` (uid ≥ 1000, a group of the same name) and run the programs
//! under test as them. Creating accounts needs root; without it the error
//! says so.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::error::{Result, TestSupportError};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A tool's account; `userdel`ed (home included) when dropped.
#[derive(Debug)]
pub struct ToolAccount {
    /// The tool's name (`foo`).
    name: String,
    /// The account (`tools.foo`).
    user: String,
    /// Its uid.
    uid: u32,
    /// Its primary gid.
    gid: u32,
    /// Its home directory.
    home: PathBuf,
}

impl ToolAccount {
    /// Creates `<project>.<prefix><unique>` with its home in `homes`
    /// (`homes/<tool>`, owned by the tool, mode 0755). `homes` itself is made
    /// world-traversable.
    ///
    /// # Errors
    ///
    /// When not running as root, or `useradd` fails.
    pub fn create(project: &str, prefix: &str, homes: &Path) -> Result<Self> {
        if !nix::unistd::geteuid().is_root() {
            return Err(TestSupportError::InvalidArgument(
                "creating tool accounts (useradd) needs root; run the tests as root".into(),
            ));
        }
        let name = format!(
            "{prefix}{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let user = format!("{project}.{name}");
        let home = homes.join(&name);
        let _ = std::fs::set_permissions(homes, std::fs::Permissions::from_mode(0o755));
        let mut last = String::new();
        // useradd fails while another one holds /etc/passwd's lock: retry.
        for _ in 0..50 {
            let out = Command::new("useradd")
                .args(["-M", "-U", "-s", "/bin/bash", "-K", "UID_MIN=1000", "-d"])
                .arg(&home)
                .arg(&user)
                .output()
                .map_err(|e| TestSupportError::io("running useradd (package passwd)", e))?;
            if out.status.success() {
                last.clear();
                break;
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            std::thread::sleep(Duration::from_millis(100));
        }
        if !last.is_empty() {
            return Err(TestSupportError::CommandFailed {
                command: format!("useradd {user}"),
                status: "failed".into(),
                output: last,
            });
        }
        let pw = nix::unistd::User::from_name(&user)
            .ok()
            .flatten()
            .ok_or_else(|| TestSupportError::InvalidArgument(format!("{user} was not created")))?;
        let account = ToolAccount {
            name,
            user,
            uid: pw.uid.as_raw(),
            gid: pw.gid.as_raw(),
            home,
        };
        std::fs::create_dir_all(&account.home)
            .map_err(|e| TestSupportError::io(format!("creating {:?}", account.home), e))?;
        account.chown(&account.home)?;
        std::fs::set_permissions(&account.home, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| TestSupportError::io("chmod of the tool's home", e))?;
        Ok(account)
    }

    /// The tool's name (`foo` of `tools.foo`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The account name (`tools.foo`).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The uid.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The primary gid.
    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// The home directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Writes `contents` to `<home>/<relative>` (creating directories), all
    /// owned by the tool.
    ///
    /// # Errors
    ///
    /// When a file or directory cannot be written.
    pub fn write(&self, relative: &str, contents: &str) -> Result<PathBuf> {
        let path = self.home.join(relative);
        let mut dir = self.home.clone();
        if let Some(parent) = Path::new(relative).parent() {
            for part in parent.components() {
                dir.push(part);
                std::fs::create_dir_all(&dir)
                    .map_err(|e| TestSupportError::io(format!("creating {dir:?}"), e))?;
                self.chown(&dir)?;
            }
        }
        std::fs::write(&path, contents)
            .map_err(|e| TestSupportError::io(format!("writing {path:?}"), e))?;
        self.chown(&path)?;
        Ok(path)
    }

    /// Gives `path` to the tool.
    ///
    /// # Errors
    ///
    /// When `chown` fails.
    pub fn chown(&self, path: &Path) -> Result<()> {
        nix::unistd::chown(
            path,
            Some(nix::unistd::Uid::from_raw(self.uid)),
            Some(nix::unistd::Gid::from_raw(self.gid)),
        )
        .map_err(|e| TestSupportError::io(format!("chown of {path:?}"), e.into()))
    }

    /// A command that runs as the tool (uid, gid, no supplementary groups),
    /// with `HOME`, `USER` and `LOGNAME` set and its home as working directory.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(program);
        c.uid(self.uid)
            .gid(self.gid)
            .env("HOME", &self.home)
            .env("USER", &self.user)
            .env("LOGNAME", &self.user)
            .current_dir(&self.home);
        c
    }
}

impl Drop for ToolAccount {
    fn drop(&mut self) {
        // Whatever still runs as the tool goes first (userdel refuses otherwise).
        let _ = Command::new("pkill")
            .args(["-KILL", "-U", &self.uid.to_string()])
            .status();
        for _ in 0..50 {
            match Command::new("userdel").args(["-r", &self.user]).output() {
                Ok(o) if o.status.success() => break,
                // 6: no such user — already gone.
                Ok(o) if o.status.code() == Some(6) => break,
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        let _ = std::fs::remove_dir_all(&self.home);
    }
}
