//! The operator verbs as plain-text reports, shared by `rq-worker`'s
//! subcommands and `forgectl queue`: `info`, `failed`, `requeue`, `empty`,
//! `suspend`, `resume` — python-rq's CLI verbs over the same keys.
//!
//! Each writes to the given writer (stdout in the binaries) so tests can read
//! what an operator would see. `resume_hint` names the command that undoes a
//! suspension in the calling tool (`rq-worker resume`, `forgectl queue resume`).

use std::io::Write;
use std::time::Duration;

use fred::prelude::Pool;

use crate::queue::{is_suspended, queue_names, resume, suspend, workers};
use crate::{Keys, Queue, Registry, RqError};

/// Why a report could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Redis or the queue refused.
    #[error(transparent)]
    Queue(#[from] RqError),
    /// The output could not be written.
    #[error("writing the report: {0}")]
    Io(#[from] std::io::Error),
}

/// `info [QUEUE…]`: lengths and registries per queue (all known queues when
/// none are named), workers, suspension.
pub async fn info(
    pool: &Pool,
    keys: &Keys,
    queues: &[String],
    resume_hint: &str,
    out: &mut dyn Write,
) -> Result<(), ReportError> {
    let names = if queues.is_empty() {
        queue_names(pool, keys).await?
    } else {
        queues.to_vec()
    };
    writeln!(
        out,
        "{:<24} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8}",
        "QUEUE", "QUEUED", "STARTED", "SCHEDULED", "DEFERRED", "FAILED", "FINISHED"
    )?;
    for n in &names {
        let q = Queue::with_keys(pool.clone(), n, keys.clone());
        writeln!(
            out,
            "{:<24} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8}",
            n,
            q.len().await?,
            q.registry_len(Registry::Started).await?,
            q.registry_len(Registry::Scheduled).await?,
            q.registry_len(Registry::Deferred).await?,
            q.registry_len(Registry::Failed).await?,
            q.registry_len(Registry::Finished).await?,
        )?;
    }
    let ws = workers(pool, keys).await?;
    writeln!(out, "\n{} worker(s)", ws.len())?;
    for w in ws {
        let f = |k: &str| w.fields.get(k).cloned().unwrap_or_default();
        writeln!(
            out,
            "  {} {} host={} queues={} last_heartbeat={}",
            w.name,
            f("state"),
            f("hostname"),
            f("queues"),
            f("last_heartbeat")
        )?;
    }
    if is_suspended(pool, keys).await? {
        writeln!(out, "\nworkers are SUSPENDED ({resume_hint})")?;
    }
    Ok(())
}

/// `failed QUEUE`: up to `limit` failed jobs with their errors.
pub async fn failed(
    pool: &Pool,
    keys: &Keys,
    queue: &str,
    limit: usize,
    out: &mut dyn Write,
) -> Result<(), ReportError> {
    let q = Queue::with_keys(pool.clone(), queue, keys.clone());
    let total = q.registry_len(Registry::Failed).await?;
    writeln!(
        out,
        "{total} failed job(s) in {queue} (showing up to {limit})"
    )?;
    for j in q.failed_jobs(limit).await? {
        let func = j
            .call
            .as_ref()
            .map(|c| c.func_name.clone())
            .unwrap_or_else(|e| format!("<undecodable: {e}>"));
        let ended = j.fields.get("ended_at").cloned().unwrap_or_default();
        writeln!(out, "{} {} ended {}", j.id, func, ended)?;
        for line in j.exc_info().unwrap_or("(no error recorded)").lines() {
            writeln!(out, "    {line}")?;
        }
    }
    Ok(())
}

/// `requeue QUEUE [ID…]`: the named failed jobs, or all of them when `ids`
/// is empty, back onto their queue. Returns how many.
pub async fn requeue(
    pool: &Pool,
    keys: &Keys,
    queue: &str,
    ids: &[String],
    out: &mut dyn Write,
) -> Result<usize, ReportError> {
    let q = Queue::with_keys(pool.clone(), queue, keys.clone());
    let n = if ids.is_empty() {
        q.requeue_all_failed().await?
    } else {
        q.requeue_failed(ids).await?
    };
    writeln!(out, "requeued {n} job(s) in {queue}")?;
    Ok(n)
}

/// `empty QUEUE`: drops every queued job. Returns how many.
pub async fn empty(
    pool: &Pool,
    keys: &Keys,
    queue: &str,
    out: &mut dyn Write,
) -> Result<usize, ReportError> {
    let n = Queue::with_keys(pool.clone(), queue, keys.clone())
        .empty()
        .await?;
    writeln!(out, "removed {n} job(s) from {queue}")?;
    Ok(n)
}

/// `suspend [for]`: workers stop claiming jobs (for `ttl`, or until resumed).
pub async fn suspend_workers(
    pool: &Pool,
    keys: &Keys,
    ttl: Option<Duration>,
    resume_hint: &str,
    out: &mut dyn Write,
) -> Result<(), ReportError> {
    suspend(pool, keys, ttl).await?;
    match ttl {
        Some(t) => writeln!(out, "workers suspended for {} s", t.as_secs())?,
        None => writeln!(out, "workers suspended until resumed ({resume_hint})")?,
    }
    Ok(())
}

/// `resume`: workers claim jobs again.
pub async fn resume_workers(
    pool: &Pool,
    keys: &Keys,
    out: &mut dyn Write,
) -> Result<(), ReportError> {
    resume(pool, keys).await?;
    writeln!(out, "workers resumed")?;
    Ok(())
}
