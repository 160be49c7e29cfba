//! Username and shell-name rules (pure functions).
//!
//! * **Username** (display name, becomes `cn`/`sn`): trimmed, runs of spaces
//!   collapsed, first letter upper-cased (as the wikis do); 2–85 characters;
//!   no control characters and none of `@ # < > [ ] | { } / \ : = " ,` (they
//!   break wiki titles or DNs); not only digits.
//!   A username must also be single-script (Unicode TS #39 mixed-script
//!   detection: no Latin `V` next to a Cyrillic `і`) and hold no invisible or
//!   formatting characters (zero-width spaces, soft hyphens, bidi overrides —
//!   the default-ignorable code points).
//! * **Shell name** (`uid`): `^[a-z][a-z0-9-]{0,31}$` — lower-case, starts
//!   with a letter, at most 32 characters.
//! * **Skeletons** ([`skeleton`], [`cased_skeleton`]): the forms under which
//!   two names count as the same account name — NFKC (lower-cased for the
//!   first), then the TS #39 confusable skeleton. `Ｖictim`, `victim`, `VICTIM` and `vіctim` (Cyrillic `і`) all
//!   have one skeleton. The tables come from the `unicode-security` crate
//!   (the one rustc uses for its confusable-identifier lint), not from us.

use std::collections::HashSet;
use std::sync::LazyLock;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;
use unicode_security::general_security_profile::IdentifierType;
use unicode_security::{GeneralSecurityProfile, MixedScript};

static SHELL_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z][a-z0-9-]{0,31}$").expect("literal regex"));

const FORBIDDEN: &[char] = &[
    '@', '#', '<', '>', '[', ']', '|', '{', '}', '/', '\\', ':', '=', '"', ',',
];

/// The case-insensitive confusable skeleton of a name: NFKC, lower-cased,
/// then the Unicode TS #39 skeleton (which also drops default-ignorable
/// characters). Two names with one skeleton look alike to a reader, so only
/// one of them may name an account: `Ｖictim`, `VICTIM`, `vіctim` (Cyrillic
/// `і`), `vic\u{200b}tim` and `victim` are one. Shared with the username
/// blocklist's `antispoof` option.
pub fn skeleton(name: &str) -> String {
    let folded: String = name.nfkc().flat_map(char::to_lowercase).collect();
    unicode_security::skeleton(&folded).collect()
}

/// The case-preserving confusable skeleton (NFKC, then TS #39): catches what
/// lower-casing first would part, such as capital `I` for small `l`
/// (`PaypaI` and `Paypal`). Names are compared by both skeletons.
pub fn cased_skeleton(name: &str) -> String {
    let compatible: String = name.nfkc().collect();
    unicode_security::skeleton(&compatible).collect()
}

/// The shipped list of reserved (system account) names.
const RESERVED: &str = include_str!("../data/reserved-names.txt");

/// Names no account may take: the shipped system account names plus the
/// operator's, compared by [`skeleton`] (so `ROOT`, `Ｒoot` and `root` are
/// one name).
#[derive(Debug, Clone, Default)]
pub struct ReservedNames {
    skeletons: HashSet<String>,
}

impl ReservedNames {
    /// The shipped list plus `extra`.
    pub fn new(extra: &[String]) -> Self {
        let skeletons = RESERVED
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .chain(extra.iter().map(|s| s.trim()))
            .map(skeleton)
            .collect();
        ReservedNames { skeletons }
    }

    /// Whether `name` (a username or shell name) is reserved.
    pub fn contains(&self, name: &str) -> bool {
        !name.is_empty() && self.skeletons.contains(&skeleton(name))
    }
}

/// `name` in Unicode compatibility form (NFKC): fullwidth `Ａdmin` becomes
/// `Admin`, ligatures split; case is kept.
pub fn compatibility_form(name: &str) -> String {
    name.nfkc().collect()
}

/// Whether `c` is invisible or changes how text around it is shown: control
/// characters and the default-ignorable code points (zero-width space and
/// joiners, soft hyphen, bidi embeddings and overrides, variation selectors…).
pub fn is_invisible(c: char) -> bool {
    c.is_control() || c.identifier_type() == Some(IdentifierType::Default_Ignorable)
}

/// Whether `name` mixes letters of several scripts (TS #39 mixed-script
/// detection; common characters such as digits and spaces belong to every
/// script, and Han with Hiragana/Katakana or Hangul counts as one).
pub fn is_mixed_script(name: &str) -> bool {
    !name.is_single_script()
}

/// Normalises a username as typed: trim, collapse spaces, upper-case first letter.
pub fn normalize_username(raw: &str) -> String {
    let collapsed = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut chars = collapsed.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Problems with a (normalised) username; empty when fine.
pub fn username_problems(name: &str) -> Vec<String> {
    let mut p = Vec::new();
    let len = name.chars().count();
    if len < 2 {
        p.push("Enter a username of at least 2 characters.".into());
    } else if len > 85 {
        p.push("Use at most 85 characters.".into());
    }
    if name.chars().any(|c| c.is_control()) {
        p.push("Control characters are not allowed.".into());
    } else if name.chars().any(is_invisible) {
        p.push(
            "Invisible or formatting characters (zero-width spaces, soft hyphens, direction marks) are not allowed."
                .into(),
        );
    }
    if is_mixed_script(name) {
        p.push("Use the letters of one script only (don't mix, say, Latin and Cyrillic).".into());
    }
    let bad: String = FORBIDDEN.iter().filter(|c| name.contains(**c)).collect();
    if !bad.is_empty() {
        p.push(format!("These characters are not allowed: {bad}"));
    }
    if !name.is_empty() && name.chars().all(|c| c.is_ascii_digit()) {
        p.push("A username can't be only digits.".into());
    }
    p
}

/// Problems with a shell name; empty when fine.
pub fn shell_name_problems(uid: &str) -> Vec<String> {
    if uid.is_empty() {
        return vec!["Enter a shell name.".into()];
    }
    if SHELL_NAME.is_match(uid) {
        return Vec::new();
    }
    let mut p = Vec::new();
    if uid.len() > 32 {
        p.push("Use at most 32 characters.".into());
    }
    if !uid.starts_with(|c: char| c.is_ascii_lowercase()) {
        p.push("Start with a lower-case letter (a–z).".into());
    }
    if uid
        .chars()
        .any(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
    {
        p.push("Use only lower-case letters a–z, digits and '-'.".into());
    }
    p
}

/// A shell name derived from a username (`Alice Example` → `alice-example`);
/// empty if nothing usable remains.
pub fn suggest_shell_name(username: &str) -> String {
    let mut out = String::new();
    for c in username.chars().flat_map(char::to_lowercase) {
        let c = match c {
            'a'..='z' | '0'..='9' => c,
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => 'a',
            'ç' => 'c',
            'è' | 'é' | 'ê' | 'ë' => 'e',
            'ì' | 'í' | 'î' | 'ï' => 'i',
            'ñ' => 'n',
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' => 'o',
            'ù' | 'ú' | 'û' | 'ü' => 'u',
            'ý' | 'ÿ' => 'y',
            _ => '-',
        };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(c);
    }
    let trimmed: String = out
        .trim_start_matches(|c: char| !c.is_ascii_lowercase())
        .chars()
        .take(32)
        .collect();
    trimmed.trim_end_matches('-').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_names() {
        assert!(shell_name_problems("alice").is_empty());
        assert!(shell_name_problems("a").is_empty());
        assert!(shell_name_problems("a-1").is_empty());
        assert!(!shell_name_problems("1alice").is_empty());
        assert!(!shell_name_problems("-alice").is_empty());
        assert!(!shell_name_problems("Alice").is_empty());
        assert!(!shell_name_problems("al_ice").is_empty());
        assert!(!shell_name_problems(&"a".repeat(33)).is_empty());
        assert!(shell_name_problems(&"a".repeat(32)).is_empty());
    }

    #[test]
    fn usernames() {
        assert_eq!(normalize_username("  alice   example "), "Alice example");
        assert!(username_problems("Alice Example").is_empty());
        assert!(!username_problems("a@b").is_empty());
        assert!(!username_problems("12345").is_empty());
        assert!(!username_problems("A").is_empty());
    }

    #[test]
    fn skeletons_fold_lookalikes_together() {
        let victim = skeleton("victim");
        assert_eq!(skeleton("\u{ff36}ictim"), victim, "fullwidth V");
        assert_eq!(skeleton("VICTIM"), victim, "case");
        assert_eq!(skeleton("v\u{0456}ctim"), victim, "Cyrillic i");
        assert_eq!(skeleton("vic\u{200b}tim"), victim, "zero-width space");
        assert_eq!(skeleton("vic\u{00ad}tim"), victim, "soft hyphen");
        assert_ne!(skeleton("victor"), victim);
        assert_eq!(skeleton("paypal"), skeleton("pay\u{0440}al"), "Cyrillic er");
        assert_eq!(
            cased_skeleton("Paypal"),
            cased_skeleton("PaypaI"),
            "capital I"
        );
        assert_eq!(skeleton("paypal"), skeleton("paypa1"), "digit one");
    }

    #[test]
    fn usernames_refuse_invisible_and_mixed_script() {
        for bad in [
            "Vic\u{200b}tim",
            "Vic\u{00ad}tim",
            "Victim\u{202e}",
            "V\u{0456}ctim",
            "Admin\u{2060}istrator",
        ] {
            assert!(!username_problems(bad).is_empty(), "{bad:?} accepted");
        }
        for good in [
            "Alice Example",
            "Zoë Müller",
            "Иван Петров",
            "山田太郎",
            "やまだ たろう",
            "O'Brien-Smith 2",
        ] {
            assert!(
                username_problems(good).is_empty(),
                "{good:?}: {:?}",
                username_problems(good)
            );
        }
    }

    #[test]
    fn reserved_names_by_skeleton() {
        let r = ReservedNames::new(&["Project Admin".to_owned()]);
        for name in [
            "root",
            "ROOT",
            "\u{ff32}oot",
            "www-data",
            "sshd",
            "Admin",
            "project admin",
        ] {
            assert!(r.contains(name), "{name:?}");
        }
        for name in ["rooter", "alice", ""] {
            assert!(!r.contains(name), "{name:?}");
        }
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest_shell_name("Alice Example"), "alice-example");
        assert_eq!(suggest_shell_name("Zoë  Müller!"), "zoe-muller");
        assert_eq!(suggest_shell_name("42 Bob"), "bob");
        assert_eq!(suggest_shell_name("日本"), "");
    }
}
