//! Process lifecycle: signals, graceful shutdown and systemd notifications.
//!
//! One pattern for every daemon (after mini-redis): `main` creates a
//! [`Shutdown`], hands clones to the daemon's `run(...)`, and calls
//! [`spawn_signal_handler`]. The first `SIGTERM`/`SIGINT` triggers the
//! shutdown — listeners stop accepting, in-flight work drains within the
//! daemon's bound; a second one triggers [`Shutdown::forced`], meaning "stop
//! now". `SIGHUP` is forwarded to a [`ReloadSignal`] that the configuration
//! reloader (and anything else reloadable, like TLS certificates) listens to.
//!
//! The `systemd` functions send `READY=1`, `RELOADING=1`, `STOPPING=1` and
//! watchdog pings when the process runs under systemd (`NOTIFY_SOCKET` set)
//! and do nothing otherwise.

use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// The graceful-shutdown signal shared by every task of a daemon.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    /// Cancelled when the daemon should stop accepting work and drain.
    graceful: CancellationToken,
    /// Cancelled when the daemon should stop now (second signal, drain bound
    /// exceeded).
    forced: CancellationToken,
}

impl Shutdown {
    /// A shutdown signal that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a graceful shutdown.
    pub fn trigger(&self) {
        self.graceful.cancel();
    }

    /// Asks for an immediate stop (implies the graceful one).
    pub fn force(&self) {
        self.graceful.cancel();
        self.forced.cancel();
    }

    /// Whether a shutdown has been requested.
    pub fn is_triggered(&self) -> bool {
        self.graceful.is_cancelled()
    }

    /// Whether an immediate stop has been requested.
    pub fn is_forced(&self) -> bool {
        self.forced.is_cancelled()
    }

    /// Completes when a shutdown has been requested.
    pub async fn triggered(&self) {
        self.graceful.cancelled().await
    }

    /// Completes when an immediate stop has been requested.
    pub async fn forced(&self) {
        self.forced.cancelled().await
    }

    /// The underlying token, for APIs that take a `CancellationToken`.
    pub fn token(&self) -> CancellationToken {
        self.graceful.clone()
    }
}

/// Why a reload was requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadReason {
    /// `SIGHUP`.
    Signal,
    /// A watched file changed.
    FileChanged,
    /// An explicit request (admin endpoint or test).
    Requested,
}

/// Broadcasts reload requests to every reloadable part of a daemon.
#[derive(Clone, Debug)]
pub struct ReloadSignal {
    tx: broadcast::Sender<ReloadReason>,
}

impl Default for ReloadSignal {
    fn default() -> Self {
        Self::new()
    }
}

impl ReloadSignal {
    /// A new reload channel.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(16);
        ReloadSignal { tx }
    }

    /// Asks every subscriber to reload.
    pub fn request(&self, reason: ReloadReason) {
        let _ = self.tx.send(reason);
    }

    /// A receiver of reload requests.
    pub fn subscribe(&self) -> broadcast::Receiver<ReloadReason> {
        self.tx.subscribe()
    }
}

/// Listens for `SIGTERM`/`SIGINT` (shutdown, twice = forced) and `SIGHUP`
/// (reload). Must be called inside a Tokio runtime.
pub fn spawn_signal_handler(
    shutdown: Shutdown,
    reload: ReloadSignal,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => on_stop_signal(&shutdown, "SIGTERM"),
                _ = int.recv() => on_stop_signal(&shutdown, "SIGINT"),
                _ = hup.recv() => {
                    tracing::info!("SIGHUP received: reloading");
                    reload.request(ReloadReason::Signal);
                }
            }
        }
    }))
}

fn on_stop_signal(shutdown: &Shutdown, name: &str) {
    if shutdown.is_triggered() {
        tracing::warn!("{name} received again: stopping now");
        shutdown.force();
    } else {
        tracing::info!("{name} received: shutting down gracefully");
        systemd::stopping();
        shutdown.trigger();
    }
}

/// The next connection on `listener`, with a permit from `slots` taken
/// first (so past the cap new connections wait in the kernel's listen
/// backlog); `None` once `shutdown` is triggered or `slots` is closed.
/// Accept errors (EMFILE and friends) are logged and retried after 50 ms
/// instead of spinning.
pub async fn accept_capped(
    listener: &tokio::net::TcpListener,
    slots: &std::sync::Arc<tokio::sync::Semaphore>,
    shutdown: &Shutdown,
) -> Option<(
    tokio::sync::OwnedSemaphorePermit,
    tokio::net::TcpStream,
    std::net::SocketAddr,
)> {
    let permit = tokio::select! {
        p = slots.clone().acquire_owned() => p.ok()?,
        _ = shutdown.triggered() => return None,
    };
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => return Some((permit, stream, peer)),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.triggered() => return None,
        }
    }
}

/// Runs `drain` until it finishes or `bound` passes (or a forced stop),
/// whichever comes first; returns whether it finished.
pub async fn drain_within<F: std::future::Future<Output = ()>>(
    shutdown: &Shutdown,
    bound: Duration,
    drain: F,
) -> bool {
    tokio::select! {
        _ = drain => true,
        _ = tokio::time::sleep(bound) => {
            tracing::warn!(?bound, "drain bound exceeded; stopping with work in flight");
            shutdown.force();
            false
        }
        _ = shutdown.forced() => false,
    }
}

/// systemd service notifications (`sd_notify(3)`); no-ops outside systemd.
pub mod systemd {
    use std::time::Duration;

    use sd_notify::NotifyState;

    use super::Shutdown;

    fn send(states: &[NotifyState<'_>]) {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return;
        }
        if let Err(e) = sd_notify::notify(false, states) {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }

    /// `READY=1`: start-up finished, the service is serving.
    pub fn ready() {
        send(&[NotifyState::Ready]);
    }

    /// `RELOADING=1`: a configuration reload started (send [`ready`] after).
    pub fn reloading() {
        send(&[NotifyState::Reloading]);
    }

    /// `STOPPING=1`: a graceful shutdown started.
    pub fn stopping() {
        send(&[NotifyState::Stopping]);
    }

    /// `STATUS=...`: a one-line status shown by `systemctl status`.
    pub fn status(text: &str) {
        send(&[NotifyState::Status(text)]);
    }

    /// The watchdog interval systemd asks for, if any.
    pub fn watchdog_interval() -> Option<Duration> {
        let mut usec = 0u64;
        if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
            Some(Duration::from_micros(usec))
        } else {
            None
        }
    }

    /// Pings the watchdog at half its interval until shutdown, while `alive`
    /// says the daemon's main loop is healthy. Does nothing without a watchdog.
    pub fn spawn_watchdog<F>(shutdown: Shutdown, alive: F)
    where
        F: Fn() -> bool + Send + 'static,
    {
        let Some(interval) = watchdog_interval() else {
            return;
        };
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval / 2);
            loop {
                tokio::select! {
                    _ = tick.tick() => if alive() { send(&[NotifyState::Watchdog]) },
                    _ = shutdown.triggered() => break,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_and_force() {
        let s = Shutdown::new();
        assert!(!s.is_triggered());
        let c = s.clone();
        let waiter = tokio::spawn(async move { c.triggered().await });
        s.trigger();
        waiter.await.unwrap();
        assert!(s.is_triggered() && !s.is_forced());
        s.force();
        assert!(s.is_forced());
    }

    #[tokio::test]
    async fn drain_bound_forces() {
        let s = Shutdown::new();
        let finished = drain_within(&s, Duration::from_millis(20), std::future::pending()).await;
        assert!(!finished);
        assert!(s.is_forced());
        let s = Shutdown::new();
        assert!(drain_within(&s, Duration::from_secs(5), async {}).await);
    }

    #[tokio::test]
    async fn reload_signal_reaches_subscribers() {
        let r = ReloadSignal::new();
        let mut a = r.subscribe();
        let mut b = r.subscribe();
        r.request(ReloadReason::Requested);
        assert_eq!(a.recv().await.unwrap(), ReloadReason::Requested);
        assert_eq!(b.recv().await.unwrap(), ReloadReason::Requested);
    }
}
