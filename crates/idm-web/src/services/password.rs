//! Self-service passwords: change (logged in) and reset (forgotten).
//!
//! * **Change**: the user's current password is checked by binding as the
//!   user, and the new hash is written on that same connection (the
//!   directory's "self write" ACL), after the strength check of signup.
//! * **Reset**: the request page always answers the same, whether or not an
//!   account matches, and does no lookup itself: it queues
//!   `idm.send_password_reset` with what was typed. The job looks the account
//!   up (by `uid`, `cn` or `mail`) and, if exactly one matches, mails a link
//!   whose token is bound to the current password hash (see `tokens`), valid
//!   `tokens.reset_hours`. Setting a new password through it kills the link.
//! * **Blocked accounts** (locked by a manager) get neither: no reset mail
//!   (the page's answer stays the neutral one), a link mailed before the
//!   block stops working, and the password write itself is conditional on
//!   the account being unlocked (`directory`'s assertion control), so a
//!   reset racing a block can't lift it.
//! * A changed password ends the account's other sessions (a reset: all).
//! * **Forgotten username**: the same neutral pattern; the job
//!   `idm.send_username_reminder` mails the names of every account with that
//!   address, to that address only.

use super::account::{JobFailure, JobRefusal};
use super::signup::FieldErrors;
use super::{Core, ServiceError};
use crate::db::now;
use crate::directory::{AccountRecord, DirectoryError};
use crate::passwords::hash_for_directory;
use crate::tokens::{TokenError, TokenSigner};

/// The user whose password changes.
#[derive(Debug, Clone)]
pub struct PasswordOwner<'a> {
    /// The session making the change (kept when the others end).
    pub session: Option<tower_sessions::session::Id>,
    /// DN.
    pub dn: &'a str,
    /// Shell name.
    pub uid: &'a str,
    /// Display name.
    pub cn: &'a str,
    /// E-mail.
    pub mail: &'a str,
}

/// What became of a reset attempt.
#[derive(Debug)]
pub enum ResetOutcome {
    /// The password was set.
    Done,
    /// The token is bad or expired.
    Token(TokenError),
    /// The new password was refused.
    Invalid(FieldErrors),
}

/// `1 hour`, `3 hours`: how long a mailed link works, for the mail's text.
pub(crate) fn hours_text(hours: i64) -> String {
    if hours == 1 {
        "1 hour".to_owned()
    } else {
        format!("{hours} hours")
    }
}

impl Core {
    fn new_password_errors(&self, new: &str, again: &str, names: &[&str]) -> FieldErrors {
        let mut errors = FieldErrors::new();
        let problems = self.passwords.check(new, names);
        if !problems.is_empty() {
            errors.insert("new_password", problems);
        }
        if new != again {
            errors.insert("new_password2", vec!["The two passwords differ.".into()]);
        }
        errors
    }

    /// Changes a logged-in user's password. `Ok(Err(errors))` for refused input.
    pub async fn change_password(
        &self,
        who: &PasswordOwner<'_>,
        current: &str,
        new: &str,
        again: &str,
    ) -> Result<Result<(), FieldErrors>, ServiceError> {
        let local = who.mail.split('@').next().unwrap_or("");
        let mut errors = self.new_password_errors(new, again, &[who.uid, who.cn, local]);
        if current == new && !new.is_empty() {
            errors
                .entry("new_password")
                .or_default()
                .push("Choose a password different from the current one.".into());
        }
        if !errors.is_empty() {
            return Ok(Err(errors));
        }
        let hash = hash_for_directory(new, self.config.ldap.password_scheme)
            .map_err(|e| ServiceError::Other(e.to_string()))?;
        let changed = match self
            .directory
            .change_own_password(who.dn, current, &hash)
            .await
        {
            Ok(changed) => changed,
            Err(DirectoryError::Locked) => {
                let mut errors = FieldErrors::new();
                errors.insert("form", vec!["This account is blocked.".into()]);
                return Ok(Err(errors));
            }
            Err(e) => return Err(e.into()),
        };
        if !changed {
            let mut errors = FieldErrors::new();
            errors.insert(
                "current_password",
                vec!["This is not your current password.".into()],
            );
            return Ok(Err(errors));
        }
        metrics::counter!("forge_idm_password_changes_total", "how" => "change").increment(1);
        let ended = self.end_sessions(who.uid, who.session).await?;
        tracing::info!(
            uid = who.uid,
            other_sessions_ended = ended,
            "password changed"
        );
        Ok(Ok(()))
    }

    /// Queues a reset mail for whatever matches `key` (uid, username or
    /// e-mail). Says nothing about whether anything matched.
    pub async fn request_password_reset(&self, key: &str) -> Result<(), ServiceError> {
        let key = key.trim();
        if key.is_empty() || key.len() > 255 {
            return Ok(());
        }
        self.queues()?.enqueue_password_reset(key).await
    }

    /// Job: mails a reset link to the account matching `key`, if exactly one does.
    pub async fn send_password_reset(&self, key: &str) -> Result<bool, JobFailure> {
        let Some(account) = self
            .directory
            .find_account(key)
            .await
            .map_err(ServiceError::from)?
        else {
            tracing::info!("password reset asked for an unknown account; nothing sent");
            return Ok(false);
        };
        if account.locked {
            tracing::info!(uid = %account.uid, "password reset asked for a blocked account; nothing sent");
            return Ok(false);
        }
        if account.mail.is_empty() {
            return Err(JobRefusal::WrongState {
                id: 0,
                state: format!("account {} has no mail address", account.uid),
            }
            .into());
        }
        let expires = now() + self.config.tokens.reset_hours * 3600;
        let token = self
            .tokens
            .reset_token(&account.uid, &account.user_password, expires);
        let link = format!(
            "{}/password/reset/{token}",
            self.config.http.public_base_url.trim_end_matches('/')
        );
        let body = format!(
            "Hello {cn},\n\nsomeone (hopefully you) asked to reset the password of the developer account \"{uid}\".\n\
             To choose a new password, open this link within {hours}:\n\n{link}\n\n\
             If you did not ask for this, ignore this mail: your password stays as it is.\n",
            cn = account.cn,
            uid = account.uid,
            hours = hours_text(self.config.tokens.reset_hours),
        );
        self.mailer
            .send(
                std::slice::from_ref(&account.mail),
                "Reset your developer account password",
                body,
            )
            .await
            .map_err(ServiceError::from)?;
        tracing::info!(uid = %account.uid, "password reset mail sent");
        Ok(true)
    }

    /// The account a reset token is for, if it verifies now.
    pub async fn account_for_reset_token(
        &self,
        token: &str,
    ) -> Result<Result<AccountRecord, TokenError>, ServiceError> {
        let Ok(uid) = TokenSigner::reset_uid(token) else {
            return Ok(Err(TokenError::Invalid));
        };
        let Some(account) = self.directory.find_account(&uid).await? else {
            return Ok(Err(TokenError::Invalid));
        };
        if account.uid != uid || account.locked {
            return Ok(Err(TokenError::Invalid));
        }
        Ok(self
            .tokens
            .verify_reset(token, &account.uid, &account.user_password, now())
            .map(|()| account))
    }

    /// Sets a new password through a reset token.
    pub async fn reset_password(
        &self,
        token: &str,
        new: &str,
        again: &str,
    ) -> Result<ResetOutcome, ServiceError> {
        let account = match self.account_for_reset_token(token).await? {
            Ok(a) => a,
            Err(e) => return Ok(ResetOutcome::Token(e)),
        };
        let local = account.mail.split('@').next().unwrap_or("");
        let errors = self.new_password_errors(new, again, &[&account.uid, &account.cn, local]);
        if !errors.is_empty() {
            return Ok(ResetOutcome::Invalid(errors));
        }
        let hash = hash_for_directory(new, self.config.ldap.password_scheme)
            .map_err(|e| ServiceError::Other(e.to_string()))?;
        match self.directory.set_password(&account.dn, &hash).await {
            Ok(()) => {}
            // Blocked since the token was checked: the directory refused the write.
            Err(DirectoryError::Locked) => return Ok(ResetOutcome::Token(TokenError::Invalid)),
            Err(e) => return Err(e.into()),
        }
        metrics::counter!("forge_idm_password_changes_total", "how" => "reset").increment(1);
        let ended = self.end_sessions(&account.uid, None).await?;
        tracing::info!(uid = %account.uid, sessions_ended = ended, "password reset");
        Ok(ResetOutcome::Done)
    }

    /// Queues a reminder of the account names registered to `email`. Says
    /// nothing about whether any are.
    pub async fn request_username_reminder(&self, email: &str) -> Result<(), ServiceError> {
        let email = email.trim();
        if !super::signup::valid_email(email) {
            return Ok(());
        }
        self.queues()?.enqueue_username_reminder(email).await
    }

    /// Job: mails the names of the accounts registered to `email`, if any.
    pub async fn send_username_reminder(&self, email: &str) -> Result<bool, JobFailure> {
        let accounts = self
            .directory
            .accounts_by_mail(email)
            .await
            .map_err(ServiceError::from)?;
        if accounts.is_empty() {
            tracing::info!("username reminder asked for an unknown address; nothing sent");
            return Ok(false);
        }
        let list: String = accounts
            .iter()
            .map(|(uid, cn)| format!("  Username: {cn}\n  Shell name: {uid}\n\n"))
            .collect();
        let body = format!(
            "Hello,\n\nsomeone (hopefully you) asked which developer accounts use this e-mail address:\n\n{list}\
             You can log in with either name: {base}/login\n",
            base = self.config.http.public_base_url.trim_end_matches('/'),
        );
        self.mailer
            .send(&[email.to_owned()], "Your developer account name", body)
            .await
            .map_err(ServiceError::from)?;
        Ok(true)
    }
}
