//! Job handlers: what a worker runs for a job's function name.
//!
//! A handler is an async function `(JobContext, JobArgs) -> Result<Value,
//! JobError>` registered under the name python-rq puts in the job's payload
//! (`"idm.send_mail"`, `"forge.echo"`). Delivery is **at least once**: a job
//! whose worker dies, or that is handed back on shutdown, runs again, so
//! handlers must be idempotent.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

/// What a handler knows about the job it runs.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The job id.
    pub job_id: String,
    /// The queue it came from.
    pub queue: String,
    /// The function name.
    pub func_name: String,
    /// Retries already done before this attempt (0 on the first attempt).
    pub attempt: u32,
    /// The worker running it.
    pub worker_name: String,
    /// This attempt's timeout.
    pub timeout: Duration,
    /// Cancelled when the attempt is being stopped (timeout, hand-back);
    /// the handler's future is dropped right after, so only code outside
    /// the future (blocking threads) needs to watch it.
    pub cancel: CancellationToken,
}

/// A job's arguments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobArgs {
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
}

impl JobArgs {
    /// Positional argument `i`, deserialized; a missing or mistyped argument
    /// is a permanent failure naming it.
    pub fn arg<T: DeserializeOwned>(&self, i: usize) -> Result<T, JobError> {
        let v = self
            .args
            .get(i)
            .ok_or_else(|| JobError::permanent(format!("missing positional argument {i}")))?;
        serde_json::from_value(v.clone())
            .map_err(|e| JobError::permanent(format!("positional argument {i}: {e}")))
    }

    /// Keyword argument `name`, deserialized (permanent failure when missing or mistyped).
    pub fn kwarg<T: DeserializeOwned>(&self, name: &str) -> Result<T, JobError> {
        let v = self
            .kwargs
            .get(name)
            .ok_or_else(|| JobError::permanent(format!("missing keyword argument {name:?}")))?;
        serde_json::from_value(v.clone())
            .map_err(|e| JobError::permanent(format!("keyword argument {name:?}: {e}")))
    }

    /// Keyword argument `name` if present, else positional argument `i`.
    pub fn get<T: DeserializeOwned>(&self, name: &str, i: usize) -> Result<T, JobError> {
        if self.kwargs.contains_key(name) {
            self.kwarg(name)
        } else if i < self.args.len() {
            self.arg(i)
        } else {
            Err(JobError::permanent(format!(
                "missing argument {name:?} (keyword, or positional {i})"
            )))
        }
    }
}

/// Why a job attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    /// Whether retrying may help (the job's retry policy applies) or not
    /// (the job goes to the failed registry at once).
    pub retryable: bool,
    /// The error, as stored in `exc_info` (prefixed by its kind).
    pub message: String,
}

impl JobError {
    /// A failure worth retrying (network down, server busy).
    pub fn retryable(message: impl fmt::Display) -> Self {
        JobError {
            retryable: true,
            message: message.to_string(),
        }
    }

    /// A failure no retry will fix (bad arguments, refused for good).
    pub fn permanent(message: impl fmt::Display) -> Self {
        JobError {
            retryable: false,
            message: message.to_string(),
        }
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for JobError {}

/// A handler's future.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Value, JobError>> + Send>>;

/// A registered handler.
pub type Handler = Arc<dyn Fn(JobContext, JobArgs) -> HandlerFuture + Send + Sync>;

/// Function name → handler.
#[derive(Clone, Default)]
pub struct HandlerRegistry {
    /// The handlers.
    handlers: HashMap<String, Handler>,
}

impl fmt::Debug for HandlerRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

impl HandlerRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with the built-in handlers ([`register_builtins`]).
    pub fn with_builtins() -> Self {
        let mut r = Self::new();
        register_builtins(&mut r);
        r
    }

    /// Registers (or replaces) the handler for `name`.
    pub fn register<F, Fut>(&mut self, name: &str, handler: F) -> &mut Self
    where
        F: Fn(JobContext, JobArgs) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, JobError>> + Send + 'static,
    {
        self.handlers.insert(
            name.to_owned(),
            Arc::new(move |ctx, args| Box::pin(handler(ctx, args)) as HandlerFuture),
        );
        self
    }

    /// The handler for `name`.
    pub fn get(&self, name: &str) -> Option<Handler> {
        self.handlers.get(name).cloned()
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.handlers.keys().cloned().collect();
        v.sort();
        v
    }
}

/// Registers the built-ins used by tests and operators:
/// * `forge.echo(*args)` — returns its positional arguments as a list;
/// * `forge.sleep(seconds)` — sleeps, returns `null`;
/// * `forge.fail(message)` — always fails (retryable), for testing retries.
pub fn register_builtins(r: &mut HandlerRegistry) {
    r.register("forge.echo", |_ctx, args: JobArgs| async move {
        Ok(Value::Array(args.args))
    });
    r.register("forge.sleep", |_ctx, args: JobArgs| async move {
        let secs: f64 = args.get("seconds", 0)?;
        if !secs.is_finite() || secs < 0.0 {
            return Err(JobError::permanent(format!("bad duration {secs}")));
        }
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        Ok(Value::Null)
    });
    r.register("forge.fail", |_ctx, args: JobArgs| async move {
        let msg: String = args
            .get("message", 0)
            .unwrap_or_else(|_| "forge.fail called".into());
        Err(JobError::retryable(msg))
    });
}
