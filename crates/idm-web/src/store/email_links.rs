//! The `email_link_generations` table: per account, how many e-mail changes
//! went through.
//!
//! An e-mail-change link is signed over the account's generation when it was
//! made; confirming it moves the generation on with a compare-and-set, so of
//! two confirmations of links of the same generation exactly one wins, and
//! every link made before a change dies with it — even when the address later
//! returns to the one an old link was made for.

use crate::db::{Db, DbError, is_unique_violation};
use crate::with_pool;

/// The generations table.
#[derive(Debug, Clone)]
pub struct EmailLinkStore {
    db: Db,
}

impl EmailLinkStore {
    /// The store on `db`.
    pub fn new(db: Db) -> Self {
        EmailLinkStore { db }
    }

    /// The current generation of `uid` (0 before its first change).
    pub async fn generation(&self, uid: &str) -> Result<i64, DbError> {
        let row: Option<(i64,)> = with_pool!(&self.db, p => sqlx::query_as(
            "SELECT generation FROM email_link_generations WHERE uid = ?")
            .bind(uid).fetch_optional(p).await?);
        Ok(row.map_or(0, |r| r.0))
    }

    /// Moves `uid` from generation `seen` to the next one; false when it is
    /// no longer at `seen` (the link was used, or a newer change went through).
    pub async fn advance(&self, uid: &str, seen: i64) -> Result<bool, DbError> {
        if seen == 0 {
            let r = with_pool!(&self.db, p => sqlx::query(
                "INSERT INTO email_link_generations (uid, generation) VALUES (?, 1)")
                .bind(uid).execute(p).await.map(drop));
            return match r {
                Ok(()) => Ok(true),
                Err(e) if is_unique_violation(&e) => Ok(false),
                Err(e) => Err(e.into()),
            };
        }
        let n = with_pool!(&self.db, p => sqlx::query(
            "UPDATE email_link_generations SET generation = generation + 1 WHERE uid = ? AND generation = ?")
            .bind(uid).bind(seen).execute(p).await?.rows_affected());
        Ok(n == 1)
    }
}
