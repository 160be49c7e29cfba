//! [`Queue`]: enqueue jobs the way python-rq does, and inspect or repair a
//! queue (lengths, failed jobs, requeue, empty) — the operator verbs.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use fred::prelude::*;
use fred::types::Value as RedisValue;
use serde_json::{Map, Value};

use crate::RqError;
use crate::job::{
    EnqueueOptions, JobCall, JobId, JobRecord, describe_call, encode_data, unix_secs, utcformat,
};
use crate::keys::{Keys, Registry, validate_job_id, validate_queue_name};
use crate::scripts::{self, b, s};

/// python-rq's default job timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(180);
/// python-rq's default result TTL.
pub const DEFAULT_RESULT_TTL: Duration = Duration::from_secs(500);
/// python-rq's default failure TTL (a year).
pub const DEFAULT_FAILURE_TTL: Duration = Duration::from_secs(31_536_000);

/// Where an enqueued job went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// In the queue list.
    Queued,
    /// In the scheduled registry (run-at in the future).
    Scheduled,
    /// In the deferred registry (waiting for dependencies).
    Deferred,
}

/// One named queue on a Redis connection pool.
///
/// Takes a fred [`Pool`] (cheap to clone; build it with
/// `forge_core::redis::RedisSettings::pool()` so commands time out).
#[derive(Clone)]
pub struct Queue {
    /// The connections.
    pool: Pool,
    /// The queue name (`default`, `notification`, …).
    name: String,
    /// Key spelling.
    keys: Keys,
    /// Replicas that must acknowledge an enqueue (`WAIT`) and for how long
    /// to wait; `None`: the master's confirmation is enough.
    min_replicas: Option<(u32, Duration)>,
    /// The master the Sentinels name: with it, a durable enqueue is
    /// acknowledged only from that master, and retried there after a switch
    /// (within `switch_retry`).
    master: Option<(forge_core::redis::MasterWatch, Duration)>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("name", &self.name).finish()
    }
}

impl Queue {
    /// The queue `name` under python-rq's default `rq` key prefix.
    pub fn new(pool: Pool, name: &str) -> Queue {
        Queue::with_keys(pool, name, Keys::default())
    }

    /// The queue `name` under another key prefix.
    pub fn with_keys(pool: Pool, name: &str, keys: Keys) -> Queue {
        Queue {
            pool,
            name: name.to_owned(),
            keys,
            min_replicas: None,
            master: None,
        }
    }

    /// Acknowledges a durable enqueue ([`Queue::with_min_replicas`]) only
    /// when the connection that wrote is to the master `watch` names; one
    /// that reached a demoted master, or failed because of a switch, is
    /// retried on the new master for up to `switch_retry` (a retry that
    /// finds the job already there counts as placed). Follow the pool with
    /// the same watch (`watch.follow_pool(&pool)`) so it moves on a switch.
    pub fn with_master_watch(
        mut self,
        watch: forge_core::redis::MasterWatch,
        switch_retry: Duration,
    ) -> Queue {
        self.master = Some((watch, switch_retry));
        self
    }

    /// Makes every enqueue durable: it succeeds only once `replicas`
    /// replicas have it (`WAIT replicas timeout` on the connection that
    /// wrote), else it fails with [`RqError::NotReplicated`] — the job is on
    /// the master, but the caller is not told a false "ok". 0 turns it off.
    pub fn with_min_replicas(mut self, replicas: u32, timeout: Duration) -> Queue {
        self.min_replicas = (replicas > 0).then_some((replicas, timeout));
        self
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Enqueues `func_name(*args)`.
    pub async fn enqueue(
        &self,
        func_name: &str,
        args: Vec<Value>,
        opts: EnqueueOptions,
    ) -> Result<JobId, RqError> {
        self.enqueue_with_kwargs(func_name, args, Map::new(), opts)
            .await
    }

    /// Enqueues `func_name(*args, **kwargs)`.
    pub async fn enqueue_with_kwargs(
        &self,
        func_name: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
        opts: EnqueueOptions,
    ) -> Result<JobId, RqError> {
        self.enqueue_call(
            JobCall {
                func_name: func_name.to_owned(),
                args,
                kwargs,
            },
            opts,
        )
        .await
        .map(|(id, _)| id)
    }

    /// Enqueues a call and says where it went.
    pub async fn enqueue_call(
        &self,
        call: JobCall,
        opts: EnqueueOptions,
    ) -> Result<(JobId, Placement), RqError> {
        validate_queue_name(&self.name)?;
        if call.func_name.is_empty() {
            return Err(RqError::Invalid {
                what: "function name",
                reason: "empty".into(),
            });
        }
        let unique = opts.job_id.is_some();
        let id = match &opts.job_id {
            Some(id) => {
                validate_job_id(id)?;
                id.clone()
            }
            None => uuid::Uuid::new_v4().simple().to_string(),
        };
        for d in &opts.depends_on {
            validate_job_id(d)?;
        }
        let now = SystemTime::now();
        let iso = utcformat(now);
        let mut fields: Vec<(&str, RedisValue)> = vec![
            ("created_at", s(iso.clone())),
            ("data", b(encode_data(&call))),
            ("origin", s(self.name.clone())),
            (
                "description",
                s(opts
                    .description
                    .clone()
                    .unwrap_or_else(|| describe_call(&call))),
            ),
            (
                "timeout",
                s(opts
                    .timeout
                    .unwrap_or(DEFAULT_TIMEOUT)
                    .as_secs()
                    .max(1)
                    .to_string()),
            ),
            ("success_callback_name", s("")),
            ("failure_callback_name", s("")),
            ("stopped_callback_name", s("")),
            ("started_at", s("")),
            ("ended_at", s("")),
            ("last_heartbeat", s("")),
            ("worker_name", s("")),
            ("group_id", s("")),
            ("meta", s("{}")),
            ("status", s("created")),
        ];
        if opts.run_at.is_none() && opts.depends_on.is_empty() {
            fields.push(("enqueued_at", s(iso.clone())));
        }
        if let Some(t) = opts.result_ttl {
            fields.push(("result_ttl", s(t.as_secs().to_string())));
        }
        if let Some(t) = opts.failure_ttl {
            fields.push(("failure_ttl", s(t.as_secs().max(1).to_string())));
        }
        if let Some(r) = &opts.retry {
            fields.push(("retries_left", s(r.max.to_string())));
            let ints: Vec<u64> = r.intervals.iter().map(|d| d.as_secs()).collect();
            fields.push(("retry_intervals", s(Value::from(ints).to_string())));
            if let Some(bk) = &r.backoff {
                fields.push((
                    "forge_backoff",
                    s(serde_json::to_string(bk).unwrap_or_default()),
                ));
            } else if !r.intervals.is_empty() {
                let ms: Vec<u64> = r.intervals.iter().map(|d| d.as_millis() as u64).collect();
                fields.push(("forge_retry_intervals_ms", s(Value::from(ms).to_string())));
            }
        }
        if opts.at_front {
            fields.push(("enqueue_at_front", s("1")));
        }
        if !opts.depends_on.is_empty() {
            fields.push(("dependency_id", s(opts.depends_on[0].clone())));
            fields.push((
                "dependency_ids",
                s(Value::from(opts.depends_on.clone()).to_string()),
            ));
        }
        let mut args = vec![
            s(self.keys.prefix.clone()),
            s(id.clone()),
            s(if unique { "1" } else { "0" }),
            s(if opts.at_front { "1" } else { "0" }),
            s(opts
                .run_at
                .map(|t| format!("{:.6}", unix_secs(t)))
                .unwrap_or_default()),
            s(opts.depends_on.len().to_string()),
        ];
        args.extend(opts.depends_on.iter().map(|d| s(d.clone())));
        for (k, v) in fields {
            args.push(s(k));
            args.push(v);
        }
        let keys = vec![
            self.keys.job(&id),
            self.keys.queue(&self.name),
            self.keys.queues(),
            self.keys.registry(Registry::Scheduled, &self.name),
            self.keys.registry(Registry::Deferred, &self.name),
        ];
        let placed: i64 = match (&self.master, self.min_replicas) {
            (Some((watch, budget)), wanted) => {
                let wanted = wanted.unwrap_or((0, Duration::ZERO));
                self.enqueue_on_master(watch, *budget, keys, args, wanted)
                    .await?
            }
            (None, None) => scripts::ENQUEUE.run(&self.pool, keys, args).await?,
            (None, Some((wanted, timeout))) => {
                let client = self.pool.next();
                let placed = scripts::ENQUEUE.run_on(client, keys, args).await?;
                wait_replicas(client, wanted, timeout).await?;
                placed
            }
        };
        let placement = match placed {
            0 => return Err(RqError::DuplicateJob(id)),
            1 => Placement::Queued,
            2 => Placement::Scheduled,
            3 => Placement::Deferred,
            other => {
                return Err(RqError::Protocol {
                    script: "enqueue",
                    reason: format!("answered {other}"),
                });
            }
        };
        metrics::counter!("forge_rq_jobs_enqueued_total", "queue" => self.name.clone(), "job" => call.func_name.clone())
            .increment(1);
        Ok((id, placement))
    }

    /// The durable enqueue through `watch` (see [`Queue::with_master_watch`]).
    /// A retry runs the script with `unique` set: the job id is ours, so a
    /// job hash already there is our earlier attempt, replicated before the
    /// switch, and is reported as placed (from its status) rather than
    /// queued twice.
    async fn enqueue_on_master(
        &self,
        watch: &forge_core::redis::MasterWatch,
        budget: Duration,
        keys: Vec<String>,
        args: Vec<RedisValue>,
        (wanted, timeout): (u32, Duration),
    ) -> Result<i64, RqError> {
        let mut attempt = 0_u32;
        watch
            .write_on_master(
                &self.pool,
                budget,
                |e: &RqError| matches!(e, RqError::Redis(f) if f.details().contains("READONLY")),
                |client| {
                    attempt += 1;
                    let retry = attempt > 1;
                    let (keys, mut args) = (keys.clone(), args.clone());
                    let job_key = keys[0].clone();
                    if retry {
                        args[2] = s("1");
                    }
                    async move {
                        let mut placed: i64 = scripts::ENQUEUE.run_on(&client, keys, args).await?;
                        if retry && placed == 0 {
                            let status: Option<String> = client.hget(&job_key, "status").await?;
                            placed = match status.as_deref() {
                                Some("scheduled") => 2,
                                Some("deferred") => 3,
                                _ => 1,
                            };
                        }
                        wait_replicas(&client, wanted, timeout).await?;
                        Ok(placed)
                    }
                },
            )
            .await
            .map_err(|e| match e {
                forge_core::redis::OnMasterError::Write(e) => e,
                forge_core::redis::OnMasterError::NotOnMaster { connected, master } => {
                    RqError::NotMaster { connected, master }
                }
            })
    }

    /// Number of queued jobs.
    pub async fn len(&self) -> Result<usize, RqError> {
        Ok(self.pool.llen(self.keys.queue(&self.name)).await?)
    }

    /// Whether no job is queued.
    pub async fn is_empty(&self) -> Result<bool, RqError> {
        Ok(self.len().await? == 0)
    }

    /// Queued job ids, head first.
    pub async fn job_ids(&self, limit: usize) -> Result<Vec<JobId>, RqError> {
        let stop = i64::try_from(limit).unwrap_or(i64::MAX).saturating_sub(1);
        Ok(self
            .pool
            .lrange(self.keys.queue(&self.name), 0, stop)
            .await?)
    }

    /// Number of entries in one of the queue's registries.
    pub async fn registry_len(&self, registry: Registry) -> Result<usize, RqError> {
        Ok(self
            .pool
            .zcard(self.keys.registry(registry, &self.name))
            .await?)
    }

    /// Job ids in one of the queue's registries (python-rq's started registry
    /// holds `<id>:<execution>`; the execution part is stripped).
    pub async fn registry_ids(&self, registry: Registry) -> Result<Vec<JobId>, RqError> {
        let raw: Vec<String> = self
            .pool
            .zrange(
                self.keys.registry(registry, &self.name),
                0,
                -1,
                None,
                false,
                None,
                false,
            )
            .await?;
        Ok(raw
            .into_iter()
            .map(|e| match e.split_once(':') {
                Some((id, _)) if registry == Registry::Started => id.to_owned(),
                _ => e,
            })
            .collect())
    }

    /// Reads a job.
    pub async fn fetch(&self, id: &str) -> Result<JobRecord, RqError> {
        fetch_job(&self.pool, &self.keys, id).await
    }

    /// The failed jobs, oldest first, at most `limit`.
    pub async fn failed_jobs(&self, limit: usize) -> Result<Vec<JobRecord>, RqError> {
        let ids = self.registry_ids(Registry::Failed).await?;
        let mut out = Vec::new();
        for id in ids.into_iter().take(limit) {
            match self.fetch(&id).await {
                Ok(r) => out.push(r),
                Err(RqError::NoSuchJob(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Requeues failed jobs by id; returns how many were requeued.
    pub async fn requeue_failed(&self, ids: &[JobId]) -> Result<usize, RqError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut args = vec![s(self.keys.prefix.clone()), s(utcformat(SystemTime::now()))];
        args.extend(ids.iter().map(|i| s(i.clone())));
        self.requeue_script(args).await
    }

    /// Requeues every failed job; returns how many.
    pub async fn requeue_all_failed(&self) -> Result<usize, RqError> {
        let args = vec![
            s(self.keys.prefix.clone()),
            s(utcformat(SystemTime::now())),
            s("*"),
        ];
        self.requeue_script(args).await
    }

    async fn requeue_script(&self, args: Vec<RedisValue>) -> Result<usize, RqError> {
        let keys = vec![
            self.keys.registry(Registry::Failed, &self.name),
            self.keys.queue(&self.name),
        ];
        let n: i64 = scripts::REQUEUE_FAILED.run(&self.pool, keys, args).await?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Deletes every queued job and empties the list; returns how many.
    pub async fn empty(&self) -> Result<usize, RqError> {
        let n: i64 = scripts::EMPTY
            .run(
                &self.pool,
                vec![self.keys.queue(&self.name)],
                vec![s(self.keys.prefix.clone())],
            )
            .await?;
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

/// `WAIT wanted timeout` on `client`; an error when fewer acknowledged.
async fn wait_replicas(client: &Client, wanted: u32, timeout: Duration) -> Result<(), RqError> {
    if wanted == 0 {
        return Ok(());
    }
    let timeout_ms = timeout.as_millis() as u64;
    // WAIT blocks server-side up to timeout_ms: allow that on top of the
    // client's command timeout.
    let acked: i64 = client
        .with_options(&fred::types::config::Options {
            timeout: Some(timeout + Duration::from_secs(2)),
            ..Default::default()
        })
        .wait(i64::from(wanted), timeout_ms as i64)
        .await?;
    if acked < i64::from(wanted) {
        return Err(RqError::NotReplicated {
            acked,
            wanted,
            timeout_ms,
        });
    }
    Ok(())
}

/// Reads the job `id`.
pub async fn fetch_job(pool: &Pool, keys: &Keys, id: &str) -> Result<JobRecord, RqError> {
    let hash: HashMap<String, Vec<u8>> = pool.hgetall(keys.job(id)).await?;
    if hash.is_empty() {
        return Err(RqError::NoSuchJob(id.to_owned()));
    }
    Ok(JobRecord::from_hash(id, hash))
}

/// The names of every queue (`rq:queues`), sorted.
pub async fn queue_names(pool: &Pool, keys: &Keys) -> Result<Vec<String>, RqError> {
    let raw: Vec<String> = pool.smembers(keys.queues()).await?;
    let prefix = keys.queue("");
    let mut names: Vec<String> = raw
        .into_iter()
        .filter_map(|k| k.strip_prefix(&prefix).map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

/// A registered worker as `rq info` shows it.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    /// The worker's name.
    pub name: String,
    /// Its hash fields (`state`, `queues`, `last_heartbeat`, …).
    pub fields: HashMap<String, String>,
}

/// Every worker registered in `rq:workers`.
pub async fn workers(pool: &Pool, keys: &Keys) -> Result<Vec<WorkerInfo>, RqError> {
    let raw: Vec<String> = pool.smembers(keys.workers()).await?;
    let prefix = keys.worker("");
    let mut out = Vec::new();
    for key in raw {
        let fields: HashMap<String, String> = pool.hgetall(&key).await?;
        if fields.is_empty() {
            continue;
        }
        out.push(WorkerInfo {
            name: key.strip_prefix(&prefix).unwrap_or(&key).to_owned(),
            fields,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Suspends every worker (python-rq's `rq suspend`), optionally for `ttl`.
pub async fn suspend(pool: &Pool, keys: &Keys, ttl: Option<Duration>) -> Result<(), RqError> {
    let expire = ttl.map(|t| Expiration::EX(t.as_secs().max(1) as i64));
    let _: () = pool.set(keys.suspended(), 1, expire, None, false).await?;
    Ok(())
}

/// Resumes suspended workers (`rq resume`).
pub async fn resume(pool: &Pool, keys: &Keys) -> Result<(), RqError> {
    let _: i64 = pool.del(keys.suspended()).await?;
    Ok(())
}

/// Whether workers are suspended.
pub async fn is_suspended(pool: &Pool, keys: &Keys) -> Result<bool, RqError> {
    let n: i64 = pool.exists(keys.suspended()).await?;
    Ok(n > 0)
}
