//! Backend ownership: a tool can only publish a server it runs itself.
//!
//! Ident proves who *asks*; it says nothing about who serves the backend
//! port. So proxylistener connects to the backend and asks the backend host's
//! identd (RFC 1413 works for the accepted end of a connection too: the
//! kernel gives it the listening socket's owner) who owns the server end of
//! that connection. It must be the registering tool's user.
//!
//! Today's clients register *before* their server listens and wait for the
//! reply before starting it, so the check can't always come before `ok`:
//!
//! * a backend already listening at registration time is checked before the
//!   reply: someone else's server → `fail:`, nothing written;
//! * otherwise the route is written, the client hears `ok`, and a
//!   [`PendingChecks`] task tries the backend every
//!   `ownership.retry_interval_ms` until it accepts or `ownership.within_ms`
//!   passes. If the owner is someone else, the identd can't name one, or
//!   nobody ever listens, the route is removed with compare-and-delete (only
//!   if it still points at that backend).
//!
//! A verdict is remembered ([`VerifiedBackends`]) for
//! `ownership.verified_ttl_ms`: within it, the same tool registering the same
//! backend again is not probed again (a registration costs two connections
//! less). Any other tool is always probed; an unregister of a route to the
//! backend, a removal and every fresh probe replace or drop the verdict.
//!
//! Every refusal and removal is logged at `warn` with its reason and counted
//! in `forge_proxylistener_ownership_total{outcome}`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use forge_core::{BackendUrl, Shutdown, ToolName, escape_controls};
use tokio::net::TcpStream;

use crate::config::Config;
use crate::ident::{IdentError, IdentQuery, tool_of_user};
use crate::store::RouteStore;

/// What one look at a backend found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Nothing accepted the connection (yet).
    NotListening(String),
    /// It accepted; the backend host's identd named this user.
    Owner(String),
    /// It accepted, but its identd named nobody.
    Unknown(IdentError),
}

/// Connects to `backend` and asks its host's identd (on `ident_port`) who
/// owns the server end of that connection.
pub async fn probe(backend: SocketAddr, ident_port: u16, config: &Config) -> Probe {
    let o = &config.ownership;
    let stream = match tokio::time::timeout(o.connect_timeout(), TcpStream::connect(backend)).await
    {
        Err(_) => {
            return Probe::NotListening(format!(
                "connecting timed out after {:?}",
                o.connect_timeout()
            ));
        }
        Ok(Err(e)) => return Probe::NotListening(e.to_string()),
        Ok(Ok(s)) => s,
    };
    let local_port = match stream.local_addr() {
        Ok(a) => a.port(),
        Err(e) => return Probe::NotListening(e.to_string()),
    };
    let query = IdentQuery {
        peer: backend,
        local_port,
        ident_port,
        connect_timeout: config.ident.connect_timeout(),
        read_timeout: config.ident.read_timeout(),
    };
    // The connection stays open until the identd has answered about it.
    let answer = query.lookup().await;
    drop(stream);
    match answer {
        Ok(user) => Probe::Owner(user),
        Err(e) => Probe::Unknown(e),
    }
}

/// The verdict on a backend for a tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Served by the tool's user.
    Verified,
    /// Not listening yet.
    NotListening,
    /// Refused: a metric label and the reason.
    Refused(&'static str, String),
}

/// Judges a [`Probe`] of `url` for `tool`.
pub fn judge(probe: &Probe, url: &BackendUrl, tool: &ToolName, project: &str) -> Verdict {
    let expected = tool.unix_user(project);
    match probe {
        Probe::NotListening(_) => Verdict::NotListening,
        Probe::Owner(user) if *user == expected => Verdict::Verified,
        Probe::Owner(user) => Verdict::Refused(
            "backend_not_owned",
            format!(
                "backend {} is served by user {:?}, not by {expected}",
                url.authority(),
                escape_controls(user)
            ),
        ),
        Probe::Unknown(e) => Verdict::Refused(
            "backend_owner_unknown",
            format!(
                "could not verify who serves backend {}: {e}",
                url.authority()
            ),
        ),
    }
}

/// Counts an ownership outcome.
pub fn count(outcome: &'static str) {
    metrics::counter!("forge_proxylistener_ownership_total", "outcome" => outcome).increment(1);
}

/// One registration awaiting its backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PendingKey {
    tool: ToolName,
    route: String,
    url: String,
}

/// The backends whose owner a probe named recently: backend address → the
/// tool serving it and when that stops counting. Bounded by
/// `ownership.max_verified` entries.
#[derive(Debug, Clone, Default)]
pub struct VerifiedBackends {
    /// Backend → (its owner tool, the end of the verdict's validity).
    owners: Arc<Mutex<HashMap<SocketAddr, (ToolName, Instant)>>>,
    /// Registrations that were verified from here instead of a probe.
    hits: Arc<std::sync::atomic::AtomicU64>,
}

impl VerifiedBackends {
    /// Whether a probe named `tool` as the owner of `backend` less than
    /// `ownership.verified_ttl_ms` ago (and nothing dropped it since).
    /// Counts the hit.
    pub fn verified_for(&self, backend: SocketAddr, tool: &ToolName) -> bool {
        let now = Instant::now();
        let hit = self.owners.lock().ok().is_some_and(|o| {
            o.get(&backend)
                .is_some_and(|(owner, until)| owner == tool && *until > now)
        });
        if hit {
            self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        hit
    }

    /// Whether any fresh verdict about `backend` is remembered.
    pub fn knows(&self, backend: SocketAddr) -> bool {
        let now = Instant::now();
        self.owners
            .lock()
            .ok()
            .is_some_and(|o| o.get(&backend).is_some_and(|(_, until)| *until > now))
    }

    /// Remembers what `probe` found about `backend`: its owner, when the
    /// identd named a tool account; otherwise any verdict about it is
    /// dropped.
    pub fn learn(&self, backend: SocketAddr, probe: &Probe, config: &Config) {
        let owner = match probe {
            Probe::Owner(user) => tool_of_user(user, &config.project).ok(),
            _ => None,
        };
        let ttl = config.ownership.verified_ttl();
        let Ok(mut owners) = self.owners.lock() else {
            return;
        };
        match owner {
            Some(tool) if !ttl.is_zero() => {
                let now = Instant::now();
                if owners.len() >= config.ownership.max_verified && !owners.contains_key(&backend) {
                    owners.retain(|_, (_, until)| *until > now);
                    if owners.len() >= config.ownership.max_verified {
                        return;
                    }
                }
                owners.insert(backend, (tool, now + ttl));
            }
            _ => {
                owners.remove(&backend);
            }
        }
    }

    /// Drops the verdict about `backend` (its route was removed: the next
    /// registration of it is probed).
    pub fn forget(&self, backend: SocketAddr) {
        if let Ok(mut owners) = self.owners.lock() {
            owners.remove(&backend);
        }
    }

    /// Registrations verified from a remembered verdict so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The ownership checks' state shared by all connections: the
/// registrations whose backend was not listening yet, each watched by a task
/// until it is verified, refused or the bound passes, and the backends
/// verified recently.
#[derive(Debug, Clone, Default)]
pub struct PendingChecks {
    /// The ones being watched (a repeated registration is watched once).
    pending: Arc<Mutex<HashSet<PendingKey>>>,
    /// Counters, for tests and `/status`.
    stats: Arc<Mutex<OwnershipStats>>,
    /// Owners named by recent probes.
    verified: VerifiedBackends,
}

/// How deferred checks ended so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnershipStats {
    /// Backends that started listening as the registering tool.
    pub verified: u64,
    /// Routes removed because someone else served the backend, or no identd
    /// named its owner.
    pub removed_foreign: u64,
    /// Routes removed because nothing listened within the bound.
    pub removed_never_listened: u64,
}

impl PendingChecks {
    /// How many registrations are waiting for their backend now.
    pub fn pending(&self) -> usize {
        self.pending.lock().map(|p| p.len()).unwrap_or(0)
    }

    /// How deferred checks ended so far.
    pub fn stats(&self) -> OwnershipStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    /// The backends verified recently.
    pub fn verified(&self) -> &VerifiedBackends {
        &self.verified
    }

    /// Starts watching `url` for `tool`'s `route`; `false` when
    /// `ownership.max_pending` registrations are already waiting.
    pub fn watch(
        &self,
        tool: &ToolName,
        route: &str,
        url: &BackendUrl,
        config: Arc<Config>,
        store: RouteStore,
        shutdown: Shutdown,
    ) -> bool {
        let key = PendingKey {
            tool: tool.clone(),
            route: route.to_owned(),
            url: url.as_str().to_owned(),
        };
        {
            let Ok(mut pending) = self.pending.lock() else {
                return false;
            };
            if pending.contains(&key) {
                return true;
            }
            if pending.len() >= config.ownership.max_pending {
                return false;
            }
            pending.insert(key.clone());
        }
        let this = self.clone();
        let url = url.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = this.follow(&key, &url, &config, &store) => {}
                _ = shutdown.triggered() => {}
            }
            if let Ok(mut pending) = this.pending.lock() {
                pending.remove(&key);
            }
        });
        true
    }

    /// Tries the backend until it accepts or the bound passes, then keeps or
    /// removes the route.
    async fn follow(
        &self,
        key: &PendingKey,
        url: &BackendUrl,
        config: &Config,
        store: &RouteStore,
    ) {
        let Some(ip) = url.ip() else { return };
        let backend = SocketAddr::new(ip, url.port());
        let ident_port = config.ownership.ident_port.unwrap_or(config.ident.port);
        let deadline = tokio::time::Instant::now() + config.ownership.within();
        let (label, reason) = loop {
            let probe = probe(backend, ident_port, config).await;
            self.verified.learn(backend, &probe, config);
            match judge(&probe, url, &key.tool, &config.project) {
                Verdict::Verified => {
                    count("verified_later");
                    if let Ok(mut s) = self.stats.lock() {
                        s.verified += 1;
                    }
                    tracing::info!(
                        tool = %key.tool,
                        route = %escape_controls(&key.route),
                        backend = %url,
                        "backend verified: served by the tool"
                    );
                    return;
                }
                Verdict::Refused(label, reason) => break (label, reason),
                Verdict::NotListening => {}
            }
            if tokio::time::Instant::now() >= deadline {
                break (
                    "backend_never_listened",
                    format!(
                        "nothing listened on backend {} within {:?} of its registration",
                        url.authority(),
                        config.ownership.within()
                    ),
                );
            }
            tokio::time::sleep(config.ownership.retry_interval()).await;
        };
        // Remove the route, but only if it still points at this backend.
        self.verified.forget(backend);
        let mut removed = None;
        for _ in 0..5 {
            match store
                .unregister_if(
                    &key.tool,
                    &key.route,
                    Some(url.as_str()),
                    &config.durability,
                )
                .await
            {
                Ok(r) => {
                    removed = Some(r);
                    break;
                }
                Err(e) => {
                    tracing::warn!(tool = %key.tool, backend = %url, error = %e, "removing an unverified route failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        count(label);
        if let Ok(mut s) = self.stats.lock() {
            if label == "backend_never_listened" {
                s.removed_never_listened += 1;
            } else {
                s.removed_foreign += 1;
            }
        }
        let what = match removed {
            Some(true) => "route removed",
            Some(false) => "route already changed; nothing removed",
            None => "route could NOT be removed (redis failing)",
        };
        tracing::warn!(
            tool = %key.tool,
            route = %escape_controls(&key.route),
            backend = %url,
            outcome = label,
            reason = %escape_controls(&reason),
            "backend ownership refused: {what}"
        );
    }
}
