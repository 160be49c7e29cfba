//! Connection-level bounds: a client that stalls half-way through its
//! headers is disconnected after `server.header_read_timeout_ms`, an idle
//! upgraded (WebSocket) connection is closed after
//! `server.upgrade_idle_timeout_s`, and `server.max_connections` caps open
//! connections across the worker threads, which serve concurrently.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use forge_test_support::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes; panics if it doesn't within 15 s.
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the proxy did not close the connection");
    out
}

#[tokio::test]
async fn a_client_stalling_in_its_headers_is_cut_off() {
    let redis = RedisServer::start().await.unwrap();
    let default = echo_backend("default").await;
    let mut c = test_config(&redis.url(), &default.url());
    c.server.header_read_timeout_ms = 300;
    let p = start_proxy(c).await;
    wait_serving(&p).await;

    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a.toolfo")
        .await
        .unwrap();
    let got = read_until_closed(&mut s).await;
    let text = String::from_utf8_lossy(&got);
    // Closed, with at most an error status: never passed on.
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 4"), "{text}");
    // A client that completes its headers in time is served.
    let r = request(p.http, "a.toolforge.org", "/", "").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn an_idle_upgraded_connection_is_closed() {
    let redis = RedisServer::start().await.unwrap();
    let default = echo_backend("default").await;
    let ws = upgrade_backend().await;
    cli(redis.port(), &["HSET", "prefix:ws", ".*", &ws]);
    let mut c = test_config(&redis.url(), &default.url());
    c.server.upgrade_idle_timeout_s = 1;
    let p = start_proxy(c).await;
    wait_serving(&p).await;

    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(
        b"GET /socket HTTP/1.1\r\nHost: ws.toolforge.org\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).await.unwrap(), 1, "closed: {head:?}");
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    // Traffic keeps it open…
    for _ in 0..3 {
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // …silence closes it.
    let rest = read_until_closed(&mut s).await;
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test]
async fn connections_past_the_cap_wait() {
    let redis = RedisServer::start().await.unwrap();
    let default = echo_backend("default").await;
    let mut c = test_config(&redis.url(), &default.url());
    c.server.max_connections = 1;
    // The cap is the listener's, whichever worker thread accepts.
    c.server.workers = 3;
    let p = start_proxy(c).await;
    wait_serving(&p).await;

    // The one slot: a kept-alive connection.
    let mut first = TcpStream::connect(p.http).await.unwrap();
    first
        .write_all(b"GET / HTTP/1.1\r\nHost: a.toolforge.org\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 12];
    first.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
    // A second connection is not served while the first is open…
    let addr = p.http;
    let second =
        tokio::spawn(async move { request(addr, "a.toolforge.org", "/", "").await.status });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!second.is_finished());
    // …and is once it closes.
    drop(first);
    assert_eq!(second.await.unwrap(), 200);
}

#[tokio::test]
async fn several_worker_threads_serve_concurrent_connections() {
    let redis = RedisServer::start().await.unwrap();
    let default = echo_backend("default").await;
    let mut c = test_config(&redis.url(), &default.url());
    c.server.workers = 4;
    let p = start_proxy(c).await;
    wait_serving(&p).await;
    let addr = p.http;
    let clients: Vec<_> = (0..40)
        .map(|i| {
            tokio::spawn(async move {
                request(addr, "a.toolforge.org", &format!("/{i}"), "")
                    .await
                    .status
            })
        })
        .collect();
    for c in clients {
        assert_eq!(c.await.unwrap(), 200);
    }
}
