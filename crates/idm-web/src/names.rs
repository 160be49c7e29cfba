//! Username and shell-name rules (pure functions).
//!
//! * **Username** (display name, becomes `cn`/`sn`): trimmed, runs of spaces
//!   collapsed, first letter upper-cased (as the wikis do); 2–85 characters;
//!   no control characters and none of `@ # < > [ ] | { } / \ : = " ,` (they
//!   break wiki titles or DNs); not only digits.
//! * **Shell name** (`uid`): `^[a-z][a-z0-9-]{0,31}$` — lower-case, starts
//!   with a letter, at most 32 characters.

use std::sync::LazyLock;

use regex::Regex;

static SHELL_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z][a-z0-9-]{0,31}$").expect("literal regex"));

const FORBIDDEN: &[char] = &[
    '@', '#', '<', '>', '[', ']', '|', '{', '}', '/', '\\', ':', '=', '"', ',',
];

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
    fn suggestions() {
        assert_eq!(suggest_shell_name("Alice Example"), "alice-example");
        assert_eq!(suggest_shell_name("Zoë  Müller!"), "zoe-muller");
        assert_eq!(suggest_shell_name("42 Bob"), "bob");
        assert_eq!(suggest_shell_name("日本"), "");
    }
}
