//! rq-worker's configuration: `[redis]`, `[worker]` (with `[[worker.recurring]]`),
//! `[admin]`, `[log]`, `[mail]`.
//!
//! Loaded from a TOML file, then `FORGE_RQ_WORKER_<SECTION>__<KEY>`
//! environment variables, then flags. Application sections (the identity
//! app's `[idm]`) are added here as optional fields with defaults, so an
//! existing file stays valid.

use forge_core::config::{ConfigError, ConfigSource, Loaded};
use forge_core::redis::RedisSettings;
use forge_core::telemetry::LogSettings;
use forge_rq::WorkerSettings;
use serde::{Deserialize, Serialize};

/// Environment variable prefix.
pub const ENV_PREFIX: &str = "FORGE_RQ_WORKER";

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where Redis is.
    pub redis: RedisSettings,
    /// Queues, concurrency, timeouts, reliability knobs, recurring jobs.
    pub worker: WorkerSettings,
    /// The admin listener.
    pub admin: AdminSettings,
    /// Logging.
    pub log: LogSettings,
    /// SMTP for the `forge.send_mail` built-in.
    pub mail: MailSettings,
    /// The identity app's jobs (`idm.*`), when set.
    pub idm: IdmSettings,
}

/// `[idm]`: run the identity app's job handlers (`idm_web::jobs`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdmSettings {
    /// idm-web's configuration file (database, LDAP, mail, tokens, Redis);
    /// unset: the `idm.*` handlers are not registered.
    pub config: Option<std::path::PathBuf>,
}

/// `[admin]`: `/healthz`, `/status`, `/metrics`, `/log-filter`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// Listen address; empty disables the admin listener.
    pub listen: String,
    /// File holding the admin token that `PUT /log-filter` needs
    /// (`Authorization: Bearer …`). Unset: it is refused. Read at start.
    pub token_file: Option<std::path::PathBuf>,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            listen: "127.0.0.1:9181".into(),
            token_file: None,
        }
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MailTls {
    /// Plain SMTP (a local relay).
    #[default]
    None,
    /// STARTTLS, required.
    Starttls,
    /// Implicit TLS (port 465).
    Tls,
}

/// `[mail]`: the SMTP relay the `forge.send_mail` job uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailSettings {
    /// Relay host.
    pub smtp_host: String,
    /// Relay port.
    pub smtp_port: u16,
    /// Transport security.
    pub tls: MailTls,
    /// Sender used when a job gives none.
    pub from: String,
    /// SMTP user (optional).
    pub username: Option<String>,
    /// SMTP password (optional; prefer the environment variable).
    pub password: Option<String>,
    /// Timeout of one SMTP exchange, seconds.
    pub timeout_secs: u64,
}

impl Default for MailSettings {
    fn default() -> Self {
        MailSettings {
            smtp_host: "localhost".into(),
            smtp_port: 25,
            tls: MailTls::None,
            from: "forge@localhost".into(),
            username: None,
            password: None,
            timeout_secs: 30,
        }
    }
}

impl Config {
    /// Loads and validates.
    pub fn load(source: &ConfigSource) -> Result<Loaded<Config>, ConfigError> {
        let loaded: Loaded<Config> = source.load()?;
        if let Err((key, reason)) = loaded.config.worker.validate() {
            return Err(loaded.invalid(key, reason));
        }
        if loaded
            .config
            .mail
            .from
            .parse::<lettre::message::Mailbox>()
            .is_err()
        {
            return Err(loaded.invalid("mail.from", "not an e-mail address"));
        }
        if !loaded.config.admin.listen.is_empty()
            && loaded
                .config
                .admin
                .listen
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            return Err(loaded.invalid("admin.listen", "expected host:port (an IP address)"));
        }
        if let Some(file) = &loaded.config.admin.token_file
            && let Err(e) = forge_core::admin::AdminToken::from_file(file)
        {
            return Err(loaded.invalid("admin.token_file", e));
        }
        Ok(loaded)
    }
}
