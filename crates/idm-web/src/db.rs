//! The SQL database: SQLite (embedded default) or MariaDB (production), one
//! codebase.
//!
//! [`Db`] is an enum over the two sqlx pools. Queries are written once with
//! `?` placeholders (both dialects accept them) and run through the
//! [`with_pool!`] macro, which expands the same code for each pool type; the
//! few statements whose syntax differs (upserts) spell both. Each dialect has
//! its migrations folder (`migrations/sqlite`, `migrations/mysql`), embedded in
//! the binary and applied at start-up and by `idm-web migrate`. Times are unix
//! seconds in `BIGINT` columns, so no date type differs between the two.
//!
//! SQLite runs with `secure_delete` on (deleted content is overwritten with
//! zeros in its page) and, after a password hash is dropped, a
//! [`Db::scrub_deleted`] checkpoint truncates the write-ahead log, whose older
//! frames would otherwise keep copies of the hash on disk.

use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

/// A pool on either database.
#[derive(Debug, Clone)]
pub enum Db {
    /// SQLite (file).
    Sqlite(SqlitePool),
    /// MariaDB / MySQL.
    MySql(MySqlPool),
}

/// Why the database failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A query or connection failed.
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Runs `$body` with `$pool` bound to the concrete pool of `$db`.
#[macro_export]
#[doc(hidden)]
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($pool) => $body,
            $crate::db::Db::MySql($pool) => $body,
        }
    };
}

/// The current time in unix seconds.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl Db {
    /// Connects to `url` (`sqlite://…` or `mysql://…`) with a pool of `max` connections.
    pub async fn connect(url: &str, max: u32, acquire_timeout: Duration) -> Result<Db, DbError> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
                .pragma("secure_delete", "ON");
            let pool = SqlitePoolOptions::new()
                .max_connections(max.max(1))
                .acquire_timeout(acquire_timeout)
                .connect_with(options)
                .await?;
            Ok(Db::Sqlite(pool))
        } else {
            let url = url.replacen("mariadb:", "mysql:", 1);
            let options = MySqlConnectOptions::from_str(&url)?;
            let pool = MySqlPoolOptions::new()
                .max_connections(max.max(1))
                .acquire_timeout(acquire_timeout)
                .connect_with(options)
                .await?;
            Ok(Db::MySql(pool))
        }
    }

    /// Applies the pending migrations of this dialect.
    pub async fn migrate(&self) -> Result<(), DbError> {
        match self {
            Db::Sqlite(p) => sqlx::migrate!("migrations/sqlite").run(p).await?,
            Db::MySql(p) => sqlx::migrate!("migrations/mysql").run(p).await?,
        }
        Ok(())
    }

    /// `sqlite` or `mysql`, for status output.
    pub fn dialect(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::MySql(_) => "mysql",
        }
    }

    /// On SQLite, moves everything in the write-ahead log into the database
    /// file and truncates the log (`wal_checkpoint(TRUNCATE)`), so that content
    /// deleted (and, with `secure_delete`, zeroed) leaves the files. Called
    /// after a password hash is dropped. A checkpoint blocked by a reader is
    /// logged; the next one completes it. Nothing to do on MariaDB.
    pub async fn scrub_deleted(&self) -> Result<(), DbError> {
        if let Db::Sqlite(p) = self {
            let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(p)
                .await?;
            if busy != 0 {
                tracing::warn!(
                    "SQLite checkpoint blocked by a reader; the log is truncated by the next one"
                );
            }
        }
        Ok(())
    }

    /// A trivial query, for health checks.
    pub async fn ping(&self) -> Result<(), DbError> {
        with_pool!(self, p => { sqlx::query("SELECT 1").execute(p).await?; });
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        with_pool!(self, p => p.close().await)
    }
}

/// Whether `e` is a unique-constraint violation.
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d.is_unique_violation(),
        _ => false,
    }
}
