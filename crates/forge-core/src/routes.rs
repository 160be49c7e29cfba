//! The one place that writes and reads route keys: `prefix:<tool>` (route
//! pattern → backend URL) and `redirect:<tool>` (route pattern →
//! `<tool>.<domain>`, legacy canonical registrations).
//!
//! proxylistener (registrations), forgectl (`routes set|del|get|list`) and
//! webservicemonitor (stale routes) used to carry a Lua script each and
//! drifted apart: the monitor removed a route from `prefix:` but left its
//! `redirect:` entry. Here every operation is one Lua script, run by every
//! writer:
//!
//! * [`REGISTER_LUA`] ([`register`]) — `HSET prefix:<tool>` (+ `redirect:`
//!   for a canonical registration), refused when a new pattern would take the
//!   tool over its patterns-per-tool budget;
//! * [`DELETE_IF_LUA`] ([`delete_if`]) — compare-and-delete: the route goes
//!   from both hashes only if `prefix:<tool>` still holds the backend the
//!   caller saw, so a release racing a new registration never deletes it;
//! * [`DELETE_LUA`] ([`delete`]) — the operator's unconditional delete, from
//!   both hashes.
//!
//! A Lua script that fails half-way keeps the writes it already made, so each
//! script checks every key it will write before writing any: a key holding
//! something other than a hash is refused ([`RouteError::WrongType`]) with
//! nothing written.
//!
//! [`wait_for_replicas`] is the `WAIT` a writer sends on the connection that
//! wrote, when a write must survive a failover. Readers list and parse the
//! keys here too ([`list_tools`], [`parse_route_key`]), so nothing else cuts
//! key names apart. Keys are spelled by [`crate::schema::RedisKey`]; the
//! module takes a fred [`Client`] (one connection, so `WAIT` follows the
//! write) and leaves choosing the master, retries and metrics to its caller.

use std::collections::BTreeMap;
use std::time::Duration;

use fred::prelude::*;
use fred::types::Value;

use crate::schema::{
    FRONTEND_KEY_PREFIX, PREFIX_KEY_PREFIX, PatternBudget, RedisKey, SchemaError, ToolName,
};

/// The check every script starts with: each key it will write must hold a
/// hash or nothing. Defines `refuse_wrong_types(keys)`, which returns the
/// reply `{'wrong_type', key, type}` for the first key that doesn't.
macro_rules! lua_hash_guard {
    () => {
        r#"
local function refuse_wrong_types(keys)
  for _, key in ipairs(keys) do
    local found = redis.call('TYPE', key)['ok']
    if found ~= 'none' and found ~= 'hash' then
      return {'wrong_type', key, found}
    end
  end
  return nil
end
"#
    };
}

/// Registers a route. KEYS: `prefix:<tool>`, `redirect:<tool>`. ARGV: route
/// pattern, backend URL, the `redirect:` value (`''` = not canonical), the
/// patterns-per-tool budget (`''` = none). Replies `{'written', '', ''}`, or
/// `{'over_budget', <patterns the tool has>, ''}` when a new pattern would
/// exceed the budget, or `{'wrong_type', key, type}`; nothing is written
/// unless the reply is `written`.
pub const REGISTER_LUA: &str = concat!(
    lua_hash_guard!(),
    r#"
local writes = {KEYS[1]}
if ARGV[3] ~= '' then writes = {KEYS[1], KEYS[2]} end
local refused = refuse_wrong_types(writes)
if refused then return refused end
if ARGV[4] ~= '' and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  local have = redis.call('HLEN', KEYS[1])
  if have >= tonumber(ARGV[4]) then
    return {'over_budget', tostring(have), ''}
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
end
return {'written', '', ''}
"#
);

/// Compare-and-delete of a route. KEYS: `prefix:<tool>`, `redirect:<tool>`.
/// ARGV: route pattern, the backend URL the caller saw (`''` = none, which
/// clears a stray `redirect:` entry). Replies `{'deleted', <fields removed>,
/// ''}`, `{'changed', <backend now, or ''>, ''}` (nothing deleted) or
/// `{'wrong_type', key, type}`.
pub const DELETE_IF_LUA: &str = concat!(
    lua_hash_guard!(),
    r#"
local refused = refuse_wrong_types({KEYS[1], KEYS[2]})
if refused then return refused end
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current == false then current = '' end
if current ~= ARGV[2] then
  return {'changed', current, ''}
end
local n = redis.call('HDEL', KEYS[1], ARGV[1]) + redis.call('HDEL', KEYS[2], ARGV[1])
return {'deleted', tostring(n), ''}
"#
);

/// Unconditional delete of a route from both hashes. KEYS: `prefix:<tool>`,
/// `redirect:<tool>`. ARGV: route pattern. Replies `{'deleted', <fields
/// removed>, ''}` or `{'wrong_type', key, type}`.
pub const DELETE_LUA: &str = concat!(
    lua_hash_guard!(),
    r#"
local refused = refuse_wrong_types({KEYS[1], KEYS[2]})
if refused then return refused end
local n = redis.call('HDEL', KEYS[1], ARGV[1]) + redis.call('HDEL', KEYS[2], ARGV[1])
return {'deleted', tostring(n), ''}
"#
);

/// Why a route operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// Redis refused the command or could not be reached.
    #[error(transparent)]
    Redis(#[from] fred::error::Error),
    /// A new pattern would take the tool over its patterns-per-tool budget;
    /// nothing was written.
    #[error("{0}")]
    OverBudget(SchemaError),
    /// A key the operation writes holds another type than a hash; nothing
    /// was written.
    #[error("{key} holds a {found}, not a hash; nothing was written")]
    WrongType {
        /// The key.
        key: String,
        /// The type Redis reports for it.
        found: String,
    },
    /// Fewer replicas than required acknowledged the write.
    #[error(
        "not replicated: {acked} of {wanted} replicas acknowledged within {timeout_ms} ms (the master has the write)"
    )]
    NotReplicated {
        /// Replicas that acknowledged.
        acked: i64,
        /// Replicas required.
        wanted: u32,
        /// How long `WAIT` waited, milliseconds.
        timeout_ms: u64,
    },
    /// The reply had a shape the script never sends.
    #[error("unexpected reply from the route script: {0}")]
    Reply(String),
}

/// A route to write.
#[derive(Debug, Clone, Copy)]
pub struct NewRoute<'a> {
    /// The tool it belongs to.
    pub tool: &'a ToolName,
    /// The route pattern, already validated ([`crate::RoutePattern`]).
    pub pattern: &'a str,
    /// The backend URL, already validated ([`crate::BackendUrl`]).
    pub backend: &'a str,
    /// The domain of a canonical registration: its `redirect:` entry is
    /// `<tool>.<domain>` ([`canonical_host`]). `None`: no `redirect:` entry.
    pub canonical_domain: Option<&'a str>,
    /// The budget whose patterns-per-tool limit a new pattern must fit;
    /// `None`: no limit (the operator's `forgectl routes set`).
    pub budget: Option<&'a PatternBudget>,
}

/// What a compare-and-delete did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    /// The route held what the caller saw and is gone from both hashes
    /// (`fields`: how many hash fields went, 0 when it was already absent).
    Deleted {
        /// Hash fields removed (`prefix:` and `redirect:` together).
        fields: u32,
    },
    /// The route changed since the caller looked; nothing was deleted.
    Changed {
        /// The backend it points at now (`None`: nowhere).
        current: Option<String>,
    },
}

/// The `redirect:` value of a canonical registration: `<tool>.<domain>`.
pub fn canonical_host(tool: &ToolName, domain: &str) -> String {
    format!("{tool}.{domain}")
}

/// `SCAN` pattern matching every tool's route hash.
pub fn tool_routes_pattern() -> String {
    format!("{PREFIX_KEY_PREFIX}*")
}

/// `SCAN` pattern matching every `frontend:` set.
pub fn frontends_pattern() -> String {
    format!("{FRONTEND_KEY_PREFIX}*")
}

/// A key of the route families, as read back from Redis (a `SCAN` reply, a
/// keyspace notification).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteKey {
    /// `prefix:<tool>`.
    Tool(ToolName),
    /// `redirect:<tool>`.
    Redirect(ToolName),
    /// `frontend:<fqdn>` (lower-cased; may start with `*.`).
    Frontend(String),
}

/// Sorts a key into its route family ([`RedisKey::parse`]). Keys of the
/// families whose name is not valid (`prefix:Upper`, `frontend:bad host`)
/// and keys of no route family are errors: readers ignore and count them.
pub fn parse_route_key(key: &str) -> Result<RouteKey, SchemaError> {
    match RedisKey::parse(key)? {
        RedisKey::Prefix(tool) => Ok(RouteKey::Tool(tool)),
        RedisKey::Redirect(tool) => Ok(RouteKey::Redirect(tool)),
        RedisKey::Frontend(fqdn) => Ok(RouteKey::Frontend(fqdn)),
        _ => Err(SchemaError::UnknownKey(key.chars().take(80).collect())),
    }
}

fn keys_of(tool: &ToolName) -> Vec<String> {
    vec![
        RedisKey::Prefix(tool.clone()).to_key(),
        RedisKey::Redirect(tool.clone()).to_key(),
    ]
}

/// A script's `{status, a, b}` reply.
async fn run_script(
    client: &Client,
    script: &str,
    keys: Vec<String>,
    args: Vec<String>,
) -> Result<(String, String, String), RouteError> {
    let reply: Value = client.eval(script, keys, args).await?;
    let (status, a, b): (String, String, String) = reply
        .clone()
        .convert()
        .map_err(|_| RouteError::Reply(format!("{reply:?}").chars().take(200).collect()))?;
    if status == "wrong_type" {
        return Err(RouteError::WrongType { key: a, found: b });
    }
    Ok((status, a, b))
}

fn count(n: &str) -> Result<u32, RouteError> {
    n.parse()
        .map_err(|_| RouteError::Reply(n.chars().take(40).collect()))
}

/// Writes `route` ([`REGISTER_LUA`]). Writing the same route again changes
/// nothing, so a write that may not have been applied can be repeated.
pub async fn register(client: &Client, route: &NewRoute<'_>) -> Result<(), RouteError> {
    let redirect = route
        .canonical_domain
        .map(|d| canonical_host(route.tool, d))
        .unwrap_or_default();
    let budget = route
        .budget
        .map(|b| b.max_patterns_per_tool().to_string())
        .unwrap_or_default();
    let args = vec![
        route.pattern.to_owned(),
        route.backend.to_owned(),
        redirect,
        budget,
    ];
    let (status, have, _) = run_script(client, REGISTER_LUA, keys_of(route.tool), args).await?;
    match status.as_str() {
        "written" => Ok(()),
        "over_budget" => {
            let have = usize::try_from(count(&have)?).unwrap_or(usize::MAX);
            let max = route
                .budget
                .map(|b| b.max_patterns_per_tool())
                .unwrap_or(have);
            Err(RouteError::OverBudget(SchemaError::TooManyPatterns {
                have,
                max,
            }))
        }
        other => Err(RouteError::Reply(other.chars().take(40).collect())),
    }
}

/// Removes route `pattern` of `tool` from both hashes if `prefix:<tool>`
/// still maps it to `expected` (`None`: to nothing, which clears a stray
/// `redirect:` entry) ([`DELETE_IF_LUA`]). Repeating it is safe: a repeat
/// finds the route changed (or, for `None`, deletes nothing more).
pub async fn delete_if(
    client: &Client,
    tool: &ToolName,
    pattern: &str,
    expected: Option<&str>,
) -> Result<Deletion, RouteError> {
    let args = vec![pattern.to_owned(), expected.unwrap_or("").to_owned()];
    let (status, a, _) = run_script(client, DELETE_IF_LUA, keys_of(tool), args).await?;
    match status.as_str() {
        "deleted" => Ok(Deletion::Deleted { fields: count(&a)? }),
        "changed" => Ok(Deletion::Changed {
            current: Some(a).filter(|a| !a.is_empty()),
        }),
        other => Err(RouteError::Reply(other.chars().take(40).collect())),
    }
}

/// Removes route `pattern` of `tool` from both hashes, whatever it points at
/// ([`DELETE_LUA`]); returns how many hash fields went (0: there was
/// nothing).
pub async fn delete(client: &Client, tool: &ToolName, pattern: &str) -> Result<u32, RouteError> {
    let (status, n, _) =
        run_script(client, DELETE_LUA, keys_of(tool), vec![pattern.to_owned()]).await?;
    match status.as_str() {
        "deleted" => count(&n),
        other => Err(RouteError::Reply(other.chars().take(40).collect())),
    }
}

/// `WAIT wanted within` on `client`, the connection that wrote: an error
/// when fewer than `wanted` replicas acknowledged. `command_timeout` is the
/// client's usual per-command bound, added to `within` (`WAIT` blocks
/// server-side that long). `wanted = 0` returns at once.
pub async fn wait_for_replicas(
    client: &Client,
    wanted: u32,
    within: Duration,
    command_timeout: Duration,
) -> Result<(), RouteError> {
    if wanted == 0 {
        return Ok(());
    }
    let timeout_ms = u64::try_from(within.as_millis()).unwrap_or(u64::MAX);
    let acked: i64 = client
        .with_options(&fred::types::config::Options {
            timeout: Some(within + command_timeout),
            ..Default::default()
        })
        .wait(
            i64::from(wanted),
            i64::try_from(timeout_ms).unwrap_or(i64::MAX),
        )
        .await?;
    if acked < i64::from(wanted) {
        return Err(RouteError::NotReplicated {
            acked,
            wanted,
            timeout_ms,
        });
    }
    Ok(())
}

/// The backend route `pattern` of `tool` points at now.
pub async fn backend_of(
    client: &Client,
    tool: &ToolName,
    pattern: &str,
) -> Result<Option<String>, fred::error::Error> {
    client
        .hget(RedisKey::Prefix(tool.clone()).to_key(), pattern)
        .await
}

/// The tool's routes: pattern → backend URL (`prefix:<tool>`).
pub async fn routes_of(
    client: &Client,
    tool: &ToolName,
) -> Result<BTreeMap<String, String>, fred::error::Error> {
    client
        .hgetall(RedisKey::Prefix(tool.clone()).to_key())
        .await
}

/// The tool's canonical redirects: pattern → `<tool>.<domain>`
/// (`redirect:<tool>`).
pub async fn redirects_of(
    client: &Client,
    tool: &ToolName,
) -> Result<BTreeMap<String, String>, fred::error::Error> {
    client
        .hgetall(RedisKey::Redirect(tool.clone()).to_key())
        .await
}

/// Every tool's routes, read with `SCAN` and `HGETALL`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteListing {
    /// Tool → (pattern → backend URL); tools without routes are left out.
    pub tools: BTreeMap<ToolName, BTreeMap<String, String>>,
    /// `prefix:` keys that were not read: the name is not a valid tool name,
    /// or the key is not a hash. Each with why.
    pub ignored: Vec<(String, String)>,
}

/// Lists every tool's routes (`SCAN prefix:*`, then `HGETALL` of each).
pub async fn list_tools(client: &Client) -> Result<RouteListing, fred::error::Error> {
    let mut listing = RouteListing::default();
    let mut cursor = "0".to_owned();
    loop {
        let page: Value = client
            .scan_page(cursor.clone(), tool_routes_pattern(), Some(1000), None)
            .await?;
        let (next, keys): (String, Vec<String>) = page.convert()?;
        for key in keys {
            match parse_route_key(&key) {
                Ok(RouteKey::Tool(tool)) => {
                    match client.hgetall::<BTreeMap<String, String>, _>(&key).await {
                        Ok(routes) if routes.is_empty() => {}
                        Ok(routes) => {
                            listing.tools.insert(tool, routes);
                        }
                        Err(e) if e.details().contains("WRONGTYPE") => {
                            listing.ignored.push((key, "not a hash".to_owned()));
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(_) => {}
                Err(e) => listing.ignored.push((key, e.to_string())),
            }
        }
        if next == "0" {
            break;
        }
        cursor = next;
    }
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_keys_parse_into_their_family() {
        let tool = ToolName::parse("mytool").unwrap();
        assert_eq!(
            parse_route_key("prefix:mytool").unwrap(),
            RouteKey::Tool(tool.clone())
        );
        assert_eq!(
            parse_route_key("redirect:mytool").unwrap(),
            RouteKey::Redirect(tool)
        );
        assert_eq!(
            parse_route_key("frontend:*.Example.org").unwrap(),
            RouteKey::Frontend("*.example.org".into())
        );
        for bad in [
            "prefix:Upper",
            "prefix:",
            "prefix:a.b",
            "frontend:bad host",
            "forge:lease:webservicemonitor",
            "rq:queue:default",
        ] {
            assert!(parse_route_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scripts_check_types_before_any_write() {
        for script in [REGISTER_LUA, DELETE_IF_LUA, DELETE_LUA] {
            let guard = script.find("refuse_wrong_types({").unwrap_or_else(|| {
                script
                    .find("refuse_wrong_types(writes)")
                    .expect("the guard is called")
            });
            for write in ["'HSET'", "'HDEL'"] {
                if let Some(at) = script.find(write) {
                    assert!(guard < at, "{write} before the type check:\n{script}");
                }
            }
        }
    }

    #[test]
    fn patterns_and_canonical_hosts() {
        assert_eq!(tool_routes_pattern(), "prefix:*");
        assert_eq!(frontends_pattern(), "frontend:*");
        let tool = ToolName::parse("mytool").unwrap();
        assert_eq!(
            canonical_host(&tool, "toolforge.org"),
            "mytool.toolforge.org"
        );
    }
}
