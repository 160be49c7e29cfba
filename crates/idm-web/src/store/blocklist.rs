//! The `username_blocklist` table: entries synced from wiki pages, with their
//! origin and when they were last seen.

use sha2::{Digest, Sha256};

use crate::db::{Db, DbError};
use crate::with_pool;

/// One stored entry.
#[derive(Debug, Clone, sqlx::FromRow, PartialEq, Eq)]
pub struct StoredEntry {
    /// Where it came from (the source's name).
    pub origin: String,
    /// The regex.
    pub pattern: String,
    /// The `<…>` options, `|`-separated, lower-cased.
    pub options: String,
    /// 1 when matching is case-sensitive.
    pub case_sensitive: i64,
    /// Last seen (unix seconds).
    pub last_seen: i64,
}

/// The blocklist table.
#[derive(Debug, Clone)]
pub struct BlocklistStore {
    db: Db,
}

fn entry_id(origin: &str, pattern: &str, options: &str) -> String {
    let mut h = Sha256::new();
    h.update(origin.as_bytes());
    h.update([0]);
    h.update(pattern.as_bytes());
    h.update([0]);
    h.update(options.as_bytes());
    hex::encode(h.finalize())
}

impl BlocklistStore {
    /// The store on `db`.
    pub fn new(db: Db) -> Self {
        BlocklistStore { db }
    }

    /// Records that `origin` lists these entries now (`seen` unix seconds):
    /// inserts new ones, refreshes `last_seen` of known ones. One transaction.
    pub async fn upsert(
        &self,
        origin: &str,
        entries: &[(String, String, bool)],
        seen: i64,
    ) -> Result<(), DbError> {
        match &self.db {
            Db::Sqlite(p) => {
                let mut tx = p.begin().await?;
                for (pattern, options, cs) in entries {
                    sqlx::query(
                        "INSERT INTO username_blocklist (id, origin, pattern, options, case_sensitive, first_seen, last_seen) \
                         VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET last_seen = excluded.last_seen",
                    )
                    .bind(entry_id(origin, pattern, options))
                    .bind(origin)
                    .bind(pattern)
                    .bind(options)
                    .bind(i64::from(*cs))
                    .bind(seen)
                    .bind(seen)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
            }
            Db::MySql(p) => {
                let mut tx = p.begin().await?;
                for (pattern, options, cs) in entries {
                    sqlx::query(
                        "INSERT INTO username_blocklist (id, origin, pattern, options, case_sensitive, first_seen, last_seen) \
                         VALUES (?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE last_seen = VALUES(last_seen)",
                    )
                    .bind(entry_id(origin, pattern, options))
                    .bind(origin)
                    .bind(pattern)
                    .bind(options)
                    .bind(i64::from(*cs))
                    .bind(seen)
                    .bind(seen)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Entries last seen before `cutoff`.
    pub async fn stale(&self, cutoff: i64) -> Result<Vec<StoredEntry>, DbError> {
        Ok(with_pool!(&self.db, p => sqlx::query_as::<_, StoredEntry>(
            "SELECT origin, pattern, options, case_sensitive, last_seen FROM username_blocklist WHERE last_seen < ? ORDER BY origin, pattern")
            .bind(cutoff).fetch_all(p).await?))
    }

    /// Deletes entries of `origin` last seen before `cutoff`; returns how many.
    pub async fn delete_stale(&self, origin: &str, cutoff: i64) -> Result<u64, DbError> {
        Ok(
            with_pool!(&self.db, p => sqlx::query("DELETE FROM username_blocklist WHERE origin = ? AND last_seen < ?")
            .bind(origin).bind(cutoff).execute(p).await?.rows_affected()),
        )
    }

    /// Every entry.
    pub async fn all(&self) -> Result<Vec<StoredEntry>, DbError> {
        Ok(with_pool!(&self.db, p => sqlx::query_as::<_, StoredEntry>(
            "SELECT origin, pattern, options, case_sensitive, last_seen FROM username_blocklist ORDER BY origin, pattern")
            .fetch_all(p).await?))
    }

    /// A cheap fingerprint (count, newest `last_seen`) to notice changes.
    pub async fn fingerprint(&self) -> Result<(i64, i64), DbError> {
        let row: (i64, Option<i64>) = with_pool!(&self.db, p => sqlx::query_as(
            "SELECT COUNT(*), MAX(last_seen) FROM username_blocklist").fetch_one(p).await?);
        Ok((row.0, row.1.unwrap_or(0)))
    }
}
