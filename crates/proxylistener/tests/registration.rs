//! Acceptance tests of the registration protocol against a real Redis and a
//! real identd.

#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Harness, register};
use forge_test_support::{IdentAnswer, free_port};
use fred::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn register_canonical_and_unregister_have_todays_effects() {
    let h = Harness::start().await;

    assert_eq!(h.send(&register(".*", "http://127.0.0.1:5000")).await, "ok");
    assert_eq!(
        h.hgetall("prefix:mytool").await,
        map(&[(".*", "http://127.0.0.1:5000")])
    );
    assert_eq!(h.all_keys().await, vec!["prefix:mytool"]);

    // registerCanonical: both hashes, exactly one "ok" (never "okok").
    let reply = h
        .send(b"registerCanonical\r\n^/api/\r\nhttp://127.0.0.1:5001\r\n")
        .await;
    assert_eq!(reply, "ok");
    assert_eq!(
        h.hgetall("prefix:mytool").await,
        map(&[
            (".*", "http://127.0.0.1:5000"),
            ("^/api/", "http://127.0.0.1:5001")
        ])
    );
    assert_eq!(
        h.hgetall("redirect:mytool").await,
        map(&[("^/api/", "mytool.toolforge.org")])
    );

    // unregister: HDEL from both hashes.
    assert_eq!(h.send(b"unregister\n^/api/\n").await, "ok");
    assert_eq!(
        h.hgetall("prefix:mytool").await,
        map(&[(".*", "http://127.0.0.1:5000")])
    );
    assert!(h.hgetall("redirect:mytool").await.is_empty());
    assert_eq!(h.send(b"unregister\n.*\n").await, "ok");
    assert!(h.all_keys().await.is_empty());
    // Twice is harmless.
    assert_eq!(h.send(b"unregister\n.*\n").await, "ok");

    // The ident query named exactly this connection's ports.
    let queries = h.identd.queries();
    assert!(queries.iter().all(|(_, ours)| *ours == h.addr.port()));
}

#[tokio::test]
async fn bad_requests_get_one_fail_line_and_write_nothing() {
    let h = Harness::start_with(|c| c.limits.max_line_bytes = 128).await;
    let long_route = format!("register\n{}\nhttp://127.0.0.1:5000\n", "a".repeat(200));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"hello\n.*\nhttp://127.0.0.1:5000\n".to_vec(),
            "unknown command",
        ),
        (
            b"REGISTER\n.*\nhttp://127.0.0.1:5000\n".to_vec(),
            "unknown command",
        ),
        (long_route.into_bytes(), "longer than 128 bytes"),
        (b"register\n.*\n".to_vec(), "missing url line"),
        (b"unregister\n".to_vec(), "missing route line"),
        (b"".to_vec(), "empty request"),
        (
            b"register\n(\nhttp://127.0.0.1:5000\n".to_vec(),
            "bad route",
        ),
        (
            b"register\n\nhttp://127.0.0.1:5000\n".to_vec(),
            "route pattern is empty",
        ),
        (
            b"register\n(a)\\1\nhttp://127.0.0.1:5000\n".to_vec(),
            "bad route",
        ),
        (b"register\n.*\nnot a url\n".to_vec(), "bad backend URL"),
        (
            b"register\n.*\nftp://127.0.0.1:5000\n".to_vec(),
            "http or https",
        ),
        (
            b"register\n.*\nhttp://127.0.0.1:5000/path\n".to_vec(),
            "path",
        ),
        (
            b"register\n.*\nhttp://10.0.0.5:5000\n".to_vec(),
            "not this client's address",
        ),
        (
            b"register\n.*\nhttp://localhost:5000\n".to_vec(),
            "must be an IP address",
        ),
        (
            b"register\n.*\nhttp://127.0.0.1:80\n".to_vec(),
            "outside the allowed range",
        ),
        (
            b"register\n\xff\xfe\nhttp://127.0.0.1:5000\n".to_vec(),
            "not UTF-8",
        ),
    ];
    for (request, expect) in cases {
        let reply = h.send(&request).await;
        assert!(
            reply.starts_with("fail: ") && reply.contains(expect),
            "{:?} → {reply:?} (wanted {expect:?})",
            String::from_utf8_lossy(&request)
        );
        assert!(!reply.contains('\n'), "one line: {reply:?}");
    }
    assert!(h.all_keys().await.is_empty());
}

#[tokio::test]
async fn request_timeout_is_one_fail_line() {
    let h = Harness::start().await;
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    s.write_all(b"register\n.*\n").await.unwrap();
    // Never send the URL line nor close.
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply, "fail: timed out waiting for the url line");
    assert!(h.all_keys().await.is_empty());
}

#[tokio::test]
async fn ident_failures_are_refused_with_a_reason() {
    let h = Harness::start().await;
    let req = register(".*", "http://127.0.0.1:5000");
    let cases = [
        (IdentAnswer::Silent, "did not answer within"),
        (IdentAnswer::Close, "closed the connection without a reply"),
        (
            IdentAnswer::WrongPorts("tools.mytool".into()),
            "answered for ports",
        ),
        (IdentAnswer::User("root".into()), "not a tool account"),
        (IdentAnswer::User("tools.".into()), "not a tool account"),
        (
            IdentAnswer::User("other.mytool".into()),
            "not a tool account",
        ),
        (IdentAnswer::Error("NO-USER".into()), "ERROR: NO-USER"),
        (IdentAnswer::Raw("garbage".into()), "malformed ident reply"),
    ];
    for (answer, expect) in cases {
        let reply = h.send_as(&req, answer.clone()).await;
        assert!(
            reply.starts_with("fail: ident authentication failed: ") && reply.contains(expect),
            "{answer:?} → {reply:?}"
        );
    }
    assert!(h.all_keys().await.is_empty());

    // No identd at all.
    let h2 = Harness::start_with(|c| c.ident.port = free_port()).await;
    let reply = h2.send(&req).await;
    assert!(
        reply.starts_with("fail: ident authentication failed: no identd answered"),
        "{reply}"
    );
    assert!(h2.all_keys().await.is_empty());
}

#[tokio::test]
async fn unregister_leaves_a_moved_backend_alone() {
    let h = Harness::start().await;
    assert_eq!(h.send(&register(".*", "http://127.0.0.1:5000")).await, "ok");
    // The tool's new job registered from another host meanwhile.
    let _: () =
        h.db.hset("prefix:mytool", (".*", "http://10.1.2.3:6000"))
            .await
            .unwrap();
    let _: () =
        h.db.hset("redirect:mytool", (".*", "mytool.toolforge.org"))
            .await
            .unwrap();
    // The old job's release.
    assert_eq!(h.send(b"unregister\n.*\n").await, "ok");
    assert_eq!(
        h.hgetall("prefix:mytool").await,
        map(&[(".*", "http://10.1.2.3:6000")])
    );
    assert_eq!(
        h.hgetall("redirect:mytool").await,
        map(&[(".*", "mytool.toolforge.org")])
    );
}

#[tokio::test]
async fn backend_networks_allow_exceptions() {
    // 10.1.2.3 is no real host here: the ownership check (adversarial.rs)
    // would refuse it, and this test is about the address policy.
    let h = Harness::start_with(|c| {
        c.policy.backend_networks = vec!["10.1.0.0/16".parse().unwrap()];
        c.ownership.verify = false;
    })
    .await;
    assert_eq!(h.send(&register(".*", "http://10.1.2.3:6000")).await, "ok");
    let reply = h.send(&register(".*", "http://10.2.0.1:6000")).await;
    assert!(reply.contains("not this client's address"), "{reply}");
    assert_eq!(h.send(b"unregister\n.*\n").await, "ok");
    assert!(h.all_keys().await.is_empty());
}

#[tokio::test]
async fn many_concurrent_clients() {
    // 100 patterns of one tool: over the default patterns-per-tool budget.
    let h = Harness::start_with(|c| {
        c.route_budget = forge_core::PatternBudget::new(16 * 1024, 128).unwrap();
    })
    .await;
    let mut tasks = Vec::new();
    for i in 0..100 {
        let addr = h.addr;
        tasks.push(tokio::spawn(async move {
            common::send_to(
                addr,
                &register(
                    &format!("^/r{i}/"),
                    &format!("http://127.0.0.1:{}", 5000 + i),
                ),
                None,
            )
            .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), "ok");
    }
    assert_eq!(h.hgetall("prefix:mytool").await.len(), 100);
}

#[tokio::test]
async fn redis_down_gives_fail_and_recovers() {
    let mut h = Harness::start().await;
    assert_eq!(h.send(&register(".*", "http://127.0.0.1:5000")).await, "ok");
    h.redis.kill().unwrap();
    let reply = h.send(&register(".*", "http://127.0.0.1:5001")).await;
    assert!(reply.starts_with("fail: redis"), "{reply}");
    assert!(!h.task.is_finished());
    h.redis.restart().await.unwrap();
    // Reconnection takes a moment (exponential back-off up to 2 s).
    let mut last = String::new();
    for _ in 0..100 {
        last = h.send(&register(".*", "http://127.0.0.1:5002")).await;
        if last == "ok" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, "ok");
}

#[tokio::test]
async fn read_only_replica_is_refused() {
    let h = Harness::start().await;
    // Turn our Redis into a replica of a master that isn't there.
    let _: () =
        h.db.custom(
            fred::cmd!("REPLICAOF"),
            vec!["127.0.0.1".to_string(), free_port().to_string()],
        )
        .await
        .unwrap();
    let reply = h.send(&register(".*", "http://127.0.0.1:5000")).await;
    assert!(reply.contains("read-only replica"), "{reply}");
    let _: () =
        h.db.custom(
            fred::cmd!("REPLICAOF"),
            vec!["NO".to_string(), "ONE".to_string()],
        )
        .await
        .unwrap();
    assert_eq!(h.send(&register(".*", "http://127.0.0.1:5000")).await, "ok");
}

#[tokio::test]
async fn durability_waits_for_replicas() {
    let h = Harness::start_with(|c| {
        c.durability.min_replicas = forge_core::redis::MinReplicas::Count(1);
        c.durability.timeout_ms = 200;
    })
    .await;
    let reply = h.send(&register(".*", "http://127.0.0.1:5000")).await;
    assert!(reply.starts_with("fail: not replicated: 0 of 1"), "{reply}");

    let replica = forge_test_support::RedisServer::builder()
        .replica_of("127.0.0.1", h.redis.port())
        .start()
        .await
        .unwrap();
    let mut last = String::new();
    for _ in 0..50 {
        last = h.send(&register(".*", "http://127.0.0.1:5001")).await;
        if last == "ok" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, "ok");
    drop(replica);
}

#[tokio::test]
async fn graceful_shutdown_stops_accepting() {
    let h = Harness::start().await;
    assert_eq!(h.send(&register(".*", "http://127.0.0.1:5000")).await, "ok");
    h.shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(5), h.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(h.addr).await.is_err());
}

#[tokio::test]
async fn trailing_input_does_not_destroy_the_reply() {
    let h = Harness::start().await;
    let mut request = register(".*", "http://127.0.0.1:5000");
    request.extend(std::iter::repeat_n(b'x', 20_000));
    assert_eq!(h.send(&request).await, "ok");
}

#[tokio::test]
async fn reloaded_policy_applies_to_the_next_request() {
    let h = Harness::start().await;
    assert_eq!(h.send(&register(".*", "http://127.0.0.1:5000")).await, "ok");
    let mut next = (*h.config.get()).clone();
    next.policy.min_backend_port = 6000;
    next.project = "other".into();
    h.config.replace(next);
    let reply = h.send(&register(".*", "http://127.0.0.1:5000")).await;
    assert!(
        reply.contains("outside the allowed range 6000-65535"),
        "{reply}"
    );
    let reply = h.send(&register(".*", "http://127.0.0.1:6000")).await;
    assert!(
        reply.contains("not a tool account (other.<tool>)"),
        "{reply}"
    );
}
