//! Redis and Redis Sentinel servers of the tests' own.
//!
//! forge keeps its live state in Redis (the proxy's routes, the job queues) and fails over with
//! Sentinel, so its tests need real servers they can crash, freeze and restart. A
//! [`RedisServer`] is a `redis-server` on a free loopback port with its own directory, no
//! persistence unless asked for (`--save ""`, `appendonly no`), and its log on stdout, which
//! goes to `redis.log` in that directory. The directories (Sentinels' too) are in memory where
//! `/dev/shm` exists: Sentinel and a promoted replica fsync their configuration in the middle
//! of a failover, and a disk busy with other builds can stall that for seconds. A [`SentinelServer`] is `redis-server --sentinel`
//! watching one master with short timeouts, so failovers happen within seconds.
//!
//! Readiness is checked the simplest way that proves the server is serving: a raw `PING` on a
//! TCP connection must be answered with `+PONG`. Tests then talk to the servers with fred.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{Result, TestSupportError};
use crate::ports::{free_port, loopback};
use crate::process::{ChildGuard, find_binary, scratch_dir_in_memory};

/// The Debian package that provides `redis-server` (and Sentinel mode).
const APT_PACKAGE: &str = "redis-server";
/// How long a server gets to answer `PING` after being started.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a server gets to shut down cleanly on [`RedisServer::stop`].
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How many ports a start tries before giving up (another process may take ours first).
const START_ATTEMPTS: usize = 3;

/// Whether a Redis server (or Sentinel) at `addr` answers a raw `PING`.
///
/// A `-NOAUTH` reply counts as ready: the server is up, it merely wants a password.
pub async fn ping(addr: SocketAddr) -> bool {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut reply = [0_u8; 64];
        let n = stream.read(&mut reply).await?;
        std::io::Result::Ok(reply[..n].to_vec())
    };
    match tokio::time::timeout(Duration::from_secs(1), exchange).await {
        Ok(Ok(reply)) => reply.starts_with(b"+PONG") || reply.starts_with(b"-NOAUTH"),
        _ => false,
    }
}

/// Finds `redis-server`.
fn redis_binary() -> Result<PathBuf> {
    find_binary("redis-server", APT_PACKAGE)
}

/// Starts `redis-server` on `conf` (optionally in Sentinel mode) and waits for `PING`.
async fn launch(
    name: &'static str,
    binary: &Path,
    dir: &Path,
    conf: &Path,
    sentinel: bool,
    port: u16,
) -> Result<ChildGuard> {
    let mut command = Command::new(binary);
    command.arg(conf).current_dir(dir);
    if sentinel {
        command.arg("--sentinel");
    }
    let log = dir.join(if sentinel {
        "sentinel.log"
    } else {
        "redis.log"
    });
    let mut child = ChildGuard::spawn(name, command, &log)?;
    let addr = loopback(port);
    child
        .wait_ready(addr, STARTUP_TIMEOUT, || ping(addr))
        .await?;
    Ok(child)
}

/// A server started by [`launch_on_free_port`].
struct Launched {
    /// The `redis-server` binary.
    binary: PathBuf,
    /// Its scratch directory (config, data, log).
    dir: TempDir,
    /// The port it listens on.
    port: u16,
    /// The process.
    child: ChildGuard,
}

/// Starts a Redis server (or Sentinel) in a new scratch directory on a free
/// port, its configuration rendered by `conf_lines(dir, port)`; when it exits
/// at once (the port was taken meanwhile) it is tried again on another port.
async fn launch_on_free_port(
    sentinel: bool,
    conf_lines: impl Fn(&Path, u16) -> Vec<String>,
) -> Result<Launched> {
    let (name, kind, conf_name) = if sentinel {
        ("redis-sentinel", "sentinel", "sentinel.conf")
    } else {
        ("redis-server", "redis", "redis.conf")
    };
    let binary = redis_binary()?;
    // In memory: Sentinel fsyncs its configuration on every epoch and vote, a promoted
    // replica on `CONFIG REWRITE`; see `scratch_dir_in_memory`.
    let dir = scratch_dir_in_memory(kind)?;
    let conf = dir.path().join(conf_name);
    let mut last_error = None;
    for _ in 0..START_ATTEMPTS {
        let port = free_port();
        write_conf(&conf, &conf_lines(dir.path(), port))?;
        match launch(name, &binary, dir.path(), &conf, sentinel, port).await {
            Ok(child) => {
                return Ok(Launched {
                    binary,
                    dir,
                    port,
                    child,
                });
            }
            Err(e @ TestSupportError::ExitedEarly { .. }) => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or(TestSupportError::NotRunning { server: name }))
}

/// Writes a configuration file.
fn write_conf(path: &Path, lines: &[String]) -> Result<()> {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text)
        .map_err(|e| TestSupportError::io(format!("writing {}", path.display()), e))
}

/// Quotes a value for a redis.conf line.
fn quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Options for a [`RedisServer`]; start with [`RedisServer::builder`].
#[derive(Debug, Clone, Default)]
pub struct RedisServerBuilder {
    /// The master to replicate from, as `(host, port)`.
    replica_of: Option<(String, u16)>,
    /// Whether to enable the append-only file (so data survives a restart).
    appendonly: bool,
    /// Further `redis.conf` lines, appended after ours (so they win).
    extra_config: Vec<String>,
}

impl RedisServerBuilder {
    /// Makes the server a replica of the master at `host:port`.
    #[must_use]
    pub fn replica_of(mut self, host: impl Into<String>, port: u16) -> Self {
        self.replica_of = Some((host.into(), port));
        self
    }

    /// Enables the append-only file (`appendfsync everysec`), so a [`RedisServer::stop`]
    /// followed by [`RedisServer::restart`] keeps the data.
    #[must_use]
    pub fn appendonly(mut self, enabled: bool) -> Self {
        self.appendonly = enabled;
        self
    }

    /// Adds a `redis.conf` line, e.g. `"requirepass s3cret"` or `"maxmemory 10mb"`.
    #[must_use]
    pub fn config(mut self, line: impl Into<String>) -> Self {
        self.extra_config.push(line.into());
        self
    }

    /// Starts the server and waits until it answers `PING`.
    ///
    /// # Errors
    ///
    /// [`TestSupportError::MissingBinary`] without `redis-server`; start-up errors quoting the
    /// server's log otherwise.
    pub async fn start(self) -> Result<RedisServer> {
        let Launched {
            binary,
            dir,
            port,
            child,
        } = launch_on_free_port(false, |dir, port| self.conf_lines(dir, port)).await?;
        Ok(RedisServer {
            binary,
            dir,
            port,
            child,
        })
    }

    /// The configuration for a server in `dir` on `port`.
    fn conf_lines(&self, dir: &Path, port: u16) -> Vec<String> {
        let mut lines = vec![
            format!("port {port}"),
            "bind 127.0.0.1".to_owned(),
            "daemonize no".to_owned(),
            format!("dir {}", quote(&dir.to_string_lossy())),
            "logfile \"\"".to_owned(),
            "save \"\"".to_owned(),
            format!("appendonly {}", if self.appendonly { "yes" } else { "no" }),
            "appendfsync everysec".to_owned(),
            "enable-debug-command local".to_owned(),
        ];
        if let Some((host, master_port)) = &self.replica_of {
            lines.push(format!("replicaof {} {master_port}", quote(host)));
        }
        lines.extend(self.extra_config.iter().cloned());
        lines
    }
}

/// A `redis-server` of the test's own, killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    /// The running process (declared first: fields drop in order, so it
    /// dies before its directory is removed).
    child: ChildGuard,
    /// Path of `redis-server`, for restarts.
    binary: PathBuf,
    /// The server's directory: configuration, log, AOF/RDB files.
    dir: TempDir,
    /// The loopback port it listens on.
    port: u16,
}

impl RedisServer {
    /// Starts a stand-alone server with the default options.
    ///
    /// # Errors
    ///
    /// See [`RedisServerBuilder::start`].
    pub async fn start() -> Result<Self> {
        Self::builder().start().await
    }

    /// Options for a server: replica of another, AOF, extra configuration.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    /// The server's directory (configuration, `redis.log`, data files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's output (its log).
    pub fn log_path(&self) -> &Path {
        self.child.log_path()
    }

    /// Whether the process is running (a paused one is).
    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing is answered.
    ///
    /// # Errors
    ///
    /// When the server is not running.
    pub fn pause(&self) -> Result<()> {
        self.child.pause()
    }

    /// Resumes a paused server (SIGCONT).
    ///
    /// # Errors
    ///
    /// When the server is not running.
    pub fn resume(&self) -> Result<()> {
        self.child.resume()
    }

    /// Crashes the server (SIGKILL). Nothing not yet persisted survives.
    ///
    /// # Errors
    ///
    /// When reaping the process fails.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()
    }

    /// Shuts the server down cleanly (SIGTERM; with AOF enabled, everything written is kept).
    ///
    /// # Errors
    ///
    /// When reaping the process fails.
    pub fn stop(&mut self) -> Result<()> {
        self.child.terminate(STOP_GRACE)
    }

    /// Starts the server again on the same port and directory, stopping it cleanly first if it
    /// is still running. Waits until it answers `PING`.
    ///
    /// # Errors
    ///
    /// Start-up errors quoting the server's log (e.g. when the port was taken meanwhile).
    pub async fn restart(&mut self) -> Result<()> {
        self.stop()?;
        let conf = self.dir.path().join("redis.conf");
        self.child = launch(
            "redis-server",
            &self.binary,
            self.dir.path(),
            &conf,
            false,
            self.port,
        )
        .await?;
        Ok(())
    }
}

/// Options for a [`SentinelServer`]; start with [`SentinelServer::builder`].
#[derive(Debug, Clone)]
pub struct SentinelServerBuilder {
    /// The name the master is monitored under (e.g. `"mymaster"`).
    master_name: String,
    /// The master's host.
    master_host: String,
    /// The master's port.
    master_port: u16,
    /// How many sentinels must agree that the master is down.
    quorum: u32,
    /// `down-after-milliseconds`: how long the master may be silent before it is "down".
    down_after: Duration,
    /// `failover-timeout`.
    failover_timeout: Duration,
    /// Further configuration lines, appended after ours.
    extra_config: Vec<String>,
}

impl SentinelServerBuilder {
    /// Sets the quorum (default 1).
    #[must_use]
    pub fn quorum(mut self, quorum: u32) -> Self {
        self.quorum = quorum;
        self
    }

    /// Sets `down-after-milliseconds` (default 1 s).
    #[must_use]
    pub fn down_after(mut self, after: Duration) -> Self {
        self.down_after = after;
        self
    }

    /// Sets `failover-timeout` (default 3 s).
    #[must_use]
    pub fn failover_timeout(mut self, timeout: Duration) -> Self {
        self.failover_timeout = timeout;
        self
    }

    /// Adds a configuration line, e.g. `"sentinel auth-pass mymaster s3cret"`.
    #[must_use]
    pub fn config(mut self, line: impl Into<String>) -> Self {
        self.extra_config.push(line.into());
        self
    }

    /// Starts the sentinel and waits until it answers `PING`.
    ///
    /// # Errors
    ///
    /// [`TestSupportError::MissingBinary`] without `redis-server`; start-up errors quoting the
    /// sentinel's log otherwise.
    pub async fn start(self) -> Result<SentinelServer> {
        let Launched {
            binary,
            dir,
            port,
            child,
        } = launch_on_free_port(true, |dir, port| self.conf_lines(dir, port)).await?;
        Ok(SentinelServer {
            binary,
            dir,
            port,
            master_name: self.master_name,
            child,
        })
    }

    /// The configuration for a sentinel in `dir` on `port`.
    fn conf_lines(&self, dir: &Path, port: u16) -> Vec<String> {
        let name = &self.master_name;
        let mut lines = vec![
            format!("port {port}"),
            "bind 127.0.0.1".to_owned(),
            "daemonize no".to_owned(),
            format!("dir {}", quote(&dir.to_string_lossy())),
            "logfile \"\"".to_owned(),
            "sentinel resolve-hostnames yes".to_owned(),
            format!(
                "sentinel monitor {name} {} {} {}",
                self.master_host, self.master_port, self.quorum
            ),
            format!(
                "sentinel down-after-milliseconds {name} {}",
                self.down_after.as_millis()
            ),
            format!(
                "sentinel failover-timeout {name} {}",
                self.failover_timeout.as_millis()
            ),
            format!("sentinel parallel-syncs {name} 1"),
        ];
        lines.extend(self.extra_config.iter().cloned());
        lines
    }
}

/// A Redis Sentinel of the test's own, monitoring one master; killed when dropped.
#[derive(Debug)]
pub struct SentinelServer {
    /// The running process (declared first: fields drop in order, so it dies before its
    /// directory is removed).
    child: ChildGuard,
    /// Path of `redis-server`, for restarts.
    binary: PathBuf,
    /// The sentinel's directory (its configuration, which Sentinel rewrites, and its log).
    dir: TempDir,
    /// The loopback port it listens on.
    port: u16,
    /// The name the master is monitored under.
    master_name: String,
}

impl SentinelServer {
    /// Starts a sentinel monitoring `master_host:master_port` as `master_name`, with
    /// `down-after-milliseconds` 1000 and `failover-timeout` 3000.
    ///
    /// # Errors
    ///
    /// See [`SentinelServerBuilder::start`].
    pub async fn start(
        master_name: &str,
        master_host: &str,
        master_port: u16,
        quorum: u32,
    ) -> Result<Self> {
        Self::builder(master_name, master_host, master_port)
            .quorum(quorum)
            .start()
            .await
    }

    /// Options for a sentinel monitoring `master_host:master_port` as `master_name`.
    pub fn builder(
        master_name: &str,
        master_host: &str,
        master_port: u16,
    ) -> SentinelServerBuilder {
        SentinelServerBuilder {
            master_name: master_name.to_owned(),
            master_host: master_host.to_owned(),
            master_port,
            quorum: 1,
            down_after: Duration::from_millis(1000),
            failover_timeout: Duration::from_millis(3000),
            extra_config: Vec::new(),
        }
    }

    /// The loopback port the sentinel listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    /// `redis://127.0.0.1:PORT` (the sentinel itself, not the master).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The name the master is monitored under.
    pub fn master_name(&self) -> &str {
        &self.master_name
    }

    /// The sentinel's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The sentinel's output (its log).
    pub fn log_path(&self) -> &Path {
        self.child.log_path()
    }

    /// Freezes the sentinel (SIGSTOP).
    ///
    /// # Errors
    ///
    /// When the sentinel is not running.
    pub fn pause(&self) -> Result<()> {
        self.child.pause()
    }

    /// Resumes a paused sentinel (SIGCONT).
    ///
    /// # Errors
    ///
    /// When the sentinel is not running.
    pub fn resume(&self) -> Result<()> {
        self.child.resume()
    }

    /// Crashes the sentinel (SIGKILL).
    ///
    /// # Errors
    ///
    /// When reaping the process fails.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()
    }

    /// Starts the sentinel again on the same port with the configuration it last rewrote
    /// (so it remembers failovers), killing it first if it is still running.
    ///
    /// # Errors
    ///
    /// Start-up errors quoting the sentinel's log.
    pub async fn restart(&mut self) -> Result<()> {
        self.child.terminate(STOP_GRACE)?;
        let conf = self.dir.path().join("sentinel.conf");
        self.child = launch(
            "redis-sentinel",
            &self.binary,
            self.dir.path(),
            &conf,
            true,
            self.port,
        )
        .await?;
        Ok(())
    }
}
