//! The one error type of this crate.
//!
//! A test that cannot start its server should fail with a message that says what to do about
//! it: which package to install, which log to read, which command failed and what it printed.
//! Every variant therefore carries enough context to be read on its own in a test's output.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Shorthand for results of this crate.
pub type Result<T, E = TestSupportError> = std::result::Result<T, E>;

/// Everything that can go wrong while starting, driving or stopping a test server.
#[derive(Debug, thiserror::Error)]
pub enum TestSupportError {
    /// A server binary is not installed on this machine.
    #[error("`{binary}` is not installed; install it with `apt-get install {apt_package}`")]
    MissingBinary {
        /// The executable that was looked for, e.g. `redis-server`.
        binary: &'static str,
        /// The Debian package(s) that provide it, space-separated.
        apt_package: &'static str,
    },

    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, e.g. "writing slapd.conf".
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A server process exited while it was being started.
    #[error("{server} exited during start-up ({status}); its log {log:?} ends with:\n{log_tail}")]
    ExitedEarly {
        /// Which server, e.g. "redis-server".
        server: &'static str,
        /// How it exited.
        status: String,
        /// Where its output went.
        log: PathBuf,
        /// The last lines of that output.
        log_tail: String,
    },

    /// A server did not become ready in time.
    #[error(
        "{server} did not become ready on {addr} within {timeout:?}; its log {log:?} ends with:\n{log_tail}"
    )]
    NotReady {
        /// Which server.
        server: &'static str,
        /// The address it should have answered on.
        addr: SocketAddr,
        /// How long we waited.
        timeout: Duration,
        /// Where its output went.
        log: PathBuf,
        /// The last lines of that output.
        log_tail: String,
    },

    /// Nothing accepted connections on an address in time (see [`crate::wait_for_port`]).
    #[error("nothing accepted connections on {addr} within {timeout:?}")]
    PortTimeout {
        /// The address that was tried.
        addr: SocketAddr,
        /// How long we waited.
        timeout: Duration,
    },

    /// Something a test waited for did not happen in time.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was awaited, e.g. "2 messages (got 1)".
        what: String,
        /// How long we waited.
        timeout: Duration,
    },

    /// A helper command (`slapadd`, `ldapadd`, `mariadb-install-db` …) failed.
    #[error("`{command}` failed ({status}):\n{output}")]
    CommandFailed {
        /// The command line, for the reader.
        command: String,
        /// How it exited.
        status: String,
        /// What it printed on stdout and stderr.
        output: String,
    },

    /// A signal could not be delivered to a server process.
    #[error("cannot send {signal} to {server} (pid {pid}): {source}")]
    Signal {
        /// Which server.
        server: &'static str,
        /// Its process id.
        pid: u32,
        /// The signal's name.
        signal: &'static str,
        /// The underlying error.
        #[source]
        source: nix::Error,
    },

    /// The server's process is not running (it was killed or stopped before).
    #[error("{server} is not running")]
    NotRunning {
        /// Which server.
        server: &'static str,
    },

    /// Neither a MariaDB server of our own nor the fallback server can be used.
    #[error(
        "`mariadbd` is not installed (install it with `apt-get install mariadb-server`) and \
         the fallback server {url} cannot be used: {source}"
    )]
    NoMysqlServer {
        /// The fallback server tried (credentials included, as configured).
        url: String,
        /// Why it could not be used.
        #[source]
        source: sqlx::Error,
    },

    /// A SQL statement needed to prepare a test database failed.
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),

    /// An LDAP operation needed to check the directory failed.
    #[error("LDAP: {0}")]
    Ldap(#[from] ldap3::LdapError),

    /// A WebDriver session could not be created.
    #[error("WebDriver session: {0}")]
    WebDriver(#[from] fantoccini::error::NewSessionError),

    /// A caller passed something this crate cannot use.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl TestSupportError {
    /// Wraps an I/O error with a description of what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
