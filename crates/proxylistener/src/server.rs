//! The registration server: accepts connections, reads one request each,
//! authenticates it, checks it against the policy, writes it, replies once.
//!
//! Per connection, in order (nothing is written unless every step passes):
//!
//! 1. read the request (bounded lines, one deadline for the whole request);
//! 2. validate the route (no control characters, a linear-time regex under a
//!    length cap and the compiled-size budget `[route_budget]`) and the
//!    backend URL (`http(s)://<ip>:<port>`, port in range, host = the client
//!    or inside `policy.backend_networks`);
//! 3. ident: the client's identd must name `<project>.<tool>` for exactly
//!    this connection;
//! 4. ownership ([`crate::ownership`]): a backend that already listens must
//!    be served by that tool (probed during step 3 when the backend is the
//!    client's own address, or taken from a recent verdict for the same
//!    tool); one that doesn't listen yet is watched after the reply;
//! 5. one atomic Redis script (refusing a tool's pattern over its
//!    patterns-per-tool budget); `ok` only after Redis confirmed it.
//!
//! Every refusal is logged with the peer and the reason (control characters
//! escaped) and counted in `forge_proxylistener_requests_total{outcome}`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use forge_core::schema::{MAX_PATTERN_COMPILED_BYTES, MAX_PATTERNS_PER_TOOL};
use forge_core::{
    BackendUrl, PatternBudget, Reloadable, RoutePattern, SchemaError, Shutdown, ToolName,
    escape_controls,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::config::{Config, canonical_ip};
use crate::ident::{IdentQuery, tool_of_user};
use crate::ownership::{PendingChecks, Verdict, count as count_ownership, judge, probe};
use crate::protocol::{Command, RawRequest, ReadError, Reply, RequestReader};
use crate::store::{RouteStore, StoreError};

/// What the server needs: its live configuration and the route store.
#[derive(Debug, Clone)]
pub struct Context {
    /// The configuration in force (swapped on reload).
    pub config: Arc<Reloadable<Config>>,
    /// Where registrations are written.
    pub store: RouteStore,
    /// Registrations whose backend did not listen yet, being watched.
    pub pending: PendingChecks,
}

/// The outcome of one request: the reply plus labels for logs and metrics.
#[derive(Debug)]
struct Outcome {
    reply: Reply,
    /// `ok`, or the refusal/failure label.
    label: &'static str,
    command: Option<Command>,
    tool: Option<ToolName>,
}

impl Outcome {
    fn fail(label: &'static str, reason: impl ToString) -> Self {
        Outcome {
            reply: Reply::Fail(reason.to_string()),
            label,
            command: None,
            tool: None,
        }
    }
}

/// Binds the registration listener on `addr` with an accept queue of
/// `backlog` connections (`limits.listen_backlog`; the kernel caps it at
/// `net.core.somaxconn`, see [`somaxconn`]).
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    forge_core::daemon::listen_on(addr, backlog)
}

/// The kernel's cap on every listen backlog (`net.core.somaxconn`), when it
/// can be read.
pub fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Serves registrations on `listener` until `shutdown`; then stops
/// accepting and waits (up to `shutdown_drain_ms`) for requests in flight.
pub async fn run(listener: TcpListener, ctx: Context, shutdown: Shutdown) -> std::io::Result<()> {
    let max = ctx.config.get().limits.max_connections;
    let slots = Arc::new(Semaphore::new(max));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let Some((permit, stream, peer)) =
            forge_core::lifecycle::accept_capped(&listener, &slots, &shutdown).await
        else {
            break;
        };
        // Reap finished connection tasks so the set stays small.
        while tasks.try_join_next().is_some() {}
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            handle(stream, peer, &ctx, &shutdown).await;
            drop(permit);
        });
    }
    drop(listener);
    let drain = Duration::from_millis(ctx.config.get().shutdown_drain_ms);
    let finished = forge_core::lifecycle::drain_within(&shutdown, drain, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if !finished {
        tasks.abort_all();
    }
    Ok(())
}

/// Handles one connection: one request, one reply, close.
async fn handle(stream: TcpStream, peer: SocketAddr, ctx: &Context, shutdown: &Shutdown) {
    let started = Instant::now();
    metrics::gauge!("forge_proxylistener_connections").increment(1.0);
    let local_port = stream.local_addr().map(|a| a.port()).unwrap_or(0);
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::with_capacity(1024, read);
    let config = ctx.config.get();
    let outcome = process(&mut reader, peer, local_port, &config, ctx, shutdown).await;

    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = write.write_all(&outcome.reply.to_wire()).await;
        let _ = write.shutdown().await;
    })
    .await;
    // Closing with unread input makes the kernel send a reset, which can
    // destroy the reply before the client read it: swallow what the client
    // still sends (bounded) until it closes.
    let _ = tokio::time::timeout(
        Duration::from_millis(250),
        tokio::io::copy(&mut (&mut reader).take(64 * 1024), &mut tokio::io::sink()),
    )
    .await;

    let command = outcome.command.map_or("none", Command::as_str);
    let tool = outcome.tool.as_ref().map_or("-", ToolName::as_str);
    match &outcome.reply {
        Reply::Ok => tracing::info!(%peer, command, tool, "ok"),
        Reply::Fail(reason) => {
            let reason = escape_controls(reason);
            tracing::warn!(%peer, command, tool, outcome = outcome.label, %reason, "refused")
        }
    }
    metrics::counter!(
        "forge_proxylistener_requests_total",
        "command" => command,
        "outcome" => outcome.label
    )
    .increment(1);
    metrics::histogram!("forge_proxylistener_request_seconds", "command" => command)
        .record(started.elapsed().as_secs_f64());
    metrics::gauge!("forge_proxylistener_connections").decrement(1.0);
}

async fn process(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    peer: SocketAddr,
    local_port: u16,
    config: &Arc<Config>,
    ctx: &Context,
    shutdown: &Shutdown,
) -> Outcome {
    // 1. Read.
    let mut request_reader = RequestReader::default();
    let read = tokio::time::timeout(
        config.limits.request_timeout(),
        request_reader.read(reader, config.limits.max_line_bytes),
    )
    .await;
    let raw = match read {
        Err(_) => {
            let e = ReadError::Timeout {
                what: request_reader.waiting_for,
            };
            return Outcome::fail(e.label(), e);
        }
        Ok(Err(e)) => return Outcome::fail(e.label(), e),
        Ok(Ok(raw)) => raw,
    };
    let mut outcome = carry_out(raw.clone(), peer, local_port, config, ctx, shutdown).await;
    outcome.command = Some(raw.command);
    outcome
}

async fn carry_out(
    raw: RawRequest,
    peer: SocketAddr,
    local_port: u16,
    config: &Arc<Config>,
    ctx: &Context,
    shutdown: &Shutdown,
) -> Outcome {
    let store = &ctx.store;
    // 2. Validate. A route is removable even if it is over today's budget
    // (registered before it was lowered); only new ones must fit.
    let budget = match raw.command {
        Command::Unregister => {
            PatternBudget::new(MAX_PATTERN_COMPILED_BYTES, MAX_PATTERNS_PER_TOOL)
                .unwrap_or(config.route_budget)
        }
        _ => config.route_budget,
    };
    let route = match RoutePattern::parse_within(&raw.route, &budget) {
        Ok(r) => r,
        Err(e) => {
            let label = match &e {
                SchemaError::PatternOverBudget(_) => "route_over_budget",
                SchemaError::PatternControlChar(_) => "control_char",
                _ => "bad_route",
            };
            return Outcome::fail(label, format!("bad route: {e}"));
        }
    };
    let backend = match raw.url.as_deref().map(BackendUrl::parse) {
        None => None,
        Some(Ok(u)) => {
            if let Err((label, reason)) = check_backend(&u, peer, config) {
                return Outcome::fail(label, reason);
            }
            Some(u)
        }
        Some(Err(e)) => return Outcome::fail("bad_url", format!("bad backend URL: {e}")),
    };

    // 3. Authenticate. The backend's owner (4.) is probed at the same time
    // when the backend is the client's own address (an unauthenticated
    // client then only makes us connect to itself) and no recent verdict
    // about it is remembered: one round trip instead of two in a row.
    let verified = ctx.pending.verified();
    let ownership_target = if config.ownership.verify {
        backend
            .as_ref()
            .and_then(|u| u.ip().map(|ip| SocketAddr::new(ip, u.port())))
    } else {
        None
    };
    let ownership_ident_port = config.ownership.ident_port.unwrap_or(config.ident.port);
    let early_target = ownership_target
        .filter(|b| canonical_ip(b.ip()) == canonical_ip(peer.ip()) && !verified.knows(*b));
    let early_probe = async {
        match early_target {
            Some(b) => Some(probe(b, ownership_ident_port, config).await),
            None => None,
        }
    };
    tokio::pin!(early_probe);
    let mut early_seen = None;
    let query = IdentQuery {
        peer,
        local_port,
        ident_port: config.ident.port,
        connect_timeout: config.ident.connect_timeout(),
        read_timeout: config.ident.read_timeout(),
    };
    let ident_started = Instant::now();
    let lookup = query.lookup();
    tokio::pin!(lookup);
    let user = loop {
        tokio::select! {
            biased;
            user = &mut lookup => break user,
            seen = &mut early_probe, if early_seen.is_none() => early_seen = Some(seen),
        }
    };
    metrics::histogram!("forge_proxylistener_ident_seconds")
        .record(ident_started.elapsed().as_secs_f64());
    let tool = match user.and_then(|u| tool_of_user(&u, &config.project)) {
        Ok(t) => t,
        Err(e) => {
            // The probe, if still running, is dropped with the request.
            return Outcome::fail(e.label(), format!("ident authentication failed: {e}"));
        }
    };

    // 4. Ownership of a backend that already listens; one that doesn't yet
    // is watched once the route is written.
    let mut watch_later = false;
    if let Some(target) = ownership_target
        && let Some(url) = &backend
    {
        let early = match early_seen {
            Some(seen) => seen,
            None => early_probe.await,
        };
        let verdict = match early {
            Some(seen) => {
                verified.learn(target, &seen, config);
                judge(&seen, url, &tool, &config.project)
            }
            None if verified.verified_for(target, &tool) => {
                count_ownership("verified_remembered");
                Verdict::Verified
            }
            None => {
                let seen = probe(target, ownership_ident_port, config).await;
                verified.learn(target, &seen, config);
                judge(&seen, url, &tool, &config.project)
            }
        };
        match verdict {
            Verdict::Verified => count_ownership("verified"),
            Verdict::NotListening => watch_later = true,
            Verdict::Refused(label, reason) => {
                count_ownership(label);
                return Outcome {
                    reply: Reply::Fail(reason),
                    label,
                    command: None,
                    tool: Some(tool),
                };
            }
        }
        if watch_later && ctx.pending.pending() >= config.ownership.max_pending {
            return Outcome {
                reply: Reply::Fail(format!(
                    "backend {} is not listening and {} registrations already wait for theirs; start the server first, then register",
                    url.authority(),
                    config.ownership.max_pending
                )),
                label: "too_many_pending",
                command: None,
                tool: Some(tool),
            };
        }
    }

    // 5. Write.
    let result = match (raw.command, backend.clone()) {
        (Command::Register, Some(url)) => store
            .register(
                &tool,
                route.as_str(),
                url.as_str(),
                None,
                &config.route_budget,
                &config.durability,
            )
            .await
            .map(|()| "ok"),
        (Command::RegisterCanonical, Some(url)) => store
            .register(
                &tool,
                route.as_str(),
                url.as_str(),
                Some(&config.canonical_domain),
                &config.route_budget,
                &config.durability,
            )
            .await
            .map(|()| "ok"),
        (Command::Unregister, _) => {
            unregister(&tool, &route, peer, config, store, &ctx.pending).await
        }
        (_, None) => Err(StoreError::Other(
            "registration without a backend URL".into(),
        )),
    };
    let (reply, label) = match result {
        Ok(label) => (Reply::Ok, label),
        Err(e) => (Reply::Fail(e.to_string()), e.label()),
    };
    if label == "kept_foreign" {
        let route = escape_controls(route.as_str());
        tracing::info!(%peer, tool = %tool, %route, outcome = label, "unregister left the route in place");
    }
    if watch_later
        && reply == Reply::Ok
        && let Some(url) = &backend
    {
        count_ownership("deferred");
        let watched = ctx.pending.watch(
            &tool,
            route.as_str(),
            url,
            Arc::clone(config),
            store.clone(),
            shutdown.clone(),
        );
        if !watched {
            // Only when the cap filled up between the check above and now.
            tracing::warn!(%peer, tool = %tool, backend = %url, "backend not listening and too many registrations wait for theirs: this one is not watched");
        }
    }
    Outcome {
        reply,
        label,
        command: None,
        tool: Some(tool),
    }
}

/// Removes the route if it points at this client (or nowhere). A route that
/// points at another host belongs to a newer registration: it is left alone
/// and the client still hears `ok` (its own registration is gone). The
/// removed route's backend is forgotten as verified: registering it again is
/// probed again.
async fn unregister(
    tool: &ToolName,
    route: &RoutePattern,
    peer: SocketAddr,
    config: &Config,
    store: &RouteStore,
    ownership: &PendingChecks,
) -> Result<&'static str, StoreError> {
    for _ in 0..5 {
        let current = store.backend_of(tool, route.as_str()).await?;
        if let Some(url) = &current {
            let ours = BackendUrl::parse(url)
                .ok()
                .and_then(|u| u.ip())
                .is_some_and(|ip| config.policy.backend_host_allowed(peer.ip(), ip));
            if !ours {
                return Ok("kept_foreign");
            }
        }
        if store
            .unregister_if(tool, route.as_str(), current.as_deref(), &config.durability)
            .await?
        {
            if let Some(backend) = current
                .as_deref()
                .and_then(|u| BackendUrl::parse(u).ok())
                .and_then(|u| u.ip().map(|ip| SocketAddr::new(ip, u.port())))
            {
                ownership.verified().forget(backend);
            }
            return Ok(if current.is_some() { "ok" } else { "absent" });
        }
        // It changed between our look and our delete: look again.
    }
    Err(StoreError::Other(
        "the route kept changing while it was being removed; try again".into(),
    ))
}

/// The policy checks on a backend: IP host = the client (or an allowed
/// network), port in range.
fn check_backend(
    url: &BackendUrl,
    peer: SocketAddr,
    config: &Config,
) -> Result<(), (&'static str, String)> {
    let p = &config.policy;
    let Some(ip) = url.ip() else {
        return Err((
            "backend_not_ip",
            format!(
                "backend host {:?} must be an IP address (this client's own, {})",
                url.host(),
                canonical_ip(peer.ip())
            ),
        ));
    };
    if !p.backend_host_allowed(peer.ip(), ip) {
        return Err((
            "backend_foreign_host",
            format!(
                "backend host {ip} is not this client's address {}",
                canonical_ip(peer.ip())
            ),
        ));
    }
    if url.port() < p.min_backend_port || url.port() > p.max_backend_port {
        return Err((
            "backend_port",
            format!(
                "backend port {} is outside the allowed range {}-{}",
                url.port(),
                p.min_backend_port,
                p.max_backend_port
            ),
        ));
    }
    Ok(())
}
