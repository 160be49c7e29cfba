//! The reconciliation loop: one [`Monitor::pass`] every interval.
//!
//! A pass:
//!
//! 1. takes (or renews) the Redis lease — a monitor that doesn't hold it is on
//!    standby and changes nothing, so two hosts can run the monitor safely;
//! 2. at the same time collects every tool's manifest (ownership checked, bad
//!    ones reported with tool, file and reason), asks the scheduler for its jobs
//!    and reads the proxy's `/list`;
//! 3. stops there — with the error reported and no restarts — when the
//!    scheduler or `/list` failed: missing data is never a reason to restart;
//! 4. decides per tool, a bounded number of tools at a time (see [`Action`]):
//!    restart when the manifest wants a web service and its job isn't running
//!    (missing, or in an error state such as `Eqw`), or the tool isn't in
//!    `/list`, or its registered backend failed the health probe N passes in a
//!    row; a registration whose job is gone or whose backend is dead is removed
//!    (compare-and-delete) before the restart;
//! 5. restarts through the persistent throttle, appending the outcome to the
//!    tool's `service.log`.
//!
//! One tool's failure is that tool's [`Action::Error`]; a pass's failure is its
//! [`PassReport::error`]; a panic inside a pass is caught by [`run`]. Passes
//! never overlap: the next one starts after the previous one ended.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use forge_core::{BackendUrl, CheckState, Reloadable, Shutdown, StatusBoard, ToolName};
use futures::StreamExt;
use serde::Serialize;

use crate::config::{MonitorConfig, ProbeKind};
use crate::manifest::{self, Manifest};
use crate::proxy::HttpClient;
use crate::scheduler::{self, JobTable, Scheduler};
use crate::servicelog;
use crate::store::{Store, ThrottleVerdict};
use crate::template::{Value, Vars};
use crate::users::{self, UidSource};

/// What the monitor did (or, in a dry run, would do) about one tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Not the monitor's business (no `web` key, another backend).
    Skipped,
    /// The manifest was refused (see the reason).
    Invalid,
    /// Running, registered, answering: left alone.
    Healthy,
    /// The backend didn't answer, fewer than N passes in a row so far.
    Suspect,
    /// Restarted; the restart command succeeded.
    Restarted,
    /// The restart command failed or timed out.
    RestartFailed,
    /// A restart was due but the throttle refused it.
    Throttled,
    /// Dry run: a restart is due.
    WouldRestart,
    /// The tool could not be handled (Redis failed …); nothing was done.
    Error,
}

/// Registers the monitor's counters at 0, so `/metrics` lists every one from
/// the start: dashboards and alerts (`increase(…)`) see a series before the
/// first restart, throttle or error rather than none at all.
fn export_zeroes() {
    for name in [
        "forge_webservicemonitor_restarts_attempted_total",
        "forge_webservicemonitor_restarts_succeeded_total",
        "forge_webservicemonitor_restarts_failed_total",
        "forge_webservicemonitor_restarts_throttled_total",
        "forge_webservicemonitor_stale_routes_removed_total",
        "forge_webservicemonitor_pass_errors_total",
    ] {
        metrics::counter!(name).increment(0);
    }
}

/// One tool's outcome in a pass.
#[derive(Debug, Clone, Serialize)]
pub struct ToolDecision {
    /// The tool (or the directory name when it isn't a valid tool name).
    pub tool: String,
    /// What happened.
    pub action: Action,
    /// Why, in words an operator understands.
    pub reason: String,
    /// Stale routes removed for this tool.
    pub routes_removed: u32,
}

/// The result of one pass.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PassReport {
    /// False when another monitor holds the lease (nothing was looked at).
    pub active: bool,
    /// Wall time of the pass.
    pub duration_ms: u64,
    /// Manifests found.
    pub manifests_seen: usize,
    /// Manifests refused.
    pub manifests_invalid: usize,
    /// Jobs the scheduler reported.
    pub jobs: usize,
    /// Tools in `/list`.
    pub listed: usize,
    /// Why the pass could not decide (scheduler, `/list` or Redis failed).
    pub error: Option<String>,
    /// Restart commands run.
    pub restarts_attempted: u32,
    /// … that succeeded.
    pub restarts_succeeded: u32,
    /// … that failed.
    pub restarts_failed: u32,
    /// Restarts refused by the throttle.
    pub restarts_throttled: u32,
    /// Stale routes removed.
    pub stale_routes_removed: u32,
    /// Per-tool outcomes, except healthy and skipped tools unless `verbose`.
    pub decisions: Vec<ToolDecision>,
}

impl PassReport {
    /// One line per decision, for `--dry-run` and `--once`.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for d in &self.decisions {
            let action = serde_json::to_value(d.action)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            out.push_str(&format!("{}\t{}\t{}\n", d.tool, action, d.reason));
        }
        match (&self.error, self.active) {
            (_, false) => out.push_str("pass: standby (another monitor holds the lease)\n"),
            (Some(e), _) => out.push_str(&format!("pass: FAILED: {e}\n")),
            (None, _) => out.push_str(&format!(
                "pass: {} manifests ({} invalid), {} restarts ({} ok, {} failed, {} throttled), {} stale routes removed, {} ms\n",
                self.manifests_seen,
                self.manifests_invalid,
                self.restarts_attempted,
                self.restarts_succeeded,
                self.restarts_failed,
                self.restarts_throttled,
                self.stale_routes_removed,
                self.duration_ms
            )),
        }
        out
    }
}

/// A manifest that passed the checks.
#[derive(Debug)]
struct Collected {
    tool: ToolName,
    uid: u32,
    home: PathBuf,
    manifest: Manifest,
}

/// Everything found under the tools root.
#[derive(Debug, Default)]
struct Collection {
    valid: Vec<Collected>,
    invalid: Vec<ToolDecision>,
    seen: usize,
}

/// One monitor: configuration plus the things it talks to.
#[derive(Debug, Clone)]
pub struct Monitor {
    config: Arc<MonitorConfig>,
    users: Arc<dyn UidSource>,
    scheduler: Arc<dyn Scheduler>,
    http: HttpClient,
    store: Store,
    holder: String,
    verbose: bool,
}

/// This process's lease holder id: `host:pid:random`.
pub fn holder_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    format!(
        "{host}:{}:{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Monitor {
    /// A monitor for `config`, keeping its state in `store`, acting as `holder`.
    pub fn new(config: Arc<MonitorConfig>, store: Store, http: HttpClient, holder: String) -> Self {
        export_zeroes();
        Monitor {
            users: users::from_config(&config.users),
            scheduler: scheduler::from_config(&config.scheduler),
            config,
            http,
            store,
            holder,
            verbose: false,
        }
    }

    /// Report healthy and skipped tools too (dry runs).
    pub fn verbose(mut self, yes: bool) -> Self {
        self.verbose = yes;
        self
    }

    /// Runs one pass. `dry_run`: decide and report, change nothing (no lease,
    /// no throttle records, no route removal, no restart, no `service.log`).
    pub async fn pass(&self, dry_run: bool) -> PassReport {
        let started = Instant::now();
        let mut report = PassReport {
            active: true,
            ..Default::default()
        };
        let cfg = &self.config;

        // 1. The lease.
        let ttl = Duration::from_secs(cfg.lease_ttl_secs());
        let deadline = started + ttl.saturating_sub(Duration::from_secs(1).min(ttl / 4));
        if !dry_run {
            match self
                .store
                .acquire_lease(&cfg.lease.name, &self.holder, ttl.as_millis() as u64)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    report.active = false;
                    report.duration_ms = started.elapsed().as_millis() as u64;
                    return report;
                }
                Err(e) => {
                    report.error = Some(format!("Redis: cannot take the lease: {e}"));
                    report.duration_ms = started.elapsed().as_millis() as u64;
                    return report;
                }
            }
        }

        // 2. Manifests, jobs and /list, together.
        let collect_cfg = Arc::clone(cfg);
        let users = Arc::clone(&self.users);
        let collect = tokio::task::spawn_blocking(move || collect(&collect_cfg, users.as_ref()));
        let jobs = self.scheduler.jobs();
        let list = self.http.list(
            &cfg.proxy.list_url,
            Duration::from_millis(cfg.proxy.timeout_ms.max(1)),
            cfg.proxy.max_body_bytes,
        );
        let (collection, jobs, listed) = tokio::join!(collect, jobs, list);
        let collection = match collection {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                report.error = Some(format!("collecting manifests failed: {e}"));
                report.duration_ms = started.elapsed().as_millis() as u64;
                return report;
            }
            Err(e) => {
                report.error = Some(format!("collecting manifests failed: {e}"));
                report.duration_ms = started.elapsed().as_millis() as u64;
                return report;
            }
        };
        report.manifests_seen = collection.seen;
        report.manifests_invalid = collection.invalid.len();
        for bad in &collection.invalid {
            tracing::warn!(tool = %bad.tool, reason = %bad.reason, "manifest skipped");
        }
        report.decisions.extend(collection.invalid);

        // 3. No decisions on missing data.
        let mut errors = Vec::new();
        let jobs = match jobs {
            Ok(j) => Some(j),
            Err(e) => {
                errors.push(format!("scheduler ({}): {e}", self.scheduler.name()));
                None
            }
        };
        let listed = match listed {
            Ok(l) => Some(l),
            Err(e) => {
                errors.push(format!("proxy /list: {e}"));
                None
            }
        };
        let (Some(jobs), Some(listed)) = (jobs, listed) else {
            report.error = Some(errors.join("; "));
            report.duration_ms = started.elapsed().as_millis() as u64;
            return report;
        };
        report.jobs = jobs.len();
        report.listed = listed.len();

        // 4 + 5. Per tool, bounded.
        let jobs = &jobs;
        let listed = &listed;
        let mut stream = futures::stream::iter(collection.valid)
            .map(|c| async move { self.handle(c, jobs, listed, dry_run, deadline).await })
            .buffer_unordered(cfg.pass.concurrency.max(1));
        while let Some(d) = stream.next().await {
            report.stale_routes_removed += d.routes_removed;
            match d.action {
                Action::Restarted => {
                    report.restarts_attempted += 1;
                    report.restarts_succeeded += 1;
                }
                Action::RestartFailed => {
                    report.restarts_attempted += 1;
                    report.restarts_failed += 1;
                }
                Action::Throttled => report.restarts_throttled += 1,
                _ => {}
            }
            let interesting = !matches!(d.action, Action::Healthy | Action::Skipped);
            if interesting || self.verbose {
                report.decisions.push(d);
            }
        }
        report.decisions.sort_by(|a, b| a.tool.cmp(&b.tool));
        report.duration_ms = started.elapsed().as_millis() as u64;
        report
    }

    async fn handle(
        &self,
        c: Collected,
        jobs: &JobTable,
        listed: &HashSet<String>,
        dry_run: bool,
        deadline: Instant,
    ) -> ToolDecision {
        let cfg = &self.config;
        let tool = c.tool.clone();
        let decision = |action, reason: String| ToolDecision {
            tool: tool.to_string(),
            action,
            reason,
            routes_removed: 0,
        };
        let Some(web) = c.manifest.web() else {
            return decision(Action::Skipped, "manifest has no web service".into());
        };
        let backend = c
            .manifest
            .backend()
            .unwrap_or_else(|| cfg.pass.default_backend.clone());
        if !cfg.pass.backends.contains(&backend) {
            return decision(
                Action::Skipped,
                format!("backend {backend} is not handled by this monitor"),
            );
        }
        let user = tool.unix_user(&cfg.tools.project);
        let job_name = format!("{web}-{tool}");
        let matching: Vec<_> = jobs.find(&job_name, &user).collect();
        let running = matching.iter().any(|j| j.is_running());
        let registered = listed.contains(tool.as_str());

        let mut routes_removed = 0;
        let reason = if !running {
            let why = match matching.iter().find(|j| j.is_error()) {
                Some(j) => format!("job {job_name} is in error state {}", j.state),
                None => match matching.first() {
                    Some(j) => format!("job {job_name} is not running (state {})", j.state),
                    None => format!("job {job_name} is not running"),
                },
            };
            if registered && !dry_run {
                // The job is gone: its registration is stale.
                match self.remove_routes(&tool, None).await {
                    Ok(n) => routes_removed = n,
                    Err(e) => return decision(Action::Error, format!("{why}; {e}")),
                }
            }
            why
        } else if !registered {
            "not registered with the proxy (absent from /list)".to_owned()
        } else if cfg.health.probe == ProbeKind::Off {
            return decision(Action::Healthy, "running and registered".into());
        } else {
            match self.check_health(&tool, dry_run).await {
                Ok(Health::Alive) => {
                    return decision(Action::Healthy, "running, registered, answering".into());
                }
                Ok(Health::Suspect(why)) => return decision(Action::Suspect, why),
                Ok(Health::Dead { why, removed }) => {
                    routes_removed = removed;
                    why
                }
                Err(e) => return decision(Action::Error, e),
            }
        };
        let mut d = self
            .restart(&c, &web, &backend, reason, dry_run, deadline)
            .await;
        d.routes_removed = routes_removed;
        d
    }

    /// Removes the tool's routes (only those pointing at a backend in
    /// `only`, when given), compare-and-delete.
    async fn remove_routes(&self, tool: &ToolName, only: Option<&[String]>) -> Result<u32, String> {
        let routes = self
            .store
            .routes(tool)
            .await
            .map_err(|e| format!("Redis: reading routes failed: {e}"))?;
        let mut removed = 0;
        for (pattern, backend) in routes {
            if only.is_some_and(|o| !o.contains(&backend)) {
                continue;
            }
            match self.store.remove_route_if(tool, &pattern, &backend).await {
                Ok(true) => {
                    removed += 1;
                    metrics::counter!("forge_webservicemonitor_stale_routes_removed_total")
                        .increment(1);
                    tracing::info!(%tool, %pattern, %backend, "stale registration removed");
                }
                Ok(false) => {}
                Err(e) => return Err(format!("Redis: removing route {pattern:?} failed: {e}")),
            }
        }
        Ok(removed)
    }

    async fn check_health(&self, tool: &ToolName, dry_run: bool) -> Result<Health, String> {
        let cfg = &self.config;
        let routes = self
            .store
            .routes(tool)
            .await
            .map_err(|e| format!("Redis: reading routes failed: {e}"))?;
        let backends: Vec<String> = {
            let mut b: Vec<String> = routes.into_values().collect();
            b.sort();
            b.dedup();
            b
        };
        if backends.is_empty() {
            // Listed a moment ago, gone now: the next pass sees the truth.
            return Ok(Health::Alive);
        }
        let mut failures = Vec::new();
        for b in &backends {
            let result = match BackendUrl::parse(b) {
                Ok(url) => self.http.probe(&url, &cfg.health).await,
                Err(e) => Err(format!("unusable backend URL: {e}")),
            };
            match result {
                Ok(()) => {
                    if !dry_run {
                        self.store
                            .unhealthy_clear(tool)
                            .await
                            .map_err(|e| format!("Redis: {e}"))?;
                    }
                    return Ok(Health::Alive);
                }
                Err(e) => failures.push(e),
            }
        }
        let needed = cfg.health.failures_before_restart;
        // Forget the count if probing stops for a while.
        let ttl_ms = cfg
            .pass
            .interval_secs
            .saturating_mul(1000)
            .saturating_mul(u64::from(needed) + 2);
        let count = if dry_run {
            self.store
                .unhealthy_count(tool)
                .await
                .map_err(|e| format!("Redis: {e}"))?
                + 1
        } else {
            self.store
                .unhealthy_incr(tool, ttl_ms)
                .await
                .map_err(|e| format!("Redis: {e}"))?
        };
        let what = failures.join("; ");
        if count < needed {
            return Ok(Health::Suspect(format!(
                "backend did not answer ({count} of {needed} passes): {what}"
            )));
        }
        let mut removed = 0;
        if !dry_run {
            removed = self.remove_routes(tool, Some(&backends)).await?;
            self.store
                .unhealthy_clear(tool)
                .await
                .map_err(|e| format!("Redis: {e}"))?;
        }
        Ok(Health::Dead {
            why: format!("backend did not answer {count} passes in a row: {what}"),
            removed,
        })
    }

    async fn restart(
        &self,
        c: &Collected,
        web: &str,
        backend: &str,
        reason: String,
        dry_run: bool,
        deadline: Instant,
    ) -> ToolDecision {
        let cfg = &self.config;
        let tool = &c.tool;
        let mk = |action, reason: String| ToolDecision {
            tool: tool.to_string(),
            action,
            reason,
            routes_removed: 0,
        };
        let window_ms = cfg.throttle.window_secs.saturating_mul(1000);
        let verdict = match self
            .store
            .throttle(
                tool,
                now_ms(),
                cfg.throttle.max_restarts,
                window_ms,
                !dry_run,
            )
            .await
        {
            Ok(v) => v,
            Err(e) => {
                return mk(
                    Action::Error,
                    format!("{reason}; Redis: throttle check failed: {e}"),
                );
            }
        };
        if let ThrottleVerdict::Throttled { .. } = verdict {
            let msg = format!(
                "Throttled for {} restarts in last {} seconds",
                cfg.throttle.max_restarts, cfg.throttle.window_secs
            );
            if !dry_run {
                metrics::counter!("forge_webservicemonitor_restarts_throttled_total").increment(1);
                tracing::warn!(%tool, %reason, "{msg}");
                self.service_log(c, &format!("{msg} ({reason})"));
            }
            return mk(Action::Throttled, format!("{reason}; {msg}"));
        }
        if dry_run {
            return mk(Action::WouldRestart, reason);
        }
        if Instant::now() >= deadline {
            return mk(
                Action::Error,
                format!(
                    "{reason}; the lease may have expired during this pass, so nothing was done"
                ),
            );
        }
        let user = tool.unix_user(&cfg.tools.project);
        let release = c
            .manifest
            .release()
            .unwrap_or_else(|| cfg.restart.default_release.clone());
        let one = |s: &str| Value::One(s.to_owned());
        let vars = Vars::from([
            ("user", one(&user)),
            ("tool", one(tool.as_str())),
            ("release", one(&release)),
            ("backend", one(backend)),
            ("type", one(web)),
        ]);
        metrics::counter!("forge_webservicemonitor_restarts_attempted_total").increment(1);
        tracing::info!(%tool, %reason, "restarting web service");
        self.service_log(c, &format!("{reason}; restarting the web service"));
        let argv = match cfg.restart.command.render(&vars) {
            Ok(a) => a,
            Err(e) => {
                metrics::counter!("forge_webservicemonitor_restarts_failed_total").increment(1);
                return mk(
                    Action::RestartFailed,
                    format!("{reason}; restart command: {e}"),
                );
            }
        };
        let timeout = Duration::from_secs(cfg.restart.timeout_secs.max(1));
        match scheduler::run(&argv, timeout, 64 * 1024).await {
            Ok(_) => {
                metrics::counter!("forge_webservicemonitor_restarts_succeeded_total").increment(1);
                tracing::info!(%tool, "restart succeeded");
                self.service_log(c, "restart succeeded");
                mk(Action::Restarted, reason)
            }
            Err(e) => {
                metrics::counter!("forge_webservicemonitor_restarts_failed_total").increment(1);
                tracing::warn!(%tool, error = %e, "restart failed");
                self.service_log(c, &format!("restart failed: {e}"));
                mk(
                    Action::RestartFailed,
                    format!("{reason}; restart failed: {e}"),
                )
            }
        }
    }

    fn service_log(&self, c: &Collected, text: &str) {
        let path = c.home.join(&self.config.tools.service_log_name);
        let line = format!("{} webservicemonitor: {text}", servicelog::timestamp());
        if let Err(e) = servicelog::append(&path, c.uid, None, &line) {
            tracing::warn!(tool = %c.tool, error = %e, "cannot write service.log");
        }
    }
}

enum Health {
    Alive,
    Suspect(String),
    Dead { why: String, removed: u32 },
}

/// Walks the tools root (blocking; run on a blocking thread).
fn collect(cfg: &MonitorConfig, users: &dyn UidSource) -> Result<Collection, String> {
    let root = &cfg.tools.root;
    let mut out = Collection::default();
    let entries =
        std::fs::read_dir(root).map_err(|e| format!("cannot list {}: {e}", root.display()))?;
    let names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    // Reading and parsing thousands of small files is I/O- and CPU-bound:
    // spread it over the machine's cores.
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let chunk = names.len().div_ceil(threads).max(1);
    let parts: Vec<Collection> = std::thread::scope(|scope| {
        let handles: Vec<_> = names
            .chunks(chunk)
            .map(|names| scope.spawn(move || collect_names(cfg, users, names)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| "a manifest reader thread crashed".to_owned())
            })
            .collect::<Result<Vec<_>, _>>()
    })?;
    for part in parts {
        out.seen += part.seen;
        out.valid.extend(part.valid);
        out.invalid.extend(part.invalid);
    }
    metrics::gauge!("forge_webservicemonitor_manifests_seen").set(out.seen as f64);
    metrics::gauge!("forge_webservicemonitor_manifests_invalid").set(out.invalid.len() as f64);
    Ok(out)
}

fn collect_names(cfg: &MonitorConfig, users: &dyn UidSource, names: &[String]) -> Collection {
    let root = &cfg.tools.root;
    let mut out = Collection::default();
    for name in names {
        let home = root.join(name);
        let path = home.join(&cfg.tools.manifest_name);
        if std::fs::symlink_metadata(&path).is_err() {
            continue; // no manifest: nothing to do (and no need to look the user up)
        }
        out.seen += 1;
        match check_one(cfg, users, name, &home, &path) {
            Ok(Some(c)) => out.valid.push(c),
            Ok(None) => {}
            Err(reason) => out.invalid.push(ToolDecision {
                tool: name.clone(),
                action: Action::Invalid,
                reason: format!("{}: {reason}", path.display()),
                routes_removed: 0,
            }),
        }
    }
    out
}

fn check_one(
    cfg: &MonitorConfig,
    users: &dyn UidSource,
    name: &str,
    home: &Path,
    path: &Path,
) -> Result<Option<Collected>, String> {
    let tool =
        ToolName::parse(name).map_err(|e| format!("directory name is not a tool name: {e}"))?;
    if tool.as_str() != name {
        return Err("directory name is not a tool name: must be lower-case".into());
    }
    let user = tool.unix_user(&cfg.tools.project);
    let uid = users.uid_of(&user).map_err(|e| e.to_string())?;
    if uid < cfg.tools.min_uid {
        return Err(format!(
            "uid {uid} of {user} is below the minimum tool uid {}",
            cfg.tools.min_uid
        ));
    }
    match manifest::read_owned(path, uid, cfg.tools.max_manifest_bytes) {
        Ok(Some(manifest)) => Ok(Some(Collected {
            tool,
            uid,
            home: home.to_owned(),
            manifest,
        })),
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// How [`run`] runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// One pass, then return.
    pub once: bool,
    /// Decide and report, change nothing.
    pub dry_run: bool,
}

/// Records a pass in metrics and on the status board.
fn record(board: &StatusBoard, report: &PassReport, interval_secs: u64) {
    metrics::histogram!("forge_webservicemonitor_pass_duration_seconds")
        .record(report.duration_ms as f64 / 1000.0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    metrics::gauge!("forge_webservicemonitor_last_pass_timestamp_seconds").set(now as f64);
    board.set_field("last_pass_at", now);
    board.set_field("last_pass_ms", report.duration_ms);
    board.set_field("active", report.active);
    board.set_field("interval_secs", interval_secs);
    if !report.active {
        board.set_check(
            "pass",
            CheckState::Ok,
            "standby: another monitor holds the lease",
        );
        tracing::debug!("standby: another monitor holds the lease");
        return;
    }
    board.set_field("manifests_seen", report.manifests_seen);
    board.set_field("manifests_invalid", report.manifests_invalid);
    match &report.error {
        Some(e) => {
            metrics::counter!("forge_webservicemonitor_pass_errors_total").increment(1);
            board.set_check(
                "pass",
                CheckState::Degraded,
                format!("last pass at {now} failed: {e}"),
            );
            tracing::error!(error = %e, "pass failed; no restarts were made");
        }
        None => {
            board.set_check(
                "pass",
                CheckState::Ok,
                format!("last pass at {now} took {} ms", report.duration_ms),
            );
            tracing::info!(
                manifests = report.manifests_seen,
                invalid = report.manifests_invalid,
                restarts = report.restarts_attempted,
                failed = report.restarts_failed,
                throttled = report.restarts_throttled,
                stale_routes = report.stale_routes_removed,
                ms = report.duration_ms,
                "pass done"
            );
        }
    }
}

/// Runs passes every `pass.interval_secs` until `shutdown` (or once).
/// Returns the last pass's report. The configuration is re-read before each
/// pass, so a reload takes effect at the next pass.
pub async fn run(
    config: Arc<Reloadable<MonitorConfig>>,
    store: Store,
    board: Arc<StatusBoard>,
    options: RunOptions,
    shutdown: Shutdown,
) -> PassReport {
    let http = HttpClient::new();
    let holder = holder_id();
    board.set_field("lease_holder_id", holder.clone());
    let mut last = PassReport::default();
    let mut interval_secs = config.get().pass.interval_secs.max(1);
    let mut ticker = tokio::time::interval(Duration::from_secs(interval_secs));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.triggered() => break,
        }
        let cfg = config.get();
        let monitor = Monitor::new(
            Arc::clone(&cfg),
            store.clone(),
            http.clone(),
            holder.clone(),
        )
        .verbose(options.dry_run);
        let dry_run = options.dry_run;
        let pass = tokio::spawn(async move { monitor.pass(dry_run).await });
        let report = tokio::select! {
            r = pass => r,
            _ = shutdown.forced() => break,
        };
        match report {
            Ok(r) => {
                record(&board, &r, cfg.pass.interval_secs);
                last = r;
            }
            Err(e) => {
                metrics::counter!("forge_webservicemonitor_pass_errors_total").increment(1);
                board.set_check(
                    "pass",
                    CheckState::Degraded,
                    format!("last pass crashed: {e}"),
                );
                tracing::error!(error = %e, "pass crashed; the monitor continues");
                last = PassReport {
                    active: true,
                    error: Some(format!("pass crashed: {e}")),
                    ..Default::default()
                };
            }
        }
        if options.once {
            break;
        }
        let wanted = config.get().pass.interval_secs.max(1);
        if wanted != interval_secs {
            interval_secs = wanted;
            ticker = tokio::time::interval_at(
                tokio::time::Instant::now() + Duration::from_secs(interval_secs),
                Duration::from_secs(interval_secs),
            );
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
    }
    if !options.dry_run {
        let name = &config.get().lease.name;
        if let Err(e) = store.release_lease(name, &holder).await {
            tracing::debug!(error = %e, "could not release the lease");
        }
    }
    last
}
