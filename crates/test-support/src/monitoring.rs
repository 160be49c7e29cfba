//! The Grafana dashboards shipped in `packaging/monitoring/dashboards/`, as
//! tests check them: a dashboard is only useful if every metric its queries
//! name is one the daemon exports, and a renamed metric would otherwise leave
//! a silently empty panel. A daemon's test scrapes its `/metrics` and asks
//! [`missing_dashboard_metrics`] which names of `<daemon>.json` it lacks.

use std::collections::BTreeSet;
use std::path::PathBuf;

/// The repository's `packaging/monitoring/dashboards/<daemon>.json`.
pub fn dashboard_path(daemon: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../packaging/monitoring/dashboards")
        .join(format!("{daemon}.json"))
}

/// Every `forge_…` metric name the queries (`panels[].targets[].expr`) of
/// `daemon`'s dashboard use. Panics when the file is missing or not a
/// dashboard with queries: that is a test failure.
pub fn dashboard_metrics(daemon: &str) -> BTreeSet<String> {
    let path = dashboard_path(daemon);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let panels = json["panels"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no panels", path.display()));
    let mut names = BTreeSet::new();
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            names.extend(metric_names_in(expr));
        }
    }
    assert!(
        !names.is_empty(),
        "{}: no forge_ metric in any query",
        path.display()
    );
    names
}

/// The `forge_…` identifiers in a PromQL expression (not inside quoted
/// label values).
fn metric_names_in(expr: &str) -> Vec<String> {
    let unquoted: String = expr.split('"').step_by(2).collect::<Vec<_>>().join(" ");
    let mut out = Vec::new();
    let mut rest = unquoted.as_str();
    while let Some(at) = rest.find("forge_") {
        let preceded_by_ident = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !preceded_by_ident {
            out.push(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    out
}

/// The metric names of a Prometheus text exposition (`/metrics`).
pub fn exposed_metrics(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The names `daemon`'s dashboard uses that `exposition` lacks (empty: all
/// there).
pub fn missing_dashboard_metrics(daemon: &str, exposition: &str) -> Vec<String> {
    let exposed = exposed_metrics(exposition);
    dashboard_metrics(daemon)
        .into_iter()
        .filter(|m| !exposed.contains(m))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_found_in_queries_and_expositions() {
        assert_eq!(
            metric_names_in(
                "histogram_quantile(0.99, sum by (le) (rate(forge_a_seconds_bucket{x=\"forge_no\"}[5m]))) / forge_b"
            ),
            ["forge_a_seconds_bucket", "forge_b"]
        );
        assert_eq!(metric_names_in("my_forge_x + forge_y"), ["forge_y"]);
        let text =
            "# TYPE forge_a counter\nforge_a{k=\"v\"} 1\nforge_b 2\n\nforge_c_bucket{le=\"1\"} 0\n";
        assert_eq!(
            exposed_metrics(text).into_iter().collect::<Vec<_>>(),
            ["forge_a", "forge_b", "forge_c_bucket"]
        );
    }

    #[test]
    fn every_shipped_dashboard_names_metrics() {
        for daemon in [
            "dynamicproxy",
            "proxylistener",
            "webservicemonitor",
            "rq-worker",
            "idm-web",
        ] {
            assert!(!dashboard_metrics(daemon).is_empty(), "{daemon}");
        }
    }
}
