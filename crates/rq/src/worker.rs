//! [`Worker`]: claims jobs from queues in priority order and runs them, at
//! least once.
//!
//! How a job moves (every step one Lua script, so atomic):
//!
//! 1. **claim** — `LPOP` from the first non-empty queue, in the same script
//!    put into this worker's in-flight hash `forge:rq:inflight:<worker>` and
//!    python-rq's `rq:wip:<q>`, status `started`. Never popped into thin air,
//!    also with several queues.
//! 2. **run** — the job's fields are checked first ([`crate::params`]; a
//!    bad one fails the job with `forge_rq.InvalidJob`), then the handler
//!    runs in its own task under the job's timeout; on timeout the task is
//!    aborted (its future dropped), a panic is caught by the task boundary,
//!    and a panic anywhere else on the job's path fails only that job.
//! 3. **settle** — finished (result in the hash and python-rq's result
//!    stream, dependents released), retry (queued again or scheduled after a
//!    backoff), failed (failed registry with the error) or, on shutdown,
//!    handed back to the head of its queue. A settle only applies while the
//!    worker still holds the job.
//!
//! Around it: a heartbeat refreshes the worker's liveness lease
//! `forge:rq:alive:<worker>` and its `rq:worker:<name>` hash; a reaper (in
//! every worker) requeues the in-flight jobs of workers whose lease expired,
//! counting each orphaning on the job so a job that keeps killing workers
//! ends in the failed registry (poison); a scheduler promotes due scheduled
//! jobs and enqueues recurring jobs. While idle the worker blocks on
//! `BLMOVE q q` (a non-destructive blocking peek, one connection per queue)
//! so an enqueue wakes it within a round trip.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use forge_core::admin::{CheckState, StatusBoard};
use forge_core::lifecycle::Shutdown;
use forge_core::redis::RedisSettings;
use fred::prelude::*;
use fred::types::Value as RedisValue;
use fred::types::lists::LMoveDirection;
use futures::FutureExt as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::{Notify, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::handler::{HandlerRegistry, JobArgs, JobContext, JobError};
use crate::job::{JobCall, unix_secs, utcformat, utcparse, zlib};
use crate::keys::{Keys, validate_queue_name};
use crate::params::{FieldDefaults, JobDataLimit, JobParams};
use crate::queue::Queue;
use crate::scripts::{self, b, s};
use crate::{EnqueueOptions, RqError};

/// A job enqueued periodically by the workers themselves (in-worker
/// schedules instead of systemd timers). At most one job per slot across all
/// workers: slot `k` starts at `offset + k·every` seconds after the epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecurringJob {
    /// A unique name (used in the dedup key and the job id).
    pub name: String,
    /// The handler to run.
    pub func: String,
    /// The queue to put it on (default `default`).
    #[serde(default = "default_queue")]
    pub queue: String,
    /// Positional arguments.
    #[serde(default)]
    pub args: Vec<Value>,
    /// Keyword arguments.
    #[serde(default)]
    pub kwargs: Map<String, Value>,
    /// The period, seconds.
    pub every_secs: u64,
    /// Offset of the slots from the epoch, seconds (e.g. `3600` with
    /// `every_secs = 86400`: daily at 01:00 UTC).
    #[serde(default)]
    pub offset_secs: u64,
    /// Job timeout, seconds (default: the worker's).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

fn default_queue() -> String {
    "default".into()
}

/// The `[worker]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    /// Worker name; default `<hostname>.<pid>.<random>`. Must be unique.
    pub name: Option<String>,
    /// Queues in priority order.
    pub queues: Vec<String>,
    /// Jobs run at the same time.
    pub concurrency: usize,
    /// python-rq key prefix (`RQ_KEY_PREFIX`).
    pub key_prefix: String,
    /// Timeout of jobs that do not set one, seconds.
    pub default_timeout_secs: u64,
    /// Result TTL of jobs that do not set one, seconds (-1 = forever).
    pub default_result_ttl_secs: i64,
    /// Failure TTL of jobs that do not set one, seconds (-1 = forever).
    pub default_failure_ttl_secs: i64,
    /// Bound for finishing in-flight jobs on shutdown before handing them back, seconds.
    pub drain_timeout_secs: u64,
    /// Heartbeat period, milliseconds.
    pub heartbeat_interval_ms: u64,
    /// Liveness lease: a worker silent this long is dead and its jobs are
    /// requeued, milliseconds.
    pub orphan_after_ms: u64,
    /// How often every worker looks for dead workers' jobs, milliseconds.
    /// Orphans are requeued within `orphan_after_ms + reap_interval_ms`.
    pub reap_interval_ms: u64,
    /// A job orphaned more often than this (it keeps killing its workers)
    /// goes to the failed registry instead of being requeued.
    pub max_orphanings: u32,
    /// Longest pause of the scheduler (promotion of scheduled jobs, recurring jobs), milliseconds.
    pub scheduler_interval_ms: u64,
    /// Most jobs claimed in one round trip.
    pub claim_batch: usize,
    /// Most bytes a job's `data` may inflate to (and the longest hash field
    /// a claim loads); a larger job fails instead of growing the worker.
    pub max_job_data_bytes: JobDataLimit,
    /// Recurring jobs.
    pub recurring: Vec<RecurringJob>,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            name: None,
            queues: vec!["default".into()],
            concurrency: 16,
            key_prefix: crate::keys::DEFAULT_PREFIX.into(),
            default_timeout_secs: 180,
            default_result_ttl_secs: 500,
            default_failure_ttl_secs: 31_536_000,
            drain_timeout_secs: 30,
            heartbeat_interval_ms: 3_000,
            orphan_after_ms: 15_000,
            reap_interval_ms: 5_000,
            max_orphanings: 3,
            scheduler_interval_ms: 1_000,
            claim_batch: 64,
            max_job_data_bytes: JobDataLimit::default(),
            recurring: Vec::new(),
        }
    }
}

impl WorkerSettings {
    /// Checks the settings; returns `(dotted key, reason)` for the first problem.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.queues.is_empty() {
            return Err(("worker.queues", "at least one queue is needed".into()));
        }
        for q in &self.queues {
            validate_queue_name(q).map_err(|e| ("worker.queues", e.to_string()))?;
        }
        if self.concurrency == 0 {
            return Err(("worker.concurrency", "must be at least 1".into()));
        }
        if self.heartbeat_interval_ms == 0 || self.orphan_after_ms <= self.heartbeat_interval_ms * 2
        {
            return Err((
                "worker.orphan_after_ms",
                "must be more than twice heartbeat_interval_ms".into(),
            ));
        }
        if self.reap_interval_ms == 0 || self.scheduler_interval_ms == 0 {
            return Err((
                "worker.reap_interval_ms",
                "intervals must be positive".into(),
            ));
        }
        if let Some(n) = &self.name
            && (n.is_empty() || n.contains(char::is_whitespace))
        {
            return Err(("worker.name", "must be non-empty without whitespace".into()));
        }
        for r in &self.recurring {
            if r.every_secs == 0 {
                return Err((
                    "worker.recurring",
                    format!("{}: every_secs must be positive", r.name),
                ));
            }
            validate_queue_name(&r.queue).map_err(|e| ("worker.recurring", e.to_string()))?;
        }
        Ok(())
    }
}

/// A worker: settings, Redis, handlers. Run it with [`Worker::run`].
pub struct Worker {
    /// Settings.
    settings: WorkerSettings,
    /// Where Redis is.
    redis: RedisSettings,
    /// The handlers.
    registry: Arc<HandlerRegistry>,
    /// The worker's name.
    name: String,
    /// Health/status board, if the daemon has one.
    board: Option<Arc<StatusBoard>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("name", &self.name).finish()
    }
}

/// What the worker's tasks share.
struct Shared {
    settings: WorkerSettings,
    keys: Keys,
    name: String,
    pool: Pool,
    registry: Arc<HandlerRegistry>,
    /// Cancelled when in-flight jobs must be handed back now.
    handback: CancellationToken,
    /// Workers suspended (`rq suspend`).
    suspended: AtomicBool,
    /// Jobs running.
    in_flight: AtomicUsize,
    /// Wakes the scheduler (a retry was scheduled).
    scheduler_wake: Notify,
    board: Option<Arc<StatusBoard>>,
}

/// One claimed job as the claim script returned it.
struct Claimed {
    queue: String,
    id: String,
    composite: String,
    fields: HashMap<String, Vec<u8>>,
}

impl Claimed {
    fn text(&self, k: &str) -> Option<String> {
        self.fields
            .get(k)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .filter(|s| !s.is_empty())
    }
}

fn default_worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!(
        "{host}.{}.{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

fn value_bytes(v: &RedisValue) -> Vec<u8> {
    match v {
        RedisValue::Bytes(b) => b.to_vec(),
        RedisValue::String(s) => s.as_bytes().to_vec(),
        RedisValue::Integer(i) => i.to_string().into_bytes(),
        RedisValue::Double(d) => d.to_string().into_bytes(),
        _ => Vec::new(),
    }
}

fn value_text(v: &RedisValue) -> String {
    String::from_utf8_lossy(&value_bytes(v)).into_owned()
}

fn parse_claims(v: RedisValue) -> Result<Vec<Claimed>, RqError> {
    let bad = |reason: &str| RqError::Protocol {
        script: "claim",
        reason: reason.to_owned(),
    };
    let items = match v {
        RedisValue::Array(a) => a,
        RedisValue::Null => Vec::new(),
        _ => return Err(bad("not an array")),
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let RedisValue::Array(parts) = item else {
            return Err(bad("entry not an array"));
        };
        if parts.len() != 4 {
            return Err(bad("entry of wrong length"));
        }
        let mut fields = HashMap::new();
        match &parts[3] {
            RedisValue::Array(h) => {
                for pair in h.chunks(2) {
                    if let [k, v] = pair {
                        fields.insert(value_text(k), value_bytes(v));
                    }
                }
            }
            RedisValue::Map(m) => {
                for (k, v) in m.clone().inner() {
                    fields.insert(
                        String::from_utf8_lossy(k.as_bytes()).into_owned(),
                        value_bytes(&v),
                    );
                }
            }
            _ => return Err(bad("hash not an array")),
        }
        out.push(Claimed {
            queue: value_text(&parts[0]),
            id: value_text(&parts[1]),
            composite: value_text(&parts[2]),
            fields,
        });
    }
    Ok(out)
}

impl Worker {
    /// A worker for `settings.queues` on the Redis at `redis`, running the
    /// handlers in `registry`.
    pub fn new(
        settings: WorkerSettings,
        redis: RedisSettings,
        registry: HandlerRegistry,
    ) -> Result<Worker, RqError> {
        settings
            .validate()
            .map_err(|(what, reason)| RqError::Invalid { what, reason })?;
        let name = settings.name.clone().unwrap_or_else(default_worker_name);
        Ok(Worker {
            settings,
            redis,
            registry: Arc::new(registry),
            name,
            board: None,
        })
    }

    /// Reports Redis health on `board` (check `redis`) and worker fields.
    #[must_use]
    pub fn with_status_board(mut self, board: Arc<StatusBoard>) -> Self {
        self.board = Some(board);
        self
    }

    /// The worker's name (`rq:worker:<name>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs until `shutdown`: claims and runs jobs; on a graceful shutdown
    /// stops claiming, lets in-flight jobs finish within
    /// `drain_timeout_secs`, hands the rest back to their queues; a forced
    /// shutdown hands them back at once.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), RqError> {
        let pool = self.redis.pool()?;
        // Follow Sentinel's master switches at once (a paused or cut-off
        // master keeps its connections open).
        let master_watch = forge_core::redis::MasterWatch::start(&self.redis)?;
        master_watch.follow_pool(&pool);
        pool.init().await?;
        // Blocking waits must end well within the client's command timeout.
        let block_secs = (self.redis.command_timeout().as_secs_f64() / 2.0).clamp(0.05, 1.0);
        let mut wakers = Vec::new();
        for q in &self.settings.queues {
            let c = self.redis.client()?;
            master_watch.follow(&c);
            c.init().await?;
            wakers.push((q.clone(), c));
        }
        let shared = Arc::new(Shared {
            keys: Keys::new(&self.settings.key_prefix),
            settings: self.settings,
            name: self.name,
            pool,
            registry: self.registry,
            handback: CancellationToken::new(),
            suspended: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            scheduler_wake: Notify::new(),
            board: self.board,
        });
        register_birth(&shared).await?;
        tracing::info!(
            worker = %shared.name,
            queues = %shared.settings.queues.join(","),
            concurrency = shared.settings.concurrency,
            handlers = ?shared.registry.names(),
            "worker started"
        );
        // Background tasks stop on `background`, cancelled after the drain.
        let background = CancellationToken::new();
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(heartbeat_loop(
            shared.clone(),
            background.clone(),
        )));
        tasks.push(tokio::spawn(reap_loop(shared.clone(), background.clone())));
        tasks.push(tokio::spawn(scheduler_loop(
            shared.clone(),
            background.clone(),
        )));
        let (idle_tx, idle_rx) = watch::channel(false);
        let wake = Arc::new(Notify::new());
        for (q, client) in wakers {
            let queue_key = shared.keys.queue(&q);
            tasks.push(tokio::spawn(waker_loop(
                client,
                queue_key,
                block_secs,
                idle_rx.clone(),
                wake.clone(),
                background.clone(),
            )));
        }
        let jobs = TaskTracker::new();
        dispatch(&shared, &shutdown, &jobs, &idle_tx, &wake).await;
        // Drain.
        jobs.close();
        let in_flight = shared.in_flight.load(Ordering::SeqCst);
        if in_flight > 0 {
            tracing::info!(in_flight, "draining in-flight jobs");
        }
        let bound = Duration::from_secs(shared.settings.drain_timeout_secs);
        let drained = tokio::select! {
            _ = jobs.wait() => true,
            _ = tokio::time::sleep(bound) => false,
            _ = shutdown.forced() => false,
        };
        if !drained {
            let n = shared.in_flight.load(Ordering::SeqCst);
            tracing::warn!(jobs = n, "handing unfinished jobs back to their queues");
            shared.handback.cancel();
            jobs.wait().await;
        }
        background.cancel();
        for t in tasks {
            let _ = t.await;
        }
        register_death(&shared).await;
        tracing::info!(worker = %shared.name, "worker stopped");
        Ok(())
    }
}

async fn register_birth(shared: &Shared) -> Result<(), RqError> {
    let key = shared.keys.worker(&shared.name);
    let now = utcformat(SystemTime::now());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let fields: Vec<(&str, String)> = vec![
        ("birth", now.clone()),
        ("last_heartbeat", now),
        ("queues", shared.settings.queues.join(",")),
        ("pid", std::process::id().to_string()),
        ("hostname", host),
        ("ip_address", String::new()),
        ("version", format!("forge-rq {}", forge_core::VERSION)),
        ("python_version", "none (forge rq-worker, Rust)".into()),
        ("state", "idle".into()),
        ("successful_job_count", "0".into()),
        ("failed_job_count", "0".into()),
        ("total_working_time", "0".into()),
    ];
    let _: i64 = shared.pool.del(&key).await?;
    let _: i64 = shared.pool.hset(&key, fields).await?;
    let _: i64 = shared
        .pool
        .expire(&key, worker_ttl_secs(&shared.settings), None)
        .await?;
    let _: i64 = shared.pool.sadd(shared.keys.workers(), &key).await?;
    for q in &shared.settings.queues {
        let _: i64 = shared.pool.sadd(shared.keys.workers_of(q), &key).await?;
    }
    refresh_lease(shared).await?;
    Ok(())
}

fn worker_ttl_secs(s: &WorkerSettings) -> i64 {
    (s.orphan_after_ms / 1000 + 60) as i64
}

async fn refresh_lease(shared: &Shared) -> Result<(), RqError> {
    let _: () = shared
        .pool
        .set(
            Keys::alive(&shared.name),
            "1",
            Some(Expiration::PX(shared.settings.orphan_after_ms as i64)),
            None,
            false,
        )
        .await?;
    Ok(())
}

async fn register_death(shared: &Shared) {
    let key = shared.keys.worker(&shared.name);
    let pool = &shared.pool;
    let result: Result<(), fred::error::Error> = async {
        let _: i64 = pool.srem(shared.keys.workers(), &key).await?;
        for q in &shared.settings.queues {
            let _: i64 = pool.srem(shared.keys.workers_of(q), &key).await?;
        }
        let _: i64 = pool
            .hset(&key, vec![("death", utcformat(SystemTime::now()))])
            .await?;
        let _: i64 = pool.expire(&key, 60, None).await?;
        let left: i64 = pool.hlen(Keys::inflight(&shared.name)).await?;
        if left == 0 {
            let _: i64 = pool.srem(Keys::inflight_workers(), &shared.name).await?;
        }
        // Without the lease, any live worker requeues what we still hold.
        let _: i64 = pool.del(Keys::alive(&shared.name)).await?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not unregister the worker; its lease will expire");
    }
}

/// The claim loop: runs until shutdown.
async fn dispatch(
    shared: &Arc<Shared>,
    shutdown: &Shutdown,
    jobs: &TaskTracker,
    idle_tx: &watch::Sender<bool>,
    wake: &Notify,
) {
    let sem = Arc::new(Semaphore::new(shared.settings.concurrency));
    let mut error_backoff = Duration::from_millis(100);
    loop {
        if shutdown.is_triggered() {
            break;
        }
        if shared.suspended.load(Ordering::Relaxed) {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = shutdown.triggered() => break,
            }
            continue;
        }
        let first = tokio::select! {
            p = sem.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.triggered() => break,
        };
        let mut permits = vec![first];
        while permits.len() < shared.settings.claim_batch.max(1) {
            match sem.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        match claim(shared, permits.len()).await {
            Ok(claimed) if !claimed.is_empty() => {
                error_backoff = Duration::from_millis(100);
                let mut permits = permits.into_iter();
                for job in claimed {
                    let Some(permit) = permits.next() else { break };
                    shared.in_flight.fetch_add(1, Ordering::SeqCst);
                    let shared = shared.clone();
                    jobs.spawn(async move {
                        supervise(&shared, job).await;
                        shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                        drop(permit);
                    });
                }
            }
            Ok(_) => {
                drop(permits);
                let _ = idle_tx.send(true);
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.triggered() => {}
                }
                let _ = idle_tx.send(false);
            }
            Err(e) => {
                drop(permits);
                tracing::warn!(error = %e, "claiming jobs failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(error_backoff) => {}
                    _ = shutdown.triggered() => break,
                }
                error_backoff = (error_backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Blocks on `BLMOVE q q LEFT LEFT` (the list is unchanged) while the
/// dispatcher is idle, and wakes it when the queue has a job.
async fn waker_loop(
    client: Client,
    queue_key: String,
    block_secs: f64,
    idle: watch::Receiver<bool>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    wait_for_jobs(&client, &queue_key, block_secs, idle, &wake, &stop).await;
    let _ = client.quit().await;
}

async fn wait_for_jobs(
    client: &Client,
    queue_key: &str,
    block_secs: f64,
    mut idle: watch::Receiver<bool>,
    wake: &Notify,
    stop: &CancellationToken,
) {
    loop {
        while !*idle.borrow_and_update() {
            tokio::select! {
                r = idle.changed() => if r.is_err() { return },
                _ = stop.cancelled() => return,
            }
        }
        let res: Result<Option<String>, _> = tokio::select! {
            r = client.blmove(queue_key, queue_key, LMoveDirection::Left, LMoveDirection::Left, block_secs) => r,
            _ = stop.cancelled() => return,
        };
        match res {
            Ok(Some(_)) => {
                wake.notify_one();
                // Let the dispatcher claim before peeking again.
                tokio::select! {
                    r = idle.changed() => if r.is_err() { return },
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    _ = stop.cancelled() => return,
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(error = %e, queue = %queue_key, "blocking wait failed");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }
}

async fn claim(shared: &Shared, max: usize) -> Result<Vec<Claimed>, RqError> {
    let now = SystemTime::now();
    let mut args = vec![
        s(shared.keys.prefix.clone()),
        s(shared.name.clone()),
        s(max.to_string()),
        s(format!("{:.6}", unix_secs(now))),
        s(utcformat(now)),
        s(shared.settings.default_timeout_secs.to_string()),
        s("60"),
        s(format!("{:08x}", rand::random::<u32>())),
        s(shared.settings.max_job_data_bytes.bytes().to_string()),
    ];
    args.extend(shared.settings.queues.iter().map(|q| s(q.clone())));
    let v: RedisValue = scripts::CLAIM.run(&shared.pool, vec![], args).await?;
    parse_claims(v)
}

/// How a job attempt ended, with what recording it needs.
enum Outcome {
    /// The handler returned a value.
    Finished {
        /// The result.
        value: Value,
        /// Seconds the finished job is kept (checked).
        result_ttl: i64,
    },
    /// The job failed (handler error, timeout, panic, bad job data).
    Failed {
        /// The `exc_info` text.
        error: String,
        /// Seconds the failed job is kept (checked, or the default).
        failure_ttl: i64,
        /// Set when the job is retried instead of failed for good.
        retry: Option<RetryPlan>,
    },
    /// Shutdown: back to the head of its queue.
    HandBack,
}

/// A retry to record (all values checked and bounded).
struct RetryPlan {
    /// Delay before the retry (at most [`crate::params::MAX_RETRY_DELAY`]).
    delay: Duration,
    /// `retries_left` after this failure.
    retries_left: u32,
    /// `number_of_retries` after this failure.
    number_of_retries: u32,
    /// Whether the retry goes to the head of the queue.
    at_front: bool,
}

/// The text of a panic payload.
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

/// Runs one claimed job and records its outcome. Nothing on this path may
/// end the task without settling the job: everything before the handler is
/// checked data, and a panic anywhere here still fails only this job.
async fn supervise(shared: &Arc<Shared>, job: Claimed) {
    let started = Instant::now();
    let started_at = SystemTime::now();
    let defaults = FieldDefaults {
        timeout: Duration::from_secs(shared.settings.default_timeout_secs),
        result_ttl: shared.settings.default_result_ttl_secs,
        failure_ttl: shared.settings.default_failure_ttl_secs,
        max_data: shared.settings.max_job_data_bytes,
    };
    let (outcome, label) = match AssertUnwindSafe(attempt(shared, &job, &defaults))
        .catch_unwind()
        .await
    {
        Ok(r) => r,
        Err(p) => {
            let msg = panic_message(&*p);
            tracing::error!(job = %job.id, queue = %job.queue, panic = %msg, "the worker panicked on this job; failing it");
            let outcome = Outcome::Failed {
                error: format!("forge_rq.WorkerPanic: the worker panicked on this job: {msg}"),
                failure_ttl: JobParams::failure_ttl_or_default(&job.fields, &defaults),
                retry: None,
            };
            (outcome, "unknown".to_owned())
        }
    };
    let duration = started.elapsed();
    metrics::histogram!("forge_rq_worker_job_duration_seconds", "queue" => job.queue.clone(), "job" => label.clone())
        .record(duration.as_secs_f64());
    settle(shared, &job, outcome, &label, started_at, duration).await;
}

/// Checks the job's fields, finds its handler and runs it; returns the
/// outcome and the metrics label (the function name, or `unknown`).
async fn attempt(
    shared: &Arc<Shared>,
    job: &Claimed,
    defaults: &FieldDefaults,
) -> (Outcome, String) {
    let started_at = SystemTime::now();
    if let Some(enq) = job.text("enqueued_at").and_then(|t| utcparse(&t))
        && let Ok(lat) = started_at.duration_since(enq)
    {
        metrics::histogram!("forge_rq_worker_enqueue_to_start_seconds", "queue" => job.queue.clone())
            .record(lat.as_secs_f64());
    }
    let started = |label: &str| {
        metrics::counter!("forge_rq_worker_jobs_started_total", "queue" => job.queue.clone(), "job" => label.to_owned()).increment(1);
    };
    let refused = |error: String| Outcome::Failed {
        error,
        failure_ttl: JobParams::failure_ttl_or_default(&job.fields, defaults),
        retry: None,
    };
    let params = match JobParams::parse(&job.fields, defaults) {
        Ok(p) => p,
        Err(refusal) => {
            started("unknown");
            return (refused(refusal.to_string()), "unknown".to_owned());
        }
    };
    let Some(handler) = shared.registry.get(&params.call.func_name) else {
        started("unknown");
        let error = format!(
            "forge_rq.UnknownJobError: no handler registered for {:?} on worker {} (known: {})",
            params.call.func_name,
            shared.name,
            shared.registry.names().join(", ")
        );
        return (refused(error), "unknown".to_owned());
    };
    let label = params.call.func_name.clone();
    started(&label);
    let outcome = match run_handler(
        shared,
        job,
        params.call.clone(),
        handler,
        params.timeout,
        params.attempt,
    )
    .await
    {
        HandlerResult::Value(value) => Outcome::Finished {
            value,
            result_ttl: params.result_ttl,
        },
        HandlerResult::Error { error, retryable } => {
            let retry = if retryable {
                params.retry.as_ref().and_then(|r| {
                    let delay = r.next_delay(params.attempt, rand::random::<f64>())?;
                    Some(RetryPlan {
                        delay,
                        retries_left: r.retries_left.saturating_sub(1),
                        number_of_retries: params.attempt.saturating_add(1),
                        at_front: r.at_front,
                    })
                })
            } else {
                None
            };
            Outcome::Failed {
                error,
                failure_ttl: params.failure_ttl,
                retry,
            }
        }
        HandlerResult::HandBack => Outcome::HandBack,
    };
    (outcome, label)
}

/// How the handler's task ended.
enum HandlerResult {
    /// It returned a value.
    Value(Value),
    /// It failed, timed out or panicked.
    Error {
        /// The `exc_info` text.
        error: String,
        /// Whether the job's retry policy applies.
        retryable: bool,
    },
    /// Stopped for a shutdown hand-back.
    HandBack,
}

async fn run_handler(
    shared: &Arc<Shared>,
    job: &Claimed,
    call: JobCall,
    handler: crate::handler::Handler,
    timeout: Duration,
    attempt: u32,
) -> HandlerResult {
    let cancel = CancellationToken::new();
    let ctx = JobContext {
        job_id: job.id.clone(),
        queue: job.queue.clone(),
        func_name: call.func_name.clone(),
        attempt,
        worker_name: shared.name.clone(),
        timeout,
        cancel: cancel.clone(),
    };
    let args = JobArgs {
        args: call.args,
        kwargs: call.kwargs,
    };
    let mut task = tokio::spawn(handler(ctx, args));
    tokio::select! {
        r = &mut task => match r {
            Ok(Ok(v)) => HandlerResult::Value(v),
            Ok(Err(JobError { retryable, message })) => HandlerResult::Error {
                error: format!("forge_rq.JobError{}: {message}", if retryable { "" } else { " (permanent)" }),
                retryable,
            },
            Err(e) if e.is_panic() => {
                let msg = panic_message(&*e.into_panic());
                HandlerResult::Error { error: format!("forge_rq.HandlerPanic: the handler panicked: {msg}"), retryable: true }
            }
            Err(e) => HandlerResult::Error { error: format!("forge_rq.HandlerAborted: {e}"), retryable: true },
        },
        _ = tokio::time::sleep(timeout) => {
            cancel.cancel();
            task.abort();
            HandlerResult::Error {
                error: format!("rq.timeouts.JobTimeoutException: Task exceeded maximum timeout value ({} seconds); the handler was stopped", timeout.as_secs_f64()),
                retryable: true,
            }
        }
        _ = shared.handback.cancelled() => {
            cancel.cancel();
            task.abort();
            HandlerResult::HandBack
        }
    }
}

/// The settle script's arguments for `outcome`, its mode and metric.
fn settle_args(
    shared: &Shared,
    job: &Claimed,
    outcome: &Outcome,
    started_at: SystemTime,
    duration: Duration,
) -> (Vec<RedisValue>, &'static str, &'static str) {
    let now = SystemTime::now();
    let mut args = vec![
        s(shared.keys.prefix.clone()),
        s(shared.name.clone()),
        s(job.queue.clone()),
        s(job.id.clone()),
        s(job.composite.clone()),
    ];
    let b64 = base64::engine::general_purpose::STANDARD;
    match outcome {
        Outcome::Finished { value, result_ttl } => {
            let json = value.to_string();
            args.extend([
                s("finished"),
                s(format!("{:.6}", unix_secs(now))),
                s(utcformat(now)),
                s(json.clone()),
                s(if value.is_null() {
                    String::new()
                } else {
                    b64.encode(json.as_bytes())
                }),
                s(result_ttl.to_string()),
                s(format!("{:.6}", unix_secs(started_at))),
                s(format!("{:.6}", duration.as_secs_f64())),
                s(shared.settings.default_failure_ttl_secs.to_string()),
            ]);
            (args, "finished", "forge_rq_worker_jobs_finished_total")
        }
        Outcome::Failed {
            error,
            retry: Some(r),
            ..
        } => {
            tracing::info!(job = %job.id, queue = %job.queue, delay = ?r.delay, retries_left = r.retries_left, error = %error, "job failed; retrying");
            let run_at = now.checked_add(r.delay).unwrap_or(now);
            args.extend([
                s("retry"),
                s(format!("{:.6}", unix_secs(now))),
                s(utcformat(now)),
                b(zlib(error.as_bytes())),
                s(r.retries_left.to_string()),
                s(r.number_of_retries.to_string()),
                s(if r.delay.is_zero() {
                    String::new()
                } else {
                    format!("{:.6}", unix_secs(run_at))
                }),
                s(if r.at_front { "1" } else { "0" }),
            ]);
            (args, "retry", "forge_rq_worker_jobs_retried_total")
        }
        Outcome::Failed {
            error,
            failure_ttl,
            retry: None,
        } => {
            tracing::warn!(job = %job.id, queue = %job.queue, error = %error, "job failed");
            let z = zlib(error.as_bytes());
            args.extend([
                s("failed"),
                s(format!("{:.6}", unix_secs(now))),
                s(utcformat(now)),
                b(z.clone()),
                s(b64.encode(&z)),
                s(failure_ttl.to_string()),
                s(format!("{:.6}", unix_secs(started_at))),
                s(format!("{:.6}", duration.as_secs_f64())),
            ]);
            (args, "failed", "forge_rq_worker_jobs_failed_total")
        }
        Outcome::HandBack => {
            args.extend([
                s("handback"),
                s(format!("{:.6}", unix_secs(now))),
                s(utcformat(now)),
            ]);
            (args, "handback", "forge_rq_worker_jobs_handed_back_total")
        }
    }
}

async fn settle(
    shared: &Arc<Shared>,
    job: &Claimed,
    outcome: Outcome,
    label: &str,
    started_at: SystemTime,
    duration: Duration,
) {
    let built = std::panic::catch_unwind(AssertUnwindSafe(|| {
        settle_args(shared, job, &outcome, started_at, duration)
    }));
    let (args, mode, counter) = match built {
        Ok(a) => a,
        Err(p) => {
            let msg = panic_message(&*p);
            tracing::error!(job = %job.id, panic = %msg, "the worker panicked recording this job; failing it");
            let failed = Outcome::Failed {
                error: format!(
                    "forge_rq.WorkerPanic: the worker panicked recording this job: {msg}"
                ),
                failure_ttl: shared.settings.default_failure_ttl_secs,
                retry: None,
            };
            settle_args(shared, job, &failed, started_at, duration)
        }
    };
    let mut backoff = Duration::from_millis(50);
    loop {
        match scripts::SETTLE
            .run::<i64>(&shared.pool, vec![], args.clone())
            .await
        {
            Ok(1) | Ok(2) => break,
            Ok(_) => {
                tracing::warn!(job = %job.id, mode, "job was requeued while running here (this worker was presumed dead); outcome dropped, it will run again");
                return;
            }
            Err(e) => {
                if shared.handback.is_cancelled()
                    && mode != "handback"
                    && backoff > Duration::from_secs(2)
                {
                    tracing::error!(job = %job.id, error = %e, "cannot record job outcome; leaving it to the orphan reaper");
                    return;
                }
                tracing::warn!(job = %job.id, error = %e, "recording job outcome failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                if backoff >= Duration::from_secs(5) && shared.handback.is_cancelled() {
                    return;
                }
            }
        }
    }
    metrics::counter!(counter, "queue" => job.queue.clone(), "job" => label.to_owned())
        .increment(1);
    if mode == "retry" {
        shared.scheduler_wake.notify_one();
    }
}

async fn heartbeat_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let interval = Duration::from_millis(shared.settings.heartbeat_interval_ms);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
        let res: Result<(), RqError> = async {
            refresh_lease(&shared).await?;
            let key = shared.keys.worker(&shared.name);
            let busy = shared.in_flight.load(Ordering::Relaxed);
            let suspended: i64 = shared.pool.exists(shared.keys.suspended()).await?;
            shared.suspended.store(suspended > 0, Ordering::Relaxed);
            let state = if suspended > 0 {
                "suspended"
            } else if busy > 0 {
                "busy"
            } else {
                "idle"
            };
            let _: i64 = shared
                .pool
                .hset(
                    &key,
                    vec![
                        ("last_heartbeat", utcformat(SystemTime::now())),
                        ("state", state.to_owned()),
                        // Also restores the entry if a reaper removed it
                        // while this worker could not reach Redis.
                        ("queues", shared.settings.queues.join(",")),
                        ("pid", std::process::id().to_string()),
                    ],
                )
                .await?;
            let _: i64 = shared
                .pool
                .expire(&key, worker_ttl_secs(&shared.settings), None)
                .await?;
            let _: i64 = shared.pool.sadd(shared.keys.workers(), &key).await?;
            if busy > 0 {
                let _: i64 = shared
                    .pool
                    .sadd(Keys::inflight_workers(), &shared.name)
                    .await?;
            }
            for q in &shared.settings.queues {
                let n: i64 = shared.pool.llen(shared.keys.queue(q)).await?;
                metrics::gauge!("forge_rq_worker_queue_depth", "queue" => q.clone()).set(n as f64);
            }
            metrics::gauge!("forge_rq_worker_jobs_in_flight").set(busy as f64);
            Ok(())
        }
        .await;
        if let Some(board) = &shared.board {
            match &res {
                Ok(()) => board.set_check("redis", CheckState::Ok, "heartbeat ok"),
                Err(e) => board.set_check("redis", CheckState::Failing, e.to_string()),
            }
            board.set_field("worker_name", shared.name.clone());
            board.set_field("jobs_in_flight", shared.in_flight.load(Ordering::Relaxed));
        }
        if let Err(e) = res {
            tracing::warn!(error = %e, "heartbeat failed");
        }
    }
}

async fn reap_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let interval = Duration::from_millis(shared.settings.reap_interval_ms);
    loop {
        if let Err(e) = reap_once(&shared).await {
            tracing::warn!(error = %e, "looking for dead workers failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
    }
}

async fn reap_once(shared: &Shared) -> Result<(), RqError> {
    let now = SystemTime::now();
    let args = vec![
        s(shared.keys.prefix.clone()),
        s(format!("{:.6}", unix_secs(now))),
        s(utcformat(now)),
        s(shared.settings.max_orphanings.to_string()),
        s(shared.settings.default_failure_ttl_secs.to_string()),
        s(shared.name.clone()),
    ];
    let v: RedisValue = scripts::REAP.run(&shared.pool, vec![], args).await?;
    let RedisValue::Array(parts) = v else {
        return Ok(());
    };
    let list = |i: usize| -> Vec<String> {
        match parts.get(i) {
            Some(RedisValue::Array(a)) => a.iter().map(value_text).collect(),
            _ => Vec::new(),
        }
    };
    let dead = list(0);
    let requeued = list(1);
    let poisoned = list(2);
    for pair in requeued.chunks(2) {
        if let [q, id] = pair {
            metrics::counter!("forge_rq_worker_orphans_requeued_total", "queue" => q.clone())
                .increment(1);
            tracing::debug!(job = %id, queue = %q, "requeued orphaned job");
        }
    }
    for pair in poisoned.chunks(2) {
        if let [q, id] = pair {
            metrics::counter!("forge_rq_worker_poison_jobs_total", "queue" => q.clone())
                .increment(1);
            tracing::warn!(job = %id, queue = %q, "job killed its workers too often; moved to the failed registry");
        }
    }
    if !dead.is_empty() {
        tracing::warn!(workers = ?dead, requeued = requeued.len() / 2, poisoned = poisoned.len() / 2, "requeued the jobs of dead workers");
    }
    Ok(())
}

async fn scheduler_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let max_pause = Duration::from_millis(shared.settings.scheduler_interval_ms);
    loop {
        let mut pause = max_pause;
        match promote_once(&shared).await {
            Ok(Some(next)) => {
                if let Ok(d) = next.duration_since(SystemTime::now()) {
                    pause = pause.min(d + Duration::from_millis(1));
                } else {
                    pause = Duration::ZERO;
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "promoting scheduled jobs failed"),
        }
        if let Err(e) = enqueue_recurring(&shared).await {
            tracing::warn!(error = %e, "enqueueing recurring jobs failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shared.scheduler_wake.notified() => {}
            _ = stop.cancelled() => return,
        }
    }
}

async fn promote_once(shared: &Shared) -> Result<Option<SystemTime>, RqError> {
    let now = SystemTime::now();
    let mut args = vec![
        s(shared.keys.prefix.clone()),
        s(format!("{:.6}", unix_secs(now))),
        s(utcformat(now)),
        s("500"),
    ];
    args.extend(shared.settings.queues.iter().map(|q| s(q.clone())));
    let v: RedisValue = scripts::PROMOTE.run(&shared.pool, vec![], args).await?;
    let RedisValue::Array(parts) = v else {
        return Ok(None);
    };
    let promoted = parts.first().map(value_text).unwrap_or_default();
    if promoted != "0" && !promoted.is_empty() {
        tracing::debug!(promoted, "promoted scheduled jobs");
    }
    if promoted.parse::<u64>().unwrap_or(0) >= 500 {
        return Ok(Some(now));
    }
    let next = parts
        .get(1)
        .map(value_text)
        .and_then(|t| t.parse::<f64>().ok())
        .filter(|f| f.is_finite() && *f >= 0.0)
        .map(|f| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(f));
    Ok(next)
}

async fn enqueue_recurring(shared: &Shared) -> Result<(), RqError> {
    if shared.settings.recurring.is_empty() {
        return Ok(());
    }
    let now = unix_secs(SystemTime::now()) as u64;
    for r in &shared.settings.recurring {
        if now < r.offset_secs {
            continue;
        }
        let slot = (now - r.offset_secs) / r.every_secs;
        let marker = format!("{}:{slot}", Keys::cron(&r.name));
        let set: Option<String> = shared
            .pool
            .set(
                &marker,
                "1",
                Some(Expiration::EX((r.every_secs + 60) as i64)),
                Some(SetOptions::NX),
                false,
            )
            .await?;
        if set.is_none() {
            continue;
        }
        let q = Queue::with_keys(shared.pool.clone(), &r.queue, shared.keys.clone());
        let opts = EnqueueOptions {
            job_id: Some(format!(
                "forge-recurring-{}-{slot}",
                r.name.replace([':', ' '], "-")
            )),
            timeout: r.timeout_secs.map(Duration::from_secs),
            ..Default::default()
        };
        match q
            .enqueue_with_kwargs(&r.func, r.args.clone(), r.kwargs.clone(), opts)
            .await
        {
            Ok(id) => tracing::info!(name = %r.name, job = %id, "enqueued recurring job"),
            Err(RqError::DuplicateJob(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_validate() {
        assert!(WorkerSettings::default().validate().is_ok());
        let bad = WorkerSettings {
            queues: vec![],
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "worker.queues");
        let bad = WorkerSettings {
            orphan_after_ms: 1000,
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "worker.orphan_after_ms");
    }
}
