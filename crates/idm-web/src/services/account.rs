//! Activation and account creation.
//!
//! * [`Core::send_activation_mail`] (job, `notification` queue): mails the
//!   link of a pending signup.
//! * [`Core::confirm_activation`] (the POST of the confirm page): verifies the
//!   token, moves the signup to `confirmed` (so the link works once) and
//!   queues the account job.
//! * [`Core::create_account`] (job, `default` queue): idempotent. Allocates a
//!   `uidNumber` once (kept in the signup row, so retries reuse it), creates
//!   the entry (an existing one is a success), marks the signup `created` and
//!   deletes its password hash, and only then claims the admin notification —
//!   exactly once per signup — and queues it.
//! * [`Core::notify_admins`] (job, `notification` queue).

use super::{Core, ServiceError};
use crate::db::now;
use crate::directory::{Created, NewAccount};
use crate::store::Signup;
use crate::store::signups::state;
use crate::tokens::TokenError;

/// What the account job did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountOutcome {
    /// The entry was created now.
    Created {
        /// Its uidNumber.
        uid_number: u32,
    },
    /// It existed already (a retried or repeated job).
    AlreadyExisted,
}

/// Why a job could not do its work and should not be retried.
#[derive(Debug, thiserror::Error)]
pub enum JobRefusal {
    /// The signup does not exist (expired and deleted).
    #[error("signup {0} does not exist")]
    NoSignup(i64),
    /// The signup is in a state the job does not act on.
    #[error("signup {id} is {state}")]
    WrongState {
        /// The signup.
        id: i64,
        /// Its state.
        state: String,
    },
}

/// A job's failure: retry (`Service`) or give up (`Refused`).
#[derive(Debug, thiserror::Error)]
pub enum JobFailure {
    /// A transient failure: retry.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// A permanent one.
    #[error(transparent)]
    Refused(#[from] JobRefusal),
}

impl From<crate::db::DbError> for JobFailure {
    fn from(e: crate::db::DbError) -> Self {
        JobFailure::Service(e.into())
    }
}

impl Core {
    /// A fresh activation link for `signup`, valid for `tokens.activation_days`.
    pub fn activation_link(&self, signup: &Signup) -> String {
        let expires = now() + self.config.tokens.activation_days * 86_400;
        self.activation_url(&self.tokens.activation_token(signup, expires))
    }

    /// The signup a token is for, if the token verifies now.
    pub async fn signup_for_token(
        &self,
        token: &str,
    ) -> Result<Result<Signup, TokenError>, ServiceError> {
        let Ok((id, _, _)) = crate::tokens::TokenSigner::activation_id(token) else {
            return Ok(Err(TokenError::Invalid));
        };
        let Some(signup) = self.signups.get(id).await? else {
            return Ok(Err(TokenError::Invalid));
        };
        Ok(self
            .tokens
            .verify_activation(token, &signup, now())
            .map(|()| signup))
    }

    /// Uses an activation token: confirms the signup and queues the account job.
    pub async fn confirm_activation(
        &self,
        token: &str,
    ) -> Result<Result<Signup, TokenError>, ServiceError> {
        let signup = match self.signup_for_token(token).await? {
            Ok(s) => s,
            Err(e) => {
                metrics::counter!("forge_idm_activation_refused_total").increment(1);
                return Ok(Err(e));
            }
        };
        if !self.signups.confirm(signup.id).await? {
            // Lost a race with a second click: the first one queued the job.
            return Ok(Err(TokenError::Invalid));
        }
        self.queues()?.enqueue_create_account(signup.id).await?;
        tracing::info!(uid = %signup.uid, id = signup.id, "activation confirmed; account job queued");
        Ok(Ok(signup))
    }

    /// Job: mails the activation link of a pending signup.
    pub async fn send_activation_mail(&self, id: i64) -> Result<(), JobFailure> {
        let signup = self
            .signups
            .get(id)
            .await?
            .ok_or(JobRefusal::NoSignup(id))?;
        if signup.state != state::PENDING {
            return Err(JobRefusal::WrongState {
                id,
                state: signup.state,
            }
            .into());
        }
        let link = self.activation_link(&signup);
        let body = format!(
            "Hello {name},\n\n\
             someone (hopefully you) asked for a developer account with the shell name \"{uid}\".\n\
             To activate it, open this link within {days} days and confirm:\n\n{link}\n\n\
             If you did not sign up, ignore this mail: nothing happens without the link.\n",
            name = signup.username,
            uid = signup.uid,
            days = self.config.tokens.activation_days,
        );
        self.mailer
            .send(
                std::slice::from_ref(&signup.email),
                "Activate your developer account",
                body,
            )
            .await
            .map_err(ServiceError::from)?;
        tracing::info!(uid = %signup.uid, "activation mail sent");
        Ok(())
    }

    /// Job: creates the LDAP account of a confirmed signup (idempotent).
    pub async fn create_account(&self, id: i64) -> Result<AccountOutcome, JobFailure> {
        let signup = self
            .signups
            .get(id)
            .await?
            .ok_or(JobRefusal::NoSignup(id))?;
        let outcome = match signup.state.as_str() {
            state::CREATED => AccountOutcome::AlreadyExisted,
            state::CONFIRMED => {
                if let Some(n) = self
                    .directory
                    .account_uid_number(&signup.uid)
                    .await
                    .map_err(ServiceError::from)?
                {
                    self.signups.mark_created(id, i64::from(n)).await?;
                    AccountOutcome::AlreadyExisted
                } else {
                    let uid_number = match signup.uid_number {
                        Some(n) => n,
                        None => {
                            let fresh = self
                                .directory
                                .allocate_uid_number()
                                .await
                                .map_err(ServiceError::from)?;
                            // A concurrent run may have recorded one first: use that.
                            self.signups
                                .set_uid_number(id, i64::from(fresh))
                                .await?
                                .unwrap_or(i64::from(fresh))
                        }
                    };
                    let uid_number = u32::try_from(uid_number)
                        .map_err(|_| ServiceError::Other(format!("bad uidNumber {uid_number}")))?;
                    let password_hash = signup.password_hash.clone().ok_or_else(|| {
                        ServiceError::Other(format!("signup {id} has no password hash"))
                    })?;
                    let created = self
                        .directory
                        .create_account(&NewAccount {
                            uid: signup.uid.clone(),
                            username: signup.username.clone(),
                            email: signup.email.clone(),
                            password_hash,
                            uid_number,
                        })
                        .await
                        .map_err(ServiceError::from)?;
                    let n = match created {
                        Created::New => uid_number,
                        Created::Existed => self
                            .directory
                            .account_uid_number(&signup.uid)
                            .await
                            .map_err(ServiceError::from)?
                            .unwrap_or(uid_number),
                    };
                    self.signups.mark_created(id, i64::from(n)).await?;
                    if created == Created::New {
                        metrics::counter!("forge_idm_accounts_created_total").increment(1);
                        tracing::info!(uid = %signup.uid, uid_number = n, "account created");
                        AccountOutcome::Created { uid_number: n }
                    } else {
                        AccountOutcome::AlreadyExisted
                    }
                }
            }
            other => {
                return Err(JobRefusal::WrongState {
                    id,
                    state: other.to_owned(),
                }
                .into());
            }
        };
        // Only after success, and exactly once per signup.
        if !self.config.mail.admin_recipients.is_empty()
            && self.signups.claim_admin_notification(id).await?
        {
            self.queues()?.enqueue_notify_admins(id).await?;
        }
        Ok(outcome)
    }

    /// Job: tells the admins about a created account.
    pub async fn notify_admins(&self, id: i64) -> Result<(), JobFailure> {
        let signup = self
            .signups
            .get(id)
            .await?
            .ok_or(JobRefusal::NoSignup(id))?;
        if signup.state != state::CREATED {
            return Err(JobRefusal::WrongState {
                id,
                state: signup.state,
            }
            .into());
        }
        let body = format!(
            "A developer account was created.\n\nUsername: {}\nShell name: {}\nuidNumber: {}\nE-mail: {}\n",
            signup.username,
            signup.uid,
            signup.uid_number.map(|n| n.to_string()).unwrap_or_default(),
            signup.email
        );
        self.mailer
            .send(
                &self.config.mail.admin_recipients,
                &format!("New developer account: {}", signup.uid),
                body,
            )
            .await
            .map_err(ServiceError::from)?;
        Ok(())
    }

    /// Deletes (or with `check`, lists) pending signups older than `days`.
    pub async fn expire_signups(
        &self,
        days: i64,
        check: bool,
    ) -> Result<Vec<Signup>, ServiceError> {
        let cutoff = now() - days * 86_400;
        let expired = self.signups.expired(cutoff).await?;
        if !check {
            let n = self.signups.delete_expired(cutoff).await?;
            tracing::info!(deleted = n, days, "expired signups deleted");
        }
        Ok(expired)
    }
}
