//! The bootstrap every daemon shares: what each `main.rs` used to repeat.
//!
//! A daemon is a library whose `run` takes already-bound listeners, its
//! configuration and a [`Daemon`] (mini-redis's `server::run(listener,
//! shutdown)` shape, so tests run it in-process on port 0). `main.rs` only
//! parses flags, loads the configuration, binds through [`Sockets`] and calls
//! that `run`. The parts:
//!
//! * [`Sockets`] — the listeners: the sockets systemd passed
//!   (`LISTEN_PID`/`LISTEN_FDS`/`LISTEN_FDNAMES`, matched by name to each
//!   listener the daemon needs, so the kernel queues connections while the
//!   daemon restarts), otherwise bound by the daemon itself. Read once, at the
//!   top of `main`, before any thread starts: the variables are cleared so
//!   children don't inherit them.
//! * [`Daemon`] — the status board, the [`Shutdown`] and [`ReloadSignal`]
//!   (with [`Daemon::handle_signals`] in `main` only: tests trigger them by
//!   hand), the admin server ([`Daemon::serve_admin`]), the Redis master this
//!   host sees on `/status` ([`Daemon::report_master`]), configuration reloads
//!   that keep the board's generation current ([`Daemon::spawn_reloader`]),
//!   and systemd readiness plus the watchdog ([`Daemon::ready`]).

use std::os::fd::{FromRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};

use crate::admin::{self, AdminTokenError, StatusBoard};
use crate::lifecycle::{self, ReloadSignal, Shutdown, systemd};
use crate::redis::{RedisSettings, RedisSetupError};
use crate::reload::Reloadable;
use crate::telemetry::LogControl;

/// The listen backlog of a socket the daemon binds itself (tokio's and the
/// kernel's usual `somaxconn`); a passed socket keeps its unit's `Backlog=`.
pub const DEFAULT_BACKLOG: u32 = 1024;

/// Why a listener could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// `LISTEN_FDS` and friends are malformed.
    #[error("sockets passed by systemd (LISTEN_FDS): {0}")]
    Activation(std::io::Error),
    /// A passed socket isn't what the listener needs.
    #[error("the socket systemd passed as {name:?} is not a listening TCP socket{detail}")]
    NotTcpListener {
        /// Its `FileDescriptorName=`.
        name: String,
        /// What was found instead.
        detail: String,
    },
    /// Several passed sockets carry the name of one listener.
    #[error("{count} sockets passed by systemd are named {name:?}; a listener takes one")]
    Ambiguous {
        /// The name.
        name: String,
        /// How many carry it.
        count: usize,
    },
    /// Binding the address failed.
    #[error("cannot listen on {addr} ({name}): {source}")]
    Bind {
        /// Which listener.
        name: String,
        /// The configured address.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The sockets systemd passed, not yet taken by a listener.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Where a daemon's listeners come from: sockets passed by systemd (socket
/// activation), matched by their `FileDescriptorName=` to the listener's
/// name, or else bound by the daemon to the configured address.
#[derive(Debug, Default)]
pub struct Sockets {
    /// Passed sockets not taken yet: (name, listener).
    passed: Vec<(String, std::net::TcpListener)>,
}

impl Sockets {
    /// No passed sockets: every listener is bound (tests, `--once` runs).
    pub fn none() -> Self {
        Sockets::default()
    }

    /// Takes the sockets systemd passed to this process, if any, and clears
    /// `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` so children don't
    /// inherit them. Call at the top of `main`, before the runtime (or any
    /// other thread) starts: it changes the environment. A second call finds
    /// nothing.
    pub fn from_env() -> Result<Self, ListenError> {
        if TAKEN.swap(true, Ordering::SeqCst) {
            return Ok(Sockets::none());
        }
        let fds = sd_notify::listen_fds_with_names(true).map_err(ListenError::Activation)?;
        let mut passed = Vec::new();
        for (fd, name) in fds {
            let listener = take_fd(fd);
            check_listening_tcp(&name, &listener)?;
            passed.push((name, listener));
        }
        if !passed.is_empty() {
            let names: Vec<&str> = passed.iter().map(|(n, _)| n.as_str()).collect();
            tracing::debug!(?names, "sockets passed by systemd");
        }
        Ok(Sockets { passed })
    }

    /// Sockets as if passed under these names (for tests of the matching).
    pub fn from_listeners(passed: Vec<(String, std::net::TcpListener)>) -> Self {
        Sockets { passed }
    }

    /// The listener `name`: the passed socket of that name, else `addr`
    /// bound with [`DEFAULT_BACKLOG`].
    pub async fn listener(&mut self, name: &str, addr: &str) -> Result<TcpListener, ListenError> {
        self.listener_with_backlog(name, addr, DEFAULT_BACKLOG)
            .await
    }

    /// [`Sockets::listener`] with the listen backlog of a socket bound here.
    pub async fn listener_with_backlog(
        &mut self,
        name: &str,
        addr: &str,
        backlog: u32,
    ) -> Result<TcpListener, ListenError> {
        let count = self.passed.iter().filter(|(n, _)| n == name).count();
        if count > 1 {
            return Err(ListenError::Ambiguous {
                name: name.to_owned(),
                count,
            });
        }
        if let Some(i) = self.passed.iter().position(|(n, _)| n == name) {
            let (_, listener) = self.passed.remove(i);
            let bad = |e: std::io::Error| ListenError::NotTcpListener {
                name: name.to_owned(),
                detail: format!(": {e}"),
            };
            listener.set_nonblocking(true).map_err(bad)?;
            let listener = TcpListener::from_std(listener).map_err(bad)?;
            tracing::info!(
                listener = name,
                addr = ?listener.local_addr().ok(),
                configured = addr,
                "using the socket systemd passed"
            );
            return Ok(listener);
        }
        bind(name, addr, backlog).await
    }

    /// Logs passed sockets no listener asked for (a socket unit naming a
    /// listener this configuration doesn't have) and closes them.
    pub fn finish(self) {
        for (name, listener) in self.passed {
            tracing::warn!(
                name,
                addr = ?listener.local_addr().ok(),
                "systemd passed a socket no listener of this daemon takes; closing it"
            );
        }
    }
}

/// Takes ownership of a descriptor passed by systemd.
#[allow(unsafe_code)]
fn take_fd(fd: RawFd) -> std::net::TcpListener {
    // SAFETY: `sd_listen_fds` semantics: descriptors 3.. 3+LISTEN_FDS-1 were
    // passed to this very process (sd-notify checked LISTEN_PID) and nothing
    // else in it owns them; `TAKEN` and the cleared environment make sure
    // each is taken once. What kind of socket it is gets checked next.
    unsafe { std::net::TcpListener::from_raw_fd(fd) }
}

fn check_listening_tcp(name: &str, listener: &std::net::TcpListener) -> Result<(), ListenError> {
    let socket = socket2::SockRef::from(listener);
    let not = |detail: String| ListenError::NotTcpListener {
        name: name.to_owned(),
        detail,
    };
    match socket.domain() {
        Ok(socket2::Domain::IPV4 | socket2::Domain::IPV6) => {}
        Ok(d) => return Err(not(format!(" (domain {d:?})"))),
        Err(e) => return Err(not(format!(": {e}"))),
    }
    match socket.r#type() {
        Ok(socket2::Type::STREAM) => {}
        Ok(t) => return Err(not(format!(" (type {t:?})"))),
        Err(e) => return Err(not(format!(": {e}"))),
    }
    match socket.is_listener() {
        Ok(true) => Ok(()),
        Ok(false) => Err(not(" (not listening)".into())),
        Err(e) => Err(not(format!(": {e}"))),
    }
}

/// Binds `addr` (resolved; the first address that binds wins) with
/// `SO_REUSEADDR`, as `TcpListener::bind` does, and `backlog`.
async fn bind(name: &str, addr: &str, backlog: u32) -> Result<TcpListener, ListenError> {
    let err = |source: std::io::Error| ListenError::Bind {
        name: name.to_owned(),
        addr: addr.to_owned(),
        source,
    };
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await.map_err(err)? {
        match listen_on(a, backlog) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolves to nothing",
        )
    })))
}

/// A listening socket on `addr` with `SO_REUSEADDR` (as
/// `TcpListener::bind` sets it) and an accept queue of `backlog`
/// connections (the kernel caps it at `net.core.somaxconn`).
pub fn listen_on(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// What every daemon's `run` shares: its status board, shutdown and reload
/// signals, and the helpers that start the parts each daemon has.
#[derive(Clone, Debug)]
pub struct Daemon {
    /// `/status`, `/healthz`: checks and fields.
    pub board: Arc<StatusBoard>,
    /// Stops the daemon (graceful, then forced).
    pub shutdown: Shutdown,
    /// Asks every reloadable part to reload (`SIGHUP`, file changes).
    pub reload: ReloadSignal,
}

impl Daemon {
    /// The bootstrap of daemon `name` running configuration `generation`:
    /// a new board, shutdown and reload signal. No signal handlers (see
    /// [`Daemon::handle_signals`]).
    pub fn new(name: &'static str, generation: &str) -> Self {
        Daemon {
            board: StatusBoard::new(name, crate::VERSION, generation),
            shutdown: Shutdown::new(),
            reload: ReloadSignal::new(),
        }
    }

    /// Lets `PUT /log-filter` change the filter of `log`.
    pub fn with_log_control(self, log: LogControl) -> Self {
        self.board.set_log_control(log);
        self
    }

    /// `SIGTERM`/`SIGINT` trigger the shutdown (twice: forced), `SIGHUP` a
    /// reload. For `main` only; needs a Tokio runtime.
    pub fn handle_signals(&self) -> std::io::Result<()> {
        lifecycle::spawn_signal_handler(self.shutdown.clone(), self.reload.clone()).map(drop)
    }

    /// Installs the admin token of `token_file` and serves `router` (the
    /// common [`admin::router`], or a daemon's own with it merged in) on
    /// `listener` until shutdown.
    pub fn serve_admin(
        &self,
        listener: TcpListener,
        router: axum::Router,
        token_file: Option<&Path>,
    ) -> Result<tokio::task::JoinHandle<std::io::Result<()>>, AdminTokenError> {
        admin::install_admin_token(&self.board, token_file)?;
        let shutdown = self.shutdown.clone();
        Ok(tokio::spawn(async move {
            let served = admin::serve(listener, router, shutdown).await;
            if let Err(e) = &served {
                tracing::error!(error = %e, "admin endpoint failed");
            }
            served
        }))
    }

    /// Puts the Redis master this host sees on `/status` every `every`
    /// (`forgectl status` compares all hosts), on a connection of its own.
    pub fn report_master(
        &self,
        redis: &RedisSettings,
        every: Duration,
    ) -> Result<tokio::task::JoinHandle<()>, RedisSetupError> {
        let probe = redis.client()?;
        drop(fred::prelude::ClientLike::connect(&probe));
        Ok(crate::redis::report_master(
            probe,
            Arc::clone(&self.board),
            every,
            self.shutdown.clone(),
        ))
    }

    /// Replaces `value` with what `load` returns (the value and its config
    /// generation, shown on the board) on every reload request and change of
    /// `watch_files`, until shutdown; a failed load keeps the old value.
    pub fn spawn_reloader<T, F, E>(
        &self,
        what: &'static str,
        watch_files: Vec<PathBuf>,
        value: &Arc<Reloadable<T>>,
        load: F,
    ) -> tokio::task::JoinHandle<()>
    where
        T: Send + Sync + 'static,
        F: Fn() -> Result<(T, String), E> + Send + 'static,
        E: std::fmt::Display,
    {
        let board = Arc::clone(&self.board);
        value.spawn_reloader(
            what,
            watch_files,
            self.reload.clone(),
            self.shutdown.clone(),
            move || {
                let (value, generation) = load()?;
                board.set_generation(&generation);
                Ok::<_, E>(value)
            },
        )
    }

    /// Tells systemd start-up is done (`READY=1`) and pings its watchdog
    /// while `alive` says the daemon's main loop is healthy. No-ops outside
    /// systemd.
    pub fn ready<F>(&self, alive: F)
    where
        F: Fn() -> bool + Send + 'static,
    {
        systemd::ready();
        systemd::spawn_watchdog(self.shutdown.clone(), alive);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passed_sockets_are_matched_by_name_and_the_rest_bound() {
        let passed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let passed_addr = passed.local_addr().unwrap();
        let mut sockets = Sockets::from_listeners(vec![("http".into(), passed)]);
        let http = sockets.listener("http", "127.0.0.1:1").await.unwrap();
        assert_eq!(http.local_addr().unwrap(), passed_addr);
        let admin = sockets.listener("admin", "127.0.0.1:0").await.unwrap();
        assert_ne!(admin.local_addr().unwrap(), passed_addr);
        // taken once: asking again binds the configured address
        let again = sockets
            .listener_with_backlog("http", "127.0.0.1:0", 16)
            .await
            .unwrap();
        assert_ne!(again.local_addr().unwrap(), passed_addr);
        sockets.finish();
    }

    #[tokio::test]
    async fn two_sockets_of_one_name_are_refused() {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut sockets = Sockets::from_listeners(vec![("http".into(), a), ("http".into(), b)]);
        let e = sockets.listener("http", "127.0.0.1:0").await.unwrap_err();
        assert!(matches!(e, ListenError::Ambiguous { count: 2, .. }), "{e}");
    }

    #[tokio::test]
    async fn a_bind_failure_names_the_listener() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let e = Sockets::none()
            .listener("admin", &addr)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("admin") && e.contains(&addr), "{e}");
    }

    #[test]
    fn a_socket_that_does_not_listen_is_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(check_listening_tcp("http", &listener).is_ok());
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let as_listener = std::net::TcpListener::from(std::os::fd::OwnedFd::from(client));
        let e = check_listening_tcp("http", &as_listener).unwrap_err();
        assert!(e.to_string().contains("not listening"), "{e}");
    }
}
