//! Services: what idm-web does, independent of HTTP and of the job queue.
//!
//! [`Core`] holds every dependency (stores, directory, mailer, signer, job
//! queues); the web routes, the job handlers and the timer subcommands all
//! call into it. `signup` validates and records signups; `account` turns a
//! confirmed signup into an LDAP entry and sends the mails; `password`
//! changes and resets passwords.

pub mod account;
pub mod email;
pub mod manage;
pub mod password;
pub mod signup;
pub mod ssh_keys;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::blocklist::Blocklist;
use crate::config::{Config, Secrets};
use crate::db::{Db, DbError};
use crate::directory::{Directory, DirectoryError};
use crate::jobs::JobQueues;
use crate::mail::{MailError, Mailer};
use crate::names::ReservedNames;
use crate::passwords::PasswordPolicy;
use crate::store::{ApiTokenStore, AuditStore, BlocklistStore, EmailLinkStore, SignupStore};
use crate::tokens::TokenSigner;

/// Why a service call failed (as opposed to refusing bad input).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The directory failed.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// Mail failed.
    #[error(transparent)]
    Mail(#[from] MailError),
    /// The job queue failed.
    #[error("job queue: {0}")]
    Queue(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl From<sqlx::Error> for ServiceError {
    fn from(e: sqlx::Error) -> Self {
        ServiceError::Db(e.into())
    }
}

/// Everything idm-web's services need.
#[derive(Debug)]
pub struct Core {
    /// The configuration.
    pub config: Config,
    /// The database.
    pub db: Db,
    /// Signups.
    pub signups: SignupStore,
    /// Blocklist entries.
    pub blocklist_store: BlocklistStore,
    /// Account managers' audit log.
    pub audit: AuditStore,
    /// Personal API tokens.
    pub api_tokens: ApiTokenStore,
    /// Generations of e-mail-change links.
    pub email_links: EmailLinkStore,
    /// The compiled blocklist in force (refreshed from the database).
    pub blocklist: ArcSwap<Blocklist>,
    /// Serialises [`Core::reload_blocklist`] (read + swap), so a reload that
    /// read older rows can't replace a newer list.
    blocklist_reload: tokio::sync::Mutex<()>,
    /// The directory.
    pub directory: Directory,
    /// Mail.
    pub mailer: Mailer,
    /// Token signing.
    pub tokens: TokenSigner,
    /// Password rules.
    pub passwords: PasswordPolicy,
    /// Names no account may take (system accounts, shipped + configured).
    pub reserved: ReservedNames,
    /// The job queues; `None` for subcommands that enqueue nothing.
    pub queues: Option<JobQueues>,
}

impl Core {
    /// Connects the database (applying migrations) and builds the rest.
    /// `queues` is set by callers that enqueue jobs (the web app).
    pub async fn build(
        config: Config,
        secrets: &Secrets,
        queues: Option<JobQueues>,
    ) -> Result<Arc<Core>, ServiceError> {
        let db = Db::connect(
            &secrets.database_url,
            config.database.max_connections,
            Duration::from_millis(config.database.acquire_timeout_ms),
        )
        .await?;
        db.migrate().await?;
        Core::with_db(config, secrets, db, queues).await
    }

    /// Like [`Core::build`] with an already-connected, migrated database.
    pub async fn with_db(
        config: Config,
        secrets: &Secrets,
        db: Db,
        queues: Option<JobQueues>,
    ) -> Result<Arc<Core>, ServiceError> {
        let extra = match &config.signup.common_passwords_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| ServiceError::Other(format!("{}: {e}", p.display())))?,
            ),
            None => None,
        };
        let core = Core {
            signups: SignupStore::new(db.clone()),
            blocklist_store: BlocklistStore::new(db.clone()),
            audit: AuditStore::new(db.clone()),
            api_tokens: ApiTokenStore::new(db.clone()),
            email_links: EmailLinkStore::new(db.clone()),
            blocklist: ArcSwap::from_pointee(Blocklist::default()),
            blocklist_reload: tokio::sync::Mutex::new(()),
            directory: Directory::new(config.ldap.clone(), secrets.ldap_password.clone()),
            mailer: Mailer::new(&config.mail, &secrets.smtp_password)?,
            tokens: TokenSigner::new(secrets.token_key.clone()),
            passwords: PasswordPolicy::new(config.signup.min_password_length, extra.as_deref())
                .with_min_score(config.signup.min_password_score),
            reserved: ReservedNames::new(&config.signup.reserved_names),
            queues,
            db,
            config,
        };
        core.reload_blocklist().await?;
        let added = core.signups.backfill_skeletons().await?;
        if added > 0 {
            tracing::info!(added, "recorded the name skeletons of earlier signups");
        }
        Ok(Arc::new(core))
    }

    /// Re-reads and recompiles the blocklist from the database.
    pub async fn reload_blocklist(&self) -> Result<usize, ServiceError> {
        let _one_at_a_time = self.blocklist_reload.lock().await;
        let entries = self.blocklist_store.all().await?;
        let compiled = Blocklist::compile(&entries);
        if compiled.skipped > 0 {
            tracing::warn!(
                skipped = compiled.skipped,
                "blocklist entries with unsupported regexes are ignored"
            );
        }
        let n = compiled.len();
        let allow = compiled.allow_len();
        self.blocklist.store(Arc::new(compiled));
        metrics::gauge!("forge_idm_blocklist_entries").set(n as f64);
        metrics::gauge!("forge_idm_blocklist_whitelist_entries").set(allow as f64);
        Ok(n)
    }

    /// The link a user opens to activate `token`.
    pub fn activation_url(&self, token: &str) -> String {
        format!(
            "{}/activate/{token}",
            self.config.http.public_base_url.trim_end_matches('/')
        )
    }

    /// Ends every session logged in as `uid`, except `keep` (the session
    /// making a change); returns how many ended.
    pub async fn end_sessions(
        &self,
        uid: &str,
        keep: Option<tower_sessions::session::Id>,
    ) -> Result<u64, ServiceError> {
        Ok(crate::store::SqlSessionStore::new(self.db.clone())
            .delete_for_account(uid, keep)
            .await?)
    }

    /// The job queues, or an error for callers built without them.
    pub fn queues(&self) -> Result<&JobQueues, ServiceError> {
        self.queues
            .as_ref()
            .ok_or_else(|| ServiceError::Queue("no job queue configured".into()))
    }
}
