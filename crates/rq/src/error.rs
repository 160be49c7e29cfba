//! The library's error type.

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RqError {
    /// Redis refused or did not answer.
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    /// The Redis client could not be configured.
    #[error("{0}")]
    Setup(#[from] forge_core::redis::RedisSetupError),
    /// A job with the requested unique id already exists.
    #[error("a job with id {0:?} already exists")]
    DuplicateJob(String),
    /// No job with this id is stored.
    #[error("no job {0:?}")]
    NoSuchJob(String),
    /// A name or option is not acceptable.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was refused (`queue name`, `job id`, …).
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A stored job could not be decoded.
    #[error("job {id}: {reason}")]
    Decode {
        /// The job id.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Fewer replicas than required acknowledged the write in time
    /// ([`crate::Queue::with_min_replicas`]); the master has it, but a
    /// failover now could lose it.
    #[error("not replicated: {acked} of {wanted} replicas acknowledged within {timeout_ms} ms")]
    NotReplicated {
        /// Replicas that acknowledged.
        acked: i64,
        /// Replicas required.
        wanted: u32,
        /// How long we waited, ms.
        timeout_ms: u64,
    },
    /// The enqueue reached a server that is not the master the Sentinels
    /// name, and the new master was not reached in time
    /// ([`crate::Queue::with_master_watch`]); not acknowledged.
    #[error(
        "redis at {connected} is no longer the master (the Sentinels name {master}); not acknowledged"
    )]
    NotMaster {
        /// The server the enqueue reached.
        connected: String,
        /// The master the Sentinels name.
        master: String,
    },
    /// A Lua script answered something unexpected.
    #[error("unexpected reply from {script}: {reason}")]
    Protocol {
        /// The script.
        script: &'static str,
        /// What was wrong.
        reason: String,
    },
}
