//! [`RouteStore`]: the registrations in Redis, written atomically.
//!
//! Every write is one of `forge_core::routes`'s Lua scripts (one atomic step
//! in Redis), sent through one pooled fred client to the current master (a
//! URL or Sentinel, see [`forge_core::redis::RedisSettings`]); a request's
//! reply is `ok` only after Redis confirmed the script (and, with
//! `[durability] min_replicas > 0`, after `WAIT` saw enough replicas).
//!
//! * register — [`routes::register`]: `HSET prefix:<tool> <route> <url>`
//!   (plus `HSET redirect:<tool> <route> <tool>.<domain>` for canonical
//!   ones), refused over the tool's patterns-per-tool budget;
//! * unregister — [`routes::delete_if`], compare-and-delete: removes the
//!   route from both hashes only if `prefix:<tool>` still holds the backend
//!   the caller saw, so a release racing a new registration can never delete
//!   the new one.
//!
//! With Sentinels, the store follows their `+switch-master` announcements
//! ([`forge_core::redis::MasterWatch`]) and acknowledges a write only when the
//! connection that made it is to the master they name; a write that reached a
//! demoted master, or failed because of a switch, is run again on the new
//! master within `durability.switch_retry_ms` (both scripts may be repeated:
//! a repeated `HSET` changes nothing, and a repeated compare-and-delete
//! reports that the route is no longer what the caller saw).

use std::time::Duration;

use forge_core::redis::{MasterWatch, MinReplicas, OnMasterError, RedisSettings};
use forge_core::routes::{self, Deletion, NewRoute, RouteError};
use forge_core::{PatternBudget, ToolName};
use fred::prelude::*;

use crate::config::Durability;

/// Why a Redis operation failed; the text is the client's `fail:` reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The server we reached is a read-only replica.
    #[error("redis is a read-only replica, not the master; nothing was written")]
    ReadOnly,
    /// Redis did not answer in time.
    #[error("redis did not answer within {0:?}; the registration may not have been stored")]
    Timeout(Duration),
    /// Redis is unreachable.
    #[error("redis is unavailable: {0}")]
    Unavailable(String),
    /// Fewer replicas than required acknowledged the write.
    #[error(
        "not replicated: {acked} of {wanted} replicas acknowledged within {timeout_ms} ms (the master has the write)"
    )]
    NotReplicated {
        /// Replicas that acknowledged.
        acked: i64,
        /// Replicas required.
        wanted: u32,
        /// How long we waited.
        timeout_ms: u64,
    },
    /// A new route would take the tool over its patterns-per-tool budget.
    #[error("{0}")]
    OverBudget(forge_core::SchemaError),
    /// The write reached a server that is not the master the Sentinels
    /// name, and the new master was not reached in time.
    #[error(
        "redis at {connected} is no longer the master (the Sentinels name {master}); the registration was not acknowledged"
    )]
    NotMaster {
        /// The server the write reached.
        connected: String,
        /// The master the Sentinels name.
        master: String,
    },
    /// Any other Redis error.
    #[error("redis error: {0}")]
    Other(String),
}

impl StoreError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            StoreError::ReadOnly => "redis_readonly",
            StoreError::Timeout(_) => "redis_timeout",
            StoreError::Unavailable(_) => "redis_unavailable",
            StoreError::NotReplicated { .. } => "not_replicated",
            StoreError::OverBudget(_) => "too_many_patterns",
            StoreError::NotMaster { .. } => "not_master",
            StoreError::Other(_) => "redis_error",
        }
    }

    fn from_fred(e: &fred::error::Error, timeout: Duration) -> Self {
        let details = e.details();
        if details.contains("READONLY") {
            return StoreError::ReadOnly;
        }
        match e.kind() {
            ErrorKind::Timeout => StoreError::Timeout(timeout),
            ErrorKind::IO | ErrorKind::Canceled => StoreError::Unavailable(details.to_owned()),
            _ => StoreError::Other(details.chars().take(200).collect()),
        }
    }
}

impl StoreError {
    /// A route operation's error, worded for the client.
    fn from_route(e: RouteError, timeout: Duration) -> Self {
        match e {
            RouteError::Redis(e) => StoreError::from_fred(&e, timeout),
            RouteError::OverBudget(e) => StoreError::OverBudget(e),
            RouteError::NotReplicated {
                acked,
                wanted,
                timeout_ms,
            } => StoreError::NotReplicated {
                acked,
                wanted,
                timeout_ms,
            },
            e @ (RouteError::WrongType { .. } | RouteError::Reply(_)) => {
                StoreError::Other(e.to_string().chars().take(200).collect())
            }
        }
    }
}

impl From<OnMasterError<StoreError>> for StoreError {
    fn from(e: OnMasterError<StoreError>) -> Self {
        match e {
            OnMasterError::Write(e) => e,
            OnMasterError::NotOnMaster { connected, master } => {
                StoreError::NotMaster { connected, master }
            }
        }
    }
}

/// The registrations in Redis.
#[derive(Clone)]
pub struct RouteStore {
    /// The pooled client (to the master).
    pool: Pool,
    /// The per-command timeout, for error messages.
    timeout: Duration,
    /// The master the Sentinels name; moves the pool on a switch.
    watch: MasterWatch,
    /// The Redis settings, to ask the Sentinels about replicas.
    settings: RedisSettings,
    /// What `min_replicas = "auto"` resolved to (asked once, then kept:
    /// a master that lost its replicas must not drop to 0).
    auto_replicas: std::sync::Arc<std::sync::OnceLock<u32>>,
}

impl std::fmt::Debug for RouteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteStore")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RouteStore {
    /// A store for `settings`; connections are opened in the background and
    /// re-opened whenever they drop, so a Redis that is down at start-up or
    /// later only makes requests fail until it is back.
    /// Must be called inside a tokio runtime (it starts the Sentinel watch).
    pub fn connect(settings: &RedisSettings) -> Result<Self, forge_core::redis::RedisSetupError> {
        let pool = settings.pool()?;
        let watch = MasterWatch::start(settings)?;
        watch.follow_pool(&pool);
        drop(pool.connect_pool());
        Ok(RouteStore {
            pool,
            timeout: settings.command_timeout(),
            watch,
            settings: settings.clone(),
            auto_replicas: std::sync::Arc::default(),
        })
    }

    /// The Sentinel watch this store follows.
    pub fn master_watch(&self) -> &MasterWatch {
        &self.watch
    }

    /// How many replicas a write waits for under `durability`, resolving
    /// `"auto"` (once) and logging what it resolved to. Call at start-up so
    /// the log says it; a write resolves it itself otherwise.
    pub async fn min_replicas(&self, durability: &Durability) -> u32 {
        match durability.min_replicas {
            MinReplicas::Count(n) => n,
            MinReplicas::Auto => {
                if let Some(n) = self.auto_replicas.get() {
                    return *n;
                }
                let resolved = self
                    .watch
                    .resolve_min_replicas(&self.settings, self.pool.next(), MinReplicas::Auto)
                    .await;
                if resolved.answered {
                    if self.auto_replicas.set(resolved.count).is_ok() {
                        tracing::info!(
                            min_replicas = resolved.count,
                            "proxylistener {}",
                            resolved.sentence
                        );
                    }
                } else {
                    tracing::warn!(
                        min_replicas = resolved.count,
                        "proxylistener {}",
                        resolved.sentence
                    );
                }
                resolved.count
            }
        }
    }

    /// Runs `write` on the master (see [`MasterWatch::write_on_master`]).
    async fn on_master<T, F, Fut>(&self, durability: &Durability, write: F) -> Result<T, StoreError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        Ok(self
            .watch
            .write_on_master(
                &self.pool,
                Duration::from_millis(durability.switch_retry_ms),
                |e| *e == StoreError::ReadOnly,
                write,
            )
            .await?)
    }

    /// Waits (up to `within`) until a connection is up; `false` otherwise.
    pub async fn wait_connected(&self, within: Duration) -> bool {
        tokio::time::timeout(within, self.pool.wait_for_connect())
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// `PING`, for the health check.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.pool
            .next()
            .ping::<()>(None)
            .await
            .map_err(|e| StoreError::from_fred(&e, self.timeout))
    }

    /// Registers `route` → `url` for `tool`; with `canonical_domain`, also
    /// the `redirect:` entry naming `<tool>.<canonical_domain>`. A new route
    /// is refused when the tool already has `budget`'s patterns-per-tool.
    pub async fn register(
        &self,
        tool: &ToolName,
        route: &str,
        url: &str,
        canonical_domain: Option<&str>,
        budget: &PatternBudget,
        durability: &Durability,
    ) -> Result<(), StoreError> {
        let wanted = self.min_replicas(durability).await;
        let new = NewRoute {
            tool,
            pattern: route,
            backend: url,
            canonical_domain,
            budget: Some(budget),
        };
        self.on_master(durability, |client| async move {
            routes::register(&client, &new)
                .await
                .map_err(|e| StoreError::from_route(e, self.timeout))?;
            self.wait_replicas(&client, wanted, durability).await
        })
        .await
    }

    /// The backend `route` of `tool` points at now.
    pub async fn backend_of(
        &self,
        tool: &ToolName,
        route: &str,
    ) -> Result<Option<String>, StoreError> {
        routes::backend_of(self.pool.next(), tool, route)
            .await
            .map_err(|e| StoreError::from_fred(&e, self.timeout))
    }

    /// Removes `route` of `tool` if it still points at `expected` (`None`:
    /// if it points nowhere, which clears a stray `redirect:` entry).
    /// `Ok(false)`: it changed meanwhile and nothing was deleted.
    pub async fn unregister_if(
        &self,
        tool: &ToolName,
        route: &str,
        expected: Option<&str>,
        durability: &Durability,
    ) -> Result<bool, StoreError> {
        let wanted = self.min_replicas(durability).await;
        self.on_master(durability, |client| async move {
            match routes::delete_if(&client, tool, route, expected)
                .await
                .map_err(|e| StoreError::from_route(e, self.timeout))?
            {
                Deletion::Deleted { .. } => {
                    self.wait_replicas(&client, wanted, durability).await?;
                    Ok(true)
                }
                Deletion::Changed { .. } => Ok(false),
            }
        })
        .await
    }

    /// `WAIT` for the configured replica count on the connection that wrote.
    async fn wait_replicas(
        &self,
        client: &Client,
        wanted: u32,
        d: &Durability,
    ) -> Result<(), StoreError> {
        routes::wait_for_replicas(
            client,
            wanted,
            Duration::from_millis(d.timeout_ms),
            self.timeout,
        )
        .await
        .map_err(|e| StoreError::from_route(e, self.timeout))
    }

    /// Closes the connections.
    pub async fn quit(&self) {
        self.watch.stop().await;
        let _ = self.pool.quit().await;
    }
}
