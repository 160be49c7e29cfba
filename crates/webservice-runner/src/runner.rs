//! What `webservice-runner` does: start a web server, register it once it
//! listens, forward signals to it, unregister when it stops.
//!
//! 1. Pick the port (or take `--port`), and start the command with `{port}`
//!    in its arguments replaced and `PORT` (and today's `TOOL_WEB_PORT`) set,
//!    in its own process group. The server never outlives the runner: it gets
//!    `PR_SET_PDEATHSIG` = `SIGTERM`, so even a `kill -9` of the runner stops
//!    it and frees its port (otherwise the monitor would later start a second
//!    server beside the orphan).
//! 2. Wait until the port accepts connections (`--ready-timeout`); a command
//!    that exits first or never listens is an error ([`ExitCode::NotReady`]).
//! 3. Register `http://<this host>:<port>` for the route with the first
//!    endpoint that accepts it. A refusal stops the command and exits with
//!    [`ExitCode::Refused`] (or [`ExitCode::Unavailable`]), printing why;
//!    whenever a registration was sent (the route may have been written even
//!    though the reply was lost or not understood), it is unregistered before
//!    the runner exits.
//! 4. Forward `SIGTERM`, `SIGINT`, `SIGHUP`, `SIGQUIT`, `SIGUSR1`, `SIGUSR2`
//!    to the command's process group. On `SIGTERM`/`SIGINT` the route is
//!    removed first, so the proxy stops sending requests before the server
//!    goes away.
//! 5. When the command exits, however it exits, unregister, and exit with its
//!    status (128 + signal number when killed by a signal).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};

use crate::client::{ClientError, RegistrationClient};
use crate::human_duration;

/// The runner's exit codes besides the command's own (sysexits.h values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Bad usage: an unknown or unsupported type, no command.
    Usage = 64,
    /// The tool's home lacks what the type needs (e.g. `public_html`).
    NotSetUp = 66,
    /// No registration endpoint answered.
    Unavailable = 69,
    /// The command could not be started.
    CannotStart = 71,
    /// The command did not accept connections in time (or exited first).
    NotReady = 75,
    /// An endpoint refused the registration.
    Refused = 77,
    /// The live-state file is unreadable or invalid.
    Config = 78,
}

impl ExitCode {
    /// The exit code for a failed registration.
    pub fn for_client_error(e: &ClientError) -> Self {
        match e {
            ClientError::Refused(_) => ExitCode::Refused,
            ClientError::Unavailable(_) | ClientError::Disabled => ExitCode::Unavailable,
        }
    }
}

/// What to run and how to register it.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The command and its arguments; `{port}` is replaced by the port.
    pub command: Vec<String>,
    /// The port; `None` = pick a free one.
    pub port: Option<u16>,
    /// The command's working directory; `None` = the runner's.
    pub cwd: Option<PathBuf>,
    /// Register with the proxy (`false`: just run the server).
    pub register: bool,
    /// The route pattern to register.
    pub route: String,
    /// `http` or `https`.
    pub scheme: String,
    /// `registerCanonical` instead of `register`.
    pub canonical: bool,
    /// How long the command may take to accept connections.
    pub ready_timeout: Duration,
    /// How long the command may take to stop after `SIGTERM` before it is killed
    /// (when the runner itself stops it after a failed registration).
    pub stop_grace: Duration,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// The command ran and exited with this code (128+signal when signalled).
    Exited(i32),
    /// The runner gave up with this code (the message was printed).
    Failed(ExitCode, String),
}

/// Picks a free TCP port (bound and released on all addresses).
pub fn pick_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0))?;
    Ok(l.local_addr()?.port())
}

/// `{port}` replaced in every argument.
pub fn substitute_port(command: &[String], port: u16) -> Vec<String> {
    command
        .iter()
        .map(|a| a.replace("{port}", &port.to_string()))
        .collect()
}

/// Runs the command per `opts`, registering with `client` (disabled client =
/// just run it).
pub async fn run(opts: RunOptions, client: RegistrationClient) -> RunEnd {
    let port = match opts.port {
        Some(p) => p,
        None => match pick_port() {
            Ok(p) => p,
            Err(e) => {
                return RunEnd::Failed(ExitCode::CannotStart, format!("cannot pick a port: {e}"));
            }
        },
    };
    let argv = substitute_port(&opts.command, port);
    let Some((program, args)) = argv.split_first() else {
        return RunEnd::Failed(ExitCode::CannotStart, "no command given".into());
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .env("PORT", port.to_string())
        .env("TOOL_WEB_PORT", port.to_string())
        .process_group(0)
        .kill_on_drop(false);
    if let Some(dir) = &opts.cwd {
        command.current_dir(dir);
    }
    die_with_parent(&mut command);
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            return RunEnd::Failed(
                ExitCode::CannotStart,
                format!("cannot start {program:?}: {e}"),
            );
        }
    };
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    match pgid {
        Some(pid) => eprintln!("webservice-runner: started {program} (pid {pid}) on port {port}"),
        None => eprintln!("webservice-runner: started {program} on port {port}"),
    }

    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            stop(&mut child, pgid, opts.stop_grace).await;
            return RunEnd::Failed(
                ExitCode::CannotStart,
                format!("cannot install signal handlers: {e}"),
            );
        }
    };

    if !opts.register || client.is_disabled() {
        if opts.register {
            eprintln!("webservice-runner: registration is disabled; not registering");
        } else {
            eprintln!("webservice-runner: not registering with the proxy (no --register-proxy)");
        }
        let code = run_to_exit(&mut child, pgid, &mut signals).await;
        return RunEnd::Exited(code);
    }

    // Wait until it listens (forwarding signals meanwhile).
    let ready = wait_ready(port, opts.ready_timeout);
    tokio::pin!(ready);
    loop {
        tokio::select! {
            r = &mut ready => {
                if !r {
                    stop(&mut child, pgid, opts.stop_grace).await;
                    return RunEnd::Failed(ExitCode::NotReady, format!(
                        "the server did not accept connections on port {port} within {}; stopped it",
                        human_duration(opts.ready_timeout)
                    ));
                }
                break;
            }
            status = child.wait() => {
                let code = status.map(exit_code_of).unwrap_or(1);
                return RunEnd::Failed(ExitCode::NotReady, format!(
                    "the server exited (status {code}) before it accepted connections on port {port}"
                ));
            }
            sig = signals.recv() => {
                forward(pgid, sig);
                if matches!(sig, Signal::SIGTERM | Signal::SIGINT) {
                    let code = child.wait().await.map(exit_code_of).unwrap_or(1);
                    return RunEnd::Exited(code);
                }
            }
        }
    }

    // Register.
    match client
        .register_self(&opts.route, &opts.scheme, port, opts.canonical)
        .await
    {
        Ok(r) => eprintln!(
            "webservice-runner: registered {} for route {:?} with {}",
            r.url, opts.route, r.endpoint
        ),
        Err(e) => {
            // The request may have reached a daemon that wrote the route and
            // whose reply was lost or not understood: take it back first, so
            // the route never points at the server we are about to stop.
            if e.may_have_registered() {
                unregister(&client, &opts.route).await;
            }
            stop(&mut child, pgid, opts.stop_grace).await;
            return RunEnd::Failed(ExitCode::for_client_error(&e), e.to_string());
        }
    }
    let mut registered = true;

    // Run until the command exits.
    let code = loop {
        tokio::select! {
            status = child.wait() => break status.map(exit_code_of).unwrap_or(1),
            sig = signals.recv() => {
                if registered && matches!(sig, Signal::SIGTERM | Signal::SIGINT) {
                    unregister(&client, &opts.route).await;
                    registered = false;
                }
                forward(pgid, sig);
            }
        }
    };
    eprintln!("webservice-runner: the server exited with status {code}");
    if registered {
        unregister(&client, &opts.route).await;
    }
    RunEnd::Exited(code)
}

async fn unregister(client: &RegistrationClient, route: &str) {
    match client.unregister(route).await {
        Ok(endpoint) => {
            eprintln!("webservice-runner: unregistered route {route:?} with {endpoint}")
        }
        Err(e) => eprintln!("webservice-runner: could not unregister route {route:?}: {e}"),
    }
}

/// Forwards signals until the command exits; its exit code.
async fn run_to_exit(child: &mut Child, pgid: Option<Pid>, signals: &mut Signals) -> i32 {
    loop {
        tokio::select! {
            status = child.wait() => return status.map(exit_code_of).unwrap_or(1),
            sig = signals.recv() => forward(pgid, sig),
        }
    }
}

/// Polls `port` on loopback and on every local address until something
/// accepts, or `timeout` passes.
async fn wait_ready(port: u16, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut candidates = vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)];
    if let Ok(ip) = outbound_ip() {
        candidates.push(SocketAddr::new(ip, port));
    }
    candidates.push(SocketAddr::new(
        "::1".parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        port,
    ));
    loop {
        for addr in &candidates {
            if let Ok(Ok(_)) = tokio::time::timeout(
                Duration::from_millis(200),
                tokio::net::TcpStream::connect(addr),
            )
            .await
            {
                return true;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The address this host uses for outbound traffic (no packet is sent).
fn outbound_ip() -> std::io::Result<IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
    s.connect("192.0.2.1:9")?;
    Ok(s.local_addr()?.ip())
}

fn forward(pgid: Option<Pid>, sig: Signal) {
    if let Some(pgid) = pgid
        && let Err(e) = killpg(pgid, sig)
    {
        eprintln!("webservice-runner: cannot forward {sig} to the server: {e}");
    }
}

/// SIGTERM to the group, SIGKILL after `grace`.
async fn stop(child: &mut Child, pgid: Option<Pid>, grace: Duration) {
    forward(pgid, Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        forward(pgid, Signal::SIGKILL);
        let _ = child.wait().await;
    }
}

/// Makes the server receive `SIGTERM` when the runner dies, however it dies.
///
/// `pre_exec` is `unsafe` because the closure runs between `fork` and `exec`,
/// where only async-signal-safe operations are allowed: ours makes the system
/// calls `prctl` and `getppid` and allocates nothing. The `getppid` check
/// closes the race in which the runner died before `prctl` ran. The parent
/// death signal follows the thread that forked: the runner spawns from its
/// only (main) thread.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    let parent = std::process::id();
    // SAFETY: only the async-signal-safe system calls prctl(2) and getppid(2).
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)?;
            if u32::try_from(nix::unistd::getppid().as_raw()).ok() != Some(parent) {
                return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
}

fn exit_code_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// The signals forwarded to the command.
struct Signals {
    streams: Vec<(Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        let list = [
            (Signal::SIGTERM, SignalKind::terminate()),
            (Signal::SIGINT, SignalKind::interrupt()),
            (Signal::SIGHUP, SignalKind::hangup()),
            (Signal::SIGQUIT, SignalKind::quit()),
            (Signal::SIGUSR1, SignalKind::user_defined1()),
            (Signal::SIGUSR2, SignalKind::user_defined2()),
        ];
        let mut streams = Vec::new();
        for (s, k) in list {
            streams.push((s, signal(k)?));
        }
        Ok(Signals { streams })
    }

    /// The next signal received.
    async fn recv(&mut self) -> Signal {
        let futures = self.streams.iter_mut().map(|(s, stream)| {
            let s = *s;
            Box::pin(async move {
                stream.recv().await;
                s
            })
        });
        futures_select_all(futures).await
    }
}

/// Waits for the first of several futures (a tiny `select_all`).
async fn futures_select_all<F>(futures: impl Iterator<Item = std::pin::Pin<Box<F>>>) -> Signal
where
    F: std::future::Future<Output = Signal>,
{
    let mut futures: Vec<_> = futures.collect();
    std::future::poll_fn(move |cx| {
        for f in futures.iter_mut() {
            if let std::task::Poll::Ready(s) = f.as_mut().poll(cx) {
                return std::task::Poll::Ready(s);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_substitution() {
        let cmd = vec!["server".to_string(), "--bind=0.0.0.0:{port}".to_string()];
        assert_eq!(
            substitute_port(&cmd, 8000),
            vec!["server", "--bind=0.0.0.0:8000"]
        );
        assert!(pick_port().unwrap() > 0);
    }
}
