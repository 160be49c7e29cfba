//! dynamicproxy's configuration: the TOML file, `FORGE_PROXY_…` environment
//! overrides and command-line flags, loaded through
//! [`forge_core::ConfigSource`].
//!
//! Every key is documented in `docs/dynamicproxy.md`. The request-handling
//! part ([`Config::settings`]) is reloaded on `SIGHUP`; listener addresses,
//! Redis and route-sync settings take effect at start.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use forge_core::redis::RedisSettings;
use forge_core::telemetry::LogSettings;
use forge_core::{BackendUrl, ConfigError, Loaded};
use serde::{Deserialize, Serialize};

use crate::table::Backend;

/// Environment prefix of overrides (`FORGE_PROXY_REDIS__URL`, …).
pub const ENV_PREFIX: &str = "FORGE_PROXY";

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the plain-HTTP listener (`--listen-http`).
    pub listen_http: String,
    /// Address of the admin listener: `/list`, `/metrics`, `/healthz`
    /// (`--listen-admin`).
    pub listen_admin: String,
    /// Address of the TLS listener (`--listen-https`); needs `tls.dir`.
    pub listen_https: Option<String>,
    /// TLS termination.
    pub tls: TlsSettings,
    /// Largest request body passed on; larger ones get 413.
    pub max_body_bytes: u64,
    /// Where requests go that match no route (the Kubernetes ingress),
    /// `http://host:port` (`--default-upstream`). Required.
    pub default_upstream: Option<BackendUrl>,
    /// Served domains (`--domain`, repeatable): a host `<tool>.<domain>` is
    /// routed by tool. Empty: every host is routed by its first label.
    pub domains: Vec<String>,
    /// What to do with a host outside every served domain (and without a
    /// `frontend:` entry): `reject` (421) or `default` (default upstream).
    pub outside_domain: OutsideDomain,
    /// Append the client address to `X-Forwarded-For` (off, as today).
    pub forwarded_for: bool,
    /// The pooled HTTP/1.1 client to backends.
    pub upstream: UpstreamSettings,
    /// The client-facing server.
    pub server: ServerSettings,
    /// Keeping the in-memory route table in sync with Redis.
    pub routes: RouteSettings,
    /// The Redis holding `prefix:*` and `frontend:*`.
    pub redis: RedisSettings,
    /// Logging.
    pub log: LogSettings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen_http: "0.0.0.0:80".into(),
            listen_admin: "0.0.0.0:8081".into(),
            listen_https: None,
            tls: TlsSettings::default(),
            max_body_bytes: 128 * 1024 * 1024,
            default_upstream: None,
            domains: Vec::new(),
            outside_domain: OutsideDomain::Reject,
            forwarded_for: false,
            upstream: UpstreamSettings::default(),
            server: ServerSettings::default(),
            routes: RouteSettings::default(),
            redis: RedisSettings::default(),
            log: LogSettings::default(),
        }
    }
}

/// TLS termination settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// Directory of `<name>.crt` + `<name>.key` pairs (`--tls-dir`).
    pub dir: Option<PathBuf>,
    /// With TLS on, answer every plain-HTTP request with
    /// `301 https://<host><uri>`.
    pub redirect_http: bool,
    /// `Strict-Transport-Security: max-age=…` on TLS responses; 0: none.
    pub hsts_max_age_s: u64,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            dir: None,
            redirect_http: true,
            hsts_max_age_s: 31_622_400,
        }
    }
}

/// Handling of hosts outside the served domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutsideDomain {
    /// Answer `421 Misdirected Request`.
    Reject,
    /// Send to the default upstream.
    Default,
}

/// The client to backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamSettings {
    /// TCP connect timeout to a backend, ms; past it the client gets 502.
    pub connect_timeout_ms: u64,
    /// Idle keep-alive connections to a backend are closed after this, ms.
    pub idle_timeout_ms: u64,
    /// Idle keep-alive connections kept per backend.
    pub max_idle_per_backend: usize,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            connect_timeout_ms: 3000,
            idle_timeout_ms: 60_000,
            max_idle_per_backend: 64,
        }
    }
}

/// The client-facing server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Time a client has to send a request's headers, ms (HTTP/1).
    pub header_read_timeout_ms: u64,
    /// Bound on draining in-flight requests at shutdown, ms.
    pub drain_timeout_ms: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            header_read_timeout_ms: 30_000,
            drain_timeout_ms: 30_000,
        }
    }
}

/// What to do at start-up while Redis can't be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Startup {
    /// Accept no proxy connections until the first full load succeeds.
    Wait,
    /// Serve the on-disk snapshot (`routes.snapshot_path`) until Redis answers;
    /// wait when there is no usable snapshot.
    Snapshot,
}

/// Route synchronisation with Redis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteSettings {
    /// Full re-read of every route key, ms; repairs anything notifications
    /// missed (FLUSHALL, a restarted Redis, lost messages).
    pub resync_interval_ms: u64,
    /// Redis liveness check (`PING`), ms. Also bounds how stale `/healthz`
    /// and the table-age metric can be.
    pub health_interval_ms: u64,
    /// Run `CONFIG SET notify-keyspace-events` (adding `Kghsxe` to what is
    /// set) on every connection. Turn off where `CONFIG` is disabled, and set
    /// the flags in redis.conf instead.
    pub configure_notifications: bool,
    /// Start-up behaviour while Redis is unreachable.
    pub startup: Startup,
    /// Where the last good table is written (atomically) and read at start
    /// with `startup = "snapshot"`. Unset: no snapshot.
    pub snapshot_path: Option<PathBuf>,
    /// Read the route table from this Redis (`redis://host:port`, typically
    /// the host's own replica) instead of from `[redis]` (the master, via
    /// Sentinel). Routes are only read, so a replica serves; if it dies the
    /// last table keeps being served. Unset: read where `[redis]` points.
    pub read_url: Option<String>,
}

impl Default for RouteSettings {
    fn default() -> Self {
        RouteSettings {
            resync_interval_ms: 30_000,
            health_interval_ms: 1_000,
            configure_notifications: true,
            startup: Startup::Wait,
            snapshot_path: None,
            read_url: None,
        }
    }
}

impl RouteSettings {
    /// The full-resync period.
    pub fn resync_interval(&self) -> Duration {
        Duration::from_millis(self.resync_interval_ms.max(100))
    }
    /// The liveness-check period.
    pub fn health_interval(&self) -> Duration {
        Duration::from_millis(self.health_interval_ms.max(50))
    }
}

/// The request-handling settings, swapped as a whole on reload.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The default upstream.
    pub default_upstream: BackendUrl,
    /// The default upstream, ready for requests.
    pub default_backend: Arc<Backend>,
    /// Served domains, lower-case, without leading dots.
    pub domains: Vec<String>,
    /// Hosts outside the domains.
    pub outside_domain: OutsideDomain,
    /// Append `X-Forwarded-For`.
    pub forwarded_for: bool,
    /// Redirect plain HTTP to HTTPS (TLS configured and `tls.redirect_http`).
    pub redirect_http: bool,
    /// The HSTS header value for TLS responses.
    pub hsts: Option<http::HeaderValue>,
    /// Request body cap.
    pub max_body_bytes: u64,
}

impl Config {
    /// Checks what serde can't and returns the request-handling settings.
    pub fn settings(&self) -> Result<Settings, String> {
        let default_upstream = self.default_upstream.clone().ok_or_else(|| {
            "default_upstream is required (--default-upstream http://host:port)".to_owned()
        })?;
        if default_upstream.scheme() != "http" {
            return Err("default_upstream must be an http:// URL".into());
        }
        let mut domains = Vec::new();
        for d in &self.domains {
            let d = d.trim().trim_start_matches('.').to_ascii_lowercase();
            if d.is_empty()
                || !d.split('.').all(|l| {
                    !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                })
            {
                return Err(format!("domains: {d:?} is not a domain name"));
            }
            domains.push(d);
        }
        let default_backend = Arc::new(Backend::new(default_upstream.clone())?);
        Ok(Settings {
            default_upstream,
            default_backend,
            domains,
            outside_domain: self.outside_domain,
            forwarded_for: self.forwarded_for,
            redirect_http: self.tls_enabled() && self.tls.redirect_http,
            hsts: (self.tls.hsts_max_age_s > 0)
                .then(|| {
                    http::HeaderValue::from_str(&format!("max-age={}", self.tls.hsts_max_age_s))
                })
                .and_then(Result::ok),
            max_body_bytes: self.max_body_bytes,
        })
    }

    /// Whether TLS is configured (a TLS listener and a certificate directory).
    pub fn tls_enabled(&self) -> bool {
        self.listen_https.is_some() && self.tls.dir.is_some()
    }

    /// Validates a loaded configuration; errors carry file:line.
    pub fn validate(loaded: &Loaded<Config>) -> Result<Settings, ConfigError> {
        let c = &loaded.config;
        if let Err(e) = c.listen_http.parse::<std::net::SocketAddr>() {
            return Err(loaded.invalid("listen_http", format!("{:?}: {e}", c.listen_http)));
        }
        if let Err(e) = c.listen_admin.parse::<std::net::SocketAddr>() {
            return Err(loaded.invalid("listen_admin", format!("{:?}: {e}", c.listen_admin)));
        }
        if let Some(a) = &c.listen_https {
            if let Err(e) = a.parse::<std::net::SocketAddr>() {
                return Err(loaded.invalid("listen_https", format!("{a:?}: {e}")));
            }
            if c.tls.dir.is_none() {
                return Err(loaded.invalid("listen_https", "needs tls.dir (--tls-dir)"));
            }
        }
        if let Err(e) = c.redis.fred_config() {
            return Err(loaded.invalid("redis.url", e));
        }
        if let Some(url) = &c.routes.read_url
            && let Err(e) = forge_core::redis::RedisSettings::for_url(url).fred_config()
        {
            return Err(loaded.invalid("routes.read_url", e));
        }
        if c.routes.startup == Startup::Snapshot && c.routes.snapshot_path.is_none() {
            return Err(loaded.invalid(
                "routes.startup",
                "startup = \"snapshot\" needs routes.snapshot_path",
            ));
        }
        c.settings().map_err(|e| {
            let key = if e.starts_with("domains") {
                "domains"
            } else {
                "default_upstream"
            };
            loaded.invalid(key, e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_a_default_upstream() {
        assert!(Config::default().settings().is_err());
        let c = Config {
            default_upstream: Some(BackendUrl::parse("http://127.0.0.1:9").unwrap()),
            domains: vec![".Toolforge.org".into()],
            ..Default::default()
        };
        let s = c.settings().unwrap();
        assert_eq!(s.domains, vec!["toolforge.org"]);
        let bad = Config {
            domains: vec!["a b".into()],
            ..c
        };
        assert!(bad.settings().is_err());
    }

    #[test]
    fn file_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.toml");
        std::fs::write(
            &p,
            "listen_http = \"0.0.0.0:80\"\ndefault_upstream = \"ftp://x:1\"\n",
        )
        .unwrap();
        let e = forge_core::ConfigSource::new(Some(p.clone()), "X_NONE")
            .load::<Config>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("p.toml:2"), "{e}");
        std::fs::write(
            &p,
            "listen_admin = \"nope\"\ndefault_upstream = \"http://x:1\"\n",
        )
        .unwrap();
        let l = forge_core::ConfigSource::new(Some(p), "X_NONE")
            .load::<Config>()
            .unwrap();
        let e = Config::validate(&l).unwrap_err().to_string();
        assert!(e.contains("p.toml:1"), "{e}");
    }
}
