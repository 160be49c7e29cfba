//! Account managers: block and unblock accounts, with an audit log.
//!
//! Managers are the accounts listed in `managers.uids`. Blocking sets the
//! password-policy lock (`pwdAccountLockedTime`), so the directory itself
//! refuses every bind — here and in every other service using it.
//! Each action is recorded (who, what, whom, why, when) in `audit_log`;
//! a reason is required, and nobody blocks themselves.
//!
//! A block also ends the account's sessions at once; its API tokens refuse
//! while it is blocked (checked at every call), and the directory refuses
//! every service write on its behalf (see `directory`'s assertion control),
//! so nothing but a manager's unblock lifts it.

use super::{Core, ServiceError};
use crate::store::audit::AuditEntry;

/// An account as a manager sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ManagedAccount {
    /// Shell name.
    pub uid: String,
    /// Display name.
    pub cn: String,
    /// E-mail.
    pub mail: String,
    /// Whether it is blocked.
    pub locked: bool,
    /// Recent managers' actions on it, newest first.
    pub history: Vec<AuditEntry>,
}

impl Core {
    /// Whether `uid` is an account manager.
    pub fn is_manager(&self, uid: &str) -> bool {
        self.config.managers.uids.iter().any(|m| m == uid)
    }

    /// The account `uid` (by shell name) for the manager page.
    pub async fn managed_account(&self, uid: &str) -> Result<Option<ManagedAccount>, ServiceError> {
        let Some(a) = self
            .directory
            .find_account(uid)
            .await?
            .filter(|a| a.uid == uid)
        else {
            return Ok(None);
        };
        Ok(Some(ManagedAccount {
            locked: self.directory.is_locked(&a.dn).await?,
            history: self.audit.for_target(&a.uid, 20).await?,
            uid: a.uid,
            cn: a.cn,
            mail: a.mail,
        }))
    }

    /// Blocks (`block`) or unblocks account `target` on behalf of manager
    /// `actor`; `Ok(Err(message))` when refused.
    pub async fn set_blocked(
        &self,
        actor: &str,
        target: &str,
        block: bool,
        reason: &str,
    ) -> Result<Result<(), String>, ServiceError> {
        if !self.is_manager(actor) {
            return Ok(Err("Only account managers may do this.".into()));
        }
        let reason = reason.trim();
        if reason.is_empty() {
            return Ok(Err("Give a reason; it is kept in the audit log.".into()));
        }
        if block && actor == target {
            return Ok(Err("You can't block your own account.".into()));
        }
        let Some(a) = self
            .directory
            .find_account(target)
            .await?
            .filter(|a| a.uid == target)
        else {
            return Ok(Err("No such account.".into()));
        };
        self.directory.set_locked(&a.dn, block).await?;
        let action = if block { "block" } else { "unblock" };
        self.audit.record(actor, action, target, reason).await?;
        if block {
            let ended = self.end_sessions(&a.uid, None).await?;
            tracing::info!(
                target,
                sessions = ended,
                "sessions of the blocked account ended"
            );
        }
        metrics::counter!("forge_idm_account_blocks_total", "action" => action).increment(1);
        tracing::info!(actor, target, action, reason, "account {action}ed");
        Ok(Ok(()))
    }
}
