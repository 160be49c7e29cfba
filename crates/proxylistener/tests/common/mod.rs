//! Shared harness: a real redis-server, a real identd and the daemon running
//! in-process on a loopback port.

#![allow(dead_code, clippy::unwrap_used, clippy::field_reassign_with_default)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use forge_core::redis::RedisSettings;
use forge_core::{Reloadable, Shutdown};
use forge_test_support::{IdentAnswer, Identd, RedisServer};
use fred::prelude::*;
use proxylistener::{Config, Context, PendingChecks, RouteStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const TOOL_USER: &str = "tools.mytool";

pub struct Harness {
    pub redis: RedisServer,
    pub identd: Identd,
    pub addr: SocketAddr,
    pub shutdown: Shutdown,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
    pub db: Client,
    pub config: std::sync::Arc<Reloadable<Config>>,
    pub pending: PendingChecks,
}

pub fn test_config(redis_url: &str, ident_port: u16) -> Config {
    let mut config = Config::default();
    config.listen = "127.0.0.1:0".into();
    config.ident.port = ident_port;
    config.ident.connect_timeout_ms = 500;
    config.ident.read_timeout_ms = 500;
    config.limits.request_timeout_ms = 1000;
    config.redis = RedisSettings {
        command_timeout_ms: 500,
        connect_timeout_ms: 500,
        ..RedisSettings::for_url(redis_url)
    };
    config
}

impl Harness {
    pub async fn start() -> Harness {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> Harness {
        let redis = RedisServer::start().await.expect("redis-server");
        let identd = Identd::start(IdentAnswer::User(TOOL_USER.into()))
            .await
            .expect("identd");
        let mut config = test_config(&redis.url(), identd.port());
        tune(&mut config);
        let store = RouteStore::connect(&config.redis).unwrap();
        assert!(store.wait_connected(Duration::from_secs(5)).await);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let live = Reloadable::new(config);
        let pending = PendingChecks::default();
        let ctx = Context {
            config: std::sync::Arc::clone(&live),
            store,
            pending: pending.clone(),
        };
        let task = tokio::spawn(proxylistener::run(listener, ctx, shutdown.clone()));
        let db = RedisSettings::for_url(&redis.url()).client().unwrap();
        db.init().await.unwrap();
        Harness {
            redis,
            identd,
            addr,
            shutdown,
            task,
            db,
            config: live,
            pending,
        }
    }

    /// Sends `request` as one write, half-closes, returns the whole reply.
    pub async fn send(&self, request: &[u8]) -> String {
        send_to(self.addr, request, None).await
    }

    /// Like `send`, with the identd answering `answer` for this connection.
    pub async fn send_as(&self, request: &[u8], answer: IdentAnswer) -> String {
        send_to(self.addr, request, Some((&self.identd, answer))).await
    }

    pub async fn hgetall(&self, key: &str) -> HashMap<String, String> {
        self.db.hgetall(key).await.unwrap()
    }

    pub async fn all_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .db
            .custom(fred::cmd!("KEYS"), vec!["*".to_string()])
            .await
            .unwrap();
        keys.sort();
        keys
    }
}

pub async fn send_to(
    addr: SocketAddr,
    request: &[u8],
    answer: Option<(&Identd, IdentAnswer)>,
) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    if let Some((identd, answer)) = answer {
        identd.answer_for(s.local_addr().unwrap().port(), answer);
    }
    s.write_all(request).await.unwrap();
    let _ = s.shutdown().await;
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut reply))
        .await
        .expect("a reply within 10 s")
        .unwrap();
    String::from_utf8(reply).unwrap()
}

pub fn register(route: &str, url: &str) -> Vec<u8> {
    format!("register\n{route}\n{url}\n").into_bytes()
}
