//! The Redis schema shared by every forge daemon, as types.
//!
//! Today's proxy stack stores its live routing state in Redis under three key
//! families (see `docs/redis-schema.md`):
//!
//! * `prefix:<tool>` — HASH, route pattern → backend base URL (written by
//!   proxylistener, read by dynamicproxy);
//! * `redirect:<tool>` — HASH, route pattern → `<tool>.<domain>` (legacy
//!   "canonical" registrations);
//! * `frontend:<fqdn>` — SET of backend URLs (the cloud-VPS domain proxy).
//!
//! Everything forge adds lives under `forge:`. This module is the one place
//! that builds and parses those keys, and the validated value types that go in
//! them: [`ToolName`], [`RoutePattern`] and [`BackendUrl`]. The job queue uses
//! python-rq's own layout, which lives in the `forge-rq` crate.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest tool name we accept. Tool names become DNS labels
/// (`<tool>.toolforge.org`), so the DNS label limit applies.
pub const MAX_TOOL_NAME_LEN: usize = 63;

/// Longest route pattern we accept (bytes).
pub const MAX_PATTERN_LEN: usize = 256;

/// Longest backend URL we accept (bytes).
pub const MAX_URL_LEN: usize = 512;

/// Ceiling of [`PatternBudget::max_compiled_bytes`]: no configuration can
/// let one pattern cost more automaton than this.
pub const MAX_PATTERN_COMPILED_BYTES: usize = 256 * 1024;

/// Floor of [`PatternBudget::max_compiled_bytes`]: below it even `.*` or a
/// short literal prefix would not compile.
pub const MIN_PATTERN_COMPILED_BYTES: usize = 1024;

/// Default compiled-size budget of one route pattern, bytes. Today's clients
/// register `.*` only; prefixes like `^/api/v[0-9]+/` and alternations of a
/// few words need a few KiB, while `[ab]{3500}[^ab]` (a linear-time pattern
/// that still costs the proxy seconds of CPU per long path) needs ~150 KiB.
pub const DEFAULT_PATTERN_COMPILED_BYTES: usize = 16 * 1024;

/// Ceiling of [`PatternBudget::max_patterns_per_tool`].
pub const MAX_PATTERNS_PER_TOOL: usize = 1024;

/// Default number of route patterns one tool may have registered at once
/// (today's clients register one, `.*`).
pub const DEFAULT_PATTERNS_PER_TOOL: usize = 8;

/// Lazy-DFA cache limit of a compiled pattern (grows only as matching needs
/// it; when a pattern would need more, the matcher falls back to a slower
/// engine that is still linear in the input).
const PATTERN_DFA_CACHE_BYTES: usize = 256 * 1024;

/// Why a key or a value of the schema was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The tool name is empty.
    #[error("tool name is empty")]
    EmptyToolName,
    /// The tool name is longer than [`MAX_TOOL_NAME_LEN`].
    #[error("tool name is {0} characters long; at most {MAX_TOOL_NAME_LEN} are allowed")]
    ToolNameTooLong(usize),
    /// The tool name has a character outside `[a-z0-9_-]`.
    #[error("tool name contains {0:?}; only a-z, 0-9, '-' and '_' are allowed")]
    ToolNameChar(char),
    /// The tool name starts or ends with something other than a letter or digit.
    #[error("tool name must start and end with a letter or digit")]
    ToolNameEdge,
    /// The route pattern is empty.
    #[error("route pattern is empty")]
    EmptyPattern,
    /// The route pattern is longer than [`MAX_PATTERN_LEN`].
    #[error("route pattern is {0} bytes long; at most {MAX_PATTERN_LEN} are allowed")]
    PatternTooLong(usize),
    /// The route pattern is not a valid (linear-time) regular expression.
    #[error("route pattern is not a valid regular expression: {0}")]
    PatternInvalid(String),
    /// The route pattern contains a control character (CR, LF, ESC, …).
    #[error(
        "route pattern contains the control character {}; write it as a regex escape (\\x{:02x}) if it is meant",
        escape_char(*.0),
        u32::from(*.0)
    )]
    PatternControlChar(char),
    /// The compiled pattern is larger than the compiled-size budget.
    #[error(
        "route pattern compiles to more than the budget of {0} bytes; use a simpler pattern (a literal prefix like ^/api/, ASCII classes like [a-z0-9] instead of Unicode ones like \\w, fewer repetitions)"
    )]
    PatternOverBudget(usize),
    /// The tool would have more patterns than the patterns-per-tool budget.
    #[error(
        "the tool already has {have} route patterns; at most {max} are allowed (unregister one first)"
    )]
    TooManyPatterns {
        /// Patterns the tool has now.
        have: usize,
        /// The budget.
        max: usize,
    },
    /// The backend URL could not be parsed.
    #[error("backend URL {url:?} is invalid: {reason}")]
    UrlInvalid {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A Redis key that belongs to none of the families we know.
    #[error("{0:?} is not a key of the forge Redis schema")]
    UnknownKey(String),
    /// A fully qualified domain name that isn't one.
    #[error("{0:?} is not a valid host name")]
    InvalidHostName(String),
}

/// A tool's name: the first DNS label of its web address and the `<tool>` of
/// its Unix account `<project>.<tool>`.
///
/// Always lower-case; 1 to 63 characters of `[a-z0-9_-]`, starting and ending
/// with a letter or digit. Parsing lower-cases its input, so `Host: MyTool.…`
/// and `mytool` name the same tool.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ToolName(String);

impl ToolName {
    /// Validates and lower-cases a tool name.
    pub fn parse(raw: &str) -> Result<Self, SchemaError> {
        if raw.is_empty() {
            return Err(SchemaError::EmptyToolName);
        }
        if raw.len() > MAX_TOOL_NAME_LEN {
            return Err(SchemaError::ToolNameTooLong(raw.chars().count()));
        }
        let lower = raw.to_ascii_lowercase();
        if let Some(bad) = lower
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
        {
            return Err(SchemaError::ToolNameChar(bad));
        }
        let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        if !edge_ok(lower.chars().next()) || !edge_ok(lower.chars().last()) {
            return Err(SchemaError::ToolNameEdge);
        }
        Ok(ToolName(lower))
    }

    /// The tool named by an HTTP `Host` value: everything up to the first dot,
    /// with any `:port` removed, lower-cased.
    pub fn from_host(host: &str) -> Result<Self, SchemaError> {
        let host = strip_port(host);
        let label = host.split('.').next().unwrap_or(host);
        ToolName::parse(label)
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The Unix user of this tool in `project` (`tools.<tool>`).
    pub fn unix_user(&self, project: &str) -> String {
        format!("{project}.{}", self.0)
    }
}

impl fmt::Display for ToolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ToolName {
    type Err = SchemaError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ToolName::parse(s)
    }
}

impl TryFrom<String> for ToolName {
    type Error = SchemaError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        ToolName::parse(&s)
    }
}

impl From<ToolName> for String {
    fn from(t: ToolName) -> String {
        t.0
    }
}

/// Removes a trailing `:port` from a `Host` value (IPv6 literals in brackets
/// keep their brackets).
pub fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return match rest.find(']') {
            Some(end) => &host[..end + 2],
            None => host,
        };
    }
    match host.rfind(':') {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
        _ => host,
    }
}

/// A route pattern: a regular expression matched (unanchored, like today's
/// Lua `ngx.re.match`) against the request path.
///
/// Compiled with the `regex` crate, whose matching time is linear in the input,
/// under a length and a compiled-size cap, so no registration can make the
/// proxy slow.
#[derive(Debug, Clone)]
pub struct RoutePattern {
    source: String,
    regex: regex::Regex,
}

impl RoutePattern {
    /// Validates and compiles a pattern under the default [`PatternBudget`].
    pub fn parse(raw: &str) -> Result<Self, SchemaError> {
        Self::parse_within(raw, &PatternBudget::default())
    }

    /// Validates and compiles a pattern under `budget`'s compiled-size limit
    /// (the patterns-per-tool budget is the caller's, see
    /// [`PatternBudget::check_count`]).
    pub fn parse_within(raw: &str, budget: &PatternBudget) -> Result<Self, SchemaError> {
        if raw.is_empty() {
            return Err(SchemaError::EmptyPattern);
        }
        if raw.len() > MAX_PATTERN_LEN {
            return Err(SchemaError::PatternTooLong(raw.len()));
        }
        if let Some(c) = raw.chars().find(|c| c.is_control()) {
            return Err(SchemaError::PatternControlChar(c));
        }
        let limit = budget.max_compiled_bytes();
        let regex = regex::RegexBuilder::new(raw)
            .size_limit(limit)
            .dfa_size_limit(PATTERN_DFA_CACHE_BYTES)
            .build()
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(_) => SchemaError::PatternOverBudget(limit),
                e => SchemaError::PatternInvalid(one_line(&e.to_string())),
            })?;
        Ok(RoutePattern {
            source: raw.to_owned(),
            regex,
        })
    }

    /// The pattern as registered.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `path` matches.
    pub fn is_match(&self, path: &str) -> bool {
        self.regex.is_match(path)
    }

    /// Sort key for "most specific first": longer literal-looking patterns
    /// before shorter ones, catch-alls (`.*`, `^/`, `/`) last, ties broken by
    /// the pattern text so the order is total and deterministic.
    pub fn specificity(&self) -> (std::cmp::Reverse<usize>, &str) {
        let literal = self
            .source
            .chars()
            .filter(|c| !matches!(c, '.' | '*' | '+' | '?' | '^' | '$' | '(' | ')' | '|'))
            .count();
        (std::cmp::Reverse(literal), &self.source)
    }
}

impl PartialEq for RoutePattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}
impl Eq for RoutePattern {}

impl fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl FromStr for RoutePattern {
    type Err = SchemaError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RoutePattern::parse(s)
    }
}

/// What one tool's route patterns may cost: a compiled-size budget per
/// pattern and a number of patterns per tool.
///
/// proxylistener refuses registrations over either budget; dynamicproxy
/// ignores (and counts) entries over them that reached Redis by other means.
/// Both daemons take it from their configuration (`[route_budget]`), so
/// operators set the same values for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PatternBudget {
    /// Largest compiled size of one pattern, bytes
    /// ([`MIN_PATTERN_COMPILED_BYTES`]..=[`MAX_PATTERN_COMPILED_BYTES`]).
    pub max_compiled_bytes: CompiledBytes,
    /// Most patterns one tool may have (1..=[`MAX_PATTERNS_PER_TOOL`]).
    pub max_patterns_per_tool: PatternsPerTool,
}

impl Default for PatternBudget {
    fn default() -> Self {
        PatternBudget {
            max_compiled_bytes: CompiledBytes(DEFAULT_PATTERN_COMPILED_BYTES),
            max_patterns_per_tool: PatternsPerTool(DEFAULT_PATTERNS_PER_TOOL),
        }
    }
}

impl PatternBudget {
    /// A budget from plain numbers, validated like the configuration.
    pub fn new(max_compiled_bytes: usize, max_patterns_per_tool: usize) -> Result<Self, String> {
        Ok(PatternBudget {
            max_compiled_bytes: CompiledBytes::try_from(max_compiled_bytes)?,
            max_patterns_per_tool: PatternsPerTool::try_from(max_patterns_per_tool)?,
        })
    }

    /// The compiled-size budget of one pattern, bytes.
    pub fn max_compiled_bytes(&self) -> usize {
        self.max_compiled_bytes.0
    }

    /// The patterns-per-tool budget.
    pub fn max_patterns_per_tool(&self) -> usize {
        self.max_patterns_per_tool.0
    }

    /// Whether a tool may have `count` patterns.
    pub fn check_count(&self, count: usize) -> Result<(), SchemaError> {
        let max = self.max_patterns_per_tool();
        if count > max {
            return Err(SchemaError::TooManyPatterns {
                have: count.saturating_sub(1),
                max,
            });
        }
        Ok(())
    }
}

/// A compiled-size budget in bytes, within
/// [`MIN_PATTERN_COMPILED_BYTES`]..=[`MAX_PATTERN_COMPILED_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "usize", into = "usize")]
pub struct CompiledBytes(usize);

impl TryFrom<usize> for CompiledBytes {
    type Error = String;
    fn try_from(n: usize) -> Result<Self, String> {
        if (MIN_PATTERN_COMPILED_BYTES..=MAX_PATTERN_COMPILED_BYTES).contains(&n) {
            Ok(CompiledBytes(n))
        } else {
            Err(format!(
                "{n} is outside {MIN_PATTERN_COMPILED_BYTES}..={MAX_PATTERN_COMPILED_BYTES} bytes"
            ))
        }
    }
}

impl From<CompiledBytes> for usize {
    fn from(b: CompiledBytes) -> usize {
        b.0
    }
}

/// A patterns-per-tool budget, within 1..=[`MAX_PATTERNS_PER_TOOL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "usize", into = "usize")]
pub struct PatternsPerTool(usize);

impl TryFrom<usize> for PatternsPerTool {
    type Error = String;
    fn try_from(n: usize) -> Result<Self, String> {
        if (1..=MAX_PATTERNS_PER_TOOL).contains(&n) {
            Ok(PatternsPerTool(n))
        } else {
            Err(format!("{n} is outside 1..={MAX_PATTERNS_PER_TOOL}"))
        }
    }
}

impl From<PatternsPerTool> for usize {
    fn from(n: PatternsPerTool) -> usize {
        n.0
    }
}

/// A character as it may be shown in a log line or a reply: printable ones
/// as themselves, control characters as `U+001B`-style code points.
fn escape_char(c: char) -> String {
    if c.is_control() {
        format!("U+{:04X}", u32::from(c))
    } else {
        c.to_string()
    }
}

/// Text with every control character (CR, LF, ESC, DEL, C1…) escaped as
/// `\n`, `\r`, `\t` or `\u{1b}`, for putting text a client sent into a log
/// line: it can't start a new line or move the terminal's cursor.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A backend base URL: `http(s)://<host>:<port>` with no user info, query or
/// fragment and no path beyond an optional `/`, and no control character
/// anywhere (the URL parser would drop a tab or line break silently, while
/// the URL is kept and logged as written).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BackendUrl {
    /// The URL as registered (kept byte-for-byte, so reads and writes of
    /// today's data round-trip).
    raw: String,
    /// `http` or `https`.
    scheme: String,
    /// Host name or IP literal (IPv6 without brackets).
    host: String,
    /// Port, explicit or the scheme's default.
    port: u16,
}

impl BackendUrl {
    /// Validates a backend URL.
    pub fn parse(raw: &str) -> Result<Self, SchemaError> {
        let bad = |reason: &str| SchemaError::UrlInvalid {
            url: raw.chars().take(80).collect(),
            reason: reason.to_owned(),
        };
        if raw.len() > MAX_URL_LEN {
            return Err(bad("too long"));
        }
        if let Some(c) = raw.chars().find(|c| c.is_control()) {
            return Err(bad(&format!(
                "it contains the control character {}",
                escape_char(c)
            )));
        }
        let url = url::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
        let scheme = url.scheme();
        if scheme != "http" && scheme != "https" {
            return Err(bad("scheme must be http or https"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("user info is not allowed"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("query and fragment are not allowed"));
        }
        if url.path() != "/" && !url.path().is_empty() {
            return Err(bad("a path is not allowed, only scheme://host:port"));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(bad("host is missing")),
        };
        let port = url
            .port_or_known_default()
            .ok_or_else(|| bad("port is missing"))?;
        if port == 0 {
            return Err(bad("port 0 is not allowed"));
        }
        Ok(BackendUrl {
            raw: raw.to_owned(),
            scheme: scheme.to_owned(),
            host,
            port,
        })
    }

    /// The URL as registered.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
    /// `http` or `https`.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }
    /// Host name or IP literal.
    pub fn host(&self) -> &str {
        &self.host
    }
    /// The host as an IP address, when it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
    /// The port (explicit or the scheme's default).
    pub fn port(&self) -> u16 {
        self.port
    }
    /// `host:port`, with brackets around IPv6 literals, for connecting.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl FromStr for BackendUrl {
    type Err = SchemaError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BackendUrl::parse(s)
    }
}

impl TryFrom<String> for BackendUrl {
    type Error = SchemaError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        BackendUrl::parse(&s)
    }
}

impl From<BackendUrl> for String {
    fn from(u: BackendUrl) -> String {
        u.raw
    }
}

/// Key prefix of tool route hashes.
pub const PREFIX_KEY_PREFIX: &str = "prefix:";
/// Key prefix of legacy canonical-redirect hashes.
pub const REDIRECT_KEY_PREFIX: &str = "redirect:";
/// Key prefix of cloud-VPS frontend sets.
pub const FRONTEND_KEY_PREFIX: &str = "frontend:";
/// Key prefix of everything forge adds.
pub const FORGE_KEY_PREFIX: &str = "forge:";

/// Every key of the schema that forge reads or writes (the job queue's
/// python-rq keys excepted; see `forge-rq`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RedisKey {
    /// `prefix:<tool>` — HASH route pattern → backend URL.
    Prefix(ToolName),
    /// `redirect:<tool>` — HASH route pattern → `<tool>.<domain>`.
    Redirect(ToolName),
    /// `frontend:<fqdn>` — SET of backend URLs; `<fqdn>` may be `*.<parent>`.
    Frontend(String),
    /// `forge:monitor:restarts:<tool>` — ZSET of restart attempt times (ms)
    /// kept by webservicemonitor's persistent throttle.
    MonitorRestarts(ToolName),
    /// `forge:monitor:unhealthy:<tool>` — STRING count of consecutive failed
    /// health probes.
    MonitorUnhealthy(ToolName),
    /// `forge:lease:<name>` — STRING holder id with a TTL: which instance of a
    /// singleton (monitor, idm timers) is active.
    Lease(String),
}

impl RedisKey {
    /// The key as stored in Redis.
    pub fn to_key(&self) -> String {
        self.to_string()
    }

    /// Parses a key of a family we know.
    pub fn parse(key: &str) -> Result<Self, SchemaError> {
        if let Some(t) = key.strip_prefix(PREFIX_KEY_PREFIX) {
            return Ok(RedisKey::Prefix(ToolName::parse_exact(t)?));
        }
        if let Some(t) = key.strip_prefix(REDIRECT_KEY_PREFIX) {
            return Ok(RedisKey::Redirect(ToolName::parse_exact(t)?));
        }
        if let Some(f) = key.strip_prefix(FRONTEND_KEY_PREFIX) {
            return Ok(RedisKey::Frontend(validate_frontend_fqdn(f)?));
        }
        if let Some(rest) = key.strip_prefix(FORGE_KEY_PREFIX) {
            if let Some(t) = rest.strip_prefix("monitor:restarts:") {
                return Ok(RedisKey::MonitorRestarts(ToolName::parse_exact(t)?));
            }
            if let Some(t) = rest.strip_prefix("monitor:unhealthy:") {
                return Ok(RedisKey::MonitorUnhealthy(ToolName::parse_exact(t)?));
            }
            if let Some(n) = rest.strip_prefix("lease:")
                && !n.is_empty()
            {
                return Ok(RedisKey::Lease(n.to_owned()));
            }
        }
        Err(SchemaError::UnknownKey(key.chars().take(80).collect()))
    }
}

impl ToolName {
    /// Like [`ToolName::parse`], but refuses names that are not already
    /// lower-case: keys in Redis are exact.
    fn parse_exact(raw: &str) -> Result<Self, SchemaError> {
        let t = ToolName::parse(raw)?;
        if t.as_str() != raw {
            return Err(SchemaError::ToolNameChar(
                raw.chars().find(|c| c.is_ascii_uppercase()).unwrap_or('?'),
            ));
        }
        Ok(t)
    }
}

fn validate_frontend_fqdn(f: &str) -> Result<String, SchemaError> {
    let name = f.strip_prefix("*.").unwrap_or(f);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if ok {
        Ok(f.to_ascii_lowercase())
    } else {
        Err(SchemaError::InvalidHostName(f.chars().take(80).collect()))
    }
}

impl fmt::Display for RedisKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisKey::Prefix(t) => write!(f, "{PREFIX_KEY_PREFIX}{t}"),
            RedisKey::Redirect(t) => write!(f, "{REDIRECT_KEY_PREFIX}{t}"),
            RedisKey::Frontend(h) => write!(f, "{FRONTEND_KEY_PREFIX}{h}"),
            RedisKey::MonitorRestarts(t) => write!(f, "{FORGE_KEY_PREFIX}monitor:restarts:{t}"),
            RedisKey::MonitorUnhealthy(t) => write!(f, "{FORGE_KEY_PREFIX}monitor:unhealthy:{t}"),
            RedisKey::Lease(n) => write!(f, "{FORGE_KEY_PREFIX}lease:{n}"),
        }
    }
}

/// The `frontend:` key to try for a host, then its wildcard fallback
/// (`frontend:*.<parent>`), in lookup order.
pub fn frontend_lookup_keys(fqdn: &str) -> Vec<RedisKey> {
    let host = strip_port(fqdn).to_ascii_lowercase();
    let mut keys = vec![RedisKey::Frontend(host.clone())];
    if let Some((_, parent)) = host.split_once('.') {
        keys.push(RedisKey::Frontend(format!("*.{parent}")));
    }
    keys
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_are_validated_and_lowercased() {
        assert_eq!(ToolName::parse("MyTool").unwrap().as_str(), "mytool");
        assert_eq!(ToolName::parse("a").unwrap().as_str(), "a");
        assert_eq!(ToolName::parse("x_y-2").unwrap().as_str(), "x_y-2");
        assert_eq!(ToolName::parse(""), Err(SchemaError::EmptyToolName));
        assert_eq!(
            ToolName::parse(&"a".repeat(64)),
            Err(SchemaError::ToolNameTooLong(64))
        );
        assert_eq!(
            ToolName::parse("foo.bar"),
            Err(SchemaError::ToolNameChar('.'))
        );
        assert_eq!(
            ToolName::parse("foo bar"),
            Err(SchemaError::ToolNameChar(' '))
        );
        assert_eq!(ToolName::parse("-foo"), Err(SchemaError::ToolNameEdge));
        assert_eq!(ToolName::parse("foo-"), Err(SchemaError::ToolNameEdge));
        assert!(ToolName::parse("fo\u{e9}").is_err());
    }

    #[test]
    fn tool_from_host() {
        let t = |h: &str| ToolName::from_host(h).map(|t| t.to_string());
        assert_eq!(t("MyTool.toolforge.org").unwrap(), "mytool");
        assert_eq!(t("mytool.toolforge.org:443").unwrap(), "mytool");
        assert_eq!(t("localhost:8080").unwrap(), "localhost");
        assert!(t("").is_err());
        assert!(t(".toolforge.org").is_err());
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("host"), "host");
    }

    #[test]
    fn patterns_compile_or_say_why() {
        let p = RoutePattern::parse(".*").unwrap();
        assert!(p.is_match("/anything"));
        let p = RoutePattern::parse("^/api/").unwrap();
        assert!(p.is_match("/api/x"));
        assert!(!p.is_match("/x/api/"));
        assert_eq!(
            RoutePattern::parse("").unwrap_err(),
            SchemaError::EmptyPattern
        );
        assert!(matches!(
            RoutePattern::parse("(").unwrap_err(),
            SchemaError::PatternInvalid(_)
        ));
        assert!(matches!(
            RoutePattern::parse(&"a".repeat(MAX_PATTERN_LEN + 1)).unwrap_err(),
            SchemaError::PatternTooLong(_)
        ));
        // Look-around and back-references (exponential in backtracking
        // engines) are refused by the linear-time engine.
        assert!(RoutePattern::parse("(a)\\1").is_err());
        assert!(RoutePattern::parse("(?=a)").is_err());
        // A huge repetition blows the compiled-size cap.
        assert!(RoutePattern::parse("(\\w{1000}){1000}").is_err());
        // Control characters are refused (log forging), escapes are fine.
        assert_eq!(
            RoutePattern::parse(".*\u{1b}[2J").unwrap_err(),
            SchemaError::PatternControlChar('\u{1b}')
        );
        assert!(RoutePattern::parse("^/a\r\n").is_err());
        assert!(RoutePattern::parse("^/a\\x1b").is_ok());
    }

    #[test]
    fn pattern_budgets() {
        // A linear-time pattern that costs the proxy seconds per long path
        // is over the default budget, but fits a raised one.
        let costly = "[ab]{3500}[^ab]";
        assert_eq!(
            RoutePattern::parse(costly).unwrap_err(),
            SchemaError::PatternOverBudget(DEFAULT_PATTERN_COMPILED_BYTES)
        );
        let roomy = PatternBudget::new(MAX_PATTERN_COMPILED_BYTES, 8).unwrap();
        assert!(RoutePattern::parse_within(costly, &roomy).is_ok());
        // What tools register today and a few realistic patterns fit.
        for p in [
            ".*",
            "^/",
            "^/api/v[0-9]+/",
            "^/(foo|bar|baz)/.*\\.php$",
            "(?i)^/static/",
        ] {
            assert!(RoutePattern::parse(p).is_ok(), "{p}");
        }
        let budget = PatternBudget::default();
        assert!(budget.check_count(DEFAULT_PATTERNS_PER_TOOL).is_ok());
        assert_eq!(
            budget.check_count(DEFAULT_PATTERNS_PER_TOOL + 1),
            Err(SchemaError::TooManyPatterns {
                have: DEFAULT_PATTERNS_PER_TOOL,
                max: DEFAULT_PATTERNS_PER_TOOL
            })
        );
        assert!(PatternBudget::new(10, 8).is_err());
        assert!(PatternBudget::new(4096, 0).is_err());
        assert!(PatternBudget::new(4096, MAX_PATTERNS_PER_TOOL + 1).is_err());
        let parsed: PatternBudget =
            toml::from_str("max_compiled_bytes = 4096\nmax_patterns_per_tool = 2").unwrap();
        assert_eq!(parsed, PatternBudget::new(4096, 2).unwrap());
        assert!(toml::from_str::<PatternBudget>("max_compiled_bytes = 1").is_err());
        assert!(toml::from_str::<PatternBudget>("surprise = 1").is_err());
    }

    #[test]
    fn controls_are_escaped() {
        assert_eq!(escape_controls("plain /path"), "plain /path");
        assert_eq!(
            escape_controls("a\r\nb\u{1b}[2J\u{7f}"),
            "a\\r\\nb\\u{1b}[2J\\u{7f}"
        );
    }

    #[test]
    fn pattern_specificity_orders_catch_all_last() {
        let mut ps: Vec<RoutePattern> = [".*", "^/api/v2/", "^/api/", "/"]
            .iter()
            .map(|s| RoutePattern::parse(s).unwrap())
            .collect();
        ps.sort_by(|a, b| a.specificity().cmp(&b.specificity()));
        let order: Vec<&str> = ps.iter().map(|p| p.as_str()).collect();
        assert_eq!(order, vec!["^/api/v2/", "^/api/", "/", ".*"]);
    }

    #[test]
    fn backend_urls() {
        let u = BackendUrl::parse("http://10.0.0.5:34567").unwrap();
        assert_eq!(u.host(), "10.0.0.5");
        assert_eq!(u.port(), 34567);
        assert_eq!(u.scheme(), "http");
        assert_eq!(u.as_str(), "http://10.0.0.5:34567");
        assert_eq!(u.authority(), "10.0.0.5:34567");
        assert!(u.ip().is_some());
        let u = BackendUrl::parse("https://[::1]:8443/").unwrap();
        assert_eq!(u.authority(), "[::1]:8443");
        assert_eq!(BackendUrl::parse("http://h").unwrap().port(), 80);
        for bad in [
            "ftp://10.0.0.5:21",
            "http://u:p@10.0.0.5:1",
            "http://10.0.0.5:1/path",
            "http://10.0.0.5:1/?q",
            "http://10.0.0.5:0",
            "not a url",
            "http://10.0.0.5:99999",
        ] {
            let e = BackendUrl::parse(bad).unwrap_err();
            assert!(matches!(e, SchemaError::UrlInvalid { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn backend_urls_with_control_characters_are_refused() {
        // The URL parser drops tabs and line breaks and trims C0 controls
        // and spaces at the ends, so each of these would parse to a
        // valid URL while the text kept (and logged) holds the control.
        for bad in [
            "http://10.0.0.5:34567\n",
            "http://10.0.0.5:34567\r\nforged log line",
            "\x1b[2Jhttp://10.0.0.5:34567",
            "http://10.0.\t0.5:34567",
            "http://10.0.0.5:3456\n7",
            "http://10.0.0.5:34567\u{7f}",
            "http://10.0.0.5:34567/\u{9b}31m",
            "http://host\u{0}.example:1",
        ] {
            let e = BackendUrl::parse(bad).unwrap_err();
            let SchemaError::UrlInvalid { url, reason } = &e else {
                panic!("{bad:?}: {e}");
            };
            assert!(reason.contains("control character U+"), "{bad:?}: {e}");
            // The message itself is safe to log.
            assert!(!e.to_string().chars().any(char::is_control), "{e}");
            assert!(url.len() <= bad.len());
            assert!(
                bad.parse::<BackendUrl>().is_err()
                    && BackendUrl::try_from(bad.to_owned()).is_err()
                    && serde_json::from_value::<BackendUrl>(serde_json::json!(bad)).is_err()
            );
        }
    }

    #[test]
    fn keys_round_trip() {
        let tool = ToolName::parse("mytool").unwrap();
        let keys = [
            RedisKey::Prefix(tool.clone()),
            RedisKey::Redirect(tool.clone()),
            RedisKey::Frontend("www.example.org".into()),
            RedisKey::Frontend("*.example.org".into()),
            RedisKey::MonitorRestarts(tool.clone()),
            RedisKey::MonitorUnhealthy(tool.clone()),
            RedisKey::Lease("webservicemonitor".into()),
        ];
        for k in keys {
            let s = k.to_key();
            assert_eq!(RedisKey::parse(&s).unwrap(), k, "{s}");
        }
        assert_eq!(RedisKey::Prefix(tool).to_key(), "prefix:mytool");
        assert!(matches!(
            RedisKey::parse("rq:queue:default"),
            Err(SchemaError::UnknownKey(_))
        ));
        assert!(RedisKey::parse("prefix:").is_err());
        assert!(RedisKey::parse("prefix:Upper").is_err());
        assert!(RedisKey::parse("frontend:bad host").is_err());
        assert!(RedisKey::parse("forge:lease:").is_err());
    }

    #[test]
    fn frontend_wildcard_fallback() {
        let keys: Vec<String> = frontend_lookup_keys("WWW.Example.org:443")
            .iter()
            .map(|k| k.to_key())
            .collect();
        assert_eq!(
            keys,
            vec!["frontend:www.example.org", "frontend:*.example.org"]
        );
    }
}
