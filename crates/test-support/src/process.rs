//! Child processes that cannot outlive their test.
//!
//! [`ChildGuard`] owns a server process and kills it — with SIGKILL, then reaps it — when it is
//! dropped, which also happens while a failing test unwinds. Three more measures keep stray
//! servers from piling up on a developer's machine:
//!
//! * every child runs in a **process group of its own**, and is killed as a group, so helpers a
//!   server starts (chromedriver's Chromium, for instance) go with it;
//! * every child gets **`PR_SET_PDEATHSIG` = SIGKILL**, so it dies with the test process even
//!   when that process is killed and no destructor runs;
//! * the parent-death signal fires when the *thread* that forked the child exits, not the
//!   process — and test threads, tokio's blocking threads and test runtimes come and go. All
//!   children are therefore forked by one **spawner thread** that lives as long as the process.
//!
//! Servers keep their files in a [`scratch_dir`], named after the test process; directories
//! left behind by test processes that are gone (killed, or holding a server shared for the
//! whole process) are removed the next time a test process creates one.
//!
//! The guard also sends SIGSTOP/SIGCONT, to simulate a server that hangs, and keeps the path of
//! the file the child's stdout and stderr go to, whose last lines end up in start-up errors.

use std::ffi::OsStr;
use std::fs::File;
use std::future::Future;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use crate::error::{Result, TestSupportError};

/// Directories searched for a binary in addition to `PATH` (server daemons live in `sbin`,
/// which is not always on a test runner's `PATH`).
const EXTRA_BINARY_DIRS: &[&str] = &["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin"];

/// Finds an executable by name on `PATH` or in the usual `sbin` directories.
///
/// # Errors
///
/// [`TestSupportError::MissingBinary`] naming `apt_package` when it is nowhere to be found.
pub fn find_binary(binary: &'static str, apt_package: &'static str) -> Result<PathBuf> {
    if let Ok(path) = which::which(binary) {
        return Ok(path);
    }
    EXTRA_BINARY_DIRS
        .iter()
        .map(|dir| Path::new(dir).join(binary))
        .find(|path| path.is_file())
        .ok_or(TestSupportError::MissingBinary {
            binary,
            apt_package,
        })
}

/// Prefix of every scratch directory; `<kind>-<pid>-<random>` follows.
const SCRATCH_PREFIX: &str = "forge-test-";

/// Creates a temporary directory `forge-test-<kind>-<pid>-<random>` for a server's files,
/// removed when the returned handle is dropped. The first call in a process also removes
/// such directories whose process no longer exists.
///
/// # Errors
///
/// [`TestSupportError::Io`] when the directory cannot be created.
pub fn scratch_dir(kind: &str) -> Result<tempfile::TempDir> {
    scratch_dir_under(kind, &std::env::temp_dir())
}

/// Where [`scratch_dir_in_memory`] puts directories: `/dev/shm` (tmpfs) when it is a writable
/// directory, else the temporary directory.
pub fn memory_scratch_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let writable = shm.is_dir()
            && tempfile::Builder::new()
                .prefix(SCRATCH_PREFIX)
                .tempdir_in(shm)
                .is_ok();
        if writable {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        }
    })
    .clone()
}

/// Like [`scratch_dir`], but in memory ([`memory_scratch_root`]): for servers that `fsync`
/// on their failover path. Redis Sentinel rewrites and fsyncs its configuration on every new
/// epoch and vote, a promoted replica rewrites its own (`CONFIG REWRITE`): on a disk busy with
/// other builds one `fsync` can block such a process for seconds, in the middle of an
/// election — which splits the vote (a retry only after twice `failover-timeout`) and, past
/// 2 s, puts the Sentinel in TILT mode for 30 s. Production keeps its disks; the tests measure
/// failover, not the build machine's disk.
///
/// # Errors
///
/// [`TestSupportError::Io`] when the directory cannot be created.
pub fn scratch_dir_in_memory(kind: &str) -> Result<tempfile::TempDir> {
    scratch_dir_under(kind, &memory_scratch_root())
}

/// [`scratch_dir`] under `root`.
fn scratch_dir_under(kind: &str, root: &Path) -> Result<tempfile::TempDir> {
    static SWEPT: OnceLock<()> = OnceLock::new();
    SWEPT.get_or_init(|| {
        sweep_stale_scratch_dirs(&std::env::temp_dir());
        sweep_stale_scratch_dirs(&memory_scratch_root());
    });
    tempfile::Builder::new()
        .prefix(&format!("{SCRATCH_PREFIX}{kind}-{}-", std::process::id()))
        .tempdir_in(root)
        .map_err(|e| TestSupportError::io(format!("creating a temporary directory for {kind}"), e))
}

/// Removes scratch directories under `root` whose owning process is gone.
fn sweep_stale_scratch_dirs(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(SCRATCH_PREFIX)) else {
            continue;
        };
        // `<kind>-<pid>-<random>`: the pid is the last all-digit field but one.
        let fields: Vec<&str> = rest.split('-').collect();
        let Some(pid) = fields
            .len()
            .checked_sub(2)
            .and_then(|i| fields[i].parse::<i32>().ok())
        else {
            continue;
        };
        if pid > 0 && signal::kill(Pid::from_raw(pid), None) == Err(nix::Error::ESRCH) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A request to the spawner thread: a command to fork, and where to send the child.
struct SpawnRequest {
    /// The fully prepared command.
    command: Command,
    /// Receives the outcome of `Command::spawn`.
    reply: mpsc::SyncSender<io::Result<Child>>,
}

/// The channel to the process-lifetime spawner thread, or `None` if that thread could not be
/// started (children are then forked by the calling thread).
fn spawner() -> Option<&'static mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Option<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (sender, receiver) = mpsc::channel::<SpawnRequest>();
            std::thread::Builder::new()
                .name("forge-test-spawner".into())
                .spawn(move || {
                    for mut request in receiver {
                        // The requester may have gone away; then the child is dropped, which
                        // does not kill it — but its parent-death signal still will.
                        let _ = request.reply.send(request.command.spawn());
                    }
                })
                .ok()
                .map(|_handle| sender)
        })
        .as_ref()
}

/// Forks `command` from the spawner thread (see the module docs for why).
fn spawn_from_spawner(mut command: Command) -> io::Result<Child> {
    let Some(sender) = spawner() else {
        return command.spawn();
    };
    let (reply, outcome) = mpsc::sync_channel(1);
    if let Err(mpsc::SendError(request)) = sender.send(SpawnRequest { command, reply }) {
        let mut command = request.command;
        return command.spawn();
    }
    outcome
        .recv()
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}

/// Makes the child die with SIGKILL when its parent goes away.
///
/// `pre_exec` is `unsafe` because the closure runs between `fork` and `exec`, where only
/// async-signal-safe operations are allowed. Ours makes two system calls, `prctl` and
/// `getppid`, and allocates nothing. The `getppid` check closes the race in which the parent
/// died before `prctl` ran.
#[allow(unsafe_code)]
fn set_parent_death_signal(command: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure only performs the async-signal-safe system calls prctl(2) and
    // getppid(2), and builds an `io::Error` from an errno without allocating.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
            if u32::try_from(nix::unistd::getppid().as_raw()).ok() != Some(parent) {
                return Err(io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// A running server process that is killed (SIGKILL, with its whole process group) and reaped
/// when the guard is dropped.
#[derive(Debug)]
pub struct ChildGuard {
    /// Short name of the server, for messages (e.g. `"redis-server"`).
    name: &'static str,
    /// The child, until it has been killed and reaped.
    child: Option<Child>,
    /// The file that receives the child's stdout and stderr.
    log: PathBuf,
}

impl ChildGuard {
    /// Spawns `command` with stdin closed and stdout/stderr appended to `log`, in a process
    /// group of its own, set to die with the test process.
    ///
    /// # Errors
    ///
    /// [`TestSupportError::Io`] when the log cannot be opened or the command cannot be spawned.
    pub fn spawn(name: &'static str, mut command: Command, log: &Path) -> Result<Self> {
        let open_log = || {
            File::options()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|e| TestSupportError::io(format!("opening the log {}", log.display()), e))
        };
        command
            .stdin(Stdio::null())
            .stdout(open_log()?)
            .stderr(open_log()?)
            .process_group(0);
        set_parent_death_signal(&mut command);
        let program = command.get_program().to_owned();
        let child = spawn_from_spawner(command).map_err(|e| {
            TestSupportError::io(format!("starting {}", Path::new(&program).display()), e)
        })?;
        Ok(Self {
            name,
            child: Some(child),
            log: log.to_owned(),
        })
    }

    /// The server's short name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The child's process id, while it has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Where the child's output goes.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the child's output (for error messages).
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// Whether the child is still running (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// Reaps the child if it has exited and returns how; `None` while it is running.
    ///
    /// # Errors
    ///
    /// [`TestSupportError::NotRunning`] when the child was already reaped.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        let child = self
            .child
            .as_mut()
            .ok_or(TestSupportError::NotRunning { server: self.name })?;
        match child.try_wait() {
            Ok(None) => Ok(None),
            Ok(Some(status)) => {
                self.reap_group();
                Ok(Some(status))
            }
            Err(e) => Err(TestSupportError::io(
                format!("waiting for {}", self.name),
                e,
            )),
        }
    }

    /// Sends `signal` to the child process.
    fn signal(&self, signal: Signal) -> Result<()> {
        let pid = self
            .pid()
            .ok_or(TestSupportError::NotRunning { server: self.name })?;
        let raw =
            i32::try_from(pid).map_err(|_| TestSupportError::NotRunning { server: self.name })?;
        signal::kill(Pid::from_raw(raw), signal).map_err(|source| TestSupportError::Signal {
            server: self.name,
            pid,
            signal: signal.as_str(),
            source,
        })
    }

    /// Freezes the server (SIGSTOP): it keeps its sockets but answers nothing, like a hung
    /// host.
    ///
    /// # Errors
    ///
    /// [`TestSupportError::NotRunning`] or [`TestSupportError::Signal`].
    pub fn pause(&self) -> Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    /// Lets a paused server carry on (SIGCONT).
    ///
    /// # Errors
    ///
    /// [`TestSupportError::NotRunning`] or [`TestSupportError::Signal`].
    pub fn resume(&self) -> Result<()> {
        self.signal(Signal::SIGCONT)
    }

    /// Kills the server's process group with SIGKILL, like a crash, and reaps the server.
    /// Does nothing if it is already gone.
    ///
    /// # Errors
    ///
    /// [`TestSupportError::Io`] when waiting for the child fails.
    pub fn kill(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        kill_group(child.id());
        // SIGKILL cannot be caught, so this returns promptly (a stopped process dies too).
        child
            .wait()
            .map(drop)
            .map_err(|e| TestSupportError::io(format!("waiting for {} to die", self.name), e))
    }

    /// Asks the server to shut down cleanly (SIGTERM) and waits up to `grace` for it to exit,
    /// then kills what is left of its process group. Blocks the calling thread meanwhile.
    ///
    /// # Errors
    ///
    /// [`TestSupportError::Io`] when waiting for the child fails.
    pub fn terminate(&mut self, grace: Duration) -> Result<()> {
        if self.child.is_none() {
            return Ok(());
        }
        // A paused process would not act on SIGTERM.
        let _ = self.signal(Signal::SIGCONT);
        let _ = self.signal(Signal::SIGTERM);
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            match self.child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(_status))) => {
                    self.reap_group();
                    return Ok(());
                }
                Some(Ok(None)) => std::thread::sleep(Duration::from_millis(10)),
                Some(Err(e)) => {
                    return Err(TestSupportError::io(
                        format!("waiting for {}", self.name),
                        e,
                    ));
                }
                None => return Ok(()),
            }
        }
        self.kill()
    }

    /// After the child exited on its own: kills anything left in its process group and
    /// forgets the child.
    fn reap_group(&mut self) {
        if let Some(child) = self.child.take() {
            kill_group(child.id());
        }
    }

    /// Waits (asynchronously) until `probe` reports the server ready, checking meanwhile that
    /// it has not exited. Each probe is given at most a second.
    ///
    /// # Errors
    ///
    /// [`TestSupportError::ExitedEarly`] when the process exits, and
    /// [`TestSupportError::NotReady`] when `timeout` passes first; both quote the log.
    pub async fn wait_ready<F, Fut>(
        &mut self,
        addr: SocketAddr,
        timeout: Duration,
        mut probe: F,
    ) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Err(TestSupportError::ExitedEarly {
                    server: self.name,
                    status: status.to_string(),
                    log: self.log.clone(),
                    log_tail: self.log_tail(20),
                });
            }
            if let Ok(true) = tokio::time::timeout(Duration::from_secs(1), probe()).await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(TestSupportError::NotReady {
                    server: self.name,
                    addr,
                    timeout,
                    log: self.log.clone(),
                    log_tail: self.log_tail(20),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// SIGKILLs the process group led by `pid` (our children lead their own groups).
fn kill_group(pid: u32) {
    if let Ok(raw) = i32::try_from(pid) {
        // ESRCH (already gone) is fine.
        let _ = signal::killpg(Pid::from_raw(raw), Signal::SIGKILL);
    }
}

/// The last `lines` lines of the file at `path`, read lossily; empty if it cannot be read.
pub fn log_tail(path: &Path, lines: usize) -> String {
    const MAX_BYTES: u64 = 16 * 1024;
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs a helper command to completion and returns its stdout.
///
/// # Errors
///
/// [`TestSupportError::CommandFailed`] (with its output) when it exits unsuccessfully, and
/// [`TestSupportError::Io`] when it cannot be run.
pub(crate) fn run_command(command: &mut Command, stdin: Option<&[u8]>) -> Result<Vec<u8>> {
    use std::io::Write as _;

    let describe = |command: &Command| {
        std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(OsStr::to_string_lossy)
            .collect::<Vec<_>>()
            .join(" ")
    };
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| TestSupportError::io(format!("running `{}`", describe(command)), e))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input)
            .map_err(|e| TestSupportError::io(format!("feeding `{}`", describe(command)), e))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| TestSupportError::io(format!("running `{}`", describe(command)), e))?;
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(TestSupportError::CommandFailed {
            command: describe(command),
            status: output.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_names_the_package() {
        let err = find_binary("forge-no-such-binary", "forge-no-such-package").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`forge-no-such-binary` is not installed; install it with \
             `apt-get install forge-no-such-package`"
        );
    }

    #[test]
    fn scratch_dirs_of_dead_processes_are_swept() {
        let mine = scratch_dir("unit-test").unwrap();
        let dead =
            std::env::temp_dir().join(format!("{SCRATCH_PREFIX}unit-test-{}-abc123", i32::MAX));
        std::fs::create_dir_all(&dead).unwrap();
        sweep_stale_scratch_dirs(&std::env::temp_dir());
        assert!(!dead.exists());
        assert!(mine.path().is_dir());
        let name = mine
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(name.starts_with(&format!("forge-test-unit-test-{}-", std::process::id())));
    }

    #[test]
    fn servers_that_fsync_on_failover_get_their_directory_in_memory() {
        let dir = scratch_dir_in_memory("unit-test").unwrap();
        assert!(dir.path().starts_with(memory_scratch_root()));
        if Path::new("/dev/shm").is_dir() {
            assert_eq!(memory_scratch_root(), Path::new("/dev/shm"));
        }
    }

    #[test]
    fn guard_kills_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new("sleep");
        command.arg("60");
        let guard = ChildGuard::spawn("sleep", command, &dir.path().join("sleep.log")).unwrap();
        let pid = Pid::from_raw(i32::try_from(guard.pid().unwrap()).unwrap());
        guard.pause().unwrap();
        guard.resume().unwrap();
        drop(guard);
        // Reaped, so the pid no longer exists.
        assert_eq!(signal::kill(pid, None), Err(nix::Error::ESRCH));
    }

    #[test]
    fn terminate_is_graceful_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new("sleep");
        command.arg("60");
        let mut guard = ChildGuard::spawn("sleep", command, &dir.path().join("s.log")).unwrap();
        assert!(guard.is_running());
        guard.terminate(Duration::from_secs(5)).unwrap();
        assert!(guard.pid().is_none());
        guard.kill().unwrap();
    }
}
