//! `forgectl status`: every configured daemon's `/status`, one table, and
//! everything that disagrees or is stale flagged.
//!
//! Each daemon's `/status` (forge-core's `StatusBoard`) carries `daemon`,
//! `version`, `config_generation`, `health`, and — through
//! `forge_core::redis::report_master` — `redis_role`, `redis_master` and
//! `redis_master_checked_at`. A row is flagged when:
//!
//! * the endpoint does not answer (`unreachable`);
//! * its health is not `ok`;
//! * it sees no master, Redis is unreachable from it, or the master it sees
//!   is not the one the Sentinels name (or, without Sentinels, not the one
//!   most daemons see);
//! * its last successful look at Redis is older than `status.stale_after_s`;
//! * its version differs from the most common version;
//! * with `status.compare_generations`, its config generation differs from
//!   the most common one among daemons of the same kind.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde_json::Value;

use crate::config::Config;
use crate::redis::{SentinelView, agreed_master, sentinel_views};

/// One daemon's row.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The host name from the configuration.
    pub host: String,
    /// The admin base URL.
    pub url: String,
    /// The daemon (`dynamicproxy`, …), `?` when unreachable.
    pub daemon: String,
    /// Its version.
    pub version: String,
    /// Its config generation.
    pub generation: String,
    /// Its own role (`active`/`standby` for lease holders), `-` if none.
    pub role: String,
    /// The role of the Redis it talks to (`master`, `replica`, `unreachable`).
    pub redis_role: String,
    /// The master it sees.
    pub redis_master: String,
    /// The replication id of what it sees (`master_replid`).
    pub redis_replid: String,
    /// Whether it follows the expected master: same address, or the same
    /// replication id (a daemon reaching the master as `127.0.0.1`).
    pub on_expected_master: bool,
    /// Seconds since its last successful look at Redis.
    pub checked_age_s: Option<u64>,
    /// `ok`, `degraded`, `failing`, `unreachable`.
    pub health: String,
    /// What is wrong, empty when nothing.
    pub problems: Vec<String>,
}

/// The whole picture.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// One row per admin endpoint.
    pub rows: Vec<Row>,
    /// The master the Sentinels name (`None` without Sentinels or when none
    /// answered).
    pub sentinel_master: Option<String>,
    /// What each Sentinel said.
    pub sentinels: Vec<(String, String)>,
    /// The master rows are compared against.
    pub expected_master: Option<String>,
    /// Its replication id, when known.
    pub expected_replid: Option<String>,
    /// Problems not tied to a row (Sentinels disagreeing, …).
    pub cluster_problems: Vec<String>,
}

impl Report {
    /// How many problems in all.
    pub fn problem_count(&self) -> usize {
        self.cluster_problems.len() + self.rows.iter().map(|r| r.problems.len()).sum::<usize>()
    }

    /// Whether `master` is the expected master and every row follows it,
    /// reachable.
    pub fn all_on(&self, master: &str) -> bool {
        !self.rows.is_empty()
            && self.expected_master.as_deref() == Some(master)
            && self
                .rows
                .iter()
                .all(|r| r.on_expected_master && r.redis_role != "unreachable")
    }
}

/// Fetches `url/status`.
pub async fn fetch_status(url: &str, timeout: Duration) -> Result<Value, String> {
    let client: HttpClient<_, Empty<bytes::Bytes>> = HttpClient::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();
    let uri: hyper::Uri = format!("{url}/status")
        .parse()
        .map_err(|e| format!("bad URL: {e}"))?;
    let fetch = async {
        let resp = client.get(uri).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))
    };
    match tokio::time::timeout(timeout, fetch).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// Asks every endpoint (concurrently) and the Sentinels, and evaluates.
pub async fn collect(config: &Config) -> Report {
    let timeout = config.status_timeout();
    let fetches = config
        .endpoints()
        .into_iter()
        .map(|(host, url)| async move {
            let doc = fetch_status(&url, timeout).await;
            (host, url, doc)
        });
    let docs = futures_join_all(fetches).await;
    let views = if config.redis.sentinels.is_empty() {
        Vec::new()
    } else {
        sentinel_views(&config.redis).await.unwrap_or_default()
    };
    // The replication id of the master the Sentinels name, so a daemon that
    // reaches it under another address (127.0.0.1) is recognised.
    let replid = match agreed_master(&views) {
        Ok(m) => master_replid(config, &m).await,
        Err(_) => None,
    };
    evaluate(config, docs, &views, replid, unix_now())
}

/// `master_replid` of the server at `addr`.
async fn master_replid(config: &Config, addr: &str) -> Option<String> {
    let c = crate::redis::direct(&config.redis, addr).await.ok()?;
    let v = forge_core::redis::master_view(&c).await.ok();
    let _ = fred::prelude::ClientLike::quit(&c).await;
    v.map(|v| v.replid).filter(|r| !r.is_empty())
}

/// Runs futures concurrently, keeping order.
async fn futures_join_all<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn text(doc: &Value, key: &str) -> String {
    match doc.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

fn most_common<'a>(values: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for v in values.filter(|v| !v.is_empty()) {
        *counts.entry(v).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(v, _)| v.to_owned())
}

/// The value more entries have than any other (`None` on a tie).
fn majority<'a>(values: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    let top = counts.values().copied().max()?;
    let mut at_top = counts.into_iter().filter(|(_, n)| *n == top);
    match (at_top.next(), at_top.next()) {
        (Some((v, _)), None) => Some(v.to_owned()),
        _ => None,
    }
}

/// Builds the report from fetched documents and Sentinel views, as of `now`.
pub fn evaluate(
    config: &Config,
    docs: Vec<(String, String, Result<Value, String>)>,
    views: &[SentinelView],
    expected_replid: Option<String>,
    now: u64,
) -> Report {
    let mut cluster_problems = Vec::new();
    let sentinel_master = agreed_master(views).ok();
    let answered: Vec<&str> = views
        .iter()
        .filter_map(|v| v.master.as_ref().ok().map(String::as_str))
        .collect();
    if !config.redis.sentinels.is_empty() {
        if answered.is_empty() {
            cluster_problems.push("no Sentinel answered".to_owned());
        } else if answered
            .iter()
            .any(|m| Some(*m) != sentinel_master.as_deref())
        {
            cluster_problems.push("Sentinels disagree about the master".to_owned());
        }
        for v in views {
            if let Err(e) = &v.master {
                cluster_problems.push(format!("sentinel {}: {e}", v.sentinel));
            }
        }
    }
    let mut rows: Vec<Row> = docs
        .into_iter()
        .map(|(host, url, doc)| match doc {
            Ok(d) => Row {
                host,
                url,
                daemon: text(&d, "daemon"),
                version: text(&d, "version"),
                generation: text(&d, "config_generation"),
                role: Some(text(&d, "role"))
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| "-".into()),
                redis_role: text(&d, "redis_role"),
                redis_master: text(&d, "redis_master"),
                redis_replid: text(&d, "redis_replid"),
                on_expected_master: false,
                checked_age_s: d
                    .get("redis_master_checked_at")
                    .and_then(Value::as_u64)
                    .map(|t| now.saturating_sub(t)),
                health: text(&d, "health"),
                problems: Vec::new(),
            },
            Err(e) => Row {
                host,
                url,
                daemon: "?".into(),
                version: String::new(),
                generation: String::new(),
                role: "-".into(),
                redis_role: String::new(),
                redis_master: String::new(),
                redis_replid: String::new(),
                on_expected_master: false,
                checked_age_s: None,
                health: "unreachable".into(),
                problems: vec![format!("unreachable: {e}")],
            },
        })
        .collect();
    let reachable = |r: &&Row| r.health != "unreachable";
    let expected_master = sentinel_master.clone().or_else(|| {
        majority(
            rows.iter()
                .filter(reachable)
                .map(|r| r.redis_master.as_str())
                .filter(|m| !m.is_empty()),
        )
    });
    if expected_master.is_none() {
        let mut seen: Vec<&str> = rows
            .iter()
            .filter(reachable)
            .map(|r| r.redis_master.as_str())
            .filter(|m| !m.is_empty())
            .collect();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() > 1 {
            cluster_problems.push(format!(
                "daemons see different masters ({}) and no Sentinel says which is right",
                seen.join(", ")
            ));
        }
    }
    let expected_replid = expected_replid.or_else(|| {
        let m = expected_master.as_deref()?;
        rows.iter()
            .find(|r| r.redis_master == m && !r.redis_replid.is_empty())
            .map(|r| r.redis_replid.clone())
    });
    for r in rows.iter_mut() {
        r.on_expected_master = !r.redis_master.is_empty()
            && (expected_master.as_deref() == Some(r.redis_master.as_str())
                || (!r.redis_replid.is_empty()
                    && expected_replid.as_deref() == Some(r.redis_replid.as_str())));
    }
    let version = most_common(rows.iter().filter(reachable).map(|r| r.version.as_str()));
    // Per daemon kind: the generation most hosts run (None on a tie), and
    // all the generations seen.
    let mut generations: BTreeMap<String, (Option<String>, Vec<String>)> = BTreeMap::new();
    for kind in rows.iter().filter(reachable).map(|r| r.daemon.clone()) {
        let of_kind = || {
            rows.iter()
                .filter(|r| r.daemon == kind)
                .map(|r| r.generation.as_str())
        };
        let mut seen: Vec<String> = of_kind().map(str::to_owned).collect();
        seen.sort();
        seen.dedup();
        generations.insert(kind.clone(), (majority(of_kind()), seen));
    }
    let stale_after = config.status.stale_after_s;
    for r in rows.iter_mut().filter(|r| r.health != "unreachable") {
        if r.health != "ok" {
            r.problems.push(format!("health {}", r.health));
        }
        if r.redis_master.is_empty() {
            r.problems
                .push("reports no Redis master (too old to have redis_master?)".into());
        } else if let Some(m) = &expected_master
            && !r.on_expected_master
        {
            r.problems
                .push(format!("sees master {} not {m}", r.redis_master));
        }
        if r.redis_role == "unreachable" {
            r.problems.push("cannot reach Redis".into());
        }
        match r.checked_age_s {
            Some(age) if age > stale_after => r
                .problems
                .push(format!("stale: last looked at Redis {age}s ago")),
            _ => {}
        }
        if let Some(v) = &version
            && &r.version != v
        {
            r.problems
                .push(format!("version {} (others {v})", r.version));
        }
        if config.status.compare_generations
            && let Some((most, seen)) = generations.get(&r.daemon)
            && seen.len() > 1
            && most.as_ref() != Some(&r.generation)
        {
            let others: Vec<&str> = seen
                .iter()
                .filter(|g| **g != r.generation)
                .map(|g| short(g))
                .collect();
            r.problems.push(format!(
                "config generation {} differs from other {} hosts ({})",
                short(&r.generation),
                r.daemon,
                others.join(", ")
            ));
        }
    }
    Report {
        rows,
        sentinels: views
            .iter()
            .map(|v| {
                (
                    v.sentinel.clone(),
                    v.master.clone().unwrap_or_else(|e| format!("error: {e}")),
                )
            })
            .collect(),
        sentinel_master,
        expected_master,
        expected_replid,
        cluster_problems,
    }
}

fn short(g: &str) -> &str {
    g.get(..12).unwrap_or(g)
}

/// Prints the table.
pub fn render(report: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<14} {:<18} {:<8} {:<12} {:<8} {:<11} {:<21} {:>7} {:<11} PROBLEMS",
        "HOST",
        "DAEMON",
        "VERSION",
        "GENERATION",
        "ROLE",
        "REDIS-ROLE",
        "REDIS-MASTER",
        "CHECKED",
        "HEALTH"
    )?;
    for r in &report.rows {
        writeln!(
            out,
            "{:<14} {:<18} {:<8} {:<12} {:<8} {:<11} {:<21} {:>7} {:<11} {}",
            r.host,
            r.daemon,
            r.version,
            short(&r.generation),
            r.role,
            r.redis_role,
            r.redis_master,
            r.checked_age_s
                .map(|a| format!("{a}s"))
                .unwrap_or_else(|| "-".into()),
            r.health,
            if r.problems.is_empty() {
                "-".to_owned()
            } else {
                r.problems.join("; ")
            }
        )?;
    }
    writeln!(out)?;
    for (s, m) in &report.sentinels {
        writeln!(out, "sentinel {s}: master {m}")?;
    }
    for p in &report.cluster_problems {
        writeln!(out, "PROBLEM: {p}")?;
    }
    match report.problem_count() {
        0 => writeln!(
            out,
            "all {} daemon(s) agree: master {}",
            report.rows.len(),
            report.expected_master.as_deref().unwrap_or("?")
        )?,
        n => writeln!(out, "{n} problem(s)")?,
    }
    Ok(())
}
