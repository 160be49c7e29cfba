//! Signed tokens: activation links, CSRF form tokens and the anti-bot
//! question, all HMAC-SHA256 with the configured key and a distinct
//! purpose label each (a token of one kind never verifies as another).
//!
//! ## Activation token
//!
//! `<signup id>.<expiry, unix seconds>.<mac>` where the MAC covers the id, the
//! expiry **and the signup's state**: uid, e-mail, token nonce and status
//! (`pending`). Once the link is used the status is `confirmed`, so the same
//! token no longer verifies: it works once. Support staff regenerate a link by
//! rotating the nonce, which also invalidates every earlier link. Tampering
//! with any part changes the MAC. Expiry is checked after the MAC, so a forged
//! expiry is reported as invalid, not expired.
//!
//! ## Password reset
//!
//! `<uid>.<expiry>.<mac>`, the MAC covering the account's current
//! `userPassword` hash: once the password changes, the link is dead.
//!
//! ## E-mail change
//!
//! `<uid>.<expiry>.<new address>.<mac>`, the MAC covering the current address
//! and the account's e-mail-link generation ([`EmailLinkState`]): it works
//! once, and dies with any later change of the address.
//!
//! ## CSRF
//!
//! Signed double-submit bound to the session: the browser holds a random
//! `idm_csrf` cookie (HttpOnly, SameSite=Strict); every form carries
//! `HMAC(key, cookie, session id)` (`""` for a visitor without a session); a
//! POST is accepted only when they agree. A cross-site page can neither read
//! the cookie nor compute the MAC, and a pair minted in another session — an
//! attacker's own, planted into the victim's browser together with its cookie
//! — does not verify in the victim's logged-in session.
//!
//! ## Anti-bot question
//!
//! A small sum ("What is 3 plus 4?") whose operands and expiry are signed into
//! a hidden field, plus an empty honeypot field; no third-party service.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::store::Signup;

type HmacSha256 = Hmac<Sha256>;

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token of ours (bad shape, bad signature, or already used).
    #[error("invalid or already used link")]
    Invalid,
    /// Genuine but past its expiry.
    #[error("expired link")]
    Expired,
}

/// What an e-mail-change link is bound to: the account's address and its
/// e-mail-link generation when the link was made (`store::email_links`). A
/// confirmed change moves the generation on, so a link works once and dies
/// with any later change, even one back to the same address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailLinkState {
    /// The account's current `mail`.
    pub current_email: String,
    /// The account's current e-mail-link generation.
    pub generation: i64,
}

/// Signs and verifies tokens with one key.
#[derive(Clone)]
pub struct TokenSigner {
    key: Vec<u8>,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSigner(..)")
    }
}

impl TokenSigner {
    /// A signer with `key`.
    pub fn new(key: Vec<u8>) -> Self {
        TokenSigner { key }
    }

    fn mac(&self, purpose: &str, parts: &[&str]) -> HmacSha256 {
        let mut m = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(purpose.as_bytes());
        for p in parts {
            m.update(&[0]);
            m.update(&(p.len() as u64).to_be_bytes());
            m.update(p.as_bytes());
        }
        m
    }

    fn activation_mac(&self, s: &Signup, expires: i64) -> HmacSha256 {
        self.mac(
            "forge-idm activation v1",
            &[
                &s.id.to_string(),
                &expires.to_string(),
                &s.uid,
                &s.email,
                &s.token_nonce,
                &s.state,
            ],
        )
    }

    /// The activation token for `signup`, valid until `expires`.
    pub fn activation_token(&self, signup: &Signup, expires: i64) -> String {
        let mac = self.activation_mac(signup, expires).finalize().into_bytes();
        format!("{}.{}.{}", signup.id, expires, B64.encode(mac))
    }

    /// The signup id a token names, if it is shaped like a token.
    pub fn activation_id(token: &str) -> Result<(i64, i64, Vec<u8>), TokenError> {
        let mut it = token.splitn(3, '.');
        let (Some(id), Some(exp), Some(mac)) = (it.next(), it.next(), it.next()) else {
            return Err(TokenError::Invalid);
        };
        let id = id.parse().map_err(|_| TokenError::Invalid)?;
        let exp = exp.parse().map_err(|_| TokenError::Invalid)?;
        let mac = B64.decode(mac).map_err(|_| TokenError::Invalid)?;
        Ok((id, exp, mac))
    }

    /// Verifies `token` against the current state of `signup` at time `now`.
    pub fn verify_activation(
        &self,
        token: &str,
        signup: &Signup,
        now: i64,
    ) -> Result<(), TokenError> {
        let (id, expires, mac) = Self::activation_id(token)?;
        if id != signup.id {
            return Err(TokenError::Invalid);
        }
        self.activation_mac(signup, expires)
            .verify_slice(&mac)
            .map_err(|_| TokenError::Invalid)?;
        if now > expires {
            return Err(TokenError::Expired);
        }
        Ok(())
    }

    fn reset_mac(&self, uid: &str, expires: i64, password_hash: &str) -> HmacSha256 {
        self.mac(
            "forge-idm password reset v1",
            &[uid, &expires.to_string(), password_hash],
        )
    }

    /// A password-reset token for account `uid` whose current `userPassword`
    /// is `password_hash`, valid until `expires`: `<uid>.<expiry>.<mac>`.
    /// Bound to the current hash, so it works once (the reset changes it).
    pub fn reset_token(&self, uid: &str, password_hash: &str, expires: i64) -> String {
        let mac = self
            .reset_mac(uid, expires, password_hash)
            .finalize()
            .into_bytes();
        format!("{uid}.{expires}.{}", B64.encode(mac))
    }

    /// The account a reset token names, if it is shaped like one.
    pub fn reset_uid(token: &str) -> Result<String, TokenError> {
        let mut it = token.splitn(3, '.');
        match (it.next(), it.next(), it.next()) {
            (Some(uid), Some(_), Some(_)) if !uid.is_empty() => Ok(uid.to_owned()),
            _ => Err(TokenError::Invalid),
        }
    }

    /// Verifies a reset token against the account's current password hash.
    pub fn verify_reset(
        &self,
        token: &str,
        uid: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<(), TokenError> {
        let mut it = token.splitn(3, '.');
        let (Some(t_uid), Some(exp), Some(mac)) = (it.next(), it.next(), it.next()) else {
            return Err(TokenError::Invalid);
        };
        let expires: i64 = exp.parse().map_err(|_| TokenError::Invalid)?;
        let mac = B64.decode(mac).map_err(|_| TokenError::Invalid)?;
        if t_uid != uid {
            return Err(TokenError::Invalid);
        }
        self.reset_mac(uid, expires, password_hash)
            .verify_slice(&mac)
            .map_err(|_| TokenError::Invalid)?;
        if now > expires {
            return Err(TokenError::Expired);
        }
        Ok(())
    }

    fn email_mac(
        &self,
        uid: &str,
        expires: i64,
        new_email: &str,
        link: &EmailLinkState,
    ) -> HmacSha256 {
        self.mac(
            "forge-idm email change v2",
            &[
                uid,
                &expires.to_string(),
                new_email,
                &link.current_email,
                &link.generation.to_string(),
            ],
        )
    }

    /// An e-mail-change token: `<uid>.<expiry>.<new address, base64url>.<mac>`,
    /// the MAC covering the account's current address and link generation
    /// too (see [`EmailLinkState`]).
    pub fn email_change_token(
        &self,
        uid: &str,
        new_email: &str,
        link: &EmailLinkState,
        expires: i64,
    ) -> String {
        let mac = self
            .email_mac(uid, expires, new_email, link)
            .finalize()
            .into_bytes();
        format!(
            "{uid}.{expires}.{}.{}",
            B64.encode(new_email),
            B64.encode(mac)
        )
    }

    /// The (uid, new address) an e-mail-change token names, if shaped like one.
    pub fn email_change_parts(token: &str) -> Result<(String, String), TokenError> {
        let parts: Vec<&str> = token.split('.').collect();
        let [uid, _, email, _] = parts.as_slice() else {
            return Err(TokenError::Invalid);
        };
        let email = B64
            .decode(email)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(TokenError::Invalid)?;
        Ok(((*uid).to_owned(), email))
    }

    /// Verifies an e-mail-change token against the account's current address
    /// and link generation.
    pub fn verify_email_change(
        &self,
        token: &str,
        uid: &str,
        link: &EmailLinkState,
        now: i64,
    ) -> Result<String, TokenError> {
        let parts: Vec<&str> = token.split('.').collect();
        let [t_uid, exp, _, mac] = parts.as_slice() else {
            return Err(TokenError::Invalid);
        };
        let (_, new_email) = Self::email_change_parts(token)?;
        let expires: i64 = exp.parse().map_err(|_| TokenError::Invalid)?;
        let mac = B64.decode(mac).map_err(|_| TokenError::Invalid)?;
        if *t_uid != uid {
            return Err(TokenError::Invalid);
        }
        self.email_mac(uid, expires, &new_email, link)
            .verify_slice(&mac)
            .map_err(|_| TokenError::Invalid)?;
        if now > expires {
            return Err(TokenError::Expired);
        }
        Ok(new_email)
    }

    /// The form token for CSRF cookie value `cookie` in session `session`
    /// (its id; `""` without a session).
    pub fn csrf_token(&self, cookie: &str, session: &str) -> String {
        B64.encode(
            self.mac("forge-idm csrf v2", &[cookie, session])
                .finalize()
                .into_bytes(),
        )
    }

    /// Whether `form_token` belongs to `cookie` and `session`.
    pub fn verify_csrf(&self, cookie: &str, session: &str, form_token: &str) -> bool {
        match B64.decode(form_token) {
            Ok(mac) => self
                .mac("forge-idm csrf v2", &[cookie, session])
                .verify_slice(&mac)
                .is_ok(),
            Err(_) => false,
        }
    }

    /// A new anti-bot question: (question text, signed challenge).
    pub fn antibot_challenge(&self, now: i64) -> (String, String) {
        let a: u8 = rand::random_range(1..=9);
        let b: u8 = rand::random_range(1..=9);
        let expires = now + 3600;
        let body = format!("{a}.{b}.{expires}");
        let mac = B64.encode(
            self.mac("forge-idm antibot v1", &[&body])
                .finalize()
                .into_bytes(),
        );
        (format!("What is {a} plus {b}?"), format!("{body}.{mac}"))
    }

    /// Whether `answer` answers the signed `challenge` in time.
    pub fn verify_antibot(&self, challenge: &str, answer: &str, now: i64) -> bool {
        let parts: Vec<&str> = challenge.split('.').collect();
        let [a, b, exp, mac] = parts.as_slice() else {
            return false;
        };
        let body = format!("{a}.{b}.{exp}");
        let Ok(mac) = B64.decode(mac) else {
            return false;
        };
        if self
            .mac("forge-idm antibot v1", &[&body])
            .verify_slice(&mac)
            .is_err()
        {
            return false;
        }
        let (Ok(a), Ok(b), Ok(exp)) = (a.parse::<u32>(), b.parse::<u32>(), exp.parse::<i64>())
        else {
            return false;
        };
        now <= exp && answer.trim().parse::<u32>().ok() == Some(a + b)
    }
}

/// A random URL-safe string of `bytes` random bytes.
pub fn random_token(bytes: usize) -> String {
    let v: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    B64.encode(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signup() -> Signup {
        Signup {
            id: 7,
            username: "Alice".into(),
            username_key: "alice".into(),
            uid: "alice".into(),
            email: "a@example.org".into(),
            password_hash: None,
            state: "pending".into(),
            token_nonce: "n1".into(),
            uid_number: None,
            created_at: 0,
            confirmed_at: None,
            account_created_at: None,
            admins_notified_at: None,
        }
    }

    #[test]
    fn activation_tokens() {
        let t = TokenSigner::new(b"k".repeat(32));
        let s = signup();
        let tok = t.activation_token(&s, 1000);
        assert_eq!(t.verify_activation(&tok, &s, 999), Ok(()));
        assert_eq!(
            t.verify_activation(&tok, &s, 1001),
            Err(TokenError::Expired)
        );
        let mut used = s.clone();
        used.state = "confirmed".into();
        assert_eq!(
            t.verify_activation(&tok, &used, 999),
            Err(TokenError::Invalid)
        );
        let forged = tok.replacen(".1000.", ".9000.", 1);
        assert_eq!(
            t.verify_activation(&forged, &s, 999),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            t.verify_activation("garbage", &s, 0),
            Err(TokenError::Invalid)
        );
        let other = TokenSigner::new(b"x".repeat(32));
        assert_eq!(
            other.verify_activation(&tok, &s, 0),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn csrf_and_antibot() {
        let t = TokenSigner::new(b"k".repeat(32));
        let f = t.csrf_token("cookie", "session");
        assert!(t.verify_csrf("cookie", "session", &f));
        assert!(!t.verify_csrf("other", "session", &f));
        assert!(!t.verify_csrf("cookie", "another-session", &f));
        assert!(!t.verify_csrf("cookie", "", &f));
        let (q, c) = t.antibot_challenge(100);
        let nums: Vec<u32> = q
            .split(|ch: char| !ch.is_ascii_digit())
            .filter_map(|x| x.parse().ok())
            .collect();
        let sum = (nums[0] + nums[1]).to_string();
        assert!(t.verify_antibot(&c, &sum, 100));
        assert!(!t.verify_antibot(&c, "99", 100));
        assert!(!t.verify_antibot(&c, &sum, 100 + 7200));
    }
}
