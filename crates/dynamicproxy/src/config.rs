//! dynamicproxy's configuration: the TOML file, `FORGE_PROXY_…` environment
//! overrides and command-line flags, loaded through
//! [`forge_core::ConfigSource`].
//!
//! Every key is documented in `docs/dynamicproxy.md`. The request-handling
//! part ([`Config::settings`]) is reloaded on `SIGHUP`; listener addresses,
//! Redis and route-sync settings take effect at start.

use std::collections::BTreeMap;
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
    /// (`--listen-admin`). Loopback by default: exposing it (for the monitor's
    /// `/list`, Prometheus) is a deliberate setting.
    pub listen_admin: String,
    /// File holding the admin token that `PUT /log-filter` and
    /// `/list?backends=1` need (`Authorization: Bearer …`). Unset: those are
    /// refused. Read at start.
    pub admin_token_file: Option<PathBuf>,
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
    /// Per-client rate limit and User-Agent / Referer / IP blocks.
    pub limits: LimitSettings,
    /// Answer every request (except `/.well-known/healthz`) with the 503
    /// maintenance page.
    pub maintenance: bool,
    /// The proxy's own error pages, `/favicon.ico` and `/robots.txt`.
    pub pages: PageSettings,
    /// Headers set on every response, replacing the backend's own; an empty
    /// value removes the header.
    pub response_headers: BTreeMap<String, String>,
    /// The per-request access log.
    pub access_log: AccessLogSettings,
    /// What one tool's route patterns may cost (the same `[route_budget]`
    /// as proxylistener's); entries over it in Redis are ignored and
    /// counted. Restart.
    pub route_budget: forge_core::schema::PatternBudget,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen_http: "0.0.0.0:80".into(),
            listen_admin: "127.0.0.1:8081".into(),
            admin_token_file: None,
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
            limits: LimitSettings::default(),
            maintenance: false,
            pages: PageSettings::default(),
            response_headers: BTreeMap::from([(
                "Permissions-Policy".to_owned(),
                "browsing-topics=()".to_owned(),
            )]),
            access_log: AccessLogSettings::default(),
            route_budget: Default::default(),
        }
    }
}

/// Per-client limits and blocks (all reloadable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Requests per second each client address may make on average; 0
    /// disables the rate limit.
    pub rate_per_second: u32,
    /// Requests a client may make at once beyond the average.
    pub burst: u32,
    /// Client addresses tracked by the rate limiter at most; past it idle
    /// ones are dropped, and if that is not enough every client starts
    /// afresh (memory stays bounded).
    pub max_tracked_clients: usize,
    /// Refuse requests without a (non-empty) `User-Agent` with 403.
    pub require_user_agent: bool,
    /// `User-Agent` regexes (unanchored) answered with 403.
    pub block_user_agents: Vec<String>,
    /// `Referer` regexes (unanchored) answered with 403.
    pub block_referers: Vec<String>,
    /// Banned client addresses or CIDR networks (`192.0.2.7`,
    /// `198.51.100.0/24`, `2001:db8::/32`), answered with the 403 page.
    pub banned_ips: Vec<String>,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            rate_per_second: 100,
            burst: 100,
            max_tracked_clients: 100_000,
            require_user_agent: true,
            block_user_agents: Vec::new(),
            block_referers: Vec::new(),
            banned_ips: Vec::new(),
        }
    }
}

/// The proxy's own pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PageSettings {
    /// Directory with `<status>.html` (400, 403, 404, 429, 502, 503, 504),
    /// `favicon.ico` and `robots.txt`; files missing there fall back to
    /// built-in ones. Read at start and on reload.
    pub dir: Option<PathBuf>,
}

/// When to write an access log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogMode {
    /// No access log.
    Off,
    /// One line per request.
    On,
    /// A line for a random `access_log.sample_rate` share of requests.
    Sampled,
}

/// The access log: `tracing` events under target `dynamicproxy::access`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessLogSettings {
    /// `off`, `on` or `sampled`.
    pub mode: AccessLogMode,
    /// Share of requests logged with `mode = "sampled"`, 0.0–1.0.
    pub sample_rate: f64,
}

impl AccessLogSettings {
    /// Whether this request gets a log line.
    pub fn wanted(&self) -> bool {
        match self.mode {
            AccessLogMode::Off => false,
            AccessLogMode::On => true,
            AccessLogMode::Sampled => rand::random::<f64>() < self.sample_rate,
        }
    }
}

impl Default for AccessLogSettings {
    fn default() -> Self {
        AccessLogSettings {
            mode: AccessLogMode::Off,
            sample_rate: 0.01,
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
    /// Time a backend has to send its response headers, ms; past it the
    /// client gets the 504 page. Reloadable.
    pub response_timeout_ms: u64,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            connect_timeout_ms: 3000,
            idle_timeout_ms: 60_000,
            max_idle_per_backend: 64,
            response_timeout_ms: 3_600_000,
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
    /// Client connections open at once at most (both listeners each); past
    /// it new connections wait in the listen backlog.
    pub max_connections: usize,
    /// An upgraded (WebSocket) connection with no byte either way for this
    /// long is closed, s. Reloadable (for new upgrades).
    pub upgrade_idle_timeout_s: u64,
    /// Worker threads serving client connections, each with its own
    /// single-threaded runtime and backend pool; 0: one per CPU.
    pub workers: usize,
    /// A connection with no request in flight is closed this long after
    /// its last response, ms (idle keep-alive and HTTP/2 connections). The
    /// first request must be complete within `header_read_timeout_ms` of
    /// accept.
    pub idle_timeout_ms: u64,
    /// Largest request head (request line and header fields), bytes;
    /// larger ones get 431 (HTTP/1) and the connection is closed.
    pub max_head_bytes: usize,
    /// Longest request line, bytes; longer ones get 414.
    pub max_request_line_bytes: usize,
    /// Time a client has to send the next piece of a request body, ms;
    /// past it the request is answered 408 (or, once the backend answered,
    /// aborted). Reloadable.
    pub body_read_timeout_ms: u64,
    /// Request bodies up to this size are read whole before the backend is
    /// contacted (a slow client then never holds a backend), bytes; larger
    /// ones stream after this much. Reloadable.
    pub buffer_body_bytes: usize,
}

impl ServerSettings {
    /// The request-head size limits.
    pub fn head_limits(&self) -> crate::framing::HeadLimits {
        crate::framing::HeadLimits {
            head: self.max_head_bytes,
            request_line: self.max_request_line_bytes,
        }
    }

    /// How many worker threads to start: `workers`, or one per CPU.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            n => n,
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            header_read_timeout_ms: 30_000,
            drain_timeout_ms: 30_000,
            max_connections: 16_384,
            upgrade_idle_timeout_s: 3600,
            workers: 0,
            idle_timeout_ms: 60_000,
            max_head_bytes: 32 * 1024,
            max_request_line_bytes: 8 * 1024,
            body_read_timeout_ms: 60_000,
            buffer_body_bytes: 64 * 1024,
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
    /// Route patterns are matched against at most this many leading bytes
    /// of a request path, so a tool's patterns cost a bounded amount of
    /// work per request, whatever the path's length.
    pub max_match_path_bytes: usize,
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
            max_match_path_bytes: 1024,
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
    /// Rate limit and blocks.
    pub guard: crate::guard::Guard,
    /// Maintenance switch.
    pub maintenance: bool,
    /// Error pages, favicon, robots.txt.
    pub pages: Arc<crate::pages::Pages>,
    /// Set on every response.
    pub response_headers: Vec<(http::HeaderName, Option<http::HeaderValue>)>,
    /// Access log.
    pub access_log: AccessLogSettings,
    /// Idle timeout of upgraded connections.
    pub upgrade_idle_timeout: Duration,
    /// Time to a backend's response headers.
    pub response_timeout: Duration,
    /// Time between pieces of a request body.
    pub body_read_timeout: Duration,
    /// Request bodies up to this size are read before the backend is asked.
    pub buffer_body_bytes: usize,
}

impl Config {
    /// Whether `new` changes settings that take effect only at a restart
    /// (listeners, admin token, workers, Redis, route sync).
    pub fn changes_at_restart(&self, new: &Config) -> bool {
        new.redis != self.redis
            || new.routes != self.routes
            || new.listen_http != self.listen_http
            || new.listen_https != self.listen_https
            || new.listen_admin != self.listen_admin
            || new.admin_token_file != self.admin_token_file
            || new.server.workers != self.server.workers
    }

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
        let guard = crate::guard::Guard::new(&self.limits)?;
        let pages = Arc::new(crate::pages::Pages::load(self.pages.dir.as_deref())?);
        let mut response_headers = Vec::new();
        for (k, v) in &self.response_headers {
            let name = http::HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| format!("response_headers: {k:?}: {e}"))?;
            let value = if v.is_empty() {
                None
            } else {
                Some(
                    http::HeaderValue::from_str(v)
                        .map_err(|e| format!("response_headers: {k:?} = {v:?}: {e}"))?,
                )
            };
            response_headers.push((name, value));
        }
        if !(0.0..=1.0).contains(&self.access_log.sample_rate) {
            return Err("access_log.sample_rate: must be between 0.0 and 1.0".into());
        }
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
            guard,
            maintenance: self.maintenance,
            pages,
            response_headers,
            access_log: self.access_log.clone(),
            upgrade_idle_timeout: Duration::from_secs(self.server.upgrade_idle_timeout_s.max(1)),
            response_timeout: Duration::from_millis(self.upstream.response_timeout_ms.max(1)),
            body_read_timeout: Duration::from_millis(self.server.body_read_timeout_ms.max(1)),
            buffer_body_bytes: self.server.buffer_body_bytes,
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
        if let Some(file) = &c.admin_token_file
            && let Err(e) = forge_core::admin::AdminToken::from_file(file)
        {
            return Err(loaded.invalid("admin_token_file", e));
        }
        if let Some(a) = &c.listen_https {
            if let Err(e) = a.parse::<std::net::SocketAddr>() {
                return Err(loaded.invalid("listen_https", format!("{a:?}: {e}")));
            }
            if c.tls.dir.is_none() {
                return Err(loaded.invalid("listen_https", "needs tls.dir (--tls-dir)"));
            }
        }
        if c.server.workers > 1024 {
            return Err(loaded.invalid(
                "server.workers",
                format!(
                    "{} worker threads; at most 1024 (0: one per CPU)",
                    c.server.workers
                ),
            ));
        }
        if !(64..=65_536).contains(&c.routes.max_match_path_bytes) {
            return Err(loaded.invalid(
                "routes.max_match_path_bytes",
                format!(
                    "{} bytes; between 64 and 65536",
                    c.routes.max_match_path_bytes
                ),
            ));
        }
        if c.server.max_head_bytes < 1024 {
            return Err(loaded.invalid(
                "server.max_head_bytes",
                format!("{} bytes; at least 1024", c.server.max_head_bytes),
            ));
        }
        if c.server.max_request_line_bytes < 256
            || c.server.max_request_line_bytes > c.server.max_head_bytes
        {
            return Err(loaded.invalid(
                "server.max_request_line_bytes",
                format!(
                    "{} bytes; between 256 and server.max_head_bytes ({})",
                    c.server.max_request_line_bytes, c.server.max_head_bytes
                ),
            ));
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
            // Errors name their key first ("limits.banned_ips: …").
            let key = match e.split_once(':') {
                Some((k, _)) if !k.contains(' ') => k.to_owned(),
                _ => "default_upstream".to_owned(),
            };
            loaded.invalid(&key, e)
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
        let l = forge_core::ConfigSource::new(Some(p.clone()), "X_NONE")
            .load::<Config>()
            .unwrap();
        let e = Config::validate(&l).unwrap_err().to_string();
        assert!(e.contains("p.toml:1"), "{e}");
        std::fs::write(
            &p,
            "default_upstream = \"http://x:1\"\n[limits]\nbanned_ips = [\"10.0.0.0/33\"]\n",
        )
        .unwrap();
        let l = forge_core::ConfigSource::new(Some(p.clone()), "X_NONE")
            .load::<Config>()
            .unwrap();
        let e = Config::validate(&l).unwrap_err().to_string();
        assert!(e.contains("p.toml:3") && e.contains("banned_ips"), "{e}");
        std::fs::write(
            &p,
            "default_upstream = \"http://x:1\"\n[limits]\nblock_user_agents = [\"(\"]\n",
        )
        .unwrap();
        let l = forge_core::ConfigSource::new(Some(p), "X_NONE")
            .load::<Config>()
            .unwrap();
        let e = Config::validate(&l).unwrap_err().to_string();
        assert!(e.contains("p.toml:3"), "{e}");
    }
}
