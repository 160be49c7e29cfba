//! idm-web's configuration: one TOML file (`/etc/forge/idm-web.toml`),
//! environment overrides `FORGE_IDM_<SECTION>__<KEY>`, and flags.
//!
//! Every key is documented in `docs/idm-web.md`. Secrets (LDAP bind password,
//! token key, SMTP password) can be given inline or, better, as a `*_file`
//! path readable only by the service.

use std::net::SocketAddr;
use std::path::PathBuf;

use forge_core::config::Loaded;
use forge_core::redis::RedisSettings;
use forge_core::telemetry::LogSettings;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The environment prefix of overrides.
pub const ENV_PREFIX: &str = "FORGE_IDM";

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The public web listener and what it accepts.
    pub http: HttpSettings,
    /// The admin listener (`/healthz`, `/metrics` …).
    pub admin: AdminSettings,
    /// The SQL database.
    pub database: DatabaseSettings,
    /// The LDAP directory holding accounts.
    pub ldap: LdapSettings,
    /// Outgoing mail.
    pub mail: MailSettings,
    /// Redis, for the job queues.
    pub redis: RedisSettings,
    /// How jobs are enqueued.
    pub queue: QueueSettings,
    /// Signed tokens (activation links, CSRF, anti-bot challenges).
    pub tokens: TokenSettings,
    /// Signup rules.
    pub signup: SignupSettings,
    /// Username blocklist sources.
    pub blocklist: BlocklistSettings,
    /// Rate limits.
    pub rate_limit: RateLimitSettings,
    /// Account managers.
    pub managers: ManagerSettings,
    /// Logging.
    pub log: LogSettings,
}

/// `[http]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Address the web app listens on (behind the TLS-terminating proxy).
    pub listen: SocketAddr,
    /// The public base URL used in links sent by mail, e.g. `https://idm.example.org`.
    pub public_base_url: String,
    /// `Host` names accepted (with or without port). Empty: only the host of
    /// `public_base_url`. Add a standby host's own name here to reach it directly.
    pub allowed_hosts: Vec<String>,
    /// Peers whose `X-Forwarded-For` is believed (the proxies in front).
    pub trusted_proxies: Vec<IpNet>,
    /// Whether cookies carry `Secure` (keep `true` in production).
    pub cookie_secure: bool,
    /// How long a session lasts without activity, in days.
    pub session_days: i64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            public_base_url: "http://localhost:8000".into(),
            allowed_hosts: Vec::new(),
            trusted_proxies: vec![
                "127.0.0.1/32".parse().expect("literal"),
                "::1/128".parse().expect("literal"),
            ],
            cookie_secure: true,
            session_days: 14,
        }
    }
}

/// `[queue]`: durability of enqueued jobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueSettings {
    /// An enqueue (activation mail, account creation …) counts as done only
    /// once this many Redis replicas have it (`WAIT`); otherwise the user is
    /// asked to try again. 0 = the master's acknowledgement is enough;
    /// `"auto"` (the default) = 1 where the master has replicas, 0 where it
    /// has none.
    pub min_replicas: forge_core::redis::MinReplicas,
    /// After a Sentinel master switch (or an enqueue that reached a server
    /// that is no longer the master), how long an enqueue keeps retrying on
    /// the new master before it fails, milliseconds.
    pub switch_retry_ms: u64,
    /// How long to wait for those replicas, milliseconds.
    pub replica_timeout_ms: u64,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            min_replicas: forge_core::redis::MinReplicas::Auto,
            replica_timeout_ms: 1000,
            switch_retry_ms: 3000,
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// Address of the admin endpoint.
    pub listen: SocketAddr,
    /// File holding the admin token that `PUT /log-filter` needs
    /// (`Authorization: Bearer …`). Unset: it is refused. Read at start.
    pub token_file: Option<PathBuf>,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 9108)),
            token_file: None,
        }
    }
}

/// `[database]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite:///path/idm.db` (embedded default) or `mysql://user:pw@host/db` (MariaDB).
    pub url: String,
    /// A file holding the URL instead (it contains a password).
    pub url_file: Option<PathBuf>,
    /// Pool size.
    pub max_connections: u32,
    /// How long to wait for a pooled connection, milliseconds.
    pub acquire_timeout_ms: u64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: "sqlite://idm-web.db".into(),
            url_file: None,
            max_connections: 8,
            acquire_timeout_ms: 5000,
        }
    }
}

/// How passwords are hashed for the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PasswordScheme {
    /// `{ARGON2}` (argon2id, PHC string): needs slapd's argon2 module.
    Argon2,
    /// `{SSHA}`: salted SHA-1, for directories without the module.
    Ssha,
}

/// `[ldap]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LdapSettings {
    /// `ldap://host:389` or `ldaps://host:636`.
    pub url: String,
    /// Upgrade `ldap://` with StartTLS.
    pub starttls: bool,
    /// The service account that searches and creates entries.
    pub bind_dn: String,
    /// Its password.
    pub bind_password: String,
    /// A file holding the password instead.
    pub bind_password_file: Option<PathBuf>,
    /// Where accounts live: `uid=<uid>,<people_base>`.
    pub people_base: String,
    /// The counter entry that hands out `uidNumber`s (created on first use).
    pub uid_counter_dn: String,
    /// The lowest `uidNumber` handed out.
    pub first_uid_number: u32,
    /// `gidNumber` of new accounts.
    pub gid_number: u32,
    /// Object classes added to the standard ones.
    pub extra_object_classes: Vec<String>,
    /// `loginShell` of new accounts.
    pub login_shell: String,
    /// `homeDirectory` is `<home_prefix>/<uid>`.
    pub home_prefix: String,
    /// `argon2` or `ssha`.
    pub password_scheme: PasswordScheme,
    /// Connect and per-operation timeout, milliseconds.
    pub timeout_ms: u64,
}

impl Default for LdapSettings {
    fn default() -> Self {
        LdapSettings {
            url: "ldap://127.0.0.1:389".into(),
            starttls: false,
            bind_dn: "cn=admin,dc=example,dc=org".into(),
            bind_password: String::new(),
            bind_password_file: None,
            people_base: "ou=people,dc=example,dc=org".into(),
            uid_counter_dn: "cn=uidnumber-counter,dc=example,dc=org".into(),
            first_uid_number: 5000,
            gid_number: 500,
            extra_object_classes: Vec::new(),
            login_shell: "/bin/bash".into(),
            home_prefix: "/home".into(),
            password_scheme: PasswordScheme::Argon2,
            timeout_ms: 5000,
        }
    }
}

/// How mail leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailTransport {
    /// Through an SMTP relay.
    Smtp,
    /// Written as `.eml` files to `mail.file_dir` (development).
    File,
}

/// SMTP transport security.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain (a relay on localhost).
    None,
    /// STARTTLS, required.
    Starttls,
    /// Implicit TLS (port 465).
    Tls,
}

/// `[mail]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailSettings {
    /// `smtp` or `file`.
    pub transport: MailTransport,
    /// SMTP relay host.
    pub smtp_host: String,
    /// SMTP relay port.
    pub smtp_port: u16,
    /// `none`, `starttls` or `tls`.
    pub tls: SmtpTls,
    /// SMTP user (empty: no authentication).
    pub username: String,
    /// SMTP password.
    pub password: String,
    /// A file holding the SMTP password instead.
    pub password_file: Option<PathBuf>,
    /// Directory for the `file` transport.
    pub file_dir: PathBuf,
    /// Sender of every mail.
    pub from: String,
    /// Who is told about new accounts.
    pub admin_recipients: Vec<String>,
    /// SMTP timeout, milliseconds.
    pub timeout_ms: u64,
}

impl Default for MailSettings {
    fn default() -> Self {
        MailSettings {
            transport: MailTransport::Smtp,
            smtp_host: "127.0.0.1".into(),
            smtp_port: 2525,
            tls: SmtpTls::None,
            username: String::new(),
            password: String::new(),
            password_file: None,
            file_dir: PathBuf::from("mailbox"),
            from: "Forge accounts <noreply@example.org>".into(),
            admin_recipients: Vec::new(),
            timeout_ms: 10_000,
        }
    }
}

/// `[tokens]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenSettings {
    /// The signing key (at least 32 characters). Prefer `secret_file`.
    pub secret: String,
    /// A file holding the key.
    pub secret_file: Option<PathBuf>,
    /// How long an activation link works, in days.
    pub activation_days: i64,
    /// How long a password-reset (and e-mail-change) link works, in hours;
    /// short-lived on purpose (a mailbox is often read by more than one).
    pub reset_hours: i64,
}

impl Default for TokenSettings {
    fn default() -> Self {
        TokenSettings {
            secret: String::new(),
            secret_file: None,
            activation_days: 3,
            reset_hours: 1,
        }
    }
}

/// `[signup]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignupSettings {
    /// Shortest password accepted.
    pub min_password_length: usize,
    /// A further list of refused passwords, one per line (added to the shipped one).
    pub common_passwords_file: Option<PathBuf>,
    /// Days after which unactivated signups are deleted (`expire-signups` default).
    pub expiry_days: i64,
    /// Whether the anti-bot question is asked.
    pub antibot: bool,
    /// Lowest zxcvbn strength score (0–4) a new password must reach.
    pub min_password_score: u8,
    /// Names refused as username or shell name, added to the shipped list of
    /// system account names (`data/reserved-names.txt`); compared by skeleton.
    pub reserved_names: Vec<String>,
}

impl Default for SignupSettings {
    fn default() -> Self {
        SignupSettings {
            min_password_length: 10,
            common_passwords_file: None,
            expiry_days: 5,
            antibot: true,
            min_password_score: 3,
            reserved_names: Vec::new(),
        }
    }
}

/// One wiki the blocklist comes from, and the pages read from it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BlocklistSource {
    /// Short name stored as the entries' origin (`meta`, `wikitech`).
    pub name: String,
    /// The wiki's `api.php` URL.
    pub api_url: String,
    /// The pages holding title-blacklist entries, read as raw wikitext
    /// (meta: `Title blacklist`, the global list every Wikimedia wiki
    /// applies; any wiki: `MediaWiki:Titleblacklist`, its local list).
    /// Required: each source names its own.
    #[serde(default)]
    pub pages: Vec<String>,
    /// The pages holding title-whitelist entries (`MediaWiki:Titlewhitelist`):
    /// a name one of them matches is let through even when blacklisted.
    #[serde(default)]
    pub whitelist_pages: Vec<String>,
}

/// `[blocklist]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlocklistSettings {
    /// The wikis.
    pub sources: Vec<BlocklistSource>,
    /// Replaced by each source's `pages`; refused at start-up when set, with
    /// what to write instead (it used to name one page for every wiki, which
    /// read meta's local list instead of the global one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    /// Fetch timeout, seconds (the whole request: connect, TLS, answer).
    pub timeout_seconds: u64,
    /// The product part of the fetches' `User-Agent`; the contact is added
    /// to it: `<user_agent> (<contact>; username blocklist sync)`.
    pub user_agent: String,
    /// Who runs this client, as Wikimedia's User-Agent policy asks: a URL
    /// (`https://…`) or an e-mail address. `sync-username-block` refuses to
    /// run without one; the web app does not need it.
    pub contact: Option<String>,
    /// Entries not seen for this many days are dropped.
    pub stale_days: i64,
    /// How often the web app re-reads the list from the database, seconds.
    pub refresh_seconds: u64,
}

impl BlocklistSettings {
    /// The `User-Agent` of fetches: the product, then the contact
    /// (`forge-idm-web/1.0 (https://example.org/contact; username blocklist
    /// sync)`), or `None` without a contact.
    pub fn full_user_agent(&self) -> Option<String> {
        self.contact
            .as_deref()
            .map(|c| format!("{} ({c}; username blocklist sync)", self.user_agent))
    }
}

impl Default for BlocklistSettings {
    fn default() -> Self {
        BlocklistSettings {
            sources: vec![
                BlocklistSource {
                    name: "meta".into(),
                    api_url: "https://meta.wikimedia.org/w/api.php".into(),
                    pages: vec!["Title blacklist".into()],
                    whitelist_pages: Vec::new(),
                },
                BlocklistSource {
                    name: "wikitech".into(),
                    api_url: "https://wikitech.wikimedia.org/w/api.php".into(),
                    pages: vec!["MediaWiki:Titleblacklist".into()],
                    whitelist_pages: vec!["MediaWiki:Titlewhitelist".into()],
                },
            ],
            page: None,
            timeout_seconds: 20,
            user_agent: format!("forge-idm-web/{}", forge_core::VERSION),
            contact: None,
            stale_days: 7,
            refresh_seconds: 60,
        }
    }
}

/// `[managers]`: who may block and unblock accounts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ManagerSettings {
    /// Shell names (`uid`) of the account managers.
    pub uids: Vec<String>,
}

/// `[rate_limit]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Signup form submissions per client IP per hour.
    pub signup_per_ip_per_hour: u32,
    /// Login attempts per client IP per minute.
    pub login_per_ip_per_minute: u32,
    /// Login attempts per account name per minute.
    pub login_per_account_per_minute: u32,
    /// E-mail-change requests (each mails the address typed) per account per
    /// hour; they also count against `login_per_ip_per_minute`, like the
    /// other pages that send mail.
    pub email_change_per_account_per_hour: u32,
    /// Name-check API (`/api/v1/check`) requests per client IP per minute.
    pub check_per_ip_per_minute: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            signup_per_ip_per_hour: 20,
            login_per_ip_per_minute: 30,
            login_per_account_per_minute: 10,
            email_change_per_account_per_hour: 5,
            check_per_ip_per_minute: 60,
        }
    }
}

/// Secrets read from their files, once, at start-up.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// The database URL.
    pub database_url: String,
    /// The LDAP bind password.
    pub ldap_password: String,
    /// The token key.
    pub token_key: Vec<u8>,
    /// The SMTP password.
    pub smtp_password: String,
}

fn read_secret(path: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// What `[blocklist]` needs beyond its types: the retired `page` key
/// refused with what to write instead, each source with its pages, names and
/// pages the wiki API can take, a contact that is a URL or an address.
fn validate_blocklist(loaded: &Loaded<Config>) -> Result<(), forge_core::ConfigError> {
    let b = &loaded.config.blocklist;
    if let Some(page) = &b.page {
        return Err(loaded.invalid(
            "blocklist.page",
            format!(
                "blocklist.page ({page:?}) is no longer read: it named one page for every wiki, \
                 and on meta that page is meta's local list, not the global one. Remove it and \
                 name each source's pages instead, e.g. (the defaults) sources = [\
                 {{ name = \"meta\", api_url = \"https://meta.wikimedia.org/w/api.php\", \
                 pages = [\"Title blacklist\"] }}, \
                 {{ name = \"wikitech\", api_url = \"https://wikitech.wikimedia.org/w/api.php\", \
                 pages = [\"MediaWiki:Titleblacklist\"], whitelist_pages = [\"MediaWiki:Titlewhitelist\"] }}]"
            ),
        ));
    }
    let mut names = std::collections::HashSet::new();
    for s in &b.sources {
        if s.name.trim().is_empty() || s.name.len() > 64 || s.name.chars().any(char::is_control) {
            return Err(loaded.invalid(
                "blocklist.sources",
                format!("{:?}: a source name is 1–64 printable characters", s.name),
            ));
        }
        if !names.insert(s.name.as_str()) {
            return Err(loaded.invalid(
                "blocklist.sources",
                format!(
                    "{:?} is named twice (the name is the entries' origin)",
                    s.name
                ),
            ));
        }
        match url::Url::parse(&s.api_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
            _ => {
                return Err(loaded.invalid(
                    "blocklist.sources",
                    format!("{:?}: api_url must be http(s)://host/…/api.php", s.name),
                ));
            }
        }
        if s.pages.is_empty() {
            return Err(loaded.invalid(
                "blocklist.sources",
                format!(
                    "{:?} names no pages: add pages = [\"…\"] (meta's global list is \
                     \"Title blacklist\"; a wiki's own list is \"MediaWiki:Titleblacklist\")",
                    s.name
                ),
            ));
        }
        for page in s.pages.iter().chain(&s.whitelist_pages) {
            if page.trim().is_empty()
                || page.len() > 255
                || page.contains(['|', '#', '<', '>', '[', ']', '{', '}'])
                || page.chars().any(char::is_control)
            {
                return Err(loaded.invalid(
                    "blocklist.sources",
                    format!("{:?}: {page:?} is not a page title", s.name),
                ));
            }
        }
    }
    if http::HeaderValue::from_str(&b.user_agent).is_err() || b.user_agent.trim().is_empty() {
        return Err(loaded.invalid(
            "blocklist.user_agent",
            "must be printable ASCII, e.g. \"forge-idm-web/1.0\"",
        ));
    }
    if let Some(contact) = &b.contact {
        let is_url = url::Url::parse(contact)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
        let is_mail = contact.parse::<lettre::Address>().is_ok();
        if !(is_url || is_mail)
            || contact.contains(['(', ')', ';'])
            || http::HeaderValue::from_str(contact).is_err()
        {
            return Err(loaded.invalid(
                "blocklist.contact",
                format!(
                    "{contact:?}: expected a URL (https://…) or an e-mail address, in printable ASCII"
                ),
            ));
        }
    }
    Ok(())
}

impl Config {
    /// Checks what serde cannot and reads the secret files; errors carry the
    /// file:line of the offending key.
    pub fn validate(loaded: &Loaded<Config>) -> Result<Secrets, forge_core::ConfigError> {
        let c = &loaded.config;
        if let Some(file) = &c.admin.token_file
            && let Err(e) = forge_core::admin::AdminToken::from_file(file)
        {
            return Err(loaded.invalid("admin.token_file", e));
        }
        let database_url = match &c.database.url_file {
            Some(p) => read_secret(p).map_err(|e| loaded.invalid("database.url_file", e))?,
            None => c.database.url.clone(),
        };
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("mysql:")
            || database_url.starts_with("mariadb:"))
        {
            return Err(loaded.invalid("database.url", "expected sqlite://… or mysql://…"));
        }
        let ldap_password = match &c.ldap.bind_password_file {
            Some(p) => read_secret(p).map_err(|e| loaded.invalid("ldap.bind_password_file", e))?,
            None => c.ldap.bind_password.clone(),
        };
        let smtp_password = match &c.mail.password_file {
            Some(p) => read_secret(p).map_err(|e| loaded.invalid("mail.password_file", e))?,
            None => c.mail.password.clone(),
        };
        let key = match &c.tokens.secret_file {
            Some(p) => read_secret(p).map_err(|e| loaded.invalid("tokens.secret_file", e))?,
            None => c.tokens.secret.clone(),
        };
        if key.len() < 32 {
            return Err(loaded.invalid(
                if c.tokens.secret_file.is_some() { "tokens.secret_file" } else { "tokens.secret" },
                "the token key must be set and at least 32 characters long (e.g. `openssl rand -hex 32`)",
            ));
        }
        let base = url::Url::parse(&c.http.public_base_url)
            .map_err(|e| loaded.invalid("http.public_base_url", format!("not a URL: {e}")))?;
        if base.host_str().is_none() || !matches!(base.scheme(), "http" | "https") {
            return Err(loaded.invalid("http.public_base_url", "expected http(s)://host[:port]"));
        }
        if c.tokens.activation_days < 1 {
            return Err(loaded.invalid("tokens.activation_days", "must be at least 1"));
        }
        if c.tokens.reset_hours < 1 {
            return Err(loaded.invalid("tokens.reset_hours", "must be at least 1"));
        }
        if c.http.session_days < 1 {
            return Err(loaded.invalid("http.session_days", "must be at least 1"));
        }
        if c.signup.min_password_length < 8 {
            return Err(loaded.invalid("signup.min_password_length", "must be at least 8"));
        }
        if c.signup.min_password_score > 4 {
            return Err(
                loaded.invalid("signup.min_password_score", "must be 0–4 (zxcvbn's scores)")
            );
        }
        if let Some(bad) = c
            .signup
            .reserved_names
            .iter()
            .find(|n| n.trim().is_empty() || n.chars().count() > 85)
        {
            return Err(loaded.invalid(
                "signup.reserved_names",
                format!("{bad:?}: entries must be non-empty names of at most 85 characters"),
            ));
        }
        for (key, value) in [
            (
                "rate_limit.signup_per_ip_per_hour",
                c.rate_limit.signup_per_ip_per_hour,
            ),
            (
                "rate_limit.login_per_ip_per_minute",
                c.rate_limit.login_per_ip_per_minute,
            ),
            (
                "rate_limit.login_per_account_per_minute",
                c.rate_limit.login_per_account_per_minute,
            ),
            (
                "rate_limit.check_per_ip_per_minute",
                c.rate_limit.check_per_ip_per_minute,
            ),
        ] {
            if value == 0 {
                return Err(loaded.invalid(key, "must be at least 1"));
            }
        }
        if c.mail.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(loaded.invalid("mail.from", "not a mail address"));
        }
        for r in &c.mail.admin_recipients {
            if r.parse::<lettre::message::Mailbox>().is_err() {
                return Err(loaded.invalid(
                    "mail.admin_recipients",
                    format!("{r:?} is not a mail address"),
                ));
            }
        }
        validate_blocklist(loaded)?;
        Ok(Secrets {
            database_url,
            ldap_password,
            token_key: key.into_bytes(),
            smtp_password,
        })
    }

    /// The accepted `Host` names, lower-cased.
    pub fn allowed_hosts(&self) -> Vec<String> {
        if !self.http.allowed_hosts.is_empty() {
            return self
                .http
                .allowed_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect();
        }
        url::Url::parse(&self.http.public_base_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
            .into_iter()
            .collect()
    }
}
