//! The route table: every `prefix:<tool>` hash and `frontend:<fqdn>` set of
//! Redis, validated, compiled and held in memory as one immutable snapshot.
//!
//! [`Routes`] publishes the current [`RouteTable`] through an `ArcSwap`, so a
//! request's lookup is lock-free; the sync task ([`crate::sync`]) builds a new
//! table on every full load and a patched copy on every key change.
//!
//! ## Routing order (documented in `docs/dynamicproxy.md`)
//!
//! 1. `frontend:<host>` (exact fqdn) — a random member per request;
//! 2. if the host is under a served domain: `prefix:<tool>` (tool = first
//!    label), patterns tried most specific first ([`RoutePattern::specificity`]:
//!    more literal characters first, ties by pattern text); first match wins;
//! 3. `frontend:*.<parent>` — a random member;
//! 4. under a served domain: the default upstream; outside: as configured.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use forge_core::schema::{PatternBudget, escape_controls, strip_port};
use forge_core::{BackendUrl, RoutePattern, SchemaError, ToolName};
use http::uri::{Authority, Scheme};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::config::{OutsideDomain, Settings};

/// A backend ready to receive requests: its URL and the pre-parsed parts of
/// the request URI.
#[derive(Debug)]
pub struct Backend {
    /// The URL as registered.
    pub url: BackendUrl,
    /// `http` / `https`.
    pub scheme: Scheme,
    /// `host:port`.
    pub authority: Authority,
}

impl Backend {
    /// Prepares a backend URL.
    pub fn new(url: BackendUrl) -> Result<Self, String> {
        let scheme = if url.scheme() == "https" {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        let authority = Authority::try_from(url.authority().as_str()).map_err(|e| e.to_string())?;
        Ok(Backend {
            url,
            scheme,
            authority,
        })
    }

    fn parse(raw: &str) -> Result<Self, String> {
        Backend::new(BackendUrl::parse(raw).map_err(|e| e.to_string())?)
    }
}

/// One pattern of a tool and its backend.
#[derive(Debug)]
pub struct Route {
    /// The compiled pattern.
    pub pattern: RoutePattern,
    /// Where matching requests go.
    pub backend: Arc<Backend>,
}

/// A hash field that could not be used, and why.
#[derive(Debug, Clone, Serialize)]
pub struct InvalidEntry {
    /// The field (pattern) as stored.
    pub pattern: String,
    /// The value (backend URL) as stored.
    pub backend: String,
    /// Why it is ignored.
    pub reason: String,
}

/// What one tool's routes may cost the proxy: the route budget (compiled
/// size per pattern, patterns per tool; entries over it are ignored and
/// counted) and how much of a request path patterns are matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLimits {
    /// The budget every tool's patterns are held to.
    pub budget: PatternBudget,
    /// Patterns see at most this many leading bytes of a path, so matching
    /// work per request is bounded whatever the path's length.
    pub max_match_path_bytes: usize,
}

impl Default for RouteLimits {
    fn default() -> Self {
        RouteLimits {
            budget: PatternBudget::default(),
            max_match_path_bytes: 1024,
        }
    }
}

/// The routes of one tool, in match order.
#[derive(Debug, Default)]
pub struct ToolRoutes {
    /// Valid routes, most specific first.
    pub routes: Vec<Route>,
    /// Fields that were ignored.
    pub invalid: Vec<InvalidEntry>,
    /// How many of `invalid` were over the route budget.
    pub over_budget: usize,
}

impl ToolRoutes {
    /// Compiles a `prefix:<tool>` hash. Patterns already in `patterns` are
    /// shared rather than compiled again (most tools use `.*`).
    ///
    /// Entries over `budget` are ignored: patterns that compile larger than
    /// its compiled-size budget, and every field past the patterns-per-tool
    /// budget (in pattern-text order).
    pub fn from_hash(
        hash: &BTreeMap<String, String>,
        patterns: &mut HashMap<String, RoutePattern>,
        budget: &PatternBudget,
    ) -> Self {
        let mut out = ToolRoutes::default();
        for (i, (pattern, backend)) in hash.iter().enumerate() {
            let compiled = if let Err(e) = budget.check_count(i + 1) {
                Err(e)
            } else {
                match patterns.get(pattern.as_str()) {
                    Some(p) => Ok(p.clone()),
                    None => RoutePattern::parse_within(pattern, budget).inspect(|p| {
                        patterns.insert(pattern.clone(), p.clone());
                    }),
                }
            };
            if let Err(
                e @ (SchemaError::PatternOverBudget(_) | SchemaError::TooManyPatterns { .. }),
            ) = &compiled
            {
                out.over_budget += 1;
                tracing::warn!(
                    pattern = %escape_controls(pattern),
                    reason = %e,
                    "route entry over the route budget; ignored"
                );
            }
            let parsed = compiled
                .map_err(|e| e.to_string())
                .and_then(|p| Ok((p, Backend::parse(backend)?)));
            match parsed {
                Ok((pattern, backend)) => out.routes.push(Route {
                    pattern,
                    backend: Arc::new(backend),
                }),
                Err(reason) => out.invalid.push(InvalidEntry {
                    pattern: pattern.clone(),
                    backend: backend.clone(),
                    reason,
                }),
            }
        }
        out.routes
            .sort_by(|a, b| a.pattern.specificity().cmp(&b.pattern.specificity()));
        out
    }

    /// The first route whose pattern matches `path` — its first
    /// `max_path_bytes` bytes (cut at a character boundary).
    pub fn find(&self, path: &str, max_path_bytes: usize) -> Option<&Route> {
        let mut end = path.len().min(max_path_bytes);
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        let path = &path[..end];
        self.routes.iter().find(|r| r.pattern.is_match(path))
    }

    fn raw(&self) -> BTreeMap<String, String> {
        let mut m: BTreeMap<String, String> = self
            .routes
            .iter()
            .map(|r| {
                (
                    r.pattern.as_str().to_owned(),
                    r.backend.url.as_str().to_owned(),
                )
            })
            .collect();
        for i in &self.invalid {
            m.insert(i.pattern.clone(), i.backend.clone());
        }
        m
    }
}

/// The members of one `frontend:<fqdn>` set.
#[derive(Debug, Default)]
pub struct Frontend {
    /// Valid members.
    pub backends: Vec<Arc<Backend>>,
    /// Members that were ignored (as stored).
    pub invalid: Vec<String>,
}

impl Frontend {
    /// Compiles a `frontend:` set.
    pub fn from_members(members: &[String]) -> Self {
        let mut out = Frontend::default();
        let mut members = members.to_vec();
        members.sort();
        for m in members {
            match Backend::parse(&m) {
                Ok(b) => out.backends.push(Arc::new(b)),
                Err(_) => out.invalid.push(m),
            }
        }
        out
    }

    fn pick(&self) -> Option<&Arc<Backend>> {
        match self.backends.len() {
            0 => None,
            1 => self.backends.first(),
            n => self.backends.get(rand::rng().random_range(0..n)),
        }
    }
}

/// Where a request goes, and why.
#[derive(Debug, Clone)]
pub enum Decision {
    /// A route of a tool matched.
    Route(Arc<Backend>),
    /// A `frontend:` set (exact or wildcard) matched.
    Frontend(Arc<Backend>),
    /// No route: the default upstream.
    Miss,
    /// Host outside the served domains, sent to the default upstream.
    OutsideDefault,
    /// Host outside the served domains, refused (421).
    OutsideReject,
}

/// Every route, as of one moment.
#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    /// `prefix:<tool>` by tool name.
    tools: HashMap<Arc<str>, Arc<ToolRoutes>>,
    /// `frontend:<fqdn>` by fqdn (may start with `*.`).
    frontends: HashMap<Arc<str>, Arc<Frontend>>,
    /// Keys in Redis whose name can't be used (e.g. `prefix:Upper`).
    ignored_keys: usize,
    /// Compiled patterns by text, shared by every tool using them.
    patterns: HashMap<String, RoutePattern>,
    /// The route budget and matching bound.
    limits: RouteLimits,
}

impl RouteTable {
    /// Number of tools.
    pub fn tool_count(&self) -> usize {
        self.tools.len()
    }
    /// Number of valid routes of all tools.
    pub fn route_count(&self) -> usize {
        self.tools.values().map(|t| t.routes.len()).sum()
    }
    /// Number of `frontend:` sets.
    pub fn frontend_count(&self) -> usize {
        self.frontends.len()
    }
    /// Number of ignored hash fields, set members and keys.
    pub fn invalid_count(&self) -> usize {
        self.ignored_keys
            + self.tools.values().map(|t| t.invalid.len()).sum::<usize>()
            + self
                .frontends
                .values()
                .map(|f| f.invalid.len())
                .sum::<usize>()
    }

    /// Number of hash fields ignored for being over the route budget.
    pub fn over_budget_count(&self) -> usize {
        self.tools.values().map(|t| t.over_budget).sum()
    }

    /// An empty table holding routes to `limits`.
    pub fn with_limits(limits: RouteLimits) -> Self {
        RouteTable {
            limits,
            ..Default::default()
        }
    }

    /// A tool's routes.
    pub fn tool(&self, tool: &str) -> Option<&Arc<ToolRoutes>> {
        self.tools.get(tool)
    }

    /// Tools in name order.
    pub fn tools_sorted(&self) -> Vec<(&str, &Arc<ToolRoutes>)> {
        let mut v: Vec<_> = self.tools.iter().map(|(k, v)| (&**k, v)).collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v
    }

    /// Builds a table from raw Redis contents (keys without their prefixes).
    pub fn from_raw(raw: &RawRoutes) -> Self {
        Self::from_raw_reusing(raw, None)
    }

    /// Like [`RouteTable::from_raw`], reusing `previous`'s compiled routes
    /// of tools whose hash is unchanged (a periodic resync of an unchanged
    /// table compiles nothing).
    pub fn from_raw_reusing(raw: &RawRoutes, previous: Option<&RouteTable>) -> Self {
        let mut t = RouteTable {
            patterns: previous.map(|p| p.patterns.clone()).unwrap_or_default(),
            limits: previous.map(|p| p.limits).unwrap_or_default(),
            ..Default::default()
        };
        for (tool, hash) in &raw.prefix {
            match previous.and_then(|p| p.tools.get_key_value(tool.as_str())) {
                Some((name, routes)) if routes.raw() == *hash => {
                    t.tools.insert(name.clone(), routes.clone());
                }
                _ => t.set_tool(tool, Some(hash)),
            }
        }
        for (fqdn, members) in &raw.frontend {
            t.set_frontend(fqdn, Some(members));
        }
        let used: std::collections::HashSet<&str> = t
            .tools
            .values()
            .flat_map(|r| r.routes.iter().map(|r| r.pattern.as_str()))
            .collect();
        let patterns = std::mem::take(&mut t.patterns)
            .into_iter()
            .filter(|(k, _)| used.contains(k.as_str()))
            .collect();
        t.patterns = patterns;
        t
    }

    /// The raw contents, for the on-disk snapshot.
    pub fn to_raw(&self) -> RawRoutes {
        RawRoutes {
            prefix: self
                .tools
                .iter()
                .map(|(k, v)| (k.to_string(), v.raw()))
                .collect(),
            frontend: self
                .frontends
                .iter()
                .map(|(k, f)| {
                    let mut m: Vec<String> = f
                        .backends
                        .iter()
                        .map(|b| b.url.as_str().to_owned())
                        .collect();
                    m.extend(f.invalid.iter().cloned());
                    (k.to_string(), m)
                })
                .collect(),
        }
    }

    /// Sets how many keys under the route families were ignored for their
    /// name (the sync counts them while listing keys).
    pub fn set_ignored_keys(&mut self, ignored: usize) {
        self.ignored_keys = ignored;
    }

    /// Replaces (or with `None` / an empty hash, removes) a tool's routes.
    /// `tool` is the key suffix as stored; names that aren't valid,
    /// lower-case tool names are ignored and counted.
    pub fn set_tool(&mut self, tool: &str, hash: Option<&BTreeMap<String, String>>) {
        let valid = ToolName::parse(tool).is_ok_and(|t| t.as_str() == tool);
        match hash {
            Some(h) if !h.is_empty() => {
                if valid {
                    let routes = ToolRoutes::from_hash(h, &mut self.patterns, &self.limits.budget);
                    self.tools.insert(Arc::from(tool), Arc::new(routes));
                } else {
                    self.ignored_keys += 1;
                }
            }
            _ => {
                self.tools.remove(tool);
            }
        }
    }

    /// Replaces (or removes) a `frontend:` set. `fqdn` as stored.
    pub fn set_frontend(&mut self, fqdn: &str, members: Option<&Vec<String>>) {
        let fqdn = fqdn.to_ascii_lowercase();
        match members {
            Some(m) if !m.is_empty() => {
                self.frontends.insert(
                    Arc::from(fqdn.as_str()),
                    Arc::new(Frontend::from_members(m)),
                );
            }
            _ => {
                self.frontends.remove(fqdn.as_str());
            }
        }
    }

    /// Decides where a request for `host` (as sent, any case, maybe with a
    /// port) and `path` goes. `host` must be non-empty.
    pub fn route(&self, host: &str, path: &str, settings: &Settings) -> Decision {
        let host = strip_port(host);
        let lower;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            lower.as_str()
        } else {
            host
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        if !self.frontends.is_empty()
            && let Some(b) = self.frontends.get(host).and_then(|f| f.pick())
        {
            return Decision::Frontend(b.clone());
        }
        let served = settings.domains.is_empty()
            || settings.domains.iter().any(|d| {
                host.len() > d.len() + 1
                    && host.ends_with(d.as_str())
                    && host.as_bytes()[host.len() - d.len() - 1] == b'.'
            });
        if served {
            let tool = host.split('.').next().unwrap_or(host);
            if let Some(route) = self
                .tools
                .get(tool)
                .and_then(|t| t.find(path, self.limits.max_match_path_bytes))
            {
                return Decision::Route(route.backend.clone());
            }
        }
        if !self.frontends.is_empty()
            && let Some((_, parent)) = host.split_once('.')
        {
            let wildcard = format!("*.{parent}");
            if let Some(b) = self.frontends.get(wildcard.as_str()).and_then(|f| f.pick()) {
                return Decision::Frontend(b.clone());
            }
        }
        if served {
            Decision::Miss
        } else {
            match settings.outside_domain {
                OutsideDomain::Reject => Decision::OutsideReject,
                OutsideDomain::Default => Decision::OutsideDefault,
            }
        }
    }
}

/// Route keys as stored in Redis, without their `prefix:` / `frontend:`
/// prefixes; also the on-disk snapshot format.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RawRoutes {
    /// `prefix:<tool>` hashes.
    pub prefix: BTreeMap<String, BTreeMap<String, String>>,
    /// `frontend:<fqdn>` sets.
    pub frontend: BTreeMap<String, Vec<String>>,
}

/// The snapshot file: the raw routes and when they were read.
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    /// Format version (1).
    pub version: u32,
    /// Seconds since the epoch when the table was last known to match Redis.
    pub written_at: u64,
    /// The routes.
    pub routes: RawRoutes,
}

impl Snapshot {
    /// Writes `table` to `path` atomically (temporary file, fsync, rename).
    pub fn write(path: &std::path::Path, table: &RouteTable) -> std::io::Result<()> {
        use std::io::Write;
        let snap = Snapshot {
            version: 1,
            written_at: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            routes: table.to_raw(),
        };
        let data = serde_json::to_vec(&snap).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    }

    /// Reads a snapshot.
    pub fn read(path: &std::path::Path) -> std::io::Result<Snapshot> {
        let data = std::fs::read(path)?;
        let snap: Snapshot = serde_json::from_slice(&data)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        if snap.version != 1 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("snapshot version {} is not 1", snap.version),
            ));
        }
        Ok(snap)
    }
}

/// The published table: one atomic pointer, read lock-free by every request.
#[derive(Debug, Default)]
pub struct Routes {
    current: ArcSwap<RouteTable>,
}

impl Routes {
    /// An empty table whose routes will be held to `limits`.
    pub fn with_limits(limits: RouteLimits) -> Self {
        Routes {
            current: ArcSwap::from_pointee(RouteTable::with_limits(limits)),
        }
    }

    /// The current table.
    pub fn load(&self) -> arc_swap::Guard<Arc<RouteTable>> {
        self.current.load()
    }
    /// The current table, owned.
    pub fn load_full(&self) -> Arc<RouteTable> {
        self.current.load_full()
    }
    /// Publishes a new table.
    pub fn store(&self, table: RouteTable) {
        self.current.store(Arc::new(table));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(domains: &[&str], outside: OutsideDomain) -> Settings {
        let config = crate::Config {
            default_upstream: Some(BackendUrl::parse("http://127.0.0.1:1").unwrap()),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            outside_domain: outside,
            ..Default::default()
        };
        config.settings().unwrap()
    }

    fn raw() -> RawRoutes {
        let mut r = RawRoutes::default();
        r.prefix.insert(
            "tool".into(),
            [
                (".*".to_string(), "http://10.0.0.1:1".to_string()),
                ("^/api/".to_string(), "http://10.0.0.2:2".to_string()),
                ("^/api/v2/".to_string(), "http://10.0.0.3:3".to_string()),
                ("(".to_string(), "http://10.0.0.4:4".to_string()),
            ]
            .into_iter()
            .collect(),
        );
        r.prefix.insert(
            "Upper".into(),
            [(".*".to_string(), "http://10.0.0.1:1".to_string())].into(),
        );
        r.frontend
            .insert("www.example.org".into(), vec!["http://10.1.0.1:80".into()]);
        r.frontend
            .insert("*.example.org".into(), vec!["http://10.1.0.2:80".into()]);
        r
    }

    fn target(d: Decision) -> String {
        match d {
            Decision::Route(b) => format!("route {}", b.url),
            Decision::Frontend(b) => format!("frontend {}", b.url),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn most_specific_pattern_wins() {
        let t = RouteTable::from_raw(&raw());
        let s = settings(&["toolforge.org"], OutsideDomain::Reject);
        let r = |h: &str, p: &str| target(t.route(h, p, &s));
        assert_eq!(
            r("tool.toolforge.org", "/api/v2/x"),
            "route http://10.0.0.3:3"
        );
        assert_eq!(
            r("TOOL.Toolforge.org:443", "/api/x"),
            "route http://10.0.0.2:2"
        );
        assert_eq!(r("tool.toolforge.org", "/"), "route http://10.0.0.1:1");
        assert_eq!(r("other.toolforge.org", "/"), "Miss");
        assert_eq!(r("toolforge.org", "/"), "OutsideReject");
        assert_eq!(r("tool.example.com", "/"), "OutsideReject");
        assert_eq!(r("www.example.org", "/"), "frontend http://10.1.0.1:80");
        assert_eq!(r("x.example.org", "/"), "frontend http://10.1.0.2:80");
        assert_eq!(t.invalid_count(), 2);
        assert_eq!(t.tool_count(), 1);
        assert_eq!(t.route_count(), 3);
        let s = settings(&[], OutsideDomain::Reject);
        assert_eq!(
            target(t.route("tool.anything", "/", &s)),
            "route http://10.0.0.1:1"
        );
    }

    #[test]
    fn resync_reuses_unchanged_tools_and_shares_patterns() {
        let mut r = raw();
        r.prefix.insert(
            "second".into(),
            [(".*".to_string(), "http://10.0.0.9:9".to_string())].into(),
        );
        let old = RouteTable::from_raw(&r);
        assert_eq!(old.patterns.len(), 3, "`.*` compiled once for both tools");
        r.prefix
            .get_mut("second")
            .unwrap()
            .insert("^/x".into(), "http://10.0.0.9:9".into());
        let new = RouteTable::from_raw_reusing(&r, Some(&old));
        assert!(Arc::ptr_eq(
            old.tool("tool").unwrap(),
            new.tool("tool").unwrap()
        ));
        assert!(!Arc::ptr_eq(
            old.tool("second").unwrap(),
            new.tool("second").unwrap()
        ));
        assert_eq!(new.tool("second").unwrap().routes.len(), 2);
    }

    #[test]
    fn snapshot_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("routes.json");
        let t = RouteTable::from_raw(&raw());
        Snapshot::write(&p, &t).unwrap();
        let back = Snapshot::read(&p).unwrap();
        assert_eq!(back.routes, t.to_raw());
        assert_eq!(back.routes.prefix["tool"].len(), 4);
    }
}
