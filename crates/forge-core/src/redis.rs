//! How every daemon connects to Redis: one settings section, one builder.
//!
//! A daemon points at either one Redis URL or a set of Sentinels (which name
//! the current master, so a failover needs no configuration change). fred has
//! no command timeout by default — a request would hang while Redis is down —
//! so every client built here gets one, plus a connection timeout and an
//! endless exponential reconnect policy. [`follow::MasterWatch`] moves a
//! daemon's connections to a new master the moment Sentinel announces it, and
//! lets write paths acknowledge only what the named master has.

pub mod follow;

pub use follow::{MasterWatch, MinReplicas, OnMasterError, ResolvedReplicas};

use std::time::Duration;

use fred::prelude::*;
use fred::types::config::{ReconnectPolicy, ServerConfig};
use serde::{Deserialize, Serialize};

/// The `[redis]` section of a daemon's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// A single server, `redis://host:port[/db]`. Ignored when `sentinels` is set.
    pub url: String,
    /// Sentinel addresses (`host:port`); when set, the master is the one they name.
    pub sentinels: Vec<String>,
    /// The Sentinel service (master) name.
    pub service_name: String,
    /// Per-command timeout, milliseconds.
    pub command_timeout_ms: u64,
    /// Connection timeout, milliseconds.
    pub connect_timeout_ms: u64,
    /// Connections in a pool, for daemons that use one.
    pub pool_size: usize,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            url: "redis://127.0.0.1:6379".into(),
            sentinels: Vec::new(),
            service_name: "forge".into(),
            command_timeout_ms: 2000,
            connect_timeout_ms: 2000,
            pool_size: 4,
        }
    }
}

/// Why a Redis client could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    /// The URL or a Sentinel address does not parse.
    #[error("invalid Redis address {addr:?}: {reason}")]
    BadAddress {
        /// The address as configured.
        addr: String,
        /// What is wrong.
        reason: String,
    },
    /// fred refused the configuration.
    #[error("Redis client: {0}")]
    Client(#[from] fred::error::Error),
}

impl RedisSettings {
    /// Settings for one server at `url` with default timeouts.
    pub fn for_url(url: &str) -> Self {
        RedisSettings {
            url: url.to_owned(),
            ..Default::default()
        }
    }

    /// The per-command timeout.
    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.command_timeout_ms.max(1))
    }

    /// What this points at, for logs and status (`redis://…` or
    /// `sentinel:<service>@a,b`), with any password redacted.
    pub fn describe(&self) -> String {
        if self.sentinels.is_empty() {
            crate::redact::redact(&self.url).into_owned()
        } else {
            format!(
                "sentinel:{}@{}",
                self.service_name,
                self.sentinels.join(",")
            )
        }
    }

    /// The fred configuration.
    pub fn fred_config(&self) -> Result<Config, RedisSetupError> {
        if !["redis://", "rediss://", "redis+unix://", "unix://"]
            .iter()
            .any(|s| self.url.starts_with(s))
        {
            return Err(RedisSetupError::BadAddress {
                addr: crate::redact::redact(&self.url).into_owned(),
                reason: "expected redis://host:port".into(),
            });
        }
        let mut config = Config::from_url(&self.url).map_err(|e| RedisSetupError::BadAddress {
            addr: crate::redact::redact(&self.url).into_owned(),
            reason: crate::redact::redact(e.details()).into_owned(),
        })?;
        if !self.sentinels.is_empty() {
            let mut hosts = Vec::new();
            for s in &self.sentinels {
                let (h, p) = s
                    .rsplit_once(':')
                    .ok_or_else(|| RedisSetupError::BadAddress {
                        addr: s.clone(),
                        reason: "expected host:port".into(),
                    })?;
                let port: u16 = p.parse().map_err(|_| RedisSetupError::BadAddress {
                    addr: s.clone(),
                    reason: "bad port".into(),
                })?;
                hosts.push(fred::types::config::Server::new(
                    h.trim_matches(['[', ']']),
                    port,
                ));
            }
            config.server = ServerConfig::Sentinel {
                hosts,
                service_name: self.service_name.clone(),
            };
        }
        Ok(config)
    }

    /// A fred builder with our timeouts and reconnect policy.
    pub fn builder(&self) -> Result<Builder, RedisSetupError> {
        let mut builder = Builder::from_config(self.fred_config()?);
        let command_timeout = self.command_timeout();
        let connect_timeout = Duration::from_millis(self.connect_timeout_ms.max(1));
        builder
            .with_performance_config(|p| {
                p.default_command_timeout = command_timeout;
            })
            .with_connection_config(|c| {
                c.connection_timeout = connect_timeout;
                c.internal_command_timeout = command_timeout;
                c.max_command_attempts = 1;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
        Ok(builder)
    }

    /// A single client (not yet connected: call `init()`).
    pub fn client(&self) -> Result<Client, RedisSetupError> {
        Ok(self.builder()?.build()?)
    }

    /// A pool of `pool_size` clients (not yet connected: call `init()`).
    pub fn pool(&self) -> Result<Pool, RedisSetupError> {
        Ok(self.builder()?.build_pool(self.pool_size.max(1))?)
    }
}

/// What one Redis connection says about replication (`ROLE`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MasterView {
    /// `master` or `replica` — the role of the server this client talks to.
    pub role: String,
    /// The master as `host:port`: the server itself when it is the master,
    /// else the master it replicates from.
    pub master: String,
    /// For a master, how many replicas are connected; for a replica, 1 when
    /// its link to the master is up, else 0.
    pub replicas_or_link: i64,
    /// The replication id (`master_replid` of `INFO replication`): the same
    /// on a master and every replica in sync with it, so it identifies the
    /// master even where its address is seen differently (a daemon talking
    /// to its local Redis through `127.0.0.1`). Empty if unknown.
    pub replid: String,
}

/// Asks the server behind `client` for its replication role (`ROLE`).
pub async fn master_view(client: &Client) -> Result<MasterView, fred::error::Error> {
    use fred::types::Value;
    let reply: Value = client
        .custom(fred::cmd!("ROLE"), Vec::<String>::new())
        .await?;
    let parts: Vec<Value> = reply.convert()?;
    let info: String = client
        .info(Some(fred::types::InfoKind::Replication))
        .await
        .unwrap_or_default();
    let replid = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("master_replid:"))
        .unwrap_or("")
        .to_owned();
    let text = |v: Option<&Value>| v.and_then(|v| v.as_string()).unwrap_or_default();
    let number = |v: Option<&Value>| v.and_then(|v| v.as_i64()).unwrap_or(0);
    match text(parts.first()).as_str() {
        "master" => {
            let me = client
                .active_connections()
                .first()
                .map(|s| format!("{}:{}", s.host, s.port))
                .unwrap_or_default();
            let replicas = match parts.get(2) {
                Some(Value::Array(a)) => a.len() as i64,
                _ => 0,
            };
            Ok(MasterView {
                role: "master".into(),
                master: me,
                replicas_or_link: replicas,
                replid,
            })
        }
        "slave" => Ok(MasterView {
            role: "replica".into(),
            master: format!("{}:{}", text(parts.get(1)), number(parts.get(2))),
            replicas_or_link: i64::from(text(parts.get(3)) == "connected"),
            replid,
        }),
        other => Err(fred::error::Error::new(
            fred::error::ErrorKind::Protocol,
            format!("ROLE answered {other:?}"),
        )),
    }
}

/// Keeps `board`'s `redis_role`, `redis_master`, `redis_replid` and
/// `redis_master_checked_at` (unix seconds of the last successful look)
/// status fields current: `ROLE`
/// through `client` every `every`, until shutdown. `forgectl status` compares
/// these fields across hosts. When Redis does not answer, `redis_role`
/// becomes `unreachable` and `redis_master` keeps the last value seen (its
/// `redis_master_checked_at` ages, which `forgectl status` flags).
///
/// The same view is exported for Prometheus, so an alert can compare hosts
/// without `forgectl`: `forge_redis_master{master="host:port"}` is 1 for the
/// master this process sees and 0 for one it saw before,
/// `forge_redis_master_checked_timestamp_seconds` the last successful look and
/// `forge_redis_reachable` 1 while `ROLE` answers. The Prometheus target
/// labels (`instance`, `job`) say which host and daemon is looking.
pub fn report_master(
    client: Client,
    board: std::sync::Arc<crate::admin::StatusBoard>,
    every: Duration,
    shutdown: crate::lifecycle::Shutdown,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The master last exported as `forge_redis_master{master} 1`.
        let mut seen: Option<String> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.triggered() => break,
            }
            match master_view(&client).await {
                Ok(view) => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    if seen.as_deref() != Some(view.master.as_str()) {
                        if let Some(old) = seen.take() {
                            metrics::gauge!("forge_redis_master", "master" => old).set(0.0);
                        }
                        metrics::gauge!("forge_redis_master", "master" => view.master.clone())
                            .set(1.0);
                        seen = Some(view.master.clone());
                    }
                    metrics::gauge!("forge_redis_master_checked_timestamp_seconds").set(now as f64);
                    metrics::gauge!("forge_redis_reachable").set(1.0);
                    board.set_field("redis_role", view.role.clone());
                    board.set_field("redis_master", view.master.clone());
                    board.set_field("redis_master_checked_at", now);
                    board.set_field("redis_replid", view.replid.clone());
                    if view.role == "master" {
                        board.set_field("redis_replicas", view.replicas_or_link);
                    } else {
                        board.set_field("redis_master_link_up", view.replicas_or_link == 1);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "ROLE failed");
                    board.set_field("redis_role", "unreachable");
                    metrics::gauge!("forge_redis_reachable").set(0.0);
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_and_url_configs() {
        let s = RedisSettings::for_url("redis://10.0.0.1:6380/2");
        assert!(matches!(
            s.fred_config().unwrap().server,
            ServerConfig::Centralized { .. }
        ));
        let s = RedisSettings {
            sentinels: vec!["127.0.0.1:26379".into(), "[::1]:26380".into()],
            ..Default::default()
        };
        assert!(matches!(
            s.fred_config().unwrap().server,
            ServerConfig::Sentinel { .. }
        ));
        assert!(s.describe().starts_with("sentinel:forge@"));
        let bad = RedisSettings {
            sentinels: vec!["nope".into()],
            ..Default::default()
        };
        assert!(bad.fred_config().is_err());
        assert!(RedisSettings::for_url("http://x").fred_config().is_err());
    }
}
