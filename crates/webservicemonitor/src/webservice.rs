//! The `webservice` command tool owners run:
//! `webservice [--backend B] [--release R] [--mem M] [<type>] start|stop|restart|status [extra args…]`.
//!
//! It drives the same [`Scheduler`] the monitor uses, and keeps the tool's
//! `service.manifest` in step (written atomically, today's keys and header):
//!
//! * `start` — refuses when a job of the same name exists (running, queued or
//!   in error), submits the job, then records `web`, `backend`, `release`,
//!   `memory`, `web::extra_args` in the manifest;
//! * `stop` — first removes the web keys from the manifest (so the monitor
//!   doesn't restart what is being stopped), then deletes every job of that
//!   name and waits until the scheduler no longer lists them;
//! * `restart` — stops, waits until the old job is really gone, and only then
//!   submits, so there are never two jobs; it refuses to submit if one remains;
//! * `status` — says whether the job runs, and in which state.
//!
//! Invocations for the same tool are serialised with an exclusive `flock` on
//! `<home>/.webservice.lock`, so two concurrent restarts can't both submit.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use forge_core::ToolName;

use crate::config::WebserviceConfig;
use crate::manifest::{self, Manifest};
use crate::scheduler::{self, Job, Scheduler, SubmitRequest};

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Submit the job.
    Start,
    /// Delete the job.
    Stop,
    /// Delete, wait, submit.
    Restart,
    /// Report.
    Status,
}

impl Verb {
    /// Parses an action word.
    pub fn parse(s: &str) -> Option<Verb> {
        match s {
            "start" => Some(Verb::Start),
            "stop" => Some(Verb::Stop),
            "restart" => Some(Verb::Restart),
            "status" => Some(Verb::Status),
            _ => None,
        }
    }
}

/// One `webservice` invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The tool acted on.
    pub tool: ToolName,
    /// The web service type, if given.
    pub web_type: Option<String>,
    /// The action.
    pub verb: Verb,
    /// `--backend`, if given.
    pub backend: Option<String>,
    /// `--release`, if given.
    pub release: Option<String>,
    /// `--mem`, if given.
    pub mem: Option<String>,
    /// Arguments after the action, for the web server.
    pub extra_args: Vec<String>,
}

/// Why `webservice` refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum WebserviceError {
    /// Invalid usage.
    #[error("{0}")]
    Usage(String),
    /// The manifest could not be read.
    #[error("{path}: {source}")]
    Manifest {
        /// The file.
        path: String,
        /// Why.
        source: manifest::ManifestError,
    },
    /// The manifest could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The scheduler failed.
    #[error("job scheduler: {0}")]
    Scheduler(#[from] scheduler::SchedulerError),
    /// A job of the same name exists.
    #[error("{0}")]
    Conflict(String),
    /// The old job didn't go away in time.
    #[error(
        "job {name} is still listed by the scheduler after {secs} s; not submitting a second one"
    )]
    StillThere {
        /// Job name.
        name: String,
        /// How long we waited.
        secs: u64,
    },
    /// The lock file could not be taken.
    #[error("cannot lock {path}: {reason}")]
    Lock {
        /// The lock file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// The command's logic, configured.
#[derive(Debug, Clone)]
pub struct Webservice {
    config: Arc<WebserviceConfig>,
    scheduler: Arc<dyn Scheduler>,
}

impl Webservice {
    /// `webservice` for a configuration.
    pub fn new(config: WebserviceConfig) -> Self {
        Webservice {
            scheduler: scheduler::from_config(&config.scheduler),
            config: Arc::new(config),
        }
    }

    fn home(&self, tool: &ToolName) -> PathBuf {
        self.config.tools.root.join(tool.as_str())
    }

    fn manifest_path(&self, tool: &ToolName) -> PathBuf {
        self.home(tool).join(&self.config.tools.manifest_name)
    }

    fn read_manifest(&self, tool: &ToolName) -> Result<Manifest, WebserviceError> {
        let path = self.manifest_path(tool);
        manifest::read_own(&path, self.config.tools.max_manifest_bytes).map_err(|source| {
            WebserviceError::Manifest {
                path: path.display().to_string(),
                source,
            }
        })
    }

    fn write_manifest(&self, tool: &ToolName, m: &Manifest) -> Result<(), WebserviceError> {
        let path = self.manifest_path(tool);
        manifest::write_atomic(&path, m).map_err(|source| WebserviceError::Write {
            path: path.display().to_string(),
            source,
        })
    }

    /// Runs an invocation; returns the message for the user.
    pub async fn execute(&self, inv: &Invocation) -> Result<String, WebserviceError> {
        if let Some(b) = &inv.backend
            && b != "gridengine"
        {
            return Err(WebserviceError::Usage(format!(
                "backend {b:?} is not handled by this command; use --backend=gridengine"
            )));
        }
        if let Some(m) = &inv.mem
            && !valid_mem(m)
        {
            return Err(WebserviceError::Usage(format!(
                "--mem {m:?} is not a memory size like 512M or 4G"
            )));
        }
        let _lock = self.lock(&inv.tool)?;
        let current = self.read_manifest(&inv.tool)?;
        let web_type = match (&inv.web_type, current.web()) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(t)) => Some(t),
            (None, None) => None,
        };
        if let Some(t) = &web_type
            && !self.config.types.contains_key(t)
        {
            let valid: Vec<&str> = self.config.types.keys().map(String::as_str).collect();
            return Err(WebserviceError::Usage(format!(
                "unknown web service type {t:?}; valid types: {}",
                valid.join(", ")
            )));
        }
        let user = inv.tool.unix_user(&self.config.tools.project);
        match inv.verb {
            Verb::Status => self.status(inv, &user, web_type.as_deref()).await,
            Verb::Start => {
                let t = web_type.ok_or_else(|| no_type("start"))?;
                self.start(inv, &user, &t, current).await
            }
            Verb::Stop => self.stop(inv, &user, web_type.as_deref(), current).await,
            Verb::Restart => {
                let t = web_type.ok_or_else(|| no_type("restart"))?;
                let stopped = self.stop_jobs(&user, &format!("{t}-{}", inv.tool)).await?;
                let msg = self.start(inv, &user, &t, current).await?;
                Ok(if stopped > 0 {
                    format!("Restarting webservice...\n{msg}")
                } else {
                    msg
                })
            }
        }
    }

    async fn jobs_named(&self, user: &str, name: &str) -> Result<Vec<Job>, WebserviceError> {
        let table = self.scheduler.jobs().await?;
        Ok(table.find(name, user).cloned().collect())
    }

    async fn status(
        &self,
        inv: &Invocation,
        user: &str,
        web_type: Option<&str>,
    ) -> Result<String, WebserviceError> {
        let Some(t) = web_type else {
            return Ok("Your webservice is not running".into());
        };
        let name = format!("{t}-{}", inv.tool);
        let jobs = self.jobs_named(user, &name).await?;
        Ok(match jobs.first() {
            None => "Your webservice is not running".into(),
            Some(j) if j.is_error() => format!(
                "Your webservice of type {t} is in error state {} (job {}); run `webservice {t} restart`",
                j.state, j.id
            ),
            Some(j) if j.is_running() => format!(
                "Your webservice of type {t} is running (job {}, state {})",
                j.id, j.state
            ),
            Some(j) => format!(
                "Your webservice of type {t} is not running (job {}, state {})",
                j.id, j.state
            ),
        })
    }

    async fn start(
        &self,
        inv: &Invocation,
        user: &str,
        web_type: &str,
        mut current: Manifest,
    ) -> Result<String, WebserviceError> {
        let name = format!("{web_type}-{}", inv.tool);
        if let Some(j) = self.jobs_named(user, &name).await?.first() {
            return Err(WebserviceError::Conflict(format!(
                "Your webservice is already running (job {}, state {}); not submitting a second job named {name}",
                j.id, j.state
            )));
        }
        let release = inv
            .release
            .clone()
            .or_else(|| current.release())
            .unwrap_or_else(|| self.config.default_release.clone());
        let mem = inv
            .mem
            .clone()
            .or_else(|| current.memory())
            .unwrap_or_else(|| self.config.default_mem.clone());
        let extra_args = if inv.extra_args.is_empty() && inv.web_type.is_none() {
            current.extra_args()
        } else {
            inv.extra_args.clone()
        };
        let req = SubmitRequest {
            job_name: name.clone(),
            tool: inv.tool.to_string(),
            user: user.to_owned(),
            web_type: web_type.to_owned(),
            queue: self.config.types.get(web_type).cloned().unwrap_or_default(),
            mem: mem.clone(),
            release: release.clone(),
            home: self.home(&inv.tool).display().to_string(),
            extra_args: extra_args.clone(),
        };
        self.scheduler.submit(&req).await?;
        current.set("web", web_type);
        current.set("backend", "gridengine");
        current.set("release", &release);
        if inv.mem.is_some() {
            current.set("memory", &mem);
        }
        current.set_extra_args(&extra_args);
        self.write_manifest(&inv.tool, &current)?;
        Ok(format!(
            "Starting webservice...\nYour job {name} has been submitted"
        ))
    }

    async fn stop(
        &self,
        inv: &Invocation,
        user: &str,
        web_type: Option<&str>,
        mut current: Manifest,
    ) -> Result<String, WebserviceError> {
        // Clear the manifest first so the monitor doesn't restart the job.
        let had_web = current.web().is_some();
        if had_web {
            current.clear_web();
            self.write_manifest(&inv.tool, &current)?;
        }
        let Some(t) = web_type else {
            return Ok("Your webservice is not running".into());
        };
        let stopped = self.stop_jobs(user, &format!("{t}-{}", inv.tool)).await?;
        Ok(if stopped == 0 {
            "Your webservice is not running".into()
        } else {
            "Stopping webservice".into()
        })
    }

    /// Deletes every job `name` of `user` and waits until none is listed.
    async fn stop_jobs(&self, user: &str, name: &str) -> Result<usize, WebserviceError> {
        let jobs = self.jobs_named(user, name).await?;
        if jobs.is_empty() {
            return Ok(0);
        }
        for j in &jobs {
            self.scheduler.stop(j, user).await?;
        }
        let wait = Duration::from_secs(self.config.stop_wait_secs);
        let poll = Duration::from_millis(self.config.poll_ms.max(1));
        let started = Instant::now();
        loop {
            if self.jobs_named(user, name).await?.is_empty() {
                return Ok(jobs.len());
            }
            if started.elapsed() >= wait {
                return Err(WebserviceError::StillThere {
                    name: name.to_owned(),
                    secs: wait.as_secs(),
                });
            }
            tokio::time::sleep(poll).await;
        }
    }

    fn lock(&self, tool: &ToolName) -> Result<nix::fcntl::Flock<std::fs::File>, WebserviceError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.home(tool).join(".webservice.lock");
        let err = |reason: String| WebserviceError::Lock {
            path: path.display().to_string(),
            reason,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| err(e.to_string()))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| err(e.to_string()))
    }
}

fn no_type(verb: &str) -> WebserviceError {
    WebserviceError::Usage(format!(
        "no web service type given and the manifest names none: use `webservice <type> {verb}`"
    ))
}

fn valid_mem(m: &str) -> bool {
    let digits = m.trim_end_matches(['K', 'M', 'G', 'k', 'm', 'g']);
    !digits.is_empty() && digits.len() + 1 >= m.len() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Splits `[type] action [extra…]` words.
pub fn parse_words(words: &[String]) -> Result<(Option<String>, Verb, Vec<String>), String> {
    match words {
        [] => Err("missing action: start, stop, restart or status".into()),
        [first, rest @ ..] => {
            if let Some(v) = Verb::parse(first) {
                return Ok((None, v, rest.to_vec()));
            }
            match rest {
                [action, extra @ ..] => match Verb::parse(action) {
                    Some(v) => Ok((Some(first.clone()), v, extra.to_vec())),
                    None => Err(format!(
                        "unknown action {action:?}: use start, stop, restart or status"
                    )),
                },
                [] => Err(format!(
                    "missing action after {first:?}: start, stop, restart or status"
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_mem() {
        let w = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            parse_words(&w(&["stop"])).unwrap(),
            (None, Verb::Stop, vec![])
        );
        assert_eq!(
            parse_words(&w(&["uwsgi-python", "start", "--x"])).unwrap(),
            (Some("uwsgi-python".into()), Verb::Start, w(&["--x"]))
        );
        assert!(parse_words(&w(&["lighttpd", "launch"])).is_err());
        assert!(parse_words(&w(&[])).is_err());
        assert!(valid_mem("4G") && valid_mem("512M") && valid_mem("1024"));
        assert!(!valid_mem("G") && !valid_mem("4GG") && !valid_mem("-1"));
    }
}
