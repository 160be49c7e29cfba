//! Request smuggling: ambiguous or malformed HTTP/1.1 framing sent as raw
//! bytes is refused with a 4xx (or the connection is closed) and nothing of
//! it reaches the backend, which records every byte it receives.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use forge_test_support::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A raw backend: records what each connection sent, answers `200 ok`.
#[derive(Clone, Default)]
struct Recorder {
    received: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    async fn start(&self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let received = self.received.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let received = received.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    let mut got = Vec::new();
                    loop {
                        match tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf))
                            .await
                        {
                            Ok(Ok(n)) if n > 0 => {
                                got.extend_from_slice(&buf[..n]);
                                if got.windows(4).any(|w| w == b"\r\n\r\n") {
                                    let _ = s
                                        .write_all(
                                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                                        )
                                        .await;
                                }
                            }
                            _ => break,
                        }
                    }
                    received
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&got).into_owned());
                });
            }
        });
        url
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.received.lock().unwrap())
    }
}

/// The status of a raw exchange (0: closed without a response).
fn status(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn ambiguous_framing_is_refused_before_the_backend() {
    let redis = RedisServer::start().await.unwrap();
    let recorder = Recorder::default();
    let backend = recorder.start().await;
    cli(redis.port(), &["HSET", "prefix:a", ".*", &backend]);
    cli(redis.port(), &["HSET", "prefix:other", ".*", &backend]);
    let p = start_proxy(test_config(&redis.url(), &backend)).await;
    let addr = p.http;
    // Serving, and the route is loaded (the backend answers "ok").
    eventually("serving", || async move {
        raw(
            addr,
            "GET / HTTP/1.1\r\nHost: a.toolforge.org\r\nConnection: close\r\n\r\n",
        )
        .await
        .ends_with("ok")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    recorder.take();

    let cases = [
        (
            "two differing Content-Length",
            "POST / HTTP/1.1\r\nHost: a.toolforge.org\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\nhelloGET /smuggled HTTP/1.1\r\nHost: a.toolforge.org\r\n\r\n",
        ),
        (
            "a Content-Length list",
            "POST / HTTP/1.1\r\nHost: a.toolforge.org\r\nContent-Length: 5, 40\r\n\r\nhello",
        ),
        (
            "an invalid chunk size",
            "POST / HTTP/1.1\r\nHost: a.toolforge.org\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "a chunk size overflowing 64 bits",
            "POST / HTTP/1.1\r\nHost: a.toolforge.org\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "an absolute-form URI to another host",
            "GET http://other.toolforge.org/admin HTTP/1.1\r\nHost: a.toolforge.org\r\n\r\n",
        ),
        (
            "an obfuscated Transfer-Encoding",
            "POST / HTTP/1.1\r\nHost: a.toolforge.org\r\nContent-Length: 4\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        ),
    ];
    for (what, bytes) in cases {
        let resp = raw(addr, bytes).await;
        let code = status(&resp);
        assert!(
            code == 0 || (400..500).contains(&code),
            "{what}: not refused: {resp:?}"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        let seen = recorder.take();
        assert!(
            seen.iter().all(|s| s.is_empty()),
            "{what}: reached the backend: {seen:?}"
        );
    }

    // Content-Length and Transfer-Encoding together, in either order and
    // after a well-framed request on the same connection: refused with 400
    // and the connection closed, as nginx does; the backend sees only the
    // first request, never the ambiguous one nor what follows it.
    for (what, bytes) in [
        (
            "Content-Length, then Transfer-Encoding",
            "POST / HTTP/1.1\r\nHost: a.toolforge.org\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a.toolforge.org\r\n\r\n",
        ),
        (
            "Transfer-Encoding, then Content-Length",
            "POST / HTTP/1.1\r\nHost: a.toolforge.org\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a.toolforge.org\r\n\r\n",
        ),
    ] {
        let pipelined = format!(
            "POST /first HTTP/1.1\r\nHost: a.toolforge.org\r\nContent-Length: 5\r\n\r\nhello{bytes}"
        );
        let resp = raw(addr, &pipelined).await;
        let second = resp
            .find("HTTP/1.1 400")
            .unwrap_or_else(|| panic!("{what}: not refused: {resp}"));
        assert_eq!(status(&resp), 200, "{what}: the first request: {resp}");
        assert!(
            resp[second..]
                .to_ascii_lowercase()
                .contains("connection: close"),
            "{what}: {resp}"
        );
        assert!(
            resp.contains("both Content-Length and Transfer-Encoding"),
            "{what}: {resp}"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        let seen = recorder.take().concat();
        assert!(seen.contains("POST /first"), "{what}: {seen}");
        assert!(!seen.contains("POST / HTTP/1.1"), "{what}: {seen}");
        assert!(!seen.contains("/smuggled"), "{what}: {seen}");
    }

    // A body that looks like such a head is only a body: forwarded as sent.
    let inner = "GET /inner HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let resp = raw(
        addr,
        &format!(
            "POST /upload HTTP/1.1\r\nHost: a.toolforge.org\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{inner}",
            inner.len()
        ),
    )
    .await;
    assert_eq!(status(&resp), 200, "{resp}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let seen = recorder.take().concat();
    assert!(
        seen.contains("POST /upload") && seen.contains("GET /inner"),
        "{seen}"
    );

    // Absolute form naming the same host as Host: routed by it as usual.
    let resp = raw(
        addr,
        "GET http://a.toolforge.org/fine HTTP/1.1\r\nHost: a.toolforge.org\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&resp), 200, "{resp}");
}
