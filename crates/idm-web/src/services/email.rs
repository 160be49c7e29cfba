//! Changing an account's e-mail address, verified by mail.
//!
//! A logged-in user asks for a new address; the job
//! `idm.send_email_verification` mails a link to the **new** address. Its
//! token carries the new address and is bound to the current one (see
//! `tokens`), valid `tokens.reset_hours`; opening it and confirming replaces
//! `mail` in LDAP, after which the link no longer verifies.

use super::account::{JobFailure, JobRefusal};
use super::signup::valid_email;
use super::{Core, ServiceError};
use crate::db::now;
use crate::directory::DirectoryError;
use crate::tokens::{TokenError, TokenSigner};

impl Core {
    /// Asks to change `uid`'s address to `new_email`; `Ok(Err(message))` when refused.
    pub async fn request_email_change(
        &self,
        uid: &str,
        current: &str,
        new_email: &str,
    ) -> Result<Result<(), String>, ServiceError> {
        let new_email = new_email.trim();
        if !valid_email(new_email) {
            return Ok(Err("Enter a valid e-mail address.".into()));
        }
        if new_email.eq_ignore_ascii_case(current) {
            return Ok(Err("This is already your address.".into()));
        }
        self.queues()?
            .enqueue_email_verification(uid, new_email)
            .await?;
        Ok(Ok(()))
    }

    /// Job: mails the confirmation link for `new_email` to `new_email`.
    pub async fn send_email_verification(
        &self,
        uid: &str,
        new_email: &str,
    ) -> Result<(), JobFailure> {
        let account = self
            .directory
            .find_account(uid)
            .await
            .map_err(ServiceError::from)?
            .filter(|a| a.uid == uid)
            .ok_or_else(|| JobRefusal::WrongState {
                id: 0,
                state: format!("account {uid} does not exist"),
            })?;
        let expires = now() + self.config.tokens.reset_hours * 3600;
        let token = self
            .tokens
            .email_change_token(uid, new_email, &account.mail, expires);
        let link = format!(
            "{}/account/email/confirm/{token}",
            self.config.http.public_base_url.trim_end_matches('/')
        );
        let body = format!(
            "Hello {cn},\n\nto use this address for the developer account \"{uid}\", open this link within {hours} and confirm:\n\n{link}\n\n\
             If you did not ask for this, ignore this mail.\n",
            cn = account.cn,
            hours = super::password::hours_text(self.config.tokens.reset_hours),
        );
        self.mailer
            .send(
                &[new_email.to_owned()],
                "Confirm your new e-mail address",
                body,
            )
            .await
            .map_err(ServiceError::from)?;
        Ok(())
    }

    /// The (uid, new address) of an e-mail-change token that verifies now.
    pub async fn email_change_for_token(
        &self,
        token: &str,
    ) -> Result<Result<(String, String, String), TokenError>, ServiceError> {
        let Ok((uid, _)) = TokenSigner::email_change_parts(token) else {
            return Ok(Err(TokenError::Invalid));
        };
        let Some(account) = self
            .directory
            .find_account(&uid)
            .await?
            .filter(|a| a.uid == uid && !a.locked)
        else {
            return Ok(Err(TokenError::Invalid));
        };
        Ok(self
            .tokens
            .verify_email_change(token, &uid, &account.mail, now())
            .map(|new| (account.dn, uid, new)))
    }

    /// Applies a verified e-mail change; returns (uid, new address).
    pub async fn confirm_email_change(
        &self,
        token: &str,
    ) -> Result<Result<(String, String), TokenError>, ServiceError> {
        let (dn, uid, new) = match self.email_change_for_token(token).await? {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        match self.directory.set_mail(&dn, &new).await {
            Ok(()) => {}
            Err(DirectoryError::Locked) => return Ok(Err(TokenError::Invalid)),
            Err(e) => return Err(e.into()),
        }
        tracing::info!(uid = %uid, "e-mail address changed");
        Ok(Ok((uid, new)))
    }
}
