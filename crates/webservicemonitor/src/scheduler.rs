//! The job scheduler, behind one trait used by the monitor and by `webservice`.
//!
//! [`Scheduler`] lists jobs, submits a web service job and stops one. Two
//! backends implement it, both by running external commands configured as
//! argv templates (so tests use real executables, not mocks):
//!
//! * [`GridEngine`] — `qstat -u '*' -xml` parsed with a real XML parser
//!   (quick-xml), `qsub … webservice-runner --register-proxy …`, `qdel`;
//! * [`CommandScheduler`] — any commands; the list command prints JSON, either
//!   `[{"id", "name", "owner", "state"}, …]` or `{"jobs": [...]}`.
//!
//! Job states follow Grid Engine's letters (`qstat(1)`), each classified on
//! purpose ([`Job::is_running`]):
//!
//! | letter | meaning | counts as |
//! |---|---|---|
//! | `q`, `w` (`qw`) | queued, waiting to be scheduled | running (about to; as today) |
//! | `h` (`hqw`, `hr`) | on hold | running (as today) |
//! | `t` | transferring to the exec host — for about a second after `qsub`, already serving | running (today's rule left it out: `webservice status` said "not running" while the page was served, and a monitor pass then removed the live route and restarted a healthy job) |
//! | `r` | running | running |
//! | `R` | restarted (rescheduled) | running |
//! | `s`, `S`, `T` | suspended (by the user, the queue, a threshold) | running (the job is still there; as today for `s`) |
//! | `E` (`Eqw`) | error: the job can't start until an admin clears it | **not** running (today it counted as running) |
//! | `d` (`dr`, `dt`) | being deleted | **not** running |
//!
//! `E` or `d` anywhere in the state wins over every other letter.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use futures::future::BoxFuture;
use quick_xml::events::Event;
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use crate::config::{SchedulerCommands, SchedulerConfig, SchedulerKind};
use crate::template::{Value, Vars};

/// Why a scheduler call failed.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The command could not be started.
    #[error("cannot run {program:?}: {reason}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        reason: String,
    },
    /// The command did not finish in time and was killed.
    #[error("{program:?} did not finish within {secs} s and was killed")]
    Timeout {
        /// The program.
        program: String,
        /// The time limit.
        secs: u64,
    },
    /// The command exited unsuccessfully.
    #[error("{program:?} failed ({status}): {stderr}")]
    Failed {
        /// The program.
        program: String,
        /// Exit status.
        status: String,
        /// The end of its standard error.
        stderr: String,
    },
    /// The command printed more than the configured limit.
    #[error("{program:?} printed more than {limit} bytes")]
    TooMuchOutput {
        /// The program.
        program: String,
        /// The limit.
        limit: usize,
    },
    /// The list output could not be understood.
    #[error("cannot parse the job list: {0}")]
    Parse(String),
    /// A template could not be rendered.
    #[error("command template: {0}")]
    Template(#[from] crate::template::TemplateError),
}

/// One job as the scheduler reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct Job {
    /// The scheduler's job id.
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
    /// The job name (`<type>-<tool>` for web services).
    pub name: String,
    /// The owning user (`<project>.<tool>`).
    #[serde(default)]
    pub owner: String,
    /// State letters (`r`, `qw`, `Eqw`, …).
    #[serde(default)]
    pub state: String,
}

impl Job {
    /// True when the job is in an error state (`E` in its state).
    pub fn is_error(&self) -> bool {
        self.state.contains('E')
    }

    /// True when the job is running or about to (see the module docs).
    pub fn is_running(&self) -> bool {
        !self.is_error()
            && !self.state.contains('d')
            && self
                .state
                .chars()
                .any(|c| matches!(c, 'q' | 'w' | 'h' | 't' | 'r' | 'R' | 's' | 'S' | 'T'))
    }
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "job id must be a string or a number, not {other}"
        ))),
    }
}

/// Every job, indexed by name.
#[derive(Debug, Clone, Default)]
pub struct JobTable {
    by_name: HashMap<String, Vec<Job>>,
    count: usize,
}

impl JobTable {
    /// Indexes jobs.
    pub fn new(jobs: impl IntoIterator<Item = Job>) -> Self {
        let mut t = JobTable::default();
        for j in jobs {
            t.count += 1;
            t.by_name.entry(j.name.clone()).or_default().push(j);
        }
        t
    }

    /// Jobs named `name`, owned by `owner` when the scheduler reports owners.
    pub fn find<'a>(&'a self, name: &str, owner: &'a str) -> impl Iterator<Item = &'a Job> + 'a {
        self.by_name
            .get(name)
            .into_iter()
            .flatten()
            .filter(move |j| j.owner.is_empty() || j.owner == owner)
    }

    /// Number of jobs.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when there are no jobs.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// What `webservice start` submits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitRequest {
    /// Job name, `<type>-<tool>`.
    pub job_name: String,
    /// The tool.
    pub tool: String,
    /// The tool's user, `<project>.<tool>`.
    pub user: String,
    /// Web service type.
    pub web_type: String,
    /// Queue for the type.
    pub queue: String,
    /// Memory limit (`4G`).
    pub mem: String,
    /// Release (distribution).
    pub release: String,
    /// The tool's home directory.
    pub home: String,
    /// Extra arguments for the web server.
    pub extra_args: Vec<String>,
}

impl SubmitRequest {
    fn vars(&self) -> Vars {
        let one = |s: &str| Value::One(s.to_owned());
        Vars::from([
            ("job_name", one(&self.job_name)),
            ("tool", one(&self.tool)),
            ("user", one(&self.user)),
            ("type", one(&self.web_type)),
            ("queue", one(&self.queue)),
            ("mem", one(&self.mem)),
            ("release", one(&self.release)),
            ("home", one(&self.home)),
            ("extra_args", Value::Many(self.extra_args.clone())),
        ])
    }
}

/// A job scheduler.
pub trait Scheduler: Send + Sync + std::fmt::Debug {
    /// The backend's name (`gridengine`, `command`).
    fn name(&self) -> &'static str;
    /// Every job.
    fn jobs(&self) -> BoxFuture<'_, Result<JobTable, SchedulerError>>;
    /// Submits a web service job.
    fn submit<'a>(&'a self, req: &'a SubmitRequest) -> BoxFuture<'a, Result<(), SchedulerError>>;
    /// Stops a job owned by `user`.
    fn stop<'a>(&'a self, job: &'a Job, user: &'a str)
    -> BoxFuture<'a, Result<(), SchedulerError>>;
}

/// Shared plumbing of the command-driven backends.
#[derive(Debug, Clone)]
struct Commands {
    commands: SchedulerCommands,
    timeout: Duration,
    max_output: usize,
}

impl Commands {
    fn new(c: &SchedulerConfig) -> Self {
        Commands {
            commands: c.commands(),
            timeout: Duration::from_secs(c.timeout_secs.max(1)),
            max_output: c.max_output_bytes,
        }
    }

    async fn list_output(&self) -> Result<Vec<u8>, SchedulerError> {
        let argv = self.commands.list.render(&Vars::new())?;
        run(&argv, self.timeout, self.max_output).await
    }

    async fn submit(&self, req: &SubmitRequest) -> Result<(), SchedulerError> {
        let argv = self.commands.submit.render(&req.vars())?;
        run(&argv, self.timeout, 64 * 1024).await.map(drop)
    }

    async fn stop(&self, job: &Job, user: &str) -> Result<(), SchedulerError> {
        let one = |s: &str| Value::One(s.to_owned());
        let tool = user.split_once('.').map(|(_, t)| t).unwrap_or(user);
        let vars = Vars::from([
            ("job_name", one(&job.name)),
            ("job_id", one(&job.id)),
            ("tool", one(tool)),
            ("user", one(user)),
        ]);
        let argv = self.commands.stop.render(&vars)?;
        run(&argv, self.timeout, 64 * 1024).await.map(drop)
    }
}

/// Runs `argv` without a shell; returns its standard output (at most `max` bytes).
pub async fn run(
    argv: &[String],
    timeout: Duration,
    max: usize,
) -> Result<Vec<u8>, SchedulerError> {
    let program = argv.first().cloned().unwrap_or_default();
    let mut child = tokio::process::Command::new(&program)
        .args(&argv[1.min(argv.len())..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group, so a timeout kills the whole tree (sudo, a
        // shell, what they started), not just the direct child.
        .process_group(0)
        .spawn()
        .map_err(|e| SchedulerError::Spawn {
            program: program.clone(),
            reason: e.to_string(),
        })?;
    let child_pid = child.id();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let work = async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let read_out = async {
            if let Some(s) = stdout.as_mut() {
                let _ = s.take(max as u64 + 1).read_to_end(&mut out).await;
            }
        };
        let read_err = async {
            if let Some(s) = stderr.as_mut() {
                let _ = s.take(64 * 1024).read_to_end(&mut err).await;
            }
        };
        tokio::join!(read_out, read_err);
        let status = child.wait().await;
        (out, err, status)
    };
    let (out, err, status) = match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => {
            if let Some(pid) = child_pid {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            // kill_on_drop reaps the direct child when `child` goes out of scope.
            return Err(SchedulerError::Timeout {
                program,
                secs: timeout.as_secs(),
            });
        }
    };
    let status = status.map_err(|e| SchedulerError::Spawn {
        program: program.clone(),
        reason: e.to_string(),
    })?;
    if out.len() > max {
        return Err(SchedulerError::TooMuchOutput {
            program,
            limit: max,
        });
    }
    if !status.success() {
        return Err(SchedulerError::Failed {
            program,
            status: status.to_string(),
            stderr: tail(&err),
        });
    }
    Ok(out)
}

/// The last line(s) of a command's error output, on one line.
pub fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.len() > 300 {
        let mut start = joined.len() - 300;
        while !joined.is_char_boundary(start) {
            start += 1;
        }
        format!("…{}", &joined[start..])
    } else {
        joined
    }
}

/// Son of Grid Engine.
#[derive(Debug, Clone)]
pub struct GridEngine {
    commands: Commands,
}

impl GridEngine {
    /// A backend running the configured gridengine commands.
    pub fn new(c: &SchedulerConfig) -> Self {
        GridEngine {
            commands: Commands::new(c),
        }
    }
}

impl Scheduler for GridEngine {
    fn name(&self) -> &'static str {
        "gridengine"
    }

    fn jobs(&self) -> BoxFuture<'_, Result<JobTable, SchedulerError>> {
        Box::pin(async move {
            let out = self.commands.list_output().await?;
            let text = String::from_utf8(out)
                .map_err(|_| SchedulerError::Parse("qstat output is not UTF-8".into()))?;
            parse_qstat_xml(&text).map(JobTable::new)
        })
    }

    fn submit<'a>(&'a self, req: &'a SubmitRequest) -> BoxFuture<'a, Result<(), SchedulerError>> {
        Box::pin(self.commands.submit(req))
    }

    fn stop<'a>(
        &'a self,
        job: &'a Job,
        user: &'a str,
    ) -> BoxFuture<'a, Result<(), SchedulerError>> {
        Box::pin(self.commands.stop(job, user))
    }
}

/// Any external commands; the list command prints JSON.
#[derive(Debug, Clone)]
pub struct CommandScheduler {
    commands: Commands,
}

impl CommandScheduler {
    /// A backend running the configured commands.
    pub fn new(c: &SchedulerConfig) -> Self {
        CommandScheduler {
            commands: Commands::new(c),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonJobs {
    List(Vec<Job>),
    Wrapped { jobs: Vec<Job> },
}

impl Scheduler for CommandScheduler {
    fn name(&self) -> &'static str {
        "command"
    }

    fn jobs(&self) -> BoxFuture<'_, Result<JobTable, SchedulerError>> {
        Box::pin(async move {
            let out = self.commands.list_output().await?;
            parse_json_jobs(&out).map(JobTable::new)
        })
    }

    fn submit<'a>(&'a self, req: &'a SubmitRequest) -> BoxFuture<'a, Result<(), SchedulerError>> {
        Box::pin(self.commands.submit(req))
    }

    fn stop<'a>(
        &'a self,
        job: &'a Job,
        user: &'a str,
    ) -> BoxFuture<'a, Result<(), SchedulerError>> {
        Box::pin(self.commands.stop(job, user))
    }
}

/// The scheduler a configuration selects.
pub fn from_config(c: &SchedulerConfig) -> std::sync::Arc<dyn Scheduler> {
    match c.backend {
        SchedulerKind::Gridengine => std::sync::Arc::new(GridEngine::new(c)),
        SchedulerKind::Command => std::sync::Arc::new(CommandScheduler::new(c)),
    }
}

/// Parses the JSON job list of the `command` backend.
pub fn parse_json_jobs(bytes: &[u8]) -> Result<Vec<Job>, SchedulerError> {
    match serde_json::from_slice::<JsonJobs>(bytes) {
        Ok(JsonJobs::List(j)) | Ok(JsonJobs::Wrapped { jobs: j }) => Ok(j),
        Err(e) => Err(SchedulerError::Parse(format!(
            "expected a JSON list of jobs or {{\"jobs\": [...]}}: {e}"
        ))),
    }
}

/// Which field of a `job_list` element a text node belongs to.
#[derive(Clone, Copy)]
enum Field {
    Id,
    Name,
    Owner,
    State,
}

/// Parses `qstat -u '*' -xml` output: every `<job_list>` element, running
/// (`queue_info`) or pending (`job_info`).
pub fn parse_qstat_xml(text: &str) -> Result<Vec<Job>, SchedulerError> {
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().trim_text(true);
    let mut jobs = Vec::new();
    let mut current: Option<Job> = None;
    let mut field: Option<Field> = None;
    let mut saw_root = false;
    let mut depth = 0usize;
    loop {
        let event = reader.read_event().map_err(|e| {
            SchedulerError::Parse(format!(
                "qstat XML at byte {}: {e}",
                reader.error_position()
            ))
        })?;
        match event {
            Event::Start(e) => {
                saw_root = true;
                depth += 1;
                match e.name().as_ref() {
                    b"job_list" => current = Some(Job::default()),
                    b"JB_job_number" => field = Some(Field::Id),
                    b"JB_name" => field = Some(Field::Name),
                    b"JB_owner" => field = Some(Field::Owner),
                    b"state" => field = Some(Field::State),
                    _ => field = None,
                }
            }
            Event::Empty(_) => saw_root = true,
            Event::Text(t) => {
                if let (Some(job), Some(f)) = (current.as_mut(), field) {
                    let s = t
                        .decode()
                        .map_err(|e| SchedulerError::Parse(format!("qstat XML text: {e}")))?;
                    push_field(job, f, &s);
                }
            }
            Event::GeneralRef(r) => {
                if let (Some(job), Some(f)) = (current.as_mut(), field) {
                    let name = r
                        .decode()
                        .map_err(|e| SchedulerError::Parse(format!("qstat XML entity: {e}")))?;
                    let s = match name.as_ref() {
                        "amp" => "&".to_owned(),
                        "lt" => "<".to_owned(),
                        "gt" => ">".to_owned(),
                        "quot" => "\"".to_owned(),
                        "apos" => "'".to_owned(),
                        other => match r.resolve_char_ref() {
                            Ok(Some(c)) => c.to_string(),
                            _ => {
                                return Err(SchedulerError::Parse(format!(
                                    "qstat XML: unknown entity &{other};"
                                )));
                            }
                        },
                    };
                    push_field(job, f, &s);
                }
            }
            Event::End(e) => {
                depth = depth.saturating_sub(1);
                if e.name().as_ref() == b"job_list"
                    && let Some(job) = current.take()
                {
                    if job.name.is_empty() {
                        return Err(SchedulerError::Parse(format!(
                            "qstat XML: job {:?} has no JB_name",
                            job.id
                        )));
                    }
                    jobs.push(job);
                }
                field = None;
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_root {
        return Err(SchedulerError::Parse("qstat printed no XML".into()));
    }
    if depth != 0 {
        // A qstat killed mid-output must never look like "fewer jobs".
        return Err(SchedulerError::Parse(format!(
            "qstat XML is truncated ({depth} elements left open)"
        )));
    }
    Ok(jobs)
}

fn push_field(job: &mut Job, f: Field, s: &str) {
    let target = match f {
        Field::Id => &mut job.id,
        Field::Name => &mut job.name,
        Field::Owner => &mut job.owner,
        Field::State => &mut job.state,
    };
    target.push_str(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped like Son of Grid Engine 8.1's `qstat -u '*' -xml`.
    pub const QSTAT_SAMPLE: &str = r#"<?xml version='1.0'?>
<job_info  xmlns:xsd="http://arc.liv.ac.uk/repos/darcs/sge/source/dist/util/resources/schemas/qstat/qstat.xsd">
  <queue_info>
    <job_list state="running">
      <JB_job_number>9001</JB_job_number>
      <JAT_prio>0.25000</JAT_prio>
      <JB_name>lighttpd-alpha</JB_name>
      <JB_owner>tools.alpha</JB_owner>
      <state>r</state>
      <JAT_start_time>2026-11-20T10:11:12.000</JAT_start_time>
      <queue_name>webgrid-lighttpd@tools-sgewebgrid-lighttpd-0917.tools.eqiad1.wikimedia.cloud</queue_name>
      <slots>1</slots>
    </job_list>
    <job_list state="running">
      <JB_job_number>9002</JB_job_number>
      <JAT_prio>0.25000</JAT_prio>
      <JB_name>uwsgi-python-b&amp;c</JB_name>
      <JB_owner>tools.bc</JB_owner>
      <state>dr</state>
      <queue_name>webgrid-generic@tools-sgewebgrid-generic-0901.tools.eqiad1.wikimedia.cloud</queue_name>
      <slots>1</slots>
    </job_list>
  </queue_info>
  <job_info>
    <job_list state="pending">
      <JB_job_number>9003</JB_job_number>
      <JAT_prio>0.00000</JAT_prio>
      <JB_name>lighttpd-broken</JB_name>
      <JB_owner>tools.broken</JB_owner>
      <state>Eqw</state>
      <JB_submission_time>2026-11-20T09:00:00.000</JB_submission_time>
      <queue_name></queue_name>
      <slots>1</slots>
    </job_list>
    <job_list state="pending">
      <JB_job_number>9004</JB_job_number>
      <JB_name>lighttpd-queued</JB_name>
      <JB_owner>tools.queued</JB_owner>
      <state>qw</state>
      <slots>1</slots>
    </job_list>
  </job_info>
</job_info>
"#;

    #[test]
    fn parses_qstat_xml_and_states() {
        let jobs = parse_qstat_xml(QSTAT_SAMPLE).unwrap();
        assert_eq!(jobs.len(), 4);
        assert_eq!(jobs[0].id, "9001");
        assert_eq!(jobs[0].owner, "tools.alpha");
        assert!(jobs[0].is_running());
        assert_eq!(jobs[1].name, "uwsgi-python-b&c");
        assert!(!jobs[1].is_running(), "being deleted");
        assert!(
            jobs[2].is_error() && !jobs[2].is_running(),
            "Eqw is not running"
        );
        assert!(jobs[3].is_running(), "queued counts as running, as today");
        let t = JobTable::new(jobs);
        assert_eq!(t.find("lighttpd-alpha", "tools.alpha").count(), 1);
        assert_eq!(t.find("lighttpd-alpha", "tools.other").count(), 0);
    }

    #[test]
    fn every_qstat_state_is_classified() {
        let job = |state: &str| Job {
            state: state.into(),
            ..Job::default()
        };
        for running in ["qw", "hqw", "t", "r", "hr", "Rr", "Rq", "s", "S", "T", "St"] {
            assert!(job(running).is_running(), "{running} counts as running");
        }
        for not in ["Eqw", "Ehqw", "dr", "dt", "d", "E", ""] {
            assert!(!job(not).is_running(), "{not} does not count as running");
        }
    }

    #[test]
    fn broken_xml_is_an_error() {
        assert!(parse_qstat_xml("<job_info><job_list></job_info>").is_err());
        let cut = &QSTAT_SAMPLE[..QSTAT_SAMPLE
            .find("<job_info>\n    <job_list state=\"pending\">")
            .unwrap()];
        let e = parse_qstat_xml(cut).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        assert!(parse_qstat_xml("").is_err());
        assert!(parse_qstat_xml("error: commlib error").is_err());
        assert!(parse_qstat_xml("<job_info/>").unwrap().is_empty());
    }

    #[test]
    fn parses_json_jobs() {
        let j = parse_json_jobs(
            br#"[{"id": 1, "name": "lighttpd-a", "owner": "tools.a", "state": "r"}]"#,
        )
        .unwrap();
        assert_eq!(j[0].id, "1");
        let j = parse_json_jobs(br#"{"jobs": []}"#).unwrap();
        assert!(j.is_empty());
        assert!(parse_json_jobs(b"nope").is_err());
    }
}
