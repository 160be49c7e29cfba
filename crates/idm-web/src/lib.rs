//! idm-web: the identity self-service web app.
//!
//! Developers sign up (username, shell name, e-mail, password, anti-bot
//! question), receive an activation link by mail, confirm it, and get an
//! LDAP account; then they log in with it and manage it themselves: change
//! or reset the password, recover the username, change the e-mail address
//! (verified), manage SSH keys, and use personal API tokens with the JSON
//! API. Account managers block and unblock accounts, with an audit log. Background work runs as jobs on
//! the python-rq-compatible queues (`forge-rq`), executed by `rq-worker`.
//! Timers (`sync-username-block`, `expire-signups`) are subcommands of the
//! binary.
//!
//! Layers (each only calls the one below):
//!
//! * [`web`] — routes, templates, host check, client IP, sessions, CSRF;
//! * [`jobs`] — the job handlers and enqueueing;
//! * [`services`] — signup, activation, account creation, expiry ([`Core`]);
//! * [`store`], [`directory`], [`mail`], [`blocklist`] — the database tables,
//!   LDAP, SMTP, and the wiki blocklist;
//! * [`tokens`], [`passwords`], [`names`] — pure building blocks.
//!
//! The entry point is [`run`]: it serves an already-bound listener until the
//! [`forge_core::Shutdown`] fires, so tests run the app in-process on port 0.

pub mod blocklist;
pub mod config;
pub mod db;
pub mod directory;
pub mod jobs;
pub mod mail;
pub mod names;
pub mod passwords;
pub mod services;
pub mod store;
pub mod tokens;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use forge_core::{CheckState, Shutdown, StatusBoard};

pub use config::Config;
pub use services::Core;

/// Serves the web app on `listener` until `shutdown`; also keeps the
/// blocklist fresh, deletes expired sessions and prunes rate-limit state.
/// Reports health on `board` when given.
pub async fn run(
    core: Arc<Core>,
    listener: tokio::net::TcpListener,
    board: Option<Arc<StatusBoard>>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let state = web::AppState::new(Arc::clone(&core));
    spawn_maintenance(core, state.clone(), board, shutdown.clone());
    let app = web::router_with(state);
    let s = shutdown.clone();
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { s.triggered().await })
    .await
}

fn spawn_maintenance(
    core: Arc<Core>,
    state: web::AppState,
    board: Option<Arc<StatusBoard>>,
    shutdown: Shutdown,
) {
    let every = Duration::from_secs(core.config.blocklist.refresh_seconds.max(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut fingerprint = None;
        let mut rounds: u64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.triggered() => break,
            }
            rounds += 1;
            match core.blocklist_store.fingerprint().await {
                Ok(fp) if Some(fp) != fingerprint => {
                    if core.reload_blocklist().await.is_ok() {
                        fingerprint = Some(fp);
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "blocklist refresh failed"),
            }
            if let Some(board) = &board {
                match core.db.ping().await {
                    Ok(()) => board.set_check("database", CheckState::Ok, core.db.dialect()),
                    Err(e) => board.set_check("database", CheckState::Failing, e.to_string()),
                }
                match core.directory.ping().await {
                    Ok(()) => board.set_check("ldap", CheckState::Ok, core.config.ldap.url.clone()),
                    Err(e) => board.set_check("ldap", CheckState::Degraded, e.to_string()),
                }
                board.set_field("blocklist_entries", core.blocklist.load().len());
            }
            if rounds.is_multiple_of(60) {
                state.limits().retain_recent();
                match store::SqlSessionStore::new(core.db.clone())
                    .delete_expired()
                    .await
                {
                    Ok(n) if n > 0 => tracing::info!(deleted = n, "expired sessions deleted"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "session cleanup failed"),
                }
            }
        }
    });
}
