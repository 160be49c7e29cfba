//! [`GridCell`]: a private, single-host Son of Grid Engine cell (Debian's
//! `gridengine-master`, `gridengine-exec`, `gridengine-client`).
//!
//! Web services on the grid are Grid Engine jobs: `webservice` submits with
//! `qsub`, the job runs `webservice-runner` on an exec host as the tool's
//! user, the monitor reads `qstat -xml`, `qdel` stops them. Tests of that run
//! against the real thing: a cell of its own (own name under `SGE_ROOT`, own
//! qmaster and execd ports, spool, queue `tmpdir` and `gid_range`), brought
//! up by `grid/cell-up.sh` in a few seconds, with the scheduler running every
//! second, the site complex `release`, and web queues whose `epilog` and
//! `terminate_method` the test chooses. Programs talk to it through the
//! environment of [`GridCell::env`].
//!
//! The daemons detach, so they are not children of the test: dropping the
//! cell stops them (`qconf -kej`, which also kills running jobs — `-ke`
//! would leave them — then `qconf -km`, then `SIGKILL` of whatever is left)
//! and removes the cell. Needs root.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Result, TestSupportError};
use crate::ports::free_port;

/// Debian's `SGE_ROOT`.
pub const SGE_ROOT: &str = "/var/lib/gridengine";

const CELL_UP: &str = include_str!("../grid/cell-up.sh");

static NEXT: AtomicU32 = AtomicU32::new(0);

/// How the cell's web queues are set up.
#[derive(Debug, Clone)]
pub struct GridCellOptions {
    /// Queue names.
    pub queues: Vec<String>,
    /// The queues' `epilog` (`None`: no epilog).
    pub epilog: Option<PathBuf>,
    /// `true`: `terminate_method SIGTERM` (today's web queues); `false`:
    /// Grid Engine's default (`SIGKILL`).
    pub terminate_with_sigterm: bool,
}

impl Default for GridCellOptions {
    fn default() -> Self {
        GridCellOptions {
            queues: vec!["webgrid-lighttpd".into(), "webgrid-generic".into()],
            epilog: None,
            terminate_with_sigterm: true,
        }
    }
}

/// A running private Grid Engine cell; stopped and removed when dropped.
#[derive(Debug)]
pub struct GridCell {
    /// The cell's name (`$SGE_ROOT/<name>`).
    cell: String,
    /// Spool, tmp and generated files.
    dir: tempfile::TempDir,
    /// sge_qmaster's port.
    qmaster_port: u16,
    /// sge_execd's port.
    execd_port: u16,
}

impl GridCell {
    /// Brings a cell up.
    ///
    /// # Errors
    ///
    /// When Grid Engine is not installed, not run as root, or the cell does
    /// not come up (the script's output says why).
    pub async fn start(options: GridCellOptions) -> Result<Self> {
        for (binary, path) in [
            ("sge_qmaster", "/usr/sbin/sge_qmaster"),
            ("sge_execd", "/usr/sbin/sge_execd"),
            ("qconf", "/usr/bin/qconf"),
        ] {
            if !Path::new(path).exists() {
                return Err(TestSupportError::MissingBinary {
                    binary,
                    apt_package: "gridengine-master gridengine-exec gridengine-client",
                });
            }
        }
        if !nix::unistd::geteuid().is_root() {
            return Err(TestSupportError::InvalidArgument(
                "a Grid Engine test cell needs root (its daemons switch to the jobs' users)".into(),
            ));
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let cell = format!("forge-test-{pid}-{n}");
        let dir = tempfile::Builder::new()
            .prefix("forge-grid-")
            .tempdir()
            .map_err(|e| TestSupportError::io("creating the grid cell's directory", e))?;
        let _ = std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        );
        let cell = GridCell {
            cell,
            dir,
            qmaster_port: free_port(),
            execd_port: free_port(),
        };
        // Distinct gid ranges for cells side by side (jobs get a gid from it).
        let gid = 40000 + ((pid.wrapping_mul(7).wrapping_add(n)) % 250) * 100;
        let script = cell.dir.path().join("cell-up.sh");
        std::fs::write(&script, CELL_UP)
            .map_err(|e| TestSupportError::io("writing cell-up.sh", e))?;
        let queues = options.queues.join(" ");
        let epilog = options
            .epilog
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "NONE".into());
        let terminate = if options.terminate_with_sigterm {
            "SIGTERM"
        } else {
            "NONE"
        };
        let mut command = tokio::process::Command::new("bash");
        command
            .arg(&script)
            .envs(cell.env())
            .env("FORGE_GRID_DIR", cell.dir.path())
            .env("FORGE_GRID_GID", gid.to_string())
            .env("FORGE_GRID_QUEUES", queues)
            .env("FORGE_GRID_EPILOG", epilog)
            .env("FORGE_GRID_TERMINATE", terminate);
        let out = tokio::time::timeout(Duration::from_secs(240), command.output())
            .await
            .map_err(|_| TestSupportError::Timeout {
                what: "the Grid Engine test cell to come up".into(),
                timeout: Duration::from_secs(240),
            })?
            .map_err(|e| TestSupportError::io("running cell-up.sh", e))?;
        if !out.status.success() {
            return Err(TestSupportError::CommandFailed {
                command: format!("cell-up.sh (cell {})", cell.cell),
                status: out.status.to_string(),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        Ok(cell)
    }

    /// The variables every Grid Engine command of this cell needs.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("SGE_ROOT".into(), SGE_ROOT.into()),
            ("SGE_CELL".into(), self.cell.clone()),
            ("SGE_QMASTER_PORT".into(), self.qmaster_port.to_string()),
            ("SGE_EXECD_PORT".into(), self.execd_port.to_string()),
        ]
    }

    /// `env VAR=value…`: a prefix for argv templates run through `sudo -i`,
    /// which clears the environment.
    pub fn env_argv(&self) -> Vec<String> {
        let mut v = vec!["env".to_owned()];
        v.extend(self.env().into_iter().map(|(k, val)| format!("{k}={val}")));
        v
    }

    /// The cell's name.
    pub fn name(&self) -> &str {
        &self.cell
    }

    /// The queues' `tmpdir`.
    pub fn tmpdir(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }

    /// Runs a Grid Engine command of this cell as root; its output.
    ///
    /// # Errors
    ///
    /// When it cannot be run or fails.
    pub async fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = tokio::process::Command::new(program)
            .args(args)
            .envs(self.env())
            .output()
            .await
            .map_err(|e| TestSupportError::io(format!("running {program}"), e))?;
        if !out.status.success() {
            return Err(TestSupportError::CommandFailed {
                command: format!("{program} {}", args.join(" ")),
                status: out.status.to_string(),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The pid of the cell's `sge_execd` (tests stop it with `SIGSTOP` to
    /// hold new jobs in state `t`, being transferred to the exec host).
    pub fn execd_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.path().join("execd/localhost/execd.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    fn daemon_pids(&self) -> Vec<i32> {
        let d = self.dir.path();
        [
            d.join("qmaster/qmaster.pid"),
            d.join("execd/localhost/execd.pid"),
        ]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter_map(|s| s.trim().parse().ok())
        .collect()
    }
}

impl Drop for GridCell {
    fn drop(&mut self) {
        let pids = self.daemon_pids();
        let qconf = |args: &[&str]| {
            let _ = Command::new("qconf")
                .args(args)
                .envs(self.env())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        };
        // -kej: the execd kills its jobs too (-ke leaves them running).
        qconf(&["-kej", "localhost"]);
        qconf(&["-km"]);
        let deadline = Instant::now() + Duration::from_secs(20);
        for pid in pids {
            let pid = nix::unistd::Pid::from_raw(pid);
            while nix::sys::signal::kill(pid, None).is_ok() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(Path::new(SGE_ROOT).join(&self.cell));
    }
}
