//! Keeping the in-memory [`RouteTable`] equal to Redis, with no Redis round
//! trip on the request path.
//!
//! [`RouteSync`] owns two Redis connections: a command client and a
//! subscriber. It
//!
//! * loads everything (`SCAN` for `prefix:*` and `frontend:*`, pipelined
//!   `HGETALL`/`SMEMBERS`) at start, after every reconnect, after Redis comes
//!   back from being unresponsive, and every `routes.resync_interval_ms`;
//! * subscribes to **keyspace notifications** for `prefix:*` and `frontend:*`
//!   and re-reads each key named in one, patching the table (events are
//!   batched: all pending keys are read in one pipeline, then one new table is
//!   published). Redis emits no event for `FLUSHALL`/`FLUSHDB`; the periodic
//!   resync repairs that, a lost message, and a lagged subscriber;
//! * `PING`s every `routes.health_interval_ms`; a failure marks Redis down,
//!   keeps the last table and logs once; the first success resyncs.
//!
//! Keyspace notifications need `notify-keyspace-events` to contain `K`, `g`,
//! `h`, `s`, `x` and `e`; with `routes.configure_notifications` (default) the
//! proxy adds the missing flags with `CONFIG SET` itself.
//!
//! Why not RESP3 client tracking: fred drops the null-key invalidation that
//! `FLUSHALL` sends and ends its invalidation stream on a lagged broadcast, so
//! it gives no more than keyspace events do while needing RESP3.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use forge_core::routes::{self, RouteKey};
use forge_core::{CheckState, Shutdown, StatusBoard};
use fred::prelude::*;
use fred::types::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use crate::config::RouteSettings;
use crate::metrics::Metrics;
use crate::table::{RawRoutes, RouteTable, Routes, Snapshot};

/// Keys read per pipeline in a full load.
const PIPELINE_BATCH: usize = 512;
/// Keyspace-notification flags we need.
const NOTIFY_FLAGS: &str = "Kghsxe";

/// Whether Redis can currently be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RedisState {
    /// Not yet reached since start.
    Connecting = 0,
    /// Answering; the table follows it.
    Up = 1,
    /// Unreachable or unresponsive; the last table is served.
    Down = 2,
}

impl RedisState {
    fn as_str(self) -> &'static str {
        match self {
            RedisState::Connecting => "connecting",
            RedisState::Up => "up",
            RedisState::Down => "down",
        }
    }
}

/// What the sync task tells the rest of the daemon.
#[derive(Debug)]
pub struct SyncStatus {
    state: AtomicU8,
    /// When the table was last known to equal Redis (`None`: never).
    fresh_at: Mutex<Option<Instant>>,
    /// Where the table came from: `redis`, `snapshot` or `none`.
    source: Mutex<&'static str>,
    /// Seconds of staleness the snapshot had when it was loaded.
    snapshot_age: Mutex<Duration>,
    /// Set once a table (from Redis or a snapshot) is being served.
    ready: watch::Sender<bool>,
    /// A Redis error was logged for the current outage.
    logged_down: AtomicBool,
}

impl Default for SyncStatus {
    fn default() -> Self {
        SyncStatus {
            state: AtomicU8::new(RedisState::Connecting as u8),
            fresh_at: Mutex::new(None),
            source: Mutex::new("none"),
            snapshot_age: Mutex::new(Duration::ZERO),
            ready: watch::channel(false).0,
            logged_down: AtomicBool::new(false),
        }
    }
}

impl SyncStatus {
    /// The Redis state.
    pub fn state(&self) -> RedisState {
        match self.state.load(Ordering::Relaxed) {
            1 => RedisState::Up,
            2 => RedisState::Down,
            _ => RedisState::Connecting,
        }
    }

    /// How long ago the table was last known to equal Redis; `None` before
    /// any table.
    pub fn table_age(&self) -> Option<Duration> {
        let fresh = *self.fresh_at.lock().ok()?;
        let source = *self.source.lock().ok()?;
        match (fresh, source) {
            (Some(at), "snapshot") => {
                Some(at.elapsed() + self.snapshot_age.lock().map(|d| *d).unwrap_or_default())
            }
            (Some(at), _) => Some(at.elapsed()),
            (None, _) => None,
        }
    }

    /// Resolves once a table is served.
    pub async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Whether a table is served.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    fn mark_fresh(&self, source: &'static str) {
        if let Ok(mut f) = self.fresh_at.lock() {
            *f = Some(Instant::now());
        }
        if let Ok(mut s) = self.source.lock() {
            *s = source;
        }
    }
}

/// The task that keeps [`Routes`] in sync with Redis.
pub struct RouteSync {
    settings: RouteSettings,
    redis_desc: String,
    database: u8,
    client: Client,
    subscriber: Client,
    routes: Arc<Routes>,
    status: Arc<SyncStatus>,
    board: Arc<StatusBoard>,
    metrics: Metrics,
}

impl std::fmt::Debug for RouteSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteSync")
            .field("redis", &self.redis_desc)
            .finish()
    }
}

/// Why a sync step failed (Redis errors and timeouts).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Redis answered with an error or didn't answer in time.
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    /// Redis answered with something that isn't what the command returns.
    #[error("unexpected reply to {0}")]
    Reply(&'static str),
}

impl RouteSync {
    /// Prepares the sync task (connects nothing yet).
    pub fn new(
        settings: RouteSettings,
        redis: &forge_core::redis::RedisSettings,
        routes: Arc<Routes>,
        status: Arc<SyncStatus>,
        board: Arc<StatusBoard>,
        metrics: Metrics,
    ) -> Result<Self, forge_core::redis::RedisSetupError> {
        let database = redis.fred_config()?.database.unwrap_or(0);
        let client = redis.client()?;
        let subscriber = redis.client()?;
        Ok(RouteSync {
            settings,
            redis_desc: redis.describe(),
            database,
            client,
            subscriber,
            routes,
            status,
            board,
            metrics,
        })
    }

    /// Serves the on-disk snapshot, if configured and readable. Returns
    /// whether one was loaded.
    pub fn load_snapshot(&self) -> bool {
        let Some(path) = &self.settings.snapshot_path else {
            return false;
        };
        match Snapshot::read(path) {
            Ok(snap) => {
                let table = RouteTable::from_raw_reusing(&snap.routes, Some(&self.routes.load()));
                let age = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| Duration::from_secs(d.as_secs().saturating_sub(snap.written_at)))
                    .unwrap_or_default();
                tracing::warn!(
                    path = %path.display(),
                    tools = table.tool_count(),
                    age_s = age.as_secs(),
                    "serving routes from the on-disk snapshot until Redis answers"
                );
                if let Ok(mut a) = self.status.snapshot_age.lock() {
                    *a = age;
                }
                self.publish(table, "snapshot");
                true
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "no usable route snapshot");
                false
            }
        }
    }

    /// Runs until shutdown.
    pub async fn run(self, shutdown: Shutdown) {
        // fred gives up when the very first connection fails; its
        // connection tasks are restarted here until one succeeds.
        let mut client_task = self.client.connect();
        let mut sub_task = self.subscriber.connect();
        let mut reconnects = self.client.reconnect_rx();
        let mut sub_reconnects = self.subscriber.reconnect_rx();
        // fred hands keyspace notifications to their own channel.
        let mut messages = self.subscriber.keyspace_event_rx();
        let mut ping = tokio::time::interval(self.settings.health_interval());
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut resync = tokio::time::interval(self.settings.resync_interval());
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resync.reset();
        let patterns = vec![
            format!(
                "__keyspace@{}__:{}",
                self.database,
                routes::tool_routes_pattern()
            ),
            format!(
                "__keyspace@{}__:{}",
                self.database,
                routes::frontends_pattern()
            ),
        ];
        let mut need_subscribe = true;
        let mut need_full = true;
        let mut pending: BTreeSet<String> = BTreeSet::new();
        let mut snapshot_dirty = false;
        let mut snapshot_written = Instant::now();
        // While Redis is down, work is only retried after a successful PING or
        // a reconnect, so an outage isn't a busy loop of timeouts.
        let mut may_try = true;

        loop {
            if may_try && need_subscribe {
                match self.subscribe(&patterns).await {
                    Ok(()) => {
                        need_subscribe = false;
                        need_full = true;
                    }
                    Err(e) => {
                        self.mark_down(&e);
                        may_try = false;
                    }
                }
            }
            if may_try && need_full {
                // Events that arrive during the load are read after it.
                pending.clear();
                let started = Instant::now();
                match self.full_load().await {
                    Ok(table) => {
                        tracing::debug!(
                            tools = table.tool_count(),
                            ms = started.elapsed().as_millis() as u64,
                            "full route load"
                        );
                        self.metrics.full_syncs.increment(1);
                        self.publish(table, "redis");
                        self.mark_up();
                        need_full = false;
                        self.write_snapshot();
                        snapshot_dirty = false;
                        snapshot_written = Instant::now();
                    }
                    Err(e) => {
                        self.mark_down(&e);
                        may_try = false;
                    }
                }
            }
            if may_try && !need_full && !pending.is_empty() {
                let keys: Vec<String> = std::mem::take(&mut pending).into_iter().collect();
                match self.patch(&keys).await {
                    Ok(()) => {
                        self.mark_up();
                        snapshot_dirty = true;
                    }
                    Err(e) => {
                        self.mark_down(&e);
                        may_try = false;
                        need_full = true;
                    }
                }
            }
            if snapshot_dirty && snapshot_written.elapsed() >= Duration::from_secs(5) {
                self.write_snapshot();
                snapshot_dirty = false;
                snapshot_written = Instant::now();
            }

            tokio::select! {
                _ = shutdown.triggered() => break,
                msg = messages.recv() => match msg {
                    Ok(m) => {
                        self.note_message(&m, &mut pending);
                        while let Ok(m) = messages.try_recv() {
                            self.note_message(&m, &mut pending);
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(lost = n, "keyspace notifications lagged; resyncing");
                        need_full = true;
                    }
                    Err(RecvError::Closed) => {
                        messages = self.subscriber.keyspace_event_rx();
                        need_subscribe = true;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                r = reconnects.recv() => {
                    if matches!(r, Err(RecvError::Closed)) {
                        reconnects = self.client.reconnect_rx();
                    }
                    tracing::info!(redis = %self.redis_desc, "redis connection re-established; resyncing");
                    need_full = true;
                    may_try = true;
                }
                r = sub_reconnects.recv() => {
                    if matches!(r, Err(RecvError::Closed)) {
                        sub_reconnects = self.subscriber.reconnect_rx();
                    }
                    need_subscribe = true;
                    need_full = true;
                    may_try = true;
                }
                _ = ping.tick() => {
                    if client_task.is_finished() {
                        client_task = self.client.connect();
                    }
                    if sub_task.is_finished() {
                        sub_task = self.subscriber.connect();
                        need_subscribe = true;
                    }
                    match self.client.ping::<String>(None).await {
                        Ok(_) => {
                            if self.status.state() != RedisState::Up {
                                // recovery: everything is re-read
                                need_full = true;
                            } else if !need_full && pending.is_empty() {
                                self.status.mark_fresh("redis");
                            }
                            may_try = true;
                        }
                        Err(e) => {
                            self.mark_down(&SyncError::Redis(e));
                            may_try = false;
                        }
                    }
                    self.report();
                }
                _ = resync.tick() => need_full = true,
            }
        }
        let quit = async {
            let _ = self.subscriber.quit().await;
            let _ = self.client.quit().await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), quit).await;
    }

    fn note_message(&self, m: &fred::types::KeyspaceEvent, pending: &mut BTreeSet<String>) {
        if m.db != self.database {
            return;
        }
        if let Some(key) = m.key.as_str() {
            pending.insert(key.to_owned());
        }
    }

    async fn subscribe(&self, patterns: &[String]) -> Result<(), SyncError> {
        if self.settings.configure_notifications {
            self.configure_notifications().await;
        }
        self.subscriber.psubscribe(patterns.to_vec()).await?;
        Ok(())
    }

    /// Adds the keyspace-event flags we need to what the server has.
    async fn configure_notifications(&self) {
        let current: Result<Vec<String>, _> = self
            .client
            .custom(fred::cmd!("CONFIG"), vec!["GET", "notify-keyspace-events"])
            .await;
        let current = match current {
            Ok(v) => v.get(1).cloned().unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read notify-keyspace-events; route changes will be seen at the next full resync unless it is set in redis.conf");
                return;
            }
        };
        let expanded = current.replace('A', "g$lshzxet");
        let missing: String = NOTIFY_FLAGS
            .chars()
            .filter(|c| !expanded.contains(*c))
            .collect();
        if missing.is_empty() {
            return;
        }
        let wanted = format!("{current}{missing}");
        let set: Result<Value, _> = self
            .client
            .custom(
                fred::cmd!("CONFIG"),
                vec!["SET", "notify-keyspace-events", wanted.as_str()],
            )
            .await;
        match set {
            Ok(_) => tracing::info!(flags = %wanted, "enabled keyspace notifications"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot set notify-keyspace-events; set it to include {NOTIFY_FLAGS} in redis.conf")
            }
        }
    }

    /// Reads every route key.
    async fn full_load(&self) -> Result<RouteTable, SyncError> {
        let mut raw = RawRoutes::default();
        let mut ignored = 0;
        let mut tools = Vec::new();
        for key in self.scan(&routes::tool_routes_pattern()).await? {
            match routes::parse_route_key(&key) {
                Ok(RouteKey::Tool(tool)) => tools.push((key, tool)),
                _ => ignored += ignore_key(&key),
            }
        }
        for chunk in tools.chunks(PIPELINE_BATCH) {
            let keys: Vec<&str> = chunk.iter().map(|(k, _)| k.as_str()).collect();
            for ((_, tool), h) in chunk.iter().zip(self.read_hashes(&keys).await?) {
                if let Some(h) = h {
                    raw.prefix.insert(tool.to_string(), h);
                }
            }
        }
        let mut frontends = Vec::new();
        for key in self.scan(&routes::frontends_pattern()).await? {
            match routes::parse_route_key(&key) {
                Ok(RouteKey::Frontend(fqdn)) => frontends.push((key, fqdn)),
                _ => ignored += ignore_key(&key),
            }
        }
        for chunk in frontends.chunks(PIPELINE_BATCH) {
            let keys: Vec<&str> = chunk.iter().map(|(k, _)| k.as_str()).collect();
            for ((_, fqdn), m) in chunk.iter().zip(self.read_sets(&keys).await?) {
                if let Some(m) = m {
                    raw.frontend.insert(fqdn.clone(), m);
                }
            }
        }
        let mut table = RouteTable::from_raw_reusing(&raw, Some(&self.routes.load()));
        table.set_ignored_keys(ignored);
        Ok(table)
    }

    async fn scan(&self, pattern: &str) -> Result<Vec<String>, SyncError> {
        let mut cursor = "0".to_owned();
        let mut keys = BTreeSet::new();
        loop {
            let page: Value = self
                .client
                .scan_page(cursor.clone(), pattern.to_owned(), Some(1000), None)
                .await?;
            let Value::Array(mut parts) = page else {
                return Err(SyncError::Reply("SCAN"));
            };
            if parts.len() != 2 {
                return Err(SyncError::Reply("SCAN"));
            }
            let found = parts.pop().ok_or(SyncError::Reply("SCAN"))?;
            let next = parts.pop().ok_or(SyncError::Reply("SCAN"))?;
            let next: String = next.convert().map_err(|_| SyncError::Reply("SCAN"))?;
            let found: Vec<String> = found.convert().map_err(|_| SyncError::Reply("SCAN"))?;
            keys.extend(found);
            if next == "0" {
                break;
            }
            cursor = next;
        }
        Ok(keys.into_iter().collect())
    }

    /// HGETALL of each key in one pipeline; `None` for a key that is gone or
    /// of another type.
    async fn read_hashes(
        &self,
        keys: &[&str],
    ) -> Result<Vec<Option<BTreeMap<String, String>>>, SyncError> {
        let pipe = self.client.pipeline();
        for k in keys {
            let _: () = pipe.hgetall(*k).await?;
        }
        let replies = pipe.try_all::<Value>().await;
        let mut out = Vec::with_capacity(keys.len());
        for (key, r) in keys.iter().zip(replies) {
            out.push(match r {
                Ok(v) => match v.convert::<BTreeMap<String, String>>() {
                    Ok(m) if !m.is_empty() => Some(m),
                    Ok(_) => None,
                    Err(e) => {
                        tracing::warn!(key, error = %e, "route hash is not readable; ignored");
                        None
                    }
                },
                Err(e) if is_connection_error(&e) => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(key, error = %e, "route key is not a hash; ignored");
                    None
                }
            });
        }
        Ok(out)
    }

    /// SMEMBERS of each key in one pipeline.
    async fn read_sets(&self, keys: &[&str]) -> Result<Vec<Option<Vec<String>>>, SyncError> {
        let pipe = self.client.pipeline();
        for k in keys {
            let _: () = pipe.smembers(*k).await?;
        }
        let replies = pipe.try_all::<Value>().await;
        let mut out = Vec::with_capacity(keys.len());
        for (key, r) in keys.iter().zip(replies) {
            out.push(match r {
                Ok(v) => match v.convert::<Vec<String>>() {
                    Ok(m) if !m.is_empty() => Some(m),
                    Ok(_) => None,
                    Err(e) => {
                        tracing::warn!(key, error = %e, "frontend set is not readable; ignored");
                        None
                    }
                },
                Err(e) if is_connection_error(&e) => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(key, error = %e, "frontend key is not a set; ignored");
                    None
                }
            });
        }
        Ok(out)
    }

    /// Re-reads the named keys and publishes a patched table.
    async fn patch(&self, keys: &[String]) -> Result<(), SyncError> {
        let mut tools = Vec::new();
        let mut frontends = Vec::new();
        for key in keys {
            match routes::parse_route_key(key) {
                Ok(RouteKey::Tool(tool)) => tools.push((key.as_str(), tool)),
                Ok(RouteKey::Frontend(fqdn)) => frontends.push((key.as_str(), fqdn)),
                // Counted by the next full load, which reads every key.
                _ => {
                    ignore_key(key);
                }
            }
        }
        let hashes = if tools.is_empty() {
            Vec::new()
        } else {
            let keys: Vec<&str> = tools.iter().map(|(k, _)| *k).collect();
            self.read_hashes(&keys).await?
        };
        let sets = if frontends.is_empty() {
            Vec::new()
        } else {
            let keys: Vec<&str> = frontends.iter().map(|(k, _)| *k).collect();
            self.read_sets(&keys).await?
        };
        let mut table = RouteTable::clone(&self.routes.load());
        for ((_, tool), h) in tools.iter().zip(&hashes) {
            table.set_tool(tool.as_str(), h.as_ref());
        }
        for ((_, fqdn), m) in frontends.iter().zip(&sets) {
            table.set_frontend(fqdn, m.as_ref());
        }
        tracing::debug!(keys = keys.len(), "route table patched");
        self.metrics.patches.increment(1);
        self.publish(table, "redis");
        Ok(())
    }

    fn publish(&self, table: RouteTable, source: &'static str) {
        self.metrics.set_table(&table);
        self.routes.store(table);
        self.status.mark_fresh(source);
        self.status.ready.send_replace(true);
        self.report();
    }

    fn write_snapshot(&self) {
        let Some(path) = self.settings.snapshot_path.clone() else {
            return;
        };
        let table = self.routes.load_full();
        if let Err(e) = Snapshot::write(&path, &table) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the route snapshot");
        }
    }

    fn mark_up(&self) {
        let was = self.status.state();
        self.status
            .state
            .store(RedisState::Up as u8, Ordering::Relaxed);
        self.status.logged_down.store(false, Ordering::Relaxed);
        if was != RedisState::Up {
            tracing::info!(redis = %self.redis_desc, tools = self.routes.load().tool_count(), "redis reachable; route table in sync");
        }
        self.report();
    }

    fn mark_down(&self, e: &SyncError) {
        self.status
            .state
            .store(RedisState::Down as u8, Ordering::Relaxed);
        if !self.status.logged_down.swap(true, Ordering::Relaxed) {
            tracing::error!(redis = %self.redis_desc, error = %e, "redis unreachable; serving the last known route table");
        }
        self.report();
    }

    /// Updates metrics and the health check.
    pub fn report(&self) {
        report(&self.status, &self.board, &self.metrics, &self.routes);
    }
}

/// Publishes the sync state as metrics and on the status board.
pub fn report(status: &SyncStatus, board: &StatusBoard, metrics: &Metrics, routes: &Routes) {
    let state = status.state();
    let age = status.table_age();
    metrics
        .redis_up
        .set(if state == RedisState::Up { 1.0 } else { 0.0 });
    metrics
        .table_age
        .set(age.map(|a| a.as_secs_f64()).unwrap_or(-1.0));
    let tools = routes.load().tool_count();
    let source = status.source.lock().map(|s| *s).unwrap_or("none");
    let (check, detail) = match (state, age) {
        (RedisState::Up, Some(a)) => (
            CheckState::Ok,
            format!(
                "redis up; {tools} tools; table confirmed {}s ago",
                a.as_secs()
            ),
        ),
        (_, Some(a)) => (
            CheckState::Degraded,
            format!(
                "stale: redis {}; serving the last known table ({tools} tools, from {source}), {}s old",
                state.as_str(),
                a.as_secs()
            ),
        ),
        (_, None) => (
            CheckState::Failing,
            format!("no route table yet: redis {}", state.as_str()),
        ),
    };
    board.set_check("routes", check, detail);
    board.set_field("redis_state", state.as_str());
    board.set_field(
        "route_table_age_seconds",
        age.map(|a| a.as_secs()).unwrap_or(0),
    );
    board.set_field("route_table_tools", tools);
}

/// A key found under a route family's pattern whose name is not usable
/// (`prefix:Upper`, `frontend:bad host`): not read, logged; returns 1 for
/// the count of ignored keys.
fn ignore_key(key: &str) -> usize {
    let reason = routes::parse_route_key(key)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    tracing::debug!(key = %forge_core::escape_controls(key), %reason, "route key ignored");
    1
}

fn is_connection_error(e: &fred::error::Error) -> bool {
    use fred::error::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::IO | ErrorKind::Timeout | ErrorKind::Canceled | ErrorKind::Routing
    )
}
