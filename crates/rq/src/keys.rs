//! The Redis key layout: python-rq's (so `rq info`, `Job.fetch` and the RQ
//! dashboard see our queues) plus a few `forge:rq:` keys for the reliability
//! python-rq lacks.
//!
//! | key | type | what |
//! |-----|------|------|
//! | `rq:queues` | SET | every queue key (`rq:queue:<q>`) |
//! | `rq:queue:<q>` | LIST | queued job ids, head = next |
//! | `rq:job:<id>` | HASH | the job (python-rq's fields) |
//! | `rq:results:<id>` | STREAM | results (python-rq ≥ 1.12 `Result`) |
//! | `rq:job:<id>:dependents` | SET | jobs waiting for this one |
//! | `rq:wip:<q>` | ZSET | started: `<id>:<execution>` → expiry |
//! | `rq:finished:<q>`, `rq:failed:<q>` | ZSET | id → expiry |
//! | `rq:scheduled:<q>` | ZSET | id → run-at (unix seconds) |
//! | `rq:deferred:<q>`, `rq:canceled:<q>` | ZSET | id → expiry / +inf |
//! | `rq:workers`, `rq:workers:<q>` | SET | worker keys |
//! | `rq:worker:<name>` | HASH | worker (birth, last_heartbeat, queues, …) |
//! | `rq:suspended` | STRING | present = workers suspended |
//! | `forge:rq:inflight:<worker>` | HASH | job id → `<q>\t<id>:<execution>`: what a worker holds |
//! | `forge:rq:alive:<worker>` | STRING+TTL | the worker's liveness lease |
//! | `forge:rq:inflight-workers` | SET | worker names that may hold jobs |
//! | `forge:rq:cron:<name>` | STRING+TTL | the last slot a recurring job was enqueued for |
//!
//! The `rq` prefix is configurable (python-rq's `RQ_KEY_PREFIX`); the Lua
//! scripts in [`crate::scripts`] build the same spellings from it.

/// The key prefix python-rq uses by default.
pub const DEFAULT_PREFIX: &str = "rq";

/// Our own keys' prefix.
pub const FORGE_PREFIX: &str = "forge:rq";

/// Spells the keys for one key prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// `rq` unless python-rq's `RQ_KEY_PREFIX` is changed.
    pub prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Keys {
            prefix: DEFAULT_PREFIX.into(),
        }
    }
}

impl Keys {
    /// Keys under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }
    /// `rq:queues`.
    pub fn queues(&self) -> String {
        format!("{}:queues", self.prefix)
    }
    /// `rq:queue:<q>`.
    pub fn queue(&self, q: &str) -> String {
        format!("{}:queue:{q}", self.prefix)
    }
    /// `rq:job:<id>`.
    pub fn job(&self, id: &str) -> String {
        format!("{}:job:{id}", self.prefix)
    }
    /// `rq:results:<id>`.
    pub fn results(&self, id: &str) -> String {
        format!("{}:results:{id}", self.prefix)
    }
    /// `rq:<registry>:<q>` for `wip`, `finished`, `failed`, `scheduled`, `deferred`, `canceled`.
    pub fn registry(&self, registry: Registry, q: &str) -> String {
        format!("{}:{}:{q}", self.prefix, registry.as_str())
    }
    /// `rq:workers`.
    pub fn workers(&self) -> String {
        format!("{}:workers", self.prefix)
    }
    /// `rq:workers:<q>`.
    pub fn workers_of(&self, q: &str) -> String {
        format!("{}:workers:{q}", self.prefix)
    }
    /// `rq:worker:<name>`.
    pub fn worker(&self, name: &str) -> String {
        format!("{}:worker:{name}", self.prefix)
    }
    /// `rq:suspended`.
    pub fn suspended(&self) -> String {
        format!("{}:suspended", self.prefix)
    }
    /// `forge:rq:inflight:<worker>`.
    pub fn inflight(worker: &str) -> String {
        format!("{FORGE_PREFIX}:inflight:{worker}")
    }
    /// `forge:rq:alive:<worker>`.
    pub fn alive(worker: &str) -> String {
        format!("{FORGE_PREFIX}:alive:{worker}")
    }
    /// `forge:rq:inflight-workers`.
    pub fn inflight_workers() -> String {
        format!("{FORGE_PREFIX}:inflight-workers")
    }
    /// `forge:rq:cron:<name>`.
    pub fn cron(name: &str) -> String {
        format!("{FORGE_PREFIX}:cron:{name}")
    }
}

/// python-rq's job registries (sorted sets per queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registry {
    /// `StartedJobRegistry` (`rq:wip:<q>`).
    Started,
    /// `FinishedJobRegistry`.
    Finished,
    /// `FailedJobRegistry`.
    Failed,
    /// `ScheduledJobRegistry`.
    Scheduled,
    /// `DeferredJobRegistry`.
    Deferred,
    /// `CanceledJobRegistry`.
    Canceled,
}

impl Registry {
    /// The middle part of the key.
    pub fn as_str(self) -> &'static str {
        match self {
            Registry::Started => "wip",
            Registry::Finished => "finished",
            Registry::Failed => "failed",
            Registry::Scheduled => "scheduled",
            Registry::Deferred => "deferred",
            Registry::Canceled => "canceled",
        }
    }
}

/// Checks a queue name (python-rq accepts anything; we refuse what would
/// break our key spelling or the tab-separated in-flight entries).
pub fn validate_queue_name(name: &str) -> Result<(), crate::RqError> {
    if name.is_empty()
        || name.len() > 200
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(crate::RqError::Invalid {
            what: "queue name",
            reason: format!("{name:?}: must be 1-200 characters without whitespace"),
        });
    }
    Ok(())
}

/// Checks a job id (no `:` — python-rq's started registry splits on it).
pub fn validate_job_id(id: &str) -> Result<(), crate::RqError> {
    if id.is_empty()
        || id.len() > 200
        || id.contains(':')
        || id.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(crate::RqError::Invalid {
            what: "job id",
            reason: format!("{id:?}: must be 1-200 characters without ':' or whitespace"),
        });
    }
    Ok(())
}
