//! `proxylistener`: wires flags, configuration, logging, listeners and signals
//! to [`proxylistener::run`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use forge_core::cli::CommonArgs;
use forge_core::lifecycle::{self, systemd};
use forge_core::{ConfigSource, ReloadSignal, Reloadable, Shutdown, StatusBoard, admin};
use proxylistener::config::{Config, ENV_PREFIX};
use proxylistener::{Context, RouteStore};

/// The registration daemon of the tool-hosting proxy.
///
/// Tools' web services register their backend for a route with
/// `register\n<route>\n<url>\n` (or `registerCanonical`, `unregister`) on
/// port 8282; each request gets one reply line, `ok` or `fail: <reason>`.
/// Clients are authenticated by ident (RFC 1413) and may only register
/// backends on their own address. Registrations go to Redis atomically.
///
/// Configuration: a TOML file (--config), FORGE_PROXYLISTENER_<SECTION>__<KEY>
/// environment variables, then these flags. SIGHUP (or editing the file)
/// reloads everything except the listen addresses and Redis. See
/// docs/proxylistener.md for every key.
#[derive(Debug, Parser)]
#[command(name = "proxylistener", version, verbatim_doc_comment)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Redis URL (`redis://host:port/db`); overrides `redis.url`.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Registration listener address; overrides `listen` (default 0.0.0.0:8282).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Admin listener (/healthz, /status, /metrics, /log-filter); overrides
    /// `listen_admin` (default 127.0.0.1:9282).
    #[arg(long, value_name = "ADDR")]
    listen_admin: Option<String>,
    /// Port of the identd on clients' hosts; overrides `ident.port`
    /// (default 113).
    #[arg(long, value_name = "PORT")]
    ident_port: Option<u16>,
}

fn main() -> ExitCode {
    forge_core::cli::generate_if_asked::<Args>("proxylistener");
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("proxylistener: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proxylistener: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn source(args: &Args) -> ConfigSource {
    ConfigSource::new(args.common.config.clone(), ENV_PREFIX)
        .cli("redis.url", "--redis", args.redis.clone())
        .cli("listen", "--listen", args.listen.clone())
        .cli("listen_admin", "--listen-admin", args.listen_admin.clone())
        .cli("ident.port", "--ident-port", args.ident_port.map(i64::from))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let loaded = Config::load(&source(&args))?;
    if args.common.finish_config_flags(&loaded) {
        return Ok(());
    }
    let log = forge_core::telemetry::init_logging(&loaded.config.log)?;
    // Install the Prometheus recorder now: metrics recorded before it exists are lost.
    forge_core::telemetry::metrics_handle();
    let board = StatusBoard::new("proxylistener", forge_core::VERSION, &loaded.generation);
    board.set_log_control(log.clone());
    let config = loaded.config.clone();
    board.set_field("listen", config.listen.clone());
    board.set_field("redis", config.redis.describe());
    admin::install_admin_token(&board, config.admin_token_file.as_deref())?;

    let listen: std::net::SocketAddr = config
        .listen
        .parse()
        .with_context(|| format!("listen address {:?}", config.listen))?;
    let listener = proxylistener::server::bind(listen, config.limits.listen_backlog)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let backlog = config.limits.listen_backlog;
    if let Some(cap) = proxylistener::server::somaxconn()
        && cap < backlog
    {
        tracing::warn!(
            listen_backlog = backlog,
            somaxconn = cap,
            "limits.listen_backlog is above net.core.somaxconn: the kernel caps the accept queue at {cap}; raise the sysctl"
        );
    }
    let admin_listener = tokio::net::TcpListener::bind(&config.listen_admin)
        .await
        .with_context(|| format!("cannot listen on {} (admin)", config.listen_admin))?;
    let store = RouteStore::connect(&config.redis).context("Redis settings")?;

    let shutdown = Shutdown::new();
    let reload = ReloadSignal::new();
    lifecycle::spawn_signal_handler(shutdown.clone(), reload.clone())
        .context("cannot install signal handlers")?;

    let live = Reloadable::new(config.clone());
    let files: Vec<PathBuf> = args.common.config.iter().cloned().collect();
    let reload_source = source(&args);
    let reload_board = Arc::clone(&board);
    let started_with = config.clone();
    live.spawn_reloader(
        "config",
        files,
        reload.clone(),
        shutdown.clone(),
        move || {
            let loaded = Config::load(&reload_source)?;
            let new = &loaded.config;
            if new.listen != started_with.listen
                || new.listen_admin != started_with.listen_admin
                || new.admin_token_file != started_with.admin_token_file
                || new.limits.listen_backlog != started_with.limits.listen_backlog
                || new.redis != started_with.redis
            {
                tracing::warn!(
                    "listen, listen_admin, admin_token_file, limits.listen_backlog and [redis] changes take effect only after a restart"
                );
            }
            if new.log.filter != started_with.log.filter
                && let Err(e) = log.set_filter(&new.log.filter)
            {
                tracing::warn!(error = %e, "log filter not changed");
            }
            reload_board.set_generation(&loaded.generation);
            Ok::<_, forge_core::ConfigError>(loaded.config)
        },
    );

    tokio::spawn(admin::serve(
        admin_listener,
        admin::router(Arc::clone(&board)),
        shutdown.clone(),
    ));
    proxylistener::spawn_health_check(
        Arc::clone(&board),
        store.clone(),
        Duration::from_secs(5),
        shutdown.clone(),
    );
    // The Redis master this host sees, on /status (for `forgectl status`).
    let master_probe = config.redis.client().context("Redis settings")?;
    drop(fred::prelude::ClientLike::connect(&master_probe));
    forge_core::redis::report_master(
        master_probe,
        Arc::clone(&board),
        Duration::from_secs(2),
        shutdown.clone(),
    );
    if !store.wait_connected(Duration::from_secs(2)).await {
        tracing::warn!(redis = %config.redis.describe(), "Redis is not reachable yet; requests fail until it is");
    }
    // Says in the log what a write waits for (`min_replicas`).
    store.min_replicas(&config.durability).await;
    systemd::ready();
    systemd::spawn_watchdog(shutdown.clone(), || true);
    tracing::info!(listen = %config.listen, admin = %config.listen_admin, redis = %config.redis.describe(), generation = %loaded.generation, "proxylistener started");

    proxylistener::run(
        listener,
        Context {
            config: live,
            store: store.clone(),
            pending: proxylistener::PendingChecks::default(),
        },
        shutdown,
    )
    .await?;
    store.quit().await;
    tracing::info!("proxylistener stopped");
    Ok(())
}
