//! Leases: at most one instance of a singleton (the identity app's timers, a
//! monitor, a scheduler) is active at a time, across hosts, without Puppet.
//!
//! A lease is the key `forge:lease:<name>` ([`RedisKey::Lease`]) holding the
//! holder's id with a TTL, on the Redis master. [`Lease::try_acquire`] takes a
//! free lease or extends one already held (one Lua script: compare-and-extend);
//! [`Lease::release`] deletes it only if still held (compare-and-delete).
//! [`Lease::keep`] runs the renewal loop and publishes whether the lease is
//! held on a `watch` channel; any doubt (Redis unreachable, lease taken by
//! another) counts as *not held*, so work stops rather than runs twice.
//!
//! Because the lease lives on whatever Redis is master, a Sentinel failover
//! moves it with the data: the holder keeps renewing on the new master, and if
//! the holder's host is gone, another instance takes the lease once its TTL
//! runs out.

use std::time::Duration;

use fred::prelude::*;
use tokio::sync::watch;

use crate::lifecycle::Shutdown;
use crate::schema::RedisKey;

/// Take or extend: KEYS = lease key; ARGV = holder, ttl ms. Returns 1 when held.
pub const ACQUIRE_LUA: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

/// Compare-and-delete: KEYS = lease key; ARGV = holder. Returns 1 when deleted.
pub const RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// One named lease as seen by one would-be holder.
#[derive(Debug, Clone)]
pub struct Lease {
    /// The lease name (`idm-timers`, …); the key is `forge:lease:<name>`.
    pub name: String,
    /// This instance's id (e.g. `host:pid`), unique among contenders.
    pub holder: String,
    /// How long a lease lasts without renewal.
    pub ttl: Duration,
}

impl Lease {
    /// A lease `name` for `holder` lasting `ttl`.
    pub fn new(name: &str, holder: &str, ttl: Duration) -> Self {
        Lease {
            name: name.to_owned(),
            holder: holder.to_owned(),
            ttl,
        }
    }

    /// `<hostname>:<pid>`, a holder id unique per process.
    pub fn default_holder() -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into());
        format!("{host}:{}", std::process::id())
    }

    fn key(&self) -> String {
        RedisKey::Lease(self.name.clone()).to_key()
    }

    /// Takes the lease if free, extends it if ours. True when held.
    pub async fn try_acquire(&self, client: &Client) -> Result<bool, fred::error::Error> {
        let ttl_ms = self.ttl.as_millis().max(1).to_string();
        let held: i64 = client
            .eval(
                ACQUIRE_LUA,
                vec![self.key()],
                vec![self.holder.clone(), ttl_ms],
            )
            .await?;
        Ok(held == 1)
    }

    /// Gives the lease up if ours. True when it was ours.
    pub async fn release(&self, client: &Client) -> Result<bool, fred::error::Error> {
        let deleted: i64 = client
            .eval(RELEASE_LUA, vec![self.key()], vec![self.holder.clone()])
            .await?;
        Ok(deleted == 1)
    }

    /// Who holds lease `name` now.
    pub async fn holder_of(
        client: &Client,
        name: &str,
    ) -> Result<Option<String>, fred::error::Error> {
        client.get(RedisKey::Lease(name.to_owned()).to_key()).await
    }

    /// Renews (or tries to take) the lease every `ttl / 3` until shutdown,
    /// then releases it. The receiver says whether the lease is held right
    /// now; an error counts as not held. When `board` is given, its status
    /// field `lease_<name>` says `held` or `standby`, and `role` is set to
    /// `active`/`standby`.
    pub fn keep(
        self,
        client: Client,
        board: Option<std::sync::Arc<crate::admin::StatusBoard>>,
        shutdown: Shutdown,
    ) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let every = (self.ttl / 3).max(Duration::from_millis(10));
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.triggered() => break,
                }
                let held = match self.try_acquire(&client).await {
                    Ok(h) => h,
                    Err(e) => {
                        tracing::warn!(lease = %self.name, error = %e, "cannot renew the lease; standing by");
                        false
                    }
                };
                if *tx.borrow() != held {
                    tracing::info!(lease = %self.name, holder = %self.holder, held, "lease changed hands");
                }
                tx.send_replace(held);
                if let Some(b) = &board {
                    b.set_field(
                        &format!("lease_{}", self.name),
                        if held { "held" } else { "standby" },
                    );
                    b.set_field("role", if held { "active" } else { "standby" });
                }
            }
            tx.send_replace(false);
            if let Err(e) = self.release(&client).await {
                tracing::debug!(lease = %self.name, error = %e, "lease not released; it expires by itself");
            }
        });
        (rx, task)
    }
}
