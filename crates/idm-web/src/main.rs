//! `idm-web`: the identity self-service web app and its operator commands.
//! Only wiring lives here; see the library for what each part does.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use forge_core::cli::CommonArgs;
use forge_core::lifecycle::{self, systemd};
use forge_core::{ConfigSource, ReloadSignal, Shutdown, StatusBoard};
use idm_web::config::{Config, ENV_PREFIX};
use idm_web::jobs::JobQueues;
use idm_web::{Core, blocklist};

/// The identity self-service web app: developer signup with e-mail
/// activation, LDAP accounts, database-backed sessions.
///
/// Configuration: a TOML file (--config), overridden by FORGE_IDM_<SECTION>__<KEY>
/// environment variables (e.g. FORGE_IDM_DATABASE__URL). Every key is described in
/// docs/idm-web.md. Database migrations are applied at start of every command.
#[derive(Debug, Parser)]
#[command(name = "idm-web", version, about, long_about)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Option<Command>,
    /// For the timer commands (sync-username-block, expire-signups) on several
    /// hosts: run only if no host ran the command successfully within SECS
    /// seconds. The run holds the Redis lease `forge:lease:idm-<command>` for
    /// SECS (released again if it fails, so another host retries), so one host
    /// runs it per period and any other takes over when that host is gone —
    /// a failover needs no Puppet run.
    #[arg(long, global = true, value_name = "SECS")]
    once_per: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the web app (the default). SIGTERM drains, SIGHUP is accepted
    /// (configuration changes need a restart, which logs no one out).
    Serve {
        /// Listen address, overriding http.listen.
        #[arg(long)]
        listen: Option<String>,
        /// Admin listen address (/healthz, /metrics, /status), overriding admin.listen.
        #[arg(long)]
        admin_listen: Option<String>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Read each configured wiki's title blacklist and whitelist pages
    /// (blocklist.sources) and store their lines (daily timer). Prints every
    /// line it adds, drops and keeps. A failed fetch keeps that wiki's
    /// entries; lines no longer listed are dropped once unseen for
    /// blocklist.stale_days. Needs blocklist.contact (the wikis' User-Agent
    /// policy).
    SyncUsernameBlock {
        /// Print exactly what a sync would add, drop and keep; change nothing.
        #[arg(long)]
        check: bool,
    },
    /// Delete signups never activated within N days, freeing their names (daily timer).
    ExpireSignups {
        /// Age in days (default: signup.expiry_days).
        #[arg(long)]
        days: Option<i64>,
        /// List what would be deleted; delete nothing.
        #[arg(long)]
        check: bool,
    },
    /// Print the activation link of a pending signup (support staff).
    ActivationLink {
        /// The signup's shell name.
        uid: String,
        /// Invalidate every earlier link first (and print the new one).
        #[arg(long)]
        regenerate: bool,
        /// Also mail the link to the signup's address (needs Redis).
        #[arg(long)]
        send: bool,
    },
}

fn load(
    common: &CommonArgs,
    listen: Option<String>,
    admin: Option<String>,
) -> anyhow::Result<Option<(Config, idm_web::config::Secrets, String)>> {
    let source = ConfigSource::new(common.config.clone(), ENV_PREFIX)
        .cli("http.listen", "--listen", listen)
        .cli("admin.listen", "--admin-listen", admin);
    let loaded = source.load::<Config>()?;
    let secrets = Config::validate(&loaded)?;
    if common.finish_config_flags(&loaded) {
        return Ok(None);
    }
    Ok(Some((loaded.config, secrets, loaded.generation)))
}

/// Takes the timer lease `idm-<name>` for `secs`; `None` when another host
/// holds it (it ran within the period).
async fn timer_lease(
    config: &Config,
    name: &str,
    secs: u64,
) -> anyhow::Result<Option<(fred::prelude::Client, forge_core::lease::Lease)>> {
    let client = config.redis.client().context("redis settings")?;
    fred::prelude::ClientLike::init(&client)
        .await
        .context("connecting to Redis for the timer lease")?;
    let lease = forge_core::lease::Lease::new(
        &format!("idm-{name}"),
        &forge_core::lease::Lease::default_holder(),
        Duration::from_secs(secs.max(1)),
    );
    if lease.try_acquire(&client).await? {
        Ok(Some((client, lease)))
    } else {
        let holder = forge_core::lease::Lease::holder_of(&client, &lease.name).await?;
        println!(
            "skipped: {name} ran within the last {secs} s (lease held by {})",
            holder.unwrap_or_else(|| "?".into())
        );
        Ok(None)
    }
}

async fn redis_queues(config: &Config) -> anyhow::Result<JobQueues> {
    let pool = config.redis.pool().context("redis settings")?;
    fred::prelude::ClientLike::init(&pool)
        .await
        .context("connecting to Redis")?;
    Ok(JobQueues::configured(pool, &config.redis, &config.queue).await)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match real_main().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("idm-web: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn real_main() -> anyhow::Result<std::process::ExitCode> {
    forge_core::cli::install_crypto_provider();
    forge_core::cli::generate_if_asked::<Cli>("idm-web");
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve {
        listen: None,
        admin_listen: None,
    });
    let (listen, admin) = match &command {
        Command::Serve {
            listen,
            admin_listen,
        } => (listen.clone(), admin_listen.clone()),
        _ => (None, None),
    };
    let Some((config, secrets, generation)) = load(&cli.common, listen, admin)? else {
        return Ok(std::process::ExitCode::SUCCESS);
    };
    let log = forge_core::telemetry::init_logging(&config.log)?;
    let timer = match &command {
        Command::SyncUsernameBlock { check: false } => Some("sync-username-block"),
        Command::ExpireSignups { check: false, .. } => Some("expire-signups"),
        _ => None,
    };
    let mut lease = None;
    if let (Some(name), Some(secs)) = (timer, cli.once_per) {
        match timer_lease(&config, name, secs).await? {
            Some(held) => lease = Some(held),
            None => return Ok(std::process::ExitCode::SUCCESS),
        }
    }
    let result = run_command(command, config, secrets, generation, log).await;
    if let Some((client, lease)) = lease
        && !matches!(result, Ok(ref code) if *code == std::process::ExitCode::SUCCESS)
    {
        // failed: let the next run (on any host) try again
        let _ = lease.release(&client).await;
    }
    result
}

async fn run_command(
    command: Command,
    config: Config,
    secrets: idm_web::config::Secrets,
    generation: String,
    log: forge_core::telemetry::LogControl,
) -> anyhow::Result<std::process::ExitCode> {
    match command {
        Command::Serve { .. } => {
            let queues = redis_queues(&config).await?;
            let core = Core::build(config.clone(), &secrets, Some(queues))
                .await
                .context("starting")?;
            let listener = tokio::net::TcpListener::bind(config.http.listen)
                .await
                .with_context(|| format!("binding {}", config.http.listen))?;
            let admin_listener = tokio::net::TcpListener::bind(config.admin.listen)
                .await
                .with_context(|| format!("binding {}", config.admin.listen))?;
            let board = StatusBoard::new("idm-web", forge_core::VERSION, &generation);
            board.set_log_control(log);
            forge_core::admin::install_admin_token(&board, config.admin.token_file.as_deref())?;
            board.set_field("database", core.db.dialect());
            board.set_field("public_base_url", config.http.public_base_url.clone());
            let shutdown = Shutdown::new();
            // The Redis master this host sees, on /status (forgectl status).
            let master_probe = config.redis.client().context("redis settings")?;
            drop(fred::prelude::ClientLike::connect(&master_probe));
            forge_core::redis::report_master(
                master_probe,
                Arc::clone(&board),
                Duration::from_secs(2),
                shutdown.clone(),
            );
            let reload = ReloadSignal::new();
            lifecycle::spawn_signal_handler(shutdown.clone(), reload.clone())?;
            let mut hup = reload.subscribe();
            tokio::spawn(async move {
                while hup.recv().await.is_ok() {
                    tracing::info!(
                        "SIGHUP: idm-web reads its configuration at start; restart to apply changes (sessions survive)"
                    );
                }
            });
            tokio::spawn(forge_core::admin::serve(
                admin_listener,
                forge_core::admin::router(Arc::clone(&board)),
                shutdown.clone(),
            ));
            tracing::info!(listen = %config.http.listen, admin = %config.admin.listen, generation, "idm-web serving");
            systemd::ready();
            systemd::spawn_watchdog(shutdown.clone(), || true);
            let server = idm_web::run(Arc::clone(&core), listener, Some(board), shutdown.clone());
            tokio::pin!(server);
            tokio::select! {
                r = &mut server => r?,
                _ = shutdown.triggered() => {
                    lifecycle::drain_within(&shutdown, Duration::from_secs(20), async { let _ = server.await; }).await;
                }
            }
            core.db.close().await;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let core = Core::build(config, &secrets, None).await?;
            println!("migrations applied ({})", core.db.dialect());
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::SyncUsernameBlock { check } => {
            let core = Core::build(config.clone(), &secrets, None).await?;
            let report = blocklist::sync(&config.blocklist, &core.blocklist_store, check).await?;
            print!("{}", report.render());
            Ok(if report.any_failed() {
                std::process::ExitCode::FAILURE
            } else {
                std::process::ExitCode::SUCCESS
            })
        }
        Command::ExpireSignups { days, check } => {
            let days = days.unwrap_or(config.signup.expiry_days);
            anyhow::ensure!(days >= 1, "--days must be at least 1");
            let core = Core::build(config, &secrets, None).await?;
            let expired = core.expire_signups(days, check).await?;
            for s in &expired {
                println!(
                    "{} signup {} ({}, {})",
                    if check { "would delete" } else { "deleted" },
                    s.uid,
                    s.username,
                    s.email
                );
            }
            println!(
                "{} unactivated signups older than {days} days{}",
                expired.len(),
                if check {
                    " (check: nothing deleted)"
                } else {
                    " deleted"
                }
            );
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::ActivationLink {
            uid,
            regenerate,
            send,
        } => {
            let queues = if send {
                Some(redis_queues(&config).await?)
            } else {
                None
            };
            let core = Core::build(config, &secrets, queues).await?;
            let Some(signup) = core.signups.by_uid(&uid).await? else {
                anyhow::bail!("no signup with shell name {uid:?}");
            };
            anyhow::ensure!(
                signup.state == idm_web::store::signups::state::PENDING,
                "signup {uid:?} is {} — its link was used already",
                signup.state
            );
            let signup = if regenerate {
                core.signups.rotate_nonce(signup.id).await?;
                core.signups
                    .get(signup.id)
                    .await?
                    .context("signup vanished")?
            } else {
                signup
            };
            println!("{}", core.activation_link(&signup));
            if send {
                core.queues()?.enqueue_activation_mail(signup.id).await?;
                println!("activation mail queued to {}", signup.email);
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}
