//! Architecture invariant: only `forge_core::routes` writes route keys.
//!
//! Reads every crate's `src/` (unit-test modules at the end of a file
//! excepted, and `forge-test-support`, whose stand-in of today's
//! registration daemon spells keys by design) and fails when a file outside
//! `forge_core::{schema, routes}` spells a route key, or when a Lua script
//! lives outside the files that own scripts.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// Files that may spell route keys: the schema builds them, `routes` writes
/// and reads them.
const ROUTE_KEY_OWNERS: &[&str] = &[
    "crates/forge-core/src/schema.rs",
    "crates/forge-core/src/routes.rs",
];

/// Spellings of route keys (`prefix:`, `redirect:`, `frontend:`) that only
/// the owners may use.
const ROUTE_KEY_SPELLINGS: &[&str] = &[
    "RedisKey::Prefix(",
    "RedisKey::Redirect(",
    "RedisKey::Frontend(",
    "PREFIX_KEY_PREFIX",
    "REDIRECT_KEY_PREFIX",
    "FRONTEND_KEY_PREFIX",
    "\"prefix:",
    "\"redirect:",
    "\"frontend:",
    "'prefix:",
    "'redirect:",
];

/// Files (or directories) that may hold Lua scripts: route writes, the
/// lease, the monitor's throttle and probe counters, the job queue. None of
/// them may touch a route key (checked above).
const SCRIPT_OWNERS: &[&str] = &[
    "crates/forge-core/src/routes.rs",
    "crates/forge-core/src/lease.rs",
    "crates/webservicemonitor/src/store.rs",
    "crates/rq/src/",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs" || e == "lua") {
            out.push(path);
        }
    }
}

/// Every source file of every crate but test-support, relative to the
/// workspace, with its text up to its unit-test module.
fn crate_sources() -> Vec<(String, String)> {
    let root = workspace();
    let mut files = Vec::new();
    for krate in std::fs::read_dir(root.join("crates")).unwrap() {
        let krate = krate.unwrap().path();
        if krate.ends_with("test-support") {
            continue;
        }
        let src = krate.join("src");
        if src.is_dir() {
            sources(&src, &mut files);
        }
    }
    assert!(files.len() > 50, "found only {} source files", files.len());
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let code = match text.find("#[cfg(test)]") {
                Some(at) => text[..at].to_owned(),
                None => text,
            };
            let rel = path
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (rel, code)
        })
        .collect()
}

#[test]
fn only_forge_core_routes_writes_route_keys() {
    let mut broken = Vec::new();
    for (file, code) in crate_sources() {
        if ROUTE_KEY_OWNERS.contains(&file.as_str()) {
            continue;
        }
        for spelling in ROUTE_KEY_SPELLINGS {
            if let Some(line) = code.lines().position(|l| l.contains(spelling)) {
                broken.push(format!("{file}:{}: {spelling}", line + 1));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "route keys spelled outside forge_core::routes (use its functions):\n{}",
        broken.join("\n")
    );
}

#[test]
fn lua_scripts_live_only_with_their_keys_owners() {
    let mut broken = Vec::new();
    for (file, code) in crate_sources() {
        if SCRIPT_OWNERS.iter().any(|owner| file.starts_with(owner)) {
            continue;
        }
        if let Some(line) = code.lines().position(|l| l.contains("redis.call(")) {
            broken.push(format!("{file}:{}", line + 1));
        }
    }
    assert!(
        broken.is_empty(),
        "Lua scripts outside the modules that own their keys (route writes belong in forge_core::routes):\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_scripts_quoted_in_the_docs_are_the_scripts_run() {
    use forge_core::routes::{DELETE_IF_LUA, REGISTER_LUA};
    let doc = std::fs::read_to_string(workspace().join("docs/proxylistener.md")).unwrap();
    for script in [REGISTER_LUA, DELETE_IF_LUA] {
        let (guard, body) = script.split_once("return nil\nend\n").unwrap();
        let guard = format!("{}return nil\nend", guard.trim_start());
        for part in [guard.as_str(), body.trim()] {
            assert!(
                doc.contains(part),
                "docs/proxylistener.md does not quote:\n{part}"
            );
        }
    }
}
