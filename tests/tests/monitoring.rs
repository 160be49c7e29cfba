//! The alerting rules shipped in `packaging/monitoring/`: Prometheus' own
//! `promtool` checks their syntax and runs their unit tests
//! (`forge-alerts.test.yml`), every alert links a section of
//! `docs/runbook.md` that exists, and a rule broken on purpose is caught.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

use std::path::Path;
use std::process::Command;

use forge_deploy_tests::{repo_root, require_tool};

fn promtool(dir: &Path, args: &[&str]) -> (bool, String) {
    require_tool("promtool");
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = repo_root().join("packaging/monitoring");
    let (ok, text) = promtool(&dir, &["check", "rules", "forge-alerts.yml"]);
    assert!(ok, "promtool check rules:\n{text}");
    let (ok, text) = promtool(&dir, &["test", "rules", "forge-alerts.test.yml"]);
    assert!(ok, "promtool test rules:\n{text}");
}

#[test]
fn every_alert_links_a_runbook_section_that_exists() {
    let rules =
        std::fs::read_to_string(repo_root().join("packaging/monitoring/forge-alerts.yml")).unwrap();
    let runbook = std::fs::read_to_string(repo_root().join("docs/runbook.md")).unwrap();
    // GitHub-style anchors of the runbook's headings.
    let anchors: Vec<String> = runbook
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    'a'..='z' | '0'..='9' | '-' | '_' => Some(c),
                    ' ' => Some('-'),
                    _ => None,
                })
                .collect()
        })
        .collect();
    let mut alerts = 0;
    for line in rules.lines() {
        let line = line.trim();
        if line.starts_with("- alert:") {
            alerts += 1;
        }
        if let Some(link) = line.strip_prefix("runbook: \"docs/runbook.md#") {
            let anchor = link.trim_end_matches('"');
            assert!(
                anchors.iter().any(|a| a == anchor),
                "no runbook section #{anchor} (have {anchors:?})"
            );
        }
    }
    let links = rules.matches("runbook: \"docs/runbook.md#").count();
    assert!(alerts >= 8, "{alerts} alerts");
    assert_eq!(alerts, links, "every alert names its runbook section");
}

/// The unit tests can fail: an alert whose threshold is broken (the route
/// table alarm raised to a day) no longer fires where the tests expect it.
#[test]
fn a_broken_rule_fails_the_unit_tests() {
    let src = repo_root().join("packaging/monitoring");
    let dir = tempfile::tempdir().unwrap();
    let rules = std::fs::read_to_string(src.join("forge-alerts.yml")).unwrap();
    let broken = rules.replace(
        "forge_dynamicproxy_route_table_age_seconds > 600",
        "forge_dynamicproxy_route_table_age_seconds > 86400",
    );
    assert_ne!(rules, broken, "the rule to break is where the test expects");
    std::fs::write(dir.path().join("forge-alerts.yml"), broken).unwrap();
    std::fs::copy(
        src.join("forge-alerts.test.yml"),
        dir.path().join("forge-alerts.test.yml"),
    )
    .unwrap();
    let (ok, text) = promtool(dir.path(), &["test", "rules", "forge-alerts.test.yml"]);
    assert!(!ok, "a broken rule passed its unit tests:\n{text}");
    assert!(text.contains("ForgeRouteTableStale"), "{text}");
}
