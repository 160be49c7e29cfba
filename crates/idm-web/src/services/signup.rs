//! Signup: validating the form and recording a pending signup.
//!
//! Checks, in order: field rules (username, shell name, e-mail, password
//! twice and its strength, the anti-bot question), then availability of both
//! names — the blocklist, pending signups, and the directory (as `uid` or
//! `cn`). If the directory cannot be asked, nothing is saved and the user is
//! asked to try again later. Only then is the signup stored and the
//! activation mail queued.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Core, ServiceError};
use crate::db::now;
use crate::names;
use crate::passwords::hash_for_directory;
use crate::store::NewSignup;
use crate::store::signups::InsertError;

/// The submitted form.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SignupForm {
    /// Display name.
    pub username: String,
    /// Shell name.
    pub shellname: String,
    /// E-mail.
    pub email: String,
    /// Password.
    pub password: String,
    /// Password again.
    pub password2: String,
    /// The signed anti-bot challenge.
    pub challenge: String,
    /// The answer to it.
    pub human_check: String,
    /// Honeypot: must stay empty.
    pub website: String,
}

/// Errors per field (`username`, `shellname`, `email`, `password`,
/// `password2`, `human_check`), and `form` for the whole form.
pub type FieldErrors = BTreeMap<&'static str, Vec<String>>;

/// What became of a submitted form.
#[derive(Debug)]
pub enum SignupOutcome {
    /// Stored; the activation mail is queued.
    Stored {
        /// The signup's id.
        id: i64,
    },
    /// Refused, with the reasons.
    Invalid(FieldErrors),
    /// The directory cannot be asked: try again later; nothing was saved.
    TryLater,
}

/// The answer of the name-check endpoint.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct NameCheck {
    /// The username as it would be stored.
    pub username: String,
    /// Problems with the username (empty: available).
    pub username_errors: Vec<String>,
    /// The shell name checked (the suggestion when none was given).
    pub shellname: String,
    /// Problems with the shell name.
    pub shellname_errors: Vec<String>,
    /// An available shell name derived from the username, if one was found.
    pub suggested_shellname: Option<String>,
}

const TAKEN: &str = "This name is already taken.";
const BLOCKED: &str = "This name is not allowed.";

impl Core {
    /// Availability problems of `username` and `uid` (blocklist, pending
    /// signups, directory). `Err` when the directory or database fails.
    async fn availability(
        &self,
        username: &str,
        uid: &str,
    ) -> Result<(Vec<String>, Vec<String>), ServiceError> {
        let (mut u, mut s) = (Vec::new(), Vec::new());
        {
            let list = self.blocklist.load();
            if !username.is_empty() && list.matching(username).is_some() {
                u.push(BLOCKED.to_owned());
            }
            if !uid.is_empty() && list.matching(uid).is_some() {
                s.push(BLOCKED.to_owned());
            }
        }
        let (held, in_ldap) = tokio::join!(
            self.signups.names_held(username, uid),
            self.directory.names_in_use(username, uid)
        );
        let (held_u, held_s) = held?;
        let in_ldap = in_ldap?;
        if (held_u || in_ldap.username) && u.is_empty() {
            u.push(TAKEN.to_owned());
        }
        if (held_s || in_ldap.uid) && s.is_empty() {
            s.push(TAKEN.to_owned());
        }
        Ok((u, s))
    }

    /// Validates and stores a signup, then queues its activation mail.
    pub async fn submit_signup(&self, form: &SignupForm) -> Result<SignupOutcome, ServiceError> {
        let mut errors = FieldErrors::new();
        let username = names::normalize_username(&form.username);
        let uid = form.shellname.trim().to_owned();
        let email = form.email.trim().to_owned();
        let add = |errors: &mut FieldErrors, field: &'static str, msgs: Vec<String>| {
            if !msgs.is_empty() {
                errors.entry(field).or_default().extend(msgs);
            }
        };
        add(&mut errors, "username", names::username_problems(&username));
        add(&mut errors, "shellname", names::shell_name_problems(&uid));
        if !valid_email(&email) {
            add(
                &mut errors,
                "email",
                vec!["Enter a valid e-mail address.".into()],
            );
        }
        if form.password != form.password2 {
            add(
                &mut errors,
                "password2",
                vec!["The two passwords differ.".into()],
            );
        }
        let local = email.split('@').next().unwrap_or("");
        add(
            &mut errors,
            "password",
            self.passwords
                .check(&form.password, &[&username, &uid, local]),
        );
        if self.config.signup.antibot
            && (!form.website.is_empty()
                || !self
                    .tokens
                    .verify_antibot(&form.challenge, &form.human_check, now()))
        {
            add(
                &mut errors,
                "human_check",
                vec!["That answer is not right; please try again.".into()],
            );
        }
        let name_ok = !errors.contains_key("username") || !errors.contains_key("shellname");
        if name_ok {
            let u = if errors.contains_key("username") {
                ""
            } else {
                username.as_str()
            };
            let s = if errors.contains_key("shellname") {
                ""
            } else {
                uid.as_str()
            };
            match self.availability(u, s).await {
                Ok((ue, se)) => {
                    if !u.is_empty() {
                        add(&mut errors, "username", ue);
                    }
                    if !s.is_empty() {
                        add(&mut errors, "shellname", se);
                    }
                }
                Err(ServiceError::Directory(e)) => {
                    tracing::warn!(error = %e, "signup refused: directory unavailable");
                    return Ok(SignupOutcome::TryLater);
                }
                Err(e) => return Err(e),
            }
        }
        if !errors.is_empty() {
            metrics::counter!("forge_idm_signups_refused_total").increment(1);
            return Ok(SignupOutcome::Invalid(errors));
        }
        let hash = hash_for_directory(&form.password, self.config.ldap.password_scheme)
            .map_err(|e| ServiceError::Other(e.to_string()))?;
        let signup = match self
            .signups
            .insert(&NewSignup {
                username,
                uid,
                email,
                password_hash: hash,
            })
            .await
        {
            Ok(s) => s,
            Err(InsertError::Taken) => {
                let mut errors = FieldErrors::new();
                errors.insert("shellname", vec![TAKEN.to_owned()]);
                return Ok(SignupOutcome::Invalid(errors));
            }
            Err(InsertError::Db(e)) => return Err(e.into()),
        };
        metrics::counter!("forge_idm_signups_total").increment(1);
        tracing::info!(uid = %signup.uid, id = signup.id, "signup stored");
        if let Err(e) = self.queues()?.enqueue_activation_mail(signup.id).await {
            // Without its mail the signup would only hold the names until it
            // expires: undo it, so the user's retry starts afresh.
            tracing::error!(uid = %signup.uid, id = signup.id, error = %e, "activation mail could not be queued; signup withdrawn");
            self.signups.delete_pending(signup.id).await?;
            return Err(e);
        }
        Ok(SignupOutcome::Stored { id: signup.id })
    }

    /// The JSON name check: rules and availability of a username and shell
    /// name, and a suggested shell name. `Err(Directory)` when LDAP is down.
    pub async fn check_names(
        &self,
        username: &str,
        shellname: Option<&str>,
    ) -> Result<NameCheck, ServiceError> {
        let username = names::normalize_username(username);
        let mut out = NameCheck {
            username_errors: if username.is_empty() {
                Vec::new()
            } else {
                names::username_problems(&username)
            },
            username: username.clone(),
            ..Default::default()
        };
        let given = shellname
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        if let Some(s) = &given {
            out.shellname = s.clone();
            out.shellname_errors = names::shell_name_problems(s);
        }
        let u = if out.username_errors.is_empty() {
            username.as_str()
        } else {
            ""
        };
        let s = if out.shellname_errors.is_empty() {
            out.shellname.clone()
        } else {
            String::new()
        };
        if !u.is_empty() || !s.is_empty() {
            let (ue, se) = self.availability(u, &s).await?;
            if !u.is_empty() {
                out.username_errors.extend(ue);
            }
            if !s.is_empty() {
                out.shellname_errors.extend(se);
            }
        }
        // Suggest a free shell name from the username.
        let base = names::suggest_shell_name(&username);
        if !base.is_empty() {
            for n in 0..8 {
                let candidate = if n == 0 {
                    base.clone()
                } else {
                    let suffix = (n + 1).to_string();
                    format!("{}{}", &base[..base.len().min(32 - suffix.len())], suffix)
                };
                if !names::shell_name_problems(&candidate).is_empty() {
                    continue;
                }
                if candidate == out.shellname {
                    // Checked above already.
                    if out.shellname_errors.is_empty() {
                        out.suggested_shellname = Some(candidate);
                        break;
                    }
                    continue;
                }
                let (_, se) = self.availability("", &candidate).await?;
                if se.is_empty() {
                    out.suggested_shellname = Some(candidate);
                    break;
                }
            }
        }
        Ok(out)
    }
}

/// A plausible e-mail address: `local@domain.tld`, parseable by lettre.
pub fn valid_email(email: &str) -> bool {
    if email.len() > 254 || email.chars().any(char::is_whitespace) {
        return false;
    }
    let Some((local, domain)) = email.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && email.parse::<lettre::Address>().is_ok()
}
