//! The route table follows Redis without restarts, and Redis trouble never
//! changes routing silently.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use dynamicproxy::config::Startup;
use forge_test_support::RedisServer;
use hyper::StatusCode;

async fn routed_to(p: &ProxyUnderTest, host: &str, want: &str) -> bool {
    get(p.http, host, "/").await.backend() == want
}

#[tokio::test]
async fn changes_in_redis_are_followed_without_restart() {
    let redis = RedisServer::start().await.unwrap();
    let port = redis.port();
    let default = echo_backend("default").await;
    let one = echo_backend("one").await;
    let two = echo_backend("two").await;
    // No periodic resync during the test: every change must arrive through
    // keyspace notifications.
    let mut c = test_config(&redis.url(), &default.url());
    c.routes.resync_interval_ms = 600_000;
    let p = start_proxy(c).await;
    wait_serving(&p).await;
    let host = "tool.toolforge.org";

    // added
    cli(port, &["HSET", "prefix:tool", ".*", &one.url()]);
    eventually("added route", || routed_to(&p, host, "one")).await;
    // changed
    cli(port, &["HSET", "prefix:tool", ".*", &two.url()]);
    eventually("changed route", || routed_to(&p, host, "two")).await;
    // a second pattern added to the same hash
    cli(port, &["HSET", "prefix:tool", "^/one", &one.url()]);
    eventually("second pattern", || async {
        get(p.http, host, "/one/x").await.backend() == "one"
    })
    .await;
    assert_eq!(get(p.http, host, "/other").await.backend(), "two");
    // field deleted
    cli(port, &["HDEL", "prefix:tool", "^/one"]);
    eventually("field deleted", || async {
        get(p.http, host, "/one/x").await.backend() == "two"
    })
    .await;
    // key deleted
    cli(port, &["DEL", "prefix:tool"]);
    eventually("deleted route", || routed_to(&p, host, "default")).await;
    // expired
    cli(port, &["HSET", "prefix:tool", ".*", &one.url()]);
    eventually("re-added route", || routed_to(&p, host, "one")).await;
    cli(port, &["PEXPIRE", "prefix:tool", "300"]);
    eventually("expired route", || routed_to(&p, host, "default")).await;
    // renamed
    cli(port, &["HSET", "prefix:old", ".*", &one.url()]);
    eventually("old name routed", || {
        routed_to(&p, "old.toolforge.org", "one")
    })
    .await;
    cli(port, &["RENAME", "prefix:old", "prefix:new"]);
    eventually("renamed route", || async {
        routed_to(&p, "new.toolforge.org", "one").await
            && routed_to(&p, "old.toolforge.org", "default").await
    })
    .await;
    // frontend sets follow too
    cli(port, &["SADD", "frontend:vps.example.org", &two.url()]);
    eventually("frontend added", || routed_to(&p, "vps.example.org", "two")).await;
    cli(port, &["SREM", "frontend:vps.example.org", &two.url()]);
    eventually("frontend removed", || async {
        get(p.http, "vps.example.org", "/").await.status == StatusCode::MISDIRECTED_REQUEST
    })
    .await;
}

#[tokio::test]
async fn flushall_is_repaired_by_the_periodic_resync() {
    let redis = RedisServer::start().await.unwrap();
    let port = redis.port();
    let default = echo_backend("default").await;
    let one = echo_backend("one").await;
    let p = start_proxy(test_config(&redis.url(), &default.url())).await;
    wait_serving(&p).await;
    let host = "tool.toolforge.org";
    // wiped by FLUSHALL (no keyspace event: the periodic resync repairs it)
    cli(port, &["HSET", "prefix:new", ".*", &one.url()]);
    cli(port, &["HSET", "prefix:tool", ".*", &one.url()]);
    eventually("route before flush", || routed_to(&p, host, "one")).await;
    cli(port, &["FLUSHALL"]);
    eventually("flushed", || async {
        routed_to(&p, host, "default").await && routed_to(&p, "new.toolforge.org", "default").await
    })
    .await;
    let (_, list) = admin_json(&p, "/list").await;
    assert_eq!(list, serde_json::json!({}));
}

#[tokio::test]
async fn redis_trouble_keeps_the_last_table_and_says_so() {
    let mut redis = RedisServer::start().await.unwrap();
    let port = redis.port();
    let default = echo_backend("default").await;
    let one = echo_backend("one").await;
    let two = echo_backend("two").await;
    cli(port, &["HSET", "prefix:tool", ".*", &one.url()]);
    cli(port, &["HSET", "prefix:gone", ".*", &one.url()]);
    // No periodic resync: recovery must come from the reconnect itself.
    let mut c = test_config(&redis.url(), &default.url());
    c.routes.resync_interval_ms = 600_000;
    let p = start_proxy(c).await;
    wait_serving(&p).await;
    assert!(routed_to(&p, "tool.toolforge.org", "one").await);
    let (code, h) = admin_json(&p, "/healthz").await;
    assert_eq!(
        (code, h["checks"]["routes"]["state"].as_str()),
        (StatusCode::OK, Some("ok"))
    );

    // Hung Redis (SIGSTOP): cached routes keep working, /healthz says stale.
    redis.pause().unwrap();
    eventually("stale reported", || async {
        let (code, h) = admin_json(&p, "/healthz").await;
        code == StatusCode::OK
            && h["checks"]["routes"]["state"] == "degraded"
            && h["checks"]["routes"]["detail"]
                .as_str()
                .unwrap_or("")
                .contains("stale")
    })
    .await;
    for _ in 0..5 {
        assert!(routed_to(&p, "tool.toolforge.org", "one").await);
    }
    let r = get(p.admin, "localhost", "/metrics").await;
    assert!(
        r.body.contains("forge_dynamicproxy_redis_up 0"),
        "{}",
        r.body
    );

    // Killed: still serving.
    redis.kill().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(routed_to(&p, "tool.toolforge.org", "one").await);
    assert!(routed_to(&p, "gone.toolforge.org", "one").await);

    // Restarted with different data (it keeps nothing): the proxy resyncs.
    redis.restart().await.unwrap();
    cli(port, &["HSET", "prefix:tool", ".*", &two.url()]);
    eventually("resynced after restart", || async {
        routed_to(&p, "tool.toolforge.org", "two").await
            && routed_to(&p, "gone.toolforge.org", "default").await
    })
    .await;
    eventually("healthy again", || async {
        let (code, h) = admin_json(&p, "/healthz").await;
        code == StatusCode::OK && h["checks"]["routes"]["state"] == "ok"
    })
    .await;
    // Notifications work again after the reconnect.
    cli(port, &["HSET", "prefix:fresh", ".*", &one.url()]);
    eventually("new route after restart", || {
        routed_to(&p, "fresh.toolforge.org", "one")
    })
    .await;
}

#[tokio::test]
async fn start_up_without_redis_waits_or_serves_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("routes.json");
    let mut redis = RedisServer::start().await.unwrap();
    let default = echo_backend("default").await;
    let one = echo_backend("one").await;
    cli(redis.port(), &["HSET", "prefix:tool", ".*", &one.url()]);

    // A first proxy writes the snapshot.
    let mut c = test_config(&redis.url(), &default.url());
    c.routes.snapshot_path = Some(snapshot.clone());
    c.routes.startup = Startup::Snapshot;
    let first = start_proxy(c.clone()).await;
    wait_serving(&first).await;
    eventually("snapshot written", || async { snapshot.exists() }).await;
    drop(first);
    redis.kill().unwrap();

    // Redis unreachable, startup = "snapshot": serves the snapshot, degraded.
    let p = start_proxy(c.clone()).await;
    wait_serving(&p).await;
    assert!(routed_to(&p, "tool.toolforge.org", "one").await);
    let (code, h) = admin_json(&p, "/healthz").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(h["checks"]["routes"]["state"], "degraded", "{h}");
    assert!(
        h["checks"]["routes"]["detail"]
            .as_str()
            .unwrap()
            .contains("snapshot"),
        "{h}"
    );
    drop(p);

    // startup = "wait": no table, /healthz failing, no proxying yet.
    c.routes.startup = Startup::Wait;
    let p = start_proxy(c).await;
    eventually("failing reported", || async {
        let (code, h) = admin_json(&p, "/healthz").await;
        code == StatusCode::SERVICE_UNAVAILABLE && h["checks"]["routes"]["state"] == "failing"
    })
    .await;
    let r = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        get(p.http, "tool.toolforge.org", "/"),
    )
    .await;
    assert!(r.is_err(), "answered before any table was loaded: {r:?}");
    // Redis comes back: serving.
    redis.restart().await.unwrap();
    cli(redis.port(), &["HSET", "prefix:tool", ".*", &one.url()]);
    wait_serving(&p).await;
    eventually("routed after redis came", || {
        routed_to(&p, "tool.toolforge.org", "one")
    })
    .await;
}
