//! The `signups` table: one row from the signup form until the account exists
//! (and after, without its password hash, for support and audit).
//!
//! States: `pending` (mail sent, link not yet used) → `confirmed` (link used,
//! account job queued) → `created` (the LDAP entry exists).

use crate::db::{Db, DbError, now};
use crate::with_pool;

/// A signup row.
#[derive(Debug, Clone, sqlx::FromRow, PartialEq, Eq)]
pub struct Signup {
    /// Row id.
    pub id: i64,
    /// Display name (`cn`/`sn`).
    pub username: String,
    /// Lower-cased `username`.
    pub username_key: String,
    /// Shell name (`uid`).
    pub uid: String,
    /// E-mail address.
    pub email: String,
    /// The directory password hash; `None` once the account exists.
    pub password_hash: Option<String>,
    /// `pending`, `confirmed` or `created`.
    pub state: String,
    /// Bound into activation tokens; rotated to invalidate links.
    pub token_nonce: String,
    /// The allocated `uidNumber`, once allocated.
    pub uid_number: Option<i64>,
    /// When the form was submitted (unix seconds).
    pub created_at: i64,
    /// When the link was used.
    pub confirmed_at: Option<i64>,
    /// When the LDAP entry was created.
    pub account_created_at: Option<i64>,
    /// When the admins were told.
    pub admins_notified_at: Option<i64>,
}

/// Signup states.
pub mod state {
    /// Waiting for the activation link.
    pub const PENDING: &str = "pending";
    /// Link used; the account job is queued.
    pub const CONFIRMED: &str = "confirmed";
    /// The LDAP entry exists.
    pub const CREATED: &str = "created";
}

/// A signup to insert.
#[derive(Debug, Clone)]
pub struct NewSignup {
    /// Display name.
    pub username: String,
    /// Shell name.
    pub uid: String,
    /// E-mail.
    pub email: String,
    /// Directory password hash.
    pub password_hash: String,
}

/// What an insert ran into.
#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    /// Another signup holds the username or shell name.
    #[error("name already held by another signup")]
    Taken,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

const COLUMNS: &str = "id, username, username_key, uid, email, password_hash, state, token_nonce, \
     uid_number, created_at, confirmed_at, account_created_at, admins_notified_at";

/// The signups table.
#[derive(Debug, Clone)]
pub struct SignupStore {
    db: Db,
}

/// A fresh random nonce.
pub fn new_nonce() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl SignupStore {
    /// The store on `db`.
    pub fn new(db: Db) -> Self {
        SignupStore { db }
    }

    /// Inserts a pending signup with the skeletons of its names, in one
    /// transaction; `Taken` when a name or a skeleton collides with another
    /// signup's.
    pub async fn insert(&self, s: &NewSignup) -> Result<Signup, InsertError> {
        let key = s.username.to_lowercase();
        let nonce = new_nonce();
        let created = now();
        let hashes = skeleton_hashes(&[&s.username, &s.uid]);
        let r: Result<(), sqlx::Error> = with_pool!(&self.db, p => async {
            let mut tx = p.begin().await?;
            sqlx::query(
                "INSERT INTO signups (username, username_key, uid, email, password_hash, state, token_nonce, created_at) \
                 VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)")
                .bind(&s.username).bind(&key).bind(&s.uid).bind(&s.email).bind(&s.password_hash)
                .bind(&nonce).bind(created)
                .execute(&mut *tx).await?;
            let (id,): (i64,) = sqlx::query_as("SELECT id FROM signups WHERE uid = ?")
                .bind(&s.uid).fetch_one(&mut *tx).await?;
            for h in &hashes {
                sqlx::query("INSERT INTO name_skeletons (skeleton_hash, signup_id) VALUES (?, ?)")
                    .bind(h).bind(id).execute(&mut *tx).await?;
            }
            tx.commit().await
        }.await);
        match r {
            Ok(()) => {}
            Err(e) if crate::db::is_unique_violation(&e) => return Err(InsertError::Taken),
            Err(e) => return Err(InsertError::Db(e.into())),
        }
        self.by_uid(&s.uid).await?.ok_or(InsertError::Taken)
    }

    /// For each of `names`, whether a signup holds a name with its skeleton
    /// (see [`crate::names::skeleton`]); an empty name is never held.
    pub async fn skeletons_held(&self, names: &[&str]) -> Result<Vec<bool>, DbError> {
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if name.is_empty() {
                out.push(false);
                continue;
            }
            let [ci, cased] = skeleton_keys(name);
            let row: Option<(i64,)> = with_pool!(&self.db, p => sqlx::query_as(
                "SELECT signup_id FROM name_skeletons WHERE skeleton_hash IN (?, ?) LIMIT 1")
                .bind(&ci).bind(&cased).fetch_optional(p).await?);
            out.push(row.is_some());
        }
        Ok(out)
    }

    /// Records the skeletons of signups stored before skeletons were kept
    /// (once, at start-up; a skeleton another signup holds already is
    /// skipped). Returns how many rows it added.
    pub async fn backfill_skeletons(&self) -> Result<u64, DbError> {
        let rows: Vec<(i64, String, String)> = with_pool!(&self.db, p => sqlx::query_as(
            "SELECT id, username, uid FROM signups WHERE id NOT IN (SELECT signup_id FROM name_skeletons)")
            .fetch_all(p).await?);
        let mut added = 0;
        for (id, username, uid) in rows {
            for h in skeleton_hashes(&[&username, &uid]) {
                let r = with_pool!(&self.db, p => sqlx::query(
                    "INSERT INTO name_skeletons (skeleton_hash, signup_id) VALUES (?, ?)")
                    .bind(&h).bind(id).execute(p).await.map(drop));
                match r {
                    Ok(()) => added += 1,
                    Err(e) if crate::db::is_unique_violation(&e) => {
                        tracing::warn!(
                            signup = id,
                            "signup names look like another signup's; kept as they are"
                        );
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(added)
    }

    /// The signup with `id`.
    pub async fn get(&self, id: i64) -> Result<Option<Signup>, DbError> {
        let sql = const_format("WHERE id = ?");
        Ok(
            with_pool!(&self.db, p => sqlx::query_as::<_, Signup>(sqlx::AssertSqlSafe(sql.clone())).bind(id).fetch_optional(p).await?),
        )
    }

    /// The signup for shell name `uid`.
    pub async fn by_uid(&self, uid: &str) -> Result<Option<Signup>, DbError> {
        let sql = const_format("WHERE uid = ?");
        Ok(
            with_pool!(&self.db, p => sqlx::query_as::<_, Signup>(sqlx::AssertSqlSafe(sql.clone())).bind(uid).fetch_optional(p).await?),
        )
    }

    /// Whether a signup holds `name` as username (case-insensitively) or as
    /// shell name; returns (held as username, held as shell name) for the
    /// candidate username and shell name.
    pub async fn names_held(&self, username: &str, uid: &str) -> Result<(bool, bool), DbError> {
        let ukey = username.to_lowercase();
        let rows: Vec<(String, String)> = with_pool!(&self.db, p => sqlx::query_as(
            "SELECT username_key, uid FROM signups WHERE username_key IN (?, ?) OR uid IN (?, ?)")
            .bind(&ukey).bind(uid).bind(&ukey).bind(uid)
            .fetch_all(p).await?);
        let username_held = rows.iter().any(|(k, u)| *k == ukey || *u == ukey);
        let uid_held = rows.iter().any(|(k, u)| k == uid || u == uid);
        Ok((username_held, uid_held))
    }

    /// Moves a pending signup to `confirmed`; false if it was not pending
    /// (the link was used already).
    pub async fn confirm(&self, id: i64) -> Result<bool, DbError> {
        let r = with_pool!(&self.db, p => sqlx::query(
            "UPDATE signups SET state = 'confirmed', confirmed_at = ? WHERE id = ? AND state = 'pending'")
            .bind(now()).bind(id).execute(p).await?.rows_affected());
        Ok(r == 1)
    }

    /// Records the allocated `uidNumber` unless one is recorded already;
    /// returns the one in force.
    pub async fn set_uid_number(&self, id: i64, n: i64) -> Result<Option<i64>, DbError> {
        with_pool!(&self.db, p => sqlx::query("UPDATE signups SET uid_number = ? WHERE id = ? AND uid_number IS NULL")
            .bind(n).bind(id).execute(p).await.map(drop)?);
        Ok(self.get(id).await?.and_then(|s| s.uid_number))
    }

    /// Marks the account as created and forgets the password hash.
    pub async fn mark_created(&self, id: i64, uid_number: i64) -> Result<(), DbError> {
        with_pool!(&self.db, p => sqlx::query(
            "UPDATE signups SET state = 'created', password_hash = NULL, uid_number = ?, \
             account_created_at = COALESCE(account_created_at, ?) WHERE id = ?")
            .bind(uid_number).bind(now()).bind(id).execute(p).await.map(drop)?);
        self.db.scrub_deleted().await?;
        Ok(())
    }

    /// Claims the admin notification: true exactly once per signup.
    pub async fn claim_admin_notification(&self, id: i64) -> Result<bool, DbError> {
        let r = with_pool!(&self.db, p => sqlx::query(
            "UPDATE signups SET admins_notified_at = ? WHERE id = ? AND admins_notified_at IS NULL")
            .bind(now()).bind(id).execute(p).await?.rows_affected());
        Ok(r == 1)
    }

    /// Gives the signup a new nonce: every earlier activation link stops working.
    pub async fn rotate_nonce(&self, id: i64) -> Result<(), DbError> {
        with_pool!(&self.db, p => sqlx::query("UPDATE signups SET token_nonce = ? WHERE id = ?")
            .bind(new_nonce()).bind(id).execute(p).await.map(drop)?);
        Ok(())
    }

    /// Pending signups created before `cutoff` (unix seconds).
    pub async fn expired(&self, cutoff: i64) -> Result<Vec<Signup>, DbError> {
        let sql = const_format("WHERE state = 'pending' AND created_at < ? ORDER BY id");
        Ok(
            with_pool!(&self.db, p => sqlx::query_as::<_, Signup>(sqlx::AssertSqlSafe(sql.clone())).bind(cutoff).fetch_all(p).await?),
        )
    }

    /// Deletes pending signups created before `cutoff` (and their password
    /// hashes, from the files too); returns how many.
    pub async fn delete_expired(&self, cutoff: i64) -> Result<u64, DbError> {
        let n = with_pool!(&self.db, p => sqlx::query("DELETE FROM signups WHERE state = 'pending' AND created_at < ?")
            .bind(cutoff).execute(p).await?.rows_affected());
        if n > 0 {
            self.db.scrub_deleted().await?;
        }
        Ok(n)
    }

    /// Deletes a still-pending signup (one whose activation mail could not
    /// be queued, so its names are free again); true when one was deleted.
    pub async fn delete_pending(&self, id: i64) -> Result<bool, DbError> {
        Ok(
            with_pool!(&self.db, p => sqlx::query("DELETE FROM signups WHERE state = 'pending' AND id = ?")
            .bind(id).execute(p).await?.rows_affected())
                == 1,
        )
    }

    /// Sets `created_at` (tests and support tooling that backdate a signup).
    pub async fn set_created_at(&self, id: i64, at: i64) -> Result<(), DbError> {
        with_pool!(&self.db, p => sqlx::query("UPDATE signups SET created_at = ? WHERE id = ?")
            .bind(at).bind(id).execute(p).await.map(drop)?);
        Ok(())
    }
}

/// The keys of `name` in `name_skeletons`: SHA-256 (hex) of its
/// case-insensitive and of its case-preserving skeleton (see
/// [`crate::names::skeleton`]), each with its own prefix.
fn skeleton_keys(name: &str) -> [String; 2] {
    use sha2::Digest;
    let key = |kind: &str, skeleton: String| {
        hex::encode(sha2::Sha256::digest(
            format!("{kind}:{skeleton}").as_bytes(),
        ))
    };
    [
        key("i", crate::names::skeleton(name)),
        key("c", crate::names::cased_skeleton(name)),
    ]
}

/// The distinct skeleton keys of `names` (a username and shell name that
/// look alike share entries).
fn skeleton_hashes(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().flat_map(|n| skeleton_keys(n)).collect();
    v.sort();
    v.dedup();
    v
}

fn const_format(where_clause: &str) -> String {
    format!("SELECT {COLUMNS} FROM signups {where_clause}")
}
