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
const LOOKALIKE: &str = "This name looks too much like one that is already taken.";
const BLOCKED: &str = "This name is not allowed.";
const RESERVED: &str = "This name is reserved for the system.";

impl Core {
    /// Availability problems of `username` and `uid`: reserved names, the
    /// blocklist (on the name as typed and its compatibility form, so
    /// fullwidth letters don't slip past), pending and past signups (by name
    /// and by confusable skeleton), and the directory (by its own equality
    /// matching). `Err` when the directory or database fails.
    async fn availability(
        &self,
        username: &str,
        uid: &str,
    ) -> Result<(Vec<String>, Vec<String>), ServiceError> {
        let (mut u, mut s) = (Vec::new(), Vec::new());
        {
            let list = self.blocklist.load();
            let blocked = |name: &str| {
                !name.is_empty()
                    && (list.matching(name).is_some()
                        || list.matching(&names::compatibility_form(name)).is_some())
            };
            if self.reserved.contains(username) {
                u.push(RESERVED.to_owned());
            } else if blocked(username) {
                u.push(BLOCKED.to_owned());
            }
            if self.reserved.contains(uid) {
                s.push(RESERVED.to_owned());
            } else if blocked(uid) {
                s.push(BLOCKED.to_owned());
            }
        }
        let both = [username, uid];
        let (held, lookalike, in_ldap) = tokio::join!(
            self.signups.names_held(username, uid),
            self.signups.skeletons_held(&both),
            self.directory.names_in_use(username, uid)
        );
        let (held_u, held_s) = held?;
        let lookalike = lookalike?;
        let in_ldap = in_ldap?;
        if u.is_empty() {
            if held_u || in_ldap.username {
                u.push(TAKEN.to_owned());
            } else if lookalike.first() == Some(&true) {
                u.push(LOOKALIKE.to_owned());
            }
        }
        if s.is_empty() {
            if held_s || in_ldap.uid {
                s.push(TAKEN.to_owned());
            } else if lookalike.get(1) == Some(&true) {
                s.push(LOOKALIKE.to_owned());
            }
        }
        Ok((u, s))
    }

    /// Validates and stores a signup, then queues its activation mail.
    pub async fn submit_signup(&self, form: &SignupForm) -> Result<SignupOutcome, ServiceError> {
        // Every field's size first: an oversized form costs a length check
        // and nothing else (no normalising, similarity, lookups or hashing).
        let oversized = oversized_fields(form);
        if !oversized.is_empty() {
            metrics::counter!("forge_idm_signups_refused_total").increment(1);
            return Ok(SignupOutcome::Invalid(oversized));
        }
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
        if username.len() > MAX_USERNAME_BYTES
            || shellname.is_some_and(|s| s.len() > MAX_SHELL_NAME_BYTES)
        {
            return Ok(NameCheck {
                username_errors: vec![TOO_LONG_USERNAME.to_owned()],
                shellname_errors: vec![TOO_LONG_SHELL_NAME.to_owned()],
                ..Default::default()
            });
        }
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

/// Raw size bounds of the signup form's fields, in bytes (a character is at
/// most 4): generous for anything the rules accept, checked before any work.
const MAX_USERNAME_BYTES: usize = 4 * 85;
const MAX_SHELL_NAME_BYTES: usize = 4 * 32;
const MAX_EMAIL_BYTES: usize = 254;
const MAX_PASSWORD_BYTES: usize = 4 * crate::passwords::MAX_PASSWORD_CHARS;
const MAX_TOKEN_BYTES: usize = 1024;
const TOO_LONG_USERNAME: &str = "Use at most 85 characters.";
const TOO_LONG_SHELL_NAME: &str = "Use at most 32 characters.";

/// The fields of `form` over their size bound, with the error for each.
fn oversized_fields(form: &SignupForm) -> FieldErrors {
    let password = format!(
        "Use at most {} characters.",
        crate::passwords::MAX_PASSWORD_CHARS
    );
    let checks: [(&'static str, &str, usize, &str); 8] = [
        (
            "username",
            &form.username,
            MAX_USERNAME_BYTES,
            TOO_LONG_USERNAME,
        ),
        (
            "shellname",
            &form.shellname,
            MAX_SHELL_NAME_BYTES,
            TOO_LONG_SHELL_NAME,
        ),
        (
            "email",
            &form.email,
            MAX_EMAIL_BYTES,
            "Enter a valid e-mail address.",
        ),
        ("password", &form.password, MAX_PASSWORD_BYTES, &password),
        ("password2", &form.password2, MAX_PASSWORD_BYTES, &password),
        (
            "human_check",
            &form.challenge,
            MAX_TOKEN_BYTES,
            "That answer is not right; please try again.",
        ),
        (
            "human_check",
            &form.human_check,
            64,
            "That answer is not right; please try again.",
        ),
        (
            "human_check",
            &form.website,
            256,
            "That answer is not right; please try again.",
        ),
    ];
    let mut errors = FieldErrors::new();
    for (field, value, max, message) in checks {
        let too_long = value.len() > max
            || (field.starts_with("password")
                && value.chars().count() > crate::passwords::MAX_PASSWORD_CHARS);
        if too_long {
            let list = errors.entry(field).or_default();
            if !list.iter().any(|m| m == message) {
                list.push(message.to_owned());
            }
        }
    }
    errors
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
