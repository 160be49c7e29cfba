//! `forge_core::routes` against a real redis-server: every script writes
//! what it says, refuses before writing anything, and `WAIT` counts real
//! replicas.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use forge_core::redis::RedisSettings;
use forge_core::routes::{self, Deletion, NewRoute, RouteError};
use forge_core::{PatternBudget, SchemaError, ToolName};
use forge_test_support::RedisServer;
use fred::prelude::*;

async fn client_of(redis: &RedisServer) -> Client {
    let client = RedisSettings::for_url(&redis.url()).client().unwrap();
    client.init().await.unwrap();
    client
}

fn tool(name: &str) -> ToolName {
    ToolName::parse(name).unwrap()
}

fn route<'a>(tool: &'a ToolName, pattern: &'a str, backend: &'a str) -> NewRoute<'a> {
    NewRoute {
        tool,
        pattern,
        backend,
        canonical_domain: None,
        budget: None,
    }
}

async fn hash(client: &Client, key: &str) -> BTreeMap<String, String> {
    client.hgetall(key).await.unwrap()
}

fn map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn register_writes_the_route_and_a_canonical_redirect() {
    let redis = RedisServer::start().await.unwrap();
    let db = client_of(&redis).await;
    let t = tool("mytool");
    routes::register(&db, &route(&t, ".*", "http://10.0.0.5:1"))
        .await
        .unwrap();
    assert_eq!(
        hash(&db, "prefix:mytool").await,
        map(&[(".*", "http://10.0.0.5:1")])
    );
    assert!(hash(&db, "redirect:mytool").await.is_empty());
    let canonical = NewRoute {
        canonical_domain: Some("toolforge.org"),
        ..route(&t, "^/api", "http://10.0.0.5:2")
    };
    routes::register(&db, &canonical).await.unwrap();
    // Repeating a write changes nothing.
    routes::register(&db, &canonical).await.unwrap();
    assert_eq!(
        hash(&db, "prefix:mytool").await,
        map(&[(".*", "http://10.0.0.5:1"), ("^/api", "http://10.0.0.5:2")])
    );
    assert_eq!(
        hash(&db, "redirect:mytool").await,
        map(&[("^/api", "mytool.toolforge.org")])
    );
    assert_eq!(
        routes::backend_of(&db, &t, "^/api")
            .await
            .unwrap()
            .as_deref(),
        Some("http://10.0.0.5:2")
    );
    assert_eq!(
        routes::redirects_of(&db, &t).await.unwrap(),
        map(&[("^/api", "mytool.toolforge.org")])
    );
}

#[tokio::test]
async fn a_new_pattern_over_the_budget_writes_nothing() {
    let redis = RedisServer::start().await.unwrap();
    let db = client_of(&redis).await;
    let t = tool("mytool");
    let budget = PatternBudget::new(16 * 1024, 2).unwrap();
    for p in ["^/a", "^/b"] {
        let r = NewRoute {
            budget: Some(&budget),
            ..route(&t, p, "http://10.0.0.5:1")
        };
        routes::register(&db, &r).await.unwrap();
    }
    let third = NewRoute {
        budget: Some(&budget),
        canonical_domain: Some("toolforge.org"),
        ..route(&t, "^/c", "http://10.0.0.5:1")
    };
    match routes::register(&db, &third).await {
        Err(RouteError::OverBudget(SchemaError::TooManyPatterns { have: 2, max: 2 })) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(routes::routes_of(&db, &t).await.unwrap().len(), 2);
    assert!(hash(&db, "redirect:mytool").await.is_empty());
    // An existing pattern may still move; without a budget any number fits.
    let moved = NewRoute {
        budget: Some(&budget),
        ..route(&t, "^/a", "http://10.0.0.5:9")
    };
    routes::register(&db, &moved).await.unwrap();
    routes::register(&db, &route(&t, "^/c", "http://10.0.0.5:1"))
        .await
        .unwrap();
    assert_eq!(routes::routes_of(&db, &t).await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_key_of_another_type_is_refused_before_anything_is_written() {
    let redis = RedisServer::start().await.unwrap();
    let db = client_of(&redis).await;
    let t = tool("mytool");
    let _: () = db
        .set("redirect:mytool", "not a hash", None, None, false)
        .await
        .unwrap();
    let canonical = NewRoute {
        canonical_domain: Some("toolforge.org"),
        ..route(&t, ".*", "http://10.0.0.5:1")
    };
    match routes::register(&db, &canonical).await {
        Err(RouteError::WrongType { key, found }) => {
            assert_eq!(
                (key.as_str(), found.as_str()),
                ("redirect:mytool", "string")
            );
        }
        other => panic!("{other:?}"),
    }
    // The prefix: half was not written either.
    assert!(hash(&db, "prefix:mytool").await.is_empty());
    // A registration that writes no redirect: entry does not touch it.
    routes::register(&db, &route(&t, ".*", "http://10.0.0.5:1"))
        .await
        .unwrap();
    // Deletes, which write both keys, delete nothing.
    assert!(matches!(
        routes::delete_if(&db, &t, ".*", Some("http://10.0.0.5:1")).await,
        Err(RouteError::WrongType { .. })
    ));
    assert!(matches!(
        routes::delete(&db, &t, ".*").await,
        Err(RouteError::WrongType { .. })
    ));
    assert_eq!(
        hash(&db, "prefix:mytool").await,
        map(&[(".*", "http://10.0.0.5:1")])
    );
}

#[tokio::test]
async fn compare_and_delete_removes_both_entries_only_if_unchanged() {
    let redis = RedisServer::start().await.unwrap();
    let db = client_of(&redis).await;
    let t = tool("mytool");
    let canonical = NewRoute {
        canonical_domain: Some("toolforge.org"),
        ..route(&t, ".*", "http://10.0.0.6:2")
    };
    routes::register(&db, &canonical).await.unwrap();
    // Someone saw the old backend: the new registration survives.
    assert_eq!(
        routes::delete_if(&db, &t, ".*", Some("http://10.0.0.5:1"))
            .await
            .unwrap(),
        Deletion::Changed {
            current: Some("http://10.0.0.6:2".into())
        }
    );
    assert_eq!(hash(&db, "redirect:mytool").await.len(), 1);
    assert_eq!(
        routes::delete_if(&db, &t, ".*", None).await.unwrap(),
        Deletion::Changed {
            current: Some("http://10.0.0.6:2".into())
        }
    );
    // The backend it holds: both entries go.
    assert_eq!(
        routes::delete_if(&db, &t, ".*", Some("http://10.0.0.6:2"))
            .await
            .unwrap(),
        Deletion::Deleted { fields: 2 }
    );
    assert!(hash(&db, "prefix:mytool").await.is_empty());
    assert!(hash(&db, "redirect:mytool").await.is_empty());
    assert_eq!(
        routes::delete_if(&db, &t, ".*", Some("http://10.0.0.6:2"))
            .await
            .unwrap(),
        Deletion::Changed { current: None }
    );
    // A stray redirect: entry (no route) is cleared by expecting nothing.
    let _: i64 = db
        .hset("redirect:mytool", (".*", "mytool.toolforge.org"))
        .await
        .unwrap();
    assert_eq!(
        routes::delete_if(&db, &t, ".*", None).await.unwrap(),
        Deletion::Deleted { fields: 1 }
    );
    assert!(hash(&db, "redirect:mytool").await.is_empty());
}

#[tokio::test]
async fn delete_removes_both_entries_whatever_they_hold() {
    let redis = RedisServer::start().await.unwrap();
    let db = client_of(&redis).await;
    let t = tool("mytool");
    let canonical = NewRoute {
        canonical_domain: Some("toolforge.org"),
        ..route(&t, ".*", "http://10.0.0.6:2")
    };
    routes::register(&db, &canonical).await.unwrap();
    routes::register(&db, &route(&t, "^/x", "http://10.0.0.6:2"))
        .await
        .unwrap();
    assert_eq!(routes::delete(&db, &t, ".*").await.unwrap(), 2);
    assert_eq!(routes::delete(&db, &t, ".*").await.unwrap(), 0);
    assert_eq!(
        hash(&db, "prefix:mytool").await,
        map(&[("^/x", "http://10.0.0.6:2")])
    );
    assert!(hash(&db, "redirect:mytool").await.is_empty());
}

#[tokio::test]
async fn listing_parses_keys_and_says_what_it_ignored() {
    let redis = RedisServer::start().await.unwrap();
    let db = client_of(&redis).await;
    for (t, backend) in [
        ("alpha", "http://10.0.0.5:1"),
        ("beta", "http://10.0.0.5:2"),
    ] {
        routes::register(&db, &route(&tool(t), ".*", backend))
            .await
            .unwrap();
    }
    let _: i64 = db
        .hset("prefix:Upper", (".*", "http://10.0.0.5:3"))
        .await
        .unwrap();
    let _: () = db
        .set("prefix:stringly", "x", None, None, false)
        .await
        .unwrap();
    let listing = routes::list_tools(&db).await.unwrap();
    let tools: Vec<&str> = listing.tools.keys().map(ToolName::as_str).collect();
    assert_eq!(tools, ["alpha", "beta"]);
    assert_eq!(listing.tools[&tool("beta")][".*"], "http://10.0.0.5:2");
    let mut ignored: Vec<&str> = listing.ignored.iter().map(|(k, _)| k.as_str()).collect();
    ignored.sort_unstable();
    assert_eq!(ignored, ["prefix:Upper", "prefix:stringly"]);
}

#[tokio::test]
async fn wait_counts_real_replicas() {
    let master = RedisServer::start().await.unwrap();
    let db = client_of(&master).await;
    let t = tool("mytool");
    routes::register(&db, &route(&t, ".*", "http://10.0.0.5:1"))
        .await
        .unwrap();
    routes::wait_for_replicas(&db, 0, Duration::from_millis(1), Duration::from_secs(5))
        .await
        .unwrap();
    match routes::wait_for_replicas(&db, 1, Duration::from_millis(200), Duration::from_secs(5))
        .await
    {
        Err(RouteError::NotReplicated {
            acked: 0,
            wanted: 1,
            timeout_ms: 200,
        }) => {}
        other => panic!("{other:?}"),
    }
    let _replica = RedisServer::builder()
        .replica_of("127.0.0.1", master.port())
        .start()
        .await
        .unwrap();
    // The replica syncs in the background; WAIT returns once it has the
    // write (bounded generously for a loaded machine).
    routes::register(&db, &route(&t, "^/b", "http://10.0.0.5:1"))
        .await
        .unwrap();
    routes::wait_for_replicas(&db, 1, Duration::from_secs(30), Duration::from_secs(5))
        .await
        .unwrap();
}
