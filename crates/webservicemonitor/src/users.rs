//! Who a tool is: the uid of its account `<project>.<tool>`.
//!
//! The monitor trusts a manifest only when the file is owned by the tool's own
//! uid, so the lookup is a seam: [`UidSource`], implemented by the system user
//! database ([`PasswdUsers`], `getpwnam` through NSS, so LDAP accounts work)
//! and by a fixed table from the configuration ([`MapUsers`]) for sites — and
//! tests — that don't want to depend on NSS.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{UidSourceKind, UsersConfig};

/// Why a user could not be looked up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// No such account.
    #[error("no user {0:?}")]
    NotFound(String),
    /// The user database failed.
    #[error("looking up user {user:?} failed: {reason}")]
    Lookup {
        /// The user looked up.
        user: String,
        /// What went wrong.
        reason: String,
    },
}

/// Finds the uid of a user name (blocking; call from a blocking context).
pub trait UidSource: Send + Sync + std::fmt::Debug {
    /// The uid of `user`.
    fn uid_of(&self, user: &str) -> Result<u32, UserError>;
    /// The user name of `uid`, if known.
    fn name_of(&self, uid: u32) -> Option<String>;
}

/// The system user database.
#[derive(Debug, Default, Clone, Copy)]
pub struct PasswdUsers;

impl UidSource for PasswdUsers {
    fn uid_of(&self, user: &str) -> Result<u32, UserError> {
        match nix::unistd::User::from_name(user) {
            Ok(Some(u)) => Ok(u.uid.as_raw()),
            Ok(None) => Err(UserError::NotFound(user.to_owned())),
            Err(e) => Err(UserError::Lookup {
                user: user.to_owned(),
                reason: e.to_string(),
            }),
        }
    }

    fn name_of(&self, uid: u32) -> Option<String> {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name)
    }
}

/// A fixed user name → uid table.
#[derive(Debug, Default, Clone)]
pub struct MapUsers {
    by_name: BTreeMap<String, u32>,
}

impl MapUsers {
    /// A table of users.
    pub fn new(by_name: BTreeMap<String, u32>) -> Self {
        MapUsers { by_name }
    }
}

impl UidSource for MapUsers {
    fn uid_of(&self, user: &str) -> Result<u32, UserError> {
        self.by_name
            .get(user)
            .copied()
            .ok_or_else(|| UserError::NotFound(user.to_owned()))
    }

    fn name_of(&self, uid: u32) -> Option<String> {
        self.by_name
            .iter()
            .find(|(_, u)| **u == uid)
            .map(|(n, _)| n.clone())
    }
}

/// The uid source a configuration asks for.
pub fn from_config(c: &UsersConfig) -> Arc<dyn UidSource> {
    match c.source {
        UidSourceKind::Passwd => Arc::new(PasswdUsers),
        UidSourceKind::Map => Arc::new(MapUsers::new(c.map.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_knows_root_and_map_knows_its_table() {
        assert_eq!(PasswdUsers.uid_of("root").unwrap(), 0);
        assert!(matches!(
            PasswdUsers.uid_of("no-such-user-forge-test"),
            Err(UserError::NotFound(_))
        ));
        let m = MapUsers::new([("tools.a".to_owned(), 50001)].into_iter().collect());
        assert_eq!(m.uid_of("tools.a").unwrap(), 50001);
        assert_eq!(m.name_of(50001).as_deref(), Some("tools.a"));
        assert!(m.uid_of("tools.b").is_err());
    }
}
