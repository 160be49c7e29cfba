//! A job queue on python-rq's Redis layout, with its JSON serializer.
//!
//! python-rq can enqueue jobs our [`Worker`] runs, and `rq info`, python's
//! `Job.fetch(id, serializer=JSONSerializer)` and the RQ dashboard see our
//! queues, workers and results. On top of python-rq's layout we add what it
//! lacks (see `docs/rq.md`):
//!
//! * **atomic claim** into a per-worker in-flight hash — a job is never
//!   popped into thin air, also with several queues;
//! * **liveness leases**: a dead worker's jobs are requeued (not failed) by
//!   any live worker within `orphan_after + reap_interval` (20 s by default);
//! * **retries with exponential backoff and jitter**, per-job timeouts that
//!   really stop the job, poison jobs ending in the failed registry;
//! * scheduled jobs promoted by the workers (no separate scheduler) and
//!   recurring jobs.
//!
//! Delivery is **at least once**: handlers must be idempotent.
//!
//! | module | what |
//! |--------|------|
//! | [`keys`] | the key layout |
//! | [`job`] | job hash encoding, [`EnqueueOptions`], [`Retry`] |
//! | [`queue`] | [`Queue`]: enqueue, inspect, requeue, empty; suspend/resume |
//! | [`handler`] | [`HandlerRegistry`], [`JobContext`], [`JobArgs`], [`JobError`]; built-ins |
//! | [`params`] | a claimed job's fields checked into bounded values ([`JobDataLimit`]) |
//! | [`worker`] | [`Worker`] and [`WorkerSettings`] |
//! | [`scripts`] | the Lua scripts behind every state change |
//!
//! ```no_run
//! # async fn demo() -> Result<(), forge_rq::RqError> {
//! use forge_rq::{EnqueueOptions, Queue, Retry};
//! use std::time::Duration;
//! let pool = forge_core::redis::RedisSettings::for_url("redis://127.0.0.1:6379").pool()?;
//! fred::prelude::ClientLike::init(&pool).await?;
//! let q = Queue::new(pool, "default");
//! let opts = EnqueueOptions {
//!     retry: Some(Retry::exponential(5, Duration::from_secs(1), Duration::from_secs(60))),
//!     ..Default::default()
//! };
//! let id = q.enqueue("idm.send_mail", vec![serde_json::json!("alice")], opts).await?;
//! # let _ = id; Ok(()) }
//! ```

pub mod error;
pub mod handler;
pub mod job;
pub mod keys;
pub mod params;
pub mod queue;
pub mod report;
pub mod scripts;
pub mod worker;

pub use error::RqError;
pub use handler::{HandlerRegistry, JobArgs, JobContext, JobError, register_builtins};
pub use job::{Backoff, EnqueueOptions, JobCall, JobId, JobRecord, JobStatus, Retry};
pub use keys::{Keys, Registry};
pub use params::JobDataLimit;
pub use queue::{Placement, Queue, WorkerInfo};
pub use worker::{RecurringJob, Worker, WorkerSettings};
