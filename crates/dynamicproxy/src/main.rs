//! `dynamicproxy`: wiring only — flags and configuration, then
//! [`dynamicproxy::run_with`] on listeners taken through the bootstrap.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use dynamicproxy::config::{Config, ENV_PREFIX};
use dynamicproxy::{Listeners, Settings};
use forge_core::cli::CommonArgs;
use forge_core::{ConfigSource, Daemon, Loaded, Reloadable, Sockets};

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
/// certificates. Sockets passed by systemd (named http, https, admin) are
/// used instead of binding. See docs/dynamicproxy.md.
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

fn load(args: &Args) -> Result<(Loaded<Config>, Settings), forge_core::ConfigError> {
    let domains = (!args.domains.is_empty()).then(|| args.domains.clone());
    let upstream = args.default_upstream.clone();
    let loaded = ConfigSource::new(args.common.config.clone(), ENV_PREFIX)
        .cli("redis.url", "--redis", args.redis.clone())
        .cli("listen_http", "--listen-http", args.listen_http.clone())
        .cli("listen_admin", "--listen-admin", args.listen_admin.clone())
        .cli("default_upstream", "--default-upstream", upstream)
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
    let (loaded, settings) = load(&args).unwrap_or_else(|e| {
        eprintln!("dynamicproxy: {e}");
        std::process::exit(2)
    });
    if args.common.finish_config_flags(&loaded) {
        return Ok(());
    }
    // Before any thread starts: this clears LISTEN_FDS and friends.
    let sockets = Sockets::from_env()?;
    // Route sync, the admin endpoint and reloads; client connections are
    // served by the proxy's own worker threads (`server.workers`).
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(serve(args, sockets, (loaded, settings)))
}

type Start = (Loaded<Config>, Settings);

async fn serve(args: Args, mut sockets: Sockets, (loaded, settings): Start) -> anyhow::Result<()> {
    let started = loaded.config.clone();
    let log = forge_core::telemetry::init_logging(&started.log).context("setting up logging")?;
    let daemon = Daemon::new("dynamicproxy", &loaded.generation).with_log_control(log);
    let listeners = Listeners::take(&mut sockets, &started).await?;
    sockets.finish();
    daemon.handle_signals().context("signal handlers")?;
    let settings = Reloadable::new(settings);
    let files: Vec<PathBuf> = args.common.config.iter().cloned().collect();
    daemon.spawn_reloader("dynamicproxy settings", files, &settings, move || {
        let (loaded, settings) = load(&args)?;
        if started.changes_at_restart(&loaded.config) {
            tracing::warn!(
                "listener, admin token, worker, redis and routes settings change only at restart"
            );
        }
        Ok::<_, forge_core::ConfigError>((settings, loaded.generation))
    });
    dynamicproxy::run_with(listeners, loaded.config, settings, daemon)
        .await
        .context("dynamicproxy")
}
