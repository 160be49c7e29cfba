//! The LDAP directory: where accounts live.
//!
//! [`Directory`] holds one connection bound as the service account (ldap3
//! multiplexes concurrent operations over it) and reconnects when it breaks.
//! User logins bind on a fresh connection of their own. Every filter value is
//! escaped with `ldap3::ldap_escape`; every operation has a timeout.
//!
//! ## `uidNumber` allocation (race-free)
//!
//! A counter entry (`ldap.uid_counter_dn`, object classes `device` +
//! `extensibleObject`) holds the next free `uidNumber`. Allocating is one
//! modify that deletes the value read and adds value+1: LDAP applies a modify
//! atomically, so when two allocators race, the second one's delete fails
//! with `noSuchAttribute` and it re-reads and tries again. The entry is
//! created on first use with max(`first_uid_number`, highest existing + 1).
//! A number already used by some entry (created outside idm-web) is skipped.
//!
//! ## A block holds
//!
//! Account managers block an account with the password-policy lock
//! (`pwdAccountLockedTime`). slapd's ppolicy overlay removes that lock
//! whenever the password changes, so every write the service account makes
//! on a user's behalf (password reset, e-mail address, SSH keys) carries the
//! LDAP assertion control (RFC 4528, critical) with the filter
//! [`UNLOCKED`]: the directory applies the modify only if the entry is still
//! unlocked when it does, in the same operation — no check-then-write race.
//! A refused assertion is [`DirectoryError::Locked`]. Only
//! [`Directory::set_locked`] (the managers' audited block and unblock)
//! writes without it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ldap3::controls::{Assertion, MakeCritical};
use ldap3::{
    Ldap, LdapConnAsync, LdapConnSettings, LdapError, Mod, Scope, SearchEntry, ldap_escape,
};
use tokio::sync::Mutex;

use crate::config::LdapSettings;
use crate::passwords::DummyHash;

/// LDAP result codes we act on.
mod rc {
    pub const SUCCESS: u32 = 0;
    pub const NO_SUCH_ATTRIBUTE: u32 = 16;
    pub const NO_SUCH_OBJECT: u32 = 32;
    pub const INVALID_CREDENTIALS: u32 = 49;
    pub const ALREADY_EXISTS: u32 = 68;
    pub const ASSERTION_FAILED: u32 = 122;
}

/// The assertion every service write on a user's behalf carries: the entry
/// is not locked by the password policy.
pub const UNLOCKED: &str = "(!(pwdAccountLockedTime=*))";

/// Why a directory operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The directory cannot be reached (down, timeout, TLS).
    #[error("LDAP directory unreachable: {0}")]
    Unreachable(String),
    /// The directory refused an operation.
    #[error("LDAP {op} failed: {text} (result code {rc})")]
    Refused {
        /// What was attempted.
        op: &'static str,
        /// The result code.
        rc: u32,
        /// The server's text.
        text: String,
    },
    /// The account is blocked (locked by the password policy); nothing was written.
    #[error("the account is blocked")]
    Locked,
    /// `uidNumber` allocation kept losing races.
    #[error("could not allocate a uidNumber after {0} attempts")]
    Contention(usize),
}

impl From<LdapError> for DirectoryError {
    fn from(e: LdapError) -> Self {
        match e {
            LdapError::LdapResult { result } => DirectoryError::Refused {
                op: "operation",
                rc: result.rc,
                text: result.text,
            },
            other => DirectoryError::Unreachable(other.to_string()),
        }
    }
}

/// Which of a candidate's names exist in the directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NamesInUse {
    /// The username exists as a `uid` or `cn`.
    pub username: bool,
    /// The shell name exists as a `uid` or `cn`.
    pub uid: bool,
}

/// An account entry to create.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// Shell name.
    pub uid: String,
    /// Display name (`cn`, `sn`).
    pub username: String,
    /// `mail`.
    pub email: String,
    /// `userPassword` (already hashed, with its `{SCHEME}`).
    pub password_hash: String,
    /// `uidNumber`.
    pub uid_number: u32,
}

/// Whether an account was created or found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// Created now.
    New,
    /// It existed already (a retried job).
    Existed,
}

/// A user who logged in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedUser {
    /// The entry's DN.
    pub dn: String,
    /// Shell name.
    pub uid: String,
    /// Display name.
    pub cn: String,
    /// E-mail.
    pub mail: String,
}

/// An account as found for self-service (with its password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    /// DN.
    pub dn: String,
    /// Shell name.
    pub uid: String,
    /// Display name.
    pub cn: String,
    /// E-mail.
    pub mail: String,
    /// The current `userPassword` value (binds reset tokens to it).
    pub user_password: String,
    /// Whether the account is blocked (`pwdAccountLockedTime` set).
    pub locked: bool,
}

/// An account a typed name resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRef {
    /// The entry's DN.
    pub dn: String,
    /// Shell name.
    pub uid: String,
    /// Display name.
    pub cn: String,
    /// E-mail.
    pub mail: String,
}

/// Counters of the password-checking work logins did.
#[derive(Debug, Default)]
struct LoginWork {
    /// Binds made to check a login's password.
    binds: AtomicU64,
    /// Password hashes verified (by slapd for a real entry, locally against
    /// the dummy hash for an unknown name).
    hash_verifications: AtomicU64,
}

/// The account directory.
#[derive(Debug)]
pub struct Directory {
    settings: LdapSettings,
    password: String,
    shared: Mutex<Option<Ldap>>,
    /// Verified instead of an entry's hash when a login names no account.
    dummy_hash: DummyHash,
    login_work: LoginWork,
}

fn check(op: &'static str, r: ldap3::LdapResult) -> Result<(), DirectoryError> {
    if r.rc == rc::SUCCESS {
        Ok(())
    } else {
        Err(DirectoryError::Refused {
            op,
            rc: r.rc,
            text: r.text,
        })
    }
}

fn first(entry: &SearchEntry, attr: &str) -> Option<String> {
    entry
        .attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attr))
        .and_then(|(_, v)| v.first().cloned())
}

fn account_record(entry: &SearchEntry) -> AccountRecord {
    let password = first(entry, "userPassword").or_else(|| {
        entry
            .bin_attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("userPassword"))
            .and_then(|(_, v)| v.first())
            .map(|b| String::from_utf8_lossy(b).into_owned())
    });
    AccountRecord {
        dn: entry.dn.clone(),
        uid: first(entry, "uid").unwrap_or_default(),
        cn: first(entry, "cn").unwrap_or_default(),
        mail: first(entry, "mail").unwrap_or_default(),
        user_password: password.unwrap_or_default(),
        locked: first(entry, "pwdAccountLockedTime").is_some(),
    }
}

fn set(values: &[&str]) -> HashSet<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

impl Directory {
    /// A directory client; connects lazily.
    pub fn new(settings: LdapSettings, password: String) -> Self {
        Directory {
            dummy_hash: DummyHash::new(settings.password_scheme),
            settings,
            password,
            shared: Mutex::new(None),
            login_work: LoginWork::default(),
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> &LdapSettings {
        &self.settings
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.settings.timeout_ms.max(1))
    }

    async fn open(&self) -> Result<Ldap, DirectoryError> {
        let conn_settings = LdapConnSettings::new()
            .set_conn_timeout(self.timeout())
            .set_starttls(self.settings.starttls);
        let (conn, ldap) = tokio::time::timeout(
            self.timeout(),
            LdapConnAsync::with_settings(conn_settings, &self.settings.url),
        )
        .await
        .map_err(|_| DirectoryError::Unreachable("connect timed out".into()))??;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "LDAP connection ended");
            }
        });
        Ok(ldap)
    }

    /// The shared service connection, bound; opened on demand.
    async fn service(&self) -> Result<Ldap, DirectoryError> {
        let mut guard = self.shared.lock().await;
        if let Some(l) = guard.as_mut()
            && !l.is_closed()
        {
            return Ok(l.clone());
        }
        let mut ldap = self.open().await?;
        let r = ldap
            .with_timeout(self.timeout())
            .simple_bind(&self.settings.bind_dn, &self.password)
            .await?;
        if r.rc != rc::SUCCESS {
            return Err(DirectoryError::Unreachable(format!(
                "service bind as {} refused: {} ({})",
                self.settings.bind_dn, r.text, r.rc
            )));
        }
        *guard = Some(ldap.clone());
        Ok(ldap)
    }

    /// Forgets the shared connection after a transport error.
    async fn reset(&self) {
        *self.shared.lock().await = None;
    }

    /// Searches with the service account; retried once on a broken connection.
    async fn search(
        &self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: Vec<&str>,
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        for attempt in 0..2 {
            let mut ldap = self.service().await?;
            match ldap
                .with_timeout(self.timeout())
                .search(base, scope, filter, attrs.clone())
                .await
            {
                Ok(r) => {
                    let (entries, res) = (r.0, r.1);
                    if res.rc == rc::NO_SUCH_OBJECT {
                        return Ok(Vec::new());
                    }
                    check("search", res)?;
                    return Ok(entries.into_iter().map(SearchEntry::construct).collect());
                }
                Err(e) => {
                    self.reset().await;
                    if attempt == 1 {
                        return Err(e.into());
                    }
                }
            }
        }
        Err(DirectoryError::Unreachable("search failed".into()))
    }

    /// Checks the directory is reachable (health and "try again later").
    pub async fn ping(&self) -> Result<(), DirectoryError> {
        self.search(
            &self.settings.people_base,
            Scope::Base,
            "(objectClass=*)",
            vec!["1.1"],
        )
        .await
        .map(drop)
    }

    /// Which of `username` and `uid` exist as a `uid` or `cn`, decided by
    /// the directory's own equality matching: each name is searched as an
    /// equality filter and any entry found means "in use". (Comparing the
    /// values found with our own case folding would call `Ｖictim` free while
    /// slapd's matching rules fold it to `victim`.)
    pub async fn names_in_use(
        &self,
        username: &str,
        uid: &str,
    ) -> Result<NamesInUse, DirectoryError> {
        let (u, s) = tokio::join!(self.name_in_use(username), self.name_in_use(uid));
        Ok(NamesInUse {
            username: u?,
            uid: s?,
        })
    }

    /// Whether any entry has `name` as its `uid` or `cn` (directory matching).
    async fn name_in_use(&self, name: &str) -> Result<bool, DirectoryError> {
        if name.is_empty() {
            return Ok(false);
        }
        let n = ldap_escape(name);
        let entries = self
            .search(
                &self.settings.people_base,
                Scope::Subtree,
                &format!("(|(uid={n})(cn={n}))"),
                vec!["1.1"],
            )
            .await?;
        Ok(!entries.is_empty())
    }

    /// Resolves a name typed by a user (shell name or username) to one
    /// account, by the directory's own equality matching: the entry whose
    /// `uid` matches wins; otherwise the one entry whose `cn` matches. Two
    /// entries that both match by `cn` resolve to none. Everything that
    /// looks an account up by a typed name goes through here (or
    /// [`Directory::find_account`]), so limits are keyed by the account, not
    /// by the spelling.
    pub async fn resolve_login(&self, login: &str) -> Result<Option<AccountRef>, DirectoryError> {
        if login.is_empty() {
            return Ok(None);
        }
        let l = ldap_escape(login);
        let attrs = vec!["uid", "cn", "mail"];
        let any = self
            .search(
                &self.settings.people_base,
                Scope::Subtree,
                &format!("(&(objectClass=posixAccount)(|(uid={l})(cn={l})))"),
                attrs.clone(),
            )
            .await?;
        let entry = match any.len() {
            0 => return Ok(None),
            1 => any.into_iter().next(),
            _ => {
                // Several: the one the name is the shell name of, if any.
                let by_uid = self
                    .search(
                        &self.settings.people_base,
                        Scope::Subtree,
                        &format!("(&(objectClass=posixAccount)(uid={l}))"),
                        attrs,
                    )
                    .await?;
                if by_uid.len() == 1 {
                    by_uid.into_iter().next()
                } else {
                    None
                }
            }
        };
        Ok(entry.map(|e| AccountRef {
            uid: first(&e, "uid").unwrap_or_default(),
            cn: first(&e, "cn").unwrap_or_default(),
            mail: first(&e, "mail").unwrap_or_default(),
            dn: e.dn,
        }))
    }

    /// The `uidNumber` of the account `uid`, if it exists.
    pub async fn account_uid_number(&self, uid: &str) -> Result<Option<u32>, DirectoryError> {
        let dn = self.account_dn(uid);
        let entries = self
            .search(
                &dn,
                Scope::Base,
                "(objectClass=posixAccount)",
                vec!["uidNumber"],
            )
            .await?;
        Ok(entries
            .first()
            .and_then(|e| first(e, "uidNumber"))
            .and_then(|n| n.parse().ok()))
    }

    /// `uid=<uid>,<people base>`.
    pub fn account_dn(&self, uid: &str) -> String {
        format!(
            "uid={},{}",
            ldap3::dn_escape(uid),
            self.settings.people_base
        )
    }

    /// Hands out the next `uidNumber` (see the module docs).
    pub async fn allocate_uid_number(&self) -> Result<u32, DirectoryError> {
        const ATTEMPTS: usize = 200;
        let counter = self.settings.uid_counter_dn.clone();
        for attempt in 0..ATTEMPTS {
            let found = self
                .search(&counter, Scope::Base, "(objectClass=*)", vec!["uidNumber"])
                .await?;
            let Some(current) = found
                .first()
                .and_then(|e| first(e, "uidNumber"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                self.create_counter().await?;
                continue;
            };
            let mut ldap = self.service().await?;
            let cur = current.to_string();
            let next = (current + 1).to_string();
            let mods = vec![
                Mod::Delete("uidNumber".to_owned(), set(&[cur.as_str()])),
                Mod::Add("uidNumber".to_owned(), set(&[next.as_str()])),
            ];
            let r = match ldap
                .with_timeout(self.timeout())
                .modify(&counter, mods)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    self.reset().await;
                    return Err(e.into());
                }
            };
            match r.rc {
                rc::SUCCESS => {
                    // Skip numbers taken by entries made outside idm-web.
                    let used = self
                        .search(
                            &self.settings.people_base,
                            Scope::Subtree,
                            &format!("(uidNumber={current})"),
                            vec!["1.1"],
                        )
                        .await?;
                    if used.is_empty() {
                        metrics::counter!("forge_idm_uid_allocations_total").increment(1);
                        return Ok(current);
                    }
                }
                rc::NO_SUCH_ATTRIBUTE => {
                    // Lost the race: someone else moved the counter. Back off a little.
                    metrics::counter!("forge_idm_uid_allocation_conflicts_total").increment(1);
                    let jitter = rand::random::<u64>() % (5 + attempt as u64 * 2).min(50);
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
                _ => check("modify uidNumber counter", r)?,
            }
        }
        Err(DirectoryError::Contention(ATTEMPTS))
    }

    /// Creates the counter entry at max(first, highest existing + 1).
    async fn create_counter(&self) -> Result<(), DirectoryError> {
        let existing = self
            .search(
                &self.settings.people_base,
                Scope::Subtree,
                "(uidNumber=*)",
                vec!["uidNumber"],
            )
            .await?;
        let highest = existing
            .iter()
            .filter_map(|e| first(e, "uidNumber"))
            .filter_map(|n| n.parse::<u32>().ok())
            .max();
        let start = highest.map_or(self.settings.first_uid_number, |h| {
            (h + 1).max(self.settings.first_uid_number)
        });
        let dn = &self.settings.uid_counter_dn;
        let cn = dn
            .split(',')
            .next()
            .and_then(|rdn| rdn.split_once('='))
            .map(|(_, v)| v.to_owned())
            .unwrap_or_else(|| "uidnumber-counter".into());
        let start = start.to_string();
        let attrs = vec![
            (
                "objectClass".to_owned(),
                set(&["device", "extensibleObject"]),
            ),
            ("cn".to_owned(), set(&[cn.as_str()])),
            ("uidNumber".to_owned(), set(&[start.as_str()])),
        ];
        let mut ldap = self.service().await?;
        let r = ldap.with_timeout(self.timeout()).add(dn, attrs).await?;
        match r.rc {
            rc::SUCCESS => {
                tracing::info!(dn = %dn, start = %start, "created the uidNumber counter");
                Ok(())
            }
            rc::ALREADY_EXISTS => Ok(()),
            _ => check("add uidNumber counter", r),
        }
    }

    /// Creates the account entry of SPEC §6; an existing entry is a success.
    pub async fn create_account(&self, a: &NewAccount) -> Result<Created, DirectoryError> {
        let dn = self.account_dn(&a.uid);
        let mut classes = vec!["inetOrgPerson", "posixAccount", "ldapPublicKey"];
        for c in &self.settings.extra_object_classes {
            classes.push(c.as_str());
        }
        let uid_number = a.uid_number.to_string();
        let gid_number = self.settings.gid_number.to_string();
        let home = format!(
            "{}/{}",
            self.settings.home_prefix.trim_end_matches('/'),
            a.uid
        );
        let attrs = vec![
            ("objectClass".to_owned(), set(&classes)),
            ("cn".to_owned(), set(&[a.username.as_str()])),
            ("sn".to_owned(), set(&[a.username.as_str()])),
            ("uid".to_owned(), set(&[a.uid.as_str()])),
            ("uidNumber".to_owned(), set(&[uid_number.as_str()])),
            ("gidNumber".to_owned(), set(&[gid_number.as_str()])),
            ("homeDirectory".to_owned(), set(&[home.as_str()])),
            (
                "loginShell".to_owned(),
                set(&[self.settings.login_shell.as_str()]),
            ),
            ("mail".to_owned(), set(&[a.email.as_str()])),
            ("userPassword".to_owned(), set(&[a.password_hash.as_str()])),
        ];
        let mut ldap = self.service().await?;
        let r = match ldap.with_timeout(self.timeout()).add(&dn, attrs).await {
            Ok(r) => r,
            Err(e) => {
                self.reset().await;
                return Err(e.into());
            }
        };
        match r.rc {
            rc::SUCCESS => Ok(Created::New),
            rc::ALREADY_EXISTS => Ok(Created::Existed),
            _ => check("add account", r).map(|()| Created::New),
        }
    }

    /// Checks a login (`uid` or `cn`) and password: [`Directory::resolve_login`]
    /// then [`Directory::verify_password`]. `Ok(None)`: unknown user or wrong
    /// password.
    pub async fn authenticate(
        &self,
        login: &str,
        password: &str,
    ) -> Result<Option<AuthenticatedUser>, DirectoryError> {
        let account = self.resolve_login(login).await?;
        self.verify_password(account.as_ref(), password).await
    }

    /// Checks `password` for a resolved account by binding as it on a fresh
    /// connection. For no account (an unknown name) it does the same work —
    /// a fresh connection, a bind (to a DN that does not exist) and one
    /// password-hash verification against a dummy hash of the configured
    /// scheme — so the answer's time does not tell whether the name exists.
    /// `Ok(None)`: unknown user or wrong password.
    pub async fn verify_password(
        &self,
        account: Option<&AccountRef>,
        password: &str,
    ) -> Result<Option<AuthenticatedUser>, DirectoryError> {
        if password.is_empty() {
            // An empty password would be an unauthenticated bind: never a login.
            return Ok(None);
        }
        let dn = match account {
            Some(a) => a.dn.clone(),
            None => format!("cn=no-such-account,{}", self.settings.people_base),
        };
        let mut ldap = self.open().await?;
        let r = ldap
            .with_timeout(self.timeout())
            .simple_bind(&dn, password)
            .await?;
        let _ = ldap.unbind().await;
        self.login_work.binds.fetch_add(1, Ordering::Relaxed);
        let Some(account) = account else {
            // slapd refused at once (no such entry): verify against the dummy
            // hash, as slapd would have verified the entry's hash.
            self.dummy_hash.verify(password);
            self.login_work
                .hash_verifications
                .fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        };
        self.login_work
            .hash_verifications
            .fetch_add(1, Ordering::Relaxed);
        match r.rc {
            rc::SUCCESS => Ok(Some(AuthenticatedUser {
                dn: account.dn.clone(),
                uid: account.uid.clone(),
                cn: account.cn.clone(),
                mail: account.mail.clone(),
            })),
            rc::INVALID_CREDENTIALS => Ok(None),
            _ => Err(DirectoryError::Refused {
                op: "bind",
                rc: r.rc,
                text: r.text,
            }),
        }
    }

    /// How much password-checking work logins did so far (for tests and
    /// the no-oracle guarantee: the same per attempt, known name or not).
    pub fn login_work(&self) -> (u64, u64) {
        (
            self.login_work.binds.load(Ordering::Relaxed),
            self.login_work.hash_verifications.load(Ordering::Relaxed),
        )
    }

    /// Finds the account `key` names: the one whose `uid` is `key`, else the
    /// one whose `cn` is, else the one whose `mail` is (each by the
    /// directory's equality matching, exactly one), with its current
    /// `userPassword` (the service account must be allowed to read it:
    /// password-reset tokens are bound to it). A look-alike `cn` of another
    /// entry never hides the account a shell name names.
    pub async fn find_account(&self, key: &str) -> Result<Option<AccountRecord>, DirectoryError> {
        if key.is_empty() {
            return Ok(None);
        }
        let k = ldap_escape(key);
        for attr in ["uid", "cn", "mail"] {
            let filter = format!("(&(objectClass=posixAccount)({attr}={k}))");
            let found = self
                .search(
                    &self.settings.people_base,
                    Scope::Subtree,
                    &filter,
                    vec!["uid", "cn", "mail", "userPassword", "pwdAccountLockedTime"],
                )
                .await?;
            match found.as_slice() {
                [] => continue,
                [entry] => return Ok(Some(account_record(entry))),
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Applies `mods` to `dn` as the service account; a transport error drops
    /// the service connection so the next call reconnects.
    async fn service_modify(
        &self,
        dn: &str,
        mods: Vec<Mod<String>>,
    ) -> Result<ldap3::LdapResult, DirectoryError> {
        let mut ldap = self.service().await?;
        match ldap.with_timeout(self.timeout()).modify(dn, mods).await {
            Ok(r) => Ok(r),
            Err(e) => {
                self.reset().await;
                Err(e.into())
            }
        }
    }

    /// Applies `mods` to `dn` as the service account only if the entry is
    /// not locked, checked by the directory in the same operation (the
    /// assertion control, see the module docs): [`DirectoryError::Locked`]
    /// when it is.
    async fn service_modify_unlocked(
        &self,
        dn: &str,
        mods: Vec<Mod<String>>,
    ) -> Result<ldap3::LdapResult, DirectoryError> {
        let mut ldap = self.service().await?;
        match ldap
            .with_timeout(self.timeout())
            .with_controls(Assertion { filter: UNLOCKED }.critical())
            .modify(dn, mods)
            .await
        {
            Ok(r) if r.rc == rc::ASSERTION_FAILED => Err(DirectoryError::Locked),
            Ok(r) => Ok(r),
            Err(e) => {
                self.reset().await;
                Err(e.into())
            }
        }
    }

    /// Replaces the password of `dn` (service account): forgotten-password
    /// reset. Refused ([`DirectoryError::Locked`]) for a blocked account.
    pub async fn set_password(&self, dn: &str, hash: &str) -> Result<(), DirectoryError> {
        let mods = vec![Mod::Replace("userPassword".to_owned(), set(&[hash]))];
        let r = self.service_modify_unlocked(dn, mods).await?;
        check("modify userPassword", r)
    }

    /// Changes the password of `dn` as the user itself: binds with `current`
    /// and replaces `userPassword` on that connection. `Ok(false)`: the
    /// current password is wrong.
    pub async fn change_own_password(
        &self,
        dn: &str,
        current: &str,
        hash: &str,
    ) -> Result<bool, DirectoryError> {
        if current.is_empty() {
            return Ok(false);
        }
        let mut ldap = self.open().await?;
        let r = ldap
            .with_timeout(self.timeout())
            .simple_bind(dn, current)
            .await?;
        if r.rc == rc::INVALID_CREDENTIALS {
            let _ = ldap.unbind().await;
            return Ok(false);
        }
        check("bind", r)?;
        let mods = vec![Mod::Replace("userPassword".to_owned(), set(&[hash]))];
        let r = ldap
            .with_timeout(self.timeout())
            .with_controls(Assertion { filter: UNLOCKED }.critical())
            .modify(dn, mods)
            .await?;
        let _ = ldap.unbind().await;
        if r.rc == rc::ASSERTION_FAILED {
            return Err(DirectoryError::Locked);
        }
        check("modify own userPassword", r)?;
        Ok(true)
    }

    /// The accounts (`uid`, `cn`) whose `mail` is `mail`.
    pub async fn accounts_by_mail(
        &self,
        mail: &str,
    ) -> Result<Vec<(String, String)>, DirectoryError> {
        let filter = format!("(&(objectClass=posixAccount)(mail={}))", ldap_escape(mail));
        let found = self
            .search(
                &self.settings.people_base,
                Scope::Subtree,
                &filter,
                vec!["uid", "cn"],
            )
            .await?;
        Ok(found
            .iter()
            .map(|e| {
                (
                    first(e, "uid").unwrap_or_default(),
                    first(e, "cn").unwrap_or_default(),
                )
            })
            .collect())
    }

    /// The `sshPublicKey` values of `dn`.
    pub async fn ssh_keys(&self, dn: &str) -> Result<Vec<String>, DirectoryError> {
        let found = self
            .search(dn, Scope::Base, "(objectClass=*)", vec!["sshPublicKey"])
            .await?;
        let Some(e) = found.first() else {
            return Ok(Vec::new());
        };
        let mut keys: Vec<String> = e
            .attrs
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("sshPublicKey"))
            .flat_map(|(_, v)| v.iter().cloned())
            .collect();
        keys.extend(
            e.bin_attrs
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("sshPublicKey"))
                .flat_map(|(_, v)| v.iter().map(|b| String::from_utf8_lossy(b).into_owned())),
        );
        Ok(keys)
    }

    /// Adds or removes one `sshPublicKey` value of `dn`; `Ok(false)` when it
    /// was already there (add) or not there (remove).
    pub async fn change_ssh_key(
        &self,
        dn: &str,
        key: &str,
        add: bool,
    ) -> Result<bool, DirectoryError> {
        const ATTRIBUTE_OR_VALUE_EXISTS: u32 = 20;
        let m = if add {
            Mod::Add("sshPublicKey".to_owned(), set(&[key]))
        } else {
            Mod::Delete("sshPublicKey".to_owned(), set(&[key]))
        };
        let r = self.service_modify_unlocked(dn, vec![m]).await?;
        match r.rc {
            rc::SUCCESS => Ok(true),
            ATTRIBUTE_OR_VALUE_EXISTS | rc::NO_SUCH_ATTRIBUTE => Ok(false),
            _ => check("modify sshPublicKey", r).map(|()| false),
        }
    }

    /// Replaces the `mail` of `dn` (service account); refused for a blocked account.
    pub async fn set_mail(&self, dn: &str, mail: &str) -> Result<(), DirectoryError> {
        let mods = vec![Mod::Replace("mail".to_owned(), set(&[mail]))];
        let r = self.service_modify_unlocked(dn, mods).await?;
        check("modify mail", r)
    }

    /// Locks (`true`) or unlocks the account at `dn` through the password
    /// policy: `pwdAccountLockedTime: 000001010000Z` is a lock no time lifts.
    /// The only service write that may clear a lock: callers are the
    /// managers' audited block and unblock.
    pub async fn set_locked(&self, dn: &str, locked: bool) -> Result<(), DirectoryError> {
        let m = if locked {
            Mod::Replace("pwdAccountLockedTime".to_owned(), set(&["000001010000Z"]))
        } else {
            Mod::Replace("pwdAccountLockedTime".to_owned(), HashSet::new())
        };
        let r = self.service_modify(dn, vec![m]).await?;
        match r.rc {
            rc::SUCCESS | rc::NO_SUCH_ATTRIBUTE => Ok(()),
            _ => check("modify pwdAccountLockedTime", r),
        }
    }

    /// Whether the account at `dn` is locked.
    pub async fn is_locked(&self, dn: &str) -> Result<bool, DirectoryError> {
        let found = self
            .search(
                dn,
                Scope::Base,
                "(objectClass=*)",
                vec!["pwdAccountLockedTime"],
            )
            .await?;
        Ok(found
            .first()
            .is_some_and(|e| first(e, "pwdAccountLockedTime").is_some()))
    }
}
