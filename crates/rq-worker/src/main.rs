//! `rq-worker`: wires flags, configuration, logging, signals and the admin
//! listener to [`rq_worker::run`]; the subcommands are the operator verbs.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use forge_core::cli::CommonArgs;
use forge_core::lifecycle::{self, systemd};
use forge_core::{ConfigSource, ReloadSignal, Shutdown, StatusBoard};
use forge_rq::{Keys, report};
use fred::prelude::ClientLike;
use rq_worker::config::{Config, ENV_PREFIX};

/// forge's job worker: runs python-rq compatible jobs (JSON serializer).
///
/// `rq-worker --redis URL [QUEUE...]` listens on the queues in priority
/// order (default `default`), like `rq worker`, running up to
/// `worker.concurrency` jobs at once. Delivery is at least once: a job of a
/// worker that dies is requeued by any live worker within
/// orphan_after_ms + reap_interval_ms (20 s by default); failing jobs are
/// retried with their backoff, then kept in the failed registry.
///
/// Signals: SIGTERM/SIGINT drain (running jobs finish within
/// worker.drain_timeout_secs, the rest go back to their queue); a second
/// signal hands them back at once. SIGHUP reloads the log filter.
///
/// Operator verbs (like `rq`): info, failed, requeue, empty, suspend,
/// resume. A queue named like a verb must be set in the configuration.
///
/// Configuration: a TOML file (--config), FORGE_RQ_WORKER_<SECTION>__<KEY>
/// environment variables, then these flags. See docs/rq.md.
#[derive(Debug, Parser)]
#[command(name = "rq-worker", version, verbatim_doc_comment)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Redis URL (`redis://host:port/db`); overrides `redis.url`.
    #[arg(long, value_name = "URL", global = true)]
    redis: Option<String>,
    /// Jobs run at the same time; overrides `worker.concurrency`.
    #[arg(long, short = 'n', value_name = "N")]
    concurrency: Option<usize>,
    /// Worker name (must be unique); overrides `worker.name`.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Admin listener (/healthz, /status, /metrics, /log-filter); overrides
    /// `admin.listen` (default 127.0.0.1:9181, empty = none).
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<String>,
    /// Queues in priority order; overrides `worker.queues`.
    #[arg(value_name = "QUEUE")]
    queues: Vec<String>,
    #[command(subcommand)]
    command: Option<Verb>,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Queue lengths and registries, workers, suspension.
    Info {
        /// Queues to show (default: all in rq:queues).
        queues: Vec<String>,
    },
    /// Failed jobs of a queue with their errors.
    Failed {
        /// The queue.
        queue: String,
        /// Most jobs shown.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Requeue failed jobs (by id, or all).
    Requeue {
        /// The queue.
        #[arg(long, short = 'q', default_value = "default")]
        queue: String,
        /// Requeue every failed job of the queue.
        #[arg(long)]
        all: bool,
        /// Job ids.
        ids: Vec<String>,
    },
    /// Delete every queued job of the queues.
    Empty {
        /// The queues.
        queues: Vec<String>,
    },
    /// Suspend all workers (they finish running jobs and take no new ones).
    Suspend {
        /// Resume automatically after this many seconds.
        #[arg(long)]
        duration: Option<u64>,
    },
    /// Resume suspended workers.
    Resume,
}

fn main() -> ExitCode {
    forge_core::cli::generate_if_asked::<Args>("rq-worker");
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rq-worker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rq-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn source(args: &Args) -> ConfigSource {
    let queues = (!args.queues.is_empty()).then(|| {
        toml::Value::Array(
            args.queues
                .iter()
                .cloned()
                .map(toml::Value::String)
                .collect(),
        )
    });
    ConfigSource::new(args.common.config.clone(), ENV_PREFIX)
        .cli("redis.url", "--redis", args.redis.clone())
        .cli(
            "worker.concurrency",
            "--concurrency",
            args.concurrency.map(|n| n as i64),
        )
        .cli("worker.name", "--name", args.name.clone())
        .cli("admin.listen", "--admin-listen", args.admin_listen.clone())
        .cli("worker.queues", "QUEUE", queues)
}

async fn run(args: Args) -> anyhow::Result<()> {
    forge_core::cli::install_crypto_provider();
    let loaded = Config::load(&source(&args))?;
    if args.common.finish_config_flags(&loaded) {
        return Ok(());
    }
    let config = loaded.config.clone();
    if let Some(verb) = args.command {
        return run_verb(&config, verb).await;
    }
    let log = forge_core::telemetry::init_logging(&config.log)?;
    let board = StatusBoard::new("rq-worker", forge_core::VERSION, &loaded.generation);
    board.set_log_control(log.clone());
    let admin_listener = if config.admin.listen.is_empty() {
        None
    } else {
        Some(
            tokio::net::TcpListener::bind(&config.admin.listen)
                .await
                .with_context(|| format!("cannot listen on {} (admin)", config.admin.listen))?,
        )
    };
    let shutdown = Shutdown::new();
    let reload = ReloadSignal::new();
    lifecycle::spawn_signal_handler(shutdown.clone(), reload.clone())
        .context("cannot install signal handlers")?;
    // SIGHUP: the log filter changes live; everything else needs a restart.
    let mut reloads = reload.subscribe();
    let reload_source = source(&args);
    let reload_board = Arc::clone(&board);
    let started_with = config.clone();
    tokio::spawn(async move {
        while reloads.recv().await.is_ok() {
            match Config::load(&reload_source) {
                Ok(l) => {
                    if let Err(e) = log.set_filter(&l.config.log.filter) {
                        tracing::warn!(error = %e, "log filter not changed");
                    }
                    if l.config.worker != started_with.worker
                        || l.config.redis != started_with.redis
                        || l.config.mail != started_with.mail
                    {
                        tracing::warn!(
                            "[worker], [redis] and [mail] changes take effect after a restart"
                        );
                    }
                    reload_board.set_generation(&l.generation);
                    tracing::info!(generation = %l.generation, "configuration reloaded");
                }
                Err(e) => tracing::error!(error = %e, "configuration not reloaded"),
            }
        }
    });
    let mut registry = rq_worker::registry(&config);
    if let Some(idm_config) = &config.idm.config {
        let core = idm_web::jobs::load_core(idm_config)
            .await
            .with_context(|| format!("[idm] config = {}", idm_config.display()))?;
        idm_web::jobs::register(&mut registry, core);
        for q in [
            idm_web::jobs::DEFAULT_QUEUE,
            idm_web::jobs::NOTIFICATION_QUEUE,
        ] {
            if !config.worker.queues.iter().any(|w| w == q) {
                tracing::warn!(
                    queue = q,
                    "[idm] is set but worker.queues lacks this queue: its idm jobs will not run here"
                );
            }
        }
    }
    systemd::ready();
    systemd::spawn_watchdog(shutdown.clone(), || true);
    tracing::info!(redis = %config.redis.describe(), queues = %config.worker.queues.join(","), generation = %loaded.generation, "rq-worker starting");
    rq_worker::run(config, registry, board, admin_listener, shutdown).await
}

async fn run_verb(config: &Config, verb: Verb) -> anyhow::Result<()> {
    let pool = config.redis.pool().context("Redis settings")?;
    pool.init()
        .await
        .with_context(|| format!("cannot connect to {}", config.redis.describe()))?;
    let keys = Keys::new(&config.worker.key_prefix);
    let mut out = std::io::stdout().lock();
    const RESUME: &str = "rq-worker resume";
    match verb {
        Verb::Info { queues } => report::info(&pool, &keys, &queues, RESUME, &mut out).await?,
        Verb::Failed { queue, limit } => {
            report::failed(&pool, &keys, &queue, limit, &mut out).await?
        }
        Verb::Requeue { queue, all, ids } => {
            anyhow::ensure!(all || !ids.is_empty(), "give job ids or --all");
            let ids: &[String] = if all { &[] } else { &ids };
            report::requeue(&pool, &keys, &queue, ids, &mut out).await?;
        }
        Verb::Empty { queues } => {
            anyhow::ensure!(!queues.is_empty(), "name the queues to empty");
            for q in &queues {
                report::empty(&pool, &keys, q, &mut out)
                    .await
                    .with_context(|| format!("emptying {q}"))?;
            }
        }
        Verb::Suspend { duration } => {
            let ttl = duration.map(std::time::Duration::from_secs);
            report::suspend_workers(&pool, &keys, ttl, RESUME, &mut out).await?
        }
        Verb::Resume => report::resume_workers(&pool, &keys, &mut out).await?,
    }
    out.flush()?;
    Ok(())
}
