//! Web sessions in our own database: a `tower_sessions::SessionStore` over
//! the sqlx pool.
//!
//! `tower-sessions-sqlx-store` exists but is built on a different sqlx major
//! version (two copies of libsqlite3 cannot be linked), so this small store
//! implements the trait directly for both SQLite and MariaDB. Records are
//! JSON in the `sessions` table; expired rows are never returned and are
//! deleted by [`SqlSessionStore::delete_expired`] (run periodically by the
//! server). Sessions therefore survive restarts of idm-web.
//!
//! Each row also records the account it is logged in as (`uid`, taken from
//! the record's `user` entry), so a block or a password change ends that
//! account's sessions at once ([`SqlSessionStore::delete_for_account`]).

use async_trait::async_trait;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

use crate::db::{Db, now};
use crate::with_pool;

/// The session store.
#[derive(Debug, Clone)]
pub struct SqlSessionStore {
    db: Db,
}

fn backend(e: impl std::fmt::Display) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

/// The session entry holding the logged-in user (`{"uid": …, …}`).
pub const SESSION_USER_KEY: &str = "user";

/// The shell name of the account `record` is logged in as, if any.
fn session_account(record: &Record) -> Option<String> {
    record
        .data
        .get(SESSION_USER_KEY)
        .and_then(|u| u.get("uid"))
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

impl SqlSessionStore {
    /// The store on `db`.
    pub fn new(db: Db) -> Self {
        SqlSessionStore { db }
    }

    /// Deletes expired sessions; returns how many.
    pub async fn delete_expired(&self) -> Result<u64, sqlx::Error> {
        Ok(
            with_pool!(&self.db, p => sqlx::query("DELETE FROM sessions WHERE expiry_date < ?")
            .bind(now()).execute(p).await?.rows_affected()),
        )
    }

    /// Deletes every session logged in as `uid`, except `keep` (the
    /// session making the change); returns how many.
    pub async fn delete_for_account(
        &self,
        uid: &str,
        keep: Option<Id>,
    ) -> Result<u64, sqlx::Error> {
        let keep = keep.map(|id| id.to_string()).unwrap_or_default();
        Ok(
            with_pool!(&self.db, p => sqlx::query("DELETE FROM sessions WHERE uid = ? AND id <> ?")
            .bind(uid).bind(&keep).execute(p).await?.rows_affected()),
        )
    }

    async fn insert(&self, record: &Record) -> Result<bool, session_store::Error> {
        let data = serde_json::to_vec(&record.data)
            .map_err(|e| session_store::Error::Encode(e.to_string()))?;
        let r = with_pool!(&self.db, p => sqlx::query("INSERT INTO sessions (id, data, expiry_date, uid) VALUES (?, ?, ?, ?)")
            .bind(record.id.to_string()).bind(data).bind(record.expiry_date.unix_timestamp())
            .bind(session_account(record))
            .execute(p).await.map(|_| ()));
        match r {
            Ok(()) => Ok(true),
            Err(e) if crate::db::is_unique_violation(&e) => Ok(false),
            Err(e) => Err(backend(e)),
        }
    }
}

#[async_trait]
impl SessionStore for SqlSessionStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        // A collision of 128-bit random ids is astronomically unlikely; retry anyway.
        while !self.insert(record).await? {
            record.id = Id::default();
        }
        Ok(())
    }

    /// Updates an existing session only: new sessions come through
    /// [`SessionStore::create`], so a session ended meanwhile (logout, block,
    /// password change elsewhere) is not brought back by a request that
    /// loaded it before.
    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let data = serde_json::to_vec(&record.data)
            .map_err(|e| session_store::Error::Encode(e.to_string()))?;
        with_pool!(&self.db, p => sqlx::query(
            "UPDATE sessions SET data = ?, expiry_date = ?, uid = ? WHERE id = ?")
            .bind(data).bind(record.expiry_date.unix_timestamp()).bind(session_account(record))
            .bind(record.id.to_string()).execute(p).await.map(drop).map_err(backend)?);
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let row: Option<(Vec<u8>, i64)> = with_pool!(&self.db, p => sqlx::query_as(
            "SELECT data, expiry_date FROM sessions WHERE id = ? AND expiry_date > ?")
            .bind(id.to_string()).bind(now()).fetch_optional(p).await.map_err(backend)?);
        let Some((data, expiry)) = row else {
            return Ok(None);
        };
        let data = serde_json::from_slice(&data)
            .map_err(|e| session_store::Error::Decode(e.to_string()))?;
        let expiry_date = time::OffsetDateTime::from_unix_timestamp(expiry)
            .map_err(|e| session_store::Error::Decode(e.to_string()))?;
        Ok(Some(Record {
            id: *id,
            data,
            expiry_date,
        }))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        with_pool!(&self.db, p => sqlx::query("DELETE FROM sessions WHERE id = ?")
            .bind(id.to_string()).execute(p).await.map(drop).map_err(backend)?);
        Ok(())
    }
}
