//! `forgectl routes list|get|set|del`: the registrations in Redis, read and
//! changed on the master with the same atomic scripts semantics as
//! proxylistener (and the same validation: tool name, linear-time route
//! pattern, backend URL). Every change publishes the tool on
//! `forge:routes:changed`; with `--min-replicas N` it is confirmed only once
//! `WAIT` saw N replicas.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::{Context as _, bail};
use forge_core::schema::PREFIX_KEY_PREFIX;
use forge_core::{BackendUrl, RedisKey, RoutePattern, ToolName};
use fred::prelude::*;
use fred::types::Value;

/// `HSET prefix:<tool>` (+ `redirect:` for canonical) and publish. KEYS:
/// prefix, redirect. ARGV: route, url, canonical name or '', channel, tool.
const SET_LUA: &str = r#"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"#;

/// `HDEL` from both hashes and publish. Returns how many fields went.
const DEL_LUA: &str = r#"
local n = redis.call('HDEL', KEYS[1], ARGV[1]) + redis.call('HDEL', KEYS[2], ARGV[1])
if n > 0 then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return n
"#;

/// Every tool's routes: tool → (route → backend).
pub async fn list(client: &Client) -> anyhow::Result<BTreeMap<String, BTreeMap<String, String>>> {
    let mut out = BTreeMap::new();
    let mut cursor = "0".to_owned();
    loop {
        let page: Value = client
            .scan_page(
                cursor.clone(),
                format!("{PREFIX_KEY_PREFIX}*"),
                Some(1000),
                None,
            )
            .await
            .context("SCAN")?;
        let (next, keys): (String, Vec<String>) = page.convert().context("SCAN reply")?;
        for k in keys {
            if let Some(tool) = k.strip_prefix(PREFIX_KEY_PREFIX) {
                let h: BTreeMap<String, String> = client.hgetall(&k).await.unwrap_or_default();
                if !h.is_empty() {
                    out.insert(tool.to_owned(), h);
                }
            }
        }
        if next == "0" {
            break;
        }
        cursor = next;
    }
    Ok(out)
}

/// Prints `list`.
pub async fn print_list(client: &Client, out: &mut dyn Write) -> anyhow::Result<()> {
    let all = list(client).await?;
    writeln!(out, "{:<32} {:<24} BACKEND", "TOOL", "ROUTE")?;
    for (tool, routes) in &all {
        for (route, backend) in routes {
            writeln!(out, "{tool:<32} {route:<24} {backend}")?;
        }
    }
    writeln!(out, "{} tool(s)", all.len())?;
    Ok(())
}

/// Prints one tool's routes (and canonical redirects).
pub async fn print_get(client: &Client, tool: &str, out: &mut dyn Write) -> anyhow::Result<bool> {
    let tool = ToolName::parse(tool).context("tool name")?;
    let prefix: BTreeMap<String, String> = client
        .hgetall(RedisKey::Prefix(tool.clone()).to_key())
        .await?;
    let redirect: BTreeMap<String, String> = client
        .hgetall(RedisKey::Redirect(tool.clone()).to_key())
        .await?;
    if prefix.is_empty() && redirect.is_empty() {
        writeln!(out, "{tool}: no routes")?;
        return Ok(false);
    }
    for (route, backend) in &prefix {
        match redirect.get(route) {
            Some(c) => writeln!(out, "{route}\t{backend}\tcanonical {c}")?,
            None => writeln!(out, "{route}\t{backend}")?,
        }
    }
    for (route, c) in redirect.iter().filter(|(r, _)| !prefix.contains_key(*r)) {
        writeln!(out, "{route}\t-\tcanonical {c} (stray redirect entry)")?;
    }
    Ok(true)
}

/// `WAIT n timeout` on the connection that wrote.
async fn wait_replicas(
    client: &Client,
    min_replicas: u32,
    timeout: Duration,
) -> anyhow::Result<()> {
    if min_replicas == 0 {
        return Ok(());
    }
    let acked: i64 = client
        .with_options(&fred::types::config::Options {
            timeout: Some(timeout + Duration::from_secs(2)),
            ..Default::default()
        })
        .wait(i64::from(min_replicas), timeout.as_millis() as i64)
        .await
        .context("WAIT")?;
    if acked < i64::from(min_replicas) {
        bail!(
            "not replicated: {acked} of {min_replicas} replicas acknowledged within {} ms (the master has the change)",
            timeout.as_millis()
        );
    }
    Ok(())
}

/// Sets `route` of `tool` to `url` (with `canonical_domain`, also the
/// `redirect:` entry `<tool>.<domain>`).
pub async fn set(
    client: &Client,
    tool: &str,
    route: &str,
    url: &str,
    canonical_domain: Option<&str>,
    min_replicas: u32,
    wait: Duration,
) -> anyhow::Result<()> {
    let tool = ToolName::parse(tool).context("tool name")?;
    let route = RoutePattern::parse(route).context("route")?;
    let url = BackendUrl::parse(url).context("backend URL")?;
    let canonical = canonical_domain
        .map(|d| format!("{tool}.{d}"))
        .unwrap_or_default();
    let _: i64 = client
        .eval(
            SET_LUA,
            vec![
                RedisKey::Prefix(tool.clone()).to_key(),
                RedisKey::Redirect(tool.clone()).to_key(),
            ],
            vec![
                route.as_str().to_owned(),
                url.as_str().to_owned(),
                canonical,
                RedisKey::RoutesChanged.to_key(),
                tool.to_string(),
            ],
        )
        .await
        .context("writing the route")?;
    wait_replicas(client, min_replicas, wait).await
}

/// Deletes `route` of `tool`; false when there was nothing.
pub async fn del(
    client: &Client,
    tool: &str,
    route: &str,
    min_replicas: u32,
    wait: Duration,
) -> anyhow::Result<bool> {
    let tool = ToolName::parse(tool).context("tool name")?;
    let n: i64 = client
        .eval(
            DEL_LUA,
            vec![
                RedisKey::Prefix(tool.clone()).to_key(),
                RedisKey::Redirect(tool.clone()).to_key(),
            ],
            vec![
                route.to_owned(),
                RedisKey::RoutesChanged.to_key(),
                tool.to_string(),
            ],
        )
        .await
        .context("deleting the route")?;
    if n > 0 {
        wait_replicas(client, min_replicas, wait).await?;
    }
    Ok(n > 0)
}
