//! The edge under attack: each test is an attack on the running proxy (in
//! process, or the binary where its log output matters) that succeeded once.
//!
//! Threat model (see `docs/security.md`):
//! * **Hostile clients on the internet** send whatever bytes they like:
//!   silent or trickling connections to exhaust the connection cap, slow or
//!   missing request bodies to hold a single-threaded tool backend, huge or
//!   endless request heads, malformed targets and hosts that nginx refuses
//!   and a backend might misread, identity headers (`X-Forwarded-For`, …)
//!   a backend might trust, and control characters meant to forge or hide
//!   access-log lines.
//! * **Hostile tool owners** write route patterns (through proxylistener, or
//!   into Redis by other means) meant to make every request to the proxy
//!   expensive, or to forge log lines.
//!
//! Every bound here is a configuration knob with a default documented in
//! `docs/dynamicproxy.md`; the tests set small values so they finish
//! quickly, and never depend on how fast the machine is.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use forge_test_support::{RedisServer, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_dynamicproxy");

/// The status of a raw response (0: closed without one).
fn status(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

// --- Item 6: identity headers ------------------------------------------------

#[tokio::test]
async fn client_supplied_identity_headers_never_reach_the_backend() {
    let redis = RedisServer::start().await.unwrap();
    let default = echo_backend("default").await;
    let spoof = "X-Forwarded-For: 10.9.9.9\r\nX-Real-IP: 10.9.9.9\r\nForwarded: for=10.9.9.9\r\n";

    let p = start_proxy(test_config(&redis.url(), &default.url())).await;
    wait_serving(&p).await;
    let r = request(p.http, "a.toolforge.org", "/", spoof).await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let h = &seen["headers"];
    for name in ["x-forwarded-for", "x-real-ip", "forwarded"] {
        assert!(h.get(name).is_none(), "{name} passed on: {seen}");
    }
    drop(p);

    // With forwarded_for the proxy states what it saw, nothing else.
    let mut c = test_config(&redis.url(), &default.url());
    c.forwarded_for = true;
    let p = start_proxy(c).await;
    wait_serving(&p).await;
    let r = request(p.http, "a.toolforge.org", "/", spoof).await;
    let seen: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let h = &seen["headers"];
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{seen}");
    assert_eq!(h["x-real-ip"], "127.0.0.1", "{seen}");
    assert_eq!(
        h["forwarded"], "for=127.0.0.1;host=a.toolforge.org;proto=http",
        "{seen}"
    );
}

// --- Item 8: malformed requests ----------------------------------------------

#[tokio::test]
async fn malformed_requests_are_refused_like_nginx_does() {
    let redis = RedisServer::start().await.unwrap();
    let default = echo_backend("default").await;
    let p = start_proxy(test_config(&redis.url(), &default.url())).await;
    wait_serving(&p).await;

    let refused = |raw_request: &'static str, want: u16| {
        let addr = p.http;
        async move {
            let resp = raw(addr, raw_request).await;
            assert_eq!(status(&resp), want, "{raw_request:?} got {resp:?}");
            assert!(!resp.contains("\"backend\""), "forwarded: {resp}");
        }
    };
    // Two Host headers: which one would a backend route by?
    refused(
        "GET / HTTP/1.1\r\nHost: a.toolforge.org\r\nHost: b.toolforge.org\r\nConnection: close\r\n\r\n",
        400,
    )
    .await;
    // Paths that climb above the root once decoded, or hold a NUL.
    for path in [
        "/../etc/passwd",
        "/a/../../x",
        "/%2e%2e/x",
        "/a%2f..%2f..%2fx",
        "/x%00.php",
    ] {
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: a.toolforge.org\r\nConnection: close\r\n\r\n");
        let resp = raw(p.http, &req).await;
        assert_eq!(status(&resp), 400, "{path}: {resp}");
        assert!(!resp.contains("\"backend\""), "{path} forwarded: {resp}");
    }
    // A path that stays below the root is fine.
    let r = request(p.http, "a.toolforge.org", "/a/../b/./c", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    // Empty host labels.
    refused(
        "GET / HTTP/1.1\r\nHost: a..toolforge.org\r\nConnection: close\r\n\r\n",
        400,
    )
    .await;
    refused(
        "GET / HTTP/1.1\r\nHost: .a.toolforge.org\r\nConnection: close\r\n\r\n",
        400,
    )
    .await;
    // CONNECT and OPTIONS * are not forwarded.
    refused(
        "CONNECT a.toolforge.org:443 HTTP/1.1\r\nHost: a.toolforge.org:443\r\nConnection: close\r\n\r\n",
        405,
    )
    .await;
    refused(
        "OPTIONS * HTTP/1.1\r\nHost: a.toolforge.org\r\nConnection: close\r\n\r\n",
        400,
    )
    .await;
}

// --- Item 9: log forging -----------------------------------------------------

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn control_characters_are_escaped_in_the_access_log() {
    let redis = RedisServer::start().await.unwrap();
    let backend = echo_backend("default").await;
    let dir = tempfile::tempdir().unwrap();
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("dynamicproxy.toml");
    std::fs::write(
        &config,
        format!(
            "listen_http = \"{http}\"\nlisten_admin = \"{admin}\"\ndefault_upstream = \"{}\"\ndomains = [\"toolforge.org\"]\n\
             [access_log]\nmode = \"on\"\n[log]\nformat = \"text\"\nfilter = \"info\"\n\
             [limits]\nrequire_user_agent = false\n[redis]\nurl = \"{}\"\n",
            backend.url(),
            redis.url()
        ),
    )
    .unwrap();
    let log_path = dir.path().join("stderr.log");
    let _proc = Running(
        Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    eventually("serving", || async move {
        request(http, "a.toolforge.org", "/", "").await.status == 200
    })
    .await;
    // U+009B (CSI) is a terminal control sequence introducer in UTF-8; it
    // is a valid path byte sequence for the HTTP parser.
    let mut s = TcpStream::connect(http).await.unwrap();
    s.write_all(
        b"GET /forged\xc2\x9b31mRED HTTP/1.1\r\nHost: a.toolforge.org\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let mut text = String::new();
    eventually("the access log line", || {
        text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let found = text.contains("/forged");
        async move { found }
    })
    .await;
    assert!(
        !text.contains('\u{9b}'),
        "raw control character logged: {text}"
    );
    assert!(text.contains("/forged\\u{9b}31mRED"), "{text}");
}
