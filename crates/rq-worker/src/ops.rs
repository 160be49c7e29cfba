//! The operator verbs, mirroring python-rq's CLI: `info`, `failed`,
//! `requeue`, `empty`, `suspend`, `resume`. Each writes plain text to the
//! given writer (stdout in the binary) so tests can read it.

use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;
use forge_rq::queue::{is_suspended, queue_names, resume, suspend, workers};
use forge_rq::{Keys, Queue, Registry};
use fred::prelude::Pool;

/// `info [QUEUE...]`: queue lengths and registries, workers, suspension.
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
            "{} {} queues={} last_heartbeat={}",
            w.name,
            f("state"),
            f("queues"),
            f("last_heartbeat")
        )?;
    }
    if is_suspended(pool, keys).await? {
        writeln!(out, "\nworkers are SUSPENDED (rq-worker resume)")?;
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
    let jobs = q.failed_jobs(limit).await?;
    writeln!(
        out,
        "{} failed job(s) in {queue} (showing up to {limit})",
        q.registry_len(Registry::Failed).await?
    )?;
    for j in jobs {
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

/// `requeue QUEUE (--all | ID...)`.
pub async fn requeue(
    pool: &Pool,
    keys: &Keys,
    queue: &str,
    all: bool,
    ids: &[String],
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let q = Queue::with_keys(pool.clone(), queue, keys.clone());
    let n = if all {
        q.requeue_all_failed().await?
    } else {
        anyhow::ensure!(!ids.is_empty(), "give job ids or --all");
        q.requeue_failed(ids).await?
    };
    writeln!(out, "requeued {n} job(s) to {queue}")?;
    Ok(())
}

/// `empty QUEUE...`.
pub async fn empty(
    pool: &Pool,
    keys: &Keys,
    queues: &[String],
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    anyhow::ensure!(!queues.is_empty(), "name the queues to empty");
    for name in queues {
        let n = Queue::with_keys(pool.clone(), name, keys.clone())
            .empty()
            .await
            .with_context(|| format!("emptying {name}"))?;
        writeln!(out, "{n} job(s) removed from {name}")?;
    }
    Ok(())
}

/// `suspend [--duration S]`.
pub async fn suspend_workers(
    pool: &Pool,
    keys: &Keys,
    duration: Option<u64>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    suspend(pool, keys, duration.map(Duration::from_secs)).await?;
    match duration {
        Some(d) => writeln!(out, "workers suspended for {d} s")?,
        None => writeln!(out, "workers suspended (rq-worker resume to resume)")?,
    }
    Ok(())
}

/// `resume`.
pub async fn resume_workers(pool: &Pool, keys: &Keys, out: &mut dyn Write) -> anyhow::Result<()> {
    resume(pool, keys).await?;
    writeln!(out, "workers resumed")?;
    Ok(())
}
