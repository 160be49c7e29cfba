//! The shared core of forge's daemons.
//!
//! Every forge daemon (dynamicproxy, proxylistener, webservicemonitor,
//! rq-worker, idm-web) is a small binary wired from the same parts:
//!
//! * [`schema`] — the Redis keys and the validated values stored in them
//!   (tool names, route patterns, backend URLs). The only module that knows
//!   key spellings.
//! * [`routes`] — every write and read of route keys (`prefix:`,
//!   `redirect:`): register, compare-and-delete, delete, `WAIT` for
//!   replicas, listing and key parsing. The only module that writes them.
//! * [`config`] — TOML file + environment + flags → a typed configuration with
//!   file:line errors and a *config generation* hash.
//! * [`reload`] — live values swapped on `SIGHUP` or file change.
//! * [`live`] — where registrations go and where Redis is (`/etc/active-proxy`
//!   and its richer TOML successor).
//! * [`redis`] — Redis connection settings and the one fred builder, with
//!   timeouts set; [`redis::report_master`] puts the master a daemon sees on
//!   its status board.
//! * [`redact`] — credentials blanked out of everything shown or logged.
//! * [`lease`] — a Redis lease so a singleton runs on one host at a time.
//! * [`telemetry`] — logging with a run-time filter, the Prometheus recorder.
//! * [`admin`] — `/healthz`, `/status`, `/metrics`, `/log-filter`; the admin
//!   token that guards changing endpoints.
//! * [`cli`] — the flags every daemon shares; the rustls crypto provider.
//! * [`lifecycle`] — signals, graceful shutdown, systemd notifications.
//! * [`daemon`] — the bootstrap every daemon's `run` shares: listeners
//!   (bound, or passed by systemd), status board, signals, admin server,
//!   the Redis master on `/status`, reloads, readiness and the watchdog.
//!
//! Nothing here knows about any one daemon.

pub mod admin;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod lease;
pub mod lifecycle;
pub mod live;
pub mod redact;
pub mod redis;
pub mod reload;
pub mod routes;
pub mod schema;
pub mod telemetry;

pub use admin::{CheckState, StatusBoard};
pub use config::{ConfigError, ConfigSource, Loaded};
pub use daemon::{Daemon, Sockets};
pub use lifecycle::{ReloadReason, ReloadSignal, Shutdown};
pub use reload::Reloadable;
pub use schema::{
    BackendUrl, PatternBudget, RedisKey, RoutePattern, SchemaError, ToolName, escape_controls,
};

/// forge's version, reported by every daemon.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
