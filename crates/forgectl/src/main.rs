//! `forgectl`: wires flags and configuration to the library's verbs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use forge_core::ConfigSource;
use forge_rq::Keys;
use forge_rq::report;
use forgectl::config::{Config, ENV_PREFIX};
use forgectl::{redis, routes, status};

/// The operator CLI of forge.
///
/// Reads /etc/forge/forgectl.toml (or --config): the hosts and their daemons'
/// admin URLs, and the Redis Sentinels. Environment overrides:
/// FORGECTL_<SECTION>__<KEY>. See docs/forgectl.md.
///
/// Exit codes: 0 success; 1 a problem was found or the operation failed;
/// 2 usage or configuration error.
#[derive(Debug, Parser)]
#[command(name = "forgectl", version, verbatim_doc_comment)]
struct Args {
    /// Configuration file.
    #[arg(
        long,
        short,
        value_name = "FILE",
        default_value = "/etc/forge/forgectl.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One table of every daemon: version, config generation, role, the Redis
    /// master it sees; flags disagreement and staleness (exit 1 if any).
    Status {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Sentinel failover; waits until every daemon reports the new master.
    Failover {
        /// The replica to promote (`host:port`, or a host naming one replica).
        #[arg(long, value_name = "HOST")]
        to: Option<String>,
    },
    /// The registrations in Redis.
    Routes {
        #[command(subcommand)]
        verb: RoutesVerb,
    },
    /// The job queues (python-rq layout).
    Queue {
        #[command(subcommand)]
        verb: QueueVerb,
    },
}

#[derive(Debug, Subcommand)]
enum RoutesVerb {
    /// Every tool's routes.
    List,
    /// One tool's routes.
    Get {
        /// The tool.
        tool: String,
    },
    /// Sets a route of a tool to a backend.
    Set {
        /// The tool.
        tool: String,
        /// The route pattern (a regex; `.*` for everything).
        route: String,
        /// The backend, `http://host:port`.
        url: String,
        /// Also record the canonical name `<tool>.<DOMAIN>` (registerCanonical).
        #[arg(long, value_name = "DOMAIN")]
        canonical: Option<String>,
        /// Confirm only once this many replicas have the change.
        #[arg(long, default_value_t = 0)]
        min_replicas: u32,
        /// How long to wait for them, ms.
        #[arg(long, default_value_t = 1000)]
        wait_ms: u64,
    },
    /// Deletes a route of a tool.
    Del {
        /// The tool.
        tool: String,
        /// The route pattern.
        route: String,
        /// Confirm only once this many replicas have the change.
        #[arg(long, default_value_t = 0)]
        min_replicas: u32,
        /// How long to wait for them, ms.
        #[arg(long, default_value_t = 1000)]
        wait_ms: u64,
    },
}

#[derive(Debug, Subcommand)]
enum QueueVerb {
    /// Queue lengths, registries, workers.
    Info {
        /// Queues to show (default: all).
        queues: Vec<String>,
    },
    /// Failed jobs of a queue with their errors.
    Failed {
        /// The queue.
        queue: String,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Requeues failed jobs (all, or the ids given).
    Requeue {
        /// The queue.
        queue: String,
        /// Job ids (default: every failed job).
        ids: Vec<String>,
    },
    /// Removes every queued job of a queue.
    Empty {
        /// The queue.
        queue: String,
    },
    /// Workers stop claiming jobs.
    Suspend {
        /// For this many seconds (default: until resumed).
        #[arg(long = "for", value_name = "SECS")]
        for_secs: Option<u64>,
    },
    /// Workers claim jobs again.
    Resume,
}

fn main() -> ExitCode {
    forge_core::cli::generate_if_asked::<Args>("forgectl");
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("forgectl: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = match Config::load(&ConfigSource::new(Some(args.config.clone()), ENV_PREFIX)) {
        Ok(l) => l.config,
        Err(e) => {
            eprintln!("forgectl: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args.command, config)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("forgectl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a verb; `Ok(false)` = it ran and found a problem.
async fn run(command: Command, config: Config) -> anyhow::Result<bool> {
    let mut out = std::io::stdout();
    match command {
        Command::Status { json } => {
            let report = status::collect(&config).await;
            if json {
                serde_json::to_writer_pretty(&mut out, &report)?;
                println!();
            } else {
                status::render(&report, &mut out)?;
            }
            Ok(report.problem_count() == 0)
        }
        Command::Failover { to } => {
            forgectl::failover(&config, to.as_deref(), &mut out).await?;
            Ok(true)
        }
        Command::Routes { verb } => {
            let client = redis::master(&config.redis).await?;
            match verb {
                RoutesVerb::List => routes::print_list(&client, &mut out).await.map(|_| true),
                RoutesVerb::Get { tool } => routes::print_get(&client, &tool, &mut out).await,
                RoutesVerb::Set {
                    tool,
                    route,
                    url,
                    canonical,
                    min_replicas,
                    wait_ms,
                } => {
                    routes::set(
                        &client,
                        &tool,
                        &route,
                        &url,
                        canonical.as_deref(),
                        min_replicas,
                        Duration::from_millis(wait_ms),
                    )
                    .await?;
                    println!("ok");
                    Ok(true)
                }
                RoutesVerb::Del {
                    tool,
                    route,
                    min_replicas,
                    wait_ms,
                } => {
                    let deleted = routes::del(
                        &client,
                        &tool,
                        &route,
                        min_replicas,
                        Duration::from_millis(wait_ms),
                    )
                    .await?;
                    println!("{}", if deleted { "deleted" } else { "no such route" });
                    Ok(deleted)
                }
            }
        }
        Command::Queue { verb } => {
            let pool = redis::master_pool(&config.redis).await.context("Redis")?;
            let keys = Keys::new(&config.queue_prefix);
            const RESUME: &str = "forgectl queue resume";
            match verb {
                QueueVerb::Info { queues } => {
                    report::info(&pool, &keys, &queues, RESUME, &mut out).await?
                }
                QueueVerb::Failed { queue, limit } => {
                    report::failed(&pool, &keys, &queue, limit, &mut out).await?
                }
                QueueVerb::Requeue { queue, ids } => {
                    report::requeue(&pool, &keys, &queue, &ids, &mut out).await?;
                }
                QueueVerb::Empty { queue } => {
                    report::empty(&pool, &keys, &queue, &mut out).await?;
                }
                QueueVerb::Suspend { for_secs } => {
                    let ttl = for_secs.map(Duration::from_secs);
                    report::suspend_workers(&pool, &keys, ttl, RESUME, &mut out).await?
                }
                QueueVerb::Resume => report::resume_workers(&pool, &keys, &mut out).await?,
            }
            Ok(true)
        }
    }
}
