//! Unix users for tests that need processes of different owners, and
//! [`ListenerAs`]: a TCP server whose socket belongs to one of them.
//!
//! proxylistener checks who serves a backend port by asking the backend
//! host's identd, which reads the kernel's socket table; to test it, servers
//! must really run under different uids. [`ensure_user`] creates a system
//! user (idempotently, safe when tests race to create the same one);
//! [`ListenerAs::start`] runs a small Python server under that user that
//! accepts connections and keeps them open until the peer closes.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use crate::error::{Result, TestSupportError};
use crate::process::{ChildGuard, find_binary, scratch_dir};

/// A user's numeric ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserIds {
    /// The uid.
    pub uid: u32,
    /// The primary gid.
    pub gid: u32,
}

/// Makes sure the system user `name` exists (created with `useradd --system`,
/// no home, no login shell) and returns its ids. Needs root to create one.
///
/// # Errors
///
/// When the user doesn't exist and can't be created.
pub fn ensure_user(name: &str) -> Result<UserIds> {
    if let Some(ids) = lookup(name)? {
        return Ok(ids);
    }
    let useradd = find_binary("useradd", "passwd")?;
    let out = Command::new(useradd)
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
        ])
        .arg(name)
        .output()
        .map_err(|e| TestSupportError::io(format!("running useradd {name}"), e))?;
    // Exit status 9: another test created it meanwhile.
    if !out.status.success() && out.status.code() != Some(9) {
        return Err(TestSupportError::InvalidArgument(format!(
            "useradd {name} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    lookup(name)?.ok_or_else(|| {
        TestSupportError::InvalidArgument(format!("user {name} is missing after useradd"))
    })
}

fn lookup(name: &str) -> Result<Option<UserIds>> {
    let user = nix::unistd::User::from_name(name).map_err(|e| {
        TestSupportError::io(format!("looking up user {name}"), std::io::Error::from(e))
    })?;
    Ok(user.map(|u| UserIds {
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
    }))
}

/// The server run by [`ListenerAs`]: listen on 127.0.0.1:<port>, accept, keep
/// every connection until its peer closes it.
const LISTENER_PY: &str = r#"
import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(64)
def hold(c):
    try:
        while c.recv(4096):
            pass
    finally:
        c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=hold, args=(c,), daemon=True).start()
"#;

/// A TCP server on a loopback port, run as another user; killed when dropped.
#[derive(Debug)]
pub struct ListenerAs {
    port: u16,
    _child: ChildGuard,
    _dir: tempfile::TempDir,
}

impl ListenerAs {
    /// Starts a server listening on `127.0.0.1:port` as `user` (created if
    /// needed) and waits until it accepts.
    ///
    /// # Errors
    ///
    /// When the user can't be made, python3 is missing, or the server does
    /// not listen within 20 s.
    pub async fn start(user: &str, port: u16) -> Result<Self> {
        let ids = ensure_user(user)?;
        // The system interpreter: one under root's home is not readable by
        // other users.
        let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
            .into_iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.is_file())
            .map_or_else(|| find_binary("python3", "python3"), Ok)?;
        let dir = scratch_dir("listener-as")?;
        let mut command = Command::new(python);
        command
            .args(["-c", LISTENER_PY, &port.to_string()])
            .current_dir("/")
            .uid(ids.uid)
            .gid(ids.gid);
        let mut child = ChildGuard::spawn("listener", command, &dir.path().join("log"))?;
        let addr = crate::ports::loopback(port);
        child
            .wait_ready(addr, Duration::from_secs(20), || async move {
                tokio::net::TcpStream::connect(addr).await.is_ok()
            })
            .await?;
        Ok(ListenerAs {
            port,
            _child: child,
            _dir: dir,
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }
}
