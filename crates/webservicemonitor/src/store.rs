//! The monitor's state in Redis, so it survives a restart of the monitor and
//! is shared between monitors on two hosts.
//!
//! Keys (all spelled by `forge_core::schema::RedisKey`, documented in
//! `docs/redis-schema.md`):
//!
//! * `forge:lease:<name>` — which monitor is active ([`Store::acquire_lease`],
//!   through `forge_core::lease`);
//! * `forge:monitor:restarts:<tool>` — ZSET of restart attempt times, the
//!   persistent throttle ([`Store::throttle`]);
//! * `forge:monitor:unhealthy:<tool>` — consecutive failed health probes;
//! * `prefix:<tool>` — read for the backends to probe; a stale route is
//!   removed compare-and-delete ([`Store::remove_route_if`], through
//!   `forge_core::routes` like every route write) so a registration made
//!   meanwhile by a fresh job survives; its `redirect:` entry goes with it.
//!
//! Every multi-step change is one Lua script, so it is atomic.

use std::collections::BTreeMap;
use std::time::Duration;

use forge_core::lease::Lease;
use forge_core::routes::{self, Deletion, RouteError};
use forge_core::{RedisKey, ToolName};
use fred::prelude::*;

/// The throttle: ARGV = now ms, window ms, max, record (1/0), member.
/// Returns {allowed (1/0), attempts in window (after recording)}. Without
/// `record` it only reads (for dry runs).
const THROTTLE_SCRIPT: &str = r#"
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local n
if ARGV[4] == '1' then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  n = redis.call('ZCARD', KEYS[1])
else
  n = redis.call('ZCOUNT', KEYS[1], '(' .. (now - window), '+inf')
end
if n >= tonumber(ARGV[3]) then
  return {0, n}
end
if ARGV[4] == '1' then
  redis.call('ZADD', KEYS[1], now, ARGV[5])
  redis.call('PEXPIRE', KEYS[1], window)
  n = n + 1
end
return {1, n}
"#;

/// Count a failed probe: ARGV = ttl ms. Returns the new count.
const UNHEALTHY_SCRIPT: &str = r#"
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return n
"#;

/// What the throttle said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleVerdict {
    /// The restart may go ahead; `attempts` in the window including this one.
    Allowed {
        /// Attempts in the window.
        attempts: u32,
    },
    /// Too many attempts in the window.
    Throttled {
        /// Attempts in the window.
        attempts: u32,
    },
}

/// The monitor's Redis state.
#[derive(Clone)]
pub struct Store {
    redis: Client,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Wraps a connected client (built with `forge_core::redis::RedisSettings`).
    pub fn new(redis: Client) -> Self {
        Store { redis }
    }

    /// Takes the lease `name` for `holder`, or renews it. True when held.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: u64,
    ) -> Result<bool, Error> {
        Lease::new(name, holder, Duration::from_millis(ttl_ms))
            .try_acquire(&self.redis)
            .await
    }

    /// Gives the lease up if `holder` has it.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), Error> {
        Lease::new(name, holder, Duration::ZERO)
            .release(&self.redis)
            .await
            .map(drop)
    }

    /// Who holds the lease.
    pub async fn lease_holder(&self, name: &str) -> Result<Option<String>, Error> {
        Lease::holder_of(&self.redis, name).await
    }

    /// Checks the throttle for `tool` and, when `record`, counts an attempt.
    pub async fn throttle(
        &self,
        tool: &ToolName,
        now_ms: u64,
        max: u32,
        window_ms: u64,
        record: bool,
    ) -> Result<ThrottleVerdict, Error> {
        let key = RedisKey::MonitorRestarts(tool.clone()).to_key();
        let member = format!("{now_ms}-{:08x}", rand::random::<u32>());
        let (allowed, n): (i64, i64) = self
            .redis
            .eval(
                THROTTLE_SCRIPT,
                vec![key],
                vec![
                    now_ms.to_string(),
                    window_ms.to_string(),
                    max.to_string(),
                    if record { "1" } else { "0" }.to_owned(),
                    member,
                ],
            )
            .await?;
        let attempts = u32::try_from(n).unwrap_or(u32::MAX);
        Ok(if allowed == 1 {
            ThrottleVerdict::Allowed { attempts }
        } else {
            ThrottleVerdict::Throttled { attempts }
        })
    }

    /// Counts a failed probe; returns the consecutive count.
    pub async fn unhealthy_incr(&self, tool: &ToolName, ttl_ms: u64) -> Result<u32, Error> {
        let key = RedisKey::MonitorUnhealthy(tool.clone()).to_key();
        let n: i64 = self
            .redis
            .eval(UNHEALTHY_SCRIPT, vec![key], vec![ttl_ms.to_string()])
            .await?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// The consecutive failed probes counted so far.
    pub async fn unhealthy_count(&self, tool: &ToolName) -> Result<u32, Error> {
        let n: Option<i64> = self
            .redis
            .get(RedisKey::MonitorUnhealthy(tool.clone()).to_key())
            .await?;
        Ok(n.and_then(|n| u32::try_from(n).ok()).unwrap_or(0))
    }

    /// Forgets failed probes (the backend answered).
    pub async fn unhealthy_clear(&self, tool: &ToolName) -> Result<(), Error> {
        let _: i64 = self
            .redis
            .del(RedisKey::MonitorUnhealthy(tool.clone()).to_key())
            .await?;
        Ok(())
    }

    /// The tool's registered routes: pattern → backend URL.
    pub async fn routes(&self, tool: &ToolName) -> Result<BTreeMap<String, String>, Error> {
        routes::routes_of(&self.redis, tool).await
    }

    /// Removes route `pattern` of `tool` (and its `redirect:` entry) only if
    /// it still points at `backend`.
    pub async fn remove_route_if(
        &self,
        tool: &ToolName,
        pattern: &str,
        backend: &str,
    ) -> Result<bool, RouteError> {
        Ok(matches!(
            routes::delete_if(&self.redis, tool, pattern, Some(backend)).await?,
            Deletion::Deleted { .. }
        ))
    }
}
