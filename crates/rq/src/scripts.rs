//! The Lua scripts that make each state change of a job atomic, and a small
//! runner that loads them once (`SCRIPT LOAD`) and reloads them after a
//! Redis restart or failover (`NOSCRIPT`).
//!
//! | script | does |
//! |--------|------|
//! | `enqueue` | saves a job hash and queues, schedules or defers it |
//! | `claim` | pops up to N ids from the queues in priority order into a worker's in-flight hash and `rq:wip:<q>` |
//! | `settle` | records finished / failed / retry / hand-back, only if the worker still holds the job |
//! | `reap` | requeues the in-flight jobs of workers whose liveness lease expired; poison jobs go to failed |
//! | `promote` | moves due scheduled jobs to their queue |
//! | `requeue_failed`, `empty` | operator verbs |

use std::sync::OnceLock;

use fred::prelude::*;
use fred::types::{FromValue, MultipleKeys, Value};

use crate::RqError;

/// A Lua script run with `EVALSHA`.
#[derive(Debug)]
pub struct LuaScript {
    /// For error messages.
    name: &'static str,
    /// The source.
    source: &'static str,
    /// The SHA1 Redis answered to `SCRIPT LOAD`.
    sha: OnceLock<String>,
}

impl LuaScript {
    const fn new(name: &'static str, source: &'static str) -> Self {
        LuaScript {
            name,
            source,
            sha: OnceLock::new(),
        }
    }

    /// The script's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    async fn load(&self, pool: &Pool) -> Result<String, RqError> {
        let sha: String = pool.next().script_load(self.source).await?;
        let _ = self.sha.set(sha.clone());
        Ok(sha)
    }

    /// Runs the script.
    pub async fn run<R: FromValue>(
        &self,
        pool: &Pool,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<R, RqError> {
        let sha = match self.sha.get() {
            Some(s) => s.clone(),
            None => self.load(pool).await?,
        };
        let keys: MultipleKeys = keys.into();
        match pool
            .evalsha::<R, _, _, _>(sha, keys.clone(), args.clone())
            .await
        {
            Err(e) if e.details().contains("NOSCRIPT") => {
                let sha = self.load(pool).await?;
                Ok(pool.evalsha(sha, keys, args).await?)
            }
            r => Ok(r?),
        }
    }
}

impl LuaScript {
    /// Runs the script on one connection (so a `WAIT` sent after it on the
    /// same connection covers its writes).
    pub async fn run_on<R: FromValue>(
        &self,
        client: &Client,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<R, RqError> {
        let sha = match self.sha.get() {
            Some(s) => s.clone(),
            None => {
                let sha: String = client.script_load(self.source).await?;
                let _ = self.sha.set(sha.clone());
                sha
            }
        };
        let keys: MultipleKeys = keys.into();
        match client
            .evalsha::<R, _, _, _>(sha, keys.clone(), args.clone())
            .await
        {
            Err(e) if e.details().contains("NOSCRIPT") => {
                let sha: String = client.script_load(self.source).await?;
                Ok(client.evalsha(sha, keys, args).await?)
            }
            r => Ok(r?),
        }
    }
}

/// See the module docs.
pub static ENQUEUE: LuaScript = LuaScript::new("enqueue", include_str!("lua/enqueue.lua"));
/// See the module docs.
pub static CLAIM: LuaScript = LuaScript::new("claim", include_str!("lua/claim.lua"));
/// See the module docs.
pub static SETTLE: LuaScript = LuaScript::new("settle", include_str!("lua/settle.lua"));
/// See the module docs.
pub static REAP: LuaScript = LuaScript::new("reap", include_str!("lua/reap.lua"));
/// See the module docs.
pub static PROMOTE: LuaScript = LuaScript::new("promote", include_str!("lua/promote.lua"));
/// See the module docs.
pub static REQUEUE_FAILED: LuaScript =
    LuaScript::new("requeue_failed", include_str!("lua/requeue_failed.lua"));
/// See the module docs.
pub static EMPTY: LuaScript = LuaScript::new("empty", include_str!("lua/empty.lua"));

/// A text argument.
pub fn s(v: impl Into<String>) -> Value {
    Value::String(v.into().into())
}

/// A binary argument.
pub fn b(v: Vec<u8>) -> Value {
    Value::Bytes(v.into())
}
