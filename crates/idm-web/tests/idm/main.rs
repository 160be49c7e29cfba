//! idm-web's acceptance tests, against real slapd, Redis, SMTP sink,
//! SQLite and MariaDB, an in-process rq worker, and headless Chromium.

#![allow(clippy::unwrap_used)]

/// Runs `async fn $name(Backend)` once on SQLite and once on MariaDB.
macro_rules! on_both_databases {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(crate::common::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mariadb() {
                super::$name(crate::common::Backend::MariaDb).await
            }
        }
    };
}

mod api;
mod binary;
mod blocklist_sync;
mod blocks;
mod browser;
mod common;
mod flows;
mod follow;
mod hardening;
mod injection;
mod input_bounds;
mod manage;
mod no_oracle;
mod one_name;
mod passwords;
mod ssh_keys;
mod timer_lease;
mod timers;
mod validation;
