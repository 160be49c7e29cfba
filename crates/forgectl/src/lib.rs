//! forgectl: the operator's one command for a forge installation.
//!
//! * [`status`] — asks every configured daemon's `/status` for its version,
//!   config generation, role and the Redis master it sees, compares them with
//!   what the Sentinels say, and flags disagreement and staleness;
//! * [`failover`] — a Sentinel failover (optionally to a chosen replica) that
//!   returns only once every daemon reports the new master;
//! * [`routes`] — list, read, set and delete registrations in Redis; the
//!   queue verbs are `forge_rq::report`, shared with `rq-worker`;
//!
//! [`config`] names the hosts and Sentinels; [`redis`] holds the Sentinel
//! and direct-connection helpers. `main.rs` only parses flags and calls these.

pub mod config;
pub mod failover;
pub mod redis;
pub mod routes;
pub mod status;

pub use config::Config;
pub use failover::{FailoverOutcome, failover};
pub use status::{Report, Row, collect};
