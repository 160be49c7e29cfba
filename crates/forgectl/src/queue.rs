//! `forgectl queue …`: the job queues' operator verbs, through forge-rq's
//! operator API (python-rq's layout): `info`, `failed`, `requeue`, `empty`,
//! `suspend`, `resume`.

use std::io::Write;
use std::time::Duration;

use forge_rq::queue::{is_suspended, queue_names, resume, suspend, workers};
use forge_rq::{Keys, Queue, Registry};
use fred::prelude::Pool;

/// `info [QUEUE…]`: lengths and registries per queue, workers, suspension.
pub async fn info(
    pool: &Pool,
    keys: &Keys,
    queues: &[String],
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let names = if queues.is_empty() {
        queue_names(pool, keys).await?
    } else {
        queues.to_vec()
    };
    writeln!(
        out,
        "{:<20} {:>7} {:>7} {:>9} {:>8} {:>7} {:>8}",
        "QUEUE", "QUEUED", "STARTED", "SCHEDULED", "DEFERRED", "FAILED", "FINISHED"
    )?;
    for n in &names {
        let q = Queue::with_keys(pool.clone(), n, keys.clone());
        writeln!(
            out,
            "{:<20} {:>7} {:>7} {:>9} {:>8} {:>7} {:>8}",
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
    writeln!(out, "{} worker(s)", ws.len())?;
    for w in ws {
        let f = |k: &str| w.fields.get(k).cloned().unwrap_or_default();
        writeln!(
            out,
            "  {} host={} queues={} last_heartbeat={}",
            w.name,
            f("hostname"),
            f("queues"),
            f("last_heartbeat")
        )?;
    }
    if is_suspended(pool, keys).await? {
        writeln!(out, "workers are SUSPENDED (forgectl queue resume)")?;
    }
    Ok(())
}

/// `failed QUEUE`: failed jobs with their errors.
pub async fn failed(
    pool: &Pool,
    keys: &Keys,
    queue: &str,
    limit: usize,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
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
        writeln!(
            out,
            "{} {} ended {}",
            j.id,
            func,
            j.fields.get("ended_at").cloned().unwrap_or_default()
        )?;
        for line in j.exc_info().unwrap_or("(no error recorded)").lines() {
            writeln!(out, "    {line}")?;
        }
    }
    Ok(())
}

/// `requeue QUEUE [ID…]` (all failed jobs without ids).
pub async fn requeue(
    pool: &Pool,
    keys: &Keys,
    queue: &str,
    ids: &[String],
    out: &mut dyn Write,
) -> anyhow::Result<usize> {
    let q = Queue::with_keys(pool.clone(), queue, keys.clone());
    let n = if ids.is_empty() {
        q.requeue_all_failed().await?
    } else {
        q.requeue_failed(ids).await?
    };
    writeln!(out, "requeued {n} job(s) in {queue}")?;
    Ok(n)
}

/// `empty QUEUE`: drops every queued job.
pub async fn empty(
    pool: &Pool,
    keys: &Keys,
    queue: &str,
    out: &mut dyn Write,
) -> anyhow::Result<usize> {
    let n = Queue::with_keys(pool.clone(), queue, keys.clone())
        .empty()
        .await?;
    writeln!(out, "removed {n} job(s) from {queue}")?;
    Ok(n)
}

/// `suspend [--for SECS]`: workers stop claiming jobs.
pub async fn suspend_workers(
    pool: &Pool,
    keys: &Keys,
    ttl: Option<Duration>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    suspend(pool, keys, ttl).await?;
    match ttl {
        Some(t) => writeln!(out, "workers suspended for {} s", t.as_secs())?,
        None => writeln!(out, "workers suspended until `forgectl queue resume`")?,
    }
    Ok(())
}

/// `resume`.
pub async fn resume_workers(pool: &Pool, keys: &Keys, out: &mut dyn Write) -> anyhow::Result<()> {
    resume(pool, keys).await?;
    writeln!(out, "workers resumed")?;
    Ok(())
}
