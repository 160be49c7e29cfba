//! Following Sentinel's master switches at once, and acknowledging writes
//! only from the master Sentinel names.
//!
//! fred's Sentinel client asks the Sentinels for the master only when a
//! connection is (re)opened. A master that is paused or cut off rather than
//! dead keeps its connections open, so a daemon would stay on the demoted
//! master until Sentinel reconfigures it as a replica (8–15 s later) — and a
//! write acknowledged there is lost. [`MasterWatch`] closes that window:
//!
//! * it subscribes to `+switch-master` on every configured Sentinel (and asks
//!   each for the master whenever its subscription is (re)established), so
//!   it knows the master Sentinel names within milliseconds of a switch;
//! * every client it follows ([`MasterWatch::follow`],
//!   [`MasterWatch::follow_pool`]) whose connection is to another server is
//!   reconnected at once, and again every [`RECHECK`] until it is on the
//!   named master (a Sentinel that has not heard of the switch yet may name
//!   the old master to fred's discovery);
//! * [`MasterWatch::write_on_master`] runs a write and answers success only
//!   when the connection that wrote is to the named master; otherwise, or
//!   when the write failed because of a switch (`-READONLY`, or the master
//!   changed while it ran), it retries on the new master within the
//!   request's budget.
//!
//! [`MinReplicas`] is the shared `min_replicas` knob: `"auto"` (the default)
//! waits for one replica wherever the master has any
//! ([`MasterWatch::resolve_min_replicas`]).
//!
//! With a single `url` (no Sentinels) the watch is inert: there is no other
//! master to move to, and every connection counts as the master's.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::prelude::*;
use fred::types::config::{ReconnectPolicy, ServerConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{RedisSettings, RedisSetupError};

/// How often clients still on another server are reconnected again after a
/// switch (fred's discovery may have reached a Sentinel that still names the
/// old master).
pub const RECHECK: Duration = Duration::from_millis(200);

/// How often, while no client of a pool is on the master, a retrying write
/// looks again.
const RETRY_POLL: Duration = Duration::from_millis(25);

/// The `+switch-master` channel every Sentinel publishes a promotion on.
const SWITCH_CHANNEL: &str = "+switch-master";

/// How many replicas must acknowledge a write before it is acknowledged to
/// the client: `"auto"` or a number (`0` = the master's word is enough).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MinReplicas {
    /// A fixed count.
    Count(u32),
    /// `"auto"`: 1 when the master has replicas (its `INFO replication`
    /// lists any, or the Sentinels know any), 0 only when it has none.
    #[default]
    #[serde(with = "auto_keyword")]
    Auto,
}

/// (De)serializes the unit variant [`MinReplicas::Auto`] as the string `"auto"`.
mod auto_keyword {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("auto")
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<(), D::Error> {
        let text = String::deserialize(d)?;
        if text == "auto" {
            Ok(())
        } else {
            Err(serde::de::Error::custom(format!(
                "expected \"auto\" or a number of replicas, found {text:?}"
            )))
        }
    }
}

impl std::fmt::Display for MinReplicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MinReplicas::Count(n) => write!(f, "{n}"),
            MinReplicas::Auto => f.write_str("auto"),
        }
    }
}

/// What a `min_replicas` setting resolved to, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedReplicas {
    /// Replicas a write waits for.
    pub count: u32,
    /// Whether Redis or a Sentinel answered (an unanswered `"auto"` is a
    /// guess, worth asking again later).
    pub answered: bool,
    /// A sentence for the start-up log: what is waited for and why.
    pub sentence: String,
}

/// A write that could not be acknowledged from the master.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OnMasterError<E> {
    /// The write itself failed (for a reason other than a switch, or the
    /// last of its retries when the budget ran out).
    #[error("{0}")]
    Write(E),
    /// The connection that wrote is not to the master the Sentinels name,
    /// and none reached it within the budget.
    #[error(
        "the write reached {connected}, which is not the master the Sentinels name ({master}); not acknowledged"
    )]
    NotOnMaster {
        /// The server the write went to.
        connected: String,
        /// The master the Sentinels name.
        master: String,
    },
}

/// What a [`MasterWatch`] shares with its background tasks.
#[derive(Debug)]
struct WatchState {
    /// The Sentinel service (master) name announcements are filtered by.
    service: String,
    /// Whether Sentinels are configured at all.
    sentinel_mode: bool,
    /// The master the Sentinels name, `host:port`; `None` until one answered.
    master: watch::Sender<Option<String>>,
    /// Bumped on every change of `master` (a write that spans one retries).
    switches: AtomicU64,
    /// The clients moved to the master on a switch.
    followed: Mutex<Vec<Client>>,
    /// The subscriber clients (one per Sentinel), for shutdown.
    subscribers: Mutex<Vec<Client>>,
}

impl WatchState {
    /// Records `master` (from an announcement or a query). True when it changed.
    fn set_master(&self, master: String, why: &str) -> bool {
        let changed = self.master.send_if_modified(|m| {
            if m.as_deref() == Some(master.as_str()) {
                false
            } else {
                *m = Some(master.clone());
                true
            }
        });
        if changed {
            self.switches.fetch_add(1, Ordering::SeqCst);
            tracing::info!(service = %self.service, %master, source = why, "the Sentinels name a master");
        }
        changed
    }
}

/// Follows the master the Sentinels name; see the module documentation.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct MasterWatch {
    /// Shared with the background tasks.
    state: Arc<WatchState>,
}

impl MasterWatch {
    /// Starts watching the Sentinels of `settings` (inert for a single URL).
    /// Must be called inside a tokio runtime; the tasks end when the last
    /// clone of the watch is dropped or [`MasterWatch::stop`] is called.
    pub fn start(settings: &RedisSettings) -> Result<MasterWatch, RedisSetupError> {
        let (tx, _) = watch::channel(None);
        let state = Arc::new(WatchState {
            service: settings.service_name.clone(),
            sentinel_mode: !settings.sentinels.is_empty(),
            master: tx,
            switches: AtomicU64::new(0),
            followed: Mutex::new(Vec::new()),
            subscribers: Mutex::new(Vec::new()),
        });
        if !state.sentinel_mode {
            return Ok(MasterWatch { state });
        }
        for sentinel in sentinel_configs(settings)? {
            let subscriber = Builder::from_config(sentinel.clone())
                .with_connection_config(|c| {
                    c.connection_timeout =
                        Duration::from_millis(settings.connect_timeout_ms.max(1));
                    c.internal_command_timeout = settings.command_timeout();
                })
                .with_performance_config(|p| p.default_command_timeout = settings.command_timeout())
                .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
                .build()?;
            let query = Builder::from_config(sentinel)
                .with_performance_config(|p| p.default_command_timeout = settings.command_timeout())
                .with_connection_config(|c| {
                    c.connection_timeout =
                        Duration::from_millis(settings.connect_timeout_ms.max(1));
                })
                .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
                .build()?;
            state
                .subscribers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend([subscriber.clone(), query.clone()]);
            tokio::spawn(listen(Arc::downgrade(&state), subscriber, query));
        }
        tokio::spawn(converge(Arc::downgrade(&state), state.master.subscribe()));
        Ok(MasterWatch { state })
    }

    /// Whether Sentinels are configured (else the watch is inert).
    pub fn is_following_sentinels(&self) -> bool {
        self.state.sentinel_mode
    }

    /// The master the Sentinels name now (`host:port`), once one answered.
    pub fn current_master(&self) -> Option<String> {
        self.state.master.borrow().clone()
    }

    /// Changes of the named master, as they happen.
    pub fn subscribe(&self) -> watch::Receiver<Option<String>> {
        self.state.master.subscribe()
    }

    /// How many times the named master changed since the start (the first
    /// answer counts as one).
    pub fn switches(&self) -> u64 {
        self.state.switches.load(Ordering::SeqCst)
    }

    /// Waits up to `within` until some Sentinel has named the master; true
    /// when one has (always true when inert).
    pub async fn wait_known(&self, within: Duration) -> bool {
        if !self.state.sentinel_mode {
            return true;
        }
        let mut rx = self.state.master.subscribe();
        tokio::time::timeout(within, rx.wait_for(Option::is_some))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Moves `client` to the master on every switch.
    pub fn follow(&self, client: &Client) {
        if self.state.sentinel_mode {
            self.state
                .followed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(client.clone());
        }
    }

    /// Moves every client of `pool` to the master on every switch.
    pub fn follow_pool(&self, pool: &Pool) {
        for client in pool.clients() {
            self.follow(client);
        }
    }

    /// Whether `client`'s connection is to the master the Sentinels name.
    /// `Err((connected, master))` when it is not. True when inert or when no
    /// Sentinel has answered yet (then fred's own discovery is all we know).
    pub fn confirm(&self, client: &Client) -> Result<(), (String, String)> {
        let Some(master) = self.current_master() else {
            return Ok(());
        };
        let connected: Vec<String> = client
            .active_connections()
            .iter()
            .map(|s| format!("{}:{}", s.host, s.port))
            .collect();
        if connected.contains(&master) {
            Ok(())
        } else {
            let connected = if connected.is_empty() {
                "no server".to_owned()
            } else {
                connected.join(",")
            };
            Err((connected, master))
        }
    }

    /// A client of `pool` connected to the named master, if any.
    fn client_on_master<'p>(&self, pool: &'p Pool) -> Option<&'p Client> {
        pool.clients()
            .iter()
            .find(|c| c.is_connected() && self.confirm(c).is_ok())
    }

    /// Runs `write` on a client of `pool` and returns its result only when
    /// that client's connection is to the master the Sentinels name. When it
    /// is not, or the write failed because of a switch (`is_readonly` says
    /// the error is `-READONLY`, or the named master changed while it ran),
    /// the write is run again on a client connected to the current master,
    /// until `budget` runs out. `write` must therefore be safe to repeat
    /// (idempotent, or a compare-and-set that reports the repeat).
    pub async fn write_on_master<T, E, F, Fut>(
        &self,
        pool: &Pool,
        budget: Duration,
        is_readonly: impl Fn(&E) -> bool,
        mut write: F,
    ) -> Result<T, OnMasterError<E>>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let deadline = Instant::now() + budget;
        loop {
            let switches_before = self.switches();
            let client = self
                .client_on_master(pool)
                .unwrap_or_else(|| pool.next())
                .clone();
            // A reconnection in the middle of a write (fred moving the client
            // to the new master) would send its `WAIT` on a fresh connection,
            // where it trivially succeeds: such a write is not acknowledged.
            let mut reconnects = client.reconnect_rx();
            let server_before = connected_to(&client);
            let result = write(client.clone()).await;
            let reconnected = !matches!(
                reconnects.try_recv(),
                Err(tokio::sync::broadcast::error::TryRecvError::Empty)
            ) || connected_to(&client) != server_before;
            let on_master = if reconnected {
                Err((
                    format!(
                        "{} (the connection was reopened during the write)",
                        server_before.join(",")
                    ),
                    self.current_master().unwrap_or_default(),
                ))
            } else {
                self.confirm(&client)
            };
            let switched = self.switches() != switches_before;
            let failure = match (result, on_master) {
                (Ok(v), Ok(())) => return Ok(v),
                (Ok(_), Err((connected, master))) => {
                    tracing::warn!(%connected, %master, "a write reached a server that is no longer the master; retrying on the master");
                    OnMasterError::NotOnMaster { connected, master }
                }
                (Err(e), on_master) => {
                    if !(is_readonly(&e) || on_master.is_err() || switched) {
                        return Err(OnMasterError::Write(e));
                    }
                    OnMasterError::Write(e)
                }
            };
            // Wait for a connection to the current master, then try again.
            loop {
                if Instant::now() >= deadline {
                    return Err(failure);
                }
                if self.client_on_master(pool).is_some() {
                    break;
                }
                tokio::time::sleep(RETRY_POLL).await;
            }
        }
    }

    /// What `configured` means for this Redis: a count as is; `"auto"` → 1
    /// when the master has replicas (its `INFO replication` lists any, or a
    /// Sentinel knows any), 0 only when neither does. `client` is one of the
    /// daemon's (to the master). When Redis can't be asked, `"auto"` is 1
    /// with Sentinels (a Sentinel setup exists to have replicas) and 0
    /// without.
    pub async fn resolve_min_replicas(
        &self,
        settings: &RedisSettings,
        client: &Client,
        configured: MinReplicas,
    ) -> ResolvedReplicas {
        if let MinReplicas::Count(n) = configured {
            return ResolvedReplicas {
                count: n,
                answered: true,
                sentence: format!(
                    "acknowledges a write once {n} replica(s) have it (min_replicas = {n})"
                ),
            };
        }
        let from_info: Option<u32> = client
            .info::<String>(Some(fred::types::InfoKind::Replication))
            .await
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|l| l.trim().strip_prefix("connected_slaves:"))
                    .and_then(|n| n.trim().parse().ok())
            });
        let mut from_sentinels: Option<usize> = None;
        if self.state.sentinel_mode
            && let Ok(configs) = sentinel_configs(settings)
        {
            for config in configs {
                let Ok(c) = Builder::from_config(config)
                    .with_performance_config(|p| {
                        p.default_command_timeout = settings.command_timeout()
                    })
                    .with_connection_config(|c| {
                        c.connection_timeout = settings.command_timeout();
                    })
                    .build()
                else {
                    continue;
                };
                if c.init().await.is_err() {
                    continue;
                }
                let replicas: Result<Vec<fred::types::Value>, _> = c
                    .custom(
                        fred::cmd!("SENTINEL"),
                        vec!["REPLICAS".to_owned(), settings.service_name.clone()],
                    )
                    .await;
                let _ = c.quit().await;
                if let Ok(r) = replicas {
                    from_sentinels = Some(r.len());
                    break;
                }
            }
        }
        let (n, why) = match (from_info, from_sentinels) {
            (Some(i), _) if i > 0 => (1, format!("the master has {i} connected replica(s)")),
            (_, Some(s)) if s > 0 => (1, format!("the Sentinels know {s} replica(s)")),
            (Some(_), Some(_)) | (Some(_), None) if !self.state.sentinel_mode => {
                (0, "the master has no replicas".to_owned())
            }
            (Some(_), Some(_)) => (
                0,
                "neither the master nor the Sentinels know any replica".to_owned(),
            ),
            _ if self.state.sentinel_mode => (
                1,
                "Redis could not be asked; with Sentinels there are replicas".to_owned(),
            ),
            _ => (
                0,
                "Redis could not be asked and has no Sentinels".to_owned(),
            ),
        };
        ResolvedReplicas {
            count: n,
            answered: from_info.is_some() || from_sentinels.is_some(),
            sentence: format!(
                "acknowledges a write once {n} replica(s) have it (min_replicas = auto: {why})"
            ),
        }
    }

    /// Stops the background tasks (closes the Sentinel subscriptions).
    pub async fn stop(&self) {
        let subscribers = std::mem::take(
            &mut *self
                .state
                .subscribers
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for s in subscribers {
            let _ = s.quit().await;
        }
    }
}

/// The servers `client` is connected to, as `host:port`.
fn connected_to(client: &Client) -> Vec<String> {
    client
        .active_connections()
        .iter()
        .map(|s| format!("{}:{}", s.host, s.port))
        .collect()
}

/// One fred configuration per configured Sentinel (a direct connection).
fn sentinel_configs(settings: &RedisSettings) -> Result<Vec<Config>, RedisSetupError> {
    let Config { server, .. } = settings.fred_config()?;
    let ServerConfig::Sentinel { hosts, .. } = server else {
        return Ok(Vec::new());
    };
    Ok(hosts
        .into_iter()
        .map(|host| Config {
            server: ServerConfig::Centralized { server: host },
            ..Default::default()
        })
        .collect())
}

/// Parses `<name> <old-ip> <old-port> <new-ip> <new-port>` into
/// `(name, "new-ip:new-port")`.
fn parse_switch(text: &str) -> Option<(&str, String)> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    match parts.as_slice() {
        [name, _, _, ip, port] => Some((name, format!("{ip}:{port}"))),
        _ => None,
    }
}

/// Asks a Sentinel for the master of the watched service.
async fn ask_master(query: &Client, service: &str) -> Option<String> {
    let reply: Vec<String> = query
        .custom(
            fred::cmd!("SENTINEL"),
            vec!["GET-MASTER-ADDR-BY-NAME".to_owned(), service.to_owned()],
        )
        .await
        .ok()?;
    match reply.as_slice() {
        [ip, port] => Some(format!("{ip}:{port}")),
        _ => None,
    }
}

/// One Sentinel's announcements: (re)subscribes whenever the subscriber
/// connects, asks the Sentinel for the master after each subscription, and
/// records every `+switch-master` for our service.
async fn listen(state: std::sync::Weak<WatchState>, subscriber: Client, query: Client) {
    let mut messages = subscriber.message_rx();
    let mut reconnects = subscriber.reconnect_rx();
    drop(subscriber.connect());
    drop(query.connect());
    let service = match state.upgrade() {
        Some(s) => s.service.clone(),
        None => return,
    };
    let subscribe = async |subscriber: &Client| {
        if let Err(e) = subscriber.subscribe(SWITCH_CHANNEL).await {
            tracing::debug!(error = %e, "subscribing to a Sentinel's +switch-master failed");
            return;
        }
        if let Some(master) = ask_master(&query, &service).await
            && let Some(state) = state.upgrade()
        {
            state.set_master(master, "sentinel query");
        }
    };
    if subscriber.wait_for_connect().await.is_ok() {
        subscribe(&subscriber).await;
    }
    loop {
        tokio::select! {
            m = messages.recv() => match m {
                Ok(message) => {
                    let Some(text) = message.value.as_string() else { continue };
                    if let Some((name, master)) = parse_switch(&text)
                        && name == service
                    {
                        match state.upgrade() {
                            Some(s) => {
                                s.set_master(master, "+switch-master");
                            }
                            None => break,
                        }
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            r = reconnects.recv() => match r {
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    subscribe(&subscriber).await;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
        }
        if state.strong_count() == 0 {
            break;
        }
    }
    let _ = subscriber.quit().await;
    let _ = query.quit().await;
}

/// Moves every followed client to the named master: on each change at once,
/// then every [`RECHECK`] while any connected client is elsewhere.
async fn converge(state: std::sync::Weak<WatchState>, mut master: watch::Receiver<Option<String>>) {
    loop {
        let Some(s) = state.upgrade() else { return };
        let named = master.borrow_and_update().clone();
        let mut pending = false;
        if let Some(named) = named {
            let clients = s.followed.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let mut moves = Vec::new();
            for client in clients {
                if !client.is_connected() {
                    // fred's reconnect policy is at work; its discovery asks the Sentinels.
                    pending = true;
                    continue;
                }
                let elsewhere = !client
                    .active_connections()
                    .iter()
                    .any(|c| format!("{}:{}", c.host, c.port) == named);
                if elsewhere {
                    pending = true;
                    moves.push(tokio::spawn(async move {
                        if let Err(e) = client.force_reconnection().await {
                            tracing::debug!(error = %e, "reconnecting to the new master failed; retrying");
                        }
                    }));
                }
            }
            if !moves.is_empty() {
                tracing::info!(master = %named, clients = moves.len(), "moving connections to the master the Sentinels name");
                // Each move is bounded by fred's connection timeout; don't
                // wait longer than a few rechecks for a stuck one.
                let _ = tokio::time::timeout(RECHECK * 10, async {
                    for m in moves {
                        let _ = m.await;
                    }
                })
                .await;
            }
        }
        drop(s);
        if pending {
            tokio::select! {
                _ = tokio::time::sleep(RECHECK) => {}
                r = master.changed() => if r.is_err() { return },
            }
        } else if master.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_messages_parse() {
        assert_eq!(
            parse_switch("forge 127.0.0.1 6379 127.0.0.1 6380"),
            Some(("forge", "127.0.0.1:6380".to_owned()))
        );
        assert_eq!(parse_switch("forge 127.0.0.1 6379"), None);
    }

    #[test]
    fn min_replicas_reads_auto_or_a_count() {
        #[derive(Deserialize)]
        struct T {
            #[serde(default)]
            n: MinReplicas,
        }
        let t: T = toml::from_str("n = \"auto\"").unwrap();
        assert_eq!(t.n, MinReplicas::Auto);
        let t: T = toml::from_str("n = 2").unwrap();
        assert_eq!(t.n, MinReplicas::Count(2));
        let t: T = toml::from_str("").unwrap();
        assert_eq!(t.n, MinReplicas::Auto);
        assert!(toml::from_str::<T>("n = \"some\"").is_err());
    }
}
