//! idm-web's background jobs on the python-rq-compatible queues.
//!
//! | function name              | queue          | argument  | what                         |
//! |----------------------------|----------------|-----------|------------------------------|
//! | `idm.send_activation_mail` | `notification` | signup id | mails the activation link    |
//! | `idm.create_account`       | `default`      | signup id | creates the LDAP entry       |
//! | `idm.notify_admins`        | `notification` | signup id | tells the admins (once)      |
//! | `idm.send_username_reminder` | `notification` | e-mail as typed | mails the account names for it |
//! | `idm.send_email_verification` | `notification` | uid, new address | mails the confirmation link to the new address |
//! | `idm.send_password_reset`  | `notification` | login or e-mail as typed | mails a reset link if one account matches |
//!
//! Arguments are plain signup ids (JSON numbers), never serialized objects:
//! the handler re-reads the signup, so a retried job sees current state. All
//! three are idempotent; transient failures (LDAP, SMTP, database down) are
//! retried with exponential backoff, refusals (unknown signup, wrong state)
//! fail permanently. [`register`] adds the handlers to a
//! `forge_rq::HandlerRegistry`; the `rq-worker` daemon calls it when its
//! configuration has an `[idm]` section.

use std::sync::Arc;
use std::time::Duration;

use forge_rq::{EnqueueOptions, HandlerRegistry, JobArgs, JobError, Queue, Retry};
use serde_json::Value;

use crate::services::account::{AccountOutcome, JobFailure};
use crate::services::{Core, ServiceError};

/// Function name of the activation-mail job.
pub const SEND_ACTIVATION_MAIL: &str = "idm.send_activation_mail";
/// Function name of the account job.
pub const CREATE_ACCOUNT: &str = "idm.create_account";
/// Function name of the admin notification job.
pub const NOTIFY_ADMINS: &str = "idm.notify_admins";
/// Function name of the password-reset mail job.
pub const SEND_PASSWORD_RESET: &str = "idm.send_password_reset";
/// Function name of the forgotten-username mail job.
pub const SEND_USERNAME_REMINDER: &str = "idm.send_username_reminder";
/// Function name of the e-mail verification job.
pub const SEND_EMAIL_VERIFICATION: &str = "idm.send_email_verification";
/// The queue of the account job.
pub const DEFAULT_QUEUE: &str = "default";
/// The queue of mail jobs.
pub const NOTIFICATION_QUEUE: &str = "notification";

/// The two queues idm-web enqueues to.
#[derive(Debug, Clone)]
pub struct JobQueues {
    default: Queue,
    notification: Queue,
}

fn retry() -> Retry {
    Retry::exponential(8, Duration::from_secs(5), Duration::from_secs(600))
}

impl JobQueues {
    /// The queues on a connected Redis pool.
    pub fn new(pool: fred::prelude::Pool) -> Self {
        JobQueues {
            default: Queue::new(pool.clone(), DEFAULT_QUEUE),
            notification: Queue::new(pool, NOTIFICATION_QUEUE),
        }
    }

    /// The queues as `[queue]` configures them: with `min_replicas > 0`, an
    /// enqueue succeeds only once that many replicas have it (`"auto"` is
    /// resolved here, and logged); with Sentinels, the pool follows their
    /// master switches and an enqueue is acknowledged only from the master
    /// they name (retried there for up to `switch_retry_ms`).
    pub async fn configured(
        pool: fred::prelude::Pool,
        redis: &forge_core::redis::RedisSettings,
        settings: &crate::config::QueueSettings,
    ) -> Self {
        let timeout = Duration::from_millis(settings.replica_timeout_ms);
        let retry = Duration::from_millis(settings.switch_retry_ms);
        let watch = match forge_core::redis::MasterWatch::start(redis) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot follow the Sentinels; enqueues use fred's discovery only");
                None
            }
        };
        let wanted = match &watch {
            Some(w) => {
                w.follow_pool(&pool);
                let r = w
                    .resolve_min_replicas(redis, pool.next(), settings.min_replicas)
                    .await;
                tracing::info!(
                    min_replicas = r.count,
                    "idm-web's job queues: an enqueue {}",
                    r.sentence
                );
                r.count
            }
            None => match settings.min_replicas {
                forge_core::redis::MinReplicas::Count(n) => n,
                forge_core::redis::MinReplicas::Auto => 1,
            },
        };
        let q = JobQueues::new(pool);
        let with = |queue: Queue| {
            let queue = queue.with_min_replicas(wanted, timeout);
            match &watch {
                Some(w) => queue.with_master_watch(w.clone(), retry),
                None => queue,
            }
        };
        JobQueues {
            default: with(q.default),
            notification: with(q.notification),
        }
    }

    async fn put(&self, queue: &Queue, func: &str, id: i64) -> Result<(), ServiceError> {
        self.put_value(queue, func, Value::from(id)).await
    }

    async fn put_value(&self, queue: &Queue, func: &str, arg: Value) -> Result<(), ServiceError> {
        let opts = EnqueueOptions {
            retry: Some(retry()),
            ..Default::default()
        };
        queue
            .enqueue(func, vec![arg], opts)
            .await
            .map_err(|e| ServiceError::Queue(e.to_string()))?;
        Ok(())
    }

    /// Queues the activation mail of signup `id`.
    pub async fn enqueue_activation_mail(&self, id: i64) -> Result<(), ServiceError> {
        self.put(&self.notification, SEND_ACTIVATION_MAIL, id).await
    }

    /// Queues the account creation of signup `id`.
    pub async fn enqueue_create_account(&self, id: i64) -> Result<(), ServiceError> {
        self.put(&self.default, CREATE_ACCOUNT, id).await
    }

    /// Queues the password-reset mail for whatever matches `key`.
    pub async fn enqueue_password_reset(&self, key: &str) -> Result<(), ServiceError> {
        self.put_value(&self.notification, SEND_PASSWORD_RESET, Value::from(key))
            .await
    }

    /// Queues the username reminder for `email`.
    pub async fn enqueue_username_reminder(&self, email: &str) -> Result<(), ServiceError> {
        self.put_value(
            &self.notification,
            SEND_USERNAME_REMINDER,
            Value::from(email),
        )
        .await
    }

    /// Queues the verification mail of an e-mail change.
    pub async fn enqueue_email_verification(
        &self,
        uid: &str,
        new_email: &str,
    ) -> Result<(), ServiceError> {
        let opts = EnqueueOptions {
            retry: Some(retry()),
            ..Default::default()
        };
        self.notification
            .enqueue(
                SEND_EMAIL_VERIFICATION,
                vec![Value::from(uid), Value::from(new_email)],
                opts,
            )
            .await
            .map_err(|e| ServiceError::Queue(e.to_string()))?;
        Ok(())
    }

    /// Queues the admin notification of signup `id`.
    pub async fn enqueue_notify_admins(&self, id: i64) -> Result<(), ServiceError> {
        self.put(&self.notification, NOTIFY_ADMINS, id).await
    }
}

fn to_job_error(e: JobFailure) -> JobError {
    match e {
        JobFailure::Service(e) => JobError::retryable(e),
        JobFailure::Refused(e) => JobError::permanent(e),
    }
}

/// Registers idm-web's job handlers, running against `core`.
pub fn register(registry: &mut HandlerRegistry, core: Arc<Core>) {
    let c = Arc::clone(&core);
    registry.register(SEND_ACTIVATION_MAIL, move |_ctx, args: JobArgs| {
        let c = Arc::clone(&c);
        async move {
            let id: i64 = args.arg(0)?;
            c.send_activation_mail(id).await.map_err(to_job_error)?;
            Ok(Value::Null)
        }
    });
    let c = Arc::clone(&core);
    registry.register(CREATE_ACCOUNT, move |_ctx, args: JobArgs| {
        let c = Arc::clone(&c);
        async move {
            let id: i64 = args.arg(0)?;
            Ok(match c.create_account(id).await.map_err(to_job_error)? {
                AccountOutcome::Created { uid_number } => {
                    serde_json::json!({"created": true, "uid_number": uid_number})
                }
                AccountOutcome::AlreadyExisted => serde_json::json!({"created": false}),
            })
        }
    });
    let c = Arc::clone(&core);
    registry.register(SEND_PASSWORD_RESET, move |_ctx, args: JobArgs| {
        let c = Arc::clone(&c);
        async move {
            let key: String = args.arg(0)?;
            let sent = c.send_password_reset(&key).await.map_err(to_job_error)?;
            Ok(serde_json::json!({ "sent": sent }))
        }
    });
    let c = Arc::clone(&core);
    registry.register(SEND_USERNAME_REMINDER, move |_ctx, args: JobArgs| {
        let c = Arc::clone(&c);
        async move {
            let email: String = args.arg(0)?;
            let sent = c
                .send_username_reminder(&email)
                .await
                .map_err(to_job_error)?;
            Ok(serde_json::json!({ "sent": sent }))
        }
    });
    let c = Arc::clone(&core);
    registry.register(SEND_EMAIL_VERIFICATION, move |_ctx, args: JobArgs| {
        let c = Arc::clone(&c);
        async move {
            let uid: String = args.arg(0)?;
            let new_email: String = args.arg(1)?;
            c.send_email_verification(&uid, &new_email)
                .await
                .map_err(to_job_error)?;
            Ok(Value::Null)
        }
    });
    let c = core;
    registry.register(NOTIFY_ADMINS, move |_ctx, args: JobArgs| {
        let c = Arc::clone(&c);
        async move {
            let id: i64 = args.arg(0)?;
            c.notify_admins(id).await.map_err(to_job_error)?;
            Ok(Value::Null)
        }
    });
}

/// Why the job handlers could not be set up from idm-web's configuration.
#[derive(Debug, thiserror::Error)]
pub enum JobSetupError {
    /// The configuration file is invalid (with file:line).
    #[error(transparent)]
    Config(#[from] forge_core::ConfigError),
    /// Redis settings are invalid or Redis cannot be reached.
    #[error("idm-web job queues: {0}")]
    Redis(String),
    /// Database, directory or mail setup failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// Builds the [`Core`] the job handlers run against from idm-web's own
/// configuration file (the `rq-worker` daemon's `[idm] config = …`): its
/// database (migrated), LDAP, mail and token settings, and its Redis for the
/// follow-up jobs the handlers enqueue. Environment overrides
/// `FORGE_IDM_…` apply as for idm-web itself.
pub async fn load_core(config_file: &std::path::Path) -> Result<Arc<Core>, JobSetupError> {
    let loaded =
        forge_core::ConfigSource::new(Some(config_file.to_owned()), crate::config::ENV_PREFIX)
            .load::<crate::Config>()?;
    let secrets = crate::Config::validate(&loaded)?;
    let pool = loaded
        .config
        .redis
        .pool()
        .map_err(|e| JobSetupError::Redis(e.to_string()))?;
    fred::prelude::ClientLike::init(&pool)
        .await
        .map_err(|e| JobSetupError::Redis(e.to_string()))?;
    let queues = JobQueues::configured(pool, &loaded.config.redis, &loaded.config.queue).await;
    Ok(Core::build(loaded.config, &secrets, Some(queues)).await?)
}
