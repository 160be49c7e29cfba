//! forgectl's configuration: which hosts run which daemons (their admin
//! URLs), and where Redis is (Sentinels) for the failover, route and queue
//! verbs.
//!
//! ```toml
//! # /etc/forge/forgectl.toml
//! [[hosts]]
//! name = "proxy-01"
//! admin = ["http://proxy-01:8081", "http://proxy-01:9282"]
//!
//! [[hosts]]
//! name = "proxy-02"
//! admin = ["http://proxy-02:8081", "http://proxy-02:9282"]
//!
//! [redis]
//! sentinels = ["proxy-01:26379", "proxy-02:26379", "idm-01:26379"]
//! service_name = "forge"
//! ```
//!
//! Loaded through [`forge_core::ConfigSource`] (environment overrides
//! `FORGECTL_…`, file:line errors). Every key is in `docs/forgectl.md`.

use std::time::Duration;

use forge_core::config::{ConfigError, ConfigSource, Loaded};
use forge_core::redis::RedisSettings;
use serde::{Deserialize, Serialize};

/// Prefix of environment overrides (`FORGECTL_REDIS__SERVICE_NAME=forge`).
pub const ENV_PREFIX: &str = "FORGECTL";

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The hosts and their daemons' admin endpoints.
    pub hosts: Vec<Host>,
    /// Where Redis is: Sentinels (or one URL) — used by `failover`, `routes`,
    /// `queue`, and by `status` to learn the master Sentinel names.
    pub redis: RedisSettings,
    /// How `status` decides what is wrong.
    pub status: StatusSettings,
    /// How `failover` waits.
    pub failover: FailoverSettings,
    /// Queue key prefix (python-rq's default `rq`).
    pub queue_prefix: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hosts: Vec::new(),
            redis: RedisSettings::default(),
            status: StatusSettings::default(),
            failover: FailoverSettings::default(),
            queue_prefix: "rq".into(),
        }
    }
}

/// One host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Host {
    /// The host's name, as printed.
    pub name: String,
    /// Base URLs of the admin endpoints of its daemons
    /// (`http://host:8081`); `/status` is appended.
    pub admin: Vec<String>,
}

/// The `[status]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatusSettings {
    /// How long one `/status` request may take, ms.
    pub timeout_ms: u64,
    /// A daemon whose last successful look at Redis (`redis_master_checked_at`)
    /// is older than this is flagged `stale`, seconds.
    pub stale_after_s: u64,
    /// Flag daemons of the same kind running different config generations.
    /// Hosts of one role get the same rendered configuration from Puppet, so
    /// a difference means a host missed a change (or a reload).
    pub compare_generations: bool,
}

impl Default for StatusSettings {
    fn default() -> Self {
        StatusSettings {
            timeout_ms: 2000,
            stale_after_s: 30,
            compare_generations: true,
        }
    }
}

/// The `[failover]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FailoverSettings {
    /// How long to wait for Sentinel to promote a replica and for every
    /// daemon to report the new master, seconds.
    pub timeout_s: u64,
    /// How often daemons are polled while waiting, ms.
    pub poll_ms: u64,
}

impl Default for FailoverSettings {
    fn default() -> Self {
        FailoverSettings {
            timeout_s: 60,
            poll_ms: 500,
        }
    }
}

impl Config {
    /// Loads and validates the configuration.
    pub fn load(source: &ConfigSource) -> Result<Loaded<Config>, ConfigError> {
        let loaded: Loaded<Config> = source.load()?;
        loaded.config.validate(&loaded)?;
        Ok(loaded)
    }

    /// Semantic checks; errors name file:line.
    pub fn validate(&self, loaded: &Loaded<Config>) -> Result<(), ConfigError> {
        for (i, h) in self.hosts.iter().enumerate() {
            if h.name.trim().is_empty() {
                return Err(loaded.invalid("hosts", format!("host {i} has no name")));
            }
            for a in &h.admin {
                if !(a.starts_with("http://")) || a.parse::<hyper::Uri>().is_err() {
                    return Err(loaded.invalid(
                        "hosts",
                        format!("host {:?}: admin URL {a:?} is not http://host:port", h.name),
                    ));
                }
            }
        }
        if let Err(e) = self.redis.fred_config() {
            return Err(loaded.invalid("redis.url", e));
        }
        Ok(())
    }

    /// Every admin endpoint as `(host name, base URL)`.
    pub fn endpoints(&self) -> Vec<(String, String)> {
        self.hosts
            .iter()
            .flat_map(|h| {
                h.admin
                    .iter()
                    .map(move |a| (h.name.clone(), a.trim_end_matches('/').to_owned()))
            })
            .collect()
    }

    /// The `/status` request timeout.
    pub fn status_timeout(&self) -> Duration {
        Duration::from_millis(self.status.timeout_ms.max(1))
    }
}
