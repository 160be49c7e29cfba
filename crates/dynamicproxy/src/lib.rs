//! dynamicproxy: the Redis-routed front proxy of the tool-hosting edge.
//!
//! A request for `<tool>.<domain>` goes to the backend registered in Redis
//! under `prefix:<tool>` (or to a `frontend:<fqdn>` member), anything else to
//! the default upstream — the Kubernetes ingress. Unlike today's nginx + Lua
//! hook, no request waits for Redis: the whole route table lives in memory.
//!
//! * [`table`] — the [`RouteTable`](table::RouteTable): compiled routes
//!   (entries over the route budget ignored and counted), the routing order,
//!   the on-disk snapshot.
//! * [`sync`] — [`RouteSync`](sync::RouteSync): full loads, keyspace
//!   notifications, periodic resync, Redis health.
//! * [`proxy`] — the HTTP/1.1 + HTTP/2 server and the pooled client; bodies
//!   buffered and read with a timeout, client identity headers stripped.
//! * [`workers`] — the threads that serve client connections, one
//!   single-threaded runtime each.
//! * [`framing`] — a watch on the bytes below hyper: request heads bounded
//!   (431/414) by a linear scanner that hands hyper whole heads, requests
//!   framed by both `Content-Length` and `Transfer-Encoding` refused (also
//!   behind a refused upgrade), silent connections failed at their deadline.
//! * [`activity`] — when a client connection with nothing in flight is
//!   closed (header timeout from accept, idle timeout between requests), and
//!   whether a request that asked to switch protocols did.
//! * [`malformed`] — requests nginx refuses and the proxy refuses alike:
//!   paths climbing above `/` or holding a NUL, empty host labels,
//!   `CONNECT`, `OPTIONS *`.
//! * [`guard`] — rate limit, User-Agent / Referer / IP blocks.
//! * [`pages`] — the proxy's own error pages, favicon and robots.txt.
//! * [`tls`] — TLS termination: certificates by SNI from a directory,
//!   replaced on reload.
//! * [`admin`] — `/list` next to forge-core's `/healthz`, `/metrics`, ….
//! * [`metrics`] — the Prometheus metrics, resolved once.
//! * [`config`] — the configuration, documented in `docs/dynamicproxy.md`.
//!
//! [`run`] is the entry point: it takes bound listeners ([`Listeners::take`]
//! binds them, or takes the sockets systemd passed), the configuration and a
//! [`Shutdown`], so tests run the proxy in-process on port 0; [`run_with`]
//! takes reloadable settings and the whole [`Daemon`] bootstrap.

pub mod activity;
pub mod admin;
pub mod config;
pub mod framing;
pub mod guard;
pub mod malformed;
pub mod metrics;
pub mod pages;
pub mod proxy;
pub mod sync;
pub mod table;
pub mod tls;
pub mod workers;

use std::sync::Arc;

use forge_core::daemon::{ListenError, Sockets};
use forge_core::{Daemon, Reloadable, Shutdown};
use tokio::net::TcpListener;

pub use config::{Config, Settings};

/// The listeners the proxy serves, already bound.
#[derive(Debug)]
pub struct Listeners {
    /// Plain HTTP (HTTP/1.1, and HTTP/2 with prior knowledge).
    pub http: TcpListener,
    /// The admin endpoint.
    pub admin: TcpListener,
    /// TLS (HTTP/2 and HTTP/1.1 by ALPN); needs `tls.dir`.
    pub https: Option<TcpListener>,
}

impl Listeners {
    /// The listeners `config` names, each the socket systemd passed under
    /// its name (`http`, `https`, `admin`) or else bound to its address.
    pub async fn take(sockets: &mut Sockets, config: &Config) -> Result<Self, ListenError> {
        let http = sockets.listener("http", &config.listen_http).await?;
        let admin = sockets.listener("admin", &config.listen_admin).await?;
        let https = match &config.listen_https {
            Some(addr) => Some(sockets.listener("https", addr).await?),
            None => None,
        };
        Ok(Listeners { http, admin, https })
    }
}

/// Why the proxy could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is refused.
    #[error("configuration: {0}")]
    Config(String),
    /// The Redis client could not be set up.
    #[error(transparent)]
    Redis(#[from] forge_core::redis::RedisSetupError),
    /// A listener or worker thread failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// The certificates can't be loaded.
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
}

/// Runs the proxy until `shutdown`, with a fixed configuration.
pub async fn run(listeners: Listeners, config: Config, shutdown: Shutdown) -> Result<(), Error> {
    let settings = config.settings().map_err(Error::Config)?;
    let generation = forge_core::config::generation_of(&config);
    let daemon = Daemon {
        shutdown,
        ..Daemon::new("dynamicproxy", &generation)
    };
    run_with(listeners, config, Reloadable::new(settings), daemon).await
}

/// Runs the proxy until `daemon.shutdown`; request-handling `settings` may
/// be replaced while it runs, `daemon.board` carries its health, and each
/// `daemon.reload` request re-reads the TLS certificates.
pub async fn run_with(
    listeners: Listeners,
    config: Config,
    settings: Arc<Reloadable<Settings>>,
    daemon: Daemon,
) -> Result<(), Error> {
    let Daemon {
        board,
        shutdown,
        reload,
    } = daemon.clone();
    forge_core::cli::install_crypto_provider();
    let tls = match (&listeners.https, &config.tls.dir) {
        (Some(_), Some(dir)) => Some(tls::CertResolver::new(dir)?),
        (Some(_), None) => return Err(Error::Config("an HTTPS listener needs tls.dir".into())),
        _ => None,
    };
    if let Some(resolver) = &tls {
        let resolver = resolver.clone();
        let mut rx = reload.subscribe();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = rx.recv() => {
                        if matches!(r, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                            break;
                        }
                        if let Err(e) = resolver.reload() {
                            tracing::error!(error = %e, "TLS reload refused; keeping the certificates in force");
                        }
                    }
                    _ = shutdown.triggered() => break,
                }
            }
        });
    }
    let metrics = metrics::Metrics::register();
    let routes = Arc::new(table::Routes::with_limits(table::RouteLimits {
        budget: config.route_budget,
        max_match_path_bytes: config.routes.max_match_path_bytes,
    }));
    let status = Arc::new(sync::SyncStatus::default());
    // Routes are only read: from a (local) replica when `routes.read_url`
    // is set, else from the master `[redis]` names.
    let read_redis = match &config.routes.read_url {
        Some(url) => forge_core::redis::RedisSettings {
            url: url.clone(),
            sentinels: Vec::new(),
            ..config.redis.clone()
        },
        None => config.redis.clone(),
    };
    daemon.report_master(&read_redis, config.routes.health_interval())?;
    let route_sync = sync::RouteSync::new(
        config.routes.clone(),
        &read_redis,
        routes.clone(),
        status.clone(),
        board.clone(),
        metrics.clone(),
    )?;
    board.set_field("redis", read_redis.describe());
    if config.routes.startup == config::Startup::Snapshot {
        route_sync.load_snapshot();
    }
    route_sync.report();
    let sync_task = tokio::spawn(route_sync.run(shutdown.clone()));
    let admin_router = admin::router(board, routes.clone(), status.clone(), metrics.clone());
    let admin_task = daemon
        .serve_admin(
            listeners.admin,
            admin_router,
            config.admin_token_file.as_deref(),
        )
        .map_err(|e| Error::Config(e.to_string()))?;

    if !status.is_ready() {
        tracing::info!("waiting for the first route table from Redis before serving");
    }
    tokio::select! {
        _ = status.wait_ready() => {}
        _ = shutdown.triggered() => {}
    }
    if !shutdown.is_triggered() {
        daemon.ready(|| true);
        tracing::info!(
            addr = ?listeners.http.local_addr().ok(),
            "serving"
        );
        let proxy = proxy::Proxy::new(routes, settings, &config.upstream, metrics);
        let https = match (listeners.https, tls) {
            (Some(listener), Some(resolver)) => Some((
                listener,
                tokio_rustls::TlsAcceptor::from(Arc::new(resolver.server_config())),
            )),
            _ => None,
        };
        if let Err(e) = workers::serve(
            listeners.http,
            https,
            proxy,
            config.server.clone(),
            shutdown.clone(),
        )
        .await
        {
            // Stop the rest too: a proxy that can't serve must not look up.
            shutdown.trigger();
            let _ = sync_task.await;
            let _ = admin_task.await;
            return Err(Error::Io(e));
        }
    }
    let _ = sync_task.await;
    match admin_task.await {
        Ok(r) => r?,
        Err(e) => tracing::warn!(error = %e, "admin task failed"),
    }
    Ok(())
}
