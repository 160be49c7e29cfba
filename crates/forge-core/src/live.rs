//! Live state: where registrations go and which Redis is authoritative.
//!
//! Today this is one file, `/etc/active-proxy`, holding the host name of the
//! active proxy (empty = registration disabled), rendered by Puppet. forge
//! reads that file unchanged, and also a richer TOML form (`live.toml`) that
//! lists *every* proxy host that accepts registrations and the Redis
//! endpoints (Sentinels), so that a failover needs no Puppet run:
//!
//! ```toml
//! # /etc/forge/live.toml
//! registration_hosts = ["proxy-01.example.org:8282", "proxy-02.example.org:8282"]
//! [redis]
//! sentinels = ["proxy-01.example.org:26379", "proxy-02.example.org:26379"]
//! ```
//!
//! [`LiveState::load`] picks the format by extension (`.toml` = rich). Both are
//! reloadable with [`crate::reload::Reloadable`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, ConfigSource};
use crate::redis::RedisSettings;

/// The default registration port of proxylistener.
pub const DEFAULT_REGISTRATION_PORT: u16 = 8282;

/// The live state a host needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct LiveState {
    /// Registration endpoints to try in order (`host[:port]`); empty means
    /// registration is disabled.
    pub registration_hosts: Vec<String>,
    /// Where Redis is (only in the rich form).
    pub redis: Option<RedisSettings>,
}

/// Why a live-state file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LiveStateError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The legacy file does not hold one host name.
    #[error("{path}:{line}: {reason}")]
    BadActiveProxy {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The TOML form is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl LiveState {
    /// Whether registration is disabled.
    pub fn registration_disabled(&self) -> bool {
        self.registration_hosts.is_empty()
    }

    /// Registration endpoints as `host:port`, the default port added.
    pub fn registration_endpoints(&self) -> Vec<String> {
        self.registration_hosts
            .iter()
            .map(|h| {
                if has_port(h) {
                    h.clone()
                } else {
                    format!("{h}:{DEFAULT_REGISTRATION_PORT}")
                }
            })
            .collect()
    }

    /// Reads either form; `.toml` files are the rich form.
    pub fn load(path: &Path) -> Result<Self, LiveStateError> {
        if path.extension().is_some_and(|e| e == "toml") {
            let loaded = ConfigSource::new(Some(path.to_owned()), "").load::<LiveState>()?;
            for (i, h) in loaded.config.registration_hosts.iter().enumerate() {
                if let Err(reason) = validate_host(h) {
                    return Err(loaded
                        .invalid("registration_hosts", format!("entry {i}: {reason}"))
                        .into());
                }
            }
            return Ok(loaded.config);
        }
        let text = std::fs::read_to_string(path).map_err(|source| LiveStateError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse_active_proxy(path, &text)
    }

    /// Parses today's `/etc/active-proxy`: one host name, or nothing.
    pub fn parse_active_proxy(path: &Path, text: &str) -> Result<Self, LiveStateError> {
        let lines: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
            .collect();
        match lines.as_slice() {
            [] => Ok(LiveState::default()),
            [(line, host)] => {
                validate_host(host).map_err(|reason| LiveStateError::BadActiveProxy {
                    path: path.to_owned(),
                    line: *line,
                    reason,
                })?;
                Ok(LiveState {
                    registration_hosts: vec![(*host).to_owned()],
                    redis: None,
                })
            }
            [_, (line, _), ..] => Err(LiveStateError::BadActiveProxy {
                path: path.to_owned(),
                line: *line,
                reason: "expected a single host name".into(),
            }),
        }
    }
}

fn has_port(h: &str) -> bool {
    match h.rsplit_once(':') {
        Some((host, p)) => {
            !host.ends_with(':')
                && p.parse::<u16>().is_ok()
                && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    }
}

fn validate_host(h: &str) -> Result<(), String> {
    let host = if has_port(h) {
        h.rsplit_once(':').map(|(h, _)| h).unwrap_or(h)
    } else {
        h
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("{h:?} is not a host name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_active_proxy() {
        let p = Path::new("/etc/active-proxy");
        let s = LiveState::parse_active_proxy(p, "proxy-01.eqiad.wmflabs\n").unwrap();
        assert_eq!(
            s.registration_endpoints(),
            vec!["proxy-01.eqiad.wmflabs:8282"]
        );
        let s = LiveState::parse_active_proxy(p, "\n   \n").unwrap();
        assert!(s.registration_disabled());
        let e = LiveState::parse_active_proxy(p, "a\nb\n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "/etc/active-proxy:2: expected a single host name");
        let e = LiveState::parse_active_proxy(p, "not a host!\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/etc/active-proxy:1:"), "{e}");
        let s = LiveState::parse_active_proxy(p, "10.0.0.1:9000").unwrap();
        assert_eq!(s.registration_endpoints(), vec!["10.0.0.1:9000"]);
    }

    #[test]
    fn rich_form() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.toml");
        std::fs::write(
            &path,
            "registration_hosts = [\"a.example\", \"b.example:9\"]\n[redis]\nsentinels = [\"a.example:26379\"]\n",
        )
        .unwrap();
        let s = LiveState::load(&path).unwrap();
        assert_eq!(
            s.registration_endpoints(),
            vec!["a.example:8282", "b.example:9"]
        );
        assert_eq!(s.redis.unwrap().sentinels, vec!["a.example:26379"]);
        std::fs::write(&path, "registration_hosts = [\"bad host\"]\n").unwrap();
        let e = LiveState::load(&path).unwrap_err().to_string();
        assert!(e.contains("live.toml:1"), "{e}");
    }
}
