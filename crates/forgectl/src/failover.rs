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
use crate::redis::{
    agreed_master, any_sentinel, direct, raw, sentinel_replica_info, sentinel_replicas,
    sentinel_views,
};
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

/// Waits until every replica in `replicas` has applied everything the (write-
/// paused) master `old` has (`master_repl_offset`); returns them.
async fn catch_up(
    redis: &forge_core::redis::RedisSettings,
    old: &Client,
    replicas: &[String],
    within: Duration,
) -> anyhow::Result<Vec<String>> {
    let info: String = old.info(Some(fred::types::InfoKind::Replication)).await?;
    let target = info_field(&info, "master_repl_offset").unwrap_or(0);
    let deadline = Instant::now() + within;
    for r in replicas {
        let c = direct(redis, r).await?;
        loop {
            let info: String = c.info(Some(fred::types::InfoKind::Replication)).await?;
            let at = info_field(&info, "slave_repl_offset").unwrap_or(0);
            if at >= target {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "replica {r} is at offset {at}, the master at {target}, after {within:?}; not failing over"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = c.quit().await;
    }
    Ok(replicas.to_vec())
}

/// A numeric field of `INFO` output.
fn info_field(info: &str, name: &str) -> Option<i64> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// Puts the replicas' `replica-priority` back as it was.
async fn restore_priorities(
    redis: &forge_core::redis::RedisSettings,
    restore: &[(String, String)],
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    for (addr, prio) in restore {
        let done = async {
            let c = direct(redis, addr).await?;
            raw(&c, "CONFIG", &["SET", "replica-priority", prio]).await?;
            let _ = c.quit().await;
            Ok::<(), crate::redis::RedisError>(())
        }
        .await;
        if let Err(e) = done {
            writeln!(
                out,
                "WARNING: could not restore replica-priority {prio} on {addr}: {e}"
            )?;
        }
    }
    Ok(())
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
    let mut restore_target: Option<String> = None;
    if let Some(to) = to {
        let replicas = sentinel_replicas(&sentinel, &redis.service_name).await?;
        let target = pick_target(to, &replicas)?.to_owned();
        if let Some((_, flags)) = replicas.iter().find(|(a, _)| *a == target)
            && (flags.contains("down") || flags.contains("disconnected"))
        {
            bail!("replica {target} is {flags}; refusing to promote it");
        }
        let prepared = async {
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
            // Sentinel reads priorities from the replicas' INFO, every 10 s:
            // wait until the Sentinel that will run the failover has seen ours.
            writeln!(
                out,
                "waiting for Sentinel to see the replica priorities (up to 10 s)"
            )?;
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let seen = sentinel_replica_info(&sentinel, &redis.service_name).await?;
                let ready = seen.iter().all(|(addr, m)| {
                    let prio = m.get("slave-priority").map(String::as_str).unwrap_or("");
                    let down = m
                        .get("flags")
                        .is_some_and(|f| f.contains("down") || f.contains("disconnected"));
                    down || (*addr == target) == (prio != "0")
                });
                if ready {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "Sentinel {sentinel_addr} did not pick up the replica priorities within 15 s"
                    );
                }
                tokio::time::sleep(poll.min(Duration::from_millis(500))).await;
            }
            Ok::<(), anyhow::Error>(())
        }
        .await;
        if let Err(e) = prepared {
            restore_priorities(redis, &restore, out).await?;
            return Err(e);
        }
        writeln!(out, "promoting {target}")?;
        restore_target = Some(target);
    }

    let started = Instant::now();
    let started_unix = unix_now();
    // Writes on the old master are paused for the switch (they wait, then
    // fail with READONLY once it is a replica) so nothing lands on it after
    // the promotion, and the replicas catch up with it before Sentinel picks
    // one: an acknowledged write cannot be left behind.
    // An unreachable old master (the reason for the failover, perhaps) can't
    // be paused or demoted: Sentinel alone then decides.
    let old = match direct(redis, &old_master).await {
        Ok(c) => Some(c),
        Err(e) => {
            writeln!(
                out,
                "WARNING: the old master does not answer ({e}); failing over without pausing its writes"
            )?;
            None
        }
    };
    let pause_ms = (timeout.as_millis() as u64).clamp(1000, 15_000);
    let result = async {
        if let Some(old) = &old {
            raw(old, "CLIENT", &["PAUSE", &pause_ms.to_string(), "WRITE"])
                .await
                .context("pausing writes on the old master")?;
            let candidates: Vec<String> = match to {
                Some(_) => restore_target.iter().cloned().collect(),
                None => sentinel_replicas(&sentinel, &redis.service_name)
                    .await?
                    .into_iter()
                    .filter(|(_, f)| !f.contains("down") && !f.contains("disconnected"))
                    .map(|(a, _)| a)
                    .collect(),
            };
            let caught_up = catch_up(redis, old, &candidates, Duration::from_secs(5)).await?;
            writeln!(
                out,
                "replicas caught up with the old master: {}",
                caught_up.join(", ")
            )?;
        }
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
    // Demote the old master at once (Sentinel would only do it seconds
    // later), drop its clients so they ask Sentinel again, end the pause.
    if let Some(old) = &old {
        if let Ok(new_master) = &result
            && let Some((ip, port)) = new_master.rsplit_once(':')
            && let Err(e) = raw(old, "REPLICAOF", &[ip, port]).await
        {
            writeln!(
                out,
                "WARNING: could not make {old_master} a replica of {new_master}: {e}"
            )?;
        }
        let _ = raw(old, "CLIENT", &["UNPAUSE"]).await;
        if result.is_ok() {
            let _ = raw(old, "CLIENT", &["KILL", "TYPE", "normal", "SKIPME", "yes"]).await;
            let _ = raw(old, "CLIENT", &["KILL", "TYPE", "pubsub", "SKIPME", "yes"]).await;
        }
        let _ = old.quit().await;
    }
    let promoted_after = started.elapsed();
    restore_priorities(redis, &restore, out).await?;
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
    let mut last_waiting = String::new();
    loop {
        let report = collect(config).await;
        let on_new = report.expected_master.as_deref() == Some(new_master.as_str());
        let waiting: Vec<String> = report
            .rows
            .iter()
            .filter(|r| !on_new || !r.on_expected_master || r.redis_role == "unreachable")
            .map(|r| {
                format!(
                    "{}/{} ({} {})",
                    r.host, r.daemon, r.redis_role, r.redis_master
                )
            })
            .collect();
        let waiting = waiting.join(", ");
        if !waiting.is_empty() && waiting != last_waiting {
            writeln!(
                out,
                "{} ms: waiting for {waiting}",
                started.elapsed().as_millis()
            )?;
            last_waiting = waiting;
        }
        let converged = on_new
            && report.rows.iter().all(|r| {
                r.on_expected_master
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_matched_by_address_or_unique_host() {
        let r = vec![
            ("10.0.0.1:6379".to_owned(), "slave".to_owned()),
            ("10.0.0.2:6379".to_owned(), "slave".to_owned()),
            ("10.0.0.2:6380".to_owned(), "slave".to_owned()),
        ];
        assert_eq!(pick_target("10.0.0.1:6379", &r).unwrap(), "10.0.0.1:6379");
        assert_eq!(pick_target("10.0.0.1", &r).unwrap(), "10.0.0.1:6379");
        assert!(
            pick_target("10.0.0.2", &r)
                .unwrap_err()
                .to_string()
                .contains("several")
        );
        assert!(
            pick_target("10.0.0.9", &r)
                .unwrap_err()
                .to_string()
                .contains("not a replica")
        );
    }

    #[test]
    fn info_fields_are_read() {
        let info =
            "# Replication\r\nrole:slave\r\nslave_repl_offset:1234\r\nmaster_repl_offset:99\r\n";
        assert_eq!(info_field(info, "slave_repl_offset"), Some(1234));
        assert_eq!(info_field(info, "master_repl_offset"), Some(99));
        assert_eq!(info_field(info, "nope"), None);
    }
}
