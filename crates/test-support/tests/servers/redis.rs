//! Redis and Sentinel, driven with fred.

use std::time::Duration;

use forge_test_support::{RedisServer, SentinelServer};
use fred::prelude::*;

/// A fred client for `url` with a command timeout (fred has none by default) and quick
/// reconnects.
async fn client(url: &str) -> Client {
    let config = Config::from_url(url).expect("a valid Redis URL");
    let client = Builder::from_config(config)
        .with_performance_config(|perf| perf.default_command_timeout = Duration::from_secs(1))
        .with_connection_config(|conn| {
            conn.connection_timeout = Duration::from_secs(1);
            conn.internal_command_timeout = Duration::from_secs(1);
        })
        .set_policy(ReconnectPolicy::new_constant(0, 100))
        .build()
        .expect("a fred client");
    client.init().await.expect("connect to Redis");
    client
}

/// Retries `GET key` until it answers (the client reconnects in the background).
async fn get_eventually(client: &Client, key: &str) -> Option<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match client.get::<Option<String>, _>(key).await {
            Ok(value) => return value,
            Err(error) if tokio::time::Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("GET {key} kept failing: {error}"),
        }
    }
}

#[tokio::test]
async fn value_survives_pause_and_restart() {
    let mut redis = RedisServer::builder()
        .appendonly(true)
        .start()
        .await
        .unwrap();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
    assert_eq!(redis.addr().port(), redis.port());

    let client = client(&redis.url()).await;
    let _: () = client
        .set("prefix:tool", "http://10.0.0.5:34567", None, None, false)
        .await
        .unwrap();
    let value: String = client.get("prefix:tool").await.unwrap();
    assert_eq!(value, "http://10.0.0.5:34567");

    // A frozen server answers nothing: the command times out.
    redis.pause().unwrap();
    let frozen = client.get::<Option<String>, _>("prefix:tool").await;
    assert!(frozen.is_err(), "a paused server answered: {frozen:?}");
    redis.resume().unwrap();
    assert_eq!(
        get_eventually(&client, "prefix:tool").await.as_deref(),
        Some("http://10.0.0.5:34567")
    );

    // A clean restart on the same port keeps the AOF data.
    let port = redis.port();
    redis.restart().await.unwrap();
    assert_eq!(redis.port(), port);
    assert_eq!(
        get_eventually(&client, "prefix:tool").await.as_deref(),
        Some("http://10.0.0.5:34567")
    );

    // After a crash nothing answers.
    redis.kill().unwrap();
    assert!(!redis.is_running());
    assert!(
        client
            .get::<Option<String>, _>("prefix:tool")
            .await
            .is_err()
    );
    let _ = client.quit().await;
}

#[tokio::test]
async fn replica_follows_and_sentinel_fails_over() {
    let mut master = RedisServer::start().await.unwrap();
    let replica = RedisServer::builder()
        .replica_of("127.0.0.1", master.port())
        .start()
        .await
        .unwrap();

    let to_master = client(&master.url()).await;
    let _: () = to_master.set("k", "v", None, None, false).await.unwrap();
    let to_replica = client(&replica.url()).await;
    assert_eq!(get_eventually_value(&to_replica, "k", "v").await, "v");

    let sentinel = SentinelServer::start("mymaster", "127.0.0.1", master.port(), 1)
        .await
        .unwrap();
    assert_eq!(sentinel.master_name(), "mymaster");
    let to_sentinel = client(&sentinel.url()).await;
    let master_addr = |client: Client| async move {
        client
            .custom::<Vec<String>, Value>(
                fred::cmd!("SENTINEL"),
                vec!["get-master-addr-by-name".into(), "mymaster".into()],
            )
            .await
            .unwrap()
    };
    assert_eq!(
        master_addr(to_sentinel.clone()).await,
        vec!["127.0.0.1".to_owned(), master.port().to_string()]
    );

    // Crash the master: the sentinel (down-after 1 s) promotes the replica.
    let _ = to_master.quit().await;
    master.kill().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let reported = master_addr(to_sentinel.clone()).await;
        if reported == vec!["127.0.0.1".to_owned(), replica.port().to_string()] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failover to the replica; sentinel still reports {reported:?}; log:\n{}",
            std::fs::read_to_string(sentinel.log_path()).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let role: Vec<Value> = to_replica
        .custom(fred::cmd!("ROLE"), Vec::<Value>::new())
        .await
        .unwrap();
    assert_eq!(role[0].as_string().as_deref(), Some("master"));
    let _ = to_replica.quit().await;
    let _ = to_sentinel.quit().await;
}

/// Polls `GET key` until it returns `expected` (replication is asynchronous).
async fn get_eventually_value(client: &Client, key: &str, expected: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(value)) = client.get::<Option<String>, _>(key).await
            && value == expected
        {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key} never became {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
