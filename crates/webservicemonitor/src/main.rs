//! `webservicemonitor`: wiring only — flags, configuration, logging, the admin
//! listener, signals; the loop is `webservicemonitor::run`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use forge_core::cli::CommonArgs;
use forge_core::lifecycle::{self, systemd};
use forge_core::{ConfigSource, Loaded, ReloadSignal, Reloadable, Shutdown, StatusBoard};
use fred::prelude::ClientLike;
use webservicemonitor::{MonitorConfig, RunOptions, Store};

/// Keeps tools' web services running.
///
/// Every interval (`pass.interval_secs`, 60 s) it reads each tool's
/// service.manifest, asks the job scheduler which jobs run, reads the active
/// proxy's /list, probes registered backends, and restarts web services that
/// should run but don't — at most `throttle.max_restarts` times per tool per
/// `throttle.window_secs` (kept in Redis). Only the monitor holding the Redis
/// lease acts, so it can run on two hosts. SIGHUP reloads the configuration
/// (effective at the next pass). See docs/webservicemonitor.md.
#[derive(Debug, Parser)]
#[command(name = "webservicemonitor", version = forge_core::VERSION)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Make one pass, print what was done, and exit (status 1 if the pass failed).
    #[arg(long)]
    once: bool,
    /// Decide and print the decisions, change nothing (no lease, no throttle
    /// records, no route removal, no restarts). Implies --once.
    #[arg(long)]
    dry_run: bool,
    /// Redis URL (overrides `redis.url`).
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Directory of tool homes (overrides `tools.root`).
    #[arg(long, value_name = "DIR")]
    tools_root: Option<PathBuf>,
    /// URL of the proxy's /list (overrides `proxy.list_url`).
    #[arg(long, value_name = "URL")]
    list_url: Option<String>,
    /// Admin listen address (overrides `admin.listen`).
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,
}

fn load(args: &Args) -> anyhow::Result<Loaded<MonitorConfig>> {
    let loaded = ConfigSource::new(args.common.config.clone(), "FORGE_WEBSERVICEMONITOR")
        .cli("redis.url", "--redis", args.redis.clone())
        .cli(
            "tools.root",
            "--tools-root",
            args.tools_root.as_ref().map(|p| p.display().to_string()),
        )
        .cli("proxy.list_url", "--list-url", args.list_url.clone())
        .cli("admin.listen", "--admin", args.admin.clone())
        .load::<MonitorConfig>()?;
    if let Err((key, reason)) = loaded.config.validate() {
        return Err(loaded.invalid(&key, reason).into());
    }
    Ok(loaded)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match real_main().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("webservicemonitor: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn real_main() -> anyhow::Result<std::process::ExitCode> {
    forge_core::cli::generate_if_asked::<Args>("webservicemonitor");
    let args = Args::parse();
    let loaded = load(&args)?;
    if args.common.finish_config_flags(&loaded) {
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let config = loaded.config.clone();
    let log = forge_core::telemetry::init_logging(&config.log).context("logging")?;
    let board = StatusBoard::new("webservicemonitor", forge_core::VERSION, &loaded.generation);
    board.set_log_control(log.clone());

    let redis = config.redis.client().context("Redis client")?;
    // Follows Sentinel's master switches at once (throttle and lease writes
    // then go to the new master, not a paused or cut-off old one).
    let master_watch =
        forge_core::redis::MasterWatch::start(&config.redis).context("Redis client")?;
    master_watch.follow(&redis);
    // Connect in the background with endless reconnects: while Redis is
    // unreachable a pass reports the error and restarts nothing, and the
    // daemon keeps running until it is back.
    let _connection = redis.connect();
    let waited = tokio::time::timeout(Duration::from_secs(5), redis.wait_for_connect()).await;
    if !matches!(waited, Ok(Ok(()))) {
        tracing::warn!(
            redis = %config.redis.describe(),
            "Redis not reachable yet; passes fail (and restart nothing) until it is"
        );
    }
    let store = Store::new(redis);

    let shutdown = Shutdown::new();
    let reload = ReloadSignal::new();
    lifecycle::spawn_signal_handler(shutdown.clone(), reload.clone()).context("signals")?;

    let live = Reloadable::new(config.clone());
    let once = args.once || args.dry_run;
    if !once {
        let listener = tokio::net::TcpListener::bind(&config.admin.listen)
            .await
            .with_context(|| format!("binding admin listener {}", config.admin.listen))?;
        forge_core::admin::install_admin_token(&board, config.admin.token_file.as_deref())?;
        let router = forge_core::admin::router(Arc::clone(&board));
        let s = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = forge_core::admin::serve(listener, router, s).await {
                tracing::error!(error = %e, "admin endpoint failed");
            }
        });
        // The Redis master this host sees, on /status (forgectl status).
        let master_probe = config.redis.client().context("Redis client")?;
        drop(fred::prelude::ClientLike::connect(&master_probe));
        forge_core::redis::report_master(
            master_probe,
            Arc::clone(&board),
            std::time::Duration::from_secs(2),
            shutdown.clone(),
        );
        let files: Vec<PathBuf> = args.common.config.iter().cloned().collect();
        let reload_args = ArgsForReload::from(&args);
        let board_for_reload = Arc::clone(&board);
        let log_for_reload = log.clone();
        live.spawn_reloader(
            "configuration",
            files,
            reload,
            shutdown.clone(),
            move || {
                let loaded = reload_args.load()?;
                board_for_reload.set_generation(&loaded.generation);
                if let Err(e) = log_for_reload.set_filter(&loaded.config.log.filter) {
                    tracing::warn!(error = %e, "log filter not changed");
                }
                Ok::<_, anyhow::Error>(loaded.config)
            },
        );
        systemd::ready();
        let b = Arc::clone(&board);
        systemd::spawn_watchdog(shutdown.clone(), move || {
            b.overall() != forge_core::CheckState::Failing
        });
        tracing::info!(
            interval = config.pass.interval_secs,
            root = %config.tools.root.display(),
            admin = %config.admin.listen,
            "webservicemonitor started"
        );
    }
    let report = webservicemonitor::run(
        live,
        store,
        board,
        RunOptions {
            once,
            dry_run: args.dry_run,
        },
        shutdown,
    )
    .await;
    if once {
        print!("{}", report.render_text());
        if report.error.is_some() {
            return Ok(std::process::ExitCode::FAILURE);
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// The flags a reload re-applies (the parsed `Args` isn't `Send + 'static`-friendly).
#[derive(Debug, Clone)]
struct ArgsForReload {
    config: Option<PathBuf>,
    redis: Option<String>,
    tools_root: Option<PathBuf>,
    list_url: Option<String>,
    admin: Option<String>,
}

impl From<&Args> for ArgsForReload {
    fn from(a: &Args) -> Self {
        ArgsForReload {
            config: a.common.config.clone(),
            redis: a.redis.clone(),
            tools_root: a.tools_root.clone(),
            list_url: a.list_url.clone(),
            admin: a.admin.clone(),
        }
    }
}

impl ArgsForReload {
    fn load(&self) -> anyhow::Result<Loaded<MonitorConfig>> {
        load(&Args {
            common: CommonArgs {
                config: self.config.clone(),
                print_config: false,
                check_config: false,
            },
            once: false,
            dry_run: false,
            redis: self.redis.clone(),
            tools_root: self.tools_root.clone(),
            list_url: self.list_url.clone(),
            admin: self.admin.clone(),
        })
    }
}
