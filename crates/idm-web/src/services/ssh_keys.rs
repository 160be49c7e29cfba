//! SSH public keys of an account (`sshPublicKey` in LDAP).
//!
//! Keys are parsed with the `ssh-key` crate and stored in their canonical
//! OpenSSH form (`<type> <base64> [comment]`). Refused: anything that looks
//! like a private key (with a warning never to share it), DSA keys, RSA keys
//! under 2048 bits, unparseable text, and duplicates.

use ssh_key::public::KeyData;
use ssh_key::{HashAlg, PublicKey};

use super::{Core, ServiceError};

/// Shortest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// A key as shown to its owner.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct KeyView {
    /// `SHA256:…`.
    pub fingerprint: String,
    /// `ssh-ed25519`, `ssh-rsa`, …
    pub algorithm: String,
    /// The comment.
    pub comment: String,
}

/// Parses and vets a pasted public key; `Err` is a message for the user.
pub fn parse_public_key(text: &str) -> Result<PublicKey, String> {
    let text = text.trim();
    if text.contains("PRIVATE KEY") || ssh_key::PrivateKey::from_openssh(text).is_ok() {
        return Err("This is a private key. Never share it with anyone: paste the public key (the .pub file) instead.".into());
    }
    if text.lines().count() > 1 {
        return Err("Paste one public key, on one line.".into());
    }
    let key = PublicKey::from_openssh(text).map_err(|_| {
        "This is not an OpenSSH public key (e.g. \"ssh-ed25519 AAAA… you@host\").".to_owned()
    })?;
    match key.key_data() {
        KeyData::Dsa(_) => return Err("DSA keys are too weak; use an Ed25519 key.".into()),
        KeyData::Rsa(rsa) => {
            let bits = rsa.n.as_positive_bytes().map_or(0, |b| b.len() * 8);
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "RSA keys must have at least {MIN_RSA_BITS} bits (this one has {bits}); better use an Ed25519 key."
                ));
            }
        }
        _ => {}
    }
    Ok(key)
}

fn view(key: &PublicKey) -> KeyView {
    KeyView {
        fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        algorithm: key.algorithm().to_string(),
        comment: key.comment().to_owned(),
    }
}

impl Core {
    /// The keys of the account at `dn` (unparseable stored values are skipped).
    pub async fn list_ssh_keys(&self, dn: &str) -> Result<Vec<KeyView>, ServiceError> {
        Ok(self
            .directory
            .ssh_keys(dn)
            .await?
            .iter()
            .filter_map(|k| PublicKey::from_openssh(k.trim()).ok())
            .map(|k| view(&k))
            .collect())
    }

    /// Adds a pasted key. `Ok(Err(message))` when it is refused.
    pub async fn add_ssh_key(
        &self,
        dn: &str,
        text: &str,
    ) -> Result<Result<KeyView, String>, ServiceError> {
        let key = match parse_public_key(text) {
            Ok(k) => k,
            Err(m) => return Ok(Err(m)),
        };
        let v = view(&key);
        if self
            .list_ssh_keys(dn)
            .await?
            .iter()
            .any(|k| k.fingerprint == v.fingerprint)
        {
            return Ok(Err("This key is already on your account.".into()));
        }
        let openssh = key
            .to_openssh()
            .map_err(|e| ServiceError::Other(e.to_string()))?;
        self.directory.change_ssh_key(dn, &openssh, true).await?;
        tracing::info!(dn, fingerprint = %v.fingerprint, "ssh key added");
        Ok(Ok(v))
    }

    /// Removes the key with `fingerprint`; false if there is none.
    pub async fn remove_ssh_key(&self, dn: &str, fingerprint: &str) -> Result<bool, ServiceError> {
        for stored in self.directory.ssh_keys(dn).await? {
            let Ok(k) = PublicKey::from_openssh(stored.trim()) else {
                continue;
            };
            if k.fingerprint(HashAlg::Sha256).to_string() == fingerprint {
                let removed = self.directory.change_ssh_key(dn, &stored, false).await?;
                tracing::info!(dn, fingerprint, "ssh key removed");
                return Ok(removed);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vetting() {
        let ed = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@example";
        assert!(parse_public_key(ed).is_ok());
        assert!(
            parse_public_key(
                "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----"
            )
            .unwrap_err()
            .contains("private key")
        );
        assert!(parse_public_key("hello").is_err());
        assert!(parse_public_key(&format!("{ed}\n{ed}")).is_err());
    }
}
