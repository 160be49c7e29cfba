//! The `api_tokens` table: personal tokens for the JSON API. Only the
//! SHA-256 of a token is stored; the token itself is shown once.

use sha2::{Digest, Sha256};

use crate::db::{Db, DbError, now};
use crate::with_pool;

/// A token as listed to its owner.
#[derive(Debug, Clone, sqlx::FromRow, PartialEq, Eq, serde::Serialize)]
pub struct ApiToken {
    /// Row id.
    pub id: i64,
    /// The owner's uid.
    pub uid: String,
    /// The owner's label.
    pub name: String,
    /// When it was made.
    pub created_at: i64,
    /// When it was last used.
    pub last_used: Option<i64>,
}

/// The tokens table.
#[derive(Debug, Clone)]
pub struct ApiTokenStore {
    db: Db,
}

/// The stored form of `token`.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl ApiTokenStore {
    /// The store on `db`.
    pub fn new(db: Db) -> Self {
        ApiTokenStore { db }
    }

    /// Creates a token for `uid`; returns the secret (shown once).
    pub async fn create(&self, uid: &str, name: &str) -> Result<String, DbError> {
        let secret = format!("idm_{}", crate::tokens::random_token(32));
        with_pool!(&self.db, p => sqlx::query("INSERT INTO api_tokens (uid, name, token_hash, created_at) VALUES (?, ?, ?, ?)")
            .bind(uid).bind(name).bind(token_hash(&secret)).bind(now()).execute(p).await.map(drop)?);
        Ok(secret)
    }

    /// The tokens of `uid`.
    pub async fn list(&self, uid: &str) -> Result<Vec<ApiToken>, DbError> {
        Ok(with_pool!(&self.db, p => sqlx::query_as::<_, ApiToken>(
            "SELECT id, uid, name, created_at, last_used FROM api_tokens WHERE uid = ? ORDER BY id").bind(uid).fetch_all(p).await?))
    }

    /// Revokes token `id` of `uid`; false if there was none.
    pub async fn revoke(&self, uid: &str, id: i64) -> Result<bool, DbError> {
        let n = with_pool!(&self.db, p => sqlx::query("DELETE FROM api_tokens WHERE uid = ? AND id = ?")
            .bind(uid).bind(id).execute(p).await?.rows_affected());
        Ok(n == 1)
    }

    /// The uid owning `secret`, marking it used.
    pub async fn owner(&self, secret: &str) -> Result<Option<String>, DbError> {
        let h = token_hash(secret);
        let row: Option<(String,)> = with_pool!(&self.db, p => sqlx::query_as("SELECT uid FROM api_tokens WHERE token_hash = ?")
            .bind(&h).fetch_optional(p).await?);
        if row.is_some() {
            with_pool!(&self.db, p => sqlx::query("UPDATE api_tokens SET last_used = ? WHERE token_hash = ?")
                .bind(now()).bind(&h).execute(p).await.map(drop)?);
        }
        Ok(row.map(|r| r.0))
    }
}
