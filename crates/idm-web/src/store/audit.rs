//! The `audit_log` table: what account managers did, to whom, why.

use crate::db::{Db, DbError, now};
use crate::with_pool;

/// One audit record.
#[derive(Debug, Clone, sqlx::FromRow, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    /// When (unix seconds).
    pub at: i64,
    /// The manager's uid.
    pub actor: String,
    /// `block` or `unblock`.
    pub action: String,
    /// The account's uid.
    pub target: String,
    /// The reason given.
    pub reason: String,
}

/// The audit log.
#[derive(Debug, Clone)]
pub struct AuditStore {
    db: Db,
}

impl AuditStore {
    /// The store on `db`.
    pub fn new(db: Db) -> Self {
        AuditStore { db }
    }

    /// Records an action.
    pub async fn record(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        reason: &str,
    ) -> Result<(), DbError> {
        with_pool!(&self.db, p => sqlx::query("INSERT INTO audit_log (at, actor, action, target, reason) VALUES (?, ?, ?, ?, ?)")
            .bind(now()).bind(actor).bind(action).bind(target).bind(reason).execute(p).await.map(drop)?);
        Ok(())
    }

    /// The newest `limit` entries about `target`, newest first.
    pub async fn for_target(&self, target: &str, limit: i64) -> Result<Vec<AuditEntry>, DbError> {
        Ok(with_pool!(&self.db, p => sqlx::query_as::<_, AuditEntry>(
            "SELECT at, actor, action, target, reason FROM audit_log WHERE target = ? ORDER BY id DESC LIMIT ?")
            .bind(target).bind(limit).fetch_all(p).await?))
    }
}
