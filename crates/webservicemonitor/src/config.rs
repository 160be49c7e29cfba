//! Configuration of `webservicemonitor` and of the `webservice` command.
//!
//! Both programs read TOML through `forge_core::ConfigSource` (file →
//! `FORGE_WEBSERVICEMONITOR_…` / `FORGE_WEBSERVICE_…` environment → flags).
//! They share the sections that describe the site — where tool homes are
//! ([`ToolsConfig`]), how a tool's uid is found ([`UsersConfig`]) and how the
//! job scheduler is driven ([`SchedulerConfig`]) — so a Puppet template can
//! render both from the same data. Every key and its default is documented in
//! `docs/webservicemonitor.md`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use forge_core::redis::RedisSettings;
use forge_core::telemetry::LogSettings;
use serde::{Deserialize, Serialize};

use crate::template::{self, ArgvTemplate};

/// Where tools live and what their accounts look like.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolsConfig {
    /// Directory holding one home directory per tool (`<root>/<tool>`).
    pub root: PathBuf,
    /// The project: tool accounts are `<project>.<tool>`.
    pub project: String,
    /// Smallest uid a tool account may have; manifests of lower uids are refused.
    pub min_uid: u32,
    /// File name of the manifest in a tool's home.
    pub manifest_name: String,
    /// File name of the log the monitor appends to in a tool's home.
    pub service_log_name: String,
    /// Largest manifest read, in bytes.
    pub max_manifest_bytes: u64,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        ToolsConfig {
            root: PathBuf::from("/data/project"),
            project: "tools".into(),
            min_uid: 50000,
            manifest_name: "service.manifest".into(),
            service_log_name: "service.log".into(),
            max_manifest_bytes: 64 * 1024,
        }
    }
}

/// Where a tool user's uid comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UidSourceKind {
    /// The system's user database (`getpwnam`, so NSS/LDAP users work).
    #[default]
    Passwd,
    /// The `[users.map]` table of this file.
    Map,
}

/// How the uid of `<project>.<tool>` is found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct UsersConfig {
    /// `passwd` (default) or `map`.
    pub source: UidSourceKind,
    /// User name → uid, used when `source = "map"`.
    pub map: BTreeMap<String, u32>,
}

/// Which scheduler backend drives jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerKind {
    /// Son of Grid Engine: `qstat -xml`, `qsub`, `qdel`.
    #[default]
    Gridengine,
    /// Any external commands; the list command prints JSON.
    Command,
}

/// The three commands of a scheduler backend, as argv templates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerCommands {
    /// Prints every job (gridengine: `qstat -xml`; command: JSON).
    pub list: ArgvTemplate,
    /// Submits a web service job.
    pub submit: ArgvTemplate,
    /// Stops a job.
    pub stop: ArgvTemplate,
}

/// The commands of the `gridengine` backend. Each key missing from the file
/// keeps its own default (setting only `submit` keeps `qstat` and `qdel`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GridengineCommands {
    /// Prints `qstat -xml`.
    pub list: ArgvTemplate,
    /// Submits a web service job (`qsub … webservice-runner --register-proxy …`).
    pub submit: ArgvTemplate,
    /// Deletes a job (`qdel`).
    pub stop: ArgvTemplate,
}

impl Default for GridengineCommands {
    fn default() -> Self {
        let t = |v: &[&str]| ArgvTemplate::new(v.iter().map(|s| (*s).to_owned()).collect());
        GridengineCommands {
            list: t(&["qstat", "-u", "*", "-xml"]),
            submit: t(&[
                "qsub",
                "-e",
                "{home}/error.log",
                "-o",
                "{home}/error.log",
                "-i",
                "/dev/null",
                "-q",
                "{queue}",
                "-l",
                "h_vmem={mem},release={release}",
                "-b",
                "y",
                "-N",
                "{job_name}",
                "/usr/bin/webservice-runner",
                "--register-proxy",
                "--type",
                "{type}",
                "{extra_args}",
            ]),
            stop: t(&["qdel", "{job_id}"]),
        }
    }
}

/// How jobs are listed, submitted and stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// `gridengine` (default) or `command`.
    pub backend: SchedulerKind,
    /// Time limit of each scheduler command, seconds.
    pub timeout_secs: u64,
    /// Largest output read from the list command, bytes.
    pub max_output_bytes: usize,
    /// Commands of the `gridengine` backend (each key defaults on its own).
    pub gridengine: GridengineCommands,
    /// Commands of the `command` backend (no defaults: all three are required).
    pub command: SchedulerCommands,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            backend: SchedulerKind::Gridengine,
            timeout_secs: 30,
            max_output_bytes: 256 * 1024 * 1024,
            gridengine: GridengineCommands::default(),
            command: SchedulerCommands::default(),
        }
    }
}

impl SchedulerConfig {
    /// The commands of the selected backend.
    pub fn commands(&self) -> SchedulerCommands {
        match self.backend {
            SchedulerKind::Gridengine => SchedulerCommands {
                list: self.gridengine.list.clone(),
                submit: self.gridengine.submit.clone(),
                stop: self.gridengine.stop.clone(),
            },
            SchedulerKind::Command => self.command.clone(),
        }
    }

    /// Checks the selected backend's templates; returns (key, reason).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let section = match self.backend {
            SchedulerKind::Gridengine => "scheduler.gridengine",
            SchedulerKind::Command => "scheduler.command",
        };
        let c = self.commands();
        for (name, tpl, vars) in [
            ("list", &c.list, template::LIST_VARS),
            ("submit", &c.submit, template::SUBMIT_VARS),
            ("stop", &c.stop, template::STOP_VARS),
        ] {
            let key = format!("{section}.{name}");
            if tpl.is_empty() {
                return Err((key, "must name a command".into()));
            }
            tpl.check(vars).map_err(|e| (key, e.to_string()))?;
        }
        Ok(())
    }
}

/// The proxy's `/list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// URL of the active proxy's `/list` (http only).
    pub list_url: String,
    /// Time limit of the whole request, milliseconds.
    pub timeout_ms: u64,
    /// Largest `/list` body read, bytes.
    pub max_body_bytes: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            list_url: "http://127.0.0.1:8081/list".into(),
            timeout_ms: 5000,
            max_body_bytes: 64 * 1024 * 1024,
        }
    }
}

/// How a registered backend is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// No probe: only job state and `/list` count (today's behaviour).
    Off,
    /// A TCP connect to the backend's host:port.
    #[default]
    Tcp,
    /// An HTTP GET of `path`; any HTTP answer counts as alive.
    Http,
}

/// Health probes of registered backends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// `off`, `tcp` (default) or `http`.
    pub probe: ProbeKind,
    /// Time limit of one probe, milliseconds.
    pub timeout_ms: u64,
    /// Path requested by the `http` probe.
    pub http_path: String,
    /// Consecutive failed passes before the route is removed and the tool restarted.
    pub failures_before_restart: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            probe: ProbeKind::Tcp,
            timeout_ms: 2000,
            http_path: "/".into(),
            failures_before_restart: 3,
        }
    }
}

/// How a web service is restarted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestartConfig {
    /// Argv template; placeholders `{user}`, `{tool}`, `{release}`, `{backend}`, `{type}`.
    pub command: ArgvTemplate,
    /// Time limit of the restart command, seconds; it is killed after that.
    pub timeout_secs: u64,
    /// Release used when a manifest names none.
    pub default_release: String,
}

impl Default for RestartConfig {
    fn default() -> Self {
        RestartConfig {
            command: ArgvTemplate::new(
                [
                    "sudo",
                    "-i",
                    "-u",
                    "{user}",
                    "webservice",
                    "--backend=gridengine",
                    "--release={release}",
                    "restart",
                ]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            ),
            timeout_secs: 30,
            default_release: "buster".into(),
        }
    }
}

/// The persistent restart throttle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Restart attempts allowed per tool per window.
    pub max_restarts: u32,
    /// The window, seconds.
    pub window_secs: u64,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            max_restarts: 3,
            window_secs: 3600,
        }
    }
}

/// Pass scheduling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PassConfig {
    /// Seconds between the starts of two passes.
    pub interval_secs: u64,
    /// Tools handled at the same time within a pass.
    pub concurrency: usize,
    /// Manifest backends this monitor looks after (others are skipped).
    pub backends: Vec<String>,
    /// Backend assumed for manifests that name none.
    pub default_backend: String,
}

impl Default for PassConfig {
    fn default() -> Self {
        PassConfig {
            interval_secs: 60,
            concurrency: 32,
            backends: vec!["gridengine".into()],
            default_backend: "gridengine".into(),
        }
    }
}

/// The Redis lease that makes one monitor active.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeaseConfig {
    /// Lease name (`forge:lease:<name>`).
    pub name: String,
    /// Lease lifetime, seconds; renewed at every pass. 0 = three intervals.
    pub ttl_secs: u64,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            name: "webservicemonitor".into(),
            ttl_secs: 0,
        }
    }
}

/// The admin endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of `/healthz`, `/status`, `/metrics`, `/log-filter`.
    pub listen: String,
    /// File holding the admin token that `PUT /log-filter` needs
    /// (`Authorization: Bearer …`). Unset: it is refused. Read at start.
    pub token_file: Option<std::path::PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:9107".into(),
            token_file: None,
        }
    }
}

/// The whole configuration of `webservicemonitor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    /// Tool homes and accounts.
    pub tools: ToolsConfig,
    /// Uid lookup.
    pub users: UsersConfig,
    /// The job scheduler.
    pub scheduler: SchedulerConfig,
    /// The proxy's `/list`.
    pub proxy: ProxyConfig,
    /// Backend health probes.
    pub health: HealthConfig,
    /// The restart command.
    pub restart: RestartConfig,
    /// The restart throttle.
    pub throttle: ThrottleConfig,
    /// Pass timing and concurrency.
    pub pass: PassConfig,
    /// The active-monitor lease.
    pub lease: LeaseConfig,
    /// Redis (throttle, health counters, lease, routes).
    pub redis: RedisSettings,
    /// Logging.
    pub log: LogSettings,
    /// The admin endpoint.
    pub admin: AdminConfig,
}

impl MonitorConfig {
    /// Semantic checks; returns (dotted key, reason) of the first problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, r: &str| Err((k.to_owned(), r.to_owned()));
        if self.pass.interval_secs == 0 {
            return bad("pass.interval_secs", "must be at least 1");
        }
        if let Some(file) = &self.admin.token_file
            && let Err(e) = forge_core::admin::AdminToken::from_file(file)
        {
            return bad("admin.token_file", &e.to_string());
        }
        if self.pass.concurrency == 0 {
            return bad("pass.concurrency", "must be at least 1");
        }
        if self.throttle.window_secs == 0 {
            return bad("throttle.window_secs", "must be at least 1");
        }
        if self.health.failures_before_restart == 0 {
            return bad("health.failures_before_restart", "must be at least 1");
        }
        if self.restart.command.is_empty() {
            return bad("restart.command", "must name a command");
        }
        if let Err(e) = self.restart.command.check(template::RESTART_VARS) {
            return Err(("restart.command".into(), e.to_string()));
        }
        if !self.proxy.list_url.starts_with("http://") {
            return bad("proxy.list_url", "must be an http:// URL");
        }
        if self.proxy.list_url.parse::<http::Uri>().is_err() {
            return bad("proxy.list_url", "is not a valid URL");
        }
        if self.lease.name.is_empty() {
            return bad("lease.name", "must not be empty");
        }
        self.scheduler.validate()
    }

    /// The lease lifetime in effect.
    pub fn lease_ttl_secs(&self) -> u64 {
        if self.lease.ttl_secs == 0 {
            self.pass.interval_secs.saturating_mul(3).max(10)
        } else {
            self.lease.ttl_secs
        }
    }
}

/// The whole configuration of the `webservice` command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebserviceConfig {
    /// Tool homes and accounts.
    pub tools: ToolsConfig,
    /// Uid lookup (used to check `--tool` against the caller).
    pub users: UsersConfig,
    /// The job scheduler.
    pub scheduler: SchedulerConfig,
    /// Web service type → queue. Only these types are accepted.
    pub types: BTreeMap<String, String>,
    /// Release used without `--release`.
    pub default_release: String,
    /// Memory limit used without `--mem`.
    pub default_mem: String,
    /// How long `restart`/`stop` wait for the old job to be gone, seconds.
    pub stop_wait_secs: u64,
    /// Poll interval while waiting, milliseconds.
    pub poll_ms: u64,
}

impl Default for WebserviceConfig {
    fn default() -> Self {
        let mut types = BTreeMap::new();
        for t in ["lighttpd", "lighttpd-plain"] {
            types.insert(t.to_owned(), "webgrid-lighttpd".to_owned());
        }
        for t in [
            "generic",
            "nodejs",
            "python",
            "python2",
            "tomcat",
            "uwsgi-plain",
            "uwsgi-python",
        ] {
            types.insert(t.to_owned(), "webgrid-generic".to_owned());
        }
        WebserviceConfig {
            tools: ToolsConfig::default(),
            users: UsersConfig::default(),
            scheduler: SchedulerConfig::default(),
            types,
            default_release: "buster".into(),
            default_mem: "4G".into(),
            stop_wait_secs: 60,
            poll_ms: 500,
        }
    }
}

impl WebserviceConfig {
    /// Semantic checks; returns (dotted key, reason) of the first problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.types.is_empty() {
            return Err(("types".into(), "at least one type is needed".into()));
        }
        if self.poll_ms == 0 {
            return Err(("poll_ms".into(), "must be at least 1".into()));
        }
        self.scheduler.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        MonitorConfig::default().validate().unwrap();
        WebserviceConfig::default().validate().unwrap();
        let mut c = MonitorConfig::default();
        c.scheduler.backend = SchedulerKind::Command;
        assert_eq!(c.validate().unwrap_err().0, "scheduler.command.list");
        let mut c = MonitorConfig::default();
        c.restart.command = ArgvTemplate::new(vec!["x".into(), "{nope}".into()]);
        let (k, r) = c.validate().unwrap_err();
        assert_eq!(k, "restart.command");
        assert!(r.contains("nope"), "{r}");
    }

    #[test]
    fn gridengine_keys_default_one_by_one() {
        // Setting only `submit` used to leave `list` and `stop` empty, and both
        // programs refused to start ("must name a command").
        let text = "[scheduler.gridengine]\nsubmit = [\"qsub\", \"-N\", \"{job_name}\", \"x\"]\n";
        let c: MonitorConfig = toml::from_str(text).unwrap();
        c.validate().unwrap();
        let d = SchedulerConfig::default();
        assert_eq!(c.scheduler.gridengine.list, d.gridengine.list);
        assert_eq!(c.scheduler.gridengine.stop, d.gridengine.stop);
        assert_ne!(c.scheduler.gridengine.submit, d.gridengine.submit);
        let w: WebserviceConfig = toml::from_str(text).unwrap();
        w.validate().unwrap();
    }

    #[test]
    fn round_trips_through_toml() {
        let c = MonitorConfig::default();
        let text = toml::to_string(&c).unwrap();
        let back: MonitorConfig = toml::from_str(&text).unwrap();
        assert_eq!(c, back);
    }
}
