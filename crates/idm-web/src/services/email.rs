//! Changing an account's e-mail address, verified by mail.
//!
//! A logged-in user asks for a new address; the job
//! `idm.send_email_verification` mails a link to the **new** address. Its
//! token carries the new address and is bound to the current one and to the
//! account's e-mail-link generation (see `tokens::EmailLinkState`), valid
//! `tokens.reset_hours`; opening it and confirming moves the generation on
//! (compare-and-set, `store::email_links`) and replaces `mail` in LDAP. So a
//! link works once, and every older link of the account dies — even when the
//! address later changes back to the one it was made for.
//!
//! Requests are rate-limited per client address and per account (the page),
//! since each one mails a third party's address.

use super::account::{JobFailure, JobRefusal};
use super::signup::valid_email;
use super::{Core, ServiceError};
use crate::db::now;
use crate::directory::DirectoryError;
use crate::tokens::{EmailLinkState, TokenError, TokenSigner};

/// A verified e-mail change, ready to apply.
#[derive(Debug, Clone)]
pub struct EmailChange {
    /// The account's DN.
    pub dn: String,
    /// Its shell name.
    pub uid: String,
    /// The new address.
    pub new_email: String,
    /// The account's e-mail-link generation the link was made for.
    pub generation: i64,
}

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
        let link = EmailLinkState {
            generation: self
                .email_links
                .generation(uid)
                .await
                .map_err(ServiceError::from)?,
            current_email: account.mail.clone(),
        };
        let token = self
            .tokens
            .email_change_token(uid, new_email, &link, expires);
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

    /// The (dn, uid, new address, link state) of an e-mail-change token that
    /// verifies now.
    pub async fn email_change_for_token(
        &self,
        token: &str,
    ) -> Result<Result<EmailChange, TokenError>, ServiceError> {
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
        let link = EmailLinkState {
            generation: self.email_links.generation(&uid).await?,
            current_email: account.mail,
        };
        Ok(self
            .tokens
            .verify_email_change(token, &uid, &link, now())
            .map(|new_email| EmailChange {
                dn: account.dn,
                uid,
                new_email,
                generation: link.generation,
            }))
    }

    /// Applies a verified e-mail change; returns (uid, new address).
    pub async fn confirm_email_change(
        &self,
        token: &str,
    ) -> Result<Result<(String, String), TokenError>, ServiceError> {
        let change = match self.email_change_for_token(token).await? {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        // Used up now, whatever happens next: of two confirmations one wins,
        // and older links of the account die.
        if !self
            .email_links
            .advance(&change.uid, change.generation)
            .await?
        {
            return Ok(Err(TokenError::Invalid));
        }
        let EmailChange {
            dn,
            uid,
            new_email: new,
            ..
        } = change;
        match self.directory.set_mail(&dn, &new).await {
            Ok(()) => {}
            Err(DirectoryError::Locked) => return Ok(Err(TokenError::Invalid)),
            Err(e) => return Err(e.into()),
        }
        tracing::info!(uid = %uid, "e-mail address changed");
        Ok(Ok((uid, new)))
    }
}
