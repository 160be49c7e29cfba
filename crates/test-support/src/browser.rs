//! A headless Chromium, driven through chromedriver, for tests of web pages.
//!
//! The identity app is used through a browser; some of its tests load real pages, follow links
//! and submit forms. [`Chromedriver::start`] runs `chromedriver` on a free loopback port, and
//! [`Chromedriver::new_session`] opens a [`fantoccini::Client`] on a fresh headless Chromium
//! with a profile of its own.
//!
//! The browser is kept to this machine: besides the usual switches against Chromium's own
//! background traffic (sync, component updates, QUIC …), by default **no host name resolves
//! except `localhost`**, so nothing a page or the browser itself asks for leaves the machine.
//! Tests that want names for local servers map them with their own `--host-resolver-rules`
//! (see [`Chromedriver::new_session_with_args`]), e.g. `MAP *.example.test 127.0.0.1`.
//!
//! fantoccini talks plain HTTP to chromedriver on loopback, so it is built without any TLS
//! feature (no openssl, no second rustls crypto provider in the workspace).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{Result, TestSupportError};
use crate::ports::{free_port, loopback};
use crate::process::{ChildGuard, find_binary, scratch_dir};

/// The Debian packages that provide Chromium and chromedriver.
const APT_PACKAGES: &str = "chromium chromium-driver";
/// How long chromedriver gets to answer `/status`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How many ports a start tries before giving up.
const START_ATTEMPTS: usize = 3;

/// Chromium's switches for every session; `--user-data-dir` is added per session.
pub const DEFAULT_CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--no-pings",
    "--window-size=1280,1024",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE [::1]",
];

/// Whether chromedriver at `addr` answers `GET /status` with 200.
async fn status_ok(addr: SocketAddr) -> bool {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = [0_u8; 16];
        let n = stream.read(&mut head).await?;
        std::io::Result::Ok(head[..n].to_vec())
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), exchange).await,
        Ok(Ok(head)) if head.starts_with(b"HTTP/1.1 200")
    )
}

/// The name of a command-line switch (`--name=value` → `--name`).
fn switch_name(arg: &str) -> &str {
    arg.split_once('=').map_or(arg, |(name, _)| name)
}

/// A chromedriver of the test's own; it, and every browser it started, is killed when dropped.
#[derive(Debug)]
pub struct Chromedriver {
    /// chromedriver's process; its Chromiums are in its process group (declared first: fields
    /// drop in order, so they die before the profiles are removed).
    child: ChildGuard,
    /// Holds chromedriver's log and one profile directory per session.
    dir: TempDir,
    /// The loopback port chromedriver listens on.
    port: u16,
    /// The Chromium binary sessions use.
    chromium: PathBuf,
    /// Numbers the sessions' profile directories.
    sessions: AtomicUsize,
}

impl Chromedriver {
    /// Starts chromedriver and waits until it reports itself ready.
    ///
    /// # Errors
    ///
    /// [`TestSupportError::MissingBinary`] (naming `chromium chromium-driver`) when Chromium or
    /// chromedriver is not installed; start-up errors quoting chromedriver's log otherwise.
    pub async fn start() -> Result<Self> {
        let chromium = find_binary("chromium", APT_PACKAGES)?;
        let chromedriver = find_binary("chromedriver", APT_PACKAGES)?;
        let dir = scratch_dir("chromedriver")?;
        let log = dir.path().join("chromedriver.log");
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let mut command = Command::new(&chromedriver);
            command
                .arg(format!("--port={port}"))
                .current_dir(dir.path());
            let mut child = ChildGuard::spawn("chromedriver", command, &log)?;
            let addr = loopback(port);
            match child
                .wait_ready(addr, STARTUP_TIMEOUT, || status_ok(addr))
                .await
            {
                Ok(()) => {
                    return Ok(Self {
                        child,
                        dir,
                        port,
                        chromium,
                        sessions: AtomicUsize::new(0),
                    });
                }
                Err(e @ TestSupportError::ExitedEarly { .. }) => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or(TestSupportError::NotRunning {
            server: "chromedriver",
        }))
    }

    /// `http://127.0.0.1:PORT`: the WebDriver endpoint.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The loopback port chromedriver listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// chromedriver's output.
    pub fn log_path(&self) -> &Path {
        self.child.log_path()
    }

    /// Opens a session on a fresh headless Chromium ([`DEFAULT_CHROMIUM_ARGS`], a new
    /// profile). Close it with [`fantoccini::Client::close`] when done; dropping the
    /// `Chromedriver` kills any browser left over.
    ///
    /// # Errors
    ///
    /// [`TestSupportError::WebDriver`] when the browser cannot be started.
    pub async fn new_session(&self) -> Result<fantoccini::Client> {
        self.new_session_with_args(&[]).await
    }

    /// Like [`Chromedriver::new_session`], with further Chromium switches; a switch given here
    /// replaces a default one of the same name (e.g. `--host-resolver-rules=…`,
    /// `--window-size=…`).
    ///
    /// # Errors
    ///
    /// [`TestSupportError::WebDriver`] when the browser cannot be started, and
    /// [`TestSupportError::Io`] when its profile directory cannot be created.
    pub async fn new_session_with_args(&self, extra_args: &[&str]) -> Result<fantoccini::Client> {
        let n = self.sessions.fetch_add(1, Ordering::Relaxed);
        let profile = self.dir.path().join(format!("profile-{n}"));
        std::fs::create_dir(&profile)
            .map_err(|e| TestSupportError::io(format!("creating {}", profile.display()), e))?;
        let mut args: Vec<String> = DEFAULT_CHROMIUM_ARGS
            .iter()
            .filter(|default| {
                !extra_args
                    .iter()
                    .any(|extra| switch_name(extra) == switch_name(default))
            })
            .map(|arg| (*arg).to_owned())
            .collect();
        args.extend(extra_args.iter().map(|arg| (*arg).to_owned()));
        args.push(format!("--user-data-dir={}", profile.display()));

        let mut capabilities = fantoccini::wd::Capabilities::new();
        capabilities.insert("browserName".to_owned(), "chrome".into());
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({
                "binary": self.chromium.to_string_lossy(),
                "args": args,
            }),
        );
        let client = fantoccini::ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url())
            .await?;
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_names() {
        assert_eq!(switch_name("--window-size=1,2"), "--window-size");
        assert_eq!(switch_name("--headless"), "--headless");
    }
}
