//! rq-worker: forge's job worker daemon.
//!
//! Runs python-rq compatible jobs (JSON serializer) from Redis queues with
//! [`forge_rq::Worker`]: at least once, with retries and backoff, per-job
//! timeouts, orphan requeue and in-worker scheduling. This crate adds the
//! daemon around it — configuration ([`config`]), the built-in handlers
//! ([`registry`]: `forge.echo`, `forge.sleep`, `forge.fail`,
//! `forge.send_mail`), the admin endpoint, and the operator verbs
//! (rendered by [`forge_rq::report`], shared with `forgectl queue`).
//!
//! `main.rs` only wires; [`run`] takes an already-bound admin listener and a
//! `Shutdown`, so tests run the daemon in-process.

pub mod config;
pub mod mail;

use std::sync::Arc;

use forge_core::{Shutdown, StatusBoard, admin};
use forge_rq::{HandlerRegistry, Worker};

use crate::config::Config;

/// The handlers this daemon runs: the built-ins plus `forge.send_mail`.
/// Application handlers (the identity app's `idm_web::jobs::register`) are
/// added to this registry by the binary.
pub fn registry(config: &Config) -> HandlerRegistry {
    let mut r = HandlerRegistry::with_builtins();
    mail::register(&mut r, &config.mail);
    r
}

/// Runs the worker until `shutdown` (graceful drain, then hand-back), with
/// the admin endpoint on `admin_listener` when given.
pub async fn run(
    config: Config,
    registry: HandlerRegistry,
    board: Arc<StatusBoard>,
    admin_listener: Option<tokio::net::TcpListener>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    board.set_field("redis", config.redis.describe());
    board.set_field("queues", config.worker.queues.join(","));
    board.set_field("handlers", registry.names().join(","));
    let worker = Worker::new(config.worker.clone(), config.redis.clone(), registry)?
        .with_status_board(board.clone());
    board.set_field("worker_name", worker.name().to_owned());
    if let Some(l) = admin_listener {
        admin::install_admin_token(&board, config.admin.token_file.as_deref())?;
        tokio::spawn(admin::serve(
            l,
            admin::router(board.clone()),
            shutdown.clone(),
        ));
    }
    // The Redis master this host sees, on /status (forgectl status).
    let master_probe = config.redis.client()?;
    drop(fred::prelude::ClientLike::connect(&master_probe));
    forge_core::redis::report_master(
        master_probe,
        board.clone(),
        std::time::Duration::from_secs(2),
        shutdown.clone(),
    );
    worker.run(shutdown).await?;
    Ok(())
}
