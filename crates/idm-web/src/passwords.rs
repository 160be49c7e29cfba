//! Passwords: the strength check at signup and the hashes the directory keeps.
//!
//! Strength (all must pass): at most [`MAX_PASSWORD_CHARS`] characters
//! (checked first, so a huge password costs nothing); at least
//! `signup.min_password_length` characters; not only spaces, and no
//! invisible or control characters (zero-width spaces, bidi marks…: a
//! password nobody can see is one nobody can retype); a zxcvbn strength score
//! of at least `signup.min_password_score` (the estimator Dropbox published,
//! with the user's names as context); not entirely digits; not on the common-password list (shipped
//! in `data/common-passwords.txt`, plus an optional operator list); not too
//! similar to the username, shell name or e-mail (the password contains one of
//! them, or their similarity ratio — 2·LCS / total length, like Python's
//! `SequenceMatcher` used by the app we replace — reaches 0.7).
//!
//! Hashes: `{ARGON2}` is argon2id as a PHC string, which OpenLDAP's argon2
//! module verifies; `{SSHA}` (salted SHA-1) is the fallback for directories
//! without it.

use std::collections::HashSet;

use argon2::password_hash::{PasswordHasher, SaltString};
use base64::Engine as _;
use sha1::{Digest, Sha1};

use crate::config::PasswordScheme;

/// The shipped list.
const COMMON: &str = include_str!("../data/common-passwords.txt");

/// The longest password accepted, in characters.
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// The password rules in force.
#[derive(Debug, Clone)]
pub struct PasswordPolicy {
    min_length: usize,
    min_score: u8,
    common: HashSet<String>,
}

impl PasswordPolicy {
    /// The shipped list plus `extra` (the operator's file contents, if any).
    pub fn new(min_length: usize, extra: Option<&str>) -> Self {
        let common = COMMON
            .lines()
            .chain(extra.unwrap_or("").lines())
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_lowercase)
            .collect();
        PasswordPolicy {
            min_length,
            min_score: 0,
            common,
        }
    }

    /// The same rules, also requiring a zxcvbn score of at least `score` (0–4).
    pub fn with_min_score(mut self, score: u8) -> Self {
        self.min_score = score.min(4);
        self
    }

    /// Problems with `password` for a user with these names; empty when fine.
    pub fn check(&self, password: &str, names: &[&str]) -> Vec<String> {
        let mut problems = Vec::new();
        // Bounded before any work: the similarity check is quadratic.
        if password.len() > MAX_PASSWORD_CHARS * 4 || password.chars().count() > MAX_PASSWORD_CHARS
        {
            problems.push(format!("Use at most {MAX_PASSWORD_CHARS} characters."));
            return problems;
        }
        let len = password.chars().count();
        if len < self.min_length {
            problems.push(format!("Use at least {} characters.", self.min_length));
        }
        if !password.is_empty() && password.chars().all(char::is_whitespace) {
            problems.push("A password can't be only spaces.".into());
        }
        if password.chars().any(crate::names::is_invisible) {
            problems.push(
                "Don't use invisible or control characters (such as zero-width spaces); nobody could see them to type them again."
                    .into(),
            );
        }
        if !password.is_empty() && password.chars().all(|c| c.is_ascii_digit()) {
            problems.push("Don't use only digits.".into());
        }
        let lower = password.to_lowercase();
        if self.common.contains(&lower) {
            problems.push("This password is too common.".into());
        }
        if problems.is_empty() && self.min_score > 0 {
            let estimate = zxcvbn::zxcvbn(password, names);
            if u8::from(estimate.score()) < self.min_score {
                let hint = estimate
                    .feedback()
                    .and_then(|f| f.warning())
                    .map(|w| format!(" ({w})"))
                    .unwrap_or_default();
                problems.push(format!(
                    "This password is too easy to guess{hint}. Add more words or characters."
                ));
            }
        }
        for name in names {
            let n = name.to_lowercase();
            if n.chars().count() < 3 {
                continue;
            }
            if lower.contains(&n) || similarity(&lower, &n) >= 0.7 {
                problems
                    .push("The password is too similar to your names or e-mail address.".into());
                break;
            }
        }
        problems
    }
}

/// 2·LCS(a, b) / (|a| + |b|) over characters: 1.0 for equal strings.
pub fn similarity(a: &str, b: &str) -> f64 {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let mut prev = vec![0usize; b.len() + 1];
    for ca in &a {
        let mut cur = vec![0usize; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = if ca == cb {
                prev[j] + 1
            } else {
                prev[j + 1].max(cur[j])
            };
        }
        prev = cur;
    }
    2.0 * prev[b.len()] as f64 / (a.len() + b.len()) as f64
}

/// A hash of a random password, in the directory's scheme, that a login
/// naming no account is verified against: the same work slapd does for a
/// real entry (same algorithm, same parameters), so an unknown name costs as
/// much as a known one.
#[derive(Debug, Clone)]
pub struct DummyHash {
    /// The `{SCHEME}…` value, as `userPassword` would hold it.
    hash: String,
}

impl DummyHash {
    /// A dummy hash of a random password in `scheme`.
    pub fn new(scheme: PasswordScheme) -> Self {
        let random = crate::tokens::random_token(24);
        let hash = hash_for_directory(&random, scheme).unwrap_or_default();
        DummyHash { hash }
    }

    /// Verifies `password` against the dummy hash (always false, by design).
    pub fn verify(&self, password: &str) -> bool {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        if let Some(phc) = self.hash.strip_prefix("{ARGON2}") {
            return PasswordHash::new(phc).is_ok_and(|h| {
                argon2::Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            });
        }
        if let Some(b64) = self.hash.strip_prefix("{SSHA}") {
            let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64) else {
                return false;
            };
            let (digest, salt) = raw.split_at(raw.len().min(20));
            let mut h = Sha1::new();
            h.update(password.as_bytes());
            h.update(salt);
            return h.finalize().as_slice() == digest;
        }
        false
    }
}

/// Why hashing failed (never for sane input).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// Hashes `password` for `userPassword` in `scheme`.
pub fn hash_for_directory(password: &str, scheme: PasswordScheme) -> Result<String, HashError> {
    match scheme {
        PasswordScheme::Argon2 => {
            let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
            let phc = argon2::Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map_err(|e| HashError(e.to_string()))?;
            Ok(format!("{{ARGON2}}{phc}"))
        }
        PasswordScheme::Ssha => {
            let salt: [u8; 8] = rand::random();
            let mut h = Sha1::new();
            h.update(password.as_bytes());
            h.update(salt);
            let mut out = h.finalize().to_vec();
            out.extend_from_slice(&salt);
            Ok(format!(
                "{{SSHA}}{}",
                base64::engine::general_purpose::STANDARD.encode(out)
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strength_rules() {
        let p = PasswordPolicy::new(10, Some("hunter2hunter2\n"));
        assert!(
            p.check("tr0ub4dor&3-staple", &["Alice Example", "alice"])
                .is_empty()
        );
        assert!(!p.check("short", &[]).is_empty());
        assert!(!p.check("12345678901234", &[]).is_empty());
        assert!(!p.check("Password123", &[]).is_empty());
        assert!(!p.check("HUNTER2HUNTER2", &[]).is_empty());
        assert!(
            !p.check("alice-example-1", &["Alice Example", "alice-example"])
                .is_empty()
        );
        assert!(!p.check("Alice Exampel", &["Alice Example"]).is_empty());
        assert!(!p.check("            ", &[]).is_empty(), "only spaces");
        assert!(
            !p.check("tr0ub4dor&3-\u{200b}staple", &[]).is_empty(),
            "zero-width space"
        );
        let huge = "x".repeat(30_000);
        assert_eq!(
            p.check(&huge, &[&huge]),
            vec!["Use at most 1024 characters.".to_owned()],
            "refused on length alone"
        );
    }

    #[test]
    fn strength_score() {
        let p = PasswordPolicy::new(10, None).with_min_score(3);
        assert!(!p.check("qwertyuiop", &[]).is_empty());
        assert!(!p.check("abcabcabcabc", &[]).is_empty());
        assert!(p.check("tr0ub4dor&3-staple", &[]).is_empty());
        assert!(p.check("Plenty-of-entropy-42!", &[]).is_empty());
    }

    #[test]
    fn similarity_ratio() {
        assert!((similarity("abc", "abc") - 1.0).abs() < 1e-9);
        assert!(similarity("abcdef", "uvwxyz") < 0.01);
    }

    #[test]
    fn dummy_hash_verifies_nothing() {
        for scheme in [PasswordScheme::Argon2, PasswordScheme::Ssha] {
            let d = DummyHash::new(scheme);
            assert!(!d.hash.is_empty());
            assert!(!d.verify("secret password"));
        }
    }

    #[test]
    fn hash_formats() {
        let a = hash_for_directory("secret password", PasswordScheme::Argon2).unwrap();
        assert!(a.starts_with("{ARGON2}$argon2id$v=19$m="), "{a}");
        let s = hash_for_directory("secret password", PasswordScheme::Ssha).unwrap();
        assert!(s.starts_with("{SSHA}"));
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&s[6..])
            .unwrap();
        assert_eq!(raw.len(), 28);
    }
}
