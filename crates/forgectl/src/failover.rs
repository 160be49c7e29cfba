//! `forgectl failover [--to HOST]`: a Sentinel failover, then waiting until
//! every daemon reports the new master.
//!
//! Steps:
//!
//! 1. Ask a Sentinel for the current master.
//! 2. With `--to`, make the chosen replica the only candidate: every other
//!    replica gets `replica-priority 0` (never promoted) for the duration —
//!    Sentinel has no "fail over to X" command, this is the documented way.
//! 3. `SENTINEL FAILOVER <service>`, then wait until the Sentinels name a new
//!    master.
//! 4. Restore the replicas' priorities (always, also after an error).
//! 5. Poll every configured daemon's `/status` until each reports the new
//!    master, reachable, looked at after the failover began; print the table.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fred::prelude::*;

use crate::config::Config;
use crate::redis::{agreed_master, any_sentinel, direct, raw, sentinel_replicas, sentinel_views};
use crate::status::{collect, render, unix_now};

/// What happened.
#[derive(Debug, Clone)]
pub struct FailoverOutcome {
    /// The master before.
    pub old_master: String,
    /// The master after.
    pub new_master: String,
    /// From `SENTINEL FAILOVER` until the Sentinels named the new master.
    pub promoted_after: Duration,
    /// From `SENTINEL FAILOVER` until every daemon reported it.
    pub converged_after: Duration,
}

/// Matches `--to` against a replica address: `ip:port` exactly, or a host
/// part naming exactly one replica.
pub fn pick_target<'a>(to: &str, replicas: &'a [(String, String)]) -> anyhow::Result<&'a str> {
    if let Some((a, _)) = replicas.iter().find(|(a, _)| a == to) {
        return Ok(a);
    }
    let by_host: Vec<&(String, String)> = replicas
        .iter()
        .filter(|(a, _)| a.rsplit_once(':').is_some_and(|(h, _)| h == to))
        .collect();
    match by_host.as_slice() {
        [(a, _)] => Ok(a),
        [] => bail!(
            "{to} is not a replica Sentinel knows (replicas: {})",
            replicas
                .iter()
                .map(|(a, _)| a.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => bail!("{to} names several replicas; give host:port"),
    }
}

/// Performs the failover and waits for every daemon; progress to `out`.
pub async fn failover(
    config: &Config,
    to: Option<&str>,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<FailoverOutcome> {
    let redis = &config.redis;
    let timeout = Duration::from_secs(config.failover.timeout_s.max(1));
    let poll = Duration::from_millis(config.failover.poll_ms.max(10));
    let (sentinel_addr, sentinel) = any_sentinel(redis).await?;
    let views = sentinel_views(redis).await?;
    let old_master = agreed_master(&views)?;
    writeln!(
        out,
        "current master {old_master} (sentinel {sentinel_addr}, service {})",
        redis.service_name
    )?;

    // --to: all other replicas become unpromotable for the duration.
    let mut restore: Vec<(String, String)> = Vec::new();
    if let Some(to) = to {
        let replicas = sentinel_replicas(&sentinel, &redis.service_name).await?;
        let target = pick_target(to, &replicas)?.to_owned();
        if let Some((_, flags)) = replicas.iter().find(|(a, _)| *a == target)
            && (flags.contains("down") || flags.contains("disconnected"))
        {
            bail!("replica {target} is {flags}; refusing to promote it");
        }
        for (addr, flags) in &replicas {
            if flags.contains("down") || flags.contains("disconnected") {
                continue;
            }
            let c = direct(redis, addr).await?;
            let cur: Vec<String> = raw(&c, "CONFIG", &["GET", "replica-priority"])
                .await?
                .convert()
                .context("CONFIG GET replica-priority")?;
            let cur = cur.get(1).cloned().unwrap_or_else(|| "100".into());
            let want = if *addr == target {
                if cur == "0" { "100" } else { cur.as_str() }
            } else {
                "0"
            };
            if want != cur {
                raw(&c, "CONFIG", &["SET", "replica-priority", want]).await?;
                restore.push((addr.clone(), cur.clone()));
            }
            let _ = c.quit().await;
        }
        writeln!(out, "promoting {target}")?;
    }

    let started = Instant::now();
    let started_unix = unix_now();
    let result = async {
        raw(&sentinel, "SENTINEL", &["FAILOVER", &redis.service_name])
            .await
            .context("SENTINEL FAILOVER")?;
        loop {
            if let Ok(views) = sentinel_views(redis).await
                && let Ok(m) = agreed_master(&views)
                && m != old_master
            {
                return Ok::<String, anyhow::Error>(m);
            }
            if started.elapsed() > timeout {
                bail!("the Sentinels still name {old_master} after {timeout:?}");
            }
            tokio::time::sleep(poll).await;
        }
    }
    .await;
    let promoted_after = started.elapsed();
    for (addr, prio) in &restore {
        match direct(redis, addr).await {
            Ok(c) => {
                if let Err(e) = raw(&c, "CONFIG", &["SET", "replica-priority", prio]).await {
                    writeln!(
                        out,
                        "WARNING: could not restore replica-priority {prio} on {addr}: {e}"
                    )?;
                }
                let _ = c.quit().await;
            }
            Err(e) => writeln!(
                out,
                "WARNING: could not restore replica-priority {prio} on {addr}: {e}"
            )?,
        }
    }
    let _ = sentinel.quit().await;
    let new_master = result?;
    writeln!(
        out,
        "sentinels name {new_master} after {} ms",
        promoted_after.as_millis()
    )?;
    if let Some(to) = to
        && !new_master.ends_with(to)
        && !new_master.starts_with(to)
    {
        writeln!(out, "WARNING: Sentinel promoted {new_master}, not {to}")?;
    }

    // Every daemon on the new master.
    loop {
        let report = collect(config).await;
        let converged = report.rows.iter().all(|r| {
            r.redis_master == new_master
                && r.redis_role != "unreachable"
                && r.checked_age_s
                    .is_some_and(|age| unix_now().saturating_sub(age) >= started_unix)
        });
        if converged && !report.rows.is_empty() {
            let converged_after = started.elapsed();
            render(&report, out)?;
            writeln!(
                out,
                "every daemon reports master {new_master} after {} ms",
                converged_after.as_millis()
            )?;
            return Ok(FailoverOutcome {
                old_master,
                new_master,
                promoted_after,
                converged_after,
            });
        }
        if started.elapsed() > timeout {
            render(&report, out)?;
            bail!("not every daemon reports the new master {new_master} after {timeout:?}");
        }
        tokio::time::sleep(poll).await;
    }
}
