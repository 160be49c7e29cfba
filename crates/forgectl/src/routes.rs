//! `forgectl routes list|get|set|del`: the registrations in Redis, read and
//! changed on the master through `forge_core::routes`, the same scripts
//! proxylistener and webservicemonitor run (and the same validation: tool
//! name, linear-time route pattern, backend URL). With `--min-replicas N` a
//! change is confirmed only once `WAIT` saw N replicas.

use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;
use forge_core::routes::{self, NewRoute, RouteListing};
use forge_core::{BackendUrl, RoutePattern, ToolName};
use fred::prelude::*;

/// How long a command may take on top of `WAIT`'s own wait.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Every tool's routes, and the `prefix:` keys that could not be read.
pub async fn list(client: &Client) -> anyhow::Result<RouteListing> {
    routes::list_tools(client).await.context("listing routes")
}

/// Prints `list`.
pub async fn print_list(client: &Client, out: &mut dyn Write) -> anyhow::Result<()> {
    let all = list(client).await?;
    writeln!(out, "{:<32} {:<24} BACKEND", "TOOL", "ROUTE")?;
    for (tool, routes) in &all.tools {
        for (route, backend) in routes {
            writeln!(out, "{tool:<32} {route:<24} {backend}")?;
        }
    }
    for (key, why) in &all.ignored {
        writeln!(out, "ignored {key:?}: {why}")?;
    }
    writeln!(out, "{} tool(s)", all.tools.len())?;
    Ok(())
}

/// Prints one tool's routes (and canonical redirects).
pub async fn print_get(client: &Client, tool: &str, out: &mut dyn Write) -> anyhow::Result<bool> {
    let tool = ToolName::parse(tool).context("tool name")?;
    let prefix = routes::routes_of(client, &tool).await?;
    let redirect = routes::redirects_of(client, &tool).await?;
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
    let new = NewRoute {
        tool: &tool,
        pattern: route.as_str(),
        backend: url.as_str(),
        canonical_domain,
        budget: None,
    };
    routes::register(client, &new)
        .await
        .context("writing the route")?;
    routes::wait_for_replicas(client, min_replicas, wait, COMMAND_TIMEOUT).await?;
    Ok(())
}

/// Deletes `route` of `tool` (and its `redirect:` entry); false when there
/// was nothing.
pub async fn del(
    client: &Client,
    tool: &str,
    route: &str,
    min_replicas: u32,
    wait: Duration,
) -> anyhow::Result<bool> {
    let tool = ToolName::parse(tool).context("tool name")?;
    let removed = routes::delete(client, &tool, route)
        .await
        .context("deleting the route")?;
    if removed > 0 {
        routes::wait_for_replicas(client, min_replicas, wait, COMMAND_TIMEOUT).await?;
    }
    Ok(removed > 0)
}
