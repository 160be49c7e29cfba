//! proxylistener: the registration daemon of the tool-hosting proxy.
//!
//! Tools' web services register their backend (`http://<ip>:<port>`) for a
//! route of their tool, and unregister it when they stop, over a small line
//! protocol on port 8282 that is byte-compatible with today's daemon
//! ([`protocol`]). Clients are authenticated by RFC 1413 ident ([`ident`])
//! plus checks ident can't give: the backend must be the client's own address
//! and port range, the route a linear-time regex within the route budget, no
//! control character anywhere ([`server`]), and the backend's server must
//! be the registering tool's own ([`ownership`]). Registrations are written
//! to Redis atomically, with compare-and-delete on unregister ([`store`]).
//! The configuration ([`config`]) is documented in `docs/proxylistener.md`.
//!
//! Entry point, mini-redis style: [`server::run`] takes an already-bound
//! listener, a [`server::Context`] (live [`config::Config`] + [`RouteStore`])
//! and a [`forge_core::Shutdown`]; `main.rs` only wires.

pub mod config;
pub mod ident;
pub mod ownership;
pub mod protocol;
pub mod server;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use forge_core::{CheckState, Shutdown, StatusBoard};

pub use config::Config;
pub use ownership::PendingChecks;
pub use server::{Context, run};
pub use store::{RouteStore, StoreError};

/// Keeps the board's `redis` health check current (a `PING` every
/// `interval`) until shutdown.
pub fn spawn_health_check(
    board: Arc<StatusBoard>,
    store: RouteStore,
    interval: Duration,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.triggered() => break,
            }
            match store.ping().await {
                Ok(()) => {
                    board.set_check("redis", CheckState::Ok, "PING answered");
                    metrics::gauge!("forge_proxylistener_redis_up").set(1.0);
                }
                Err(e) => {
                    board.set_check("redis", CheckState::Failing, e.to_string());
                    metrics::gauge!("forge_proxylistener_redis_up").set(0.0);
                }
            }
        }
    })
}
