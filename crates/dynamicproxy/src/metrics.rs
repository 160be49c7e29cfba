//! dynamicproxy's Prometheus metrics, registered once so the request path
//! touches only pre-resolved handles (no label hashing per request).
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `forge_dynamicproxy_requests_total{class}` | counter | responses by status class (`1xx`…`5xx`) |
//! | `forge_dynamicproxy_route_lookups_total{result}` | counter | `hit`, `frontend`, `miss` (default upstream), `outside` |
//! | `forge_dynamicproxy_upstream_seconds` | histogram | time to the backend's response headers |
//! | `forge_dynamicproxy_upstream_errors_total` | counter | backend unreachable or failed (502) |
//! | `forge_dynamicproxy_route_table_tools` / `_routes` / `_frontends` / `_invalid` | gauge | table size |
//! | `forge_dynamicproxy_route_table_over_budget` | gauge | route entries ignored for being over the route budget (included in `_invalid`) |
//! | `forge_dynamicproxy_route_table_age_seconds` | gauge | since the table was last known to equal Redis (-1: none) |
//! | `forge_dynamicproxy_redis_up` | gauge | 1 while Redis answers |
//! | `forge_dynamicproxy_route_full_syncs_total` / `_route_patches_total` | counter | sync work done |
//! | `forge_dynamicproxy_refused_total{reason}` | counter | 403s: `banned_ip`, `no_user_agent`, `blocked_user_agent`, `blocked_referer` |
//! | `forge_dynamicproxy_rate_limited_total` | counter | 429s |

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use crate::guard::Refusal;
use crate::table::RouteTable;

/// Pre-registered metric handles.
#[derive(Clone)]
pub struct Metrics {
    /// Responses by status class, index = first digit - 1.
    pub status: [Counter; 5],
    /// Route found for a tool.
    pub hit: Counter,
    /// `frontend:` set used.
    pub frontend: Counter,
    /// No route: default upstream.
    pub miss: Counter,
    /// Host outside the served domains.
    pub outside: Counter,
    /// Backend latency to response headers.
    pub upstream_seconds: Histogram,
    /// Backend failures.
    pub upstream_errors: Counter,
    /// Tools in the table.
    pub tools: Gauge,
    /// Routes in the table.
    pub routes: Gauge,
    /// `frontend:` sets in the table.
    pub frontends: Gauge,
    /// Ignored entries.
    pub invalid: Gauge,
    /// Entries ignored for being over the route budget.
    pub over_budget: Gauge,
    /// Table age, seconds.
    pub table_age: Gauge,
    /// 1 when Redis answers.
    pub redis_up: Gauge,
    /// Full loads done.
    pub full_syncs: Counter,
    /// Patches applied.
    pub patches: Counter,
    /// Refusals, by [`Refusal`] order.
    pub refusals: [Counter; 4],
    /// Rate-limited requests.
    pub rate_limited: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Registers every metric with the global recorder (installed here if
    /// it isn't yet).
    pub fn register() -> Self {
        let _ = forge_core::telemetry::metrics_handle();
        let class = |c: &'static str| counter!("forge_dynamicproxy_requests_total", "class" => c);
        let lookup =
            |r: &'static str| counter!("forge_dynamicproxy_route_lookups_total", "result" => r);
        Metrics {
            status: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            hit: lookup("hit"),
            frontend: lookup("frontend"),
            miss: lookup("miss"),
            outside: lookup("outside"),
            upstream_seconds: histogram!("forge_dynamicproxy_upstream_seconds"),
            upstream_errors: counter!("forge_dynamicproxy_upstream_errors_total"),
            tools: gauge!("forge_dynamicproxy_route_table_tools"),
            routes: gauge!("forge_dynamicproxy_route_table_routes"),
            frontends: gauge!("forge_dynamicproxy_route_table_frontends"),
            invalid: gauge!("forge_dynamicproxy_route_table_invalid"),
            over_budget: gauge!("forge_dynamicproxy_route_table_over_budget"),
            table_age: gauge!("forge_dynamicproxy_route_table_age_seconds"),
            redis_up: gauge!("forge_dynamicproxy_redis_up"),
            full_syncs: counter!("forge_dynamicproxy_route_full_syncs_total"),
            patches: counter!("forge_dynamicproxy_route_patches_total"),
            refusals: [
                "banned_ip",
                "no_user_agent",
                "blocked_user_agent",
                "blocked_referer",
            ]
            .map(|r| counter!("forge_dynamicproxy_refused_total", "reason" => r)),
            rate_limited: counter!("forge_dynamicproxy_rate_limited_total"),
        }
    }

    /// Counts a response.
    pub fn response(&self, status: http::StatusCode) {
        let i = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        if let Some(c) = self.status.get(i) {
            c.increment(1);
        }
    }

    /// Counts a refused request.
    pub fn refused(&self, r: Refusal) {
        let i = match r {
            Refusal::BannedIp => 0,
            Refusal::NoUserAgent => 1,
            Refusal::BlockedUserAgent => 2,
            Refusal::BlockedReferer => 3,
        };
        self.refusals[i].increment(1);
    }

    /// Records the size of a newly published table.
    pub fn set_table(&self, t: &RouteTable) {
        self.tools.set(t.tool_count() as f64);
        self.routes.set(t.route_count() as f64);
        self.frontends.set(t.frontend_count() as f64);
        self.invalid.set(t.invalid_count() as f64);
        self.over_budget.set(t.over_budget_count() as f64);
    }
}
