//! Talking to Sentinels and to individual Redis servers directly (for the
//! failover), and connecting to the master (for the route and queue verbs).

use std::collections::BTreeMap;

use forge_core::redis::RedisSettings;
use fred::prelude::*;
use fred::types::Value;

/// Why a Redis step failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// No Sentinel is configured.
    #[error("no Sentinels configured ([redis] sentinels)")]
    NoSentinels,
    /// No Sentinel answered.
    #[error("no Sentinel answered: {0}")]
    NoSentinelAnswered(String),
    /// A command failed.
    #[error("{what}: {source}")]
    Command {
        /// What we were doing.
        what: String,
        /// The error.
        source: fred::error::Error,
    },
    /// The client could not be set up.
    #[error(transparent)]
    Setup(#[from] forge_core::redis::RedisSetupError),
}

fn cmd_err(what: impl Into<String>) -> impl FnOnce(fred::error::Error) -> RedisError {
    let what = what.into();
    move |source| RedisError::Command { what, source }
}

/// A connected client to one server at `addr` (`host:port`), with the
/// timeouts of `base`.
pub async fn direct(base: &RedisSettings, addr: &str) -> Result<Client, RedisError> {
    let settings = RedisSettings {
        url: format!("redis://{addr}"),
        sentinels: Vec::new(),
        ..base.clone()
    };
    let client = settings.builder()?.build().map_err(cmd_err("client"))?;
    client
        .init()
        .await
        .map_err(cmd_err(format!("connecting to {addr}")))?;
    Ok(client)
}

/// A connected client to the master (through Sentinel when configured).
pub async fn master(settings: &RedisSettings) -> Result<Client, RedisError> {
    let client = settings.client()?;
    client
        .init()
        .await
        .map_err(cmd_err(format!("connecting to {}", settings.describe())))?;
    Ok(client)
}

/// A connected pool to the master.
pub async fn master_pool(settings: &RedisSettings) -> Result<Pool, RedisError> {
    let pool = settings.pool()?;
    pool.init()
        .await
        .map_err(cmd_err(format!("connecting to {}", settings.describe())))?;
    Ok(pool)
}

/// Runs a raw command.
pub async fn raw(client: &Client, cmd: &'static str, args: &[&str]) -> Result<Value, RedisError> {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    client
        .custom(
            fred::types::CustomCommand::new_static(cmd, None, false),
            args.clone(),
        )
        .await
        .map_err(cmd_err(format!("{cmd} {}", args.join(" "))))
}

/// What one Sentinel says.
#[derive(Debug, Clone)]
pub struct SentinelView {
    /// The Sentinel's address.
    pub sentinel: String,
    /// The master it names (`ip:port`), or why it could not be asked.
    pub master: Result<String, String>,
}

/// Asks every configured Sentinel for the master's address.
pub async fn sentinel_views(settings: &RedisSettings) -> Result<Vec<SentinelView>, RedisError> {
    if settings.sentinels.is_empty() {
        return Err(RedisError::NoSentinels);
    }
    let mut out = Vec::new();
    for s in &settings.sentinels {
        let master = async {
            let c = direct(settings, s).await?;
            let v = raw(
                &c,
                "SENTINEL",
                &["GET-MASTER-ADDR-BY-NAME", &settings.service_name],
            )
            .await;
            let _ = c.quit().await;
            let parts: Vec<String> = v?.convert().map_err(cmd_err("SENTINEL reply"))?;
            match parts.as_slice() {
                [ip, port] => Ok(format!("{ip}:{port}")),
                _ => Err(RedisError::NoSentinelAnswered(format!(
                    "{s} does not know service {:?}",
                    settings.service_name
                ))),
            }
        }
        .await
        .map_err(|e: RedisError| e.to_string());
        out.push(SentinelView {
            sentinel: s.clone(),
            master,
        });
    }
    Ok(out)
}

/// The master most Sentinels name, or an error when none answered.
pub fn agreed_master(views: &[SentinelView]) -> Result<String, RedisError> {
    let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
    for v in views {
        if let Ok(m) = &v.master {
            *votes.entry(m.as_str()).or_default() += 1;
        }
    }
    votes
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(m, _)| m.to_owned())
        .ok_or_else(|| {
            RedisError::NoSentinelAnswered(
                views
                    .iter()
                    .filter_map(|v| {
                        v.master
                            .as_ref()
                            .err()
                            .map(|e| format!("{}: {e}", v.sentinel))
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })
}

/// The first Sentinel that answers, connected.
pub async fn any_sentinel(settings: &RedisSettings) -> Result<(String, Client), RedisError> {
    if settings.sentinels.is_empty() {
        return Err(RedisError::NoSentinels);
    }
    let mut errors = Vec::new();
    for s in &settings.sentinels {
        match direct(settings, s).await {
            Ok(c) => return Ok((s.clone(), c)),
            Err(e) => errors.push(format!("{s}: {e}")),
        }
    }
    Err(RedisError::NoSentinelAnswered(errors.join("; ")))
}

/// The replicas Sentinel knows for the service: `(ip:port, flags)`.
pub async fn sentinel_replicas(
    sentinel: &Client,
    service: &str,
) -> Result<Vec<(String, String)>, RedisError> {
    Ok(sentinel_replica_info(sentinel, service)
        .await?
        .into_iter()
        .map(|(a, m)| (a, m.get("flags").cloned().unwrap_or_default()))
        .collect())
}

/// Everything `SENTINEL REPLICAS` says about each replica, by `ip:port`
/// (`flags`, `slave-priority`, `master-link-status`, …).
pub async fn sentinel_replica_info(
    sentinel: &Client,
    service: &str,
) -> Result<Vec<(String, BTreeMap<String, String>)>, RedisError> {
    let v = raw(sentinel, "SENTINEL", &["REPLICAS", service]).await?;
    let entries: Vec<Value> = v.convert().map_err(cmd_err("SENTINEL REPLICAS reply"))?;
    let mut out = Vec::new();
    for e in entries {
        let map: BTreeMap<String, String> = match e {
            Value::Map(_) => e.convert().map_err(cmd_err("SENTINEL REPLICAS entry"))?,
            other => {
                let flat: Vec<String> = other
                    .convert()
                    .map_err(cmd_err("SENTINEL REPLICAS entry"))?;
                flat.chunks(2)
                    .filter(|c| c.len() == 2)
                    .map(|c| (c[0].clone(), c[1].clone()))
                    .collect()
            }
        };
        let ip = map.get("ip").cloned().unwrap_or_default();
        let port = map.get("port").cloned().unwrap_or_default();
        out.push((format!("{ip}:{port}"), map));
    }
    Ok(out)
}
