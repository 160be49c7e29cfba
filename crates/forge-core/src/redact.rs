//! Credentials never shown: one place that blanks passwords out of what a
//! daemon prints, serves or logs.
//!
//! Configuration holds credentials in two shapes: inside URLs
//! (`redis://:pw@host`, `mysql://user:pw@host/db`, `ldap://cn=x:pw@host`, a
//! `?password=` parameter) and as values of keys named for them
//! (`bind_password`, `mail.password`, `tokens.secret`). Every daemon shows its
//! configuration through `--print-config` ([`crate::Loaded::to_toml`]), its
//! state through `/status` and `/healthz` ([`crate::StatusBoard`]) and its
//! Redis through [`crate::redis::RedisSettings::describe`]; all of them pass
//! through this module, so a daemon added later is covered without knowing
//! about it. A redacted URL keeps scheme, user, host, port and path and shows
//! the password as `***`, so an operator can still tell which server it is.

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use regex::Regex;

/// What a redacted secret is replaced with.
pub const MASK: &str = "***";

fn userinfo_password() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        // scheme://user:password@ — the password may itself hold `@` (then the
        // last `@` before the path ends it), never `/`, whitespace, `?` or `#`.
        Regex::new(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:@/\s?#]*):(?P<pw>[^/\s?#]*)@")
            .expect("a literal pattern, compiled by the unit tests")
    })
}

fn password_parameter() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"(?i)(?P<head>[?&;](?:password|passwd|pass|pwd|secret|token|auth|sentinel_password)=)(?P<pw>[^&;\s#]*)",
        )
        .expect("a literal pattern, compiled by the unit tests")
    })
}

/// `text` with the password of every URL in it (`scheme://user:pw@…`) and
/// every `password=` / `secret=` / `token=` query parameter replaced by
/// [`MASK`]. Text without credentials is returned borrowed.
pub fn redact(text: &str) -> Cow<'_, str> {
    let once = userinfo_password().replace_all(text, |c: &regex::Captures<'_>| {
        if c["pw"].is_empty() {
            format!("{}:@", &c["head"])
        } else {
            format!("{}:{MASK}@", &c["head"])
        }
    });
    match password_parameter().replace_all(&once, |c: &regex::Captures<'_>| {
        format!("{}{MASK}", &c["head"])
    }) {
        Cow::Borrowed(_) => once,
        Cow::Owned(s) => Cow::Owned(s),
    }
}

/// Whether a configuration key names a credential (`password`,
/// `bind_password`, `secret`, `token`, `*_password`, `*_secret`, `*_token`);
/// `*_file` keys (paths to secrets) and keys like `min_password_length` do not.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    matches!(
        k.as_str(),
        "password" | "passwd" | "secret" | "token" | "api_key"
    ) || k.ends_with("_password")
        || k.ends_with("_secret")
        || k.ends_with("_token")
}

/// Redacts a configuration tree in place: every value of a secret key
/// ([`is_secret_key`]) that is a non-empty string becomes [`MASK`], and every
/// other string goes through [`redact`].
pub fn redact_toml(value: &mut toml::Value) {
    match value {
        toml::Value::String(s) => {
            if let Cow::Owned(r) = redact(s) {
                *s = r;
            }
        }
        toml::Value::Array(a) => a.iter_mut().for_each(redact_toml),
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                match v {
                    toml::Value::String(s) if is_secret_key(k) && !s.is_empty() => {
                        *s = MASK.to_owned();
                    }
                    _ => redact_toml(v),
                }
            }
        }
        _ => {}
    }
}

/// Redacts a JSON document in place, by the same rules as [`redact_toml`].
pub fn redact_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => {
            if let Cow::Owned(r) = redact(s) {
                *s = r;
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(redact_json),
        serde_json::Value::Object(o) => {
            for (k, v) in o.iter_mut() {
                match v {
                    serde_json::Value::String(s) if is_secret_key(k) && !s.is_empty() => {
                        *s = MASK.to_owned();
                    }
                    _ => redact_json(v),
                }
            }
        }
        _ => {}
    }
}

/// Displays a string with its credentials redacted; for log fields:
/// `tracing::info!(redis = %Redacted(&url), …)`.
#[derive(Clone, Copy)]
pub struct Redacted<'a>(pub &'a str);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(self.0))
    }
}

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*redact(self.0), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_everything_but_the_password() {
        assert_eq!(
            redact("redis://:hunter2@10.0.0.1:6379/2"),
            "redis://:***@10.0.0.1:6379/2"
        );
        assert_eq!(
            redact("mysql://idm:s3cr@t@db.example.org/idm?ssl-mode=required"),
            "mysql://idm:***@db.example.org/idm?ssl-mode=required"
        );
        assert_eq!(
            redact("connecting to rediss://user:pw@h:1 and redis://h:2 failed"),
            "connecting to rediss://user:***@h:1 and redis://h:2 failed"
        );
        assert_eq!(
            redact("sqlite:///var/lib/idm.db?mode=rwc&password=x1"),
            "sqlite:///var/lib/idm.db?mode=rwc&password=***"
        );
        assert!(matches!(redact("redis://127.0.0.1:6379"), Cow::Borrowed(_)));
        assert_eq!(redact("redis://user@h:1"), "redis://user@h:1");
    }

    #[test]
    fn secret_keys() {
        for k in [
            "password",
            "bind_password",
            "secret",
            "token",
            "sentinel_password",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in [
            "password_file",
            "bind_password_file",
            "secret_file",
            "token_file",
            "min_password_length",
            "password_scheme",
            "url",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
    }
}
