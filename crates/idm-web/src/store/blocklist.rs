//! The `username_blocklist` table: lines synced from wiki pages, with their
//! origin (the source's name), their list (`block` for a title blacklist
//! page, `allow` for a title whitelist page) and when they were last seen.

use sha2::{Digest, Sha256};

use crate::db::{Db, DbError};
use crate::with_pool;

/// The `kind` of a line from a title blacklist page.
pub const KIND_BLOCK: &str = "block";
/// The `kind` of a line from a title whitelist page.
pub const KIND_ALLOW: &str = "allow";

/// One stored entry.
#[derive(Debug, Clone, sqlx::FromRow, PartialEq, Eq)]
pub struct StoredEntry {
    /// Where it came from (the source's name).
    pub origin: String,
    /// [`KIND_BLOCK`] or [`KIND_ALLOW`].
    pub kind: String,
    /// The regex.
    pub pattern: String,
    /// The `<…>` options, `|`-separated, lower-cased.
    pub options: String,
    /// 1 when matching is case-sensitive.
    pub case_sensitive: i64,
    /// Last seen (unix seconds).
    pub last_seen: i64,
}

impl StoredEntry {
    /// The row's key: a hash of origin, list, regex and options.
    pub fn id(&self) -> String {
        entry_id(&self.origin, &self.kind, &self.pattern, &self.options)
    }
}

/// One line to insert: origin, kind, pattern, options, case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NewEntry {
    /// The source's name.
    pub origin: String,
    /// [`KIND_BLOCK`] or [`KIND_ALLOW`].
    pub kind: String,
    /// The regex.
    pub pattern: String,
    /// The options, `|`-separated, lower-cased.
    pub options: String,
    /// Whether matching is case-sensitive.
    pub case_sensitive: bool,
}

impl NewEntry {
    /// The row's key (see [`StoredEntry::id`]).
    pub fn id(&self) -> String {
        entry_id(&self.origin, &self.kind, &self.pattern, &self.options)
    }
}

/// The blocklist table.
#[derive(Debug, Clone)]
pub struct BlocklistStore {
    db: Db,
}

/// The key of a line. Blacklist lines keep the key they had before lists had
/// kinds (origin, regex, options), so an upgrade refreshes the stored rows
/// instead of adding a second copy of each.
fn entry_id(origin: &str, kind: &str, pattern: &str, options: &str) -> String {
    let mut h = Sha256::new();
    if kind != KIND_BLOCK {
        h.update(kind.as_bytes());
        h.update([0]);
    }
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

    /// Records that `origin`'s blacklist holds these `(pattern, options,
    /// case-sensitive)` lines now (`seen` unix seconds): inserts new ones,
    /// refreshes `last_seen` of known ones. One transaction.
    pub async fn upsert(
        &self,
        origin: &str,
        entries: &[(String, String, bool)],
        seen: i64,
    ) -> Result<(), DbError> {
        let rows: Vec<NewEntry> = entries
            .iter()
            .map(|(pattern, options, cs)| NewEntry {
                origin: origin.to_owned(),
                kind: KIND_BLOCK.to_owned(),
                pattern: pattern.clone(),
                options: options.clone(),
                case_sensitive: *cs,
            })
            .collect();
        self.apply(&rows, &[], &[], seen).await
    }

    /// In one transaction: inserts `add` (or refreshes them if present),
    /// sets `last_seen = seen` on the rows `refresh` names, deletes the rows
    /// `drop` names (ids from [`StoredEntry::id`]).
    pub async fn apply(
        &self,
        add: &[NewEntry],
        refresh: &[String],
        drop: &[String],
        seen: i64,
    ) -> Result<(), DbError> {
        macro_rules! run {
            ($p:expr, $upsert:literal) => {{
                let mut tx = $p.begin().await?;
                for e in add {
                    sqlx::query(concat!(
                        "INSERT INTO username_blocklist (id, origin, kind, pattern, options, case_sensitive, first_seen, last_seen) \
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?) ",
                        $upsert
                    ))
                    .bind(e.id())
                    .bind(&e.origin)
                    .bind(&e.kind)
                    .bind(&e.pattern)
                    .bind(&e.options)
                    .bind(i64::from(e.case_sensitive))
                    .bind(seen)
                    .bind(seen)
                    .execute(&mut *tx)
                    .await?;
                }
                for id in refresh {
                    sqlx::query("UPDATE username_blocklist SET last_seen = ? WHERE id = ?")
                        .bind(seen)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                for id in drop {
                    sqlx::query("DELETE FROM username_blocklist WHERE id = ?")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }};
        }
        match &self.db {
            Db::Sqlite(p) => run!(
                p,
                "ON CONFLICT(id) DO UPDATE SET last_seen = excluded.last_seen"
            ),
            Db::MySql(p) => run!(p, "ON DUPLICATE KEY UPDATE last_seen = VALUES(last_seen)"),
        }
        Ok(())
    }

    /// Entries last seen before `cutoff`.
    pub async fn stale(&self, cutoff: i64) -> Result<Vec<StoredEntry>, DbError> {
        Ok(with_pool!(&self.db, p => sqlx::query_as::<_, StoredEntry>(
            "SELECT origin, kind, pattern, options, case_sensitive, last_seen FROM username_blocklist \
             WHERE last_seen < ? ORDER BY origin, kind, pattern")
            .bind(cutoff).fetch_all(p).await?))
    }

    /// Every entry.
    pub async fn all(&self) -> Result<Vec<StoredEntry>, DbError> {
        Ok(with_pool!(&self.db, p => sqlx::query_as::<_, StoredEntry>(
            "SELECT origin, kind, pattern, options, case_sensitive, last_seen FROM username_blocklist \
             ORDER BY origin, kind, pattern")
            .fetch_all(p).await?))
    }

    /// A cheap fingerprint (count, newest `last_seen`) to notice changes.
    pub async fn fingerprint(&self) -> Result<(i64, i64), DbError> {
        let row: (i64, Option<i64>) = with_pool!(&self.db, p => sqlx::query_as(
            "SELECT COUNT(*), MAX(last_seen) FROM username_blocklist").fetch_one(p).await?);
        Ok((row.0, row.1.unwrap_or(0)))
    }
}
