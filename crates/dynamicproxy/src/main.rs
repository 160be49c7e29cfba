//! `dynamicproxy`: wiring only — flags, configuration, logging, listeners,
//! signals — then [`dynamicproxy::run_with`].

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use dynamicproxy::config::{Config, ENV_PREFIX};
use dynamicproxy::{Listeners, Settings};
use forge_core::cli::CommonArgs;
use forge_core::{ConfigSource, Loaded, ReloadSignal, Reloadable, Shutdown, StatusBoard};

/// The Redis-routed front proxy.
///
/// Routes `<tool>.<domain>` to the backend registered in Redis under
/// `prefix:<tool>` (and `frontend:<fqdn>` sets), everything else to the
/// default upstream. Routes are held in memory and follow Redis through
/// keyspace notifications and a periodic full resync; while Redis is down
/// the last known table keeps serving and /healthz says so.
///
/// Every flag can also be set in the configuration file or with an
/// environment variable FORGE_PROXY_<KEY> (nested keys: FORGE_PROXY_REDIS__URL).
/// SIGHUP (or saving the config file) reloads the request-handling settings
/// without dropping requests: domains, default upstream, outside_domain,
/// forwarded_for, maintenance, limits.* (rate limit, User-Agent / Referer /
/// IP blocks), pages.dir, response_headers, access_log.*, and the TLS
/// certificates. See docs/dynamicproxy.md.
#[derive(Debug, Parser)]
#[command(name = "dynamicproxy", version = forge_core::VERSION)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Redis URL holding the routes (redis://host:port[/db]) [key: redis.url].
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Address of the HTTP listener [key: listen_http; default 0.0.0.0:80].
    #[arg(long, value_name = "ADDR")]
    listen_http: Option<String>,
    /// Address of the admin listener (/list, /metrics, /healthz)
    /// [key: listen_admin; default 127.0.0.1:8081].
    #[arg(long, value_name = "ADDR")]
    listen_admin: Option<String>,
    /// Where unrouted requests go, http://host:port [key: default_upstream].
    #[arg(long, value_name = "URL")]
    default_upstream: Option<String>,
    /// A served domain; repeat for several [key: domains].
    #[arg(long = "domain", value_name = "DOMAIN")]
    domains: Vec<String>,
    /// Address of the TLS listener (HTTP/2 + HTTP/1.1) [key: listen_https].
    #[arg(long, value_name = "ADDR")]
    listen_https: Option<String>,
    /// Directory of <name>.crt + <name>.key certificate pairs, chosen by SNI,
    /// re-read on SIGHUP [key: tls.dir].
    #[arg(long, value_name = "DIR")]
    tls_dir: Option<String>,
}

fn load(
    args: &Args,
    path: Option<PathBuf>,
) -> Result<(Loaded<Config>, Settings), forge_core::ConfigError> {
    let domains = if args.domains.is_empty() {
        None
    } else {
        Some(toml::Value::Array(
            args.domains
                .iter()
                .map(|d| toml::Value::String(d.clone()))
                .collect(),
        ))
    };
    let loaded = ConfigSource::new(path, ENV_PREFIX)
        .cli("redis.url", "--redis", args.redis.clone())
        .cli("listen_http", "--listen-http", args.listen_http.clone())
        .cli("listen_admin", "--listen-admin", args.listen_admin.clone())
        .cli(
            "default_upstream",
            "--default-upstream",
            args.default_upstream.clone(),
        )
        .cli("domains", "--domain", domains)
        .cli("listen_https", "--listen-https", args.listen_https.clone())
        .cli("tls.dir", "--tls-dir", args.tls_dir.clone())
        .load::<Config>()?;
    let settings = Config::validate(&loaded)?;
    Ok((loaded, settings))
}

fn main() -> anyhow::Result<()> {
    forge_core::cli::generate_if_asked::<Args>("dynamicproxy");
    let args = Args::parse();
    let (loaded, settings) = match load(&args, args.common.config.clone()) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("dynamicproxy: {e}");
            std::process::exit(2);
        }
    };
    if args.common.finish_config_flags(&loaded) {
        return Ok(());
    }
    // Route sync, the admin endpoint and reloads; client connections are
    // served by the proxy's own worker threads (`server.workers`).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(args, loaded, settings))
}

async fn serve(args: Args, loaded: Loaded<Config>, settings: Settings) -> anyhow::Result<()> {
    let config = loaded.config.clone();
    let log = forge_core::telemetry::init_logging(&config.log).context("setting up logging")?;
    let board = StatusBoard::new("dynamicproxy", forge_core::VERSION, &loaded.generation);
    board.set_log_control(log);

    let http = tokio::net::TcpListener::bind(&config.listen_http)
        .await
        .with_context(|| format!("binding the HTTP listener {}", config.listen_http))?;
    let admin = tokio::net::TcpListener::bind(&config.listen_admin)
        .await
        .with_context(|| format!("binding the admin listener {}", config.listen_admin))?;

    let https = match &config.listen_https {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the HTTPS listener {addr}"))?,
        ),
        None => None,
    };

    let shutdown = Shutdown::new();
    let reload = ReloadSignal::new();
    forge_core::lifecycle::spawn_signal_handler(shutdown.clone(), reload.clone())
        .context("installing signal handlers")?;
    let settings = Reloadable::new(settings);
    let path = args.common.config.clone();
    let board2 = board.clone();
    settings.spawn_reloader(
        "dynamicproxy settings",
        path.iter().cloned().collect(),
        reload.clone(),
        shutdown.clone(),
        move || {
            let (loaded, settings) = load(&args, path.clone())?;
            if loaded.config.redis != config.redis
                || loaded.config.routes != config.routes
                || loaded.config.listen_http != config.listen_http
                || loaded.config.listen_admin != config.listen_admin
                || loaded.config.admin_token_file != config.admin_token_file
                || loaded.config.server.workers != config.server.workers
            {
                tracing::warn!(
                    "listener, admin token, worker, redis and routes settings change only at restart"
                );
            }
            board2.set_generation(&loaded.generation);
            Ok::<_, forge_core::ConfigError>(settings)
        },
    );
    forge_core::lifecycle::systemd::spawn_watchdog(shutdown.clone(), || true);
    dynamicproxy::run_with(
        Listeners { http, admin, https },
        loaded.config,
        settings,
        board,
        reload,
        shutdown,
    )
    .await
    .context("dynamicproxy")
}
