//! forgectl's verbs against real servers, and the pieces high availability
//! is built from: durable (replica-acknowledged) writes and leases.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use forge_core::lease::Lease;
use forge_core::redis::RedisSettings;
use forge_core::{Shutdown, StatusBoard, admin};
use forge_rq::{EnqueueOptions, Queue, RqError};
use forge_test_support::{RedisServer, SentinelServer};
use fred::prelude::*;

async fn forgectl(config: &Path, args: &[&str]) -> Output {
    let bin = env!("CARGO_BIN_EXE_forgectl");
    let mut all = vec!["--config".to_owned(), config.to_string_lossy().into_owned()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    tokio::task::spawn_blocking(move || std::process::Command::new(bin).args(all).output().unwrap())
        .await
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn pool(url: &str) -> Pool {
    let p = RedisSettings::for_url(url).pool().unwrap();
    p.init().await.unwrap();
    p
}

#[tokio::test]
async fn durable_enqueue_needs_a_replica() {
    let master = RedisServer::start().await.unwrap();
    let q = Queue::new(pool(&master.url()).await, "default")
        .with_min_replicas(1, Duration::from_millis(200));
    match q
        .enqueue("forge.echo", vec![], EnqueueOptions::default())
        .await
    {
        Err(RqError::NotReplicated {
            acked: 0,
            wanted: 1,
            ..
        }) => {}
        other => panic!("expected NotReplicated, got {other:?}"),
    }
    let replica = RedisServer::builder()
        .replica_of("127.0.0.1", master.port())
        .start()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match q
            .enqueue("forge.echo", vec![], EnqueueOptions::default())
            .await
        {
            Ok(id) => {
                // the job is on the replica
                let c = RedisSettings::for_url(&replica.url()).client().unwrap();
                c.init().await.unwrap();
                assert!(c.exists::<bool, _>(format!("rq:job:{id}")).await.unwrap());
                break;
            }
            Err(RqError::NotReplicated { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    // no replica-acknowledgement asked: the master's word is enough
    let plain = Queue::new(pool(&master.url()).await, "default");
    plain
        .enqueue("forge.echo", vec![], EnqueueOptions::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_lease_has_one_holder_and_moves_on_release() {
    let redis = RedisServer::start().await.unwrap();
    let client = RedisSettings::for_url(&redis.url()).client().unwrap();
    client.init().await.unwrap();
    let a = Lease::new("idm-timers", "host-a:1", Duration::from_secs(5));
    let b = Lease::new("idm-timers", "host-b:1", Duration::from_secs(5));
    assert!(a.try_acquire(&client).await.unwrap());
    assert!(!b.try_acquire(&client).await.unwrap());
    assert!(
        a.try_acquire(&client).await.unwrap(),
        "renewal by the holder"
    );
    assert!(
        !b.release(&client).await.unwrap(),
        "only the holder releases"
    );
    assert_eq!(
        Lease::holder_of(&client, "idm-timers")
            .await
            .unwrap()
            .as_deref(),
        Some("host-a:1")
    );
    assert!(a.release(&client).await.unwrap());
    assert!(b.try_acquire(&client).await.unwrap());
    assert!(b.release(&client).await.unwrap());

    // keepers: exactly one active; when it stops, the other takes over
    let board_a = StatusBoard::new("a", "0", "g");
    let board_b = StatusBoard::new("b", "0", "g");
    let (stop_a, stop_b) = (Shutdown::new(), Shutdown::new());
    let short = |h: &str| Lease::new("worker", h, Duration::from_millis(600));
    let c2 = RedisSettings::for_url(&redis.url()).client().unwrap();
    c2.init().await.unwrap();
    let (rx_a, task_a) = short("a").keep(client.clone(), Some(board_a.clone()), stop_a.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (rx_b, _task_b) = short("b").keep(c2, Some(board_b.clone()), stop_b.clone());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(*rx_a.borrow() && !*rx_b.borrow());
    assert_eq!(board_a.status_json()["role"], "active");
    assert_eq!(board_b.status_json()["role"], "standby");
    stop_a.trigger();
    task_a.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !*rx_b.borrow() {
        assert!(Instant::now() < deadline, "b never took over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(board_b.status_json()["lease_worker"], "held");
    stop_b.trigger();
}

/// A daemon's admin endpoint with a hand-filled status board.
async fn fake_daemon(
    name: &'static str,
    master: &str,
    checked_ago: u64,
    shutdown: &Shutdown,
) -> (String, Arc<StatusBoard>) {
    let board = StatusBoard::new(name, forge_core::VERSION, "gen1");
    board.set_field("redis_role", "master");
    board.set_field("redis_master", master);
    board.set_field("redis_replid", "replid-of-10.0.0.1");
    board.set_field(
        "redis_master_checked_at",
        forgectl::status::unix_now() - checked_ago,
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(admin::serve(
        l,
        admin::router(board.clone()),
        shutdown.clone(),
    ));
    (url, board)
}

#[tokio::test]
async fn status_flags_disagreement_staleness_and_unreachable_daemons() {
    let shutdown = Shutdown::new();
    let (p1, _) = fake_daemon("dynamicproxy", "10.0.0.1:6379", 0, &shutdown).await;
    let (p2, b2) = fake_daemon("dynamicproxy", "10.0.0.1:6379", 0, &shutdown).await;
    let (l1, _) = fake_daemon("proxylistener", "10.0.0.1:6379", 1, &shutdown).await;
    // a dynamicproxy reading its local Redis, which is the master: it sees it
    // as 127.0.0.1, but the replication id says it is the same server
    let (p3, _) = fake_daemon("dynamicproxy", "127.0.0.1:6379", 0, &shutdown).await;
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("forgectl.toml");
    let write = |hosts: &[(&str, Vec<&str>)]| {
        let mut t = String::new();
        for (name, admin) in hosts {
            t.push_str(&format!(
                "[[hosts]]\nname = \"{name}\"\nadmin = [{}]\n",
                admin
                    .iter()
                    .map(|a| format!("\"{a}\""))
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
        t.push_str("[status]\nstale_after_s = 10\ntimeout_ms = 500\n");
        std::fs::write(&conf, t).unwrap();
    };
    write(&[("proxy-01", vec![&p1, &l1]), ("proxy-02", vec![&p2, &p3])]);
    let o = forgectl(&conf, &["status"]).await;
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("all 4 daemon(s) agree: master 10.0.0.1:6379"),
        "{}",
        text(&o)
    );

    // proxy-02 sees another master, its look is stale, it runs another
    // config generation; a third host does not answer
    b2.set_field("redis_master", "10.0.0.2:6379");
    b2.set_field("redis_replid", "replid-of-10.0.0.2");
    b2.set_field(
        "redis_master_checked_at",
        forgectl::status::unix_now() - 120,
    );
    b2.set_generation("gen2");
    write(&[
        ("proxy-01", vec![&p1, &l1]),
        ("proxy-02", vec![&p2]),
        ("proxy-03", vec!["http://127.0.0.1:9"]),
    ]);
    let o = forgectl(&conf, &["status"]).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("sees master 10.0.0.2:6379 not 10.0.0.1:6379"),
        "{t}"
    );
    assert!(t.contains("stale: last looked at Redis 120s ago"), "{t}");
    assert!(t.contains("config generation gen2 differs"), "{t}");
    assert!(t.contains("proxy-03") && t.contains("unreachable"), "{t}");

    // JSON for scripts
    let o = forgectl(&conf, &["status", "--json"]).await;
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["rows"].as_array().unwrap().len(), 4);
    assert_eq!(doc["rows"][0]["on_expected_master"], true);

    // a configuration error names the line
    std::fs::write(&conf, "[[hosts]]\nname = \"x\"\nadmin = [\"ftp://x\"]\n").unwrap();
    let o = forgectl(&conf, &["status"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("forgectl.toml"), "{}", text(&o));
    shutdown.trigger();
}

#[tokio::test]
async fn routes_and_queue_verbs_through_sentinel() {
    let redis = RedisServer::start().await.unwrap();
    let sentinel = SentinelServer::start("forge", "127.0.0.1", redis.port(), 1)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("forgectl.toml");
    std::fs::write(
        &conf,
        format!(
            "[redis]\nsentinels = [\"127.0.0.1:{}\"]\nservice_name = \"forge\"\n",
            sentinel.port()
        ),
    )
    .unwrap();
    let o = forgectl(
        &conf,
        &["routes", "set", "mytool", ".*", "http://10.0.0.5:34567"],
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let o = forgectl(
        &conf,
        &[
            "routes",
            "set",
            "mytool",
            "^/api",
            "http://10.0.0.6:8000",
            "--canonical",
            "toolforge.org",
        ],
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let o = forgectl(&conf, &["routes", "get", "mytool"]).await;
    let t = text(&o);
    assert!(t.contains(".*\thttp://10.0.0.5:34567"), "{t}");
    assert!(
        t.contains("^/api\thttp://10.0.0.6:8000\tcanonical mytool.toolforge.org"),
        "{t}"
    );
    let o = forgectl(&conf, &["routes", "list"]).await;
    assert!(text(&o).contains("1 tool(s)"), "{}", text(&o));
    // bad input: refused, nothing written
    for bad in [
        vec!["routes", "set", "my_tool!", ".*", "http://10.0.0.5:1"],
        vec!["routes", "set", "mytool", ".*", "ftp://10.0.0.5:1"],
        vec!["routes", "set", "mytool", "(a+", "http://10.0.0.5:1"],
    ] {
        let o = forgectl(&conf, &bad).await;
        assert_eq!(o.status.code(), Some(1), "{bad:?}: {}", text(&o));
    }
    // a write that needs a replica there isn't: refused with the reason
    let o = forgectl(
        &conf,
        &[
            "routes",
            "set",
            "mytool",
            ".*",
            "http://10.0.0.7:1",
            "--min-replicas",
            "1",
            "--wait-ms",
            "100",
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("not replicated"), "{}", text(&o));
    let o = forgectl(&conf, &["routes", "del", "mytool", "^/api"]).await;
    assert!(text(&o).contains("deleted"), "{}", text(&o));
    let o = forgectl(&conf, &["routes", "del", "mytool", "^/api"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));

    // queue verbs
    let q = Queue::new(pool(&redis.url()).await, "default");
    for _ in 0..3 {
        q.enqueue("forge.echo", vec![], EnqueueOptions::default())
            .await
            .unwrap();
    }
    let o = forgectl(&conf, &["queue", "info"]).await;
    let t = text(&o);
    assert!(
        t.lines()
            .any(|l| l.starts_with("default") && l.contains(" 3 ")),
        "{t}"
    );
    let o = forgectl(&conf, &["queue", "suspend"]).await;
    assert!(o.status.success(), "{}", text(&o));
    let o = forgectl(&conf, &["queue", "info"]).await;
    assert!(text(&o).contains("SUSPENDED"), "{}", text(&o));
    let o = forgectl(&conf, &["queue", "resume"]).await;
    assert!(o.status.success(), "{}", text(&o));
    let o = forgectl(&conf, &["queue", "empty", "default"]).await;
    assert!(text(&o).contains("removed 3 job(s)"), "{}", text(&o));
    let o = forgectl(&conf, &["queue", "failed", "default"]).await;
    assert!(text(&o).contains("0 failed job(s)"), "{}", text(&o));
}
