//! proxylistener's configuration: the TOML file, `FORGE_PROXYLISTENER_…`
//! environment overrides and flags, loaded through [`forge_core::ConfigSource`].
//!
//! Every key is documented in `docs/proxylistener.md`. Sections:
//! `[ident]` (how clients are authenticated), `[policy]` (what a tool may
//! register), `[route_budget]` (what a tool's patterns may cost),
//! `[ownership]` (checking who serves a backend), `[limits]` (line length,
//! timeouts, connections),
//! `[durability]` (replica acknowledgement), `[redis]` and `[log]`.

use std::net::IpAddr;
use std::time::Duration;

use forge_core::PatternBudget;
use forge_core::config::{ConfigError, ConfigSource, Loaded};
use forge_core::redis::{MinReplicas, RedisSettings};
use forge_core::telemetry::LogSettings;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Prefix of environment overrides (`FORGE_PROXYLISTENER_IDENT__PORT=1113`).
pub const ENV_PREFIX: &str = "FORGE_PROXYLISTENER";

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the registration listener.
    pub listen: String,
    /// Address of the admin listener (`/healthz`, `/status`, `/metrics`,
    /// `/log-filter`).
    pub listen_admin: String,
    /// File holding the admin token that `PUT /log-filter` needs
    /// (`Authorization: Bearer …`). Unset: it is refused. Read at start.
    pub admin_token_file: Option<std::path::PathBuf>,
    /// The domain of canonical names: `registerCanonical` stores
    /// `<tool>.<canonical_domain>` in `redirect:<tool>`.
    pub canonical_domain: String,
    /// The project whose tool accounts may register: ident must name the
    /// user `<project>.<tool>`.
    pub project: String,
    /// How clients are authenticated.
    pub ident: IdentSettings,
    /// What a tool may register.
    pub policy: Policy,
    /// What a tool's route patterns may cost (per pattern, per tool).
    pub route_budget: PatternBudget,
    /// Checking that a backend is served by the tool that registers it.
    pub ownership: Ownership,
    /// Bounds on what a client may send and how long it may take.
    pub limits: Limits,
    /// Replica acknowledgement of writes.
    pub durability: Durability,
    /// Where Redis is.
    pub redis: RedisSettings,
    /// Logging.
    pub log: LogSettings,
    /// How long a graceful shutdown waits for requests in flight, ms.
    pub shutdown_drain_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "0.0.0.0:8282".into(),
            listen_admin: "127.0.0.1:9282".into(),
            admin_token_file: None,
            canonical_domain: "toolforge.org".into(),
            project: "tools".into(),
            ident: IdentSettings::default(),
            policy: Policy::default(),
            route_budget: PatternBudget::default(),
            ownership: Ownership::default(),
            limits: Limits::default(),
            durability: Durability::default(),
            redis: RedisSettings::default(),
            log: LogSettings::default(),
            shutdown_drain_ms: 10_000,
        }
    }
}

/// The `[ident]` section: RFC 1413 look-ups of the connecting user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentSettings {
    /// The port the identd listens on, on the client's host (113 by RFC 1413;
    /// tests run their own).
    pub port: u16,
    /// How long connecting to the identd may take, ms.
    pub connect_timeout_ms: u64,
    /// How long the identd may take to answer once connected, ms.
    pub read_timeout_ms: u64,
}

impl Default for IdentSettings {
    fn default() -> Self {
        IdentSettings {
            port: 113,
            connect_timeout_ms: 1000,
            read_timeout_ms: 2000,
        }
    }
}

impl IdentSettings {
    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.max(1))
    }
    /// The read timeout.
    pub fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.read_timeout_ms.max(1))
    }
}

/// The `[policy]` section: what a backend URL may point at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Lowest backend port accepted.
    pub min_backend_port: u16,
    /// Highest backend port accepted.
    pub max_backend_port: u16,
    /// Networks a backend may be in even when it is not the registering
    /// client's own address (e.g. a pod network behind a node's NAT).
    /// Empty (the default): a backend must be the client itself.
    pub backend_networks: Vec<IpNet>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            min_backend_port: 1024,
            max_backend_port: 65535,
            backend_networks: Vec::new(),
        }
    }
}

impl Policy {
    /// Whether a backend at `backend` may be registered (or unregistered) by
    /// a client connecting from `peer`.
    pub fn backend_host_allowed(&self, peer: IpAddr, backend: IpAddr) -> bool {
        canonical_ip(peer) == canonical_ip(backend)
            || self
                .backend_networks
                .iter()
                .any(|n| n.contains(&canonical_ip(backend)))
    }
}

/// The `[ownership]` section: a backend must be served by the registering
/// tool. proxylistener connects to the backend and asks the backend host's
/// identd who owns the server end of that connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ownership {
    /// Whether backends are checked at all.
    pub verify: bool,
    /// How long a backend that is not listening at registration time has to
    /// start listening before its route is removed, ms.
    pub within_ms: u64,
    /// How often such a backend is tried again, ms.
    pub retry_interval_ms: u64,
    /// Connecting to the backend, ms.
    pub connect_timeout_ms: u64,
    /// The identd port on backend hosts; unset: `ident.port`.
    pub ident_port: Option<u16>,
    /// Registrations waiting for their backend to listen, at most; beyond,
    /// registrations of backends that don't listen yet are refused.
    pub max_pending: usize,
    /// How long the owner a probe named for a backend is remembered, ms:
    /// within it the same tool registering the same backend is not probed
    /// again. 0: every registration is probed.
    pub verified_ttl_ms: u64,
    /// Backends remembered at most (beyond, new verdicts aren't kept).
    pub max_verified: usize,
}

impl Default for Ownership {
    fn default() -> Self {
        Ownership {
            verify: true,
            within_ms: 60_000,
            retry_interval_ms: 500,
            connect_timeout_ms: 1000,
            ident_port: None,
            max_pending: 4096,
            verified_ttl_ms: 60_000,
            max_verified: 65_536,
        }
    }
}

impl Ownership {
    /// The bound for a backend to start listening.
    pub fn within(&self) -> Duration {
        Duration::from_millis(self.within_ms)
    }
    /// The pause between attempts.
    pub fn retry_interval(&self) -> Duration {
        Duration::from_millis(self.retry_interval_ms.max(1))
    }
    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.max(1))
    }
    /// How long a probe's verdict is remembered (zero: not at all).
    pub fn verified_ttl(&self) -> Duration {
        Duration::from_millis(self.verified_ttl_ms)
    }
}

/// An address with IPv4-mapped IPv6 (`::ffff:10.0.0.1`) turned into IPv4,
/// so a dual-stack listener compares addresses as clients write them.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The `[limits]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Longest request line accepted, bytes (without the line end).
    pub max_line_bytes: usize,
    /// How long a client may take to send its whole request, ms.
    pub request_timeout_ms: u64,
    /// Connections handled at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// The registration listener's accept queue (`listen(2)` backlog):
    /// connections the kernel completes before the daemon accepts them. A
    /// full queue drops new connections' SYNs, which clients resend only
    /// after a second. The kernel caps it at `net.core.somaxconn`. Read at
    /// start.
    pub listen_backlog: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_bytes: 1024,
            request_timeout_ms: 5000,
            max_connections: 1024,
            listen_backlog: 1024,
        }
    }
}

impl Limits {
    /// The request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.max(1))
    }
}

/// The `[durability]` section: how many replicas must have a write before
/// the client hears `ok`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Durability {
    /// Replicas that must acknowledge a write (`WAIT`) before `ok`: a
    /// number (0 = the master's confirmation is enough), or `"auto"` (the
    /// default): 1 when the master has replicas, 0 only when it has none.
    pub min_replicas: MinReplicas,
    /// How long to wait for them, ms.
    pub timeout_ms: u64,
    /// After a Sentinel master switch (or a write that reached a server
    /// that is no longer the master), how long a registration keeps
    /// retrying on the new master before it answers `fail:`, ms.
    pub switch_retry_ms: u64,
}

impl Default for Durability {
    fn default() -> Self {
        Durability {
            min_replicas: MinReplicas::Auto,
            timeout_ms: 1000,
            switch_retry_ms: 3000,
        }
    }
}

impl Config {
    /// Loads and validates the configuration.
    pub fn load(source: &ConfigSource) -> Result<Loaded<Config>, ConfigError> {
        let loaded: Loaded<Config> = source.load()?;
        loaded.config.validate(&loaded)?;
        Ok(loaded)
    }

    /// Semantic checks that serde can't do; errors name file:line.
    pub fn validate(&self, loaded: &Loaded<Config>) -> Result<(), ConfigError> {
        let p = &self.policy;
        if p.min_backend_port == 0 {
            return Err(loaded.invalid("policy.min_backend_port", "must be at least 1"));
        }
        if p.min_backend_port > p.max_backend_port {
            return Err(loaded.invalid(
                "policy.max_backend_port",
                format!(
                    "max_backend_port {} is below min_backend_port {}",
                    p.max_backend_port, p.min_backend_port
                ),
            ));
        }
        if self.limits.max_line_bytes < 64 || self.limits.max_line_bytes > 65536 {
            return Err(loaded.invalid(
                "limits.max_line_bytes",
                "must be between 64 and 65536 (a backend URL alone may take 512)",
            ));
        }
        let o = &self.ownership;
        if !(100..=3_600_000).contains(&o.within_ms) {
            return Err(loaded.invalid(
                "ownership.within_ms",
                "must be between 100 and 3600000 (an hour)",
            ));
        }
        if o.retry_interval_ms < 10 || o.retry_interval_ms > o.within_ms {
            return Err(loaded.invalid(
                "ownership.retry_interval_ms",
                "must be at least 10 and at most ownership.within_ms",
            ));
        }
        if o.connect_timeout_ms == 0 || o.connect_timeout_ms > 60_000 {
            return Err(loaded.invalid(
                "ownership.connect_timeout_ms",
                "must be between 1 and 60000",
            ));
        }
        if o.ident_port == Some(0) {
            return Err(loaded.invalid("ownership.ident_port", "must not be 0"));
        }
        if o.max_pending == 0 {
            return Err(loaded.invalid("ownership.max_pending", "must be at least 1"));
        }
        if o.verified_ttl_ms > 3_600_000 {
            return Err(loaded.invalid(
                "ownership.verified_ttl_ms",
                "must be at most 3600000 (an hour)",
            ));
        }
        if o.max_verified == 0 {
            return Err(loaded.invalid("ownership.max_verified", "must be at least 1"));
        }
        if self.durability.switch_retry_ms > 60_000 {
            return Err(loaded.invalid(
                "durability.switch_retry_ms",
                "must be at most 60000 (a client waits that long for its reply)",
            ));
        }
        if self.limits.max_connections == 0 {
            return Err(loaded.invalid("limits.max_connections", "must be at least 1"));
        }
        if !(1..=65_535).contains(&self.limits.listen_backlog) {
            return Err(loaded.invalid("limits.listen_backlog", "must be between 1 and 65535"));
        }
        if self.project.is_empty() || self.project.contains(['.', ' ', ':']) {
            return Err(loaded.invalid(
                "project",
                "must be a non-empty Unix user prefix without '.', ':' or spaces",
            ));
        }
        if forge_core::ToolName::parse(self.canonical_domain.split('.').next().unwrap_or(""))
            .is_err()
            || !self.canonical_domain.contains('.')
        {
            return Err(loaded.invalid(
                "canonical_domain",
                format!("{:?} is not a domain name", self.canonical_domain),
            ));
        }
        if let Err(e) = self.listen.parse::<std::net::SocketAddr>() {
            return Err(loaded.invalid("listen", format!("{:?}: {e}", self.listen)));
        }
        if let Err(e) = self.listen_admin.parse::<std::net::SocketAddr>() {
            return Err(loaded.invalid("listen_admin", format!("{:?}: {e}", self.listen_admin)));
        }
        if let Some(file) = &self.admin_token_file
            && let Err(e) = forge_core::admin::AdminToken::from_file(file)
        {
            return Err(loaded.invalid("admin_token_file", e));
        }
        if let Err(e) = self.redis.fred_config() {
            return Err(loaded.invalid("redis.url", e));
        }
        Ok(())
    }
}
